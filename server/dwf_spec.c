/*
 * dwf_spec.c - the job spec parser (jansson) and the loading of the data a
 * spec names.
 *
 * Parsing walks the input object with a list of known keys per object and
 * reads every field with its default and range, writing the value used
 * into a canonical object as it goes; s->json is that object dumped with
 * sorted keys. The model section is kept only in the canonical JSON:
 * dwf_spec_load_data() reads it again to build the architecture for the
 * real input shape and class count of the data.
 */
#include "dwf_spec.h"
#include "dwf_workers.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* build/schema_text.c, generated from schema/job.schema.json */
extern const char dwf_schema_json[];

#define FMNIST_DIR_DEFAULT "/usr/share/datasets/fashion-mnist"
#define MNIST_C 1
#define MNIST_H 28
#define MNIST_W 28
#define MNIST_CLASSES 10
#define MAX_HIDDEN 31               /* flatten + 2 per hidden + output <= 64 */
#define MAX_UNITS 1048576           /* dwf_arch_resolve's limit */
#define MAX_SEED 9007199254740991LL /* 2^53 - 1: exact in JavaScript */
#define LENET5_WEIGHT_LAYERS 5
#define REQUIRED LLONG_MIN          /* get_int: no default */

/* ---- reading fields ---------------------------------------------------- */

typedef struct rd {
    char *field;   /* receives the failing field path (DWF_FIELD_LEN), or NULL */
    dwf_err *err;
} rd;

/* Fails with "path: message", path also in r->field. */
__attribute__((format(printf, 3, 4)))
static int fail(rd *r, const char *path, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->field)
        snprintf(r->field, DWF_FIELD_LEN, "%s", path);
    return dwf_errorf(r->err, DWF_EINVAL, "%s: %s", path, msg);
}

static int nomem(rd *r)
{
    return dwf_errorf(r->err, DWF_ENOMEM, "out of memory");
}

/* buf (DWF_FIELD_LEN) = "prefix.key", or "key" at the top; long paths are
 * cut. */
static void join(char *buf, const char *prefix, const char *key)
{
    int n = snprintf(buf, DWF_FIELD_LEN, "%s%s%s", prefix, *prefix ? "." : "",
                     key);
    if (n >= DWF_FIELD_LEN)
        buf[DWF_FIELD_LEN - 1] = 0;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* Sets out[key] = v (stealing v); out may be NULL (nothing recorded). */
static int put(rd *r, json_t *out, const char *key, json_t *v)
{
    if (!out) {
        json_decref(v);
        return 0;
    }
    if (!v || json_object_set_new(out, key, v))
        return nomem(r);
    return 0;
}

/* Every key of obj must be in keys (NULL-terminated). */
static int check_keys(rd *r, json_t *obj, const char *prefix,
                      const char *const *keys)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        int known = 0;
        for (int i = 0; keys[i] && !known; i++)
            known = strcmp(k, keys[i]) == 0;
        if (!known) {
            char p[DWF_FIELD_LEN];
            join(p, prefix, k);
            return fail(r, p, "unknown field");
        }
    }
    return 0;
}

/* An integer from a JSON integer or an integral number. */
static int to_int(rd *r, const char *p, json_t *j, long long *x)
{
    if (json_is_integer(j)) {
        *x = json_integer_value(j);
        return 0;
    }
    if (json_is_real(j)) {
        double d = json_real_value(j);
        if (d == floor(d) && fabs(d) < 9e18) {
            *x = (long long)d;
            return 0;
        }
        return fail(r, p, "must be an integer (got %g)", d);
    }
    return fail(r, p, "must be an integer (got %s)", type_name(j));
}

static int int_range(rd *r, const char *p, long long x, long long lo,
                     long long hi)
{
    if (x >= lo && x <= hi)
        return 0;
    if (hi >= INT_MAX && x < lo)
        return fail(r, p, "must be >= %lld (got %lld)", lo, x);
    return fail(r, p, "must be %lld..%lld (got %lld)", lo, hi, x);
}

/* Integer field in [lo, hi], default def (REQUIRED: must be given). */
static int get_int(rd *r, json_t *in, json_t *out, const char *prefix,
                   const char *key, long long def, long long lo, long long hi,
                   long long *v)
{
    char p[DWF_FIELD_LEN];
    join(p, prefix, key);
    json_t *j = json_object_get(in, key);
    long long x = def;
    int rc;
    if (j) {
        if ((rc = to_int(r, p, j, &x)))
            return rc;
    } else if (def == REQUIRED) {
        return fail(r, p, "required");
    }
    if ((rc = int_range(r, p, x, lo, hi)))
        return rc;
    *v = x;
    return put(r, out, key, json_integer(x));
}

static int get_int32(rd *r, json_t *in, json_t *out, const char *prefix,
                     const char *key, long long def, long long lo, long long hi,
                     int *v)
{
    long long x;
    int rc = get_int(r, in, out, prefix, key, def, lo, hi, &x);
    if (!rc)
        *v = (int)x;
    return rc;
}

/* Number field; lo / hi may be -HUGE_VAL / HUGE_VAL (no bound), *_open
 * makes the bound exclusive. */
static int get_num(rd *r, json_t *in, json_t *out, const char *prefix,
                   const char *key, double def, double lo, int lo_open,
                   double hi, int hi_open, double *v)
{
    char p[DWF_FIELD_LEN];
    join(p, prefix, key);
    json_t *j = json_object_get(in, key);
    double x = def;
    if (j) {
        if (!json_is_number(j))
            return fail(r, p, "must be a number (got %s)", type_name(j));
        x = json_number_value(j);
        if (x == 0)
            x = 0; /* no -0 in the canonical text */
    }
    int below = lo_open ? !(x > lo) : !(x >= lo);
    int above = hi_open ? !(x < hi) : !(x <= hi);
    if (below || above || !isfinite(x)) {
        if (hi == HUGE_VAL)
            return fail(r, p, "must be %s %g (got %g)", lo_open ? ">" : ">=",
                        lo, x);
        if (lo == -HUGE_VAL)
            return fail(r, p, "must be %s %g (got %g)", hi_open ? "<" : "<=",
                        hi, x);
        return fail(r, p, "must be in %c%g, %g%c (got %g)", lo_open ? '(' : '[',
                    lo, hi, hi_open ? ')' : ']', x);
    }
    *v = x;
    return put(r, out, key, json_real(x));
}

static int get_bool(rd *r, json_t *in, json_t *out, const char *prefix,
                    const char *key, int def, int *v)
{
    char p[DWF_FIELD_LEN];
    join(p, prefix, key);
    json_t *j = json_object_get(in, key);
    int x = def;
    if (j) {
        if (!json_is_boolean(j))
            return fail(r, p, "must be true or false (got %s)", type_name(j));
        x = json_is_true(j);
    }
    *v = x;
    return put(r, out, key, json_boolean(x));
}

