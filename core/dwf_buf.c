#include "dwf_buf.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void dwf_wbuf_init(dwf_wbuf *b)
{
    memset(b, 0, sizeof *b);
}

void dwf_wbuf_free(dwf_wbuf *b)
{
    free(b->data);
    dwf_wbuf_init(b);
}

void dwf_wbuf_bytes(dwf_wbuf *b, const void *p, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->failed = 1;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* The formats are little-endian; x86-64 and aarch64 are too, so values are
 * copied as they are. */
void dwf_wbuf_u32(dwf_wbuf *b, uint32_t v) { dwf_wbuf_bytes(b, &v, 4); }
void dwf_wbuf_u64(dwf_wbuf *b, uint64_t v) { dwf_wbuf_bytes(b, &v, 8); }
void dwf_wbuf_i64(dwf_wbuf *b, int64_t v) { dwf_wbuf_bytes(b, &v, 8); }
void dwf_wbuf_f64(dwf_wbuf *b, double v) { dwf_wbuf_bytes(b, &v, 8); }

void dwf_wbuf_f32s(dwf_wbuf *b, const float *v, size_t n)
{
    dwf_wbuf_bytes(b, v, n * sizeof(float));
}

void dwf_wbuf_str(dwf_wbuf *b, const char *s)
{
    if (!s) {
        dwf_wbuf_u32(b, 0xffffffffu);
        return;
    }
    size_t n = strlen(s);
    dwf_wbuf_u32(b, (uint32_t)n);
    dwf_wbuf_bytes(b, s, n);
}

uint8_t *dwf_wbuf_take(dwf_wbuf *b, size_t *len)
{
    if (b->failed) {
        dwf_wbuf_free(b);
        return NULL;
    }
    uint8_t *d = b->data;
    if (!d)
        d = malloc(1); /* an empty buffer is still a buffer */
    *len = b->len;
    dwf_wbuf_init(b);
    return d;
}

void dwf_rbuf_init(dwf_rbuf *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->failed = 0;
}

int dwf_rbuf_bytes(dwf_rbuf *r, void *out, size_t n)
{
    if (r->failed || n > r->len - r->pos) {
        r->failed = 1;
        if (out && n)
            memset(out, 0, n);
        return -1;
    }
    if (n)
        memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

uint32_t dwf_rbuf_u32(dwf_rbuf *r) { uint32_t v; dwf_rbuf_bytes(r, &v, 4); return v; }
uint64_t dwf_rbuf_u64(dwf_rbuf *r) { uint64_t v; dwf_rbuf_bytes(r, &v, 8); return v; }
int64_t dwf_rbuf_i64(dwf_rbuf *r) { int64_t v; dwf_rbuf_bytes(r, &v, 8); return v; }
double dwf_rbuf_f64(dwf_rbuf *r) { double v; dwf_rbuf_bytes(r, &v, 8); return v; }

int dwf_rbuf_f32s(dwf_rbuf *r, float *out, size_t n)
{
    if (n > (r->len - r->pos) / sizeof(float)) {
        r->failed = 1;
        return -1;
    }
    return dwf_rbuf_bytes(r, out, n * sizeof(float));
}

int dwf_rbuf_str(dwf_rbuf *r, char **out)
{
    *out = NULL;
    uint32_t n = dwf_rbuf_u32(r);
    if (r->failed)
        return -1;
    if (n == 0xffffffffu)
        return 0;
    if (n > r->len - r->pos) {
        r->failed = 1;
        return -1;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        r->failed = 1;
        return -1;
    }
    dwf_rbuf_bytes(r, s, n);
    s[n] = '\0';
    *out = s;
    return 0;
}

size_t dwf_rbuf_left(const dwf_rbuf *r)
{
    return r->len - r->pos;
}

uint32_t dwf_crc32(const void *data, size_t len)
{
    uLong c = crc32(0L, Z_NULL, 0);
    const Bytef *p = data;
    while (len > 0) {
        uInt chunk = len > 0x40000000u ? 0x40000000u : (uInt)len;
        c = crc32(c, p, chunk);
        p += chunk;
        len -= chunk;
    }
    return (uint32_t)c;
}
