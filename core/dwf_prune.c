/*
 * dwf_prune.c - pruning baselines: masks from global magnitude (after
 * training, or gradually on the Zhu & Gupta schedule), random per-layer
 * masks, SNIP and iterative SynFlow at initialization.
 *
 * Every method ends in the same place: a 0/1 mask on each dense/conv
 * weight tensor (biases are never pruned), written into the dwf_params,
 * which keep masked entries exactly zero through training. Exact counts
 * come from one global top-k selection (radix select on the float bits of
 * the scores, ties broken by position), so a run keeps exactly
 * dwf_prune_keep_count(weights, target_cr) weights.
 *
 * Randomness (random masks, the samples SNIP scores on) comes from the
 * trainer's mask stream t->rng, drawn right after initialization, so a
 * run is deterministic for its seed.
 */
#include "dwf_prune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dwf_trainer_impl.h"

/* The weight tensors of a model, in layer order. */
typedef struct wlayers {
    int L;
    int layer[DWF_MAX_LAYERS]; /* index into arch.layers */
    dwf_param *p[DWF_MAX_LAYERS];
    int64_t total;
    int64_t max_n;
} wlayers;

static void weight_layers(dwf_model *m, wlayers *wl)
{
    memset(wl, 0, sizeof *wl);
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->weight_idx[i] < 0)
            continue;
        dwf_param *p = &m->params[m->weight_idx[i]];
        wl->layer[wl->L] = i;
        wl->p[wl->L++] = p;
        wl->total += p->n;
        if (p->n > wl->max_n)
            wl->max_n = p->n;
    }
}

int64_t dwf_prune_weight_count(const dwf_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->arch.n_layers; i++)
        if (m->weight_idx[i] >= 0)
            n += m->params[m->weight_idx[i]].n;
    return n;
}

int64_t dwf_prune_keep_count(int64_t total, double target_cr)
{
    if (total < 1)
        return 0;
    if (!(target_cr >= 1.0))
        return total;
    int64_t k = llround((double)total / target_cr);
    if (k < 1)
        k = 1;
    return k > total ? total : k;
}

/* ---- global top-k ----------------------------------------------------- */

/* Order-preserving unsigned keys: a larger score has a larger key; -0 ==
 * +0; NaN gets the lowest key, 0. In magnitude mode (no score arrays) the
 * key is that of |w|, and entries masked so far get 0, below any weight
 * (|w| keys are >= 0x80000000). Keys are made in chunks of KCHUNK on the
 * stack so that the loops vectorize and nothing is allocated. */
#define KCHUNK 1024

static void score_keys(const float *restrict s, int m, uint32_t *restrict key)
{
    for (int i = 0; i < m; i++) {
        uint32_t u;
        memcpy(&u, &s[i], sizeof u);
        uint32_t a = u & 0x7FFFFFFFu;
        uint32_t k = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
        k = a == 0 ? 0x80000000u : k;   /* -0 == +0 */
        key[i] = a > 0x7F800000u ? 0u : k; /* NaN lowest */
    }
}

static void magnitude_keys(const float *restrict w, const uint8_t *restrict mask,
                           int m, uint32_t *restrict key)
{
    for (int i = 0; i < m; i++) {
        uint32_t u;
        memcpy(&u, &w[i], sizeof u);
        uint32_t a = u & 0x7FFFFFFFu;
        uint32_t k = a > 0x7F800000u ? 0u : (a | 0x80000000u);
        key[i] = mask && !mask[i] ? 0u : k;
    }
}

static inline void chunk_keys(const wlayers *wl, float *const *scores, int l,
                              int64_t s, int m, uint32_t *key)
{
    if (scores)
        score_keys(scores[l] + s, m, key);
    else
        magnitude_keys(wl->p[l]->w + s, wl->p[l]->mask ? wl->p[l]->mask + s : NULL,
                       m, key);
}

