/*
 * check_layers.c - the layer kernels (core/dwf_layers.c) and the model's
 * forward/backward (core/dwf_model.c): central-difference gradient checks
 * (input, weight and bias gradients) for dense, conv2d, maxpool2d, relu
 * and softmax cross-entropy, conv2d forward and backward against a naive
 * direct convolution, and the gradients of a whole small factorized CNN
 * (collapsed weights, biases and the factors through the chain rule).
 *
 * Finite differences run on float code, so the losses are accumulated in
 * double and compared with a relative tolerance: an element passes when
 * |analytic - numeric| <= rtol * max(|numeric|, 0.05 * max |numeric|).
 */
#include "testutil.h"

#include <math.h>
#include <stdint.h>

#include "dwf_layers.h"
#include "dwf_model.h"
#include "dwf_rng.h"


/* ---- helpers ---------------------------------------------------------- */

static float *alloc_f(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof(float));
    ck_assert_ptr_nonnull(p);
    return p;
}

static void fill_normal(dwf_rng *r, float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * dwf_rng_normal(r));
}

/* sum_i r[i] y[i] in double: the scalar whose gradient wrt y is r. */
static double dot(const float *r, const float *y, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)r[i] * y[i];
    return s;
}

/* Compares an analytic gradient with a numeric one (see the top). */
static void check_grad(const char *what, const float *ana, const double *num,
                       size_t n, double rtol)
{
    double scale = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(num[i]));
    CHECK_MSG(scale > 0.0, "%s: numeric gradient is all zero", what);
    for (size_t i = 0; i < n; i++) {
        double tol = rtol * fmax(fabs(num[i]), 0.05 * scale);
        CHECK_MSG(fabs(ana[i] - num[i]) <= tol,
                  "%s[%zu]: analytic %.7g, numeric %.7g (tol %.3g)", what,
                  i, (double)ana[i], num[i], tol);
    }
}

static void check_close(const char *what, const float *a, const double *b,
                        size_t n, double tol)
{
    double scale = 1.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs(b[i]));
    for (size_t i = 0; i < n; i++)
        CHECK_MSG(fabs(a[i] - b[i]) <= tol * scale,
                  "%s[%zu]: got %.8g, expected %.8g", what, i,
                  (double)a[i], b[i]);
}

/* Central difference of f at x[i] (x restored afterwards). */
typedef double (*scalar_fn)(void *ctx);

static void numeric_grad(scalar_fn f, void *ctx, float *x, size_t n,
                         double eps, double *out)
{
    for (size_t i = 0; i < n; i++) {
        float x0 = x[i];
        x[i] = (float)(x0 + eps);
        double hi = (double)x[i];
        double fp = f(ctx);
        x[i] = (float)(x0 - eps);
        double lo = (double)x[i];
        double fm = f(ctx);
        x[i] = x0;
        out[i] = (fp - fm) / (hi - lo); /* the step actually taken */
    }
}

/* ---- dense ------------------------------------------------------------ */

typedef struct dense_ctx {
    int b, in, out;
    float *x, *w, *bias, *y, *r;
} dense_ctx;

static double dense_loss(void *p)
{
    dense_ctx *c = p;
    dwf_dense_forward(c->x, c->w, c->bias, c->b, c->in, c->out, c->y);
    return dot(c->r, c->y, (size_t)c->b * c->out);
}