/* String field out of names (NULL-terminated); *v = its index. */
static int get_enum(rd *r, json_t *in, json_t *out, const char *prefix,
                    const char *key, const char *const *names, int def, int *v)
{
    char p[DWF_FIELD_LEN];
    join(p, prefix, key);
    json_t *j = json_object_get(in, key);
    int x = def;
    if (j) {
        x = -1;
        if (json_is_string(j))
            for (int i = 0; names[i] && x < 0; i++)
                if (strcmp(json_string_value(j), names[i]) == 0)
                    x = i;
        if (x < 0) {
            char list[256] = "";
            size_t n = 0;
            for (int i = 0; names[i] && n < sizeof list; i++)
                n += (size_t)snprintf(list + n, sizeof list - n, "%s\"%s\"",
                                      i ? ", " : "", names[i]);
            if (!json_is_string(j))
                return fail(r, p, "must be one of %s (got %s)", list,
                            type_name(j));
            return fail(r, p, "must be one of %s (got \"%.60s\")", list,
                        json_string_value(j));
        }
    }
    *v = x;
    return put(r, out, key, json_string(names[x]));
}

/* String field of 1..cap-1 bytes copied into buf; def NULL = required. */
static int get_str(rd *r, json_t *in, json_t *out, const char *prefix,
                   const char *key, const char *def, char *buf, size_t cap)
{
    char p[DWF_FIELD_LEN];
    join(p, prefix, key);
    json_t *j = json_object_get(in, key);
    const char *s = def;
    if (j) {
        if (!json_is_string(j))
            return fail(r, p, "must be a string (got %s)", type_name(j));
        s = json_string_value(j);
        size_t n = json_string_length(j);
        if (n == 0)
            return fail(r, p, "must not be empty");
        if (n >= cap)
            return fail(r, p, "longer than %zu bytes", cap - 1);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return fail(r, p, "must not contain control characters");
    } else if (!def) {
        return fail(r, p, "required");
    }
    snprintf(buf, cap, "%s", s);
    return put(r, out, key, json_string(s));
}

/* Optional object field; *obj = NULL when absent. */
static int get_obj(rd *r, json_t *in, const char *prefix, const char *key,
                   json_t **obj)
{
    char p[DWF_FIELD_LEN];
    join(p, prefix, key);
    json_t *j = json_object_get(in, key);
    *obj = NULL;
    if (j && !json_is_object(j))
        return fail(r, p, "must be an object (got %s)", type_name(j));
    *obj = j;
    return 0;
}

/* Adds a new empty object out[key] (when out is non-NULL). */
static int sub_out(rd *r, json_t *out, const char *key, json_t **sub)
{
    *sub = NULL;
    if (!out)
        return 0;
    json_t *o = json_object();
    if (!o || json_object_set_new(out, key, o))
        return nomem(r);
    *sub = o;
    return 0;
}

/* Array field of integers in [lo, hi] with at most max_n entries. */
static int get_int_array(rd *r, json_t *j, json_t *out, const char *prefix,
                         const char *key, long long lo, long long hi, int min_n,
                         int max_n, int *vals, int *n)
{
    char p[DWF_FIELD_LEN];
    join(p, prefix, key);
    if (!json_is_array(j))
        return fail(r, p, "must be an array (got %s)", type_name(j));
    int cnt = (int)json_array_size(j);
    if (cnt < min_n || cnt > max_n)
        return fail(r, p, "must have %d..%d entries (got %d)", min_n, max_n,
                    cnt);
    json_t *arr = out ? json_array() : NULL;
    if (out && !arr)
        return nomem(r);
    for (int i = 0; i < cnt; i++) {
        char pi[DWF_FIELD_LEN + 16];
        snprintf(pi, sizeof pi, "%s[%d]", p, i);
        long long x;
        int rc = to_int(r, pi, json_array_get(j, (size_t)i), &x);
        if (!rc)
            rc = int_range(r, pi, x, lo, hi);
        if (!rc && arr && json_array_append_new(arr, json_integer(x)))
            rc = nomem(r);
        if (rc) {
            json_decref(arr);
            return rc;
        }
        vals[i] = (int)x;
    }
    *n = cnt;
    return arr ? put(r, out, key, arr) : 0;
}

/* ---- the model section ------------------------------------------------- */

enum { ARCH_MLP = 0, ARCH_LENET5, ARCH_CUSTOM };
static const char *const arch_names[] = {"mlp", "lenet5", "custom", NULL};
static const char *const init_names[] = {"auto", "dwf", "naive", "kaiming", NULL};
static const dwf_init_kind init_vals[] = {DWF_INIT_AUTO, DWF_INIT_DWF,
                                          DWF_INIT_NAIVE, DWF_INIT_KAIMING};

typedef struct model_cfg {
    int arch;
    int hidden[MAX_HIDDEN];
    int n_hidden;
    dwf_layer_spec layers[DWF_MAX_LAYERS]; /* custom */
    unsigned char to_classes[DWF_MAX_LAYERS]; /* dense units = class count */
    int n_layers;
    int depth;
    int layer_depths[DWF_MAX_LAYERS];
    int n_layer_depths;                    /* 0 = not given */
    int factorize_bias;
    int init;                              /* index in init_names */
    double eps_init;
} model_cfg;

