/*
 * dwf_layers.c - layer kernels. Each layer's forward is followed by its
 * backward. Matrix products go to cblas_sgemm; the rest are plain loops
 * that the compiler vectorizes.
 */
#include "dwf_layers.h"
#include "dwf_simd.h"

#include <cblas.h>
#include <float.h>
#include <string.h>

/* ---- dense ------------------------------------------------------------ */

DWF_VEC void dwf_col_sums(const float *restrict dy, int b, int out,
                          float *restrict sums)
{
    memset(sums, 0, (size_t)out * sizeof(float));
    for (int i = 0; i < b; i++) {
        const float *restrict r = dy + (size_t)i * out;
        for (int j = 0; j < out; j++)
            sums[j] += r[j];
    }
}

void dwf_dense_forward(const float *x, const float *w, const float *bias,
                       int b, int in, int out, float *y)
{
    if (bias) {
        for (int i = 0; i < b; i++)
            memcpy(y + (size_t)i * out, bias, (size_t)out * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, out, in, 1.0f, x,
                in, w, in, bias ? 1.0f : 0.0f, y, out);
}

void dwf_dense_backward(const float *x, const float *w, const float *dy,
                        int b, int in, int out, float *dw, float *dbias,
                        float *dx)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, b, 1.0f, dy,
                out, x, in, 0.0f, dw, in);
    if (dbias)
        dwf_col_sums(dy, b, out, dbias);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, in, out,
                    1.0f, dy, out, w, in, 0.0f, dx, in);
}

/* ---- conv2d ----------------------------------------------------------- */

/* n floats from src to dst: spans of an image row are short, so fixed-size
 * copies the compiler inlines rather than a memcpy call each. */
static inline void copy_span(float *restrict dst, const float *restrict src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        memcpy(dst + i, src + i, 8 * sizeof(float));
    for (; i < n; i++)
        memcpy(dst + i, src + i, sizeof(float));
}

void dwf_im2col(const dwf_conv_shape *s, const float *img, float *col)
{
    int ohw = s->out_h * s->out_w;
    for (int c = 0; c < s->in_c; c++) {
        const float *plane = img + (size_t)c * s->in_h * s->in_w;
        for (int ky = 0; ky < s->k; ky++) {
            for (int kx = 0; kx < s->k; kx++) {
                float *row = col + ((size_t)(c * s->k + ky) * s->k + kx) * ohw;
                for (int oy = 0; oy < s->out_h; oy++) {
                    int iy = oy * s->stride - s->pad + ky;
                    float *dst = row + oy * s->out_w;
                    if (iy < 0 || iy >= s->in_h) {
                        memset(dst, 0, (size_t)s->out_w * sizeof(float));
                        continue;
                    }
                    const float *src = plane + (size_t)iy * s->in_w;
                    /* ix = ox stride - pad + kx lies in [0, in_w) for ox in
                     * [lo, hi): zeros around, a copy (stride 1) between */
                    int off = kx - s->pad, lo = 0, hi = s->out_w;
                    while (lo < hi && lo * s->stride + off < 0)
                        lo++;
                    while (hi > lo && (hi - 1) * s->stride + off >= s->in_w)
                        hi--;
                    for (int ox = 0; ox < lo; ox++)
                        dst[ox] = 0.0f;
                    if (s->stride == 1)
                        copy_span(dst + lo, src + lo + off, hi - lo);
                    else
                        for (int ox = lo; ox < hi; ox++)
                            dst[ox] = src[ox * s->stride + off];
                    for (int ox = hi; ox < s->out_w; ox++)
                        dst[ox] = 0.0f;
                }
            }
        }
    }
}

void dwf_col2im(const dwf_conv_shape *s, const float *col, float *img)
{
    int ohw = s->out_h * s->out_w;
    for (int c = 0; c < s->in_c; c++) {
        float *plane = img + (size_t)c * s->in_h * s->in_w;
        for (int ky = 0; ky < s->k; ky++) {
            for (int kx = 0; kx < s->k; kx++) {
                const float *row =
                    col + ((size_t)(c * s->k + ky) * s->k + kx) * ohw;
                for (int oy = 0; oy < s->out_h; oy++) {
                    int iy = oy * s->stride - s->pad + ky;
                    if (iy < 0 || iy >= s->in_h)
                        continue;
                    const float *src = row + oy * s->out_w;
                    float *dst = plane + (size_t)iy * s->in_w;
                    for (int ox = 0; ox < s->out_w; ox++) {
                        int ix = ox * s->stride - s->pad + kx;
                        if (ix >= 0 && ix < s->in_w)
                            dst[ix] += src[ox];
                    }
                }
            }
        }
    }
}

void dwf_conv2d_forward(const dwf_conv_shape *s, const float *x,
                        const float *w, const float *bias, int b, float *col,
                        float *y)
{
    int K = s->in_c * s->k * s->k, P = s->out_h * s->out_w;
    size_t in_sz = (size_t)s->in_c * s->in_h * s->in_w;
    size_t out_sz = (size_t)s->out_c * P;
    for (int n = 0; n < b; n++) {
        float *yn = y + n * out_sz;
        dwf_im2col(s, x + n * in_sz, col);
        if (bias) {
            for (int o = 0; o < s->out_c; o++)
                for (int p = 0; p < P; p++)
                    yn[(size_t)o * P + p] = bias[o];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->out_c, P, K,
                    1.0f, w, K, col, P, bias ? 1.0f : 0.0f, yn, P);
    }
}

