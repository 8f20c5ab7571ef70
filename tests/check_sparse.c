/*
 * check_sparse.c - the sparse model (core/dwf_sparse.c): CSR building and
 * products against naive dense ones (random shapes, empty rows, all-zero
 * and empty matrices), sparse inference against the dense model's forward
 * pass (MLP and a small CNN, exact weights and thresholded ones), CSR vs
 * dense kernels (crossover), the batch-1 kernels (portable and AVX2, chained
 * sorted outputs, empty rows, inf / NaN inputs, int32 indices), prediction,
 * evaluation, the .dwfm round trip and every kind of corrupted file.
 */
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#include "dwf_buf.h"
#include "dwf_model.h"
#include "dwf_rng.h"
#include "dwf_sparse.h"

static float *alloc_f(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Random matrix with roughly `zero` of its entries exactly 0 and every
 * row_empty-th row all zero. */
static void fill_sparse(dwf_rng *r, float *a, int rows, int cols, double zero,
                        int row_empty)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float v = (float)dwf_rng_normal(r);
            if (dwf_rng_uniform(r) < zero || (row_empty && i % row_empty == 1))
                v = 0.0f;
            a[(size_t)i * cols + j] = v;
        }
}

static void check_csr_structure(const dwf_csr *c, const float *dense, float eps)
{
    ck_assert_int_eq(c->indptr[0], 0);
    int64_t k = 0;
    for (int r = 0; r < c->rows; r++) {
        CHECK_MSG(c->indptr[r + 1] >= c->indptr[r], "indptr not monotone");
        for (int j = 0; j < c->cols; j++) {
            float v = dense[(size_t)r * c->cols + j];
            if (fabsf(v) >= eps) {
                CHECK_MSG(k < c->indptr[r + 1], "row %d misses column %d", r, j);
                CHECK_MSG(c->indices[k] == j && c->values[k] == v,
                          "row %d: entry %lld is (%d, %g), want (%d, %g)", r,
                          (long long)k, c->indices[k], (double)c->values[k], j,
                          (double)v);
                k++;
            }
        }
        CHECK_MSG(k == c->indptr[r + 1], "row %d has extra entries", r);
    }
    ck_assert_int_eq(k, c->nnz);
}

START_TEST(test_csr_random)
{
    dwf_rng r;
    dwf_rng_seed(&r, 11);
    const int ns[] = {1, 2, 5, 16, 300};
    for (int trial = 0; trial < 40; trial++) {
        int rows = (int)dwf_rng_below(&r, 40), cols = 1 + (int)dwf_rng_below(&r, 50);
        if (trial == 0)
            rows = 0; /* an empty matrix */
        double zero = trial % 5 == 4 ? 1.0 : dwf_rng_uniform(&r);
        float *a = alloc_f((size_t)rows * cols);
        fill_sparse(&r, a, rows, cols, zero, trial % 3 ? 4 : 0);
        float eps = trial % 2 ? 0.5f : 0.0f;
        dwf_csr c;
        dwf_err e;
        ck_assert_int_eq(dwf_csr_from_dense(&c, a, rows, cols, eps, &e), 0);
        ck_assert_int_eq(c.rows, rows);
        ck_assert_int_eq(c.cols, cols);
        check_csr_structure(&c, a, eps);
        if (zero == 1.0 && eps > 0.0f)
            ck_assert_int_eq(c.nnz, 0);
        for (size_t t = 0; t < sizeof ns / sizeof *ns; t++) {
            int n = ns[t];
            float *x = alloc_f((size_t)cols * n), *y = alloc_f((size_t)rows * n + 1);
            for (size_t i = 0; i < (size_t)cols * n; i++)
                x[i] = (float)dwf_rng_normal(&r);
            for (size_t i = 0; i < (size_t)rows * n; i++)
                y[i] = NAN; /* must be overwritten */
            dwf_csr_matmul(&c, x, n, NULL, y);
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < n; j++) {
                    double ref = 0.0, mag = 0.0;
                    for (int k = 0; k < cols; k++) {
                        float w = a[(size_t)i * cols + k];
                        if (fabsf(w) >= eps) {
                            ref += (double)w * x[(size_t)k * n + j];
                            mag += fabs((double)w * x[(size_t)k * n + j]);
                        }
                    }
                    double got = y[(size_t)i * n + j];
                    CHECK_MSG(fabs(got - ref) <= 1e-5 * (1.0 + mag),
                              "%dx%d n=%d: y[%d][%d] = %g, want %g", rows, cols,
                              n, i, j, got, ref);
                }
            free(x);
            free(y);
        }
        dwf_csr_free(&c);
        ck_assert_ptr_null(c.values);
        free(a);
    }
}
END_TEST

/* ---- models ----------------------------------------------------------- */

static dwf_model *make_model(const dwf_arch *a, int max_batch, uint64_t seed)
{
    dwf_model *m = NULL;
    dwf_err e;
    ck_assert_msg(dwf_model_create(a, max_batch, &m, &e) == 0, "%s", e.msg);
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    ck_assert_msg(dwf_model_init(m, DWF_INIT_AUTO, 1e-3, &r, &e) == 0, "%s", e.msg);
    /* non-zero biases (D = 1 for biases: w is f[0]) */
    for (int i = 0; i < m->arch.n_layers; i++) {
        if (m->bias_idx[i] < 0)
            continue;
        dwf_param *b = &m->params[m->bias_idx[i]];
        for (int64_t k = 0; k < b->n; k++)
            b->f[0][k] = (float)(0.1 * dwf_rng_normal(&r));
    }
    dwf_model_collapse(m);
    return m;
}

static void arch_mlp(dwf_arch *a)
{
    dwf_err e;
    const int hidden[] = {32, 16};
    ck_assert_msg(dwf_arch_mlp(a, 1, 8, 8, hidden, 2, 5, 2, &e) == 0, "%s", e.msg);
}

/* conv 4 k3 pad 1, relu, pool 2, conv 6 k3 stride 2, relu, dense 12 (on
 * spatial input: implicit flatten), relu, dense 3. */
static void arch_cnn(dwf_arch *a)
{
    dwf_err e;
    dwf_arch_init(a, 2, 10, 10, 3, 2);
    const dwf_layer_spec ls[] = {
        {.kind = DWF_LAYER_CONV2D, .filters = 4, .kernel = 3, .padding = 1},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_MAXPOOL2D, .kernel = 2},
        {.kind = DWF_LAYER_CONV2D, .filters = 6, .kernel = 3, .stride = 2},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 12},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 3},
    };
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        ck_assert_int_eq(dwf_arch_add(a, &ls[i], &e), 0);
    ck_assert_msg(dwf_arch_resolve(a, &e) == 0, "%s", e.msg);
}

static int in_dim(const dwf_arch *a)
{
    return a->in_c * a->in_h * a->in_w;
}

