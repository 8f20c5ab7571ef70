/*
 * dwf_param.c - factorized parameters: collapse, factor gradients without
 * division, penalty, masks and the DWF / naive / Kaiming initializations.
 *
 * The elementwise passes work on blocks of BLOCK entries so that the
 * running products stay in L1 and the loops vectorize.
 */
#include "dwf_param.h"
#include "dwf_simd.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DENSE_AVX512 1
#endif
#if defined(__SSE2__)
#include <emmintrin.h>
#define STREAM_SSE 1
#else
#include <stdatomic.h>
#endif

#define BLOCK DWF_PARAM_BLOCK

/* Zeroed floats on a 64-byte boundary (freed with free()). */
static float *zalloc_floats(int64_t n)
{
    size_t bytes = ((size_t)n * sizeof(float) + 63) / 64 * 64;
    float *q = aligned_alloc(64, bytes);
    if (q)
        memset(q, 0, bytes);
    return q;
}

int dwf_param_alloc(dwf_param *p, int64_t n, int depth, int decay,
                    dwf_err *err)
{
    memset(p, 0, sizeof *p);
    if (n <= 0 || depth < 1 || depth > DWF_MAX_DEPTH)
        return dwf_errorf(err, DWF_EINVAL, "parameter of %lld entries, depth %d",
                          (long long)n, depth);
    p->n = n;
    p->depth = depth;
    p->decay = decay;
    for (int d = 0; d < depth; d++) {
        p->f[d] = zalloc_floats(n);
        p->g[d] = zalloc_floats(n);
        if (!p->f[d] || !p->g[d])
            goto oom;
    }
    if (depth == 1) {
        p->w = p->f[0];
        p->gw = p->g[0];
    } else {
        p->w = zalloc_floats(n);
        p->gw = zalloc_floats(n);
        if (!p->w || !p->gw)
            goto oom;
    }
    return 0;
oom:
    dwf_param_free(p);
    return dwf_errorf(err, DWF_ENOMEM, "out of memory for a parameter of %lld entries",
                      (long long)n);
}

void dwf_param_free(dwf_param *p)
{
    if (p->depth > 1) {
        free(p->w);
        free(p->gw);
    }
    for (int d = 0; d < DWF_MAX_DEPTH; d++) {
        free(p->f[d]);
        free(p->g[d]);
    }
    free(p->mask);
    memset(p, 0, sizeof *p);
}

int dwf_param_set_mask(dwf_param *p, const uint8_t *mask, dwf_err *err)
{
    if (!mask) {
        free(p->mask);
        p->mask = NULL;
        return 0;
    }
    if (!p->mask) {
        p->mask = malloc((size_t)p->n);
        if (!p->mask)
            return dwf_errorf(err, DWF_ENOMEM, "out of memory for a mask");
    }
    memcpy(p->mask, mask, (size_t)p->n);
    for (int64_t i = 0; i < p->n; i++)
        if (!p->mask[i])
            p->f[0][i] = 0.0f;
    dwf_param_collapse(p);
    return 0;
}

DWF_VEC static void mul_into(float *restrict w, const float *restrict f,
                             int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        w[i] *= f[i];
}

void dwf_param_collapse(dwf_param *p)
{
    int64_t n = p->n;
    if (p->depth > 1) {
        memcpy(p->w, p->f[0], (size_t)n * sizeof(float));
        for (int d = 1; d < p->depth; d++)
            mul_into(p->w, p->f[d], n);
    }
    if (p->mask) {
        for (int64_t i = 0; i < n; i++)
            if (!p->mask[i])
                p->w[i] = 0.0f;
    }
}

/* Sum of squares: float partial sums over blocks of BLOCK entries (exact
 * enough for a block), accumulated in double. */
#define LANES 16

/* Sum of squares of m <= BLOCK floats, in LANES partial sums so that the
 * loop vectorizes (the order is fixed, so results are deterministic). */
static inline float block_sumsq(const float *restrict f, int m)
{
    float acc[LANES] = {0};
    int i = 0;
    for (; i + LANES <= m; i += LANES)
        for (int k = 0; k < LANES; k++)
            acc[k] += f[i + k] * f[i + k];
    float s = 0.0f;
    for (; i < m; i++)
        s += f[i] * f[i];
    for (int k = 0; k < LANES; k++)
        s += acc[k];
    return s;
}

DWF_VEC static double sumsq(const float *restrict f, int64_t n)
{
    double s = 0.0;
    for (int64_t b = 0; b < n; b += BLOCK)
        s += block_sumsq(f + b, (int)(n - b < BLOCK ? n - b : BLOCK));
    return s;
}

