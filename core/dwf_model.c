/*
 * dwf_model.c - a network's parameters and one batch's activations, with
 * the forward pass, the backward pass and the softmax cross-entropy loss.
 */
#include "dwf_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwf_layers.h"

static int64_t layer_out_size(const dwf_layer_spec *l)
{
    return (int64_t)l->out_c * l->out_h * l->out_w;
}

static dwf_conv_shape conv_shape(const dwf_layer_spec *l)
{
    dwf_conv_shape s = {l->in_c, l->in_h, l->in_w, l->out_c, l->out_h,
                        l->out_w, l->kernel, l->stride, l->padding};
    return s;
}

void dwf_model_free(dwf_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_params; i++)
        dwf_param_free(&m->params[i]);
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->arch.layers[i].kind != DWF_LAYER_FLATTEN)
            free(m->act[i + 1]);
        free(m->argmax[i]);
    }
    free(m->dact[0]);
    free(m->dact[1]);
    free(m->col);
    free(m->dcol);
    free(m->scratch);
    free(m);
}

int dwf_model_create(const dwf_arch *arch, int max_batch, dwf_model **out,
                     dwf_err *err)
{
    *out = NULL;
    if (max_batch < 1)
        return dwf_errorf(err, DWF_EINVAL, "batch size %d must be >= 1",
                          max_batch);
    dwf_model *m = calloc(1, sizeof *m);
    if (!m)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the model");
    m->arch = *arch;
    m->max_batch = max_batch;
    int rc = dwf_arch_resolve(&m->arch, err);
    if (rc) {
        free(m);
        return rc;
    }
    const dwf_arch *a = &m->arch;
    int64_t in_size = (int64_t)a->in_c * a->in_h * a->in_w;
    int64_t max_act = in_size, max_col = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        m->weight_idx[i] = m->bias_idx[i] = -1;
        int64_t os = layer_out_size(l);
        if (os > max_act)
            max_act = os;
        if (l->kind == DWF_LAYER_CONV2D) {
            int64_t c = (int64_t)l->in_c * l->kernel * l->kernel * l->out_h * l->out_w;
            if (c > max_col)
                max_col = c;
        }
    }
    m->max_act = max_act;
    size_t bsz = (size_t)max_batch;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        if (l->kind == DWF_LAYER_FLATTEN)
            continue; /* aliases its input */
        m->act[i + 1] = malloc(bsz * (size_t)layer_out_size(l) * sizeof(float));
        if (!m->act[i + 1])
            goto oom;
        if (l->kind == DWF_LAYER_MAXPOOL2D) {
            m->argmax[i] = malloc(bsz * (size_t)layer_out_size(l) * sizeof(int32_t));
            if (!m->argmax[i])
                goto oom;
        }
        if (dwf_layer_has_weight(l->kind)) {
            int depth = dwf_arch_layer_depth(a, i);
            m->weight_idx[i] = m->n_params;
            rc = dwf_param_alloc(&m->params[m->n_params], dwf_arch_weight_count(a, i),
                                 depth, 1, err);
            if (rc)
                goto fail;
            m->n_params++;
            m->bias_idx[i] = m->n_params;
            rc = dwf_param_alloc(&m->params[m->n_params], dwf_arch_bias_count(a, i),
                                 a->factorize_bias ? depth : 1,
                                 a->factorize_bias, err);
            if (rc)
                goto fail;
            m->n_params++;
        }
    }
    m->dact[0] = malloc(bsz * (size_t)max_act * sizeof(float));
    m->dact[1] = malloc(bsz * (size_t)max_act * sizeof(float));
    m->scratch = malloc(DWF_PARAM_SCRATCH * sizeof(float));
    if (!m->dact[0] || !m->dact[1] || !m->scratch)
        goto oom;
    if (max_col > 0) {
        m->col = malloc((size_t)max_col * sizeof(float));
        m->dcol = malloc((size_t)max_col * sizeof(float));
        if (!m->col || !m->dcol)
            goto oom;
    }
    /* flatten layers alias their input */
    for (int i = 0; i < a->n_layers; i++)
        if (a->layers[i].kind == DWF_LAYER_FLATTEN)
            m->act[i + 1] = m->act[i];
    *out = m;
    return 0;
oom:
    rc = dwf_errorf(err, DWF_ENOMEM, "out of memory for the model (batch %d)",
                    max_batch);
fail:
    dwf_model_free(m);
    return rc;
}

int dwf_model_init(dwf_model *m, dwf_init_kind kind, double eps_init,
                   dwf_rng *rng, dwf_err *err)
{
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->weight_idx[i] < 0)
            continue;
        double sigma = sqrt(2.0 / dwf_arch_fan_in(&m->arch, i));
        dwf_param *w = &m->params[m->weight_idx[i]];
        dwf_init_kind k = kind;
        if (k == DWF_INIT_KAIMING && w->depth > 1)
            return dwf_errorf(err, DWF_EINVAL,
                              "init: kaiming needs depth 1, layer %d has %d",
                              i, w->depth);
        int rc = dwf_param_init(w, k, sigma, eps_init, rng, err);
        if (rc)
            return rc;
        dwf_param_init_const(&m->params[m->bias_idx[i]], 0.0f);
    }
    return 0;
}

void dwf_model_collapse(dwf_model *m)
{
    for (int i = 0; i < m->n_params; i++)
        dwf_param_collapse(&m->params[i]);
}

