/*
 * dwf_tkern.h - the products of the threshold curve's incremental path
 * (core/dwf_thresh.c): a layer's pre-activations z (rows x n, double) for a
 * block of n samples whose inputs x are feature-major (cols x n, float),
 * from dense or CSR float weights, set (bias + W x) or updated (z -= W x);
 * the layer-0 pass that turns z into activations and the norms the bounds
 * need; small helpers. Each row's products are summed in float and the sum
 * is added to z in double (the curve accounts for that rounding, in any
 * summation order). `fast` selects the AVX-512 kernels (dwf_tk_avx512());
 * otherwise portable C and cblas_sgemm.
 *
 * Nothing here allocates or keeps state: the caller owns every buffer.
 */
#ifndef DWF_TKERN_H
#define DWF_TKERN_H

#include <stdint.h>

/* The wide-input CSR kernel works on panels of DWF_TK_PANEL features and
 * pays where rows have about DWF_TK_PANEL_MIN entries per panel. */
#define DWF_TK_PANEL 64
#define DWF_TK_PANEL_MIN 12
/* Sample columns a tile of the panel kernel holds. */
#define DWF_TK_TILE 128

/* 1 when the CPU runs the AVX-512 kernels. */
int dwf_tk_avx512(void);

/* Layer-0 activation: relu keeps NaN (so that it is never certified). */
static inline double dwf_tk_act(double v, int relu)
{
    return relu && v <= 0.0 ? 0.0 : v;
}

/* z = bias + W x for a dense W (rows x cols); bias may be NULL; tmp
 * (max(rows x n, cols) floats) is scratch. */
void dwf_tk_dense(int fast, const float *W, int rows, int cols, const float *x, int n,
                  const float *bias, double *z, float *tmp);

/* CSR (int32 ip[rows + 1], ix, v): z = bias + W x (set) or z -= W x (rows
 * without entries left alone). */
void dwf_tk_csr(int fast, const int32_t *ip, const int32_t *ix, const float *v,
                int rows, const float *x, int n, int set, const float *bias, double *z);

/* The same for a wide x (cols inputs): where the rows are dense enough, by
 * panels of DWF_TK_PANEL features kept in L1 (same sums per row); acc
 * (rows x DWF_TK_TILE floats, whatever n) and cur (rows) are scratch. */
void dwf_tk_csr_wide(int fast, const int32_t *ip, const int32_t *ix, const float *v, int rows,
                     int cols, const float *x, int n, int set, const float *bias, double *z,
                     float *acc, int32_t *cur);

/* Per sample (column) of xf (dim x n): its 2-norm, times 1 + 1e-9 (slack
 * for its rounding), into x2 and its largest magnitude into xi (a NaN
 * feature counts in x2 only). */
void dwf_tk_input_norms(int fast, const float *xf, int dim, int n, double *x2, double *xi);

/* Rows rl[0..rows) (all rows 0..rows when rl is NULL) of y (stride n,
 * double): v = act(y) into f (float, same layout), and per column the sum
 * of squares (s2) and the max |v| (sm) of those rows added in. */
void dwf_tk_act_rows(int fast, const double *y, const int32_t *rl, int rows, int n, int relu,
                     float *f, double *s2, double *sm);

/* The gathered samples gi[0..ng) (distinct columns of z) of the layer-0
 * rows rl[0..rows) (z, hb: stride n): v = act(z) becomes their base (hb)
 * and their float input (f: rows x ng, row r at f + r ng); the sum of
 * squares and the max |v| over those rows added into s2 and sm. */
void dwf_tk_gather_h0(int fast, const double *z, double *hb, const int32_t *rl, int rows,
                      int n, int relu, const int *gi, int ng, float *f, double *s2,
                      double *sm);

/* Per column j of z (stride n): over the touched rows touch[0..n_touch),
 * whose values before the change are zold's rows 0..n_touch, the change
 * dv = |act(z) - act(zold)|: its sum of squares into s2, its max into sm. */
void dwf_tk_grow(int fast, const double *z, const double *zold, const int32_t *touch,
                 int n_touch, int n, int relu, double *s2, double *sm);

/* z = the caller's outputs g (n x rows, sample-major float); tmp holds
 * rows x n floats. */
void dwf_tk_given(const float *g, int rows, int n, double *z, float *tmp);

/* Per sample of a block, over the units rl[0..rows) of z and hb (rows x n):
 * v = act(z); the change since the base |v - hb| (2-norm into d2, inf-norm
 * into di) and the norms of v (h2, hi); with rebase, hb = v instead (d2 =
 * di = 0) and f (may be NULL) gets v in float (row r at f + r n). */
void dwf_tk_h0_pass(int fast, const double *z, double *hb, const int32_t *rl, int rows,
                    int n, int relu, int rebase, double *d2, double *di, double *h2,
                    double *hi, float *f);

#endif