/* Median of |w| over all weights: a threshold that zeroes about half. */
static float median_abs(const dwf_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->arch.n_layers; i++)
        if (m->weight_idx[i] >= 0)
            n += m->params[m->weight_idx[i]].n;
    float *v = alloc_f((size_t)n);
    int64_t k = 0;
    for (int i = 0; i < m->arch.n_layers; i++)
        if (m->weight_idx[i] >= 0) {
            const dwf_param *p = &m->params[m->weight_idx[i]];
            for (int64_t j = 0; j < p->n; j++)
                v[k++] = fabsf(p->w[j]);
        }
    /* a crude selection is enough: sort */
    for (int64_t i = 1; i < n; i++) {
        float t = v[i];
        int64_t j = i - 1;
        while (j >= 0 && v[j] > t) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = t;
    }
    float med = v[n / 2];
    free(v);
    return med;
}

/* Sets every collapsed weight and bias of m with |w| < eps to zero. */
static void threshold_model(dwf_model *m, float eps)
{
    for (int i = 0; i < m->n_params; i++) {
        dwf_param *p = &m->params[i];
        for (int64_t j = 0; j < p->n; j++)
            if (fabsf(p->w[j]) < eps)
                p->w[j] = 0.0f;
    }
}

static void compare_forward(dwf_model *m, const dwf_smodel *s, int b,
                            uint64_t seed, double tol)
{
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    int dim = in_dim(&m->arch), nc = m->arch.n_classes;
    float *x = alloc_f((size_t)b * dim), *z = alloc_f((size_t)b * nc);
    for (size_t i = 0; i < (size_t)b * dim; i++)
        x[i] = (float)dwf_rng_normal(&r);
    dwf_sws *ws = NULL;
    dwf_err e;
    ck_assert_msg(dwf_sws_create(s, b, &ws, &e) == 0, "%s", e.msg);
    ck_assert_msg(dwf_smodel_forward(s, ws, x, b, z, &e) == 0, "%s", e.msg);
    const float *ref = dwf_model_forward(m, x, b);
    for (int i = 0; i < b * nc; i++)
        CHECK_MSG(fabs((double)z[i] - ref[i]) <= tol * (1.0 + fabs(ref[i])),
                  "b=%d logit %d: sparse %g dense %g", b, i, (double)z[i],
                  (double)ref[i]);
    /* a workspace smaller than the batch is used in chunks */
    if (b > 2) {
        dwf_sws *small = NULL;
        float *z2 = alloc_f((size_t)b * nc);
        ck_assert_int_eq(dwf_sws_create(s, 2, &small, &e), 0);
        ck_assert_int_eq(dwf_smodel_forward(s, small, x, b, z2, &e), 0);
        for (int i = 0; i < b * nc; i++)
            CHECK_MSG(fabsf(z2[i] - z[i]) <= 1e-5f * (1.0f + fabsf(z[i])),
                      "chunked forward differs at %d", i);
        dwf_sws_free(small);
        free(z2);
    }
    dwf_sws_free(ws);
    free(x);
    free(z);
}

static void check_forward(void (*make_arch)(dwf_arch *), uint64_t seed)
{
    dwf_arch a;
    make_arch(&a);
    const int bs[] = {1, 2, 7, 33};
    dwf_model *m = make_model(&a, 40, seed);
    dwf_err e;
    /* tiny eps: the sparse model is the dense one */
    dwf_smodel s;
    ck_assert_msg(dwf_smodel_from_model(m, NULL, 1e-30f, NULL, NULL, 0, &s, &e) == 0,
                  "%s", e.msg);
    int64_t w, nz, p, pnz;
    dwf_smodel_counts(&s, &w, &nz, &p, &pnz);
    ck_assert_int_eq(w, nz);
    for (size_t i = 0; i < sizeof bs / sizeof *bs; i++)
        compare_forward(m, &s, bs[i], seed + i, 1e-5);
    dwf_smodel_free(&s);

    /* a real threshold: equal to the dense computation on the thresholded
     * weights; from_model must leave the model alone */
    float eps = median_abs(m);
    const dwf_param *w0 = &m->params[0]; /* the first weight */
    float *before = alloc_f((size_t)w0->n);
    memcpy(before, w0->w, (size_t)w0->n * sizeof(float));
    ck_assert_msg(dwf_smodel_from_model(m, NULL, eps, NULL, NULL, 0, &s, &e) == 0,
                  "%s", e.msg);
    ck_assert_int_eq(memcmp(before, w0->w, (size_t)w0->n * sizeof(float)), 0);
    dwf_smodel_counts(&s, &w, &nz, &p, &pnz);
    ck_assert(nz > 0 && nz < w);
    ck_assert(pnz < p);
    threshold_model(m, eps);
    for (int i = 0; i < m->arch.n_layers; i++)
        if (m->weight_idx[i] >= 0)
            ck_assert_int_eq(s.w[i].nnz,
                             dwf_param_count_nonzero(&m->params[m->weight_idx[i]], 1e-38f));
    for (size_t i = 0; i < sizeof bs / sizeof *bs; i++)
        compare_forward(m, &s, bs[i], seed + 10 + i, 1e-5);
    /* every kernel choice gives the same logits */
    const double cross[] = {0.0, 0.3, 2.0};
    for (size_t c = 0; c < 3; c++) {
        ck_assert_int_eq(dwf_smodel_set_crossover(&s, cross[c], &e), 0);
        for (int i = 0; i < a.n_layers; i++)
            if (dwf_layer_has_weight(a.layers[i].kind)) {
                if (cross[c] == 0.0)
                    ck_assert_ptr_nonnull(s.dense[i]);
                if (cross[c] == 2.0)
                    ck_assert_ptr_null(s.dense[i]);
            }
        compare_forward(m, &s, 7, seed + 20, 1e-5);
        compare_forward(m, &s, 1, seed + 21, 1e-5);
    }
    dwf_smodel_free(&s);
    free(before);
    dwf_model_free(m);
}

START_TEST(test_forward_mlp)
{
    check_forward(arch_mlp, 100);
}
END_TEST

START_TEST(test_forward_cnn)
{
    check_forward(arch_cnn, 200);
}
END_TEST

START_TEST(test_forward_lenet5)
{
    dwf_arch a;
    dwf_err e;
    ck_assert_int_eq(dwf_arch_lenet5(&a, 1, 28, 28, 10, 1, &e), 0);
    dwf_model *m = make_model(&a, 4, 7);
    float eps = median_abs(m);
    dwf_smodel s;
    ck_assert_int_eq(dwf_smodel_from_model(m, NULL, eps, NULL, NULL, 0, &s, &e), 0);
    threshold_model(m, eps);
    compare_forward(m, &s, 4, 8, 1e-5);
    dwf_smodel_free(&s);
    dwf_model_free(m);
}
END_TEST

