/*
 * dwf_optim.c - SGD (momentum, Nesterov) and Adam on the factors of every
 * parameter, and the learning-rate schedules.
 */
#include "dwf_optim.h"
#include "dwf_simd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Per thread: DWF_MAX_DEPTH factor gradient blocks, the summed weight
 * gradient block, then the scratch of dwf_param_grads_block. */
#define GBUF_FLOATS ((DWF_MAX_DEPTH + 1) * DWF_PARAM_BLOCK + DWF_PARAM_SCRATCH)

double dwf_sched_lr(const dwf_optim_opts *o, int64_t step, int64_t total_steps,
                    int64_t steps_per_epoch)
{
    if (steps_per_epoch < 1)
        steps_per_epoch = 1;
    double warm = o->warmup_epochs * (double)steps_per_epoch;
    double t = (double)step;
    /* capped at 1: with a fractional warm-up (e.g. 9.5 steps) the last
     * warm-up step would otherwise exceed lr */
    if (warm > 0.0 && t < warm)
        return o->lr * fmin(1.0, (t + 1.0) / warm);
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
    for (int i = 0; i < n_params; i++)
        o->n_blocks += (int)((params[i]->n + DWF_PARAM_BLOCK - 1) / DWF_PARAM_BLOCK);
    o->gbuf = malloc((size_t)DWF_MAX_THREADS * GBUF_FLOATS * sizeof(float));
    o->block_ss = malloc(((size_t)o->n_blocks + 1) * sizeof(float));
    if (!o->gbuf || !o->block_ss) {
        dwf_optim_free(o);
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the optimizer");
    }
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
    dwf_workers_free(o->workers);
    free(o->params);
    free(o->block_ss);
    free(o->state);
    free(o->gbuf);
    memset(o, 0, sizeof *o);
}

int64_t dwf_optim_state_floats(const dwf_optim *o)
{
    return o->n_floats;
}

DWF_VEC static void sgd_plain(float *restrict f, const float *restrict g, int64_t n,
                      float lr)
{
    for (int64_t i = 0; i < n; i++)
        f[i] -= lr * g[i];
}

