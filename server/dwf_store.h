/*
 * dwf_store.h - dwfd's persistent state in one SQLite database: jobs,
 * sweeps, per-epoch metrics, the latest checkpoint of each job, the final
 * sparse model of each job and threshold rows.
 *
 * Schema: the numbered migrations schema/NNN_*.sql, embedded into the
 * binary at build time (build/store_sql.c) and applied forward at open in
 * one transaction; PRAGMA user_version is the schema version. A database
 * written by a newer dwfd (user_version above the newest migration) is
 * refused with DWF_EFORMAT.
 *
 * Durability: WAL journal, synchronous=NORMAL by default. A committed
 * transaction survives a crash of the process (kill -9) - the WAL is
 * replayed at the next open; after an OS crash or power loss the last
 * few commits may roll back (the database stays consistent). Set
 * dwf_store_opts.sync_full for fsync on every commit.
 *
 * Threading: every function below is thread-safe once dwf_store_open()
 * has returned; dwf_store_close() must be called after every other thread
 * has stopped using the store. Writes go through ONE writer connection
 * guarded by a mutex (short transactions: BEGIN IMMEDIATE ... COMMIT).
 * Reads take a connection from a pool (mutex-protected free list; a new
 * connection is opened when the list is empty) and give it back before
 * returning, so under WAL readers never wait for the writer nor the writer
 * for readers. Connections are opened SQLITE_OPEN_NOMUTEX: each is used by
 * one thread at a time. Every statement is prepared once per connection
 * with bound parameters and cached.
 *
 * Ownership: returned json_t values are new references the caller
 * json_decref()s; returned strings and blobs are malloc'd and the caller
 * free()s them (dwf_store_claim_free / dwf_store_model_free /
 * dwf_store_checkpoint_free free the structs' members). Arguments are
 * borrowed (never stolen).
 *
 * Errors: 0 on success or a negative code with a message in err:
 *   DWF_EINVAL          bad argument (e.g. malformed cursor, spec not a
 *                       JSON object, unknown state name)
 *   DWF_ENOMEM          allocation failed
 *   DWF_EIO             SQLite failed (message carries sqlite3_errmsg)
 *   DWF_EFORMAT         the database file is not a dwf store / too new
 *   DWF_STORE_NOTFOUND  the job / sweep / checkpoint / model does not exist
 *                       (HTTP 404)
 *   DWF_STORE_CONFLICT  the job is not in a state allowing the operation,
 *                       e.g. delete of a queued/running job (HTTP 409)
 *
 * Times are stored as unix seconds (REAL); JSON renders them as ISO-8601
 * UTC strings "2026-11-28T12:00:00Z". JSON shapes are those of
 * .notes/api.md.
 */
#ifndef DWF_STORE_H
#define DWF_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dwf_err.h"
#include "dwf_spec.h"
#include "dwf_train.h"

/* Store-specific return codes (beside core/dwf_err.h's DWF_E*). */
enum {
    DWF_STORE_NOTFOUND = -20, /* no such row: job, sweep, checkpoint, model */
    DWF_STORE_CONFLICT = -21, /* the job's state forbids the operation */
    DWF_STORE_NOT_SEARCH = -22, /* the sweep is a grid, not a lambda search */
};

/* Job states, as stored and as rendered ("queued", ...). */
typedef enum dwf_store_state {
    DWF_STORE_QUEUED = 0,
    DWF_STORE_RUNNING,
    DWF_STORE_SUCCEEDED,
    DWF_STORE_FAILED,
    DWF_STORE_CANCELED,
    DWF_STORE_NSTATES
} dwf_store_state;

/* Bit of a state, for the from_mask of dwf_store_job_transition(). */
#define DWF_STORE_BIT(st) (1u << (st))
#define DWF_STORE_ANY 0xffu
#define DWF_STORE_FINISHED                                                   \
    (DWF_STORE_BIT(DWF_STORE_SUCCEEDED) | DWF_STORE_BIT(DWF_STORE_FAILED) |  \
     DWF_STORE_BIT(DWF_STORE_CANCELED))

/* "queued", ... ; "?" for an out-of-range value. */
const char *dwf_store_state_name(dwf_store_state st);
/* The state of a name, or -1 when name is not a state. */
int dwf_store_state_parse(const char *name);
/* Short name of a code, including the store's ("not found", "conflict");
 * falls back to dwf_strerror(). */
