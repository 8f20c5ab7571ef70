/*
 * dwf_sweep.c - target-CR search sweeps in dwfd (see dwf_sweep.h).
 */
#include "dwf_sweep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dwf_search.h"

json_t *dwf_sweep_search_child(const json_t *user_spec, double lambda)
{
    json_t *c = json_deep_copy(user_spec);
    if (!c)
        return NULL;
    json_object_del(c, "search");
    json_t *train = json_object_get(c, "train");
    if (!json_is_object(train)) {
        train = json_object();
        if (!train || json_object_set_new(c, "train", train)) {
            json_decref(c);
            return NULL;
        }
    }
    const char *base = json_string_value(json_object_get(user_spec, "name"));
    char name[128];
    snprintf(name, sizeof name, "%.90s \xce\xbb=%.4g", base ? base : "search", lambda);
    if (json_object_set_new(train, "lambda", json_real(lambda)) ||
        json_object_set_new(c, "name", json_string(name))) {
        json_decref(c);
        return NULL;
    }
    return c;
}

/* Parses the child of user_spec at lambda into *spec (caller frees). */
static int child_spec(const json_t *user_spec, double lambda,
                      const char *const *roots, int n_roots, dwf_spec *spec,
                      char *err_field, dwf_err *err)
{
    memset(spec, 0, sizeof *spec);
    json_t *c = dwf_sweep_search_child(user_spec, lambda);
    char *text = c ? json_dumps(c, JSON_COMPACT) : NULL;
    json_decref(c);
    if (!text)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for a search run's spec");
    int rc = dwf_spec_parse(text, strlen(text), roots, n_roots, spec, err_field, err);
    free(text);
    return rc;
}

static json_t *opts_json(const dwf_search_opts *o)
{
    return json_pack("{s:f,s:f,s:i,s:f,s:f,s:f}", "target_cr", o->target_cr,
                     "tolerance", o->tolerance, "budget", o->budget, "lambda_min",
                     o->lambda_min, "lambda_max", o->lambda_max, "lambda0", o->lambda0);
}

static int opts_from_json(const json_t *j, dwf_search_opts *o, dwf_err *err)
{
    dwf_search_opts_default(o);
    json_t *v;
    if ((v = json_object_get(j, "target_cr")))
        o->target_cr = json_number_value(v);
    if ((v = json_object_get(j, "tolerance")))
        o->tolerance = json_number_value(v);
    if ((v = json_object_get(j, "budget")))
        o->budget = (int)json_integer_value(v);
    if ((v = json_object_get(j, "lambda_min")))
        o->lambda_min = json_number_value(v);
    if ((v = json_object_get(j, "lambda_max")))
        o->lambda_max = json_number_value(v);
    if ((v = json_object_get(j, "lambda0")))
        o->lambda0 = json_number_value(v);
    return dwf_search_opts_check(o, err);
}

int dwf_sweep_search_start(dwf_store *st, const json_t *user_spec,
                           const dwf_spec *spec, const char *const *roots,
                           int n_roots, int64_t *sweep_id, int64_t *first_job,
                           char *err_field, dwf_err *err)
{
    if (!spec->search.enabled)
        return dwf_errorf(err, DWF_EINVAL, "the spec has no search");
    dwf_search_step step;
    int rc = dwf_search_next(&spec->search.opts, NULL, 0, &step, err);
    if (rc)
        return rc;
    dwf_spec child;
    rc = child_spec(user_spec, step.next_lambda, roots, n_roots, &child, err_field, err);
    if (rc)
        return rc;
    dwf_store_job_new jn;
    dwf_store_job_new_from_spec(&jn, &child);
    /* lambda0 as run: the first run's lambda (the bracket's geometric
     * middle when the spec gives no train.lambda) */
    dwf_search_opts so_run = spec->search.opts;
    so_run.lambda0 = step.next_lambda;
    json_t *so = opts_json(&so_run);
    if (!so)
        rc = dwf_errorf(err, DWF_ENOMEM, "out of memory");
    else
        rc = dwf_store_search_create(st, spec->name, user_spec, so, &jn, sweep_id,
                                     first_job, err);
    json_decref(so);
    dwf_spec_free(&child);
    return rc;
}

static dwf_search_run_state run_state(const dwf_store_search_run *r)
{
    switch (r->state) {
    case DWF_STORE_QUEUED:
    case DWF_STORE_RUNNING:
        return DWF_SEARCH_RUN_PENDING;
    case DWF_STORE_SUCCEEDED:
        return isnan(r->cr)     ? DWF_SEARCH_RUN_FAILED
               : r->collapsed ? DWF_SEARCH_RUN_COLLAPSED
                              : DWF_SEARCH_RUN_OK;
    case DWF_STORE_CANCELED:
        return DWF_SEARCH_RUN_CANCELED;
    default:
        return DWF_SEARCH_RUN_FAILED;
    }
}

