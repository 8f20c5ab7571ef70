/*
 * check_export.c - the model exports (server/dwf_export.c) read back in C:
 * safetensors (header JSON, 8-byte padding, contiguous offsets, arrays
 * equal to the model's CSR / dense expansion), npz (the zip container
 * walked from its end record, every member inflated with zlib and its CRC
 * checked, .npy headers 64-byte aligned, payloads equal to the model's
 * arrays), JSON (arrays equal to the model's) and the format names. The
 * independent readers (numpy/scipy) are in tests/test_export.py.
 */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <zlib.h>

#include "dwf_export.h"
#include "dwf_model.h"
#include "dwf_rng.h"
#include "dwf_sparse.h"

/* A small CNN (conv, relu, pool, dense on spatial input, relu, dense) with
 * random weights, about half of them thresholded away. */
static void make_model(dwf_smodel *s, uint64_t seed)
{
    dwf_arch a;
    dwf_err e;
    dwf_arch_init(&a, 2, 8, 8, 4, 1);
    const dwf_layer_spec ls[] = {
        {.kind = DWF_LAYER_CONV2D, .filters = 3, .kernel = 3, .padding = 1},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_MAXPOOL2D, .kernel = 2},
        {.kind = DWF_LAYER_DENSE, .units = 7},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 4},
    };
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        ck_assert_int_eq(dwf_arch_add(&a, &ls[i], &e), 0);
    dwf_model *m = NULL;
    ck_assert_msg(dwf_model_create(&a, 1, &m, &e) == 0, "%s", e.msg);
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    for (int i = 0; i < m->n_params; i++)
        for (int64_t j = 0; j < m->params[i].n; j++)
            m->params[i].w[j] = (float)dwf_rng_normal(&r);
    dwf_norm norm = {DWF_NORM_SCALE, 0.0f, 255.0f};
    dwf_kv kv[2];
    memset(kv, 0, sizeof kv);
    strcpy(kv[0].key, "test_acc");
    kv[0].value = 0.5;
    strcpy(kv[1].key, "val_acc");
    kv[1].value = NAN;
    ck_assert_int_eq(dwf_smodel_from_model(m, &norm, 0.7f, "{\"seed\":1}", kv, 2, s, &e), 0);
    dwf_model_free(m);
}

static int64_t total_nnz(const dwf_smodel *s)
{
    int64_t nz;
    dwf_smodel_counts(s, NULL, &nz, NULL, NULL);
    return nz;
}

static uint8_t *export(const dwf_smodel *s, const char *fmt, size_t *len)
{
    uint8_t *buf = NULL;
    dwf_err e;
    ck_assert_msg(dwf_export_buffer(s, fmt, &buf, len, &e) == 0, "%s: %s", fmt, e.msg);
    ck_assert_ptr_nonnull(buf);
    return buf;
}

/* ---- safetensors -------------------------------------------------------- */

static const void *st_tensor(json_t *hdr, const uint8_t *data, const char *name,
                             const char *dtype, size_t *bytes, json_t **shape)
{
    json_t *t = json_object_get(hdr, name);
    ck_assert_msg(t != NULL, "safetensors: no tensor %s", name);
    ck_assert_str_eq(json_string_value(json_object_get(t, "dtype")), dtype);
    json_t *off = json_object_get(t, "data_offsets");
    size_t a = (size_t)json_integer_value(json_array_get(off, 0));
    size_t b = (size_t)json_integer_value(json_array_get(off, 1));
    *bytes = b - a;
    if (shape)
        *shape = json_object_get(t, "shape");
    return data + a;
}

