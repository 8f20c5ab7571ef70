/*
 * check_workers.c - multi-threaded training (core/dwf_workers.c and the
 * threads > 1 paths of dwf_optim, dwf_model and dwf_train): every lane of a
 * team runs exactly once per run; the threaded update with an extra
 * gradient equals the single-threaded update of the summed gradient bit for
 * bit, for every optimizer and with masks; a data-parallel training run is
 * deterministic, resumes bit-identically from a checkpoint, handles a last
 * batch smaller than the number of lanes, and learns like threads = 1.
 */
#include "testutil.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>

#include "dwf_data.h"
#include "dwf_optim.h"
#include "dwf_train.h"
#include "dwf_workers.h"

/* ---- the team --------------------------------------------------------- */

typedef struct count_job {
    int calls[DWF_MAX_THREADS];
    long sum[DWF_MAX_THREADS];
    int round;
} count_job;

static void count_fn(void *arg, int lane)
{
    count_job *j = arg;
    j->calls[lane]++;
    j->sum[lane] += j->round;
}

START_TEST(test_team)
{
    dwf_err err;
    dwf_workers *w = NULL;
    ck_assert_int_eq(dwf_workers_create(0, &w, &err), DWF_EINVAL);
    ck_assert_ptr_null(w);
    ck_assert_int_eq(dwf_workers_create(DWF_MAX_THREADS + 1, &w, &err), DWF_EINVAL);
    for (int n = 1; n <= 4; n++) {
        ck_assert_int_eq(dwf_workers_create(n, &w, &err), 0);
        ck_assert_int_eq(dwf_workers_count(w), n);
        count_job j = {{0}, {0}, 0};
        const int rounds = 2000;
        for (int r = 0; r < rounds; r++) {
            j.round = r;
            dwf_workers_run(w, count_fn, &j);
            /* the helpers' writes are visible when run returns */
            for (int k = 0; k < n; k++)
                CHECK_MSG(j.calls[k] == r + 1, "team %d lane %d: %d calls after %d runs",
                          n, k, j.calls[k], r + 1);
        }
        for (int k = 0; k < n; k++)
            CHECK(j.sum[k] == (long)rounds * (rounds - 1) / 2);
        for (int k = n; k < DWF_MAX_THREADS; k++)
            CHECK(j.calls[k] == 0);
        dwf_workers_free(w);
    }
    /* a team that never ran stops cleanly */
    ck_assert_int_eq(dwf_workers_create(3, &w, &err), 0);
    dwf_workers_free(w);
    dwf_workers_free(NULL);
}
END_TEST

/* ---- threaded update == single-threaded update of the sum -------------- */

static void alloc_param(dwf_param *p, int64_t n, int depth, int decay)
{
    dwf_err err;
    ck_assert_int_eq(dwf_param_alloc(p, n, depth, decay, &err), 0);
}

static dwf_optim_opts opts_of(dwf_optim_kind kind, double mu, int nesterov)
{
    dwf_optim_opts o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.lr = 0.1;
    o.momentum = mu;
    o.nesterov = nesterov;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.adam_eps = 1e-8;
    return o;
}

