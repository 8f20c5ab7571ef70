/*
 * dwf_pool.c - worker threads taking queued jobs from the store and
 * running them through an executor; the local (in-process) executor.
 */
#include "dwf_pool.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "dwf_job.h"
#include "dwf_sparse.h"
#include "dwf_workers.h"

#define PENDING_CANCELS 32

struct dwf_pool {
    dwf_store *store;
    dwf_executor *ex;
    int n_workers;
    pthread_t *threads;
    int *started;                 /* thread i was created */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;                 /* bumped by dwf_pool_notify */
    int stopping;
    int stopped_join;             /* threads joined */
    dwf_job_ctx **running;        /* per worker, NULL when idle */
    int64_t pending[PENDING_CANCELS]; /* cancels for jobs not yet registered */
    int n_pending;
    char **roots;
    int n_roots;
    int checkpoint_every;
    int train_cores;              /* cores given to training */
    int *budget;                  /* per worker: its share of train_cores */
    double progress_interval;
    dwf_log_fn log;
    void *log_ud;
};

typedef struct worker_arg {
    dwf_pool *p;
    int index;
} worker_arg;

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define LOG(p, ...)                                                          \
    do {                                                                     \
        if ((p)->log)                                                        \
            (p)->log((p)->log_ud, __VA_ARGS__);                              \
    } while (0)

/* ---- reporting calls used by executors ---------------------------------- */

static int total_epochs_of(const dwf_spec *s)
{
    int e = s->opts.epochs;
    if (s->opts.method == DWF_METHOD_MAGNITUDE)
        e += s->opts.finetune_epochs;
    return e > 0 ? e : 1;
}

int dwf_job_ctx_epoch(dwf_job_ctx *ctx, const dwf_metrics *m)
{
    dwf_pool *p = ctx->pool;
    json_t *j = dwf_store_metrics_to_json(m);
    if (!j) {
        dwf_errorf(&ctx->store_err, DWF_ENOMEM, "out of memory for epoch metrics");
        ctx->failed_store = 1;
        return 1;
    }
    int rc = dwf_store_metrics_append(p->store, ctx->id, j, &ctx->store_err);
    json_decref(j);
    if (rc) {
        ctx->failed_store = 1;
        return 1;
    }
    ctx->t_last_progress = mono_now();
    return 0;
}

void dwf_job_ctx_progress(dwf_job_ctx *ctx, int epoch, int batch, int n)
{
    dwf_pool *p = ctx->pool;
    double now = mono_now();
    ctx->batches_done++;
    if (now - ctx->t_rate >= 1.0) {
        ctx->samples_per_sec =
            ctx->batches_done * (double)ctx->batch_size / (now - ctx->t_rate);
        ctx->batches_done = 0;
        ctx->t_rate = now;
    }
    if (now - ctx->t_last_progress < p->progress_interval && batch < n)
        return;
    ctx->t_last_progress = now;
    int epochs = total_epochs_of(ctx->spec);
    double frac = (epoch - 1 + (n > 0 ? (double)batch / n : 0.0)) / epochs;
    double eta = -1.0;
    double done = frac - ctx->frac_start;
    if (done > 1e-6 && now > ctx->t_start)
        eta = (now - ctx->t_start) / done * (1.0 - frac);
    dwf_err e;
    if (dwf_store_job_progress(p->store, ctx->id, epoch, 0, batch, n, eta, &e))
        LOG(p, "job %lld: progress not stored: %s", (long long)ctx->id, e.msg);
}

int dwf_job_ctx_checkpoint(dwf_job_ctx *ctx, const uint8_t *buf, size_t len,
                           int epoch, int64_t step)
{
    int rc = dwf_store_checkpoint_put(ctx->pool->store, ctx->id, epoch, step,
                                      buf, len, &ctx->store_err);
    if (rc)
        ctx->failed_store = 1;
    return rc;
}

int dwf_job_ctx_curve(dwf_job_ctx *ctx, int epoch, const json_t *rows)
{
    int rc = dwf_store_epoch_thresholds_put(ctx->pool->store, ctx->id, epoch, rows,
                                            &ctx->store_err);
    if (rc)
        ctx->failed_store = 1;
    return rc;
}

/* ---- the local executor ------------------------------------------------- */

static int local_on_epoch(const dwf_metrics *m, void *ud)
{
    return dwf_job_ctx_epoch(ud, m);
}

static void local_on_batch(int epoch, int batch, int n, void *ud)
{
    dwf_job_ctx_progress(ud, epoch, batch, n);
}