DWF_VEC static void sgd_momentum(float *restrict f, const float *restrict g,
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

DWF_VEC static void adam(float *restrict f, const float *restrict g, float *restrict m,
                 float *restrict v, int64_t n, float lr_t, float b1, float b2,
                 float eps)
{
    for (int64_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        f[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps);
    }
}

DWF_VEC static void add_into(float *restrict a, const float *restrict b, int n)
{
    for (int i = 0; i < n; i++)
        a[i] += b[i];
}

typedef struct step_consts {
    float lr, mu, b1, b2, eps;
} step_consts;

static step_consts consts(dwf_optim *o, double lr)
{
    const dwf_optim_opts *op = &o->opts;
    step_consts k = {(float)lr, (float)op->momentum, (float)op->beta1,
                     (float)op->beta2, (float)op->adam_eps};
    if (op->kind == DWF_OPT_ADAM) {
        double c1 = 1.0 - pow(op->beta1, (double)o->t);
        double c2 = 1.0 - pow(op->beta2, (double)o->t);
        k.lr = (float)(lr * sqrt(c2) / c1);
        k.eps = (float)(op->adam_eps * sqrt(c2));
    }
    return k;
}

/* Updates f[0..n) with g; st is this factor's state (NULL for plain SGD;
 * Adam keeps m at st and v at st + stride). */
static void update(const dwf_optim *o, const step_consts *k, float *f,
                   const float *g, float *st, int64_t stride, int64_t n)
{
    if (o->opts.kind == DWF_OPT_ADAM)
        adam(f, g, st, st + stride, n, k->lr, k->b1, k->b2, k->eps);
    else if (st)
        sgd_momentum(f, g, st, n, k->lr, k->mu, o->opts.nesterov);
    else
        sgd_plain(f, g, n, k->lr);
}

static int64_t state_per_factor(const dwf_optim *o, const dwf_param *p)
{
    if (o->opts.kind == DWF_OPT_ADAM)
        return 2 * p->n;
    return o->state ? p->n : 0;
}

void dwf_optim_step(dwf_optim *o, double lr)
{
    o->t++;
    step_consts k = consts(o, lr);
    float *st = o->state;
    for (int i = 0; i < o->n_params; i++) {
        dwf_param *p = o->params[i];
        for (int d = 0; d < p->depth; d++) {
            update(o, &k, p->f[d], p->g[d], st, p->n, p->n);
            st += state_per_factor(o, p);
            if (p->mask && d == 0)
                for (int64_t j = 0; j < p->n; j++)
                    if (!p->mask[j])
                        p->f[0][j] = 0.0f;
        }
    }
}

int dwf_optim_set_threads(dwf_optim *o, int n, dwf_err *err)
{
    if (n < 1 || n > DWF_MAX_THREADS)
        return dwf_errorf(err, DWF_EINVAL, "threads: %d must be in 1..%d", n,
                          DWF_MAX_THREADS);
    dwf_workers_free(o->workers);
    o->workers = NULL;
    return n > 1 ? dwf_workers_create(n, &o->workers, err) : 0;
}

/* One call of dwf_optim_update_sum, shared by the threads. */
typedef struct update_job {
    dwf_optim *o;
    step_consts k;
    double lambda;
    int n_extra;
    float *const *extra;
    int n_lanes;
    double work;    /* entries x depth over all parameters */
} update_job;

/* Gradients, update and collapse of the block [s, s + m) of parameter i,
 * whose optimizer state starts at st (NULL without state); buf is this
 * thread's part of gbuf. Returns the block's sum of squares of factors. */
static float update_block(const update_job *j, int i, int64_t s, int m,
                          float *st, float *buf)
{
    const dwf_optim *o = j->o;
    dwf_param *p = o->params[i];
    const int D = p->depth;
    const float c = p->decay ? (float)(2.0 * j->lambda / D) : 0.0f;
    const int64_t per = state_per_factor(o, p);
    float *g[DWF_MAX_DEPTH];
    for (int d = 0; d < D; d++)
        g[d] = buf + (size_t)d * DWF_PARAM_BLOCK;
    float *sum = buf + (size_t)DWF_MAX_DEPTH * DWF_PARAM_BLOCK;
    float *scratch = sum + DWF_PARAM_BLOCK;
    const float *gw = p->gw + s;
    if (!p->mask && !st && o->opts.kind == DWF_OPT_SGD && j->n_extra <= 1 && D <= 4)
        return dwf_param_sgd_range(p, s, m, c, j->k.lr, gw,
                                   j->n_extra ? j->extra[i] + s : NULL);
    if (j->n_extra > 0) {
        memcpy(sum, gw, (size_t)m * sizeof(float));
        for (int e = 0; e < j->n_extra; e++)
            add_into(sum, j->extra[(size_t)e * o->n_params + i] + s, m);
        gw = sum;
    }
    float ss = dwf_param_grads_block(p, s, m, c, gw, g, scratch);
    for (int d = 0; d < D; d++) {
        if (p->mask)
            for (int x = 0; x < m; x++)
                if (!p->mask[s + x])
                    g[d][x] = 0.0f;
        update(o, &j->k, p->f[d] + s, g[d], st ? st + d * per + s : NULL,
               p->n, m);
    }
    dwf_param_collapse_range(p, s, m);
    return ss;
}

/* Thread `lane` of n_lanes takes the blocks whose work starts inside its
 * share [lane, lane + 1) * work / n_lanes (contiguous, so each thread
 * keeps the same blocks, and their cache lines, from step to step). */
static void update_lane(void *arg, int lane)
{
    update_job *j = arg;
    dwf_optim *o = j->o;
    float *buf = o->gbuf + (size_t)lane * GBUF_FLOATS;
    const double lo = j->work * lane / j->n_lanes;
    const double hi = j->work * (lane + 1) / j->n_lanes;
    float *st = o->state;
    double at = 0.0;
    int blk = 0;
    for (int i = 0; i < o->n_params; i++) {
        dwf_param *p = o->params[i];
        for (int64_t s = 0; s < p->n; s += DWF_PARAM_BLOCK, blk++) {
            int m = (int)(p->n - s < DWF_PARAM_BLOCK ? p->n - s : DWF_PARAM_BLOCK);
            if (at >= lo && (at < hi || lane == j->n_lanes - 1))
                o->block_ss[blk] = update_block(j, i, s, m, st, buf);
            at += (double)m * p->depth;
        }
        if (st)
            st += p->depth * state_per_factor(o, p);
    }
}

double dwf_optim_update_sum(dwf_optim *o, double lr, double lambda,
                            int n_extra, float *const *extra)
{
    o->t++;
    update_job j = {o, consts(o, lr), lambda, n_extra, extra, 1, 0.0};
    for (int i = 0; i < o->n_params; i++)
        j.work += (double)o->params[i]->n * o->params[i]->depth;
    if (o->workers) {
        j.n_lanes = dwf_workers_count(o->workers);
        dwf_workers_run(o->workers, update_lane, &j);
    } else {
        update_lane(&j, 0);
    }
    /* the penalty from the per-block sums, in block order (deterministic
     * whatever the number of threads) */
    double pen = 0.0;
    int blk = 0;
    for (int i = 0; i < o->n_params; i++) {
        const dwf_param *p = o->params[i];
        double ss = 0.0;
        for (int64_t s = 0; s < p->n; s += DWF_PARAM_BLOCK)
            ss += o->block_ss[blk++];
        if (p->decay)
            pen += lambda / p->depth * ss;
    }
    return pen;
}

double dwf_optim_update(dwf_optim *o, double lr, double lambda)
{
    return dwf_optim_update_sum(o, lr, lambda, 0, NULL);
}
