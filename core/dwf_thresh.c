/*
 * dwf_thresh.c - threshold curves of a sparse model and tolerance-based
 * selection on validation accuracy.
 *
 * The grid. Point 0 is the model itself; point p > 0 keeps the weights
 * with fabsf(w) >= t_p (the test dwf_smodel_rethreshold applies), so every
 * weight has a removal index q: the first p > 0 whose model lacks it.
 * Points whose weight count equals the previous one's hold the same model
 * (thresholding is monotone) and copy its accuracies; the others are the
 * distinct "models" e = 0, 1, ... The grid runs until no weight is left
 * (or max_points); the stopping rule then truncates it, so the result is
 * the one of evaluating points one by one until the stop.
 *
 * The incremental path (MLPs: dense, relu and flatten layers). Samples go
 * in blocks of BLK, feature-major (features x BLK), each block through the
 * models in turn, the blocks shared by the lanes of a dwf_workers team:
 *
 *  - Layer 0 (most of the weights): z0 = W x + b is kept in double and,
 *    between consecutive models, either updated by the removed weights
 *    only (z0[i, :] -= w_ij x[j, :]) or rebuilt (dense or CSR), whichever
 *    a cost model (plan_layer0) finds cheaper. The products of a row are
 *    summed in float (the kernels of core/dwf_tkern.c: AVX-512 where the
 *    CPU has it, else portable C or cblas_sgemm); that rounding is
 *    accounted for below.
 *  - Later layers are recomputed (in float, from the float-rounded layer-0
 *    output) only for the samples a rigorous bound cannot certify: each
 *    sample keeps its logits from its last recomputation (its base); the
 *    change since then is bounded through the layers by norms - rigorous
 *    bounds of the spectral norm (Frobenius, sqrt(|W|_1 |W|_inf)) first,
 *    then, if that fails, row by row (Cauchy-Schwarz / Hoelder) - of the
 *    current weights times the input change plus the weights removed since
 *    the base times the base input (certify_block, certify). Layer-0 units
 *    no longer read by layer 1 ("dead": their column is empty) stay dead
 *    at higher thresholds and are skipped.
 *  - Rounding. The reference, dwf_smodel_evaluate(), computes in float32
 *    in an order of its own (sgemm or CSR, dependent on batch size and
 *    position). A rigorous worst-case bound on its rounding (gamma_n sum
 *    |terms| through |W|) flags 7-13% of a 3-epoch LeNet-300-100's samples
 *    as possible ties, so the margin used is probabilistic (Higham & Mary,
 *    SIAM J. Sci. Comput. 41(5), 2019): the rounding error of a sum of n
 *    terms has a standard deviation of at most u sqrt(n + 2) sum |terms|
 *    (sum |terms| <= min(|w|_2 |h|_2, |w|_1 |h|_inf) + |b|), independent
 *    between units; it reaches the logits through the spectral norms of
 *    the layers in between and each class row's 2-norm. This code's own
 *    float rounding counts the same way (sigma0's second term, bsig). A
 *    sample whose top logit is not above every other by TAIL_SIGMAS (16)
 *    of these standard deviations is a near tie (the worst error seen on
 *    the models measured was 0.2 of one): it gets the reference's own
 *    logits. Where the kernels are batch-invariant (AVX2 and FMA) these
 *    are the reference's products layer by layer (ref_mlp: model 0's dense
 *    copy of a layer with the weights below the threshold skipped, or the
 *    layer's CSR at the point); a sample of a reference batch of one, and
 *    every near tie elsewhere, runs through dwf_smodel_forward() on the
 *    rethresholded model in a batch of the size dwf_smodel_evaluate()
 *    gives it and at the same position (ref_eval). Every other sample's
 *    prediction is the reference's unless that rounding exceeds 16
 *    standard deviations.
 *  - The sparse end. Once the whole model costs less per sample than
 *    layer 0's step plus the certified later layers (plan_layer0's cost
 *    model), that model and every sparser one after it are evaluated
 *    exactly instead: the reference's products (dwf_csr_matmul) of the
 *    model without the hidden units the next layer does not read, on
 *    whole blocks (exact_block; where the kernels are batch-invariant).
 *  - The data set that decides the stop (validation, else test) goes
 *    through every model first; its accuracy before the near ties lies in
 *    [ok, ok + ties] / n, which settles the stop (else that model's ties
 *    are resolved at once); the other data set goes only through the models
 *    up to the stop; the near ties of both then share reference batches.
 *
 * Other architectures, and opts->from_scratch, evaluate every distinct
 * model with dwf_smodel_evaluate().
 */
#include "dwf_thresh.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "dwf_layers.h"
#include "dwf_simd.h"
#include "dwf_tkern.h"
#include "dwf_workers.h"

/* The batch dwf_smodel_evaluate() runs (EVAL_BATCH in dwf_sparse.c): a
 * near-tie sample is re-run in a batch of the size it has there. */
#define REF_BATCH 256
#define BLK 128            /* samples per block of the incremental path */
#define TAIL_SIGMAS 16.0   /* near-tie margin, in rounding standard deviations */
/* Relative costs per multiply-add and sample of the layer-0 updates, with
 * the dense kernel = 1 (measured on the bench machine, bench/bench_thresh.c). */
#define COST_CSR 3.0
#define COST_INC 3.0
#define COST_PANEL 2.0  /* ... through the panel kernel (dense enough rows) */
/* Nanoseconds (bench machine, LeNet-300-100 curves) of a recomputation of
 * the later layers per sample, per layer-0 unit and per later multiply-add,
 * and of the row-by-row certification per later row. */
#define COST_REC_SAMPLE 130.0
#define COST_REC_UNIT 0.9
#define COST_REC_MAC 0.015
#define COST_FINE_ROW 6.0
/* The sparse end (models evaluated exactly, exact_block): its cost per
 * non-zero weight and sample, and what the certified path costs a model
 * with big changes beyond layer 0 per sample (certification,
 * recomputations and near ties: 55,000-100,000 measured), in the units of
 * COST_CSR (bench machine, LeNet-300-100 curves). */
#define COST_EXACT 3.4
#define COST_LATER 60000.0
#define DENSE_BUDGET ((int64_t)64 << 20) /* bytes of a later layer's dense
                                              copies over all models */

void dwf_thresh_opts_default(dwf_thresh_opts *o)
{
    memset(o, 0, sizeof *o);
    o->per_decade = 4;
    o->max_points = 64;
    o->chance_margin = 0.02;
    o->threads = 1; /* the rest 0 / NULL */
}

void dwf_thresh_curve_free(dwf_thresh_curve *c)
{
    if (!c)
        return;
    free(c->points);
    memset(c, 0, sizeof *c);
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int has_data(const dwf_dataset *d)
{
    return d && d->n > 0;
}

static double mn(double a, double b)
{
    return a < b ? a : b;
}

static double mx(double a, double b)
{
    return a > b ? a : b;
}

/* The first maximum, as dwf_softmax_xent counts a correct prediction. */
static void *big_alloc(size_t n);

/* The first largest of column s of z (c x n, feature-major; NaN never
 * wins), as the reference's accuracy counts it. */
static int argmax_col(const float *z, int c, int n, int s)
{
    int am = 0;
    float m = z[s];
    for (int j = 1; j < c; j++)
        if (z[(size_t)j * n + s] > m) {
            m = z[(size_t)j * n + s];
            am = j;
        }
    return am;
}

/* ... of a sample-major row z[0..c). */
static int argmax_f(const float *z, int c)
{
    return argmax_col(z, c, 1, 0);
}

/* ---- the grid ------------------------------------------------------------ */

typedef struct grid {
    int n;                    /* points */
    float *t;                 /* thresholds (t[0] = the model's eps) */
    int64_t *nz;              /* non-zero weights per point, n x n_layers */
    int n_layers;
    int32_t *q[DWF_MAX_LAYERS]; /* removal index of every weight entry */
    int q_borrowed;           /* q lives in the caller's arena */
} grid;

static void grid_free(grid *g)
{
    free(g->t);
    free(g->nz);
    for (int i = 0; i < DWF_MAX_LAYERS && !g->q_borrowed; i++)
        free(g->q[i]);
    memset(g, 0, sizeof *g);
}

typedef struct arena arena;
static void *arena_alloc(arena *a, size_t n);

/* First p in [1, n) whose model lacks a weight of magnitude a (n if none):
 * the grid is ascending, so "a >= t[p]" holds for p = 1 .. c and then no
 * more; p = c + 1 (NaN: c = 0). Branch-free (the weights' magnitudes come
 * in no order, so a branchy search mispredicts about every step). */
static int32_t removal_index(const float *t, int n, float a)
{
    int m = n - 1, c = 0, step = 1;
    while (2 * step <= m)
        step *= 2;
    for (; step > 0; step >>= 1)
        c += (c + step <= m && a >= t[c + step]) ? step : 0;
    return c + 1;
}

/* q[k] = removal_index(t, n, |v[k]|) for k < nnz: on short grids by
 * counting the thresholds each magnitude reaches (branch-free, across 16
 * weights at once: the same c as the search, the grid being ascending). */
static void removal_indices(const float *t, int n, const float *v, int64_t nnz, int32_t *q)
{
    int64_t k = 0;
    if (n <= 64)
        for (; k + 16 <= nnz; k += 16) {
            float a[16];
            int32_t c[16];
            for (int l = 0; l < 16; l++) {
                a[l] = fabsf(v[k + l]);
                c[l] = 1;
            }
            for (int p = 1; p < n; p++)
                for (int l = 0; l < 16; l++)
                    c[l] += a[l] >= t[p];
            for (int l = 0; l < 16; l++)
                q[k + l] = c[l];
        }
    for (; k < nnz; k++)
        q[k] = removal_index(t, n, fabsf(v[k]));
}

typedef struct grid_job {
    const grid *g;
    const dwf_smodel *s;
    int n;
    int pass;                      /* 0: largest magnitudes, 1: indices */
    float amax[DWF_MAX_THREADS];   /* per lane */
    int64_t *gone[DWF_MAX_THREADS];/* per lane: n_layers x (g->n + 1)
                                      removals by point, then scratch */
} grid_job;

/* Lane id's share [k0, k1) of a layer's nnz entries (multiples of 16). */
static void grid_share(int64_t nnz, int id, int n, int64_t *k0, int64_t *k1)
{
    *k0 = nnz * id / n / 16 * 16;
    *k1 = id == n - 1 ? nnz : nnz * (id + 1) / n / 16 * 16;
}

/* Lane id's share of every weighted layer: pass 0 the largest magnitude
 * (NaN weights never count), pass 1 the removal indices and how many each
 * point removes. */
static void grid_run(void *arg, int id)
{
    grid_job *j = arg;
    const dwf_arch *a = &j->s->arch;
    float amax = -1.0f;
    for (int i = 0; i < a->n_layers; i++) {
        if (!dwf_layer_has_weight(a->layers[i].kind))
            continue;
        const dwf_csr *c = &j->s->w[i];
        int64_t k0, k1;
        grid_share(c->nnz, id, j->n, &k0, &k1);
        if (j->pass == 0) {
            for (int64_t k = k0; k < k1; k++) {
                float v = fabsf(c->values[k]);
                amax = v > amax ? v : amax;
            }
            continue;
        }
        int32_t *q = j->g->q[i];
        removal_indices(j->g->t, j->g->n, c->values + k0, k1 - k0, q + k0);
        /* four interleaved counts (a run of equal q would chain the
         * increments), after the lane's per-layer results */
        size_t m = (size_t)j->g->n + 1;
        int64_t *cnt = j->gone[id] + (size_t)a->n_layers * m;
        memset(cnt, 0, 4 * m * sizeof *cnt);
        for (int64_t k = k0; k < k1; k++)
            cnt[(size_t)(k & 3) * m + (size_t)q[k]]++;
        int64_t *gone = j->gone[id] + (size_t)i * m;
        for (size_t p = 0; p < m; p++)
            gone[p] = cnt[p] + cnt[m + p] + cnt[2 * m + p] + cnt[3 * m + p];
    }
    j->amax[id] = amax;
}

/* The grid of s; q from arena qa (NULL: its own memory), which then
 * outlives it. */
static int grid_build(const dwf_smodel *s, const dwf_thresh_opts *o, grid *g,
                      dwf_workers *wk, arena *qa, dwf_err *err)
{
    memset(g, 0, sizeof *g);
    const dwf_arch *a = &s->arch;
    g->n_layers = a->n_layers;
    g->q_borrowed = qa != NULL;
    int64_t total = 0;
    for (int i = 0; i < a->n_layers; i++)
        if (dwf_layer_has_weight(a->layers[i].kind))
            total += s->w[i].nnz;
    /* the largest magnitude (NaN weights never stay), split over the team */
    grid_job gj = {.g = g, .s = s, .n = wk ? dwf_workers_count(wk) : 1};
    if (wk)
        dwf_workers_run(wk, grid_run, &gj);
    else
        grid_run(&gj, 0);
    float amax = -1.0f;
    for (int i = 0; i < gj.n; i++)
        amax = gj.amax[i] > amax ? gj.amax[i] : amax;
    g->t = malloc((size_t)o->max_points * sizeof *g->t);
    if (!g->t)
        return dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
    double base = s->eps > 0.0f ? (double)s->eps : (double)FLT_EPSILON;
    g->t[g->n++] = s->eps;
    float prev = s->eps;
    /* until a point without weights (t > amax), the cap, or overflow */
    for (int k = 1; g->n < o->max_points && total > 0 && amax >= prev; k++) {
        float t = (float)(base * pow(10.0, (double)k / o->per_decade));
        if (!isfinite(t))
            break;
        if (t <= prev)
            continue;
        g->t[g->n++] = t;
        prev = t;
    }
    g->nz = calloc((size_t)g->n * a->n_layers, sizeof *g->nz);
    if (!g->nz)
        goto oom;
    for (int i = 0; i < a->n_layers; i++) {
        if (!dwf_layer_has_weight(a->layers[i].kind))
            continue;
        const dwf_csr *c = &s->w[i];
        size_t qb = (size_t)(c->nnz > 0 ? c->nnz : 1) * sizeof *g->q[i];
        g->q[i] = qa ? arena_alloc(qa, qb) : big_alloc(qb);
        if (!g->q[i])
            goto oom;
    }
    /* the removal indices and removals per point, split over the team */
    size_t per = ((size_t)a->n_layers + 4) * (g->n + 1);
    int64_t *gone = calloc((size_t)gj.n * per, sizeof *gone);
    if (!gone)
        goto oom;
    for (int i = 0; i < gj.n; i++)
        gj.gone[i] = gone + (size_t)i * per;
    gj.pass = 1;
    if (wk)
        dwf_workers_run(wk, grid_run, &gj);
    else
        grid_run(&gj, 0);
    for (int i = 0; i < a->n_layers; i++) {
        if (!dwf_layer_has_weight(a->layers[i].kind))
            continue;
        int64_t left = s->w[i].nnz; /* non-zeros = removed later */
        for (int p = 0; p < g->n; p++) {
            for (int l = 0; l < gj.n; l++)
                left -= gj.gone[l][(size_t)i * (g->n + 1) + p];
            g->nz[(size_t)p * a->n_layers + i] = left; /* q >= 1: none gone at 0 */
        }
    }
    free(gone);
    return 0;
oom:
    grid_free(g);
    return dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
}

static int64_t grid_total(const grid *g, int p)
{
    int64_t n = 0;
    for (int i = 0; i < g->n_layers; i++)
        n += g->nz[(size_t)p * g->n_layers + i];
    return n;
}

/* Counts and CR of grid point p into *pt (accuracies NaN). */
static void fill_point(const dwf_smodel *s, const grid *g, int p,
                       dwf_thresh_point *pt)
{
    memset(pt, 0, sizeof *pt);
    pt->threshold = (double)g->t[p];
    for (int i = 0; i < s->arch.n_layers && i < DWF_MAX_LAYERS; i++) {
        if (!dwf_layer_has_weight(s->arch.layers[i].kind))
            continue;
        pt->layer_nonzero[i] = g->nz[(size_t)p * g->n_layers + i];
        pt->layer_weights[i] = (int64_t)s->w[i].rows * s->w[i].cols;
        pt->weights += pt->layer_weights[i];
        pt->nonzero += pt->layer_nonzero[i];
    }
    pt->cr = pt->nonzero > 0 ? (double)pt->weights / (double)pt->nonzero : INFINITY;
    pt->val_acc = NAN;
    pt->test_acc = NAN;
}

/* The model of grid point p: s itself at p = 0, else rethresholded. */
static int point_model(const dwf_smodel *s, const grid *g, int p, dwf_smodel *m,
                       const dwf_smodel **use, dwf_err *err)
{
    if (p == 0) {
        *use = s;
        return 0;
    }
    int rc = dwf_smodel_rethreshold(s, g->t[p], NULL, 0, m, err);
    *use = rc ? NULL : m;
    return rc;
}

/* ---- the MLP view and the per-model plan ---------------------------------- */

enum { L0_DENSE, L0_CSR, L0_INC, L0_GIVEN };

typedef struct mlp_layer {
    int li;               /* index in arch.layers */
    int rows, cols;
    int relu;             /* relu on its output */
    const float *bias;    /* may be NULL */
    double bmax;          /* max |bias| */
    double gam;           /* u sqrt(cols + 2): rounding std per sum |terms| */
} mlp_layer;

/* Memory of a plan (and of a lane's near-tie layers): bump allocation from chunks of at least 2 MB marked
 * for transparent huge pages (big_alloc), all released together by
 * arena_free - a plan's hundreds of arrays fresh from malloc cost a page
 * fault per 4 KB (about 12 us each on the bench VM), a tenth of a first
 * curve. One arena per planning lane (no locking). */
#define ARENA_CHUNK ((size_t)2 << 20)
struct arena {
    char *cur, *end;
    void **chunks;
    int n, cap;
};

static void *arena_alloc(arena *a, size_t n)
{
    n = (n + 63) / 64 * 64;
    if (n == 0)
        n = 64;
    if ((size_t)(a->end - a->cur) < n) {
        if (a->n == a->cap) {
            int cap = a->cap ? 2 * a->cap : 16;
            void **c = realloc(a->chunks, (size_t)cap * sizeof *c);
            if (!c)
                return NULL;
            a->chunks = c;
            a->cap = cap;
        }
        size_t sz = n > ARENA_CHUNK ? (n + ARENA_CHUNK - 1) / ARENA_CHUNK * ARENA_CHUNK
                                    : ARENA_CHUNK;
        char *m = big_alloc(sz);
        if (!m)
            return NULL;
        a->chunks[a->n++] = m;
        a->cur = m;
        a->end = m + sz;
    }
    void *r = a->cur;
    a->cur += n;
    return r;
}

static void *arena_calloc(arena *a, size_t n, size_t size)
{
    void *r = arena_alloc(a, n * size);
    if (r)
        memset(r, 0, n * size);
    return r;
}

/* Empties a for reuse, keeping its first chunk. */
static void arena_reset(arena *a)
{
    for (int i = 1; i < a->n; i++)
        free(a->chunks[i]);
    if (a->n > 0) {
        a->n = 1;
        a->cur = a->chunks[0];
        a->end = a->cur + ARENA_CHUNK;
    }
}

static void arena_free(arena *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->chunks[i]);
    free(a->chunks);
    memset(a, 0, sizeof *a);
}