/* Predictions (classes and probabilities) with CSR and dense kernels. */
START_TEST(test_predict_crossover)
{
    dwf_arch a;
    arch_cnn(&a);
    dwf_model *m = make_model(&a, 64, 300);
    dwf_norm norm = {DWF_NORM_STANDARDIZE, 3.0f, 2.0f};
    float eps = median_abs(m) * 0.5f;
    dwf_smodel s;
    dwf_err e;
    ck_assert_int_eq(dwf_smodel_from_model(m, &norm, eps, "{}", NULL, 0, &s, &e), 0);
    int b = 50, dim = in_dim(&a), nc = a.n_classes;
    dwf_rng r;
    dwf_rng_seed(&r, 301);
    float *raw = alloc_f((size_t)b * dim), *x = alloc_f((size_t)b * dim);
    for (int i = 0; i < b * dim; i++) {
        raw[i] = (float)dwf_rng_below(&r, 7);
        x[i] = (float)(((double)raw[i] - 3.0) / 2.0);
    }
    float *z = alloc_f((size_t)b * nc);
    float *p[3];
    int32_t cls[3][50];
    const double cross[] = {2.0, 0.0, DWF_SPARSE_CROSSOVER};
    dwf_sws *ws = NULL;
    ck_assert_int_eq(dwf_sws_create(&s, 16, &ws, &e), 0);
    for (int c = 0; c < 3; c++) {
        p[c] = alloc_f((size_t)b * nc);
        ck_assert_int_eq(dwf_smodel_set_crossover(&s, cross[c], &e), 0);
        ck_assert_msg(dwf_smodel_predict(&s, ws, raw, b, cls[c], p[c], &e) == 0,
                      "%s", e.msg);
    }
    ck_assert_int_eq(dwf_smodel_forward(&s, ws, x, b, z, &e), 0);
    for (int i = 0; i < b; i++) {
        int am = 0;
        double sum = 0.0;
        for (int j = 0; j < nc; j++) {
            if (z[i * nc + j] > z[i * nc + am])
                am = j;
            sum += p[0][i * nc + j];
        }
        ck_assert_int_eq(cls[0][i], am);
        ck_assert(fabs(sum - 1.0) < 1e-5);
        ck_assert(p[0][i * nc + am] >= p[0][i * nc + (am + 1) % nc]);
        for (int c = 1; c < 3; c++) {
            ck_assert_int_eq(cls[c][i], cls[0][i]);
            for (int j = 0; j < nc; j++)
                ck_assert(fabsf(p[c][i * nc + j] - p[0][i * nc + j]) < 1e-5f);
        }
    }
    /* probabilities may be omitted; huge logits stay finite */
    ck_assert_int_eq(dwf_smodel_predict(&s, ws, raw, 3, cls[0], NULL, &e), 0);
    for (int i = 0; i < dim; i++)
        raw[i] = 1e6f;
    ck_assert_int_eq(dwf_smodel_predict(&s, ws, raw, 1, cls[0], p[0], &e), 0);
    for (int j = 0; j < nc; j++)
        ck_assert(isfinite(p[0][j]));
    dwf_sws_free(ws);
    for (int c = 0; c < 3; c++)
        free(p[c]);
    free(raw);
    free(x);
    free(z);
    dwf_smodel_free(&s);
    dwf_model_free(m);
}
END_TEST

START_TEST(test_evaluate)
{
    dwf_arch a;
    arch_mlp(&a);
    dwf_model *m = make_model(&a, 8, 400);
    dwf_norm norm = {DWF_NORM_SCALE, 0.0f, 255.0f};
    dwf_smodel s;
    dwf_err e;
    ck_assert_int_eq(dwf_smodel_from_model(m, &norm, 0.05f, NULL, NULL, 0, &s, &e), 0);
    dwf_dataset d = {0};
    d.n = 300;
    d.c = 1;
    d.h = d.w = 8;
    d.dim = 64;
    d.n_classes = 5;
    d.x_u8 = malloc((size_t)d.n * d.dim);
    d.y = malloc((size_t)d.n * sizeof(int32_t));
    dwf_rng r;
    dwf_rng_seed(&r, 401);
    for (int i = 0; i < d.n * d.dim; i++)
        d.x_u8[i] = (uint8_t)dwf_rng_below(&r, 256);
    for (int i = 0; i < d.n; i++)
        d.y[i] = (int32_t)dwf_rng_below(&r, 5);
    double acc, loss;
    ck_assert_msg(dwf_smodel_evaluate(&s, &d, &acc, &loss, &e) == 0, "%s", e.msg);
    /* the same by predict on raw bytes */
    float *raw = alloc_f((size_t)d.n * d.dim);
    int32_t *cls = malloc((size_t)d.n * sizeof(int32_t));
    float *pr = alloc_f((size_t)d.n * 5);
    for (int i = 0; i < d.n * d.dim; i++)
        raw[i] = d.x_u8[i];
    dwf_sws *ws = NULL;
    ck_assert_int_eq(dwf_sws_create(&s, 64, &ws, &e), 0);
    ck_assert_int_eq(dwf_smodel_predict(&s, ws, raw, d.n, cls, pr, &e), 0);
    int ok = 0;
    double l2 = 0.0;
    for (int i = 0; i < d.n; i++) {
        ok += cls[i] == d.y[i];
        l2 -= log(pr[i * 5 + d.y[i]]);
    }
    ck_assert(fabs(acc - (double)ok / d.n) < 1e-12);
    ck_assert(fabs(loss - l2 / d.n) < 1e-4 * (1.0 + loss));
    /* wrong width, bad labels */
    d.dim = 63;
    ck_assert_int_eq(dwf_smodel_evaluate(&s, &d, &acc, &loss, &e), DWF_EINVAL);
    d.dim = 64;
    d.y[5] = 9;
    ck_assert_int_ne(dwf_smodel_evaluate(&s, &d, &acc, &loss, &e), 0);
    dwf_sws_free(ws);
    free(raw);
    free(cls);
    free(pr);
    dwf_dataset_free(&d);
    dwf_smodel_free(&s);
    dwf_model_free(m);
}
END_TEST

/* ---- the .dwfm file ----------------------------------------------------- */

static void make_smodel(dwf_smodel *s, void (*make_arch)(dwf_arch *),
                        const char *spec, int with_kv)
{
    dwf_arch a;
    make_arch(&a);
    dwf_model *m = make_model(&a, 2, 500);
    dwf_norm norm = {DWF_NORM_STANDARDIZE, 72.5f, 90.25f};
    dwf_kv kv[3];
    memset(kv, 0, sizeof kv);
    snprintf(kv[0].key, sizeof kv[0].key, "test_acc");
    kv[0].value = 0.875;
    snprintf(kv[1].key, sizeof kv[1].key, "val_acc");
    kv[1].value = NAN;
    snprintf(kv[2].key, sizeof kv[2].key, "nonzero");
    kv[2].value = 1234;
    dwf_err e;
    ck_assert_int_eq(dwf_smodel_from_model(m, &norm, median_abs(m), spec, kv,
                                           with_kv ? 3 : 0, s, &e), 0);
    dwf_model_free(m);
}

