/*
 * dwf_optim.h - optimizers (SGD with momentum / Nesterov, Adam) and
 * learning-rate schedules (constant, step, cosine, linear warm-up).
 *
 * A dwf_optim owns one state buffer per factor of every parameter it was
 * created for (velocity for SGD, first and second moments for Adam); free
 * it with dwf_optim_free(). The parameters themselves belong to the model.
 * The penalty gradient is already inside the factor gradients (see
 * dwf_param.h), so no decoupled weight decay is applied here.
 *
 * Dense weights declared with dwf_optim_set_dense() can take their
 * gradient straight from the batch (dwf_optim_update_grads): a few rows of
 * dy^T x at a time, each panel of rows updated while its gradient is in
 * cache; p->gw is never written. The per-thread panel buffers belong to
 * the optimizer.
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
    /* dense weights (dwf_optim_set_dense; NULL until then) */
    int *dense_out, *dense_in; /* per parameter: out x in, 0 x 0 if not dense */
    int64_t *row_off;          /* per parameter: its first row in row_ss */
    int64_t *state_off;        /* per parameter: its first float in state */
    double *row_ss;            /* per dense row: sum of squares of factors */
    float *panel;              /* per thread: panel_floats of gradient rows */
    int panel_rows;
    int64_t panel_floats;
} dwf_optim;

/* The weight gradient of a dense layer as the batch itself: n_seg slices
 * of the batch, in order (see dwf_dense_grad_panel). */
typedef struct dwf_dense_grad {
    int n_seg;
    dwf_dense_seg seg[DWF_MAX_THREADS];
} dwf_dense_grad;

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

/* Declares the dense weights: parameter i is an out[i] x in[i] row-major
 * weight (out[i] * in[i] == its size), or not dense when out[i] == 0.
 * Allocates the panel buffers. Call again to change; NULL out clears. */
int dwf_optim_set_dense(dwf_optim *o, const int *out, const int *in,
                        dwf_err *err);

/* dwf_optim_update_sum, except that every parameter i with
 * dense[i].n_seg > 0 (declared dense) takes its weight gradient from those
 * segments: its p->gw and extra buffers are not read. Every thread takes
 * panels of whole rows of the dense weights, its own share first, then
 * what another thread has not begun. The result does not depend on the
 * number of threads. dense may be NULL. Returns the
 * penalty before the step, or NAN (and changes nothing) when segments are
 * given for a parameter that was not declared dense. */
double dwf_optim_update_grads(dwf_optim *o, double lr, double lambda,
                              int n_extra, float *const *extra,
                              const dwf_dense_grad *dense);

/* Serialized state is the raw float buffer plus t. */
int64_t dwf_optim_state_floats(const dwf_optim *o);

#endif
