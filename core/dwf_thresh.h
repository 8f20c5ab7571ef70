/*
 * dwf_thresh.h - threshold curves and tolerance-based selection.
 *
 * One finished run holds a whole accuracy-CR curve: its collapsed weights
 * cut at growing magnitude thresholds. dwf_thresh_curve_compute() evaluates
 * a sparse model (built at the spec's prune.eps) at a log-spaced grid of
 * thresholds from its eps upward, with the sparse kernels, until accuracy
 * falls to chance or every weight is zero (points whose model equals the
 * previous one are not evaluated again). dwf_thresh_select() picks the
 * largest threshold whose validation accuracy stays within a tolerance of
 * the dense model's; it never looks at test accuracy.
 *
 * Cost (issue 6). For multi-layer perceptrons (dense, relu and flatten
 * layers) the curve is not a from-scratch evaluation per point: the
 * first layer's pre-activations are computed once and then updated as
 * weights drop out between thresholds, and the later layers are
 * recomputed only for samples whose prediction a rigorous bound on the
 * change cannot certify (dwf_thresh.c explains the method). Samples whose
 * top two logits are close enough for float32 rounding to decide between
 * them (within 16 standard deviations of the probabilistic rounding model)
 * get the reference's own logits: its products layer by layer where its
 * kernels are batch-invariant (dwf_smodel_batch_invariant), else
 * dwf_smodel_forward() in a batch of the size and at the position
 * dwf_smodel_evaluate() gives them. At the sparse end, once that is
 * cheaper, every sample gets the reference's products (the model without
 * the hidden units nothing reads). So every point's
 * accuracies are those of dwf_smodel_evaluate() on the model
 * dwf_smodel_rethreshold() makes at its threshold (point 0: the model),
 * sample by sample - tests/check_thresh.c checks it bit for bit. Other
 * architectures are evaluated from scratch at every distinct model. The
 * result does not depend on opts->threads, nor on opts->layer0 (any float
 * summation order of the first layer is within the rounding accounted
 * for), which saves the first model's pass over the data when the
 * caller's evaluation has already made it.
 *
 * A dwf_thresh_curve owns its points array; free it with
 * dwf_thresh_curve_free(). The data sets and the model are borrowed.
 */
#ifndef DWF_THRESH_H
#define DWF_THRESH_H

#include <stdint.h>

#include "dwf_arch.h"
#include "dwf_data.h"
#include "dwf_err.h"
#include "dwf_sparse.h"

typedef struct dwf_thresh_point {
    double threshold;        /* weights with |w| < threshold set to zero
                                (biases stay as in the eps model) */
    double cr;               /* weights / non-zero weights (inf when none) */
    int64_t weights;
    int64_t nonzero;
    int64_t layer_nonzero[DWF_MAX_LAYERS]; /* by layer index; 0 if no weight */
    int64_t layer_weights[DWF_MAX_LAYERS];
    double val_acc;          /* NaN without validation data */
    double test_acc;         /* NaN without test data */
} dwf_thresh_point;

/* How a curve was computed (for benchmarks and tests). */
typedef struct dwf_thresh_stats {
    int incremental;         /* 1 = the incremental MLP path, 0 = from scratch */
    int models;              /* distinct models evaluated (incl. beyond the stop) */
    int64_t samples;         /* sample x model evaluations */
    int64_t recomputed;      /* ... whose later layers were recomputed */
    int64_t exact;           /* ... evaluated by the reference forward on
                                whole blocks (the sparse end of the curve) */
    int64_t given;           /* samples whose first model took every layer's
                                outputs from opts (layer0 and later) */
    int64_t reference;       /* ... run through dwf_smodel_forward (near ties) */
    int64_t reference_batch; /* samples those reference batches held in all */
} dwf_thresh_stats;

typedef struct dwf_thresh_curve {
    int n;
    dwf_thresh_point *points; /* ascending threshold; points[0] at the model's eps */
    double seconds;           /* wall time spent computing the curve */
    dwf_thresh_stats stats;
} dwf_thresh_curve;

typedef struct dwf_thresh_opts {
    int per_decade;          /* grid points per factor 10 (default 4) */
    int max_points;          /* cap (default 64) */
    double chance_margin;    /* stop when acc <= 1/n_classes + margin (0.02) */
    int threads;             /* threads to use, 1..DWF_MAX_THREADS (default 1);
                                the result does not depend on it */
    int from_scratch;        /* 1: evaluate every changed model from scratch
                                with dwf_smodel_evaluate (the reference; for
                                tests and benchmarks), 0 (default): incremental */
    int portable;            /* 1: portable C kernels even where AVX-512 is
                                there (for tests), 0 (default): the fastest */
    int no_exact_end;        /* 1: certify every model, even where running
                                the reference forward on every sample
                                costs less (for tests), 0 (default) */
    const float *layer0[2];  /* optional (NULL: computed here): the first
                                layer's outputs (bias + W x, before the
                                activation) of the model itself on val [0]
                                and test [1], sample-major (n x units),
                                computed in float32 by an evaluation of the
                                same weights (dwf_trainer_layer0). The
                                incremental path starts from them instead of
                                computing them again. Borrowed. */
    const float *later[2][DWF_MAX_LAYERS]; /* optional: of the same
                                evaluation, the outputs of the later dense
                                layers of an MLP (later[k][j - 1]: the j-th
                                dense layer's, before its activation; the
                                last: the logits), sample-major; used with
                                layer0 when every later layer's is there
                                (dwf_trainer_layer_out). Borrowed. */
} dwf_thresh_opts;

/* Default options (4 per decade, 64 points, margin 0.02, 1 thread,
 * incremental). */
void dwf_thresh_opts_default(dwf_thresh_opts *o);

/* Chance level of data set d (may be NULL) for telling a model that
 * learned nothing: max(1 / n_classes, the share of its most frequent
 * label - what a constant prediction scores), plus margin. (The curve's
 * stopping rule uses 1 / n_classes + margin: it may run a few points past
 * a constant predictor of unbalanced data.) */
double dwf_thresh_chance(const dwf_dataset *d, int n_classes, double margin);

/* Evaluates s at thresholds s->eps * 10^(k / per_decade), k = 0, 1, ...
 * (the first at s->eps, or at float epsilon when s->eps is 0) on val and
 * test (either may be NULL or empty), stopping after the first point where
 * the stopping accuracy (validation when given, else test) is at or below
 * chance, or every weight is zero, or max_points. opts may be NULL. */
int dwf_thresh_curve_compute(const dwf_smodel *s, const dwf_dataset *val,
                             const dwf_dataset *test, const dwf_thresh_opts *opts,
                             dwf_thresh_curve *out, dwf_err *err);
void dwf_thresh_curve_free(dwf_thresh_curve *c);

/* Picks the point with the largest threshold whose val_acc >=
 * dense_val_acc - max_drop and which keeps a weight (a point without any
 * predicts from its biases alone), looking at validation accuracy only. *index
 * receives it; when no point qualifies it is 0 (the eps model) and *within
 * (may be NULL) is 0, else 1. DWF_EINVAL when the curve is empty, has no
 * validation accuracy, or dense_val_acc / max_drop are not finite. */
int dwf_thresh_select(const dwf_thresh_curve *c, double dense_val_acc,
                      double max_drop, int *index, int *within, dwf_err *err);

#endif
