/*
 * dwf_search.c - target-CR search on log lambda (see dwf_search.h).
 */
#include "dwf_search.h"

#include <math.h>
#include <stddef.h>

/* Brackets narrower than this (relative, on lambda) cannot be split. */
#define DWF_SEARCH_MIN_WIDTH 1e-3

void dwf_search_opts_default(dwf_search_opts *o)
{
    o->target_cr = 10.0;
    o->tolerance = 0.1;
    o->budget = 8;
    o->lambda_min = 1e-4;
    o->lambda_max = 0.3;
    o->lambda0 = 0.0;
}

int dwf_search_opts_check(const dwf_search_opts *o, dwf_err *err)
{
    if (!(o->target_cr > 1.0) || !isfinite(o->target_cr))
        return dwf_errorf(err, DWF_EINVAL,
                          "search.target_cr must be a finite number > 1 (got %g)",
                          o->target_cr);
    if (!(o->tolerance > 0.0 && o->tolerance < 1.0))
        return dwf_errorf(err, DWF_EINVAL,
                          "search.tolerance must be in (0, 1) (got %g)", o->tolerance);
    if (o->budget < 1 || o->budget > 100)
        return dwf_errorf(err, DWF_EINVAL,
                          "search.budget must be 1 to 100 runs (got %d)", o->budget);
    if (!(o->lambda_min > 0.0) || !isfinite(o->lambda_min))
        return dwf_errorf(err, DWF_EINVAL,
                          "search.lambda_min must be a finite number > 0 (got %g)",
                          o->lambda_min);
    if (!(o->lambda_max > o->lambda_min * (1.0 + DWF_SEARCH_MIN_WIDTH)) ||
        !isfinite(o->lambda_max))
        return dwf_errorf(err, DWF_EINVAL,
                          "search.lambda_max must be finite and > search.lambda_min "
                          "(%g) (got %g)", o->lambda_min, o->lambda_max);
    if (o->lambda0 != 0.0 &&
        !(o->lambda0 >= o->lambda_min && o->lambda0 <= o->lambda_max))
        return dwf_errorf(err, DWF_EINVAL,
                          "the first lambda (%g) must lie in [search.lambda_min, "
                          "search.lambda_max] = [%g, %g]",
                          o->lambda0, o->lambda_min, o->lambda_max);
    return 0;
}

int dwf_search_within(const dwf_search_opts *o, double cr)
{
    return cr >= o->target_cr * (1.0 - o->tolerance) &&
           cr <= o->target_cr * (1.0 + o->tolerance);
}

const char *dwf_search_status_name(dwf_search_status s)
{
    switch (s) {
    case DWF_SEARCH_REACHED:
        return "reached";
    case DWF_SEARCH_BUDGET:
        return "budget";
    case DWF_SEARCH_UNREACHABLE:
        return "unreachable";
    case DWF_SEARCH_CANCELED:
        return "canceled";
    case DWF_SEARCH_NEXT:
    case DWF_SEARCH_WAIT:
        break;
    }
    return "searching";
}

/* Distance of a finished run's CR from the target on log scale. */
static double miss(const dwf_search_opts *o, const dwf_search_run *r)
{
    if (r->state != DWF_SEARCH_RUN_OK || isnan(r->cr))
        return HUGE_VAL;
    if (isinf(r->cr))
        return 1e300;
    return fabs(log(r->cr / o->target_cr));
}

/* Index of the best finished run: among hits the highest validation
 * accuracy (ties and missing accuracies: closest CR); without hits the
 * closest CR. -1 when no run finished OK. */