/* A sparse matrix of this file's kernels (int32 everywhere). */
typedef struct mat {
    int32_t *ptr, *idx;
    float *val;
} mat;


typedef struct lat_pt {   /* a later layer (l >= 1) in one model */
    mat w;                /* its weights (columns renumbered when the layer
                             before has wc: its j-th kept unit is column j) */
    mat wc;               /* a hidden layer whose units the next one reads
                             only in part (both sparse): the rows of those
                             units (n_out of them, ascending), which alone a
                             recomputation evaluates; else empty */
    float *bias_c;        /* ... and their biases (NULL without bias) */
    int n_out;            /* rows a recomputation evaluates */
    float *wd;            /* dense copy (rows x cols) when dense enough */
    double *n2, *n1;      /* row 2- and 1-norms */
    double *c2, *c1;      /* removed since model 0, per row: sum w^2, sum |w| */
    double n2max, n1max;
    double op;            /* estimate (rounding) of the spectral norm */
    double op_rig;        /* rigorous bound of it: min(||W||_F, sqrt(||W||_1 ||W||_inf)) */
    double f2rem;         /* sum of the squares of c2 (removed since model 0) */
    double r2max, r1max;  /* max_r c2[r], max_r c1[r] */
    int64_t n_rem;        /* entries removed since model 0 */
} lat_pt;

/* A model of the exact end: its dense layers in CSR without the hidden
 * units the next layer does not read (their rows gone, the next layer's
 * columns renumbered in the same order), which leaves every product the
 * reference computes for the units left, and the logits, as they are. */
typedef struct ex_model {
    dwf_csr w[DWF_MAX_LAYERS];  /* by MLP layer (0 .. nd - 1) */
    float *b[DWF_MAX_LAYERS];   /* their biases (NULL without) */
} ex_model;

typedef struct pt_plan {  /* one distinct model */
    int p;                /* its grid point */
    int mode;             /* how layer 0 gets there (L0_*) */
    float *wd;            /* L0_DENSE: the dense layer-0 weight */
    mat full;             /* L0_CSR: the layer-0 weight */
    mat rem;              /* L0_INC: the layer-0 weights removed here */
    double *n2, *n1;      /* layer-0 row norms */
    double n2max, n1max;
    double *m2, *m1;      /* per row, the norms summed over the float-computed
                             pieces layer 0 holds (rebuild + increments) */
    double m2max, m1max;
    int l0_same;          /* layer 0 as in the previous model */
    int32_t *touch;       /* L0_INC: the layer-0 rows it changes */
    int n_touch;
    int32_t *live;        /* layer-0 units layer 1 still reads (ascending; all
                             with a dense layer-1 copy); a unit, once dead,
                             stays dead at higher thresholds */
    int n_live;
    int fine;             /* try the row-by-row certification before a
                             recomputation (when that costs much more) */
    double l0_cost;       /* of the chosen layer-0 step (COST_CSR units) */
    lat_pt *lat;          /* nd - 1 */
} pt_plan;

typedef struct plan {
    const dwf_smodel *s;
    const dwf_dataset *data[2];
    int nd;
    mlp_layer L[DWF_MAX_LAYERS];
    int dim, nc, max_rows;
    int n_pt;
    pt_plan *pt;
    int n_blk;
    int (*blk)[3];        /* data set, start, size */
    int fast;             /* AVX-512 kernels */
    const float *given[2];/* opts->layer0 of data sets that are there */
    const float *gl[2][DWF_MAX_LAYERS]; /* opts->later by MLP layer (1..nd-1)
                             of data sets whose model 0 takes them (all
                             there, no later layer of model 0 compacted) */
    int ex_from;          /* models e >= ex_from (the sparse end) are
                             evaluated exactly: the reference's products
                             (dwf_csr_matmul) of ex[e - ex_from] on whole
                             blocks (n_pt: none) */
    struct ex_model *ex;
    int no_exact;         /* opts->no_exact_end */
    arena mem[DWF_MAX_THREADS]; /* everything above, by planning lane */
} plan;

/* The layers as dense (+ relu) steps, or 0 when the path does not apply:
 * flatten and relu only, no relu before the first dense layer, nothing but
 * flatten after the last. */
static int mlp_view(const dwf_smodel *s, plan *P)
{
    const dwf_arch *a = &s->arch;
    P->nd = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        switch (l->kind) {
        case DWF_LAYER_DENSE: {
            mlp_layer *m = &P->L[P->nd++];
            memset(m, 0, sizeof *m);
            m->li = i;
            m->rows = s->w[i].rows;
            m->cols = s->w[i].cols;
            m->bias = s->bias[i];
            for (int r = 0; m->bias && r < m->rows; r++)
                m->bmax = mx(m->bmax, fabs((double)m->bias[r]));
            m->gam = ldexp(1.0, -24) * sqrt(m->cols + 2.0);
            break;
        }
        case DWF_LAYER_RELU:
            if (P->nd == 0)
                return 0;
            P->L[P->nd - 1].relu = 1;
            break;
        case DWF_LAYER_FLATTEN:
            break;
        default:
            return 0;
        }
    }
    if (P->nd < 1 || P->L[P->nd - 1].relu || P->L[P->nd - 1].rows != a->n_classes)
        return 0;
    for (int l = 1; l < P->nd; l++)
        if (P->L[l].cols != P->L[l - 1].rows)
            return 0;
    return P->L[0].cols == a->in_c * a->in_h * a->in_w;
}

static void plan_free(plan *P)
{
    for (int i = 0; i < DWF_MAX_THREADS; i++)
        arena_free(&P->mem[i]);
    P->pt = NULL;
    P->blk = NULL;
    P->ex = NULL;
}

/* The entries of c kept at grid point p (removal index > p) as a mat. */
static int mat_select(const dwf_csr *c, const int32_t *q, int p, mat *m, arena *a)
{
    int64_t n = 0;
    for (int64_t k = 0; k < c->nnz; k++)
        n += q[k] > p;
    m->ptr = arena_alloc(a, ((size_t)c->rows + 1) * sizeof *m->ptr);
    m->idx = arena_alloc(a, (size_t)n * sizeof *m->idx);
    m->val = arena_alloc(a, (size_t)n * sizeof *m->val);
    if (!m->ptr || !m->idx || !m->val)
        return DWF_ENOMEM;
    int32_t o = 0;
    m->ptr[0] = 0;
    for (int r = 0; r < c->rows; r++) {
        for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++) {
            if (q[k] > p) {
                m->idx[o] = c->indices[k];
                m->val[o++] = c->values[k];
            }
        }
        m->ptr[r + 1] = o;
    }
    return 0;
}

/* An estimate of the spectral norm of m (rows x cols) by power iteration,
 * raised by 10% (it converges from below). */
static double spectral(const mat *m, int rows, int cols)
{
    double *v = malloc((size_t)cols * sizeof *v), *u = malloc((size_t)rows * sizeof *u);
    double lam = 0.0;
    if (!v || !u) {
        free(v);
        free(u);
        return INFINITY;
    }
    for (int j = 0; j < cols; j++)
        v[j] = 1.0 / sqrt((double)cols) * (1.0 + 0.01 * (j % 7));
    for (int it = 0; it < 25; it++) {
        for (int r = 0; r < rows; r++) {
            double acc = 0.0;
            for (int32_t k = m->ptr[r]; k < m->ptr[r + 1]; k++)
                acc += (double)m->val[k] * v[m->idx[k]];
            u[r] = acc;
        }
        memset(v, 0, (size_t)cols * sizeof *v);
        for (int r = 0; r < rows; r++)
            for (int32_t k = m->ptr[r]; k < m->ptr[r + 1]; k++)
                v[m->idx[k]] += (double)m->val[k] * u[r];
        double nv = 0.0;
        for (int j = 0; j < cols; j++)
            nv += v[j] * v[j];
        nv = sqrt(nv);
        if (!(nv > 0.0)) {
            lam = nv == 0.0 ? 0.0 : INFINITY;
            break;
        }
        lam = nv;
        for (int j = 0; j < cols; j++)
            v[j] /= nv;
    }
    free(v);
    free(u);
    return 1.1 * sqrt(lam);
}

/* Later layer l at model e: weights, norms, removed sums, rigorous norm
 * bounds (model 0's spectral estimate is applied by plan_build). */
static int plan_later(plan *P, const grid *g, int e, int l, double *col, arena *a)
{
    const mlp_layer *L = &P->L[l];
    const dwf_csr *c = &P->s->w[L->li];
    const int32_t *q = g->q[L->li];
    int p = P->pt[e].p;
    lat_pt *lp = &P->pt[e].lat[l - 1];
    lp->n2 = arena_calloc(a, (size_t)L->rows, sizeof(double));
    lp->n1 = arena_calloc(a, (size_t)L->rows, sizeof(double));
    lp->c2 = arena_calloc(a, (size_t)L->rows, sizeof(double));
    lp->c1 = arena_calloc(a, (size_t)L->rows, sizeof(double));
    if (!lp->n2 || !lp->n1 || !lp->c2 || !lp->c1)
        return DWF_ENOMEM;
    double frob = 0.0, frob_rem = 0.0, colmax = 0.0;
    memset(col, 0, (size_t)L->cols * sizeof *col);
    for (int r = 0; r < L->rows; r++) {
        for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++) {
            double v = c->values[k];
            if (q[k] > p) {
                lp->n2[r] += v * v;
                lp->n1[r] += fabs(v);
                col[c->indices[k]] += fabs(v);
            } else {
                lp->c2[r] += v * v;
                lp->c1[r] += fabs(v);
                lp->n_rem++;
            }
        }
        frob += lp->n2[r];
        frob_rem += lp->c2[r];
        lp->r2max = mx(lp->r2max, lp->c2[r]);
        lp->r1max = mx(lp->r1max, lp->c1[r]);
        lp->n2[r] = sqrt(lp->n2[r]);
        lp->n2max = mx(lp->n2max, lp->n2[r]);
        lp->n1max = mx(lp->n1max, lp->n1[r]);
    }
    for (int j = 0; j < L->cols; j++)
        colmax = mx(colmax, col[j]);
    /* ||W||_2 <= ||W||_F, sqrt(||W||_1 ||W||_inf), ||W_0||_2 + ||W_0 - W||_F */
    lp->op = lp->op_rig = mn(sqrt(frob), sqrt(colmax * lp->n1max)) * (1.0 + 1e-9);
    lp->f2rem = frob_rem;
    /* dense enough for the dense kernel (the crossover of dwf_sparse),
     * when a copy for every model fits the budget: the dense copy alone
     * (model 0 keeps its CSR for the spectral estimate), else the CSR */
    size_t dn = (size_t)L->rows * L->cols;
    int64_t nnz = (int64_t)c->nnz - lp->n_rem;
    if ((double)nnz > DWF_SPARSE_CROSSOVER * (double)dn &&
        (double)dn * sizeof(float) * P->ex_from <= (double)DENSE_BUDGET) {
        lp->wd = arena_calloc(a, dn, sizeof *lp->wd);
        if (!lp->wd)
            return DWF_ENOMEM;
        for (int r = 0; r < L->rows; r++)
            for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++)
                if (q[k] > p)
                    lp->wd[(size_t)r * L->cols + c->indices[k]] = c->values[k];
    }
    if ((!lp->wd || e == 0) && mat_select(c, q, p, &lp->w, a))
        return DWF_ENOMEM;
    return 0;
}