const char *dwf_store_strerror(int code);

typedef struct dwf_store dwf_store;

typedef struct dwf_store_opts {
    int busy_timeout_ms; /* 0 = 5000: wait for a lock held by another process */
    int sync_full;       /* 1 = synchronous=FULL (fsync every commit) */
} dwf_store_opts;

/* Opens (creating when missing, with its parent folder) the database at
 * path, sets WAL / busy timeout / foreign keys, and migrates the schema
 * forward. opts may be NULL for the defaults. */
int dwf_store_open(const char *path, const dwf_store_opts *opts,
                   dwf_store **out, dwf_err *err);
/* Closes every connection. NULL is a no-op. */
void dwf_store_close(dwf_store *s);

/* Schema version of the open database (PRAGMA user_version) and the newest
 * one this binary knows. */
int dwf_store_schema_version(dwf_store *s, int *version, dwf_err *err);
int dwf_store_latest_version(void);

/* ------------------------------------------------------------------ */
/* Change notification                                                 */

typedef enum dwf_store_event {
    DWF_STORE_EV_CREATED = 0, /* job created (arg: sweep id or 0) */
    DWF_STORE_EV_STATE,       /* job state changed (arg: new dwf_store_state) */
    DWF_STORE_EV_EPOCH,       /* epoch metrics appended (arg: epoch) */
    DWF_STORE_EV_PROGRESS,    /* progress updated (arg: epoch) */
    DWF_STORE_EV_DELETED,     /* job deleted (arg: 0) */
} dwf_store_event;

/* fn is called after a write has COMMITTED, on the writing thread, outside
 * the store's locks (fn may call back into the store). Set it once, before
 * other threads use the store; NULL removes it. dwf_store_requeue_running
 * reports one EV_STATE per job. */
typedef void (*dwf_store_event_fn)(void *ud, dwf_store_event ev,
                                   int64_t job_id, int64_t arg);
void dwf_store_set_listener(dwf_store *s, dwf_store_event_fn fn, void *ud);

/* ------------------------------------------------------------------ */
/* Jobs                                                                */

/* A new job. Strings are borrowed. */
typedef struct dwf_store_job_new {
    const char *spec_json;       /* canonical spec, a JSON object (required) */
    const char *name;            /* NULL = "job" */
    int priority;                /* higher runs first */
    int64_t sweep_id;            /* 0 = none (set by dwf_store_sweep_create) */
    /* summary fields copied from the spec, for tables and sweep curves */
    const char *method;          /* "dwf", "magnitude", ... (NULL = "dwf") */
    int depth;
    double lambda;
    double target_cr;            /* <= 0 or NaN = null */
    int64_t seed;
    int epochs;                  /* planned epochs (progress.epochs) */
    const char *idempotency_key; /* NULL = none */
} dwf_store_job_new;

/* Fills j from a parsed spec (borrowing spec->json and spec->name; the
 * spec must outlive j's use). target_cr is left null for method "dwf". */
void dwf_store_job_new_from_spec(dwf_store_job_new *j, const dwf_spec *spec);

/* Inserts a queued job. With an idempotency key already used, nothing is
 * inserted and *id is the existing job's id with *existed = 1 (the spec is
 * not compared). existed may be NULL. */
int dwf_store_job_create(dwf_store *s, const dwf_store_job_new *j,
                         int64_t *id, int *existed, dwf_err *err);

/* The job created with idempotency key `key` into *id, or
 * DWF_STORE_NOTFOUND when no job has it (a read; any thread). */
int dwf_store_job_find_key(dwf_store *s, const char *key, int64_t *id,
                           dwf_err *err);

/* The job object of .notes/api.md (with "spec", "progress", "metrics",
 * "model", "links"). */
int dwf_store_job_get(dwf_store *s, int64_t id, json_t **out, dwf_err *err);

/* State of a job (cheap). */
int dwf_store_job_state(dwf_store *s, int64_t id, dwf_store_state *state,
                        dwf_err *err);

/* Flags of dwf_store_job_list. */
#define DWF_STORE_LIST_SUMMARY 1 /* omit "spec" and "metrics" from each job */

