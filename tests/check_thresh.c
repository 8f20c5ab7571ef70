/*
 * check_thresh.c - threshold curves and tolerance-based selection
 * (core/dwf_thresh.c, dwf_smodel_rethreshold, the end of dwf_job_run):
 * a small Fashion-MNIST run's curve is monotone in CR and its first point
 * is the eps model; every point is the model dwf_smodel_from_model builds
 * at its threshold; selection looks at validation accuracy only (a test
 * set labelled by another rule, or shuffled, changes nothing; another
 * validation set changes the choice); the job stores the selected model.
 *
 * "The same" for the incremental curve (issue 6) means: every point's
 * val_acc and test_acc equal, as doubles, dwf_smodel_evaluate() of the
 * model dwf_smodel_rethreshold() makes at that threshold (point 0: the
 * model itself), i.e. the same number of correct predictions as the
 * from-scratch float evaluation, with its batches and argmax rule. Checked
 * on MLPs with 0, 1 and 2 hidden layers, non-zero biases, data sizes that
 * leave partial reference batches, 1 and 2 threads, exact logit ties (two
 * identical class rows: every sample is a near tie, so the reference path
 * decides them), and against opts.from_scratch; conv nets take the
 * from-scratch path.
 */
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#include "dwf_job.h"
#include "dwf_model.h"
#include "dwf_rng.h"
#include "dwf_sparse.h"
#include "dwf_thresh.h"
#include "dwf_tkern.h"

/* ---- a synthetic model, data labelled by models ------------------------ */

static dwf_model *make_model(const dwf_arch *a, uint64_t seed)
{
    dwf_model *m = NULL;
    dwf_err e;
    ck_assert_msg(dwf_model_create(a, 16, &m, &e) == 0, "%s", e.msg);
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    ck_assert_msg(dwf_model_init(m, DWF_INIT_AUTO, 1e-3, &r, &e) == 0, "%s", e.msg);
    /* weights of every magnitude from 1e-7 to 1: log-uniform */
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->weight_idx[i] < 0)
            continue;
        dwf_param *p = &m->params[m->weight_idx[i]];
        for (int64_t k = 0; k < p->n; k++) {
            double mag = pow(10.0, -7.0 + 7.0 * dwf_rng_uniform(&r));
            float v = (float)(dwf_rng_uniform(&r) < 0.5 ? -mag : mag);
            p->f[0][k] = v;
            for (int d = 1; d < p->depth; d++)
                p->f[d][k] = 1.0f;
        }
    }
    dwf_model_collapse(m);
    return m;
}

/* The first weight layer's magnitudes log-uniform in [1e-3, 1e-2]: most of
 * it drops out within a few thresholds (big removals, CSR rebuilds). */
static void narrow_first_layer(dwf_model *m, uint64_t seed)
{
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    int i = 0;
    while (m->weight_idx[i] < 0)
        i++;
    dwf_param *p = &m->params[m->weight_idx[i]];
    for (int64_t k = 0; k < p->n; k++) {
        double mag = pow(10.0, -3.0 + dwf_rng_uniform(&r));
        p->f[0][k] = (float)(dwf_rng_uniform(&r) < 0.5 ? -mag : mag);
        for (int d = 1; d < p->depth; d++)
            p->f[d][k] = 1.0f;
    }
    dwf_model_collapse(m);
}

static void make_data_side(dwf_dataset *d, int n, int side, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = 1;
    d->h = d->w = side;
    d->dim = side * side;
    d->n_classes = 5;
    d->x_u8 = malloc((size_t)n * d->dim);
    d->y = calloc((size_t)n, sizeof(int32_t));
    ck_assert_ptr_nonnull(d->x_u8);
    ck_assert_ptr_nonnull(d->y);
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    for (int i = 0; i < n * d->dim; i++)
        d->x_u8[i] = (uint8_t)dwf_rng_below(&r, 256);
}

static void make_data(dwf_dataset *d, int n, uint64_t seed)
{
    make_data_side(d, n, 8, seed);
}

/* Labels d with the predictions of s cut at threshold t (t >= s->eps). */
static void label_by(dwf_dataset *d, const dwf_smodel *s, float t)
{
    dwf_smodel m;
    dwf_err e;
    ck_assert_msg(dwf_smodel_rethreshold(s, t, NULL, 0, &m, &e) == 0, "%s", e.msg);
    dwf_sws *ws = NULL;
    ck_assert_msg(dwf_sws_create(&m, d->n, &ws, &e) == 0, "%s", e.msg);
    float *x = malloc((size_t)d->n * d->dim * sizeof(float));
    ck_assert_ptr_nonnull(x);
    for (int i = 0; i < d->n * d->dim; i++)
        x[i] = (float)d->x_u8[i];
    ck_assert_msg(dwf_smodel_predict(&m, ws, x, d->n, d->y, NULL, &e) == 0, "%s", e.msg);
    free(x);
    dwf_sws_free(ws);
    dwf_smodel_free(&m);
}

static void check_monotone(const dwf_thresh_curve *c, const dwf_smodel *s)
{
    ck_assert_int_ge(c->n, 2);
    ck_assert(c->points[0].threshold == (double)s->eps);
    for (int i = 0; i < c->n; i++) {
        const dwf_thresh_point *p = &c->points[i];
        int64_t sum = 0;
        for (int l = 0; l < DWF_MAX_LAYERS; l++) {
            sum += p->layer_nonzero[l];
            ck_assert_int_le(p->layer_nonzero[l], p->layer_weights[l]);
            if (i > 0)
                ck_assert_int_le(p->layer_nonzero[l], c->points[i - 1].layer_nonzero[l]);
        }
        ck_assert_int_eq(sum, p->nonzero);
        if (i > 0) {
            ck_assert(p->threshold > c->points[i - 1].threshold);
            ck_assert_int_le(p->nonzero, c->points[i - 1].nonzero);
            ck_assert(p->cr >= c->points[i - 1].cr);
        }
    }
}

/* The curve's AVX-512 helpers give the portable loops' bits: input norms,
 * activations with their column norms (NaN, infinities, -0 and denormals
 * among the values; partial vectors) of all rows, some rows and some
 * gathered samples, the change of a few rows, and the wide-input CSR
 * product
 * (whole 128-sample tiles and a partial one) those of the row-by-row one
 * (fused multiply-adds in the same order; the portable loop rounds each
 * product, a difference the curve's rounding model allows for). Skipped
 * without AVX-512. */
static void fill_odd(float *x, size_t n, dwf_rng *r)
{
    for (size_t i = 0; i < n; i++) {
        double u = dwf_rng_uniform(r);
        x[i] = (float)(4.0 * dwf_rng_uniform(r) - 2.0);
        if (u < 0.01)
            x[i] = NAN;
        else if (u < 0.02)
            x[i] = -INFINITY;
        else if (u < 0.03)
            x[i] = -0.0f;
        else if (u < 0.04)
            x[i] = 1e-40f;
        else if (u < 0.3)
            x[i] = 0.0f;
    }
}

