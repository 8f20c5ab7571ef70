/*
 * dwf_sparse.c - the sparse model: CSR weights, sparse inference and the
 * .dwfm model file.
 *
 * Inference. Dense layers run in feature-major layout: the activations of
 * a batch are transposed once to (features x b), so that Y^T = W X^T is a
 * CSR product whose inner loop is a contiguous axpy over the batch (and
 * the layout is kept through relu / flatten until a conv or pool layer or
 * the logits need sample-major order again); with AVX2 each row keeps 64
 * batch columns in registers (spmm_avx2; spmm_512 takes two rows at a
 * time in AVX-512 registers). A conv layer lowers each sample with
 * dwf_im2col to (in_c k k) x (out_h out_w) and multiplies the CSR
 * (out_c x in_c k k) with it - on the AVX-512 path a stride-1 conv reads
 * the window rows in place instead (conv_direct: an offset per window
 * element into the zero-padded input, the same products in the same
 * order). Layers denser than the crossover keep a dense copy and use
 * their own register-blocked kernels (cblas_sgemm / sgemv for batch 1 or
 * without AVX2) instead. At batch 1 a sparse
 * dense-kind layer runs from a sliced-ELL copy (see "batch-1 kernels")
 * with the following relu fused. On AVX2 machines every entry of a layer
 * run sparse (any batch size) or dense (batches of two or more: own
 * register-blocked kernels, not sgemm) is bias + (the row's products
 * summed in column order by fused multiply-adds): a sample's logits do not
 * depend on the batch it is in (dwf_smodel_batch_invariant).
 *
 * The .dwfm file format, version 1 (also in README.md). Every integer and
 * float is little-endian; a "str" is a u32 byte length followed by that
 * many bytes (no terminating NUL; length 0xffffffff = absent).
 *
 *   offset      size  field
 *   0           4     magic "DWFM" (44 57 46 4d)
 *   4           4     u32 version = 1
 *   8           28    architecture: i32 in_c, in_h, in_w, n_classes, depth,
 *                     factorize_bias, n_layers (1..64)
 *   36          52 n  n_layers records of 13 x i32: kind (0 dense, 1 conv2d,
 *                     2 maxpool2d, 3 relu, 4 flatten), units, filters,
 *                     kernel, stride, padding, depth, in_c, in_h, in_w,
 *                     out_c, out_h, out_w (the shapes dwf_arch_resolve()
 *                     gives: the loader resolves again and compares)
 *   A=36+52n    12    normalization: u32 kind (0 scale, 1 standardize,
 *                     2 none), f32 mean, f32 std; input = (raw - mean) / std
 *   A+12        4     f32 eps: the threshold (|w| < eps became 0)
 *   A+16        4+m   str spec: the job spec JSON text, or absent
 *   ...         4     u32 n_kv (<= 4096), then n_kv times: str key (1..39
 *                     bytes), f64 value
 *   ...         4     u32 n_weight: the number of dense/conv2d layers, then
 *                     for each of them in layer order:
 *                       u32 layer index in the layer list
 *                       u32 rows (dense: units; conv2d: filters)
 *                       u32 cols (dense: in_c in_h in_w; conv2d: in_c k k)
 *                       u64 nnz
 *                       i64 indptr[rows + 1] (0 = indptr[0] <= ... = nnz)
 *                       i32 indices[nnz] (columns, ascending in each row)
 *                       f32 values[nnz] (PyTorch order: (out, in) or
 *                           (out, c, kh, kw) flattened to rows x cols)
 *                       u32 n_bias (rows, or 0 = no bias), f32 bias[n_bias]
 *                           (dense, thresholded like the weights)
 *   len-4       4     u32 CRC-32 (zlib's) of every byte before it
 *
 * The loader checks the magic, the version, the CRC, the layer list, the
 * shapes against the architecture, the CSR structure and that the CRC
 * immediately follows the last layer; any failure is DWF_EFORMAT.
 */
#include "dwf_sparse.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dwf_buf.h"
#include "dwf_layers.h"
#include "dwf_simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SELL_X86 1
#include <immintrin.h>
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the .dwfm writer copies host values: it needs a little-endian host"
#endif

#define DWFM_MAGIC "DWFM"
#define DWFM_VERSION 1u
#define DWFM_MAX_KV 4096
#define SPMM_BLOCK 256     /* columns of X handled at once in the CSR product */
#define EVAL_BATCH 256

/* ---- CSR --------------------------------------------------------------- */

void dwf_csr_free(dwf_csr *c)
{
    if (!c)
        return;
    free(c->indptr);
    free(c->indices);
    free(c->values);
    memset(c, 0, sizeof *c);
}

/* Allocates the arrays of a rows x cols CSR with nnz entries. */
static int csr_alloc(dwf_csr *c, int rows, int cols, int64_t nnz)
{
    memset(c, 0, sizeof *c);
    size_t n = nnz > 0 ? (size_t)nnz : 1;
    c->indptr = malloc(((size_t)rows + 1) * sizeof *c->indptr);
    c->indices = malloc(n * sizeof *c->indices);
    c->values = malloc(n * sizeof *c->values);
    if (!c->indptr || !c->indices || !c->values) {
        dwf_csr_free(c);
        return DWF_ENOMEM;
    }
    c->rows = rows;
    c->cols = cols;
    c->nnz = nnz;
    c->indptr[0] = 0;
    return 0;
}

int dwf_csr_from_dense(dwf_csr *c, const float *dense, int rows, int cols,
                       float eps, dwf_err *err)
{
    memset(c, 0, sizeof *c);
    if (rows < 0 || cols < 0)
        return dwf_errorf(err, DWF_EINVAL, "csr: bad shape %dx%d", rows, cols);
    int64_t total = (int64_t)rows * cols, nnz = 0;
    for (int64_t i = 0; i < total; i++)
        nnz += fabsf(dense[i]) >= eps;
    if (csr_alloc(c, rows, cols, nnz))
        return dwf_errorf(err, DWF_ENOMEM, "csr: out of memory for %dx%d "
                          "with %lld non-zeros", rows, cols, (long long)nnz);
    int64_t k = 0;
    for (int r = 0; r < rows; r++) {
        const float *row = dense + (size_t)r * cols;
        for (int j = 0; j < cols; j++) {
            if (fabsf(row[j]) >= eps) {
                c->indices[k] = j;
                c->values[k++] = row[j];
            }
        }
        c->indptr[r + 1] = k;
    }
    return 0;
}

/* y[r] = bias[r] + sum_k v[k] x[ix[k]] (bias may be NULL). Eight partial
 * sums break the dependency chain of the additions and let the compiler
 * use gathers where the CPU has them. */
DWF_VEC static void spmv(const int64_t *restrict ip, const int32_t *restrict ix,
                         const float *restrict v, int rows,
                         const float *restrict x, const float *restrict bias,
                         float *restrict y)
{
    for (int r = 0; r < rows; r++) {
        float acc[8] = {0};
        int64_t k = ip[r], e = ip[r + 1];
        for (; k + 8 <= e; k += 8)
            for (int t = 0; t < 8; t++)
                acc[t] += v[k + t] * x[ix[k + t]];
        float s = 0.0f;
        for (; k < e; k++)
            s += v[k] * x[ix[k]];
        s += ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
             ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        y[r] = (bias ? bias[r] : 0.0f) + s;
    }
}

/* The rows of Y (rows x n) over columns [j0, j0 + nb): each row starts at
 * its bias and gets one contiguous axpy per non-zero, four at a time so
 * that each pass loads and stores the row of Y once per four non-zeros. */
DWF_VEC static void spmm_block(const int64_t *restrict ip,
                               const int32_t *restrict ix,
                               const float *restrict v, int rows,
                               const float *restrict x, size_t n, size_t j0,
                               size_t nb, const float *restrict bias,
                               float *restrict y)
{
    for (int r = 0; r < rows; r++) {
        float *restrict yr = y + (size_t)r * n + j0;
        const float b0 = bias ? bias[r] : 0.0f;
        for (size_t j = 0; j < nb; j++)
            yr[j] = b0;
        int64_t k = ip[r], e = ip[r + 1];
        for (; k + 4 <= e; k += 4) {
            const float *restrict x0 = x + (size_t)ix[k] * n + j0;
            const float *restrict x1 = x + (size_t)ix[k + 1] * n + j0;
            const float *restrict x2 = x + (size_t)ix[k + 2] * n + j0;
            const float *restrict x3 = x + (size_t)ix[k + 3] * n + j0;
            const float v0 = v[k], v1 = v[k + 1], v2 = v[k + 2], v3 = v[k + 3];
#pragma GCC ivdep
            for (size_t j = 0; j < nb; j++)
                yr[j] += (v0 * x0[j] + v1 * x1[j]) + (v2 * x2[j] + v3 * x3[j]);
        }
        for (; k < e; k++) {
            const float *restrict x0 = x + (size_t)ix[k] * n + j0;
            const float v0 = v[k];
#pragma GCC ivdep
            for (size_t j = 0; j < nb; j++)
                yr[j] += v0 * x0[j];
        }
    }
}

#ifdef SELL_X86
/* The same product as spmm_block over all n columns, register-blocked:
 * each row keeps 64 columns of Y in eight AVX registers while its
 * non-zeros stream by (one broadcast, eight loads and eight fused
 * multiply-adds each), then stores them once; 8-column blocks and a masked
 * tail do the rest. Each entry is bias + (its products summed in CSR
 * order), as the batch-1 kernel computes it. */
__attribute__((target("avx2,fma"))) static void
spmm_avx2(const int64_t *restrict ip, const int32_t *restrict ix,
          const float *restrict v, int rows, const float *restrict x, size_t n,
          const float *restrict bias, float *restrict y)
{
    size_t j0 = 0;
    for (; j0 + 64 <= n; j0 += 64) {
        for (int r = 0; r < rows; r++) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0,
                   a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            for (int64_t k = ip[r]; k < ip[r + 1]; k++) {
                const __m256 w = _mm256_set1_ps(v[k]);
                const float *xr = x + (size_t)ix[k] * n + j0;
                a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr), a0);
                a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8), a1);
                a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 16), a2);
                a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 24), a3);
                a4 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 32), a4);
                a5 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 40), a5);
                a6 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 48), a6);
                a7 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 56), a7);
            }
            const __m256 b = _mm256_set1_ps(bias ? bias[r] : 0.0f);
            float *yr = y + (size_t)r * n + j0;
            _mm256_storeu_ps(yr, _mm256_add_ps(b, a0));
            _mm256_storeu_ps(yr + 8, _mm256_add_ps(b, a1));
            _mm256_storeu_ps(yr + 16, _mm256_add_ps(b, a2));
            _mm256_storeu_ps(yr + 24, _mm256_add_ps(b, a3));
            _mm256_storeu_ps(yr + 32, _mm256_add_ps(b, a4));
            _mm256_storeu_ps(yr + 40, _mm256_add_ps(b, a5));
            _mm256_storeu_ps(yr + 48, _mm256_add_ps(b, a6));
            _mm256_storeu_ps(yr + 56, _mm256_add_ps(b, a7));
        }
    }
    for (; j0 < n; j0 += 8) {
        const int m = n - j0 < 8 ? (int)(n - j0) : 8;
        const __m256i mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int r = 0; r < rows; r++) {
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t k = ip[r]; k < ip[r + 1]; k++)
                a0 = _mm256_fmadd_ps(
                    _mm256_set1_ps(v[k]),
                    _mm256_maskload_ps(x + (size_t)ix[k] * n + j0, mask), a0);
            const __m256 b = _mm256_set1_ps(bias ? bias[r] : 0.0f);
            _mm256_maskstore_ps(y + (size_t)r * n + j0, mask, _mm256_add_ps(b, a0));
        }
    }
}

/* spmm_avx2 sixteen lanes wide: 64 columns in four AVX-512 registers (a
 * masked tail), two rows at a time while both have non-zeros left (eight
 * independent chains hide the multiply-add latency). Every entry gets the
 * same arithmetic as in spmm_avx2 (a fused multiply-add chain from zero in
 * CSR order, then bias + it), so the two give the same bits and
 * dwf_smodel_batch_invariant() holds across them. */
#define SPMM512_STEP(a0, a1, a2, a3, k)                                       \
    do {                                                                      \
        const __m512 w_ = _mm512_set1_ps(v[k]);                               \
        const float *xr_ = x + (size_t)ix[k] * n + j0;                        \
        a0 = _mm512_fmadd_ps(w_, _mm512_maskz_loadu_ps(k0, xr_), a0);         \
        a1 = _mm512_fmadd_ps(w_, _mm512_maskz_loadu_ps(k1, xr_ + 16), a1);    \
        a2 = _mm512_fmadd_ps(w_, _mm512_maskz_loadu_ps(k2, xr_ + 32), a2);    \
        a3 = _mm512_fmadd_ps(w_, _mm512_maskz_loadu_ps(k3, xr_ + 48), a3);    \
    } while (0)
#define SPMM512_STORE(r, a0, a1, a2, a3)                                      \
    do {                                                                      \
        const __m512 b_ = _mm512_set1_ps(bias ? bias[r] : 0.0f);              \
        float *yr_ = y + (size_t)(r) * n + j0;                                \
        _mm512_mask_storeu_ps(yr_, k0, _mm512_add_ps(b_, a0));                \
        _mm512_mask_storeu_ps(yr_ + 16, k1, _mm512_add_ps(b_, a1));           \
        _mm512_mask_storeu_ps(yr_ + 32, k2, _mm512_add_ps(b_, a2));           \
        _mm512_mask_storeu_ps(yr_ + 48, k3, _mm512_add_ps(b_, a3));           \
    } while (0)
