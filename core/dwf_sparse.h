/*
 * dwf_sparse.h - the sparse model: collapsed, thresholded weights in CSR
 * form per layer, sparse inference, and the .dwfm model file.
 *
 * A dwf_smodel owns all its arrays (CSR parts, dense copies chosen for
 * dense-enough layers, batch-1 copies of sparse ones, biases, spec text,
 * metrics); free it with dwf_smodel_free(). Inference scratch lives in a
 * dwf_sws made per thread.
 *
 * Weight layout follows PyTorch: a dense weight is out x in, a conv kernel
 * out_c x (in_c * k * k) in (c, kh, kw) order; CSR rows are output units.
 */
#ifndef DWF_SPARSE_H
#define DWF_SPARSE_H

#include <stdint.h>
#include <stddef.h>

#include "dwf_arch.h"
#include "dwf_data.h"
#include "dwf_err.h"
#include "dwf_model.h"

typedef struct dwf_csr {
    int rows, cols;
    int64_t nnz;
    int64_t *indptr;   /* rows + 1 */
    int32_t *indices;  /* nnz column indices, ascending in each row */
    float *values;     /* nnz */
} dwf_csr;

/* Builds a CSR of the entries of dense (rows x cols) with |v| >= eps. */
int dwf_csr_from_dense(dwf_csr *c, const float *dense, int rows, int cols,
                       float eps, dwf_err *err);
void dwf_csr_free(dwf_csr *c);
/* Y (rows x n) = W' X + bias (per row; may be NULL) with a dense W (rows x
 * cols, row-major) whose entries below cut in magnitude count as zeros (W'),
 * X (cols x n): where dwf_smodel_batch_invariant(), the product
 * dwf_smodel_forward computes for the layer of W rethresholded at cut, bit
 * for bit, for any n (finite inputs). */
void dwf_dense_matmul_cut(const float *W, int rows, int cols, float cut, const float *x,
                          int n, const float *bias, float *y);

/* Y (rows x n) = C X + bias (per row; may be NULL) with X (cols x n),
 * row-major: the product dwf_smodel_forward computes for a sparse layer,
 * bit for bit (where dwf_smodel_batch_invariant(), the same for any n). */
void dwf_csr_matmul(const dwf_csr *c, const float *x, int n, const float *bias,
                    float *y);

#define DWF_KEY_LEN 40

typedef struct dwf_kv {
    char key[DWF_KEY_LEN];
    double value;
} dwf_kv;

/* A layer is run with its sparse kernels unless its density is above this
 * share of non-zeros, where the dense sgemm / sgemv path is faster. On a
 * 784 -> 300 layer (bench/bench_sparse.c, bench/README.md) the kernels
 * cross at a density of about 0.35-0.4 at batch 128 and, with AVX-512,
 * about 0.5-0.7 at batch 1 (0.2-0.25 with AVX2 only); 0.30 keeps the
 * batched path, where most of the work is, on the faster side. */
#define DWF_SPARSE_CROSSOVER 0.30

typedef struct dwf_smodel {
    dwf_arch arch;                     /* resolved */
    dwf_norm norm;                     /* input normalization */
    float eps;                         /* threshold used */
    dwf_csr w[DWF_MAX_LAYERS];         /* weight layers only */
    float *dense[DWF_MAX_LAYERS];      /* dense copy when density > crossover */
    struct dwf_sell *sell[DWF_MAX_LAYERS]; /* private batch-1 layout of sparse
                                            * dense-kind layers (a sliced-ELL
                                            * copy of w[i]), or NULL */
    float *bias[DWF_MAX_LAYERS];       /* thresholded biases (NULL if none) */
    char *spec;                        /* opaque spec text or NULL */
    int n_kv;
    dwf_kv *kv;                        /* metrics */
} dwf_smodel;

/* Collapses m's weights, thresholds them at eps and builds *out. The spec
 * text (may be NULL) and metrics kv[0..n_kv) are copied. */
int dwf_smodel_from_model(const dwf_model *m, const dwf_norm *norm, float eps,
                          const char *spec, const dwf_kv *kv, int n_kv,
                          dwf_smodel *out, dwf_err *err);
