/*
 * bench_train - training throughput of LeNet-300-100 on Fashion-MNIST at
 * batch 128 for D = 1..4, against the cblas_sgemm ceiling measured on the
 * same shapes in the same run. Prints one JSON object.
 *
 *   bench_train [EPOCHS] [THREADS] [MODE]
 *
 * MODE "lanes" (default): the trainer runs THREADS batch slices in
 * parallel (dwf_train_opts.threads), each with single-threaded sgemm;
 * "blas": one trainer thread, THREADS OpenBLAS threads inside each sgemm.
 * The sgemm ceiling is measured with THREADS OpenBLAS threads either way.
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

int main(int argc, char **argv)
{
    int epochs = argc > 1 ? atoi(argv[1]) : 1;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    int lanes = !(argc > 3 && strcmp(argv[3], "blas") == 0);
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
    printf("{\"threads\": %d, \"mode\": \"%s\", \"blas_threads\": %d, \"epochs\": %d, \"sgemm_gflops\": %.2f, "
           "\"flops_per_sample\": %.0f, \"sgemm_samples_per_sec\": %.0f, \"depths\": {",
           threads, lanes ? "lanes" : "blas", lanes ? 1 : threads, epochs, ceiling,
           fps, ceiling * 1e9 / fps);
    int hidden[2] = {300, 100};
    for (int D = 1; D <= 4; D++) {
        dwf_arch a;
        dwf_train_opts o;
        dwf_train_opts_default(&o);
        o.epochs = epochs;
        o.lambda = 1e-3;
        o.threads = lanes ? threads : 1;
        dwf_trainer *t = NULL;
        if (dwf_arch_mlp(&a, 1, 28, 28, hidden, 2, 10, D, &err) ||
            dwf_trainer_create(&a, &o, &train, NULL, NULL, &t, &err) ||
            dwf_trainer_run(t, NULL, NULL, NULL, NULL, &err)) {
            fprintf(stderr, "bench_train: D=%d: %s\n", D, err.msg);
            return 1;
        }
        double sps = dwf_trainer_metrics(t)->samples_per_sec;
        printf("%s\"%d\": {\"samples_per_sec\": %.0f, \"gflops\": %.2f, "
               "\"of_sgemm\": %.3f}",
               D > 1 ? ", " : "", D, sps, sps * fps * 1e-9, sps * fps * 1e-9 / ceiling);
        dwf_trainer_free(t);
    }
    printf("}}\n");
    dwf_dataset_free(&train);
    return 0;
}
