/*
 * dwf_train.h - the training loop: options, per-epoch metrics, the trainer
 * object, cancellation and checkpoints.
 *
 * A dwf_trainer owns its model, optimizer, scratch buffers and RNG; it
 * borrows the data sets (which must outlive it). Free with
 * dwf_trainer_free(). Many trainers may run at once in different threads:
 * there is no shared mutable state. With threads = 1 a run is
 * deterministic for its seed, and a run restored from a checkpoint
 * continues bit-identically.
 */
#ifndef DWF_TRAIN_H
#define DWF_TRAIN_H

#include <stdatomic.h>
#include <stdint.h>

#include "dwf_arch.h"
#include "dwf_data.h"
#include "dwf_err.h"
#include "dwf_model.h"
#include "dwf_optim.h"
#include "dwf_param.h"

#define DWF_EPS_F32 1.1920928955078125e-07

typedef enum dwf_method {
    DWF_METHOD_DWF = 0,   /* factorized training, threshold at eps_prune */
    DWF_METHOD_MAGNITUDE, /* dense training, then global magnitude pruning */
    DWF_METHOD_GRADUAL,   /* gradual magnitude pruning (Zhu & Gupta) */
    DWF_METHOD_RANDOM,    /* random mask at init (per layer uniform) */
    DWF_METHOD_SNIP,      /* SNIP mask at init */
    DWF_METHOD_SYNFLOW,   /* iterative SynFlow mask at init */
} dwf_method;

const char *dwf_method_name(dwf_method m);
int dwf_method_parse(const char *name); /* -1 when unknown */

typedef struct dwf_train_opts {
    uint64_t seed;
    int epochs;
    int batch_size;
    double lambda;          /* penalty strength */
    dwf_init_kind init;
    double eps_init;        /* DWF init lower truncation (x sigma) */
    double eps_prune;       /* |w| < eps_prune is zero in the sparse model */
    dwf_optim_opts optim;
    int threads;            /* batch slices trained in parallel (1..8) */
    dwf_norm_kind norm;
    /* pruning baselines */
    dwf_method method;
    double target_cr;       /* magnitude/gradual/random/snip/synflow */
    int finetune_epochs;    /* magnitude: epochs with the mask fixed */
    double prune_start;     /* gradual: epoch pruning starts */
    double prune_end;       /* gradual: epoch it reaches target_cr */
    int prune_every;        /* gradual: steps between mask updates */
    int snip_batches;       /* snip: batches the scores are summed over */
    int synflow_rounds;     /* synflow: pruning rounds */
} dwf_train_opts;

/* Fills o with the documented defaults (those of schema/job.schema.json). */
void dwf_train_opts_default(dwf_train_opts *o);

#define DWF_NAME_LEN 32

typedef struct dwf_layer_count {
    char name[DWF_NAME_LEN]; /* "dense0", "conv1", ... */
    int64_t total;           /* weights of the layer */
    int64_t nonzero;         /* |w| >= eps_prune */
    int64_t bias_total;
    int64_t bias_nonzero;
} dwf_layer_count;

typedef struct dwf_metrics {
    int epoch;               /* 1-based epoch just finished */
    int epochs;              /* total planned */
    int64_t step;            /* optimizer steps so far */
    double lr;               /* learning rate of the last step */
    double train_loss;       /* mean data (cross-entropy) loss */
    double train_penalty;    /* mean penalty term */
    double train_acc;
    double test_loss;        /* dense collapsed model */
    double test_acc;
    double sparse_test_acc;  /* thresholded sparse model */
    double sparse_test_loss;
    double val_loss;         /* NaN without a validation split */
    double val_acc;
    double sparse_val_acc;
    int64_t weights;         /* factorized (weight) entries */
    int64_t nonzero;         /* non-zero collapsed weights */
    int64_t params;          /* weights + biases */
    int64_t params_nonzero;
    double cr;               /* weights / nonzero */
    double cr_params;        /* params / params_nonzero */
    int n_layers;            /* weight layers */
    dwf_layer_count layers[DWF_MAX_LAYERS];
    double samples_per_sec;  /* training throughput of this epoch */
    double epoch_time;       /* seconds of this epoch (train + eval) */
    double wall_time;        /* seconds since the run started (incl. restored time) */
} dwf_metrics;

/* Called after every epoch; return non-zero to stop the run (then
 * dwf_trainer_run returns DWF_ECANCELED). */
