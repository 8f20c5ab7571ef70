/*
 * dwf_data.c - IDX (raw or gzip) and CSV readers, subsets, splits,
 * normalization and mini-batch assembly. See dwf_data.h.
 *
 * IDX files are read through zlib's gz* interface, which reads gzip and
 * raw files alike; the gzip magic (1f 8b) is only sniffed to word the
 * messages. Every reader builds its result in a local dwf_dataset and
 * hands it over only when complete, so a failed call leaves *out zeroed.
 */
#include "dwf_data.h"
#include "dwf_simd.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Largest payload a data set may hold, in elements (bytes for uint8). */
#define DATA_MAX_ELEMS ((uint64_t)INT32_MAX)
/* Largest class label accepted (guards n_classes against junk labels). */
#define CSV_MAX_LABEL 1000000

/* Thread-safe strerror (GNU strerror_r; the project builds with
 * -D_GNU_SOURCE). */
static const char *errstr(int e, char *buf, size_t n)
{
    return strerror_r(e, buf, n);
}

/* ------------------------------------------------------------------ */
/* dataset basics                                                      */
/* ------------------------------------------------------------------ */

void dwf_dataset_free(dwf_dataset *d)
{
    if (!d)
        return;
    free(d->x_u8);
    free(d->x_f32);
    free(d->y);
    memset(d, 0, sizeof *d);
}

/* Allocates the arrays of *d for n samples of d->dim features; the storage
 * type follows u8. Never returns NULL pointers on success, even for n = 0,
 * so "exactly one of x_u8 / x_f32 is non-NULL" always holds. */
static int dataset_alloc(dwf_dataset *d, int n, int u8, dwf_err *err)
{
    size_t elems = (size_t)n * (size_t)d->dim;
    d->n = n;
    if (u8)
        d->x_u8 = malloc(elems ? elems : 1);
    else
        d->x_f32 = malloc((elems ? elems : 1) * sizeof(float));
    d->y = malloc((n ? (size_t)n : 1) * sizeof(int32_t));
    if ((u8 ? (void *)d->x_u8 : (void *)d->x_f32) == NULL || !d->y) {
        dwf_dataset_free(d);
        return dwf_errorf(err, DWF_ENOMEM,
                          "out of memory for %d samples of %d features", n,
                          d->dim);
    }
    return 0;
}

int dwf_dataset_check_labels(const dwf_dataset *d, int n_classes,
                             const char *what, dwf_err *err)
{
    if (!what)
        what = "data";
    for (int i = 0; i < d->n; i++) {
        int32_t v = d->y[i];
        if (v < 0 || v >= n_classes)
            return dwf_errorf(err, DWF_EFORMAT,
                              "%s: label %d of sample %d is outside [0, %d) "
                              "(the training data has %d classes)",
                              what, (int)v, i, n_classes, n_classes);
    }
    return 0;
}

int dwf_dataset_take(const dwf_dataset *src, const int *idx, int n,
                     dwf_dataset *out, dwf_err *err)
{
    dwf_dataset d = {0};
    memset(out, 0, sizeof *out);
    if (n < 0 || (n > 0 && !idx))
        return dwf_errorf(err, DWF_EINVAL, "take: bad sample count %d", n);
    for (int i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= src->n)
            return dwf_errorf(err, DWF_EINVAL,
                              "take: index %d (entry %d) is outside [0, %d)",
                              idx[i], i, src->n);
    d.c = src->c;
    d.h = src->h;
    d.w = src->w;
    d.dim = src->dim;
    d.n_classes = src->n_classes;
    int rc = dataset_alloc(&d, n, src->x_u8 != NULL, err);
    if (rc)
        return rc;
    size_t dim = (size_t)src->dim;
    for (int i = 0; i < n; i++) {
        size_t s = (size_t)idx[i] * dim, t = (size_t)i * dim;
        if (src->x_u8)
            memcpy(d.x_u8 + t, src->x_u8 + s, dim);
        else
            memcpy(d.x_f32 + t, src->x_f32 + s, dim * sizeof(float));
        d.y[i] = src->y[idx[i]];
    }
    *out = d;
    return 0;
}