static int parse_layer(rd *r, json_t *j, json_t *out_arr, int i, int last_dense,
                       model_cfg *m)
{
    static const char *const conv_keys[] = {"type", "filters", "kernel",
                                            "stride", "padding", "depth", NULL};
    static const char *const pool_keys[] = {"type", "kernel", "stride", NULL};
    static const char *const plain_keys[] = {"type", NULL};
    static const char *const dense_keys[] = {"type", "units", "depth", NULL};
    static const char *const type_names[] = {"conv2d", "maxpool2d", "relu",
                                             "flatten", "dense", NULL};
    static const dwf_layer_kind type_vals[] = {
        DWF_LAYER_CONV2D, DWF_LAYER_MAXPOOL2D, DWF_LAYER_RELU,
        DWF_LAYER_FLATTEN, DWF_LAYER_DENSE};
    char p[DWF_FIELD_LEN];
    snprintf(p, sizeof p, "model.layers[%d]", i);
    if (!json_is_object(j))
        return fail(r, p, "must be an object (got %s)", type_name(j));
    json_t *o = NULL;
    if (out_arr) {
        o = json_object();
        if (!o || json_array_append_new(out_arr, o))
            return nomem(r);
    }
    if (!json_object_get(j, "type")) {
        char pt[DWF_FIELD_LEN];
        join(pt, p, "type");
        return fail(r, pt, "required");
    }
    int t, rc;
    if ((rc = get_enum(r, j, o, p, "type", type_names, 0, &t)))
        return rc;
    dwf_layer_spec *l = &m->layers[i];
    memset(l, 0, sizeof *l);
    l->kind = type_vals[t];
    const char *const *keys = l->kind == DWF_LAYER_CONV2D      ? conv_keys
                              : l->kind == DWF_LAYER_MAXPOOL2D ? pool_keys
                              : l->kind == DWF_LAYER_DENSE     ? dense_keys
                                                               : plain_keys;
    if ((rc = check_keys(r, j, p, keys)))
        return rc;
    switch (l->kind) {
    case DWF_LAYER_CONV2D:
        if ((rc = get_int32(r, j, o, p, "filters", REQUIRED, 1, 65536, &l->filters)) ||
            (rc = get_int32(r, j, o, p, "kernel", REQUIRED, 1, 64, &l->kernel)) ||
            (rc = get_int32(r, j, o, p, "stride", 1, 1, 64, &l->stride)) ||
            (rc = get_int32(r, j, o, p, "padding", 0, 0, 64, &l->padding)))
            return rc;
        break;
    case DWF_LAYER_MAXPOOL2D:
        if ((rc = get_int32(r, j, o, p, "kernel", 2, 1, 64, &l->kernel)) ||
            (rc = get_int32(r, j, o, p, "stride", l->kernel, 1, 64, &l->stride)))
            return rc;
        break;
    case DWF_LAYER_DENSE: {
        char pu[DWF_FIELD_LEN];
        join(pu, p, "units");
        json_t *u = json_object_get(j, "units");
        if (!u && i != last_dense)
            return fail(r, pu, "required (only the last dense layer may leave "
                               "it out to mean the class count)");
        if (!u || json_is_string(u)) {
            if (u && strcmp(json_string_value(u), "classes") != 0)
                return fail(r, pu, "must be a positive integer or \"classes\" "
                                   "(got \"%.60s\")", json_string_value(u));
            m->to_classes[i] = 1;
            if ((rc = put(r, o, "units", json_string("classes"))))
                return rc;
        } else if ((rc = get_int32(r, j, o, p, "units", REQUIRED, 1, MAX_UNITS,
                                   &l->units))) {
            return rc;
        }
        break;
    }
    default:
        break;
    }
    if (json_object_get(j, "depth") &&
        (rc = get_int32(r, j, o, p, "depth", 0, 1, DWF_MAX_DEPTH, &l->depth)))
        return rc;
    return 0;
}

static int weight_layers(const model_cfg *m)
{
    if (m->arch == ARCH_MLP)
        return m->n_hidden + 1;
    if (m->arch == ARCH_LENET5)
        return LENET5_WEIGHT_LAYERS;
    int n = 0;
    for (int i = 0; i < m->n_layers; i++)
        n += dwf_layer_has_weight(m->layers[i].kind);
    return n;
}

/* Reads the model section `in` (may be NULL) into m; out (may be NULL)
 * receives the canonical fields. */
static int parse_model(rd *r, json_t *in, json_t *out, model_cfg *m)
{
    static const char *const keys[] = {"arch", "hidden", "layers", "depth",
                                       "layer_depths", "factorize_bias",
                                       "init", "eps_init", NULL};
    static const int default_hidden[] = {300, 100};
    const char *pre = "model";
    json_t *empty = NULL;
    int rc;
    memset(m, 0, sizeof *m);
    if (!in) {
        in = empty = json_object();
        if (!in)
            return nomem(r);
    }
    if ((rc = check_keys(r, in, pre, keys)) ||
        (rc = get_enum(r, in, out, pre, "arch", arch_names, ARCH_MLP, &m->arch)))
        goto done;
    json_t *hidden = json_object_get(in, "hidden");
    json_t *layers = json_object_get(in, "layers");
    json_t *ldepths = json_object_get(in, "layer_depths");
    if (hidden && m->arch != ARCH_MLP) {
        rc = fail(r, "model.hidden", "only used with model.arch \"mlp\"");
        goto done;
    }
    if (layers && m->arch != ARCH_CUSTOM) {
        rc = fail(r, "model.layers", "only used with model.arch \"custom\"");
        goto done;
    }
    if (ldepths && m->arch == ARCH_CUSTOM) {
        rc = fail(r, "model.layer_depths",
                  "only used with model.arch \"mlp\" or \"lenet5\" (give each "
                  "custom layer its own depth)");
        goto done;
    }
    if (m->arch == ARCH_MLP) {
        if (hidden) {
            rc = get_int_array(r, hidden, out, pre, "hidden", 1, MAX_UNITS, 0,
                               MAX_HIDDEN, m->hidden, &m->n_hidden);
        } else {
            m->n_hidden = 2;
            memcpy(m->hidden, default_hidden, sizeof default_hidden);
            if (out)
                rc = put(r, out, "hidden", json_pack("[ii]", 300, 100));
        }
        if (rc)
            goto done;
    } else if (m->arch == ARCH_CUSTOM) {
        if (!layers) {
            rc = fail(r, "model.layers", "required with model.arch \"custom\"");
            goto done;
        }
        if (!json_is_array(layers)) {
            rc = fail(r, "model.layers", "must be an array (got %s)",
                      type_name(layers));
            goto done;
        }
        int n = (int)json_array_size(layers);
        if (n < 1 || n > DWF_MAX_LAYERS) {
            rc = fail(r, "model.layers", "must have 1..%d layers (got %d)",
                      DWF_MAX_LAYERS, n);
            goto done;
        }
        int last_dense = -1;
        for (int i = 0; i < n; i++) {
            json_t *t = json_object_get(json_array_get(layers, (size_t)i), "type");
            if (json_is_string(t) && strcmp(json_string_value(t), "dense") == 0)
                last_dense = i;
        }
        json_t *arr = NULL;
        if (out && (!(arr = json_array()) || json_object_set_new(out, "layers", arr))) {
            rc = nomem(r);
            goto done;
        }
        for (int i = 0; i < n && !rc; i++)
            rc = parse_layer(r, json_array_get(layers, (size_t)i), arr, i,
                             last_dense, m);
        if (rc)
            goto done;
        m->n_layers = n;
        if (weight_layers(m) == 0) {
            rc = fail(r, "model.layers", "has no dense or conv2d layer");
            goto done;
        }
    }
    if ((rc = get_int32(r, in, out, pre, "depth", 3, 1, DWF_MAX_DEPTH, &m->depth)))
        goto done;
    if (ldepths) {
        if ((rc = get_int_array(r, ldepths, out, pre, "layer_depths", 1,
                                DWF_MAX_DEPTH, 1, DWF_MAX_LAYERS,
                                m->layer_depths, &m->n_layer_depths)))
            goto done;
        if (m->n_layer_depths != weight_layers(m)) {
            rc = fail(r, "model.layer_depths",
                      "has %d entries but the %s has %d weight layers",
                      m->n_layer_depths, arch_names[m->arch], weight_layers(m));
            goto done;
        }
    }
    if ((rc = get_bool(r, in, out, pre, "factorize_bias", 0, &m->factorize_bias)) ||
        (rc = get_enum(r, in, out, pre, "init", init_names, 0, &m->init)) ||
        (rc = get_num(r, in, out, pre, "eps_init", 0.25, 0, 1, 1, 0, &m->eps_init)))
        goto done;
    if (init_vals[m->init] == DWF_INIT_KAIMING) {
        int deep = -1;
        if (m->arch == ARCH_CUSTOM) {
            for (int i = 0; i < m->n_layers && deep < 0; i++) {
                const dwf_layer_spec *l = &m->layers[i];
                if (dwf_layer_has_weight(l->kind) &&
                    (l->depth ? l->depth : m->depth) != 1)
                    deep = l->depth ? l->depth : m->depth;
            }
        } else if (m->n_layer_depths) {
            for (int i = 0; i < m->n_layer_depths && deep < 0; i++)
                if (m->layer_depths[i] != 1)
                    deep = m->layer_depths[i];
        } else if (m->depth != 1) {
            deep = m->depth;
        }
        if (deep >= 0)
            rc = fail(r, "model.init",
                      "\"kaiming\" needs depth 1 on every layer (a layer has "
                      "depth %d)", deep);
    }
done:
    json_decref(empty);
    return rc;
}