static void assert_same_model(const dwf_smodel *a, const dwf_smodel *b)
{
    ck_assert_int_eq(memcmp(&a->arch, &b->arch, sizeof a->arch), 0);
    ck_assert_int_eq(memcmp(&a->norm, &b->norm, sizeof a->norm), 0);
    ck_assert(a->eps == b->eps);
    ck_assert_int_eq(!a->spec, !b->spec);
    if (a->spec)
        ck_assert_str_eq(a->spec, b->spec);
    ck_assert_int_eq(a->n_kv, b->n_kv);
    for (int i = 0; i < a->n_kv; i++) {
        ck_assert_str_eq(a->kv[i].key, b->kv[i].key);
        ck_assert_int_eq(memcmp(&a->kv[i].value, &b->kv[i].value, 8), 0);
    }
    for (int i = 0; i < a->arch.n_layers; i++) {
        const dwf_csr *x = &a->w[i], *y = &b->w[i];
        ck_assert_int_eq(x->rows, y->rows);
        ck_assert_int_eq(x->cols, y->cols);
        ck_assert_int_eq(x->nnz, y->nnz);
        ck_assert_int_eq(!a->bias[i], !b->bias[i]);
        ck_assert_int_eq(!a->dense[i], !b->dense[i]);
        if (!dwf_layer_has_weight(a->arch.layers[i].kind))
            continue;
        ck_assert_int_eq(memcmp(x->indptr, y->indptr, (x->rows + 1) * 8), 0);
        ck_assert_int_eq(memcmp(x->indices, y->indices, x->nnz * 4), 0);
        ck_assert_int_eq(memcmp(x->values, y->values, x->nnz * 4), 0);
        if (a->bias[i])
            ck_assert_int_eq(memcmp(a->bias[i], b->bias[i], x->rows * 4), 0);
    }
}

START_TEST(test_roundtrip)
{
    void (*archs[])(dwf_arch *) = {arch_mlp, arch_cnn};
    for (int k = 0; k < 4; k++) {
        dwf_smodel s, t;
        make_smodel(&s, archs[k % 2], k < 2 ? "{\"seed\": 1}" : NULL, k < 2);
        uint8_t *buf = NULL, *buf2 = NULL;
        size_t len = 0, len2 = 0;
        dwf_err e;
        ck_assert_int_eq(dwf_smodel_save(&s, &buf, &len, &e), 0);
        ck_assert_msg(dwf_smodel_load(&t, buf, len, &e) == 0, "%s", e.msg);
        assert_same_model(&s, &t);
        ck_assert(isnan(dwf_smodel_metric(&t, "no_such_key")));
        if (k < 2) {
            ck_assert(dwf_smodel_metric(&t, "test_acc") == 0.875);
            ck_assert(isnan(dwf_smodel_metric(&t, "val_acc")));
        }
        ck_assert_int_eq(dwf_smodel_save(&t, &buf2, &len2, &e), 0);
        ck_assert_uint_eq(len, len2);
        ck_assert_int_eq(memcmp(buf, buf2, len), 0);
        /* the file helpers */
        char *path = tu_write_temp("", 0, ".dwfm");
        ck_assert_ptr_nonnull(path);
        dwf_smodel u;
        ck_assert_msg(dwf_smodel_write_file(&s, path, &e) == 0, "%s", e.msg);
        ck_assert_msg(dwf_smodel_read_file(&u, path, &e) == 0, "%s", e.msg);
        assert_same_model(&s, &u);
        dwf_smodel_free(&u);
        unlink(path);
        ck_assert_int_eq(dwf_smodel_read_file(&u, path, &e), DWF_EIO);
        ck_assert_ptr_nonnull(strstr(e.msg, path));
        free(path);
        ck_assert_int_eq(dwf_smodel_write_file(&s, "/nonexistent-dir/x.dwfm", &e),
                         DWF_EIO);
        ck_assert_ptr_nonnull(strstr(e.msg, "/nonexistent-dir/x.dwfm"));
        free(buf);
        free(buf2);
        dwf_smodel_free(&s);
        dwf_smodel_free(&t);
    }
}
END_TEST

/* Loading must fail with DWF_EFORMAT and leave an empty model. */
static void expect_bad(const uint8_t *buf, size_t len, const char *want,
                       const char *what)
{
    dwf_smodel s;
    dwf_err e;
    memset(&e, 0, sizeof e);
    int rc = dwf_smodel_load(&s, buf, len, &e);
    CHECK_MSG(rc == DWF_EFORMAT, "%s: load gave %d (%s)", what, rc, e.msg);
    CHECK_MSG(!want || strstr(e.msg, want), "%s: message '%s' lacks '%s'", what,
              e.msg, want);
    CHECK_MSG(s.kv == NULL && s.spec == NULL && s.w[0].indptr == NULL,
              "%s: model not cleared", what);
    dwf_smodel_free(&s);
}

/* Re-stamps the trailing CRC after an edit. */
static void fix_crc(uint8_t *buf, size_t len)
{
    uint32_t c = dwf_crc32(buf, len - 4);
    memcpy(buf + len - 4, &c, 4);
}

/* Offset of the first weight block (its layer index field). */
static size_t first_block(const dwf_smodel *s)
{
    size_t off = 8 + 7 * 4 + (size_t)s->arch.n_layers * 13 * 4 + 12 + 4;
    off += 4 + (s->spec ? strlen(s->spec) : 0);
    off += 4;
    for (int i = 0; i < s->n_kv; i++)
        off += 4 + strlen(s->kv[i].key) + 8;
    return off + 4;
}