static int local_on_checkpoint(const uint8_t *buf, size_t len, int epoch,
                               int64_t step, void *ud)
{
    return dwf_job_ctx_checkpoint(ud, buf, len, epoch, step);
}

static int local_on_curve(int epoch, const json_t *rows, void *ud)
{
    return dwf_job_ctx_curve(ud, epoch, rows);
}

/* The threshold rows and, after selection, the job's last metrics with
 * the selected model's numbers. */
static int local_results(dwf_job_ctx *ctx, const dwf_job_result *res,
                         const dwf_arch *arch, dwf_err *err)
{
    ctx->thresholds = dwf_job_curve_json(res, arch);
    if (!ctx->thresholds)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the threshold curve");
    json_t *m = dwf_store_metrics_to_json(&ctx->final);
    if (!m)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the final metrics");
    /* what the threshold curve cost, against one training epoch */
    if (json_object_set_new(m, "curve_seconds", json_real(res->curve.seconds)) ||
        json_object_set_new(m, "curve_points", json_integer(res->curve.n)) ||
        json_object_set_new(m, "collapsed", json_boolean(res->collapsed)) ||
        (res->epoch_seconds > 0 &&
         json_object_set_new(m, "curve_epoch_fraction",
                             json_real(res->curve.seconds / res->epoch_seconds)))) {
        json_decref(m);
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the final metrics");
    }
    if (!res->selected) {
        ctx->final_metrics = m;
        return 0;
    }
    const dwf_thresh_point *p = &res->curve.points[res->select_index];
    struct {
        const char *k;
        double v;
    } items[] = {
        {"eps_cr", res->eps_cr},
        {"eps_sparse_test_acc", res->eps_test_acc},
        {"selected_threshold", res->threshold},
        {"selected_cr", res->cr},
        {"selected_val_acc", res->val_acc},
        {"selected_test_acc", res->test_acc},
        {"dense_val_acc", res->dense_val_acc},
        {"select_max_drop", ctx->spec->select.max_drop},
        {"cr", res->cr},
        {"sparse_test_acc", res->test_acc},
        {"sparse_val_acc", res->val_acc},
    };
    for (size_t i = 0; i < sizeof items / sizeof *items; i++) {
        json_t *v = isfinite(items[i].v) ? json_real(items[i].v) : json_null();
        if (json_object_set_new(m, items[i].k, v)) {
            json_decref(m);
            return dwf_errorf(err, DWF_ENOMEM, "out of memory for the final metrics");
        }
    }
    if (json_object_set_new(m, "nonzero", json_integer(p->nonzero)) ||
        json_object_set_new(m, "selected_within", json_boolean(res->select_within))) {
        json_decref(m);
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for the final metrics");
    }
    ctx->final_metrics = m;
    return 0;
}

static int local_run(dwf_executor *ex, dwf_job_ctx *ctx, dwf_err *err)
{
    (void)ex;
    dwf_job_hooks h = {
        .ud = ctx,
        .on_epoch = local_on_epoch,
        .on_batch = local_on_batch,
        .on_checkpoint = local_on_checkpoint,
        .on_curve = local_on_curve,
        .cancel = &ctx->cancel,
        .resume = ctx->resume,
        .resume_len = ctx->resume_len,
        .checkpoint_every = ctx->checkpoint_every,
    };
    dwf_job_result res;
    memset(&res, 0, sizeof res);
    h.result = &res;
    dwf_smodel model;
    memset(&model, 0, sizeof model);
    int rc = dwf_job_run(ctx->spec, &h, &model, &ctx->final, err);
    if (rc == 0)
        rc = local_results(ctx, &res, &model.arch, err);
    dwf_job_result_free(&res);
    if (rc == 0) {
        rc = dwf_smodel_save(&model, &ctx->model_blob, &ctx->model_len, err);
        if (rc == 0) {
            int64_t w = 0, nz = 0, pa = 0, pnz = 0;
            dwf_smodel_counts(&model, &w, &nz, &pa, &pnz);
            ctx->model_weights = w;
            ctx->model_nonzero = nz;
            ctx->model_cr = nz > 0 ? (double)w / (double)nz : (double)w;
        }
    }
    dwf_smodel_free(&model);
    return rc;
}

static dwf_executor local_executor = {"local", local_run, NULL, NULL};

dwf_executor *dwf_executor_local(void)
{
    return &local_executor;
}

/* ---- workers ------------------------------------------------------------ */