/* Builds and resolves the architecture of m for the given input. Errors
 * name the model field. */
static int build_arch(rd *r, const model_cfg *m, int c, int h, int w,
                      int classes, dwf_arch *a)
{
    dwf_err e = {0};
    int rc = 0;
    if (m->arch == ARCH_MLP) {
        rc = dwf_arch_mlp(a, c, h, w, m->hidden, m->n_hidden, classes, m->depth,
                          &e);
    } else if (m->arch == ARCH_LENET5) {
        rc = dwf_arch_lenet5(a, c, h, w, classes, m->depth, &e);
    } else {
        dwf_arch_init(a, c, h, w, classes, m->depth);
        for (int i = 0; i < m->n_layers && !rc; i++) {
            dwf_layer_spec l = m->layers[i];
            if (m->to_classes[i])
                l.units = classes;
            rc = dwf_arch_add(a, &l, &e);
        }
        if (!rc)
            rc = dwf_arch_resolve(a, &e);
    }
    if (rc) {
        const char *where = m->arch == ARCH_MLP ? "model.hidden" : "model.arch";
        const char *colon = strstr(e.msg, ": ");
        if (m->arch == ARCH_CUSTOM && strncmp(e.msg, "layers", 6) == 0 && colon) {
            char p[DWF_FIELD_LEN];
            snprintf(p, sizeof p, "model.%.*s", (int)(colon - e.msg), e.msg);
            return fail(r, p, "%s (input %dx%dx%d)", colon + 2, c, h, w);
        }
        if (m->arch == ARCH_CUSTOM)
            where = "model.layers";
        return fail(r, where, "%s (input %dx%dx%d)", e.msg, c, h, w);
    }
    a->factorize_bias = m->factorize_bias;
    for (int i = 0, k = 0; i < a->n_layers && m->n_layer_depths; i++)
        if (dwf_layer_has_weight(a->layers[i].kind) && k < m->n_layer_depths)
            a->layers[i].depth = m->layer_depths[k++];
    return 0;
}

/* ---- the data section -------------------------------------------------- */

static const char *const dataset_names[] = {"fashion-mnist", "mnist", "idx",
                                            "csv", NULL};
static const char *const norm_names[] = {"scale", "standardize", "none", NULL};
static const dwf_norm_kind norm_vals[] = {DWF_NORM_SCALE, DWF_NORM_STANDARDIZE,
                                          DWF_NORM_NONE};

#define K_DIR (1u << DWF_DATA_FASHION_MNIST | 1u << DWF_DATA_MNIST)
#define K_IDX (1u << DWF_DATA_IDX)
#define K_CSV (1u << DWF_DATA_CSV)

static const struct {
    const char *key;
    unsigned kinds; /* data kinds the field belongs to */
} data_only[] = {
    {"dir", K_DIR},           {"train_images", K_IDX}, {"train_labels", K_IDX},
    {"test_images", K_IDX},   {"test_labels", K_IDX},  {"train", K_CSV},
    {"test", K_CSV},          {"label_column", K_CSV},
};

static int parse_data(rd *r, json_t *in, json_t *out, dwf_data_spec *d)
{
    static const char *const keys[] = {
        "dataset", "dir", "train_images", "train_labels", "test_images",
        "test_labels", "train", "test", "label_column", "train_subset",
        "test_subset", "validation", "normalize", NULL};
    const char *pre = "data";
    int rc, kind, norm;
    if ((rc = check_keys(r, in, pre, keys)) ||
        (rc = get_enum(r, in, out, pre, "dataset", dataset_names, 0, &kind)))
        return rc;
    d->kind = (dwf_data_kind)kind;
    for (size_t i = 0; i < sizeof data_only / sizeof *data_only; i++) {
        if (json_object_get(in, data_only[i].key) &&
            !(data_only[i].kinds & (1u << kind))) {
            char p[DWF_FIELD_LEN];
            join(p, pre, data_only[i].key);
            return fail(r, p, "not used with data.dataset \"%s\"",
                        dataset_names[kind]);
        }
    }
    switch (d->kind) {
    case DWF_DATA_FASHION_MNIST:
        rc = get_str(r, in, out, pre, "dir", FMNIST_DIR_DEFAULT, d->dir,
                     sizeof d->dir);
        break;
    case DWF_DATA_MNIST:
        if (!json_object_get(in, "dir"))
            return fail(r, "data.dir", "required with data.dataset \"mnist\"");
        rc = get_str(r, in, out, pre, "dir", NULL, d->dir, sizeof d->dir);
        break;
    case DWF_DATA_IDX:
        if ((rc = get_str(r, in, out, pre, "train_images", NULL,
                          d->train_images, DWF_PATH_LEN)) ||
            (rc = get_str(r, in, out, pre, "train_labels", NULL,
                          d->train_labels, DWF_PATH_LEN)) ||
            (rc = get_str(r, in, out, pre, "test_images", NULL, d->test_images,
                          DWF_PATH_LEN)))
            return rc;
        rc = get_str(r, in, out, pre, "test_labels", NULL, d->test_labels,
                     DWF_PATH_LEN);
        break;
    case DWF_DATA_CSV:
        if ((rc = get_str(r, in, out, pre, "train", NULL, d->train_images,
                          DWF_PATH_LEN)) ||
            (rc = get_str(r, in, out, pre, "test", NULL, d->test_images,
                          DWF_PATH_LEN)))
            return rc;
        rc = get_int32(r, in, out, pre, "label_column", 0, -1, 1000000,
                       &d->label_col);
        break;
    }
    if (rc ||
        (rc = get_int32(r, in, out, pre, "train_subset", 0, 0, INT_MAX,
                        &d->train_subset)) ||
        (rc = get_int32(r, in, out, pre, "test_subset", 0, 0, INT_MAX,
                        &d->test_subset)) ||
        (rc = get_num(r, in, out, pre, "validation", 0, 0, 0, 0.5, 0,
                      &d->validation)) ||
        (rc = get_enum(r, in, out, pre, "normalize", norm_names, 0, &norm)))
        return rc;
    d->norm = norm_vals[norm];
    return 0;
}

