/*
 * dwf_pool.h - dwfd's worker pool and the executor interface.
 *
 * The pool owns N worker threads. Each worker takes the next queued job
 * from the store (highest priority, then oldest; the claim is atomic in the
 * store), resumes it from its checkpoint when it has one, and hands it to
 * an executor. When no job is queued the workers sleep on a condition
 * variable that dwf_pool_notify() (called on every job submission)
 * signals.
 *
 * The executor is "where a job runs", behind one small interface: the
 * local executor (dwf_executor_local) trains in-process with dwf_job_run();
 * a batch-system executor (Slurm...) would submit the spec elsewhere and
 * report back through the same calls. An executor only runs the job and
 * reports through the dwf_job_ctx_* functions below; all bookkeeping in
 * the store (epoch metrics, progress, checkpoints, the final state and the
 * model) is done by the pool, so every executor behaves the same:
 *
 *   run(ex, ctx, err)
 *     - reads ctx->spec (parsed, caller-owned), ctx->resume/resume_len
 *       (checkpoint to resume from, or NULL), ctx->checkpoint_every and
 *       ctx->cancel (non-zero: stop as soon as possible, leaving a
 *       checkpoint through dwf_job_ctx_checkpoint());
 *     - calls dwf_job_ctx_epoch() after each epoch,
 *       dwf_job_ctx_progress() as batches finish (the pool rate-limits the
 *       store writes) and dwf_job_ctx_checkpoint() with each checkpoint;
 *     - returns 0 after filling ctx->model_blob / model_len (a malloc'd
 *       .dwfm buffer the pool frees) and ctx->final, DWF_ECANCELED when
 *       stopped by ctx->cancel, or another negative code with err filled
 *       (the job then fails with err's text).
 *
 * Cancel: dwf_pool_cancel() sets a running job's cancel flag (reason
 * user: the job ends canceled); dwf_pool_stop() sets it on every running
 * job with reason shutdown: those jobs go back to queued with their
 * checkpoint and resume at the next start.
 *
 * Thread budget (no oversubscription): the pool is given train_cores, the
 * cores training may use, and splits them over its N workers: worker i
 * gets budget_i = train_cores / N cores, plus one for i < train_cores % N
 * (at least 1 each). A job claimed by worker i trains
 * min(spec train.threads, budget_i) batch slices in parallel (a spec with
 * train.threads <= 0 gets the whole budget). Every slice calls BLAS
 * single-threaded: OpenBLAS's thread count is global to the process, so
 * it cannot differ per job, and the caller (dwfd) sets it to 1 once at
 * start; all of a job's parallelism comes from its slices (core/
 * dwf_workers), which also trains faster than one slice calling a
 * multi-threaded BLAS (bench/bench_train.c). So the training threads of
 * all workers together never exceed train_cores, unless N > train_cores,
 * where each job still needs one thread (dwf_pool_create logs a warning).
 *
 * Ownership: the pool borrows the store and the executor (both must
 * outlive it); dwf_pool_free() joins the workers first.
 */
#ifndef DWF_POOL_H
#define DWF_POOL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dwf_err.h"
#include "dwf_spec.h"
#include "dwf_store.h"
#include "dwf_train.h"