/* Gives every weight tensor a mask (all ones where there was none). */
static int ensure_masks(const wlayers *wl, dwf_err *err)
{
    uint8_t *ones = NULL;
    for (int l = 0; l < wl->L; l++) {
        if (wl->p[l]->mask)
            continue;
        if (!ones) {
            ones = malloc((size_t)wl->max_n);
            if (!ones)
                return dwf_errorf(err, DWF_ENOMEM, "prune: out of memory for masks");
            memset(ones, 1, (size_t)wl->max_n);
        }
        int rc = dwf_param_set_mask(wl->p[l], ones, err);
        if (rc) {
            free(ones);
            return rc;
        }
    }
    free(ones);
    return 0;
}

/* Zeroes the masked entries of the first factor and of w. */
static void apply_masks(const wlayers *wl)
{
    for (int l = 0; l < wl->L; l++) {
        dwf_param *p = wl->p[l];
        if (!p->mask)
            continue;
        for (int64_t j = 0; j < p->n; j++)
            if (!p->mask[j])
                p->f[0][j] = 0.0f;
        dwf_param_collapse(p);
    }
}

/* Rewrites the (existing) masks in place to keep the `keep` entries with
 * the largest keys. Radix select: three histogram passes over 11, 11 and
 * 10 bits of the keys find the keep-th largest key T; then every key > T
 * is kept, and of the keys == T the first ones in position order until
 * exactly keep are. O(total), allocation-free, and independent of any
 * pivot choice. */
static void topk_masks(const wlayers *wl, float *const *scores, int64_t keep)
{
    if (keep >= wl->total || keep <= 0) {
        uint8_t v = keep > 0;
        for (int l = 0; l < wl->L; l++)
            memset(wl->p[l]->mask, v, (size_t)wl->p[l]->n);
        return;
    }
    static const int shifts[3] = {21, 10, 0}, widths[3] = {11, 11, 10};
    uint32_t key[KCHUNK];
    uint32_t prefix = 0, pmask = 0;
    int64_t k = keep; /* rank still to find among keys matching prefix */
    for (int pass = 0; pass < 3; pass++) {
        int64_t hist[2048] = {0};
        const int sh = shifts[pass];
        const uint32_t dm = (1u << widths[pass]) - 1u;
        for (int l = 0; l < wl->L; l++)
            for (int64_t s = 0; s < wl->p[l]->n; s += KCHUNK) {
                int m = (int)(wl->p[l]->n - s < KCHUNK ? wl->p[l]->n - s : KCHUNK);
                chunk_keys(wl, scores, l, s, m, key);
                for (int i = 0; i < m; i++)
                    if ((key[i] & pmask) == prefix)
                        hist[(key[i] >> sh) & dm]++;
            }
        int b = (int)dm;
        while (b > 0 && hist[b] < k) {
            k -= hist[b];
            b--;
        }
        prefix |= (uint32_t)b << sh;
        pmask |= dm << sh;
    }
    /* k entries equal to prefix are still needed, in position order */
    int64_t ties = k;
    for (int l = 0; l < wl->L; l++) {
        dwf_param *p = wl->p[l];
        for (int64_t s = 0; s < p->n; s += KCHUNK) {
            int m = (int)(p->n - s < KCHUNK ? p->n - s : KCHUNK);
            chunk_keys(wl, scores, l, s, m, key);
            uint8_t *mask = p->mask + s;
            for (int i = 0; i < m; i++) {
                uint8_t keepit = key[i] > prefix;
                if (key[i] == prefix && ties > 0) {
                    keepit = 1;
                    ties--;
                }
                mask[i] = keepit;
            }
        }
    }
}

int dwf_prune_global_topk(dwf_model *m, float *const *scores, int64_t keep,
                          dwf_err *err)
{
    wlayers wl;
    weight_layers(m, &wl);
    int rc = ensure_masks(&wl, err);
    if (rc)
        return rc;
    topk_masks(&wl, scores, keep);
    apply_masks(&wl);
    return 0;
}

/* One float array per weight layer in one block; returns the block. */
static float *alloc_scores(const wlayers *wl, float **ptrs, dwf_err *err)
{
    float *base = malloc((size_t)(wl->total > 0 ? wl->total : 1) * sizeof(float));
    if (!base) {
        dwf_errorf(err, DWF_ENOMEM, "prune: out of memory for %lld scores",
                   (long long)wl->total);
        return NULL;
    }
    float *q = base;
    for (int l = 0; l < wl->L; l++) {
        ptrs[l] = q;
        q += wl->p[l]->n;
    }
    return base;
}