__attribute__((target("avx512f"))) static void
spmm_512(const int64_t *restrict ip, const int32_t *restrict ix,
         const float *restrict v, int rows, const float *restrict x, size_t n,
         const float *restrict bias, float *restrict y)
{
    for (size_t j0 = 0; j0 < n; j0 += 64) {
        int m = n - j0 < 64 ? (int)(n - j0) : 64;
        __mmask16 k0 = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
        __mmask16 k1 = (__mmask16)(m >= 32 ? 0xffff : m <= 16 ? 0 : (1u << (m - 16)) - 1);
        __mmask16 k2 = (__mmask16)(m >= 48 ? 0xffff : m <= 32 ? 0 : (1u << (m - 32)) - 1);
        __mmask16 k3 = (__mmask16)(m >= 64 ? 0xffff : m <= 48 ? 0 : (1u << (m - 48)) - 1);
        int r = 0;
        for (; r + 2 <= rows; r += 2) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            __m512 c0 = a0, c1 = a0, c2 = a0, c3 = a0;
            int64_t ka = ip[r], ea = ip[r + 1], kb = ip[r + 1], eb = ip[r + 2];
            for (; ka < ea && kb < eb; ka++, kb++) {
                SPMM512_STEP(a0, a1, a2, a3, ka);
                SPMM512_STEP(c0, c1, c2, c3, kb);
            }
            for (; ka < ea; ka++)
                SPMM512_STEP(a0, a1, a2, a3, ka);
            for (; kb < eb; kb++)
                SPMM512_STEP(c0, c1, c2, c3, kb);
            SPMM512_STORE(r, a0, a1, a2, a3);
            SPMM512_STORE(r + 1, c0, c1, c2, c3);
        }
        if (r < rows) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = ip[r]; k < ip[r + 1]; k++)
                SPMM512_STEP(a0, a1, a2, a3, k);
            SPMM512_STORE(r, a0, a1, a2, a3);
        }
    }
}
#undef SPMM512_STEP
#undef SPMM512_STORE
#endif

/* Y (rows x n) = C X + bias (per row; may be NULL); isa as in
 * dwf_smodel_forward_isa (-1: AVX-512 where there). */
static void csr_mul(const dwf_csr *c, const float *x, int n, const float *bias,
                    float *y, int isa)
{
#ifdef SELL_X86
    if (isa < 0 && n > 1 && __builtin_cpu_supports("avx512f")) {
        spmm_512(c->indptr, c->indices, c->values, c->rows, x, (size_t)n, bias, y);
        return;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        spmm_avx2(c->indptr, c->indices, c->values, c->rows, x, (size_t)n,
                  bias, y);
        return;
    }
#endif
    if (n == 1) {
        spmv(c->indptr, c->indices, c->values, c->rows, x, bias, y);
        return;
    }
    for (size_t j0 = 0; j0 < (size_t)n; j0 += SPMM_BLOCK) {
        size_t nb = (size_t)n - j0 < SPMM_BLOCK ? (size_t)n - j0 : SPMM_BLOCK;
        spmm_block(c->indptr, c->indices, c->values, c->rows, x, (size_t)n, j0,
                   nb, bias, y);
    }
}

void dwf_csr_matmul(const dwf_csr *c, const float *x, int n, const float *bias,
                    float *y)
{
    if (n > 0)
        csr_mul(c, x, n, bias, y, -1);
}

/* ---- batch-1 kernels: sliced ELL (and blocks) ------------------------- */

/* At batch 1 a CSR row product has a loop whose trip count changes from
 * row to row (a branch mispredicted about once a row) and a horizontal sum
 * per row. A dense-kind layer that runs sparse therefore keeps a second
 * copy of its weight in sliced ELL (SELL-16-sigma): the rows, sorted by
 * non-zero count (longest first), are cut into chunks of SELL_C rows; a
 * chunk stores its entries slot by slot, slot j holding the j-th non-zero
 * of each of its SELL_C rows (lanes), padded to the longest row of the
 * chunk. A slot is one 16-wide multiply-add: the 16 inputs are fetched by
 * scalar loads (on the AMD Zen 5 measured, 1.6 times faster than
 * vgatherdps) and lanes past their row's end are blended away, so that a
 * padded lane never touches the result (an inf or NaN input reaches exactly
 * the rows that use it). Each row sums its non-zeros in ascending column
 * order (AVX2: fused multiply-adds; portable: multiply, then add), then
 * adds its bias. Column indices are
 * uint16 where the layer has at most 65536 inputs (less memory to stream),
 * else int32.
 *
 * Sorted output: when the outputs of a SELL layer feed (through relu and
 * flatten only) another SELL layer, they are written in the sorted lane
 * order, one vector store per chunk, and the consumer's column indices are
 * renumbered to match (dwf_smodel_set_crossover builds both); the sums
 * are the same numbers in the same order.
 *
 * With AVX-512 a layer read in its own column order (the first of a
 * chain: in LeNet-300-100 the 784 -> 300 layer, most of the work) also
 * has a block layout (sell_blk_build): the same chunks, its steps' 16
 * inputs fetched by one permute from a 32-column block in two registers
 * instead of 16 scalar loads, the same sums bit for bit. A step costs
 * about six slot lanes, so the blocks are used where a step holds
 * SELL_BLK_FILL non-zeros or more on average: on the Zen 5 measured,
 * LeNet-300-100 at CR 10 runs 1.35 times faster and a 784 -> 300 layer of
 * density 0.2-0.5 about 2 times; at CR 50 and 100 the padded steps hold
 * 2-4 and the slots stay (bench/README.md). */
#define SELL_C 16
#define SELL_ALIGN 64

typedef struct dwf_sell dwf_sell;

struct dwf_sell {
    int rows, cols, n_chunks;
    int wide;          /* idx holds int32 (else uint16) column indices */
    int sorted_out;    /* y[k] is the row of lane k (else y[row[k]]) */
    int64_t *cptr;     /* n_chunks + 1: first slot of each chunk */
    int32_t *len;      /* n_chunks * SELL_C: non-zeros of each lane's row */
    int32_t *row;      /* n_chunks * SELL_C: the lane's row, -1 for padding */
    float *bias;       /* n_chunks * SELL_C: the lane's bias (0 if none) */
    void *idx;         /* cptr[n_chunks] * SELL_C column indices (0 on padding) */
    float *val;        /* cptr[n_chunks] * SELL_C values (0 on padding) */
    /* The block layout (AVX-512, layers read in their own column order:
     * see sell_blk_build), or NULL: */
    int64_t *bsptr;    /* n_chunks + 1: first step of each chunk */
    uint16_t *bsblk;   /* per step: its 32-column block */
    uint8_t *bidx;     /* per step, per lane: column inside the block */
    uint16_t *bmask;   /* per step: the lanes that hold a non-zero */
    float *bval;       /* per step, per lane: the value (0 on padding) */
};

static void sell_free(dwf_sell *s)
{
    if (!s)
        return;
    free(s->cptr);
    free(s->len);
    free(s->row);
    free(s->bias);
    free(s->idx);
    free(s->val);
    free(s->bidx);
    free(s->bmask);
    free(s->bval);
    free(s->bsblk);
    free(s->bsptr);
    free(s);
}

/* Zeroed, SELL_ALIGN-aligned memory for n values of size sz (never a
 * zero-byte request). */
static void *sell_calloc(size_t n, size_t sz)
{
    if (n > (SIZE_MAX - SELL_ALIGN) / sz)
        return NULL;
    size_t bytes = (n * sz + SELL_ALIGN - 1) / SELL_ALIGN * SELL_ALIGN;
    if (bytes == 0)
        bytes = SELL_ALIGN;
    void *p = aligned_alloc(SELL_ALIGN, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

typedef struct {
    int64_t len;
    int row;
} sell_key;

static int sell_key_cmp(const void *a, const void *b)
{
    const sell_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? 1 : -1; /* longest first */
    return (x->row > y->row) - (x->row < y->row);
}

/* The block layout of the batch-1 kernel on AVX-512 (sell_mv_blk512).
 * The inputs are cut into blocks of SELL_B = 32 columns, which two
 * registers hold, so that one permute (vpermt2ps) fetches the 16 inputs
 * of a step where a slot needs 16 scalar loads. A chunk (the same 16 lanes
 * as the slots) stores, for each block where any of its rows has a
 * non-zero, that block's non-zeros step by step: step t holds the t-th
 * non-zero of each lane inside the block, padded to the lane with the
 * most, with a mask of the live lanes and the step's block. Blocks in
 * ascending order and CSR order inside a block keep every row's column
 * order, so the sums are the slot kernel's, bit for bit. Only for layers
 * read in their own column order (not renumbered by a sorted producer,
 * whose order is not CSR order) and of at most SELL_BMAX blocks (the
 * kernel copies the input to its stack). Returns 0, or -1 when out of
 * memory. */
#define SELL_B 32
#define SELL_BMAX 128
/* Non-zeros a step must hold on average (of 16 lanes) for the block
 * layout to be used: a step costs about 3.5 cycles, a slot lane 0.6
 * (Zen 5, LeNet-300-100's first layer at CR 10 and 50). */
#define SELL_BLK_FILL 6.0
static int sell_blk_build(dwf_sell *s, const dwf_csr *c)
{
#ifdef SELL_X86
    if (!__builtin_cpu_supports("avx512f"))
        return 0;
    int nblk = (c->cols + SELL_B - 1) / SELL_B;
    if (nblk > SELL_BMAX)
        return 0;
    int64_t ns = 0;
    int32_t cnt[SELL_C];
    int64_t pos[SELL_C];
    /* pass 0 counts the steps, pass 1 fills them */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            /* too few live lanes a step: the slots are faster */
            if ((double)c->indptr[c->rows] < SELL_BLK_FILL * (double)ns)
                return 0;
            s->bsptr = malloc(((size_t)s->n_chunks + 1) * sizeof *s->bsptr);
            s->bsblk = malloc(((size_t)ns + 1) * sizeof *s->bsblk);
            s->bidx = sell_calloc((size_t)ns * SELL_C + 1, 1);
            s->bmask = sell_calloc((size_t)ns + 1, 2);
            s->bval = sell_calloc((size_t)ns * SELL_C + 1, 4);
            if (!s->bsptr || !s->bsblk || !s->bidx || !s->bmask || !s->bval)
                return -1;
            ns = 0;
        }
        for (int ch = 0; ch < s->n_chunks; ch++) {
            if (pass == 1)
                s->bsptr[ch] = ns;
            for (int l = 0; l < SELL_C; l++) {
                int r = s->row[(size_t)ch * SELL_C + (size_t)l];
                pos[l] = r >= 0 ? c->indptr[r] : 0;
            }
            for (int b = 0; b < nblk; b++) {
                int32_t steps = 0;
                for (int l = 0; l < SELL_C; l++) {
                    int r = s->row[(size_t)ch * SELL_C + (size_t)l];
                    int64_t k = pos[l], end = r >= 0 ? c->indptr[r + 1] : 0;
                    while (k < end && c->indices[k] < (b + 1) * SELL_B)
                        k++;
                    cnt[l] = (int32_t)(k - pos[l]);
                    steps = cnt[l] > steps ? cnt[l] : steps;
                }
                if (pass == 1)
                    for (int32_t t = 0; t < steps; t++) {
                        s->bsblk[ns + t] = (uint16_t)b;
                        for (int l = 0; l < SELL_C; l++) {
                            if (t >= cnt[l])
                                continue;
                            size_t o = (size_t)(ns + t) * SELL_C + (size_t)l;
                            s->bidx[o] = (uint8_t)(c->indices[pos[l] + t] - b * SELL_B);
                            s->bval[o] = c->values[pos[l] + t];
                            s->bmask[ns + t] |= (uint16_t)(1u << l);
                        }
                    }
                for (int l = 0; l < SELL_C; l++)
                    pos[l] += cnt[l];
                ns += steps;
            }
        }
        if (pass == 1)
            s->bsptr[s->n_chunks] = ns;
    }
#else
    (void)s;
    (void)c;
#endif
    return 0;
}

/* The SELL copy of c with bias (may be NULL). Input column j is read at
 * colmap[j] when colmap is not NULL (the producer's sorted order); outputs
 * go to sorted lanes when sorted_out. NULL when out of memory. */