static int take_pending_cancel(dwf_pool *p, int64_t id)
{
    for (int i = 0; i < p->n_pending; i++) {
        if (p->pending[i] == id) {
            p->pending[i] = p->pending[--p->n_pending];
            return 1;
        }
    }
    return 0;
}

static void fail_job(dwf_pool *p, int64_t id, const char *msg)
{
    dwf_err e;
    if (dwf_store_job_transition(p->store, id, DWF_STORE_BIT(DWF_STORE_RUNNING),
                                 DWF_STORE_FAILED, msg, NULL, &e))
        LOG(p, "job %lld: cannot mark failed: %s", (long long)id, e.msg);
    else
        LOG(p, "job %lld failed: %s", (long long)id, msg);
}

static void finish_job(dwf_pool *p, dwf_job_ctx *ctx, int rc, const dwf_err *err)
{
    dwf_err e;
    int64_t id = ctx->id;
    if (ctx->failed_store) {
        char msg[600];
        snprintf(msg, sizeof msg, "store: %s", ctx->store_err.msg);
        fail_job(p, id, msg);
        return;
    }
    if (rc == 0) {
        dwf_store_model m = {
            .blob = ctx->model_blob,
            .len = ctx->model_len,
            .nonzero = ctx->model_nonzero,
            .weights = ctx->model_weights,
            .cr = ctx->model_cr,
            .etag = NULL,
            .final_metrics = ctx->final_metrics,
        };
        /* the curve first: a job is never seen succeeded without it */
        if (ctx->thresholds &&
            dwf_store_thresholds_put(p->store, id, ctx->thresholds, &e))
            LOG(p, "job %lld: threshold curve not stored: %s", (long long)id, e.msg);
        if (dwf_store_job_succeed(p->store, id, &m, &e)) {
            char msg[600];
            snprintf(msg, sizeof msg, "storing the model failed: %s", e.msg);
            fail_job(p, id, msg);
            return;
        }
        LOG(p, "job %lld succeeded: %lld of %lld weights non-zero (CR %.1f)",
            (long long)id, (long long)ctx->model_nonzero,
            (long long)ctx->model_weights, ctx->model_cr);
        return;
    }
    if (rc == DWF_ECANCELED) {
        int why = atomic_load(&ctx->cancel);
        if (why == DWF_CANCEL_SHUTDOWN) {
            if (dwf_store_job_transition(p->store, id,
                                         DWF_STORE_BIT(DWF_STORE_RUNNING),
                                         DWF_STORE_QUEUED, NULL, NULL, &e))
                LOG(p, "job %lld: cannot requeue: %s", (long long)id, e.msg);
            else
                LOG(p, "job %lld: stopped for shutdown, queued with its "
                    "checkpoint", (long long)id);
            return;
        }
        if (why == DWF_CANCEL_USER) {
            if (dwf_store_job_transition(p->store, id,
                                         DWF_STORE_BIT(DWF_STORE_RUNNING),
                                         DWF_STORE_CANCELED, "canceled by request",
                                         NULL, &e))
                LOG(p, "job %lld: cannot mark canceled: %s", (long long)id, e.msg);
            else
                LOG(p, "job %lld canceled", (long long)id);
            if (dwf_store_checkpoint_delete(p->store, id, &e) &&
                e.code != DWF_STORE_NOTFOUND)
                LOG(p, "job %lld: checkpoint not deleted: %s", (long long)id, e.msg);
            return;
        }
    }
    fail_job(p, id, err->msg[0] ? err->msg : dwf_strerror(rc));
}