/* Chooses how layer 0 reaches each model and builds what that needs:
 * emap[p] is the model index of grid point p (every removal index is one). */
/* The two passes of plan_layer0 over layer 0's entries, by rows split
 * over the team (a row's sums and lists are its own). */
typedef struct l0_job {
    plan *P;
    const grid *g;
    const int *emap;
    int pass, n;
    double *sq, *ab, *rsq, *rab;
    int32_t *cnt;
} l0_job;

static void l0_pass(void *arg, int id)
{
    l0_job *j = arg;
    plan *P = j->P;
    const mlp_layer *L = &P->L[0];
    const dwf_csr *c = &P->s->w[L->li];
    const int32_t *q = j->g->q[L->li];
    int R = L->rows, r0 = (int)((int64_t)R * id / j->n), r1 = (int)((int64_t)R * (id + 1) / j->n);
    for (int r = r0; r < r1; r++)
        for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++) {
            if (j->pass == 0) { /* row sums of model 0 and of what each model drops */
                double v = c->values[k];
                j->sq[r] += v * v;
                j->ab[r] += fabs(v);
                if (q[k] < j->g->n) {
                    size_t o = (size_t)j->emap[q[k]] * R + r;
                    j->rsq[o] += v * v;
                    j->rab[o] += fabs(v);
                    j->cnt[o]++;
                }
                continue;
            }
            /* the removal lists, in CSR order within each row */
            if (q[k] >= j->g->n)
                continue;
            int e = j->emap[q[k]];
            mat *m = &P->pt[e].rem;
            if (e >= P->ex_from || P->pt[e].mode != L0_INC)
                continue;
            int32_t o = m->ptr[r] + j->cnt[(size_t)e * R + r]++;
            m->idx[o] = c->indices[k];
            m->val[o] = c->values[k];
        }
}

static int plan_layer0(plan *P, const grid *g, const int *emap, dwf_workers *wk)
{
    const mlp_layer *L = &P->L[0];
    const dwf_csr *c = &P->s->w[L->li];
    const int32_t *q = g->q[L->li];
    int E = P->n_pt, R = L->rows, rc = 0;
    size_t ER = (size_t)E * R;
    P->ex_from = E;
    arena *a = &P->mem[0];
    double *sq = arena_calloc(a, (size_t)R, sizeof *sq), *ab = arena_calloc(a, (size_t)R, sizeof *ab);
    double *rsq = arena_calloc(a, ER, sizeof *rsq), *rab = arena_calloc(a, ER, sizeof *rab);
    int32_t *cnt = arena_calloc(a, ER, sizeof *cnt);
    if (!sq || !ab || !rsq || !rab || !cnt) {
        rc = DWF_ENOMEM;
        goto out;
    }
    l0_job lj = {P, g, emap, 0, wk ? dwf_workers_count(wk) : 1, sq, ab, rsq, rab, cnt};
    if (wk)
        dwf_workers_run(wk, l0_pass, &lj);
    else
        l0_pass(&lj, 0);
    for (int e = 0; e < E && !rc; e++) {
        pt_plan *pp = &P->pt[e];
        int p = pp->p;
        int64_t nnz = g->nz[(size_t)p * g->n_layers + L->li], removed = 0;
        if (e > 0)
            removed = g->nz[(size_t)P->pt[e - 1].p * g->n_layers + L->li] - nnz;
        /* a sparse pass costs less per entry where the panel kernel takes
         * it (l0_csr: about 12 entries per row and panel) */
        double panel = (double)DWF_TK_PANEL_MIN * R *
                       ((L->cols + DWF_TK_PANEL - 1) / DWF_TK_PANEL);
        double dense = (double)R * L->cols;
        double csr = ((double)nnz >= panel ? COST_PANEL : COST_CSR) * (double)nnz;
        double inc = e > 0 ? ((double)removed >= panel ? COST_PANEL : COST_INC) * (double)removed
                           : INFINITY;
        pp->mode = inc <= mn(dense, csr) ? L0_INC : csr < dense ? L0_CSR : L0_DENSE;
        pp->l0_cost = mn(inc, mn(dense, csr));
        /* the sparse end: once the reference forward of the whole model
         * costs less than layer 0's step and the certified later layers,
         * this model and the (sparser) ones after it are evaluated by it */
        if (e > 0 && !P->no_exact && dwf_smodel_batch_invariant() &&
            COST_EXACT * (double)grid_total(g, p) <= pp->l0_cost + COST_LATER) {
            P->ex_from = e;
            break;
        }
        /* model 0 from the caller's outputs, where every data set has them */
        if (e == 0 && (P->given[0] || !P->data[0]) && (P->given[1] || !P->data[1]))
            pp->mode = L0_GIVEN;
        pp->l0_same = e > 0 && removed == 0;
        pp->n2 = arena_alloc(a, (size_t)R * sizeof(double));
        pp->n1 = arena_alloc(a, (size_t)R * sizeof(double));
        pp->m2 = arena_alloc(a, (size_t)R * sizeof(double));
        pp->m1 = arena_alloc(a, (size_t)R * sizeof(double));
        if (!pp->n2 || !pp->n1 || !pp->m2 || !pp->m1) {
            rc = DWF_ENOMEM;
            break;
        }
        /* row norms: model 0's minus what was dropped so far (a little
         * slack covers the rounding of the subtraction) */
        pp->n2max = pp->n1max = pp->m2max = pp->m1max = 0.0;
        for (int r = 0; r < R; r++) {
            if (e > 0) {
                sq[r] -= rsq[(size_t)e * R + r];
                ab[r] -= rab[(size_t)e * R + r];
            }
            pp->n2[r] = sqrt(mx(sq[r], 0.0) * (1.0 + 1e-9));
            pp->n1[r] = mx(ab[r], 0.0) * (1.0 + 1e-9);
            pp->n2max = mx(pp->n2max, pp->n2[r]);
            pp->n1max = mx(pp->n1max, pp->n1[r]);
            /* a rebuild holds one float piece (the weights); an increment
             * adds the removed weights' (one row of them is one sum) */
            if (pp->mode == L0_INC) {
                pp->m2[r] = P->pt[e - 1].m2[r] + sqrt(rsq[(size_t)e * R + r]) * (1.0 + 1e-9);
                pp->m1[r] = P->pt[e - 1].m1[r] + rab[(size_t)e * R + r] * (1.0 + 1e-9);
            } else {
                pp->m2[r] = pp->n2[r];
                pp->m1[r] = pp->n1[r];
            }
            pp->m2max = mx(pp->m2max, pp->m2[r]);
            pp->m1max = mx(pp->m1max, pp->m1[r]);
        }
        if (pp->mode == L0_INC) {
            mat *m = &pp->rem;
            m->ptr = arena_alloc(a, ((size_t)R + 1) * sizeof *m->ptr);
            m->idx = arena_alloc(a, (size_t)removed * sizeof *m->idx);
            m->val = arena_alloc(a, (size_t)removed * sizeof *m->val);
            if (!m->ptr || !m->idx || !m->val) {
                rc = DWF_ENOMEM;
                break;
            }
            m->ptr[0] = 0;
            pp->touch = arena_alloc(a, (size_t)R * sizeof *pp->touch);
            if (!pp->touch) {
                rc = DWF_ENOMEM;
                break;
            }
            pp->n_touch = 0;
            for (int r = 0; r < R; r++) {
                m->ptr[r + 1] = m->ptr[r] + cnt[(size_t)e * R + r];
                if (cnt[(size_t)e * R + r])
                    pp->touch[pp->n_touch++] = r;
            }
        } else if (pp->mode == L0_CSR) {
            if (mat_select(c, q, p, &pp->full, a))
                rc = DWF_ENOMEM;
        } else if (pp->mode == L0_DENSE) {
            pp->wd = arena_calloc(a, (size_t)R * L->cols, sizeof *pp->wd);
            if (!pp->wd) {
                rc = DWF_ENOMEM;
                break;
            }
            for (int r = 0; r < R; r++)
                for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++)
                    if (q[k] > p)
                        pp->wd[(size_t)r * L->cols + c->indices[k]] = c->values[k];
        }
    }
    if (rc)
        goto out;
    memset(cnt, 0, ER * sizeof *cnt);
    lj.pass = 1;
    if (wk)
        dwf_workers_run(wk, l0_pass, &lj);
    else
        l0_pass(&lj, 0);
out:
    return rc;
}

/* Hidden later layers of model pp whose units the next layer reads only in
 * part (both layers sparse): only those units are evaluated by a
 * recomputation (wc, bias_c), and the next layer's columns are renumbered
 * to match. The units left out multiply only zero weights, so norms over
 * the kept ones bound every product the same way. */
static int plan_compact(plan *P, pt_plan *pp)
{
    for (int l = 1; l < P->nd; l++)
        pp->lat[l - 1].n_out = P->L[l].rows;
    for (int l = 1; l < P->nd - 1; l++) {
        lat_pt *c = &pp->lat[l - 1], *nx = &pp->lat[l];
        if (c->wd || nx->wd)
            continue;
        int R = P->L[l].rows;
        int32_t *pos = malloc((size_t)R * sizeof *pos);
        if (!pos)
            return DWF_ENOMEM;
        for (int r = 0; r < R; r++)
            pos[r] = -1;
        for (int32_t k = 0; k < nx->w.ptr[P->L[l + 1].rows]; k++)
            pos[nx->w.idx[k]] = 0;
        int n = 0;
        int64_t nnz = 0;
        for (int r = 0; r < R; r++)
            if (pos[r] == 0) {
                pos[r] = n++;
                nnz += c->w.ptr[r + 1] - c->w.ptr[r];
            }
        if (n == R) { /* every unit read */
            free(pos);
            continue;
        }
        mat *m = &c->wc;
        arena *a = &P->mem[0];
        m->ptr = arena_alloc(a, ((size_t)n + 1) * sizeof *m->ptr);
        m->idx = arena_alloc(a, (size_t)nnz * sizeof *m->idx);
        m->val = arena_alloc(a, (size_t)nnz * sizeof *m->val);
        const float *bias = P->L[l].bias;
        c->bias_c = bias ? arena_alloc(a, (size_t)n * sizeof *c->bias_c) : NULL;
        if (!m->ptr || !m->idx || !m->val || (bias && !c->bias_c)) {
            free(pos);
            return DWF_ENOMEM;
        }
        m->ptr[0] = 0;
        for (int r = 0, t = 0; r < R; r++) {
            if (pos[r] < 0)
                continue;
            int32_t o = m->ptr[t];
            for (int32_t k = c->w.ptr[r]; k < c->w.ptr[r + 1]; k++, o++) {
                m->idx[o] = c->w.idx[k];
                m->val[o] = c->w.val[k];
            }
            if (bias)
                c->bias_c[t] = bias[r];
            m->ptr[++t] = o;
        }
        for (int32_t k = 0; k < nx->w.ptr[P->L[l + 1].rows]; k++)
            nx->w.idx[k] = pos[nx->w.idx[k]];
        c->n_out = n;
        free(pos);
    }
    return 0;
}

typedef struct plan_job {
    plan *P;
    const grid *g;
    double *op0;    /* by later layer: model 0's spectral estimate */
    int n;          /* lanes */
    atomic_int next;/* the next task to claim */
    double *col[DWF_MAX_THREADS];
    int rc[DWF_MAX_THREADS];
} plan_job;

static int ex_build(plan *P, const grid *g, int p, ex_model *x, arena *a);

/* Whether model e's later layers hold the same weights as model e - 1's
 * (thresholding is monotone: the same count is the same set). Near the
 * dense end most models differ in the first layer only. */
static int later_same(const plan *P, const grid *g, int e)
{
    if (e == 0)
        return 0;
    for (int l = 1; l < P->nd; l++) {
        int li = P->L[l].li;
        if (g->nz[(size_t)P->pt[e].p * g->n_layers + li] !=
            g->nz[(size_t)P->pt[e - 1].p * g->n_layers + li])
            return 0;
    }
    return 1;
}

/* The lanes claim the models in turn: e < ex_from, the later layers of the
 * certified path (model 0 first, the longest: its spectral estimates,
 * which plan_build then applies to the others' sigma chains), e >=
 * ex_from, the compacted models of the exact end. Each lane allocates
 * from its own arena. */
static void plan_run(void *arg, int id)
{
    plan_job *j = arg;
    plan *P = j->P;
    for (int e; !j->rc[id] && (e = atomic_fetch_add(&j->next, 1)) < P->n_pt;) {
        if (e >= P->ex_from) {
            j->rc[id] = ex_build(P, j->g, P->pt[e].p, &P->ex[e - P->ex_from], &P->mem[id]);
            continue;
        }
        if (P->nd < 2 || later_same(P, j->g, e))
            continue; /* shares model e - 1's (plan_build links them) */
        P->pt[e].lat = arena_calloc(&P->mem[id], (size_t)(P->nd - 1), sizeof(lat_pt));
        if (!P->pt[e].lat) {
            j->rc[id] = DWF_ENOMEM;
            break;
        }
        for (int l = 1; l < P->nd && !j->rc[id]; l++) {
            j->rc[id] = plan_later(P, j->g, e, l, j->col[id], &P->mem[id]);
            if (e == 0 && !j->rc[id] && l < P->nd - 1) {
                lat_pt *lp = &P->pt[0].lat[l - 1];
                j->op0[l] = spectral(&lp->w, P->L[l].rows, P->L[l].cols);
                lp->op = mn(lp->op, j->op0[l]);
            }
        }
    }
}

/* w = the entries of src at grid point p (removal index above p): the rows
 * r with rmap[r] >= 0, as row rmap[r] of rows (all, in place, without
 * rmap), columns renumbered by cmap (unless NULL) into cols; from arena a. */