static dwf_sell *sell_build(const dwf_csr *c, const float *bias,
                            const int32_t *colmap, int sorted_out)
{
    dwf_sell *s = calloc(1, sizeof *s);
    sell_key *key = malloc(((size_t)c->rows + 1) * sizeof *key);
    if (!s || !key)
        goto fail;
    s->rows = c->rows;
    s->cols = c->cols;
    s->n_chunks = (c->rows + SELL_C - 1) / SELL_C;
    s->wide = c->cols > 65536;
    s->sorted_out = sorted_out;
    size_t lanes = (size_t)s->n_chunks * SELL_C;
    for (int r = 0; r < c->rows; r++) {
        key[r].len = c->indptr[r + 1] - c->indptr[r];
        key[r].row = r;
    }
    qsort(key, (size_t)c->rows, sizeof *key, sell_key_cmp);
    s->cptr = malloc(((size_t)s->n_chunks + 1) * sizeof *s->cptr);
    s->len = sell_calloc(lanes, 4);
    s->row = sell_calloc(lanes, 4);
    s->bias = sell_calloc(lanes, 4);
    if (!s->cptr || !s->len || !s->row || !s->bias)
        goto fail;
    s->cptr[0] = 0;
    for (int ch = 0; ch < s->n_chunks; ch++) {
        /* sorted: the chunk's first lane is its longest row */
        s->cptr[ch + 1] = s->cptr[ch] + key[(size_t)ch * SELL_C].len;
        for (int l = 0; l < SELL_C; l++) {
            size_t k = (size_t)ch * SELL_C + (size_t)l;
            int in = k < (size_t)c->rows;
            s->len[k] = in ? (int32_t)key[k].len : 0;
            s->row[k] = in ? key[k].row : -1;
            s->bias[k] = in && bias ? bias[key[k].row] : 0.0f;
        }
    }
    size_t slots = (size_t)s->cptr[s->n_chunks];
    s->idx = sell_calloc(slots * SELL_C, s->wide ? 4 : 2);
    s->val = sell_calloc(slots * SELL_C, 4);
    if (!s->idx || !s->val)
        goto fail;
    for (int ch = 0; ch < s->n_chunks; ch++) {
        size_t base = (size_t)s->cptr[ch] * SELL_C;
        for (int l = 0; l < SELL_C; l++) {
            size_t k = (size_t)ch * SELL_C + (size_t)l;
            if (s->row[k] < 0)
                continue;
            int64_t b = c->indptr[s->row[k]];
            for (int32_t j = 0; j < s->len[k]; j++) {
                size_t o = base + (size_t)j * SELL_C + (size_t)l;
                int32_t col = c->indices[b + j];
                if (colmap)
                    col = colmap[col];
                if (s->wide)
                    ((int32_t *)s->idx)[o] = col;
                else
                    ((uint16_t *)s->idx)[o] = (uint16_t)col;
                s->val[o] = c->values[b + j];
            }
        }
    }
    free(key);
    if (!colmap && sell_blk_build(s, c))
        goto fail2;
    return s;
fail:
    free(key);
fail2:
    sell_free(s);
    return NULL;
}

/* Stores the 16 results of chunk ch. */
static inline void sell_put(const dwf_sell *s, int ch, const float *out,
                            float *restrict y)
{
    size_t lane0 = (size_t)ch * SELL_C;
    if (s->sorted_out && lane0 + SELL_C <= (size_t)s->rows) {
        memcpy(y + lane0, out, SELL_C * sizeof(float));
        return;
    }
    const int32_t *row = s->row + lane0;
    for (int l = 0; l < SELL_C; l++)
        if (row[l] >= 0)
            y[s->sorted_out ? lane0 + (size_t)l : (size_t)row[l]] = out[l];
}

/* y = the layer's rows (bias + sum), max(., 0) when relu (as
 * dwf_relu_forward: NaN becomes 0). Portable version: slot by slot, 16
 * independent sums. */
static void sell_mv_portable(const dwf_sell *s, const float *restrict x,
                             int relu, float *restrict y)
{
    const uint16_t *i16 = s->idx;
    const int32_t *i32 = s->idx;
    for (int ch = 0; ch < s->n_chunks; ch++) {
        const size_t lane0 = (size_t)ch * SELL_C;
        const int32_t *len = s->len + lane0;
        const int n = (int)(s->cptr[ch + 1] - s->cptr[ch]);
        const int nf = len[SELL_C - 1]; /* sorted: the shortest lane */
        float acc[SELL_C] = {0};
        int j = 0;
        for (; j < nf; j++) { /* every lane live */
            size_t o = ((size_t)s->cptr[ch] + (size_t)j) * SELL_C;
            if (s->wide)
                for (int l = 0; l < SELL_C; l++)
                    acc[l] += s->val[o + l] * x[i32[o + l]];
            else
                for (int l = 0; l < SELL_C; l++)
                    acc[l] += s->val[o + l] * x[i16[o + l]];
        }
        for (; j < n; j++) {
            size_t o = ((size_t)s->cptr[ch] + (size_t)j) * SELL_C;
            for (int l = 0; l < SELL_C; l++)
                if (j < len[l])
                    acc[l] += s->val[o + l] * x[s->wide ? i32[o + l] : i16[o + l]];
        }
        float out[SELL_C];
        for (int l = 0; l < SELL_C; l++) {
            float o = s->bias[lane0 + l] + acc[l];
            out[l] = relu ? (o > 0.0f ? o : 0.0f) : o;
        }
        sell_put(s, ch, out, y);
    }
}

#ifdef SELL_X86
/* x at the 8 column indices q[0..8) of a slot, built from scalar loads.
 * uint16 indices are read four to a 64-bit load (the loads are what
 * limits this loop). */
static inline uint64_t sell_u64(const void *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}
#define SELL_X4(w)                                                           \
    x[(uint16_t)(w)], x[(uint16_t)((w) >> 16)], x[(uint16_t)((w) >> 32)],    \
        x[(uint16_t)((w) >> 48)]
#define SELL_FETCH8(q16, q32, g)                                             \
    do {                                                                     \
        if (wide) {                                                          \
            (g) = _mm256_setr_ps(x[(q32)[0]], x[(q32)[1]], x[(q32)[2]],      \
                                 x[(q32)[3]], x[(q32)[4]], x[(q32)[5]],      \
                                 x[(q32)[6]], x[(q32)[7]]);                  \
        } else {                                                             \
            const uint64_t w0_ = sell_u64(q16), w1_ = sell_u64((q16) + 4);   \
            (g) = _mm256_set_m128(_mm_setr_ps(SELL_X4(w1_)),                 \
                                  _mm_setr_ps(SELL_X4(w0_)));                \
        }                                                                    \
    } while (0)

/* One chunk; wide is a constant in each caller. One loop over the slots
 * (lane masks on every slot cost less than a second, partial-slot loop
 * whose exit is mispredicted). */
__attribute__((target("avx2,fma"), always_inline)) static inline void
sell_chunk_avx2(const dwf_sell *s, int ch, const float *restrict x, int relu,
                float *restrict y, const int wide)
{
    const size_t lane0 = (size_t)ch * SELL_C, base = (size_t)s->cptr[ch] * SELL_C;
    const int n = (int)(s->cptr[ch + 1] - s->cptr[ch]);
    const uint16_t *i16 = (const uint16_t *)s->idx + base;
    const int32_t *i32 = (const int32_t *)s->idx + base;
    const float *v = s->val + base;
    const __m256i l0 = _mm256_load_si256((const __m256i *)(s->len + lane0));
    const __m256i l1 = _mm256_load_si256((const __m256i *)(s->len + lane0 + 8));
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), g0, g1;
    for (int j = 0; j < n; j++) {
        size_t o = (size_t)j * SELL_C;
        const __m256i jv = _mm256_set1_epi32(j);
        __m256 m0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(l0, jv));
        __m256 m1 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(l1, jv));
        SELL_FETCH8(i16 + o, i32 + o, g0);
        SELL_FETCH8(i16 + o + 8, i32 + o + 8, g1);
        a0 = _mm256_blendv_ps(a0, _mm256_fmadd_ps(_mm256_load_ps(v + o), g0, a0), m0);
        a1 = _mm256_blendv_ps(a1, _mm256_fmadd_ps(_mm256_load_ps(v + o + 8), g1, a1), m1);
    }
    __m256 o0 = _mm256_add_ps(_mm256_load_ps(s->bias + lane0), a0);
    __m256 o1 = _mm256_add_ps(_mm256_load_ps(s->bias + lane0 + 8), a1);
    if (relu) { /* maxps returns its second operand for NaN: 0 */
        o0 = _mm256_max_ps(o0, _mm256_setzero_ps());
        o1 = _mm256_max_ps(o1, _mm256_setzero_ps());
    }
    if (s->sorted_out && lane0 + SELL_C <= (size_t)s->rows) {
        _mm256_storeu_ps(y + lane0, o0);
        _mm256_storeu_ps(y + lane0 + 8, o1);
        return;
    }
    float out[SELL_C];
    _mm256_storeu_ps(out, o0);
    _mm256_storeu_ps(out + 8, o1);
    sell_put(s, ch, out, y);
}
#undef SELL_FETCH8
#undef SELL_X4

__attribute__((target("avx2,fma"))) static void
sell_mv_avx2(const dwf_sell *s, const float *x, int relu, float *y)
{
    if (s->wide)
        for (int ch = 0; ch < s->n_chunks; ch++)
            sell_chunk_avx2(s, ch, x, relu, y, 1);
    else
        for (int ch = 0; ch < s->n_chunks; ch++)
            sell_chunk_avx2(s, ch, x, relu, y, 0);
}
#endif

#ifdef SELL_X86
/* The block layout's kernel (see sell_blk_build): per chunk, per block
 * entry, its 32 inputs in two registers (masked past the last column),
 * skipped when all are zero; a step is a permute and a masked fused
 * multiply-add. Then bias + sum and the relu, as sell_chunk_avx2. */
/* One step of the block layout: acc + the step's products, masked. */
__attribute__((target("avx512f"), always_inline)) static inline __m512
blk_step(const dwf_sell *s, const float *xp, int64_t st, __m512 acc)
{
    const float *xb = xp + (size_t)s->bsblk[st] * SELL_B;
    __m512i ix = _mm512_cvtepu8_epi32(
        _mm_load_si128((const __m128i *)(s->bidx + (size_t)st * SELL_C)));
    __m512 g = _mm512_permutex2var_ps(_mm512_load_ps(xb), ix, _mm512_load_ps(xb + 16));
    return _mm512_mask3_fmadd_ps(_mm512_load_ps(s->bval + (size_t)st * SELL_C), g, acc,
                                 (__mmask16)s->bmask[st]);
}

/* Bias + sum and the relu of chunk ch, stored. */
__attribute__((target("avx512f"), always_inline)) static inline void
blk_put(const dwf_sell *s, int ch, __m512 acc, int relu, float *y)
{
    const size_t lane0 = (size_t)ch * SELL_C;
    __m512 o = _mm512_add_ps(_mm512_load_ps(s->bias + lane0), acc);
    if (relu) /* maxps returns its second operand for NaN: 0 */
        o = _mm512_max_ps(o, _mm512_setzero_ps());
    if (s->sorted_out && lane0 + SELL_C <= (size_t)s->rows) {
        _mm512_storeu_ps(y + lane0, o);
        return;
    }
    float out[SELL_C];
    _mm512_storeu_ps(out, o);
    sell_put(s, ch, out, y);
}

/* Two chunks at a time: their sums are independent chains of fused
 * multiply-adds, each in its rows' column order. */
__attribute__((target("avx512f"))) static void
sell_mv_blk512(const dwf_sell *s, const float *x, int relu, float *y)
{
    const int cols = s->cols, nblk = (cols + SELL_B - 1) / SELL_B;
    float xp[SELL_BMAX * SELL_B] __attribute__((aligned(64)));
    memcpy(xp, x, (size_t)cols * sizeof(float));
    memset(xp + cols, 0, (size_t)(nblk * SELL_B - cols) * sizeof(float));
    int ch = 0;
    for (; ch + 1 < s->n_chunks; ch += 2) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int64_t s0 = s->bsptr[ch], e0 = s->bsptr[ch + 1];
        int64_t s1 = e0, e1 = s->bsptr[ch + 2];
        int64_t m = e0 - s0 < e1 - s1 ? e0 - s0 : e1 - s1;
        for (int64_t t = 0; t < m; t++) {
            a0 = blk_step(s, xp, s0 + t, a0);
            a1 = blk_step(s, xp, s1 + t, a1);
        }
        for (int64_t st = s0 + m; st < e0; st++)
            a0 = blk_step(s, xp, st, a0);
        for (int64_t st = s1 + m; st < e1; st++)
            a1 = blk_step(s, xp, st, a1);
        blk_put(s, ch, a0, relu, y);
        blk_put(s, ch + 1, a1, relu, y);
    }
    for (; ch < s->n_chunks; ch++) {
        __m512 a = _mm512_setzero_ps();
        for (int64_t st = s->bsptr[ch]; st < s->bsptr[ch + 1]; st++)
            a = blk_step(s, xp, st, a);
        blk_put(s, ch, a, relu, y);
    }
}
#endif

/* The batch-1 kernel: isa 0 portable, 1 AVX2 and FMA (slots), -1 the best
 * the CPU has (with AVX-512 the block layout where a layer has one, the
 * same bits as AVX2). DWF_EINVAL when the CPU lacks the one asked for; s
 * NULL only asks. */
static int sell_mv(const dwf_sell *s, const float *x, int relu, float *y,
                   int isa)
{
#ifdef SELL_X86
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa < 0 && s && s->bsptr && __builtin_cpu_supports("avx512f")) {
        sell_mv_blk512(s, x, relu, y);
        return 0;
    }
    if (isa < 0)
        isa = has2;
    if (isa == 1 && has2) {
        if (s)
            sell_mv_avx2(s, x, relu, y);
        return 0;
    }
#endif
    if (isa > 0)
        return DWF_EINVAL;
    if (s)
        sell_mv_portable(s, x, relu, y);
    return 0;
}

/* ---- building and freeing ---------------------------------------------- */

void dwf_smodel_free(dwf_smodel *s)
{
    if (!s)
        return;
    for (int i = 0; i < DWF_MAX_LAYERS; i++) {
        dwf_csr_free(&s->w[i]);
        free(s->dense[i]);
        sell_free(s->sell[i]);
        free(s->bias[i]);
    }
    free(s->spec);
    free(s->kv);
    memset(s, 0, sizeof *s);
}

