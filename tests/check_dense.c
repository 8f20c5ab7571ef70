/*
 * check_dense.c - dense weight gradients taken from the batch
 * (dwf_dense_grad_panel, dwf_optim_update_grads, the deferred backward of
 * dwf_model): the gradient panels equal dy^T x summed in batch order (bit
 * for bit, fused multiply-adds in order, where the AVX-512 kernel runs)
 * for any split into panels and segments; the panel-wise update equals
 * the block-wise update of that gradient bit for bit for every optimizer,
 * with masks and depths 1..5, and does not depend on the number of
 * threads; the deferred backward leaves the same bias and input gradients
 * and the inputs/output gradients whose product is the weight gradient.
 */
#include "testutil.h"

#include <math.h>

#include "dwf_model.h"
#include "dwf_optim.h"

/* The kernel's exact order is promised where AVX-512 runs it. */
static int exact_kernel(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static float *rand_floats(dwf_rng *r, size_t n, double scale)
{
    float *v = malloc(n * sizeof(float) + 1);
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(scale * dwf_rng_normal(r));
    return v;
}

/* dy^T x over the segments in order, one fused multiply-add at a time, and
 * the sum of the absolute terms (for the tolerance of other kernels). */
static void ref_grad(const dwf_dense_seg *seg, int n_seg, int out, int in,
                     float *G, double *abs_sum)
{
    for (int r = 0; r < out; r++)
        for (int j = 0; j < in; j++) {
            float a = 0.0f;
            double t = 0.0;
            for (int s = 0; s < n_seg; s++)
                for (int k = 0; k < seg[s].rows; k++) {
                    float u = seg[s].dy[(size_t)k * out + r];
                    float v = seg[s].x[(size_t)k * in + j];
                    a = fmaf(u, v, a);
                    t += fabs((double)u * v);
                }
            G[(size_t)r * in + j] = a;
            abs_sum[(size_t)r * in + j] = t;
        }
}

START_TEST(test_grad_panel)
{
    static const struct {
        int out, in, n_seg, rows[3];
    } cases[] = {
        {13, 37, 3, {5, 0, 3}}, {21, 100, 2, {7, 9}}, {8, 16, 1, {1}},
        {5, 3, 2, {2, 2}},      {17, 784, 2, {64, 64}}, {30, 49, 3, {4, 1, 6}},
    };
    const int exact = exact_kernel();
    dwf_rng r;
    dwf_rng_seed(&r, 11);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int out = cases[ci].out, in = cases[ci].in, ns = cases[ci].n_seg;
        dwf_dense_seg seg[3];
        for (int s = 0; s < ns; s++) {
            int b = cases[ci].rows[s];
            seg[s].rows = b;
            seg[s].x = rand_floats(&r, (size_t)b * in, 1.0);
            seg[s].dy = rand_floats(&r, (size_t)b * out, 0.1);
        }
        size_t n = (size_t)out * in;
        float *G = malloc(n * sizeof(float)), *R = malloc(n * sizeof(float));
        double *A = malloc(n * sizeof(double));
        ref_grad(seg, ns, out, in, R, A);
        /* panels of 1, 3, 8, 16 rows and all rows at once */
        const int steps[] = {1, 3, 8, 16, out};
        for (int si = 0; si < 5; si++) {
            for (size_t q = 0; q < n; q++)
                G[q] = NAN;
            for (int r0 = 0; r0 < out; r0 += steps[si]) {
                int nr = out - r0 < steps[si] ? out - r0 : steps[si];
                dwf_dense_grad_panel(seg, ns, out, in, r0, nr, G + (size_t)r0 * in);
            }
            for (size_t q = 0; q < n; q++) {
                if (exact)
                    CHECK_MSG(memcmp(&G[q], &R[q], sizeof(float)) == 0,
                              "case %zu panels of %d: entry %zu is %.9g, fma order gives %.9g",
                              ci, steps[si], q, G[q], R[q]);
                else
                    CHECK_MSG(fabs((double)G[q] - R[q]) <= 1e-5 * A[q] + 1e-30,
                              "case %zu panels of %d: entry %zu is %.9g, expected %.9g",
                              ci, steps[si], q, G[q], R[q]);
            }
        }
        free(G);
        free(R);
        free(A);
        for (int s = 0; s < ns; s++) {
            free((void *)seg[s].x);
            free((void *)seg[s].dy);
        }
    }
}
END_TEST

