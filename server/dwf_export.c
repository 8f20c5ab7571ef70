/*
 * dwf_export.c - writers of a sparse model to safetensors, npz and JSON
 * (and .dwfm through dwf_smodel_save). See dwf_export.h for the names.
 */
#include "dwf_export.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "dwf_buf.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the exporters copy host values: they need a little-endian host"
#endif

static const struct {
    const char *name, *ext, *type;
} formats[DWF_EXPORT_COUNT] = {
    {"dwfm", "dwfm", "application/octet-stream"},
    {"safetensors", "safetensors", "application/octet-stream"},
    {"safetensors-dense", "safetensors", "application/octet-stream"},
    {"npz", "npz", "application/zip"},
    {"json", "json", "application/json"},
};

int dwf_export_format_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < DWF_EXPORT_COUNT; i++)
        if (strcmp(name, formats[i].name) == 0)
            return i;
    return -1;
}

const char *dwf_export_format_name(dwf_export_format f)
{
    return (int)f >= 0 && f < DWF_EXPORT_COUNT ? formats[f].name : "";
}

const char *dwf_export_extension(dwf_export_format f)
{
    return (int)f >= 0 && f < DWF_EXPORT_COUNT ? formats[f].ext : "";
}

const char *dwf_export_content_type(dwf_export_format f)
{
    return (int)f >= 0 && f < DWF_EXPORT_COUNT ? formats[f].type : NULL;
}

static int oom(dwf_err *err, const char *what)
{
    return dwf_errorf(err, DWF_ENOMEM, "export %s: out of memory", what);
}

/* ---- shared JSON parts ---------------------------------------------------- */