static void check_safetensors(const dwf_smodel *s, int dense)
{
    size_t len;
    uint8_t *buf = export(s, dense ? "safetensors-dense" : "safetensors", &len);
    uint64_t hl;
    memcpy(&hl, buf, 8);
    ck_assert_uint_eq((8 + hl) % 8, 0);
    ck_assert(8 + hl <= len);
    json_error_t je;
    json_t *hdr = json_loadb((const char *)buf + 8, hl, 0, &je);
    ck_assert_msg(hdr != NULL, "header: %s", je.text);
    const uint8_t *data = buf + 8 + hl;
    /* the offsets tile the data block exactly, each aligned */
    size_t covered = 0, n_t = 0;
    const char *key;
    json_t *val;
    json_object_foreach(hdr, key, val) {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        json_t *off = json_object_get(val, "data_offsets");
        size_t a = (size_t)json_integer_value(json_array_get(off, 0));
        size_t b = (size_t)json_integer_value(json_array_get(off, 1));
        ck_assert_msg(a == covered, "%s starts at %zu, want %zu", key, a, covered);
        const char *dt = json_string_value(json_object_get(val, "dtype"));
        size_t el = strcmp(dt, "I64") == 0 ? 8 : 4;
        ck_assert_uint_eq((8 + hl + a) % el, 0);
        size_t elems = 1;
        json_t *sh = json_object_get(val, "shape");
        for (size_t d = 0; d < json_array_size(sh); d++)
            elems *= (size_t)json_integer_value(json_array_get(sh, d));
        ck_assert_uint_eq(elems * el, b - a);
        covered = b;
        n_t++;
    }
    ck_assert_uint_eq(covered, len - 8 - hl);
    json_t *meta = json_object_get(hdr, "__metadata__");
    ck_assert_str_eq(json_string_value(json_object_get(meta, "format")),
                     dense ? "pt" : "dwf-sparse-csr");
    ck_assert_str_eq(json_string_value(json_object_get(meta, "spec")), "{\"seed\":1}");
    json_t *metrics = json_loads(json_string_value(json_object_get(meta, "metrics")), 0, &je);
    ck_assert_ptr_nonnull(metrics);
    ck_assert(json_real_value(json_object_get(metrics, "test_acc")) == 0.5);
    ck_assert(json_is_null(json_object_get(metrics, "val_acc")));
    json_decref(metrics);
    json_t *arch = json_loads(json_string_value(json_object_get(meta, "architecture")), 0, &je);
    ck_assert_ptr_nonnull(arch);
    ck_assert_uint_eq(json_array_size(json_object_get(arch, "layers")), 6);
    ck_assert(json_real_value(json_object_get(json_object_get(arch, "normalization"), "std")) == 255.0);
    json_decref(arch);

    for (int i = 0; i < s->arch.n_layers; i++) {
        if (!dwf_layer_has_weight(s->arch.layers[i].kind))
            continue;
        const dwf_csr *c = &s->w[i];
        char name[32], tn[96];
        dwf_arch_layer_name(&s->arch, i, name, sizeof name);
        size_t nb;
        json_t *shape;
        if (dense) {
            snprintf(tn, sizeof tn, "%s.weight", name);
            const float *w = st_tensor(hdr, data, tn, "F32", &nb, &shape);
            ck_assert_uint_eq(nb, (size_t)c->rows * c->cols * 4);
            ck_assert_uint_eq(json_array_size(shape),
                              s->arch.layers[i].kind == DWF_LAYER_CONV2D ? 4 : 2);
            int64_t nz = 0;
            for (int r = 0; r < c->rows; r++)
                for (int j = 0; j < c->cols; j++) {
                    float v = w[(size_t)r * c->cols + j];
                    nz += v != 0.0f;
                    if (v != 0.0f) {
                        int64_t k = c->indptr[r];
                        while (k < c->indptr[r + 1] && c->indices[k] != j)
                            k++;
                        ck_assert(k < c->indptr[r + 1] && c->values[k] == v);
                    }
                }
            ck_assert_int_eq(nz, c->nnz);
        } else {
            snprintf(tn, sizeof tn, "%s.weight.values", name);
            const void *p = st_tensor(hdr, data, tn, "F32", &nb, NULL);
            ck_assert_uint_eq(nb, (size_t)c->nnz * 4);
            ck_assert_int_eq(memcmp(p, c->values, nb), 0);
            snprintf(tn, sizeof tn, "%s.weight.indices", name);
            p = st_tensor(hdr, data, tn, "I32", &nb, NULL);
            ck_assert_int_eq(memcmp(p, c->indices, nb), 0);
            snprintf(tn, sizeof tn, "%s.weight.indptr", name);
            p = st_tensor(hdr, data, tn, "I64", &nb, NULL);
            ck_assert_uint_eq(nb, ((size_t)c->rows + 1) * 8);
            ck_assert_int_eq(memcmp(p, c->indptr, nb), 0);
            snprintf(tn, sizeof tn, "%s.weight.shape", name);
            const int64_t *sh = st_tensor(hdr, data, tn, "I64", &nb, NULL);
            ck_assert(nb == 16 && sh[0] == c->rows && sh[1] == c->cols);
            if (s->arch.layers[i].kind == DWF_LAYER_CONV2D) {
                snprintf(tn, sizeof tn, "%s.weight.kernel_shape", name);
                ck_assert_str_eq(json_string_value(json_object_get(meta, tn)), "[3,2,3,3]");
            }
        }
        snprintf(tn, sizeof tn, "%s.bias", name);
        const void *bp = st_tensor(hdr, data, tn, "F32", &nb, NULL);
        ck_assert_int_eq(memcmp(bp, s->bias[i], (size_t)c->rows * 4), 0);
    }
    ck_assert_uint_eq(n_t, dense ? 6 : 15);
    json_decref(hdr);
    free(buf);
}