START_TEST(t_kernels_fast_equal_portable)
{
    if (!dwf_tk_avx512())
        return;
    dwf_rng r;
    dwf_rng_seed(&r, 99);
    const int ns[] = {1, 7, 16, 17, 100, 128};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int n = ns[k], dim = 37;
        float *x = malloc((size_t)dim * n * sizeof *x);
        fill_odd(x, (size_t)dim * n, &r);
        double a2[128], ai[128], b2[128], bi[128];
        dwf_tk_input_norms(1, x, dim, n, a2, ai);
        dwf_tk_input_norms(0, x, dim, n, b2, bi);
        ck_assert(memcmp(a2, b2, (size_t)n * sizeof *a2) == 0);
        ck_assert(memcmp(ai, bi, (size_t)n * sizeof *ai) == 0);

        int rows = 11;
        double *y = malloc((size_t)rows * n * sizeof *y);
        for (int i = 0; i < rows * n; i++)
            y[i] = x[i % (dim * n)] * 1.5;
        const int32_t rl[] = {0, 3, 4, 9, 10};
        for (int relu = 0; relu < 2; relu++)
            for (int sub = 0; sub < 2; sub++) {
                float *fa = calloc((size_t)rows * n, sizeof *fa),
                      *fb = calloc((size_t)rows * n, sizeof *fb);
                for (int g = 0; g < n; g++) {
                    a2[g] = b2[g] = 0.25 * g;
                    ai[g] = bi[g] = 0.5;
                }
                dwf_tk_act_rows(1, y, sub ? rl : NULL, sub ? 5 : rows, n, relu, fa, a2, ai);
                dwf_tk_act_rows(0, y, sub ? rl : NULL, sub ? 5 : rows, n, relu, fb, b2, bi);
                ck_assert(memcmp(fa, fb, (size_t)rows * n * sizeof *fa) == 0);
                ck_assert(memcmp(a2, b2, (size_t)n * sizeof *a2) == 0);
                ck_assert(memcmp(ai, bi, (size_t)n * sizeof *ai) == 0);
                free(fa);
                free(fb);
            }
        /* the change of a few rows: rl's rows of y against old values */
        for (int relu = 0; relu < 2; relu++) {
            double *old = malloc((size_t)5 * n * sizeof *old);
            for (int i = 0; i < 5 * n; i++)
                old[i] = x[(i * 7) % (dim * n)];
            dwf_tk_grow(1, y, old, rl, 5, n, relu, a2, ai);
            dwf_tk_grow(0, y, old, rl, 5, n, relu, b2, bi);
            ck_assert(memcmp(a2, b2, (size_t)n * sizeof *a2) == 0);
            ck_assert(memcmp(ai, bi, (size_t)n * sizeof *ai) == 0);
            free(old);
        }
        /* gathered samples: every third column, ascending (as the curve
         * lists them) and, for the general path, from the last one down */
        int gi[128], ng = 0;
        for (int g = n - 1; g >= 0; g -= 3)
            gi[ng++] = g;
        for (int relu = 0; relu < 4; relu++) {
            if (relu == 2) /* reverse: ascending */
                for (int g = 0; g < ng / 2; g++) {
                    int tmp = gi[g];
                    gi[g] = gi[ng - 1 - g];
                    gi[ng - 1 - g] = tmp;
                }
            double *ha = calloc((size_t)rows * n, sizeof *ha), *hb = calloc((size_t)rows * n, sizeof *hb);
            float *fa = calloc((size_t)rows * n, sizeof *fa),
                  *fb = calloc((size_t)rows * n, sizeof *fb);
            for (int g = 0; g < n; g++) {
                a2[g] = b2[g] = 0.25 * g;
                ai[g] = bi[g] = 0.5;
            }
            dwf_tk_gather_h0(1, y, ha, rl, 5, n, relu & 1, gi, ng, fa, a2, ai);
            dwf_tk_gather_h0(0, y, hb, rl, 5, n, relu & 1, gi, ng, fb, b2, bi);
            ck_assert(memcmp(ha, hb, (size_t)rows * n * sizeof *ha) == 0);
            ck_assert(memcmp(fa, fb, (size_t)rows * n * sizeof *fa) == 0);
            ck_assert(memcmp(a2, b2, (size_t)n * sizeof *a2) == 0);
            ck_assert(memcmp(ai, bi, (size_t)n * sizeof *ai) == 0);
            free(ha);
            free(hb);
            free(fa);
            free(fb);
        }
        free(y);
        free(x);
    }
    /* the wide-input CSR kernel: 30 rows over 784 inputs, ~40% dense */
    int R = 30, C = 784;
    int32_t *ip = malloc((R + 1) * sizeof *ip), *ix = malloc((size_t)R * C * sizeof *ix);
    float *v = malloc((size_t)R * C * sizeof *v), bias[30];
    ip[0] = 0;
    for (int i = 0; i < R; i++) {
        bias[i] = (float)dwf_rng_uniform(&r);
        ip[i + 1] = ip[i];
        for (int j = 0; j < C; j++)
            if (dwf_rng_uniform(&r) < 0.4) {
                ix[ip[i + 1]] = j;
                v[ip[i + 1]++] = (float)(dwf_rng_uniform(&r) - 0.5);
            }
    }
    const int nw[] = {128, 100};
    for (int k = 0; k < 2; k++) {
        int n = nw[k];
        float *x = malloc((size_t)C * n * sizeof *x), *acc = malloc((size_t)R * 128 * sizeof *acc);
        int32_t cur[30];
        for (int i = 0; i < C * n; i++)
            x[i] = (float)dwf_rng_uniform(&r);
        double *za = malloc((size_t)R * n * sizeof *za), *zb = malloc((size_t)R * n * sizeof *zb);
        for (int set = 0; set < 2; set++) {
            for (int i = 0; i < R * n; i++)
                za[i] = zb[i] = 0.125 * i;
            dwf_tk_csr_wide(1, ip, ix, v, R, C, x, n, set, bias, za, acc, cur);
            dwf_tk_csr(1, ip, ix, v, R, x, n, set, bias, zb);
            ck_assert(memcmp(za, zb, (size_t)R * n * sizeof *za) == 0);
        }
        free(x);
        free(acc);
        free(za);
        free(zb);
    }
    free(ip);
    free(ix);
    free(v);
}
END_TEST