/* json_real() refuses NaN and infinities: those become null. */
static json_t *jreal(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *jshape3(int c, int h, int w)
{
    return json_pack("[iii]", c, h, w);
}

static const char *norm_name(dwf_norm_kind k)
{
    switch (k) {
    case DWF_NORM_SCALE: return "scale";
    case DWF_NORM_STANDARDIZE: return "standardize";
    case DWF_NORM_NONE: return "none";
    }
    return "?";
}

/* Weight shape of layer i as PyTorch has it: (out, in) or (out, in, k, k). */
static json_t *torch_shape(const dwf_layer_spec *l, const dwf_csr *c)
{
    if (l->kind == DWF_LAYER_CONV2D)
        return json_pack("[iiii]", l->filters, l->in_c, l->kernel, l->kernel);
    return json_pack("[ii]", c->rows, c->cols);
}

static json_t *arch_object(const dwf_smodel *s)
{
    const dwf_arch *a = &s->arch;
    char desc[1024];
    dwf_arch_describe(a, desc, sizeof desc);
    json_t *layers = json_array();
    json_t *o = json_object();
    if (!layers || !o)
        goto fail;
    int bad = 0;
    bad |= json_object_set_new(o, "description", json_string(desc));
    bad |= json_object_set_new(o, "input_shape", jshape3(a->in_c, a->in_h, a->in_w));
    bad |= json_object_set_new(o, "n_classes", json_integer(a->n_classes));
    bad |= json_object_set_new(o, "depth", json_integer(a->depth));
    bad |= json_object_set_new(o, "factorize_bias", json_boolean(a->factorize_bias));
    bad |= json_object_set_new(o, "eps", jreal(s->eps));
    bad |= json_object_set_new(
        o, "normalization",
        json_pack("{s:s,s:f,s:f}", "kind", norm_name(s->norm.kind), "mean",
                  (double)s->norm.mean, "std", (double)s->norm.std));
    bad |= json_object_set_new(o, "layers", json_incref(layers));
    for (int i = 0; i < a->n_layers && !bad; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        json_t *jl = json_object();
        if (!jl || json_array_append_new(layers, jl))
            goto fail;
        bad |= json_object_set_new(jl, "type", json_string(dwf_layer_kind_name(l->kind)));
        if (dwf_layer_has_weight(l->kind)) {
            char name[32];
            dwf_arch_layer_name(&s->arch, i, name, sizeof name);
            const dwf_csr *c = &s->w[i];
            bad |= json_object_set_new(jl, "name", json_string(name));
            bad |= json_object_set_new(jl, "depth",
                                       json_integer(dwf_arch_layer_depth(a, i)));
            bad |= json_object_set_new(jl, "weight_shape", torch_shape(l, c));
            bad |= json_object_set_new(jl, "matrix_shape",
                                       json_pack("[ii]", c->rows, c->cols));
            bad |= json_object_set_new(jl, "nnz", json_integer(c->nnz));
            bad |= json_object_set_new(jl, "bias", json_boolean(s->bias[i] != NULL));
        }
        if (l->kind == DWF_LAYER_DENSE)
            bad |= json_object_set_new(jl, "units", json_integer(l->units));
        if (l->kind == DWF_LAYER_CONV2D) {
            bad |= json_object_set_new(jl, "filters", json_integer(l->filters));
            bad |= json_object_set_new(jl, "padding", json_integer(l->padding));
        }
        if (l->kind == DWF_LAYER_CONV2D || l->kind == DWF_LAYER_MAXPOOL2D) {
            bad |= json_object_set_new(jl, "kernel", json_integer(l->kernel));
            bad |= json_object_set_new(jl, "stride", json_integer(l->stride));
        }
        bad |= json_object_set_new(jl, "in_shape", jshape3(l->in_c, l->in_h, l->in_w));
        bad |= json_object_set_new(jl, "out_shape",
                                   jshape3(l->out_c, l->out_h, l->out_w));
    }
    json_decref(layers);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
fail:
    json_decref(layers);
    json_decref(o);
    return NULL;
}

static json_t *metrics_object(const dwf_smodel *s)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    for (int i = 0; i < s->n_kv; i++) {
        if (json_object_set_new(o, s->kv[i].key, jreal(s->kv[i].value))) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

#define JSON_TEXT_FLAGS JSON_COMPACT

static char *dump_decref(json_t *o)
{
    if (!o)
        return NULL;
    char *t = json_dumps(o, JSON_TEXT_FLAGS);
    json_decref(o);
    return t;
}

char *dwf_export_architecture_json(const dwf_smodel *s)
{
    return dump_decref(arch_object(s));
}

char *dwf_export_metrics_json(const dwf_smodel *s)
{
    return dump_decref(metrics_object(s));
}

/* ---- tensors -------------------------------------------------------------- */

typedef enum { T_F32, T_I32, T_I64, T_U8 } tdtype;

static size_t dtype_size(tdtype t)
{
    return t == T_I64 ? 8 : t == T_U8 ? 1 : 4;
}

/* One named array. Its bytes are data, or (expand != NULL) the dense
 * rows x cols expansion of that CSR. */
typedef struct tensor {
    char name[80];
    tdtype dtype;
    int ndim;
    int64_t shape[4];
    const void *data;
    const dwf_csr *expand;
} tensor;

typedef struct tlist {
    tensor *t;
    int n, cap;
    int64_t shapes[DWF_MAX_LAYERS][2]; /* storage of the .shape arrays */
    char *arch, *metrics;              /* JSON texts (npz members) */
} tlist;

static void tlist_free(tlist *l)
{
    free(l->t);
    free(l->arch);
    free(l->metrics);
    memset(l, 0, sizeof *l);
}

static size_t tensor_elems(const tensor *t)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (size_t)t->shape[i];
    return n;
}

static size_t tensor_bytes(const tensor *t)
{
    return tensor_elems(t) * dtype_size(t->dtype);
}

static tensor *tadd(tlist *l, const char *layer, const char *suffix,
                    tdtype dt, const void *data, int64_t n0)
{
    if (l->n == l->cap) {
        int nc = l->cap ? 2 * l->cap : 16;
        tensor *t = realloc(l->t, (size_t)nc * sizeof *t);
        if (!t)
            return NULL;
        l->t = t;
        l->cap = nc;
    }
    tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s%s", layer, suffix);
    t->dtype = dt;
    t->ndim = 1;
    t->shape[0] = n0;
    t->data = data;
    return t;
}

/* The tensors of the sparse export. With i64_first, every I64 array comes
 * before the others, so that all of them stay aligned to their element size
 * in safetensors' data block (which allows no gaps). */
static int sparse_tensors(const dwf_smodel *s, tlist *l, int i64_first,
                          const char *values_suffix)
{
    const dwf_arch *a = &s->arch;
    for (int pass = 0; pass < (i64_first ? 2 : 1); pass++) {
        for (int i = 0; i < a->n_layers; i++) {
            if (!dwf_layer_has_weight(a->layers[i].kind))
                continue;
            const dwf_csr *c = &s->w[i];
            char name[32];
            dwf_arch_layer_name(&s->arch, i, name, sizeof name);
            l->shapes[i][0] = c->rows;
            l->shapes[i][1] = c->cols;
            if (!i64_first || pass == 1) {
                if (!tadd(l, name, values_suffix, T_F32, c->values, c->nnz) ||
                    !tadd(l, name, ".weight.indices", T_I32, c->indices, c->nnz))
                    return -1;
            }
            if (!i64_first || pass == 0) {
                if (!tadd(l, name, ".weight.indptr", T_I64, c->indptr,
                          (int64_t)c->rows + 1) ||
                    !tadd(l, name, ".weight.shape", T_I64, l->shapes[i], 2))
                    return -1;
            }
            if ((!i64_first || pass == 1) && s->bias[i] &&
                !tadd(l, name, ".bias", T_F32, s->bias[i], c->rows))
                return -1;
        }
    }
    return 0;
}

static int dense_tensors(const dwf_smodel *s, tlist *l)
{
    const dwf_arch *a = &s->arch;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *ls = &a->layers[i];
        if (!dwf_layer_has_weight(ls->kind))
            continue;
        const dwf_csr *c = &s->w[i];
        char name[32];
        dwf_arch_layer_name(&s->arch, i, name, sizeof name);
        tensor *t = tadd(l, name, ".weight", T_F32, NULL, c->rows);
        if (!t)
            return -1;
        t->expand = c;
        if (ls->kind == DWF_LAYER_CONV2D) {
            t->ndim = 4;
            t->shape[1] = ls->in_c;
            t->shape[2] = t->shape[3] = ls->kernel;
        } else {
            t->ndim = 2;
            t->shape[1] = c->cols;
        }
        if (s->bias[i] && !tadd(l, name, ".bias", T_F32, s->bias[i], c->rows))
            return -1;
    }
    return 0;
}

