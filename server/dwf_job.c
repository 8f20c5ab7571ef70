/*
 * dwf_job.c - one job spec end to end: data, trainer, resume, training
 * with hooks, sparse model.
 */
#include "dwf_job.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct job_ctx {
    const dwf_job_hooks *h;
    dwf_trainer *t;
    const dwf_spec *spec;
    const dwf_dataset *val, *test;
    int failed;          /* a checkpoint or curve hook failed (err set) */
    dwf_err *err;
} job_ctx;

/* Curve options of the spec; the curve starts from the first layer's
 * outputs that the trainer's evaluation of the same state kept. */
static void curve_opts(const dwf_spec *spec, const dwf_trainer *t, dwf_thresh_opts *o)
{
    dwf_thresh_opts_default(o);
    if (spec->curves.per_decade > 0)
        o->per_decade = spec->curves.per_decade;
    /* the job's thread budget (train.threads, capped by dwfd) */
    o->threads = spec->opts.threads > 0 ? spec->opts.threads : 1;
    for (int k = 0; k < 2; k++) {
        o->layer0[k] = dwf_trainer_layer0(t, k);
        for (int j = 1; j < DWF_MAX_LAYERS && o->layer0[k]; j++)
            if (!(o->later[k][j - 1] = dwf_trainer_layer_out(t, k, j)))
                break;
    }
}

/* The threshold curve of the current state, handed to hooks->on_curve. */
static int epoch_curve(job_ctx *c, int epoch)
{
    const dwf_spec *spec = c->spec;
    dwf_smodel m;
    dwf_job_result r;
    memset(&r, 0, sizeof r);
    int rc = dwf_smodel_from_model(dwf_trainer_model(c->t), dwf_trainer_norm(c->t),
                                   (float)spec->opts.eps_prune, spec->json, NULL, 0,
                                   &m, c->err);
    if (rc)
        return rc;
    dwf_thresh_opts o;
    curve_opts(spec, c->t, &o);
    rc = dwf_thresh_curve_compute(&m, c->val, c->test, &o, &r.curve, c->err);
    dwf_smodel_free(&m);
    if (rc)
        return rc;
    json_t *rows = dwf_job_curve_json(&r, &spec->arch);
    if (!rows)
        rc = dwf_errorf(c->err, DWF_ENOMEM, "out of memory for the threshold curve");
    else if (c->h->on_curve(epoch, rows, c->h->ud))
        rc = dwf_errorf(c->err, DWF_EIO, "storing the threshold curve of epoch %d "
                        "failed", epoch);
    json_decref(rows);
    dwf_job_result_free(&r);
    return rc;
}

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
    int k = c->spec->curves.every;
    if (k > 0 && c->h->on_curve && m->epoch % k == 0 && !dwf_trainer_done(c->t)) {
        if (epoch_curve(c, m->epoch)) {
            c->failed = 1;
            return 1;
        }
    }
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

static void kv_set(dwf_kv *kv, int *n, int cap, const char *key, double v)
{
    for (int i = 0; i < *n; i++) {
        if (!strcmp(kv[i].key, key)) {
            kv[i].value = v;
            return;
        }
    }
    if (*n >= cap)
        return;
    snprintf(kv[*n].key, sizeof kv[*n].key, "%s", key);
    kv[*n].value = v;
    (*n)++;
}

void dwf_job_result_free(dwf_job_result *r)
{
    if (!r)
        return;
    dwf_thresh_curve_free(&r->curve);
    memset(r, 0, sizeof *r);
}