int dwf_dataset_head(const dwf_dataset *src, int n, dwf_dataset *out,
                     dwf_err *err)
{
    memset(out, 0, sizeof *out);
    if (n <= 0 || n > src->n)
        n = src->n;
    int *idx = malloc((n ? (size_t)n : 1) * sizeof *idx);
    if (!idx)
        return dwf_errorf(err, DWF_ENOMEM, "head: out of memory");
    for (int i = 0; i < n; i++)
        idx[i] = i;
    int rc = dwf_dataset_take(src, idx, n, out, err);
    free(idx);
    return rc;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int dwf_dataset_split(const dwf_dataset *src, int n_val, uint64_t seed,
                      dwf_dataset *train, dwf_dataset *val, dwf_err *err)
{
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    if (n_val < 0 || n_val > src->n)
        return dwf_errorf(err, DWF_EINVAL,
                          "split: cannot hold out %d of %d samples", n_val,
                          src->n);
    int n = src->n;
    int *idx = malloc((n ? (size_t)n : 1) * sizeof *idx);
    if (!idx)
        return dwf_errorf(err, DWF_ENOMEM, "split: out of memory");
    for (int i = 0; i < n; i++)
        idx[i] = i;
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    dwf_rng_shuffle(&r, idx, n);
    /* The first n_val of the permutation are held out. Each part keeps the
     * source order, which reads memory in order and makes the result depend
     * on the seed only through which samples land where. */
    qsort(idx, (size_t)n_val, sizeof *idx, cmp_int);
    qsort(idx + n_val, (size_t)(n - n_val), sizeof *idx, cmp_int);
    int rc = dwf_dataset_take(src, idx + n_val, n - n_val, train, err);
    if (!rc) {
        rc = dwf_dataset_take(src, idx, n_val, val, err);
        if (rc)
            dwf_dataset_free(train);
    }
    free(idx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* IDX                                                                 */
/* ------------------------------------------------------------------ */

typedef struct idx_file {
    const char *path;
    gzFile gz;
    int is_gzip; /* content starts with the gzip magic */
    uint64_t pos; /* decompressed bytes consumed */
} idx_file;

static int idx_open(idx_file *f, const char *path, dwf_err *err)
{
    char eb[128];
    memset(f, 0, sizeof *f);
    f->path = path;
    if (!path || !*path)
        return dwf_errorf(err, DWF_EINVAL, "IDX file: no path given");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return dwf_errorf(err, DWF_EIO, "%s: cannot open: %s", path,
                          errstr(e, eb, sizeof eb));
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return dwf_errorf(err, DWF_EIO, "%s: cannot read: is a directory",
                          path);
    }
    unsigned char m[2];
    ssize_t k = pread(fd, m, 2, 0);
    f->is_gzip = k == 2 && m[0] == 0x1f && m[1] == 0x8b;
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        return dwf_errorf(err, DWF_ENOMEM, "%s: cannot start the zlib reader",
                          path);
    }
    gzbuffer(f->gz, 1u << 17);
    return 0;
}

static void idx_close(idx_file *f)
{
    if (f->gz)
        gzclose_r(f->gz);
    f->gz = NULL;
}

/* Reads up to n bytes into buf; *got is how many arrived (short only at the
 * end of the data). Fails on read errors and corrupt compressed data. */
static int idx_read(idx_file *f, void *buf, size_t n, size_t *got,
                    dwf_err *err)
{
    size_t have = 0;
    while (have < n) {
        size_t chunk = n - have;
        if (chunk > (1u << 24))
            chunk = 1u << 24;
        int k = gzread(f->gz, (char *)buf + have, (unsigned)chunk);
        if (k < 0) {
            int zerr = Z_OK;
            const char *zmsg = gzerror(f->gz, &zerr);
            if (zerr == Z_ERRNO) {
                char eb[128];
                int e = errno;
                return dwf_errorf(err, DWF_EIO, "%s: read error: %s", f->path,
                                  errstr(e, eb, sizeof eb));
            }
            if (zerr == Z_MEM_ERROR)
                return dwf_errorf(err, DWF_ENOMEM, "%s: zlib: out of memory",
                                  f->path);
            return dwf_errorf(err, DWF_EFORMAT,
                              "%s: corrupt gzip data after %llu bytes: %s",
                              f->path,
                              (unsigned long long)(f->pos + have),
                              zmsg ? zmsg : "unknown zlib error");
        }
        if (k == 0)
            break;
        have += (size_t)k;
    }
    f->pos += have;
    *got = have;
    return 0;
}

/* " (the gzip stream ends early)" when zlib saw a cut compressed stream. */
static const char *gz_cut_note(idx_file *f)
{
    int zerr = Z_OK;
    gzerror(f->gz, &zerr);
    return zerr == Z_BUF_ERROR ? " (the gzip stream ends early)" : "";
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* Describes what a wrong IDX magic number looks like. */
static const char *magic_kind(uint32_t m, char *buf, size_t n)
{
    if (m == 0x00000801u)
        return "an IDX label file";
    if (m == 0x00000803u)
        return "an IDX image file";
    if ((m >> 16) == 0x1f8bu)
        return "gzip data: compressed twice?";
    if ((m >> 16) != 0)
        return "not an IDX file";
    static const struct { unsigned code; const char *name; } types[] = {
        {0x08, "uint8"}, {0x09, "int8"}, {0x0b, "int16"},
        {0x0c, "int32"}, {0x0d, "float32"}, {0x0e, "float64"},
    };
    const char *t = NULL;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].code == ((m >> 8) & 0xffu))
            t = types[i].name;
    if (!t)
        return "not an IDX file";
    snprintf(buf, n, "IDX %s data with %u dimension%s", t, m & 0xffu,
             (m & 0xffu) == 1 ? "" : "s");
    return buf;
}