static void run_claim(dwf_pool *p, int worker, dwf_store_claim *claim)
{
    dwf_job_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        fail_job(p, claim->id, "out of memory");
        return;
    }
    ctx->id = claim->id;
    ctx->pool = p;
    ctx->worker = worker;
    atomic_init(&ctx->cancel, DWF_CANCEL_NONE);

    pthread_mutex_lock(&p->mu);
    p->running[worker] = ctx;
    if (take_pending_cancel(p, ctx->id))
        atomic_store(&ctx->cancel, DWF_CANCEL_USER);
    else if (p->stopping)
        atomic_store(&ctx->cancel, DWF_CANCEL_SHUTDOWN);
    pthread_mutex_unlock(&p->mu);

    dwf_spec spec;
    memset(&spec, 0, sizeof spec);
    dwf_store_checkpoint ck;
    memset(&ck, 0, sizeof ck);
    dwf_err err;
    dwf_err_clear(&err);
    char field[DWF_FIELD_LEN] = "";
    int have_spec = 0;
    int rc = dwf_spec_parse(claim->spec_json, strlen(claim->spec_json),
                            (const char *const *)p->roots, p->n_roots, &spec,
                            field, &err);
    if (rc) {
        char msg[700];
        snprintf(msg, sizeof msg, "spec%s%s: %s", field[0] ? " field " : "",
                 field, err.msg);
        fail_job(p, ctx->id, msg);
        goto out;
    }
    have_spec = 1;
    /* a job trains with at most its worker's share of the training cores
     * (BLAS is single-threaded: see dwf_pool.h), so the workers together
     * never run more training threads than train_cores */
    int budget = p->budget[worker];
    if (spec.opts.threads <= 0 || spec.opts.threads > budget)
        spec.opts.threads = budget;
    ctx->spec = &spec;
    ctx->checkpoint_every =
        p->checkpoint_every >= 0 ? p->checkpoint_every : spec.checkpoint_every;
    ctx->batch_size = spec.opts.batch_size;
    if (claim->has_checkpoint) {
        rc = dwf_store_checkpoint_get(p->store, ctx->id, &ck, &err);
        if (rc == 0) {
            ctx->resume = ck.blob;
            ctx->resume_len = ck.len;
            ctx->resume_epoch = ck.epoch;
        } else if (rc != DWF_STORE_NOTFOUND) {
            char msg[600];
            snprintf(msg, sizeof msg, "reading the checkpoint: %s", err.msg);
            fail_job(p, ctx->id, msg);
            goto out;
        }
    }
    ctx->t_start = ctx->t_rate = mono_now();
    ctx->t_last_progress = 0;
    ctx->frac_start = (double)ctx->resume_epoch / total_epochs_of(&spec);
    if (ctx->resume)
        LOG(p, "job %lld: resuming from its checkpoint at epoch %d "
            "(%d training thread(s))", (long long)ctx->id, ctx->resume_epoch,
            spec.opts.threads);
    else
        LOG(p, "job %lld started on worker %d (%s executor, %d training "
            "thread(s) of a budget of %d)", (long long)ctx->id, worker,
            p->ex->name, spec.opts.threads, budget);
    dwf_err_clear(&err);
    rc = p->ex->run(p->ex, ctx, &err);
    finish_job(p, ctx, rc, &err);

out:
    pthread_mutex_lock(&p->mu);
    p->running[worker] = NULL;
    pthread_mutex_unlock(&p->mu);
    dwf_store_checkpoint_free(&ck);
    if (have_spec)
        dwf_spec_free(&spec);
    free(ctx->model_blob);
    json_decref(ctx->thresholds);
    json_decref(ctx->final_metrics);
    free(ctx);
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    dwf_pool *p = wa->p;
    int index = wa->index;
    free(wa);
    uint64_t seen = (uint64_t)-1;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stopping && p->gen == seen) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 5; /* safety net: look again now and then */
            if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
                break;
        }
        seen = p->gen;
        int stop = p->stopping;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        for (;;) {
            pthread_mutex_lock(&p->mu);
            stop = p->stopping;
            pthread_mutex_unlock(&p->mu);
            if (stop)
                break;
            dwf_store_claim claim;
            memset(&claim, 0, sizeof claim);
            dwf_err err;
            int rc = dwf_store_job_claim(p->store, &claim, &err);
            if (rc == DWF_STORE_NOTFOUND)
                break;
            if (rc) {
                LOG(p, "worker %d: claiming a job failed: %s", index, err.msg);
                break;
            }
            run_claim(p, index, &claim);
            dwf_store_claim_free(&claim);
        }
    }
    return NULL;
}

/* ---- pool --------------------------------------------------------------- */