START_TEST(test_dense_grad)
{
    dwf_rng rng;
    dwf_rng_seed(&rng, 1);
    dense_ctx c = {.b = 3, .in = 7, .out = 5};
    size_t nx = (size_t)c.b * c.in, nw = (size_t)c.out * c.in,
           ny = (size_t)c.b * c.out;
    c.x = alloc_f(nx);
    c.w = alloc_f(nw);
    c.bias = alloc_f((size_t)c.out);
    c.y = alloc_f(ny);
    c.r = alloc_f(ny);
    fill_normal(&rng, c.x, nx, 1.0);
    fill_normal(&rng, c.w, nw, 0.5);
    fill_normal(&rng, c.bias, (size_t)c.out, 0.5);
    fill_normal(&rng, c.r, ny, 1.0);

    /* forward against the definition */
    dense_loss(&c);
    double *ref = calloc(ny, sizeof(double));
    for (int i = 0; i < c.b; i++)
        for (int o = 0; o < c.out; o++) {
            double s = c.bias[o];
            for (int k = 0; k < c.in; k++)
                s += (double)c.x[i * c.in + k] * c.w[o * c.in + k];
            ref[i * c.out + o] = s;
        }
    check_close("dense y", c.y, ref, ny, 1e-5);

    float *dw = alloc_f(nw), *db = alloc_f((size_t)c.out), *dx = alloc_f(nx);
    /* garbage in the outputs: backward must overwrite, not accumulate */
    for (size_t i = 0; i < nw; i++)
        dw[i] = 1e3f;
    for (int i = 0; i < c.out; i++)
        db[i] = -1e3f;
    for (size_t i = 0; i < nx; i++)
        dx[i] = 7.0f;
    dwf_dense_backward(c.x, c.w, c.r, c.b, c.in, c.out, dw, db, dx);

    double *num = calloc(nw + nx + (size_t)c.out, sizeof(double));
    /* the layer is linear in x, w and bias: a large step has no truncation
     * error, only rounding */
    numeric_grad(dense_loss, &c, c.x, nx, 1e-2, num);
    check_grad("dense dx", dx, num, nx, 1e-3);
    numeric_grad(dense_loss, &c, c.w, nw, 1e-2, num);
    check_grad("dense dw", dw, num, nw, 1e-3);
    numeric_grad(dense_loss, &c, c.bias, (size_t)c.out, 1e-2, num);
    check_grad("dense dbias", db, num, (size_t)c.out, 1e-3);

    /* without bias and without dx */
    dwf_dense_forward(c.x, c.w, NULL, c.b, c.in, c.out, c.y);
    for (size_t i = 0; i < ny; i++)
        ref[i] -= c.bias[i % c.out];
    check_close("dense y (no bias)", c.y, ref, ny, 1e-5);
    float *dw2 = alloc_f(nw);
    dwf_dense_backward(c.x, c.w, c.r, c.b, c.in, c.out, dw2, NULL, NULL);
    ck_assert_mem_eq(dw, dw2, nw * sizeof(float));

    free(ref);
    free(num);
    free(dw);
    free(dw2);
    free(db);
    free(dx);
    free(c.x);
    free(c.w);
    free(c.bias);
    free(c.y);
    free(c.r);
}
END_TEST

/* ---- conv2d ----------------------------------------------------------- */

typedef struct conv_case {
    int b, in_c, in_h, in_w, out_c, k, stride, pad;
} conv_case;

static const conv_case conv_cases[] = {
    {1, 1, 5, 5, 1, 3, 1, 0},  /* smallest */
    {2, 2, 7, 6, 3, 3, 2, 1},  /* stride 2, pad 1, non-square */
    {3, 3, 8, 5, 4, 5, 1, 2},  /* pad 2, kernel 5 */
    {2, 2, 9, 9, 2, 3, 2, 2},  /* stride 2, pad 2 */
    {2, 4, 6, 7, 5, 1, 1, 0},  /* 1x1 kernel */
    {2, 1, 10, 7, 2, 4, 3, 1}, /* even kernel, stride 3 (rows left over) */
    {1, 2, 4, 4, 3, 3, 2, 1},  /* stride 2, pad 1, the CNN shape */
};

static dwf_conv_shape make_shape(const conv_case *cc)
{
    dwf_conv_shape s = {cc->in_c, cc->in_h, cc->in_w, cc->out_c, 0, 0,
                        cc->k, cc->stride, cc->pad};
    s.out_h = (cc->in_h + 2 * cc->pad - cc->k) / cc->stride + 1;
    s.out_w = (cc->in_w + 2 * cc->pad - cc->k) / cc->stride + 1;
    return s;
}

/* The input pixel feeding output (oy, ox) through kernel tap (ky, kx), or
 * -1 when it falls in the zero padding. */
static int tap(const dwf_conv_shape *s, int oy, int ox, int ky, int kx)
{
    int iy = oy * s->stride - s->pad + ky, ix = ox * s->stride - s->pad + kx;
    if (iy < 0 || iy >= s->in_h || ix < 0 || ix >= s->in_w)
        return -1;
    return iy * s->in_w + ix;
}

/* The direct 7-loop convolution, in double. */
static void naive_conv_forward(const dwf_conv_shape *s, int b, const float *x,
                               const float *w, const float *bias, double *y)
{
    int ihw = s->in_h * s->in_w, ohw = s->out_h * s->out_w;
    for (int n = 0; n < b; n++)
        for (int o = 0; o < s->out_c; o++)
            for (int oy = 0; oy < s->out_h; oy++)
                for (int ox = 0; ox < s->out_w; ox++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int c = 0; c < s->in_c; c++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int t = tap(s, oy, ox, ky, kx);
                                if (t < 0)
                                    continue;
                                acc += (double)x[(n * s->in_c + c) * ihw + t] *
                                       w[((o * s->in_c + c) * s->k + ky) * s->k + kx];
                            }
                    y[(n * s->out_c + o) * ohw + oy * s->out_w + ox] = acc;
                }
}

