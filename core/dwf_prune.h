/*
 * dwf_prune.h - the pruning baselines the DWF curve is compared with:
 * global magnitude pruning after training (+ optional fine-tuning),
 * gradual magnitude pruning (Zhu & Gupta 2017), and masks at
 * initialization: random (per layer uniform), SNIP (Lee et al. 2019) and
 * iterative SynFlow (Tanaka et al. 2020).
 *
 * These are hooks the training loop calls; they act on the trainer's model
 * through dwf_param masks (owned by the params). Masked weights stay
 * exactly zero through every optimizer step. The scoring functions are
 * public so that tests can check them against hand-computed values.
 */
#ifndef DWF_PRUNE_H
#define DWF_PRUNE_H

#include <stdint.h>

#include "dwf_buf.h"
#include "dwf_model.h"
#include "dwf_train.h"

/* Epochs the run trains in all (magnitude adds finetune_epochs). */
int dwf_prune_total_epochs(const dwf_trainer *t);

/* At trainer creation, after init: computes the mask of random / snip /
 * synflow at target_cr. */
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
 * order, as m->params[m->weight_idx[l]].n). Ties broken by position.
 * Writes masks into m's weight params. */
int dwf_prune_global_topk(dwf_model *m, float *const *scores, int64_t keep,
                          dwf_err *err);

/* Weights to keep for a target compression ratio: round(total / cr), >= 1. */
int64_t dwf_prune_keep_count(int64_t total, double target_cr);

#endif
