/*
 * dwf_param.h - a factorized parameter tensor w = f_1 * ... * f_D.
 *
 * A dwf_param owns its D factor arrays, their gradients, the collapsed
 * weight w, its gradient gw and an optional fixed 0/1 mask; all are freed
 * by dwf_param_free(). With D = 1, w aliases f[0] (no copy). The float
 * arrays start on a 64-byte boundary (whole cache lines for the vector
 * loops).
 *
 * The network computes with w; the factor gradients follow by the chain
 * rule g_d = gw * prod_{k != d} f_k, computed with prefix and suffix
 * products so that a factor exactly zero is handled without division.
 * The penalty (lambda / D) * sum_d ||f_d||^2 has the same minima as
 * lambda * sum |w|^(2/D) on the collapsed weight.
 *
 * dwf_dense_grad_panel() computes rows of a dense layer's weight gradient
 * dy^T x straight from the batch, a few rows at a time, so that the
 * optimizer can update those rows while their gradient is in cache (see
 * dwf_optim_update_grads); it writes only into the caller's buffer.
 */
#ifndef DWF_PARAM_H
#define DWF_PARAM_H

#include <stddef.h>
#include <stdint.h>

#include "dwf_arch.h"
#include "dwf_err.h"
#include "dwf_rng.h"

typedef enum dwf_init_kind {
    DWF_INIT_AUTO = 0, /* dwf for D >= 2, kaiming for D = 1 */
    DWF_INIT_DWF,      /* factors ~ N(0, sigma^(2/D)), truncated */
    DWF_INIT_NAIVE,    /* every factor ~ N(0, sigma^2): collapsed var sigma^(2D) */
    DWF_INIT_KAIMING,  /* D = 1 only: w ~ N(0, sigma^2) */
} dwf_init_kind;

typedef struct dwf_param {
    int64_t n;                  /* entries */
    int depth;                  /* D, 1..DWF_MAX_DEPTH */
    int decay;                  /* penalized (weights; factorized biases) */
    float *f[DWF_MAX_DEPTH];    /* factors */
    float *g[DWF_MAX_DEPTH];    /* factor gradients (incl. penalty) */
    float *w;                   /* collapsed weight (== f[0] when D = 1) */
    float *gw;                  /* d loss / d w */
    uint8_t *mask;              /* NULL, or 1 = free, 0 = held at zero */
} dwf_param;

int dwf_param_alloc(dwf_param *p, int64_t n, int depth, int decay,
                    dwf_err *err);
void dwf_param_free(dwf_param *p);

/* Attaches a mask (copied; NULL removes it) and zeroes masked entries of
 * the first factor and of w. */
int dwf_param_set_mask(dwf_param *p, const uint8_t *mask, dwf_err *err);

/* w = prod_d f_d (and masked entries forced to 0). */
void dwf_param_collapse(dwf_param *p);

/* g_d = gw * prod_{k != d} f_k + (2 lambda / D) f_d; masked entries get 0.
 * Returns the penalty value (lambda / D) * sum_d ||f_d||^2 (accumulated in
 * double). scratch holds DWF_PARAM_SCRATCH floats. */
double dwf_param_factor_grads(dwf_param *p, double lambda, float *scratch);
#define DWF_PARAM_BLOCK 512    /* entries a range function handles at once */
#define DWF_PARAM_SCRATCH 1024 /* floats of scratch the gradient functions need */

/* The same for the entries [s, s + m) only, m <= DWF_PARAM_BLOCK, writing
 * g[d][0..m) (g[0] may alias gw + s when D = 1); masks are not applied.
 * Returns the sum of squares of those factor entries (for the penalty).
 * Used by the optimizer to fuse gradients, update and collapse per block
 * while the block is in cache. */
float dwf_param_grads_range(const dwf_param *p, int64_t s, int m, float c,
                            float *const *g, float *scratch);