/* Reads one whole IDX file of uint8 data with ndims (1 or 3) dimensions:
 * checks the magic, fills dims[], allocates *data with the payload and
 * makes sure nothing follows it. */
static int idx_load_file(const char *path, int ndims, uint32_t dims[3],
                         uint8_t **data, dwf_err *err)
{
    const uint32_t want = 0x00000800u | (uint32_t)ndims;
    const char *want_desc = ndims == 3 ? "IDX uint8 images with 3 dimensions"
                                       : "IDX uint8 labels with 1 dimension";
    idx_file f;
    uint8_t hdr[16];
    size_t hlen = 4 + 4 * (size_t)ndims, got = 0;
    uint8_t *buf = NULL;
    char kb[64];
    *data = NULL;
    int rc = idx_open(&f, path, err);
    if (rc)
        return rc;
    if ((rc = idx_read(&f, hdr, hlen, &got, err)))
        goto out;
    if (got >= 4 && be32(hdr) != want) {
        uint32_t m = be32(hdr);
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: wrong magic 0x%08x (%s); expected 0x%08x (%s)",
                        path, m, magic_kind(m, kb, sizeof kb), want, want_desc);
        goto out;
    }
    if (got < hlen) {
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: truncated: expected a %zu-byte IDX header, got "
                        "%zu byte%s%s",
                        path, hlen, got, got == 1 ? "" : "s", gz_cut_note(&f));
        goto out;
    }
    uint64_t elems = 1;
    int too_big = 0;
    for (int i = 0; i < ndims; i++) {
        dims[i] = be32(hdr + 4 + 4 * i);
        if (dims[i] == 0) {
            rc = dwf_errorf(err, DWF_EFORMAT,
                            "%s: zero size: dimension %d of the IDX header "
                            "is 0",
                            path, i + 1);
            goto out;
        }
        /* elems <= 2^31 before each step, so this cannot overflow. */
        if (!too_big) {
            elems *= dims[i];
            too_big = elems > DATA_MAX_ELEMS;
        }
    }
    if (too_big) {
        if (ndims == 3)
            rc = dwf_errorf(err, DWF_EFORMAT,
                            "%s: absurd size in the IDX header: %u x %u x %u "
                            "bytes (limit %llu)",
                            path, dims[0], dims[1], dims[2],
                            (unsigned long long)DATA_MAX_ELEMS);
        else
            rc = dwf_errorf(err, DWF_EFORMAT,
                            "%s: absurd size in the IDX header: %u labels "
                            "(limit %llu)",
                            path, dims[0], (unsigned long long)DATA_MAX_ELEMS);
        goto out;
    }
    /* The buffer grows with the data that arrive, so that a header
     * claiming gigabytes in a small (truncated or corrupt) file costs no
     * more memory than the file. */
    size_t cap = 0;
    got = 0;
    while (got < elems) {
        if (got == cap) {
            size_t ncap = cap ? 2 * cap : (size_t)1 << 20;
            if (ncap > elems)
                ncap = (size_t)elems;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                rc = dwf_errorf(err, DWF_ENOMEM, "%s: out of memory for %llu bytes",
                                path, (unsigned long long)elems);
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        size_t k = 0;
        if ((rc = idx_read(&f, buf + got, cap - got, &k, err)))
            goto out;
        if (k == 0)
            break;
        got += k;
    }
    if (got < elems) {
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: truncated: expected %llu bytes, got %llu%s", path,
                        (unsigned long long)(hlen + elems),
                        (unsigned long long)(hlen + got), gz_cut_note(&f));
        goto out;
    }
    /* Nothing may follow the payload. Reading on also makes zlib check the
     * gzip trailer (CRC and length). */
    uint64_t extra = 0;
    for (;;) {
        uint8_t tail[4096];
        if ((rc = idx_read(&f, tail, sizeof tail, &got, err)))
            goto out;
        if (got == 0)
            break;
        extra += got;
    }
    if (extra) {
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: trailing bytes: %llu byte%s after the expected "
                        "%llu",
                        path, (unsigned long long)extra, extra == 1 ? "" : "s",
                        (unsigned long long)(hlen + elems));
        goto out;
    }
    if (*gz_cut_note(&f)) {
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: truncated: the gzip stream ends before its "
                        "trailer (%llu bytes decompressed)",
                        path, (unsigned long long)(hlen + elems));
        goto out;
    }
    *data = buf;
    buf = NULL;