START_TEST(test_update_threads)
{
    const dwf_optim_opts cases[] = {
        opts_of(DWF_OPT_SGD, 0.0, 0), opts_of(DWF_OPT_SGD, 0.9, 0),
        opts_of(DWF_OPT_SGD, 0.9, 1), opts_of(DWF_OPT_ADAM, 0.0, 0)};
    /* blocks of DWF_PARAM_BLOCK spread unevenly over the parameters */
    enum { NP = 4 };
    const int depths[NP] = {3, 1, 4, 2};
    static const unsigned sizes[NP] = {2100, 513, 1500, 7};
    dwf_err err;
    for (int ci = 0; ci < 4; ci++) {
        for (int masked = 0; masked < 2; masked++) {
            dwf_param a[NP], b[NP];
            dwf_param *pa[NP], *pb[NP];
            float *gx[NP];
            dwf_rng rng;
            dwf_rng_seed(&rng, 80 + (uint64_t)ci * 2 + (uint64_t)masked);
            for (int k = 0; k < NP; k++) {
                alloc_param(&a[k], sizes[k], depths[k], k != 1);
                alloc_param(&b[k], sizes[k], depths[k], k != 1);
                for (int d = 0; d < depths[k]; d++)
                    for (int64_t i = 0; i < sizes[k]; i++) {
                        float v = (float)(0.3 + dwf_rng_uniform(&rng));
                        a[k].f[d][i] = b[k].f[d][i] =
                            dwf_rng_uniform(&rng) < 0.5 ? -v : v;
                    }
                if (masked && k != 3) {
                    uint8_t *mask = malloc((size_t)sizes[k]);
                    for (int64_t i = 0; i < sizes[k]; i++)
                        mask[i] = dwf_rng_uniform(&rng) < 0.7;
                    ck_assert_int_eq(dwf_param_set_mask(&a[k], mask, &err), 0);
                    ck_assert_int_eq(dwf_param_set_mask(&b[k], mask, &err), 0);
                    free(mask);
                }
                dwf_param_collapse(&a[k]);
                dwf_param_collapse(&b[k]);
                gx[k] = malloc((size_t)sizes[k] * sizeof(float));
                pa[k] = &a[k];
                pb[k] = &b[k];
            }
            dwf_optim oa, ob;
            ck_assert_int_eq(dwf_optim_create(&oa, &cases[ci], pa, NP, &err), 0);
            ck_assert_int_eq(dwf_optim_create(&ob, &cases[ci], pb, NP, &err), 0);
            ck_assert_int_eq(dwf_optim_set_threads(&oa, 2, &err), 0);
            ck_assert_ptr_nonnull(oa.workers);
            for (int step = 0; step < 4; step++) {
                double lr = 0.05 * (step + 1);
                for (int k = 0; k < NP; k++)
                    for (int64_t i = 0; i < sizes[k]; i++) {
                        a[k].gw[i] = (float)dwf_rng_normal(&rng);
                        gx[k][i] = (float)dwf_rng_normal(&rng);
                        b[k].gw[i] = a[k].gw[i] + gx[k][i];
                    }
                double pen_a = dwf_optim_update_sum(&oa, lr, 0.03, 1, gx);
                double pen_b = dwf_optim_update(&ob, lr, 0.03);
                CHECK_MSG(pen_a == pen_b, "optim %d: penalty %.17g vs %.17g", ci,
                          pen_a, pen_b);
                for (int k = 0; k < NP; k++) {
                    for (int d = 0; d < depths[k]; d++)
                        CHECK_MSG(memcmp(a[k].f[d], b[k].f[d],
                                         (size_t)sizes[k] * sizeof(float)) == 0,
                                  "optim %d masked %d step %d param %d factor %d differs",
                                  ci, masked, step, k, d);
                    CHECK(memcmp(a[k].w, b[k].w, (size_t)sizes[k] * sizeof(float)) == 0);
                }
            }
            if (oa.n_floats)
                CHECK(memcmp(oa.state, ob.state, (size_t)oa.n_floats * sizeof(float)) == 0);
            /* back to one thread */
            ck_assert_int_eq(dwf_optim_set_threads(&oa, 1, &err), 0);
            ck_assert_ptr_null(oa.workers);
            ck_assert_int_eq(dwf_optim_set_threads(&oa, 0, &err), DWF_EINVAL);
            dwf_optim_free(&oa);
            dwf_optim_free(&ob);
            for (int k = 0; k < NP; k++) {
                dwf_param_free(&a[k]);
                dwf_param_free(&b[k]);
                free(gx[k]);
            }
        }
    }
}
END_TEST

/* ---- data-parallel training ------------------------------------------- */


static void mlp(dwf_arch *a, int depth)
{
    dwf_err err;
    int hidden[2] = {24, 12};
    ck_assert_int_eq(dwf_arch_mlp(a, 16, 1, 1, hidden, 2, 4, depth, &err), 0);
}

static dwf_train_opts small_opts(int threads, int epochs)
{
    dwf_train_opts o;
    dwf_train_opts_default(&o);
    o.epochs = epochs;
    o.batch_size = 16;
    o.lambda = 1e-3;
    o.optim.lr = 0.1;
    o.threads = threads;
    return o;
}

static dwf_trainer *new_trainer(const dwf_arch *a, const dwf_train_opts *o,
                                const dwf_dataset *train, const dwf_dataset *test)
{
    dwf_err err = {0};
    dwf_trainer *t = NULL;
    int rc = dwf_trainer_create(a, o, train, NULL, test, &t, &err);
    ck_assert_msg(rc == 0, "trainer: %s", err.msg);
    return t;
}

static void run_all(dwf_trainer *t)
{
    dwf_err err = {0};
    int rc = dwf_trainer_run(t, NULL, NULL, NULL, NULL, &err);
    ck_assert_msg(rc == 0, "run: %s", err.msg);
}

/* Every factor of a and b equal bit for bit. */
static int same_factors(dwf_trainer *a, dwf_trainer *b)
{
    dwf_model *ma = dwf_trainer_model(a), *mb = dwf_trainer_model(b);
    for (int i = 0; i < ma->n_params; i++)
        for (int d = 0; d < ma->params[i].depth; d++)
            if (memcmp(ma->params[i].f[d], mb->params[i].f[d],
                       (size_t)ma->params[i].n * sizeof(float)) != 0)
                return 0;
    return 1;
}