void dwf_conv2d_backward(const dwf_conv_shape *s, const float *x,
                         const float *w, const float *dy, int b, float *col,
                         float *dcol, float *dw, float *dbias, float *dx)
{
    int K = s->in_c * s->k * s->k, P = s->out_h * s->out_w;
    size_t in_sz = (size_t)s->in_c * s->in_h * s->in_w;
    size_t out_sz = (size_t)s->out_c * P;
    memset(dw, 0, (size_t)s->out_c * K * sizeof(float));
    if (dbias)
        memset(dbias, 0, (size_t)s->out_c * sizeof(float));
    for (int n = 0; n < b; n++) {
        const float *dyn = dy + n * out_sz;
        dwf_im2col(s, x + n * in_sz, col);
        /* dW += dy_n (out_c x P) col^T (P x K) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->out_c, K, P,
                    1.0f, dyn, P, col, P, 1.0f, dw, K);
        if (dbias) {
            for (int o = 0; o < s->out_c; o++) {
                double acc = 0.0;
                for (int p = 0; p < P; p++)
                    acc += dyn[(size_t)o * P + p];
                dbias[o] += (float)acc;
            }
        }
        if (dx) {
            /* dcol (K x P) = W^T (K x out_c) dy_n (out_c x P) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P,
                        s->out_c, 1.0f, w, K, dyn, P, 0.0f, dcol, P);
            float *dxn = dx + n * in_sz;
            memset(dxn, 0, in_sz * sizeof(float));
            dwf_col2im(s, dcol, dxn);
        }
    }
}

/* ---- maxpool2d -------------------------------------------------------- */

/* The 2 x 2, stride 2 windows without argmax (inference), branch-free:
 * the first value above -FLT_MAX and above every one before it in window
 * order, else (none) the window's first - what the general loop keeps. */
DWF_VEC static void maxpool2_plane(const float *restrict src, int h, int w, int out_h,
                                   int out_w, float *restrict dst)
{
    for (int oy = 0; oy < out_h; oy++) {
        if (2 * oy + 1 >= h)
            break;
        const float *r0 = src + (size_t)(2 * oy) * w, *r1 = r0 + w;
        float *d = dst + (size_t)oy * out_w;
        int full = out_w < w / 2 ? out_w : w / 2;
        for (int ox = 0; ox < full; ox++) {
            float v0 = r0[2 * ox], v1 = r0[2 * ox + 1], v2 = r1[2 * ox], v3 = r1[2 * ox + 1];
            float m = -FLT_MAX;
            m = v0 > m ? v0 : m;
            m = v1 > m ? v1 : m;
            m = v2 > m ? v2 : m;
            m = v3 > m ? v3 : m;
            d[ox] = m > -FLT_MAX ? m : v0;
        }
    }
}

void dwf_maxpool_forward(int c, int h, int w, int k, int stride, int out_h,
                         int out_w, const float *x, int b, float *y,
                         int32_t *argmax)
{
    size_t in_plane = (size_t)h * w, out_plane = (size_t)out_h * out_w;
    if (!argmax && k == 2 && stride == 2 && out_h <= h / 2 && out_w <= w / 2) {
        for (size_t pi = 0; pi < (size_t)b * c; pi++)
            maxpool2_plane(x + pi * in_plane, h, w, out_h, out_w, y + pi * out_plane);
        return;
    }
    for (int n = 0; n < b; n++) {
        for (int ch = 0; ch < c; ch++) {
            size_t pi = (size_t)n * c + ch;
            const float *src = x + pi * in_plane;
            float *dst = y + pi * out_plane;
            int32_t *am = argmax ? argmax + pi * out_plane : NULL;
            for (int oy = 0; oy < out_h; oy++) {
                for (int ox = 0; ox < out_w; ox++) {
                    float best = -FLT_MAX;
                    int bi = (oy * stride) * w + ox * stride;
                    if (k == 2 && oy * stride + 1 < h && ox * stride + 1 < w) {
                        /* the common 2 x 2 window, unrolled (same order) */
                        const int o[4] = {bi, bi + 1, bi + w, bi + w + 1};
                        for (int t = 0; t < 4; t++)
                            if (src[o[t]] > best) {
                                best = src[o[t]];
                                bi = o[t];
                            }
                        dst[oy * out_w + ox] = src[bi];
                        if (am)
                            am[oy * out_w + ox] = bi;
                        continue;
                    }
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * stride + ky;
                        if (iy >= h)
                            break;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox * stride + kx;
                            if (ix >= w)
                                break;
                            float v = src[iy * w + ix];
                            if (v > best) {
                                best = v;
                                bi = iy * w + ix;
                            }
                        }
                    }
                    dst[oy * out_w + ox] = src[bi];
                    if (am)
                        am[oy * out_w + ox] = bi;
                }
            }
        }
    }
}

void dwf_maxpool_backward(int c, int h, int w, int out_h, int out_w,
                          const float *dy, const int32_t *argmax, int b,
                          float *dx)
{
    size_t in_plane = (size_t)h * w, out_plane = (size_t)out_h * out_w;
    memset(dx, 0, (size_t)b * c * in_plane * sizeof(float));
    for (size_t pi = 0; pi < (size_t)b * c; pi++) {
        float *d = dx + pi * in_plane;
        const float *g = dy + pi * out_plane;
        const int32_t *am = argmax + pi * out_plane;
        for (size_t o = 0; o < out_plane; o++)
            d[am[o]] += g[o];
    }
}

/* ---- relu ------------------------------------------------------------- */

DWF_VEC void dwf_relu_forward(const float *x, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

DWF_VEC void dwf_relu_backward(const float *y, const float *dy, int64_t n,
                               float *dx)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}