out:
    free(buf);
    idx_close(&f);
    return rc;
}

int dwf_idx_load(const char *images_path, const char *labels_path,
                 int min_classes, dwf_dataset *out, dwf_err *err)
{
    uint32_t idims[3] = {0}, ldims[3] = {0};
    uint8_t *img = NULL, *lab = NULL;
    dwf_dataset d = {0};
    memset(out, 0, sizeof *out);
    int rc = idx_load_file(images_path, 3, idims, &img, err);
    if (rc)
        return rc;
    if ((rc = idx_load_file(labels_path, 1, ldims, &lab, err)))
        goto fail;
    if (ldims[0] != idims[0]) {
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: count mismatch: %u labels, but %s has %u images",
                        labels_path, ldims[0], images_path, idims[0]);
        goto fail;
    }
    d.n = (int)idims[0];
    d.c = 1;
    d.h = (int)idims[1];
    d.w = (int)idims[2];
    d.dim = d.h * d.w;
    d.x_u8 = img;
    img = NULL;
    d.y = malloc((size_t)d.n * sizeof *d.y);
    if (!d.y) {
        rc = dwf_errorf(err, DWF_ENOMEM, "%s: out of memory for %d labels",
                        labels_path, d.n);
        goto fail;
    }
    int maxl = 0;
    for (int i = 0; i < d.n; i++) {
        d.y[i] = lab[i];
        if (lab[i] > maxl)
            maxl = lab[i];
    }
    d.n_classes = maxl + 1 > min_classes ? maxl + 1 : min_classes;
    free(lab);
    *out = d;
    return 0;