/* Masks changed during training: zero the optimizer state (velocity,
 * Adam moments) of masked entries of every factor, so that they carry
 * nothing over. The layout is that of dwf_optim.h (per parameter in list
 * order, per factor: velocity, or Adam m then v, p->n floats each); it is
 * checked against the optimizer's size and skipped if it ever differs
 * (the optimizer keeps masked entries at zero on its own anyway). */
static void zero_masked_state(dwf_trainer *t)
{
    dwf_optim *o = &t->optim;
    if (!o->state)
        return;
    int per_n = o->opts.kind == DWF_OPT_ADAM ? 2 : 1;
    int64_t expect = 0;
    for (int i = 0; i < o->n_params; i++)
        expect += (int64_t)per_n * o->params[i]->depth * o->params[i]->n;
    if (expect != o->n_floats)
        return;
    float *st = o->state;
    for (int i = 0; i < o->n_params; i++) {
        const dwf_param *p = o->params[i];
        int64_t per = per_n * p->n;
        if (p->mask)
            for (int d = 0; d < p->depth; d++)
                for (int s = 0; s < per_n; s++) {
                    float *v = st + d * per + s * p->n;
                    for (int64_t j = 0; j < p->n; j++)
                        if (!p->mask[j])
                            v[j] = 0.0f;
                }
        st += p->depth * per;
    }
}

/* ---- options ---------------------------------------------------------- */

int dwf_prune_total_epochs(const dwf_trainer *t)
{
    if (t->opts.method == DWF_METHOD_MAGNITUDE && t->opts.finetune_epochs > 0)
        return t->opts.epochs + t->opts.finetune_epochs;
    return t->opts.epochs;
}

static int check_opts(const dwf_train_opts *o, dwf_err *err)
{
    if ((unsigned)o->method > DWF_METHOD_SYNFLOW)
        return dwf_errorf(err, DWF_EINVAL, "method: unknown method %d", (int)o->method);
    if (o->method == DWF_METHOD_DWF)
        return 0;
    const char *name = dwf_method_name(o->method);
    if (!(o->target_cr >= 1.0) || !isfinite(o->target_cr))
        return dwf_errorf(err, DWF_EINVAL,
                          "target_cr: must be a finite number >= 1 for method %s (got %g)",
                          name, o->target_cr);
    switch (o->method) {
    case DWF_METHOD_MAGNITUDE:
        if (o->finetune_epochs < 0)
            return dwf_errorf(err, DWF_EINVAL, "finetune_epochs: must be >= 0 (got %d)",
                              o->finetune_epochs);
        break;
    case DWF_METHOD_GRADUAL:
        if (!(o->prune_start >= 0.0) || !isfinite(o->prune_start))
            return dwf_errorf(err, DWF_EINVAL, "prune_start: must be >= 0 (got %g)",
                              o->prune_start);
        if (!isfinite(o->prune_end) ||
            (o->prune_end >= 0.0 && o->prune_end < o->prune_start))
            return dwf_errorf(err, DWF_EINVAL,
                              "prune_end: must be >= prune_start (%g) or -1 (got %g)",
                              o->prune_start, o->prune_end);
        if (o->prune_every < 1)
            return dwf_errorf(err, DWF_EINVAL, "prune_every: must be >= 1 (got %d)",
                              o->prune_every);
        break;
    case DWF_METHOD_SNIP:
        if (o->snip_batches < 1)
            return dwf_errorf(err, DWF_EINVAL, "snip_batches: must be >= 1 (got %d)",
                              o->snip_batches);
        break;
    case DWF_METHOD_SYNFLOW:
        if (o->synflow_rounds < 1)
            return dwf_errorf(err, DWF_EINVAL, "synflow_rounds: must be >= 1 (got %d)",
                              o->synflow_rounds);
        break;
    default:
        break;
    }
    return 0;
}

