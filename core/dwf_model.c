/*
 * dwf_model.c - a network's parameters and one batch's activations, with
 * the forward pass, the backward pass and the softmax cross-entropy loss.
 */
#include "dwf_model.h"
#include "dwf_simd.h"

#include <cblas.h>
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

static void free_lanes(dwf_model *m)
{
    for (int k = 0; k < m->n_lanes - 1; k++) {
        dwf_lane *l = &m->lanes[k];
        for (int i = 0; i < m->arch.n_layers; i++) {
            if (m->arch.layers[i].kind != DWF_LAYER_FLATTEN)
                free(l->act[i + 1]);
            free(l->argmax[i]);
        }
        free(l->dact[0]);
        free(l->dact[1]);
        free(l->col);
        free(l->dcol);
        for (int i = 0; i < m->n_params; i++)
            free(l->gw[i]);
        for (int i = 0; i < m->arch.n_layers; i++)
            free(l->dy_keep[i]);
    }
    free(m->lanes);
    m->lanes = NULL;
    m->n_lanes = 1;
}

void dwf_model_free(dwf_model *m)
{
    if (!m)
        return;
    free_lanes(m);
    for (int i = 0; i < m->n_params; i++)
        dwf_param_free(&m->params[i]);
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->arch.layers[i].kind != DWF_LAYER_FLATTEN)
            free(m->act[i + 1]);
        free(m->argmax[i]);
        free(m->dy_keep[i]);
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
    m->n_lanes = 1;
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
        if (l->kind == DWF_LAYER_DENSE &&
            !(m->dy_keep[i] = malloc(bsz * (size_t)l->units * sizeof(float))))
            goto oom;
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

/* Forward into the workspace act/argmax/col (the model's or a lane's). */
static const float *forward(dwf_model *m, float **act, int32_t **argmax,
                            float *col, const float *x, int b)
{
    const dwf_arch *a = &m->arch;
    act[0] = (float *)x; /* read only: never written */
    if (a->n_layers > 0 && a->layers[0].kind == DWF_LAYER_FLATTEN)
        act[1] = act[0];
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        const float *in = act[i];
        float *out = act[i + 1];
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
                               m->params[m->bias_idx[i]].w, b, col, out);
            break;
        }
        case DWF_LAYER_MAXPOOL2D:
            dwf_maxpool_forward(l->in_c, l->in_h, l->in_w, l->kernel,
                                l->stride, l->out_h, l->out_w, in, b, out,
                                argmax[i]);
            break;
        case DWF_LAYER_RELU:
            dwf_relu_forward(in, (int64_t)b * in_size, out);
            break;
        case DWF_LAYER_FLATTEN:
            act[i + 1] = act[i];
            break;
        }
    }
    return act[a->n_layers];
}

/* The bias gradient (column sums of dy, as dwf_dense_backward adds them)
 * and the input gradient of a dense layer, without its weight gradient. */
static void dense_backward_nodw(const float *w, const float *dy, int b, int in,
                                int out, float *dbias, float *dx)
{
    if (dbias)
        dwf_col_sums(dy, b, out, dbias);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, in, out,
                    1.0f, dy, out, w, in, 0.0f, dx, in);
}

/* Where a deferred backward leaves the dense layers' inputs and output
 * gradients (NULL: dense weight gradients are computed as usual). */
typedef struct defer_io {
    float **keep;
    const float **x, **dy;
} defer_io;

/* Backward through the workspace of a forward; gw[i] receives parameter
 * i's weight gradient (not for dense layers with def). */