fail:
    free(img);
    free(lab);
    dwf_dataset_free(&d);
    return rc;
}

/* ------------------------------------------------------------------ */
/* CSV                                                                 */
/* ------------------------------------------------------------------ */

static int is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Trims blanks around [s, e) in place, NUL-terminates and returns the
 * start; *nul (if non-NULL) gets where the NUL went. */
static char *trim_field(char *s, char *e, char **nul)
{
    while (s < e && is_blank(*s))
        s++;
    while (e > s && is_blank(e[-1]))
        e--;
    *e = '\0';
    if (nul)
        *nul = e;
    return s;
}

/* Parses a label field. Returns 0 and *v on success, 1 when the field is
 * not a number at all (a header candidate), 2 when it is a number but not
 * a valid label (*num holds it). */
static int parse_label(const char *s, int *v, double *num)
{
    char *end;
    if (!*s)
        return 1;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end)
        return 1;
    *num = x;
    if (!isfinite(x) || x < 0 || x != floor(x) || x > CSV_MAX_LABEL)
        return 2;
    *v = (int)x;
    return 0;
}

typedef struct csv_state {
    const char *path;
    int label_col;   /* as given */
    int lab;         /* resolved label column */
    int ncols;       /* -1 until the first non-blank line */
    int ncols_line;  /* the line that set ncols */
    int n, cap, dim, maxl;
    float *x;
    int32_t *y;
} csv_state;

static int csv_grow(csv_state *s, dwf_err *err)
{
    if (s->n < s->cap)
        return 0;
    int ncap = s->cap ? s->cap * 2 : 256;
    if ((uint64_t)ncap * (uint64_t)s->dim > DATA_MAX_ELEMS) {
        ncap = (int)(DATA_MAX_ELEMS / (uint64_t)s->dim);
        if (ncap <= s->n)
            return dwf_errorf(err, DWF_EFORMAT,
                              "%s: too large: more than %d rows of %d "
                              "features",
                              s->path, s->n, s->dim);
    }
    float *x = realloc(s->x, (size_t)ncap * (size_t)s->dim * sizeof *x);
    if (!x)
        return dwf_errorf(err, DWF_ENOMEM, "%s: out of memory at row %d",
                          s->path, s->n + 1);
    s->x = x;
    int32_t *y = realloc(s->y, (size_t)ncap * sizeof *y);
    if (!y)
        return dwf_errorf(err, DWF_ENOMEM, "%s: out of memory at row %d",
                          s->path, s->n + 1);
    s->y = y;
    s->cap = ncap;
    return 0;
}

