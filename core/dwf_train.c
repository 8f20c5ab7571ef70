/*
 * dwf_train.c - the training loop. dwf_trainer_run() reads top to bottom:
 * for each epoch, shuffle; for each batch, forward, loss, backward, factor
 * gradients with the penalty, optimizer step, collapse; then evaluate the
 * dense and the thresholded sparse model and report metrics.
 *
 * A step runs in two parts on the optimizer's threads: every thread takes
 * a slice of the batch through forward, loss and backward (without the
 * dense layers' weight gradients); then every thread takes rows of each
 * dense weight, computes their gradient from the whole batch and updates
 * their factors while that gradient is in cache (dwf_optim_update_grads).
 */
#include "dwf_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwf_buf.h"
#include "dwf_prune.h"
#include "dwf_trainer_impl.h"


const char *dwf_method_name(dwf_method m)
{
    static const char *const names[] = {"dwf", "magnitude", "gradual",
                                        "random", "snip", "synflow"};
    return (unsigned)m < sizeof names / sizeof *names ? names[m] : "?";
}

int dwf_method_parse(const char *name)
{
    for (int i = 0; i <= DWF_METHOD_SYNFLOW; i++)
        if (strcmp(name, dwf_method_name((dwf_method)i)) == 0)
            return i;
    return -1;
}

void dwf_train_opts_default(dwf_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->epochs = 20;
    o->batch_size = 128;
    o->lambda = 1e-3;
    o->init = DWF_INIT_AUTO;
    o->eps_init = 0.25;
    o->eps_prune = DWF_EPS_F32;
    o->optim.kind = DWF_OPT_SGD;
    o->optim.lr = 0.2;
    o->optim.momentum = 0.0;
    o->optim.beta1 = 0.9;
    o->optim.beta2 = 0.999;
    o->optim.adam_eps = 1e-8;
    o->optim.sched = DWF_SCHED_COSINE;
    o->optim.step_epochs = 10;
    o->optim.gamma = 0.1;
    o->threads = 1;
    o->norm = DWF_NORM_SCALE;
    o->method = DWF_METHOD_DWF;
    o->target_cr = 10.0;
    o->prune_end = -1.0; /* 75% of the epochs */
    o->prune_every = 100;
    o->snip_batches = 1;
    o->synflow_rounds = 100;
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dwf_trainer_free(dwf_trainer *t)
{
    if (!t)
        return;
    dwf_model_free(t->model);
    dwf_optim_free(&t->optim);
    free(t->perm);
    free(t->x);
    free(t->y);
    free(t->dlogits);
    free(t->sparse_w);
    free(t->dense);
    dwf_trainer_keep_layer0(t, 0, NULL);
    free(t);
}

static int64_t params_size(const dwf_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++)
        n += m->params[i].n;
    return n;
}