/* Newest first (by id). state < 0 = every state, else only that state.
 * limit <= 0 = 50, capped at 1000. cursor: NULL/"" for the first page, or
 * a next_cursor returned before (opaque; malformed = DWF_EINVAL).
 * *jobs receives a JSON array of job objects; *next_cursor a malloc'd
 * cursor for the next page, or NULL when this page is the last. Pages
 * neither repeat nor skip jobs, even while jobs are created. */
int dwf_store_job_list(dwf_store *s, int state, int limit, const char *cursor,
                       int flags, json_t **jobs, char **next_cursor,
                       dwf_err *err);

/* Number of jobs in each state (counts[DWF_STORE_NSTATES]). */
int dwf_store_count(dwf_store *s, int64_t counts[DWF_STORE_NSTATES],
                    dwf_err *err);

/* A claimed job, for a worker. Free with dwf_store_claim_free. */
typedef struct dwf_store_claim {
    int64_t id;
    char *spec_json;     /* canonical spec text */
    char *name;
    int priority;
    int64_t sweep_id;    /* 0 = none */
    int epoch;           /* epochs in the checkpoint (0 without one) */
    int has_checkpoint;  /* 1 when a checkpoint exists (dwf_store_checkpoint_get) */
} dwf_store_claim;

/* Atomically takes the next queued job (highest priority, then oldest),
 * marks it running with started_at = now, and fills *c. Returns
 * DWF_STORE_NOTFOUND when no job is queued. Never gives the same job to
 * two callers. A resumed job's metrics of epochs after its checkpoint
 * (c->epoch) are deleted, since the run computes them again; its last
 * metrics and progress go back to the checkpoint's epoch. */
int dwf_store_job_claim(dwf_store *s, dwf_store_claim *c, dwf_err *err);
void dwf_store_claim_free(dwf_store_claim *c);

/* Moves job id to state `to` when its current state is in from_mask
 * (DWF_STORE_BIT(...) | ..., DWF_STORE_ANY), else DWF_STORE_CONFLICT.
 * error (may be NULL) is stored as the job's error text (NULL clears it).
 * Entering running sets started_at; entering a finished state sets
 * finished_at; entering queued clears finished_at. prev (may be NULL)
 * receives the state before the call (also on CONFLICT).
 * Examples: cancel of a queued job: from_mask = BIT(QUEUED), to = CANCELED;
 * a worker failing its job: BIT(RUNNING) -> FAILED with the message. */
int dwf_store_job_transition(dwf_store *s, int64_t id, unsigned from_mask,
                             dwf_store_state to, const char *error,
                             dwf_store_state *prev, dwf_err *err);
/* Same, from any state. */
int dwf_store_job_set_state(dwf_store *s, int64_t id, dwf_store_state to,
                            const char *error, dwf_err *err);

/* Progress of a running job: epoch (1-based epoch in progress), batch
 * (batches done in it), batches per epoch, eta_seconds (< 0 or NaN =
 * null). epochs <= 0 keeps the stored value. One small UPDATE: cheap
 * enough for every few hundred ms. */
int dwf_store_job_progress(dwf_store *s, int64_t id, int epoch, int epochs,
                           int batch, int batches, double eta_seconds,
                           dwf_err *err);

/* Turns every running job back to queued (at daemon start, after a crash
 * or kill). Checkpoints are kept so the jobs resume. *n (may be NULL)
 * receives how many jobs were requeued. */
int dwf_store_requeue_running(dwf_store *s, int *n, dwf_err *err);

/* Deletes a finished job (succeeded/failed/canceled) with its metrics,
 * checkpoint, model and thresholds. DWF_STORE_CONFLICT when queued or
 * running, DWF_STORE_NOTFOUND when absent. */
int dwf_store_job_delete(dwf_store *s, int64_t id, dwf_err *err);

/* ------------------------------------------------------------------ */
/* Metrics                                                             */

/* The epoch metrics object of .notes/api.md for m (NaN -> null). New
 * reference, or NULL when out of memory. */
json_t *dwf_store_metrics_to_json(const dwf_metrics *m);

/* Appends (or replaces, for the same epoch) the epoch metrics object
 * `metrics` of job id: stores its JSON text and its main numbers as
 * columns, and in the SAME transaction makes it the job's last metrics and
 * sets the job's progress to the end of that epoch. metrics must hold an
 * integer "epoch" >= 1. */