START_TEST(t_curve_points_are_models)
{
    dwf_arch a;
    dwf_err e;
    const int hidden[] = {24};
    ck_assert_msg(dwf_arch_mlp(&a, 1, 8, 8, hidden, 1, 5, 2, &e) == 0, "%s", e.msg);
    dwf_model *m = make_model(&a, 7);
    dwf_norm norm = {DWF_NORM_SCALE, 0.0f, 255.0f};
    const float eps = 1.1920929e-07f;
    dwf_smodel s;
    ck_assert_msg(dwf_smodel_from_model(m, &norm, eps, NULL, NULL, 0, &s, &e) == 0, "%s", e.msg);
    dwf_dataset val, test;
    make_data(&val, 200, 1);
    make_data(&test, 150, 2);
    label_by(&val, &s, 1e-2f);
    label_by(&test, &s, 1e-3f);
    dwf_thresh_curve c;
    ck_assert_msg(dwf_thresh_curve_compute(&s, &val, &test, NULL, &c, &e) == 0, "%s", e.msg);
    check_monotone(&c, &s);
    /* 4 per decade: from 1.19e-7 the weights (all < 1) are gone after at
     * most 7 decades, unless accuracy reached chance before */
    ck_assert_int_le(c.n, 4 * 7 + 2);
    const dwf_thresh_point *last = &c.points[c.n - 1];
    ck_assert(last->nonzero == 0 || last->val_acc <= 1.0 / 5 + 0.02);
    for (int i = 0; i < c.n - 1; i++)
        ck_assert(c.points[i].nonzero > 0 && c.points[i].val_acc > 1.0 / 5 + 0.02);
    /* every point is the model from_model builds at its threshold (the
     * biases are 0 after dwf_model_init, so cutting them changes nothing) */
    for (int i = 0; i < c.n; i++) {
        const dwf_thresh_point *p = &c.points[i];
        dwf_smodel t;
        ck_assert_msg(dwf_smodel_from_model(m, &norm, (float)p->threshold, NULL, NULL, 0,
                                            &t, &e) == 0, "%s", e.msg);
        int64_t w, nz;
        dwf_smodel_counts(&t, &w, &nz, NULL, NULL);
        ck_assert_int_eq(nz, p->nonzero);
        ck_assert_int_eq(w, p->weights);
        double va, ta, loss;
        ck_assert_int_eq(dwf_smodel_evaluate(&t, &val, &va, &loss, &e), 0);
        ck_assert_int_eq(dwf_smodel_evaluate(&t, &test, &ta, &loss, &e), 0);
        ck_assert_msg(va == p->val_acc && ta == p->test_acc,
                      "point %d (|w| < %g): val %g test %g, the model gives %g %g", i,
                      p->threshold, p->val_acc, p->test_acc, va, ta);
        dwf_smodel_free(&t);
    }
    /* validation labelled by the 1e-2 model: perfect there, not above 1e-1 */
    int found = 0;
    for (int i = 0; i < c.n; i++)
        if (fabs(c.points[i].threshold / 1e-2 - 1.0) < 0.2 && c.points[i].val_acc > 0.97)
            found = 1;
    ck_assert(found);
    /* no validation data: accuracies from the test set, val NaN */
    dwf_thresh_curve c2;
    ck_assert_int_eq(dwf_thresh_curve_compute(&s, NULL, &test, NULL, &c2, &e), 0);
    ck_assert(isnan(c2.points[0].val_acc) && c2.points[0].test_acc == c.points[0].test_acc);
    int idx;
    ck_assert_int_eq(dwf_thresh_select(&c2, 0.9, 0.01, &idx, NULL, &e), DWF_EINVAL);
    dwf_thresh_curve_free(&c2);
    dwf_thresh_opts bad;
    dwf_thresh_opts_default(&bad);
    bad.per_decade = 0;
    ck_assert_int_eq(dwf_thresh_curve_compute(&s, &val, &test, &bad, &c2, &e), DWF_EINVAL);
    ck_assert_int_eq(c2.n, 0);
    /* rethreshold below the model's threshold is an error */
    dwf_smodel t;
    ck_assert_int_eq(dwf_smodel_rethreshold(&s, eps / 2, NULL, 0, &t, &e), DWF_EINVAL);
    dwf_thresh_curve_free(&c);
    dwf_dataset_free(&val);
    dwf_dataset_free(&test);
    dwf_smodel_free(&s);
    dwf_model_free(m);
}
END_TEST

/* The chosen threshold depends on the validation data only. */
START_TEST(t_select_validation_only)
{
    dwf_arch a;
    dwf_err e;
    const int hidden[] = {24};
    ck_assert_msg(dwf_arch_mlp(&a, 1, 8, 8, hidden, 1, 5, 2, &e) == 0, "%s", e.msg);
    dwf_model *m = make_model(&a, 8);
    dwf_norm norm = {DWF_NORM_SCALE, 0.0f, 255.0f};
    dwf_smodel s;
    ck_assert_msg(dwf_smodel_from_model(m, &norm, 1.1920929e-07f, NULL, NULL, 0, &s, &e) == 0,
                  "%s", e.msg);
    dwf_dataset val_a, val_b, test_1, test_2;
    make_data(&val_a, 300, 11);
    make_data(&val_b, 300, 11);
    make_data(&test_1, 300, 12);
    make_data(&test_2, 300, 13);
    label_by(&val_a, &s, 3e-3f);  /* validation agrees with the 3e-3 model */
    label_by(&val_b, &s, 2e-1f);  /* another validation set: the 0.2 model */
    label_by(&test_1, &s, 3e-2f); /* a test set that prefers larger thresholds */
    dwf_rng r;
    dwf_rng_seed(&r, 14);
    for (int i = 0; i < test_2.n; i++) /* and one with random labels */
        test_2.y[i] = (int32_t)dwf_rng_below(&r, 5);
    struct {
        const dwf_dataset *val, *test;
        int idx;
        double thr;
    } run[3] = {{&val_a, &test_1, 0, 0}, {&val_a, &test_2, 0, 0}, {&val_b, &test_1, 0, 0}};
    for (int k = 0; k < 3; k++) {
        dwf_thresh_curve c;
        ck_assert_msg(dwf_thresh_curve_compute(&s, run[k].val, run[k].test, NULL, &c, &e) == 0,
                      "%s", e.msg);
        check_monotone(&c, &s);
        double dense_val;
        dense_val = c.points[0].val_acc; /* the eps model keeps every weight here */
        int within = 0;
        ck_assert_int_eq(dwf_thresh_select(&c, dense_val, 0.02, &run[k].idx, &within, &e), 0);
        ck_assert_int_eq(within, 1);
        const dwf_thresh_point *p = &c.points[run[k].idx];
        run[k].thr = p->threshold;
        /* the largest threshold within the drop, on validation, that
         * keeps a weight */
        ck_assert(p->val_acc >= dense_val - 0.02);
        ck_assert_int_gt(p->nonzero, 0);
        for (int i = run[k].idx + 1; i < c.n; i++)
            ck_assert(c.points[i].val_acc < dense_val - 0.02 || c.points[i].nonzero == 0);
        /* the test set would have chosen otherwise (it differs on purpose) */
        int best_test = 0;
        for (int i = 0; i < c.n; i++)
            if (c.points[i].test_acc >= c.points[0].test_acc - 0.02)
                best_test = i;
        if (k == 0)
            ck_assert_int_gt(best_test, run[k].idx);
        dwf_thresh_curve_free(&c);
    }
    /* a different test set changes nothing; a different validation set does */
    ck_assert(run[0].thr == run[1].thr);
    ck_assert(run[2].thr > run[0].thr);
    /* near the labelling models' thresholds (within a few grid steps) */
    ck_assert_msg(run[0].thr >= 6e-4 && run[0].thr <= 1.5e-2, "%g", run[0].thr);
    ck_assert_msg(run[2].thr >= 0.1, "%g", run[2].thr);
    /* no point within the drop: the eps model, within = 0 */
    dwf_thresh_point pts[3] = {{.threshold = 1e-7, .nonzero = 9, .val_acc = 0.5, .test_acc = 0.9},
                               {.threshold = 1e-6, .nonzero = 3, .val_acc = 0.4, .test_acc = 0.9},
                               {.threshold = 1e-5, .nonzero = 0, .val_acc = 0.4, .test_acc = 0.9}};
    dwf_thresh_curve hand = {.n = 3, .points = pts};
    int idx = -1, within = -1;
    ck_assert_int_eq(dwf_thresh_select(&hand, 0.9, 0.01, &idx, &within, &e), 0);
    ck_assert_int_eq(idx, 0);
    ck_assert_int_eq(within, 0);
    /* the largest within the drop, but never the model without weights */
    ck_assert_int_eq(dwf_thresh_select(&hand, 0.5, 0.1, &idx, &within, &e), 0);
    ck_assert_int_eq(idx, 1);
    ck_assert_int_eq(within, 1);
    ck_assert_int_eq(dwf_thresh_select(&hand, NAN, 0.1, &idx, &within, &e), DWF_EINVAL);
    dwf_dataset_free(&val_a);
    dwf_dataset_free(&val_b);
    dwf_dataset_free(&test_1);
    dwf_dataset_free(&test_2);
    dwf_smodel_free(&s);
    dwf_model_free(m);
}
END_TEST

