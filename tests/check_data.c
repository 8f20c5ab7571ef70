/*
 * check_data.c - tests of core/dwf_data: IDX and CSV readers (good and
 * malformed files), take/head/split, normalization and batches, and the
 * real Fashion-MNIST test set.
 */
#include <math.h>
#include <stdint.h>
#include <zlib.h>

#include "testutil.h"

#include "dwf_data.h"

/* ---- helpers -------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Builds an IDX image file of n images rows x cols with pixel
 * (i, k) = (i * 7 + k) & 255; *len gets the size. Caller frees. */
static uint8_t *make_images(uint32_t magic, uint32_t n, uint32_t rows,
                            uint32_t cols, size_t *len)
{
    size_t payload = (size_t)n * rows * cols;
    uint8_t *b = malloc(16 + payload);
    put32(b, magic);
    put32(b + 4, n);
    put32(b + 8, rows);
    put32(b + 12, cols);
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < (size_t)rows * cols; k++)
            b[16 + i * rows * cols + k] = (uint8_t)((i * 7 + k) & 255);
    *len = 16 + payload;
    return b;
}

/* IDX label file with label i = labs[i]. */
static uint8_t *make_labels(uint32_t magic, uint32_t n, const uint8_t *labs,
                            size_t *len)
{
    uint8_t *b = malloc(8 + n);
    put32(b, magic);
    put32(b + 4, n);
    memcpy(b + 8, labs, n);
    *len = 8 + n;
    return b;
}

/* Writes data gzipped to a new temporary file; returns its path. */
static char *write_gz(const void *data, size_t n, const char *suffix)
{
    char *path = tu_write_temp("", 0, suffix);
    ck_assert_ptr_nonnull(path);
    gzFile gz = gzopen(path, "wb");
    ck_assert_ptr_nonnull(gz);
    ck_assert_int_eq(gzwrite(gz, data, (unsigned)n), (int)n);
    ck_assert_int_eq(gzclose(gz), Z_OK);
    return path;
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(sz ? (size_t)sz : 1);
    ck_assert_uint_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static int is_zeroed(const dwf_dataset *d)
{
    static const dwf_dataset z = {0};
    return memcmp(d, &z, sizeof z) == 0;
}

/* Asserts a failed load: code, zeroed output and a message naming the
 * path and containing the phrase. */
#define ASSERT_FAIL(rc, want, d, e, path, phrase)                             \
    do {                                                                      \
        ck_assert_int_eq((rc), (want));                                       \
        ck_assert_msg(is_zeroed(&(d)), "output not zeroed on error");         \
        ck_assert_msg(strstr((e).msg, (path)) != NULL,                        \
                      "message '%s' does not name %s", (e).msg, (path));      \
        ck_assert_msg(strstr((e).msg, (phrase)) != NULL,                      \
                      "message '%s' lacks '%s'", (e).msg, (phrase));          \
    } while (0)

static const uint8_t LABS5[5] = {2, 0, 1, 2, 0};

/* Checks the 5 x 3 x 4 data set of make_images / LABS5. */
static void check_small(const dwf_dataset *d, int n_classes)
{
    ck_assert_int_eq(d->n, 5);
    ck_assert_int_eq(d->c, 1);
    ck_assert_int_eq(d->h, 3);
    ck_assert_int_eq(d->w, 4);
    ck_assert_int_eq(d->dim, 12);
    ck_assert_int_eq(d->n_classes, n_classes);
    ck_assert_ptr_nonnull(d->x_u8);
    ck_assert_ptr_null(d->x_f32);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(d->y[i], LABS5[i]);
        for (int k = 0; k < 12; k++)
            ck_assert_uint_eq(d->x_u8[i * 12 + k], (uint8_t)((i * 7 + k) & 255));
    }
}

/* ---- IDX ------------------------------------------------------------ */