static int csr_pick(const dwf_csr *src, const int32_t *q, int p, const int32_t *rmap,
                    int rows, const int32_t *cmap, int cols, dwf_csr *w, arena *a)
{
    int64_t nnz = 0;
    for (int r = 0; r < src->rows; r++)
        if (!rmap || rmap[r] >= 0)
            for (int64_t k = src->indptr[r]; k < src->indptr[r + 1]; k++)
                nnz += q[k] > p;
    w->rows = rows;
    w->cols = cols;
    w->nnz = nnz;
    w->indptr = arena_alloc(a, ((size_t)rows + 1) * sizeof *w->indptr);
    w->indices = arena_alloc(a, (size_t)nnz * sizeof *w->indices);
    w->values = arena_alloc(a, (size_t)nnz * sizeof *w->values);
    if (!w->indptr || !w->indices || !w->values)
        return DWF_ENOMEM;
    int64_t o = 0;
    w->indptr[0] = 0;
    for (int r = 0; r < src->rows; r++) {
        int i = rmap ? rmap[r] : r;
        if (i < 0)
            continue;
        for (int64_t k = src->indptr[r]; k < src->indptr[r + 1]; k++)
            if (q[k] > p) {
                w->indices[o] = cmap ? cmap[src->indices[k]] : src->indices[k];
                w->values[o++] = src->values[k];
            }
        w->indptr[i + 1] = o;
    }
    return 0;
}

/* The exact-end model of grid point p (compacted, see ex_model). */
static int ex_build(plan *P, const grid *g, int p, ex_model *x, arena *a)
{
    int nd = P->nd, rc = 0;
    int32_t *map[DWF_MAX_LAYERS] = {NULL}; /* unit -> kept index, or -1 */
    int kept[DWF_MAX_LAYERS];
    /* backwards: the units of layer l - 1 that layer l's kept rows read */
    for (int l = nd - 1; l >= 0 && !rc; l--) {
        const mlp_layer *L = &P->L[l];
        if (!(map[l] = malloc((size_t)L->rows * sizeof *map[l]))) {
            rc = DWF_ENOMEM;
            break;
        }
        for (int r = 0; r < L->rows; r++)
            map[l][r] = l == nd - 1 ? 0 : -1;
        if (l == nd - 1)
            continue;
        const mlp_layer *N = &P->L[l + 1];
        const dwf_csr *c = &P->s->w[N->li];
        const int32_t *q = g->q[N->li];
        for (int r = 0; r < N->rows; r++)
            if (map[l + 1][r] >= 0)
                for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++)
                    if (q[k] > p)
                        map[l][c->indices[k]] = 0;
    }
    for (int l = 0; l < nd && !rc; l++) {
        kept[l] = 0;
        for (int r = 0; r < P->L[l].rows; r++)
            if (map[l][r] >= 0)
                map[l][r] = kept[l]++;
    }
    /* forwards: the kept rows, their entries at p, columns renumbered */
    for (int l = 0; l < nd && !rc; l++) {
        const mlp_layer *L = &P->L[l];
        rc = csr_pick(&P->s->w[L->li], g->q[L->li], p, map[l], kept[l],
                      l > 0 ? map[l - 1] : NULL, l > 0 ? kept[l - 1] : L->cols, &x->w[l], a);
        if (!rc && L->bias && !(x->b[l] = arena_alloc(a, (size_t)kept[l] * sizeof(float))))
            rc = DWF_ENOMEM;
        for (int r = 0; !rc && L->bias && r < L->rows; r++)
            if (map[l][r] >= 0)
                x->b[l][map[l][r]] = L->bias[r];
    }
    for (int l = 0; l < nd; l++)
        free(map[l]);
    return rc;
}

static int plan_build(plan *P, const grid *g, dwf_workers *wk, int nl, dwf_err *err)
{
    int rc = 0;
    P->pt = arena_calloc(&P->mem[0], (size_t)g->n, sizeof *P->pt);
    if (!P->pt)
        goto oom;
    P->n_pt = 0;
    int *emap = malloc((size_t)g->n * sizeof *emap);
    if (!emap)
        goto oom;
    for (int p = 0; p < g->n; p++) {
        if (p == 0 || grid_total(g, p) != grid_total(g, p - 1))
            P->pt[P->n_pt++].p = p;
        emap[p] = P->n_pt - 1;
    }
    rc = plan_layer0(P, g, emap, wk);
    free(emap);
    if (rc)
        goto oom;
    if (P->ex_from < P->n_pt &&
        !(P->ex = arena_calloc(&P->mem[0], (size_t)(P->n_pt - P->ex_from), sizeof *P->ex)))
        goto oom;
    int maxc = 1;
    for (int l = 1; l < P->nd; l++)
        maxc = P->L[l].cols > maxc ? P->L[l].cols : maxc;
    plan_job job;
    memset(&job, 0, sizeof job);
    double op0[DWF_MAX_LAYERS];
    job.P = P;
    job.g = g;
    job.op0 = op0;
    job.n = nl;
    for (int i = 0; i < nl; i++)
        if (!(job.col[i] = malloc((size_t)maxc * sizeof(double))))
            rc = DWF_ENOMEM;
    for (int l = 0; l < DWF_MAX_LAYERS; l++)
        op0[l] = INFINITY;
    atomic_init(&job.next, 0);
    if (!rc) {
        if (wk)
            dwf_workers_run(wk, plan_run, &job);
        else
            plan_run(&job, 0);
        for (int i = 0; i < nl; i++)
            rc = rc ? rc : job.rc[i];
    }
    /* models whose later layers are their predecessor's share its plans
     * (compacted once, below), and model 0's spectral estimate bounds the
     * others': ||W_0||_2 + ||W_0 - W||_F (the sigma chains only;
     * certification uses op_rig) */
    for (int e = 1; e < P->ex_from && P->nd > 1 && !rc; e++) {
        if (later_same(P, g, e)) {
            P->pt[e].lat = P->pt[e - 1].lat;
            continue;
        }
        for (int l = 1; l < P->nd - 1; l++) {
            lat_pt *lp = &P->pt[e].lat[l - 1];
            if (isfinite(op0[l]))
                lp->op = mn(lp->op, op0[l] + sqrt(lp->f2rem));
        }
    }
    for (int i = 0; i < nl; i++)
        free(job.col[i]);
    for (int e = 0; e < P->ex_from && !rc; e++) {
        pt_plan *pp = &P->pt[e];
        int R0 = P->L[0].rows;
        /* the row-by-row certification of a sample (about COST_FINE_ROW
         * per later row) against recomputing it (COST_REC_* per sample,
         * layer-0 unit and later multiply-add): worth trying first only
         * when it costs well under a recomputation, most tries winning */
        int64_t later = 0, hidden = 0, rows = 0;
        for (int l = 1; l < P->nd; l++) {
            const lat_pt *lp = &pp->lat[l - 1];
            later += lp->wd ? (int64_t)P->L[l].rows * P->L[l].cols : lp->w.ptr[P->L[l].rows];
            hidden += l < P->nd - 1 ? P->L[l].rows : 0;
            rows += P->L[l].rows;
        }
        double rec = COST_REC_SAMPLE + COST_REC_UNIT * R0 + COST_REC_MAC * (double)later;
        pp->fine = hidden > 0 && 2.0 * COST_FINE_ROW * (double)rows < rec;
        pp->live = arena_alloc(&P->mem[0], (size_t)R0 * sizeof *pp->live);
        if (!pp->live) {
            rc = DWF_ENOMEM;
            break;
        }
        if (P->nd == 1 || pp->lat[0].wd) {
            for (int r = 0; r < R0; r++)
                pp->live[r] = r;
            pp->n_live = R0;
            continue;
        }
        const mat *w1 = &pp->lat[0].w;
        uint8_t *seen = calloc((size_t)R0, 1);
        if (!seen) {
            rc = DWF_ENOMEM;
            break;
        }
        for (int32_t k = 0; k < w1->ptr[P->L[1].rows]; k++)
            seen[w1->idx[k]] = 1;
        pp->n_live = 0;
        for (int r = 0; r < R0; r++)
            if (seen[r])
                pp->live[pp->n_live++] = r;
        free(seen);
    }
    for (int e = 0; e < P->ex_from && !rc; e++)
        if (e == 0 || P->pt[e].lat != P->pt[e - 1].lat)
            rc = plan_compact(P, &P->pt[e]);
    if (rc)
        goto oom;

    P->max_rows = 1;
    for (int l = 0; l < P->nd; l++)
        if (P->L[l].rows > P->max_rows)
            P->max_rows = P->L[l].rows;
    int nb = 0;
    for (int ds = 0; ds < 2; ds++)
        if (has_data(P->data[ds]))
            nb += (P->data[ds]->n + BLK - 1) / BLK;
    P->blk = arena_alloc(&P->mem[0], (size_t)nb * sizeof *P->blk);
    if (!P->blk)
        goto oom;
    P->n_blk = 0;
    for (int ds = 0; ds < 2; ds++) {
        if (!has_data(P->data[ds]))
            continue;
        for (int st = 0; st < P->data[ds]->n; st += BLK) {
            int (*b)[3] = &P->blk[P->n_blk++];
            (*b)[0] = ds;
            (*b)[1] = st;
            (*b)[2] = P->data[ds]->n - st < BLK ? P->data[ds]->n - st : BLK;
        }
    }
    return 0;
oom:
    return dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
}

/* ---- one lane: blocks through every model --------------------------------- */

typedef struct fb_ent {
    int e, ds, idx;
} fb_ent;

typedef struct lane {
    const plan *P;
    int id, n_lanes;
    void *arena;          /* every buffer below but fb (lane_layout) */
    float *xs, *xf, *tmp;
    int32_t *ys, *cur;
    double *x2, *xi, *z0, *hb0, *zb, *hbn2, *hbni;
    int *bk, *gi;
    double *d2, *di, *h2, *hi, *D, *T;
    double *g0;           /* a later layer's output (max_rows x BLK) */
    float *hf, *of;       /* its float input, an sgemm output (max_rows x BLK) */
    double *gn2, *gni, *gpr, *gpm; /* per gathered sample: input norms, sigma
                                      chains of the reference and of this */
    double *bsig;         /* per sample and class (nc x BLK): sigma of the
                             float rounding of its base logits */
    double *tv;           /* T of the gathered samples (nc x BLK) */
    double *zold;         /* layer-0 rows before an increment (n_touch x BLK,
                             n_touch < n_live / 4) */
    double *cv;           /* certification scratch (5 x BLK) */
    const double **bp;    /* per sample: its base's last-layer c2, c1 (2 x BLK) */
    double *za, *ta;      /* per gathered sample: max logit and its T */
    int *am;              /* ... its class */
    int64_t *correct;     /* n_pt x 2 */
    int64_t recomputed;
    fb_ent *fb;
    int n_fb, cap_fb;
    int failed;
    int64_t exact;        /* samples x models evaluated there */
    int64_t given;        /* samples whose model 0 took opts->later */
    arena mem;            /* near ties' layers at a point (ref_mlp) */
    int64_t ref_batch;    /* samples in the reference batches run */
    int rc;               /* of the reference evaluations */
    dwf_err err;
} lane;

/* Memory for big scratch: from 512 KB on, whole 2 MB pages, 2 MB-aligned
 * and marked for transparent huge pages (a page fault per 2 MB, not per
 * 4 KB: a fault costs about 12 us on the bench VM, and a curve touches its
 * scratch fresh), smaller 64-byte aligned. Free with free(). */