int dwf_trainer_create(const dwf_arch *arch, const dwf_train_opts *opts,
                       const dwf_dataset *train, const dwf_dataset *val,
                       const dwf_dataset *test, dwf_trainer **out,
                       dwf_err *err)
{
    *out = NULL;
    if (!train || train->n < 1)
        return dwf_errorf(err, DWF_EINVAL, "data: the training set is empty");
    if (opts->epochs < 1 || opts->batch_size < 1)
        return dwf_errorf(err, DWF_EINVAL, "train: epochs and batch_size must be >= 1");
    if (!(opts->eps_prune >= 0.0) || !(opts->lambda >= 0.0) ||
        !(opts->optim.lr > 0.0))
        return dwf_errorf(err, DWF_EINVAL, "train: lr must be > 0, lambda and eps >= 0");
    int64_t in_dim = (int64_t)arch->in_c * arch->in_h * arch->in_w;
    if (in_dim != train->dim)
        return dwf_errorf(err, DWF_EINVAL,
                          "model: input of %lld features but the data has %d",
                          (long long)in_dim, train->dim);
    const dwf_dataset *sets[2] = {val, test};
    for (int i = 0; i < 2; i++)
        if (sets[i] && sets[i]->n > 0 && sets[i]->dim != train->dim)
            return dwf_errorf(err, DWF_EINVAL,
                              "data: %s set has %d features, training set %d",
                              i ? "test" : "validation", sets[i]->dim, train->dim);
    dwf_trainer *t = calloc(1, sizeof *t);
    if (!t)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the trainer");
    t->opts = *opts;
    t->train = train;
    t->val = val && val->n > 0 ? val : NULL;
    t->test = test && test->n > 0 ? test : NULL;
    int rc = dwf_model_create(arch, opts->batch_size, &t->model, err);
    if (rc)
        goto fail;
    dwf_model *m = t->model;
    dwf_norm_fit(&t->norm, opts->norm, train);
    int B = opts->batch_size;
    t->n_batches = (train->n + B - 1) / B;
    t->perm = malloc((size_t)train->n * sizeof(int));
    /* on whole cache lines: the dense gradient kernel streams its rows */
    t->x = aligned_alloc(64, ((size_t)B * train->dim * sizeof(float) + 63) / 64 * 64);
    t->y = malloc((size_t)B * sizeof(int32_t));
    t->dlogits = malloc((size_t)B * m->arch.n_classes * sizeof(float));
    t->sparse_w = malloc((size_t)params_size(m) * sizeof(float));
    if (!t->perm || !t->x || !t->y || !t->dlogits || !t->sparse_w) {
        rc = dwf_errorf(err, DWF_ENOMEM, "out of memory for training buffers");
        goto fail;
    }
    dwf_rng_seed2(&t->rng, opts->seed, 0);
    rc = dwf_model_init(m, opts->init, opts->eps_init, &t->rng, err);
    if (rc)
        goto fail;
    dwf_model_param_list(m, t->plist);
    rc = dwf_optim_create(&t->optim, &opts->optim, t->plist, m->n_params, err);
    if (rc)
        goto fail;
    /* dense weights take their gradients from the batch (see run) */
    {
        int out[2 * DWF_MAX_LAYERS] = {0}, in[2 * DWF_MAX_LAYERS] = {0};
        for (int i = 0; i < m->arch.n_layers; i++) {
            const dwf_layer_spec *l = &m->arch.layers[i];
            if (l->kind != DWF_LAYER_DENSE)
                continue;
            out[m->weight_idx[i]] = l->units;
            in[m->weight_idx[i]] = l->in_c * l->in_h * l->in_w;
        }
        t->dense = calloc((size_t)m->n_params, sizeof *t->dense);
        if (!t->dense) {
            rc = dwf_errorf(err, DWF_ENOMEM, "out of memory for training buffers");
            goto fail;
        }
        rc = dwf_optim_set_dense(&t->optim, out, in, err);
        if (rc)
            goto fail;
    }
    if (opts->threads > 1) {
        /* data-parallel steps: one batch slice per thread, see slice_step */
        int n = opts->threads < DWF_MAX_THREADS ? opts->threads : DWF_MAX_THREADS;
        rc = dwf_optim_set_threads(&t->optim, n, err);
        if (!rc)
            rc = dwf_model_set_lanes(m, n, err);
        if (rc)
            goto fail;
    }
    rc = dwf_prune_at_init(t, err);
    if (rc)
        goto fail;
    t->last.val_acc = t->last.val_loss = t->last.sparse_val_acc = NAN;
    t->l0_layer = -1;
    *out = t;
    return 0;
fail:
    dwf_trainer_free(t);
    return rc;
}

int dwf_trainer_done(const dwf_trainer *t) { return t->epoch >= dwf_prune_total_epochs(t); }
int dwf_trainer_epoch(const dwf_trainer *t) { return t->epoch; }
int64_t dwf_trainer_step(const dwf_trainer *t) { return t->step; }
dwf_model *dwf_trainer_model(dwf_trainer *t) { return t->model; }
const dwf_train_opts *dwf_trainer_opts(const dwf_trainer *t) { return &t->opts; }
const dwf_norm *dwf_trainer_norm(const dwf_trainer *t) { return &t->norm; }
const dwf_metrics *dwf_trainer_metrics(const dwf_trainer *t) { return &t->last; }

/* The order of epoch e's samples depends on (seed, e) only, so a run
 * resumed in the middle of an epoch sees the same batches. */
static void make_perm(dwf_trainer *t, int epoch)
{
    dwf_rng r;
    dwf_rng_seed2(&r, t->opts.seed, 1000 + (uint64_t)epoch);
    for (int i = 0; i < t->train->n; i++)
        t->perm[i] = i;
    dwf_rng_shuffle(&r, t->perm, t->train->n);
}

