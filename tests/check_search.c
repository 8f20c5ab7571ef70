/*
 * check_search.c - target-CR search (dwf_search.h): the decision rules on
 * model CR curves, and a real search over DWF training runs on a small
 * synthetic problem that must reach its target within its budget.
 */
#include <math.h>

#include "dwf_arch.h"
#include "dwf_search.h"
#include "dwf_train.h"
#include "testutil.h"

/* Runs a search against cr(lambda) = fn; returns the final step and the
 * number of runs used. */
typedef double (*cr_fn)(double lambda, void *ud);

static dwf_search_step drive(const dwf_search_opts *o, cr_fn fn, void *ud,
                             dwf_search_run *runs, int *n_out)
{
    dwf_search_step st;
    dwf_err e;
    int n = 0;
    for (;;) {
        ck_assert_int_eq(dwf_search_next(o, runs, n, &st, &e), 0);
        if (st.status != DWF_SEARCH_NEXT)
            break;
        ck_assert(st.next_lambda >= o->lambda_min && st.next_lambda <= o->lambda_max);
        for (int i = 0; i < n; i++) /* never the same lambda twice */
            ck_assert(fabs(runs[i].lambda / st.next_lambda - 1) > 1e-9);
        ck_assert_int_lt(n, 100);
        runs[n].lambda = st.next_lambda;
        runs[n].state = DWF_SEARCH_RUN_OK;
        runs[n].cr = fn(st.next_lambda, ud);
        runs[n].val_acc = 0.9 - 0.01 * n;
        n++;
    }
    *n_out = n;
    return st;
}

/* A steep power law like DWF's: CR = target at lambda = *ud, slope 6 on
 * log-log, never below 1. */
static double power_law(double lambda, void *ud)
{
    double star = *(double *)ud;
    double cr = 20.0 * pow(lambda / star, 6.0);
    return cr < 1.0 ? 1.0 : cr;
}

START_TEST(t_reaches_power_law)
{
    dwf_search_opts o;
    dwf_search_opts_default(&o);
    o.target_cr = 20;
    o.budget = 10;
    dwf_search_run runs[100];
    int worst = 0;
    for (double star = 2e-4; star < 0.25; star *= 1.7) {
        int n;
        dwf_search_step st = drive(&o, power_law, &star, runs, &n);
        CHECK_MSG(st.status == DWF_SEARCH_REACHED,
                  "lambda* %g: status %s after %d runs", star,
                  dwf_search_status_name(st.status), n);
        ck_assert(st.best >= 0 && st.best < n);
        ck_assert(dwf_search_within(&o, runs[st.best].cr));
        ck_assert(st.best == n - 1); /* stops at the first hit */
        if (n > worst)
            worst = n;
    }
    ck_assert_int_le(worst, o.budget);
}
END_TEST

/* CR jumps from 1 to 1000 at lambda = 0.01: no lambda can hit 20. */
static double step_fn(double lambda, void *ud)
{
    (void)ud;
    return lambda < 0.01 ? 1.0 : 1000.0;
}

START_TEST(t_budget_and_unreachable)
{
    dwf_search_opts o;
    dwf_search_opts_default(&o);
    o.target_cr = 20;
    o.budget = 5;
    dwf_search_run runs[100];
    int n;
    dwf_search_step st = drive(&o, step_fn, NULL, runs, &n);
    ck_assert_int_eq(st.status, DWF_SEARCH_BUDGET);
    ck_assert_int_eq(n, 5);
    ck_assert(st.best >= 0);
    /* with a big budget the bracket collapses around the jump */
    o.budget = 100;
    st = drive(&o, step_fn, NULL, runs, &n);
    ck_assert_int_eq(st.status, DWF_SEARCH_UNREACHABLE);
    ck_assert(st.lo < 0.01 && st.hi >= 0.01 && st.hi / st.lo < 1.01);
    /* even lambda_max is not sparse enough: unreachable at once */
    o.lambda0 = o.lambda_max;
    runs[0] = (dwf_search_run){o.lambda_max, DWF_SEARCH_RUN_OK, 3.0, 0.8};
    dwf_err e;
    ck_assert_int_eq(dwf_search_next(&o, runs, 1, &st, &e), 0);
    ck_assert_int_eq(st.status, DWF_SEARCH_UNREACHABLE);
}
END_TEST