static void naive_conv_backward(const dwf_conv_shape *s, int b, const float *x,
                                const float *w, const float *dy, double *dw,
                                double *db, double *dx)
{
    int ihw = s->in_h * s->in_w, ohw = s->out_h * s->out_w;
    memset(dw, 0, sizeof(double) * s->out_c * s->in_c * s->k * s->k);
    memset(db, 0, sizeof(double) * s->out_c);
    memset(dx, 0, sizeof(double) * b * s->in_c * ihw);
    for (int n = 0; n < b; n++)
        for (int o = 0; o < s->out_c; o++)
            for (int oy = 0; oy < s->out_h; oy++)
                for (int ox = 0; ox < s->out_w; ox++) {
                    double g = dy[(n * s->out_c + o) * ohw + oy * s->out_w + ox];
                    db[o] += g;
                    for (int c = 0; c < s->in_c; c++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                int t = tap(s, oy, ox, ky, kx);
                                if (t < 0)
                                    continue;
                                int wi = ((o * s->in_c + c) * s->k + ky) * s->k + kx;
                                int xi = (n * s->in_c + c) * ihw + t;
                                dw[wi] += g * x[xi];
                                dx[xi] += g * w[wi];
                            }
                }
}

typedef struct conv_ctx {
    dwf_conv_shape s;
    int b;
    float *x, *w, *bias, *y, *r, *col;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    dwf_conv2d_forward(&c->s, c->x, c->w, c->bias, c->b, c->col, c->y);
    return dot(c->r, c->y, (size_t)c->b * c->s.out_c * c->s.out_h * c->s.out_w);
}

static void conv_case_run(const conv_case *cc, int with_fd)
{
    dwf_rng rng;
    dwf_rng_seed(&rng, 100 + (uint64_t)cc->k * 7 + (uint64_t)cc->in_h);
    conv_ctx c = {.s = make_shape(cc), .b = cc->b};
    const dwf_conv_shape *s = &c.s;
    CHECK(s->out_h >= 1 && s->out_w >= 1);
    size_t nx = (size_t)c.b * s->in_c * s->in_h * s->in_w;
    size_t nw = (size_t)s->out_c * s->in_c * s->k * s->k;
    size_t ny = (size_t)c.b * s->out_c * s->out_h * s->out_w;
    size_t ncol = (size_t)s->in_c * s->k * s->k * s->out_h * s->out_w;
    c.x = alloc_f(nx);
    c.w = alloc_f(nw);
    c.bias = alloc_f((size_t)s->out_c);
    c.y = alloc_f(ny);
    c.r = alloc_f(ny);
    c.col = alloc_f(ncol);
    float *dcol = alloc_f(ncol), *dw = alloc_f(nw),
          *db = alloc_f((size_t)s->out_c), *dx = alloc_f(nx);
    fill_normal(&rng, c.x, nx, 1.0);
    fill_normal(&rng, c.w, nw, 0.5);
    fill_normal(&rng, c.bias, (size_t)s->out_c, 0.5);
    fill_normal(&rng, c.r, ny, 1.0);

    char what[96];
    snprintf(what, sizeof what, "conv b%d %dx%dx%d->%d k%d s%d p%d", cc->b,
             cc->in_c, cc->in_h, cc->in_w, cc->out_c, cc->k, cc->stride,
             cc->pad);

    double *ref_y = calloc(ny, sizeof(double));
    double *ref_dw = calloc(nw, sizeof(double));
    double *ref_db = calloc((size_t)s->out_c, sizeof(double));
    double *ref_dx = calloc(nx, sizeof(double));
    CHECK(ref_y && ref_dw && ref_db && ref_dx);

    /* forward, with and without bias */
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        const float *bias = with_bias ? c.bias : NULL;
        for (size_t i = 0; i < ny; i++)
            c.y[i] = NAN; /* must be overwritten */
        dwf_conv2d_forward(s, c.x, c.w, bias, c.b, c.col, c.y);
        naive_conv_forward(s, c.b, c.x, c.w, bias, ref_y);
        char w2[128];
        snprintf(w2, sizeof w2, "%s y%s", what, with_bias ? "" : " (no bias)");
        check_close(w2, c.y, ref_y, ny, 1e-4);
    }

    /* backward: outputs overwritten (garbage first), then against naive */
    for (size_t i = 0; i < nw; i++)
        dw[i] = 1e3f;
    for (int i = 0; i < s->out_c; i++)
        db[i] = 1e3f;
    for (size_t i = 0; i < nx; i++)
        dx[i] = 1e3f;
    dwf_conv2d_backward(s, c.x, c.w, c.r, c.b, c.col, dcol, dw, db, dx);
    naive_conv_backward(s, c.b, c.x, c.w, c.r, ref_dw, ref_db, ref_dx);
    char w3[128];
    snprintf(w3, sizeof w3, "%s dw", what);
    check_close(w3, dw, ref_dw, nw, 1e-4);
    snprintf(w3, sizeof w3, "%s dbias", what);
    check_close(w3, db, ref_db, (size_t)s->out_c, 1e-4);
    snprintf(w3, sizeof w3, "%s dx", what);
    check_close(w3, dx, ref_dx, nx, 1e-4);

    /* dx = NULL and dbias = NULL leave dw unchanged */
    float *dw2 = alloc_f(nw);
    dwf_conv2d_backward(s, c.x, c.w, c.r, c.b, c.col, dcol, dw2, NULL, NULL);
    snprintf(w3, sizeof w3, "%s dw (no dx)", what);
    check_close(w3, dw2, ref_dw, nw, 1e-4);

    if (with_fd) {
        /* central differences (conv is linear in x, w and bias) */
        size_t nmax = nx > nw ? nx : nw;
        double *num = calloc(nmax, sizeof(double));
        numeric_grad(conv_loss, &c, c.x, nx, 1e-2, num);
        snprintf(w3, sizeof w3, "%s fd dx", what);
        check_grad(w3, dx, num, nx, 1e-3);
        numeric_grad(conv_loss, &c, c.w, nw, 1e-2, num);
        snprintf(w3, sizeof w3, "%s fd dw", what);
        check_grad(w3, dw, num, nw, 1e-3);
        numeric_grad(conv_loss, &c, c.bias, (size_t)s->out_c, 1e-2, num);
        snprintf(w3, sizeof w3, "%s fd dbias", what);
        check_grad(w3, db, num, (size_t)s->out_c, 1e-3);
        free(num);
    }

    free(ref_y);
    free(ref_dw);
    free(ref_db);
    free(ref_dx);
    free(dw2);
    free(dcol);
    free(dw);
    free(db);
    free(dx);
    free(c.x);
    free(c.w);
    free(c.bias);
    free(c.y);
    free(c.r);
    free(c.col);
}