void dwf_count_sparsity(const dwf_model *m, float eps, dwf_metrics *out)
{
    out->weights = out->nonzero = out->params = out->params_nonzero = 0;
    out->n_layers = 0;
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->weight_idx[i] < 0)
            continue;
        dwf_layer_count *lc = &out->layers[out->n_layers++];
        const dwf_param *w = &m->params[m->weight_idx[i]];
        const dwf_param *b = &m->params[m->bias_idx[i]];
        dwf_arch_layer_name(&m->arch, i, lc->name, sizeof lc->name);
        lc->total = w->n;
        lc->nonzero = dwf_param_count_nonzero(w, eps);
        lc->bias_total = b->n;
        lc->bias_nonzero = dwf_param_count_nonzero(b, eps);
        out->weights += lc->total;
        out->nonzero += lc->nonzero;
        out->params += lc->total + lc->bias_total;
        out->params_nonzero += lc->nonzero + lc->bias_nonzero;
    }
    out->cr = out->nonzero > 0 ? (double)out->weights / out->nonzero : INFINITY;
    out->cr_params = out->params_nonzero > 0
                         ? (double)out->params / out->params_nonzero
                         : INFINITY;
}

int dwf_trainer_keep_layer0(dwf_trainer *t, int every, dwf_err *err)
{
    for (int k = 0; k < 2; k++) {
        free(t->l0[k]);
        t->l0[k] = NULL;
        for (int j = 0; j < t->n_later; j++) {
            free(t->later[k][j]);
            t->later[k][j] = NULL;
        }
    }
    t->n_later = 0;
    t->l0_layer = -1;
    t->l0_valid = 0;
    t->l0_every = every;
    if (every < 1)
        return 0;
    const dwf_arch *a = &t->model->arch;
    int i = 0;
    while (i < a->n_layers && a->layers[i].kind == DWF_LAYER_FLATTEN)
        i++;
    if (i >= a->n_layers || a->layers[i].kind != DWF_LAYER_DENSE)
        return 0;
    /* an MLP (dense, relu and flatten only): every dense layer after the
     * first too */
    int mlp = 1, later[DWF_MAX_LAYERS], n_later = 0;
    for (int l = i + 1; l < a->n_layers; l++) {
        dwf_layer_kind k = a->layers[l].kind;
        mlp &= k == DWF_LAYER_DENSE || k == DWF_LAYER_RELU || k == DWF_LAYER_FLATTEN;
        if (k == DWF_LAYER_DENSE)
            later[n_later++] = l;
    }
    if (!mlp)
        n_later = 0;
    const dwf_dataset *sets[2] = {t->val, t->test};
    double bytes = 0.0;
    int64_t units = a->layers[i].units;
    for (int j = 0; j < n_later; j++)
        units += a->layers[later[j]].units;
    for (int k = 0; k < 2; k++)
        bytes += sets[k] ? (double)sets[k]->n * units * sizeof(float) : 0.0;
    if (bytes > DWF_KEEP_LAYER0_MAX)
        return 0; /* too big to keep: the curve computes them itself */
    t->n_later = n_later;
    for (int j = 0; j < n_later; j++)
        t->later_li[j] = later[j];
    for (int k = 0; k < 2; k++) {
        if (!sets[k])
            continue;
        size_t n = (size_t)sets[k]->n;
        int ok = (t->l0[k] = malloc(n * a->layers[i].units * sizeof(float))) != NULL;
        for (int j = 0; j < n_later && ok; j++)
            ok = (t->later[k][j] = malloc(n * a->layers[later[j]].units * sizeof(float))) != NULL;
        if (!ok) {
            dwf_trainer_keep_layer0(t, 0, err);
            return dwf_errorf(err, DWF_ENOMEM, "out of memory for the dense layers' "
                              "outputs (%d samples)", sets[k]->n);
        }
    }
    t->l0_layer = i;
    return 0;
}

const float *dwf_trainer_layer0(const dwf_trainer *t, int which)
{
    return dwf_trainer_layer_out(t, which, 0);
}

const float *dwf_trainer_layer_out(const dwf_trainer *t, int which, int j)
{
    if (!t->l0_valid || (which != 0 && which != 1) || j < 0 || j > t->n_later)
        return NULL;
    return j == 0 ? t->l0[which] : t->later[which][j - 1];
}

/* Copies rows [s0, s0 + b) of the kept layers' outputs (keep: data set
 * which) from a forward pass's activations act (act[l + 1]: layer l's). */
