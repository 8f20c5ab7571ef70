/*
 * bench_thresh - the cost of a threshold curve (issue 6) against one
 * training epoch. Trains LeNet-300-100 (784-300-100-10) on Fashion-MNIST
 * with DWF, D = 3, lambda 3e-3, SGD lr 0.2 with the cosine schedule, batch
 * 128, 10% of the training set held out for validation; collapses it at
 * float epsilon; then, in ROUNDS interleaved rounds (so that a slow patch
 * of the shared machine hits all alike), times
 *
 *   - one training epoch (a fresh trainer of the same run, 1 epoch; the
 *     trainer's own training time, evaluation excluded),
 *   - the curve (validation 6,000 + test 10,000 samples, 4 points a
 *     decade) with THREADS threads and with 1 thread,
 *   - the same curve from scratch (opts.from_scratch: dwf_smodel_evaluate
 *     of every distinct model, the code the curve had before),
 *   - for the trained model, the curve as a job computes it: with THREADS
 *     threads, starting from every dense layer's outputs that the
 *     trainer's evaluation after the last epoch kept
 *     (dwf_trainer_keep_layer0, dwf_trainer_layer_out),
 *
 * checks that the curves are identical point by point, and prints the
 * medians and the ratio curve / epoch, then one JSON line. MODEL.dwfm
 * arguments are timed the same way on the same data (their curves against
 * this run's epoch).
 *
 *   bench_thresh [EPOCHS] [THREADS] [ROUNDS] [MODEL.dwfm ...]
 *   (defaults 3, 2, 3)
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwf_data.h"
#include "dwf_sparse.h"
#include "dwf_thresh.h"
#include "dwf_train.h"

#define FM "/usr/share/datasets/fashion-mnist"
#define MAX_ROUNDS 16
#define MAX_MODELS 4

static void die(const char *what, const dwf_err *e)
{
    fprintf(stderr, "bench_thresh: %s: %s\n", what, e->msg);
    exit(1);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void train_opts(dwf_train_opts *o, int epochs, int threads)
{
    dwf_train_opts_default(o);
    o->epochs = epochs;
    o->batch_size = 128;
    o->lambda = 3e-3;
    o->optim.lr = 0.2;
    o->optim.sched = DWF_SCHED_COSINE;
    o->threads = threads;
    o->seed = 1;
}

static int same_curve(const dwf_thresh_curve *a, const dwf_thresh_curve *b)
{
    if (a->n != b->n)
        return 0;
    for (int i = 0; i < a->n; i++) {
        const dwf_thresh_point *p = &a->points[i], *q = &b->points[i];
        if (p->threshold != q->threshold || p->nonzero != q->nonzero ||
            p->val_acc != q->val_acc || p->test_acc != q->test_acc)
            return 0;
    }
    return 1;
}

typedef struct model_times {
    const char *name;
    dwf_smodel s;
    double inc[MAX_ROUNDS], inc1[MAX_ROUNDS], scratch[MAX_ROUNDS], job[MAX_ROUNDS];
    float *layer0[2];        /* the trainer's, for the job's curve (or NULL) */
    float *later[2][2];      /* ... of the later dense layers (300 -> 100, -> 10) */
    dwf_thresh_curve curve; /* the last incremental one */
    int identical;
} model_times;

/* One round of curve timings of m (THREADS, 1 thread, from scratch). */
static void time_curves(model_times *m, int r, int threads, const dwf_dataset *val,
                        const dwf_dataset *test)
{
    dwf_err e;
    dwf_thresh_opts o;
    dwf_thresh_opts_default(&o);
    dwf_thresh_curve a, b, c;
    o.threads = threads;
    if (dwf_thresh_curve_compute(&m->s, val, test, &o, &a, &e))
        die("curve", &e);
    o.threads = 1;
    if (dwf_thresh_curve_compute(&m->s, val, test, &o, &b, &e))
        die("curve", &e);
    o.from_scratch = 1;
    if (dwf_thresh_curve_compute(&m->s, val, test, &o, &c, &e))
        die("curve", &e);
    m->inc[r] = a.seconds;
    m->inc1[r] = b.seconds;
    m->scratch[r] = c.seconds;
    m->identical &= same_curve(&a, &c) && same_curve(&b, &c);
    m->job[r] = NAN;
    if (m->layer0[0] && m->layer0[1]) {
        dwf_thresh_curve d;
        o.from_scratch = 0;
        o.threads = threads;
        for (int k = 0; k < 2; k++) {
            o.layer0[k] = m->layer0[k];
            o.later[k][0] = m->later[k][0];
            o.later[k][1] = m->later[k][1];
        }
        if (dwf_thresh_curve_compute(&m->s, val, test, &o, &d, &e))
            die("curve", &e);
        m->job[r] = d.seconds;
        m->identical &= same_curve(&d, &c);
        dwf_thresh_curve_free(&d);
    }
    dwf_thresh_curve_free(&m->curve);
    m->curve = a;
    dwf_thresh_curve_free(&b);
    dwf_thresh_curve_free(&c);
}