START_TEST(test_conv_vs_naive)
{
    conv_case_run(&conv_cases[_i], 0);
}
END_TEST

START_TEST(test_conv_grad)
{
    /* stride 2 with padding, and pad 2 with a 5x5 kernel */
    conv_case_run(&conv_cases[1], 1);
    conv_case_run(&conv_cases[2], 1);
    conv_case_run(&conv_cases[5], 1);
}
END_TEST

/* im2col then col2im multiplies every pixel by the number of windows that
 * read it (the adjoint identity <im2col(x), c> = <x, col2im(c)>). */
START_TEST(test_im2col_adjoint)
{
    const conv_case *cc = &conv_cases[3];
    dwf_conv_shape s = make_shape(cc);
    dwf_rng rng;
    dwf_rng_seed(&rng, 5);
    size_t nx = (size_t)s.in_c * s.in_h * s.in_w;
    size_t ncol = (size_t)s.in_c * s.k * s.k * s.out_h * s.out_w;
    float *x = alloc_f(nx), *col = alloc_f(ncol), *c2 = alloc_f(ncol),
          *img = alloc_f(nx);
    fill_normal(&rng, x, nx, 1.0);
    fill_normal(&rng, c2, ncol, 1.0);
    dwf_im2col(&s, x, col);
    dwf_col2im(&s, c2, img);
    double lhs = 0.0, rhs = 0.0;
    for (size_t i = 0; i < ncol; i++)
        lhs += (double)col[i] * c2[i];
    for (size_t i = 0; i < nx; i++)
        rhs += (double)x[i] * img[i];
    CHECK_MSG(fabs(lhs - rhs) <= 1e-4 * fmax(1.0, fabs(lhs)),
              "<im2col x, c> = %.8g but <x, col2im c> = %.8g", lhs, rhs);
    free(x);
    free(col);
    free(c2);
    free(img);
}
END_TEST

/* ---- maxpool2d -------------------------------------------------------- */

typedef struct pool_ctx {
    int c, h, w, k, stride, oh, ow, b;
    float *x, *y, *r;
    int32_t *am;
} pool_ctx;

static double pool_loss(void *p)
{
    pool_ctx *c = p;
    dwf_maxpool_forward(c->c, c->h, c->w, c->k, c->stride, c->oh, c->ow, c->x,
                        c->b, c->y, c->am);
    return dot(c->r, c->y, (size_t)c->b * c->c * c->oh * c->ow);
}