/* Appends the bytes of t to b. */
static void put_tensor(dwf_wbuf *b, const tensor *t)
{
    size_t n = tensor_bytes(t);
    if (!t->expand) {
        dwf_wbuf_bytes(b, t->data, n);
        return;
    }
    size_t at = b->len;
    /* grow by n zero bytes, then scatter the non-zeros */
    static const uint8_t zeros[4096];
    for (size_t done = 0; done < n && !b->failed;) {
        size_t k = n - done < sizeof zeros ? n - done : sizeof zeros;
        dwf_wbuf_bytes(b, zeros, k);
        done += k;
    }
    if (b->failed)
        return;
    const dwf_csr *c = t->expand;
    float *d = (float *)(void *)(b->data + at);
    for (int r = 0; r < c->rows; r++)
        for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++)
            memcpy(d + (size_t)r * c->cols + c->indices[k], &c->values[k],
                   sizeof(float));
}

/* ---- safetensors ---------------------------------------------------------- */

static const char *st_dtype(tdtype t)
{
    switch (t) {
    case T_F32: return "F32";
    case T_I32: return "I32";
    case T_I64: return "I64";
    case T_U8: return "U8";
    }
    return "?";
}

static int set_text(json_t *meta, const char *key, char *text)
{
    if (!text)
        return -1;
    int rc = json_object_set_new(meta, key, json_string(text));
    free(text);
    return rc;
}