int dwf_store_metrics_append(dwf_store *s, int64_t id, const json_t *metrics,
                             dwf_err *err);

/* Metrics of job id with epoch > since, ascending: *out is a JSON array of
 * metrics objects. DWF_STORE_NOTFOUND when the job does not exist. */
int dwf_store_metrics_list(dwf_store *s, int64_t id, int since, json_t **out,
                           dwf_err *err);

/* ------------------------------------------------------------------ */
/* Checkpoints (the latest of each job)                                */

/* Replaces job id's checkpoint atomically (copying blob). */
int dwf_store_checkpoint_put(dwf_store *s, int64_t id, int epoch,
                             int64_t step, const void *blob, size_t len,
                             dwf_err *err);

typedef struct dwf_store_checkpoint {
    int epoch;
    int64_t step;
    uint8_t *blob; /* malloc'd */
    size_t len;
    double created_at;
} dwf_store_checkpoint;

/* DWF_STORE_NOTFOUND when job id has no checkpoint. */
int dwf_store_checkpoint_get(dwf_store *s, int64_t id,
                             dwf_store_checkpoint *out, dwf_err *err);
void dwf_store_checkpoint_free(dwf_store_checkpoint *c);
int dwf_store_checkpoint_delete(dwf_store *s, int64_t id, dwf_err *err);

/* ------------------------------------------------------------------ */
/* Models                                                              */

typedef struct dwf_store_model {
    const uint8_t *blob;        /* the .dwfm bytes (put: borrowed) */
    size_t len;
    int64_t nonzero;
    int64_t weights;
    double cr;
    const char *etag;           /* put: NULL = computed (crc32 of the blob) */
    const json_t *final_metrics;/* put: may be NULL; when set, becomes the
                                   job's last metrics (e.g. after threshold
                                   selection) without adding an epoch row */
} dwf_store_model;

/* In ONE transaction: stores job id's model (replacing any), marks the job
 * succeeded with finished_at = now and progress complete, clears its error
 * and deletes its checkpoint. DWF_STORE_CONFLICT unless the job is
 * running (or queued). */
int dwf_store_job_succeed(dwf_store *s, int64_t id, const dwf_store_model *m,
                          dwf_err *err);

typedef struct dwf_store_model_row {
    uint8_t *blob;  /* malloc'd */
    size_t len;
    int64_t nonzero;
    int64_t weights;
    double cr;
    char etag[64];  /* quoted, ready for an ETag header */
    double created_at;
} dwf_store_model_row;

/* DWF_STORE_NOTFOUND when job id has no model. with_blob = 0 leaves blob
 * NULL (len is still the size). */
int dwf_store_model_get(dwf_store *s, int64_t id, int with_blob,
                        dwf_store_model_row *out, dwf_err *err);
void dwf_store_model_free(dwf_store_model_row *m);

/* ------------------------------------------------------------------ */
/* Sweeps                                                              */

/* Creates the sweep and its n child jobs in ONE transaction (the
 * children's sweep_id is set by the store; their idempotency keys are
 * ignored). base and grid are JSON values stored as text. child_ids (may
 * be NULL) receives the n job ids. */
int dwf_store_sweep_create(dwf_store *s, const char *name, const json_t *base,
                           const json_t *grid, const dwf_store_job_new *children,
                           int n, int64_t *sweep_id, int64_t *child_ids,
                           dwf_err *err);

/* {"id","name","state","created_at","base","grid","jobs":[job summaries,
 * oldest first],"counts":{"queued":n,...}} read in one snapshot. The
 * sweep's state: "queued" when every job is queued, "running" while any
 * job is queued or running, else "failed" when any failed, else
 * "canceled" when any was canceled, else "succeeded". */
int dwf_store_sweep_get(dwf_store *s, int64_t id, json_t **out, dwf_err *err);

/* {"sweeps": [...]} newest first: each sweep as above without "jobs",
 * "base" and "grid", with "n_jobs". */
int dwf_store_sweep_list(dwf_store *s, json_t **out, dwf_err *err);

/* Curve rows of the sweep's succeeded jobs (ascending id): a JSON array of
 * {"job_id","method","depth","lambda","target_cr","seed","cr",
 * "sparse_test_acc","test_acc"} (cr from the model when present, else the
 * last metrics). The caller adds "pareto" and series. */