/* ---- panel-wise update == block-wise update of the same gradient ------- */

enum { NP = 5 };
static const int P_OUT[NP] = {7, 36, 9, 4, 0};   /* 0: not dense */
static const int P_IN[NP] = {40, 11, 600, 20, 0};
static const int P_N[NP] = {280, 396, 5400, 80, 17};
static const int P_D[NP] = {1, 2, 4, 5, 3};

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

/* NP parameters with the same factors (from seed), masks when masked. */
static void make_params(dwf_param *p, uint64_t seed, int masked)
{
    dwf_rng r;
    dwf_err err;
    dwf_rng_seed(&r, seed);
    for (int k = 0; k < NP; k++) {
        ck_assert_int_eq(dwf_param_alloc(&p[k], P_N[k], P_D[k], k != 3, &err), 0);
        for (int d = 0; d < P_D[k]; d++)
            for (int i = 0; i < P_N[k]; i++) {
                float v = (float)(0.3 + dwf_rng_uniform(&r));
                p[k].f[d][i] = dwf_rng_uniform(&r) < 0.5 ? -v : v;
            }
        if (masked && k != 4) {
            uint8_t *mask = malloc((size_t)P_N[k]);
            for (int i = 0; i < P_N[k]; i++)
                mask[i] = dwf_rng_uniform(&r) < 0.7;
            ck_assert_int_eq(dwf_param_set_mask(&p[k], mask, &err), 0);
            free(mask);
        }
        dwf_param_collapse(&p[k]);
    }
}

START_TEST(test_update_grads)
{
    const dwf_optim_opts cases[] = {
        opts_of(DWF_OPT_SGD, 0.0, 0), opts_of(DWF_OPT_SGD, 0.9, 0),
        opts_of(DWF_OPT_SGD, 0.9, 1), opts_of(DWF_OPT_ADAM, 0.0, 0)};
    const int threads[3] = {1, 2, 3};
    dwf_err err;
    for (int ci = 0; ci < 4; ci++)
        for (int masked = 0; masked < 2; masked++) {
            /* a[t]: panel-wise with threads[t]; b: block-wise reference */
            dwf_param a[3][NP], b[NP];
            dwf_param *pa[3][NP], *pb[NP];
            dwf_optim oa[3], ob;
            uint64_t seed = 200 + (uint64_t)ci * 2 + (uint64_t)masked;
            for (int t = 0; t < 3; t++) {
                make_params(a[t], seed, masked);
                for (int k = 0; k < NP; k++)
                    pa[t][k] = &a[t][k];
                ck_assert_int_eq(dwf_optim_create(&oa[t], &cases[ci], pa[t], NP, &err), 0);
                ck_assert_int_eq(dwf_optim_set_dense(&oa[t], P_OUT, P_IN, &err), 0);
                ck_assert_int_eq(dwf_optim_set_threads(&oa[t], threads[t], &err), 0);
            }
            make_params(b, seed, masked);
            for (int k = 0; k < NP; k++)
                pb[k] = &b[k];
            ck_assert_int_eq(dwf_optim_create(&ob, &cases[ci], pb, NP, &err), 0);
            dwf_rng r;
            dwf_rng_seed(&r, seed + 1000);
            for (int step = 0; step < 3; step++) {
                double lr = 0.05 * (step + 1);
                /* two slices of a batch of 6 for every dense weight */
                dwf_dense_grad dg[NP];
                memset(dg, 0, sizeof dg);
                float *bufs[2 * NP * 2];
                int nb = 0;
                for (int k = 0; k < NP; k++) {
                    if (!P_OUT[k])
                        continue;
                    dg[k].n_seg = 2;
                    for (int s = 0; s < 2; s++) {
                        float *x = rand_floats(&r, (size_t)3 * P_IN[k], 1.0);
                        float *dy = rand_floats(&r, (size_t)3 * P_OUT[k], 0.3);
                        dg[k].seg[s] = (dwf_dense_seg){x, dy, 3};
                        bufs[nb++] = x;
                        bufs[nb++] = dy;
                    }
                    /* the reference takes the same gradient through gw
                     * (in the optimizer's panels: cblas, where it is
                     * used, need not round alike for other panels) */
                    int P = dwf_dense_panel_rows();
                    for (int r0 = 0; r0 < P_OUT[k]; r0 += P)
                        dwf_dense_grad_panel(dg[k].seg, 2, P_OUT[k], P_IN[k], r0,
                                             P_OUT[k] - r0 < P ? P_OUT[k] - r0 : P,
                                             b[k].gw + (size_t)r0 * P_IN[k]);
                }
                /* the other parameter: gw plus one extra */
                float *gx[NP] = {0};
                gx[4] = rand_floats(&r, (size_t)P_N[4], 1.0);
                for (int i = 0; i < P_N[4]; i++) {
                    float g = (float)dwf_rng_normal(&r);
                    b[4].gw[i] = g;
                    for (int t = 0; t < 3; t++)
                        a[t][4].gw[i] = g;
                }
                /* the reference adds the extra to every gw: zeros for the
                 * dense ones (the panel-wise update reads none) */
                float *gx0[NP];
                for (int k = 0; k < NP; k++) {
                    gx0[k] = gx[k] ? gx[k] : calloc((size_t)P_N[k], sizeof(float));
                    ck_assert_ptr_nonnull(gx0[k]);
                }
                double pen_b = dwf_optim_update_sum(&ob, lr, 0.03, 1, gx0);
                for (int k = 0; k < NP; k++)
                    if (!gx[k])
                        free(gx0[k]);
                double pen_a[3];
                for (int t = 0; t < 3; t++)
                    pen_a[t] = dwf_optim_update_grads(&oa[t], lr, 0.03, 1, gx, dg);
                for (int t = 0; t < 3; t++) {
                    CHECK_MSG(pen_a[t] == pen_a[0], "optim %d: penalty %.17g with %d threads, %.17g with 1",
                              ci, pen_a[t], threads[t], pen_a[0]);
                    CHECK_MSG(fabs(pen_a[t] - pen_b) <= 1e-6 * pen_b,
                              "optim %d: penalty %.17g vs %.17g block-wise", ci, pen_a[t], pen_b);
                    for (int k = 0; k < NP; k++) {
                        for (int d = 0; d < P_D[k]; d++)
                            CHECK_MSG(memcmp(a[t][k].f[d], b[k].f[d], (size_t)P_N[k] * sizeof(float)) == 0,
                                      "optim %d masked %d threads %d step %d param %d factor %d differs",
                                      ci, masked, threads[t], step, k, d);
                        CHECK(memcmp(a[t][k].w, b[k].w, (size_t)P_N[k] * sizeof(float)) == 0);
                    }
                    if (ob.n_floats)
                        CHECK(memcmp(oa[t].state, ob.state, (size_t)ob.n_floats * sizeof(float)) == 0);
                }
                for (int q = 0; q < nb; q++)
                    free(bufs[q]);
                free(gx[4]);
            }
            for (int t = 0; t < 3; t++) {
                dwf_optim_free(&oa[t]);
                for (int k = 0; k < NP; k++)
                    dwf_param_free(&a[t][k]);
            }
            dwf_optim_free(&ob);
            for (int k = 0; k < NP; k++)
                dwf_param_free(&b[k]);
        }
}
END_TEST