static void keep_rows(dwf_trainer *t, int which, int s0, int b, float *const *act)
{
    const dwf_arch *a = &t->model->arch;
    int u = a->layers[t->l0_layer].units;
    memcpy(t->l0[which] + (size_t)s0 * u, act[t->l0_layer + 1], (size_t)b * u * sizeof(float));
    for (int j = 0; j < t->n_later; j++) {
        int li = t->later_li[j], v = a->layers[li].units;
        memcpy(t->later[which][j] + (size_t)s0 * v, act[li + 1], (size_t)b * v * sizeof(float));
    }
}

/* One batch of an evaluation split over the training lanes (as
 * slice_step splits a step): lane k takes its slice of the batch. */
typedef struct eval_job {
    dwf_trainer *t;
    const dwf_dataset *d;
    int start, b;
    int keep;             /* keep the dense layers' outputs (data set keep - 1) */
    double loss[DWF_MAX_THREADS];
    int correct[DWF_MAX_THREADS];
} eval_job;

static void eval_slice(void *arg, int k)
{
    eval_job *j = arg;
    dwf_trainer *t = j->t;
    dwf_model *m = t->model;
    const int n = m->n_lanes, dim = j->d->dim, C = m->arch.n_classes;
    const int lo = (int)((int64_t)j->b * k / n), hi = (int)((int64_t)j->b * (k + 1) / n);
    j->loss[k] = 0.0;
    j->correct[k] = 0;
    if (hi == lo)
        return;
    float *x = t->x + (size_t)lo * dim;
    int32_t *y = t->y + lo;
    dwf_dataset_range(j->d, &t->norm, j->start + lo, hi - lo, x, y);
    const float *z = dwf_model_forward_lane(m, k, x, hi - lo);
    j->loss[k] = dwf_softmax_xent_part(z, y, hi - lo, hi - lo, C, NULL, &j->correct[k]);
    if (j->keep)
        keep_rows(t, j->keep - 1, j->start + lo, hi - lo, k == 0 ? m->act : m->lanes[k - 1].act);
}

/* Accuracy and mean loss of the current collapsed model on d; with keep
 * (data set keep - 1), the dense layers' outputs are kept (see
 * dwf_trainer_keep_layer0). A trainer with several threads splits every
 * batch over them. */
static void eval_set(dwf_trainer *t, const dwf_dataset *d, double *acc,
                     double *loss, int keep)
{
    dwf_model *m = t->model;
    int B = t->opts.batch_size, C = m->arch.n_classes;
    double sl = 0.0;
    long ok = 0;
    if (m->n_lanes > 1 && t->optim.workers) {
        eval_job j = {.t = t, .d = d, .keep = keep};
        for (int s = 0; s < d->n; s += B) {
            j.start = s;
            j.b = d->n - s < B ? d->n - s : B;
            dwf_workers_run(t->optim.workers, eval_slice, &j);
            for (int k = 0; k < m->n_lanes; k++) {
                sl += j.loss[k];
                ok += j.correct[k];
            }
        }
        *acc = d->n ? (double)ok / d->n : NAN;
        *loss = d->n ? sl / d->n : NAN;
        return;
    }
    for (int s = 0; s < d->n; s += B) {
        int b = d->n - s < B ? d->n - s : B;
        dwf_dataset_range(d, &t->norm, s, b, t->x, t->y);
        const float *z = dwf_model_forward(m, t->x, b);
        if (keep)
            keep_rows(t, keep - 1, s, b, m->act);
        int c = 0;
        sl += dwf_softmax_xent(z, t->y, b, C, NULL, &c) * b;
        ok += c;
    }
    *acc = d->n ? (double)ok / d->n : NAN;
    *loss = d->n ? sl / d->n : NAN;
}