START_TEST(test_corrupt)
{
    dwf_smodel s;
    make_smodel(&s, arch_cnn, "{\"a\": 1}", 1);
    uint8_t *buf = NULL;
    size_t len = 0;
    dwf_err e;
    ck_assert_int_eq(dwf_smodel_save(&s, &buf, &len, &e), 0);
    uint8_t *c = malloc(len + 8);

    /* bad magic, unknown version */
    memcpy(c, buf, len);
    c[0] = 'X';
    expect_bad(c, len, "magic", "bad magic");
    memcpy(c, buf, len);
    c[4] = 2;
    fix_crc(c, len);
    expect_bad(c, len, "version", "version 2");

    /* every truncation */
    for (size_t n = 0; n < len; n++)
        expect_bad(buf, n, NULL, "truncated");
    expect_bad(buf, 0, "too short", "empty");

    /* a flipped bit anywhere after the version is a CRC error */
    for (size_t at = 8; at < len; at += 1 + at / 7) {
        memcpy(c, buf, len);
        c[at] ^= 0x10;
        expect_bad(c, len, "CRC", "flipped byte");
    }
    /* trailing garbage */
    memcpy(c, buf, len);
    memcpy(c + len, "\0\0\0\0", 4);
    fix_crc(c, len + 4);
    expect_bad(c, len + 4, NULL, "trailing bytes");

    /* structural errors behind a valid CRC */
    size_t blk = first_block(&s);
    uint32_t idx, rows, cols;
    uint64_t nnz;
    memcpy(&idx, buf + blk, 4);
    memcpy(&rows, buf + blk + 4, 4);
    memcpy(&cols, buf + blk + 8, 4);
    memcpy(&nnz, buf + blk + 12, 8);
    ck_assert_uint_eq(idx, 0);
    ck_assert_uint_eq(rows, (uint32_t)s.w[0].rows);
    ck_assert_uint_eq(cols, (uint32_t)s.w[0].cols);
    ck_assert_uint_eq(nnz, (uint64_t)s.w[0].nnz);
    size_t ip = blk + 20, ix = ip + ((size_t)rows + 1) * 8;
    int64_t v;

    memcpy(c, buf, len); /* indptr going backwards */
    v = s.w[0].indptr[2] + 1;
    memcpy(c + ip + 8, &v, 8);
    fix_crc(c, len);
    expect_bad(c, len, "indptr", "indptr not monotone");

    memcpy(c, buf, len); /* indptr not ending at nnz */
    v = s.w[0].nnz - 1;
    memcpy(c + ip + (size_t)rows * 8, &v, 8);
    fix_crc(c, len);
    expect_bad(c, len, "indptr", "indptr end");

    memcpy(c, buf, len); /* indptr[0] != 0 */
    v = 1;
    memcpy(c + ip, &v, 8);
    fix_crc(c, len);
    expect_bad(c, len, "indptr", "indptr start");

    memcpy(c, buf, len); /* column out of range */
    int32_t col = (int32_t)cols;
    memcpy(c + ix, &col, 4);
    fix_crc(c, len);
    expect_bad(c, len, "out of range", "column index");

    /* columns not ascending: swap the first two of a row with >= 2 */
    int row = -1;
    for (int r = 0; r < s.w[0].rows && row < 0; r++)
        if (s.w[0].indptr[r + 1] - s.w[0].indptr[r] >= 2)
            row = r;
    ck_assert_int_ge(row, 0);
    memcpy(c, buf, len);
    size_t at = ix + (size_t)s.w[0].indptr[row] * 4;
    memcpy(c + at, buf + at + 4, 4);
    memcpy(c + at + 4, buf + at, 4);
    fix_crc(c, len);
    expect_bad(c, len, "ascending", "column order");

    memcpy(c, buf, len); /* shape disagreeing with the architecture */
    uint32_t r2 = rows + 1;
    memcpy(c + blk + 4, &r2, 4);
    fix_crc(c, len);
    expect_bad(c, len, "architecture", "rows");

    memcpy(c, buf, len); /* nnz larger than the matrix */
    uint64_t big = (uint64_t)rows * cols + 1;
    memcpy(c + blk + 12, &big, 8);
    fix_crc(c, len);
    expect_bad(c, len, "non-zeros", "nnz");

    memcpy(c, buf, len); /* wrong layer index */
    uint32_t i2 = 3;
    memcpy(c + blk, &i2, 4);
    fix_crc(c, len);
    expect_bad(c, len, "layer", "layer index");

    memcpy(c, buf, len); /* a layer's stored shape changed */
    int32_t bad = 99;
    memcpy(c + 8 + 7 * 4 + 10 * 4, &bad, 4); /* layers[0].out_c */
    fix_crc(c, len);
    expect_bad(c, len, "architecture", "arch shape");

    memcpy(c, buf, len); /* unknown layer kind */
    bad = 17;
    memcpy(c + 8 + 7 * 4, &bad, 4);
    fix_crc(c, len);
    expect_bad(c, len, "kind", "layer kind");

    memcpy(c, buf, len); /* huge input: rejected, not allocated */
    bad = 0x7fffffff;
    memcpy(c + 8, &bad, 4);
    fix_crc(c, len);
    expect_bad(c, len, "input", "input shape");

    memcpy(c, buf, len); /* a NaN weight */
    float nanv = NAN;
    memcpy(c + ix + (size_t)nnz * 4, &nanv, 4);
    fix_crc(c, len);
    expect_bad(c, len, "finite", "nan value");

    free(c);
    free(buf);
    dwf_smodel_free(&s);
}
END_TEST

/* ---- batch-1 kernels ---------------------------------------------------- */

/* Kernels to try at batch 1: the portable one, AVX2 where the CPU has it,
 * and the default choice. Returns how many were written to isa[]. */
static int batch1_isas(const dwf_smodel *s, int isa[3])
{
    dwf_sws *ws = NULL;
    dwf_err e;
    int n = 0, dim = in_dim(&s->arch);
    float *x = alloc_f((size_t)dim), *z = alloc_f((size_t)s->arch.n_classes);
    ck_assert_int_eq(dwf_sws_create(s, 1, &ws, &e), 0);
    const int want[] = {0, 1, -1};
    for (int k = 0; k < 3; k++)
        if (dwf_smodel_forward_isa(s, ws, x, 1, want[k], z, &e) == 0)
            isa[n++] = want[k];
    ck_assert_int_eq(dwf_smodel_forward_isa(s, ws, x, 1, 5, z, &e), DWF_EINVAL);
    dwf_sws_free(ws);
    free(x);
    free(z);
    ck_assert_int_ge(n, 2); /* portable and default always exist */
    return n;
}

/* dense 37 relu, dense 23 (no relu), dense 19, relu, dense 17 relu,
 * dense 6: row counts off the 16-lane chunks, chains with and without a
 * fused relu. */
static void arch_deep(dwf_arch *a)
{
    dwf_err e;
    dwf_arch_init(a, 1, 8, 8, 6, 1);
    const dwf_layer_spec ls[] = {
        {.kind = DWF_LAYER_FLATTEN},
        {.kind = DWF_LAYER_DENSE, .units = 37},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 23},
        {.kind = DWF_LAYER_DENSE, .units = 19},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 17},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 6},
    };
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        ck_assert_int_eq(dwf_arch_add(a, &ls[i], &e), 0);
    ck_assert_msg(dwf_arch_resolve(a, &e) == 0, "%s", e.msg);
}

/* The AVX-512 block layout of the batch-1 kernel (where the CPU has it;
 * else the same checks hold for the default kernel): the same bits as
 * batch 3 (and so as the AVX2 slot kernel), for layers with a partial
 * last block (70 inputs), an odd number of chunks (37 rows: 3), densities
 * from 1% to 100%, and inputs partly -0, or holding an inf or a NaN. */