double dwf_param_penalty(const dwf_param *p, double lambda)
{
    if (!p->decay || lambda == 0.0)
        return 0.0;
    double s = 0.0;
    for (int d = 0; d < p->depth; d++)
        s += sumsq(p->f[d], p->n);
    return lambda / p->depth * s;
}

/* One block of m <= BLOCK entries: the suffix pass sets g_d = gw *
 * prod_{k>d} f_k, the prefix pass multiplies by prod_{k<d} f_k and adds the
 * penalty gradient c f_d. Returns the block's sum of squares of factors. */
DWF_VEC static float grads_block(int D, float *const *f, float *const *g,
                                 const float *restrict gw, float c, int m,
                                 float *restrict run, float *restrict pre)
{
    float ss = 0.0f;
    memcpy(run, gw, (size_t)m * sizeof(float));
    for (int d = D - 1; d >= 0; d--) {
        float *restrict gd = g[d];
        const float *restrict fd = f[d];
        for (int i = 0; i < m; i++) {
            gd[i] = run[i];
            run[i] *= fd[i];
        }
    }
    for (int i = 0; i < m; i++)
        pre[i] = 1.0f;
    for (int d = 0; d < D; d++) {
        float *restrict gd = g[d];
        const float *restrict fd = f[d];
        for (int i = 0; i < m; i++) {
            gd[i] = gd[i] * pre[i] + c * fd[i];
            pre[i] *= fd[i];
        }
        ss += block_sumsq(fd, m);
    }
    return ss;
}

float dwf_param_grads_block(const dwf_param *p, int64_t s, int m, float c,
                            const float *gw, float *const *g, float *scratch)
{
    if (p->depth == 1) {
        /* g_1 = gw + c f (g may alias gw) */
        const float *f = p->f[0] + s;
        float *g0 = g[0];
        for (int i = 0; i < m; i++)
            g0[i] = gw[i] + c * f[i];
        return block_sumsq(f, m);
    }
    float *f[DWF_MAX_DEPTH];
    for (int d = 0; d < p->depth; d++)
        f[d] = p->f[d] + s;
    return grads_block(p->depth, f, g, gw, c, m, scratch, scratch + BLOCK);
}

float dwf_param_grads_range(const dwf_param *p, int64_t s, int m, float c,
                            float *const *g, float *scratch)
{
    return dwf_param_grads_block(p, s, m, c, p->gw + s, g, scratch);
}

/* The fused plain-SGD block for a depth D <= 4 known at compile time
 * (inlined into each case of sgd_block, so the factors of an entry stay in
 * registers; separate restrict pointers so that the loop vectorizes):
 * g_d as in grads_block, f_d -= lr g_d, w = prod f_d (D > 1). The
 * arithmetic is that of grads_block, the optimizer's sgd_plain and
 * dwf_param_collapse_range, in the same order. */
static inline __attribute__((always_inline)) void
sgd_block_d(const int D, const int has_gx, float *restrict f0,
            float *restrict f1, float *restrict f2, float *restrict f3,
            float *restrict w, const float *restrict gw,
            const float *restrict gx, float c, float lr, int m)
{
    for (int i = 0; i < m; i++) {
        float *const f[4] = {f0, f1, f2, f3};
        float suf[4], fd[4];
        float run = has_gx ? gw[i] + gx[i] : gw[i];
#pragma GCC unroll 4
        for (int d = D - 1; d >= 0; d--) {
            fd[d] = f[d][i];
            suf[d] = run;
            run *= fd[d];
        }
        float pre = 1.0f, prod = 0.0f;
#pragma GCC unroll 4
        for (int d = 0; d < D; d++) {
            /* D = 1: g = gw + c f, as in dwf_param_grads_block */
            float g = D == 1 ? suf[d] + c * fd[d] : suf[d] * pre + c * fd[d];
            pre *= fd[d];
            float nf = fd[d] - lr * g;
            f[d][i] = nf;
            prod = d == 0 ? nf : prod * nf;
        }
        if (D > 1)
            w[i] = prod;
    }
}

#define SGD_CASE(D, X)                                                       \
    sgd_block_d(D, X, f[0], D > 1 ? f[1] : NULL, D > 2 ? f[2] : NULL,         \
                D > 3 ? f[3] : NULL, D > 1 ? w : NULL, gw, gx, c, lr, m)

/* D <= 4 only. Returns the block's sum of squares of factors (before the
 * step), as grads_block does. */
