/*
 * dwf_search.h - target-CR search: choosing the penalty strength lambda of
 * successive DWF runs so that the selected model reaches a target
 * compression ratio.
 *
 * The compression ratio of a DWF run grows steeply and monotonically (up
 * to noise) with lambda, so the search brackets the target on log lambda
 * and bisects: runs whose CR is below target*(1 - tolerance) raise the
 * lower end of the bracket, runs above target*(1 + tolerance) lower the
 * upper end. The split point of a bracket whose two ends were both
 * measured is the log-log interpolation of CR between them, kept inside
 * the middle half of the bracket (so each run still removes at least a
 * quarter of it); with one end unmeasured it is the midpoint on log lambda.
 * A run within the tolerance is a hit and ends the search; the best hit is
 * the one with the highest validation accuracy (never test accuracy).
 *
 * dwf_search_next() is a pure function of the runs tried so far (the
 * caller keeps them: dwfd in its store, `dwf train` in memory), so a
 * search survives restarts. Nothing here allocates.
 */
#ifndef DWF_SEARCH_H
#define DWF_SEARCH_H

#include "dwf_err.h"

typedef struct dwf_search_opts {
    double target_cr;   /* > 1 */
    double tolerance;   /* relative, e.g. 0.1 = within 10% (0 < tol < 1) */
    int budget;         /* runs at most (>= 1) */
    double lambda_min;  /* bracket (0 < min < max) */
    double lambda_max;
    double lambda0;     /* first run's lambda; 0 = geometric mid of the bracket */
} dwf_search_opts;

/* Defaults: tolerance 0.1, budget 8, lambda in [1e-4, 0.3], lambda0 0. */
void dwf_search_opts_default(dwf_search_opts *o);
/* DWF_EINVAL naming the bad field ("search.budget", ...) when out of range. */
int dwf_search_opts_check(const dwf_search_opts *o, dwf_err *err);

typedef enum dwf_search_run_state {
    DWF_SEARCH_RUN_PENDING = 0, /* queued or running */
    DWF_SEARCH_RUN_OK,          /* finished: cr and val_acc are valid */
    DWF_SEARCH_RUN_FAILED,      /* training failed (e.g. non-finite loss) */
    DWF_SEARCH_RUN_CANCELED,    /* canceled by the user */
    DWF_SEARCH_RUN_COLLAPSED,   /* finished, but its dense model is at chance
                                   (learned nothing): lambda too large, like
                                   a failed run; never the best */
} dwf_search_run_state;

typedef struct dwf_search_run {
    double lambda;
    dwf_search_run_state state;
    double cr;          /* selected model's CR (INFINITY when all zero) */
    double val_acc;     /* NaN without validation data */
} dwf_search_run;

typedef enum dwf_search_status {
    DWF_SEARCH_NEXT = 0,     /* run *next_lambda next */
    DWF_SEARCH_WAIT,         /* a run is still pending */
    DWF_SEARCH_REACHED,      /* a run is within tolerance (*best) */
    DWF_SEARCH_BUDGET,       /* budget used without a hit (*best = closest) */
    DWF_SEARCH_UNREACHABLE,  /* the bracket cannot hold a hit (*best = closest) */
    DWF_SEARCH_CANCELED,     /* a run was canceled: the search stops */
} dwf_search_status;

typedef struct dwf_search_step {
    dwf_search_status status;
    double next_lambda;      /* DWF_SEARCH_NEXT */
    int best;                /* index into runs, -1 when none finished */
    double lo, hi;           /* bracket on lambda after the runs */
} dwf_search_step;

/* Decides what to do after runs[0..n-1] (in the order they were run).
 * Returns DWF_EINVAL when opts are invalid. */
int dwf_search_next(const dwf_search_opts *o, const dwf_search_run *runs,
                    int n, dwf_search_step *out, dwf_err *err);

/* 1 when cr is within the tolerance of the target. */
int dwf_search_within(const dwf_search_opts *o, double cr);

/* "searching", "reached", "budget", "unreachable", "canceled" (for
 * DWF_SEARCH_NEXT and DWF_SEARCH_WAIT: "searching"). */
const char *dwf_search_status_name(dwf_search_status s);

#endif