/* Rows and columns of the weight matrix of layer i. */
static void layer_dims(const dwf_arch *a, int i, int *rows, int *cols)
{
    const dwf_layer_spec *l = &a->layers[i];
    if (l->kind == DWF_LAYER_CONV2D) {
        *rows = l->filters;
        *cols = l->in_c * l->kernel * l->kernel;
    } else {
        *rows = l->units;
        *cols = l->in_c * l->in_h * l->in_w;
    }
}

static int copy_meta(dwf_smodel *s, const char *spec, const dwf_kv *kv,
                     int n_kv, dwf_err *err)
{
    if (n_kv < 0 || (n_kv > 0 && !kv))
        return dwf_errorf(err, DWF_EINVAL, "sparse model: bad metric count %d",
                          n_kv);
    if (spec) {
        s->spec = strdup(spec);
        if (!s->spec)
            return dwf_errorf(err, DWF_ENOMEM, "sparse model: out of memory");
    }
    if (n_kv > 0) {
        s->kv = malloc((size_t)n_kv * sizeof *s->kv);
        if (!s->kv)
            return dwf_errorf(err, DWF_ENOMEM, "sparse model: out of memory");
        for (int i = 0; i < n_kv; i++) {
            memset(s->kv[i].key, 0, sizeof s->kv[i].key);
            memcpy(s->kv[i].key, kv[i].key, DWF_KEY_LEN - 1);
            s->kv[i].value = kv[i].value;
        }
        s->n_kv = n_kv;
    }
    return 0;
}

int dwf_smodel_from_model(const dwf_model *m, const dwf_norm *norm, float eps,
                          const char *spec, const dwf_kv *kv, int n_kv,
                          dwf_smodel *out, dwf_err *err)
{
    memset(out, 0, sizeof *out);
    if (!(eps >= 0.0f) || !isfinite(eps))
        return dwf_errorf(err, DWF_EINVAL, "sparse model: threshold %g must be "
                          "a finite number >= 0", (double)eps);
    out->arch = m->arch;
    int rc = dwf_arch_resolve(&out->arch, err);
    if (rc)
        return rc;
    if (norm) {
        out->norm = *norm;
    } else {
        out->norm.kind = DWF_NORM_NONE;
        out->norm.mean = 0.0f;
        out->norm.std = 1.0f;
    }
    out->eps = eps;
    const dwf_arch *a = &out->arch;
    for (int i = 0; i < a->n_layers; i++) {
        if (!dwf_layer_has_weight(a->layers[i].kind))
            continue;
        int rows, cols;
        layer_dims(a, i, &rows, &cols);
        int wi = m->weight_idx[i], bi = m->bias_idx[i];
        if (wi < 0 || wi >= m->n_params || m->params[wi].n != (int64_t)rows * cols) {
            rc = dwf_errorf(err, DWF_EINVAL, "layers[%d]: the model has no "
                            "%dx%d weight", i, rows, cols);
            goto fail;
        }
        rc = dwf_csr_from_dense(&out->w[i], m->params[wi].w, rows, cols, eps, err);
        if (rc)
            goto fail;
        if (bi >= 0 && bi < m->n_params) {
            const dwf_param *b = &m->params[bi];
            if (b->n != rows) {
                rc = dwf_errorf(err, DWF_EINVAL, "layers[%d]: bias has %lld "
                                "entries, want %d", i, (long long)b->n, rows);
                goto fail;
            }
            out->bias[i] = malloc((size_t)rows * sizeof(float));
            if (!out->bias[i]) {
                rc = dwf_errorf(err, DWF_ENOMEM, "sparse model: out of memory");
                goto fail;
            }
            for (int r = 0; r < rows; r++)
                out->bias[i][r] = fabsf(b->w[r]) >= eps ? b->w[r] : 0.0f;
        }
    }
    rc = copy_meta(out, spec, kv, n_kv, err);
    if (rc)
        goto fail;
    rc = dwf_smodel_set_crossover(out, DWF_SPARSE_CROSSOVER, err);
    if (rc)
        goto fail;
    return 0;
fail:
    dwf_smodel_free(out);
    return rc;
}

/* Keeps the entries of src with |v| >= eps in dst (dst zeroed on failure). */
static int csr_filter(dwf_csr *dst, const dwf_csr *src, float eps, dwf_err *err)
{
    memset(dst, 0, sizeof *dst);
    int64_t nnz = 0;
    for (int64_t k = 0; k < src->nnz; k++)
        nnz += fabsf(src->values[k]) >= eps;
    if (csr_alloc(dst, src->rows, src->cols, nnz))
        return dwf_errorf(err, DWF_ENOMEM, "csr: out of memory for %dx%d "
                          "with %lld non-zeros", src->rows, src->cols,
                          (long long)nnz);
    int64_t o = 0;
    for (int r = 0; r < src->rows; r++) {
        for (int64_t k = src->indptr[r]; k < src->indptr[r + 1]; k++) {
            if (fabsf(src->values[k]) >= eps) {
                dst->indices[o] = src->indices[k];
                dst->values[o++] = src->values[k];
            }
        }
        dst->indptr[r + 1] = o;
    }
    return 0;
}

int dwf_smodel_rethreshold(const dwf_smodel *src, float eps, const dwf_kv *kv,
                           int n_kv, dwf_smodel *out, dwf_err *err)
{
    memset(out, 0, sizeof *out);
    if (!isfinite(eps) || !(eps >= src->eps))
        return dwf_errorf(err, DWF_EINVAL, "sparse model: threshold %g must be "
                          "finite and at least the model's %g", (double)eps,
                          (double)src->eps);
    out->arch = src->arch;
    out->norm = src->norm;
    out->eps = eps;
    int rc = 0;
    const dwf_arch *a = &src->arch;
    for (int i = 0; i < a->n_layers; i++) {
        if (!dwf_layer_has_weight(a->layers[i].kind))
            continue;
        rc = csr_filter(&out->w[i], &src->w[i], eps, err);
        if (rc)
            goto fail;
        if (src->bias[i]) {
            int rows = src->w[i].rows;
            out->bias[i] = malloc((size_t)rows * sizeof(float));
            if (!out->bias[i]) {
                rc = dwf_errorf(err, DWF_ENOMEM, "sparse model: out of memory");
                goto fail;
            }
            memcpy(out->bias[i], src->bias[i], (size_t)rows * sizeof(float));
        }
    }
    rc = kv ? copy_meta(out, src->spec, kv, n_kv, err)
            : copy_meta(out, src->spec, src->kv, src->n_kv, err);
    if (rc)
        goto fail;
    if ((rc = dwf_smodel_set_crossover(out, DWF_SPARSE_CROSSOVER, err)))
        goto fail;
    return 0;
fail:
    dwf_smodel_free(out);
    return rc;
}

void dwf_smodel_counts(const dwf_smodel *s, int64_t *weights, int64_t *nonzero,
                       int64_t *params, int64_t *params_nonzero)
{
    int64_t w = 0, nz = 0, p = 0, pnz = 0;
    for (int i = 0; i < s->arch.n_layers; i++) {
        if (!dwf_layer_has_weight(s->arch.layers[i].kind))
            continue;
        const dwf_csr *c = &s->w[i];
        w += (int64_t)c->rows * c->cols;
        nz += c->nnz;
        if (s->bias[i]) {
            p += c->rows;
            for (int r = 0; r < c->rows; r++)
                pnz += s->bias[i][r] != 0.0f;
        }
    }
    if (weights)
        *weights = w;
    if (nonzero)
        *nonzero = nz;
    if (params)
        *params = w + p;
    if (params_nonzero)
        *params_nonzero = nz + pnz;
}

/* Drops every SELL copy. */
static void sells_free(dwf_smodel *s)
{
    for (int i = 0; i < DWF_MAX_LAYERS; i++) {
        sell_free(s->sell[i]);
        s->sell[i] = NULL;
    }
}

static int passes_through(dwf_layer_kind k)
{
    return k == DWF_LAYER_RELU || k == DWF_LAYER_FLATTEN;
}

/* (Re)builds the SELL copies of the dense-kind layers that run sparse, in
 * layer order, chaining sorted outputs into the next SELL layer's column
 * numbering (see the batch-1 kernels). All or none. */
static int sells_build(dwf_smodel *s, dwf_err *err)
{
    sells_free(s);
    const dwf_arch *a = &s->arch;
    int32_t *map = NULL; /* producer's row -> lane, or NULL */
    for (int i = 0; i < a->n_layers; i++) {
        dwf_layer_kind kind = a->layers[i].kind;
        if (passes_through(kind))
            continue;
        if (kind != DWF_LAYER_DENSE || s->dense[i]) {
            free(map);
            map = NULL;
            continue;
        }
        int k = i + 1;
        while (k < a->n_layers && passes_through(a->layers[k].kind))
            k++;
        int sorted = k < a->n_layers && a->layers[k].kind == DWF_LAYER_DENSE &&
                     !s->dense[k];
        s->sell[i] = sell_build(&s->w[i], s->bias[i], map, sorted);
        free(map);
        map = NULL;
        if (s->sell[i] && sorted) {
            int rows = s->w[i].rows;
            map = malloc(((size_t)rows + 1) * sizeof *map);
            if (map)
                for (int l = 0; l < rows; l++)
                    map[s->sell[i]->row[l]] = l;
        }
        if (!s->sell[i] || (sorted && !map)) {
            sells_free(s);
            return dwf_errorf(err, DWF_ENOMEM, "sparse model: out of memory "
                              "for the batch-1 copy of layers[%d]", i);
        }
    }
    free(map);
    return 0;
}

int dwf_smodel_set_crossover(dwf_smodel *s, double crossover, dwf_err *err)
{
    for (int i = 0; i < s->arch.n_layers; i++) {
        if (!dwf_layer_has_weight(s->arch.layers[i].kind))
            continue;
        const dwf_csr *c = &s->w[i];
        double total = (double)c->rows * c->cols;
        double density = total > 0 ? (double)c->nnz / total : 0.0;
        int dense = crossover <= 0.0 || density > crossover;
        if (!dense) {
            free(s->dense[i]);
            s->dense[i] = NULL;
            continue;
        }
        if (s->dense[i])
            continue;
        float *d = calloc((size_t)c->rows * c->cols, sizeof *d);
        if (!d) {
            sells_free(s); /* stale: the choice may have changed */
            return dwf_errorf(err, DWF_ENOMEM, "sparse model: out of memory for "
                              "a dense %dx%d copy", c->rows, c->cols);
        }
        for (int r = 0; r < c->rows; r++)
            for (int64_t k = c->indptr[r]; k < c->indptr[r + 1]; k++)
                d[(size_t)r * c->cols + c->indices[k]] = c->values[k];
        s->dense[i] = d;
    }
    return sells_build(s, err);
}

double dwf_smodel_metric(const dwf_smodel *s, const char *key)
{
    for (int i = 0; i < s->n_kv; i++)
        if (strcmp(s->kv[i].key, key) == 0)
            return s->kv[i].value;
    return NAN;
}

/* ---- inference ----------------------------------------------------------- */

struct dwf_sws {
    int max_batch;
    int64_t act, col, pool; /* per-sample capacities (floats / int32s) */
    int64_t kmax;           /* largest convolution window (in_c k k) */
    float *buf[2];          /* ping-pong activations, max_batch * act */
    float *col_buf;         /* im2col (or the padded input) of one sample */
    int32_t *off;           /* window offsets of a direct convolution */
    float *xin;             /* normalized inputs, max_batch * input dim */
    float *logits;          /* max_batch * n_classes */
};

/* Per-sample sizes the forward pass of a needs. */
static void arch_needs(const dwf_arch *a, int64_t *act, int64_t *col,
                       int64_t *pool, int64_t *kmax)
{
    int64_t mx = (int64_t)a->in_c * a->in_h * a->in_w, mc = 0, mp = 0, mk = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        int64_t os = (int64_t)l->out_c * l->out_h * l->out_w;
        if (os > mx)
            mx = os;
        if (l->kind == DWF_LAYER_CONV2D) {
            int64_t c = (int64_t)l->in_c * l->kernel * l->kernel * l->out_h * l->out_w;
            if (c > mc)
                mc = c;
            int64_t kk = (int64_t)l->in_c * l->kernel * l->kernel;
            if (kk > mk)
                mk = kk;
        }
        if (l->kind == DWF_LAYER_MAXPOOL2D && os > mp)
            mp = os;
    }
    if (a->n_classes > mx)
        mx = a->n_classes;
    *act = mx;
    *col = mc;
    *pool = mp;
    *kmax = mk;
}

void dwf_sws_free(dwf_sws *ws)
{
    if (!ws)
        return;
    free(ws->buf[0]);
    free(ws->buf[1]);
    free(ws->col_buf);
    free(ws->off);
    free(ws->xin);
    free(ws->logits);
    free(ws);
}