START_TEST(idx_raw_and_gzip)
{
    size_t il, ll;
    uint8_t *img = make_images(0x803, 5, 3, 4, &il);
    uint8_t *lab = make_labels(0x801, 5, LABS5, &ll);
    char *ip = tu_write_temp(img, il, "-images");
    char *lp = tu_write_temp(lab, ll, "-labels");
    /* gzip detected by content: one gz file with a neutral name, one raw
     * file named .gz */
    char *igz = write_gz(img, il, "-images.idx");
    char *lgz = write_gz(lab, ll, "-labels.gz");
    char *lraw_gz = tu_write_temp(lab, ll, "-raw.gz");
    dwf_dataset d = {0};
    dwf_err e = {0};

    ck_assert_int_eq(dwf_idx_load(ip, lp, 0, &d, &e), 0);
    check_small(&d, 3);
    dwf_dataset_free(&d);
    ck_assert_msg(is_zeroed(&d), "free must zero");

    ck_assert_int_eq(dwf_idx_load(igz, lgz, 10, &d, &e), 0);
    check_small(&d, 10);
    dwf_dataset_free(&d);

    ck_assert_int_eq(dwf_idx_load(igz, lraw_gz, 2, &d, &e), 0);
    check_small(&d, 3);
    dwf_dataset_free(&d);
    dwf_dataset_free(&d); /* twice is fine */

    const char *paths[] = {ip, lp, igz, lgz, lraw_gz};
    for (int i = 0; i < 5; i++)
        unlink(paths[i]);
    free(ip), free(lp), free(igz), free(lgz), free(lraw_gz);
    free(img), free(lab);
}
END_TEST

START_TEST(idx_malformed)
{
    size_t il, ll, bl;
    uint8_t *img = make_images(0x803, 5, 3, 4, &il);
    uint8_t *lab = make_labels(0x801, 5, LABS5, &ll);
    char *ip = tu_write_temp(img, il, NULL);
    char *lp = tu_write_temp(lab, ll, NULL);
    dwf_dataset d = {0};
    dwf_err e = {0};
    int rc;

    /* missing file */
    rc = dwf_idx_load("/nonexistent/dwf/x-images.gz", lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EIO, d, e, "/nonexistent/dwf/x-images.gz",
                "cannot open");
    rc = dwf_idx_load(ip, "/nonexistent/dwf/y-labels", 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EIO, d, e, "/nonexistent/dwf/y-labels", "cannot open");
    /* a directory */
    rc = dwf_idx_load("/tmp", lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EIO, d, e, "/tmp", "directory");

    /* swapped files: wrong magic, found and expected both named */
    rc = dwf_idx_load(lp, ip, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, lp, "wrong magic 0x00000801");
    ck_assert_ptr_nonnull(strstr(e.msg, "0x00000803"));
    rc = dwf_idx_load(ip, ip, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, ip, "wrong magic 0x00000803");
    /* a text file */
    char *tp = tu_write_temp("hello world\n", 12, ".txt");
    rc = dwf_idx_load(tp, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, tp, "wrong magic");
    ck_assert_ptr_nonnull(strstr(e.msg, "not an IDX file"));

    /* truncated payload: expected and got sizes */
    char *trp = tu_write_temp(img, il - 3, NULL);
    rc = dwf_idx_load(trp, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, trp, "truncated");
    char want[96];
    snprintf(want, sizeof want, "expected %zu bytes, got %zu", il, il - 3);
    ck_assert_msg(strstr(e.msg, want) != NULL, "'%s' lacks '%s'", e.msg, want);
    /* truncated header */
    char *thp = tu_write_temp(img, 10, NULL);
    rc = dwf_idx_load(thp, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, thp, "truncated");
    /* truncated labels */
    char *tlp = tu_write_temp(lab, ll - 1, NULL);
    rc = dwf_idx_load(ip, tlp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, tlp, "truncated");
    /* empty file */
    char *ep = tu_write_temp("", 0, NULL);
    rc = dwf_idx_load(ep, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, ep, "truncated");

    /* trailing bytes */
    uint8_t *longer = malloc(il + 2);
    memcpy(longer, img, il);
    longer[il] = longer[il + 1] = 9;
    char *lop = tu_write_temp(longer, il + 2, NULL);
    rc = dwf_idx_load(lop, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, lop, "trailing bytes");
    ck_assert_ptr_nonnull(strstr(e.msg, "2 bytes"));
    char *logz = write_gz(longer, il + 2, NULL);
    rc = dwf_idx_load(logz, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, logz, "trailing bytes");

    /* count mismatch: 4 labels for 5 images */
    uint8_t *lab4 = make_labels(0x801, 4, LABS5, &bl);
    char *l4p = tu_write_temp(lab4, bl, NULL);
    rc = dwf_idx_load(ip, l4p, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, l4p, "count mismatch");
    ck_assert_ptr_nonnull(strstr(e.msg, ip));

    /* zero and absurd sizes */
    uint8_t *zero = make_images(0x803, 0, 3, 4, &bl);
    char *zp = tu_write_temp(zero, bl, NULL);
    rc = dwf_idx_load(zp, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, zp, "zero size");
    uint8_t hdr[16];
    put32(hdr, 0x803);
    put32(hdr + 4, 0xffffffffu);
    put32(hdr + 8, 0xffffffffu);
    put32(hdr + 12, 0xffffffffu);
    char *ap = tu_write_temp(hdr, 16, NULL);
    rc = dwf_idx_load(ap, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, ap, "absurd size");
    put32(hdr + 4, 70000);
    put32(hdr + 8, 200);
    put32(hdr + 12, 200);
    char *ap2 = tu_write_temp(hdr, 16, NULL);
    rc = dwf_idx_load(ap2, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, ap2, "absurd size");

    /* gzip cut short (in the payload, and just before the trailer) and a
     * corrupt gzip body */
    char *gzp = write_gz(img, il, NULL);
    size_t gl;
    uint8_t *gzb = read_all(gzp, &gl);
    char *cut = tu_write_temp(gzb, gl / 2, NULL);
    rc = dwf_idx_load(cut, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, cut, "truncated");
    char *cut2 = tu_write_temp(gzb, gl - 4, NULL);
    rc = dwf_idx_load(cut2, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, cut2, "truncated");
    gzb[gl - 6] ^= 0x55; /* CRC-32 of the trailer */
    char *bad = tu_write_temp(gzb, gl, NULL);
    rc = dwf_idx_load(bad, lp, 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EFORMAT, d, e, bad, "corrupt gzip");

    /* and the intact files still load */
    ck_assert_int_eq(dwf_idx_load(gzp, lp, 0, &d, &e), 0);
    check_small(&d, 3);
    dwf_dataset_free(&d);

    char *all[] = {ip, lp, tp, trp, thp, tlp, ep, lop, logz, l4p, zp, ap,
                   ap2, gzp, cut, cut2, bad};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        unlink(all[i]);
        free(all[i]);
    }
    free(img), free(lab), free(longer), free(lab4), free(zero), free(gzb);
}
END_TEST