/* ---- gradual schedule ------------------------------------------------- */

void dwf_prune_gradual_window(const dwf_train_opts *o, int n_batches,
                              int64_t *t0, int64_t *t_end)
{
    int64_t total = (int64_t)o->epochs * n_batches;
    double end = o->prune_end < 0.0 ? 0.75 * o->epochs : o->prune_end;
    int64_t a = llround(o->prune_start * n_batches);
    int64_t b = llround(end * n_batches);
    if (a < 0)
        a = 0;
    if (b > total)
        b = total;
    if (a > b)
        a = b;
    *t0 = a;
    *t_end = b;
}

double dwf_prune_gradual_sparsity(double s_final, int64_t t0, int64_t t_end,
                                  int64_t step)
{
    if (step >= t_end)
        return s_final;
    if (step <= t0)
        return 0.0;
    double r = 1.0 - (double)(step - t0) / (double)(t_end - t0);
    return s_final * (1.0 - r * r * r);
}

int64_t dwf_prune_gradual_keep(int64_t total, double target_cr, int64_t t0,
                               int64_t t_end, int64_t step)
{
    int64_t final_keep = dwf_prune_keep_count(total, target_cr);
    if (step >= t_end)
        return final_keep;
    double s = dwf_prune_gradual_sparsity(1.0 - 1.0 / target_cr, t0, t_end, step);
    int64_t k = llround((double)total * (1.0 - s));
    if (k < final_keep)
        k = final_keep;
    return k > total ? total : k;
}

/* Magnitude pruning of the trainer's model to keep weights (masks exist). */
static void magnitude_prune(dwf_trainer *t, const wlayers *wl, int64_t keep)
{
    topk_masks(wl, NULL, keep);
    apply_masks(wl);
    zero_masked_state(t);
}

/* ---- random ----------------------------------------------------------- */

void dwf_prune_layer_quota(const int64_t *n, int L, int64_t keep,
                           int64_t *out)
{
    int64_t total = 0;
    for (int l = 0; l < L; l++)
        total += n[l];
    if (keep >= total || total <= 0) {
        for (int l = 0; l < L; l++)
            out[l] = keep > 0 ? n[l] : 0;
        return;
    }
    if (keep < 0)
        keep = 0;
    int64_t rem[DWF_MAX_LAYERS], sum = 0;
    for (int l = 0; l < L; l++) {
        /* n_l * keep < 2^62 for any model that fits in memory */
        out[l] = n[l] * keep / total;
        rem[l] = n[l] * keep % total;
        sum += out[l];
    }
    for (int64_t r = keep - sum; r > 0; r--) {
        int best = -1;
        for (int l = 0; l < L; l++)
            if (out[l] < n[l] && rem[l] >= 0 && (best < 0 || rem[l] > rem[best]))
                best = l;
        if (best < 0)
            break;
        out[best]++;
        rem[best] = -1; /* one extra each at most */
    }
    if (keep >= L) {
        for (int l = 0; l < L; l++) {
            if (out[l] > 0 || n[l] <= 0)
                continue;
            int big = 0;
            for (int k = 1; k < L; k++)
                if (out[k] > out[big])
                    big = k;
            if (out[big] < 2)
                break;
            out[big]--;
            out[l]++;
        }
    }
}

/* Per layer: exactly quota entries chosen uniformly (selection sampling,
 * Knuth's algorithm S) from t->rng. */
static int random_mask(dwf_trainer *t, const wlayers *wl, dwf_err *err)
{
    int64_t n[DWF_MAX_LAYERS], q[DWF_MAX_LAYERS];
    for (int l = 0; l < wl->L; l++)
        n[l] = wl->p[l]->n;
    dwf_prune_layer_quota(n, wl->L, dwf_prune_keep_count(wl->total, t->opts.target_cr), q);
    int rc = ensure_masks(wl, err);
    if (rc)
        return rc;
    for (int l = 0; l < wl->L; l++) {
        uint8_t *mask = wl->p[l]->mask;
        int64_t need = q[l];
        for (int64_t j = 0; j < n[l]; j++) {
            int take = need > 0 &&
                       dwf_rng_below(&t->rng, (uint64_t)(n[l] - j)) < (uint64_t)need;
            mask[j] = (uint8_t)take;
            need -= take;
        }
    }
    apply_masks(wl);
    return 0;
}