/* The IDX files of the dataset kinds that name a folder. */
static const char *const idx_names[4] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

/* True when the resolved path real lies in one of the roots. */
static int in_roots(const char *real, const char *const *roots, int n_roots)
{
    for (int i = 0; i < n_roots; i++) {
        char root[PATH_MAX];
        if (!roots[i] || !realpath(roots[i], root))
            continue;
        size_t n = strlen(root);
        if (strcmp(root, "/") == 0 ||
            (strncmp(real, root, n) == 0 && (real[n] == '/' || real[n] == 0)))
            return 1;
    }
    return 0;
}

static int check_path(rd *r, const char *field, const char *path,
                      const char *const *roots, int n_roots)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return fail(r, field, "%s: %s", path, strerror(errno));
    if (!in_roots(real, roots, n_roots))
        return fail(r, field, "path outside the allowed data roots");
    return 0;
}

static int check_roots(rd *r, const dwf_data_spec *d, const char *const *roots,
                       int n_roots)
{
    int rc;
    switch (d->kind) {
    case DWF_DATA_FASHION_MNIST:
    case DWF_DATA_MNIST:
        if ((rc = check_path(r, "data.dir", d->dir, roots, n_roots)))
            return rc;
        /* the files themselves may be links out of the folder */
        for (int i = 0; i < 4; i++) {
            for (int gz = 0; gz < 2; gz++) {
                char f[DWF_PATH_LEN + 64], real[PATH_MAX];
                snprintf(f, sizeof f, "%s/%s%s", d->dir, idx_names[i],
                         gz ? ".gz" : "");
                if (realpath(f, real) && !in_roots(real, roots, n_roots))
                    return fail(r, "data.dir",
                                "path outside the allowed data roots (%s)", f);
            }
        }
        return 0;
    case DWF_DATA_IDX:
        if ((rc = check_path(r, "data.train_images", d->train_images, roots, n_roots)) ||
            (rc = check_path(r, "data.train_labels", d->train_labels, roots, n_roots)) ||
            (rc = check_path(r, "data.test_images", d->test_images, roots, n_roots)))
            return rc;
        return check_path(r, "data.test_labels", d->test_labels, roots, n_roots);
    case DWF_DATA_CSV:
        if ((rc = check_path(r, "data.train", d->train_images, roots, n_roots)))
            return rc;
        return check_path(r, "data.test", d->test_images, roots, n_roots);
    }
    return 0;
}

/* ---- train, prune, select ---------------------------------------------- */

static const char *const optim_names[] = {"sgd", "adam", NULL};
static const dwf_optim_kind optim_vals[] = {DWF_OPT_SGD, DWF_OPT_ADAM};
static const char *const sched_names[] = {"cosine", "constant", "step", NULL};
static const dwf_sched_kind sched_vals[] = {DWF_SCHED_COSINE, DWF_SCHED_CONSTANT,
                                            DWF_SCHED_STEP};
static const char *const method_names[] = {"dwf", "magnitude", "gradual",
                                           "random", "snip", "synflow", NULL};
static const dwf_method method_vals[] = {DWF_METHOD_DWF, DWF_METHOD_MAGNITUDE,
                                         DWF_METHOD_GRADUAL, DWF_METHOD_RANDOM,
                                         DWF_METHOD_SNIP, DWF_METHOD_SYNFLOW};

static int parse_train(rd *r, json_t *in, json_t *out, dwf_train_opts *o)
{
    static const char *const keys[] = {
        "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov",
        "beta1", "beta2", "adam_eps", "schedule", "step_epochs", "gamma",
        "lr_min", "warmup_epochs", "lambda", "threads", NULL};
    const char *pre = "train";
    dwf_optim_opts *op = &o->optim;
    int rc, kind, sched;
    if ((rc = check_keys(r, in, pre, keys)) ||
        (rc = get_int32(r, in, out, pre, "epochs", 20, 1, 10000, &o->epochs)) ||
        (rc = get_int32(r, in, out, pre, "batch_size", 128, 1, 65536,
                        &o->batch_size)) ||
        (rc = get_enum(r, in, out, pre, "optimizer", optim_names, 0, &kind)) ||
        (rc = get_num(r, in, out, pre, "lr", 0.2, 0, 1, HUGE_VAL, 0, &op->lr)) ||
        (rc = get_num(r, in, out, pre, "momentum", 0, 0, 0, 1, 1, &op->momentum)) ||
        (rc = get_bool(r, in, out, pre, "nesterov", 0, &op->nesterov)) ||
        (rc = get_num(r, in, out, pre, "beta1", 0.9, 0, 0, 1, 1, &op->beta1)) ||
        (rc = get_num(r, in, out, pre, "beta2", 0.999, 0, 0, 1, 1, &op->beta2)) ||
        (rc = get_num(r, in, out, pre, "adam_eps", 1e-8, 0, 1, HUGE_VAL, 0,
                      &op->adam_eps)) ||
        (rc = get_enum(r, in, out, pre, "schedule", sched_names, 0, &sched)) ||
        (rc = get_num(r, in, out, pre, "step_epochs", 10, 0, 1, HUGE_VAL, 0,
                      &op->step_epochs)) ||
        (rc = get_num(r, in, out, pre, "gamma", 0.1, 0, 1, 1, 0, &op->gamma)) ||
        (rc = get_num(r, in, out, pre, "lr_min", 0, 0, 0, HUGE_VAL, 0,
                      &op->lr_min)) ||
        (rc = get_num(r, in, out, pre, "warmup_epochs", 0, 0, 0, HUGE_VAL, 0,
                      &op->warmup_epochs)) ||
        (rc = get_num(r, in, out, pre, "lambda", 1e-3, 0, 0, HUGE_VAL, 0,
                      &o->lambda)) ||
        (rc = get_int32(r, in, out, pre, "threads", 1, 1, DWF_MAX_THREADS, &o->threads)))
        return rc;
    op->kind = optim_vals[kind];
    op->sched = sched_vals[sched];
    if (op->kind != DWF_OPT_SGD && op->momentum > 0)
        return fail(r, "train.momentum",
                    "only used with optimizer \"sgd\" (adam uses beta1)");
    if (op->nesterov && (op->kind != DWF_OPT_SGD || op->momentum <= 0))
        return fail(r, "train.nesterov",
                    "needs optimizer \"sgd\" with train.momentum > 0");
    if (op->lr_min > op->lr)
        return fail(r, "train.lr_min", "must be <= train.lr (%g) (got %g)",
                    op->lr, op->lr_min);
    if (op->warmup_epochs > o->epochs)
        return fail(r, "train.warmup_epochs",
                    "must be <= train.epochs (%d) (got %g)", o->epochs,
                    op->warmup_epochs);
    return 0;
}