START_TEST(check_labels)
{
    size_t il, ll;
    uint8_t *img = make_images(0x803, 5, 3, 4, &il);
    uint8_t *lab = make_labels(0x801, 5, LABS5, &ll);
    char *ip = tu_write_temp(img, il, NULL);
    char *lp = tu_write_temp(lab, ll, NULL);
    dwf_dataset d = {0};
    dwf_err e = {0};
    ck_assert_int_eq(dwf_idx_load(ip, lp, 0, &d, &e), 0);
    ck_assert_int_eq(dwf_dataset_check_labels(&d, 3, "test.idx", &e), 0);
    ck_assert_int_eq(dwf_dataset_check_labels(&d, 2, "test.idx", &e),
                     DWF_EFORMAT);
    ck_assert_ptr_nonnull(strstr(e.msg, "test.idx"));
    ck_assert_ptr_nonnull(strstr(e.msg, "label 2 of sample 0"));
    dwf_dataset_free(&d);
    unlink(ip), unlink(lp);
    free(ip), free(lp), free(img), free(lab);
}
END_TEST

/* ---- CSV ------------------------------------------------------------ */

START_TEST(csv_good)
{
    const char *txt = "\xef\xbb\xbf" "label, a ,b,c\r\n"
                      "1, 0.5, -2 ,3e2\r\n"
                      " 0 ,1,2,3\r\n"
                      "4,  -0.25,0,7\r\n"
                      "\r\n"
                      "\n";
    char *p = tu_write_temp(txt, strlen(txt), ".csv");
    dwf_dataset d = {0};
    dwf_err e = {0};
    ck_assert_int_eq(dwf_csv_load(p, 0, &d, &e), 0);
    ck_assert_int_eq(d.n, 3);
    ck_assert_int_eq(d.dim, 3);
    ck_assert_int_eq(d.c, 3);
    ck_assert_int_eq(d.h, 1);
    ck_assert_int_eq(d.w, 1);
    ck_assert_int_eq(d.n_classes, 5);
    ck_assert_ptr_null(d.x_u8);
    ck_assert_ptr_nonnull(d.x_f32);
    const float want[9] = {0.5f, -2, 300, 1, 2, 3, -0.25f, 0, 7};
    for (int i = 0; i < 9; i++)
        ck_assert_float_eq(d.x_f32[i], want[i]);
    ck_assert_int_eq(d.y[0], 1);
    ck_assert_int_eq(d.y[1], 0);
    ck_assert_int_eq(d.y[2], 4);
    dwf_dataset_free(&d);
    unlink(p);
    free(p);

    /* no header, label last (-1) and in the middle, no final newline */
    const char *t2 = "1.5,2,0\n3,4,1\n5,6.0,1.0";
    p = tu_write_temp(t2, strlen(t2), ".csv");
    ck_assert_int_eq(dwf_csv_load(p, -1, &d, &e), 0);
    ck_assert_int_eq(d.n, 3);
    ck_assert_int_eq(d.dim, 2);
    ck_assert_int_eq(d.n_classes, 2);
    ck_assert_float_eq(d.x_f32[0], 1.5f);
    ck_assert_float_eq(d.x_f32[5], 6.0f);
    ck_assert_int_eq(d.y[2], 1);
    dwf_dataset_free(&d);
    ck_assert_int_eq(dwf_csv_load(p, 1, &d, &e), 0);
    ck_assert_int_eq(d.n_classes, 7);
    ck_assert_int_eq(d.y[1], 4);
    ck_assert_float_eq(d.x_f32[1], 0.0f);
    dwf_dataset_free(&d);
    unlink(p);
    free(p);
}
END_TEST

