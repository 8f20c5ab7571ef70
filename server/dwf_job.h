/*
 * dwf_job.h - running one job spec end to end: load its data, build the
 * trainer, resume from a checkpoint when given one, train with hooks for
 * metrics, progress and checkpoints, and build the sparse model.
 *
 * Shared by `dwf train` and dwfd's workers, so both train the same way.
 * At the end of every job the threshold curve of the collapsed model is
 * computed (dwf_thresh.h); with the spec's `select`, the stored model is
 * the one at the selected threshold (chosen on validation accuracy).
 * The caller owns the spec and receives a dwf_smodel it must free with
 * dwf_smodel_free(). Hooks run on the training thread.
 */
#ifndef DWF_JOB_H
#define DWF_JOB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dwf_sparse.h"
#include "dwf_spec.h"
#include "dwf_thresh.h"
#include "dwf_train.h"

/* What a job learned beyond the model: its threshold curve and, with the
 * spec's `select`, the selected point. Free with dwf_job_result_free(). */
typedef struct dwf_job_result {
    dwf_thresh_curve curve;        /* owned; n = 0 when not computed */
    double epoch_seconds;          /* the last training epoch's time */
    int selected;                  /* 1 when select chose the model */
    int select_index;              /* into curve.points */
    int select_within;             /* 0: no point within max_drop (eps model) */
    double dense_val_acc;          /* reference for max_drop */
    double threshold, cr, val_acc, test_acc; /* the stored model's */
    double eps_cr, eps_test_acc;   /* the eps model's (before selection) */
    int collapsed;                 /* 1: the dense model's validation (else
                                      test) accuracy is at or below chance
                                      (dwf_thresh_chance, margin 0.02): it
                                      learned nothing */
} dwf_job_result;

void dwf_job_result_free(dwf_job_result *r);

/* The curve's points as a new JSON array of objects {"threshold", "cr",
 * "weights", "nonzero", "layers": [{"layer", "name", "weights",
 * "nonzero"}...], "val_acc", "test_acc"} (non-finite numbers as null), the
 * selected point (r->selected) marked "selected": true. NULL when out of
 * memory. arch names the layers. */
json_t *dwf_job_curve_json(const dwf_job_result *r, const dwf_arch *arch);

typedef struct dwf_job_hooks {
    void *ud;
    /* After each epoch; non-zero return stops the run (as a cancel). */
    int (*on_epoch)(const dwf_metrics *m, void *ud);
    /* After each batch (may be NULL). */
    void (*on_batch)(int epoch, int batch, int n_batches, void *ud);
    /* A checkpoint of the whole training state (may be NULL). Called every
     * checkpoint_every epochs and once more when the run is canceled, so
     * that it can resume. Non-zero return is an error that fails the job. */
    int (*on_checkpoint)(const uint8_t *buf, size_t len, int epoch,
                         int64_t step, void *ud);
    /* With the spec's thresholds.every = k: the threshold curve of the
     * current model after every k-th epoch but the last (rows as from
     * dwf_job_curve_json, borrowed). May be NULL. Non-zero return is an
     * error that fails the job. */
    int (*on_curve)(int epoch, const json_t *rows, void *ud);
    const atomic_int *cancel;      /* may be NULL */
    const uint8_t *resume;         /* checkpoint to resume from, or NULL */
    size_t resume_len;
    int checkpoint_every;          /* epochs; 0 = never (except on cancel) */
    dwf_job_result *result;        /* out, may be NULL: filled on success
                                      (zeroed first; caller frees) */
} dwf_job_hooks;

/* Runs spec to completion. On success fills *model (sparse model with the
 * spec text and final metrics; with select, the selected model, whose
 * metrics then also hold selected_threshold, selected_cr, selected_val_acc,
 * selected_test_acc, dense_val_acc and eps_cr / eps_sparse_test_acc) and
 * *final (last epoch's metrics; with select, its counts, CR and sparse
 * accuracies and loss are the selected model's, like the file's).
 * Returns DWF_ECANCELED when stopped (after the cancel checkpoint). */
int dwf_job_run(dwf_spec *spec, const dwf_job_hooks *hooks, dwf_smodel *model,
                dwf_metrics *final, dwf_err *err);

/* Sets the BLAS thread count of this process (OpenBLAS keeps it global);
 * front ends call it, never the library. */
void dwf_blas_threads(int n);

#endif