int dwf_export_safetensors(const dwf_smodel *s, int dense, uint8_t **buf,
                           size_t *len, dwf_err *err)
{
    *buf = NULL;
    *len = 0;
    tlist l;
    memset(&l, 0, sizeof l);
    json_t *hdr = NULL;
    char *htext = NULL;
    dwf_wbuf b;
    dwf_wbuf_init(&b);
    int rc = dense ? dense_tensors(s, &l) : sparse_tensors(s, &l, 1, ".weight.values");
    if (rc)
        goto nomem;
    hdr = json_object();
    json_t *meta = json_object();
    if (!hdr || !meta || json_object_set_new(hdr, "__metadata__", meta))
        goto nomem;
    if (json_object_set_new(meta, "format", json_string(dense ? "pt" : "dwf-sparse-csr")) ||
        set_text(meta, "architecture", dwf_export_architecture_json(s)) ||
        set_text(meta, "metrics", dwf_export_metrics_json(s)))
        goto nomem;
    json_t *jspec = s->spec ? json_string(s->spec) : NULL; /* NULL: not UTF-8 */
    if (jspec && json_object_set_new(meta, "spec", jspec))
        goto nomem;
    for (int i = 0; i < s->arch.n_layers && !dense; i++) {
        const dwf_layer_spec *ls = &s->arch.layers[i];
        if (ls->kind != DWF_LAYER_CONV2D)
            continue;
        char name[32], key[64], val[96];
        dwf_arch_layer_name(&s->arch, i, name, sizeof name);
        snprintf(key, sizeof key, "%s.weight.kernel_shape", name);
        snprintf(val, sizeof val, "[%d,%d,%d,%d]", ls->filters, ls->in_c,
                 ls->kernel, ls->kernel);
        if (json_object_set_new(meta, key, json_string(val)))
            goto nomem;
    }
    size_t off = 0;
    for (int i = 0; i < l.n; i++) {
        const tensor *t = &l.t[i];
        json_t *shape = json_array();
        if (!shape)
            goto nomem;
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        size_t nb = tensor_bytes(t);
        json_t *jt = json_pack("{s:s,s:o,s:[II]}", "dtype", st_dtype(t->dtype),
                               "shape", shape, "data_offsets", (json_int_t)off,
                               (json_int_t)(off + nb));
        if (!jt || json_object_set_new(hdr, t->name, jt))
            goto nomem;
        off += nb;
    }
    htext = json_dumps(hdr, JSON_COMPACT);
    if (!htext)
        goto nomem;
    size_t hl = strlen(htext);
    size_t padded = (hl + 7) / 8 * 8; /* 8 + padded is a multiple of 8 */
    dwf_wbuf_u64(&b, (uint64_t)padded);
    dwf_wbuf_bytes(&b, htext, hl);
    for (size_t k = hl; k < padded; k++)
        dwf_wbuf_bytes(&b, " ", 1);
    for (int i = 0; i < l.n; i++)
        put_tensor(&b, &l.t[i]);
    *buf = dwf_wbuf_take(&b, len);
    if (!*buf)
        goto nomem;
    rc = 0;
    goto done;
nomem:
    rc = oom(err, dense ? "safetensors-dense" : "safetensors");
    dwf_wbuf_free(&b);
    *len = 0;
done:
    free(htext);
    json_decref(hdr);
    tlist_free(&l);
    return rc;
}

/* ---- npz ------------------------------------------------------------------- */

static const char *npy_descr(tdtype t)
{
    switch (t) {
    case T_F32: return "<f4";
    case T_I32: return "<i4";
    case T_I64: return "<i8";
    case T_U8: return "|u1";
    }
    return "?";
}

/* The .npy (format 1.0) file of t: magic, version, u16 header length, the
 * header dict padded with spaces and a newline to a multiple of 64 bytes,
 * then the raw little-endian data. */