/* Loads text as CSV expecting failure with phrase; frees everything. */
static void csv_bad(const char *text, int label_col, int want_rc,
                    const char *phrase)
{
    char *p = tu_write_temp(text, strlen(text), ".csv");
    dwf_dataset d = {0};
    dwf_err e = {0};
    int rc = dwf_csv_load(p, label_col, &d, &e);
    ASSERT_FAIL(rc, want_rc, d, e, p, phrase);
    unlink(p);
    free(p);
}

START_TEST(csv_malformed)
{
    /* wrong width names the line number */
    csv_bad("y,a,b\n0,1,2\n1,2,3\n1,2\n0,1,1\n", 0, DWF_EFORMAT,
            ":4: wrong width");
    csv_bad("0,1,2\r\n1,2,3,4\r\n", 0, DWF_EFORMAT, ":2: wrong width");
    /* non-numeric and empty fields name line and column */
    csv_bad("0,1,2\n1,x2,3\n", 0, DWF_EFORMAT, ":2: column 2: 'x2' is not a number");
    csv_bad("0,1,2\n1,2,\n", 0, DWF_EFORMAT, ":2: column 3");
    csv_bad("0,1,2\n1,2 3,4\n", 0, DWF_EFORMAT, "not a number");
    csv_bad("0,1,2\n1,inf,4\n", 0, DWF_EFORMAT, "not a finite number");
    /* labels */
    csv_bad("a,b,label\n1,2,0\n1,2,-1\n", -1, DWF_EFORMAT, ":3: column 3: label '-1' is negative");
    csv_bad("1,2,0\n1,2,2.5\n", -1, DWF_EFORMAT, "not an integer");
    csv_bad("1,2,0\n1,2,cat\n", -1, DWF_EFORMAT, ":2: column 3: label 'cat' is not an integer");
    csv_bad("1,2,0\n1,2,1e9\n", -1, DWF_EFORMAT, "too large");
    /* empty file, header only, blank line inside the data */
    csv_bad("", 0, DWF_EFORMAT, "empty file");
    csv_bad("\n\r\n  \n", 0, DWF_EFORMAT, "empty file");
    csv_bad("label,a\n", 0, DWF_EFORMAT, "only a header");
    csv_bad("0,1\n\n1,2\n", 0, DWF_EFORMAT, ":2: empty line");
    /* label column out of range, no feature columns */
    csv_bad("0,1\n", 5, DWF_EFORMAT, "label column");
    csv_bad("0\n1\n", 0, DWF_EFORMAT, "at least one feature");

    dwf_dataset d = {0};
    dwf_err e = {0};
    int rc = dwf_csv_load("/nonexistent/dwf/data.csv", 0, &d, &e);
    ASSERT_FAIL(rc, DWF_EIO, d, e, "/nonexistent/dwf/data.csv", "cannot open");
    rc = dwf_csv_load("/tmp", -2, &d, &e);
    ck_assert_int_eq(rc, DWF_EINVAL);
}
END_TEST