static void *big_alloc(size_t n)
{
    const size_t H = (size_t)2 << 20;
    if (n >= H / 4) {
        size_t sz = (n + H - 1) / H * H;
        void *p = aligned_alloc(H, sz);
#ifdef MADV_HUGEPAGE
        if (p)
            madvise(p, sz, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
        return p;
    }
    return aligned_alloc(64, (n + 63) / 64 * 64);
}

/* The next bytes of a lane's arena from *at (64-byte steps). */
static void *carve(uintptr_t *at, size_t bytes)
{
    void *p = (void *)*at;
    *at += (bytes + 63) / 64 * 64;
    return p;
}

/* Points w's buffers into the arena at base (0: only measures); returns
 * its size. */
static size_t lane_layout(lane *w, const plan *P, uintptr_t base)
{
    size_t B = BLK, R0 = (size_t)P->L[0].rows, M = (size_t)P->max_rows, nl = (size_t)P->nd;
    size_t nc = (size_t)P->nc, dim = (size_t)P->dim;
    uintptr_t at = base;
    /* xs (a block's samples as read, dead once transposed into xf) shares
     * its memory with g0 and hf (used only after that); fresh memory
     * costs a page fault per 2 MB, up to ms each on the bench VM */
    size_t later = B * M * (sizeof(double) + sizeof(float));
    float *u = carve(&at, B * dim * sizeof(float) > later ? B * dim * sizeof(float) : later);
    w->xs = u;
    w->g0 = (double *)u;
    w->hf = (float *)((uintptr_t)u + B * M * sizeof(double)); /* (u is NULL when measuring) */
    w->xf = carve(&at, B * dim * sizeof(float));
    /* tmp: the panel kernel's sums (R0 x DWF_TK_TILE) too */
    size_t tb = (B > DWF_TK_TILE ? B : DWF_TK_TILE) * R0;
    w->tmp = carve(&at, (tb > dim ? tb : dim) * sizeof(float));
    w->ys = carve(&at, B * sizeof(int32_t));
    w->cur = carve(&at, R0 * sizeof(int32_t));
    w->x2 = carve(&at, B * sizeof(double));
    w->xi = carve(&at, B * sizeof(double));
    w->z0 = carve(&at, B * R0 * sizeof(double));
    w->hb0 = carve(&at, B * R0 * sizeof(double));
    w->zb = carve(&at, B * nc * sizeof(double));
    w->hbn2 = carve(&at, B * nl * sizeof(double));
    w->hbni = carve(&at, B * nl * sizeof(double));
    w->bk = carve(&at, B * sizeof(int));
    w->gi = carve(&at, B * sizeof(int));
    w->d2 = carve(&at, B * sizeof(double));
    w->di = carve(&at, B * sizeof(double));
    w->h2 = carve(&at, B * sizeof(double));
    w->hi = carve(&at, B * sizeof(double));
    w->T = carve(&at, M * sizeof(double));
    w->D = carve(&at, M * sizeof(double));
    w->of = carve(&at, B * M * sizeof(float));
    w->gn2 = carve(&at, B * sizeof(double));
    w->gni = carve(&at, B * sizeof(double));
    w->gpr = carve(&at, B * sizeof(double));
    w->gpm = carve(&at, B * sizeof(double));
    w->bsig = carve(&at, B * nc * sizeof(double));
    w->tv = carve(&at, B * nc * sizeof(double));
    w->zold = carve(&at, B * (R0 / 4 + 1) * sizeof(double)); /* n_touch < R0 / 4 */
    w->cv = carve(&at, 5 * B * sizeof(double));
    w->bp = carve(&at, 2 * B * sizeof(double *));
    w->za = carve(&at, B * sizeof(double));
    w->ta = carve(&at, B * sizeof(double));
    w->am = carve(&at, B * sizeof(int));
    w->correct = carve(&at, (size_t)P->n_pt * 2 * sizeof(int64_t));
    return (size_t)(at - base);
}

static void lane_free(lane *w)
{
    arena_free(&w->mem);
    free(w->arena);
    free(w->fb);
    memset(w, 0, sizeof *w);
}

/* One allocation for all of a lane's buffers (but the growing near-tie
 * list): fewer, larger pages to fault in. */
static int lane_init(lane *w, const plan *P)
{
    memset(w, 0, sizeof *w);
    w->P = P;
    size_t bytes = lane_layout(w, P, 0);
    w->arena = big_alloc(bytes);
    if (!w->arena) {
        memset(w, 0, sizeof *w);
        return DWF_ENOMEM;
    }
    lane_layout(w, P, (uintptr_t)w->arena);
    memset(w->correct, 0, (size_t)P->n_pt * 2 * sizeof(int64_t));
    return 0;
}

static void add_fb(lane *w, int e, int ds, int idx)
{
    if (w->n_fb == w->cap_fb) {
        int cap = w->cap_fb ? 2 * w->cap_fb : 64;
        fb_ent *f = realloc(w->fb, (size_t)cap * sizeof *f);
        if (!f) {
            w->failed = 1;
            return;
        }
        w->fb = f;
        w->cap_fb = cap;
    }
    w->fb[w->n_fb++] = (fb_ent){e, ds, idx};
}

/* 1 when, for the first maximum a of z (stride st), z[a] - T[a] > z[c] +
 * T[c] for every other c: then every logit vector within T of z has its
 * (strict, unique) maximum at a; *pred = a. NaN anywhere gives 0. */
static int separated(const double *z, int st, const double *T, int nc, int *pred)
{
    int a = 0;
    for (int c = 1; c < nc; c++)
        if (z[(size_t)c * st] > z[(size_t)a * st])
            a = c;
    *pred = a;
    double lo = z[(size_t)a * st] - T[a];
    if (!(lo == lo))
        return 0;
    for (int c = 0; c < nc; c++)
        if (c != a && !(lo > z[(size_t)c * st] + T[c]))
            return 0;
    return 1;
}

/* sigma of the rounding of layer 0 (both computations), max over units */
static double sigma0(const plan *P, const pt_plan *pp, double x2, double xi)
{
    const mlp_layer *L = &P->L[0];
    double a = mn(pp->n2max * x2, pp->n1max * xi) + mn(pp->m2max * x2, pp->m1max * xi);
    return L->gam * (a + 2.0 * L->bmax);
}

/* T[c] += TAIL_SIGMAS * sigma of logit c, given the sigma chain pr
 * propagated to the input of the last layer and that input's norms. */
static void add_sigma(const plan *P, const pt_plan *pp, double pr, double in2,
                      double ini, double *T)
{
    int nd = P->nd;
    const mlp_layer *L = &P->L[nd - 1];
    const lat_pt *lp = &pp->lat[nd - 2];
    for (int c = 0; c < P->nc; c++) {
        double own = L->gam * (mn(lp->n2[c] * in2, lp->n1[c] * ini) +
                               (L->bias ? fabs((double)L->bias[c]) : 0.0));
        double sg = own + lp->n2[c] * pr;
        T[c] += TAIL_SIGMAS * sg * (1.0 + 1e-6) + 1e-300;
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#define THR_NOERRNO __attribute__((optimize("no-math-errno")))
#else
#define THR_NOERRNO
#endif

/* D[r] = bound of the change of row r's output: the current row norms
 * times the input change (d2, di), plus, when weights were removed since
 * the base (c* vs b*, cumulative), their norms times the base input. */
DWF_VEC THR_NOERRNO static void rows_bound(
    int rows, const double *restrict n2, const double *restrict n1, double d2,
    double di, const double *restrict c2, const double *restrict c1,
    const double *restrict b2, const double *restrict b1, double hb2, double hbi,
    double *restrict D)
{
    for (int r = 0; r < rows; r++) {
        double a = n2[r] * d2, b = n1[r] * di;
        D[r] = a < b ? a : b;
    }
    if (!c2)
        return;
    for (int r = 0; r < rows; r++) {
        double e2 = c2[r] - b2[r], e1 = c1[r] - b1[r];
        e2 = (e2 > 0.0 ? e2 : 0.0) + 1e-12 * c2[r];
        e1 = (e1 > 0.0 ? e1 : 0.0) + 1e-12 * c1[r];
        double a = sqrt(e2) * hb2, b = e1 * hbi;
        D[r] += a < b ? a : b;
    }
}

/* Whether sample s of the block keeps its base prediction at model e,
 * bounding the change of hidden layers row by row (certify_block does it
 * through the spectral norms, for all samples at once, first). */
static int certify(lane *w, const pt_plan *pp, int s, int n, int *pred)
{
    const plan *P = w->P;
    int nd = P->nd;
    double d2 = w->d2[s], di = w->di[s];
    double in2 = w->h2[s], ini = w->hi[s]; /* input of layer 1 (a bound) */
    if (!isfinite(d2) || !isfinite(in2))
        return 0;
    const pt_plan *pb = &P->pt[w->bk[s]];
    double pr = sigma0(P, pp, w->x2[s], w->xi[s]);
    for (int l = 1; l < nd; l++) {
        const lat_pt *c = &pp->lat[l - 1], *cb = &pb->lat[l - 1];
        const mlp_layer *L = &P->L[l];
        int moved = c->n_rem != cb->n_rem;
        double hb2 = w->hbn2[(size_t)(l - 1) * BLK + s];
        if (l == nd - 1) { /* the logits: row by row */
            rows_bound(L->rows, c->n2, c->n1, d2, di, moved ? c->c2 : NULL, c->c1,
                       cb->c2, cb->c1, hb2, w->hbni[(size_t)(l - 1) * BLK + s], w->T);
            add_sigma(P, pp, pr, in2, ini, w->T);
            for (int c = 0; c < P->nc; c++) /* the base logits' own rounding */
                w->T[c] += TAIL_SIGMAS * w->bsig[(size_t)c * BLK + s];
            break;
        }
        /* a hidden layer: z_e - z_b = W_e (h_e - h_b) - (W_b - W_e) h_b,
         * row by row, then in 2- and inf-norm for the next layer */
        rows_bound(L->rows, c->n2, c->n1, d2, di, moved ? c->c2 : NULL, c->c1, cb->c2,
                   cb->c1, hb2, w->hbni[(size_t)(l - 1) * BLK + s], w->D);
        double s2 = 0.0, sm = 0.0;
        for (int r = 0; r < L->rows; r++) {
            s2 += w->D[r] * w->D[r];
            sm = w->D[r] > sm ? w->D[r] : sm;
        }
        double nd2 = sqrt(s2) * (1.0 + 1e-12), ndi = sm;
        pr = pr * c->op + L->gam * (mn(c->n2max * in2, c->n1max * ini) + L->bmax);
        d2 = nd2;
        di = ndi;
        in2 = w->hbn2[(size_t)l * BLK + s] + d2;
        ini = w->hbni[(size_t)l * BLK + s] + di;
    }
    return separated(w->zb + s, n, w->T, P->nc, pred);
}


/* y (rows x ng, double) = bias + W x for a later layer, x float (cols x
 * ng): dense (AVX-512 or sgemm) or CSR. */
static void later_mul(const lane *w, const mlp_layer *L, const lat_pt *c,
                      const float *x, int ng, double *y, float *tmp)
{
    int fast = w->P->fast;
    if (c->wd)
        dwf_tk_dense(fast, c->wd, L->rows, L->cols, x, ng, L->bias, y, tmp);
    else if (c->wc.ptr)
        dwf_tk_csr(fast, c->wc.ptr, c->wc.idx, c->wc.val, c->n_out, x, ng, 1, c->bias_c, y);
    else
        dwf_tk_csr(fast, c->w.ptr, c->w.idx, c->w.val, L->rows, x, ng, 1, L->bias, y);
}

/* Later layers of the gathered samples gi[0..ng) at model e, in float
 * (their rounding counted like the reference's, twice: sigma of the
 * reference and of this computation, the latter kept with the base);
 * new bases; counts or near-tie entries. */
static void recompute(lane *w, int e, int ng, int n, int ds, int st)
{
    /* model 0 of a block starting from the caller's outputs: the later
     * layers' too, where given (the same products in another float order,
     * within the rounding accounted for) */
    const float *const *gl = e == 0 && ng == n && w->P->gl[ds][1] ? w->P->gl[ds] : NULL;
    const plan *P = w->P;
    const pt_plan *pp = &P->pt[e];
    int nd = P->nd, nc = P->nc, relu = P->L[0].relu;
    const double u = ldexp(1.0, -24);
    float *hf = w->hf;
    for (int g = 0; g < ng; g++) {
        w->gn2[g] = w->gni[g] = 0.0;
        w->gpm[g] = 0.0;
        w->gpr[g] = sigma0(P, pp, w->x2[w->gi[g]], w->xi[w->gi[g]]);
    }
    if (ng == n) { /* everyone (gi[g] = g): rebase in one pass */
        dwf_tk_h0_pass(P->fast, w->z0, w->hb0, pp->live, pp->n_live, n, relu, 1, w->d2, w->di,
                w->h2, w->hi, hf);
        for (int g = 0; g < n; g++) {
            w->gn2[g] = w->h2[g] * w->h2[g]; /* squared, as below */
            w->gni[g] = w->hi[g];
        }
    } else {
        dwf_tk_gather_h0(P->fast, w->z0, w->hb0, pp->live, pp->n_live, n, relu, w->gi, ng, hf, w->gn2,
                  w->gni);
    }
    for (int g = 0; g < ng; g++) {
        int s = w->gi[g];
        w->gn2[g] = sqrt(w->gn2[g]);
        w->hbn2[s] = w->gn2[g];
        w->hbni[s] = w->gni[g];
        w->bk[s] = e;
        if (ng < n) { /* no change since this base; norms for l0_same */
            w->d2[s] = w->di[s] = 0.0;
            w->h2[s] = w->gn2[g];
            w->hi[s] = w->gni[g];
        }
    }
    double *y = w->g0;
    for (int l = 1; l < nd; l++) {
        const mlp_layer *L = &P->L[l];
        const lat_pt *c = &pp->lat[l - 1];
        if (gl) {
            dwf_tk_given(gl[l] + (size_t)st * L->rows, L->rows, n, y, w->of);
            w->given += l == 1 ? n : 0;
        }
        else
            later_mul(w, L, c, hf, ng, y, w->of);
        /* the float input adds u |h| per term: gam + u for this side */
        double gm = L->gam + u;
        if (l == nd - 1)
            break;
        for (int g = 0; g < ng; g++) {
            double a = mn(c->n2max * w->gn2[g], c->n1max * w->gni[g]) + L->bmax;
            w->gpr[g] = w->gpr[g] * c->op + L->gam * a;
            w->gpm[g] = w->gpm[g] * c->op + gm * a;
            w->gn2[g] = w->gni[g] = 0.0;
        }
        dwf_tk_act_rows(P->fast, y, NULL, c->n_out, ng, L->relu, hf, w->gn2, w->gni);
        for (int g = 0; g < ng; g++) {
            w->gn2[g] = sqrt(w->gn2[g]);
            w->hbn2[(size_t)l * BLK + w->gi[g]] = w->gn2[g];
            w->hbni[(size_t)l * BLK + w->gi[g]] = w->gni[g];
        }
    }
    /* the logits: sigma per class (reference + this), the base's share,
     * then the near-tie test, all across the samples */
    const mlp_layer *L = &P->L[nd - 1];
    const lat_pt *lp = &pp->lat[nd - 2];
    double gm = L->gam + u, *T = w->tv;
    for (int c = 0; c < nc; c++) {
        double n2 = lp->n2[c], n1 = lp->n1[c], b = L->bias ? fabs((double)L->bias[c]) : 0.0;
        double *Tc = T + (size_t)c * ng, *bs = w->bsig + (size_t)c * BLK;
        const double *yc = y + (size_t)c * ng;
        double *zc = w->zb + (size_t)c * n;
        for (int g = 0; g < ng; g++) {
            double own = mn(n2 * w->gn2[g], n1 * w->gni[g]) + b;
            double sm = gm * own + n2 * w->gpm[g];
            bs[w->gi[g]] = sm * (1.0 + 1e-6);
            Tc[g] = TAIL_SIGMAS * (L->gam * own + n2 * w->gpr[g] + sm) * (1.0 + 1e-6) + 1e-300;
            zc[w->gi[g]] = yc[g];
        }
    }
    for (int g = 0; g < ng; g++) {
        w->am[g] = 0;
        w->za[g] = y[g];
        w->ta[g] = T[g];
    }
    for (int c = 1; c < nc; c++) {
        const double *yc = y + (size_t)c * ng, *Tc = T + (size_t)c * ng;
        for (int g = 0; g < ng; g++)
            if (yc[g] > w->za[g]) {
                w->am[g] = c;
                w->za[g] = yc[g];
                w->ta[g] = Tc[g];
            }
    }
    for (int g = 0; g < ng; g++) /* lo: the smallest the top logit can be */
        w->ta[g] = w->za[g] - w->ta[g];
    uint8_t *ok = (uint8_t *)w->gn2; /* reuse: the norms are done */
    for (int g = 0; g < ng; g++)
        ok[g] = w->ta[g] == w->ta[g];
    for (int c = 0; c < nc; c++) {
        const double *yc = y + (size_t)c * ng, *Tc = T + (size_t)c * ng;
        for (int g = 0; g < ng; g++)
            if (c != w->am[g] && !(w->ta[g] > yc[g] + Tc[g]))
                ok[g] = 0;
    }
    for (int g = 0; g < ng; g++) {
        int s = w->gi[g];
        if (ok[g])
            w->correct[e * 2 + ds] += w->am[g] == w->ys[s];
        else
            add_fb(w, e, ds, st + s);
    }
    w->recomputed += ng;
}

/* A one-layer model: its logits are layer 0's. */
static void single_layer(lane *w, int e, int n, int ds, int st)
{
    const plan *P = w->P;
    const pt_plan *pp = &P->pt[e];
    const mlp_layer *L = &P->L[0];
    for (int s = 0; s < n; s++) {
        for (int c = 0; c < P->nc; c++) {
            double a = mn(pp->n2[c] * w->x2[s], pp->n1[c] * w->xi[s]) +
                       mn(pp->m2[c] * w->x2[s], pp->m1[c] * w->xi[s]);
            double b = L->bias ? fabs((double)L->bias[c]) : 0.0;
            w->T[c] = TAIL_SIGMAS * L->gam * (a + 2.0 * b) * (1.0 + 1e-6) + 1e-300;
        }
        int pred;
        if (separated(w->z0 + s, n, w->T, P->nc, &pred))
            w->correct[e * 2 + ds] += pred == w->ys[s];
        else
            add_fb(w, e, ds, st + s);
    }
}

/* After an increment of the rows pp->touch (old values in zold): per
 * sample, the 2- and inf-norm of the change of those rows' outputs are
 * added to the change since the base (d2, di) and to the bounds of the
 * output norms (h2, hi). */
static void grow_delta(lane *w, const pt_plan *pp, int n)
{
    int relu = w->P->L[0].relu;
    double *s2 = w->gn2, *sm = w->gni; /* scratch */
    dwf_tk_grow(w->P->fast, w->z0, w->zold, pp->touch, pp->n_touch, n, relu, s2, sm);
    for (int j = 0; j < n; j++) {
        double d = sqrt(s2[j]) * (1.0 + 1e-12);
        w->d2[j] += d;
        w->h2[j] += d;
        w->di[j] += sm[j];
        w->hi[j] += sm[j];
    }
}

/* The change bound of a logit since the sample's base (last layer, row by
 * row: its row's norms n2c / n1c times the input change d2 / di, plus the
 * weights removed from the row since the base, r2 = their squares, r1 =
 * their magnitudes, times the base input hb2 / hbi) plus the rounding
 * margins (own_b = |bias|, in2 / ini the input's norms, pr the sigma chain,
 * bsig the base's). Non-decreasing in every argument. */
static inline double logit_bound(double n2c, double n1c, double r2, double r1, double own_b,
                                 double gam, double d2, double di, double in2, double ini,
                                 double pr, double hb2, double hbi, double bsig)
{
    double a = n2c * d2, b = n1c * di;
    double dch = a < b ? a : b;
    a = sqrt(r2) * hb2;
    b = r1 * hbi;
    dch += a < b ? a : b;
    a = n2c * in2;
    b = n1c * ini;
    double sg = gam * ((a < b ? a : b) + own_b) + n2c * pr;
    return dch + TAIL_SIGMAS * (sg * (1.0 + 1e-6) + bsig) + 1e-300;
}

/* r2 and r1 of logit_bound for class c of a sample whose base removed
 * b2c / b1c of what the model removed, c2e / c1e (since model 0). */
static inline void removed_since(double c2e, double c1e, double b2c, double b1c, double *r2,
                                 double *r1)
{
    double a = c2e - b2c, b = c1e - b1c;
    *r2 = (a > 0.0 ? a : 0.0) + 1e-12 * c2e;
    *r1 = (b > 0.0 ? b : 0.0) + 1e-12 * c1e;
}

/* T[c][s] = logit_bound of class c for every sample. */
DWF_VEC THR_NOERRNO static void logit_bounds(
    int n, double n2c, double n1c, double c2e, double c1e, double own_b, double gam,
    int c, const double *restrict d2, const double *restrict di,
    const double *restrict in2, const double *restrict ini, const double *restrict pr,
    const double *const *restrict b2, const double *const *restrict b1,
    const double *restrict hb2, const double *restrict hbi,
    const double *restrict bsig, double *restrict T)
{
    for (int s = 0; s < n; s++) {
        double r2, r1;
        removed_since(c2e, c1e, b2[s][c], b1[s][c], &r2, &r1);
        T[s] = logit_bound(n2c, n1c, r2, r1, own_b, gam, d2[s], di[s], in2[s], ini[s], pr[s],
                           hb2[s], hbi[s], bsig[s]);
    }
}

static void separation_test(lane *w, const lat_pt *lp, const mlp_layer *L, int n,
                            const double *d2, const double *di, const double *in2,
                            const double *ini, const double *pr, const double *const *b2,
                            const double *const *b1, const double *hb2, const double *hbi,
                            uint8_t *ok);

/* The first (cheap) certification of every sample of the block at model
 * e, across the samples; certified ones are counted, the others listed in
 * gi (after the row-by-row certification, when the model has it).
 * Returns their number. */
static int certify_block(lane *w, const pt_plan *pp, int e, int n, int ds, int fine,
                         int *tries, int *wins)
{
    const plan *P = w->P;
    int nd = P->nd, nc = P->nc;
    double *d2 = w->cv, *di = d2 + BLK, *in2 = di + BLK, *ini = in2 + BLK, *pr = ini + BLK;
    for (int s = 0; s < n; s++) {
        d2[s] = w->d2[s];
        di[s] = w->di[s];
        in2[s] = w->h2[s];
        ini[s] = w->hi[s];
        pr[s] = sigma0(P, pp, w->x2[s], w->xi[s]);
    }
    /* hidden later layers: z_e - z_b = W_e (h_e - h_b) - (W_b - W_e) h_b in
     * 2-norm, through rigorous bounds of ||W_e||_2 and ||W_b - W_e||_F (the
     * weights removed since b: their squares sum to f2rem_e - f2rem_b) */
    for (int l = 1; l < nd - 1; l++) {
        const lat_pt *c = &pp->lat[l - 1];
        const mlp_layer *L = &P->L[l];
        for (int s = 0; s < n; s++) {
            const lat_pt *cb = &P->pt[w->bk[s]].lat[l - 1];
            int moved = c->n_rem != cb->n_rem;
            double rem = moved ? sqrt(mx(c->f2rem - cb->f2rem, 0.0) + 1e-12 * c->f2rem) : 0.0;
            double hb2 = w->hbn2[(size_t)(l - 1) * BLK + s];
            double nd2 = c->op_rig * d2[s] + rem * hb2;
            double ndi = mn(nd2, c->n2max * d2[s] + (moved ? sqrt(c->r2max) : 0.0) * hb2);
            pr[s] = pr[s] * c->op + L->gam * (mn(c->n2max * in2[s], c->n1max * ini[s]) + L->bmax);
            d2[s] = nd2;
            di[s] = ndi;
            in2[s] = w->hbn2[(size_t)l * BLK + s] + nd2;
            ini[s] = w->hbni[(size_t)l * BLK + s] + ndi;
        }
    }
    const mlp_layer *L = &P->L[nd - 1];
    const lat_pt *lp = &pp->lat[nd - 2];
    const double **b2 = w->bp, **b1 = w->bp + BLK;
    for (int s = 0; s < n; s++) {
        b2[s] = P->pt[w->bk[s]].lat[nd - 2].c2;
        b1[s] = P->pt[w->bk[s]].lat[nd - 2].c1;
    }
    const double *hb2 = w->hbn2 + (size_t)(nd - 2) * BLK, *hbi = w->hbni + (size_t)(nd - 2) * BLK;
    uint8_t *ok = (uint8_t *)w->gpm; /* scratch */
    /* first one bound for all classes (the largest row norms, removals and
     * base sigma of any class): a top logit above the runner-up by twice
     * that is certified; the others (usually few) get the bound class by
     * class, one by one, or, when many, across the block below */
    int n_left = 0;
    for (int s = 0; s < n; s++) {
        int am = 0;
        double z1 = w->zb[s], z2 = -INFINITY, bs = w->bsig[s];
        for (int c = 1; c < nc; c++) {
            double z = w->zb[(size_t)c * n + s];
            bs = mx(bs, w->bsig[(size_t)c * BLK + s]);
            if (z > z1) {
                z2 = z1;
                z1 = z;
                am = c;
            } else {
                z2 = mx(z2, z);
            }
        }
        double tm = logit_bound(lp->n2max, lp->n1max, lp->r2max * (1.0 + 2e-12),
                                lp->r1max * (1.0 + 2e-12), L->bmax, L->gam, d2[s], di[s],
                                in2[s], ini[s], pr[s], hb2[s], hbi[s], bs);
        w->am[s] = am;
        ok[s] = z1 - tm > z2 + tm && isfinite(w->d2[s]) && isfinite(w->h2[s]);
        n_left += !ok[s];
    }
    if (n_left > 0 && 4 * n_left <= n) {
        for (int s = 0; s < n; s++) {
            if (ok[s])
                continue;
            double *t = w->T; /* nc <= max_rows */
            int am = 0;
            for (int c = 0; c < nc; c++) {
                double r2, r1;
                removed_since(lp->c2[c], lp->c1[c], b2[s][c], b1[s][c], &r2, &r1);
                t[c] = logit_bound(lp->n2[c], lp->n1[c], r2, r1,
                                   L->bias ? fabs((double)L->bias[c]) : 0.0, L->gam, d2[s],
                                   di[s], in2[s], ini[s], pr[s], hb2[s], hbi[s],
                                   w->bsig[(size_t)c * BLK + s]);
                if (c > 0 && w->zb[(size_t)c * n + s] > w->zb[(size_t)am * n + s])
                    am = c;
            }
            double lo = w->zb[(size_t)am * n + s] - t[am];
            int good = lo == lo && isfinite(w->d2[s]) && isfinite(w->h2[s]);
            for (int c = 0; c < nc && good; c++)
                if (c != am && !(lo > w->zb[(size_t)c * n + s] + t[c]))
                    good = 0;
            w->am[s] = am;
            ok[s] = (uint8_t)good;
        }
        n_left = 0;
    }
    if (n_left > 0)
        separation_test(w, lp, L, n, d2, di, in2, ini, pr, b2, b1, hb2, hbi, ok);
    int ng = 0;
    *tries = *wins = 0;
    for (int s = 0; s < n; s++) {
        int pred = w->am[s], won = 0;
        if (!ok[s] && fine) {
            won = certify(w, pp, s, n, &pred);
            ++*tries;
            *wins += won;
        }
        if (ok[s] || won)
            w->correct[e * 2 + ds] += pred == w->ys[s];
        else
            w->gi[ng++] = s;
    }
    return ng;
}

/* The class-by-class test of certify_block across the whole block (the
 * samples whose quick test passed keep ok = 1: the full test agrees). */
static void separation_test(lane *w, const lat_pt *lp, const mlp_layer *L, int n,
                            const double *d2, const double *di, const double *in2,
                            const double *ini, const double *pr, const double *const *b2,
                            const double *const *b1, const double *hb2, const double *hbi,
                            uint8_t *ok)
{
    int nc = w->P->nc;
    double *T = w->tv;
    for (int c = 0; c < nc; c++)
        logit_bounds(n, lp->n2[c], lp->n1[c], lp->c2[c], lp->c1[c],
                     L->bias ? fabs((double)L->bias[c]) : 0.0, L->gam, c, d2, di, in2, ini,
                     pr, b2, b1, hb2, hbi, w->bsig + (size_t)c * BLK, T + (size_t)c * BLK);
    /* the separation test across the samples */
    for (int s = 0; s < n; s++) {
        w->am[s] = 0;
        w->za[s] = w->zb[s];
        w->ta[s] = T[s];
    }
    for (int c = 1; c < nc; c++) {
        const double *zc = w->zb + (size_t)c * n, *Tc = T + (size_t)c * BLK;
        for (int s = 0; s < n; s++)
            if (zc[s] > w->za[s]) {
                w->am[s] = c;
                w->za[s] = zc[s];
                w->ta[s] = Tc[s];
            }
    }
    for (int s = 0; s < n; s++) {
        if (ok[s])
            continue;
        w->ta[s] = w->za[s] - w->ta[s];
        ok[s] = w->ta[s] == w->ta[s] && isfinite(w->d2[s]) && isfinite(w->h2[s]);
        for (int c = 0; c < nc && ok[s]; c++)
            if (c != w->am[s] && !(w->ta[s] > w->zb[(size_t)c * n + s] + T[(size_t)c * BLK + s]))
                ok[s] = 0;
    }
}

/* z0 (set: = bias + m x, else -= m x) of a layer-0 matrix m over the block. */
static void l0_csr(const lane *w, const mat *m, int set, double *z, int n)
{
    const mlp_layer *L = &w->P->L[0];
    dwf_tk_csr_wide(w->P->fast, m->ptr, m->idx, m->val, L->rows, L->cols, w->xf, n, set,
                    set ? L->bias : NULL, z, w->tmp, w->cur);
}

/* Batch size and position of sample idx in dwf_smodel_evaluate(d). */
static void ref_slot(const dwf_dataset *d, int idx, int *size, int *pos)
{
    int B = d->n < REF_BATCH ? d->n : REF_BATCH;
    int st = idx / B * B;
    *size = d->n - st < B ? d->n - st : B;
    *pos = idx - st;
}

/* Model e of the exact end on the block: the reference's own products,
 * layer by layer (dwf_csr_matmul: the same bits for any batch where
 * dwf_smodel_batch_invariant), and its argmax; only a sample the reference
 * runs in a batch of one (the last of a data set of 256 k + 1) is left to
 * it. */
static void exact_block(lane *w, int e, int n, int ds, int st)
{
    const plan *P = w->P;
    const ex_model *X = &P->ex[e - P->ex_from];
    const float *cur = w->xf;
    float *buf[2] = {w->hf, w->of};
    for (int l = 0; l < P->nd; l++) {
        float *out = buf[l & 1];
        dwf_csr_matmul(&X->w[l], cur, n, X->b[l], out);
        if (P->L[l].relu)
            dwf_relu_forward(out, (int64_t)X->w[l].rows * n, out);
        cur = out;
    }
    for (int s = 0; s < n; s++) {
        int size, pos;
        ref_slot(P->data[ds], st + s, &size, &pos);
        if (size < 2) {
            add_fb(w, e, ds, st + s);
            continue;
        }
        w->correct[e * 2 + ds] += argmax_col(cur, P->nc, n, s) == w->ys[s];
    }
    w->exact += n;
}

static void run_block(lane *w, int ds, int st, int n, int n_use)
{
    const plan *P = w->P;
    const mlp_layer *L0 = &P->L[0];
    int R0 = L0->rows, C0 = L0->cols;
    dwf_dataset_range(P->data[ds], &P->s->norm, st, n, w->xs, w->ys);
    dwf_transpose(w->xs, n, C0, w->xf);
    dwf_tk_input_norms(P->fast, w->xf, C0, n, w->x2, w->xi);
    int last_ng = 0, tries = 0, wins = 0;
    for (int e = 0; e < n_use; e++) {
        const pt_plan *pp = &P->pt[e];
        int touched = 0;
        if (e >= P->ex_from) {
            exact_block(w, e, n, ds, st);
            continue;
        }
        switch (e == 0 && P->given[ds] ? L0_GIVEN : pp->mode) {
        case L0_GIVEN:
            dwf_tk_given(P->given[ds] + (size_t)st * R0, R0, n, w->z0, w->tmp);
            break;
        case L0_DENSE:
            dwf_tk_dense(P->fast, pp->wd, R0, C0, w->xf, n, L0->bias, w->z0, w->tmp);
            break;
        case L0_CSR:
            l0_csr(w, &pp->full, 1, w->z0, n);
            break;
        default:
            if (e > 0 && P->nd > 1 && 4 * pp->n_touch < pp->n_live) {
                /* few rows change: the change since the base grows by at
                 * most the change of these rows (triangle inequality) */
                for (int t = 0; t < pp->n_touch; t++)
                    memcpy(w->zold + (size_t)t * n, w->z0 + (size_t)pp->touch[t] * n,
                           (size_t)n * sizeof(double));
                l0_csr(w, &pp->rem, 0, w->z0, n);
                grow_delta(w, pp, n);
                touched = 1;
            } else if (!pp->l0_same) {
                l0_csr(w, &pp->rem, 0, w->z0, n);
            }
            break;
        }
        if (P->nd == 1) {
            single_layer(w, e, n, ds, st);
            continue;
        }
        int ng = 0;
        /* after a model that most of the block had to be recomputed for
         * (the sparse end of the curve), or where layer 0 is rebuilt (a
         * big change), certifying rarely pays */
        if (e == 0 || 2 * last_ng > n || pp->mode == L0_CSR || pp->mode == L0_DENSE) {
            for (int s = 0; s < n; s++)
                w->gi[ng++] = s;
        } else {
            /* layer 0 unchanged, or grown above: the changes since the
             * base stand (recomputed samples have theirs at zero) */
            if (!pp->l0_same && !touched)
                dwf_tk_h0_pass(P->fast, w->z0, w->hb0, pp->live, pp->n_live, n, L0->relu, 0,
                        w->d2, w->di, w->h2, w->hi, NULL);
            /* the row-by-row stage, unless it mostly failed last time */
            int fine = pp->fine && !(tries >= 16 && 8 * wins < tries);
            ng = certify_block(w, pp, e, n, ds, fine, &tries, &wins);
        }
        if (ng > 0)
            recompute(w, e, ng, n, ds, st);
        last_ng = e == 0 ? 0 : ng;
    }
}

typedef struct team {
    const plan *P;
    lane *lanes;
    int n;
    int b0, b1;           /* the blocks of this phase */
    atomic_int next;      /* the next block to claim */
    int n_use;            /* models of this phase */
    const grid *g;
    const fb_ent *all;    /* near ties, sorted by model */
    const int *f0, *f1;   /* per model: its range in all */
    int64_t ties;         /* near ties sent to the reference */
} team;

static void lane_run(void *arg, int id)
{
    team *t = arg;
    lane *w = &t->lanes[id];
    /* blocks are claimed, not dealt: the VM's cores differ in speed from
     * one moment to the next. A block's results do not depend on the lane
     * that runs it (counts are summed, near ties sorted). */
    for (;;) {
        int b = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (b >= t->b1)
            break;
        run_block(w, t->P->blk[b][0], t->P->blk[b][1], t->P->blk[b][2], t->n_use);
    }
}

/* ---- near ties: the reference forward ------------------------------------- */

static int cmp_fb(const void *a, const void *b)
{
    const fb_ent *x = a, *y = b;
    if (x->e != y->e)
        return (x->e > y->e) - (x->e < y->e);
    /* by (batch size, position) later; first by data set and index */
    if (x->ds != y->ds)
        return (x->ds > y->ds) - (x->ds < y->ds);
    return (x->idx > y->idx) - (x->idx < y->idx);
}


/* Correct predictions of the reference for entries f[0..n) of one model m
 * (per data set into ok[2]). Entries sharing a batch size share a forward
 * when their positions differ; the other positions hold zeros (a sample's
 * result does not depend on them). */
static int ref_eval(lane *rc, const dwf_smodel *m, const fb_ent *f, int n,
                    int64_t *ok, dwf_err *err)
{
    const dwf_dataset *const *data = rc->P->data;
    const dwf_arch *a = &m->arch;
    int dim = a->in_c * a->in_h * a->in_w, nc = a->n_classes;
    dwf_sws *ws = NULL;
    int r = dwf_sws_create(m, REF_BATCH, &ws, err);
    if (r)
        return r;
    int *done = calloc((size_t)(n > 0 ? n : 1), sizeof *done);
    uint8_t *used = malloc(REF_BATCH);
    float *rx = malloc((size_t)REF_BATCH * dim * sizeof *rx);
    float *rz = malloc((size_t)REF_BATCH * nc * sizeof *rz);
    if (!done || !used || !rx || !rz) {
        r = dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
        goto out;
    }
    /* where batches of two or more give every sample the same logits
     * (dwf_smodel_batch_invariant), the entries share batches freely, a
     * lone one padded to two; only those from a batch of one run alone */
    int inv = dwf_smodel_batch_invariant();
    for (int left = n; left > 0;) {
        /* one batch: the size of the first pending entry, free positions */
        int size = -1, pos, fill = 0;
        memset(used, 0, REF_BATCH);
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            int sz;
            ref_slot(data[f[i].ds], f[i].idx, &sz, &pos);
            if (inv && sz > 1) {
                if (fill == REF_BATCH)
                    continue; /* full: the next batch */
                sz = REF_BATCH;
                pos = fill;
            }
            if (size < 0) {
                size = sz;
                memset(rx, 0, (size_t)size * dim * sizeof(float));
            }
            if (sz != size || used[pos])
                continue;
            used[pos] = 1;
            fill++;
            done[i] = 1 + pos;  /* pending in this batch */
            dwf_dataset_range(data[f[i].ds], &m->norm, f[i].idx, 1,
                              rx + (size_t)pos * dim, NULL);
        }
        if (inv && size == REF_BATCH) /* the filled positions (and a zero) */
            size = fill > 1 ? fill : 2;
        r = dwf_smodel_forward(m, ws, rx, size, rz, err);
        if (r)
            goto out;
        rc->ref_batch += size;
        for (int i = 0; i < n; i++) {
            if (done[i] <= 0)
                continue;
            int p = done[i] - 1;
            int pred = argmax_f(rz + (size_t)p * nc, nc);
            ok[f[i].ds] += pred == data[f[i].ds]->y[f[i].idx];
            done[i] = -1;
            left--;
        }
    }
out:
    free(done);
    free(used);
    free(rx);
    free(rz);
    dwf_sws_free(ws);
    return r;
}


/* Near ties f[0..n) of model e, none from a reference batch of one, where
 * the kernels are batch-invariant: the reference's own products layer by
 * layer - model 0's dense copy of a layer with the weights below the
 * threshold cut (dwf_dense_matmul_cut), else the layer's CSR at the point
 * (dwf_csr_matmul) - in batches of up to BLK; correct ones into ok[2]. */
static int ref_mlp(lane *w, const grid *g, int e, const fb_ent *f, int n, int64_t *ok)
{
    const plan *P = w->P;
    const dwf_smodel *s = P->s;
    int p = P->pt[e].p, nd = P->nd, nc = P->nc, rc = 0;
    float cut = g->t[p];
    dwf_csr c[DWF_MAX_LAYERS];
    arena_reset(&w->mem);
    for (int l = 0; l < nd && !rc; l++) {
        const dwf_csr *src = &s->w[P->L[l].li];
        if (!s->dense[P->L[l].li])
            rc = csr_pick(src, g->q[P->L[l].li], p, NULL, src->rows, NULL, src->cols, &c[l],
                          &w->mem);
    }
    for (int i0 = 0; i0 < n && !rc; i0 += BLK) {
        int nb = n - i0 < BLK ? n - i0 : BLK;
        for (int i = 0; i < nb; i++)
            dwf_dataset_range(P->data[f[i0 + i].ds], &s->norm, f[i0 + i].idx, 1,
                              w->xs + (size_t)i * P->dim, NULL);
        dwf_transpose(w->xs, nb, P->dim, w->xf);
        const float *cur = w->xf;
        float *buf[2] = {w->hf, w->of};
        for (int l = 0; l < nd; l++) {
            const mlp_layer *L = &P->L[l];
            float *out = buf[l & 1];
            if (s->dense[L->li])
                dwf_dense_matmul_cut(s->dense[L->li], L->rows, L->cols, cut, cur, nb, L->bias,
                                     out);
            else
                dwf_csr_matmul(&c[l], cur, nb, L->bias, out);
            if (L->relu)
                dwf_relu_forward(out, (int64_t)L->rows * nb, out);
            cur = out;
        }
        for (int i = 0; i < nb; i++) {
            const fb_ent *fe = &f[i0 + i];
            ok[fe->ds] += argmax_col(cur, nc, nb, i) == P->data[fe->ds]->y[fe->idx];
        }
        w->ref_batch += nb;
    }
    return rc;
}

/* Lane id evaluates the near ties of models id, id + n, ... (< n_use). */
static void ref_run(void *arg, int id)
{
    team *t = arg;
    lane *w = &t->lanes[id];
    for (int e = id; e < t->n_use && !w->rc; e += t->n) {
        if (t->f1[e] == t->f0[e])
            continue;
        dwf_smodel m;
        const dwf_smodel *use;
        /* batch-invariant kernels and no entry from a batch of one: the
         * reference's products alone give its logits */
        int lean = dwf_smodel_batch_invariant();
        for (int i = t->f0[e]; i < t->f1[e] && lean; i++) {
            int size, pos;
            ref_slot(t->P->data[t->all[i].ds], t->all[i].idx, &size, &pos);
            lean = size > 1;
        }
        if (lean) {
            if (ref_mlp(w, t->g, e, t->all + t->f0[e], t->f1[e] - t->f0[e],
                        w->correct + (size_t)e * 2))
                w->rc = dwf_errorf(&w->err, DWF_ENOMEM, "threshold curve: out of memory");
            continue;
        }
        w->rc = point_model(t->P->s, t->g, t->P->pt[e].p, &m, &use, &w->err);
        if (!w->rc)
            w->rc = ref_eval(w, use, t->all + t->f0[e], t->f1[e] - t->f0[e],
                             w->correct + (size_t)e * 2, &w->err);
        if (e > 0 && use)
            dwf_smodel_free(&m);
    }
}

/* ---- the two paths --------------------------------------------------------- */

static int check_data(const dwf_smodel *s, const dwf_dataset *d, dwf_err *err)
{
    const dwf_arch *a = &s->arch;
    int dim = a->in_c * a->in_h * a->in_w;
    if (!has_data(d))
        return 0;
    if (d->dim != dim)
        return dwf_errorf(err, DWF_EINVAL, "data set has %d features, the "
                          "model wants %d", d->dim, dim);
    return dwf_dataset_check_labels(d, a->n_classes, "data set", err);
}

double dwf_thresh_chance(const dwf_dataset *d, int n_classes, double margin)
{
    double c = 1.0 / (n_classes > 1 ? n_classes : 2);
    if (d && d->n > 0 && d->y && n_classes > 0) {
        int64_t *cnt = calloc((size_t)n_classes, sizeof *cnt), top = 0;
        if (cnt) {
            for (int i = 0; i < d->n; i++)
                if (d->y[i] >= 0 && d->y[i] < n_classes && ++cnt[d->y[i]] > top)
                    top = cnt[d->y[i]];
            free(cnt);
        }
        c = mx(c, (double)top / d->n);
    }
    return c + margin;
}

/* Stopping rule on the points filled so far: the number of points kept. */
static int stop_after(const dwf_thresh_point *pt, int on_val, int on_test,
                      double chance)
{
    double acc = on_val ? pt->val_acc : pt->test_acc;
    return pt->nonzero == 0 || ((on_val || on_test) && acc <= chance);
}

/* Every distinct model evaluated with dwf_smodel_evaluate(). */
/* The threads of a from-scratch evaluation: each evaluates a run of whole
 * REF_BATCH batches of each data set (the batches dwf_smodel_evaluate
 * makes of the whole set), so the counts are the whole set's. */
typedef struct scratch_job {
    const dwf_smodel *m;
    int n;
    dwf_dataset view[DWF_MAX_THREADS][2];
    int64_t ok[DWF_MAX_THREADS][2];
    int rc[DWF_MAX_THREADS];
    dwf_err err[DWF_MAX_THREADS];
    /* per thread, kept over the models (fresh buffers cost page faults):
     * the reference's buffers, a batch and its labels and logits */
    dwf_sws *ws[DWF_MAX_THREADS];
    float *x[DWF_MAX_THREADS], *z[DWF_MAX_THREADS];
    int32_t *y[DWF_MAX_THREADS];
} scratch_job;

/* Thread id's views through model m as dwf_smodel_evaluate() runs them:
 * batches of REF_BATCH from the view's start (a multiple of it), argmax. */
static void scratch_run(void *arg, int id)
{
    scratch_job *j = arg;
    const dwf_smodel *m = j->m;
    int nc = m->arch.n_classes;
    for (int ds = 0; ds < 2 && !j->rc[id]; ds++) {
        const dwf_dataset *v = &j->view[id][ds];
        j->ok[id][ds] = 0;
        for (int st = 0; st < v->n && !j->rc[id]; st += REF_BATCH) {
            int b = v->n - st < REF_BATCH ? v->n - st : REF_BATCH;
            dwf_dataset_range(v, &m->norm, st, b, j->x[id], j->y[id]);
            j->rc[id] = dwf_smodel_forward(m, j->ws[id], j->x[id], b, j->z[id], &j->err[id]);
            for (int i = 0; i < b && !j->rc[id]; i++)
                j->ok[id][ds] += argmax_f(j->z[id] + (size_t)i * nc, nc) == j->y[id][i];
        }
    }
}

static int curve_from_scratch(const dwf_smodel *s, const dwf_dataset *data[2],
                              const grid *g, double chance, int threads,
                              dwf_workers *team_wk, dwf_thresh_curve *out, dwf_err *err)
{
    int on_val = has_data(data[0]), on_test = !on_val && has_data(data[1]);
    scratch_job j;
    memset(&j, 0, sizeof j);
    j.n = threads;
    for (int ds = 0; ds < 2; ds++) {
        int n = has_data(data[ds]) ? data[ds]->n : 0, nb = (n + REF_BATCH - 1) / REF_BATCH;
        for (int i = 0; i < j.n; i++) {
            dwf_dataset *v = &j.view[i][ds];
            int b0 = (int)((int64_t)nb * i / j.n), b1 = (int)((int64_t)nb * (i + 1) / j.n);
            int st = b0 * REF_BATCH, en = b1 * REF_BATCH < n ? b1 * REF_BATCH : n;
            if (en <= st)
                continue;
            *v = *data[ds];
            v->n = en - st;
            v->y += st;
            if (v->x_u8)
                v->x_u8 += (size_t)st * v->dim;
            if (v->x_f32)
                v->x_f32 += (size_t)st * v->dim;
        }
    }
    dwf_workers *wk = NULL;
    int own = j.n > 1 && !team_wk;
    int rc = own ? dwf_workers_create(j.n, &wk, err) : 0;
    if (!own)
        wk = team_wk;
    int dim = s->arch.in_c * s->arch.in_h * s->arch.in_w;
    for (int i = 0; i < j.n && !rc; i++) {
        rc = dwf_sws_create(s, REF_BATCH, &j.ws[i], err);
        j.x[i] = malloc((size_t)REF_BATCH * dim * sizeof(float));
        j.z[i] = malloc((size_t)REF_BATCH * s->arch.n_classes * sizeof(float));
        j.y[i] = malloc((size_t)REF_BATCH * sizeof(int32_t));
        if (!rc && (!j.x[i] || !j.z[i] || !j.y[i]))
            rc = dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
    }
    for (int p = 0; p < g->n && !rc; p++) {
        dwf_thresh_point *pt = &out->points[out->n];
        fill_point(s, g, p, pt);
        if (p > 0 && pt->nonzero == pt[-1].nonzero) {
            pt->val_acc = pt[-1].val_acc;
            pt->test_acc = pt[-1].test_acc;
        } else {
            dwf_smodel m;
            const dwf_smodel *use;
            rc = point_model(s, g, p, &m, &use, err);
            if (rc)
                break;
            j.m = use;
            if (wk)
                dwf_workers_run(wk, scratch_run, &j);
            else
                scratch_run(&j, 0);
            double *acc[2] = {&pt->val_acc, &pt->test_acc};
            for (int ds = 0; ds < 2; ds++) {
                int64_t ok = 0;
                for (int i = 0; i < j.n; i++)
                    ok += j.ok[i][ds];
                if (has_data(data[ds])) {
                    *acc[ds] = (double)ok / data[ds]->n;
                    out->stats.samples += data[ds]->n;
                }
            }
            for (int i = 0; i < j.n && !rc; i++)
                if (j.rc[i]) {
                    rc = j.rc[i];
                    *err = j.err[i];
                }
            if (p > 0)
                dwf_smodel_free(&m);
            if (rc)
                break;
            out->stats.models++;
        }
        out->n++;
        if (stop_after(pt, on_val, on_test, chance))
            break;
    }
    if (own)
        dwf_workers_free(wk);
    for (int i = 0; i < j.n; i++) {
        dwf_sws_free(j.ws[i]);
        free(j.x[i]);
        free(j.z[i]);
        free(j.y[i]);
    }
    return rc;
}

/* Runs fn on every lane of the team (with workers when there are more). */
static void team_run(dwf_workers *wk, dwf_work_fn fn, team *t)
{
    if (wk)
        dwf_workers_run(wk, fn, t);
    else
        fn(t, 0);
}

/* Allocates (and so first touches) lane id's buffers on its own thread
 * (lane_init; a lane left without its arena failed). */
static void lane_init_run(void *arg, int id)
{
    team *t = arg;
    lane_init(&t->lanes[id], t->P);
}

/* Lanes over the blocks of data set ds, through the first n_use models
 * (near ties accumulate in the lanes' lists). */
static int run_lanes(team *t, dwf_workers *wk, int ds, int n_use, dwf_err *err)
{
    const plan *P = t->P;
    t->b0 = 0;
    while (t->b0 < P->n_blk && P->blk[t->b0][0] != ds)
        t->b0++;
    t->b1 = t->b0;
    while (t->b1 < P->n_blk && P->blk[t->b1][0] == ds)
        t->b1++;
    t->n_use = n_use;
    atomic_init(&t->next, t->b0);
    team_run(wk, lane_run, t);
    for (int i = 0; i < t->n; i++)
        if (t->lanes[i].rc) {
            *err = t->lanes[i].err;
            return t->lanes[i].rc;
        }
    for (int i = 0; i < t->n; i++)
        if (t->lanes[i].failed)
            return dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
    return 0;
}

/* The near ties of the lanes with e < n_use[ds] and not done[e * 2 + ds],
 * sorted by model, into *out (ranges f0/f1 per model). */
static int collect(team *t, const int n_use[2], const uint8_t *done, fb_ent **out,
                   int *f0, int *f1)
{
    int n = 0;
    for (int i = 0; i < t->n; i++)
        n += t->lanes[i].n_fb;
    fb_ent *all = malloc((size_t)(n > 0 ? n : 1) * sizeof *all);
    if (!all)
        return DWF_ENOMEM;
    n = 0;
    for (int i = 0; i < t->n; i++)
        for (int k = 0; k < t->lanes[i].n_fb; k++) {
            fb_ent f = t->lanes[i].fb[k];
            if (f.e < n_use[f.ds] && !done[f.e * 2 + f.ds])
                all[n++] = f;
        }
    qsort(all, (size_t)n, sizeof *all, cmp_fb);
    for (int i = 0, e = 0; e < t->P->n_pt; e++) {
        f0[e] = i;
        while (i < n && all[i].e == e)
            i++;
        f1[e] = i;
    }
    *out = all;
    return 0;
}

/* Correct predictions of model e on data set ds (lanes plus reference). */
static int64_t count_ok(const team *t, int e, int ds)
{
    int64_t ok = 0;
    for (int i = 0; i < t->n; i++)
        ok += t->lanes[i].correct[(size_t)e * 2 + ds];
    return ok;
}

static int ref_phase(team *t, dwf_workers *wk, const int n_use[2],
                     const uint8_t *done, int only, dwf_err *err)
{
    fb_ent *all = NULL;
    int n = t->P->n_pt, rc = 0;
    int *f0 = calloc((size_t)n + 1, sizeof *f0), *f1 = calloc((size_t)n + 1, sizeof *f1);
    if (!f0 || !f1 || collect(t, n_use, done, &all, f0, f1)) {
        rc = dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
        goto out;
    }
    if (only >= 0) /* one model, on the calling thread */
        for (int e = 0; e < n; e++)
            if (e != only)
                f1[e] = f0[e];
    t->all = all;
    t->f0 = f0;
    t->f1 = f1;
    t->n_use = n_use[0] > n_use[1] ? n_use[0] : n_use[1];
    for (int e = 0; e < n; e++)
        t->ties += f1[e] - f0[e];
    if (only >= 0) {
        int save = t->n;
        t->n = 1;
        ref_run(t, 0);
        t->n = save;
    } else {
        team_run(wk, ref_run, t);
    }
    for (int i = 0; i < t->n && !rc; i++)
        if (t->lanes[i].rc) {
            *err = t->lanes[i].err;
            rc = t->lanes[i].rc;
        }
out:
    t->all = NULL;
    free(all);
    free(f0);
    free(f1);
    return rc;
}

static int curve_incremental(const dwf_smodel *s, plan *P, const grid *g,
                             const dwf_thresh_opts *o, double chance, dwf_workers *team_wk,
                             dwf_thresh_curve *out, dwf_err *err)
{
    int n_blk = 0;
    for (int ds = 0; ds < 2; ds++)
        if (P->data[ds])
            n_blk += (P->data[ds]->n + BLK - 1) / BLK;
    int nl = o->threads < n_blk ? o->threads : n_blk;
    if (nl < 1)
        nl = 1;
    lane lanes[DWF_MAX_THREADS];
    memset(lanes, 0, sizeof lanes);
    dwf_workers *wk = NULL;
    uint8_t *done = NULL;
    /* the caller's team when it has as many lanes */
    int own = nl > 1 && !(team_wk && dwf_workers_count(team_wk) == nl);
    int rc = own ? dwf_workers_create(nl, &wk, err) : 0;
    if (rc)
        return rc;
    if (!own && nl > 1)
        wk = team_wk;
    if ((rc = plan_build(P, g, wk, nl, err)))
        goto out;
    /* the caller's later-layer outputs, where model 0's layers are whole */
    for (int ds = 0; ds < 2; ds++) {
        int all = P->given[ds] && P->nd > 1;
        for (int l = 1; l < P->nd && all; l++)
            all = o->later[ds][l - 1] && P->pt[0].lat[l - 1].n_out == P->L[l].rows;
        for (int l = 1; l < P->nd; l++)
            P->gl[ds][l] = all ? o->later[ds][l - 1] : NULL;
    }
    P->fast = !o->portable && dwf_tk_avx512();
    done = calloc((size_t)P->n_pt * 2, 1);
    team t = {.P = P, .lanes = lanes, .n = nl, .g = g};
    /* each lane faults its own fresh buffers in, at the same time */
    team_run(wk, lane_init_run, &t);
    for (int i = 0; i < nl; i++)
        if (!lanes[i].arena || !done)
            rc = dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
    if (rc)
        goto out;
    /* the data set that decides the stop goes first, through every model;
     * its accuracy before the near ties lies in [ok, ok + ties] / n, which
     * mostly settles the stop without them (else the model's near ties go
     * through the reference right away); the other data set runs only
     * through the models up to the stop */
    int first = P->data[0] ? 0 : 1, n_use[2] = {0, 0}, n_pts = 0;
    if ((rc = run_lanes(&t, wk, first, P->n_pt, err)))
        goto out;
    int64_t *ties = calloc((size_t)P->n_pt, sizeof *ties);
    if (!ties) {
        rc = dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
        goto out;
    }
    for (int i = 0; i < nl; i++)
        for (int k = 0; k < lanes[i].n_fb; k++)
            ties[lanes[i].fb[k].e]++;
    double n1 = P->data[first]->n;
    for (int p = 0, e = -1; p < g->n && !rc; p++) {
        if (e + 1 < P->n_pt && P->pt[e + 1].p == p)
            e++;
        dwf_thresh_point pt;
        fill_point(s, g, p, &pt);
        n_pts = p + 1;
        n_use[first] = e + 1;
        if (pt.nonzero == 0)
            break;
        /* accuracies as the points will get them: count / n */
        double lo = (double)count_ok(&t, e, first) / n1;
        double hi = (double)(count_ok(&t, e, first) + ties[e]) / n1;
        if (!done[e * 2 + first] && hi > chance && !(lo > chance)) {
            int nu[2] = {P->n_pt, P->n_pt};
            rc = ref_phase(&t, wk, nu, done, e, err);
            done[e * 2 + first] = 1;
            lo = hi = (double)count_ok(&t, e, first) / n1;
        }
        if (!(hi > chance)) /* at or below chance: the last point */
            break;
    }
    free(ties);
    if (rc)
        goto out;
    if (first == 0 && P->data[1]) {
        n_use[1] = n_use[0];
        if ((rc = run_lanes(&t, wk, 1, n_use[1], err)))
            goto out;
    }
    if ((rc = ref_phase(&t, wk, n_use, done, -1, err)))
        goto out;
    for (int p = 0, e = -1; p < n_pts; p++) {
        if (e + 1 < P->n_pt && P->pt[e + 1].p == p)
            e++;
        dwf_thresh_point *pt = &out->points[out->n++];
        fill_point(s, g, p, pt);
        if (P->data[0])
            pt->val_acc = (double)count_ok(&t, e, 0) / P->data[0]->n;
        if (P->data[1])
            pt->test_acc = (double)count_ok(&t, e, 1) / P->data[1]->n;
    }
    out->stats.incremental = 1;
    out->stats.reference = t.ties;
    out->stats.models = P->n_pt;
    for (int ds = 0; ds < 2; ds++)
        if (P->data[ds])
            out->stats.samples += (int64_t)(ds == first ? P->n_pt : n_use[ds]) * P->data[ds]->n;
    for (int i = 0; i < nl; i++) {
        out->stats.recomputed += lanes[i].recomputed;
        out->stats.exact += lanes[i].exact;
        out->stats.given += lanes[i].given;
        out->stats.reference_batch += lanes[i].ref_batch;
    }
out:
    if (own)
        dwf_workers_free(wk);
    for (int i = 0; i < nl; i++)
        lane_free(&lanes[i]);
    free(done);
    return rc;
}

int dwf_thresh_curve_compute(const dwf_smodel *s, const dwf_dataset *val,
                             const dwf_dataset *test, const dwf_thresh_opts *opts,
                             dwf_thresh_curve *out, dwf_err *err)
{
    memset(out, 0, sizeof *out);
    dwf_thresh_opts o;
    dwf_thresh_opts_default(&o);
    if (opts)
        o = *opts;
    if (o.per_decade < 1 || o.per_decade > 100 || o.max_points < 1 ||
        o.max_points > 10000 || !(o.chance_margin >= 0.0 && o.chance_margin < 1.0) ||
        o.threads < 1 || o.threads > DWF_MAX_THREADS)
        return dwf_errorf(err, DWF_EINVAL, "threshold curve: bad options "
                          "(per_decade %d, max_points %d, chance_margin %g, "
                          "threads %d)", o.per_decade, o.max_points,
                          o.chance_margin, o.threads);
    if (!isfinite(s->eps) || s->eps < 0.0f)
        return dwf_errorf(err, DWF_EINVAL, "threshold curve: the model's "
                          "threshold %g is not a finite number >= 0",
                          (double)s->eps);
    int rc = check_data(s, val, err);
    if (!rc)
        rc = check_data(s, test, err);
    if (rc)
        return rc;
    double t0 = now_sec();
    int n_classes = s->arch.n_classes > 0 ? s->arch.n_classes : 2;
    double chance = 1.0 / n_classes + o.chance_margin;
    grid g;
    /* one team of o.threads for the whole curve */
    dwf_workers *wk = NULL;
    if (o.threads > 1 && (rc = dwf_workers_create(o.threads, &wk, err)))
        return rc;
    /* the removal indices in the arena the last planning lane fills (fresh
     * memory costs a fault per 2 MB page, up to ms each on the bench VM) */
    plan P;
    memset(&P, 0, sizeof P);
    if ((rc = grid_build(s, &o, &g, wk, &P.mem[o.threads - 1], err))) {
        plan_free(&P);
        dwf_workers_free(wk);
        return rc;
    }
    out->points = calloc((size_t)g.n, sizeof *out->points);
    if (!out->points) {
        grid_free(&g);
        plan_free(&P);
        dwf_workers_free(wk);
        return dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
    }
    P.s = s;
    P.data[0] = has_data(val) ? val : NULL;
    P.data[1] = has_data(test) ? test : NULL;
    for (int k = 0; k < 2; k++)
        P.given[k] = P.data[k] ? o.layer0[k] : NULL;
    P.dim = s->arch.in_c * s->arch.in_h * s->arch.in_w;
    P.nc = s->arch.n_classes;
    P.no_exact = o.no_exact_end;
    const dwf_dataset *data[2] = {P.data[0], P.data[1]};
    if (!o.from_scratch && P.nc >= 1 && (P.data[0] || P.data[1]) && mlp_view(s, &P))
        rc = curve_incremental(s, &P, &g, &o, chance, wk, out, err);
    else
        rc = curve_from_scratch(s, data, &g, chance, o.threads, wk, out, err);
    grid_free(&g);
    plan_free(&P);
    dwf_workers_free(wk);
    if (rc) {
        dwf_thresh_curve_free(out);
        return rc;
    }
    out->seconds = now_sec() - t0;
    return 0;
}

int dwf_thresh_select(const dwf_thresh_curve *c, double dense_val_acc,
                      double max_drop, int *index, int *within, dwf_err *err)
{
    if (!c || c->n < 1)
        return dwf_errorf(err, DWF_EINVAL, "select: the threshold curve is empty");
    if (!isfinite(dense_val_acc) || !isfinite(max_drop) || max_drop < 0.0)
        return dwf_errorf(err, DWF_EINVAL, "select: dense validation accuracy "
                          "%g and max_drop %g must be finite (max_drop >= 0)",
                          dense_val_acc, max_drop);
    int best = -1;
    for (int i = 0; i < c->n; i++) {
        double v = c->points[i].val_acc;
        if (isnan(v))
            return dwf_errorf(err, DWF_EINVAL, "select: threshold point %d has "
                              "no validation accuracy (a validation split is "
                              "required)", i);
        /* a small slack against rounding of equal accuracies; a model
         * with no weight left (biases alone) is not a sparse model */
        if (v >= dense_val_acc - max_drop - 1e-12 && c->points[i].nonzero > 0 &&
            (best < 0 || c->points[i].threshold > c->points[best].threshold))
            best = i;
    }
    *index = best < 0 ? 0 : best;
    if (within)
        *within = best >= 0;
    return 0;
}