static void pool_case(int b, int ch, int h, int w, int k, int stride)
{
    pool_ctx c = {.c = ch, .h = h, .w = w, .k = k, .stride = stride, .b = b};
    c.oh = (h - k) / stride + 1;
    c.ow = (w - k) / stride + 1;
    size_t nx = (size_t)b * ch * h * w, ny = (size_t)b * ch * c.oh * c.ow;
    c.x = alloc_f(nx);
    c.y = alloc_f(ny);
    c.r = alloc_f(ny);
    c.am = calloc(ny, sizeof(int32_t));
    float *dx = alloc_f(nx);
    dwf_rng rng;
    dwf_rng_seed(&rng, 77 + (uint64_t)k);
    /* distinct values 0.01 apart (shuffled), so that a step of 1e-3 never
     * changes which input is the maximum */
    int *perm = malloc(nx * sizeof(int));
    for (size_t i = 0; i < nx; i++)
        perm[i] = (int)i;
    dwf_rng_shuffle(&rng, perm, (int)nx);
    for (size_t i = 0; i < nx; i++)
        c.x[i] = 0.01f * (float)(perm[i] - (int)nx / 2);
    free(perm);
    fill_normal(&rng, c.r, ny, 1.0);

    pool_loss(&c);
    /* forward against the definition */
    for (int n = 0; n < b * ch; n++)
        for (int oy = 0; oy < c.oh; oy++)
            for (int ox = 0; ox < c.ow; ox++) {
                float best = -INFINITY;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        best = fmaxf(best, c.x[(size_t)n * h * w +
                                               (oy * stride + ky) * w +
                                               ox * stride + kx]);
                size_t o = (size_t)n * c.oh * c.ow + oy * c.ow + ox;
                CHECK_MSG(c.y[o] == best, "maxpool y[%zu] = %g, expected %g",
                          o, (double)c.y[o], (double)best);
                CHECK(c.x[(size_t)n * h * w + c.am[o]] == best);
            }

    /* without argmax (inference): the same bits, also with -0, infinities,
     * -FLT_MAX and NaN in the windows */
    float *x2 = alloc_f(nx), *y1 = alloc_f(ny), *y2 = alloc_f(ny);
    int32_t *am2 = calloc(ny, sizeof(int32_t));
    const float odd[] = {-0.0f, 0.0f, -INFINITY, INFINITY, -FLT_MAX, NAN};
    for (size_t i = 0; i < nx; i++)
        x2[i] = i % 3 ? odd[(i * 7) % 6] : c.x[i];
    dwf_maxpool_forward(ch, h, w, k, stride, c.oh, c.ow, x2, b, y1, am2);
    dwf_maxpool_forward(ch, h, w, k, stride, c.oh, c.ow, x2, b, y2, NULL);
    CHECK(memcmp(y1, y2, ny * sizeof(float)) == 0);
    dwf_maxpool_forward(ch, h, w, k, stride, c.oh, c.ow, c.x, b, y2, NULL);
    CHECK(memcmp(c.y, y2, ny * sizeof(float)) == 0);
    free(x2);
    free(y1);
    free(y2);
    free(am2);

    for (size_t i = 0; i < nx; i++)
        dx[i] = 5.0f; /* overwritten */
    dwf_maxpool_backward(ch, h, w, c.oh, c.ow, c.r, c.am, b, dx);
    double *num = calloc(nx, sizeof(double));
    numeric_grad(pool_loss, &c, c.x, nx, 1e-3, num);
    char what[64];
    snprintf(what, sizeof what, "maxpool %dx%d k%d s%d dx", h, w, k, stride);
    /* the numeric gradient of an untouched input is exactly 0 */
    for (size_t i = 0; i < nx; i++)
        if (num[i] == 0.0)
            CHECK_MSG(dx[i] == 0.0f, "%s[%zu] = %g, expected 0", what, i,
                      (double)dx[i]);
    check_grad(what, dx, num, nx, 1e-2);
    free(num);
    free(dx);
    free(c.x);
    free(c.y);
    free(c.r);
    free(c.am);
}

START_TEST(test_maxpool_grad)
{
    pool_case(2, 2, 6, 6, 2, 2); /* the usual 2x2 pool */
    pool_case(2, 3, 7, 5, 2, 2); /* odd sizes: last row/column dropped */
    pool_case(1, 2, 7, 6, 3, 2); /* overlapping windows: gradients add up */
    pool_case(2, 1, 5, 5, 3, 1);
}
END_TEST

/* ---- relu ------------------------------------------------------------- */

typedef struct relu_ctx {
    int64_t n;
    float *x, *y, *r;
} relu_ctx;

static double relu_loss(void *p)
{
    relu_ctx *c = p;
    dwf_relu_forward(c->x, c->n, c->y);
    return dot(c->r, c->y, (size_t)c->n);
}

