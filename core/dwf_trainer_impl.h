/*
 * dwf_trainer_impl.h - the inside of a dwf_trainer, shared by the training
 * loop (dwf_train.c) and the pruning baselines (dwf_prune.c) only. Not a
 * public header: everything else uses the accessors of dwf_train.h.
 * The trainer owns every pointer here except the borrowed data sets.
 */
#ifndef DWF_TRAINER_IMPL_H
#define DWF_TRAINER_IMPL_H

#include "dwf_train.h"

struct dwf_trainer {
    dwf_train_opts opts;
    dwf_model *model;
    dwf_optim optim;
    dwf_param *plist[2 * DWF_MAX_LAYERS];
    const dwf_dataset *train, *val, *test;
    dwf_norm norm;
    dwf_rng rng;           /* init and mask streams */
    int epoch;             /* epochs completed */
    int64_t step;          /* optimizer steps taken */
    int batch;             /* batches done inside the current epoch */
    int n_batches;
    int *perm;             /* this epoch's sample order */
    float *x;              /* batch inputs */
    int32_t *y;            /* batch labels */
    float *dlogits;
    float *sparse_w;       /* thresholded copies for sparse evaluation */
    dwf_dense_grad *dense; /* per parameter: a step's dense weight gradients */
    int l0_layer;          /* layer kept by dwf_trainer_keep_layer0, or -1 */
    int l0_every;          /* ... after epochs that are multiples of this */
    int l0_skip;           /* the running evaluation does not keep them */
    float *l0[2];          /* its outputs on val and test (n x units) */
    int n_later;           /* an MLP's later dense layers kept too */
    int later_li[DWF_MAX_LAYERS];   /* their layer indices */
    float *later[2][DWF_MAX_LAYERS]; /* their outputs on val and test */
    int l0_valid;          /* l0 holds the current parameters' outputs */
    /* running sums of the current epoch (checkpointed) */
    double sum_loss, sum_pen, sum_correct, sum_n, epoch_train_secs;
    double wall_time;      /* seconds of all finished epochs */
    dwf_metrics last;
};

#endif