int dwf_trainer_evaluate(dwf_trainer *t, dwf_metrics *mt, dwf_err *err)
{
    (void)err;
    dwf_model *m = t->model;
    mt->test_acc = mt->test_loss = mt->sparse_test_acc = mt->sparse_test_loss = NAN;
    mt->val_acc = mt->val_loss = mt->sparse_val_acc = NAN;
    dwf_count_sparsity(m, (float)t->opts.eps_prune, mt);
    /* the first layer's outputs are kept from the model at eps: the dense
     * one when nothing falls below the threshold, else the sparse one */
    int same = mt->params_nonzero == mt->params, keep = t->l0_layer >= 0 && !t->l0_skip;
    t->l0_valid = 0;
    if (t->test)
        eval_set(t, t->test, &mt->test_acc, &mt->test_loss, keep && same ? 2 : 0);
    if (t->val)
        eval_set(t, t->val, &mt->val_acc, &mt->val_loss, keep && same ? 1 : 0);
    if (same) {
        /* nothing falls below the threshold: sparse == dense */
        mt->sparse_test_acc = mt->test_acc;
        mt->sparse_test_loss = mt->test_loss;
        mt->sparse_val_acc = mt->val_acc;
        t->l0_valid = keep;
        return 0;
    }
    /* evaluate with thresholded weights, then restore the pointers */
    float *orig[2 * DWF_MAX_LAYERS];
    float *buf = t->sparse_w;
    float eps = (float)t->opts.eps_prune;
    for (int i = 0; i < m->n_params; i++) {
        dwf_param *p = &m->params[i];
        for (int64_t j = 0; j < p->n; j++)
            buf[j] = fabsf(p->w[j]) >= eps ? p->w[j] : 0.0f;
        orig[i] = p->w;
        p->w = buf;
        buf += p->n;
    }
    double loss;
    if (t->test)
        eval_set(t, t->test, &mt->sparse_test_acc, &mt->sparse_test_loss, keep ? 2 : 0);
    if (t->val)
        eval_set(t, t->val, &mt->sparse_val_acc, &loss, keep ? 1 : 0);
    for (int i = 0; i < m->n_params; i++)
        m->params[i].w = orig[i];
    t->l0_valid = keep;
    return 0;
}

/* The schedule runs over the training epochs; the fine-tuning epochs of
 * magnitude pruning (after the mask is set) get a schedule of their own. */
static double step_lr(const dwf_trainer *t)
{
    const dwf_train_opts *o = &t->opts;
    int64_t nb = t->n_batches, main_steps = (int64_t)o->epochs * nb;
    if (t->step >= main_steps && o->method == DWF_METHOD_MAGNITUDE)
        return dwf_sched_lr(&o->optim, t->step - main_steps,
                            (int64_t)o->finetune_epochs * nb, nb);
    return dwf_sched_lr(&o->optim, t->step, main_steps, nb);
}

/* The forward and backward part of a training step, split into one slice
 * of the batch per lane of the model (one lane unless threads > 1): lane k
 * of n assembles the samples [k b / n, (k + 1) b / n) of the batch, runs
 * them forward, computes their loss and runs them backward, into its own
 * workspace and gradients. The optimizer then adds the lanes' gradients. */
typedef struct slice_job {
    dwf_trainer *t;
    int start, b;                      /* the batch is perm[start, start + b) */
    double loss[DWF_MAX_THREADS];      /* summed over the slice */
    int correct[DWF_MAX_THREADS];
} slice_job;

static void slice_step(void *arg, int k)
{
    slice_job *j = arg;
    dwf_trainer *t = j->t;
    dwf_model *m = t->model;
    const int n = m->n_lanes, C = m->arch.n_classes, dim = t->train->dim;
    const int lo = (int)((int64_t)j->b * k / n), hi = (int)((int64_t)j->b * (k + 1) / n);
    const int bk = hi - lo;
    j->loss[k] = 0.0;
    j->correct[k] = 0;
    if (bk == 0) { /* a last batch smaller than the lanes: no gradient */
        for (int i = 0; i < m->n_params; i++)
            if (!t->optim.dense_out || !t->optim.dense_out[i]) /* dense: no segment */
                memset(dwf_model_lane_gw(m, k, i), 0,
                       (size_t)m->params[i].n * sizeof(float));
        return;
    }
    float *x = t->x + (size_t)lo * dim, *dl = t->dlogits + (size_t)lo * C;
    int32_t *y = t->y + lo;
    dwf_dataset_batch(t->train, &t->norm, t->perm + j->start + lo, bk, x, y);
    const float *logits = dwf_model_forward_lane(m, k, x, bk);
    j->loss[k] = dwf_softmax_xent_part(logits, y, bk, j->b, C, dl, &j->correct[k]);
    dwf_model_backward_lane_defer(m, k, dl, bk);
}

/* The dense weights' gradients of the step just run backward: per weight,
 * the lanes' slices of the batch in order (lanes without samples left
 * out). */
