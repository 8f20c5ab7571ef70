/*
 * check_lasso.c - the equivalence behind DWF: on a small linear
 * regression, training the D = 2 factorization beta = u * v with the L2
 * penalty (lambda / D)(||u||^2 + ||v||^2), lambda = alpha, reaches the
 * lasso solution min (1/(2n)) ||y - X beta||^2 + alpha ||beta||_1 found by
 * coordinate descent written here: the same coefficients (within 1e-3)
 * and the same exact zeros. The factorized model uses the library's
 * dwf_param (DWF init, factor gradients with the penalty) and dwf_optim
 * (plain full-batch gradient descent).
 */
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#include "dwf_optim.h"
#include "dwf_param.h"
#include "dwf_rng.h"

enum { N = 200, P = 20 };

/* The true model: five non-zero coefficients of decreasing size. With
 * alpha = 0.4 the lasso keeps the first four and sets the fifth (0.3,
 * below alpha) and every noise feature exactly to zero. */
static const double beta_true[P] = {2.0, -1.5, 1.0, 0.6, 0.3};
static const double alpha = 0.4;

typedef struct problem {
    double x[N][P];
    double y[N];
} problem;

static void make_problem(problem *pb, uint64_t seed)
{
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    for (int i = 0; i < N; i++) {
        double s = 0.0;
        for (int j = 0; j < P; j++) {
            pb->x[i][j] = dwf_rng_normal(&r);
            s += pb->x[i][j] * beta_true[j];
        }
        pb->y[i] = s + 0.5 * dwf_rng_normal(&r);
    }
}

/* grad[j] = -(1/n) X_j^T (y - X beta), and the objective's data part. */
static double data_grad(const problem *pb, const double *beta, double *grad)
{
    double loss = 0.0;
    for (int j = 0; j < P; j++)
        grad[j] = 0.0;
    for (int i = 0; i < N; i++) {
        double r = pb->y[i];
        for (int j = 0; j < P; j++)
            r -= pb->x[i][j] * beta[j];
        loss += r * r;
        for (int j = 0; j < P; j++)
            grad[j] -= pb->x[i][j] * r;
    }
    for (int j = 0; j < P; j++)
        grad[j] /= N;
    return loss / (2.0 * N);
}

static double lasso_objective(const problem *pb, const double *beta)
{
    double g[P], l1 = 0.0;
    double loss = data_grad(pb, beta, g);
    for (int j = 0; j < P; j++)
        l1 += fabs(beta[j]);
    return loss + alpha * l1;
}

static double soft(double z, double t)
{
    return z > t ? z - t : z < -t ? z + t : 0.0;
}

/* Cyclic coordinate descent with the residual kept up to date. */
static void lasso_cd(const problem *pb, double *beta)
{
    double r[N], c[P];
    for (int j = 0; j < P; j++) {
        beta[j] = 0.0;
        c[j] = 0.0;
        for (int i = 0; i < N; i++)
            c[j] += pb->x[i][j] * pb->x[i][j];
        c[j] /= N;
    }
    for (int i = 0; i < N; i++)
        r[i] = pb->y[i];
    for (int sweep = 0; sweep < 100000; sweep++) {
        double change = 0.0;
        for (int j = 0; j < P; j++) {
            double rho = 0.0;
            for (int i = 0; i < N; i++)
                rho += pb->x[i][j] * r[i];
            rho = rho / N + c[j] * beta[j];
            double nb = soft(rho, alpha) / c[j];
            double d = nb - beta[j];
            if (d != 0.0) {
                for (int i = 0; i < N; i++)
                    r[i] -= pb->x[i][j] * d;
                beta[j] = nb;
            }
            change = fmax(change, fabs(d));
        }
        if (change < 1e-13)
            return;
    }
    ck_abort_msg("coordinate descent did not converge");
}