START_TEST(test_safetensors)
{
    dwf_smodel s;
    make_model(&s, 1);
    ck_assert(total_nnz(&s) > 0);
    check_safetensors(&s, 0);
    check_safetensors(&s, 1);
    dwf_smodel_free(&s);
}
END_TEST

/* ---- npz ------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* Inflates member `name` of the zip into a new buffer. */
static uint8_t *zip_member(const uint8_t *z, size_t len, const char *name,
                           size_t *out_len)
{
    ck_assert(len >= 22);
    const uint8_t *eocd = z + len - 22;
    ck_assert_uint_eq(rd32(eocd), 0x06054b50u);
    unsigned n = rd16(eocd + 10);
    size_t cd = rd32(eocd + 16);
    ck_assert_uint_eq(cd + rd32(eocd + 12), len - 22);
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *h = z + cd;
        ck_assert_uint_eq(rd32(h), 0x02014b50u);
        size_t nl = rd16(h + 28), extra = rd16(h + 30), comment = rd16(h + 32);
        if (nl == strlen(name) && memcmp(h + 46, name, nl) == 0) {
            const uint8_t *lh = z + rd32(h + 42);
            ck_assert_uint_eq(rd32(lh), 0x04034b50u);
            unsigned method = rd16(lh + 8);
            uint32_t crc = rd32(lh + 14), cs = rd32(lh + 18), us = rd32(lh + 22);
            ck_assert_uint_eq(crc, rd32(h + 16));
            const uint8_t *d = lh + 30 + rd16(lh + 26) + rd16(lh + 28);
            uint8_t *out = malloc(us ? us : 1);
            if (method == 0) {
                ck_assert_uint_eq(cs, us);
                memcpy(out, d, us);
            } else {
                ck_assert_uint_eq(method, 8);
                z_stream zs;
                memset(&zs, 0, sizeof zs);
                ck_assert_int_eq(inflateInit2(&zs, -15), Z_OK);
                zs.next_in = (Bytef *)d;
                zs.avail_in = cs;
                zs.next_out = out;
                zs.avail_out = us;
                ck_assert_int_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
                ck_assert_uint_eq(zs.total_out, us);
                inflateEnd(&zs);
            }
            ck_assert_uint_eq(crc32(crc32(0, Z_NULL, 0), out, us), crc);
            *out_len = us;
            return out;
        }
        cd += 46 + nl + extra + comment;
    }
    ck_abort_msg("npz: no member %s", name);
    return NULL;
}

