/*
 * check_train.c - the training loop (core/dwf_train.c) end to end on small
 * synthetic data sets: determinism for a seed, checkpoints that resume
 * bit-identically (also with a fresh trainer), refused and corrupt
 * checkpoints, cancellation within one batch, non-finite losses, an MLP
 * and a small CNN learning, and a short Fashion-MNIST run at D = 3 that
 * learns and, with a large lambda, becomes sparse.
 */
#include "testutil.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "dwf_data.h"
#include "dwf_train.h"


/* ---- synthetic data --------------------------------------------------- */


/* 1 x 8 x 8 images of three classes: a horizontal bar, a vertical bar or
 * a diagonal, each 4 pixels long at a random place, plus noise. */
static void make_bars(dwf_dataset *d, int n, uint64_t seed)
{
    dwf_rng r;
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = 1;
    d->h = d->w = 8;
    d->dim = 64;
    d->n_classes = 3;
    d->x_f32 = malloc((size_t)n * 64 * sizeof(float));
    d->y = malloc((size_t)n * sizeof(int32_t));
    ck_assert(d->x_f32 && d->y);
    dwf_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        float *img = d->x_f32 + (size_t)i * 64;
        for (int j = 0; j < 64; j++)
            img[j] = (float)(0.3 * dwf_rng_normal(&r));
        int c = (int)dwf_rng_below(&r, 3);
        int y0 = (int)dwf_rng_below(&r, 5), x0 = (int)dwf_rng_below(&r, 5);
        for (int k = 0; k < 4; k++) {
            int yy = c == 0 ? y0 : y0 + k, xx = c == 1 ? x0 : x0 + k;
            img[yy * 8 + xx] += 1.0f;
        }
        d->y[i] = c;
    }
}

static dwf_dataset blobs_train, blobs_test;

static void blobs_setup(void)
{
    tu_make_blobs(&blobs_train, 600, 8, 3, 1.5, 11, 1);
    tu_make_blobs(&blobs_test, 300, 8, 3, 1.5, 11, 2);
}

static void blobs_teardown(void)
{
    dwf_dataset_free(&blobs_train);
    dwf_dataset_free(&blobs_test);
}

/* ---- helpers ---------------------------------------------------------- */