/* The same with the weight gradient of the range given as gw[0..m) instead
 * of p->gw + s (g[0] may alias gw when D = 1). */
float dwf_param_grads_block(const dwf_param *p, int64_t s, int m, float c,
                            const float *gw, float *const *g, float *scratch);
/* Plain SGD on the range [s, s + m), m <= DWF_PARAM_BLOCK, in one pass,
 * for parameters of depth <= 4 without a mask:
 * the factor gradients from the weight gradient gw[0..m) (+ gx[0..m) when
 * gx is non-NULL) with penalty coefficient c, f_d -= lr g_d, and the
 * collapse of w. Bit for bit the same as dwf_param_grads_block, a plain
 * SGD step and dwf_param_collapse_range. Returns the sum of squares of the
 * factors before the step. With `stream`, w[s, s + m) (f_1 when D = 1) is
 * written with non-temporal stores, past the caches, for when other
 * threads read it next (they would otherwise take the ownership of its
 * cache lines back and forth): call dwf_param_store_fence() before another
 * thread reads it. */
float dwf_param_sgd_range(dwf_param *p, int64_t s, int m, float c, float lr,
                          const float *gw, const float *gx, int stream);
/* Orders the non-temporal stores of this thread before its later stores
 * (e.g. the release that ends a team's run). */
void dwf_param_store_fence(void);
/* w[s, s + m) = prod_d f_d, zeroing masked entries of f_1 first. */
void dwf_param_collapse_range(dwf_param *p, int64_t s, int m);

/* One slice of a batch for a dense weight gradient: `rows` samples with
 * inputs x (rows x in, row-major) and output gradients dy (rows x out). */
typedef struct dwf_dense_seg {
    const float *x, *dy;
    int rows;
} dwf_dense_seg;

/* Rows r0 .. r0 + nr - 1 of the weight gradient of a dense layer with
 * `out` outputs and `in` inputs (row-major, out x in), summed over the
 * segments in order:
 *   G[r * in + j] = sum_s sum_{k < seg[s].rows} dy_s[k][r0 + r] * x_s[k][j].
 * On CPUs with AVX-512 each entry is accumulated in float by fused
 * multiply-adds in exactly that order, starting from 0 (the same on every
 * such CPU and for any split of the rows); elsewhere by cblas_sgemm per
 * segment. G holds nr * in floats. */
void dwf_dense_grad_panel(const dwf_dense_seg *seg, int n_seg, int out,
                          int in, int r0, int nr, float *G);
/* Rows per panel that suit dwf_dense_grad_panel on this CPU (a multiple
 * of its row tile of 8). */
int dwf_dense_panel_rows(void);

/* Penalty value alone. */
double dwf_param_penalty(const dwf_param *p, double lambda);

/* Initializes the factors so that w has the standard deviation sigma:
 *  - DWF: each factor from N(0, sigma^(2/D)), rejection-sampled until
 *    (eps_init * sigma)^(1/D) < |f| < min(1, (2 sigma)^(1/D));
 *  - NAIVE: each factor from N(0, sigma^2);
 *  - KAIMING: D must be 1, w from N(0, sigma^2).
 * Zero init (sigma = 0) sets w = 0 for D = 1 and f = 1 for biases in
 * dwf_param_init_const(). Then collapses. */
int dwf_param_init(dwf_param *p, dwf_init_kind kind, double sigma,
                   double eps_init, dwf_rng *rng, dwf_err *err);

/* Sets every factor so that w = value: f_1 = value, f_{d>1} = 1. */
void dwf_param_init_const(dwf_param *p, float value);

/* The truncation interval of DWF init for (sigma, D, eps_init). */
void dwf_init_bounds(double sigma, int depth, double eps_init, double *lo,
                     double *hi);

/* Number of entries of w with |w| >= eps (non-zero after thresholding). */
int64_t dwf_param_count_nonzero(const dwf_param *p, float eps);

#endif