static int parse_prune(rd *r, json_t *in, json_t *out, dwf_train_opts *o)
{
    static const char *const keys[] = {
        "eps", "target_cr", "finetune_epochs", "prune_start", "prune_end",
        "prune_every", "snip_batches", "synflow_rounds", NULL};
    const char *pre = "prune";
    double end_default = 0.75 * o->epochs;
    int end_given = json_object_get(in, "prune_end") != NULL;
    int rc;
    if ((rc = check_keys(r, in, pre, keys)) ||
        /* a float32 threshold: above FLT_MAX it would be inf */
        (rc = get_num(r, in, out, pre, "eps", DWF_EPS_F32, 0, 1, FLT_MAX, 0,
                      &o->eps_prune)) ||
        (rc = get_num(r, in, out, pre, "target_cr", 10, 1, 0, HUGE_VAL, 0,
                      &o->target_cr)) ||
        (rc = get_int32(r, in, out, pre, "finetune_epochs", 0, 0, 10000,
                        &o->finetune_epochs)) ||
        (rc = get_num(r, in, out, pre, "prune_start", 0, 0, 0, HUGE_VAL, 0,
                      &o->prune_start)) ||
        (rc = get_num(r, in, out, pre, "prune_end", end_default, 0, 1,
                      HUGE_VAL, 0, &o->prune_end)) ||
        (rc = get_int32(r, in, out, pre, "prune_every", 100, 1, 1000000,
                        &o->prune_every)) ||
        (rc = get_int32(r, in, out, pre, "snip_batches", 1, 1, 10000,
                        &o->snip_batches)) ||
        (rc = get_int32(r, in, out, pre, "synflow_rounds", 100, 1, 10000,
                        &o->synflow_rounds)))
        return rc;
    /* the schedule of gradual pruning must fit in the run (checked for
     * "gradual" only: the fields mean nothing to the other methods) */
    if (o->method == DWF_METHOD_GRADUAL) {
        if (o->prune_end > o->epochs)
            return fail(r, "prune.prune_end",
                        "must be <= train.epochs (%d) (got %g)", o->epochs,
                        o->prune_end);
        if (o->prune_start >= o->prune_end) {
            if (!end_given)
                return fail(r, "prune.prune_start",
                            "must be < prune.prune_end (%g, 75%% of "
                            "train.epochs) (got %g)",
                            o->prune_end, o->prune_start);
            return fail(r, "prune.prune_end",
                        "must be > prune.prune_start (%g) (got %g)",
                        o->prune_start, o->prune_end);
        }
    }
    return 0;
}

static int parse_select(rd *r, json_t *in, json_t *out, double validation,
                        dwf_select_spec *s)
{
    static const char *const keys[] = {"max_drop", "split", NULL};
    static const char *const split_names[] = {"validation", NULL};
    int rc, split;
    if ((rc = check_keys(r, in, "select", keys)) ||
        (rc = get_num(r, in, out, "select", "max_drop", 0.01, 0, 0, 1, 0,
                      &s->max_drop)) ||
        (rc = get_enum(r, in, out, "select", "split", split_names, 0, &split)))
        return rc;
    if (!(validation > 0))
        return fail(r, "select",
                    "needs a validation split: set data.validation > 0");
    s->enabled = 1;
    s->use_validation = 1;
    return 0;
}

/* The target-CR search (method dwf only). train_lambda: the spec's
 * train.lambda when it was given, else 0; the first run's lambda
 * (s->opts.lambda0) is the one given, else the bracket's geometric middle. */
static int parse_search(rd *r, json_t *in, json_t *out, dwf_method method,
                        double train_lambda, dwf_search_spec *s)
{
    static const char *const keys[] = {"target_cr", "tolerance", "budget",
                                       "lambda_min", "lambda_max", NULL};
    dwf_search_opts *o = &s->opts;
    dwf_search_opts def;
    dwf_search_opts_default(&def);
    int rc;
    if ((rc = check_keys(r, in, "search", keys)))
        return rc;
    if (!json_object_get(in, "target_cr"))
        return fail(r, "search.target_cr", "is required: the compression ratio "
                                           "the search aims for");
    if ((rc = get_num(r, in, out, "search", "target_cr", def.target_cr, 1, 1,
                      1e9, 0, &o->target_cr)) ||
        (rc = get_num(r, in, out, "search", "tolerance", def.tolerance, 0, 1, 1, 1,
                      &o->tolerance)) ||
        (rc = get_int32(r, in, out, "search", "budget", def.budget, 1, 100,
                        &o->budget)) ||
        (rc = get_num(r, in, out, "search", "lambda_min", def.lambda_min, 0, 1,
                      1e3, 0, &o->lambda_min)) ||
        (rc = get_num(r, in, out, "search", "lambda_max", def.lambda_max, 0, 1,
                      1e3, 0, &o->lambda_max)))
        return rc;
    if (method != DWF_METHOD_DWF)
        return fail(r, "search", "searches lambda for method dwf only (got "
                                 "method %s)", dwf_method_name(method));
    if (!(o->lambda_max > o->lambda_min * 1.001))
        return fail(r, "search.lambda_max", "must be > search.lambda_min (%g) "
                                            "(got %g)", o->lambda_min, o->lambda_max);
    /* without train.lambda the first run is at the bracket's geometric
     * middle, which becomes the spec's train.lambda (the caller writes it
     * to the canonical JSON, so that it parses again to itself) */
    o->lambda0 = exp(0.5 * (log(o->lambda_min) + log(o->lambda_max)));
    if (train_lambda > 0.0) {
        if (train_lambda < o->lambda_min || train_lambda > o->lambda_max)
            return fail(r, "train.lambda", "the search starts at train.lambda, "
                        "which must lie in [search.lambda_min, search.lambda_max] "
                        "= [%g, %g] (got %g)", o->lambda_min, o->lambda_max,
                        train_lambda);
        o->lambda0 = train_lambda;
    }
    s->enabled = 1;
    return 0;
}

/* Threshold curves during training. */
static int parse_thresholds(rd *r, json_t *in, json_t *out, int epochs,
                            dwf_curve_spec *c)
{
    static const char *const keys[] = {"every", "per_decade", NULL};
    int rc;
    if ((rc = check_keys(r, in, "thresholds", keys)) ||
        (rc = get_int32(r, in, out, "thresholds", "every", 0, 0, 10000, &c->every)) ||
        (rc = get_int32(r, in, out, "thresholds", "per_decade", 4, 1, 20,
                        &c->per_decade)))
        return rc;
    if (c->every > epochs)
        return fail(r, "thresholds.every", "must be <= train.epochs (%d) (got %d)",
                    epochs, c->every);
    return 0;
}

/* ---- the whole spec ----------------------------------------------------- */