/* Handles one non-blank line (without its line ending). */
static int csv_line(csv_state *s, char *line, int lineno, dwf_err *err)
{
    int count = 1;
    for (const char *p = line; *p; p++)
        count += *p == ',';
    int header_ok = 0;
    if (s->ncols < 0) {
        s->ncols = count;
        s->ncols_line = lineno;
        s->lab = s->label_col < 0 ? count - 1 : s->label_col;
        if (s->label_col >= count)
            return dwf_errorf(err, DWF_EFORMAT,
                              "%s:%d: the label column is %d (0-based) but "
                              "the line has only %d column%s",
                              s->path, lineno, s->label_col, count,
                              count == 1 ? "" : "s");
        if (count < 2)
            return dwf_errorf(err, DWF_EFORMAT,
                              "%s:%d: need a label and at least one feature "
                              "column, the line has 1 column",
                              s->path, lineno);
        s->dim = count - 1;
        header_ok = 1;
    } else if (count != s->ncols) {
        return dwf_errorf(err, DWF_EFORMAT,
                          "%s:%d: wrong width: %d column%s, expected %d "
                          "(as on line %d)",
                          s->path, lineno, count, count == 1 ? "" : "s",
                          s->ncols, s->ncols_line);
    }
    /* The label field first: it decides whether this is a header. */
    char *fields_start = line;
    char *p = line;
    char *lab_s = NULL, *lab_e = NULL;
    for (int col = 0;; col++) {
        char *e = p;
        while (*e && *e != ',')
            e++;
        if (col == s->lab) {
            lab_s = p;
            lab_e = e;
            break;
        }
        p = e + 1;
    }
    char *lab_nul;
    char saved = *lab_e;
    char *ls = trim_field(lab_s, lab_e, &lab_nul);
    int label = 0;
    double num = 0;
    int lr = parse_label(ls, &label, &num);
    if (lr == 1 && header_ok)
        return 0; /* header line */
    if (lr == 1)
        return dwf_errorf(err, DWF_EFORMAT,
                          "%s:%d: column %d: label '%.40s' is not an integer",
                          s->path, lineno, s->lab + 1, ls);
    if (lr == 2)
        return dwf_errorf(err, DWF_EFORMAT,
                          "%s:%d: column %d: label '%.40s' is %s", s->path,
                          lineno, s->lab + 1, ls,
                          num < 0 ? "negative"
                          : num > CSV_MAX_LABEL ? "too large"
                                                : "not an integer");
    /* Undo the NUL so the feature scan sees the line as it was. */
    *lab_nul = lab_nul == lab_e ? saved : ' ';
    int rc = csv_grow(s, err);
    if (rc)
        return rc;
    float *row = s->x + (size_t)s->n * (size_t)s->dim;
    int j = 0;
    p = fields_start;
    for (int col = 0; col < s->ncols; col++) {
        char *e = p;
        while (*e && *e != ',')
            e++;
        char next = *e;
        if (col != s->lab) {
            char *fs = trim_field(p, e, NULL);
            char *end;
            errno = 0;
            float v = strtof(fs, &end);
            if (!*fs || end == fs || *end)
                return dwf_errorf(err, DWF_EFORMAT,
                                  "%s:%d: column %d: '%.40s' is not a number",
                                  s->path, lineno, col + 1, fs);
            if (!isfinite(v))
                return dwf_errorf(err, DWF_EFORMAT,
                                  "%s:%d: column %d: '%.40s' is not a finite "
                                  "number",
                                  s->path, lineno, col + 1, fs);
            row[j++] = v;
        }
        if (!next)
            break;
        p = e + 1;
    }
    s->y[s->n] = label;
    if (label > s->maxl)
        s->maxl = label;
    s->n++;
    return 0;
}