static int best_run(const dwf_search_opts *o, const dwf_search_run *runs, int n,
                    int *hit)
{
    int best = -1, best_hit = 0;
    for (int i = 0; i < n; i++) {
        const dwf_search_run *r = &runs[i];
        if (r->state != DWF_SEARCH_RUN_OK)
            continue;
        int h = dwf_search_within(o, r->cr);
        if (best < 0 || (h && !best_hit)) {
            best = i;
            best_hit = h;
            continue;
        }
        if (h != best_hit)
            continue;
        const dwf_search_run *b = &runs[best];
        int better;
        if (h && !isnan(r->val_acc) && !isnan(b->val_acc) && r->val_acc != b->val_acc)
            better = r->val_acc > b->val_acc;
        else if (h && !isnan(r->val_acc) != !isnan(b->val_acc))
            better = !isnan(r->val_acc);
        else
            better = miss(o, r) < miss(o, b);
        if (better)
            best = i;
    }
    *hit = best_hit;
    return best;
}

int dwf_search_next(const dwf_search_opts *o, const dwf_search_run *runs,
                    int n, dwf_search_step *out, dwf_err *err)
{
    int rc = dwf_search_opts_check(o, err);
    if (rc)
        return rc;
    if (n < 0 || (n > 0 && !runs))
        return dwf_errorf(err, DWF_EINVAL, "search: bad run list");
    double low = o->target_cr * (1.0 - o->tolerance);
    double high = o->target_cr * (1.0 + o->tolerance);
    double lo = o->lambda_min, hi = o->lambda_max;
    double lo_cr = NAN, hi_cr = NAN; /* CR measured at the ends, else NaN */
    int pending = 0, canceled = 0;
    for (int i = 0; i < n; i++) {
        const dwf_search_run *r = &runs[i];
        switch (r->state) {
        case DWF_SEARCH_RUN_PENDING:
            pending = 1;
            continue;
        case DWF_SEARCH_RUN_CANCELED:
            canceled = 1;
            continue;
        case DWF_SEARCH_RUN_FAILED:
        case DWF_SEARCH_RUN_COLLAPSED:
            /* a run that blows up or learns nothing is taken as "lambda
             * too large" */
            if (r->lambda < hi) {
                hi = r->lambda;
                hi_cr = NAN;
            }
            continue;
        case DWF_SEARCH_RUN_OK:
            break;
        }
        if (r->cr < low && r->lambda >= lo) {
            lo = r->lambda;
            lo_cr = r->cr;
        } else if (r->cr > high && r->lambda <= hi) {
            hi = r->lambda;
            hi_cr = r->cr;
        }
    }
    int hit = 0;
    out->best = best_run(o, runs, n, &hit);
    out->lo = lo;
    out->hi = hi;
    out->next_lambda = 0.0;
    if (canceled) {
        out->status = DWF_SEARCH_CANCELED;
        return 0;
    }
    if (hit) {
        out->status = DWF_SEARCH_REACHED;
        return 0;
    }
    if (pending) {
        out->status = DWF_SEARCH_WAIT;
        return 0;
    }
    if (n >= o->budget) {
        out->status = DWF_SEARCH_BUDGET;
        return 0;
    }
    if (!(hi > lo * (1.0 + DWF_SEARCH_MIN_WIDTH))) {
        out->status = DWF_SEARCH_UNREACHABLE;
        return 0;
    }
    if (n == 0 && o->lambda0 > 0.0) { /* the first run: exactly as asked */
        out->status = DWF_SEARCH_NEXT;
        out->next_lambda = o->lambda0;
        return 0;
    }
    double llo = log(lo), lhi = log(hi), x;
    if (isfinite(lo_cr) && isfinite(hi_cr) && lo_cr > 0 && hi_cr > lo_cr) {
        /* log-log interpolation of CR, kept in the middle half */
        double f = (log(o->target_cr) - log(lo_cr)) / (log(hi_cr) - log(lo_cr));
        f = f < 0.25 ? 0.25 : f > 0.75 ? 0.75 : f;
        x = llo + f * (lhi - llo);
    } else {
        x = 0.5 * (llo + lhi);
    }
    out->status = DWF_SEARCH_NEXT;
    out->next_lambda = exp(x);
    return 0;
}
