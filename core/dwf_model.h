/*
 * dwf_model.h - a trainable network: the parameters of an architecture and
 * the activations of one mini-batch, with forward and backward passes.
 *
 * dwf_model_create() allocates everything for batches of up to max_batch
 * samples; dwf_model_free() releases it. The model owns its dwf_params
 * (one weight per dense/conv layer, one bias each) and its activations.
 * A model is used by one thread at a time, except that with lanes
 * (dwf_model_set_lanes) each lane may run its own forward and backward in
 * its own thread at the same time, on its own slice of a batch.
 *
 * Forward and backward use the collapsed weights w; call
 * dwf_model_collapse() after every change of the factors.
 *
 * dwf_model_backward_lane_defer() leaves the weight gradients of dense
 * layers to the caller (the optimizer computes them from the batch, see
 * dwf_optim_update_grads): it keeps each dense layer's input and output
 * gradient instead, in the lane's workspace, until the next forward.
 */
#ifndef DWF_MODEL_H
#define DWF_MODEL_H

#include <stdint.h>

#include "dwf_arch.h"
#include "dwf_err.h"
#include "dwf_param.h"
#include "dwf_rng.h"
#include "dwf_workers.h"

/* The workspace of one extra lane (lane 1, 2, ...): activations and the
 * weight gradients of its slice of the batch. Owned by the model. */
typedef struct dwf_lane {
    int max_batch;
    float *act[DWF_MAX_LAYERS + 1];
    float *dact[2];
    int32_t *argmax[DWF_MAX_LAYERS];
    float *col, *dcol;
    float *gw[2 * DWF_MAX_LAYERS];  /* per parameter, like dwf_param.gw */
    float *dy_keep[DWF_MAX_LAYERS]; /* dense layers: a kept output gradient */
    const float *dw_x[DWF_MAX_LAYERS], *dw_dy[DWF_MAX_LAYERS]; /* deferred */
} dwf_lane;

typedef struct dwf_model {
    dwf_arch arch;                 /* resolved */
    int max_batch;
    int n_params;
    dwf_param params[2 * DWF_MAX_LAYERS];
    int weight_idx[DWF_MAX_LAYERS]; /* index into params, -1 if none */
    int bias_idx[DWF_MAX_LAYERS];
    float *act[DWF_MAX_LAYERS + 1]; /* act[0] = input, act[i+1] = out of layer i */
    float *dact[2];                 /* ping-pong gradient buffers */
    int32_t *argmax[DWF_MAX_LAYERS];/* maxpool switches */
    float *col;                     /* im2col scratch (one sample) */
    float *dcol;                    /* im2col gradient scratch */
    float *scratch;                 /* 2 * largest param, factor grads */
    int64_t max_act;                /* floats per activation buffer */
    int n_lanes;                    /* 1 + extra lanes */
    dwf_lane *lanes;                /* n_lanes - 1 extra lanes (lane k at [k-1]) */
    float *dy_keep[DWF_MAX_LAYERS]; /* lane 0's, as in dwf_lane */
    const float *dw_x[DWF_MAX_LAYERS], *dw_dy[DWF_MAX_LAYERS];
} dwf_model;

int dwf_model_create(const dwf_arch *arch, int max_batch, dwf_model **out,
                     dwf_err *err);
void dwf_model_free(dwf_model *m);

/* Initializes all weights (kind, eps_init; Kaiming std sqrt(2 / fan_in))
 * and zeroes biases, drawing from rng. */
int dwf_model_init(dwf_model *m, dwf_init_kind kind, double eps_init,
                   dwf_rng *rng, dwf_err *err);

/* Recomputes every collapsed weight from its factors. */
void dwf_model_collapse(dwf_model *m);

/* Forward pass of b <= max_batch samples x (b x input dim); returns the
 * logits (b x n_classes), valid until the next forward. */
const float *dwf_model_forward(dwf_model *m, const float *x, int b);

/* Backward pass from dlogits (b x n_classes) of the last forward: fills gw
 * (and bias gw) of every parameter. */
void dwf_model_backward(dwf_model *m, const float *dlogits, int b);

/* Data-parallel batches: gives the model n lanes in all (1..DWF_MAX_THREADS;
 * lane 0 is the model's own workspace, the others take batch slices of up
 * to ceil(max_batch / n) samples). Replaces earlier lanes. */
int dwf_model_set_lanes(dwf_model *m, int n, dwf_err *err);
/* Forward and backward of lane k (0 <= k < n_lanes): the same as
 * dwf_model_forward / dwf_model_backward, into the lane's workspace; lane
 * k's weight gradients are dwf_model_lane_gw(m, k, i). Different lanes may
 * run at the same time in different threads. */
const float *dwf_model_forward_lane(dwf_model *m, int k, const float *x, int b);
void dwf_model_backward_lane(dwf_model *m, int k, const float *dlogits, int b);
/* dwf_model_backward_lane without the weight gradients of dense layers
 * (their bias and input gradients are computed; conv layers are as
 * usual). Afterwards dwf_model_dense_io() gives, for each dense layer,
 * what its weight gradient dy^T x needs. */
void dwf_model_backward_lane_defer(dwf_model *m, int k, const float *dlogits,
                                   int b);
/* After dwf_model_backward_lane_defer of lane k with b samples: the input
 * x (b x in) and output gradient dy (b x units) of dense layer `layer`,
 * valid until lane k's next forward. Returns 0, or -1 when the layer is
 * not a dense layer deferred by that backward. */
int dwf_model_dense_io(const dwf_model *m, int k, int layer, const float **x,
                       const float **dy);

/* Lane k's gradient buffer for parameter i (lane 0: params[i].gw). */
float *dwf_model_lane_gw(dwf_model *m, int k, int i);

/* Turns gw into factor gradients for every parameter (penalty included
 * for decayed ones) and returns the total penalty value. */
double dwf_model_factor_grads(dwf_model *m, double lambda);

/* Total penalty (lambda / D) sum ||f_d||^2 over decayed parameters. */
double dwf_model_penalty(const dwf_model *m, double lambda);

/* Mean softmax cross-entropy of logits (b x c) against y; writes
 * dlogits = (softmax - onehot) / b when dlogits is non-NULL, and the number
 * of correct argmax predictions into *correct (may be NULL). Accumulates in
 * double. */
double dwf_softmax_xent(const float *logits, const int32_t *y, int b, int c,
                        float *dlogits, int *correct);
/* The same for a slice of b rows of a batch of total rows: returns the
 * slice's summed loss (not the mean) and writes dlogits divided by total,
 * so that slices of a batch together give the whole batch's dlogits. */
double dwf_softmax_xent_part(const float *logits, const int32_t *y, int b,
                             int total, int c, float *dlogits, int *correct);

/* Pointers to all parameters (for the optimizer), in model order. */
void dwf_model_param_list(dwf_model *m, dwf_param **out);


#endif