/* ---- SNIP ------------------------------------------------------------- */

/* SNIP with caller-provided batch buffers: x (max_batch * dim), y
 * (max_batch), dl (max_batch * n_classes). */
static int snip_core(dwf_model *m, const dwf_dataset *d, const dwf_norm *norm,
                     const int *idx, int n, float *const *scores, float *x,
                     int32_t *y, float *dl, dwf_err *err)
{
    wlayers wl;
    weight_layers(m, &wl);
    const int C = m->arch.n_classes, B = m->max_batch;
    int64_t in_dim = (int64_t)m->arch.in_c * m->arch.in_h * m->arch.in_w;
    if (n < 1)
        return dwf_errorf(err, DWF_EINVAL, "snip: no samples to score on");
    if (d->dim != in_dim)
        return dwf_errorf(err, DWF_EINVAL, "snip: data has %d features, the model takes %lld",
                          d->dim, (long long)in_dim);
    for (int l = 0; l < wl.L; l++)
        memset(scores[l], 0, (size_t)wl.p[l]->n * sizeof(float));
    for (int s = 0; s < n; s += B) {
        int b = n - s < B ? n - s : B;
        for (int i = 0; i < b; i++)
            if (idx[s + i] < 0 || idx[s + i] >= d->n)
                return dwf_errorf(err, DWF_EINVAL, "snip: sample %d is outside the data (%d)",
                                  idx[s + i], d->n);
        dwf_dataset_batch(d, norm, idx + s, b, x, y);
        for (int i = 0; i < b; i++)
            if (y[i] < 0 || y[i] >= C)
                return dwf_errorf(err, DWF_EINVAL,
                                  "snip: label %d of sample %d is outside [0, %d)",
                                  (int)y[i], idx[s + i], C);
        const float *z = dwf_model_forward(m, x, b);
        /* dl = (softmax - onehot) / b; scale to the mean over all n */
        dwf_softmax_xent(z, y, b, C, dl, NULL);
        float f = (float)b / (float)n;
        for (int64_t i = 0; i < (int64_t)b * C; i++)
            dl[i] *= f;
        dwf_model_backward(m, dl, b);
        for (int l = 0; l < wl.L; l++) {
            const float *g = wl.p[l]->gw;
            float *sc = scores[l];
            for (int64_t j = 0; j < wl.p[l]->n; j++)
                sc[j] += g[j];
        }
    }
    for (int l = 0; l < wl.L; l++) {
        const float *w = wl.p[l]->w;
        float *sc = scores[l];
        for (int64_t j = 0; j < wl.p[l]->n; j++)
            sc[j] = fabsf(sc[j] * w[j]);
    }
    return 0;
}

int dwf_prune_snip_scores(dwf_model *m, const dwf_dataset *d,
                          const dwf_norm *norm, const int *idx, int n,
                          float *const *scores, dwf_err *err)
{
    size_t B = (size_t)m->max_batch;
    float *x = malloc(B * (size_t)(d->dim > 0 ? d->dim : 1) * sizeof(float));
    int32_t *y = malloc(B * sizeof(int32_t));
    float *dl = malloc(B * (size_t)m->arch.n_classes * sizeof(float));
    int rc;
    if (!x || !y || !dl)
        rc = dwf_errorf(err, DWF_ENOMEM, "snip: out of memory for a batch");
    else
        rc = snip_core(m, d, norm, idx, n, scores, x, y, dl, err);
    free(x);
    free(y);
    free(dl);
    return rc;
}

/* Scores on min(snip_batches * batch_size, N) training samples drawn
 * without replacement (partial Fisher-Yates with t->rng; t->perm is free
 * scratch before the first epoch), then the global top-k. */