START_TEST(test_lasso_equivalence)
{
    static problem pb;
    make_problem(&pb, 2024);

    /* 1. the lasso solution, checked by its optimality conditions */
    double beta[P], g[P];
    lasso_cd(&pb, beta);
    data_grad(&pb, beta, g);
    int n_nonzero = 0;
    double min_slack = INFINITY;
    for (int j = 0; j < P; j++) {
        if (beta[j] != 0.0) {
            n_nonzero++;
            ck_assert_msg(fabs(g[j] + alpha * (beta[j] > 0 ? 1 : -1)) < 1e-10,
                          "lasso KKT at %d: gradient %.12g, beta %.6g", j, g[j],
                          beta[j]);
            /* clearly non-zero, so that the factorized |beta| < 1e-6 rule
             * cannot confuse it with a zero */
            ck_assert_msg(fabs(beta[j]) > 0.05, "lasso beta[%d] = %g is tiny",
                          j, beta[j]);
        } else {
            ck_assert_msg(fabs(g[j]) <= alpha, "lasso KKT at zero %d: %.12g", j,
                          g[j]);
            min_slack = fmin(min_slack, alpha - fabs(g[j]));
        }
    }
    /* the setup this test is about: a few survivors, some exact zeros
     * (including a true non-zero coefficient), all zeros strictly inside
     * the subgradient interval */
    ck_assert_msg(n_nonzero >= 3 && n_nonzero <= 6, "%d non-zeros", n_nonzero);
    ck_assert_msg(beta[4] == 0.0 && beta[0] != 0.0 && beta[3] != 0.0,
                  "unexpected lasso pattern");
    ck_assert_msg(min_slack > 0.05 * alpha, "zero slack %g too small", min_slack);
    double f_lasso = lasso_objective(&pb, beta);

    /* 2. the D = 2 factorization with the equivalent L2 penalty */
    dwf_err err;
    dwf_param p;
    int rc = dwf_param_alloc(&p, P, 2, 1, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    dwf_rng rng;
    dwf_rng_seed(&rng, 5);
    rc = dwf_param_init(&p, DWF_INIT_DWF, sqrt(2.0 / P), 0.25, &rng, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);
    dwf_optim_opts oo;
    memset(&oo, 0, sizeof oo);
    oo.kind = DWF_OPT_SGD;
    oo.lr = 0.2;
    oo.sched = DWF_SCHED_CONSTANT;
    dwf_param *pl = &p;
    dwf_optim opt;
    ck_assert_int_eq(dwf_optim_create(&opt, &oo, &pl, 1, &err), 0);
    float scratch[DWF_PARAM_SCRATCH];
    double b[P];
    const int steps = 2000;
    double f_prev = INFINITY;
    for (int it = 0; it < steps; it++) {
        for (int j = 0; j < P; j++)
            b[j] = p.w[j];
        double loss = data_grad(&pb, b, g);
        for (int j = 0; j < P; j++)
            p.gw[j] = (float)g[j];
        double pen = dwf_param_factor_grads(&p, alpha, scratch);
        /* the objective (1/(2n))||r||^2 + (alpha/2)(||u||^2 + ||v||^2) never
         * rises by more than rounding with this step */
        double f = loss + pen;
        if (f > f_prev + 1e-6) /* (ck_assert would log every step) */
            ck_abort_msg("objective rose at step %d: %.12g > %.12g", it, f,
                         f_prev);
        f_prev = f;
        dwf_optim_step(&opt, oo.lr);
        dwf_param_collapse(&p);
    }

    /* 3. same solution, same zeros */
    for (int j = 0; j < P; j++) {
        double bf = p.w[j];
        int zero_f = fabs(bf) < 1e-6;
        ck_assert_msg(zero_f == (beta[j] == 0.0),
                      "zero pattern differs at %d: lasso %.9g, factorized %.9g",
                      j, beta[j], bf);
        ck_assert_msg(fabs(bf - beta[j]) < 1e-3,
                      "coefficient %d: lasso %.9g, factorized %.9g", j, beta[j],
                      bf);
        if (!zero_f) /* balanced factors: |u| = |v| = sqrt|beta| */
            ck_assert_msg(fabs(fabs(p.f[0][j]) - fabs(p.f[1][j])) < 1e-3,
                          "unbalanced factors at %d: %g %g", j,
                          (double)p.f[0][j], (double)p.f[1][j]);
        b[j] = zero_f ? 0.0 : bf;
    }
    /* the minimum of the factorized objective is the lasso minimum */
    ck_assert_msg(fabs(f_prev - f_lasso) < 1e-6,
                  "factorized objective %.12g, lasso %.12g", f_prev, f_lasso);
    ck_assert_msg(fabs(lasso_objective(&pb, b) - f_lasso) < 1e-6,
                  "lasso objective at the factorized solution %.12g, optimum %.12g",
                  lasso_objective(&pb, b), f_lasso);

    dwf_optim_free(&opt);
    dwf_param_free(&p);
}
END_TEST

static Suite *lasso_suite(void)
{
    Suite *s = suite_create("lasso");
    TCase *tc = tcase_create("equivalence");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_lasso_equivalence);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(lasso_suite());
}
