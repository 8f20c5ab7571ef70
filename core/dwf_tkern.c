/*
 * dwf_tkern.c - the products of the threshold curve's incremental path
 * (see dwf_tkern.h). AVX-512 kernels where the CPU has them, portable C and
 * cblas otherwise; every kernel sums a row's products in float and adds
 * the sum to z in double.
 */
#include "dwf_tkern.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "dwf_sparse.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define TK_X86 1
#include <immintrin.h>
#endif

/* z (rows x n, double) = bias + m x (set) or -= m x, x (cols x n) float
 * feature-major; the products of a row are summed in float (its rounding
 * is counted in sigma0), then added to z in double. Rows without entries
 * are skipped when subtracting. */
static void csr_fd_c(const int32_t *restrict ip, const int32_t *restrict ix,
                     const float *restrict v, int rows, const float *restrict x,
                     int n, int set, const float *restrict bias,
                     double *restrict z)
{
    for (int r = 0; r < rows; r++) {
        double *restrict zr = z + (size_t)r * n;
        if (set) {
            const double b0 = bias ? (double)bias[r] : 0.0;
            for (int j = 0; j < n; j++)
                zr[j] = b0;
        }
        const double sg = set ? 1.0 : -1.0;
        for (int32_t k = ip[r]; k < ip[r + 1]; k++) {
            const float *restrict xk = x + (size_t)ix[k] * n;
            const double w = sg * v[k]; /* w x is exact in double */
            for (int j = 0; j < n; j++)
                zr[j] += w * (double)xk[j];
        }
    }
}

#ifdef TK_X86
/* One row of csr_fd_c with AVX-512: up to 128 columns from j0 (nq <= 8
 * vectors of 16, the last masked by ml) in named float registers while
 * the row's entries stream by. Inlined with a constant nq. */
#define FC_ACC(q)                                                             \
    do {                                                                      \
        if (nq > q)                                                           \
            a##q = _mm512_fmadd_ps(w_, _mm512_maskz_loadu_ps(nq == q + 1 ? ml : 0xffff, xr + 16 * q), a##q); \
    } while (0)