START_TEST(test_relu_grad)
{
    relu_ctx c = {.n = 61};
    c.x = alloc_f(61);
    c.y = alloc_f(61);
    c.r = alloc_f(61);
    float *dx = alloc_f(61);
    dwf_rng rng;
    dwf_rng_seed(&rng, 9);
    for (int i = 0; i < 61; i++) {
        double v = dwf_rng_normal(&rng);
        c.x[i] = (float)(v >= 0 ? v + 0.05 : v - 0.05); /* away from the kink */
    }
    fill_normal(&rng, c.r, 61, 1.0);
    relu_loss(&c);
    for (int i = 0; i < 61; i++)
        CHECK(c.y[i] == (c.x[i] > 0 ? c.x[i] : 0.0f));
    dwf_relu_backward(c.y, c.r, 61, dx);
    double num[61];
    numeric_grad(relu_loss, &c, c.x, 61, 1e-3, num);
    check_grad("relu dx", dx, num, 61, 1e-3);
    for (int i = 0; i < 61; i++)
        if (c.x[i] < 0)
            CHECK(dx[i] == 0.0f);
    /* in place: y = relu(x) into x, dx into dy */
    float *xy = alloc_f(61), *g = alloc_f(61);
    memcpy(xy, c.x, sizeof(float) * 61);
    memcpy(g, c.r, sizeof(float) * 61);
    dwf_relu_forward(xy, 61, xy);
    ck_assert_mem_eq(xy, c.y, sizeof(float) * 61);
    dwf_relu_backward(xy, g, 61, g);
    ck_assert_mem_eq(g, dx, sizeof(float) * 61);
    free(xy);
    free(g);
    free(dx);
    free(c.x);
    free(c.y);
    free(c.r);
}
END_TEST

/* ---- softmax cross-entropy ------------------------------------------- */

typedef struct xent_ctx {
    int b, c;
    float *z;
    int32_t *y;
} xent_ctx;

static double xent_loss(void *p)
{
    xent_ctx *c = p;
    return dwf_softmax_xent(c->z, c->y, c->b, c->c, NULL, NULL);
}

START_TEST(test_xent_grad)
{
    enum { B = 4, C = 5 };
    float z[B * C], dz[B * C];
    int32_t y[B] = {0, 3, 4, 2};
    dwf_rng rng;
    dwf_rng_seed(&rng, 3);
    fill_normal(&rng, z, B * C, 2.0);
    xent_ctx c = {B, C, z, y};
    int correct = -1;
    double loss = dwf_softmax_xent(z, y, B, C, dz, &correct);

    /* value and accuracy against the definition */
    double ref = 0.0;
    int ok = 0;
    for (int i = 0; i < B; i++) {
        double s = 0.0;
        int am = 0;
        for (int j = 0; j < C; j++) {
            s += exp((double)z[i * C + j]);
            if (z[i * C + j] > z[i * C + am])
                am = j;
        }
        ref += log(s) - z[i * C + y[i]];
        ok += am == y[i];
    }
    ref /= B;
    CHECK_MSG(fabs(loss - ref) <= 1e-12 * fmax(1.0, ref),
              "xent %.15g, expected %.15g", loss, ref);
    ck_assert_int_eq(correct, ok);

    double num[B * C];
    numeric_grad(xent_loss, &c, z, B * C, 1e-3, num);
    check_grad("xent dlogits", dz, num, B * C, 1e-3);
    /* each row of dlogits sums to zero */
    for (int i = 0; i < B; i++) {
        double s = 0.0;
        for (int j = 0; j < C; j++)
            s += dz[i * C + j];
        CHECK(fabs(s) < 1e-6);
    }

    /* huge logits stay finite (log-sum-exp with the max subtracted) */
    float big[2 * 3] = {1000.0f, 0.0f, -1000.0f, 88.0f, 89.0f, 90.0f};
    int32_t yb[2] = {2, 2};
    float db[6];
    double lb = dwf_softmax_xent(big, yb, 2, 3, db, &correct);
    CHECK(isfinite(lb));
    double want = (2000.0 + (log(1.0 + exp(-1.0) + exp(-2.0)))) / 2.0;
    CHECK_MSG(fabs(lb - want) < 1e-9, "big-logit xent %.12g, want %.12g",
              lb, want);
    for (int i = 0; i < 6; i++)
        CHECK(isfinite(db[i]));
    ck_assert_int_eq(correct, 1);
}
END_TEST

/* ---- a whole small factorized model ----------------------------------- */

typedef struct model_ctx {
    dwf_model *m;
    const float *x;
    const int32_t *y;
    int b;
    double lambda;
    int recollapse; /* perturbing factors: collapse before the forward */
} model_ctx;