START_TEST(test_batch1_blocks)
{
    dwf_arch a;
    dwf_err e;
    const int hidden[1] = {37};
    ck_assert_int_eq(dwf_arch_mlp(&a, 1, 1, 70, hidden, 1, 5, 1, &e), 0);
    const double keep[] = {0.01, 0.1, 0.4, 1.0};
    dwf_rng r;
    dwf_rng_seed(&r, 900);
    for (int d = 0; d < 4; d++) {
        dwf_model *m = make_model(&a, 3, 901 + (uint64_t)d);
        for (int i = 0; i < a.n_layers; i++) {
            if (m->weight_idx[i] < 0)
                continue;
            dwf_param *p = &m->params[m->weight_idx[i]];
            for (int64_t k = 0; k < p->n; k++)
                if (dwf_rng_uniform(&r) >= keep[d])
                    p->w[k] = 0.0f;
        }
        dwf_smodel s;
        ck_assert_int_eq(dwf_smodel_from_model(m, NULL, 1e-30f, NULL, NULL, 0, &s, &e), 0);
        ck_assert_int_eq(dwf_smodel_set_crossover(&s, 2.0, &e), 0); /* all sparse */
        int isa[3];
        int ni = batch1_isas(&s, isa);
        dwf_sws *ws = NULL;
        ck_assert_int_eq(dwf_sws_create(&s, 3, &ws, &e), 0);
        float x[3 * 70], z[3 * 5], zb[3 * 5];
        for (int trial = 0; trial < 40; trial++) {
            for (int j = 0; j < 3 * 70; j++) {
                double u = dwf_rng_uniform(&r);
                x[j] = u < 0.5 ? 0.0f : u < 0.6 ? -0.0f : (float)dwf_rng_normal(&r);
                if (trial % 4 == 1 && j % 70 < 32) /* a whole block of zeros */
                    x[j] = (j % 3) ? 0.0f : -0.0f;
            }
            if (trial % 8 == 3)
                x[5] = INFINITY;
            if (trial % 8 == 7)
                x[70 + 66] = NAN;
            ck_assert_int_eq(dwf_smodel_forward(&s, ws, x, 3, zb, &e), 0);
            for (int k = 0; k < ni; k++) {
                if (isa[k] == 0)
                    continue;
                for (int n = 0; n < 3; n++)
                    ck_assert_int_eq(dwf_smodel_forward_isa(&s, ws, x + n * 70, 1, isa[k],
                                                            z + n * 5, &e), 0);
                CHECK_MSG(memcmp(z, zb, sizeof zb) == 0,
                          "density %g trial %d kernel %d: batch 1 and 3 differ",
                          keep[d], trial, isa[k]);
            }
        }
        dwf_sws_free(ws);
        dwf_smodel_free(&s);
        dwf_model_free(m);
    }
}
END_TEST

/* Every batch-1 kernel against the dense forward pass of the thresholded
 * model, for crossovers that make the layers sparse, dense or mixed (the
 * third weight layer is kept whole, so that crossover 0.9 puts a dense
 * layer between sparse ones); with AVX2, batch 1 and batch 9 give the
 * same bits for a sparse model (an MLP, and a CNN). */
START_TEST(test_batch1_kernels)
{
    dwf_arch a;
    arch_deep(&a);
    dwf_model *m = make_model(&a, 9, 600);
    /* empty rows in the first layer (64 inputs), a dense third one */
    int nw = 0;
    for (int i = 0; i < a.n_layers; i++) {
        if (m->weight_idx[i] < 0)
            continue;
        dwf_param *p = &m->params[m->weight_idx[i]];
        if (nw == 0)
            for (int r = 0; r < 37; r += 5)
                memset(p->w + (size_t)r * 64, 0, 64 * sizeof(float));
        if (nw == 2)
            for (int64_t k = 0; k < p->n; k++)
                p->w[k] = p->w[k] * 1000.0f + (p->w[k] >= 0 ? 1.0f : -1.0f);
        nw++;
    }
    float eps = median_abs(m);
    dwf_smodel s;
    dwf_err e;
    ck_assert_int_eq(dwf_smodel_from_model(m, NULL, eps, NULL, NULL, 0, &s, &e), 0);
    threshold_model(m, eps);
    int isa[3];
    int ni = batch1_isas(&s, isa);
    const int B = 9, dim = in_dim(&a), nc = a.n_classes;
    dwf_rng r;
    dwf_rng_seed(&r, 601);
    float *x = alloc_f((size_t)B * dim), *z = alloc_f((size_t)B * nc);
    float *zb = alloc_f((size_t)B * nc);
    for (int i = 0; i < B * dim; i++)
        x[i] = dwf_rng_uniform(&r) < 0.4 ? 0.0f : (float)dwf_rng_normal(&r);
    float *ref = alloc_f((size_t)B * nc);
    memcpy(ref, dwf_model_forward(m, x, B), (size_t)B * nc * sizeof(float));
    dwf_sws *ws = NULL;
    ck_assert_int_eq(dwf_sws_create(&s, B, &ws, &e), 0);
    const double cross[] = {2.0, 0.9, DWF_SPARSE_CROSSOVER, 0.0};
    for (int c = 0; c < 4; c++) {
        ck_assert_int_eq(dwf_smodel_set_crossover(&s, cross[c], &e), 0);
        for (int i = 0; i < a.n_layers; i++)
            if (a.layers[i].kind == DWF_LAYER_DENSE)
                ck_assert((s.sell[i] != NULL) == (s.dense[i] == NULL));
        for (int k = 0; k < ni; k++) {
            for (int n = 0; n < B; n++)
                ck_assert_int_eq(dwf_smodel_forward_isa(&s, ws, x + (size_t)n * dim,
                                                        1, isa[k], z + (size_t)n * nc,
                                                        &e), 0);
            for (int i = 0; i < B * nc; i++)
                CHECK_MSG(fabs((double)z[i] - ref[i]) <= 1e-5 * (1.0 + fabs(ref[i])),
                          "crossover %g kernel %d: logit %d is %g, want %g",
                          cross[c], isa[k], i, (double)z[i], (double)ref[i]);
            if (isa[k] != 0 && cross[c] > 1.0) { /* AVX2 slots, AVX-512 blocks */
                ck_assert_int_eq(dwf_smodel_forward(&s, ws, x, B, zb, &e), 0);
                CHECK_MSG(memcmp(z, zb, (size_t)B * nc * sizeof(float)) == 0,
                          "kernel %d: batch 1 and batch %d differ", isa[k], B);
            }
        }
    }
    dwf_sws_free(ws);
    free(x);
    free(z);
    free(zb);
    free(ref);
    dwf_smodel_free(&s);
    dwf_model_free(m);

    /* the same batch invariance through conv and pool layers */
    arch_cnn(&a);
    m = make_model(&a, 4, 602);
    ck_assert_int_eq(dwf_smodel_from_model(m, NULL, median_abs(m), NULL, NULL, 0,
                                           &s, &e), 0);
    ck_assert_int_eq(dwf_smodel_set_crossover(&s, 2.0, &e), 0);
    ni = batch1_isas(&s, isa);
    int dc = in_dim(&a), ncc = a.n_classes;
    x = alloc_f((size_t)4 * dc);
    z = alloc_f((size_t)4 * ncc);
    zb = alloc_f((size_t)4 * ncc);
    for (int i = 0; i < 4 * dc; i++)
        x[i] = (float)dwf_rng_normal(&r);
    ck_assert_int_eq(dwf_sws_create(&s, 4, &ws, &e), 0);
    ck_assert_int_eq(dwf_smodel_forward(&s, ws, x, 4, zb, &e), 0);
    for (int k = 0; k < ni; k++) {
        if (isa[k] != 1)
            continue;
        for (int n = 0; n < 4; n++)
            ck_assert_int_eq(dwf_smodel_forward_isa(&s, ws, x + (size_t)n * dc, 1,
                                                    1, z + (size_t)n * ncc, &e), 0);
        CHECK_MSG(memcmp(z, zb, (size_t)4 * ncc * sizeof(float)) == 0,
                  "AVX2 CNN: batch 1 and batch 4 differ");
    }
    dwf_sws_free(ws);
    free(x);
    free(z);
    free(zb);
    dwf_smodel_free(&s);
    dwf_model_free(m);
}
END_TEST

