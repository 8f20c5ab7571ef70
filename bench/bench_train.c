/*
 * bench_train - training throughput of LeNet-300-100 on Fashion-MNIST at
 * batch 128 for D = 1..4, against the cblas_sgemm ceiling measured on the
 * same shapes in the same run. Prints one JSON object.
 *
 *   bench_train [EPOCHS] [THREADS] [MODE] [ROUNDS] [DEPTHS]
 *
 * MODE "lanes" (default): the trainer runs THREADS batch slices in
 * parallel (dwf_train_opts.threads), each with single-threaded sgemm;
 * "blas": one trainer thread, THREADS OpenBLAS threads inside each sgemm.
 * The sgemm ceiling is measured with THREADS OpenBLAS threads either way.
 *
 * ROUNDS (default 3): the depths are trained ROUNDS times, interleaved
 * (D = 1, 2, 3, 4, 1, 2, ...), so that a slow patch of a shared machine
 * hits every depth alike; samples/s is the median over the rounds and
 * "vs_d1" the median over the rounds of that round's D / D = 1 ratio.
 * DEPTHS (default "1234"): the depths to train, e.g. "14"; D = 1 is always
 * trained first in a round (the reference of the ratios).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwf_data.h"
#include "dwf_train.h"

#define FM "/usr/share/datasets/fashion-mnist"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The sgemm calls of one training step of an MLP with the given widths at
 * batch b: forward y = x W^T, backward dW = dy^T x and dx = dy W (not for
 * the first layer). Returns GFLOP/s over `reps` steps. */
static double sgemm_ceiling(const int *widths, int n_layers, int b, int reps,
                            double *flops_per_sample)
{
    float *bufs[3 * 8];
    int nb = 0;
    size_t big = 0;
    for (int i = 0; i < n_layers; i++) {
        size_t s = (size_t)widths[i] * widths[i + 1];
        if (s > big)
            big = s;
        if ((size_t)b * widths[i] > big)
            big = (size_t)b * widths[i];
    }
    for (int i = 0; i < 3; i++) {
        bufs[nb] = malloc(big * sizeof(float));
        for (size_t j = 0; j < big; j++)
            bufs[nb][j] = (float)((j * 2654435761u) % 1000) * 1e-3f;
        nb++;
    }
    float *x = bufs[0], *w = bufs[1], *y = bufs[2];
    double flops = 0.0;
    for (int i = 0; i < n_layers; i++) {
        double mk = (double)widths[i] * widths[i + 1];
        flops += 2 * mk * b * (i == 0 ? 2 : 3);
    }
    *flops_per_sample = flops / b;
    double t0 = now();
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < n_layers; i++) {
            int in = widths[i], out = widths[i + 1];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, out, in, 1.0f,
                        x, in, w, in, 0.0f, y, out);
        }
        for (int i = n_layers - 1; i >= 0; i--) {
            int in = widths[i], out = widths[i + 1];
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, b, 1.0f,
                        y, out, x, in, 0.0f, w, in);
            if (i > 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, in, out,
                            1.0f, y, out, w, in, 0.0f, x, in);
        }
    }
    double secs = now() - t0;
    for (int i = 0; i < nb; i++)
        free(bufs[i]);
    return flops * reps / secs * 1e-9;
}

/* The end times of the steps of a run (on_batch is called after each). */
typedef struct step_clock {
    double *end;
    int *inner;      /* 0 for the first and the last batch of an epoch */
    int n, cap;
} step_clock;

