/*
 * dwf_prune.h - the pruning baselines the DWF curve is compared with:
 * global magnitude pruning after training (+ optional fine-tuning),
 * gradual magnitude pruning (Zhu & Gupta 2017), and masks at
 * initialization: random (per layer uniform), SNIP (Lee et al. 2019) and
 * iterative SynFlow (Tanaka et al. 2020).
 *
 * These are hooks the training loop calls; they act on the trainer's model
 * through dwf_param masks (owned by the params). Only dense/conv weight
 * tensors are masked, never biases; scores use the collapsed w, so any
 * depth works (the baselines are meant for D = 1). Masked weights stay
 * exactly zero through every optimizer step. Every method keeps exactly
 * dwf_prune_keep_count(weights, target_cr) weights at the end:
 *  - magnitude: after epoch `epochs`, global top-|w|; finetune_epochs more
 *    with the mask fixed.
 *  - gradual: masks (all ones) from init; after the optimizer steps of the
 *    cubic schedule (see dwf_prune_gradual_keep) global top-|w| among the
 *    weights not yet pruned, and the optimizer state of newly pruned
 *    entries is zeroed.
 *  - random: per layer dwf_prune_layer_quota entries chosen uniformly
 *    with the trainer's mask stream (t->rng).
 *  - snip: scores on snip_batches * batch_size training samples drawn
 *    without replacement with t->rng (all samples if fewer), global top-k.
 *  - synflow: synflow_rounds rounds; after round k of R the global top
 *    (1/cr)^(k/R) of the scores of the weights still free.
 * The scoring functions are public so that tests can check them against
 * hand-computed values.
 */
#ifndef DWF_PRUNE_H
#define DWF_PRUNE_H

#include <stdint.h>

#include "dwf_buf.h"
#include "dwf_data.h"
#include "dwf_model.h"
#include "dwf_train.h"

/* Epochs the run trains in all (magnitude adds finetune_epochs). */
int dwf_prune_total_epochs(const dwf_trainer *t);

/* At trainer creation, after init: checks the pruning options (errors
 * name the field), computes the mask of random / snip / synflow at
 * target_cr, and gives gradual its (all-ones) masks. Draws from t->rng. */
int dwf_prune_at_init(dwf_trainer *t, dwf_err *err);

/* After every optimizer step (gradual pruning updates its mask here). */
void dwf_prune_after_step(dwf_trainer *t);

/* After every epoch (magnitude prunes when dense training ends). */
int dwf_prune_after_epoch(dwf_trainer *t, dwf_err *err);

/* Extra state in checkpoints (masks themselves are saved by the trainer). */
void dwf_prune_save(const dwf_trainer *t, dwf_wbuf *w);
int dwf_prune_load(dwf_trainer *t, dwf_rbuf *r, dwf_err *err);

/* Global mask keeping the `keep` entries with the largest scores over all
 * weight tensors of m (scores[i] has one array per weight layer, in layer
 * order, as m->params[m->weight_idx[l]].n). Ties broken by position (the
 * earlier layer, then the lower index, is kept); NaN ranks lowest. keep is
 * clamped to [0, total]. Writes masks into m's weight params (replacing
 * any earlier mask) and zeroes the masked weights. */
int dwf_prune_global_topk(dwf_model *m, float *const *scores, int64_t keep,
                          dwf_err *err);

/* Weights to keep for a target compression ratio: round(total / cr),
 * clamped to [1, total]. */
int64_t dwf_prune_keep_count(int64_t total, double target_cr);

/* ---- scoring and schedules (public for tests) ------------------------- */

/* Weight entries of m (all dense/conv weight tensors). */
int64_t dwf_prune_weight_count(const dwf_model *m);

/* SNIP scores (Lee et al. 2019): scores[l][j] = |g_j * w_j| for weight
 * layer l, where g = d/dw of the mean cross-entropy over the samples
 * idx[0..n) of d (normalized with norm), computed with m's own forward and
 * backward in batches of at most m->max_batch. Scores use the collapsed
 * w, so they are defined for any depth. Overwrites m's activations and
 * gradients (gw), not its weights. Allocates its own batch buffers. */
int dwf_prune_snip_scores(dwf_model *m, const dwf_dataset *d,
                          const dwf_norm *norm, const int *idx, int n,
                          float *const *scores, dwf_err *err);

/* SynFlow scores (Tanaka et al. 2020) for one round: every weight is
 * replaced by |w| (masked weights are 0), biases by 0, one all-ones input
 * goes forward, R = sum of the logits, scores[l][j] = |dR/dw_j * w_j|.
 * To keep float32 in range, layer l's |w| is scaled by
 * c_l = out_channels_l / sum |w_l| during scoring; R is linear in each
 * layer's weights, so every score is multiplied by the same constant
 * prod c_l and the ranking is unchanged. The scores written are the true
 * scores times exp(*log_scale) (log_scale may be NULL). m's weights and
 * biases are restored; activations and gw are overwritten. DWF_ENUMERIC
 * if a score is not finite. */
int dwf_prune_synflow_scores(dwf_model *m, float *const *scores,
                             double *log_scale, dwf_err *err);

/* Gradual pruning (Zhu & Gupta 2017): the steps [t0, t_end] of the
 * schedule for opts and n_batches steps an epoch: t0 = round(prune_start *
 * n_batches), t_end = round(prune_end * n_batches) (prune_end < 0: 75% of
 * the epochs), both clamped to [0, epochs * n_batches] and t0 <= t_end. */
void dwf_prune_gradual_window(const dwf_train_opts *o, int n_batches,
                              int64_t *t0, int64_t *t_end);
/* Sparsity after `step` optimizer steps: 0 up to t0, s_final from t_end
 * on, in between s_final (1 - (1 - (step - t0) / (t_end - t0))^3). */
double dwf_prune_gradual_sparsity(double s_final, int64_t t0, int64_t t_end,
                                  int64_t step);
/* Weights kept after `step` steps: round(total (1 - s_t)) with
 * s_final = 1 - 1 / target_cr, never below dwf_prune_keep_count(total,
 * target_cr) and exactly that from t_end on. The mask is updated at the
 * steps t0 < step <= t_end with (step - t0) % prune_every == 0, and at
 * t_end. */
int64_t dwf_prune_gradual_keep(int64_t total, double target_cr, int64_t t0,
                               int64_t t_end, int64_t step);

/* Random pruning: entries kept per layer for layer sizes n[0..L) and a
 * total of keep: n_l * keep / total rounded by largest remainder (ties to
 * the earlier layer), so that the quotas sum to exactly keep and each is
 * within one of n_l / cr; when keep >= L every non-empty layer keeps at
 * least one entry (taken from the layer with the largest quota). */
void dwf_prune_layer_quota(const int64_t *n, int L, int64_t keep,
                           int64_t *out);

#endif