static void npy_bytes(dwf_wbuf *b, const tensor *t)
{
    char dict[256];
    int n = snprintf(dict, sizeof dict,
                     "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_descr(t->dtype));
    for (int d = 0; d < t->ndim; d++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld",
                      d ? ", " : "", (long long)t->shape[d]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }",
                  t->ndim == 1 ? "," : "");
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    uint16_t hl = (uint16_t)((size_t)n + pad + 1);
    dwf_wbuf_bytes(b, "\x93NUMPY\x01\x00", 8);
    dwf_wbuf_bytes(b, &hl, 2);
    dwf_wbuf_bytes(b, dict, (size_t)n);
    for (size_t k = 0; k < pad; k++)
        dwf_wbuf_bytes(b, " ", 1);
    dwf_wbuf_bytes(b, "\n", 1);
    put_tensor(b, t);
}

static void put_u16(dwf_wbuf *b, unsigned v)
{
    uint16_t x = (uint16_t)v;
    dwf_wbuf_bytes(b, &x, 2);
}

typedef struct zentry {
    char name[96];
    uint32_t crc, csize, usize, offset;
    uint16_t method;
} zentry;

#define ZIP_DOS_DATE 0x21 /* 1980-01-01: fixed, so exports are reproducible */

/* Raw deflate of in into a new malloc'd buffer; NULL if it does not come
 * out smaller (the member is stored then) or on failure. */
static uint8_t *deflate_raw(const uint8_t *in, size_t n, size_t *out_n)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (n > 0xffffffffu ||
        deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    uLong cap = deflateBound(&z, (uLong)n);
    uint8_t *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int zr = deflate(&z, Z_FINISH);
    *out_n = z.total_out;
    deflateEnd(&z);
    if (zr != Z_STREAM_END || *out_n >= n) {
        free(out);
        return NULL;
    }
    return out;
}

