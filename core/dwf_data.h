/*
 * dwf_data.h - labelled data sets: IDX (raw or .gz) and CSV readers,
 * subsets and splits, normalization and mini-batch assembly.
 *
 * A dwf_dataset owns its sample and label arrays; free it with
 * dwf_dataset_free(). Images read from IDX stay uint8 (x_u8, one byte per
 * feature) until dwf_dataset_batch() turns a batch into float32; CSV
 * features are float32 (x_f32). Exactly one of x_u8 / x_f32 is non-NULL.
 * Readers never return a partial data set: any malformed input is an error
 * whose message names the file and the problem.
 */
#ifndef DWF_DATA_H
#define DWF_DATA_H

#include <stdint.h>

#include "dwf_err.h"
#include "dwf_rng.h"

typedef struct dwf_dataset {
    int n;           /* number of samples */
    int c, h, w;     /* per-sample shape; flat data has c = dim, h = w = 1 */
    int dim;         /* features per sample = c * h * w */
    int n_classes;   /* labels lie in [0, n_classes) */
    uint8_t *x_u8;   /* n * dim bytes, or NULL */
    float *x_f32;    /* n * dim floats, or NULL */
    int32_t *y;      /* n labels */
} dwf_dataset;

typedef enum dwf_norm_kind {
    DWF_NORM_SCALE = 0,   /* uint8: x / 255; float: unchanged */
    DWF_NORM_STANDARDIZE, /* (x - mean) / std with the training set's stats */
    DWF_NORM_NONE,        /* raw values */
} dwf_norm_kind;

/* How raw features become network inputs: x' = (x - mean) / std for every
 * feature. dwf_norm_fit() sets mean/std from the training set (SCALE on
 * uint8 data: 0 and 255; SCALE on float data and NONE: 0 and 1;
 * STANDARDIZE: the data's mean and std over all features), and the same
 * values are reused for every other split and stored with the model. */
typedef struct dwf_norm {
    dwf_norm_kind kind;
    float mean, std;
} dwf_norm;

/* Reads an IDX image file (magic 0x00000803, 3 dims, uint8) and an IDX
 * label file (magic 0x00000801, uint8) into *out. Either may be gzipped
 * (detected by content, not by name). n_classes is max label + 1, but at
 * least min_classes (pass 0 for none). Fails if a file is missing, has a
 * wrong magic, is truncated or too long, or the counts disagree. */
int dwf_idx_load(const char *images_path, const char *labels_path,
                 int min_classes, dwf_dataset *out, dwf_err *err);

/* Reads a CSV file: one sample a line, label_col (0-based; -1 = last
 * column) holds an integer class label >= 0, every other column a number.
 * A first line whose label field is not an integer is taken as a header.
 * Empty lines at the end are ignored. A row of the wrong width, a
 * non-numeric field or a negative label is an error naming file and line. */
int dwf_csv_load(const char *path, int label_col, dwf_dataset *out,
                 dwf_err *err);

/* Checks that every label is < n_classes (names `what` in the error). */
int dwf_dataset_check_labels(const dwf_dataset *d, int n_classes,
                             const char *what, dwf_err *err);

void dwf_dataset_free(dwf_dataset *d);

/* Copies samples idx[0..n) of src into a new data set *out. */
int dwf_dataset_take(const dwf_dataset *src, const int *idx, int n,
                     dwf_dataset *out, dwf_err *err);

/* First n samples (all when n <= 0 or n >= src->n) as a new data set. */
int dwf_dataset_head(const dwf_dataset *src, int n, dwf_dataset *out,
                     dwf_err *err);

/* Splits src at random (seeded) into train (n - n_val) and val (n_val). */
int dwf_dataset_split(const dwf_dataset *src, int n_val, uint64_t seed,
                      dwf_dataset *train, dwf_dataset *val, dwf_err *err);

/* Fits norm (of the given kind) on d, as described at dwf_norm. */
void dwf_norm_fit(dwf_norm *norm, dwf_norm_kind kind, const dwf_dataset *d);

/* Writes samples idx[0..b) as normalized float32 rows into x (b * dim) and
 * their labels into y (may be NULL). */
void dwf_dataset_batch(const dwf_dataset *d, const dwf_norm *norm,
                       const int *idx, int b, float *x, int32_t *y);

/* Same for the contiguous samples [start, start + b). */
void dwf_dataset_range(const dwf_dataset *d, const dwf_norm *norm, int start,
                       int b, float *x, int32_t *y);

#endif
