/*
 * dwf_arch.c - architecture builders and shape inference.
 */
#include "dwf_arch.h"

#include <stdio.h>
#include <string.h>

static const char *const kind_names[] = {"dense", "conv2d", "maxpool2d",
                                         "relu", "flatten"};

const char *dwf_layer_kind_name(dwf_layer_kind k)
{
    if ((int)k < 0 || (int)k >= (int)(sizeof kind_names / sizeof *kind_names))
        return "?";
    return kind_names[k];
}

int dwf_layer_kind_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof kind_names / sizeof *kind_names); i++)
        if (strcmp(name, kind_names[i]) == 0)
            return i;
    return -1;
}

int dwf_layer_has_weight(dwf_layer_kind k)
{
    return k == DWF_LAYER_DENSE || k == DWF_LAYER_CONV2D;
}

void dwf_arch_init(dwf_arch *a, int in_c, int in_h, int in_w, int n_classes,
                   int depth)
{
    memset(a, 0, sizeof *a);
    a->in_c = in_c;
    a->in_h = in_h;
    a->in_w = in_w;
    a->n_classes = n_classes;
    a->depth = depth;
}

int dwf_arch_add(dwf_arch *a, const dwf_layer_spec *l, dwf_err *err)
{
    if (a->n_layers >= DWF_MAX_LAYERS)
        return dwf_errorf(err, DWF_EINVAL, "layers: more than %d layers",
                          DWF_MAX_LAYERS);
    a->layers[a->n_layers++] = *l;
    return 0;
}

static int add_simple(dwf_arch *a, dwf_layer_kind k, dwf_err *err)
{
    dwf_layer_spec l = {.kind = k};
    return dwf_arch_add(a, &l, err);
}

static int add_dense(dwf_arch *a, int units, dwf_err *err)
{
    dwf_layer_spec l = {.kind = DWF_LAYER_DENSE, .units = units};
    return dwf_arch_add(a, &l, err);
}

int dwf_arch_mlp(dwf_arch *a, int in_c, int in_h, int in_w, const int *hidden,
                 int n_hidden, int n_classes, int depth, dwf_err *err)
{
    int rc;
    dwf_arch_init(a, in_c, in_h, in_w, n_classes, depth);
    if ((rc = add_simple(a, DWF_LAYER_FLATTEN, err)))
        return rc;
    for (int i = 0; i < n_hidden; i++) {
        if ((rc = add_dense(a, hidden[i], err)) ||
            (rc = add_simple(a, DWF_LAYER_RELU, err)))
            return rc;
    }
    if ((rc = add_dense(a, n_classes, err)))
        return rc;
    return dwf_arch_resolve(a, err);
}

int dwf_arch_lenet5(dwf_arch *a, int in_c, int in_h, int in_w, int n_classes,
                    int depth, dwf_err *err)
{
    dwf_arch_init(a, in_c, in_h, in_w, n_classes, depth);
    const dwf_layer_spec ls[] = {
        {.kind = DWF_LAYER_CONV2D, .filters = 6, .kernel = 5, .padding = 2},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_MAXPOOL2D, .kernel = 2},
        {.kind = DWF_LAYER_CONV2D, .filters = 16, .kernel = 5},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_MAXPOOL2D, .kernel = 2},
        {.kind = DWF_LAYER_FLATTEN},
        {.kind = DWF_LAYER_DENSE, .units = 120},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 84},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = n_classes},
    };
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++) {
        int rc = dwf_arch_add(a, &ls[i], err);
        if (rc)
            return rc;
    }
    return dwf_arch_resolve(a, err);
}

