/*
 * dwf_optim.c - SGD (momentum, Nesterov) and Adam on the factors of every
 * parameter, and the learning-rate schedules.
 */
#include "dwf_optim.h"
#include "dwf_simd.h"

#include <math.h>
#include <stdatomic.h>
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

static void free_dense(dwf_optim *o)
{
    free(o->dense_out);
    free(o->dense_in);
    free(o->row_off);
    free(o->state_off);
    free(o->row_ss);
    free(o->panel);
    o->dense_out = o->dense_in = NULL;
    o->row_off = o->state_off = NULL;
    o->row_ss = NULL;
    o->panel = NULL;
    o->panel_rows = 0;
    o->panel_floats = 0;
}

void dwf_optim_free(dwf_optim *o)
{
    free_dense(o);
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

int dwf_optim_set_dense(dwf_optim *o, const int *out, const int *in,
                        dwf_err *err)
{
    free_dense(o);
    if (!out)
        return 0;
    int64_t rows = 0, max_in = 0;
    for (int i = 0; i < o->n_params; i++) {
        if (out[i] == 0)
            continue;
        if (out[i] < 0 || in[i] < 1 || (int64_t)out[i] * in[i] != o->params[i]->n)
            return dwf_errorf(err, DWF_EINVAL,
                              "dense weight %d: %d x %d does not match its %lld entries",
                              i, out[i], in[i], (long long)o->params[i]->n);
        rows += out[i];
        max_in = in[i] > max_in ? in[i] : max_in;
    }
    if (rows == 0)
        return 0; /* nothing dense */
    size_t np = (size_t)o->n_params;
    o->dense_out = calloc(np, sizeof(int));
    o->dense_in = calloc(np, sizeof(int));
    o->row_off = calloc(np, sizeof(int64_t));
    o->state_off = calloc(np, sizeof(int64_t));
    o->row_ss = calloc((size_t)rows + 1, sizeof(double));
    o->panel_rows = dwf_dense_panel_rows();
    /* whole cache lines per thread */
    o->panel_floats = ((int64_t)o->panel_rows * max_in + 15) / 16 * 16;
    o->panel = aligned_alloc(64, (size_t)(DWF_MAX_THREADS * o->panel_floats) *
                                     sizeof(float));
    if (!o->dense_out || !o->dense_in || !o->row_off || !o->state_off || !o->row_ss ||
        !o->panel) {
        free_dense(o);
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for dense gradient panels");
    }
    int64_t at = 0, st = 0;
    for (int i = 0; i < o->n_params; i++) {
        o->dense_out[i] = out[i];
        o->dense_in[i] = out[i] ? in[i] : 0;
        o->row_off[i] = at;
        at += out[i];
        o->state_off[i] = st;
        st += o->params[i]->depth * state_per_factor(o, o->params[i]);
    }
    return 0;
}

/* One call of dwf_optim_update_grads, shared by the threads. */
typedef struct update_job {
    dwf_optim *o;
    step_consts k;
    double lambda;
    int n_extra;
    float *const *extra;
    const dwf_dense_grad *dense; /* NULL, or per parameter */
    int n_lanes;
    double work;    /* entries x depth over the parameters updated by blocks */
    /* per thread: its own panels [front, back) packed as back << 32 | front */
    _Atomic uint64_t range[DWF_MAX_THREADS];
} update_job;

static int is_dense(const update_job *j, int i)
{
    return j->dense && j->dense[i].n_seg > 0;
}

/* Gradients, update and collapse of the block [s, s + m) of parameter i,
 * whose optimizer state starts at st (NULL without state), with the weight
 * gradient gw[0..m) plus the first n_extra extra gradients of the job;
 * buf is this thread's part of gbuf. Returns the block's sum of squares of
 * factors. */
static float update_block(const update_job *j, int i, int64_t s, int m,
                          float *st, float *buf, const float *gw, int n_extra)
{
    const dwf_optim *o = j->o;
    dwf_param *p = o->params[i];
    const int D = p->depth;
    const float c = p->decay ? (float)(2.0 * j->lambda / D) : 0.0f;
    const int64_t per = state_per_factor(o, p);
    float *g[DWF_MAX_DEPTH] = {0};
    for (int d = 0; d < D; d++)
        g[d] = buf + (size_t)d * DWF_PARAM_BLOCK;
    float *sum = buf + (size_t)DWF_MAX_DEPTH * DWF_PARAM_BLOCK;
    float *scratch = sum + DWF_PARAM_BLOCK;
    if (!p->mask && !st && o->opts.kind == DWF_OPT_SGD && n_extra <= 1 && D <= 4)
        return dwf_param_sgd_range(p, s, m, c, j->k.lr, gw,
                                   n_extra ? j->extra[i] + s : NULL,
                                   j->n_lanes > 1); /* other cores read w */
    if (n_extra > 0) {
        memcpy(sum, gw, (size_t)m * sizeof(float));
        for (int e = 0; e < n_extra; e++)
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

/* Panel `t` of the dense rows (panels of panel_rows rows of each dense
 * weight in turn): the gradient rows from the batch, then their update
 * block by block along each row, while the gradient is in cache; the row
 * sums of squares go to row_ss. Returns 0, or -1 past the last panel. */
static int update_panel(const update_job *j, int t, float *buf, float *G)
{
    dwf_optim *o = j->o;
    const int P = o->panel_rows;
    int i = 0;
    for (; i < o->n_params; i++) {
        if (!is_dense(j, i))
            continue;
        int np = (o->dense_out[i] + P - 1) / P;
        if (t < np)
            break;
        t -= np;
    }
    if (i == o->n_params)
        return -1;
    const dwf_dense_grad *dg = &j->dense[i];
    const int out = o->dense_out[i], in = o->dense_in[i];
    const int r0 = t * P, nr = out - r0 < P ? out - r0 : P;
    float *st = o->state ? o->state + o->state_off[i] : NULL;
    dwf_dense_grad_panel(dg->seg, dg->n_seg, out, in, r0, nr, G);
    for (int r = 0; r < nr; r++) {
        double ss = 0.0;
        for (int c = 0; c < in; c += DWF_PARAM_BLOCK) {
            int m = in - c < DWF_PARAM_BLOCK ? in - c : DWF_PARAM_BLOCK;
            ss += update_block(j, i, (int64_t)(r0 + r) * in + c, m, st, buf,
                               G + (size_t)r * in + c, 0);
        }
        o->row_ss[o->row_off[i] + r0 + r] = ss;
    }
    return 0;
}

/* The next dense panel for thread `lane`: the front of its own range,
 * else the back of another thread's (when it is behind); -1 when none is
 * left. Each thread keeps the same rows from step to step, and with them
 * the cache lines of their factors, unless the other one falls behind. */
static int take_panel(update_job *j, int lane)
{
    for (int k = 0; k < j->n_lanes; k++) {
        int v = (lane + k) % j->n_lanes;
        uint64_t r = atomic_load_explicit(&j->range[v], memory_order_relaxed);
        for (;;) {
            uint32_t front = (uint32_t)r, back = (uint32_t)(r >> 32);
            if (front >= back)
                break;
            uint64_t nr = k == 0 ? (uint64_t)back << 32 | (front + 1)
                                 : (uint64_t)(back - 1) << 32 | front;
            if (atomic_compare_exchange_weak_explicit(&j->range[v], &r, nr,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                return (int)(k == 0 ? front : back - 1);
        }
    }
    return -1;
}

/* Thread `lane` of n_lanes takes the blocks of the parameters that are
 * not dense whose work starts inside its share [lane, lane + 1) * work /
 * n_lanes (contiguous, so each thread keeps the same blocks, and their
 * cache lines, from step to step), then its own panels of dense rows, then
 * those another thread has not got to yet (the threads do not run equally
 * fast on a shared machine). */
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
        if (is_dense(j, i)) {
            blk += (int)((p->n + DWF_PARAM_BLOCK - 1) / DWF_PARAM_BLOCK);
        } else {
            for (int64_t s = 0; s < p->n; s += DWF_PARAM_BLOCK, blk++) {
                int m = (int)(p->n - s < DWF_PARAM_BLOCK ? p->n - s : DWF_PARAM_BLOCK);
                if (at >= lo && (at < hi || lane == j->n_lanes - 1))
                    o->block_ss[blk] = update_block(j, i, s, m, st, buf, p->gw + s,
                                                    j->n_extra);
                at += (double)m * p->depth;
            }
        }
        if (st)
            st += p->depth * state_per_factor(o, p);
    }
    float *G = o->panel ? o->panel + (size_t)lane * o->panel_floats : NULL;
    for (int t; (t = take_panel(j, lane)) >= 0;)
        update_panel(j, t, buf, G);
    dwf_param_store_fence(); /* the streamed w, before the team's join */
}

/* The threads' own ranges of dense panels: contiguous, of about equal
 * numbers of entries. */
static void split_panels(update_job *j)
{
    const dwf_optim *o = j->o;
    double total = 0.0;
    for (int i = 0; i < o->n_params; i++)
        if (is_dense(j, i))
            total += (double)o->params[i]->n;
    int t = 0, lane = 0, start = 0;
    double at = 0.0;
    for (int i = 0; i < o->n_params; i++) {
        if (!is_dense(j, i))
            continue;
        for (int r0 = 0; r0 < o->dense_out[i]; r0 += o->panel_rows, t++) {
            /* a panel belongs to the thread whose share its middle is in */
            int nr = o->dense_out[i] - r0 < o->panel_rows ? o->dense_out[i] - r0
                                                          : o->panel_rows;
            double mid = at + 0.5 * nr * o->dense_in[i];
            while (lane < j->n_lanes - 1 && mid >= total * (lane + 1) / j->n_lanes) {
                atomic_init(&j->range[lane], (uint64_t)t << 32 | (uint32_t)start);
                start = t;
                lane++;
            }
            at += (double)nr * o->dense_in[i];
        }
    }
    for (; lane < j->n_lanes; lane++) {
        atomic_init(&j->range[lane], (uint64_t)t << 32 | (uint32_t)start);
        start = t;
    }
}

double dwf_optim_update_grads(dwf_optim *o, double lr, double lambda,
                              int n_extra, float *const *extra,
                              const dwf_dense_grad *dense)
{
    update_job j = {.o = o, .lambda = lambda, .n_extra = n_extra,
                    .extra = extra, .dense = dense, .n_lanes = 1};
    for (int i = 0; i < o->n_params; i++) {
        if (!is_dense(&j, i)) {
            j.work += (double)o->params[i]->n * o->params[i]->depth;
            continue;
        }
        const dwf_dense_grad *dg = &dense[i];
        if (!o->dense_out || o->dense_out[i] == 0 || dg->n_seg > DWF_MAX_THREADS)
            return NAN;
    }
    o->t++;
    j.k = consts(o, lr);
    if (o->workers)
        j.n_lanes = dwf_workers_count(o->workers);
    split_panels(&j);
    if (o->workers)
        dwf_workers_run(o->workers, update_lane, &j);
    else
        update_lane(&j, 0);
    /* the penalty from the per-block and per-row sums, in order
     * (deterministic whatever the number of threads) */
    double pen = 0.0;
    int blk = 0;
    for (int i = 0; i < o->n_params; i++) {
        const dwf_param *p = o->params[i];
        int nb = (int)((p->n + DWF_PARAM_BLOCK - 1) / DWF_PARAM_BLOCK);
        double ss = 0.0;
        if (is_dense(&j, i)) {
            for (int r = 0; r < o->dense_out[i]; r++)
                ss += o->row_ss[o->row_off[i] + r];
        } else {
            for (int b = 0; b < nb; b++)
                ss += o->block_ss[blk + b];
        }
        blk += nb;
        if (p->decay)
            pen += lambda / p->depth * ss;
    }
    return pen;
}

double dwf_optim_update_sum(dwf_optim *o, double lr, double lambda,
                            int n_extra, float *const *extra)
{
    return dwf_optim_update_grads(o, lr, lambda, n_extra, extra, NULL);
}

double dwf_optim_update(dwf_optim *o, double lr, double lambda)
{
    return dwf_optim_update_sum(o, lr, lambda, 0, NULL);
}