/* A CSV big enough to cross the reader's growth steps. */
START_TEST(csv_many_rows)
{
    size_t cap = 1 << 16, len = 0;
    char *txt = malloc(cap);
    len += (size_t)snprintf(txt + len, cap - len, "f0,f1,y\n");
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(txt + len, cap - len, "%d,%d.5,%d\n", i, -i,
                                i % 7);
    char *p = tu_write_temp(txt, len, ".csv");
    dwf_dataset d = {0};
    dwf_err e = {0};
    ck_assert_int_eq(dwf_csv_load(p, 2, &d, &e), 0);
    ck_assert_int_eq(d.n, 1000);
    ck_assert_int_eq(d.n_classes, 7);
    for (int i = 0; i < 1000; i++) {
        ck_assert_float_eq(d.x_f32[2 * i], (float)i);
        ck_assert_float_eq(d.x_f32[2 * i + 1], (float)(-i) + (i ? -0.5f : 0.5f));
        ck_assert_int_eq(d.y[i], i % 7);
    }
    dwf_dataset_free(&d);
    unlink(p);
    free(p);
    free(txt);
}
END_TEST

/* ---- subsets -------------------------------------------------------- */

/* n samples of dim 3, float: x = (i, 10 i, -i), label i % 4. */
static void make_float_ds(dwf_dataset *d, int n)
{
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = 3;
    d->h = d->w = 1;
    d->dim = 3;
    d->n_classes = 4;
    d->x_f32 = malloc((size_t)n * 3 * sizeof(float));
    d->y = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        d->x_f32[3 * i] = (float)i;
        d->x_f32[3 * i + 1] = 10.0f * i;
        d->x_f32[3 * i + 2] = -(float)i;
        d->y[i] = i % 4;
    }
}

START_TEST(take_head)
{
    dwf_dataset src, t = {0};
    dwf_err e = {0};
    make_float_ds(&src, 20);
    int idx[4] = {7, 0, 19, 7};
    ck_assert_int_eq(dwf_dataset_take(&src, idx, 4, &t, &e), 0);
    ck_assert_int_eq(t.n, 4);
    ck_assert_int_eq(t.dim, 3);
    ck_assert_int_eq(t.n_classes, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_float_eq(t.x_f32[3 * i + 1], 10.0f * idx[i]);
        ck_assert_int_eq(t.y[i], idx[i] % 4);
    }
    dwf_dataset_free(&t);

    int badidx[2] = {3, 20};
    ck_assert_int_eq(dwf_dataset_take(&src, badidx, 2, &t, &e), DWF_EINVAL);
    ck_assert(is_zeroed(&t));

    ck_assert_int_eq(dwf_dataset_head(&src, 5, &t, &e), 0);
    ck_assert_int_eq(t.n, 5);
    ck_assert_float_eq(t.x_f32[3 * 4], 4.0f);
    dwf_dataset_free(&t);
    ck_assert_int_eq(dwf_dataset_head(&src, 0, &t, &e), 0);
    ck_assert_int_eq(t.n, 20);
    dwf_dataset_free(&t);
    ck_assert_int_eq(dwf_dataset_head(&src, 500, &t, &e), 0);
    ck_assert_int_eq(t.n, 20);
    ck_assert_int_eq(memcmp(t.x_f32, src.x_f32, 60 * sizeof(float)), 0);
    dwf_dataset_free(&t);
    dwf_dataset_free(&src);
}
END_TEST

/* Marks the samples of part (identified by feature 0 = original index). */
static void mark(const dwf_dataset *part, int *seen)
{
    for (int i = 0; i < part->n; i++) {
        int k = (int)part->x_f32[3 * i];
        seen[k]++;
        ck_assert_int_eq(part->y[i], k % 4);
        ck_assert_float_eq(part->x_f32[3 * i + 1], 10.0f * k);
    }
}