/* The message stored with a finished search. */
static void describe(const dwf_search_opts *o, const dwf_search_step *step,
                     const dwf_store_search_run *runs, int n, char *buf, size_t len)
{
    const dwf_store_search_run *b = step->best >= 0 ? &runs[step->best] : NULL;
    char best[200] = "no run finished";
    if (b)
        snprintf(best, sizeof best, "job %lld (lambda %.4g): CR %.4g, validation "
                 "accuracy %.4f, test accuracy %.4f", (long long)b->job_id, b->lambda,
                 b->cr, b->val_acc, b->test_acc);
    switch (step->status) {
    case DWF_SEARCH_REACHED:
        snprintf(buf, len, "reached CR %g within %g%% after %d runs; best %s",
                 o->target_cr, 100 * o->tolerance, n, best);
        break;
    case DWF_SEARCH_BUDGET:
        snprintf(buf, len, "budget of %d runs used without reaching CR %g within "
                 "%g%%; closest %s", o->budget, o->target_cr, 100 * o->tolerance, best);
        break;
    case DWF_SEARCH_UNREACHABLE:
        snprintf(buf, len, "CR %g within %g%% is not reachable in lambda [%g, %g] "
                 "(the CR jumps over it between lambda %.4g and %.4g); closest %s",
                 o->target_cr, 100 * o->tolerance, o->lambda_min, o->lambda_max,
                 step->lo, step->hi, best);
        break;
    case DWF_SEARCH_CANCELED:
        snprintf(buf, len, "canceled: a run was canceled; best so far %s", best);
        break;
    default:
        snprintf(buf, len, "searching");
    }
}

int dwf_sweep_search_advance(dwf_store *st, int64_t sweep_id,
                             const char *const *roots, int n_roots, dwf_err *err)
{
    json_t *so = NULL, *base = NULL;
    dwf_store_search_run *rows = NULL;
    dwf_search_run *runs = NULL;
    int n = 0;
    char state[16];
    int rc = dwf_store_search_get(st, sweep_id, &so, &base, state, &rows, &n, err);
    if (rc)
        return rc;
    if (strcmp(state, "searching") != 0)
        goto done;
    dwf_search_opts o;
    if ((rc = opts_from_json(so, &o, err)))
        goto done;
    runs = calloc((size_t)n + 1, sizeof *runs);
    if (!runs) {
        rc = dwf_errorf(err, DWF_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        runs[i].lambda = rows[i].lambda;
        runs[i].state = run_state(&rows[i]);
        runs[i].cr = rows[i].cr;
        runs[i].val_acc = rows[i].val_acc;
    }
    dwf_search_step step;
    if ((rc = dwf_search_next(&o, runs, n, &step, err)))
        goto done;
    if (step.status == DWF_SEARCH_WAIT)
        goto done;
    if (step.status == DWF_SEARCH_NEXT) {
        dwf_spec child;
        char field[DWF_FIELD_LEN] = "";
        dwf_err pe;
        if (child_spec(base, step.next_lambda, roots, n_roots, &child, field, &pe)) {
            char msg[700];
            snprintf(msg, sizeof msg, "run %d (lambda %.4g) has an invalid spec: %s%s%s",
                     n + 1, step.next_lambda, field, field[0] ? ": " : "", pe.msg);
            rc = dwf_store_search_finish(st, sweep_id, "failed", 0, msg, err);
            goto done;
        }
        dwf_store_job_new jn;
        dwf_store_job_new_from_spec(&jn, &child);
        int added;
        rc = dwf_store_search_add(st, sweep_id, n, &jn, NULL, &added, err);
        dwf_spec_free(&child);
        goto done;
    }
    char msg[700];
    describe(&o, &step, rows, n, msg, sizeof msg);
    rc = dwf_store_search_finish(st, sweep_id, dwf_search_status_name(step.status),
                                 step.best >= 0 ? rows[step.best].job_id : 0, msg, err);
done:
    json_decref(so);
    json_decref(base);
    free(rows);
    free(runs);
    return rc;
}

int dwf_sweep_on_job_end(dwf_store *st, int64_t job_id, const char *const *roots,
                         int n_roots, dwf_err *err)
{
    json_t *job = NULL;
    int rc = dwf_store_job_get(st, job_id, &job, err);
    if (rc)
        return rc == DWF_STORE_NOTFOUND ? 0 : rc;
    json_int_t sid = json_integer_value(json_object_get(job, "sweep_id"));
    json_decref(job);
    if (sid <= 0)
        return 0;
    rc = dwf_sweep_search_advance(st, sid, roots, n_roots, err);
    return rc == DWF_STORE_NOT_SEARCH ? 0 : rc; /* a grid sweep: nothing to do */
}

int dwf_sweep_search_resume(dwf_store *st, const char *const *roots, int n_roots,
                            dwf_err *err)
{
    int64_t *ids = NULL;
    int n = 0;
    int rc = dwf_store_search_active(st, &ids, &n, err);
    if (rc)
        return rc;
    int first = 0;
    for (int i = 0; i < n; i++) {
        dwf_err e;
        int r = dwf_sweep_search_advance(st, ids[i], roots, n_roots, &e);
        if (r && !first) {
            first = r;
            if (err)
                *err = e;
        }
    }
    free(ids);
    return first;
}