int dwf_sws_create(const dwf_smodel *s, int max_batch, dwf_sws **out,
                   dwf_err *err)
{
    *out = NULL;
    if (max_batch < 1)
        return dwf_errorf(err, DWF_EINVAL, "batch size %d must be >= 1",
                          max_batch);
    dwf_sws *ws = calloc(1, sizeof *ws);
    if (!ws)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for inference buffers");
    const dwf_arch *a = &s->arch;
    arch_needs(a, &ws->act, &ws->col, &ws->pool, &ws->kmax);
    ws->max_batch = max_batch;
    size_t b = (size_t)max_batch;
    size_t dim = (size_t)a->in_c * a->in_h * a->in_w;
    ws->buf[0] = malloc(b * (size_t)ws->act * sizeof(float));
    ws->buf[1] = malloc(b * (size_t)ws->act * sizeof(float));
    ws->xin = malloc(b * dim * sizeof(float));
    ws->logits = malloc(b * (size_t)a->n_classes * sizeof(float));
    if (ws->col > 0)
        ws->col_buf = malloc((size_t)ws->col * sizeof(float));
    if (ws->kmax > 0)
        ws->off = malloc((size_t)ws->kmax * sizeof(int32_t));
    if (!ws->buf[0] || !ws->buf[1] || !ws->xin || !ws->logits ||
        (ws->col > 0 && !ws->col_buf) || (ws->kmax > 0 && !ws->off)) {
        dwf_sws_free(ws);
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for inference "
                          "buffers (batch %d)", max_batch);
    }
    *out = ws;
    return 0;
}

/* dst (c x r) = src^T for src (r x c), in cache-sized tiles; with AVX2,
 * 8 x 8 blocks by register shuffles (4 times faster than element by
 * element: at batch 128 the input transpose of LeNet-300-100 was 40% of
 * the sparse forward pass at CR 50). */
static void transpose_portable(const float *restrict src, int64_t r, int64_t c,
                               float *restrict dst)
{
    const int64_t T = 32;
    for (int64_t i0 = 0; i0 < r; i0 += T) {
        int64_t i1 = i0 + T < r ? i0 + T : r;
        for (int64_t j0 = 0; j0 < c; j0 += T) {
            int64_t j1 = j0 + T < c ? j0 + T : c;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++)
                    dst[j * r + i] = src[i * c + j];
        }
    }
}

#ifdef SELL_X86
/* dst (8 x 8, row stride ds) = src^T (8 x 8, row stride ss). */
__attribute__((target("avx2"), always_inline)) static inline void
transpose8(const float *src, int64_t ss, float *dst, int64_t ds)
{
    const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss),
                 r2 = _mm256_loadu_ps(src + 2 * ss),
                 r3 = _mm256_loadu_ps(src + 3 * ss),
                 r4 = _mm256_loadu_ps(src + 4 * ss),
                 r5 = _mm256_loadu_ps(src + 5 * ss),
                 r6 = _mm256_loadu_ps(src + 6 * ss),
                 r7 = _mm256_loadu_ps(src + 7 * ss);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
                 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
                 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
                 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44),
                 u1 = _mm256_shuffle_ps(t0, t2, 0xee),
                 u2 = _mm256_shuffle_ps(t1, t3, 0x44),
                 u3 = _mm256_shuffle_ps(t1, t3, 0xee),
                 u4 = _mm256_shuffle_ps(t4, t6, 0x44),
                 u5 = _mm256_shuffle_ps(t4, t6, 0xee),
                 u6 = _mm256_shuffle_ps(t5, t7, 0x44),
                 u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
}

__attribute__((target("avx2"))) static void
transpose_avx2(const float *restrict src, int64_t r, int64_t c,
               float *restrict dst)
{
    const int64_t T = 32;
    for (int64_t i0 = 0; i0 < r; i0 += T) {
        int64_t i1 = i0 + T < r ? i0 + T : r;
        for (int64_t j0 = 0; j0 < c; j0 += T) {
            int64_t j1 = j0 + T < c ? j0 + T : c;
            int64_t i = i0;
            for (; i + 8 <= i1; i += 8) {
                int64_t j = j0;
                for (; j + 8 <= j1; j += 8)
                    transpose8(src + i * c + j, c, dst + j * r + i, r);
                for (; j < j1; j++)
                    for (int64_t k = i; k < i + 8; k++)
                        dst[j * r + k] = src[k * c + j];
            }
            for (; i < i1; i++)
                for (int64_t j = j0; j < j1; j++)
                    dst[j * r + i] = src[i * c + j];
        }
    }
}
#endif

void dwf_transpose(const float *restrict src, int64_t r, int64_t c, float *restrict dst)
{
#ifdef SELL_X86
    if (__builtin_cpu_supports("avx2")) {
        transpose_avx2(src, r, c, dst);
        return;
    }
#endif
    transpose_portable(src, r, c, dst);
}

/* ---- the dense path ------------------------------------------------------ */

#ifdef SELL_X86
/* Y (rows x n, feature-major) = bias + W X for a dense W (rows x cols) and
 * X (cols x n), in tiles of 4 rows by 4 vectors of columns: every entry is
 * bias + (its row's products summed in column order by fused multiply-adds
 * from 0) - the arithmetic of spmm_avx2 and of the batch-1 kernel, zeros
 * adding nothing - so that a sample's result neither depends on the batch
 * it is in nor on whether the layer runs dense or sparse. */
#define DM_ROW(i, wk)                                                         \
    do {                                                                      \
        const VEC b_ = SET1(wk);                                              \
        a##i##0 = FMA(b_, x0, a##i##0);                                       \
        if (nq > 1)                                                           \
            a##i##1 = FMA(b_, x1, a##i##1);                                   \
        if (nq > 2)                                                           \
            a##i##2 = FMA(b_, x2, a##i##2);                                   \
        if (nq > 3)                                                           \
            a##i##3 = FMA(b_, x3, a##i##3);                                   \
    } while (0)