/* Logits of sample j of x when it sits at position pos of a batch of b
 * (the other positions hold other samples of x), with kernel isa. */
static void logits_in_batch(const dwf_smodel *s, dwf_sws *ws, const float *x, int nx,
                            int j, int b, int pos, int isa, float *out)
{
    dwf_err e;
    int dim = in_dim(&s->arch), nc = s->arch.n_classes;
    float *xb = alloc_f((size_t)b * dim), *z = alloc_f((size_t)b * nc);
    for (int k = 0; k < b; k++) {
        int src = k == pos ? j : (j + 1 + k) % nx;
        memcpy(xb + (size_t)k * dim, x + (size_t)src * dim, (size_t)dim * sizeof(float));
    }
    ck_assert_int_eq(dwf_smodel_forward_isa(s, ws, xb, b, isa, z, &e), 0);
    memcpy(out, z + (size_t)pos * nc, (size_t)nc * sizeof(float));
    free(xb);
    free(z);
}

/* With AVX2 and FMA, batches of two or more give every sample the same
 * logits whatever the batch, its position, the crossover (dense or sparse
 * layers: own kernels, not sgemm) and the kernel (AVX2 or AVX-512): an MLP
 * with a dense layer between sparse ones, and a CNN. */
START_TEST(test_batch_invariance)
{
    if (!dwf_smodel_batch_invariant()) {
        fprintf(stderr, "check_sparse: no AVX2 and FMA, batch invariance not checked\n");
        return;
    }
    dwf_err e;
    for (int net = 0; net < 2; net++) {
        dwf_arch a;
        if (net == 0)
            arch_deep(&a);
        else
            arch_cnn(&a);
        dwf_model *m = make_model(&a, 4, 700 + net);
        dwf_smodel s;
        ck_assert_int_eq(dwf_smodel_from_model(m, NULL, median_abs(m) * 0.5f, NULL, NULL, 0,
                                               &s, &e), 0);
        const int NX = 70, dim = in_dim(&a), nc = a.n_classes;
        dwf_rng r;
        dwf_rng_seed(&r, 710 + net);
        float *x = alloc_f((size_t)NX * dim);
        for (int i = 0; i < NX * dim; i++)
            x[i] = dwf_rng_uniform(&r) < 0.3 ? 0.0f : (float)dwf_rng_normal(&r);
        dwf_sws *ws = NULL;
        ck_assert_int_eq(dwf_sws_create(&s, 67, &ws, &e), 0);
        float *ref = alloc_f((size_t)nc), *z = alloc_f((size_t)nc);
        const double cross[] = {DWF_SPARSE_CROSSOVER, 2.0, 0.9, 0.0};
        const int sizes[][2] = {{2, 0}, {2, 1}, {17, 16}, {67, 3}, {67, 66}, {33, 32}};
        for (int j = 0; j < 5; j++) {
            int first = 1;
            for (int c = 0; c < 4; c++) {
                ck_assert_int_eq(dwf_smodel_set_crossover(&s, cross[c], &e), 0);
                for (int t = 0; t < 6; t++)
                    for (int isa = -1; isa <= 1; isa += 2) {
                        logits_in_batch(&s, ws, x, NX, j, sizes[t][0], sizes[t][1], isa,
                                        first ? ref : z);
                        if (!first)
                            CHECK_MSG(memcmp(ref, z, (size_t)nc * sizeof(float)) == 0,
                                      "net %d sample %d: crossover %g, batch %d at %d, "
                                      "isa %d differs", net, j, cross[c], sizes[t][0],
                                      sizes[t][1], isa);
                        first = 0;
                    }
            }
        }
        free(ref);
        free(z);
        free(x);
        dwf_sws_free(ws);
        dwf_smodel_free(&s);
        dwf_model_free(m);
    }
}
END_TEST

/* One sparse layer with inf / NaN inputs: only the rows with a weight on
 * such an input may turn non-finite (padded lanes must not read it; the
 * padding points at column 0). Also a layer with more than 65536 inputs
 * (int32 column indices) against a double-precision product. */