static void dense_segments(dwf_trainer *t, int b)
{
    dwf_model *m = t->model;
    const int n = m->n_lanes;
    for (int i = 0; i < m->n_params; i++)
        t->dense[i].n_seg = 0;
    for (int L = 0; L < m->arch.n_layers; L++) {
        if (m->arch.layers[L].kind != DWF_LAYER_DENSE)
            continue;
        dwf_dense_grad *g = &t->dense[m->weight_idx[L]];
        for (int k = 0; k < n; k++) {
            int rows = (int)((int64_t)b * (k + 1) / n) - (int)((int64_t)b * k / n);
            dwf_dense_seg *sg = &g->seg[g->n_seg];
            if (rows > 0 && dwf_model_dense_io(m, k, L, &sg->x, &sg->dy) == 0) {
                sg->rows = rows;
                g->n_seg++;
            }
        }
    }
}

int dwf_trainer_run(dwf_trainer *t, dwf_epoch_fn on_epoch,
                    dwf_batch_fn on_batch, void *ud,
                    const atomic_int *cancel, dwf_err *err)
{
    dwf_model *m = t->model;
    const dwf_train_opts *o = &t->opts;
    const int B = o->batch_size, N = t->train->n;
    const int total_epochs = dwf_prune_total_epochs(t);

    while (t->epoch < total_epochs) {
        t->l0_valid = 0; /* the parameters change from here */
        make_perm(t, t->epoch);
        if (t->batch == 0)
            t->sum_loss = t->sum_pen = t->sum_correct = t->sum_n =
                t->epoch_train_secs = 0.0;
        double t0 = now_sec();
        double lr = 0.0;
        for (; t->batch < t->n_batches; t->batch++) {
            if (cancel && atomic_load(cancel)) {
                t->epoch_train_secs += now_sec() - t0;
                return dwf_errorf(err, DWF_ECANCELED, "canceled at epoch %d, batch %d",
                                  t->epoch + 1, t->batch);
            }
            int start = t->batch * B;
            int b = N - start < B ? N - start : B;
            lr = step_lr(t);

            slice_job job = {.t = t, .start = start, .b = b};
            if (t->optim.workers)
                dwf_workers_run(t->optim.workers, slice_step, &job);
            else
                slice_step(&job, 0);
            double loss = 0.0;
            int correct = 0;
            for (int k = 0; k < m->n_lanes; k++) {
                loss += job.loss[k];
                correct += job.correct[k];
            }
            loss /= b;
            if (!isfinite(loss))
                return dwf_errorf(err, DWF_ENUMERIC,
                                  "loss is %g at epoch %d, batch %d: lower the "
                                  "learning rate or lambda", loss, t->epoch + 1,
                                  t->batch);
            /* weight gradients of lanes 1.. (added to lane 0's by the update) */
            float *extra[(DWF_MAX_THREADS - 1) * 2 * DWF_MAX_LAYERS];
            for (int k = 1; k < m->n_lanes; k++)
                for (int i = 0; i < m->n_params; i++)
                    extra[(k - 1) * m->n_params + i] = dwf_model_lane_gw(m, k, i);
            dense_segments(t, b);
            double pen = dwf_optim_update_grads(&t->optim, lr, o->lambda,
                                                m->n_lanes - 1, extra, t->dense);
            if (!isfinite(pen))
                return dwf_errorf(err, DWF_ENUMERIC,
                                  "weights became %g at epoch %d, batch %d "
                                  "(non-finite input data, or lower the "
                                  "learning rate or lambda)", pen,
                                  t->epoch + 1, t->batch);
            t->step++;
            dwf_prune_after_step(t);

            t->sum_loss += loss * b;
            t->sum_pen += pen * b;
            t->sum_correct += correct;
            t->sum_n += b;
            if (on_batch)
                on_batch(t->epoch + 1, t->batch + 1, t->n_batches, ud);
        }
        double train_secs = t->epoch_train_secs + (now_sec() - t0);
        if (!isfinite(dwf_model_penalty(m, 1.0)))
            return dwf_errorf(err, DWF_ENUMERIC,
                              "weights became non-finite in epoch %d "
                              "(non-finite input data, or lower the learning "
                              "rate or lambda)", t->epoch + 1);
        t->epoch++;
        t->batch = 0;
        int rc = dwf_prune_after_epoch(t, err);
        if (rc)
            return rc;

        double e0 = now_sec();
        dwf_metrics *mt = &t->last;
        t->l0_skip = t->l0_every > 0 && t->epoch % t->l0_every && t->epoch < total_epochs;
        dwf_trainer_evaluate(t, mt, err);
        t->l0_skip = 0;
        mt->epoch = t->epoch;
        mt->epochs = total_epochs;
        mt->step = t->step;
        mt->lr = lr;
        mt->train_loss = t->sum_loss / t->sum_n;
        mt->train_penalty = t->sum_pen / t->sum_n;
        mt->train_acc = t->sum_correct / t->sum_n;
        mt->samples_per_sec = train_secs > 0 ? t->sum_n / train_secs : 0.0;
        mt->epoch_time = train_secs + (now_sec() - e0);
        t->wall_time += mt->epoch_time;
        mt->wall_time = t->wall_time;
        if (on_epoch && on_epoch(mt, ud))
            return dwf_errorf(err, DWF_ECANCELED, "stopped after epoch %d",
                              t->epoch);
    }
    return 0;
}