int dwf_arch_resolve(dwf_arch *a, dwf_err *err)
{
    if (a->in_c <= 0 || a->in_h <= 0 || a->in_w <= 0)
        return dwf_errorf(err, DWF_EINVAL, "input shape %dx%dx%d is empty",
                          a->in_c, a->in_h, a->in_w);
    if (a->n_classes < 2)
        return dwf_errorf(err, DWF_EINVAL, "need at least 2 classes (got %d)",
                          a->n_classes);
    if (a->depth < 1 || a->depth > DWF_MAX_DEPTH)
        return dwf_errorf(err, DWF_EINVAL, "depth must be 1..%d (got %d)",
                          DWF_MAX_DEPTH, a->depth);
    if (a->n_layers <= 0)
        return dwf_errorf(err, DWF_EINVAL, "layers: the network has no layers");
    int c = a->in_c, h = a->in_h, w = a->in_w, last_weight = -1;
    for (int i = 0; i < a->n_layers; i++) {
        dwf_layer_spec *l = &a->layers[i];
        l->in_c = c;
        l->in_h = h;
        l->in_w = w;
        if (l->depth < 0 || l->depth > DWF_MAX_DEPTH)
            return dwf_errorf(err, DWF_EINVAL,
                              "layers[%d].depth: must be 1..%d (got %d)", i,
                              DWF_MAX_DEPTH, l->depth);
        switch (l->kind) {
        case DWF_LAYER_DENSE:
            if (l->units <= 0 || l->units > 1 << 20)
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d].units: must be 1..%d (got %d)",
                                  i, 1 << 20, l->units);
            if ((long long)c * h * w * l->units > (1ll << 31))
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d]: dense %lldx%d is too large", i,
                                  (long long)c * h * w, l->units);
            c = l->units;
            h = w = 1;
            last_weight = i;
            break;
        case DWF_LAYER_CONV2D: {
            if (l->filters <= 0 || l->filters > 65536)
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d].filters: must be 1..65536 (got %d)",
                                  i, l->filters);
            if (l->stride == 0)
                l->stride = 1;
            if (l->kernel <= 0 || l->stride < 0 || l->padding < 0 ||
                l->padding >= l->kernel + 64)
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d]: bad kernel %d / stride %d / padding %d",
                                  i, l->kernel, l->stride, l->padding);
            if (h == 1 && w == 1 && i > 0 && a->layers[i - 1].kind == DWF_LAYER_DENSE)
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d]: conv2d after a dense layer", i);
            int ph = h + 2 * l->padding, pw = w + 2 * l->padding;
            if (l->kernel > ph || l->kernel > pw)
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d].kernel: %d larger than input %dx%d",
                                  i, l->kernel, ph, pw);
            c = l->filters;
            h = (ph - l->kernel) / l->stride + 1;
            w = (pw - l->kernel) / l->stride + 1;
            last_weight = i;
            break;
        }
        case DWF_LAYER_MAXPOOL2D:
            if (l->stride == 0)
                l->stride = l->kernel;
            if (l->kernel <= 0 || l->stride <= 0)
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d]: bad pool kernel %d / stride %d",
                                  i, l->kernel, l->stride);
            if (l->kernel > h || l->kernel > w)
                return dwf_errorf(err, DWF_EINVAL,
                                  "layers[%d].kernel: %d larger than input %dx%d",
                                  i, l->kernel, h, w);
            h = (h - l->kernel) / l->stride + 1;
            w = (w - l->kernel) / l->stride + 1;
            break;
        case DWF_LAYER_RELU:
            break;
        case DWF_LAYER_FLATTEN:
            c = c * h * w;
            h = w = 1;
            break;
        default:
            return dwf_errorf(err, DWF_EINVAL, "layers[%d].type: unknown", i);
        }
        l->out_c = c;
        l->out_h = h;
        l->out_w = w;
    }
    if (last_weight < 0)
        return dwf_errorf(err, DWF_EINVAL,
                          "layers: the network has no dense or conv2d layer");
    if (c * h * w != a->n_classes)
        return dwf_errorf(err, DWF_EINVAL,
                          "layers: the network outputs %d values but the data "
                          "has %d classes",
                          c * h * w, a->n_classes);
    return 0;
}

int dwf_arch_layer_depth(const dwf_arch *a, int i)
{
    int d = a->layers[i].depth;
    return d > 0 ? d : a->depth;
}

int64_t dwf_arch_weight_count(const dwf_arch *a, int i)
{
    const dwf_layer_spec *l = &a->layers[i];
    if (l->kind == DWF_LAYER_DENSE)
        return (int64_t)l->in_c * l->in_h * l->in_w * l->units;
    if (l->kind == DWF_LAYER_CONV2D)
        return (int64_t)l->filters * l->in_c * l->kernel * l->kernel;
    return 0;
}

int64_t dwf_arch_bias_count(const dwf_arch *a, int i)
{
    const dwf_layer_spec *l = &a->layers[i];
    if (l->kind == DWF_LAYER_DENSE)
        return l->units;
    if (l->kind == DWF_LAYER_CONV2D)
        return l->filters;
    return 0;
}

int dwf_arch_fan_in(const dwf_arch *a, int i)
{
    const dwf_layer_spec *l = &a->layers[i];
    if (l->kind == DWF_LAYER_DENSE)
        return l->in_c * l->in_h * l->in_w;
    if (l->kind == DWF_LAYER_CONV2D)
        return l->in_c * l->kernel * l->kernel;
    return 0;
}

void dwf_arch_layer_name(const dwf_arch *a, int i, char *buf, int len)
{
    int k = 0;
    for (int j = 0; j < i; j++)
        k += a->layers[j].kind == a->layers[i].kind;
    const char *base = a->layers[i].kind == DWF_LAYER_CONV2D ? "conv" : "dense";
    snprintf(buf, (size_t)len, "%s%d", base, k);
}

double dwf_arch_flops(const dwf_arch *a)
{
    double f = 0.0;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        if (l->kind == DWF_LAYER_DENSE)
            f += 2.0 * (double)dwf_arch_weight_count(a, i);
        else if (l->kind == DWF_LAYER_CONV2D)
            f += 2.0 * (double)dwf_arch_weight_count(a, i) * l->out_h * l->out_w;
    }
    return f;
}

void dwf_arch_describe(const dwf_arch *a, char *buf, int len)
{
    int n = snprintf(buf, (size_t)len, "%dx%dx%d", a->in_c, a->in_h, a->in_w);
    for (int i = 0; i < a->n_layers && n >= 0 && n < len; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        switch (l->kind) {
        case DWF_LAYER_DENSE:
            n += snprintf(buf + n, (size_t)(len - n), "-dense%d", l->units);
            break;
        case DWF_LAYER_CONV2D:
            n += snprintf(buf + n, (size_t)(len - n), "-conv%dk%d", l->filters,
                          l->kernel);
            break;
        case DWF_LAYER_MAXPOOL2D:
            n += snprintf(buf + n, (size_t)(len - n), "-pool%d", l->kernel);
            break;
        case DWF_LAYER_RELU:
            n += snprintf(buf + n, (size_t)(len - n), "-relu");
            break;
        case DWF_LAYER_FLATTEN:
            break;
        }
    }
}