static int snip_mask(dwf_trainer *t, const wlayers *wl, dwf_err *err)
{
    int N = t->train->n;
    int64_t want = (int64_t)t->opts.snip_batches * t->opts.batch_size;
    int n = want < N ? (int)want : N;
    for (int i = 0; i < N; i++)
        t->perm[i] = i;
    for (int i = 0; i < n; i++) {
        int j = i + (int)dwf_rng_below(&t->rng, (uint64_t)(N - i));
        int tmp = t->perm[i];
        t->perm[i] = t->perm[j];
        t->perm[j] = tmp;
    }
    float *ptrs[DWF_MAX_LAYERS];
    float *base = alloc_scores(wl, ptrs, err);
    if (!base)
        return DWF_ENOMEM;
    int rc = snip_core(t->model, t->train, &t->norm, t->perm, n, ptrs, t->x,
                       t->y, t->dlogits, err);
    if (!rc)
        rc = dwf_prune_global_topk(t->model, ptrs,
                                   dwf_prune_keep_count(wl->total, t->opts.target_cr),
                                   err);
    free(base);
    return rc;
}

/* ---- SynFlow ---------------------------------------------------------- */

int dwf_prune_synflow_scores(dwf_model *m, float *const *scores,
                             double *log_scale, dwf_err *err)
{
    wlayers wl;
    weight_layers(m, &wl);
    const int C = m->arch.n_classes;
    int64_t in_dim = (int64_t)m->arch.in_c * m->arch.in_h * m->arch.in_w;
    int64_t nbias = 0;
    for (int l = 0; l < wl.L; l++)
        nbias += m->params[m->bias_idx[wl.layer[l]]].n;
    float *absw = malloc((size_t)wl.total * sizeof(float));
    float *zb = calloc((size_t)(nbias > 0 ? nbias : 1), sizeof(float));
    float *ones = malloc((size_t)(in_dim > C ? in_dim : C) * sizeof(float));
    if (!absw || !zb || !ones) {
        free(absw);
        free(zb);
        free(ones);
        return dwf_errorf(err, DWF_ENOMEM, "synflow: out of memory");
    }
    for (int64_t i = 0; i < (in_dim > C ? in_dim : C); i++)
        ones[i] = 1.0f;
    float *orig_w[DWF_MAX_LAYERS], *orig_b[DWF_MAX_LAYERS];
    double ls = 0.0;
    float *aw = absw, *b = zb;
    for (int l = 0; l < wl.L; l++) {
        dwf_param *p = wl.p[l];
        dwf_param *pb = &m->params[m->bias_idx[wl.layer[l]]];
        double sum = 0.0;
        for (int64_t j = 0; j < p->n; j++)
            sum += fabs((double)p->w[j]);
        double c = sum > 0.0 ? m->arch.layers[wl.layer[l]].out_c / sum : 1.0;
        ls += log(c);
        for (int64_t j = 0; j < p->n; j++)
            aw[j] = (float)(fabs((double)p->w[j]) * c);
        orig_w[l] = p->w;
        orig_b[l] = pb->w;
        p->w = aw;
        pb->w = b;
        aw += p->n;
        b += pb->n;
    }
    /* one all-ones sample; dR/dlogits = 1 (ones[] is at least C long) */
    dwf_model_forward(m, ones, 1);
    dwf_model_backward(m, ones, 1);
    int bad = 0;
    for (int l = 0; l < wl.L; l++) {
        dwf_param *p = wl.p[l];
        for (int64_t j = 0; j < p->n; j++) {
            float s = fabsf(p->gw[j] * p->w[j]);
            bad |= !isfinite(s);
            scores[l][j] = s;
        }
    }
    for (int l = 0; l < wl.L; l++) {
        wl.p[l]->w = orig_w[l];
        m->params[m->bias_idx[wl.layer[l]]].w = orig_b[l];
    }
    free(absw);
    free(zb);
    free(ones);
    if (log_scale)
        *log_scale = ls;
    if (bad)
        return dwf_errorf(err, DWF_ENUMERIC,
                          "synflow: scores overflow float32 in this network");
    return 0;
}

/* Iterative SynFlow: after round k of R keep (1/cr)^(k/R) of the weights;
 * weights pruned in earlier rounds stay pruned (score below any other). */