int dwf_export_npz(const dwf_smodel *s, uint8_t **buf, size_t *len,
                   dwf_err *err)
{
    *buf = NULL;
    *len = 0;
    tlist l;
    memset(&l, 0, sizeof l);
    zentry *ze = NULL;
    dwf_wbuf b, m;
    dwf_wbuf_init(&b);
    dwf_wbuf_init(&m);
    int rc;
    if (sparse_tensors(s, &l, 0, ".weight.data"))
        goto nomem;
    l.arch = dwf_export_architecture_json(s);
    l.metrics = dwf_export_metrics_json(s);
    if (!l.arch || !l.metrics)
        goto nomem;
    if (!tadd(&l, "__architecture__", "", T_U8, l.arch, (int64_t)strlen(l.arch)) ||
        !tadd(&l, "__metrics__", "", T_U8, l.metrics, (int64_t)strlen(l.metrics)))
        goto nomem;
    if (s->spec && !tadd(&l, "__spec__", "", T_U8, s->spec, (int64_t)strlen(s->spec)))
        goto nomem;
    if (l.n > 65535) {
        rc = dwf_errorf(err, DWF_EINVAL, "export npz: too many arrays");
        goto fail;
    }
    ze = calloc((size_t)l.n, sizeof *ze);
    if (!ze)
        goto nomem;
    for (int i = 0; i < l.n; i++) {
        zentry *e = &ze[i];
        snprintf(e->name, sizeof e->name, "%s.npy", l.t[i].name);
        dwf_wbuf_free(&m);
        npy_bytes(&m, &l.t[i]);
        if (m.failed)
            goto nomem;
        if (m.len > 0xffffffffu || b.len > 0xffffffffu) {
            rc = dwf_errorf(err, DWF_EINVAL, "export npz: the model is too "
                            "large for a zip without zip64");
            goto fail;
        }
        size_t clen = 0;
        uint8_t *comp = deflate_raw(m.data, m.len, &clen);
        e->crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), m.data, (uInt)m.len);
        e->usize = (uint32_t)m.len;
        e->csize = (uint32_t)(comp ? clen : m.len);
        e->method = comp ? 8 : 0;
        e->offset = (uint32_t)b.len;
        size_t nl = strlen(e->name);
        dwf_wbuf_u32(&b, 0x04034b50u);     /* local file header */
        put_u16(&b, 20);                   /* version needed: 2.0 */
        put_u16(&b, 0);                    /* flags */
        put_u16(&b, e->method);
        put_u16(&b, 0);                    /* time */
        put_u16(&b, ZIP_DOS_DATE);
        dwf_wbuf_u32(&b, e->crc);
        dwf_wbuf_u32(&b, e->csize);
        dwf_wbuf_u32(&b, e->usize);
        put_u16(&b, (unsigned)nl);
        put_u16(&b, 0);                    /* extra length */
        dwf_wbuf_bytes(&b, e->name, nl);
        dwf_wbuf_bytes(&b, comp ? comp : m.data, e->csize);
        free(comp);
    }
    size_t cd_off = b.len;
    for (int i = 0; i < l.n; i++) {
        const zentry *e = &ze[i];
        size_t nl = strlen(e->name);
        dwf_wbuf_u32(&b, 0x02014b50u);     /* central directory header */
        put_u16(&b, 20);                   /* made by: 2.0, MS-DOS */
        put_u16(&b, 20);
        put_u16(&b, 0);
        put_u16(&b, e->method);
        put_u16(&b, 0);
        put_u16(&b, ZIP_DOS_DATE);
        dwf_wbuf_u32(&b, e->crc);
        dwf_wbuf_u32(&b, e->csize);
        dwf_wbuf_u32(&b, e->usize);
        put_u16(&b, (unsigned)nl);
        put_u16(&b, 0);                    /* extra */
        put_u16(&b, 0);                    /* comment */
        put_u16(&b, 0);                    /* disk */
        put_u16(&b, 0);                    /* internal attributes */
        dwf_wbuf_u32(&b, 0);               /* external attributes */
        dwf_wbuf_u32(&b, e->offset);
        dwf_wbuf_bytes(&b, e->name, nl);
    }
    size_t cd_len = b.len - cd_off;
    if (b.len > 0xffffffffu) {
        rc = dwf_errorf(err, DWF_EINVAL, "export npz: the model is too large "
                        "for a zip without zip64");
        goto fail;
    }
    dwf_wbuf_u32(&b, 0x06054b50u);         /* end of central directory */
    put_u16(&b, 0);
    put_u16(&b, 0);
    put_u16(&b, (unsigned)l.n);
    put_u16(&b, (unsigned)l.n);
    dwf_wbuf_u32(&b, (uint32_t)cd_len);
    dwf_wbuf_u32(&b, (uint32_t)cd_off);
    put_u16(&b, 0);
    *buf = dwf_wbuf_take(&b, len);
    if (!*buf)
        goto nomem;
    rc = 0;
    goto done;
nomem:
    rc = oom(err, "npz");
fail:
    dwf_wbuf_free(&b);
    *len = 0;
done:
    dwf_wbuf_free(&m);
    free(ze);
    tlist_free(&l);
    return rc;
}

/* ---- json ------------------------------------------------------------------ */