int dwf_store_sweep_curve(dwf_store *s, int64_t id, json_t **out,
                          dwf_err *err);

/* ------------------------------------------------------------------ */
/* Target-CR search sweeps (dwf_sweep.h drives them)                   */

/* Creates a search sweep: base is the user's spec (with its "search"),
 * search the options object, first the first child. One transaction. */
int dwf_store_search_create(dwf_store *s, const char *name, const json_t *base,
                            const json_t *search, const dwf_store_job_new *first,
                            int64_t *sweep_id, int64_t *child_id, dwf_err *err);

/* One child of a search sweep, as the search reads it. */
typedef struct dwf_store_search_run {
    int64_t job_id;
    double lambda;
    dwf_store_state state;
    double cr;          /* the stored (selected) model's CR; NaN when none */
    double val_acc;     /* selected_val_acc, else sparse_val_acc; NaN when none */
    double test_acc;    /* the stored model's sparse test accuracy */
    int collapsed;      /* its metrics say "collapsed": true (its dense
                           model is at chance) */
} dwf_store_search_run;

/* A search sweep's stored options (*search, new reference), base spec
 * (*base, new reference), search state (state[16]) and children in id
 * order (*runs malloc'd, caller frees; *n). NOTFOUND when the sweep does
 * not exist; DWF_STORE_NOT_SEARCH when it is a grid sweep. base may be
 * NULL. */
int dwf_store_search_get(dwf_store *s, int64_t sweep_id, json_t **search,
                         json_t **base, char state[16],
                         dwf_store_search_run **runs, int *n, dwf_err *err);

/* Adds child j when the sweep is still 'searching', has exactly
 * n_expected children and none of them is queued or running; else
 * nothing and *added = 0. One transaction, so concurrent callers cannot
 * add the same run twice. */
int dwf_store_search_add(dwf_store *s, int64_t sweep_id, int n_expected,
                         const dwf_store_job_new *j, int64_t *job_id,
                         int *added, dwf_err *err);

/* Ends a search that is still 'searching': its state ("reached",
 * "budget", "unreachable", "canceled", "failed"), best child (0 = none)
 * and a message. A search already ended is left as it is. */
int dwf_store_search_finish(dwf_store *s, int64_t sweep_id, const char *state,
                            int64_t best_job, const char *message, dwf_err *err);

/* Ids of the searches still 'searching' (*ids malloc'd; caller frees). */
int dwf_store_search_active(dwf_store *s, int64_t **ids, int *n, dwf_err *err);

/* ------------------------------------------------------------------ */
/* Thresholds (threshold sweep of a finished job)                      */

/* Replaces job id's threshold rows with rows, a JSON array of objects
 * {"threshold", "cr", "val_acc", "test_acc", ...} (idx = array index;
 * each whole object is kept as JSON). */
int dwf_store_thresholds_put(dwf_store *s, int64_t id, const json_t *rows,
                             dwf_err *err);
/* The stored objects in idx order (an empty array when none; NOTFOUND
 * when the job does not exist). */
int dwf_store_thresholds_get(dwf_store *s, int64_t id, json_t **out,
                             dwf_err *err);

/* Curves taken during training (thresholds.every): epoch's curve rows
 * (an array, kept as JSON) replace any stored for that epoch. */
int dwf_store_epoch_thresholds_put(dwf_store *s, int64_t id, int epoch,
                                   const json_t *rows, dwf_err *err);
/* The rows of epoch's curve; NOTFOUND when the job or that curve does not
 * exist. */
int dwf_store_epoch_thresholds_get(dwf_store *s, int64_t id, int epoch,
                                   json_t **out, dwf_err *err);
/* The epochs that have a curve, ascending, as a JSON array of integers
 * (NOTFOUND when the job does not exist). */
int dwf_store_epoch_thresholds_list(dwf_store *s, int64_t id, json_t **out,
                                    dwf_err *err);

/* The end-of-run curves of a sweep's succeeded children: a JSON array of
 * {"job_id", "points": [...]} in job id order (jobs without a curve are
 * left out). NOTFOUND when the sweep does not exist. */
int dwf_store_sweep_thresholds(dwf_store *s, int64_t id, json_t **out,
                               dwf_err *err);

#endif
