/*
 * dwf_optim.c - SGD (momentum, Nesterov) and Adam on the factors of every
 * parameter, and the learning-rate schedules.
 */
#include "dwf_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double dwf_sched_lr(const dwf_optim_opts *o, int64_t step, int64_t total_steps,
                    int64_t steps_per_epoch)
{
    if (steps_per_epoch < 1)
        steps_per_epoch = 1;
    double warm = o->warmup_epochs * (double)steps_per_epoch;
    double t = (double)step;
    if (warm > 0.0 && t < warm)
        return o->lr * (t + 1.0) / warm;
    t -= warm > 0.0 ? warm : 0.0;
    double T = (double)total_steps - (warm > 0.0 ? warm : 0.0);
    switch (o->sched) {
    case DWF_SCHED_STEP: {
        double e = t / (double)steps_per_epoch;
        double k = o->step_epochs > 0.0 ? floor(e / o->step_epochs) : 0.0;
        return o->lr * pow(o->gamma, k);
    }
    case DWF_SCHED_COSINE:
        if (T <= 0.0)
            return o->lr;
        if (t > T)
            t = T;
        return o->lr_min +
               (o->lr - o->lr_min) * 0.5 * (1.0 + cos(3.141592653589793 * t / T));
    case DWF_SCHED_CONSTANT:
    default:
        return o->lr;
    }
}

int dwf_optim_create(dwf_optim *o, const dwf_optim_opts *opts,
                     dwf_param **params, int n_params, dwf_err *err)
{
    memset(o, 0, sizeof *o);
    o->opts = *opts;
    o->n_params = n_params;
    o->params = malloc((size_t)n_params * sizeof *o->params);
    if (!o->params)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the optimizer");
    memcpy(o->params, params, (size_t)n_params * sizeof *params);
    int64_t total = 0;
    for (int i = 0; i < n_params; i++) {
        total += params[i]->n * params[i]->depth;
        o->n_bufs += params[i]->depth;
    }
    int per = 0;
    if (opts->kind == DWF_OPT_ADAM)
        per = 2;
    else if (opts->momentum > 0.0)
        per = 1;
    o->n_floats = total * per;
    if (o->n_floats > 0) {
        o->state = calloc((size_t)o->n_floats, sizeof(float));
        if (!o->state) {
            dwf_optim_free(o);
            return dwf_errorf(err, DWF_ENOMEM,
                              "out of memory for optimizer state (%lld floats)",
                              (long long)o->n_floats);
        }
    }
    return 0;
}

void dwf_optim_free(dwf_optim *o)
{
    free(o->params);
    free(o->state);
    memset(o, 0, sizeof *o);
}

int64_t dwf_optim_state_floats(const dwf_optim *o)
{
    return o->n_floats;
}

static void sgd_plain(float *restrict f, const float *restrict g, int64_t n,
                      float lr)
{
    for (int64_t i = 0; i < n; i++)
        f[i] -= lr * g[i];
}

static void sgd_momentum(float *restrict f, const float *restrict g,
                         float *restrict v, int64_t n, float lr, float mu,
                         int nesterov)
{
    if (nesterov) {
        for (int64_t i = 0; i < n; i++) {
            v[i] = mu * v[i] + g[i];
            f[i] -= lr * (g[i] + mu * v[i]);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            v[i] = mu * v[i] + g[i];
            f[i] -= lr * v[i];
        }
    }
}

static void adam(float *restrict f, const float *restrict g, float *restrict m,
                 float *restrict v, int64_t n, float lr_t, float b1, float b2,
                 float eps)
{
    for (int64_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        f[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps);
    }
}

void dwf_optim_step(dwf_optim *o, double lr)
{
    const dwf_optim_opts *op = &o->opts;
    o->t++;
    float *st = o->state;
    double lr_t = lr, eps = op->adam_eps;
    if (op->kind == DWF_OPT_ADAM) {
        double c1 = 1.0 - pow(op->beta1, (double)o->t);
        double c2 = 1.0 - pow(op->beta2, (double)o->t);
        lr_t = lr * sqrt(c2) / c1;
        eps = op->adam_eps * sqrt(c2);
    }
    for (int i = 0; i < o->n_params; i++) {
        dwf_param *p = o->params[i];
        for (int d = 0; d < p->depth; d++) {
            float *f = p->f[d];
            const float *g = p->g[d];
            if (op->kind == DWF_OPT_ADAM) {
                adam(f, g, st, st + p->n, p->n, (float)lr_t, (float)op->beta1,
                     (float)op->beta2, (float)eps);
                st += 2 * p->n;
            } else if (st) {
                sgd_momentum(f, g, st, p->n, (float)lr, (float)op->momentum,
                             op->nesterov);
                st += p->n;
            } else {
                sgd_plain(f, g, p->n, (float)lr);
            }
            /* masked gradients are zero, but momentum or Adam state may
             * not be after a mask change: pin masked entries to zero */
            if (p->mask && d == 0)
                for (int64_t j = 0; j < p->n; j++)
                    if (!p->mask[j])
                        f[j] = 0.0f;
        }
    }
}