int dwf_csv_load(const char *path, int label_col, dwf_dataset *out,
                 dwf_err *err)
{
    char eb[128];
    memset(out, 0, sizeof *out);
    if (!path || !*path)
        return dwf_errorf(err, DWF_EINVAL, "CSV file: no path given");
    if (label_col < -1)
        return dwf_errorf(err, DWF_EINVAL,
                          "%s: bad label column %d (0-based, -1 = last)", path,
                          label_col);
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return dwf_errorf(err, DWF_EIO, "%s: cannot open: %s", path,
                          errstr(e, eb, sizeof eb));
    }
    csv_state s = {0};
    s.path = path;
    s.label_col = label_col;
    s.ncols = -1;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int lineno = 0, blank_at = 0, rc = 0;
    while ((len = getline(&line, &lcap, f)) != -1) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        if (strlen(line) != (size_t)len) {
            rc = dwf_errorf(err, DWF_EFORMAT,
                            "%s:%d: contains a NUL byte (binary data?)", path,
                            lineno);
            goto out;
        }
        char *l = line;
        if (lineno == 1 && (unsigned char)l[0] == 0xef &&
            (unsigned char)l[1] == 0xbb && (unsigned char)l[2] == 0xbf)
            l += 3; /* UTF-8 byte order mark */
        const char *q = l;
        while (is_blank(*q))
            q++;
        if (!*q) {
            if (!blank_at && s.ncols >= 0)
                blank_at = lineno;
            continue;
        }
        if (blank_at) {
            rc = dwf_errorf(err, DWF_EFORMAT,
                            "%s:%d: empty line inside the data (more rows "
                            "follow on line %d)",
                            path, blank_at, lineno);
            goto out;
        }
        if ((rc = csv_line(&s, l, lineno, err)))
            goto out;
    }
    if (ferror(f)) {
        int e = errno;
        rc = dwf_errorf(err, DWF_EIO, "%s: read error: %s", path,
                        errstr(e, eb, sizeof eb));
        goto out;
    }
    if (s.n == 0) {
        rc = dwf_errorf(err, DWF_EFORMAT, "%s: %s", path,
                        s.ncols < 0 ? "empty file: no data rows"
                                    : "no data rows (only a header line)");
        goto out;
    }
    /* Give back the slack of the doubling. */
    float *x = realloc(s.x, (size_t)s.n * (size_t)s.dim * sizeof *x);
    if (x)
        s.x = x;
    int32_t *y = realloc(s.y, (size_t)s.n * sizeof *y);
    if (y)
        s.y = y;
    out->n = s.n;
    out->c = s.dim;
    out->h = out->w = 1;
    out->dim = s.dim;
    out->n_classes = s.maxl + 1;
    out->x_f32 = s.x;
    out->y = s.y;
    s.x = NULL;
    s.y = NULL;
out:
    free(line);
    free(s.x);
    free(s.y);
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ */
/* normalization and batches                                           */
/* ------------------------------------------------------------------ */

void dwf_norm_fit(dwf_norm *norm, dwf_norm_kind kind, const dwf_dataset *d)
{
    norm->kind = kind;
    norm->mean = 0.0f;
    norm->std = 1.0f;
    if (kind == DWF_NORM_SCALE) {
        if (d->x_u8)
            norm->std = 255.0f;
        return;
    }
    if (kind != DWF_NORM_STANDARDIZE)
        return;
    size_t total = (size_t)d->n * (size_t)d->dim;
    if (total == 0)
        return;
    double mean, var;
    if (d->x_u8) {
        /* A histogram gives exact sums for byte data. */
        uint64_t hist[256] = {0};
        const uint8_t *x = d->x_u8;
        for (size_t i = 0; i < total; i++)
            hist[x[i]]++;
        double s = 0;
        for (int v = 0; v < 256; v++)
            s += (double)hist[v] * v;
        mean = s / (double)total;
        double ss = 0;
        for (int v = 0; v < 256; v++)
            ss += (double)hist[v] * (v - mean) * (v - mean);
        var = ss / (double)total;
    } else {
        const float *x = d->x_f32;
        double s = 0;
        for (size_t i = 0; i < total; i++)
            s += x[i];
        mean = s / (double)total;
        double ss = 0;
        for (size_t i = 0; i < total; i++) {
            double t = x[i] - mean;
            ss += t * t;
        }
        var = ss / (double)total;
    }
    double sd = sqrt(var);
    norm->mean = (float)mean;
    /* A constant feature set (or a std that float cannot hold) divides by
     * one rather than by zero. */
    norm->std = (isfinite(sd) && (float)sd > 0.0f) ? (float)sd : 1.0f;
}

/* Normalizes b samples: rows idx[i] when idx is non-NULL, else the rows
 * start + i. */