static void on_batch(int epoch, int batch, int n_batches, void *ud)
{
    (void)epoch;
    step_clock *c = ud;
    if (c->n < c->cap) {
        c->end[c->n] = now();
        c->inner[c->n] = batch > 1 && batch < n_batches;
        c->n++;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (reorders v). */
static double median_inplace(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Trains LeNet-300-100 at depth D. *sps: training samples/s over the whole
 * run (the trainer's figure); *step_sps: batch size / median step time,
 * which a few steps slowed down by other processes do not move. Returns 0,
 * or -1 on error. */
static int train_once(const dwf_dataset *train, int D, int epochs,
                      int threads, double *sps, double *step_sps)
{
    dwf_err err = {0};
    dwf_arch a;
    dwf_train_opts o;
    dwf_train_opts_default(&o);
    o.epochs = epochs;
    o.lambda = 1e-3;
    o.threads = threads;
    int hidden[2] = {300, 100};
    int steps = epochs * ((train->n + o.batch_size - 1) / o.batch_size);
    step_clock c = {malloc((size_t)steps * sizeof(double)),
                    malloc((size_t)steps * sizeof(int)), 0, steps};
    double *dt = malloc((size_t)steps * sizeof(double));
    dwf_trainer *t = NULL;
    int rc = -1;
    if (!c.end || !c.inner || !dt) {
        fprintf(stderr, "bench_train: out of memory\n");
        goto out;
    }
    if (dwf_arch_mlp(&a, 1, 28, 28, hidden, 2, 10, D, &err) ||
        dwf_trainer_create(&a, &o, train, NULL, NULL, &t, &err) ||
        dwf_trainer_run(t, NULL, on_batch, &c, NULL, &err)) {
        fprintf(stderr, "bench_train: D=%d: %s\n", D, err.msg);
        goto out;
    }
    *sps = dwf_trainer_metrics(t)->samples_per_sec;
    /* full batches only, and not across an epoch's evaluation */
    int n = 0;
    for (int i = 1; i < c.n; i++)
        if (c.inner[i])
            dt[n++] = c.end[i] - c.end[i - 1];
    *step_sps = n > 0 ? o.batch_size / median_inplace(dt, n) : 0.0;
    rc = 0;
out:
    dwf_trainer_free(t);
    free(c.end);
    free(c.inner);
    free(dt);
    return rc;
}

#define MAX_ROUNDS 64

/* Median of the rounds x[0..n), n <= MAX_ROUNDS. */
static double median(const double *x, int n)
{
    double v[MAX_ROUNDS];
    memcpy(v, x, (size_t)n * sizeof *v);
    return median_inplace(v, n);
}

int main(int argc, char **argv)
{
    int epochs = argc > 1 ? atoi(argv[1]) : 1;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int lanes = !(argc > 3 && strcmp(argv[3], "blas") == 0);
    int rounds = argc > 4 ? atoi(argv[4]) : 3;
    const char *dlist = argc > 5 ? argv[5] : "1234";
    int want[5] = {0, 1, 0, 0, 0};
    for (const char *c = dlist; *c; c++)
        if (*c >= '1' && *c <= '4')
            want[*c - '0'] = 1;
    if (epochs < 1 || threads < 1 || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: bench_train [EPOCHS] [THREADS] [lanes|blas] "
                        "[ROUNDS 1..%d] [DEPTHS e.g. 14]\n", MAX_ROUNDS);
        return 2;
    }
    openblas_set_num_threads(threads);
    dwf_err err = {0};
    dwf_dataset train = {0};
    if (dwf_idx_load(FM "/train-images-idx3-ubyte.gz",
                     FM "/train-labels-idx1-ubyte.gz", 10, &train, &err)) {
        fprintf(stderr, "bench_train: %s\n", err.msg);
        return 1;
    }
    const int widths[] = {784, 300, 100, 10};
    double fps;
    double ceiling = sgemm_ceiling(widths, 3, 128, 2000, &fps);
    /* the trainer's threads, or OpenBLAS's */
    openblas_set_num_threads(lanes ? 1 : threads);
    printf("{\"threads\": %d, \"mode\": \"%s\", \"blas_threads\": %d, \"epochs\": %d, "
           "\"rounds\": %d, \"sgemm_gflops\": %.2f, "
           "\"flops_per_sample\": %.0f, \"sgemm_samples_per_sec\": %.0f, \"depths\": {",
           threads, lanes ? "lanes" : "blas", lanes ? 1 : threads, epochs, rounds, ceiling,
           fps, ceiling * 1e9 / fps);
    /* [D][round]: run throughput, median-step throughput, and their
     * ratios to the same round's D = 1 */
    static double sps[5][MAX_ROUNDS], ssps[5][MAX_ROUNDS], ratio[5][MAX_ROUNDS],
        sratio[5][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int D = 1; D <= 4; D++) {
            if (!want[D])
                continue;
            if (train_once(&train, D, epochs, lanes ? threads : 1, &sps[D][r],
                           &ssps[D][r]))
                return 1;
            ratio[D][r] = sps[D][r] / sps[1][r];
            sratio[D][r] = ssps[D][r] / ssps[1][r];
        }
    int first = 1;
    for (int D = 1; D <= 4; D++) {
        if (!want[D])
            continue;
        double v = median(sps[D], rounds);
        printf("%s\"%d\": {\"samples_per_sec\": %.0f, \"vs_d1\": %.3f, "
               "\"step_samples_per_sec\": %.0f, \"step_vs_d1\": %.3f, "
               "\"gflops\": %.2f, \"of_sgemm\": %.3f, \"rounds\": [",
               first ? "" : ", ", D, v, median(ratio[D], rounds),
               median(ssps[D], rounds), median(sratio[D], rounds),
               v * fps * 1e-9, v * fps * 1e-9 / ceiling);
        for (int r = 0; r < rounds; r++)
            printf("%s%.0f", r ? ", " : "", sps[D][r]);
        printf("]}");
        first = 0;
    }
    printf("}}\n");
    dwf_dataset_free(&train);
    return 0;
}