void dwf_smodel_free(dwf_smodel *s);

/* A new model *out holding src's weights with |w| >= eps, eps >= src->eps
 * (out->eps = eps), at O(nnz) cost; biases are copied as they are in src
 * (cut at src->eps): the weights are what a threshold curve and CR are
 * about. With zero biases (or none) this is the model dwf_smodel_from_model
 * builds at eps. The spec text is copied; metrics are kv[0..n_kv) or,
 * with kv NULL, src's. */
int dwf_smodel_rethreshold(const dwf_smodel *src, float eps, const dwf_kv *kv,
                           int n_kv, dwf_smodel *out, dwf_err *err);

/* Non-zero weights, total weights, and the same with biases. */
void dwf_smodel_counts(const dwf_smodel *s, int64_t *weights, int64_t *nonzero,
                       int64_t *params, int64_t *params_nonzero);

/* Chooses per layer between CSR and dense kernels with crossover density
 * (use DWF_SPARSE_CROSSOVER; 0 forces dense everywhere, > 1 sparse
 * everywhere) and builds the in-memory copies the chosen kernels use.
 * Called by from_model, rethreshold and load with the default. */
int dwf_smodel_set_crossover(dwf_smodel *s, double crossover, dwf_err *err);

typedef struct dwf_sws dwf_sws;
int dwf_sws_create(const dwf_smodel *s, int max_batch, dwf_sws **out,
                   dwf_err *err);
void dwf_sws_free(dwf_sws *ws);

/* Logits (b x n_classes) of b normalized inputs x (b x input dim). */
int dwf_smodel_forward(const dwf_smodel *s, dwf_sws *ws, const float *x,
                       int b, float *logits, dwf_err *err);

/* The same with the batch-1 sparse kernel and the dense kernel chosen by
 * isa (0 portable C and cblas_sgemm / sgemv, 1 AVX2 and FMA, -1 the best
 * the CPU has - AVX-512 for dense and sparse layers where it is there (at
 * batch 1 the block layout of the first sparse layer of a chain) - which
 * dwf_smodel_forward uses), for tests and benchmarks; DWF_EINVAL if the
 * CPU lacks it. The AVX2 and AVX-512 kernels give the same bits. */
int dwf_smodel_forward_isa(const dwf_smodel *s, dwf_sws *ws, const float *x,
                           int b, int isa, float *logits, dwf_err *err);

/* 1 when a sample's logits are the same in every batch of two or more
 * samples, whatever the others and its position (CPUs with AVX2 and FMA:
 * the dense and the sparse kernels both make each entry bias + its row's
 * products summed in column order by fused multiply-adds, so that running
 * a layer dense or sparse does not change it either). A batch of one may
 * differ where a layer runs dense (sgemv). */
int dwf_smodel_batch_invariant(void);

/* dst (c x r) = src (r x c) transposed (AVX2 8x8 blocks where the CPU
 * has them): the layout change of the dense-layer kernels. */
void dwf_transpose(const float *src, int64_t r, int64_t c, float *dst);

/* Argmax classes and softmax probabilities (probs may be NULL, else
 * b x n_classes) of raw inputs (normalized here with s->norm). */
int dwf_smodel_predict(const dwf_smodel *s, dwf_sws *ws, const float *raw,
                       int b, int32_t *classes, float *probs, dwf_err *err);

/* Accuracy and mean loss on a data set. */
int dwf_smodel_evaluate(const dwf_smodel *s, const dwf_dataset *d,
                        double *acc, double *loss, dwf_err *err);

/* The .dwfm file format (documented in README.md): serialize to a new
 * malloc'd buffer, parse from bytes, and file helpers. */
int dwf_smodel_save(const dwf_smodel *s, uint8_t **buf, size_t *len,
                    dwf_err *err);
int dwf_smodel_load(dwf_smodel *s, const uint8_t *buf, size_t len,
                    dwf_err *err);
int dwf_smodel_write_file(const dwf_smodel *s, const char *path, dwf_err *err);
int dwf_smodel_read_file(dwf_smodel *s, const char *path, dwf_err *err);

/* Metric value by key (NAN when absent). */
double dwf_smodel_metric(const dwf_smodel *s, const char *key);

#endif