START_TEST(test_update_grads_refused)
{
    dwf_err err;
    dwf_param p;
    ck_assert_int_eq(dwf_param_alloc(&p, 12, 2, 1, &err), 0);
    dwf_param_init_const(&p, 0.5f);
    dwf_param *pp = &p;
    dwf_optim_opts oo = opts_of(DWF_OPT_SGD, 0.0, 0);
    dwf_optim o;
    ck_assert_int_eq(dwf_optim_create(&o, &oo, &pp, 1, &err), 0);
    float x[4] = {1, 2, 3, 4}, dy[3] = {1, 1, 1};
    dwf_dense_grad dg;
    memset(&dg, 0, sizeof dg);
    dg.n_seg = 1;
    dg.seg[0] = (dwf_dense_seg){x, dy, 1};
    /* not declared dense: nothing changes */
    CHECK(isnan(dwf_optim_update_grads(&o, 0.1, 0.0, 0, NULL, &dg)));
    CHECK(p.f[0][0] == 0.5f && p.f[1][0] == 1.0f && o.t == 0);
    /* a shape that does not match the parameter */
    int out = 4, in = 4;
    ck_assert_int_eq(dwf_optim_set_dense(&o, &out, &in, &err), DWF_EINVAL);
    out = 3;
    ck_assert_int_eq(dwf_optim_set_dense(&o, &out, &in, &err), 0);
    CHECK(isfinite(dwf_optim_update_grads(&o, 0.1, 0.0, 0, NULL, &dg)));
    /* w = 0.5 - 0.1 * dy x (f_2 = 1 moves too, but w = f_1 f_2) */
    CHECK(p.f[0][0] != 0.5f && p.w[0] == p.f[0][0] * p.f[1][0]);
    ck_assert_int_eq(dwf_optim_set_dense(&o, NULL, NULL, &err), 0);
    CHECK(isnan(dwf_optim_update_grads(&o, 0.1, 0.0, 0, NULL, &dg)));
    dwf_optim_free(&o);
    dwf_param_free(&p);
}
END_TEST