/* ---- checkpoints ------------------------------------------------------ */

#define CKPT_MAGIC 0x43465744u /* "DWFC" */
#define CKPT_VERSION 1u

/* The parts of arch and opts a checkpoint must agree with. */
static void put_fingerprint(dwf_wbuf *w, const dwf_trainer *t)
{
    const dwf_arch *a = &t->model->arch;
    dwf_wbuf_u32(w, (uint32_t)a->n_layers);
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        uint32_t f[6] = {(uint32_t)l->kind, (uint32_t)l->out_c,
                         (uint32_t)l->out_h, (uint32_t)l->out_w,
                         (uint32_t)l->in_c * l->in_h * l->in_w,
                         (uint32_t)dwf_arch_layer_depth(a, i)};
        dwf_wbuf_bytes(w, f, sizeof f);
    }
    dwf_wbuf_u32(w, (uint32_t)t->train->n);
    dwf_wbuf_u32(w, (uint32_t)t->opts.batch_size);
    dwf_wbuf_u32(w, (uint32_t)t->opts.method);
    dwf_wbuf_u32(w, (uint32_t)t->opts.optim.kind);
    dwf_wbuf_u64(w, (uint64_t)t->optim.n_floats);
}

int dwf_trainer_checkpoint(const dwf_trainer *t, uint8_t **buf, size_t *len,
                           dwf_err *err)
{
    dwf_wbuf w;
    dwf_wbuf_init(&w);
    dwf_wbuf_u32(&w, CKPT_MAGIC);
    dwf_wbuf_u32(&w, CKPT_VERSION);
    put_fingerprint(&w, t);
    dwf_wbuf_u32(&w, (uint32_t)t->epoch);
    dwf_wbuf_i64(&w, t->step);
    dwf_wbuf_u32(&w, (uint32_t)t->batch);
    dwf_wbuf_bytes(&w, t->rng.s, sizeof t->rng.s);
    dwf_wbuf_f64(&w, t->sum_loss);
    dwf_wbuf_f64(&w, t->sum_pen);
    dwf_wbuf_f64(&w, t->sum_correct);
    dwf_wbuf_f64(&w, t->sum_n);
    dwf_wbuf_f64(&w, t->epoch_train_secs);
    dwf_wbuf_f64(&w, t->wall_time);
    const dwf_model *m = t->model;
    for (int i = 0; i < m->n_params; i++) {
        const dwf_param *p = &m->params[i];
        for (int d = 0; d < p->depth; d++)
            dwf_wbuf_f32s(&w, p->f[d], (size_t)p->n);
        dwf_wbuf_u32(&w, p->mask != NULL);
        if (p->mask)
            dwf_wbuf_bytes(&w, p->mask, (size_t)p->n);
    }
    dwf_wbuf_i64(&w, t->optim.t);
    dwf_wbuf_f32s(&w, t->optim.state, (size_t)t->optim.n_floats);
    dwf_prune_save(t, &w);
    dwf_wbuf_bytes(&w, &t->last, sizeof t->last);
    uint32_t crc = dwf_crc32(w.data, w.len);
    dwf_wbuf_u32(&w, crc);
    *buf = dwf_wbuf_take(&w, len);
    if (!*buf)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory writing a checkpoint");
    return 0;
}