static int parse_top(rd *r, json_t *in, json_t *out, const char *const *roots,
                     int n_roots, dwf_spec *s)
{
    static const char *const keys[] = {"name", "priority", "seed", "method",
                                       "checkpoint_every", "data", "model",
                                       "train", "prune", "select", "search",
                                       "thresholds", NULL};
    json_t *data, *model, *train, *prune, *sel, *srch, *thr, *o_data, *o_model,
        *o_train, *o_prune, *o_sel, *o_srch, *o_thr, *empty;
    long long seed;
    int rc, method;
    model_cfg m;
    if ((rc = check_keys(r, in, "", keys)) ||
        (rc = get_str(r, in, out, "", "name", "job", s->name, sizeof s->name)) ||
        (rc = get_int32(r, in, out, "", "priority", 0, -100, 100, &s->priority)) ||
        (rc = get_int(r, in, out, "", "seed", 1, 0, MAX_SEED, &seed)) ||
        (rc = get_enum(r, in, out, "", "method", method_names, 0, &method)) ||
        (rc = get_int32(r, in, out, "", "checkpoint_every", 1, 0, 10000,
                        &s->checkpoint_every)) ||
        (rc = get_obj(r, in, "", "data", &data)) ||
        (rc = get_obj(r, in, "", "model", &model)) ||
        (rc = get_obj(r, in, "", "train", &train)) ||
        (rc = get_obj(r, in, "", "prune", &prune)) ||
        (rc = get_obj(r, in, "", "select", &sel)) ||
        (rc = get_obj(r, in, "", "search", &srch)) ||
        (rc = get_obj(r, in, "", "thresholds", &thr)))
        return rc;
    s->opts.seed = (uint64_t)seed;
    s->opts.method = method_vals[method];
    if (!(empty = json_object()))
        return nomem(r);
    if ((rc = sub_out(r, out, "data", &o_data)) ||
        (rc = parse_data(r, data ? data : empty, o_data, &s->data)) ||
        (rc = sub_out(r, out, "model", &o_model)) ||
        (rc = parse_model(r, model, o_model, &m)) ||
        (rc = sub_out(r, out, "train", &o_train)) ||
        (rc = parse_train(r, train ? train : empty, o_train, &s->opts)) ||
        (rc = sub_out(r, out, "prune", &o_prune)) ||
        (rc = parse_prune(r, prune ? prune : empty, o_prune, &s->opts)))
        goto done;
    if (sel && ((rc = sub_out(r, out, "select", &o_sel)) ||
                (rc = parse_select(r, sel, o_sel, s->data.validation, &s->select))))
        goto done;
    if ((rc = sub_out(r, out, "thresholds", &o_thr)) ||
        (rc = parse_thresholds(r, thr ? thr : empty, o_thr, s->opts.epochs,
                               &s->curves)))
        goto done;
    if (srch) {
        json_t *jl = train ? json_object_get(train, "lambda") : NULL;
        if ((rc = sub_out(r, out, "search", &o_srch)) ||
            (rc = parse_search(r, srch, o_srch, s->opts.method,
                               jl ? s->opts.lambda : 0.0, &s->search)))
            goto done;
        s->opts.lambda = s->search.opts.lambda0;
        if (json_object_set_new(o_train, "lambda", json_real(s->opts.lambda))) {
            rc = nomem(r);
            goto done;
        }
    }
    s->opts.init = init_vals[m.init];
    s->opts.eps_init = m.eps_init;
    s->opts.norm = s->data.norm;
    snprintf(s->arch_name, sizeof s->arch_name, "%s", arch_names[m.arch]);
    if (n_roots > 0 && (rc = check_roots(r, &s->data, roots, n_roots)))
        goto done;
    if (s->data.kind == DWF_DATA_FASHION_MNIST || s->data.kind == DWF_DATA_MNIST) {
        rc = build_arch(r, &m, MNIST_C, MNIST_H, MNIST_W, MNIST_CLASSES, &s->arch);
    } else {
        /* the input shape is known once the files are read */
        dwf_arch_init(&s->arch, 0, 0, 0, 0, m.depth);
        s->arch.factorize_bias = m.factorize_bias;
    }
done:
    json_decref(empty);
    return rc;
}

/* jansson writes reals with 17 significant digits (0.2 becomes
 * 0.20000000000000001). Rewrites every real of the compact text s in the
 * shortest form that reads back to the same double, keeping it a real
 * ("10.0", "1e-8"). Returns a malloc'd string or NULL. */
static char *tidy_reals(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(2 * n + 32), *q = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n;) {
        if (s[i] == '"') { /* copy a string literal */
            *q++ = s[i++];
            while (i < n && s[i] != '"') {
                if (s[i] == '\\' && i + 1 < n)
                    *q++ = s[i++];
                *q++ = s[i++];
            }
            if (i < n)
                *q++ = s[i++];
            continue;
        }
        if (s[i] != '-' && (s[i] < '0' || s[i] > '9')) {
            *q++ = s[i++];
            continue;
        }
        size_t j = i;
        int real = 0;
        while (j < n && strchr("+-0123456789.eE", s[j])) {
            real |= s[j] == '.' || s[j] == 'e' || s[j] == 'E';
            j++;
        }
        if (!real || j - i > 64) {
            memcpy(q, s + i, j - i);
            q += j - i;
            i = j;
            continue;
        }
        char tok[72], buf[40];
        memcpy(tok, s + i, j - i);
        tok[j - i] = 0;
        double v = strtod(tok, NULL);
        int p = 1;
        for (; p < 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, v);
            if (strtod(buf, NULL) == v)
                break;
        }
        snprintf(buf, sizeof buf, "%.*g", p, v);
        /* plain digits up to 1e16 ("10" rather than "1e+01") */
        char *e = strchr(buf, 'e');
        int ex = e ? atoi(e + 1) : 0;
        if (e && ex >= 0 && ex < 16)
            snprintf(buf, sizeof buf, "%.*g", ex + 1 > p ? ex + 1 : p, v);
        /* "1e-08" -> "1e-8", "1e+20" -> "1e20" */
        e = strchr(buf, 'e');
        if (e) {
            char *d = e + 1, *t = e + 1;
            if (*t == '+')
                t++;
            else if (*t == '-')
                *d++ = *t++;
            while (*t == '0' && t[1])
                t++;
            memmove(d, t, strlen(t) + 1);
        } else if (!strchr(buf, '.')) {
            strcat(buf, ".0");
        }
        size_t bl = strlen(buf);
        memcpy(q, buf, bl);
        q += bl;
        i = j;
    }
    *q = 0;
    return o;
}