static json_t *num_or_null(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

json_t *dwf_job_curve_json(const dwf_job_result *r, const dwf_arch *arch)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (int i = 0; i < r->curve.n; i++) {
        const dwf_thresh_point *p = &r->curve.points[i];
        json_t *o = json_object();
        if (json_array_append_new(arr, o)) /* steals o, NULL or not */
            goto fail;
        json_t *layers = json_array();
        if (json_object_set_new(o, "layers", layers)) /* steals layers */
            goto fail;
        if (json_object_set_new(o, "threshold", num_or_null(p->threshold)) ||
            json_object_set_new(o, "cr", num_or_null(p->cr)) ||
            json_object_set_new(o, "weights", json_integer(p->weights)) ||
            json_object_set_new(o, "nonzero", json_integer(p->nonzero)) ||
            json_object_set_new(o, "val_acc", num_or_null(p->val_acc)) ||
            json_object_set_new(o, "test_acc", num_or_null(p->test_acc)))
            goto fail;
        if (r->selected && i == r->select_index &&
            json_object_set_new(o, "selected", json_true()))
            goto fail;
        for (int l = 0; arch && l < arch->n_layers && l < DWF_MAX_LAYERS; l++) {
            if (!dwf_layer_has_weight(arch->layers[l].kind))
                continue;
            char name[64];
            dwf_arch_layer_name(arch, l, name, (int)sizeof name);
            json_t *lo = json_pack("{s:i, s:s, s:I, s:I}", "layer", l, "name", name,
                                   "weights", (json_int_t)p->layer_weights[l],
                                   "nonzero", (json_int_t)p->layer_nonzero[l]);
            if (!lo || json_array_append_new(layers, lo))
                goto fail;
        }
    }
    return arr;
fail:
    json_decref(arr);
    return NULL;
}

/* The final metrics m of a job whose spec selected model sel (point p of
 * its curve, test loss loss; dwf_smodel_counts w, nz, pa, pnz): its
 * non-zero counts, compression and sparse accuracies replace the eps
 * model's (biases stay as they were). */
static void selected_metrics(dwf_metrics *m, const dwf_smodel *sel, const dwf_thresh_point *p,
                             double loss, int64_t w, int64_t nz, int64_t pa, int64_t pnz)
{
    for (int i = 0, k = 0; i < sel->arch.n_layers && k < m->n_layers; i++) {
        dwf_layer_kind kind = sel->arch.layers[i].kind;
        if (kind == DWF_LAYER_DENSE || kind == DWF_LAYER_CONV2D)
            m->layers[k++].nonzero = sel->w[i].nnz;
    }
    m->nonzero = nz;
    m->params_nonzero = pnz;
    m->cr = nz > 0 ? (double)w / (double)nz : INFINITY;
    m->cr_params = pnz > 0 ? (double)pa / (double)pnz : INFINITY;
    m->sparse_test_acc = p->test_acc;
    m->sparse_test_loss = loss;
    m->sparse_val_acc = p->val_acc;
}

/* The threshold curve of *model (built at prune.eps) and, with the spec's
 * select, *model replaced by the model at the selected threshold. The
 * curve goes to res (may be NULL: then it is computed only for select).
 * On failure *model is freed. */