int dwf_trainer_restore(dwf_trainer *t, const uint8_t *buf, size_t len,
                        dwf_err *err)
{
    t->l0_valid = 0;
    if (len < 12)
        return dwf_errorf(err, DWF_EFORMAT, "checkpoint: %zu bytes is too short", len);
    uint32_t crc;
    memcpy(&crc, buf + len - 4, 4);
    if (crc != dwf_crc32(buf, len - 4))
        return dwf_errorf(err, DWF_EFORMAT, "checkpoint: checksum mismatch (corrupt)");
    dwf_rbuf r;
    dwf_rbuf_init(&r, buf, len - 4);
    if (dwf_rbuf_u32(&r) != CKPT_MAGIC)
        return dwf_errorf(err, DWF_EFORMAT, "checkpoint: bad magic");
    uint32_t ver = dwf_rbuf_u32(&r);
    if (ver != CKPT_VERSION)
        return dwf_errorf(err, DWF_EFORMAT, "checkpoint: version %u, expected %u",
                          ver, CKPT_VERSION);
    dwf_wbuf fp;
    dwf_wbuf_init(&fp);
    put_fingerprint(&fp, t);
    int same = !fp.failed && fp.len <= dwf_rbuf_left(&r) &&
               memcmp(fp.data, r.p + r.pos, fp.len) == 0;
    size_t fplen = fp.len;
    dwf_wbuf_free(&fp);
    if (!same)
        return dwf_errorf(err, DWF_EINVAL,
                          "checkpoint: made for another architecture, data size "
                          "or optimizer");
    r.pos += fplen;
    /* read into a scratch copy first so that a bad buffer leaves t intact */
    uint32_t epoch = dwf_rbuf_u32(&r);
    int64_t step = dwf_rbuf_i64(&r);
    uint32_t batch = dwf_rbuf_u32(&r);
    if (r.failed || epoch > (uint32_t)dwf_prune_total_epochs(t) ||
        batch >= (uint32_t)t->n_batches || step < 0)
        return dwf_errorf(err, DWF_EFORMAT, "checkpoint: bad position");
    dwf_model *m = t->model;
    size_t body = r.pos;
    /* validate lengths before touching the model */
    {
        dwf_rbuf v = r;
        v.pos += sizeof t->rng.s + 6 * 8;
        for (int i = 0; i < m->n_params && !v.failed; i++) {
            const dwf_param *p = &m->params[i];
            v.pos += (size_t)p->depth * p->n * sizeof(float);
            if (v.pos > v.len) {
                v.failed = 1;
                break;
            }
            uint32_t has = dwf_rbuf_u32(&v);
            if (has > 1)
                v.failed = 1;
            if (has)
                v.pos += (size_t)p->n;
        }
        if (v.failed || v.pos > v.len)
            return dwf_errorf(err, DWF_EFORMAT, "checkpoint: truncated parameters");
    }
    r.pos = body;
    dwf_rbuf_bytes(&r, t->rng.s, sizeof t->rng.s);
    t->sum_loss = dwf_rbuf_f64(&r);
    t->sum_pen = dwf_rbuf_f64(&r);
    t->sum_correct = dwf_rbuf_f64(&r);
    t->sum_n = dwf_rbuf_f64(&r);
    t->epoch_train_secs = dwf_rbuf_f64(&r);
    t->wall_time = dwf_rbuf_f64(&r);
    for (int i = 0; i < m->n_params; i++) {
        dwf_param *p = &m->params[i];
        for (int d = 0; d < p->depth; d++)
            dwf_rbuf_f32s(&r, p->f[d], (size_t)p->n);
        if (dwf_rbuf_u32(&r)) {
            uint8_t *mask = malloc((size_t)p->n);
            if (!mask)
                return dwf_errorf(err, DWF_ENOMEM, "checkpoint: out of memory");
            dwf_rbuf_bytes(&r, mask, (size_t)p->n);
            free(p->mask);
            p->mask = mask;
        } else {
            free(p->mask);
            p->mask = NULL;
        }
    }
    t->optim.t = dwf_rbuf_i64(&r);
    dwf_rbuf_f32s(&r, t->optim.state, (size_t)t->optim.n_floats);
    int rc = dwf_prune_load(t, &r, err);
    if (rc)
        return rc;
    dwf_rbuf_bytes(&r, &t->last, sizeof t->last);
    if (r.failed || dwf_rbuf_left(&r) != 0)
        return dwf_errorf(err, DWF_EFORMAT,
                          "checkpoint: truncated or trailing data (state is "
                          "undefined; recreate the trainer)");
    t->epoch = (int)epoch;
    t->step = step;
    t->batch = (int)batch;
    dwf_model_collapse(m);
    return 0;
}