/* A JSON array of n elements, element i made by elem(v, i). */
static json_t *jarray(const void *v, int64_t n,
                      json_t *(*elem)(const void *, int64_t))
{
    json_t *a = json_array();
    for (int64_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, elem(v, i))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *elem_f32(const void *v, int64_t i) { return jreal(((const float *)v)[i]); }
static json_t *elem_i32(const void *v, int64_t i) { return json_integer(((const int32_t *)v)[i]); }
static json_t *elem_i64(const void *v, int64_t i) { return json_integer(((const int64_t *)v)[i]); }

static json_t *jfloats(const float *v, int64_t n) { return jarray(v, n, elem_f32); }
static json_t *jints32(const int32_t *v, int64_t n) { return jarray(v, n, elem_i32); }
static json_t *jints64(const int64_t *v, int64_t n) { return jarray(v, n, elem_i64); }

int dwf_export_json(const dwf_smodel *s, uint8_t **buf, size_t *len,
                    dwf_err *err)
{
    *buf = NULL;
    *len = 0;
    json_t *o = json_object();
    json_t *layers = json_array();
    if (!o || !layers || json_object_set_new(o, "layers", layers)) {
        json_decref(layers);
        goto nomem;
    }
    int bad = 0;
    bad |= json_object_set_new(o, "format", json_string("dwf-sparse-csr"));
    bad |= json_object_set_new(o, "version", json_integer(1));
    bad |= json_object_set_new(o, "architecture", arch_object(s));
    bad |= json_object_set_new(o, "metrics", metrics_object(s));
    if (s->spec) {
        /* the spec is JSON text: embed it as an object when it parses */
        json_t *sp = json_loads(s->spec, 0, NULL);
        if (!sp)
            sp = json_string(s->spec);
        bad |= json_object_set_new(o, "spec", sp ? sp : json_null());
    } else {
        bad |= json_object_set_new(o, "spec", json_null());
    }
    for (int i = 0; i < s->arch.n_layers && !bad; i++) {
        const dwf_layer_spec *ls = &s->arch.layers[i];
        if (!dwf_layer_has_weight(ls->kind))
            continue;
        const dwf_csr *c = &s->w[i];
        char name[32];
        dwf_arch_layer_name(&s->arch, i, name, sizeof name);
        json_t *jl = json_object();
        if (!jl || json_array_append_new(layers, jl))
            goto nomem;
        bad |= json_object_set_new(jl, "name", json_string(name));
        bad |= json_object_set_new(jl, "type", json_string(dwf_layer_kind_name(ls->kind)));
        bad |= json_object_set_new(jl, "index", json_integer(i));
        bad |= json_object_set_new(jl, "shape", json_pack("[ii]", c->rows, c->cols));
        bad |= json_object_set_new(jl, "kernel_shape", torch_shape(ls, c));
        bad |= json_object_set_new(jl, "nnz", json_integer(c->nnz));
        bad |= json_object_set_new(jl, "indptr", jints64(c->indptr, (int64_t)c->rows + 1));
        bad |= json_object_set_new(jl, "indices", jints32(c->indices, c->nnz));
        bad |= json_object_set_new(jl, "values", jfloats(c->values, c->nnz));
        bad |= json_object_set_new(jl, "bias", s->bias[i] ? jfloats(s->bias[i], c->rows)
                                                         : json_null());
    }
    if (bad)
        goto nomem;
    char *t = json_dumps(o, JSON_INDENT(1) | JSON_REAL_PRECISION(9));
    json_decref(o);
    o = NULL;
    if (!t)
        goto nomem;
    *len = strlen(t);
    *buf = (uint8_t *)t;
    return 0;
nomem:
    json_decref(o);
    return oom(err, "json");
}

/* ---- entry points ------------------------------------------------------------ */

int dwf_export(const dwf_smodel *s, dwf_export_format f, uint8_t **buf,
               size_t *len, dwf_err *err)
{
    *buf = NULL;
    *len = 0;
    switch (f) {
    case DWF_EXPORT_DWFM:
        return dwf_smodel_save(s, buf, len, err);
    case DWF_EXPORT_SAFETENSORS:
        return dwf_export_safetensors(s, 0, buf, len, err);
    case DWF_EXPORT_SAFETENSORS_DENSE:
        return dwf_export_safetensors(s, 1, buf, len, err);
    case DWF_EXPORT_NPZ:
        return dwf_export_npz(s, buf, len, err);
    case DWF_EXPORT_JSON:
        return dwf_export_json(s, buf, len, err);
    case DWF_EXPORT_COUNT:
        break;
    }
    return dwf_errorf(err, DWF_EINVAL, "export: unknown format %d", (int)f);
}

int dwf_export_buffer(const dwf_smodel *s, const char *format, uint8_t **buf,
                      size_t *len, dwf_err *err)
{
    int f = dwf_export_format_parse(format);
    if (f < 0) {
        *buf = NULL;
        *len = 0;
        return dwf_errorf(err, DWF_EINVAL, "export: unknown format '%s' (want "
                          "dwfm, safetensors, safetensors-dense, npz or json)",
                          format ? format : "(null)");
    }
    return dwf_export(s, (dwf_export_format)f, buf, len, err);
}
