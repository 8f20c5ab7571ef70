/*
 * dwf_optim.h - optimizers (SGD with momentum / Nesterov, Adam) and
 * learning-rate schedules (constant, step, cosine, linear warm-up).
 *
 * A dwf_optim owns one state buffer per factor of every parameter it was
 * created for (velocity for SGD, first and second moments for Adam); free
 * it with dwf_optim_free(). The parameters themselves belong to the model.
 * The penalty gradient is already inside the factor gradients (see
 * dwf_param.h), so no decoupled weight decay is applied here.
 */
#ifndef DWF_OPTIM_H
#define DWF_OPTIM_H

#include <stdint.h>

#include "dwf_err.h"
#include "dwf_param.h"
#include "dwf_workers.h"

typedef enum dwf_optim_kind { DWF_OPT_SGD = 0, DWF_OPT_ADAM } dwf_optim_kind;

typedef enum dwf_sched_kind {
    DWF_SCHED_CONSTANT = 0,
    DWF_SCHED_STEP,    /* lr * gamma^floor(epoch / step_epochs) */
    DWF_SCHED_COSINE,  /* lr_min + (lr - lr_min) (1 + cos(pi t / T)) / 2 */
} dwf_sched_kind;

typedef struct dwf_optim_opts {
    dwf_optim_kind kind;
    double lr;
    double momentum;      /* SGD */
    int nesterov;         /* SGD */
    double beta1, beta2;  /* Adam */
    double adam_eps;      /* Adam */
    dwf_sched_kind sched;
    double step_epochs;   /* STEP: epochs per decay */
    double gamma;         /* STEP: decay factor */
    double lr_min;        /* COSINE: final learning rate */
    double warmup_epochs; /* linear warm-up from 0 (in epochs, may be fractional) */
} dwf_optim_opts;

/* Learning rate at `step` (0-based) of a run of total_steps, with
 * steps_per_epoch steps an epoch. Warm-up, then the schedule over the
 * remaining steps. */
double dwf_sched_lr(const dwf_optim_opts *o, int64_t step, int64_t total_steps,
                    int64_t steps_per_epoch);

typedef struct dwf_optim {
    dwf_optim_opts opts;
    int n_params;
    dwf_param **params;        /* borrowed */
    int n_bufs;                /* sum of depths */
    int64_t n_floats;          /* size of state */
    float *state;              /* SGD: velocity; Adam: m then v, per factor */
    int64_t t;                 /* steps taken (Adam bias correction) */
    float *gbuf;               /* per thread: gradient blocks + scratch */
    int n_blocks;              /* blocks of DWF_PARAM_BLOCK over all params */
    float *block_ss;           /* per block sum of squares (penalty) */
    dwf_workers *workers;      /* NULL, or owned threads for the update */
} dwf_optim;

int dwf_optim_create(dwf_optim *o, const dwf_optim_opts *opts,
                     dwf_param **params, int n_params, dwf_err *err);
void dwf_optim_free(dwf_optim *o);

/* Shares the work of dwf_optim_update_sum among n threads (the caller's
 * and n - 1 helpers owned by the optimizer; n = 1 stops the helpers). The
 * result does not depend on n. The trainer also runs its data-parallel
 * batch slices on these threads (o->workers). */
int dwf_optim_set_threads(dwf_optim *o, int n, dwf_err *err);

/* One update of every factor with its gradient g at learning rate lr
 * (gradients already in p->g, e.g. from dwf_param_factor_grads). Masked
 * entries stay exactly zero. */
void dwf_optim_step(dwf_optim *o, double lr);

/* The training step after backward: for every parameter, block by block
 * while the block is in cache, compute the factor gradients from gw (with
 * the penalty term for decayed parameters), update the factors and
 * collapse them into w. Same result as dwf_param_factor_grads +
 * dwf_optim_step + dwf_param_collapse, with a third of the memory traffic
 * and without touching p->g. Returns the penalty value before the step. */
double dwf_optim_update(dwf_optim *o, double lr, double lambda);

/* The same with the weight gradient of parameter i taken as
 * p->gw + extra[0 * n_params + i] + ... + extra[(n_extra - 1) * n_params + i]
 * (added in that order, block by block), e.g. the gradients of the other
 * slices of a data-parallel batch; p->gw itself is not changed. Runs on
 * o->workers when set. dwf_optim_update is this with n_extra = 0. */
double dwf_optim_update_sum(dwf_optim *o, double lr, double lambda,
                            int n_extra, float *const *extra);

/* Serialized state is the raw float buffer plus t. */
int64_t dwf_optim_state_floats(const dwf_optim *o);

#endif
