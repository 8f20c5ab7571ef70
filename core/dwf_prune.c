/*
 * dwf_prune.c - pruning baselines. (Being implemented: only method dwf is
 * accepted until then.)
 */
#include "dwf_prune.h"

#include <math.h>

#include "dwf_trainer_impl.h"

int dwf_prune_total_epochs(const dwf_trainer *t)
{
    if (t->opts.method == DWF_METHOD_MAGNITUDE)
        return t->opts.epochs + t->opts.finetune_epochs;
    return t->opts.epochs;
}

int dwf_prune_at_init(dwf_trainer *t, dwf_err *err)
{
    if (t->opts.method != DWF_METHOD_DWF)
        return dwf_errorf(err, DWF_EINVAL, "method: %s is not available yet",
                          dwf_method_name(t->opts.method));
    return 0;
}

void dwf_prune_after_step(dwf_trainer *t)
{
    (void)t;
}

int dwf_prune_after_epoch(dwf_trainer *t, dwf_err *err)
{
    (void)t;
    (void)err;
    return 0;
}

void dwf_prune_save(const dwf_trainer *t, dwf_wbuf *w)
{
    (void)t;
    (void)w;
}

int dwf_prune_load(dwf_trainer *t, dwf_rbuf *r, dwf_err *err)
{
    (void)t;
    (void)r;
    (void)err;
    return 0;
}

int64_t dwf_prune_keep_count(int64_t total, double target_cr)
{
    int64_t k = llround((double)total / target_cr);
    return k < 1 ? 1 : k;
}