/* Checks the .npy header (version 1.0, 64-byte aligned, descr, shape) and
 * returns the payload. */
static const uint8_t *npy_payload(const uint8_t *m, size_t len, const char *descr,
                                  const char *shape, size_t *n)
{
    ck_assert(len >= 10 && memcmp(m, "\x93NUMPY\x01\x00", 8) == 0);
    size_t hl = rd16(m + 8);
    ck_assert_uint_eq((10 + hl) % 64, 0);
    ck_assert(m[10 + hl - 1] == '\n');
    char *h = strndup((const char *)m + 10, hl);
    char want[160];
    snprintf(want, sizeof want, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
             descr, shape);
    ck_assert_msg(strncmp(h, want, strlen(want)) == 0, "npy header '%s', want '%s'", h, want);
    free(h);
    *n = len - 10 - hl;
    return m + 10 + hl;
}

START_TEST(test_npz)
{
    dwf_smodel s;
    make_model(&s, 2);
    size_t len;
    uint8_t *z = export(&s, "npz", &len);
    for (int i = 0; i < s.arch.n_layers; i++) {
        if (!dwf_layer_has_weight(s.arch.layers[i].kind))
            continue;
        const dwf_csr *c = &s.w[i];
        char name[32], mn[96], shape[64];
        dwf_arch_layer_name(&s.arch, i, name, sizeof name);
        size_t ml, n;
        struct {
            const char *suffix, *descr;
            const void *data;
            size_t bytes;
            int64_t count;
        } parts[] = {
            {".weight.data", "<f4", c->values, (size_t)c->nnz * 4, c->nnz},
            {".weight.indices", "<i4", c->indices, (size_t)c->nnz * 4, c->nnz},
            {".weight.indptr", "<i8", c->indptr, ((size_t)c->rows + 1) * 8, c->rows + 1},
            {".bias", "<f4", s.bias[i], (size_t)c->rows * 4, c->rows},
        };
        for (size_t p = 0; p < sizeof parts / sizeof *parts; p++) {
            snprintf(mn, sizeof mn, "%s%s.npy", name, parts[p].suffix);
            snprintf(shape, sizeof shape, "(%lld,)", (long long)parts[p].count);
            uint8_t *m = zip_member(z, len, mn, &ml);
            const uint8_t *d = npy_payload(m, ml, parts[p].descr, shape, &n);
            ck_assert_uint_eq(n, parts[p].bytes);
            ck_assert_int_eq(memcmp(d, parts[p].data, n), 0);
            free(m);
        }
        snprintf(mn, sizeof mn, "%s.weight.shape.npy", name);
        uint8_t *m = zip_member(z, len, mn, &ml);
        const int64_t *sh = (const int64_t *)(const void *)npy_payload(m, ml, "<i8", "(2,)", &n);
        ck_assert(n == 16 && sh[0] == c->rows && sh[1] == c->cols);
        free(m);
    }
    size_t ml, n;
    uint8_t *m = zip_member(z, len, "__architecture__.npy", &ml);
    char shape[32];
    char *arch = dwf_export_architecture_json(&s);
    snprintf(shape, sizeof shape, "(%zu,)", strlen(arch));
    const uint8_t *d = npy_payload(m, ml, "|u1", shape, &n);
    ck_assert_uint_eq(n, strlen(arch));
    ck_assert_int_eq(memcmp(d, arch, n), 0);
    free(arch);
    free(m);
    free(zip_member(z, len, "__metrics__.npy", &ml));
    free(zip_member(z, len, "__spec__.npy", &ml));
    free(z);
    dwf_smodel_free(&s);
}
END_TEST

