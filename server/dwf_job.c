/*
 * dwf_job.c - one job spec end to end: data, trainer, resume, training
 * with hooks, sparse model.
 */
#include "dwf_job.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct job_ctx {
    const dwf_job_hooks *h;
    dwf_trainer *t;
    int failed;          /* a checkpoint hook failed */
    dwf_err *err;
} job_ctx;

static int save_checkpoint(job_ctx *c)
{
    if (!c->h->on_checkpoint)
        return 0;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = dwf_trainer_checkpoint(c->t, &buf, &len, c->err);
    if (rc)
        return rc;
    rc = c->h->on_checkpoint(buf, len, dwf_trainer_epoch(c->t),
                             dwf_trainer_step(c->t), c->h->ud);
    free(buf);
    if (rc)
        return dwf_errorf(c->err, DWF_EIO, "saving the checkpoint failed");
    return 0;
}

static int on_epoch(const dwf_metrics *m, void *ud)
{
    job_ctx *c = ud;
    if (c->h->on_epoch && c->h->on_epoch(m, c->h->ud))
        return 1;
    int every = c->h->checkpoint_every;
    if (every > 0 && m->epoch % every == 0 && !dwf_trainer_done(c->t)) {
        if (save_checkpoint(c)) {
            c->failed = 1;
            return 1;
        }
    }
    return 0;
}

static void on_batch(int epoch, int batch, int n, void *ud)
{
    job_ctx *c = ud;
    if (c->h->on_batch)
        c->h->on_batch(epoch, batch, n, c->h->ud);
}

/* The final metrics stored inside the model file. */
static int metrics_kv(const dwf_metrics *m, dwf_kv *kv)
{
    struct {
        const char *k;
        double v;
    } items[] = {
        {"epoch", m->epoch},
        {"test_acc", m->test_acc},
        {"test_loss", m->test_loss},
        {"sparse_test_acc", m->sparse_test_acc},
        {"sparse_test_loss", m->sparse_test_loss},
        {"val_acc", m->val_acc},
        {"sparse_val_acc", m->sparse_val_acc},
        {"train_loss", m->train_loss},
        {"train_acc", m->train_acc},
        {"weights", (double)m->weights},
        {"nonzero", (double)m->nonzero},
        {"params", (double)m->params},
        {"params_nonzero", (double)m->params_nonzero},
        {"cr", m->cr},
        {"cr_params", m->cr_params},
        {"wall_time", m->wall_time},
    };
    int n = (int)(sizeof items / sizeof *items);
    for (int i = 0; i < n; i++) {
        snprintf(kv[i].key, sizeof kv[i].key, "%s", items[i].k);
        kv[i].value = items[i].v;
    }
    return n;
}

int dwf_job_run(dwf_spec *spec, const dwf_job_hooks *hooks, dwf_smodel *model,
                dwf_metrics *final, dwf_err *err)
{
    static const dwf_job_hooks no_hooks;
    if (!hooks)
        hooks = &no_hooks;
    memset(model, 0, sizeof *model);
    dwf_dataset train = {0}, val = {0}, test = {0};
    dwf_trainer *t = NULL;
    int rc = dwf_spec_load_data(spec, &train, &val, &test, err);
    if (rc)
        goto done;
    rc = dwf_trainer_create(&spec->arch, &spec->opts, &train, &val, &test, &t, err);
    if (rc)
        goto done;
    if (hooks->resume) {
        rc = dwf_trainer_restore(t, hooks->resume, hooks->resume_len, err);
        if (rc)
            goto done;
    }
    job_ctx c = {hooks, t, 0, err};
    if (!dwf_trainer_done(t)) {
        rc = dwf_trainer_run(t, on_epoch, on_batch, &c, hooks->cancel, err);
        if (c.failed)
            goto done;
        if (rc == DWF_ECANCELED) {
            int rc2 = save_checkpoint(&c);
            if (rc2)
                rc = rc2;
            goto done;
        }
        if (rc)
            goto done;
    }
    const dwf_metrics *last = dwf_trainer_metrics(t);
    if (final)
        *final = *last;
    dwf_kv kv[32];
    int n_kv = metrics_kv(last, kv);
    rc = dwf_smodel_from_model(dwf_trainer_model(t), dwf_trainer_norm(t),
                               (float)spec->opts.eps_prune, spec->json, kv, n_kv,
                               model, err);
done:
    dwf_trainer_free(t);
    dwf_dataset_free(&train);
    dwf_dataset_free(&val);
    dwf_dataset_free(&test);
    return rc;
}

void dwf_blas_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}
