/*
 * dwf_workers.h - a small fixed team of threads that run one function
 * together: dwf_workers_run(w, fn, arg) calls fn(arg, 0) on the calling
 * thread and fn(arg, i) for i = 1..n-1 on n - 1 persistent helper threads,
 * and returns when all calls have returned (a fork-join, no queue).
 *
 * Helpers wait for work by spinning briefly, then sleeping on a condition
 * variable, so an idle team costs no CPU. A dwf_workers is owned by whoever
 * created it (a trainer's optimizer) and is used by one caller thread at a
 * time; dwf_workers_free() stops and joins the helpers. No global state.
 */
#ifndef DWF_WORKERS_H
#define DWF_WORKERS_H

#include "dwf_err.h"

#define DWF_MAX_THREADS 8

typedef void (*dwf_work_fn)(void *arg, int lane);

typedef struct dwf_workers dwf_workers;

/* A team of n threads (1 <= n <= DWF_MAX_THREADS) including the caller's. */
int dwf_workers_create(int n, dwf_workers **out, dwf_err *err);
void dwf_workers_free(dwf_workers *w);

int dwf_workers_count(const dwf_workers *w);

/* fn(arg, lane) for every lane 0..n-1 at once; lane 0 runs on the caller.
 * Returns after the last one finishes; their writes are then visible. */
void dwf_workers_run(dwf_workers *w, dwf_work_fn fn, void *arg);

#endif