static double model_loss(void *p)
{
    model_ctx *c = p;
    if (c->recollapse)
        dwf_model_collapse(c->m);
    const float *z = dwf_model_forward(c->m, c->x, c->b);
    double l = dwf_softmax_xent(z, c->y, c->b, c->m->arch.n_classes, NULL, NULL);
    if (c->recollapse)
        l += dwf_model_penalty(c->m, c->lambda);
    return l;
}

/* Distance of the last forward pass from the nearest kink: the smallest
 * |input| of a relu and the smallest gap between the two largest inputs of
 * a pooling window (an exact tie at 0, between relu zeros, is stable).
 * Finite differences are only meaningful when this is well above the
 * change a step of eps makes to any activation. */
static double kink_margin(const dwf_model *m, int b)
{
    double mg = INFINITY;
    for (int i = 0; i < m->arch.n_layers; i++) {
        const dwf_layer_spec *l = &m->arch.layers[i];
        const float *in = m->act[i];
        int64_t n = (int64_t)b * l->in_c * l->in_h * l->in_w;
        if (l->kind == DWF_LAYER_RELU) {
            for (int64_t j = 0; j < n; j++)
                mg = fmin(mg, fabs(in[j]));
        } else if (l->kind == DWF_LAYER_MAXPOOL2D) {
            for (int p = 0; p < b * l->in_c; p++)
                for (int oy = 0; oy < l->out_h; oy++)
                    for (int ox = 0; ox < l->out_w; ox++) {
                        float t1 = -INFINITY, t2 = -INFINITY;
                        for (int ky = 0; ky < l->kernel; ky++)
                            for (int kx = 0; kx < l->kernel; kx++) {
                                float v = in[(size_t)p * l->in_h * l->in_w +
                                             (oy * l->stride + ky) * l->in_w +
                                             ox * l->stride + kx];
                                if (v > t1) {
                                    t2 = t1;
                                    t1 = v;
                                } else if (v > t2) {
                                    t2 = v;
                                }
                            }
                        if (!(t1 == 0.0f && t2 == 0.0f))
                            mg = fmin(mg, (double)t1 - t2);
                    }
        }
    }
    return mg;
}

/* Draws inputs until the forward pass is at least margin from any kink. */
static void draw_smooth_input(dwf_model *m, dwf_rng *rng, float *x, int b,
                              double margin)
{
    int64_t dim = (int64_t)m->arch.in_c * m->arch.in_h * m->arch.in_w;
    for (int tries = 0;; tries++) {
        CHECK_MSG(tries < 1000, "no input without a nearby kink");
        fill_normal(rng, x, (size_t)(b * dim), 1.0);
        dwf_model_forward(m, x, b);
        if (kink_margin(m, b) >= margin)
            return;
    }
}