static void mlp_arch(dwf_arch *a, int hidden, int depth)
{
    dwf_err err;
    int h[1] = {hidden};
    int rc = dwf_arch_mlp(a, 8, 1, 1, h, 1, 3, depth, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
}

/* Small, fast options: batch 32 (19 batches an epoch of 600 samples, the
 * last one partial), D = 3, momentum, cosine schedule. */
static dwf_train_opts small_opts(void)
{
    dwf_train_opts o;
    dwf_train_opts_default(&o);
    o.seed = 7;
    o.epochs = 4;
    o.batch_size = 32;
    o.lambda = 1e-3;
    o.optim.lr = 0.03; /* with momentum 0.9 (lr 0.1 diverges here) */
    o.optim.momentum = 0.9;
    o.optim.sched = DWF_SCHED_COSINE;
    return o;
}

static dwf_trainer *new_trainer(const dwf_arch *a, const dwf_train_opts *o,
                                const dwf_dataset *train,
                                const dwf_dataset *test)
{
    dwf_trainer *t = NULL;
    dwf_err err;
    int rc = dwf_trainer_create(a, o, train, NULL, test, &t, &err);
    ck_assert_msg(rc == 0, "trainer: %s", err.msg);
    return t;
}

/* Per-epoch metrics recorder and batch hooks. */
typedef struct recorder {
    dwf_metrics m[32];
    int n;
    /* cancellation: set *cancel after batch cancel_batch of epoch
     * cancel_epoch; count the batches that run after it was set */
    atomic_int *cancel;
    int cancel_epoch, cancel_batch;
    int batches, after_cancel;
} recorder;

static int rec_epoch(const dwf_metrics *m, void *ud)
{
    recorder *r = ud;
    if (r->n < 32)
        r->m[r->n++] = *m;
    return 0;
}

static void rec_batch(int epoch, int batch, int n_batches, void *ud)
{
    recorder *r = ud;
    (void)n_batches;
    r->batches++;
    if (r->cancel && atomic_load(r->cancel))
        r->after_cancel++;
    if (r->cancel && epoch == r->cancel_epoch && batch == r->cancel_batch)
        atomic_store(r->cancel, 1);
}

static int bits_eq(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Every field of two epochs' metrics, bit for bit, except the timings. */
static void expect_same_metrics(const dwf_metrics *a, const dwf_metrics *b,
                                const char *what)
{
    ck_assert_msg(a->epoch == b->epoch && a->epochs == b->epochs &&
                      a->step == b->step,
                  "%s: epoch %d/%d step %lld vs %d/%d step %lld", what, a->epoch,
                  a->epochs, (long long)a->step, b->epoch, b->epochs,
                  (long long)b->step);
#define SAME(f)                                                             \
    ck_assert_msg(bits_eq(a->f, b->f), "%s epoch %d: " #f " %.17g vs %.17g", \
                  what, a->epoch, a->f, b->f)
    SAME(lr);
    SAME(train_loss);
    SAME(train_penalty);
    SAME(train_acc);
    SAME(test_loss);
    SAME(test_acc);
    SAME(sparse_test_acc);
    SAME(sparse_test_loss);
    SAME(val_loss);
    SAME(val_acc);
    SAME(sparse_val_acc);
    SAME(cr);
    SAME(cr_params);
#undef SAME
    ck_assert(a->weights == b->weights && a->nonzero == b->nonzero);
    ck_assert(a->params == b->params && a->params_nonzero == b->params_nonzero);
    ck_assert_int_eq(a->n_layers, b->n_layers);
    for (int i = 0; i < a->n_layers; i++) {
        ck_assert_str_eq(a->layers[i].name, b->layers[i].name);
        ck_assert(a->layers[i].total == b->layers[i].total);
        ck_assert(a->layers[i].nonzero == b->layers[i].nonzero);
        ck_assert(a->layers[i].bias_total == b->layers[i].bias_total);
        ck_assert(a->layers[i].bias_nonzero == b->layers[i].bias_nonzero);
    }
}

/* Factors, masks and optimizer state of two trainers, bit for bit. */
static void expect_same_state(dwf_trainer *a, dwf_trainer *b, const char *what)
{
    dwf_model *ma = dwf_trainer_model(a), *mb = dwf_trainer_model(b);
    ck_assert_int_eq(ma->n_params, mb->n_params);
    for (int i = 0; i < ma->n_params; i++) {
        const dwf_param *p = &ma->params[i], *q = &mb->params[i];
        ck_assert(p->n == q->n && p->depth == q->depth);
        for (int d = 0; d < p->depth; d++)
            ck_assert_msg(memcmp(p->f[d], q->f[d], (size_t)p->n * sizeof(float)) == 0,
                          "%s: param %d factor %d differs", what, i, d);
        ck_assert_msg(memcmp(p->w, q->w, (size_t)p->n * sizeof(float)) == 0,
                      "%s: collapsed weight %d differs", what, i);
    }
    ck_assert(dwf_trainer_step(a) == dwf_trainer_step(b));
    ck_assert_int_eq(dwf_trainer_epoch(a), dwf_trainer_epoch(b));
}

/* ---- determinism ------------------------------------------------------ */

START_TEST(test_same_seed_same_run)
{
    dwf_arch a;
    mlp_arch(&a, 12, 3);
    dwf_train_opts o = small_opts();
    o.epochs = 3;
    recorder r1 = {0}, r2 = {0};
    dwf_err err;
    dwf_trainer *t1 = new_trainer(&a, &o, &blobs_train, &blobs_test);
    dwf_trainer *t2 = new_trainer(&a, &o, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(t1, rec_epoch, NULL, &r1, NULL, &err), 0);
    ck_assert_int_eq(dwf_trainer_run(t2, rec_epoch, NULL, &r2, NULL, &err), 0);
    ck_assert_int_eq(r1.n, 3);
    ck_assert_int_eq(r2.n, 3);
    for (int e = 0; e < 3; e++)
        expect_same_metrics(&r1.m[e], &r2.m[e], "same seed");
    expect_same_state(t1, t2, "same seed");
    ck_assert(dwf_trainer_done(t1));
    /* the last metrics are kept */
    expect_same_metrics(dwf_trainer_metrics(t1), &r1.m[2], "last metrics");
    /* evaluating again gives the same test loss */
    dwf_metrics ev;
    ck_assert_int_eq(dwf_trainer_evaluate(t1, &ev, &err), 0);
    ck_assert(bits_eq(ev.test_loss, r1.m[2].test_loss));

    /* another seed gives another run */
    o.seed = 8;
    dwf_trainer *t3 = new_trainer(&a, &o, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(t3, NULL, NULL, NULL, NULL, &err), 0);
    dwf_model *m1 = dwf_trainer_model(t1), *m3 = dwf_trainer_model(t3);
    ck_assert(memcmp(m1->params[0].f[0], m3->params[0].f[0],
                     (size_t)m1->params[0].n * sizeof(float)) != 0);
    ck_assert(!bits_eq(dwf_trainer_metrics(t3)->test_loss, r1.m[2].test_loss));
    dwf_trainer_free(t1);
    dwf_trainer_free(t2);
    dwf_trainer_free(t3);
}
END_TEST

/* ---- checkpoints ------------------------------------------------------ */

/* Run A trains 4 epochs straight. Run B is canceled in the middle of
 * epoch 2 and checkpointed; a new trainer C (which first trains a little
 * on its own, so that its state differs) restores the checkpoint and
 * finishes. C must end bit-identical to A with the same per-epoch
 * metrics. Loop: SGD with momentum, Nesterov, Adam. */
START_TEST(test_checkpoint_resume)
{
    dwf_arch a;
    mlp_arch(&a, 12, 3);
    dwf_train_opts o = small_opts();
    if (_i == 1)
        o.optim.nesterov = 1;
    if (_i == 2) {
        o.optim.kind = DWF_OPT_ADAM;
        o.optim.lr = 0.01;
    }
    o.optim.warmup_epochs = 0.5;
    dwf_err err;

    recorder ra = {0};
    dwf_trainer *ta = new_trainer(&a, &o, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(ta, rec_epoch, rec_batch, &ra, NULL, &err), 0);
    ck_assert_int_eq(ra.n, 4);
    ck_assert_int_eq(ra.batches, 4 * 19);

    atomic_int cancel = 0;
    recorder rb = {.cancel = &cancel, .cancel_epoch = 2, .cancel_batch = 7};
    dwf_trainer *tb = new_trainer(&a, &o, &blobs_train, &blobs_test);
    int rc = dwf_trainer_run(tb, rec_epoch, rec_batch, &rb, &cancel, &err);
    ck_assert_int_eq(rc, DWF_ECANCELED);
    ck_assert_msg(strlen(err.msg) > 0, "no message");
    ck_assert_int_eq(rb.after_cancel, 0);
    ck_assert_int_eq(rb.n, 1);
    ck_assert_int_eq(dwf_trainer_epoch(tb), 1);
    ck_assert(dwf_trainer_step(tb) == 19 + 7);
    ck_assert(!dwf_trainer_done(tb));
    expect_same_metrics(&rb.m[0], &ra.m[0], "before the checkpoint");
    uint8_t *buf = NULL;
    size_t len = 0;
    rc = dwf_trainer_checkpoint(tb, &buf, &len, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    ck_assert(buf && len > 0);
    dwf_trainer_free(tb);

    /* C: a fresh trainer, dirtied by 3 batches of its own first */
    atomic_int cancel_c = 0;
    recorder rc0 = {.cancel = &cancel_c, .cancel_epoch = 1, .cancel_batch = 3};
    dwf_train_opts oc = o;
    dwf_trainer *tc = new_trainer(&a, &oc, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(tc, NULL, rec_batch, &rc0, &cancel_c, &err),
                     DWF_ECANCELED);
    rc = dwf_trainer_restore(tc, buf, len, &err);
    ck_assert_msg(rc == 0, "restore: %s", err.msg);
    ck_assert_int_eq(dwf_trainer_epoch(tc), 1);
    ck_assert(dwf_trainer_step(tc) == 19 + 7);
    recorder rcv = {0};
    rc = dwf_trainer_run(tc, rec_epoch, rec_batch, &rcv, NULL, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    ck_assert_int_eq(rcv.n, 3);
    ck_assert_int_eq(rcv.batches, 3 * 19 - 7);
    for (int e = 0; e < 3; e++)
        expect_same_metrics(&rcv.m[e], &ra.m[e + 1], "resumed");
    expect_same_state(tc, ta, "resumed");
    ck_assert(dwf_trainer_done(tc));
    /* a checkpoint of the finished runs is the same too (all state) */
    uint8_t *ba = NULL, *bc = NULL;
    size_t la = 0, lc = 0;
    ck_assert_int_eq(dwf_trainer_checkpoint(ta, &ba, &la, &err), 0);
    ck_assert_int_eq(dwf_trainer_checkpoint(tc, &bc, &lc, &err), 0);
    ck_assert(la == lc);

    /* resuming the same trainer in place after a cancel works too */
    atomic_int cancel_d = 0;
    recorder rd = {.cancel = &cancel_d, .cancel_epoch = 3, .cancel_batch = 1};
    dwf_trainer *td = new_trainer(&a, &o, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(td, NULL, rec_batch, &rd, &cancel_d, &err),
                     DWF_ECANCELED);
    atomic_store(&cancel_d, 0);
    ck_assert_int_eq(dwf_trainer_run(td, NULL, NULL, NULL, &cancel_d, &err), 0);
    expect_same_state(td, ta, "resumed in place");

    free(ba);
    free(bc);
    free(buf);
    dwf_trainer_free(ta);
    dwf_trainer_free(tc);
    dwf_trainer_free(td);
}
END_TEST

START_TEST(test_checkpoint_refused)
{
    dwf_arch a, other;
    mlp_arch(&a, 12, 3);
    dwf_train_opts o = small_opts();
    dwf_err err;
    dwf_trainer *t = new_trainer(&a, &o, &blobs_train, &blobs_test);
    atomic_int cancel = 0;
    recorder r = {.cancel = &cancel, .cancel_epoch = 1, .cancel_batch = 5};
    ck_assert_int_eq(dwf_trainer_run(t, NULL, rec_batch, &r, &cancel, &err),
                     DWF_ECANCELED);
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(dwf_trainer_checkpoint(t, &buf, &len, &err), 0);

    /* other hidden size, other depth, other optimizer: refused, and the
     * refusing trainer is left as it was */
    for (int k = 0; k < 3; k++) {
        dwf_train_opts o2 = o;
        if (k == 0)
            mlp_arch(&other, 13, 3);
        else if (k == 1)
            mlp_arch(&other, 12, 2);
        else {
            other = a;
            o2.optim.kind = DWF_OPT_ADAM;
        }
        dwf_trainer *u = new_trainer(&other, &o2, &blobs_train, &blobs_test);
        dwf_model *m = dwf_trainer_model(u);
        float *before = malloc((size_t)m->params[0].n * sizeof(float));
        memcpy(before, m->params[0].f[0], (size_t)m->params[0].n * sizeof(float));
        dwf_err_clear(&err);
        int rc = dwf_trainer_restore(u, buf, len, &err);
        ck_assert_msg(rc == DWF_EINVAL || rc == DWF_EFORMAT,
                      "case %d: restore into another model gave %d", k, rc);
        ck_assert_msg(strstr(err.msg, "checkpoint") != NULL, "message: %s",
                      err.msg);
        ck_assert(memcmp(before, m->params[0].f[0],
                         (size_t)m->params[0].n * sizeof(float)) == 0);
        ck_assert_int_eq(dwf_trainer_epoch(u), 0);
        ck_assert(dwf_trainer_step(u) == 0);
        free(before);
        dwf_trainer_free(u);
    }
    free(buf);
    dwf_trainer_free(t);
}
END_TEST

START_TEST(test_checkpoint_corrupt)
{
    dwf_arch a;
    mlp_arch(&a, 12, 2);
    dwf_train_opts o = small_opts();
    o.epochs = 2;
    dwf_err err;
    dwf_trainer *t = new_trainer(&a, &o, &blobs_train, &blobs_test);
    atomic_int cancel = 0;
    recorder r = {.cancel = &cancel, .cancel_epoch = 2, .cancel_batch = 4};
    ck_assert_int_eq(dwf_trainer_run(t, NULL, rec_batch, &r, &cancel, &err),
                     DWF_ECANCELED);
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(dwf_trainer_checkpoint(t, &buf, &len, &err), 0);
    uint8_t *bad = malloc(len + 1);
    dwf_trainer *u = new_trainer(&a, &o, &blobs_train, &blobs_test);

    /* one flipped byte anywhere: at the magic, in the header, in the
     * factors, in the last state bytes, in the checksum */
    const size_t pos[] = {0, 5, 9, len / 3, len / 2, len - 5, len - 1};
    for (size_t k = 0; k < sizeof pos / sizeof *pos; k++) {
        memcpy(bad, buf, len);
        bad[pos[k]] ^= 0x10;
        dwf_err_clear(&err);
        int rc = dwf_trainer_restore(u, bad, len, &err);
        ck_assert_msg(rc == DWF_EFORMAT, "flip at %zu of %zu: rc %d (%s)",
                      pos[k], len, rc, err.msg);
        ck_assert(strlen(err.msg) > 0);
    }
    /* truncated, empty, one byte too many */
    const size_t cut[] = {len - 1, len - 4, len / 2, 12, 11, 3, 0};
    for (size_t k = 0; k < sizeof cut / sizeof *cut; k++) {
        dwf_err_clear(&err);
        int rc = dwf_trainer_restore(u, buf, cut[k], &err);
        ck_assert_msg(rc == DWF_EFORMAT, "truncated to %zu of %zu: rc %d (%s)",
                      cut[k], len, rc, err.msg);
    }
    memcpy(bad, buf, len);
    bad[len] = 0;
    ck_assert_int_eq(dwf_trainer_restore(u, bad, len + 1, &err), DWF_EFORMAT);

    /* the intact buffer still restores, and the run finishes */
    ck_assert_int_eq(dwf_trainer_restore(u, buf, len, &err), 0);
    ck_assert_int_eq(dwf_trainer_run(u, NULL, NULL, NULL, NULL, &err), 0);
    ck_assert_int_eq(dwf_trainer_run(t, NULL, NULL, NULL, NULL, &err), 0);
    expect_same_state(u, t, "after corrupt attempts");
    free(bad);
    free(buf);
    dwf_trainer_free(u);
    dwf_trainer_free(t);
}
END_TEST

/* ---- cancellation ----------------------------------------------------- */

static int stop_after_first(const dwf_metrics *m, void *ud)
{
    (void)ud;
    return m->epoch >= 1;
}

START_TEST(test_cancel)
{
    dwf_arch a;
    mlp_arch(&a, 12, 3);
    dwf_train_opts o = small_opts();
    dwf_err err;

    /* set from the batch callback: no further batch runs */
    for (int k = 1; k <= 19; k += 9) {
        atomic_int cancel = 0;
        recorder r = {.cancel = &cancel, .cancel_epoch = 1, .cancel_batch = k};
        dwf_trainer *t = new_trainer(&a, &o, &blobs_train, &blobs_test);
        int rc = dwf_trainer_run(t, rec_epoch, rec_batch, &r, &cancel, &err);
        ck_assert_int_eq(rc, DWF_ECANCELED);
        ck_assert_msg(r.after_cancel <= 1, "%d batches after the cancel",
                      r.after_cancel);
        ck_assert_int_le(r.batches, k + 1);
        ck_assert(dwf_trainer_step(t) <= k + 1);
        dwf_trainer_free(t);
    }
    /* already set: nothing runs */
    atomic_int cancel = 1;
    recorder r = {0};
    dwf_trainer *t = new_trainer(&a, &o, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(t, rec_epoch, rec_batch, &r, &cancel, &err),
                     DWF_ECANCELED);
    ck_assert_int_eq(r.batches, 0);
    ck_assert(dwf_trainer_step(t) == 0);
    dwf_trainer_free(t);
    /* the epoch callback can stop the run */
    t = new_trainer(&a, &o, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(t, stop_after_first, NULL, NULL, NULL, &err),
                     DWF_ECANCELED);
    ck_assert_int_eq(dwf_trainer_epoch(t), 1);
    dwf_trainer_free(t);
}
END_TEST

/* ---- non-finite losses ------------------------------------------------ */

START_TEST(test_nan_lr)
{
    dwf_arch a;
    mlp_arch(&a, 12, 3);
    dwf_train_opts o = small_opts();
    o.optim.lr = 1e6;
    o.optim.momentum = 0.0;
    o.optim.sched = DWF_SCHED_CONSTANT;
    dwf_err err;
    dwf_err_clear(&err);
    dwf_trainer *t = new_trainer(&a, &o, &blobs_train, &blobs_test);
    int rc = dwf_trainer_run(t, NULL, NULL, NULL, NULL, &err);
    ck_assert_msg(rc == DWF_ENUMERIC, "lr 1e6: rc %d (%s)", rc, err.msg);
    ck_assert_msg(strstr(err.msg, "epoch") != NULL, "message: %s", err.msg);
    dwf_trainer_free(t);
}
END_TEST

/* A NaN in one input sample must stop the run with DWF_ENUMERIC, for a
 * linear model (the NaN reaches the loss at once) and for an MLP (where a
 * relu turns the NaN activation into 0 and the NaN only shows in the
 * first layer's weight gradient and from there in its factors). */
START_TEST(test_nan_input)
{
    dwf_dataset bad;
    tu_make_blobs(&bad, 600, 8, 3, 1.5, 11, 1);
    bad.x_f32[123 * 8 + 5] = NAN;
    dwf_err err;
    for (int hidden = 0; hidden < 2; hidden++) {
        dwf_arch a;
        if (hidden) {
            mlp_arch(&a, 12, 3);
        } else {
            ck_assert_int_eq(dwf_arch_mlp(&a, 8, 1, 1, NULL, 0, 3, 3, &err), 0);
        }
        dwf_train_opts o = small_opts();
        o.epochs = 2;
        dwf_err_clear(&err);
        dwf_trainer *t = new_trainer(&a, &o, &bad, &blobs_test);
        int rc = dwf_trainer_run(t, NULL, NULL, NULL, NULL, &err);
        const dwf_metrics *m = dwf_trainer_metrics(t);
        ck_assert_msg(rc == DWF_ENUMERIC,
                      "%s with a NaN input: rc %d (%s); train loss %g, "
                      "penalty %g, test acc %g",
                      hidden ? "MLP" : "linear model", rc, err.msg,
                      m->train_loss, m->train_penalty, m->test_acc);
        ck_assert(strlen(err.msg) > 0);
        dwf_trainer_free(t);
    }
    dwf_dataset_free(&bad);
}
END_TEST

/* ---- learning --------------------------------------------------------- */

START_TEST(test_mlp_learns)
{
    dwf_arch a;
    mlp_arch(&a, 16, 3);
    dwf_train_opts o = small_opts();
    o.epochs = 5;
    dwf_err err;
    recorder r = {0};
    dwf_trainer *t = new_trainer(&a, &o, &blobs_train, &blobs_test);
    ck_assert_int_eq(dwf_trainer_run(t, rec_epoch, NULL, &r, NULL, &err), 0);
    const dwf_metrics *m = &r.m[r.n - 1];
    ck_assert_msg(m->test_acc > 0.9, "MLP test accuracy %g", m->test_acc);
    ck_assert_msg(m->train_loss < r.m[0].train_loss, "train loss %g -> %g",
                  r.m[0].train_loss, m->train_loss);
    ck_assert(m->weights == 8 * 16 + 16 * 3 && m->params == m->weights + 16 + 3);
    ck_assert_int_eq(m->n_layers, 2);
    ck_assert_str_eq(m->layers[0].name, "dense0");
    ck_assert_str_eq(m->layers[1].name, "dense1");
    ck_assert(m->step == 5 * 19 && m->epochs == 5);
    ck_assert(isnan(m->val_acc));
    dwf_trainer_free(t);
}
END_TEST

START_TEST(test_cnn_learns)
{
    dwf_dataset train, test;
    make_bars(&train, 900, 21);
    make_bars(&test, 300, 22);
    dwf_arch a;
    dwf_err err;
    dwf_arch_init(&a, 1, 8, 8, 3, 2);
    const dwf_layer_spec ls[] = {
        {.kind = DWF_LAYER_CONV2D, .filters = 4, .kernel = 3, .padding = 1},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_MAXPOOL2D, .kernel = 2},
        {.kind = DWF_LAYER_FLATTEN},
        {.kind = DWF_LAYER_DENSE, .units = 3},
    };
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        ck_assert_int_eq(dwf_arch_add(&a, &ls[i], &err), 0);
    dwf_train_opts o = small_opts();
    o.epochs = 12;
    o.optim.lr = 0.05;
    recorder r = {0};
    dwf_trainer *t = new_trainer(&a, &o, &train, &test);
    int rc = dwf_trainer_run(t, rec_epoch, NULL, &r, NULL, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    const dwf_metrics *m = &r.m[r.n - 1];
    ck_assert_msg(m->test_acc > 0.8, "CNN test accuracy %g (first epoch %g)",
                  m->test_acc, r.m[0].test_acc);
    ck_assert_int_eq(m->n_layers, 2);
    ck_assert_str_eq(m->layers[0].name, "conv0");
    ck_assert(m->layers[0].total == 4 * 9 && m->layers[1].total == 4 * 4 * 4 * 3);
    dwf_trainer_free(t);
    dwf_dataset_free(&train);
    dwf_dataset_free(&test);
}
END_TEST

/* ---- Fashion-MNIST ---------------------------------------------------- */

static void load_fmnist(dwf_dataset *train, int n_train, dwf_dataset *test,
                        int n_test)
{
    dwf_dataset full;
    dwf_err err;
    int rc = dwf_idx_load(FMNIST_DIR "/train-images-idx3-ubyte.gz",
                          FMNIST_DIR "/train-labels-idx1-ubyte.gz", 10, &full,
                          &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    ck_assert_int_eq(full.n, 60000);
    ck_assert_int_eq(full.dim, 784);
    rc = dwf_dataset_head(&full, n_train, train, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    dwf_dataset_free(&full);
    rc = dwf_idx_load(FMNIST_DIR "/t10k-images-idx3-ubyte.gz",
                      FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", 10, &full, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    rc = dwf_dataset_head(&full, n_test, test, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    dwf_dataset_free(&full);
    ck_assert(train->x_u8 != NULL && train->n == n_train && test->n == n_test);
}

/*
 * MLP 784-100-10 at D = 3 on 4000 training and 1000 test images, Adam at a
 * constant 0.004, batch 32 (125 steps an epoch).
 *  - lambda 1e-4, 4 epochs: it learns (test accuracy > 0.75) and stays
 *    dense;
 *  - lambda 3e-3, 6 epochs: unneeded factors shrink to ~0 (w = f1 f2 f3
 *    falls below eps = 1.19e-7 once each |f| < ~5e-3), CR > 5, and the
 *    thresholded sparse model keeps the dense model's accuracy (> 0.6).
 * Measured: the sparse run ends at CR 48-60 with accuracy 0.75-0.77 over
 * seeds 1-6 (lambda 4e-3: CR ~95, 0.74), so both margins are wide.
 */
START_TEST(test_fmnist)
{
    dwf_dataset train, test;
    load_fmnist(&train, 4000, &test, 1000);
    dwf_arch a;
    dwf_err err;
    int hidden[1] = {100};
    ck_assert_int_eq(dwf_arch_mlp(&a, 1, 28, 28, hidden, 1, 10, 3, &err), 0);
    dwf_train_opts o;
    dwf_train_opts_default(&o);
    o.seed = 1;
    o.batch_size = 32;
    o.optim.kind = DWF_OPT_ADAM;
    o.optim.lr = 0.004;
    o.optim.sched = DWF_SCHED_CONSTANT;

    /* learns, stays dense */
    o.lambda = 1e-4;
    o.epochs = 4;
    recorder r = {0};
    dwf_trainer *t = new_trainer(&a, &o, &train, &test);
    int rc = dwf_trainer_run(t, rec_epoch, NULL, &r, NULL, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    const dwf_metrics *m = &r.m[r.n - 1];
    fprintf(stderr, "fashion-mnist lambda %g: test acc %.3f, CR %.2f\n",
            o.lambda, m->test_acc, m->cr);
    ck_assert_msg(m->test_acc > 0.75, "test accuracy %g", m->test_acc);
    ck_assert_msg(m->cr < 2.0, "small lambda: CR %g", m->cr);
    ck_assert(m->weights == 784 * 100 + 100 * 10);
    dwf_trainer_free(t);

    /* large lambda: sparse, still accurate */
    o.lambda = 3e-3;
    o.epochs = 6;
    memset(&r, 0, sizeof r);
    t = new_trainer(&a, &o, &train, &test);
    rc = dwf_trainer_run(t, rec_epoch, NULL, &r, NULL, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    m = &r.m[r.n - 1];
    fprintf(stderr,
            "fashion-mnist lambda %g: test acc %.3f, sparse acc %.3f, CR %.2f "
            "(%lld of %lld weights)\n",
            o.lambda, m->test_acc, m->sparse_test_acc, m->cr,
            (long long)m->nonzero, (long long)m->weights);
    ck_assert_msg(m->cr > 5.0, "large lambda: CR %g", m->cr);
    ck_assert_msg(m->sparse_test_acc > 0.6, "sparse test accuracy %g",
                  m->sparse_test_acc);
    ck_assert_msg(fabs(m->sparse_test_acc - m->test_acc) < 0.02,
                  "sparse %g vs dense %g", m->sparse_test_acc, m->test_acc);
    /* the count is the model's: recount at the threshold */
    dwf_metrics cnt;
    memset(&cnt, 0, sizeof cnt);
    dwf_count_sparsity(dwf_trainer_model(t), (float)DWF_EPS_F32, &cnt);
    ck_assert(cnt.nonzero == m->nonzero && cnt.weights == m->weights);
    dwf_trainer_free(t);
    dwf_dataset_free(&train);
    dwf_dataset_free(&test);
}
END_TEST

/* ---- the first layer's outputs kept for threshold curves -------------- */

typedef struct keep_log {
    dwf_trainer *t;
    int kept[8][2];
    int n;
} keep_log;

static int log_kept(const dwf_metrics *m, void *ud)
{
    keep_log *l = ud;
    (void)m;
    for (int k = 0; k < 2 && l->n < 8; k++)
        l->kept[l->n][k] = dwf_trainer_layer0(l->t, k) != NULL;
    l->n++;
    return 0;
}

/* Kept after epochs that are multiples of every and after the last one;
 * they are bias + W x of the model at eps_prune (checked against a plain
 * double sum), also when 2 threads split the evaluation's batches; gone
 * after a restore and with every = 0. */
START_TEST(test_keep_layer0)
{
    dwf_arch a;
    mlp_arch(&a, 16, 3);
    dwf_train_opts o = small_opts();
    o.epochs = 3;
    o.threads = 1 + _i;
    o.eps_prune = 1e-2; /* some weights fall below it */
    dwf_trainer *t = NULL;
    dwf_err err;
    ck_assert_int_eq(dwf_trainer_create(&a, &o, &blobs_train, &blobs_test, &blobs_test, &t,
                                        &err), 0);
    ck_assert_int_eq(dwf_trainer_keep_layer0(t, 2, &err), 0);
    ck_assert_ptr_null(dwf_trainer_layer0(t, 1));
    keep_log l = {t, {{0}}, 0};
    ck_assert_int_eq(dwf_trainer_run(t, log_kept, NULL, &l, NULL, &err), 0);
    ck_assert_int_eq(l.n, 3);
    ck_assert(!l.kept[0][0] && !l.kept[0][1]);
    ck_assert(l.kept[1][0] && l.kept[1][1] && l.kept[2][0] && l.kept[2][1]);
    ck_assert(dwf_trainer_metrics(t)->params_nonzero < dwf_trainer_metrics(t)->params);
    /* every dense layer of this MLP (16 hidden units, 3 classes): its
     * outputs from the previous one's (relu) or the input */
    dwf_model *m = dwf_trainer_model(t);
    int dense[4], nd = 0;
    for (int li = 0; li < a.n_layers; li++)
        if (a.layers[li].kind == DWF_LAYER_DENSE)
            dense[nd++] = li;
    ck_assert_int_eq(nd, 2);
    ck_assert_ptr_null(dwf_trainer_layer_out(t, 0, nd));
    float *x = malloc((size_t)(blobs_test.dim + 64) * sizeof *x); /* input or hidden */
    ck_assert_ptr_nonnull(x);
    for (int k = 0; k < 2; k++)
        for (int dl = 0; dl < nd; dl++) {
            int li = dense[dl], units = a.layers[li].units;
            int dim = dl == 0 ? blobs_test.dim : a.layers[dense[dl - 1]].units;
            const dwf_param *w = &m->params[m->weight_idx[li]], *b = &m->params[m->bias_idx[li]];
            const float *z = dwf_trainer_layer_out(t, k, dl);
            ck_assert_ptr_nonnull(z);
            if (dl == 0)
                ck_assert_ptr_eq(z, dwf_trainer_layer0(t, k));
            for (int j = 0; j < blobs_test.n; j++) {
                if (dl == 0) {
                    dwf_dataset_range(&blobs_test, dwf_trainer_norm(t), j, 1, x, NULL);
                } else {
                    const float *p = dwf_trainer_layer_out(t, k, dl - 1) + (size_t)j * dim;
                    for (int c = 0; c < dim; c++)
                        x[c] = p[c] > 0.0f ? p[c] : 0.0f;
                }
                for (int r = 0; r < units; r++) {
                    float bv = b->w[r];
                    double want = fabsf(bv) >= o.eps_prune ? bv : 0.0, mag = fabs(want);
                    for (int c = 0; c < dim; c++) {
                        float wv = w->w[(size_t)r * dim + c];
                        if (fabsf(wv) >= o.eps_prune) {
                            want += (double)wv * x[c];
                            mag += fabs((double)wv * x[c]);
                        }
                    }
                    double got = z[(size_t)j * units + r];
                    ck_assert_msg(fabs(got - want) <= 1e-5 * (1.0 + mag),
                                  "set %d sample %d layer %d unit %d: %g, want %g", k, j, dl,
                                  r, got, want);
                }
            }
        }
    free(x);
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(dwf_trainer_checkpoint(t, &buf, &len, &err), 0);
    ck_assert_int_eq(dwf_trainer_restore(t, buf, len, &err), 0);
    ck_assert_ptr_null(dwf_trainer_layer0(t, 0));
    dwf_metrics mt;
    ck_assert_int_eq(dwf_trainer_evaluate(t, &mt, &err), 0);
    ck_assert_ptr_nonnull(dwf_trainer_layer0(t, 0));
    ck_assert_int_eq(dwf_trainer_keep_layer0(t, 0, &err), 0);
    ck_assert_ptr_null(dwf_trainer_layer0(t, 0));
    free(buf);
    dwf_trainer_free(t);
}
END_TEST

static Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("loop");
    tcase_add_checked_fixture(tc, blobs_setup, blobs_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_same_seed_same_run);
    tcase_add_loop_test(tc, test_checkpoint_resume, 0, 3);
    tcase_add_test(tc, test_checkpoint_refused);
    tcase_add_test(tc, test_checkpoint_corrupt);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_nan_lr);
    tcase_add_test(tc, test_nan_input);
    tcase_add_test(tc, test_mlp_learns);
    tcase_add_test(tc, test_cnn_learns);
    tcase_add_loop_test(tc, test_keep_layer0, 0, 2);
    suite_add_tcase(s, tc);
    TCase *tf = tcase_create("fashion-mnist");
    tcase_set_timeout(tf, 300);
    tcase_add_test(tf, test_fmnist);
    suite_add_tcase(s, tf);
    return s;
}

int main(void)
{
    return tu_run(train_suite());
}
