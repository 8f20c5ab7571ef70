/*
 * dwf_thresh.c - threshold curves of a sparse model and tolerance-based
 * selection on validation accuracy.
 */
#include "dwf_thresh.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void dwf_thresh_opts_default(dwf_thresh_opts *o)
{
    o->per_decade = 4;
    o->max_points = 64;
    o->chance_margin = 0.02;
}

void dwf_thresh_curve_free(dwf_thresh_curve *c)
{
    if (!c)
        return;
    free(c->points);
    memset(c, 0, sizeof *c);
}

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int has_data(const dwf_dataset *d)
{
    return d && d->n > 0;
}

/* Counts, CR and accuracies of m into p. prev (may be NULL) is the point
 * of a lower threshold of the same weights (biases are never cut here),
 * with prev_pnz non-zero weights and biases: when m has as many, the sets
 * are equal (thresholding is monotone), so is the model, and its
 * accuracies are copied instead of evaluated again. */
static int eval_point(const dwf_smodel *m, const dwf_dataset *val,
                      const dwf_dataset *test, const dwf_thresh_point *prev,
                      int64_t prev_pnz, int64_t *pnz, dwf_thresh_point *p,
                      dwf_err *err)
{
    memset(p, 0, sizeof *p);
    p->threshold = (double)m->eps;
    dwf_smodel_counts(m, &p->weights, &p->nonzero, NULL, pnz);
    p->cr = p->nonzero > 0 ? (double)p->weights / (double)p->nonzero : INFINITY;
    for (int i = 0; i < m->arch.n_layers && i < DWF_MAX_LAYERS; i++) {
        if (!dwf_layer_has_weight(m->arch.layers[i].kind))
            continue;
        p->layer_nonzero[i] = m->w[i].nnz;
        p->layer_weights[i] = (int64_t)m->w[i].rows * m->w[i].cols;
    }
    p->val_acc = NAN;
    p->test_acc = NAN;
    if (prev && prev_pnz == *pnz) {
        p->val_acc = prev->val_acc;
        p->test_acc = prev->test_acc;
        return 0;
    }
    double loss;
    int rc = 0;
    if (has_data(val))
        rc = dwf_smodel_evaluate(m, val, &p->val_acc, &loss, err);
    if (!rc && has_data(test))
        rc = dwf_smodel_evaluate(m, test, &p->test_acc, &loss, err);
    return rc;
}

int dwf_thresh_curve_compute(const dwf_smodel *s, const dwf_dataset *val,
                             const dwf_dataset *test, const dwf_thresh_opts *opts,
                             dwf_thresh_curve *out, dwf_err *err)
{
    memset(out, 0, sizeof *out);
    dwf_thresh_opts o;
    dwf_thresh_opts_default(&o);
    if (opts)
        o = *opts;
    if (o.per_decade < 1 || o.per_decade > 100 || o.max_points < 1 ||
        o.max_points > 10000 || !(o.chance_margin >= 0.0 && o.chance_margin < 1.0))
        return dwf_errorf(err, DWF_EINVAL, "threshold curve: bad options "
                          "(per_decade %d, max_points %d, chance_margin %g)",
                          o.per_decade, o.max_points, o.chance_margin);
    if (!isfinite(s->eps) || s->eps < 0.0f)
        return dwf_errorf(err, DWF_EINVAL, "threshold curve: the model's "
                          "threshold %g is not a finite number >= 0",
                          (double)s->eps);
    double t0 = now_sec();
    const dwf_dataset *stop_on = has_data(val) ? val : has_data(test) ? test : NULL;
    int n_classes = s->arch.n_classes > 0 ? s->arch.n_classes : 2;
    double chance = 1.0 / n_classes + o.chance_margin;
    out->points = calloc((size_t)o.max_points, sizeof *out->points);
    if (!out->points)
        return dwf_errorf(err, DWF_ENOMEM, "threshold curve: out of memory");
    double base = s->eps > 0.0f ? (double)s->eps : (double)FLT_EPSILON;
    int rc = 0;
    float prev = -1.0f;
    int64_t prev_pnz = -1;
    for (int k = 0; out->n < o.max_points; k++) {
        /* the first point is the model itself, at its own eps */
        float t = k == 0 ? s->eps
                         : (float)(base * pow(10.0, (double)k / o.per_decade));
        if (!isfinite(t))
            break;
        if (t <= prev)
            continue;
        prev = t;
        dwf_smodel m;
        dwf_thresh_point *p = &out->points[out->n];
        const dwf_thresh_point *prev = out->n > 0 ? p - 1 : NULL;
        int64_t pnz = 0;
        if (k == 0) {
            rc = eval_point(s, val, test, NULL, 0, &pnz, p, err);
        } else {
            rc = dwf_smodel_rethreshold(s, t, NULL, 0, &m, err);
            if (!rc) {
                rc = eval_point(&m, val, test, prev, prev_pnz, &pnz, p, err);
                dwf_smodel_free(&m);
            }
        }
        if (rc)
            break;
        prev_pnz = pnz;
        out->n++;
        double acc = stop_on == val ? p->val_acc : p->test_acc;
        if (p->nonzero == 0 || (stop_on && acc <= chance))
            break;
    }
    if (rc) {
        dwf_thresh_curve_free(out);
        return rc;
    }
    out->seconds = now_sec() - t0;
    return 0;
}

int dwf_thresh_select(const dwf_thresh_curve *c, double dense_val_acc,
                      double max_drop, int *index, int *within, dwf_err *err)
{
    if (!c || c->n < 1)
        return dwf_errorf(err, DWF_EINVAL, "select: the threshold curve is empty");
    if (!isfinite(dense_val_acc) || !isfinite(max_drop) || max_drop < 0.0)
        return dwf_errorf(err, DWF_EINVAL, "select: dense validation accuracy "
                          "%g and max_drop %g must be finite (max_drop >= 0)",
                          dense_val_acc, max_drop);
    int best = -1;
    for (int i = 0; i < c->n; i++) {
        double v = c->points[i].val_acc;
        if (isnan(v))
            return dwf_errorf(err, DWF_EINVAL, "select: threshold point %d has "
                              "no validation accuracy (a validation split is "
                              "required)", i);
        /* a small slack against rounding of equal accuracies */
        if (v >= dense_val_acc - max_drop - 1e-12 &&
            (best < 0 || c->points[i].threshold > c->points[best].threshold))
            best = i;
    }
    *index = best < 0 ? 0 : best;
    if (within)
        *within = best >= 0;
    return 0;
}