START_TEST(test_train_threads)
{
    dwf_dataset train, test;
    /* 203 samples at batch 16: the last batch has 11 */
    tu_make_blobs(&train, 203, 16, 4, 1.5, 1, 5);
    tu_make_blobs(&test, 100, 16, 4, 1.5, 1, 6);
    for (int depth = 1; depth <= 3; depth += 2) {
        dwf_arch a;
        mlp(&a, depth);
        dwf_train_opts o2 = small_opts(2, 3), o1 = small_opts(1, 3);
        dwf_trainer *t1 = new_trainer(&a, &o2, &train, &test);
        dwf_trainer *t2 = new_trainer(&a, &o2, &train, &test);
        dwf_trainer *s = new_trainer(&a, &o1, &train, &test);
        ck_assert_int_eq(dwf_trainer_model(t1)->n_lanes, 2);
        run_all(t1);
        run_all(t2);
        run_all(s);
        CHECK_MSG(same_factors(t1, t2), "D=%d: two runs with 2 threads differ", depth);
        const dwf_metrics *m1 = dwf_trainer_metrics(t1), *ms = dwf_trainer_metrics(s);
        CHECK(m1->train_loss == dwf_trainer_metrics(t2)->train_loss);
        /* the same training up to the rounding of the gradient sums */
        CHECK_MSG(fabs(m1->train_loss - ms->train_loss) < 1e-3 * (1.0 + ms->train_loss),
                  "D=%d: loss %.6f with 2 threads, %.6f with 1", depth,
                  m1->train_loss, ms->train_loss);
        CHECK_MSG(m1->test_acc > 0.9 && fabs(m1->test_acc - ms->test_acc) <= 0.02,
                  "D=%d: test acc %.3f with 2 threads, %.3f with 1", depth,
                  m1->test_acc, ms->test_acc);
        dwf_trainer_free(t1);
        dwf_trainer_free(t2);
        dwf_trainer_free(s);
    }
    dwf_dataset_free(&train);
    dwf_dataset_free(&test);
}
END_TEST

static atomic_int g_cancel;
static int g_batches;

static void cancel_after(int epoch, int batch, int n_batches, void *ud)
{
    (void)epoch;
    (void)batch;
    (void)n_batches;
    (void)ud;
    if (++g_batches == 17)
        atomic_store(&g_cancel, 1);
}

/* Stopped in the middle of an epoch, checkpointed and restored into a fresh
 * trainer, a 2-thread run ends exactly where an uninterrupted one does. */
START_TEST(test_resume_threads)
{
    dwf_dataset train;
    tu_make_blobs(&train, 203, 16, 4, 1.5, 1, 7);
    dwf_arch a;
    mlp(&a, 2);
    dwf_train_opts o = small_opts(2, 3);
    o.optim.momentum = 0.9;
    dwf_trainer *ref = new_trainer(&a, &o, &train, NULL);
    run_all(ref);
    dwf_trainer *t = new_trainer(&a, &o, &train, NULL);
    dwf_err err = {0};
    atomic_store(&g_cancel, 0);
    g_batches = 0;
    ck_assert_int_eq(dwf_trainer_run(t, NULL, cancel_after, NULL, &g_cancel, &err),
                     DWF_ECANCELED);
    uint8_t *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(dwf_trainer_checkpoint(t, &buf, &len, &err), 0);
    dwf_trainer_free(t);
    dwf_trainer *r = new_trainer(&a, &o, &train, NULL);
    ck_assert_int_eq(dwf_trainer_restore(r, buf, len, &err), 0);
    run_all(r);
    CHECK(same_factors(ref, r));
    CHECK(dwf_trainer_metrics(ref)->train_loss == dwf_trainer_metrics(r)->train_loss);
    free(buf);
    dwf_trainer_free(ref);
    dwf_trainer_free(r);
    dwf_dataset_free(&train);
}
END_TEST

/* A last batch of one sample with 2 and 3 lanes (some lanes get nothing:
 * their stale gradients must not leak into the step). */
START_TEST(test_tiny_last_batch)
{
    dwf_dataset train;
    tu_make_blobs(&train, 33, 16, 4, 1.5, 1, 9);
    dwf_arch a;
    mlp(&a, 2);
    dwf_train_opts o1 = small_opts(1, 2);
    dwf_trainer *s = new_trainer(&a, &o1, &train, NULL);
    run_all(s);
    for (int n = 2; n <= 3; n++) {
        dwf_train_opts o = small_opts(n, 2);
        dwf_trainer *t = new_trainer(&a, &o, &train, NULL);
        run_all(t);
        double l1 = dwf_trainer_metrics(s)->train_loss, ln = dwf_trainer_metrics(t)->train_loss;
        CHECK_MSG(fabs(l1 - ln) < 1e-4 * (1.0 + l1), "%d lanes: loss %.8f vs %.8f", n, ln, l1);
        /* the weights too: a stale lane gradient would move them far */
        dwf_model *ms = dwf_trainer_model(s), *mt = dwf_trainer_model(t);
        for (int i = 0; i < ms->n_params; i++)
            for (int64_t j = 0; j < ms->params[i].n; j++)
                CHECK_MSG(fabsf(ms->params[i].w[j] - mt->params[i].w[j]) < 1e-4f,
                          "%d lanes: param %d entry %lld: %g vs %g", n, i, (long long)j,
                          mt->params[i].w[j], ms->params[i].w[j]);
        dwf_trainer_free(t);
    }
    dwf_trainer_free(s);
    dwf_dataset_free(&train);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("workers");
    TCase *tc = tcase_create("workers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_team);
    tcase_add_test(tc, test_update_threads);
    tcase_add_test(tc, test_train_threads);
    tcase_add_test(tc, test_resume_threads);
    tcase_add_test(tc, test_tiny_last_batch);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