static void backward(dwf_model *m, float **act, float **dact,
                     int32_t **argmax, float *col, float *dcol, float **gw,
                     const float *dlogits, int b, const defer_io *def)
{
    const dwf_arch *a = &m->arch;
    int cur = 0;
    const float *dy = dlogits;
    for (int i = a->n_layers - 1; i >= 0; i--) {
        const dwf_layer_spec *l = &a->layers[i];
        const float *in = act[i];
        int64_t in_size = (int64_t)l->in_c * l->in_h * l->in_w;
        /* the input gradient is needed unless every earlier layer is
         * parameterless (then nothing below uses it) */
        int need_dx = 0;
        for (int j = 0; j < i; j++)
            need_dx |= dwf_layer_has_weight(a->layers[j].kind);
        float *dx = need_dx ? dact[cur] : NULL;
        switch (l->kind) {
        case DWF_LAYER_DENSE: {
            int wi = m->weight_idx[i], bi = m->bias_idx[i];
            if (!def) {
                dwf_dense_backward(in, m->params[wi].w, dy, b, (int)in_size,
                                   l->units, gw[wi], gw[bi], dx);
                break;
            }
            dense_backward_nodw(m->params[wi].w, dy, b, (int)in_size, l->units,
                                gw[bi], dx);
            /* dy in a ping-pong buffer is overwritten by the next layer
             * down, if there is one */
            if (dx && (dy == dact[0] || dy == dact[1])) {
                memcpy(def->keep[i], dy, (size_t)b * l->units * sizeof(float));
                dy = def->keep[i];
            }
            def->x[i] = in;
            def->dy[i] = dy;
            break;
        }
        case DWF_LAYER_CONV2D: {
            dwf_conv_shape s = conv_shape(l);
            int wi = m->weight_idx[i], bi = m->bias_idx[i];
            dwf_conv2d_backward(&s, in, m->params[wi].w, dy, b, col, dcol,
                                gw[wi], gw[bi], dx);
            break;
        }
        case DWF_LAYER_MAXPOOL2D:
            if (dx)
                dwf_maxpool_backward(l->in_c, l->in_h, l->in_w, l->out_h,
                                     l->out_w, dy, argmax[i], b, dx);
            break;
        case DWF_LAYER_RELU:
            if (dx)
                dwf_relu_backward(act[i + 1], dy, (int64_t)b * in_size, dx);
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

const float *dwf_model_forward(dwf_model *m, const float *x, int b)
{
    return forward(m, m->act, m->argmax, m->col, x, b);
}

void dwf_model_backward(dwf_model *m, const float *dlogits, int b)
{
    float *gw[2 * DWF_MAX_LAYERS];
    for (int i = 0; i < m->n_params; i++)
        gw[i] = m->params[i].gw;
    backward(m, m->act, m->dact, m->argmax, m->col, m->dcol, gw, dlogits, b,
             NULL);
}

const float *dwf_model_forward_lane(dwf_model *m, int k, const float *x, int b)
{
    if (k == 0)
        return dwf_model_forward(m, x, b);
    dwf_lane *l = &m->lanes[k - 1];
    return forward(m, l->act, l->argmax, l->col, x, b);
}

void dwf_model_backward_lane(dwf_model *m, int k, const float *dlogits, int b)
{
    if (k == 0) {
        dwf_model_backward(m, dlogits, b);
        return;
    }
    dwf_lane *l = &m->lanes[k - 1];
    backward(m, l->act, l->dact, l->argmax, l->col, l->dcol, l->gw, dlogits, b,
             NULL);
}

void dwf_model_backward_lane_defer(dwf_model *m, int k, const float *dlogits,
                                   int b)
{
    if (k == 0) {
        float *gw[2 * DWF_MAX_LAYERS];
        for (int i = 0; i < m->n_params; i++)
            gw[i] = m->params[i].gw;
        defer_io def = {m->dy_keep, m->dw_x, m->dw_dy};
        memset(m->dw_x, 0, sizeof m->dw_x);
        memset(m->dw_dy, 0, sizeof m->dw_dy);
        backward(m, m->act, m->dact, m->argmax, m->col, m->dcol, gw, dlogits, b,
                 &def);
        return;
    }
    dwf_lane *l = &m->lanes[k - 1];
    defer_io def = {l->dy_keep, l->dw_x, l->dw_dy};
    memset(l->dw_x, 0, sizeof l->dw_x);
    memset(l->dw_dy, 0, sizeof l->dw_dy);
    backward(m, l->act, l->dact, l->argmax, l->col, l->dcol, l->gw, dlogits, b,
             &def);
}

int dwf_model_dense_io(const dwf_model *m, int k, int layer, const float **x,
                       const float **dy)
{
    if (k < 0 || k >= m->n_lanes || layer < 0 || layer >= m->arch.n_layers)
        return -1;
    const float *const *xs = k == 0 ? m->dw_x : m->lanes[k - 1].dw_x;
    const float *const *dys = k == 0 ? m->dw_dy : m->lanes[k - 1].dw_dy;
    if (!xs[layer] || !dys[layer])
        return -1;
    *x = xs[layer];
    *dy = dys[layer];
    return 0;
}

float *dwf_model_lane_gw(dwf_model *m, int k, int i)
{
    return k == 0 ? m->params[i].gw : m->lanes[k - 1].gw[i];
}

/* The buffers of one extra lane for batches of up to l->max_batch. */
static int alloc_lane(dwf_model *m, dwf_lane *l)
{
    const dwf_arch *a = &m->arch;
    size_t bsz = (size_t)l->max_batch;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *ls = &a->layers[i];
        if (ls->kind == DWF_LAYER_FLATTEN)
            continue; /* aliases its input, set by forward */
        size_t os = (size_t)layer_out_size(ls);
        l->act[i + 1] = malloc(bsz * os * sizeof(float));
        if (!l->act[i + 1])
            return -1;
        if (ls->kind == DWF_LAYER_MAXPOOL2D && !(l->argmax[i] = malloc(bsz * os * sizeof(int32_t))))
            return -1;
        if (ls->kind == DWF_LAYER_DENSE && !(l->dy_keep[i] = malloc(bsz * os * sizeof(float))))
            return -1;
    }
    l->dact[0] = malloc(bsz * (size_t)m->max_act * sizeof(float));
    l->dact[1] = malloc(bsz * (size_t)m->max_act * sizeof(float));
    if (!l->dact[0] || !l->dact[1])
        return -1;
    for (int i = 0; i < m->n_params; i++)
        if (!(l->gw[i] = malloc((size_t)m->params[i].n * sizeof(float))))
            return -1;
    if (m->col) {
        int64_t max_col = 0;
        for (int i = 0; i < a->n_layers; i++) {
            const dwf_layer_spec *ls = &a->layers[i];
            if (ls->kind == DWF_LAYER_CONV2D) {
                int64_t c = (int64_t)ls->in_c * ls->kernel * ls->kernel * ls->out_h * ls->out_w;
                max_col = c > max_col ? c : max_col;
            }
        }
        l->col = malloc((size_t)max_col * sizeof(float));
        l->dcol = malloc((size_t)max_col * sizeof(float));
        if (!l->col || !l->dcol)
            return -1;
    }
    return 0;
}

int dwf_model_set_lanes(dwf_model *m, int n, dwf_err *err)
{
    if (n < 1 || n > DWF_MAX_THREADS)
        return dwf_errorf(err, DWF_EINVAL, "lanes: %d must be in 1..%d", n,
                          DWF_MAX_THREADS);
    free_lanes(m);
    if (n == 1)
        return 0;
    m->lanes = calloc((size_t)n - 1, sizeof *m->lanes);
    if (!m->lanes)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for %d lanes", n);
    m->n_lanes = n;
    for (int k = 0; k < n - 1; k++) {
        m->lanes[k].max_batch = (m->max_batch + n - 1) / n;
        if (alloc_lane(m, &m->lanes[k])) {
            free_lanes(m);
            return dwf_errorf(err, DWF_ENOMEM,
                              "out of memory for lane %d of %d (batch %d)", k + 1,
                              n, m->max_batch);
        }
    }
    return 0;
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

double dwf_softmax_xent_part(const float *logits, const int32_t *y, int b,
                             int total, int c, float *dlogits, int *correct)
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
                d[j] = (float)((exp((double)z[j] - lse) - (j == y[i])) / total);
        }
    }
    if (correct)
        *correct = ok;
    return loss;
}

double dwf_softmax_xent(const float *logits, const int32_t *y, int b, int c,
                        float *dlogits, int *correct)
{
    double loss = dwf_softmax_xent_part(logits, y, b, b, c, dlogits, correct);
    return b > 0 ? loss / b : 0.0;
}

void dwf_model_param_list(dwf_model *m, dwf_param **out)
{
    for (int i = 0; i < m->n_params; i++)
        out[i] = &m->params[i];
}