static int curve_and_select(const dwf_spec *spec, const dwf_trainer *t,
                            const dwf_metrics *last, dwf_metrics *final,
                            const dwf_dataset *val, const dwf_dataset *test,
                            dwf_kv *kv, int n_kv, dwf_smodel *model,
                            dwf_job_result *res, dwf_err *err)
{
    dwf_job_result local;
    dwf_job_result *r = res ? res : &local;
    memset(r, 0, sizeof *r);
    const int cap = 48;
    int rc = 0;
    if (res || spec->select.enabled) {
        dwf_thresh_opts o;
        curve_opts(spec, t, &o);
        rc = dwf_thresh_curve_compute(model, val, test, &o, &r->curve, err);
        if (rc)
            goto out;
    }
    r->epoch_seconds = last->epoch_time;
    const dwf_dataset *on = val && val->n > 0 ? val : test;
    double dense = val && val->n > 0 ? last->val_acc : last->test_acc;
    r->collapsed = on && on->n > 0 && isfinite(dense) &&
                   dense <= dwf_thresh_chance(on, model->arch.n_classes, 0.02);
    r->eps_cr = last->cr;
    r->eps_test_acc = last->sparse_test_acc;
    r->threshold = model->eps;
    r->dense_val_acc = last->val_acc;
    if (r->curve.n > 0) {
        r->cr = r->curve.points[0].cr;
        r->val_acc = r->curve.points[0].val_acc;
        r->test_acc = r->curve.points[0].test_acc;
    }
    if (!spec->select.enabled)
        goto out;
    if (!(val && val->n > 0)) {
        rc = dwf_errorf(err, DWF_EINVAL, "select: needs a validation split "
                        "(data.validation > 0)");
        goto out;
    }
    /* validation only: the dense model's and the curve's val_acc */
    rc = dwf_thresh_select(&r->curve, last->val_acc, spec->select.max_drop,
                           &r->select_index, &r->select_within, err);
    if (rc)
        goto out;
    const dwf_thresh_point *p = &r->curve.points[r->select_index];
    r->selected = 1;
    r->threshold = p->threshold;
    r->cr = isfinite(p->cr) ? p->cr : (double)p->weights;
    r->val_acc = p->val_acc;
    r->test_acc = p->test_acc;
    double eps_cr = last->cr, eps_test = last->sparse_test_acc;
    /* no weight left: CR as the pool counts it (weights), finite for JSON */
    double sel_cr = isfinite(p->cr) ? p->cr : (double)p->weights;
    dwf_smodel sel;
    int64_t w, nz, pa, pnz;
    /* the selected model's own numbers replace the eps model's */
    kv_set(kv, &n_kv, cap, "eps_cr", eps_cr);
    kv_set(kv, &n_kv, cap, "eps_sparse_test_acc", eps_test);
    kv_set(kv, &n_kv, cap, "selected_threshold", p->threshold);
    kv_set(kv, &n_kv, cap, "selected_cr", sel_cr);
    kv_set(kv, &n_kv, cap, "selected_val_acc", p->val_acc);
    kv_set(kv, &n_kv, cap, "selected_test_acc", p->test_acc);
    kv_set(kv, &n_kv, cap, "selected_within", r->select_within);
    kv_set(kv, &n_kv, cap, "dense_val_acc", last->val_acc);
    kv_set(kv, &n_kv, cap, "select_max_drop", spec->select.max_drop);
    kv_set(kv, &n_kv, cap, "sparse_test_acc", p->test_acc);
    kv_set(kv, &n_kv, cap, "sparse_val_acc", p->val_acc);
    rc = dwf_smodel_rethreshold(model, (float)p->threshold, kv, n_kv, &sel, err);
    if (rc)
        goto out;
    dwf_smodel_counts(&sel, &w, &nz, &pa, &pnz);
    double sel_loss = NAN, acc;
    if (test && test->n > 0) {
        rc = dwf_smodel_evaluate(&sel, test, &acc, &sel_loss, err);
        if (rc) {
            dwf_smodel_free(&sel);
            goto out;
        }
    }
    for (int i = 0; i < sel.n_kv; i++) {
        const char *k = sel.kv[i].key;
        double *v = &sel.kv[i].value;
        if (!strcmp(k, "nonzero"))
            *v = (double)nz;
        else if (!strcmp(k, "params_nonzero"))
            *v = (double)pnz;
        else if (!strcmp(k, "cr"))
            *v = sel_cr;
        else if (!strcmp(k, "cr_params"))
            *v = pnz > 0 ? (double)pa / (double)pnz : (double)pa;
        else if (!strcmp(k, "sparse_test_loss"))
            *v = sel_loss;
    }
    if (final)
        selected_metrics(final, &sel, p, sel_loss, w, nz, pa, pnz);
    dwf_smodel_free(model);
    *model = sel;
out:
    if (rc)
        dwf_smodel_free(model);
    if (!res)
        dwf_job_result_free(&local);
    else if (rc)
        dwf_job_result_free(res);
    return rc;
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
    /* the evaluations before a threshold curve keep what it starts from */
    int k = spec->curves.every;
    if (hooks->result || spec->select.enabled || (k > 0 && hooks->on_curve)) {
        rc = dwf_trainer_keep_layer0(t, k > 0 && hooks->on_curve ? k : INT_MAX, err);
        if (rc)
            goto done;
    }
    job_ctx c = {hooks, t, spec, &val, &test, 0, err};
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
    dwf_kv kv[48];
    int n_kv = metrics_kv(last, kv);
    rc = dwf_smodel_from_model(dwf_trainer_model(t), dwf_trainer_norm(t),
                               (float)spec->opts.eps_prune, spec->json, kv, n_kv,
                               model, err);
    if (rc)
        goto done;
    rc = curve_and_select(spec, t, last, final, &val, &test, kv, n_kv, model,
                          hooks->result, err);
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