#define DM_STORE(i)                                                           \
    do {                                                                      \
        if (i < nr) {                                                         \
            float *yr = DM_Y(i);                                              \
            const VEC b_ = SET1(bias ? bias[r0 + i] : 0.0f);                  \
            STORE(yr, DM_MQ(0), ADD(b_, a##i##0));                            \
            if (nq > 1)                                                       \
                STORE(yr + DM_YQ(1), DM_MQ(1), ADD(b_, a##i##1));             \
            if (nq > 2)                                                       \
                STORE(yr + DM_YQ(2), DM_MQ(2), ADD(b_, a##i##2));             \
            if (nq > 3)                                                       \
                STORE(yr + DM_YQ(3), DM_MQ(3), ADD(b_, a##i##3));             \
        }                                                                     \
    } while (0)
/* Row k of the input and row i of the tile's output: a matrix with n
 * columns from column j0, or (a convolution by offsets, DM_CONV) the
 * window rows off[k] from xb and the output positions from yo of planes of
 * P. cutting (a constant): weights below cut in magnitude count as zeros. */
#define DM_X(k) (DM_CONV ? xb + off[k] : x + (size_t)(k) * n + j0)
#define DM_Y(i) (DM_CONV ? y + (size_t)(r0 + (i)) * P + yo : y + (size_t)(r0 + (i)) * n + j0)
#define DM_CUT(v) (cutting && !(fabsf(v) >= cut) ? 0.0f : (v))
/* Vector q of a tile: W_ floats after the one before (the last one masked
 * by ml), or (narrow, a constant: a convolution whose output rows fit one
 * vector) the next output row, xs floats on in the input and ys in the
 * output, each masked by ml. */
#define DM_XQ(q) (narrow ? (size_t)(q) * xs : (size_t)(q) * W_)
#define DM_YQ(q) (narrow ? (size_t)(q) * ys : (size_t)(q) * W_)
#define DM_MQ(q) (narrow || nq == (q) + 1 || (q) == 3 ? ml : FULL)
#define DM_TILE_BODY                                                          \
    const float *w0 = W + (size_t)r0 * cols;                                  \
    const float *w1 = nr > 1 ? w0 + cols : w0,                                \
                *w2 = nr > 2 ? w0 + 2 * (size_t)cols : w0,                    \
                *w3 = nr > 3 ? w0 + 3 * (size_t)cols : w0;                    \
    VEC a00 = ZERO, a01 = a00, a02 = a00, a03 = a00;                          \
    VEC a10 = a00, a11 = a00, a12 = a00, a13 = a00;                           \
    VEC a20 = a00, a21 = a00, a22 = a00, a23 = a00;                           \
    VEC a30 = a00, a31 = a00, a32 = a00, a33 = a00;                           \
    for (int k = 0; k < cols; k++) {                                          \
        const float *xr = DM_X(k);                                            \
        VEC x0 = LOAD(xr, DM_MQ(0)), x1 = x0, x2 = x0, x3 = x0;               \
        if (nq > 1)                                                           \
            x1 = LOAD(xr + DM_XQ(1), DM_MQ(1));                               \
        if (nq > 2)                                                           \
            x2 = LOAD(xr + DM_XQ(2), DM_MQ(2));                               \
        if (nq > 3)                                                           \
            x3 = LOAD(xr + DM_XQ(3), DM_MQ(3));                               \
        DM_ROW(0, DM_CUT(w0[k]));                                             \
        DM_ROW(1, DM_CUT(w1[k]));                                             \
        DM_ROW(2, DM_CUT(w2[k]));                                             \
        DM_ROW(3, DM_CUT(w3[k]));                                             \
    }                                                                         \
    DM_STORE(0);                                                              \
    DM_STORE(1);                                                              \
    DM_STORE(2);                                                              \
    DM_STORE(3);

/* AVX-512: 16 floats a vector, masks */
#define VEC __m512
#define W_ 16
#define FULL ((__mmask16)0xffff)
#define ZERO _mm512_setzero_ps()
#define SET1(v) _mm512_set1_ps(v)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define ADD(a, b) _mm512_add_ps(a, b)
#define LOAD(p, m) _mm512_maskz_loadu_ps(m, p)
#define STORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#define DM_CONV 0
__attribute__((target("avx512f"), always_inline)) static inline void
dm_tile_512(const float *restrict W, int cols, int r0, int nr, const float *restrict x,
            size_t n, size_t j0, const int nq, __mmask16 ml, const float *restrict bias,
            float *restrict y, float cut, const int cutting)
{
    const float *xb = NULL;
    const int32_t *off = NULL;
    size_t P = 0, yo = 0, xs = 0, ys = 0;
    const int narrow = 0;
    DM_TILE_BODY
}
#undef DM_CONV

/* The convolution tile: output positions yo.. of one output row, whose
 * window rows for k are xb + off[k]; the same arithmetic per output as
 * dense_mm_512 on the im2col matrix. */
#define DM_CONV 1
__attribute__((target("avx512f"), always_inline)) static inline void
dc_tile_512(const float *restrict W, int cols, int r0, int nr, const float *restrict xb,
            const int32_t *restrict off, size_t P, size_t yo, const int nq, __mmask16 ml,
            const float *restrict bias, float *restrict y)
{
    const float *x = NULL;
    size_t n = 0, j0 = 0, xs = 0, ys = 0;
    const float cut = 0.0f;
    const int cutting = 0, narrow = 0;
    DM_TILE_BODY
}

/* The same for nq output rows of ow <= 16 positions each, one vector a
 * row: xs = the input's row length, ys = ow. */
__attribute__((target("avx512f"), always_inline)) static inline void
dcn_tile_512(const float *restrict W, int cols, int r0, int nr, const float *restrict xb,
             const int32_t *restrict off, size_t P, size_t yo, size_t xs, size_t ys,
             const int nq, __mmask16 ml, const float *restrict bias, float *restrict y)
{
    const float *x = NULL;
    size_t n = 0, j0 = 0;
    const float cut = 0.0f;
    const int cutting = 0, narrow = 1;
    DM_TILE_BODY
}
#undef DM_CONV

/* A stride-1 convolution of one sample with a dense weight (rows = output
 * channels, cols = in_c k k): xp is the (padded) input, planes of ph x pw,
 * off[k] the offset of window element k; y (rows x oh ow). */
__attribute__((target("avx512f"))) static void
dense_conv_512(const float *restrict W, int rows, int cols, const float *restrict xp,
               int pw, const int32_t *restrict off, int oh, int ow,
               const float *restrict bias, float *restrict y)
{
    size_t P = (size_t)oh * ow;
    if (ow <= 16) { /* up to four output rows a tile, one vector each */
        __mmask16 ml = (__mmask16)(ow == 16 ? 0xffff : (1u << ow) - 1);
        for (int oy = 0; oy < oh; oy += 4) {
            int nq = oh - oy < 4 ? oh - oy : 4;
            const float *xb = xp + (size_t)oy * pw;
            size_t yo = (size_t)oy * ow;
            for (int r0 = 0; r0 < rows; r0 += 4) {
                int nr = rows - r0 < 4 ? rows - r0 : 4;
                switch (nq) {
                case 1: dcn_tile_512(W, cols, r0, nr, xb, off, P, yo, pw, ow, 1, ml, bias, y); break;
                case 2: dcn_tile_512(W, cols, r0, nr, xb, off, P, yo, pw, ow, 2, ml, bias, y); break;
                case 3: dcn_tile_512(W, cols, r0, nr, xb, off, P, yo, pw, ow, 3, ml, bias, y); break;
                default: dcn_tile_512(W, cols, r0, nr, xb, off, P, yo, pw, ow, 4, ml, bias, y); break;
                }
            }
        }
        return;
    }
    for (int oy = 0; oy < oh; oy++)
        for (int ox0 = 0; ox0 < ow; ox0 += 64) {
            int m = ow - ox0 < 64 ? ow - ox0 : 64, nq = (m + 15) / 16;
            __mmask16 ml = (__mmask16)(m % 16 ? (1u << (m % 16)) - 1 : 0xffff);
            const float *xb = xp + (size_t)oy * pw + ox0;
            size_t yo = (size_t)oy * ow + ox0;
            for (int r0 = 0; r0 < rows; r0 += 4) {
                int nr = rows - r0 < 4 ? rows - r0 : 4;
                switch (nq) {
                case 1: dc_tile_512(W, cols, r0, nr, xb, off, P, yo, 1, ml, bias, y); break;
                case 2: dc_tile_512(W, cols, r0, nr, xb, off, P, yo, 2, ml, bias, y); break;
                case 3: dc_tile_512(W, cols, r0, nr, xb, off, P, yo, 3, ml, bias, y); break;
                default: dc_tile_512(W, cols, r0, nr, xb, off, P, yo, 4, ml, bias, y); break;
                }
            }
        }
}

/* The same with a CSR weight (spmm_512's arithmetic per output). */
__attribute__((target("avx512f"))) static void
csr_conv_512(const int64_t *restrict ip, const int32_t *restrict ix, const float *restrict v,
             int rows, const float *restrict xp, int pw, const int32_t *restrict off, int oh,
             int ow, const float *restrict bias, float *restrict y)
{
    size_t P = (size_t)oh * ow;
    for (int oy = 0; oy < oh; oy++)
        for (int ox0 = 0; ox0 < ow; ox0 += 32) {
            int m = ow - ox0 < 32 ? ow - ox0 : 32;
            __mmask16 k0 = (__mmask16)(m >= 16 ? 0xffff : (1u << m) - 1);
            __mmask16 k1 = (__mmask16)(m >= 32 ? 0xffff : m <= 16 ? 0 : (1u << (m - 16)) - 1);
            const float *xb = xp + (size_t)oy * pw + ox0;
            for (int r = 0; r < rows; r++) {
                __m512 a0 = _mm512_setzero_ps(), a1 = a0;
                for (int64_t k = ip[r]; k < ip[r + 1]; k++) {
                    const __m512 w = _mm512_set1_ps(v[k]);
                    const float *xr = xb + off[ix[k]];
                    a0 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(k0, xr), a0);
                    a1 = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(k1, xr + 16), a1);
                }
                const __m512 b = _mm512_set1_ps(bias ? bias[r] : 0.0f);
                float *yr = y + (size_t)r * P + (size_t)oy * ow + ox0;
                _mm512_mask_storeu_ps(yr, k0, _mm512_add_ps(b, a0));
                _mm512_mask_storeu_ps(yr + 16, k1, _mm512_add_ps(b, a1));
            }
        }
}

__attribute__((target("avx512f"), always_inline)) static inline void
dense_mm_512_body(const float *restrict W, int rows, int cols, const float *restrict x,
                  size_t n, const float *restrict bias, float *restrict y, float cut,
                  const int cutting)
{
    for (size_t j0 = 0; j0 < n; j0 += 64) {
        int m = n - j0 < 64 ? (int)(n - j0) : 64, nq = (m + 15) / 16;
        __mmask16 ml = (__mmask16)(m % 16 ? (1u << (m % 16)) - 1 : 0xffff);
        for (int r0 = 0; r0 < rows; r0 += 4) {
            int nr = rows - r0 < 4 ? rows - r0 : 4;
            switch (nq) {
            case 1: dm_tile_512(W, cols, r0, nr, x, n, j0, 1, ml, bias, y, cut, cutting); break;
            case 2: dm_tile_512(W, cols, r0, nr, x, n, j0, 2, ml, bias, y, cut, cutting); break;
            case 3: dm_tile_512(W, cols, r0, nr, x, n, j0, 3, ml, bias, y, cut, cutting); break;
            default: dm_tile_512(W, cols, r0, nr, x, n, j0, 4, ml, bias, y, cut, cutting); break;
            }
        }
    }
}

__attribute__((target("avx512f"))) static void
dense_mm_512(const float *restrict W, int rows, int cols, const float *restrict x,
             size_t n, const float *restrict bias, float *restrict y)
{
    dense_mm_512_body(W, rows, cols, x, n, bias, y, 0.0f, 0);
}

__attribute__((target("avx512f"))) static void
dense_mm_512_cut(const float *restrict W, int rows, int cols, const float *restrict x,
                 size_t n, const float *restrict bias, float *restrict y, float cut)
{
    dense_mm_512_body(W, rows, cols, x, n, bias, y, cut, 1);
}
#undef VEC
#undef W_
#undef FULL
#undef ZERO
#undef SET1
#undef FMA
#undef ADD
#undef LOAD
#undef STORE

/* AVX2: 8 floats a vector, masks as vectors */
#define VEC __m256
#define W_ 8
#define FULL _mm256_set1_epi32(-1)
#define ZERO _mm256_setzero_ps()
#define SET1(v) _mm256_set1_ps(v)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define ADD(a, b) _mm256_add_ps(a, b)
#define LOAD(p, m) _mm256_maskload_ps(p, m)
#define STORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#define DM_CONV 0
__attribute__((target("avx2,fma"), always_inline)) static inline void
dm_tile_avx2(const float *restrict W, int cols, int r0, int nr, const float *restrict x,
             size_t n, size_t j0, const int nq, __m256i ml, const float *restrict bias,
             float *restrict y, float cut, const int cutting)
{
    const float *xb = NULL;
    const int32_t *off = NULL;
    size_t P = 0, yo = 0, xs = 0, ys = 0;
    const int narrow = 0;
    DM_TILE_BODY
}
#undef DM_CONV

__attribute__((target("avx2,fma"), always_inline)) static inline void
dense_mm_avx2_body(const float *restrict W, int rows, int cols, const float *restrict x,
                   size_t n, const float *restrict bias, float *restrict y, float cut,
                   const int cutting)
{
    for (size_t j0 = 0; j0 < n; j0 += 32) {
        int m = n - j0 < 32 ? (int)(n - j0) : 32, nq = (m + 7) / 8, t = m % 8 ? m % 8 : 8;
        const __m256i ml = _mm256_cmpgt_epi32(_mm256_set1_epi32(t),
                                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int r0 = 0; r0 < rows; r0 += 4) {
            int nr = rows - r0 < 4 ? rows - r0 : 4;
            switch (nq) {
            case 1: dm_tile_avx2(W, cols, r0, nr, x, n, j0, 1, ml, bias, y, cut, cutting); break;
            case 2: dm_tile_avx2(W, cols, r0, nr, x, n, j0, 2, ml, bias, y, cut, cutting); break;
            case 3: dm_tile_avx2(W, cols, r0, nr, x, n, j0, 3, ml, bias, y, cut, cutting); break;
            default: dm_tile_avx2(W, cols, r0, nr, x, n, j0, 4, ml, bias, y, cut, cutting); break;
            }
        }
    }
}

__attribute__((target("avx2,fma"))) static void
dense_mm_avx2(const float *restrict W, int rows, int cols, const float *restrict x,
              size_t n, const float *restrict bias, float *restrict y)
{
    dense_mm_avx2_body(W, rows, cols, x, n, bias, y, 0.0f, 0);
}

__attribute__((target("avx2,fma"))) static void
dense_mm_avx2_cut(const float *restrict W, int rows, int cols, const float *restrict x,
                  size_t n, const float *restrict bias, float *restrict y, float cut)
{
    dense_mm_avx2_body(W, rows, cols, x, n, bias, y, cut, 1);
}
#undef VEC
#undef W_
#undef FULL
#undef ZERO
#undef SET1
#undef FMA
#undef ADD
#undef LOAD
#undef STORE
#undef DM_ROW
#undef DM_STORE
#undef DM_TILE_BODY
#undef DM_CUT
#undef DM_X
#undef DM_Y
#undef DM_XQ
#undef DM_YQ
#undef DM_MQ
#endif

int dwf_smodel_batch_invariant(void)
{
#ifdef SELL_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

void dwf_dense_matmul_cut(const float *W, int rows, int cols, float cut, const float *x,
                          int n, const float *bias, float *y)
{
    if (n < 1)
        return;
#ifdef SELL_X86
    if (__builtin_cpu_supports("avx512f")) {
        dense_mm_512_cut(W, rows, cols, x, (size_t)n, bias, y, cut);
        return;
    }
    if (dwf_smodel_batch_invariant()) {
        dense_mm_avx2_cut(W, rows, cols, x, (size_t)n, bias, y, cut);
        return;
    }
#endif
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int k = 0; k < cols; k++) {
                float v = W[(size_t)r * cols + k];
                if (fabsf(v) >= cut)
                    acc = fmaf(v, x[(size_t)k * n + j], acc);
            }
            y[(size_t)r * n + j] = (bias ? bias[r] : 0.0f) + acc;
        }
}

/* Y (rows x n) = W X + bias with the weight of layer i, sparse or dense. */
static void layer_mul(const dwf_smodel *s, int i, const float *x, int n,
                      float *y, int isa)
{
    const dwf_csr *c = &s->w[i];
    const float *bias = s->bias[i];
    const float *d = s->dense[i];
    if (!d) {
        csr_mul(c, x, n, bias, y, isa);
        return;
    }
    if (n == 1) {
        if (bias)
            memcpy(y, bias, (size_t)c->rows * sizeof(float));
        cblas_sgemv(CblasRowMajor, CblasNoTrans, c->rows, c->cols, 1.0f, d,
                    c->cols, x, 1, bias ? 1.0f : 0.0f, y, 1);
        return;
    }
#ifdef SELL_X86
    if (isa < 0 && __builtin_cpu_supports("avx512f")) {
        dense_mm_512(d, c->rows, c->cols, x, (size_t)n, bias, y);
        return;
    }
    if (isa != 0 && dwf_smodel_batch_invariant()) {
        dense_mm_avx2(d, c->rows, c->cols, x, (size_t)n, bias, y);
        return;
    }
#else
    (void)isa;
#endif
    if (bias)
        for (int r = 0; r < c->rows; r++)
            for (int j = 0; j < n; j++)
                y[(size_t)r * n + j] = bias[r];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->rows, n, c->cols,
                1.0f, d, c->cols, x, n, bias ? 1.0f : 0.0f, y, n);
}

/* Convolution layer i of one sample without im2col where the AVX-512
 * kernels run (isa < 0, stride 1): the window rows read in place from the
 * input (zero-padded into col_buf when the layer pads), the same
 * arithmetic as im2col and the layer's product. Returns 0 when it does not
 * apply (the caller takes the im2col path). */
static int conv_direct(const dwf_smodel *s, int i, const dwf_conv_shape *cs, dwf_sws *ws,
                       const float *img, float *y, int isa)
{
#ifdef SELL_X86
    /* one output position: the im2col path's product is a matrix-vector
     * one (sgemv) there */
    if (isa >= 0 || cs->stride != 1 || cs->out_h * cs->out_w < 2 ||
        !__builtin_cpu_supports("avx512f"))
        return 0;
    int ph = cs->in_h + 2 * cs->pad, pw = cs->in_w + 2 * cs->pad;
    const float *xp = img;
    if (cs->pad > 0) {
        /* fits: in_c ph pw <= in_c k k oh ow (ph = oh + k - 1 <= k oh) */
        float *d = ws->col_buf;
        memset(d, 0, (size_t)cs->in_c * ph * pw * sizeof(float));
        for (int c = 0; c < cs->in_c; c++)
            for (int yy = 0; yy < cs->in_h; yy++)
                memcpy(d + ((size_t)c * ph + yy + cs->pad) * pw + cs->pad,
                       img + ((size_t)c * cs->in_h + yy) * cs->in_w,
                       (size_t)cs->in_w * sizeof(float));
        xp = d;
    }
    int32_t *off = ws->off, K = cs->in_c * cs->k * cs->k;
    for (int c = 0, k = 0; c < cs->in_c; c++)
        for (int ky = 0; ky < cs->k; ky++)
            for (int kx = 0; kx < cs->k; kx++)
                off[k++] = (c * ph + ky) * pw + kx;
    const dwf_csr *w = &s->w[i];
    if (s->dense[i])
        dense_conv_512(s->dense[i], w->rows, K, xp, pw, off, cs->out_h, cs->out_w,
                       s->bias[i], y);
    else
        csr_conv_512(w->indptr, w->indices, w->values, w->rows, xp, pw, off, cs->out_h,
                     cs->out_w, s->bias[i], y);
    return 1;
#else
    (void)s, (void)i, (void)cs, (void)ws, (void)img, (void)y, (void)isa;
    return 0;
#endif
}

/* Logits of b <= ws->max_batch normalized inputs. */
static void forward_chunk(const dwf_smodel *s, dwf_sws *ws, const float *x,
                          int b, float *logits, int isa)
{
    const dwf_arch *a = &s->arch;
    const float *cur = x;
    int fm = 0; /* cur is feature-major (features x b) */
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        int64_t in_size = (int64_t)l->in_c * l->in_h * l->in_w;
        int64_t out_size = (int64_t)l->out_c * l->out_h * l->out_w;
        float *next = cur == ws->buf[0] ? ws->buf[1] : ws->buf[0];
        int need_fm = l->kind == DWF_LAYER_DENSE && b > 1;
        int need_sm = l->kind == DWF_LAYER_CONV2D || l->kind == DWF_LAYER_MAXPOOL2D;
        if ((need_fm && !fm) || (need_sm && fm)) {
            if (fm)
                dwf_transpose(cur, in_size, b, next);
            else
                dwf_transpose(cur, b, in_size, next);
            fm = !fm;
            cur = next;
            next = cur == ws->buf[0] ? ws->buf[1] : ws->buf[0];
        }
        switch (l->kind) {
        case DWF_LAYER_DENSE:
            if (b == 1 && s->sell[i]) {
                /* a following relu is applied on the way out */
                int relu = i + 1 < a->n_layers &&
                           a->layers[i + 1].kind == DWF_LAYER_RELU;
                sell_mv(s->sell[i], cur, relu, next, isa);
                i += relu;
            } else {
                layer_mul(s, i, cur, b, next, isa);
            }
            cur = next;
            break;
        case DWF_LAYER_CONV2D: {
            dwf_conv_shape cs = {l->in_c, l->in_h, l->in_w, l->out_c, l->out_h,
                                 l->out_w, l->kernel, l->stride, l->padding};
            int P = l->out_h * l->out_w;
            for (int n = 0; n < b; n++) {
                if (conv_direct(s, i, &cs, ws, cur + (size_t)n * in_size,
                                next + (size_t)n * out_size, isa))
                    continue;
                dwf_im2col(&cs, cur + (size_t)n * in_size, ws->col_buf);
                layer_mul(s, i, ws->col_buf, P, next + (size_t)n * out_size, isa);
            }
            cur = next;
            break;
        }
        case DWF_LAYER_MAXPOOL2D:
            dwf_maxpool_forward(l->in_c, l->in_h, l->in_w, l->kernel, l->stride,
                                l->out_h, l->out_w, cur, b, next, NULL);
            cur = next;
            break;
        case DWF_LAYER_RELU: {
            /* in place, except on the caller's input */
            float *dst = cur == x ? next : (float *)cur;
            dwf_relu_forward(cur, (int64_t)b * in_size, dst);
            cur = dst;
            break;
        }
        case DWF_LAYER_FLATTEN:
            break; /* the same memory in either layout */
        }
    }
    int nc = a->n_classes;
    if (fm)
        dwf_transpose(cur, nc, b, logits);
    else
        memcpy(logits, cur, (size_t)b * nc * sizeof(float));
}

static int check_ws(const dwf_smodel *s, const dwf_sws *ws, int b, dwf_err *err)
{
    if (b < 0)
        return dwf_errorf(err, DWF_EINVAL, "batch size %d must be >= 0", b);
    int64_t act, col, pool, kmax;
    arch_needs(&s->arch, &act, &col, &pool, &kmax);
    if (!ws || act > ws->act || col > ws->col || pool > ws->pool || kmax > ws->kmax)
        return dwf_errorf(err, DWF_EINVAL, "inference buffers were made for "
                          "another model");
    return 0;
}

int dwf_smodel_forward_isa(const dwf_smodel *s, dwf_sws *ws, const float *x,
                           int b, int isa, float *logits, dwf_err *err)
{
    int rc = check_ws(s, ws, b, err);
    if (rc)
        return rc;
    if (isa < -1 || isa > 1 || sell_mv(NULL, NULL, 0, NULL, isa) == DWF_EINVAL)
        return dwf_errorf(err, DWF_EINVAL, "batch-1 kernel %d is not available "
                          "on this CPU", isa);
    size_t dim = (size_t)s->arch.in_c * s->arch.in_h * s->arch.in_w;
    size_t nc = (size_t)s->arch.n_classes;
    for (int st = 0; st < b; st += ws->max_batch) {
        int n = b - st < ws->max_batch ? b - st : ws->max_batch;
        forward_chunk(s, ws, x + (size_t)st * dim, n, logits + (size_t)st * nc,
                      isa);
    }
    return 0;
}


int dwf_smodel_forward(const dwf_smodel *s, dwf_sws *ws, const float *x,
                       int b, float *logits, dwf_err *err)
{
    return dwf_smodel_forward_isa(s, ws, x, b, -1, logits, err);
}

int dwf_smodel_predict(const dwf_smodel *s, dwf_sws *ws, const float *raw,
                       int b, int32_t *classes, float *probs, dwf_err *err)
{
    int rc = check_ws(s, ws, b, err);
    if (rc)
        return rc;
    size_t dim = (size_t)s->arch.in_c * s->arch.in_h * s->arch.in_w;
    int nc = s->arch.n_classes;
    /* the same arithmetic as dwf_dataset_batch() on byte data */
    const double mean = s->norm.mean;
    const double sd = s->norm.std != 0.0f ? s->norm.std : 1.0;
    for (int st = 0; st < b; st += ws->max_batch) {
        int n = b - st < ws->max_batch ? b - st : ws->max_batch;
        const float *src = raw + (size_t)st * dim;
        for (size_t j = 0; j < (size_t)n * dim; j++)
            ws->xin[j] = (float)(((double)src[j] - mean) / sd);
        forward_chunk(s, ws, ws->xin, n, ws->logits, -1);
        for (int i = 0; i < n; i++) {
            const float *z = ws->logits + (size_t)i * nc;
            int am = 0;
            for (int j = 1; j < nc; j++)
                if (z[j] > z[am])
                    am = j;
            classes[st + i] = am;
            if (!probs)
                continue;
            float *p = probs + (size_t)(st + i) * nc;
            double mx = z[am], sum = 0.0;
            for (int j = 0; j < nc; j++)
                sum += exp((double)z[j] - mx);
            for (int j = 0; j < nc; j++)
                p[j] = (float)(exp((double)z[j] - mx) / sum);
        }
    }
    return 0;
}

int dwf_smodel_evaluate(const dwf_smodel *s, const dwf_dataset *d,
                        double *acc, double *loss, dwf_err *err)
{
    const dwf_arch *a = &s->arch;
    int dim = a->in_c * a->in_h * a->in_w;
    if (d->dim != dim)
        return dwf_errorf(err, DWF_EINVAL, "data set has %d features, the "
                          "model wants %d", d->dim, dim);
    int rc = dwf_dataset_check_labels(d, a->n_classes, "data set", err);
    if (rc)
        return rc;
    *acc = *loss = NAN;
    if (d->n <= 0)
        return 0;
    int B = d->n < EVAL_BATCH ? d->n : EVAL_BATCH;
    dwf_sws *ws = NULL;
    rc = dwf_sws_create(s, B, &ws, err);
    if (rc)
        return rc;
    float *x = malloc((size_t)B * dim * sizeof *x);
    float *z = malloc((size_t)B * a->n_classes * sizeof *z);
    int32_t *y = malloc((size_t)B * sizeof *y);
    if (!x || !z || !y) {
        rc = dwf_errorf(err, DWF_ENOMEM, "out of memory for evaluation");
        goto done;
    }
    double sl = 0.0;
    long ok = 0;
    for (int st = 0; st < d->n; st += B) {
        int b = d->n - st < B ? d->n - st : B;
        dwf_dataset_range(d, &s->norm, st, b, x, y);
        forward_chunk(s, ws, x, b, z, -1);
        int c = 0;
        sl += dwf_softmax_xent(z, y, b, a->n_classes, NULL, &c) * b;
        ok += c;
    }
    *acc = (double)ok / d->n;
    *loss = sl / d->n;
done:
    free(x);
    free(z);
    free(y);
    dwf_sws_free(ws);
    return rc;
}

/* ---- .dwfm writer -------------------------------------------------------- */

static void put_i32(dwf_wbuf *b, int v) { dwf_wbuf_u32(b, (uint32_t)v); }
static void put_f32(dwf_wbuf *b, float v) { dwf_wbuf_bytes(b, &v, 4); }

int dwf_smodel_save(const dwf_smodel *s, uint8_t **buf, size_t *len,
                    dwf_err *err)
{
    *buf = NULL;
    *len = 0;
    const dwf_arch *a = &s->arch;
    dwf_wbuf b;
    dwf_wbuf_init(&b);
    dwf_wbuf_bytes(&b, DWFM_MAGIC, 4);
    dwf_wbuf_u32(&b, DWFM_VERSION);
    put_i32(&b, a->in_c);
    put_i32(&b, a->in_h);
    put_i32(&b, a->in_w);
    put_i32(&b, a->n_classes);
    put_i32(&b, a->depth);
    put_i32(&b, a->factorize_bias);
    put_i32(&b, a->n_layers);
    int n_weight = 0;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        const int f[13] = {(int)l->kind, l->units, l->filters, l->kernel,
                           l->stride, l->padding, l->depth, l->in_c, l->in_h,
                           l->in_w, l->out_c, l->out_h, l->out_w};
        for (int k = 0; k < 13; k++)
            put_i32(&b, f[k]);
        n_weight += dwf_layer_has_weight(l->kind);
    }
    dwf_wbuf_u32(&b, (uint32_t)s->norm.kind);
    put_f32(&b, s->norm.mean);
    put_f32(&b, s->norm.std);
    put_f32(&b, s->eps);
    dwf_wbuf_str(&b, s->spec);
    dwf_wbuf_u32(&b, (uint32_t)s->n_kv);
    for (int i = 0; i < s->n_kv; i++) {
        dwf_wbuf_str(&b, s->kv[i].key);
        dwf_wbuf_f64(&b, s->kv[i].value);
    }
    dwf_wbuf_u32(&b, (uint32_t)n_weight);
    for (int i = 0; i < a->n_layers; i++) {
        if (!dwf_layer_has_weight(a->layers[i].kind))
            continue;
        const dwf_csr *c = &s->w[i];
        dwf_wbuf_u32(&b, (uint32_t)i);
        dwf_wbuf_u32(&b, (uint32_t)c->rows);
        dwf_wbuf_u32(&b, (uint32_t)c->cols);
        dwf_wbuf_u64(&b, (uint64_t)c->nnz);
        dwf_wbuf_bytes(&b, c->indptr, ((size_t)c->rows + 1) * sizeof(int64_t));
        dwf_wbuf_bytes(&b, c->indices, (size_t)c->nnz * sizeof(int32_t));
        dwf_wbuf_f32s(&b, c->values, (size_t)c->nnz);
        dwf_wbuf_u32(&b, s->bias[i] ? (uint32_t)c->rows : 0u);
        if (s->bias[i])
            dwf_wbuf_f32s(&b, s->bias[i], (size_t)c->rows);
    }
    if (!b.failed)
        dwf_wbuf_u32(&b, dwf_crc32(b.data, b.len));
    *buf = dwf_wbuf_take(&b, len);
    if (!*buf) {
        *len = 0;
        return dwf_errorf(err, DWF_ENOMEM, "out of memory writing the model");
    }
    return 0;
}

/* ---- .dwfm reader -------------------------------------------------------- */

static int get_i32(dwf_rbuf *r) { return (int)(int32_t)dwf_rbuf_u32(r); }
static float get_f32(dwf_rbuf *r)
{
    float v = 0.0f;
    dwf_rbuf_bytes(r, &v, 4);
    return v;
}

/* A string written by dwf_wbuf_str() that holds no NUL byte. */
static int get_str(dwf_rbuf *r, char **out)
{
    size_t at = r->pos;
    if (dwf_rbuf_str(r, out))
        return -1;
    if (*out && strlen(*out) != r->pos - at - 4) {
        free(*out);
        *out = NULL;
        r->failed = 1;
        return -1;
    }
    return 0;
}

#define FMT_ERR(...) dwf_errorf(err, DWF_EFORMAT, __VA_ARGS__)

/* Bounds every field of the layer list so that resolving it cannot
 * overflow: a shape walk in 64-bit arithmetic that stops where
 * dwf_arch_resolve() itself would fail. */
static int arch_sane(const dwf_arch *a, dwf_err *err)
{
    const int64_t MAXN = (int64_t)1 << 28;
    if (a->n_layers < 1 || a->n_layers > DWF_MAX_LAYERS)
        return FMT_ERR("architecture: %d layers (want 1..%d)", a->n_layers,
                       DWF_MAX_LAYERS);
    if (a->in_c < 1 || a->in_h < 1 || a->in_w < 1 || a->in_c > MAXN ||
        a->in_h > 65536 || a->in_w > 65536 ||
        (int64_t)a->in_c * a->in_h * a->in_w > MAXN)
        return FMT_ERR("architecture: bad input shape %dx%dx%d", a->in_c,
                       a->in_h, a->in_w);
    if (a->n_classes < 2 || a->n_classes > (1 << 20))
        return FMT_ERR("architecture: bad class count %d", a->n_classes);
    if (a->factorize_bias != 0 && a->factorize_bias != 1)
        return FMT_ERR("architecture: factorize_bias is %d", a->factorize_bias);
    int64_t c = a->in_c, h = a->in_h, w = a->in_w;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        if ((int)l->kind < 0 || (int)l->kind > DWF_LAYER_FLATTEN)
            return FMT_ERR("architecture: layers[%d]: unknown kind %d", i,
                           (int)l->kind);
        if (l->units < 0 || l->units > (1 << 20) || l->filters < 0 ||
            l->filters > 65536 || l->kernel < 0 || l->kernel > 4096 ||
            l->stride < 0 || l->stride > 4096 || l->padding < 0 ||
            l->padding > 4096)
            return FMT_ERR("architecture: layers[%d]: field out of range", i);
        switch (l->kind) {
        case DWF_LAYER_DENSE:
            c = l->units;
            h = w = 1;
            break;
        case DWF_LAYER_CONV2D: {
            int64_t s = l->stride ? l->stride : 1, ph = h + 2 * l->padding,
                    pw = w + 2 * l->padding;
            if (l->kernel < 1 || l->kernel > ph || l->kernel > pw)
                return 0; /* resolve reports it */
            if (c * l->kernel * l->kernel > INT32_MAX)
                return FMT_ERR("architecture: layers[%d]: kernel too large", i);
            c = l->filters;
            h = (ph - l->kernel) / s + 1;
            w = (pw - l->kernel) / s + 1;
            break;
        }
        case DWF_LAYER_MAXPOOL2D: {
            int64_t s = l->stride ? l->stride : l->kernel;
            if (l->kernel < 1 || s < 1 || l->kernel > h || l->kernel > w)
                return 0;
            h = (h - l->kernel) / s + 1;
            w = (w - l->kernel) / s + 1;
            break;
        }
        case DWF_LAYER_RELU:
            break;
        case DWF_LAYER_FLATTEN:
            c = c * h * w;
            h = w = 1;
            break;
        }
        if (c * h * w > MAXN)
            return FMT_ERR("architecture: layers[%d]: output of %lld values is "
                           "too large", i, (long long)(c * h * w));
    }
    return 0;
}

static int read_arch(dwf_rbuf *r, dwf_arch *a, dwf_err *err)
{
    memset(a, 0, sizeof *a);
    a->in_c = get_i32(r);
    a->in_h = get_i32(r);
    a->in_w = get_i32(r);
    a->n_classes = get_i32(r);
    a->depth = get_i32(r);
    a->factorize_bias = get_i32(r);
    a->n_layers = get_i32(r);
    if (r->failed)
        return FMT_ERR("truncated in the architecture");
    if (a->n_layers < 1 || a->n_layers > DWF_MAX_LAYERS)
        return FMT_ERR("architecture: %d layers (want 1..%d)", a->n_layers,
                       DWF_MAX_LAYERS);
    for (int i = 0; i < a->n_layers; i++) {
        dwf_layer_spec *l = &a->layers[i];
        l->kind = (dwf_layer_kind)get_i32(r);
        l->units = get_i32(r);
        l->filters = get_i32(r);
        l->kernel = get_i32(r);
        l->stride = get_i32(r);
        l->padding = get_i32(r);
        l->depth = get_i32(r);
        l->in_c = get_i32(r);
        l->in_h = get_i32(r);
        l->in_w = get_i32(r);
        l->out_c = get_i32(r);
        l->out_h = get_i32(r);
        l->out_w = get_i32(r);
    }
    if (r->failed)
        return FMT_ERR("truncated in the layer list");
    int rc = arch_sane(a, err);
    if (rc)
        return rc;
    dwf_arch res = *a;
    dwf_err e2;
    if (dwf_arch_resolve(&res, &e2))
        return FMT_ERR("architecture: %s", e2.msg);
    if (memcmp(&res, a, sizeof res) != 0)
        return FMT_ERR("architecture: the stored layer shapes differ from the "
                       "resolved ones");
    return 0;
}

/* Reads the CSR of weight layer i (rows x cols) and checks its structure. */
static int read_csr(dwf_rbuf *r, dwf_csr *c, int i, int rows, int cols,
                    dwf_err *err)
{
    uint32_t rr = dwf_rbuf_u32(r), cc = dwf_rbuf_u32(r);
    uint64_t nnz = dwf_rbuf_u64(r);
    if (r->failed)
        return FMT_ERR("layers[%d]: truncated in the weight header", i);
    if (rr != (uint32_t)rows || cc != (uint32_t)cols)
        return FMT_ERR("layers[%d]: weight is %ux%u, the architecture says "
                       "%dx%d", i, rr, cc, rows, cols);
    if (nnz > (uint64_t)rows * (uint64_t)cols)
        return FMT_ERR("layers[%d]: %llu non-zeros in a %dx%d matrix", i,
                       (unsigned long long)nnz, rows, cols);
    size_t need = ((size_t)rows + 1) * 8 + (size_t)nnz * 8;
    if (need > dwf_rbuf_left(r))
        return FMT_ERR("layers[%d]: truncated in the weight arrays", i);
    if (csr_alloc(c, rows, cols, (int64_t)nnz))
        return dwf_errorf(err, DWF_ENOMEM, "layers[%d]: out of memory", i);
    dwf_rbuf_bytes(r, c->indptr, ((size_t)rows + 1) * sizeof(int64_t));
    dwf_rbuf_bytes(r, c->indices, (size_t)nnz * sizeof(int32_t));
    dwf_rbuf_f32s(r, c->values, (size_t)nnz);
    if (r->failed)
        return FMT_ERR("layers[%d]: truncated in the weight arrays", i);
    if (c->indptr[0] != 0)
        return FMT_ERR("layers[%d]: indptr[0] is %lld, not 0", i,
                       (long long)c->indptr[0]);
    for (int row = 0; row < rows; row++)
        if (c->indptr[row + 1] < c->indptr[row] || c->indptr[row + 1] > c->nnz)
            return FMT_ERR("layers[%d]: indptr[%d] = %lld is out of order", i,
                           row + 1, (long long)c->indptr[row + 1]);
    if (c->indptr[rows] != c->nnz)
        return FMT_ERR("layers[%d]: indptr ends at %lld, nnz is %lld", i,
                       (long long)c->indptr[rows], (long long)c->nnz);
    for (int row = 0; row < rows; row++) {
        for (int64_t k = c->indptr[row]; k < c->indptr[row + 1]; k++) {
            int32_t j = c->indices[k];
            if (j < 0 || j >= cols)
                return FMT_ERR("layers[%d]: column index %d out of range "
                               "0..%d (row %d)", i, (int)j, cols - 1, row);
            if (k > c->indptr[row] && j <= c->indices[k - 1])
                return FMT_ERR("layers[%d]: column indices of row %d are not "
                               "ascending", i, row);
        }
    }
    for (int64_t k = 0; k < c->nnz; k++)
        if (!isfinite(c->values[k]))
            return FMT_ERR("layers[%d]: weight value %lld is not finite", i,
                           (long long)k);
    return 0;
}

static int parse(dwf_smodel *s, const uint8_t *buf, size_t len, dwf_err *err)
{
    if (len < 12)
        return FMT_ERR("%zu bytes: too short for a model file", len);
    if (memcmp(buf, DWFM_MAGIC, 4) != 0)
        return FMT_ERR("bad magic: not a dwf model (.dwfm) file");
    dwf_rbuf r;
    dwf_rbuf_init(&r, buf, len - 4);
    r.pos = 4;
    uint32_t version = dwf_rbuf_u32(&r);
    if (version != DWFM_VERSION)
        return FMT_ERR("unsupported model file version %u (this build reads "
                       "version %u)", version, DWFM_VERSION);
    uint32_t crc;
    memcpy(&crc, buf + len - 4, 4);
    uint32_t actual = dwf_crc32(buf, len - 4);
    if (crc != actual)
        return FMT_ERR("CRC-32 mismatch (stored %08x, computed %08x): the "
                       "file is corrupted or truncated", crc, actual);
    int rc = read_arch(&r, &s->arch, err);
    if (rc)
        return rc;
    const dwf_arch *a = &s->arch;
    uint32_t nk = dwf_rbuf_u32(&r);
    s->norm.kind = (dwf_norm_kind)nk;
    s->norm.mean = get_f32(&r);
    s->norm.std = get_f32(&r);
    s->eps = get_f32(&r);
    if (r.failed)
        return FMT_ERR("truncated in the normalization");
    if (nk > DWF_NORM_NONE || !isfinite(s->norm.mean) || !isfinite(s->norm.std))
        return FMT_ERR("bad normalization (kind %u, mean %g, std %g)", nk,
                       (double)s->norm.mean, (double)s->norm.std);
    if (!isfinite(s->eps) || s->eps < 0.0f)
        return FMT_ERR("bad threshold %g", (double)s->eps);
    if (get_str(&r, &s->spec))
        return FMT_ERR("bad or truncated spec text");
    uint32_t n_kv = dwf_rbuf_u32(&r);
    if (r.failed)
        return FMT_ERR("truncated before the metrics");
    if (n_kv > DWFM_MAX_KV || (size_t)n_kv * 13 > dwf_rbuf_left(&r))
        return FMT_ERR("bad metric count %u", n_kv);
    if (n_kv > 0) {
        s->kv = calloc(n_kv, sizeof *s->kv);
        if (!s->kv)
            return dwf_errorf(err, DWF_ENOMEM, "out of memory for the metrics");
    }
    for (uint32_t i = 0; i < n_kv; i++) {
        char *key = NULL;
        if (get_str(&r, &key) || !key)
            return FMT_ERR("metrics[%u]: bad or truncated key", i);
        size_t kl = strlen(key);
        int printable = 1;
        for (size_t k = 0; k < kl; k++)
            printable &= key[k] >= 0x20 && key[k] <= 0x7e;
        if (kl >= DWF_KEY_LEN || !printable) {
            free(key);
            return FMT_ERR("metrics[%u]: key must be at most %d printable "
                           "ASCII characters", i, DWF_KEY_LEN - 1);
        }
        memcpy(s->kv[i].key, key, kl + 1);
        free(key);
        s->kv[i].value = dwf_rbuf_f64(&r);
        s->n_kv = (int)i + 1;
    }
    uint32_t n_weight = dwf_rbuf_u32(&r);
    if (r.failed)
        return FMT_ERR("truncated in the metrics");
    uint32_t want = 0;
    for (int i = 0; i < a->n_layers; i++)
        want += (uint32_t)dwf_layer_has_weight(a->layers[i].kind);
    if (n_weight != want)
        return FMT_ERR("%u weight layers stored, the architecture has %u",
                       n_weight, want);
    for (int i = 0; i < a->n_layers; i++) {
        if (!dwf_layer_has_weight(a->layers[i].kind))
            continue;
        uint32_t idx = dwf_rbuf_u32(&r);
        if (r.failed)
            return FMT_ERR("layers[%d]: truncated", i);
        if (idx != (uint32_t)i)
            return FMT_ERR("weight block for layer %u where layer %d was "
                           "expected", idx, i);
        int rows, cols;
        layer_dims(a, i, &rows, &cols);
        rc = read_csr(&r, &s->w[i], i, rows, cols, err);
        if (rc)
            return rc;
        uint32_t nb = dwf_rbuf_u32(&r);
        if (r.failed)
            return FMT_ERR("layers[%d]: truncated before the bias", i);
        if (nb != 0 && nb != (uint32_t)rows)
            return FMT_ERR("layers[%d]: bias has %u entries, want %d", i, nb, rows);
        if (nb) {
            if ((size_t)nb * 4 > dwf_rbuf_left(&r))
                return FMT_ERR("layers[%d]: truncated in the bias", i);
            s->bias[i] = malloc((size_t)nb * sizeof(float));
            if (!s->bias[i])
                return dwf_errorf(err, DWF_ENOMEM, "out of memory");
            dwf_rbuf_f32s(&r, s->bias[i], nb);
            for (uint32_t k = 0; k < nb; k++)
                if (!isfinite(s->bias[i][k]))
                    return FMT_ERR("layers[%d]: bias %u is not finite", i, k);
        }
    }
    if (r.failed)
        return FMT_ERR("truncated in the weights");
    if (dwf_rbuf_left(&r) != 0)
        return FMT_ERR("%zu unexpected bytes after the last layer",
                       dwf_rbuf_left(&r));
    return dwf_smodel_set_crossover(s, DWF_SPARSE_CROSSOVER, err);
}

int dwf_smodel_load(dwf_smodel *s, const uint8_t *buf, size_t len,
                    dwf_err *err)
{
    memset(s, 0, sizeof *s);
    int rc = parse(s, buf, len, err);
    if (rc)
        dwf_smodel_free(s);
    return rc;
}

int dwf_smodel_write_file(const dwf_smodel *s, const char *path, dwf_err *err)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = dwf_smodel_save(s, &buf, &len, err);
    if (rc)
        return rc;
    /* a regular file is replaced atomically (written next to it, then
     * renamed); anything else (a device, a pipe) is written in place */
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        FILE *f = fopen(path, "wb");
        if (!f)
            rc = dwf_errorf(err, DWF_EIO, "%s: cannot open: %s", path,
                            strerror(errno));
        else {
            int bad = fwrite(buf, 1, len, f) != len;
            bad |= fclose(f) != 0; /* closed even after a failed write */
            if (bad)
                rc = dwf_errorf(err, DWF_EIO, "%s: write failed: %s", path,
                                strerror(errno));
        }
        free(buf);
        return rc;
    }
    size_t pl = strlen(path) + 32;
    char *tmp = malloc(pl);
    if (!tmp) {
        free(buf);
        return dwf_errorf(err, DWF_ENOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, pl, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        rc = dwf_errorf(err, DWF_EIO, "%s: cannot create: %s", path,
                        strerror(errno));
        goto done;
    }
    int bad = fwrite(buf, 1, len, f) != len;
    int e1 = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e1 = errno;
    }
    if (bad) {
        unlink(tmp);
        rc = dwf_errorf(err, DWF_EIO, "%s: write failed: %s", path, strerror(e1));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        e1 = errno;
        unlink(tmp);
        rc = dwf_errorf(err, DWF_EIO, "%s: cannot replace: %s", path,
                        strerror(e1));
    }
done:
    free(tmp);
    free(buf);
    return rc;
}

int dwf_smodel_read_file(dwf_smodel *s, const char *path, dwf_err *err)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    if (!f)
        return dwf_errorf(err, DWF_EIO, "%s: cannot open: %s", path,
                          strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 1 << 16;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                rc = dwf_errorf(err, DWF_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                rc = dwf_errorf(err, DWF_EIO, "%s: read failed: %s", path,
                                strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!rc) {
        dwf_err e2;
        rc = dwf_smodel_load(s, buf, len, &e2);
        if (rc)
            dwf_errorf(err, rc, "%s: %s", path, e2.msg);
    }
    free(buf);
    return rc;
}