/* ---- deferred backward ------------------------------------------------- */

START_TEST(test_backward_defer)
{
    dwf_err err;
    dwf_arch a;
    int hidden[2] = {24, 12};
    ck_assert_int_eq(dwf_arch_mlp(&a, 16, 1, 1, hidden, 2, 4, 2, &err), 0);
    dwf_model *m = NULL, *ref = NULL;
    ck_assert_int_eq(dwf_model_create(&a, 10, &m, &err), 0);
    ck_assert_int_eq(dwf_model_create(&a, 10, &ref, &err), 0);
    dwf_rng r1, r2;
    dwf_rng_seed(&r1, 5);
    dwf_rng_seed(&r2, 5);
    ck_assert_int_eq(dwf_model_init(m, DWF_INIT_AUTO, 0.25, &r1, &err), 0);
    ck_assert_int_eq(dwf_model_init(ref, DWF_INIT_AUTO, 0.25, &r2, &err), 0);
    ck_assert_int_eq(dwf_model_set_lanes(m, 2, &err), 0);
    ck_assert_int_eq(dwf_model_set_lanes(ref, 2, &err), 0);
    dwf_rng r;
    dwf_rng_seed(&r, 6);
    float *x = rand_floats(&r, 10 * 16, 1.0), *dl = rand_floats(&r, 10 * 4, 0.1);
    const int lo[2] = {0, 5}, bk[2] = {5, 5};
    for (int k = 0; k < 2; k++) {
        dwf_model_forward_lane(m, k, x + lo[k] * 16, bk[k]);
        dwf_model_forward_lane(ref, k, x + lo[k] * 16, bk[k]);
        dwf_model_backward_lane_defer(m, k, dl + lo[k] * 4, bk[k]);
        dwf_model_backward_lane(ref, k, dl + lo[k] * 4, bk[k]);
    }
    for (int k = 0; k < 2; k++)
        for (int L = 0; L < a.n_layers; L++) {
            const float *lx, *ldy;
            int rc = dwf_model_dense_io(m, k, L, &lx, &ldy);
            if (a.layers[L].kind != DWF_LAYER_DENSE) {
                CHECK(rc == -1);
                continue;
            }
            ck_assert_int_eq(rc, 0);
            int wi = m->weight_idx[L], bi = m->bias_idx[L];
            int out = a.layers[L].units, in = (int)(m->params[wi].n / out);
            /* the bias gradient is the same; dy^T x is the weight gradient */
            CHECK(memcmp(dwf_model_lane_gw(m, k, bi), dwf_model_lane_gw(ref, k, bi),
                         (size_t)out * sizeof(float)) == 0);
            dwf_dense_seg seg = {lx, ldy, bk[k]};
            float *G = malloc((size_t)out * in * sizeof(float));
            double *A = malloc((size_t)out * in * sizeof(double));
            ref_grad(&seg, 1, out, in, G, A);
            const float *gw = dwf_model_lane_gw(ref, k, wi);
            for (int q = 0; q < out * in; q++)
                CHECK_MSG(fabs((double)G[q] - gw[q]) <= 1e-5 * A[q] + 1e-30,
                          "lane %d layer %d entry %d: dy^T x %.9g, backward %.9g", k, L,
                          q, G[q], gw[q]);
            free(G);
            free(A);
        }
    /* not yet deferred on a fresh model */
    const float *lx, *ldy;
    CHECK(dwf_model_dense_io(ref, 0, a.n_layers - 1, &lx, &ldy) == -1);
    CHECK(dwf_model_dense_io(m, 2, a.n_layers - 1, &lx, &ldy) == -1);
    free(x);
    free(dl);
    dwf_model_free(m);
    dwf_model_free(ref);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dense");
    TCase *tc = tcase_create("dense");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_grad_panel);
    tcase_add_test(tc, test_update_grads);
    tcase_add_test(tc, test_update_grads_refused);
    tcase_add_test(tc, test_backward_defer);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