/* Log callback of the server modules (the library never prints). */
typedef void (*dwf_log_fn)(void *ud, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Values of dwf_job_ctx.cancel. */
enum {
    DWF_CANCEL_NONE = 0,
    DWF_CANCEL_USER = 1,     /* POST /v1/jobs/{id}/cancel: ends canceled */
    DWF_CANCEL_SHUTDOWN = 2, /* daemon stopping: back to queued */
};

typedef struct dwf_pool dwf_pool;

/* One job being run: what the executor reads and fills. */
typedef struct dwf_job_ctx {
    int64_t id;
    dwf_spec *spec;              /* parsed spec (owned by the pool) */
    const uint8_t *resume;       /* checkpoint or NULL (owned by the pool) */
    size_t resume_len;
    int resume_epoch;            /* epochs done in that checkpoint */
    int checkpoint_every;        /* epochs; 0 = only when canceled */
    atomic_int cancel;           /* DWF_CANCEL_* */
    /* results (run returns 0) */
    uint8_t *model_blob;         /* .dwfm bytes, malloc'd; freed by the pool */
    size_t model_len;
    int64_t model_weights, model_nonzero;
    double model_cr;
    dwf_metrics final;           /* last epoch's metrics */
    json_t *thresholds;          /* threshold curve rows (may stay NULL);
                                    stored on success, freed by the pool */
    json_t *final_metrics;       /* the job's last metrics after threshold
                                    selection (may stay NULL); freed by the pool */
    /* pool-private bookkeeping */
    dwf_pool *pool;
    int worker;
    double t_start;              /* monotonic seconds at start */
    double t_last_progress;
    double frac_start;           /* progress fraction at start (resume) */
    int64_t batches_done;        /* since the last rate sample */
    double t_rate;               /* start of the rate sample */
    _Atomic double samples_per_sec; /* live training throughput */
    int batch_size;
    int failed_store;            /* a store write failed */
    dwf_err store_err;
} dwf_job_ctx;

typedef struct dwf_executor {
    const char *name;            /* "local", ... */
    /* Runs ctx's job; see the top of this file. */
    int (*run)(struct dwf_executor *ex, dwf_job_ctx *ctx, dwf_err *err);
    /* Frees the executor itself (may be NULL for static executors). */
    void (*destroy)(struct dwf_executor *ex);
    void *impl;
} dwf_executor;

/* The in-process executor: dwf_job_run() on the worker thread, then
 * dwf_smodel_save(). Static: nothing to free. */
dwf_executor *dwf_executor_local(void);

/* Reporting calls for executors (thread: the one running ctx). */
/* Appends epoch metrics to the store (wakes SSE listeners through the
 * store's listener). Returns non-zero when the job should stop. */
int dwf_job_ctx_epoch(dwf_job_ctx *ctx, const dwf_metrics *m);
/* Batch progress: epoch (1-based) in progress, batch done out of n. */
void dwf_job_ctx_progress(dwf_job_ctx *ctx, int epoch, int batch, int n);
/* Stores the threshold curve taken after epoch (thresholds.every). 0 or
 * error (the job then fails). */
int dwf_job_ctx_curve(dwf_job_ctx *ctx, int epoch, const json_t *rows);
/* Stores a checkpoint (the latest replaces the previous). 0 or error. */
int dwf_job_ctx_checkpoint(dwf_job_ctx *ctx, const uint8_t *buf, size_t len,
                           int epoch, int64_t step);

typedef struct dwf_pool_config {
    int workers;                 /* >= 0 (0: jobs queue but never run) */
    int train_cores;             /* cores for training, split over the
                                    workers; 0 = every online core */
    int checkpoint_every;        /* < 0 = the spec's checkpoint_every */
    const char *const *roots;    /* data roots for dwf_spec_parse */
    int n_roots;
    double progress_interval;    /* seconds between progress writes; 0 = 0.25 */
    dwf_log_fn log;              /* may be NULL */
    void *log_ud;
} dwf_pool_config;

/* Creates the pool and starts its workers (which look for queued jobs at
 * once). The config's strings are copied. */
int dwf_pool_create(const dwf_pool_config *cfg, dwf_store *store,
                    dwf_executor *ex, dwf_pool **out, dwf_err *err);
/* Wakes idle workers: a job was queued. Cheap; any thread. */
void dwf_pool_notify(dwf_pool *p);
/* Asks running job id to stop (reason user). Returns 1 when the job is
 * running here, else 0 (the request is remembered briefly for a job being
 * claimed at this moment). */
int dwf_pool_cancel(dwf_pool *p, int64_t id);
/* Number of jobs running and summed live samples/s of the running jobs. */
void dwf_pool_stats(dwf_pool *p, int *running, double *samples_per_sec);
int dwf_pool_workers(const dwf_pool *p);
/* Training threads a job on worker i may use (its share of train_cores). */
int dwf_pool_budget(const dwf_pool *p, int worker);
/* Begins shutdown: no new claims; every running job gets reason shutdown.
 * Returns at once; dwf_pool_free() waits for the workers. */
void dwf_pool_stop(dwf_pool *p);
/* Stops (if not yet), joins the workers and frees the pool. NULL ok. */
void dwf_pool_free(dwf_pool *p);

#endif
