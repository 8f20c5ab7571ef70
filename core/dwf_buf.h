/*
 * dwf_buf.h - a growable byte buffer for writing little-endian binary
 * formats (checkpoints, .dwfm models), and a bounds-checked reader.
 *
 * A dwf_wbuf owns its bytes until dwf_wbuf_take() hands them to the caller
 * (who then frees them with free()); dwf_wbuf_free() drops them. A dwf_rbuf
 * borrows the bytes it reads. Writers latch the first allocation failure
 * and readers the first overrun, so callers check once at the end.
 */
#ifndef DWF_BUF_H
#define DWF_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct dwf_wbuf {
    uint8_t *data;
    size_t len, cap;
    int failed;       /* an allocation failed */
} dwf_wbuf;

void dwf_wbuf_init(dwf_wbuf *b);
void dwf_wbuf_free(dwf_wbuf *b);
void dwf_wbuf_bytes(dwf_wbuf *b, const void *p, size_t n);
void dwf_wbuf_u32(dwf_wbuf *b, uint32_t v);
void dwf_wbuf_u64(dwf_wbuf *b, uint64_t v);
void dwf_wbuf_i64(dwf_wbuf *b, int64_t v);
void dwf_wbuf_f64(dwf_wbuf *b, double v);
void dwf_wbuf_f32s(dwf_wbuf *b, const float *v, size_t n);
void dwf_wbuf_str(dwf_wbuf *b, const char *s); /* u32 length + bytes; NULL = 0xffffffff */
/* Hands the bytes to the caller (NULL if an allocation failed). */
uint8_t *dwf_wbuf_take(dwf_wbuf *b, size_t *len);

typedef struct dwf_rbuf {
    const uint8_t *p;
    size_t len, pos;
    int failed;       /* a read went past the end or was malformed */
} dwf_rbuf;

void dwf_rbuf_init(dwf_rbuf *r, const void *p, size_t len);
int dwf_rbuf_bytes(dwf_rbuf *r, void *out, size_t n);
uint32_t dwf_rbuf_u32(dwf_rbuf *r);
uint64_t dwf_rbuf_u64(dwf_rbuf *r);
int64_t dwf_rbuf_i64(dwf_rbuf *r);
double dwf_rbuf_f64(dwf_rbuf *r);
int dwf_rbuf_f32s(dwf_rbuf *r, float *out, size_t n);
/* Reads a string written by dwf_wbuf_str into a new malloc'd copy
 * (*out = NULL for a NULL string). Returns 0 or -1. */
int dwf_rbuf_str(dwf_rbuf *r, char **out);
/* Bytes left. */
size_t dwf_rbuf_left(const dwf_rbuf *r);

/* CRC-32 (zlib's) of data, for integrity checks of stored blobs. */
uint32_t dwf_crc32(const void *data, size_t len);

#endif