static int synflow_mask(dwf_trainer *t, const wlayers *wl, dwf_err *err)
{
    float *ptrs[DWF_MAX_LAYERS];
    float *base = alloc_scores(wl, ptrs, err);
    if (!base)
        return DWF_ENOMEM;
    int rc = ensure_masks(wl, err);
    const int R = t->opts.synflow_rounds;
    const double cr = t->opts.target_cr;
    const int64_t final_keep = dwf_prune_keep_count(wl->total, cr);
    for (int k = 1; k <= R && !rc; k++) {
        rc = dwf_prune_synflow_scores(t->model, ptrs, NULL, err);
        if (rc)
            break;
        for (int l = 0; l < wl->L; l++)
            for (int64_t j = 0; j < wl->p[l]->n; j++)
                if (!wl->p[l]->mask[j])
                    ptrs[l][j] = -1.0f;
        int64_t keep = final_keep;
        if (k < R) {
            keep = llround((double)wl->total * pow(1.0 / cr, (double)k / R));
            if (keep < final_keep)
                keep = final_keep;
        }
        topk_masks(wl, ptrs, keep);
        apply_masks(wl);
    }
    free(base);
    return rc;
}

/* ---- hooks ------------------------------------------------------------ */

int dwf_prune_at_init(dwf_trainer *t, dwf_err *err)
{
    int rc = check_opts(&t->opts, err);
    if (rc)
        return rc;
    wlayers wl;
    weight_layers(t->model, &wl);
    switch (t->opts.method) {
    case DWF_METHOD_GRADUAL: {
        /* masks from the start, so that later updates need no memory */
        rc = ensure_masks(&wl, err);
        int64_t t0, t_end;
        dwf_prune_gradual_window(&t->opts, t->n_batches, &t0, &t_end);
        if (!rc && t_end <= 0)
            magnitude_prune(t, &wl, dwf_prune_keep_count(wl.total, t->opts.target_cr));
        return rc;
    }
    case DWF_METHOD_RANDOM:
        return random_mask(t, &wl, err);
    case DWF_METHOD_SNIP:
        return snip_mask(t, &wl, err);
    case DWF_METHOD_SYNFLOW:
        return synflow_mask(t, &wl, err);
    default:
        return 0;
    }
}

void dwf_prune_after_step(dwf_trainer *t)
{
    if (t->opts.method != DWF_METHOD_GRADUAL)
        return;
    int64_t t0, t_end, s = t->step;
    dwf_prune_gradual_window(&t->opts, t->n_batches, &t0, &t_end);
    if (s > t_end || (s <= t0 && s != t_end))
        return;
    int every = t->opts.prune_every > 0 ? t->opts.prune_every : 1;
    if (s != t_end && (s - t0) % every != 0)
        return;
    wlayers wl;
    weight_layers(t->model, &wl);
    /* masks were made at init (or restored); this cannot allocate unless a
     * mask is missing, and then a failure only delays the update */
    if (ensure_masks(&wl, NULL))
        return;
    magnitude_prune(t, &wl, dwf_prune_gradual_keep(wl.total, t->opts.target_cr,
                                                   t0, t_end, s));
}

int dwf_prune_after_epoch(dwf_trainer *t, dwf_err *err)
{
    if (t->opts.method != DWF_METHOD_MAGNITUDE || t->epoch != t->opts.epochs)
        return 0;
    wlayers wl;
    weight_layers(t->model, &wl);
    int rc = ensure_masks(&wl, err);
    if (rc)
        return rc;
    magnitude_prune(t, &wl, dwf_prune_keep_count(wl.total, t->opts.target_cr));
    return 0;
}

/* No state beyond the masks: the gradual schedule is a function of the
 * step, and magnitude prunes at a fixed epoch. */
void dwf_prune_save(const dwf_trainer *t, dwf_wbuf *w)
{
    (void)t;
    (void)w;
}

int dwf_prune_load(dwf_trainer *t, dwf_rbuf *r, dwf_err *err)
{
    (void)t;
    (void)r;
    (void)err;
    return 0;
}