static void model_grad_case(int depth, int factorize_bias)
{
    /* 2x6x6 input: conv 3 filters 3x3 stride 2 pad 1 -> 3x3x3, relu,
     * maxpool 2 stride 1 -> 3x2x2, flatten, dense 6, relu, dense 3 */
    dwf_arch a;
    dwf_err err;
    dwf_arch_init(&a, 2, 6, 6, 3, depth);
    a.factorize_bias = factorize_bias;
    dwf_layer_spec ls[] = {
        {.kind = DWF_LAYER_CONV2D, .filters = 3, .kernel = 3, .stride = 2,
         .padding = 1},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_MAXPOOL2D, .kernel = 2, .stride = 1},
        {.kind = DWF_LAYER_FLATTEN},
        {.kind = DWF_LAYER_DENSE, .units = 6},
        {.kind = DWF_LAYER_RELU},
        {.kind = DWF_LAYER_DENSE, .units = 3},
    };
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        ck_assert_int_eq(dwf_arch_add(&a, &ls[i], &err), 0);
    dwf_model *m = NULL;
    int rc = dwf_model_create(&a, 4, &m, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    dwf_rng rng;
    dwf_rng_seed(&rng, 42 + (uint64_t)depth);
    rc = dwf_model_init(m, DWF_INIT_AUTO, 0.25, &rng, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    /* non-zero biases so that their factors matter */
    for (int l = 0; l < m->arch.n_layers; l++) {
        if (m->bias_idx[l] < 0)
            continue;
        dwf_param *p = &m->params[m->bias_idx[l]];
        for (int d = 0; d < p->depth; d++)
            for (int64_t j = 0; j < p->n; j++)
                p->f[d][j] = (float)(d == 0 ? 0.3 * dwf_rng_normal(&rng)
                                            : 0.8 + 0.4 * dwf_rng_uniform(&rng));
    }
    dwf_model_collapse(m);

    enum { B = 4 };
    float x[B * 72];
    int32_t y[B] = {0, 2, 1, 2};
    draw_smooth_input(m, &rng, x, B, 0.02);
    model_ctx c = {m, x, y, B, 0.05, 0};

    float dz[B * 3];
    const float *z = dwf_model_forward(m, x, B);
    dwf_softmax_xent(z, y, B, 3, dz, NULL);
    dwf_model_backward(m, dz, B);

    /* gradients of the collapsed weights and the biases */
    for (int i = 0; i < m->n_params; i++) {
        dwf_param *p = &m->params[i];
        double *num = calloc((size_t)p->n, sizeof(double));
        numeric_grad(model_loss, &c, p->w, (size_t)p->n, 1e-3, num);
        char what[64];
        snprintf(what, sizeof what, "D=%d param %d (n %lld) gw", depth, i,
                 (long long)p->n);
        check_grad(what, p->gw, num, (size_t)p->n, 1e-2);
        free(num);
    }

    /* factor gradients through the chain rule, with the penalty */
    double pen = dwf_model_factor_grads(m, c.lambda);
    double pen2 = dwf_model_penalty(m, c.lambda);
    CHECK_MSG(pen > 0.0 && fabs(pen - pen2) <= 1e-6 * pen,
              "penalty %.10g from the gradients, %.10g alone", pen, pen2);
    c.recollapse = 1;
    for (int i = 0; i < m->n_params; i++) {
        dwf_param *p = &m->params[i];
        for (int d = 0; d < p->depth; d++) {
            /* keep a copy: with D = 1, g aliases gw which the next
             * numeric_grad does not touch, but be explicit */
            float *g = alloc_f((size_t)p->n);
            memcpy(g, p->g[d], (size_t)p->n * sizeof(float));
            double *num = calloc((size_t)p->n, sizeof(double));
            numeric_grad(model_loss, &c, p->f[d], (size_t)p->n, 1e-3, num);
            char what[64];
            snprintf(what, sizeof what, "D=%d param %d factor %d grad", depth,
                     i, d);
            check_grad(what, g, num, (size_t)p->n, 1e-2);
            free(num);
            free(g);
        }
    }
    dwf_model_free(m);
}

START_TEST(test_model_grad)
{
    model_grad_case(1, 0);
    model_grad_case(3, 0);
    model_grad_case(2, 1);
}
END_TEST

/* An MLP whose first layer is flatten, backward from a dense output. */
START_TEST(test_mlp_grad)
{
    dwf_arch a;
    dwf_err err;
    int hidden[2] = {5, 4};
    ck_assert_int_eq(dwf_arch_mlp(&a, 1, 3, 3, hidden, 2, 3, 2, &err), 0);
    dwf_model *m = NULL;
    ck_assert_int_eq(dwf_model_create(&a, 3, &m, &err), 0);
    dwf_rng rng;
    dwf_rng_seed(&rng, 8);
    ck_assert_int_eq(dwf_model_init(m, DWF_INIT_DWF, 0.25, &rng, &err), 0);
    float x[3 * 9], dz[3 * 3];
    int32_t y[3] = {1, 0, 2};
    draw_smooth_input(m, &rng, x, 3, 0.02);
    model_ctx c = {m, x, y, 3, 0.0, 0};
    const float *z = dwf_model_forward(m, x, 3);
    dwf_softmax_xent(z, y, 3, 3, dz, NULL);
    dwf_model_backward(m, dz, 3);
    for (int i = 0; i < m->n_params; i++) {
        dwf_param *p = &m->params[i];
        double *num = calloc((size_t)p->n, sizeof(double));
        numeric_grad(model_loss, &c, p->w, (size_t)p->n, 1e-3, num);
        char what[64];
        snprintf(what, sizeof what, "mlp param %d gw", i);
        check_grad(what, p->gw, num, (size_t)p->n, 1e-2);
        free(num);
    }
    dwf_model_free(m);
}
END_TEST

static Suite *layers_suite(void)
{
    Suite *s = suite_create("layers");
    TCase *tc = tcase_create("kernels");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_dense_grad);
    tcase_add_loop_test(tc, test_conv_vs_naive, 0,
                        (int)(sizeof conv_cases / sizeof *conv_cases));
    tcase_add_test(tc, test_conv_grad);
    tcase_add_test(tc, test_im2col_adjoint);
    tcase_add_test(tc, test_maxpool_grad);
    tcase_add_test(tc, test_relu_grad);
    tcase_add_test(tc, test_xent_grad);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("model");
    tcase_set_timeout(tm, 60);
    tcase_add_test(tm, test_model_grad);
    tcase_add_test(tm, test_mlp_grad);
    suite_add_tcase(s, tm);
    return s;
}

int main(void)
{
    return tu_run(layers_suite());
}