int dwf_pool_create(const dwf_pool_config *cfg, dwf_store *store,
                    dwf_executor *ex, dwf_pool **out, dwf_err *err)
{
    *out = NULL;
    if (!cfg || !store || !ex || cfg->workers < 0 || cfg->workers > 1024)
        return dwf_errorf(err, DWF_EINVAL, "pool: bad arguments (workers %d)",
                          cfg ? cfg->workers : -1);
    dwf_pool *p = calloc(1, sizeof *p);
    if (!p)
        return dwf_errorf(err, DWF_ENOMEM, "pool: out of memory");
    p->store = store;
    p->ex = ex;
    p->n_workers = cfg->workers;
    p->checkpoint_every = cfg->checkpoint_every;
    p->train_cores = cfg->train_cores;
    if (p->train_cores <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        p->train_cores = cores > 0 ? (int)cores : 1;
    }
    p->progress_interval = cfg->progress_interval > 0 ? cfg->progress_interval : 0.25;
    p->log = cfg->log;
    p->log_ud = cfg->log_ud;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    int n = p->n_workers > 0 ? p->n_workers : 1;
    p->threads = calloc((size_t)n, sizeof *p->threads);
    p->started = calloc((size_t)n, sizeof *p->started);
    p->running = calloc((size_t)n, sizeof *p->running);
    p->budget = calloc((size_t)n, sizeof *p->budget);
    if (cfg->n_roots > 0)
        p->roots = calloc((size_t)cfg->n_roots, sizeof *p->roots);
    if (!p->threads || !p->started || !p->running || !p->budget ||
        (cfg->n_roots > 0 && !p->roots)) {
        dwf_pool_free(p);
        return dwf_errorf(err, DWF_ENOMEM, "pool: out of memory");
    }
    /* the training cores split over the workers (see dwf_pool.h) */
    for (int i = 0; i < n; i++) {
        int b = p->train_cores / n + (i < p->train_cores % n);
        p->budget[i] = b < 1 ? 1 : b > DWF_MAX_THREADS ? DWF_MAX_THREADS : b;
    }
    if (p->n_workers > p->train_cores)
        LOG(p, "%d workers on %d training core(s): each job needs a thread, so "
            "running jobs may share cores", p->n_workers, p->train_cores);
    for (int i = 0; i < cfg->n_roots; i++) {
        p->roots[i] = strdup(cfg->roots[i]);
        if (!p->roots[i]) {
            dwf_pool_free(p);
            return dwf_errorf(err, DWF_ENOMEM, "pool: out of memory");
        }
        p->n_roots++;
    }
    for (int i = 0; i < p->n_workers; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) {
            dwf_pool_free(p);
            return dwf_errorf(err, DWF_ENOMEM, "pool: out of memory");
        }
        wa->p = p;
        wa->index = i;
        int e = pthread_create(&p->threads[i], NULL, worker_main, wa);
        if (e) {
            free(wa);
            dwf_pool_free(p);
            return dwf_errorf(err, DWF_EIO, "pool: cannot start worker %d: %s",
                              i, strerror(e));
        }
        p->started[i] = 1;
    }
    *out = p;
    return 0;
}

void dwf_pool_notify(dwf_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->gen++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

int dwf_pool_cancel(dwf_pool *p, int64_t id)
{
    int found = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) {
        dwf_job_ctx *c = p->running[i];
        if (c && c->id == id) {
            int expect = DWF_CANCEL_NONE;
            atomic_compare_exchange_strong(&c->cancel, &expect, DWF_CANCEL_USER);
            found = 1;
            break;
        }
    }
    if (!found) {
        /* The job may be between its claim and its registration here. */
        int dup = 0;
        for (int i = 0; i < p->n_pending; i++)
            dup |= p->pending[i] == id;
        if (!dup) {
            if (p->n_pending == PENDING_CANCELS) {
                memmove(p->pending, p->pending + 1,
                        (PENDING_CANCELS - 1) * sizeof *p->pending);
                p->n_pending--;
            }
            p->pending[p->n_pending++] = id;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return found;
}

void dwf_pool_stats(dwf_pool *p, int *running, double *samples_per_sec)
{
    int n = 0;
    double sps = 0;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) {
        if (p->running[i]) {
            n++;
            sps += p->running[i]->samples_per_sec;
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (running)
        *running = n;
    if (samples_per_sec)
        *samples_per_sec = sps;
}

int dwf_pool_workers(const dwf_pool *p)
{
    return p->n_workers;
}

int dwf_pool_budget(const dwf_pool *p, int worker)
{
    if (worker < 0 || worker >= (p->n_workers > 0 ? p->n_workers : 1))
        return 0;
    return p->budget[worker];
}

void dwf_pool_stop(dwf_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    for (int i = 0; i < p->n_workers; i++) {
        dwf_job_ctx *c = p->running[i];
        if (c) {
            int expect = DWF_CANCEL_NONE;
            atomic_compare_exchange_strong(&c->cancel, &expect,
                                           DWF_CANCEL_SHUTDOWN);
        }
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void dwf_pool_free(dwf_pool *p)
{
    if (!p)
        return;
    dwf_pool_stop(p);
    if (p->threads && p->started)
        for (int i = 0; i < p->n_workers; i++)
            if (p->started[i])
                pthread_join(p->threads[i], NULL);
    for (int i = 0; i < p->n_roots; i++)
        free(p->roots[i]);
    free(p->roots);
    free(p->threads);
    free(p->started);
    free(p->running);
    free(p->budget);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
