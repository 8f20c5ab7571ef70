/*
 * dwf_sweep.h - target-CR search sweeps in dwfd: a job spec with `search`
 * becomes a sweep whose children are DWF runs at the lambdas that
 * dwf_search_next() (core/dwf_search.h) picks, one at a time.
 *
 * The search state lives in the store only (the sweep's options and its
 * children's results), so dwf_sweep_search_advance() can be called at any
 * time, from any thread, any number of times: it adds the next child only
 * when none is queued or running (the store checks that in the same
 * transaction), and ends the search when dwf_search_next() says so. dwfd
 * calls it when a child ends (dwf_sweep_on_job_end, from the store's
 * listener) and for every unfinished search at start, so a search
 * survives restarts and kill -9.
 *
 * Nothing here keeps state; the caller owns everything it passes in.
 */
#ifndef DWF_SWEEP_H
#define DWF_SWEEP_H

#include <stdint.h>

#include <jansson.h>

#include "dwf_err.h"
#include "dwf_spec.h"
#include "dwf_store.h"

/* A child spec: user_spec (a job spec object with "search") without
 * "search", with train.lambda = lambda and name "<name> λ=<lambda>". New
 * reference, NULL when out of memory. */
json_t *dwf_sweep_search_child(const json_t *user_spec, double lambda);

/* Creates the search sweep of spec (parsed from user_spec, with
 * spec->search.enabled) and its first child, named after the spec.
 * err_field (DWF_FIELD_LEN, may be NULL) names a bad field of the child
 * spec. */
int dwf_sweep_search_start(dwf_store *st, const json_t *user_spec,
                           const dwf_spec *spec, const char *const *roots,
                           int n_roots, int64_t *sweep_id, int64_t *first_job,
                           char *err_field, dwf_err *err);

/* Decides the next step of search sweep id: adds the next child, or ends
 * the search (state, best run and a message in the store). Idempotent. */
int dwf_sweep_search_advance(dwf_store *st, int64_t sweep_id,
                             const char *const *roots, int n_roots, dwf_err *err);

/* Job job_id reached a final state: advances its sweep when that is a
 * search. Errors go to err (the search can be advanced again later). */
int dwf_sweep_on_job_end(dwf_store *st, int64_t job_id, const char *const *roots,
                         int n_roots, dwf_err *err);

/* Advances every search still searching (dwfd start). Returns the first
 * error, after trying them all. */
int dwf_sweep_search_resume(dwf_store *st, const char *const *roots, int n_roots,
                            dwf_err *err);

#endif