DWF_VEC static float sgd_block(int D, float *const *f, float *w,
                               const float *gw, const float *gx, float c,
                               float lr, int m)
{
    float ss = 0.0f;
    for (int d = 0; d < D; d++)
        ss += block_sumsq(f[d], m);
    switch (D * 2 + (gx != NULL)) {
    case 2: SGD_CASE(1, 0); break;
    case 3: SGD_CASE(1, 1); break;
    case 4: SGD_CASE(2, 0); break;
    case 5: SGD_CASE(2, 1); break;
    case 6: SGD_CASE(3, 0); break;
    case 7: SGD_CASE(3, 1); break;
    case 8: SGD_CASE(4, 0); break;
    default: SGD_CASE(4, 1); break;
    }
    return ss;
}

/* dst[0..m) = src[0..m) with non-temporal stores where dst is 16-byte
 * aligned (plain stores at the ends). */
static void stream_floats(float *restrict dst, const float *restrict src, int m)
{
    int i = 0;
#ifdef STREAM_SSE
    for (; i < m && ((uintptr_t)(dst + i) & 15); i++)
        dst[i] = src[i];
    for (; i + 4 <= m; i += 4)
        _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
    for (; i < m; i++)
        dst[i] = src[i];
}

void dwf_param_store_fence(void)
{
#ifdef STREAM_SSE
    _mm_sfence();
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

float dwf_param_sgd_range(dwf_param *p, int64_t s, int m, float c, float lr,
                          const float *gw, const float *gx, int stream)
{
    float *f[DWF_MAX_DEPTH];
    for (int d = 0; d < p->depth; d++)
        f[d] = p->f[d] + s;
    if (!stream)
        return sgd_block(p->depth, f, p->w + s, gw, gx, c, lr, m);
    /* the new w goes to a block in L1, then to memory past the caches */
    float wb[BLOCK] __attribute__((aligned(64)));
    float ss;
    if (p->depth == 1) { /* w is f_1 */
        memcpy(wb, f[0], (size_t)m * sizeof(float));
        f[0] = wb;
        ss = sgd_block(1, f, NULL, gw, gx, c, lr, m);
    } else {
        ss = sgd_block(p->depth, f, wb, gw, gx, c, lr, m);
    }
    stream_floats(p->w + s, wb, m);
    return ss;
}

void dwf_param_collapse_range(dwf_param *p, int64_t s, int m)
{
    if (p->mask)
        for (int i = 0; i < m; i++)
            if (!p->mask[s + i])
                p->f[0][s + i] = 0.0f;
    if (p->depth > 1) {
        memcpy(p->w + s, p->f[0] + s, (size_t)m * sizeof(float));
        for (int d = 1; d < p->depth; d++)
            mul_into(p->w + s, p->f[d] + s, m);
    }
}

double dwf_param_factor_grads(dwf_param *p, double lambda, float *scratch)
{
    const int D = p->depth;
    const float c = p->decay ? (float)(2.0 * lambda / D) : 0.0f;
    double ss = 0.0;
    for (int64_t s = 0; s < p->n; s += BLOCK) {
        int m = (int)(p->n - s < BLOCK ? p->n - s : BLOCK);
        float *g[DWF_MAX_DEPTH];
        for (int d = 0; d < D; d++)
            g[d] = p->g[d] + s;
        ss += dwf_param_grads_range(p, s, m, c, g, scratch);
        if (p->mask)
            for (int d = 0; d < D; d++)
                for (int i = 0; i < m; i++)
                    if (!p->mask[s + i])
                        g[d][i] = 0.0f;
    }
    return p->decay ? lambda / D * ss : 0.0;
}

/* ---- dense weight gradients ------------------------------------------- */

/* The AVX-512 kernel works on tiles of up to 8 rows x 48 columns of G,
 * held in 24 registers while the samples stream by (x in rows of 48
 * floats, dy broadcast one float at a time), on panels of PANEL_ROWS rows
 * (short enough that a panel's gradient stays in L2 until its update);
 * the portable path is one cblas_sgemm per segment on panels of
 * FALLBACK_ROWS rows. */
#define PANEL_ROWS 16
#define FALLBACK_ROWS 64

static void dense_grad_blas(const dwf_dense_seg *seg, int n_seg, int out,
                            int in, int r0, int nr, float *G)
{
    int first = 1;
    for (int s = 0; s < n_seg; s++) {
        if (seg[s].rows < 1)
            continue;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nr, in, seg[s].rows,
                    1.0f, seg[s].dy + r0, out, seg[s].x, in, first ? 0.0f : 1.0f,
                    G, in);
        first = 0;
    }
    if (first)
        memset(G, 0, (size_t)nr * in * sizeof(float));
}