const float *dwf_model_forward(dwf_model *m, const float *x, int b)
{
    const dwf_arch *a = &m->arch;
    m->act[0] = (float *)x; /* read only: never written */
    if (a->n_layers > 0 && a->layers[0].kind == DWF_LAYER_FLATTEN)
        m->act[1] = m->act[0];
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        const float *in = m->act[i];
        float *out = m->act[i + 1];
        int64_t in_size = (int64_t)l->in_c * l->in_h * l->in_w;
        switch (l->kind) {
        case DWF_LAYER_DENSE:
            dwf_dense_forward(in, m->params[m->weight_idx[i]].w,
                              m->params[m->bias_idx[i]].w, b, (int)in_size,
                              l->units, out);
            break;
        case DWF_LAYER_CONV2D: {
            dwf_conv_shape s = conv_shape(l);
            dwf_conv2d_forward(&s, in, m->params[m->weight_idx[i]].w,
                               m->params[m->bias_idx[i]].w, b, m->col, out);
            break;
        }
        case DWF_LAYER_MAXPOOL2D:
            dwf_maxpool_forward(l->in_c, l->in_h, l->in_w, l->kernel,
                                l->stride, l->out_h, l->out_w, in, b, out,
                                m->argmax[i]);
            break;
        case DWF_LAYER_RELU:
            dwf_relu_forward(in, (int64_t)b * in_size, out);
            break;
        case DWF_LAYER_FLATTEN:
            m->act[i + 1] = m->act[i];
            break;
        }
    }
    return m->act[a->n_layers];
}

void dwf_model_backward(dwf_model *m, const float *dlogits, int b)
{
    const dwf_arch *a = &m->arch;
    int cur = 0;
    const float *dy = dlogits;
    for (int i = a->n_layers - 1; i >= 0; i--) {
        const dwf_layer_spec *l = &a->layers[i];
        const float *in = m->act[i];
        int64_t in_size = (int64_t)l->in_c * l->in_h * l->in_w;
        /* the input gradient is needed unless every earlier layer is
         * parameterless (then nothing below uses it) */
        int need_dx = 0;
        for (int j = 0; j < i; j++)
            need_dx |= dwf_layer_has_weight(a->layers[j].kind);
        float *dx = need_dx ? m->dact[cur] : NULL;
        switch (l->kind) {
        case DWF_LAYER_DENSE: {
            dwf_param *w = &m->params[m->weight_idx[i]];
            dwf_param *bias = &m->params[m->bias_idx[i]];
            dwf_dense_backward(in, w->w, dy, b, (int)in_size, l->units, w->gw,
                               bias->gw, dx);
            break;
        }
        case DWF_LAYER_CONV2D: {
            dwf_conv_shape s = conv_shape(l);
            dwf_param *w = &m->params[m->weight_idx[i]];
            dwf_param *bias = &m->params[m->bias_idx[i]];
            dwf_conv2d_backward(&s, in, w->w, dy, b, m->col, m->dcol, w->gw,
                                bias->gw, dx);
            break;
        }
        case DWF_LAYER_MAXPOOL2D:
            if (dx)
                dwf_maxpool_backward(l->in_c, l->in_h, l->in_w, l->out_h,
                                     l->out_w, dy, m->argmax[i], b, dx);
            break;
        case DWF_LAYER_RELU:
            if (dx)
                dwf_relu_backward(m->act[i + 1], dy, (int64_t)b * in_size, dx);
            break;
        case DWF_LAYER_FLATTEN:
            if (dx)
                dx = (float *)dy; /* same memory layout: pass through */
            break;
        }
        if (!dx)
            break;
        if (dx != dy) {
            dy = dx;
            cur ^= 1;
        }
    }
}

double dwf_model_factor_grads(dwf_model *m, double lambda)
{
    double pen = 0.0;
    for (int i = 0; i < m->n_params; i++)
        pen += dwf_param_factor_grads(&m->params[i], lambda, m->scratch);
    return pen;
}

double dwf_model_penalty(const dwf_model *m, double lambda)
{
    double pen = 0.0;
    for (int i = 0; i < m->n_params; i++)
        pen += dwf_param_penalty(&m->params[i], lambda);
    return pen;
}

double dwf_softmax_xent(const float *logits, const int32_t *y, int b, int c,
                        float *dlogits, int *correct)
{
    double loss = 0.0;
    int ok = 0;
    for (int i = 0; i < b; i++) {
        const float *z = logits + (size_t)i * c;
        int am = 0;
        float mx = z[0];
        for (int j = 1; j < c; j++)
            if (z[j] > mx) {
                mx = z[j];
                am = j;
            }
        double s = 0.0;
        for (int j = 0; j < c; j++)
            s += exp((double)z[j] - mx);
        double lse = mx + log(s);
        loss += lse - z[y[i]];
        ok += am == y[i];
        if (dlogits) {
            float *d = dlogits + (size_t)i * c;
            for (int j = 0; j < c; j++)
                d[j] = (float)((exp((double)z[j] - lse) - (j == y[i])) / b);
        }
    }
    if (correct)
        *correct = ok;
    return b > 0 ? loss / b : 0.0;
}

void dwf_model_param_list(dwf_model *m, dwf_param **out)
{
    for (int i = 0; i < m->n_params; i++)
        out[i] = &m->params[i];
}

void dwf_model_layer_name(const dwf_model *m, int i, char *buf, int len)
{
    int k = 0;
    for (int j = 0; j < i; j++)
        k += m->arch.layers[j].kind == m->arch.layers[i].kind;
    const char *base = m->arch.layers[i].kind == DWF_LAYER_CONV2D ? "conv" : "dense";
    snprintf(buf, (size_t)len, "%s%d", base, k);
}