/* ---- the incremental path against from-scratch evaluation --------------- */

/* Random non-zero biases (factors: the value, then ones). */
static void set_biases(dwf_model *m, uint64_t seed, double scale)
{
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->bias_idx[i] < 0)
            continue;
        dwf_param *p = &m->params[m->bias_idx[i]];
        for (int64_t k = 0; k < p->n; k++) {
            p->f[0][k] = (float)(scale * (2.0 * dwf_rng_uniform(&r) - 1.0));
            for (int d = 1; d < p->depth; d++)
                p->f[d][k] = 1.0f;
        }
    }
    dwf_model_collapse(m);
}

/* Makes class 1 of the last dense layer a copy of class 0: every logit
 * pair (0, 1) is an exact tie. */
static void tie_classes(dwf_model *m)
{
    int last = -1;
    for (int i = 0; i < m->arch.n_layers; i++)
        if (m->weight_idx[i] >= 0)
            last = i;
    dwf_param *w = &m->params[m->weight_idx[last]];
    int64_t cols = w->n / m->arch.layers[last].units;
    for (int d = 0; d < w->depth; d++)
        memcpy(w->f[d] + cols, w->f[d], (size_t)cols * sizeof(float));
    if (m->bias_idx[last] >= 0) {
        dwf_param *b = &m->params[m->bias_idx[last]];
        for (int d = 0; d < b->depth; d++)
            b->f[d][1] = b->f[d][0];
    }
    dwf_model_collapse(m);
}

/* Every point of c equals dwf_smodel_evaluate on the model
 * dwf_smodel_rethreshold gives at its threshold (point 0: s). */
static void check_against_models(const dwf_thresh_curve *c, const dwf_smodel *s,
                                 const dwf_dataset *val, const dwf_dataset *test)
{
    dwf_err e;
    for (int i = 0; i < c->n; i++) {
        const dwf_thresh_point *p = &c->points[i];
        dwf_smodel t;
        const dwf_smodel *m = s;
        if (i > 0) {
            ck_assert_msg(dwf_smodel_rethreshold(s, (float)p->threshold, NULL, 0, &t, &e) == 0,
                          "%s", e.msg);
            m = &t;
        }
        int64_t w, nz;
        dwf_smodel_counts(m, &w, &nz, NULL, NULL);
        ck_assert_int_eq(nz, p->nonzero);
        double va = NAN, ta = NAN, loss;
        if (val)
            ck_assert_int_eq(dwf_smodel_evaluate(m, val, &va, &loss, &e), 0);
        if (test)
            ck_assert_int_eq(dwf_smodel_evaluate(m, test, &ta, &loss, &e), 0);
        ck_assert_msg((val ? va == p->val_acc : isnan(p->val_acc)) &&
                      (test ? ta == p->test_acc : isnan(p->test_acc)),
                      "point %d (|w| < %g): val %.6f test %.6f, the model gives %.6f %.6f",
                      i, p->threshold, p->val_acc, p->test_acc, va, ta);
        if (i > 0)
            dwf_smodel_free(&t);
    }
}

/* What a failing check_same_curve names (the random test's seed). */
static char g_what[128];

static void check_same_curve(const dwf_thresh_curve *a, const dwf_thresh_curve *b)
{
    ck_assert_msg(a->n == b->n, "%s%d points, not %d", g_what, a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const dwf_thresh_point *p = &a->points[i], *q = &b->points[i];
        ck_assert(p->threshold == q->threshold);
        ck_assert_int_eq(p->nonzero, q->nonzero);
        ck_assert_int_eq(p->weights, q->weights);
        for (int l = 0; l < DWF_MAX_LAYERS; l++)
            ck_assert_int_eq(p->layer_nonzero[l], q->layer_nonzero[l]);
        ck_assert_msg((p->val_acc == q->val_acc || (isnan(p->val_acc) && isnan(q->val_acc))) &&
                      (p->test_acc == q->test_acc || (isnan(p->test_acc) && isnan(q->test_acc))),
                      "%spoint %d: %.6f %.6f vs %.6f %.6f", g_what, i, p->val_acc, p->test_acc,
                      q->val_acc, q->test_acc);
    }
}

/* The first layer's outputs (bias + W x) of s on d, sample-major, summed
 * in float in reverse column order (another order than the curve's). */
static float *layer0_outputs(const dwf_smodel *s, const dwf_dataset *d)
{
    int li = 0;
    while (s->arch.layers[li].kind == DWF_LAYER_FLATTEN)
        li++;
    const dwf_csr *c = &s->w[li];
    float *x = malloc((size_t)d->dim * sizeof *x);
    float *z = malloc((size_t)d->n * c->rows * sizeof *z);
    ck_assert(x && z);
    for (int j = 0; j < d->n; j++) {
        dwf_dataset_range(d, &s->norm, j, 1, x, NULL);
        for (int r = 0; r < c->rows; r++) {
            float acc = 0.0f;
            for (int64_t k = c->indptr[r + 1] - 1; k >= c->indptr[r]; k--)
                acc += c->values[k] * x[c->indices[k]];
            z[(size_t)j * c->rows + r] = acc + (s->bias[li] ? s->bias[li][r] : 0.0f);
        }
    }
    free(x);
    return z;
}

/* Samples whose first model took every layer from the caller (check_paths). */
static int64_t g_given;

/* The later dense layers' outputs of an MLP s on d (n x units each, into
 * out[0..]), from the float relu of the layer before's outputs (l0 for the
 * first), summed in reverse column order; returns their number. */