/* Bytes to normalized floats: lut[v] = (float)((v - mean) / sd). With
 * mean 0 (x / 255 and no normalization) the vector loop computes (float)v
 * times 1 / sd where that gives the same float for all 256 bytes, else
 * (float)v / sd (always the same: double rounding of a quotient of floats
 * is innocuous); checked byte by byte. Without wide vectors (DWF_VEC off:
 * other compilers, sanitizer builds) the table. */
typedef struct lut_map {
    float lut[256];
    float sd, inv;
    int mode;  /* 0: lut, 1: multiply by inv, 2: divide by sd */
} lut_map;

static void lut_init(lut_map *m, const dwf_norm *norm)
{
    const double mean = norm ? norm->mean : 0.0;
    const double sd = norm && norm->std != 0.0f ? norm->std : 1.0;
    m->sd = (float)sd;
    m->inv = (float)(1.0 / sd);
    int mul = mean == 0.0, div = mean == 0.0;
    for (int v = 0; v < 256; v++) {
        float l = (float)(((double)v - mean) / sd), a = (float)v * m->inv,
              q = (float)v / m->sd;
        m->lut[v] = l;
        mul &= memcmp(&a, &l, sizeof l) == 0;
        div &= memcmp(&q, &l, sizeof l) == 0;
    }
    /* a quotient per byte beats the table only on wide vectors */
    m->mode = !DWF_VEC_WIDE ? 0 : mul ? 1 : div ? 2 : 0;
}

/* x[j] = lut[src[j]] for n bytes. */
DWF_VEC static void lut_apply(const lut_map *m, const uint8_t *restrict src, size_t n,
                              float *restrict x)
{
    if (m->mode == 1) {
        const float inv = m->inv;
        for (size_t j = 0; j < n; j++)
            x[j] = (float)src[j] * inv;
    } else if (m->mode == 2) {
        const float sd = m->sd;
        for (size_t j = 0; j < n; j++)
            x[j] = (float)src[j] / sd;
    } else {
        for (size_t j = 0; j < n; j++)
            x[j] = m->lut[src[j]];
    }
}

static void batch_rows(const dwf_dataset *d, const dwf_norm *norm,
                       const int *idx, int start, int b, float *x, int32_t *y)
{
    const size_t dim = (size_t)d->dim;
    const double mean = norm ? norm->mean : 0.0;
    const double sd = norm && norm->std != 0.0f ? norm->std : 1.0;
    if (d->x_u8) {
        lut_map m;
        lut_init(&m, norm);
        if (!idx) {
            lut_apply(&m, d->x_u8 + (size_t)start * dim, (size_t)b * dim, x);
        } else {
            for (int i = 0; i < b; i++)
                lut_apply(&m, d->x_u8 + (size_t)idx[i] * dim, dim, x + (size_t)i * dim);
        }
    } else {
        const float m = (float)mean, inv = (float)(1.0 / sd);
        const int ident = m == 0.0f && inv == 1.0f;
        for (int i = 0; i < b; i++) {
            const float *src =
                d->x_f32 + (size_t)(idx ? idx[i] : start + i) * dim;
            float *dst = x + (size_t)i * dim;
            if (ident) {
                memcpy(dst, src, dim * sizeof *dst);
            } else {
                for (size_t j = 0; j < dim; j++)
                    dst[j] = (src[j] - m) * inv;
            }
        }
    }
    if (y)
        for (int i = 0; i < b; i++)
            y[i] = d->y[idx ? idx[i] : start + i];
}

void dwf_dataset_batch(const dwf_dataset *d, const dwf_norm *norm,
                       const int *idx, int b, float *x, int32_t *y)
{
    if (b > 0)
        batch_rows(d, norm, idx, 0, b, x, y);
}

void dwf_dataset_range(const dwf_dataset *d, const dwf_norm *norm, int start,
                       int b, float *x, int32_t *y)
{
    if (b > 0)
        batch_rows(d, norm, NULL, start, b, x, y);
}