int dwf_spec_parse(const char *text, size_t len, const char *const *roots,
                   int n_roots, dwf_spec *out, char *err_field, dwf_err *err)
{
    rd r = {err_field, err};
    if (err_field)
        err_field[0] = 0;
    memset(out, 0, sizeof *out);
    if (!text)
        return dwf_errorf(err, DWF_EFORMAT, "invalid JSON: no text");
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                              &je);
    if (!root)
        return dwf_errorf(err, DWF_EFORMAT,
                          "invalid JSON at line %d, column %d: %s", je.line,
                          je.column, je.text);
    if (!json_is_object(root)) {
        int rc = dwf_errorf(err, DWF_EINVAL,
                            "the spec must be a JSON object (got %s)",
                            type_name(root));
        json_decref(root);
        return rc;
    }
    dwf_spec s;
    memset(&s, 0, sizeof s);
    dwf_train_opts_default(&s.opts);
    json_t *canon = json_object();
    int rc = canon ? parse_top(&r, root, canon, roots, n_roots, &s) : nomem(&r);
    if (!rc) {
        char *txt = json_dumps(canon, JSON_SORT_KEYS | JSON_COMPACT);
        s.json = txt ? tidy_reals(txt) : NULL;
        free(txt);
        if (!s.json)
            rc = nomem(&r);
    }
    json_decref(canon);
    json_decref(root);
    if (rc)
        return rc;
    *out = s;
    return 0;
}

void dwf_spec_free(dwf_spec *s)
{
    if (!s)
        return;
    free(s->json);
    s->json = NULL;
}

const char *dwf_spec_schema(void)
{
    return dwf_schema_json;
}

/* ---- loading the data --------------------------------------------------- */

/* dir/name, or dir/name.gz when only that exists. */
static int dir_file(const char *dir, const char *name, char *buf, size_t cap,
                    dwf_err *err)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n + 3 >= cap)
        return dwf_errorf(err, DWF_EINVAL, "data.dir: path too long");
    if (access(buf, F_OK) == 0)
        return 0;
    strcat(buf, ".gz");
    if (access(buf, F_OK) == 0)
        return 0;
    return dwf_errorf(err, DWF_EIO, "data.dir: %s/%s: neither it nor %s.gz "
                      "exists", dir, name, name);
}

/* Moves the first n samples of *src (all when n is 0) into *dst. */
static int head(dwf_dataset *src, int n, dwf_dataset *dst, dwf_err *err)
{
    if (n > 0 && n < src->n) {
        int rc = dwf_dataset_head(src, n, dst, err);
        if (rc)
            return rc;
        dwf_dataset_free(src);
    } else {
        *dst = *src;
    }
    memset(src, 0, sizeof *src);
    return 0;
}

/* Rebuilds s->arch from the canonical model section for the data. */
static int resolve_arch(dwf_spec *s, int c, int h, int w, int classes,
                        dwf_err *err)
{
    rd r = {NULL, err};
    json_error_t je;
    json_t *root = s->json ? json_loads(s->json, 0, &je) : NULL;
    if (!root)
        return dwf_errorf(err, DWF_EINVAL, "the spec was not parsed");
    model_cfg m;
    int rc = parse_model(&r, json_object_get(root, "model"), NULL, &m);
    if (!rc)
        rc = build_arch(&r, &m, c, h, w, classes, &s->arch);
    json_decref(root);
    return rc;
}

int dwf_spec_load_data(dwf_spec *s, dwf_dataset *train, dwf_dataset *val,
                       dwf_dataset *test, dwf_err *err)
{
    const dwf_data_spec *d = &s->data;
    dwf_dataset full = {0}, tst = {0}, sub = {0}, tr = {0}, va = {0}, te = {0};
    char paths[4][DWF_PATH_LEN + 8];
    const char *train_name, *test_name; /* for messages */
    int rc = 0;
    memset(train, 0, sizeof *train);
    memset(val, 0, sizeof *val);
    memset(test, 0, sizeof *test);
    switch (d->kind) {
    case DWF_DATA_FASHION_MNIST:
    case DWF_DATA_MNIST:
        for (int i = 0; i < 4 && !rc; i++)
            rc = dir_file(d->dir, idx_names[i], paths[i], sizeof paths[i], err);
        if (rc)
            return rc;
        if ((rc = dwf_idx_load(paths[0], paths[1], MNIST_CLASSES, &full, err)) ||
            (rc = dwf_idx_load(paths[2], paths[3], MNIST_CLASSES, &tst, err)))
            goto fail;
        train_name = paths[0];
        test_name = paths[3];
        break;
    case DWF_DATA_IDX:
        if ((rc = dwf_idx_load(d->train_images, d->train_labels, 0, &full, err)) ||
            (rc = dwf_idx_load(d->test_images, d->test_labels, 0, &tst, err)))
            goto fail;
        train_name = d->train_labels;
        test_name = d->test_labels;
        break;
    case DWF_DATA_CSV:
        if ((rc = dwf_csv_load(d->train_images, d->label_col, &full, err)) ||
            (rc = dwf_csv_load(d->test_images, d->label_col, &tst, err)))
            goto fail;
        train_name = d->train_images;
        test_name = d->test_images;
        break;
    default:
        return dwf_errorf(err, DWF_EINVAL, "data.dataset: unknown kind %d",
                          (int)d->kind);
    }
    if (tst.c != full.c || tst.h != full.h || tst.w != full.w) {
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: test samples are %dx%dx%d but training samples "
                        "are %dx%dx%d",
                        test_name, tst.c, tst.h, tst.w, full.c, full.h, full.w);
        goto fail;
    }
    int classes = full.n_classes;
    if (classes < 2) {
        rc = dwf_errorf(err, DWF_EFORMAT,
                        "%s: the training labels give %d class; need at least 2",
                        train_name, classes);
        goto fail;
    }
    if ((rc = dwf_dataset_check_labels(&tst, classes, test_name, err)) ||
        (rc = head(&full, d->train_subset, &sub, err)) ||
        (rc = head(&tst, d->test_subset, &te, err)))
        goto fail;
    sub.n_classes = te.n_classes = classes;
    int n_val = 0;
    if (d->validation > 0) {
        n_val = (int)floor(d->validation * sub.n + 0.5);
        if (n_val < 1)
            n_val = 1;
        if (n_val >= sub.n) {
            rc = dwf_errorf(err, DWF_EINVAL,
                            "data.validation: holding out %g of %d training "
                            "samples leaves none to train on",
                            d->validation, sub.n);
            goto fail;
        }
        if ((rc = dwf_dataset_split(&sub, n_val, s->opts.seed, &tr, &va, err)))
            goto fail;
        dwf_dataset_free(&sub);
        tr.n_classes = va.n_classes = classes;
    } else {
        tr = sub;
        memset(&sub, 0, sizeof sub);
    }
    if ((rc = resolve_arch(s, tr.c, tr.h, tr.w, classes, err)))
        goto fail;
    *train = tr;
    *val = va;
    *test = te;
    return 0;
fail:
    dwf_dataset_free(&full);
    dwf_dataset_free(&tst);
    dwf_dataset_free(&sub);
    dwf_dataset_free(&tr);
    dwf_dataset_free(&va);
    dwf_dataset_free(&te);
    return rc;
}