START_TEST(split)
{
    dwf_dataset src, tr, va, tr2, va2, tr3, va3;
    dwf_err e = {0};
    make_float_ds(&src, 100);
    ck_assert_int_eq(dwf_dataset_split(&src, 30, 42, &tr, &va, &e), 0);
    ck_assert_int_eq(tr.n, 70);
    ck_assert_int_eq(va.n, 30);
    ck_assert_int_eq(tr.n_classes, 4);
    int seen[100] = {0};
    mark(&tr, seen);
    mark(&va, seen);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(seen[i], 1); /* disjoint and covering */

    /* deterministic for a seed, different for another */
    ck_assert_int_eq(dwf_dataset_split(&src, 30, 42, &tr2, &va2, &e), 0);
    ck_assert_int_eq(memcmp(va.x_f32, va2.x_f32, 90 * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(tr.x_f32, tr2.x_f32, 210 * sizeof(float)), 0);
    ck_assert_int_eq(dwf_dataset_split(&src, 30, 43, &tr3, &va3, &e), 0);
    ck_assert_int_ne(memcmp(va.x_f32, va3.x_f32, 90 * sizeof(float)), 0);
    /* not simply the first or last 30 */
    int in_head = 0;
    for (int i = 0; i < va.n; i++)
        in_head += va.x_f32[3 * i] < 30;
    ck_assert_int_lt(in_head, 30);
    ck_assert_int_gt(in_head, 0);

    dwf_dataset_free(&tr), dwf_dataset_free(&va);
    dwf_dataset_free(&tr2), dwf_dataset_free(&va2);
    dwf_dataset_free(&tr3), dwf_dataset_free(&va3);

    ck_assert_int_eq(dwf_dataset_split(&src, 101, 1, &tr, &va, &e), DWF_EINVAL);
    ck_assert(is_zeroed(&tr) && is_zeroed(&va));
    ck_assert_int_eq(dwf_dataset_split(&src, -1, 1, &tr, &va, &e), DWF_EINVAL);
    dwf_dataset_free(&src);
}
END_TEST

/* ---- normalization and batches -------------------------------------- */

START_TEST(norm_and_batch_u8)
{
    size_t il, ll;
    uint8_t *img = make_images(0x803, 5, 3, 4, &il);
    uint8_t *lab = make_labels(0x801, 5, LABS5, &ll);
    char *ip = tu_write_temp(img, il, NULL);
    char *lp = tu_write_temp(lab, ll, NULL);
    dwf_dataset d = {0};
    dwf_err e = {0};
    ck_assert_int_eq(dwf_idx_load(ip, lp, 0, &d, &e), 0);

    dwf_norm nm;
    dwf_norm_fit(&nm, DWF_NORM_SCALE, &d);
    ck_assert_int_eq(nm.kind, DWF_NORM_SCALE);
    ck_assert_float_eq(nm.mean, 0.0f);
    ck_assert_float_eq(nm.std, 255.0f);
    dwf_norm_fit(&nm, DWF_NORM_NONE, &d);
    ck_assert_float_eq(nm.mean, 0.0f);
    ck_assert_float_eq(nm.std, 1.0f);

    /* reference mean / std in double */
    double s = 0, ss = 0;
    for (int i = 0; i < 60; i++)
        s += d.x_u8[i];
    double mean = s / 60;
    for (int i = 0; i < 60; i++)
        ss += (d.x_u8[i] - mean) * (d.x_u8[i] - mean);
    double sd = sqrt(ss / 60);
    dwf_norm_fit(&nm, DWF_NORM_STANDARDIZE, &d);
    ck_assert_double_eq_tol(nm.mean, mean, 1e-5);
    ck_assert_double_eq_tol(nm.std, sd, 1e-5);

    float x[3 * 12];
    int32_t y[3];
    int idx[3] = {4, 1, 4};
    dwf_dataset_batch(&d, &nm, idx, 3, x, y);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(y[i], LABS5[idx[i]]);
        for (int k = 0; k < 12; k++)
            ck_assert_double_eq_tol(x[i * 12 + k],
                                    (d.x_u8[idx[i] * 12 + k] - mean) / sd, 1e-5);
    }
    dwf_norm_fit(&nm, DWF_NORM_SCALE, &d);
    dwf_dataset_range(&d, &nm, 2, 3, x, NULL);
    for (int i = 0; i < 36; i++)
        ck_assert_double_eq_tol(x[i], d.x_u8[24 + i] / 255.0, 1e-7);
    dwf_dataset_range(&d, &nm, 1, 2, x, y);
    ck_assert_int_eq(y[0], LABS5[1]);
    ck_assert_int_eq(y[1], LABS5[2]);

    /* a constant data set: std guarded to 1 */
    memset(d.x_u8, 7, 60);
    dwf_norm_fit(&nm, DWF_NORM_STANDARDIZE, &d);
    ck_assert_float_eq(nm.mean, 7.0f);
    ck_assert_float_eq(nm.std, 1.0f);
    dwf_dataset_range(&d, &nm, 0, 1, x, NULL);
    ck_assert_float_eq(x[0], 0.0f);

    dwf_dataset_free(&d);
    unlink(ip), unlink(lp);
    free(ip), free(lp), free(img), free(lab);
}
END_TEST