typedef struct epoch_log {
    double sps[64], time[64]; /* samples/s of training; the epoch's wall time */
    int n;
} epoch_log;

static int on_epoch(const dwf_metrics *m, void *ud)
{
    epoch_log *l = ud;
    if (l->n < 64) {
        l->time[l->n] = m->epoch_time;
        l->sps[l->n++] = m->samples_per_sec;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int epochs = argc > 1 ? atoi(argv[1]) : 3;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    if (epochs < 1 || threads < 1 || threads > 8 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: bench_thresh [EPOCHS] [THREADS 1..8] [ROUNDS 1..%d] "
                        "[MODEL.dwfm ...]\n", MAX_ROUNDS);
        return 2;
    }
    openblas_set_num_threads(1); /* as dwf and dwfd run */
    dwf_err e;
    dwf_dataset all, train, val, test;
    if (dwf_idx_load(FM "/train-images-idx3-ubyte.gz", FM "/train-labels-idx1-ubyte.gz",
                     10, &all, &e) ||
        dwf_idx_load(FM "/t10k-images-idx3-ubyte.gz", FM "/t10k-labels-idx1-ubyte.gz",
                     10, &test, &e))
        die("Fashion-MNIST", &e);
    if (dwf_dataset_split(&all, all.n / 10, 1, &train, &val, &e))
        die("split", &e);
    dwf_dataset_free(&all);
    dwf_arch a;
    const int hidden[] = {300, 100};
    if (dwf_arch_mlp(&a, 1, 28, 28, hidden, 2, 10, 3, &e))
        die("arch", &e);

    /* the run whose model the curve is of */
    dwf_train_opts o;
    train_opts(&o, epochs, threads);
    dwf_trainer *t = NULL;
    epoch_log log = {{0}, {0}, 0};
    if (dwf_trainer_create(&a, &o, &train, &val, &test, &t, &e) ||
        dwf_trainer_keep_layer0(t, INT_MAX, &e) ||
        dwf_trainer_run(t, on_epoch, NULL, &log, NULL, &e))
        die("training", &e);
    int n_models = 1;
    model_times mt[MAX_MODELS];
    memset(mt, 0, sizeof mt);
    mt[0].name = "trained";
    const dwf_dataset *sets[2] = {&val, &test};
    /* the trainer's kept outputs of every dense layer (copies: the
     * epochs timed below train it on) */
    const int units[3] = {hidden[0], hidden[1], 10};
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 3; j++) {
            size_t sz = (size_t)sets[k]->n * units[j] * sizeof(float);
            const float *kept = dwf_trainer_layer_out(t, k, j);
            float *copy = kept ? malloc(sz) : NULL;
            if (!copy)
                die("the trainer's layer outputs", &e);
            memcpy(copy, kept, sz);
            if (j == 0)
                mt[0].layer0[k] = copy;
            else
                mt[0].later[k][j - 1] = copy;
        }
    if (dwf_smodel_from_model(dwf_trainer_model(t), dwf_trainer_norm(t), (float)DWF_EPS_F32,
                              NULL, NULL, 0, &mt[0].s, &e))
        die("sparse model", &e);
    dwf_norm norm = *dwf_trainer_norm(t);
    dwf_trainer_free(t);
    for (int i = 4; i < argc && n_models < MAX_MODELS; i++) {
        mt[n_models].name = argv[i];
        if (dwf_smodel_read_file(&mt[n_models].s, argv[i], &e))
            die(argv[i], &e);
        mt[n_models].s.norm = norm; /* the data as this run normalizes it */
        n_models++;
    }
    for (int k = 0; k < n_models; k++)
        mt[k].identical = 1;

    /* rounds: an epoch, then every curve */
    double ep[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        dwf_train_opts o1;
        train_opts(&o1, 1, threads);
        epoch_log l1 = {{0}, {0}, 0};
        if (dwf_trainer_create(&a, &o1, &train, NULL, NULL, &t, &e) ||
            dwf_trainer_run(t, on_epoch, NULL, &l1, NULL, &e))
            die("training", &e);
        dwf_trainer_free(t);
        ep[r] = train.n / l1.sps[0];
        for (int k = 0; k < n_models; k++)
            time_curves(&mt[k], r, threads, &val, &test);
    }
    double epoch_s = median(ep, rounds);
    /* the evaluation a job runs after every epoch (val and test, dense and
     * at eps), from the last epoch of the first run */
    double eval_s = log.time[log.n - 1] - train.n / log.sps[log.n - 1];
    double job_epoch = epoch_s + eval_s;
    printf("LeNet-300-100, D = 3, lambda 3e-3, %d epochs, %d threads; training epoch "
           "(%d samples) %.3f s (median of %d)\n", epochs, threads, train.n, epoch_s, rounds);
    printf("a job's epoch adds its evaluation: %.3f s, so %.3f s\n", eval_s, job_epoch);
    printf("curve on %d validation + %d test samples, 4 points a decade\n", val.n, test.n);
    printf("\n model | points | models | CR at stop | curve %dT s | /epoch | curve 1T s | "
           "/epoch | from scratch s | /epoch | speed-up %dT | in a job %dT s | /epoch | /job epoch | same\n",
           threads, threads, threads);
    char json[4096];
    size_t jl = 0;
    json[0] = 0;
    for (int k = 0; k < n_models; k++) {
        model_times *m = &mt[k];
        double inc = median(m->inc, rounds), inc1 = median(m->inc1, rounds),
               scr = median(m->scratch, rounds), job = median(m->job, rounds);
        const dwf_thresh_point *last = &m->curve.points[m->curve.n - 1];
        printf(" %s | %d | %d | %.0f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.1fx | "
               "%.3f | %.3f | %.3f | %s\n",
               m->name, m->curve.n, m->curve.stats.models, last->cr, inc, inc / epoch_s,
               inc1, inc1 / epoch_s, scr, scr / epoch_s, scr / inc, job, job / epoch_s,
               job / job_epoch, m->identical ? "yes" : "NO");
        jl += (size_t)snprintf(json + jl, sizeof json - jl,
                               "%s{\"model\": \"%s\", \"points\": %d, \"curve_seconds\": %.4f, "
                               "\"curve_seconds_1t\": %.4f, \"scratch_seconds\": %.4f, "
                               "\"ratio\": %.4f, \"ratio_1t\": %.4f, \"scratch_ratio\": %.4f, "
                               "\"job_seconds\": %.4f, \"job_ratio\": %.4f, "
                               "\"job_epoch_ratio\": %.4f, "
                               "\"recomputed\": %lld, \"reference\": %lld, \"samples\": %lld, "
                               "\"identical\": %s}",
                               k ? ", " : "", k ? "file" : "trained", m->curve.n, inc, inc1, scr,
                               inc / epoch_s, inc1 / epoch_s, scr / epoch_s,
                               isnan(job) ? -1.0 : job, isnan(job) ? -1.0 : job / epoch_s,
                               isnan(job) ? -1.0 : job / job_epoch,
                               (long long)m->curve.stats.recomputed,
                               (long long)m->curve.stats.reference,
                               (long long)m->curve.stats.samples,
                               m->identical ? "true" : "false");
        if (jl >= sizeof json)
            jl = sizeof json - 1;
    }
    printf("{\"epochs\": %d, \"threads\": %d, \"epoch_seconds\": %.4f, "
           "\"eval_seconds\": %.4f, \"models\": [%s]}\n", epochs, threads, epoch_s, eval_s, json);
    int ok = 1;
    for (int k = 0; k < n_models; k++) {
        ok &= mt[k].identical;
        dwf_thresh_curve_free(&mt[k].curve);
        dwf_smodel_free(&mt[k].s);
        for (int d = 0; d < 2; d++) {
            free(mt[k].layer0[d]);
            free(mt[k].later[d][0]);
            free(mt[k].later[d][1]);
        }
    }
    dwf_dataset_free(&train);
    dwf_dataset_free(&val);
    dwf_dataset_free(&test);
    return ok ? 0 : 1;
}