typedef int (*dwf_epoch_fn)(const dwf_metrics *m, void *ud);
/* Called after every batch with progress inside the epoch. */
typedef void (*dwf_batch_fn)(int epoch, int batch, int n_batches, void *ud);

typedef struct dwf_trainer dwf_trainer;

/* Builds model, optimizer and batches for arch and opts. test and val may
 * be NULL. The data sets are borrowed. Initializes the parameters from the
 * seed (and, for mask-at-init methods, computes the mask). */
int dwf_trainer_create(const dwf_arch *arch, const dwf_train_opts *opts,
                       const dwf_dataset *train, const dwf_dataset *val,
                       const dwf_dataset *test, dwf_trainer **out,
                       dwf_err *err);
void dwf_trainer_free(dwf_trainer *t);

/* Trains from the current state to opts->epochs. cancel (may be NULL) is
 * read before every batch: when it becomes non-zero the run stops within
 * one batch and returns DWF_ECANCELED, leaving a consistent state that can
 * be checkpointed. A non-finite loss returns DWF_ENUMERIC. */
int dwf_trainer_run(dwf_trainer *t, dwf_epoch_fn on_epoch,
                    dwf_batch_fn on_batch, void *ud,
                    const atomic_int *cancel, dwf_err *err);

/* True when every epoch has been trained. */
int dwf_trainer_done(const dwf_trainer *t);
int dwf_trainer_epoch(const dwf_trainer *t);   /* epochs completed */
int64_t dwf_trainer_step(const dwf_trainer *t);
dwf_model *dwf_trainer_model(dwf_trainer *t);
const dwf_train_opts *dwf_trainer_opts(const dwf_trainer *t);
const dwf_norm *dwf_trainer_norm(const dwf_trainer *t);
/* Last metrics computed (after an epoch or dwf_trainer_evaluate). */
const dwf_metrics *dwf_trainer_metrics(const dwf_trainer *t);

/* Evaluates the current state into m (test/val/sparse metrics and counts,
 * train fields zero). */
int dwf_trainer_evaluate(dwf_trainer *t, dwf_metrics *m, dwf_err *err);

/* With every >= 1, the evaluations after epochs that are multiples of
 * every, after the last epoch, and by dwf_trainer_evaluate keep the first
 * layer's outputs of the model at eps_prune (bias + W x, before the
 * activation; the model dwf_smodel_from_model builds at that eps) on the
 * validation and test sets - for an MLP every dense layer's - so that a
 * threshold curve of the same state can start from them
 * (dwf_thresh_opts.layer0 / .later) instead of computing them again. Only
 * for a first layer that is dense (after flatten) and outputs of at most
 * DWF_KEEP_LAYER0_MAX bytes in all; otherwise nothing is kept. The trainer
 * owns the buffers; every = 0 frees them. */
#define DWF_KEEP_LAYER0_MAX (256.0 * 1024 * 1024)
int dwf_trainer_keep_layer0(dwf_trainer *t, int every, dwf_err *err);
/* The kept outputs (which: 0 validation, 1 test), sample-major (n x units),
 * if the last evaluation kept them and the parameters have not changed
 * since; else NULL. Valid until the trainer trains, restores or is freed.
 * For an MLP (dense, relu and flatten layers only) the later dense layers'
 * outputs (before the activation; the last: the logits) are kept too:
 * dwf_trainer_layer_out(t, which, j) is the j-th dense layer's (j = 0:
 * dwf_trainer_layer0), NULL past the last. */
const float *dwf_trainer_layer0(const dwf_trainer *t, int which);
const float *dwf_trainer_layer_out(const dwf_trainer *t, int which, int j);

/* Saves the whole training state (factors, biases, masks, optimizer
 * state, RNG, epoch, step, position inside the epoch, timing) into a new
 * malloc'd buffer *buf of *len bytes (caller frees). */
int dwf_trainer_checkpoint(const dwf_trainer *t, uint8_t **buf, size_t *len,
                           dwf_err *err);
/* Restores a state saved by a trainer made with the same arch and opts.
 * A mismatch (other architecture, corrupt buffer) is an error. */
int dwf_trainer_restore(dwf_trainer *t, const uint8_t *buf, size_t len,
                        dwf_err *err);

/* Fills per-layer counts and CR of model m at threshold eps. */
void dwf_count_sparsity(const dwf_model *m, float eps, dwf_metrics *out);

#endif