/* Every byte under several norms, bit for bit against the definition
 * (float)((v - mean) / std) in double: whatever arithmetic the batch
 * assembly picks (a table, a product, a quotient), the floats are the
 * same; odd lengths exercise the vector loops' tails. */
START_TEST(norm_every_byte_exact)
{
    static const float norms[][2] = {{0.0f, 255.0f}, {0.0f, 1.0f}, {0.0f, 3.7f},
                                     {0.0f, 0.1f},   {72.94f, 90.02f}, {0.0f, 0.0f},
                                     {-1.5f, 255.0f}};
    dwf_dataset d = {0};
    d.n = 3, d.c = d.dim = 257, d.h = d.w = 1, d.n_classes = 2;
    d.x_u8 = malloc((size_t)d.n * d.dim);
    d.y = calloc((size_t)d.n, sizeof *d.y);
    ck_assert_ptr_nonnull(d.x_u8);
    for (int i = 0; i < d.n * d.dim; i++)
        d.x_u8[i] = (uint8_t)(i * 7 + i / 256);
    float *x = malloc((size_t)d.n * d.dim * sizeof *x);
    for (size_t k = 0; k < sizeof norms / sizeof norms[0]; k++) {
        dwf_norm nm = {DWF_NORM_STANDARDIZE, norms[k][0], norms[k][1]};
        double sd = nm.std != 0.0f ? nm.std : 1.0;
        int idx[2] = {2, 0};
        dwf_dataset_range(&d, &nm, 0, d.n, x, NULL);
        for (int i = 0; i < d.n * d.dim; i++) {
            float want = (float)(((double)d.x_u8[i] - nm.mean) / sd);
            ck_assert_msg(memcmp(&x[i], &want, sizeof want) == 0,
                          "norm %zu byte %d: %a, want %a", k, d.x_u8[i], x[i], want);
        }
        dwf_dataset_batch(&d, &nm, idx, 2, x, NULL);
        for (int i = 0; i < 2 * d.dim; i++) {
            int v = d.x_u8[idx[i / d.dim] * d.dim + i % d.dim];
            float want = (float)(((double)v - nm.mean) / sd);
            ck_assert(memcmp(&x[i], &want, sizeof want) == 0);
        }
    }
    free(x);
    dwf_dataset_free(&d);
}
END_TEST