static int later_outputs(const dwf_smodel *s, const dwf_dataset *d, const float *l0,
                         float **out)
{
    int li[DWF_MAX_LAYERS], nd = 0;
    for (int i = 0; i < s->arch.n_layers; i++) {
        dwf_layer_kind k = s->arch.layers[i].kind;
        if (k == DWF_LAYER_CONV2D || k == DWF_LAYER_MAXPOOL2D)
            return 0; /* not an MLP */
        if (k == DWF_LAYER_DENSE)
            li[nd++] = i;
    }
    int first = 0;
    while (s->arch.layers[first].kind == DWF_LAYER_FLATTEN)
        first++;
    if (nd == 0 || li[0] != first)
        return 0; /* l0 is not the first dense layer's */
    const float *prev = l0;
    for (int l = 1; l < nd; l++) {
        const dwf_csr *c = &s->w[li[l]];
        float *z = malloc((size_t)d->n * c->rows * sizeof *z);
        ck_assert_ptr_nonnull(z);
        for (int j = 0; j < d->n; j++)
            for (int r = 0; r < c->rows; r++) {
                float acc = 0.0f;
                for (int64_t k = c->indptr[r + 1] - 1; k >= c->indptr[r]; k--) {
                    float h = prev[(size_t)j * c->cols + c->indices[k]];
                    acc += c->values[k] * (h > 0.0f ? h : 0.0f);
                }
                z[(size_t)j * c->rows + r] = acc + (s->bias[li[l]] ? s->bias[li[l]][r] : 0.0f);
            }
        out[l - 1] = z;
        prev = z;
    }
    return nd - 1;
}

/* Incremental curve (1 thread; 2 threads with the portable kernels; every
 * model certified, no exact end; from the caller's first-layer outputs) ==
 * from scratch == the models. *st and *st_cert (may be NULL) get the
 * stats of the first and of the one without exact end. */