#ifdef DENSE_AVX512
#define AVX512 __attribute__((target("avx512f")))
#define AVX512_INLINE static inline __attribute__((always_inline, target("avx512f")))

/* G rows [i0, i0 + MR) x columns [j0, j0 + 16 NV) (the last vector cut
 * to `tail` when tail is not all ones), relative to the panel's first row
 * gi0. */
AVX512_INLINE void dense_tile(const int MR, const int NV,
                              const dwf_dense_seg *seg, int n_seg, int out,
                              int in, int i0, int j0, __mmask16 tail,
                              float *G, int gi0)
{
    __m512 acc[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (int s = 0; s < n_seg; s++) {
        const float *x = seg[s].x + j0, *dy = seg[s].dy + i0;
        for (int k = 0; k < seg[s].rows; k++, x += in, dy += out) {
            __m512 xv[3];
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++)
                xv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(tail, x + 16 * v)
                                    : _mm512_loadu_ps(x + 16 * v);
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                __m512 b = _mm512_set1_ps(dy[r]);
#pragma GCC unroll 3
                for (int v = 0; v < NV; v++)
                    acc[r][v] = _mm512_fmadd_ps(b, xv[v], acc[r][v]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            float *g = G + (size_t)(i0 - gi0 + r) * in + j0 + 16 * v;
            if (v == NV - 1)
                _mm512_mask_storeu_ps(g, tail, acc[r][v]);
            else
                _mm512_storeu_ps(g, acc[r][v]);
        }
}

/* Every column of MR rows starting at i0: tiles of 48 columns, then 16,
 * then the rest under a mask. */
AVX512_INLINE void dense_rows(const int MR, const dwf_dense_seg *seg,
                              int n_seg, int out, int in, int i0, float *G,
                              int gi0)
{
    int j0 = 0;
    for (; j0 + 48 <= in; j0 += 48)
        dense_tile(MR, 3, seg, n_seg, out, in, i0, j0, 0xffff, G, gi0);
    for (; j0 + 16 <= in; j0 += 16)
        dense_tile(MR, 1, seg, n_seg, out, in, i0, j0, 0xffff, G, gi0);
    if (j0 < in)
        dense_tile(MR, 1, seg, n_seg, out, in, i0, j0,
                   (__mmask16)((1u << (in - j0)) - 1u), G, gi0);
}

AVX512 static void dense_grad_avx512(const dwf_dense_seg *seg, int n_seg,
                                     int out, int in, int r0, int nr,
                                     float *G)
{
    int i0 = r0;
    for (; i0 + 8 <= r0 + nr; i0 += 8)
        dense_rows(8, seg, n_seg, out, in, i0, G, r0);
    if (i0 + 4 <= r0 + nr) {
        dense_rows(4, seg, n_seg, out, in, i0, G, r0);
        i0 += 4;
    }
    if (i0 + 2 <= r0 + nr) {
        dense_rows(2, seg, n_seg, out, in, i0, G, r0);
        i0 += 2;
    }
    if (i0 < r0 + nr)
        dense_rows(1, seg, n_seg, out, in, i0, G, r0);
}

static int have_avx512(void)
{
    return __builtin_cpu_supports("avx512f");
}
#else
static int have_avx512(void)
{
    return 0;
}
#endif

int dwf_dense_panel_rows(void)
{
    return have_avx512() ? PANEL_ROWS : FALLBACK_ROWS;
}

void dwf_dense_grad_panel(const dwf_dense_seg *seg, int n_seg, int out,
                          int in, int r0, int nr, float *G)
{
    if (nr < 1 || in < 1)
        return;
#ifdef DENSE_AVX512
    if (have_avx512()) {
        dense_grad_avx512(seg, n_seg, out, in, r0, nr, G);
        return;
    }
#endif
    dense_grad_blas(seg, n_seg, out, in, r0, nr, G);
}

/* ---- initialization --------------------------------------------------- */

static double phi(double x)
{
    return exp(-0.5 * x * x) * 0.3989422804014327;
}

static double Phi(double x)
{
    return 0.5 * erfc(-x * 0.7071067811865476);
}

/* E[z^2 | a < |z| < b] for a standard normal z. */
static double trunc_m2(double a, double b)
{
    double mass = Phi(b) - Phi(a);
    if (mass <= 1e-300)
        return a * a;
    return 1.0 + (a * phi(a) - b * phi(b)) / mass;
}

/*
 * The DWF interval, applied to a standardized draw z (a < |z| < b with
 * a = eps_init^(1/D), b = 2^(1/D)), then rescaled by scale = s / sqrt(E z^2)
 * with s = sigma^(1/D), so that Var(f) = sigma^(2/D) exactly and the
 * collapsed Var(w) = sigma^2 (VarMatch after truncation). The upper end is
 * capped at 1 (|f| < 1); the cap and the scale are solved together.
 */
static void dwf_interval(double sigma, int depth, double eps_init, double *za,
                         double *zb, double *scale)
{
    double s = pow(sigma, 1.0 / depth);
    double a = pow(eps_init, 1.0 / depth), b = pow(2.0, 1.0 / depth);
    double k = s / sqrt(trunc_m2(a, b));
    for (int it = 0; it < 50 && b * k > 1.0; it++) {
        b = 1.0 / k;
        if (b <= a * 1.0001) {
            b = a * 1.0001;
            break;
        }
        k = s / sqrt(trunc_m2(a, b));
    }
    *za = a;
    *zb = b;
    *scale = k;
}

void dwf_init_bounds(double sigma, int depth, double eps_init, double *lo,
                     double *hi)
{
    double a, b, k;
    dwf_interval(sigma, depth, eps_init, &a, &b, &k);
    *lo = a * k;
    *hi = b * k;
}

static float draw_truncated(dwf_rng *rng, double a, double b)
{
    for (;;) {
        double z = dwf_rng_normal(rng);
        double m = fabs(z);
        if (m > a && m < b)
            return (float)z;
        /* Narrow intervals far from 0: fall back to uniform magnitude. */
        if (Phi(b) - Phi(a) < 1e-3) {
            double u = a + (b - a) * dwf_rng_uniform(rng);
            return (float)(dwf_rng_uniform(rng) < 0.5 ? -u : u);
        }
    }
}

int dwf_param_init(dwf_param *p, dwf_init_kind kind, double sigma,
                   double eps_init, dwf_rng *rng, dwf_err *err)
{
    const int D = p->depth;
    if (kind == DWF_INIT_AUTO)
        kind = D == 1 ? DWF_INIT_KAIMING : DWF_INIT_DWF;
    if (!(sigma > 0.0) || !isfinite(sigma))
        return dwf_errorf(err, DWF_EINVAL, "init: std %g must be > 0", sigma);
    switch (kind) {
    case DWF_INIT_KAIMING:
        if (D != 1)
            return dwf_errorf(err, DWF_EINVAL,
                              "init: kaiming needs depth 1 (got %d)", D);
        /* with D = 1 naive and kaiming coincide */
        __attribute__((fallthrough));
    case DWF_INIT_NAIVE:
        for (int d = 0; d < D; d++)
            for (int64_t i = 0; i < p->n; i++)
                p->f[d][i] = (float)(sigma * dwf_rng_normal(rng));
        break;
    case DWF_INIT_DWF: {
        if (!(eps_init > 0.0 && eps_init < 2.0))
            return dwf_errorf(err, DWF_EINVAL,
                              "init: eps_init %g must be in (0, 2)", eps_init);
        double a, b, k;
        dwf_interval(sigma, D, eps_init, &a, &b, &k);
        /* the interval holds for the stored float too: a draw strictly
         * inside can round onto (or 1 ulp past) an end, about once in
         * 1e7 draws; such draws are redrawn */
        const double lo = a * k, hi = b * k;
        for (int d = 0; d < D; d++)
            for (int64_t i = 0; i < p->n; i++) {
                float v;
                do
                    v = (float)(k * draw_truncated(rng, a, b));
                while (!(fabs((double)v) > lo && fabs((double)v) < hi));
                p->f[d][i] = v;
            }
        break;
    }
    default:
        return dwf_errorf(err, DWF_EINVAL, "init: unknown kind %d", (int)kind);
    }
    if (p->mask)
        for (int64_t i = 0; i < p->n; i++)
            if (!p->mask[i])
                p->f[0][i] = 0.0f;
    dwf_param_collapse(p);
    return 0;
}

void dwf_param_init_const(dwf_param *p, float value)
{
    for (int64_t i = 0; i < p->n; i++)
        p->f[0][i] = value;
    for (int d = 1; d < p->depth; d++)
        for (int64_t i = 0; i < p->n; i++)
            p->f[d][i] = 1.0f;
    dwf_param_collapse(p);
}

int64_t dwf_param_count_nonzero(const dwf_param *p, float eps)
{
    int64_t nz = 0;
    for (int64_t i = 0; i < p->n; i++)
        nz += fabsf(p->w[i]) >= eps;
    return nz;
}