START_TEST(test_json)
{
    dwf_smodel s;
    make_model(&s, 3);
    size_t len;
    uint8_t *buf = export(&s, "json", &len);
    json_error_t je;
    json_t *o = json_loadb((const char *)buf, len, 0, &je);
    ck_assert_msg(o != NULL, "%s", je.text);
    ck_assert_str_eq(json_string_value(json_object_get(o, "format")), "dwf-sparse-csr");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(o, "spec"), "seed")), 1);
    json_t *layers = json_object_get(o, "layers");
    ck_assert_uint_eq(json_array_size(layers), 3);
    size_t li = 0;
    for (int i = 0; i < s.arch.n_layers; i++) {
        if (!dwf_layer_has_weight(s.arch.layers[i].kind))
            continue;
        const dwf_csr *c = &s.w[i];
        json_t *l = json_array_get(layers, li++);
        char name[32];
        dwf_arch_layer_name(&s.arch, i, name, sizeof name);
        ck_assert_str_eq(json_string_value(json_object_get(l, "name")), name);
        json_t *v = json_object_get(l, "values"), *ix = json_object_get(l, "indices");
        json_t *ip = json_object_get(l, "indptr"), *b = json_object_get(l, "bias");
        ck_assert_uint_eq(json_array_size(v), (size_t)c->nnz);
        for (int64_t k = 0; k < c->nnz; k++) {
            /* 9 significant digits give the float back exactly */
            ck_assert((float)json_real_value(json_array_get(v, (size_t)k)) == c->values[k]);
            ck_assert_int_eq(json_integer_value(json_array_get(ix, (size_t)k)), c->indices[k]);
        }
        for (int r = 0; r <= c->rows; r++)
            ck_assert_int_eq(json_integer_value(json_array_get(ip, (size_t)r)), c->indptr[r]);
        for (int r = 0; r < c->rows; r++)
            ck_assert((float)json_number_value(json_array_get(b, (size_t)r)) == s.bias[i][r]);
    }
    json_decref(o);
    free(buf);
    dwf_smodel_free(&s);
}
END_TEST

START_TEST(test_formats)
{
    static const char *names[] = {"dwfm", "safetensors", "safetensors-dense", "npz", "json"};
    for (int i = 0; i < DWF_EXPORT_COUNT; i++) {
        ck_assert_int_eq(dwf_export_format_parse(names[i]), i);
        ck_assert_str_eq(dwf_export_format_name((dwf_export_format)i), names[i]);
        ck_assert(strlen(dwf_export_extension((dwf_export_format)i)) > 0);
        ck_assert_ptr_nonnull(dwf_export_content_type((dwf_export_format)i));
    }
    ck_assert_int_eq(dwf_export_format_parse("xls"), -1);
    ck_assert_int_eq(dwf_export_format_parse(NULL), -1);
    dwf_smodel s, t;
    make_model(&s, 4);
    uint8_t *buf = (uint8_t *)1;
    size_t len = 1;
    dwf_err e;
    ck_assert_int_eq(dwf_export_buffer(&s, "xls", &buf, &len, &e), DWF_EINVAL);
    ck_assert_ptr_null(buf);
    ck_assert_ptr_nonnull(strstr(e.msg, "xls"));
    /* dwfm is the model file itself */
    buf = export(&s, "dwfm", &len);
    ck_assert_int_eq(dwf_smodel_load(&t, buf, len, &e), 0);
    ck_assert_int_eq(total_nnz(&t), total_nnz(&s));
    dwf_smodel_free(&t);
    free(buf);
    /* a model without spec and metrics exports too */
    free(s.spec);
    s.spec = NULL;
    s.n_kv = 0;
    for (int f = 1; f < DWF_EXPORT_COUNT; f++) {
        buf = NULL;
        ck_assert_int_eq(dwf_export(&s, (dwf_export_format)f, &buf, &len, &e), 0);
        ck_assert(len > 0);
        free(buf);
    }
    dwf_smodel_free(&s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("export");
    TCase *tc = tcase_create("export");
    tcase_add_test(tc, test_safetensors);
    tcase_add_test(tc, test_npz);
    tcase_add_test(tc, test_json);
    tcase_add_test(tc, test_formats);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