static void check_paths(const dwf_smodel *s, const dwf_dataset *val,
                        const dwf_dataset *test, int expect_incremental,
                        dwf_thresh_stats *st, dwf_thresh_stats *st_cert)
{
    dwf_err e;
    dwf_thresh_opts o;
    dwf_thresh_opts_default(&o);
    o.per_decade = 3;
    dwf_thresh_curve inc, inc2, ref;
    ck_assert_msg(dwf_thresh_curve_compute(s, val, test, &o, &inc, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(inc.stats.incremental, expect_incremental);
    o.threads = 2;
    o.portable = 1; /* and the portable kernels */
    ck_assert_msg(dwf_thresh_curve_compute(s, val, test, &o, &inc2, &e) == 0, "%s", e.msg);
    o.threads = 1;
    o.portable = 0;
    dwf_thresh_curve cert;
    o.no_exact_end = 1;
    ck_assert_msg(dwf_thresh_curve_compute(s, val, test, &o, &cert, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(cert.stats.exact, 0);
    o.no_exact_end = 0;
    o.from_scratch = 1;
    ck_assert_msg(dwf_thresh_curve_compute(s, val, test, &o, &ref, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(ref.stats.incremental, 0);
    ck_assert_int_ge(inc.n, 3);
    check_same_curve(&inc, &ref);
    check_same_curve(&inc2, &ref);
    check_same_curve(&cert, &ref);
    if (st_cert)
        *st_cert = cert.stats;
    dwf_thresh_curve_free(&cert);
    dwf_thresh_curve given;
    o.from_scratch = 0;
    o.layer0[0] = val ? layer0_outputs(s, val) : NULL;
    o.layer0[1] = test ? layer0_outputs(s, test) : NULL;
    ck_assert_msg(dwf_thresh_curve_compute(s, val, test, &o, &given, &e) == 0, "%s", e.msg);
    check_same_curve(&given, &ref);
    dwf_thresh_curve_free(&given);
    /* and every later dense layer's (MLPs): model 0 needs no product */
    int nl = 0;
    for (int k = 0; k < 2; k++)
        if (o.layer0[k])
            nl = later_outputs(s, k ? test : val, o.layer0[k], (float **)o.later[k]);
    if (nl > 0) {
        ck_assert_msg(dwf_thresh_curve_compute(s, val, test, &o, &given, &e) == 0, "%s", e.msg);
        check_same_curve(&given, &ref);
        g_given += given.stats.given;
        dwf_thresh_curve_free(&given);
        o.threads = 2;
        ck_assert_msg(dwf_thresh_curve_compute(s, val, test, &o, &given, &e) == 0, "%s", e.msg);
        check_same_curve(&given, &ref);
        dwf_thresh_curve_free(&given);
    }
    for (int k = 0; k < 2; k++) {
        free((float *)o.layer0[k]);
        for (int l = 0; l < nl; l++)
            free((float *)o.later[k][l]);
    }
    check_against_models(&inc, s, val, test);
    if (st)
        *st = inc.stats;
    dwf_thresh_curve_free(&inc);
    dwf_thresh_curve_free(&inc2);
    dwf_thresh_curve_free(&ref);
}

START_TEST(t_incremental_matches_evaluate)
{
    g_given = 0;
    dwf_err e;
    dwf_norm norm = {DWF_NORM_SCALE, 0.0f, 255.0f};
    const int h2[] = {24, 16}, h1[] = {20}, wide[] = {800, 16};
    /* 28 x 28 inputs: the wide-input (panel) kernel; a wide first layer
     * before a narrow one: the row-by-row certification (recomputations
     * cost more than it) */
    struct {
        const int *hidden;
        int n_hidden;
        int ties;
        int side;
    } cases[] = {{h2, 2, 0, 8}, {h1, 1, 0, 8}, {NULL, 0, 0, 8}, {h2, 2, 1, 8}, {h2, 2, 0, 28},
                 {wide, 2, 0, 8}};
    for (int k = 0; k < 6; k++) {
        dwf_arch a;
        int sd = cases[k].side;
        ck_assert_msg(dwf_arch_mlp(&a, 1, sd, sd, cases[k].hidden, cases[k].n_hidden, 5, 2,
                                   &e) == 0, "%s", e.msg);
        dwf_model *m = make_model(&a, 20 + k);
        if (sd > 8)
            narrow_first_layer(m, 60 + k);
        set_biases(m, 30 + k, 0.05);
        if (cases[k].ties)
            tie_classes(m);
        dwf_smodel s;
        ck_assert_msg(dwf_smodel_from_model(m, &norm, 1.1920929e-07f, NULL, NULL, 0, &s,
                                            &e) == 0, "%s", e.msg);
        /* 300 and 270 samples: batches of 256 plus 44 and 14 */
        dwf_dataset val, test;
        make_data_side(&val, 300, sd, 40 + k);
        make_data_side(&test, 270, sd, 50 + k);
        label_by(&val, &s, 3e-3f);
        label_by(&test, &s, 1e-2f);
        dwf_thresh_stats st, sc;
        check_paths(&s, &val, &test, 1, &st, &sc);
        /* the lazy later layers skip work; ties go to the reference; the
         * sparse end runs the reference forward on whole blocks (where
         * the CPU's kernels are batch-invariant) */
        if (cases[k].n_hidden > 0)
            ck_assert_int_lt(sc.recomputed, sc.samples);
        if (cases[k].ties)
            ck_assert_int_ge(sc.reference, 100);
        if (dwf_smodel_batch_invariant())
            ck_assert_int_gt(st.exact, 0);
        ck_assert_int_le(st.recomputed + st.exact, st.samples);
        if (k == 0) {
            /* 257 and 129 samples: blocks of one (padded to two at the
             * exact end), a reference batch of one (left to the reference) */
            dwf_dataset v1, t1;
            make_data_side(&v1, 257, sd, 70);
            make_data_side(&t1, 129, sd, 71);
            label_by(&v1, &s, 3e-3f);
            label_by(&t1, &s, 1e-2f);
            check_paths(&s, &v1, &t1, 1, &st, NULL);
            if (dwf_smodel_batch_invariant())
                ck_assert_int_gt(st.exact, 0);
            dwf_dataset_free(&v1);
            dwf_dataset_free(&t1);
        }
        /* one data set only, either one */
        check_paths(&s, NULL, &test, 1, NULL, NULL);
        check_paths(&s, &val, NULL, 1, NULL, NULL);
        dwf_dataset_free(&val);
        dwf_dataset_free(&test);
        dwf_smodel_free(&s);
        dwf_model_free(m);
    }
    /* the caller's later-layer outputs were taken (where model 0's layers
     * are whole) */
    ck_assert_int_gt(g_given, 0);
}
END_TEST

/* Chance: 1 / n_classes, or what a constant prediction of the most
 * frequent label scores, plus the margin. */
START_TEST(t_chance)
{
    dwf_dataset d;
    make_data(&d, 200, 3);
    for (int i = 0; i < d.n; i++)
        d.y[i] = i % 5; /* balanced */
    ck_assert(fabs(dwf_thresh_chance(&d, 5, 0.02) - 0.22) < 1e-12);
    ck_assert(fabs(dwf_thresh_chance(NULL, 5, 0.0) - 0.2) < 1e-12);
    for (int i = 0; i < 70; i++)
        d.y[i] = 3; /* 70 + 26 of 200 */
    ck_assert(fabs(dwf_thresh_chance(&d, 5, 0.02) - (96.0 / 200 + 0.02)) < 1e-12);
    ck_assert(fabs(dwf_thresh_chance(&d, 100, 0.0) - 96.0 / 200) < 1e-12);
    dwf_dataset_free(&d);
}
END_TEST

/* ---- random models against the from-scratch curve ---------------------- */

/* Magnitudes of one of four shapes (log-uniform over seven decades; a DWF
 * run's bulk in [1e-4, 3e-4] with survivors in [1e-2, 1]; one decade; two
 * clusters), some exact zeros, sometimes whole units dead; random biases. */
static void random_weights(dwf_model *m, dwf_rng *r)
{
    int shape = (int)dwf_rng_below(r, 4);
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->weight_idx[i] < 0)
            continue;
        dwf_param *p = &m->params[m->weight_idx[i]];
        double zeros = dwf_rng_uniform(r) < 0.3 ? dwf_rng_uniform(r) : 0.0;
        double surv = 0.02 + 0.2 * dwf_rng_uniform(r);
        int units = m->arch.layers[i].units;
        int64_t cols = p->n / units;
        int dead_units = dwf_rng_uniform(r) < 0.3;
        for (int64_t k = 0; k < p->n; k++) {
            double u = dwf_rng_uniform(r), mag;
            if (dwf_rng_uniform(r) < zeros)
                mag = 0.0;
            else if (shape == 0)
                mag = pow(10.0, -7.0 + 7.0 * u);
            else if (shape == 1)
                mag = dwf_rng_uniform(r) < surv ? pow(10.0, -2.0 + 2.0 * u)
                                                : pow(10.0, -4.0 + 0.5 * u);
            else if (shape == 2)
                mag = pow(10.0, -3.0 + u);
            else
                mag = dwf_rng_uniform(r) < 0.5 ? pow(10.0, -6.0 + 3.0 * u) : 0.3 * u;
            p->f[0][k] = (float)(dwf_rng_uniform(r) < 0.5 ? -mag : mag);
            for (int d = 1; d < p->depth; d++)
                p->f[d][k] = 1.0f;
        }
        for (int u = 0; dead_units && u < units; u++)
            if (dwf_rng_uniform(r) < 0.3)
                memset(p->f[0] + (int64_t)u * cols, 0, (size_t)cols * sizeof(float));
    }
    set_biases(m, dwf_rng_u64(r), dwf_rng_uniform(r) < 0.3 ? 0.0 : 0.5 * dwf_rng_uniform(r));
}

/* Random MLPs (0-3 hidden layers of 1-403 units, 2-12 classes, 2x2 to
 * 28x28 inputs, depth 1-3), random data sets of 0-699 samples (some with
 * many zero pixels; labels random or by a cut of the model), random grids
 * (1-8 points a decade, capped or not, chance margin 0 or 0.02), then
 * three incremental curves with random options (1 or 2 threads, portable
 * kernels, no exact end, the caller's first-layer outputs summed in
 * either order, with or without every later layer's): each equals the
 * from-scratch curve point for point. */
START_TEST(t_random_models_match_scratch)
{
    dwf_err e;
    dwf_norm norm = {DWF_NORM_SCALE, 0.0f, 255.0f};
    int64_t incremental = 0;
    /* DWF_THRESH_SEEDS="first last" runs other seeds (longer runs) */
    unsigned long long s0 = 1, s1 = 40;
    const char *env = getenv("DWF_THRESH_SEEDS");
    if (env && sscanf(env, "%llu %llu", &s0, &s1) != 2)
        ck_abort_msg("DWF_THRESH_SEEDS: want \"first last\", got \"%s\"", env);
    for (uint64_t seed = s0; seed <= s1; seed++) {
        dwf_rng r;
        dwf_rng_seed(&r, seed * 7919 + 13);
        int side = dwf_rng_uniform(&r) < 0.4 ? 28 : 2 + (int)dwf_rng_below(&r, 14);
        int nh = (int)dwf_rng_below(&r, 4), hid[3];
        for (int i = 0; i < nh; i++) {
            double u = dwf_rng_uniform(&r);
            hid[i] = u < 0.2 ? 1 + (int)dwf_rng_below(&r, 4)
                   : u < 0.8 ? 2 + (int)dwf_rng_below(&r, 64)
                             : 64 + (int)dwf_rng_below(&r, 340);
        }
        int nc = 2 + (int)dwf_rng_below(&r, 11);
        dwf_arch a;
        ck_assert_msg(dwf_arch_mlp(&a, 1, side, side, hid, nh, nc,
                                   1 + (int)dwf_rng_below(&r, 3), &e) == 0, "%s", e.msg);
        dwf_model *m = make_model(&a, seed);
        random_weights(m, &r);
        float eps = dwf_rng_uniform(&r) < 0.8 ? 1.1920929e-07f
                                              : (float)pow(10.0, -6.0 + 3.0 * dwf_rng_uniform(&r));
        dwf_smodel s;
        ck_assert_msg(dwf_smodel_from_model(m, &norm, eps, NULL, NULL, 0, &s, &e) == 0, "%s",
                      e.msg);
        dwf_dataset d[2];
        const dwf_dataset *D[2];
        for (int k = 0; k < 2; k++) {
            int n = dwf_rng_uniform(&r) < 0.15 ? 0 : 1 + (int)dwf_rng_below(&r, 699);
            make_data_side(&d[k], n > 0 ? n : 1, side, dwf_rng_u64(&r));
            d[k].n_classes = nc;
            double zf = dwf_rng_uniform(&r) < 0.5 ? 0.0 : dwf_rng_uniform(&r);
            for (int i = 0; i < d[k].n * d[k].dim; i++)
                if (dwf_rng_uniform(&r) < zf)
                    d[k].x_u8[i] = 0;
            for (int i = 0; i < d[k].n; i++)
                d[k].y[i] = (int32_t)dwf_rng_below(&r, (uint64_t)nc);
            D[k] = n > 0 ? &d[k] : NULL;
        }
        if (!D[0] && !D[1])
            D[1] = &d[1];
        if (dwf_rng_uniform(&r) < 0.7) {
            float t = (float)(eps * pow(10.0, 5.0 * dwf_rng_uniform(&r)));
            for (int k = 0; k < 2; k++)
                label_by(&d[k], &s, t);
        }
        dwf_thresh_opts o;
        dwf_thresh_opts_default(&o);
        o.per_decade = 1 + (int)dwf_rng_below(&r, 8);
        if (dwf_rng_uniform(&r) < 0.2)
            o.max_points = 2 + (int)dwf_rng_below(&r, 20);
        o.chance_margin = dwf_rng_uniform(&r) < 0.2 ? 0.0 : 0.02;
        dwf_thresh_curve ref, inc;
        o.from_scratch = 1;
        ck_assert_msg(dwf_thresh_curve_compute(&s, D[0], D[1], &o, &ref, &e) == 0, "%s", e.msg);
        o.from_scratch = 0;
        for (int v = 0; v < 3; v++) {
            o.threads = dwf_rng_uniform(&r) < 0.5 ? 1 : 2;
            o.portable = dwf_rng_uniform(&r) < 0.3;
            o.no_exact_end = dwf_rng_uniform(&r) < 0.2;
            int given = dwf_rng_uniform(&r) < 0.5, later = given && dwf_rng_uniform(&r) < 0.7;
            float *outs[2][DWF_MAX_LAYERS] = {{NULL}};
            memset(o.layer0, 0, sizeof o.layer0);
            memset(o.later, 0, sizeof o.later);
            for (int k = 0; k < 2 && given; k++) {
                if (!D[k])
                    continue;
                o.layer0[k] = outs[k][0] = layer0_outputs(&s, D[k]);
                if (later && later_outputs(&s, D[k], outs[k][0], outs[k] + 1) > 0)
                    for (int l = 1; l < DWF_MAX_LAYERS; l++)
                        o.later[k][l - 1] = outs[k][l];
            }
            ck_assert_msg(dwf_thresh_curve_compute(&s, D[0], D[1], &o, &inc, &e) == 0, "%s",
                          e.msg);
            snprintf(g_what, sizeof g_what, "seed %llu (threads %d, portable %d, no exact "
                     "end %d, given %d, later %d): ", (unsigned long long)seed, o.threads,
                     o.portable, o.no_exact_end, given, later);
            check_same_curve(&inc, &ref);
            g_what[0] = 0;
            incremental += inc.stats.incremental;
            dwf_thresh_curve_free(&inc);
            for (int k = 0; k < 2; k++)
                for (int l = 0; l < DWF_MAX_LAYERS; l++)
                    free(outs[k][l]);
        }
        dwf_thresh_curve_free(&ref);
        dwf_dataset_free(&d[0]);
        dwf_dataset_free(&d[1]);
        dwf_smodel_free(&s);
        dwf_model_free(m);
    }
    if (!env)
        ck_assert_int_ge(incremental, 100);
}
END_TEST

/* A conv net (and an MLP with relu on its input) take the from-scratch
 * path, with the same result on 1 and 2 threads; bad thread counts are
 * errors. */
START_TEST(t_other_archs_from_scratch)
{
    dwf_err e;
    dwf_norm norm = {DWF_NORM_SCALE, 0.0f, 255.0f};
    dwf_arch a;
    dwf_arch_init(&a, 1, 8, 8, 5, 2);
    dwf_layer_spec conv = {.kind = DWF_LAYER_CONV2D, .filters = 3, .kernel = 3};
    dwf_layer_spec relu = {.kind = DWF_LAYER_RELU}, fl = {.kind = DWF_LAYER_FLATTEN};
    dwf_layer_spec dense = {.kind = DWF_LAYER_DENSE, .units = 5};
    ck_assert(dwf_arch_add(&a, &conv, &e) == 0 && dwf_arch_add(&a, &relu, &e) == 0 &&
              dwf_arch_add(&a, &fl, &e) == 0 && dwf_arch_add(&a, &dense, &e) == 0);
    ck_assert_msg(dwf_arch_resolve(&a, &e) == 0, "%s", e.msg);
    dwf_arch b;
    dwf_arch_init(&b, 1, 8, 8, 5, 2);
    dwf_layer_spec d12 = {.kind = DWF_LAYER_DENSE, .units = 12};
    ck_assert(dwf_arch_add(&b, &fl, &e) == 0 && dwf_arch_add(&b, &relu, &e) == 0 &&
              dwf_arch_add(&b, &d12, &e) == 0 && dwf_arch_add(&b, &relu, &e) == 0 &&
              dwf_arch_add(&b, &dense, &e) == 0);
    ck_assert_msg(dwf_arch_resolve(&b, &e) == 0, "%s", e.msg);
    const dwf_arch *archs[2] = {&a, &b};
    for (int k = 0; k < 2; k++) {
        dwf_model *m = make_model(archs[k], 60 + k);
        dwf_smodel s;
        ck_assert_msg(dwf_smodel_from_model(m, &norm, 1.1920929e-07f, NULL, NULL, 0, &s,
                                            &e) == 0, "%s", e.msg);
        /* several batches of 256: the threads split them */
        dwf_dataset val, test;
        make_data(&val, 700, 70 + k);
        make_data(&test, 600, 80 + k);
        label_by(&val, &s, 1e-3f);
        label_by(&test, &s, 1e-3f);
        check_paths(&s, &val, &test, 0, NULL, NULL);
        dwf_thresh_opts o;
        dwf_thresh_opts_default(&o);
        dwf_thresh_curve c;
        o.threads = 0;
        ck_assert_int_eq(dwf_thresh_curve_compute(&s, &val, &test, &o, &c, &e), DWF_EINVAL);
        o.threads = DWF_MAX_THREADS + 1;
        ck_assert_int_eq(dwf_thresh_curve_compute(&s, &val, &test, &o, &c, &e), DWF_EINVAL);
        dwf_dataset_free(&val);
        dwf_dataset_free(&test);
        dwf_smodel_free(&s);
        dwf_model_free(m);
    }
}
END_TEST

/* ---- whole jobs on a small Fashion-MNIST run --------------------------- */

static int run_job(int select, dwf_smodel *model, dwf_metrics *final,
                   dwf_job_result *res)
{
    int small = tu_sanitized();
    char text[1024];
    snprintf(text, sizeof text,
             "{\"name\": \"thr\", \"method\": \"dwf\", \"data\": {\"train_subset\": %d,"
             " \"test_subset\": %d, \"validation\": 0.25}, \"model\": {\"arch\": \"mlp\","
             " \"hidden\": [32], \"depth\": 3}, \"train\": {\"epochs\": 3,"
             " \"batch_size\": 64, \"lr\": 0.2, \"lambda\": 0.003}, \"seed\": 5%s}",
             small ? 1200 : 2400, small ? 400 : 800,
             select ? ", \"select\": {\"max_drop\": 0.02}" : "");
    dwf_spec spec;
    dwf_err e;
    char field[DWF_FIELD_LEN];
    ck_assert_msg(dwf_spec_parse(text, strlen(text), NULL, 0, &spec, field, &e) == 0,
                  "%s: %s", field, e.msg);
    dwf_job_hooks h = {0};
    h.result = res;
    int rc = dwf_job_run(&spec, &h, model, final, &e);
    ck_assert_msg(rc == 0, "%s", e.msg);
    dwf_spec_free(&spec);
    return rc;
}

START_TEST(t_job_curve_and_select)
{
    if (access(FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", R_OK) != 0) {
        fprintf(stderr, "check_thresh: no Fashion-MNIST, job test skipped\n");
        return;
    }
    dwf_smodel model;
    dwf_metrics final;
    dwf_job_result res;
    run_job(0, &model, &final, &res);
    check_monotone(&res.curve, &model);
    ck_assert_int_eq(res.selected, 0);
    /* the first point is the eps model: its counts and accuracy */
    const dwf_thresh_point *p0 = &res.curve.points[0];
    ck_assert(p0->threshold == (double)1.1920929e-07f);
    ck_assert_int_eq(p0->nonzero, final.nonzero);
    ck_assert(fabs(p0->cr - final.cr) < 1e-12);
    /* the trainer's sparse accuracy comes from its own kernels */
    ck_assert(fabs(p0->test_acc - final.sparse_test_acc) <= 0.0051);
    ck_assert(fabs(p0->val_acc - final.sparse_val_acc) <= 0.0051);
    dwf_spec spec;
    dwf_dataset train, val, test;
    dwf_err e;
    char field[DWF_FIELD_LEN];
    ck_assert(model.spec != NULL);
    ck_assert_int_eq(dwf_spec_parse(model.spec, strlen(model.spec), NULL, 0, &spec, field, &e), 0);
    ck_assert_msg(dwf_spec_load_data(&spec, &train, &val, &test, &e) == 0, "%s", e.msg);
    double acc, loss;
    ck_assert_int_eq(dwf_smodel_evaluate(&model, &test, &acc, &loss, &e), 0);
    ck_assert(acc == p0->test_acc);
    ck_assert_int_eq(dwf_smodel_evaluate(&model, &val, &acc, &loss, &e), 0);
    ck_assert(acc == p0->val_acc);
    ck_assert(res.curve.seconds >= 0.0);
    /* the job's curve started from the first layer's outputs of the
     * trainer's evaluation: the same curve as from scratch */
    dwf_thresh_opts o;
    dwf_thresh_opts_default(&o);
    o.from_scratch = 1;
    dwf_thresh_curve ref;
    ck_assert_int_eq(dwf_thresh_curve_compute(&model, &val, &test, &o, &ref, &e), 0);
    check_same_curve(&res.curve, &ref);
    dwf_thresh_curve_free(&ref);
    json_t *rows = dwf_job_curve_json(&res, &model.arch);
    ck_assert_ptr_nonnull(rows);
    ck_assert_int_eq((int)json_array_size(rows), res.curve.n);
    json_t *r0 = json_array_get(rows, 0);
    ck_assert(json_real_value(json_object_get(r0, "threshold")) == p0->threshold);
    ck_assert_int_eq((int)json_array_size(json_object_get(r0, "layers")), 2);
    json_decref(rows);
    dwf_job_result_free(&res);
    dwf_smodel_free(&model);

    /* with select: the stored model is the selected one */
    dwf_metrics final2;
    run_job(1, &model, &final2, &res);
    ck_assert_int_eq(res.selected, 1);
    ck_assert(res.eps_cr == final.cr); /* same training */
    ck_assert_int_eq(res.collapsed, 0);  /* it learned */
    ck_assert(res.eps_test_acc == final.sparse_test_acc);
    const dwf_thresh_point *ps = &res.curve.points[res.select_index];
    ck_assert_int_gt(ps->nonzero, 0);
    ck_assert(ps->val_acc >= final2.val_acc - 0.02 || !res.select_within);
    for (int i = res.select_index + 1; i < res.curve.n; i++)
        ck_assert(res.curve.points[i].val_acc < final2.val_acc - 0.02 ||
                  res.curve.points[i].nonzero == 0);
    ck_assert(model.eps == (float)ps->threshold);
    int64_t w, nz;
    dwf_smodel_counts(&model, &w, &nz, NULL, NULL);
    ck_assert_int_eq(nz, ps->nonzero);
    ck_assert(dwf_smodel_metric(&model, "selected_threshold") == ps->threshold);
    ck_assert(dwf_smodel_metric(&model, "selected_cr") == ps->cr);
    ck_assert(dwf_smodel_metric(&model, "selected_val_acc") == ps->val_acc);
    ck_assert(dwf_smodel_metric(&model, "selected_test_acc") == ps->test_acc);
    ck_assert(dwf_smodel_metric(&model, "nonzero") == (double)nz);
    ck_assert_int_eq(dwf_smodel_evaluate(&model, &test, &acc, &loss, &e), 0);
    ck_assert(acc == ps->test_acc);
    ck_assert(dwf_smodel_metric(&model, "sparse_test_acc") == acc);
    /* and the job's final metrics are the selected model's, as in its file */
    int64_t pa, pnz, layer_sum = 0;
    dwf_smodel_counts(&model, &w, &nz, &pa, &pnz);
    ck_assert_int_eq(final2.nonzero, nz);
    ck_assert_int_eq(final2.params_nonzero, pnz);
    for (int i = 0; i < final2.n_layers; i++)
        layer_sum += final2.layers[i].nonzero;
    ck_assert_int_eq(layer_sum, nz);
    ck_assert(final2.cr == (double)w / (double)nz);
    ck_assert(final2.cr_params == dwf_smodel_metric(&model, "cr_params"));
    ck_assert(final2.sparse_test_acc == acc);
    ck_assert(final2.sparse_test_loss == dwf_smodel_metric(&model, "sparse_test_loss"));
    ck_assert(final2.sparse_val_acc == ps->val_acc);
    dwf_job_result_free(&res);
    dwf_smodel_free(&model);
    dwf_dataset_free(&train);
    dwf_dataset_free(&val);
    dwf_dataset_free(&test);
    dwf_spec_free(&spec);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("thresh");
    TCase *tc = tcase_create("thresh");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, t_kernels_fast_equal_portable);
    tcase_add_test(tc, t_curve_points_are_models);
    tcase_add_test(tc, t_select_validation_only);
    tcase_add_test(tc, t_incremental_matches_evaluate);
    tcase_add_test(tc, t_random_models_match_scratch);
    tcase_add_test(tc, t_chance);
    tcase_add_test(tc, t_other_archs_from_scratch);
    tcase_add_test(tc, t_job_curve_and_select);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