START_TEST(test_batch1_edges)
{
    dwf_err e;
    const int none[] = {0};
    dwf_arch a;
    ck_assert_int_eq(dwf_arch_mlp(&a, 1, 1, 40, none, 0, 35, 1, &e), 0);
    dwf_model *m = make_model(&a, 1, 700);
    dwf_param *w = &m->params[m->weight_idx[a.n_layers - 1]];
    ck_assert_int_eq(w->n, 35 * 40);
    for (int rr = 0; rr < 35; rr++) /* sparse rows, some empty */
        for (int j = 0; j < 40; j++)
            if ((rr * 7 + j * 3) % 5 != 0 || rr % 6 == 0)
                w->w[rr * 40 + j] = 0.0f;
    dwf_smodel s;
    ck_assert_int_eq(dwf_smodel_from_model(m, NULL, 1e-30f, NULL, NULL, 0, &s, &e), 0);
    int isa[3];
    int ni = batch1_isas(&s, isa);
    dwf_sws *ws = NULL;
    ck_assert_int_eq(dwf_sws_create(&s, 1, &ws, &e), 0);
    float x[40], z[35];
    const float bad[] = {INFINITY, -INFINITY, NAN};
    const int cols[] = {0, 1, 39};
    for (int k = 0; k < ni; k++)
        for (int b = 0; b < 3; b++)
            for (int ci = 0; ci < 3; ci++) {
                for (int j = 0; j < 40; j++)
                    x[j] = 0.25f * (float)(j % 7) - 0.5f;
                x[cols[ci]] = bad[b];
                ck_assert_int_eq(dwf_smodel_forward_isa(&s, ws, x, 1, isa[k], z, &e), 0);
                for (int rr = 0; rr < 35; rr++) {
                    int uses = w->w[rr * 40 + cols[ci]] != 0.0f;
                    CHECK_MSG((!isfinite(z[rr])) == uses,
                              "kernel %d, %g at column %d: row %d is %g", isa[k],
                              (double)bad[b], cols[ci], rr, (double)z[rr]);
                }
            }
    dwf_sws_free(ws);
    dwf_smodel_free(&s);
    dwf_model_free(m);

    /* int32 indices: 70000 inputs, 20 outputs, about 1% kept */
    ck_assert_int_eq(dwf_arch_mlp(&a, 1, 1, 70000, none, 0, 20, 1, &e), 0);
    m = make_model(&a, 1, 701);
    w = &m->params[m->weight_idx[a.n_layers - 1]];
    dwf_rng r;
    dwf_rng_seed(&r, 702);
    for (int64_t k = 0; k < w->n; k++)
        if (dwf_rng_uniform(&r) > 0.01)
            w->w[k] = 0.0f;
    ck_assert_int_eq(dwf_smodel_from_model(m, NULL, 1e-30f, NULL, NULL, 0, &s, &e), 0);
    ni = batch1_isas(&s, isa);
    float *xw = alloc_f(70000), zw[20];
    for (int j = 0; j < 70000; j++)
        xw[j] = (float)dwf_rng_normal(&r);
    ck_assert_int_eq(dwf_sws_create(&s, 1, &ws, &e), 0);
    const float *bias = s.bias[a.n_layers - 1];
    for (int k = 0; k < ni; k++) {
        ck_assert_int_eq(dwf_smodel_forward_isa(&s, ws, xw, 1, isa[k], zw, &e), 0);
        for (int rr = 0; rr < 20; rr++) {
            double ref = bias ? bias[rr] : 0.0, mag = fabs(ref);
            for (int j = 0; j < 70000; j++) {
                ref += (double)w->w[(size_t)rr * 70000 + j] * xw[j];
                mag += fabs((double)w->w[(size_t)rr * 70000 + j] * xw[j]);
            }
            CHECK_MSG(fabs(zw[rr] - ref) <= 1e-5 * (1.0 + mag),
                      "wide kernel %d: row %d is %g, want %g", isa[k], rr,
                      (double)zw[rr], ref);
        }
    }
    free(xw);
    dwf_sws_free(ws);
    dwf_smodel_free(&s);
    dwf_model_free(m);
}
END_TEST

/* dwf_dense_matmul_cut: a dense weight with the entries below the cut
 * skipped gives the bits of the CSR product of the weight cut there
 * (dwf_csr_matmul, the reference's sparse layers) for every batch size;
 * the AVX-512 and AVX2 products agree (one of them runs here). */
START_TEST(test_dense_cut)
{
    if (!dwf_smodel_batch_invariant()) {
        fprintf(stderr, "check_sparse: no AVX2 and FMA, cut products not checked\n");
        return;
    }
    dwf_rng r;
    dwf_rng_seed(&r, 77);
    const int rows = 37, cols = 83, ns[] = {1, 2, 15, 16, 17, 64, 65, 130};
    float *W = alloc_f((size_t)rows * cols), *b = alloc_f(rows);
    for (int i = 0; i < rows * cols; i++)
        W[i] = dwf_rng_uniform(&r) < 0.2 ? 0.0f : (float)dwf_rng_normal(&r);
    for (int i = 0; i < rows; i++)
        b[i] = (float)dwf_rng_normal(&r);
    dwf_err e;
    for (int c = 0; c < 3; c++) {
        float cut = c == 0 ? 0.0f : c == 1 ? 0.5f : 1.5f;
        dwf_csr csr;
        ck_assert_int_eq(dwf_csr_from_dense(&csr, W, rows, cols, cut, &e), 0);
        for (size_t t = 0; t < sizeof ns / sizeof *ns; t++) {
            int n = ns[t];
            float *x = alloc_f((size_t)cols * n), *y1 = alloc_f((size_t)rows * n),
                  *y2 = alloc_f((size_t)rows * n);
            for (int i = 0; i < cols * n; i++)
                x[i] = (float)dwf_rng_normal(&r);
            dwf_csr_matmul(&csr, x, n, b, y1);
            dwf_dense_matmul_cut(W, rows, cols, cut, x, n, c == 2 ? NULL : b, y2);
            if (c == 2) /* without bias: add it the reference's way */
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < n; j++)
                        y2[(size_t)i * n + j] = b[i] + y2[(size_t)i * n + j];
            CHECK_MSG(memcmp(y1, y2, (size_t)rows * n * sizeof(float)) == 0,
                      "cut %g, n %d: the dense cut product differs", cut, n);
            free(x);
            free(y1);
            free(y2);
        }
        dwf_csr_free(&csr);
    }
    free(W);
    free(b);
}
END_TEST

START_TEST(test_args)
{
    dwf_csr c;
    dwf_err e;
    float x = 1.0f;
    ck_assert_int_eq(dwf_csr_from_dense(&c, &x, -1, 1, 0.0f, &e), DWF_EINVAL);
    dwf_arch a;
    arch_mlp(&a);
    dwf_model *m = make_model(&a, 2, 1);
    dwf_smodel s;
    ck_assert_int_eq(dwf_smodel_from_model(m, NULL, NAN, NULL, NULL, 0, &s, &e),
                     DWF_EINVAL);
    ck_assert_int_eq(dwf_smodel_from_model(m, NULL, 0.0f, NULL, NULL, 0, &s, &e), 0);
    dwf_sws *ws = NULL;
    ck_assert_int_eq(dwf_sws_create(&s, 0, &ws, &e), DWF_EINVAL);
    ck_assert_ptr_null(ws);
    /* a workspace made for a smaller model is refused */
    dwf_arch small;
    const int h[] = {2};
    ck_assert_int_eq(dwf_arch_mlp(&small, 1, 2, 2, h, 1, 2, 1, &e), 0);
    dwf_model *m2 = make_model(&small, 1, 2);
    dwf_smodel s2;
    ck_assert_int_eq(dwf_smodel_from_model(m2, NULL, 0.0f, NULL, NULL, 0, &s2, &e), 0);
    ck_assert_int_eq(dwf_sws_create(&s2, 1, &ws, &e), 0);
    float in[64] = {0}, out[5];
    ck_assert_int_eq(dwf_smodel_forward(&s, ws, in, 1, out, &e), DWF_EINVAL);
    dwf_sws_free(ws);
    dwf_smodel_free(&s2);
    dwf_smodel_free(&s);
    dwf_model_free(m2);
    dwf_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sparse");
    TCase *tc = tcase_create("sparse");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_csr_random);
    tcase_add_test(tc, test_forward_mlp);
    tcase_add_test(tc, test_forward_cnn);
    tcase_add_test(tc, test_forward_lenet5);
    tcase_add_test(tc, test_predict_crossover);
    tcase_add_test(tc, test_evaluate);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_corrupt);
    tcase_add_test(tc, test_batch1_kernels);
    tcase_add_test(tc, test_batch1_blocks);
    tcase_add_test(tc, test_batch1_edges);
    tcase_add_test(tc, test_batch_invariance);
    tcase_add_test(tc, test_dense_cut);
    tcase_add_test(tc, test_args);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