START_TEST(norm_and_batch_f32)
{
    dwf_dataset d;
    make_float_ds(&d, 10);
    dwf_norm nm;
    dwf_norm_fit(&nm, DWF_NORM_SCALE, &d);
    ck_assert_float_eq(nm.mean, 0.0f);
    ck_assert_float_eq(nm.std, 1.0f);
    float x[2 * 3];
    int32_t y[2];
    int idx[2] = {9, 2};
    dwf_dataset_batch(&d, &nm, idx, 2, x, y);
    ck_assert_float_eq(x[0], 9.0f);
    ck_assert_float_eq(x[1], 90.0f);
    ck_assert_float_eq(x[5], -2.0f);
    ck_assert_int_eq(y[0], 1);
    ck_assert_int_eq(y[1], 2);

    /* values i, 10 i, -i for i < 10: mean 15 (sum 450 / 30) */
    double s = 0, ss = 0;
    for (int i = 0; i < 30; i++)
        s += d.x_f32[i];
    double mean = s / 30;
    for (int i = 0; i < 30; i++)
        ss += (d.x_f32[i] - mean) * (d.x_f32[i] - mean);
    double sd = sqrt(ss / 30);
    dwf_norm_fit(&nm, DWF_NORM_STANDARDIZE, &d);
    ck_assert_double_eq_tol(nm.mean, 15.0, 1e-6);
    ck_assert_double_eq_tol(nm.std, sd, 1e-4);
    dwf_dataset_range(&d, &nm, 8, 2, x, NULL);
    for (int i = 0; i < 6; i++)
        ck_assert_double_eq_tol(x[i], (d.x_f32[24 + i] - mean) / sd, 1e-5);
    dwf_dataset_free(&d);
}
END_TEST

/* ---- the real Fashion-MNIST test set -------------------------------- */

START_TEST(fashion_mnist_t10k)
{
    const char *ip = FMNIST_DIR "/t10k-images-idx3-ubyte.gz";
    const char *lp = FMNIST_DIR "/t10k-labels-idx1-ubyte.gz";
    dwf_dataset d = {0};
    dwf_err e = {0};
    int rc = dwf_idx_load(ip, lp, 10, &d, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    ck_assert_int_eq(d.n, 10000);
    ck_assert_int_eq(d.c, 1);
    ck_assert_int_eq(d.h, 28);
    ck_assert_int_eq(d.w, 28);
    ck_assert_int_eq(d.dim, 784);
    ck_assert_int_eq(d.n_classes, 10);
    int hist[10] = {0};
    for (int i = 0; i < d.n; i++) {
        ck_assert(d.y[i] >= 0 && d.y[i] < 10);
        hist[d.y[i]]++;
    }
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(hist[k], 1000);
    ck_assert_int_eq(dwf_dataset_check_labels(&d, 10, lp, &e), 0);
    /* pixels span the byte range; scaled batch lies in [0, 1] */
    int lo = 255, hi = 0;
    for (size_t i = 0; i < (size_t)d.n * 784; i++) {
        lo = d.x_u8[i] < lo ? d.x_u8[i] : lo;
        hi = d.x_u8[i] > hi ? d.x_u8[i] : hi;
    }
    ck_assert_int_eq(lo, 0);
    ck_assert_int_eq(hi, 255);
    dwf_norm nm;
    dwf_norm_fit(&nm, DWF_NORM_STANDARDIZE, &d);
    /* Fashion-MNIST pixel mean is about 0.286 * 255, std about 0.353 * 255 */
    ck_assert_double_eq_tol(nm.mean / 255.0, 0.286, 0.01);
    ck_assert_double_eq_tol(nm.std / 255.0, 0.353, 0.01);
    dwf_norm_fit(&nm, DWF_NORM_SCALE, &d);
    float *x = malloc(64 * 784 * sizeof(float));
    dwf_dataset_range(&d, &nm, 9936, 64, x, NULL);
    for (int i = 0; i < 64 * 784; i++)
        ck_assert(x[i] >= 0.0f && x[i] <= 1.0f);
    free(x);

    dwf_dataset tr, va;
    ck_assert_int_eq(dwf_dataset_split(&d, 1000, 7, &tr, &va, &e), 0);
    ck_assert_int_eq(tr.n + va.n, 10000);
    ck_assert_int_eq(va.h, 28);
    dwf_dataset_free(&tr);
    dwf_dataset_free(&va);
    dwf_dataset_free(&d);
}
END_TEST

static Suite *data_suite(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, idx_raw_and_gzip);
    tcase_add_test(tc, idx_malformed);
    tcase_add_test(tc, check_labels);
    tcase_add_test(tc, csv_good);
    tcase_add_test(tc, csv_malformed);
    tcase_add_test(tc, csv_many_rows);
    tcase_add_test(tc, take_head);
    tcase_add_test(tc, split);
    tcase_add_test(tc, norm_and_batch_u8);
    tcase_add_test(tc, norm_every_byte_exact);
    tcase_add_test(tc, norm_and_batch_f32);
    tcase_add_test(tc, fashion_mnist_t10k);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(data_suite());
}