START_TEST(t_failed_pending_canceled)
{
    dwf_search_opts o;
    dwf_search_opts_default(&o);
    o.target_cr = 20;
    dwf_search_step st;
    dwf_err e;
    dwf_search_run runs[3] = {
        {0.01, DWF_SEARCH_RUN_FAILED, NAN, NAN},
    };
    ck_assert_int_eq(dwf_search_next(&o, runs, 1, &st, &e), 0);
    ck_assert_int_eq(st.status, DWF_SEARCH_NEXT);
    ck_assert(st.hi == 0.01);                 /* failed = too large */
    ck_assert(st.next_lambda < 0.01);
    ck_assert_int_eq(st.best, -1);
    runs[1] = (dwf_search_run){st.next_lambda, DWF_SEARCH_RUN_PENDING, NAN, NAN};
    ck_assert_int_eq(dwf_search_next(&o, runs, 2, &st, &e), 0);
    ck_assert_int_eq(st.status, DWF_SEARCH_WAIT);
    runs[1].state = DWF_SEARCH_RUN_CANCELED;
    ck_assert_int_eq(dwf_search_next(&o, runs, 2, &st, &e), 0);
    ck_assert_int_eq(st.status, DWF_SEARCH_CANCELED);
    /* a run whose dense model learned nothing (at chance) also means "too
     * large", even at a CR within the tolerance, and is never the best */
    dwf_search_run cr[2] = {
        {0.002, DWF_SEARCH_RUN_OK, 5.0, 0.80},
        {0.05, DWF_SEARCH_RUN_COLLAPSED, 20.0, 0.10},
    };
    ck_assert_int_eq(dwf_search_next(&o, cr, 2, &st, &e), 0);
    ck_assert_int_eq(st.status, DWF_SEARCH_NEXT);
    ck_assert(st.lo == 0.002 && st.hi == 0.05);
    ck_assert(st.next_lambda > 0.002 && st.next_lambda < 0.05);
    ck_assert_int_eq(st.best, 0);
    /* invalid options name the field */
    o.budget = 0;
    ck_assert_int_eq(dwf_search_next(&o, runs, 0, &st, &e), DWF_EINVAL);
    ck_assert(strstr(e.msg, "search.budget") != NULL);
    dwf_search_opts_default(&o);
    o.lambda_max = o.lambda_min;
    ck_assert_int_eq(dwf_search_opts_check(&o, &e), DWF_EINVAL);
    ck_assert(strstr(e.msg, "search.lambda_max") != NULL);
}
END_TEST

START_TEST(t_best_is_by_validation)
{
    dwf_search_opts o;
    dwf_search_opts_default(&o);
    o.target_cr = 20;
    dwf_search_step st;
    dwf_err e;
    dwf_search_run runs[4] = {
        {0.010, DWF_SEARCH_RUN_OK, 19.5, 0.70}, /* hit, closest */
        {0.011, DWF_SEARCH_RUN_OK, 21.5, 0.80}, /* hit, best validation */
        {0.005, DWF_SEARCH_RUN_OK, 5.0, 0.95},  /* no hit */
        {0.020, DWF_SEARCH_RUN_OK, INFINITY, 0.10},
    };
    ck_assert_int_eq(dwf_search_next(&o, runs, 4, &st, &e), 0);
    ck_assert_int_eq(st.status, DWF_SEARCH_REACHED);
    ck_assert_int_eq(st.best, 1);
    /* without hits the closest CR is reported */
    runs[0].cr = 30;
    runs[1].cr = 45;
    o.budget = 4;
    ck_assert_int_eq(dwf_search_next(&o, runs, 4, &st, &e), 0);
    ck_assert_int_eq(st.status, DWF_SEARCH_BUDGET);
    ck_assert_int_eq(st.best, 0);
}
END_TEST

/* ---- a real search over DWF training runs -------------------------------- */

typedef struct problem {
    dwf_dataset train, val;
    dwf_arch arch;
    int runs;
} problem;

/* Trains DWF (D = 3) at lambda; the CR of the eps model. */
static double train_cr(double lambda, void *ud)
{
    problem *p = ud;
    dwf_train_opts o;
    dwf_train_opts_default(&o);
    o.seed = 11;
    o.epochs = 40;
    o.batch_size = 32;
    o.lambda = lambda;
    o.optim.lr = 0.3;
    o.optim.sched = DWF_SCHED_COSINE;
    dwf_trainer *t = NULL;
    dwf_err e;
    int rc = dwf_trainer_create(&p->arch, &o, &p->train, &p->val, NULL, &t, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    rc = dwf_trainer_run(t, NULL, NULL, NULL, NULL, &e);
    double cr = INFINITY;
    if (rc == 0)
        cr = dwf_trainer_metrics(t)->cr;
    else
        ck_assert_msg(rc == DWF_ENUMERIC, "%s", e.msg);
    dwf_trainer_free(t);
    p->runs++;
    return cr;
}

START_TEST(t_search_real_training)
{
    problem p;
    memset(&p, 0, sizeof p);
    tu_make_blobs(&p.train, 600, 16, 4, 1.0, 3, 4);
    tu_make_blobs(&p.val, 200, 16, 4, 1.0, 3, 5);
    dwf_err e;
    int hidden[1] = {48};
    ck_assert_int_eq(dwf_arch_mlp(&p.arch, 16, 1, 1, hidden, 1, 4, 3, &e), 0);
    dwf_search_opts o;
    dwf_search_opts_default(&o);
    o.target_cr = 8;
    o.budget = 10;
    o.lambda_min = 1e-3;
    o.lambda_max = 1.0;
    dwf_search_run runs[100];
    int n;
    dwf_search_step st = drive(&o, train_cr, &p, runs, &n);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "search run %d: lambda %.4g -> CR %.3g\n", i, runs[i].lambda,
                runs[i].cr);
    CHECK_MSG(st.status == DWF_SEARCH_REACHED, "status %s after %d runs",
              dwf_search_status_name(st.status), n);
    ck_assert_int_le(n, o.budget);
    ck_assert_int_eq(p.runs, n);
    ck_assert(fabs(runs[st.best].cr / o.target_cr - 1) <= o.tolerance);
    dwf_dataset_free(&p.train);
    dwf_dataset_free(&p.val);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("search");
    TCase *tc = tcase_create("search");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, t_reaches_power_law);
    tcase_add_test(tc, t_budget_and_unreachable);
    tcase_add_test(tc, t_failed_pending_canceled);
    tcase_add_test(tc, t_best_is_by_validation);
    tcase_add_test(tc, t_search_real_training);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