#define FC_PUT(q)                                                             \
    do {                                                                      \
        if (nq > q)                                                           \
            fc_put(zr + 16 * q, b0, set, a##q, nq == q + 1 ? ml : 0xffff);    \
    } while (0)

/* z[0..16) (masked) = b0 + a, or -= a, in double. */
__attribute__((target("avx512f"), always_inline)) static inline void
fc_put(double *z, double b0, int set, __m512 a, __mmask16 m)
{
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    __mmask8 ml = (__mmask8)(m & 0xff), mh = (__mmask8)(m >> 8);
    if (set) {
        const __m512d b = _mm512_set1_pd(b0);
        _mm512_mask_storeu_pd(z, ml, _mm512_add_pd(b, lo));
        _mm512_mask_storeu_pd(z + 8, mh, _mm512_add_pd(b, hi));
    } else {
        _mm512_mask_storeu_pd(z, ml, _mm512_sub_pd(_mm512_maskz_loadu_pd(ml, z), lo));
        _mm512_mask_storeu_pd(z + 8, mh, _mm512_sub_pd(_mm512_maskz_loadu_pd(mh, z + 8), hi));
    }
}

__attribute__((target("avx512f"), always_inline)) static inline void
fc_rows(const int32_t *restrict ip, const int32_t *restrict ix, const float *restrict v,
        int rows, const float *restrict x, int n, int j0, const int nq, __mmask16 ml,
        int set, const float *restrict bias, double *restrict z)
{
    for (int r = 0; r < rows; r++) {
        if (!set && ip[r] == ip[r + 1])
            continue;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
               a6 = a0, a7 = a0;
        for (int32_t k = ip[r]; k < ip[r + 1]; k++) {
            const __m512 w_ = _mm512_set1_ps(v[k]);
            const float *xr = x + (size_t)ix[k] * n + j0;
            FC_ACC(0);
            FC_ACC(1);
            FC_ACC(2);
            FC_ACC(3);
            FC_ACC(4);
            FC_ACC(5);
            FC_ACC(6);
            FC_ACC(7);
        }
        double *zr = z + (size_t)r * n + j0;
        double b0 = bias && set ? (double)bias[r] : 0.0;
        FC_PUT(0);
        FC_PUT(1);
        FC_PUT(2);
        FC_PUT(3);
        FC_PUT(4);
        FC_PUT(5);
        FC_PUT(6);
        FC_PUT(7);
    }
}
#undef FC_ACC
#undef FC_PUT

__attribute__((target("avx512f"))) static void
csr_fd_512(const int32_t *restrict ip, const int32_t *restrict ix,
           const float *restrict v, int rows, const float *restrict x, int n,
           int set, const float *restrict bias, double *restrict z)
{
    for (int j0 = 0; j0 < n; j0 += 128) {
        int m = n - j0 < 128 ? n - j0 : 128, nq = (m + 15) / 16;
        __mmask16 ml = (__mmask16)(m % 16 ? (1u << (m % 16)) - 1 : 0xffff);
        switch (nq) {
        case 1: fc_rows(ip, ix, v, rows, x, n, j0, 1, ml, set, bias, z); break;
        case 2: fc_rows(ip, ix, v, rows, x, n, j0, 2, ml, set, bias, z); break;
        case 3: fc_rows(ip, ix, v, rows, x, n, j0, 3, ml, set, bias, z); break;
        case 4: fc_rows(ip, ix, v, rows, x, n, j0, 4, ml, set, bias, z); break;
        case 5: fc_rows(ip, ix, v, rows, x, n, j0, 5, ml, set, bias, z); break;
        case 6: fc_rows(ip, ix, v, rows, x, n, j0, 6, ml, set, bias, z); break;
        case 7: fc_rows(ip, ix, v, rows, x, n, j0, 7, ml, set, bias, z); break;
        default: fc_rows(ip, ix, v, rows, x, n, j0, 8, ml, set, bias, z); break;
        }
    }
}

/* csr_fd_512 for a wide x (cols x n larger than L2 bandwidth can feed the
 * row-by-row kernel): the same sums in the same order per row, but the
 * columns go in panels of DWF_TK_PANEL features by up to 128 sample
 * columns (a whole block: eight vectors an entry, so that an entry's
 * index, weight and loop step serve 128 products), so that the x rows a
 * panel reads stay in L1 while the rows' entries in that panel stream by,
 * two rows at a time (independent chains); each row's float partial sums
 * wait in acc (rows x DWF_TK_TILE) between panels. cur (rows) is scratch. */
#if DWF_TK_TILE != 128
#error "the panel kernel's tile is eight vectors of 16 floats"
#endif
#define FP_ACC(a, w, xr, q)                                                   \
    do {                                                                      \
        if (nq > q)                                                           \
            a##q = _mm512_fmadd_ps(w, nq == q + 1 ? _mm512_maskz_loadu_ps(ml, (xr) + 16 * q) \
                                                  : _mm512_loadu_ps((xr) + 16 * q), a##q); \
    } while (0)
#define FP_ENTRY(a, k)                                                        \
    do {                                                                      \
        const __m512 w_ = _mm512_set1_ps(v[k]);                               \
        const float *xr_ = x + (size_t)ix[k] * n + j0;                        \
        FP_ACC(a, w_, xr_, 0);                                                \
        FP_ACC(a, w_, xr_, 1);                                                \
        FP_ACC(a, w_, xr_, 2);                                                \
        FP_ACC(a, w_, xr_, 3);                                                \
        FP_ACC(a, w_, xr_, 4);                                                \
        FP_ACC(a, w_, xr_, 5);                                                \
        FP_ACC(a, w_, xr_, 6);                                                \
        FP_ACC(a, w_, xr_, 7);                                                \
    } while (0)
#define FP_LOAD(a, p)                                                         \
    __m512 a##0 = _mm512_loadu_ps(p), a##1 = _mm512_loadu_ps((p) + 16),      \
           a##2 = _mm512_loadu_ps((p) + 32), a##3 = _mm512_loadu_ps((p) + 48), \
           a##4 = a##0, a##5 = a##0, a##6 = a##0, a##7 = a##0;                 \
    if (nq > 4) {                                                             \
        a##4 = _mm512_loadu_ps((p) + 64);                                     \
        a##5 = _mm512_loadu_ps((p) + 80);                                     \
        a##6 = _mm512_loadu_ps((p) + 96);                                     \
        a##7 = _mm512_loadu_ps((p) + 112);                                    \
    }
#define FP_STORE(a, p)                                                        \
    do {                                                                      \
        _mm512_storeu_ps(p, a##0);                                            \
        _mm512_storeu_ps((p) + 16, a##1);                                     \
        _mm512_storeu_ps((p) + 32, a##2);                                     \
        _mm512_storeu_ps((p) + 48, a##3);                                     \
        if (nq > 4) {                                                         \
            _mm512_storeu_ps((p) + 64, a##4);                                 \
            _mm512_storeu_ps((p) + 80, a##5);                                 \
            _mm512_storeu_ps((p) + 96, a##6);                                 \
            _mm512_storeu_ps((p) + 112, a##7);                                \
        }                                                                     \
    } while (0)

/* One tile of up to DWF_TK_TILE = 128 sample columns from j0 (nq vectors,
 * the last masked by ml; acc rows hold DWF_TK_TILE floats, of which the
 * tile uses 16 nq). */
__attribute__((target("avx512f"), always_inline)) static inline void
fp_tile(const int32_t *restrict ip, const int32_t *restrict ix, const float *restrict v,
        int rows, int cols, const float *restrict x, int n, int j0, const int nq,
        __mmask16 ml, int set, const float *restrict bias, double *restrict z,
        float *restrict acc, int32_t *restrict cur)
{
    for (int r = 0; r < rows; r++)
        cur[r] = ip[r];
    memset(acc, 0, (size_t)rows * DWF_TK_TILE * sizeof(float));
    for (int p1 = DWF_TK_PANEL; p1 - DWF_TK_PANEL < cols; p1 += DWF_TK_PANEL) {
        for (int r = 0; r < rows; r += 2) {
            int r2 = r + 1 < rows ? r + 1 : r;
            int32_t k = cur[r], e = ip[r + 1], k2 = cur[r2], e2 = r2 != r ? ip[r2 + 1] : k2;
            if (!(k < e && ix[k] < p1) && !(k2 < e2 && ix[k2] < p1))
                continue;
            float *ar = acc + (size_t)r * DWF_TK_TILE, *br = acc + (size_t)r2 * DWF_TK_TILE;
            FP_LOAD(a, ar);
            FP_LOAD(b, br);
            for (; k < e && ix[k] < p1 && k2 < e2 && ix[k2] < p1; k++, k2++) {
                FP_ENTRY(a, k);
                FP_ENTRY(b, k2);
            }
            for (; k < e && ix[k] < p1; k++)
                FP_ENTRY(a, k);
            for (; k2 < e2 && ix[k2] < p1; k2++)
                FP_ENTRY(b, k2);
            FP_STORE(a, ar);
            cur[r] = k;
            if (r2 != r) {
                FP_STORE(b, br);
                cur[r2] = k2;
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        if (!set && ip[r] == ip[r + 1])
            continue;
        double *zr = z + (size_t)r * n + j0;
        const float *ar = acc + (size_t)r * DWF_TK_TILE;
        double b0 = bias && set ? (double)bias[r] : 0.0;
        for (int q = 0; q < nq; q++)
            fc_put(zr + 16 * q, b0, set, _mm512_loadu_ps(ar + 16 * q),
                   nq == q + 1 ? ml : 0xffff);
    }
}
#undef FP_ACC
#undef FP_ENTRY
#undef FP_LOAD
#undef FP_STORE

__attribute__((target("avx512f"))) static void
csr_fd_panel_512(const int32_t *restrict ip, const int32_t *restrict ix,
                 const float *restrict v, int rows, int cols, const float *restrict x,
                 int n, int set, const float *restrict bias, double *restrict z,
                 float *restrict acc, int32_t *restrict cur)
{
    for (int j0 = 0; j0 < n; j0 += DWF_TK_TILE) {
        int m = n - j0 < DWF_TK_TILE ? n - j0 : DWF_TK_TILE, nq = (m + 15) / 16;
        __mmask16 ml = (__mmask16)(m % 16 ? (1u << (m % 16)) - 1 : 0xffff);
        switch (nq) {
        case 1: fp_tile(ip, ix, v, rows, cols, x, n, j0, 1, ml, set, bias, z, acc, cur); break;
        case 2: fp_tile(ip, ix, v, rows, cols, x, n, j0, 2, ml, set, bias, z, acc, cur); break;
        case 3: fp_tile(ip, ix, v, rows, cols, x, n, j0, 3, ml, set, bias, z, acc, cur); break;
        case 4: fp_tile(ip, ix, v, rows, cols, x, n, j0, 4, ml, set, bias, z, acc, cur); break;
        case 5: fp_tile(ip, ix, v, rows, cols, x, n, j0, 5, ml, set, bias, z, acc, cur); break;
        case 6: fp_tile(ip, ix, v, rows, cols, x, n, j0, 6, ml, set, bias, z, acc, cur); break;
        case 7: fp_tile(ip, ix, v, rows, cols, x, n, j0, 7, ml, set, bias, z, acc, cur); break;
        default: fp_tile(ip, ix, v, rows, cols, x, n, j0, 8, ml, set, bias, z, acc, cur); break;
        }
    }
}

/* A tile of z: up to 4 rows from r0 by nq <= 4 vectors of 16 columns from
 * j0 (the last one masked by ml) = bias + W x, the products summed in
 * float in named registers (arrays of vectors end up on the stack), then
 * added to the bias in double. Inlined with a constant nq. */
#define FD_ROW(i, wk)                                                         \
    do {                                                                      \
        __m512 b_ = _mm512_set1_ps(wk);                                       \
        a##i##0 = _mm512_fmadd_ps(b_, x0, a##i##0);                           \
        if (nq > 1)                                                           \
            a##i##1 = _mm512_fmadd_ps(b_, x1, a##i##1);                       \
        if (nq > 2)                                                           \
            a##i##2 = _mm512_fmadd_ps(b_, x2, a##i##2);                       \
        if (nq > 3)                                                           \
            a##i##3 = _mm512_fmadd_ps(b_, x3, a##i##3);                       \
    } while (0)
#define FD_STORE(i)                                                           \
    do {                                                                      \
        if (i < nr) {                                                         \
            double *zr = z + (size_t)(r0 + i) * n + j0;                       \
            double b0 = bias ? (double)bias[r0 + i] : 0.0;                    \
            fd_put(zr, b0, a##i##0, nq == 1 ? ml : 0xffff);                   \
            if (nq > 1)                                                       \
                fd_put(zr + 16, b0, a##i##1, nq == 2 ? ml : 0xffff);          \
            if (nq > 2)                                                       \
                fd_put(zr + 32, b0, a##i##2, nq == 3 ? ml : 0xffff);          \
            if (nq > 3)                                                       \
                fd_put(zr + 48, b0, a##i##3, ml);                             \
        }                                                                     \
    } while (0)

/* z[0..16) (masked) = b0 + the 16 floats of a, in double. */
__attribute__((target("avx512f"), always_inline)) static inline void
fd_put(double *z, double b0, __m512 a, __mmask16 m)
{
    const __m512d b = _mm512_set1_pd(b0);
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    _mm512_mask_storeu_pd(z, (__mmask8)(m & 0xff), _mm512_add_pd(b, lo));
    _mm512_mask_storeu_pd(z + 8, (__mmask8)(m >> 8), _mm512_add_pd(b, hi));
}

__attribute__((target("avx512f"), always_inline)) static inline void
fd_tile(const float *restrict W, int cols, int r0, int nr, const float *restrict x,
        int n, int j0, const int nq, __mmask16 ml, const float *restrict bias,
        double *restrict z)
{
    const float *w0 = W + (size_t)r0 * cols;
    const float *w1 = nr > 1 ? w0 + cols : w0, *w2 = nr > 2 ? w0 + 2 * (size_t)cols : w0,
                *w3 = nr > 3 ? w0 + 3 * (size_t)cols : w0;
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
    __m512 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00;
    __m512 a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    const __mmask16 m0 = nq == 1 ? ml : 0xffff, m1 = nq == 2 ? ml : 0xffff,
                    m2 = nq == 3 ? ml : 0xffff, m3 = ml;
    for (int k = 0; k < cols; k++) {
        const float *xr = x + (size_t)k * n + j0;
        __m512 x0 = _mm512_maskz_loadu_ps(m0, xr), x1 = x0, x2 = x0, x3 = x0;
        if (nq > 1)
            x1 = _mm512_maskz_loadu_ps(m1, xr + 16);
        if (nq > 2)
            x2 = _mm512_maskz_loadu_ps(m2, xr + 32);
        if (nq > 3)
            x3 = _mm512_maskz_loadu_ps(m3, xr + 48);
        FD_ROW(0, w0[k]);
        FD_ROW(1, w1[k]);
        FD_ROW(2, w2[k]);
        FD_ROW(3, w3[k]);
    }
    FD_STORE(0);
    FD_STORE(1);
    FD_STORE(2);
    FD_STORE(3);
}
#undef FD_ROW
#undef FD_STORE

/* z (rows x n, double) = bias + W x for a dense W (rows x cols, float), x
 * (cols x n) float feature-major: tiles of 4 rows by up to 64 columns. */
__attribute__((target("avx512f"))) static void
dense_fd_512(const float *restrict W, int rows, int cols, const float *restrict x,
             int n, const float *restrict bias, double *restrict z)
{
    for (int j0 = 0; j0 < n; j0 += 64) {
        int m = n - j0 < 64 ? n - j0 : 64, nq = (m + 15) / 16;
        __mmask16 ml = (__mmask16)(m % 16 ? (1u << (m % 16)) - 1 : 0xffff);
        for (int r0 = 0; r0 < rows; r0 += 4) {
            int nr = rows - r0 < 4 ? rows - r0 : 4;
            switch (nq) {
            case 1:
                fd_tile(W, cols, r0, nr, x, n, j0, 1, ml, bias, z);
                break;
            case 2:
                fd_tile(W, cols, r0, nr, x, n, j0, 2, ml, bias, z);
                break;
            case 3:
                fd_tile(W, cols, r0, nr, x, n, j0, 3, ml, bias, z);
                break;
            default:
                fd_tile(W, cols, r0, nr, x, n, j0, 4, ml, bias, z);
                break;
            }
        }
    }
}

#endif

int dwf_tk_avx512(void)
{
#ifdef TK_X86
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

void dwf_tk_csr(int fast, const int32_t *ip, const int32_t *ix, const float *v,
                int rows, const float *x, int n, int set, const float *bias, double *z)
{
#ifdef TK_X86
    if (fast) {
        csr_fd_512(ip, ix, v, rows, x, n, set, bias, z);
        return;
    }
#endif
    (void)fast;
    csr_fd_c(ip, ix, v, rows, x, n, set, bias, z);
}

/* Input norms, 16 samples at a time with their sums in registers: a
 * running sum kept in memory is loaded right after it was stored, and on
 * the bench VM those loads also stalled on the input rows' addresses (4 KB
 * apart from the sums' now and then): 65 -> 8 us a block of 128. The same
 * double sums in the same order as the portable loop. */
#ifdef TK_X86
__attribute__((target("avx512f"))) static int
norms_512(const float *restrict xf, int dim, int n, double *restrict x2, double *restrict xi)
{
    const __m512i mag = _mm512_set1_epi64(0x7fffffffffffffffLL);
    int s0 = 0;
    for (; s0 + 16 <= n; s0 += 16) {
        __m512d a0 = _mm512_setzero_pd(), a1 = a0, m0 = a0, m1 = a0;
        const float *r = xf + s0;
        for (int j = 0; j < dim; j++, r += n) {
            __m512 v = _mm512_loadu_ps(r);
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
            __m512d hi = _mm512_cvtps_pd(
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
            a0 = _mm512_add_pd(a0, _mm512_mul_pd(lo, lo));
            a1 = _mm512_add_pd(a1, _mm512_mul_pd(hi, hi));
            /* max(|v|, m) keeping m where |v| is NaN, as "|v| > m ? |v| : m" */
            __m512d b0 = _mm512_castsi512_pd(_mm512_and_epi64(_mm512_castpd_si512(lo), mag));
            __m512d b1 = _mm512_castsi512_pd(_mm512_and_epi64(_mm512_castpd_si512(hi), mag));
            m0 = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(b0, m0, _CMP_GT_OQ), m0, b0);
            m1 = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(b1, m1, _CMP_GT_OQ), m1, b1);
        }
        _mm512_storeu_pd(x2 + s0, a0);
        _mm512_storeu_pd(x2 + s0 + 8, a1);
        _mm512_storeu_pd(xi + s0, m0);
        _mm512_storeu_pd(xi + s0 + 8, m1);
    }
    return s0;
}
#endif

void dwf_tk_input_norms(int fast, const float *restrict xf, int dim, int n,
                        double *restrict x2, double *restrict xi)
{
    int s0 = 0;
#ifdef TK_X86
    if (fast)
        s0 = norms_512(xf, dim, n, x2, xi);
#else
    (void)fast;
#endif
    for (int s = s0; s < n; s++) {
        double a = 0.0, m = 0.0;
        for (int j = 0; j < dim; j++) {
            double v = xf[(size_t)j * n + s], av = fabs(v);
            a += v * v;
            m = av > m ? av : m;
        }
        x2[s] = a;
        xi[s] = m;
    }
    for (int s = 0; s < n; s++)
        x2[s] = sqrt(x2[s]) * (1.0 + 1e-9);
}

/* act_rows: sixteen columns at a time, their sums in registers (as in the
 * input norms). The same double sums in the same order as the portable
 * loop (multiply, then add). */
#ifdef TK_X86
#define AR_COL(y, a, m)                                                    \
    do {                                                                      \
        if (relu) /* v <= 0 -> 0; NaN stays */                                \
            y = _mm512_mask_mov_pd(y, _mm512_cmp_pd_mask(y, zero, _CMP_LE_OQ), zero); \
        a = _mm512_add_pd(a, _mm512_mul_pd(y, y));                            \
        __m512d av_ = _mm512_castsi512_pd(_mm512_and_epi64(_mm512_castpd_si512(y), mag)); \
        m = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(av_, m, _CMP_GT_OQ), m, av_); \
    } while (0)
__attribute__((target("avx512f"))) static void
act_rows_512(const double *restrict y, const int32_t *rl, int rows, int n, int relu,
             float *restrict f, double *restrict s2, double *restrict sm)
{
    const __m512d zero = _mm512_setzero_pd();
    const __m512i mag = _mm512_set1_epi64(0x7fffffffffffffffLL);
    for (int g0 = 0; g0 < n; g0 += 16) {
        int left = n - g0;
        __mmask16 mk = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
        __mmask8 k0 = (__mmask8)mk, k1 = (__mmask8)(mk >> 8);
        __m512d a0 = _mm512_maskz_loadu_pd(k0, s2 + g0), a1 = _mm512_maskz_loadu_pd(k1, s2 + g0 + 8);
        __m512d m0 = _mm512_maskz_loadu_pd(k0, sm + g0), m1 = _mm512_maskz_loadu_pd(k1, sm + g0 + 8);
        for (int t = 0; t < rows; t++) {
            size_t r = rl ? (size_t)rl[t] : (size_t)t;
            const double *yr = y + r * n + g0;
            float *fr = f + r * n + g0;
            __m512d y0 = _mm512_maskz_loadu_pd(k0, yr), y1 = _mm512_maskz_loadu_pd(k1, yr + 8);
            AR_COL(y0, a0, m0);
            AR_COL(y1, a1, m1);
            __m512d both = _mm512_insertf64x4(
                _mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(y0))),
                _mm256_castps_pd(_mm512_cvtpd_ps(y1)), 1);
            _mm512_mask_storeu_ps(fr, mk, _mm512_castpd_ps(both));
        }
        _mm512_mask_storeu_pd(s2 + g0, k0, a0);
        _mm512_mask_storeu_pd(s2 + g0 + 8, k1, a1);
        _mm512_mask_storeu_pd(sm + g0, k0, m0);
        _mm512_mask_storeu_pd(sm + g0 + 8, k1, m1);
    }
}
#undef AR_COL
#endif

void dwf_tk_act_rows(int fast, const double *restrict y, const int32_t *rl, int rows, int n,
                     int relu, float *restrict f, double *restrict s2, double *restrict sm)
{
#ifdef TK_X86
    if (fast) {
        act_rows_512(y, rl, rows, n, relu, f, s2, sm);
        return;
    }
#endif
    (void)fast;
    for (int t = 0; t < rows; t++) {
        size_t r = rl ? (size_t)rl[t] : (size_t)t;
        const double *restrict yr = y + r * n;
        float *restrict fr = f + r * n;
        for (int g = 0; g < n; g++) {
            double v = relu && yr[g] <= 0.0 ? 0.0 : yr[g];
            double av = fabs(v);
            fr[g] = (float)v;
            s2[g] += v * v;
            sm[g] = av > sm[g] ? av : sm[g];
        }
    }
}

/* gather_h0: a pass over whole rows, 32 columns at a time with their
 * sums in registers, each step masked to the gathered columns (ascending
 * gi: compressed, they go out in gather order); on the Zen 5 measured,
 * vector gathers and scatters of the same columns took longer. */
#ifdef TK_X86
#define GH_MAXG 128 /* groups of 8 columns: n <= 1024 */
/* One group of 8 columns (mask k, compressed at offset b) of row r. */
#define GH_STEP(a, m, k, cm, b)                                               \
    do {                                                                      \
        if (k) {                                                              \
            size_t o_ = r * n + 8 * (size_t)(gq);                             \
            __m512d v_ = _mm512_maskz_loadu_pd(k, z + o_);                    \
            if (relu) /* v <= 0 -> 0; NaN stays */                            \
                v_ = _mm512_mask_mov_pd(v_, _mm512_cmp_pd_mask(v_, zero, _CMP_LE_OQ), zero); \
            _mm512_mask_storeu_pd(hb + o_, k, v_);                            \
            /* compressed in a register: AMD's compressing store to          \
             * memory is microcoded and slow */                               \
            __m512 c_ = _mm512_maskz_compress_ps((__mmask16)(k),               \
                                                 _mm512_castps256_ps512(_mm512_cvtpd_ps(v_))); \
            _mm512_mask_storeu_ps(f + r * ng + (b), cm, c_);                   \
            a = _mm512_add_pd(a, _mm512_mul_pd(v_, v_));                      \
            __m512d av_ = _mm512_castsi512_pd(_mm512_and_epi64(_mm512_castpd_si512(v_), mag)); \
            m = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(av_, m, _CMP_GT_OQ), m, av_); \
        }                                                                     \
        gq++;                                                                 \
    } while (0)

__attribute__((target("avx512f"))) static void
gather_h0_512(const double *restrict z, double *restrict hb, const int32_t *rl, int rows,
              int n, int relu, const int *restrict gi, int ng, float *restrict f,
              double *restrict s2, double *restrict sm)
{
    __mmask8 gm[GH_MAXG + 3];
    int before[GH_MAXG + 3];
    int ngr = (n + 7) / 8;
    memset(gm, 0, sizeof gm);
    for (int g = 0; g < ng; g++)
        gm[gi[g] / 8] |= (__mmask8)(1u << (gi[g] % 8));
    for (int q = 0, c = 0; q < ngr + 3; q++) {
        before[q] = c;
        c += q < ngr ? __builtin_popcount(gm[q]) : 0;
    }
    const __m512d zero = _mm512_setzero_pd();
    const __m512i mag = _mm512_set1_epi64(0x7fffffffffffffffLL);
    for (int q0 = 0; q0 < ngr; q0 += 4) {
        const __mmask8 k0 = gm[q0], k1 = gm[q0 + 1], k2 = gm[q0 + 2], k3 = gm[q0 + 3];
        if (!(k0 | k1 | k2 | k3))
            continue;
        const int b0 = before[q0], b1 = before[q0 + 1], b2 = before[q0 + 2], b3 = before[q0 + 3];
        const __mmask16 c0 = (__mmask16)((1u << __builtin_popcount(k0)) - 1),
                        c1 = (__mmask16)((1u << __builtin_popcount(k1)) - 1),
                        c2 = (__mmask16)((1u << __builtin_popcount(k2)) - 1),
                        c3 = (__mmask16)((1u << __builtin_popcount(k3)) - 1);
        __m512d a0 = _mm512_mask_expandloadu_pd(zero, k0, s2 + b0),
                a1 = _mm512_mask_expandloadu_pd(zero, k1, s2 + b1),
                a2 = _mm512_mask_expandloadu_pd(zero, k2, s2 + b2),
                a3 = _mm512_mask_expandloadu_pd(zero, k3, s2 + b3);
        __m512d m0 = _mm512_mask_expandloadu_pd(zero, k0, sm + b0),
                m1 = _mm512_mask_expandloadu_pd(zero, k1, sm + b1),
                m2 = _mm512_mask_expandloadu_pd(zero, k2, sm + b2),
                m3 = _mm512_mask_expandloadu_pd(zero, k3, sm + b3);
        for (int t = 0; t < rows; t++) {
            size_t r = (size_t)rl[t];
            int gq = q0;
            GH_STEP(a0, m0, k0, c0, b0);
            GH_STEP(a1, m1, k1, c1, b1);
            GH_STEP(a2, m2, k2, c2, b2);
            GH_STEP(a3, m3, k3, c3, b3);
        }
        _mm512_mask_compressstoreu_pd(s2 + b0, k0, a0);
        _mm512_mask_compressstoreu_pd(s2 + b1, k1, a1);
        _mm512_mask_compressstoreu_pd(s2 + b2, k2, a2);
        _mm512_mask_compressstoreu_pd(s2 + b3, k3, a3);
        _mm512_mask_compressstoreu_pd(sm + b0, k0, m0);
        _mm512_mask_compressstoreu_pd(sm + b1, k1, m1);
        _mm512_mask_compressstoreu_pd(sm + b2, k2, m2);
        _mm512_mask_compressstoreu_pd(sm + b3, k3, m3);
    }
}
#undef GH_STEP
#endif

void dwf_tk_gather_h0(int fast, const double *restrict z, double *restrict hb,
                      const int32_t *rl, int rows, int n, int relu, const int *restrict gi,
                      int ng, float *restrict f, double *restrict s2, double *restrict sm)
{
#ifdef TK_X86
    int asc = fast && n <= 8 * GH_MAXG;
    for (int g = 1; g < ng && asc; g++)
        asc = gi[g] > gi[g - 1];
    if (asc) {
        gather_h0_512(z, hb, rl, rows, n, relu, gi, ng, f, s2, sm);
        return;
    }
#endif
    (void)fast;
    for (int t = 0; t < rows; t++) {
        size_t r = (size_t)rl[t];
        const double *restrict zr = z + r * n;
        double *restrict hr = hb + r * n;
        float *restrict fr = f + r * ng;
        for (int g = 0; g < ng; g++) {
            double v = relu && zr[gi[g]] <= 0.0 ? 0.0 : zr[gi[g]];
            double av = fabs(v);
            hr[gi[g]] = v;
            fr[g] = (float)v;
            s2[g] += v * v;
            sm[g] = av > sm[g] ? av : sm[g];
        }
    }
}

/* grow: sixteen columns at a time, their sums in registers. */
#ifdef TK_X86
__attribute__((target("avx512f"))) static void
grow_512(const double *restrict z, const double *restrict zold, const int32_t *touch,
         int n_touch, int n, int relu, double *restrict s2, double *restrict sm)
{
    const __m512d zero = _mm512_setzero_pd();
    const __m512i mag = _mm512_set1_epi64(0x7fffffffffffffffLL);
    for (int g0 = 0; g0 < n; g0 += 8) {
        int left = n - g0;
        __mmask8 k = (__mmask8)(left >= 8 ? 0xff : (1u << left) - 1);
        __m512d a = zero, m = zero;
        for (int t = 0; t < n_touch; t++) {
            __m512d vn = _mm512_maskz_loadu_pd(k, z + (size_t)touch[t] * n + g0);
            __m512d vo = _mm512_maskz_loadu_pd(k, zold + (size_t)t * n + g0);
            if (relu) { /* v <= 0 -> 0; NaN stays */
                vn = _mm512_mask_mov_pd(vn, _mm512_cmp_pd_mask(vn, zero, _CMP_LE_OQ), zero);
                vo = _mm512_mask_mov_pd(vo, _mm512_cmp_pd_mask(vo, zero, _CMP_LE_OQ), zero);
            }
            __m512d dv = _mm512_castsi512_pd(
                _mm512_and_epi64(_mm512_castpd_si512(_mm512_sub_pd(vn, vo)), mag));
            a = _mm512_add_pd(a, _mm512_mul_pd(dv, dv));
            m = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(dv, m, _CMP_GT_OQ), m, dv);
        }
        _mm512_mask_storeu_pd(s2 + g0, k, a);
        _mm512_mask_storeu_pd(sm + g0, k, m);
    }
}
#endif

void dwf_tk_grow(int fast, const double *restrict z, const double *restrict zold,
                 const int32_t *touch, int n_touch, int n, int relu, double *restrict s2,
                 double *restrict sm)
{
#ifdef TK_X86
    if (fast) {
        grow_512(z, zold, touch, n_touch, n, relu, s2, sm);
        return;
    }
#endif
    (void)fast;
    for (int j = 0; j < n; j++)
        s2[j] = sm[j] = 0.0;
    for (int t = 0; t < n_touch; t++) {
        const double *zn = z + (size_t)touch[t] * n, *zo = zold + (size_t)t * n;
        for (int j = 0; j < n; j++) {
            double dv = fabs(dwf_tk_act(zn[j], relu) - dwf_tk_act(zo[j], relu));
            s2[j] += dv * dv;
            sm[j] = dv > sm[j] ? dv : sm[j];
        }
    }
}

/* z (rows x n, double) = the caller's layer-0 outputs g (n x rows, float)
 * of n samples. */
void dwf_tk_given(const float *restrict g, int rows, int n, double *restrict z,
                  float *restrict tmp)
{
    /* the float transpose (8 x 8 register blocks), then a linear widening */
    dwf_transpose(g, n, rows, tmp);
    size_t total = (size_t)rows * n;
    for (size_t i = 0; i < total; i++)
        z[i] = tmp[i];
}

/* Per sample of a block (columns of z, hb: rows x n): the layer-0 output
 * v = act(z); its change since the base, |v - hb| (2-norm into d2, inf-norm
 * into di) and its own norms (h2, hi). With rebase, hb = v instead (and
 * d2 = di = 0). */
static void h0_pass_c(const double *restrict z, double *restrict hb,
                      const int32_t *rl, int rows, int n, int relu, int rebase,
                      double *restrict d2, double *restrict di,
                      double *restrict h2, double *restrict hi, float *restrict f)
{
    for (int j = 0; j < n; j++)
        d2[j] = di[j] = h2[j] = hi[j] = 0.0;
    for (int t = 0; t < rows; t++) {
        int r = rl[t];
        const double *restrict zr = z + (size_t)r * n;
        double *restrict br = hb + (size_t)r * n;
        for (int j = 0; j < n; j++) {
            double v = relu && zr[j] <= 0.0 ? 0.0 : zr[j];
            double av = fabs(v);
            if (rebase) {
                br[j] = v;
                if (f)
                    f[(size_t)r * n + j] = (float)v;
            } else {
                double dv = fabs(v - br[j]);
                d2[j] += dv * dv;
                di[j] = dv > di[j] ? dv : di[j];
            }
            h2[j] += v * v;
            hi[j] = av > hi[j] ? av : hi[j];
        }
    }
    for (int j = 0; j < n; j++) {
        d2[j] = sqrt(d2[j]);
        h2[j] = sqrt(h2[j]);
    }
}

#ifdef TK_X86
__attribute__((target("avx512f"))) static void
h0_pass_512(const double *restrict z, double *restrict hb, const int32_t *rl,
            int rows, int n, int relu, int rebase, double *restrict d2,
            double *restrict di, double *restrict h2, double *restrict hi,
            float *restrict f)
{
    const __m512d zero = _mm512_setzero_pd();
    const __m512i absm = _mm512_set1_epi64(0x7fffffffffffffffLL);
    for (int j0 = 0; j0 < n; j0 += 8) {
        __mmask8 m = (__mmask8)(n - j0 >= 8 ? 0xff : (1u << (n - j0)) - 1);
        const __m256i fm = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - j0),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m512d a2 = zero, ai = zero, b2 = zero, bi = zero;
        for (int t = 0; t < rows; t++) {
            size_t r = (size_t)rl[t];
            __m512d v = _mm512_maskz_loadu_pd(m, z + r * n + j0);
            if (relu) /* v <= 0 -> 0; NaN stays */
                v = _mm512_mask_mov_pd(v, _mm512_cmp_pd_mask(v, zero, _CMP_LE_OQ), zero);
            __m512d av = _mm512_castsi512_pd(_mm512_and_si512(_mm512_castpd_si512(v), absm));
            double *pb = hb + r * n + j0;
            if (rebase) {
                _mm512_mask_storeu_pd(pb, m, v);
                if (f)
                    _mm256_maskstore_ps(f + r * n + j0, fm, _mm512_cvtpd_ps(v));
            } else {
                __m512d dv = _mm512_sub_pd(v, _mm512_maskz_loadu_pd(m, pb));
                dv = _mm512_castsi512_pd(_mm512_and_si512(_mm512_castpd_si512(dv), absm));
                a2 = _mm512_fmadd_pd(dv, dv, a2);
                ai = _mm512_max_pd(ai, dv);
            }
            b2 = _mm512_fmadd_pd(v, v, b2);
            bi = _mm512_max_pd(bi, av);
        }
        _mm512_mask_storeu_pd(d2 + j0, m, _mm512_sqrt_pd(a2));
        _mm512_mask_storeu_pd(di + j0, m, ai);
        _mm512_mask_storeu_pd(h2 + j0, m, _mm512_sqrt_pd(b2));
        _mm512_mask_storeu_pd(hi + j0, m, bi);
    }
}
#endif

/* Over the units rl[0..rows) (the live ones: dead units cannot change
 * anything any more). With rebase, f (may be NULL) also gets the
 * activations in float (rows x n, row r at f + r n). */
void dwf_tk_h0_pass(int fast, const double *z, double *hb, const int32_t *rl, int rows,
                    int n, int relu, int rebase, double *d2, double *di, double *h2,
                    double *hi, float *f)
{
#ifdef TK_X86
    if (fast) {
        h0_pass_512(z, hb, rl, rows, n, relu, rebase, d2, di, h2, hi, f);
        return;
    }
#endif
    (void)fast;
    h0_pass_c(z, hb, rl, rows, n, relu, rebase, d2, di, h2, hi, f);
}

/* The same for a few samples (n <= DENSE_FEW): one sample at a time, its
 * column copied to tmp, each row a 16-wide dot product (a tile of 4 rows x
 * 1 masked vector would leave 15 of 16 lanes idle). */
#define DENSE_FEW 4
__attribute__((target("avx512f"))) static void
dense_fd_few(const float *restrict W, int rows, int cols, const float *restrict x,
             int n, const float *restrict bias, double *restrict z, float *restrict tmp)
{
    int c16 = cols / 16 * 16;
    __mmask16 mt = (__mmask16)((1u << (cols - c16)) - 1);
    for (int j = 0; j < n; j++) {
        for (int k = 0; k < cols; k++)
            tmp[k] = x[(size_t)k * n + j];
        for (int r = 0; r < rows; r++) {
            const float *w = W + (size_t)r * cols;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            int k = 0;
            for (; k + 32 <= c16; k += 32) {
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(tmp + k), a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k + 16), _mm512_loadu_ps(tmp + k + 16), a1);
            }
            for (; k < c16; k += 16)
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + k), _mm512_loadu_ps(tmp + k), a0);
            if (mt)
                a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mt, w + c16),
                                     _mm512_maskz_loadu_ps(mt, tmp + c16), a1);
            double b0 = bias ? (double)bias[r] : 0.0;
            z[(size_t)r * n + j] = b0 + (double)_mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        }
    }
}

void dwf_tk_dense(int fast, const float *W, int rows, int cols, const float *x, int n,
                  const float *bias, double *z, float *tmp)
{
#ifdef TK_X86
    if (fast && n <= DENSE_FEW) {
        dense_fd_few(W, rows, cols, x, n, bias, z, tmp);
        return;
    }
    if (fast) {
        dense_fd_512(W, rows, cols, x, n, bias, z);
        return;
    }
#endif
    (void)fast;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n, cols, 1.0f, W, cols,
                x, n, 0.0f, tmp, n);
    for (int r = 0; r < rows; r++) {
        double b0 = bias ? (double)bias[r] : 0.0;
        for (int j = 0; j < n; j++)
            z[(size_t)r * n + j] = b0 + (double)tmp[(size_t)r * n + j];
    }
}

void dwf_tk_csr_wide(int fast, const int32_t *ip, const int32_t *ix, const float *v, int rows,
                     int cols, const float *x, int n, int set, const float *bias, double *z,
                     float *acc, int32_t *cur)
{
#ifdef TK_X86
    if (fast && cols >= 4 * DWF_TK_PANEL) {
        int64_t full = 0;
        for (int r = 0; r < rows; r++)
            full += ip[r + 1] > ip[r];
        if ((int64_t)ip[rows] >=
            DWF_TK_PANEL_MIN * full * ((cols + DWF_TK_PANEL - 1) / DWF_TK_PANEL)) {
            csr_fd_panel_512(ip, ix, v, rows, cols, x, n, set, bias, z, acc, cur);
            return;
        }
    }
#else
    (void)cols;
    (void)acc;
    (void)cur;
#endif
    dwf_tk_csr(fast, ip, ix, v, rows, x, n, set, bias, z);
}
