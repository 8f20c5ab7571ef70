/*
 * bench_sparse - sparse inference speed: LeNet-300-100 (784-300-100-10)
 * at compression ratios 10, 50 and 100 (a random sparsity pattern: random
 * normal weights thresholded at the magnitude that keeps 1/CR of them),
 * the sparse kernels (crossover > 1: CSR / sliced ELL everywhere) against
 * the dense cblas_sgemm / sgemv path of the same code (crossover 0), at
 * batch 1 and 128; then the crossover density of one 784->300 layer, where
 * the sparse kernels stop being faster than dense. One BLAS thread.
 *
 * Inputs are real Fashion-MNIST test images ($DWF_FMNIST_DIR, default
 * /usr/share/datasets/fashion-mnist), scaled as training does by default
 * (x / 255); batch-1 calls cycle through 256 different images, batch-128
 * calls through two batches. Without the files the inputs are uniform
 * random (printed, and "input" in the JSON says so).
 *
 * Each figure is the median of 7 rounds; in every round the sparse and the
 * dense model run back to back, each for about SECONDS_PER_POINT / 14.
 * Prints a table and one JSON line.
 *
 *   bench_sparse [SECONDS_PER_POINT]   (default 0.3)
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwf_data.h"
#include "dwf_model.h"
#include "dwf_rng.h"
#include "dwf_sparse.h"

#define N_IMG 256
#define BIG_B 128
#define ROUNDS 7

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double g_budget = 0.3;
static const float *g_x; /* N_IMG normalized inputs */
static int g_dim;
static float *g_z;

/* One model at one batch size: its workspace and the next input. */
typedef struct {
    const dwf_smodel *s;
    dwf_sws *ws;
    int b, pos;
} runner;

static void runner_init(runner *r, const dwf_smodel *s, int b)
{
    dwf_err e;
    r->s = s;
    r->b = b;
    r->pos = 0;
    if (dwf_sws_create(s, b, &r->ws, &e)) {
        fprintf(stderr, "bench_sparse: %s\n", e.msg);
        exit(1);
    }
}

/* reps forward calls, each on the next b images; seconds per sample. */
static double run(runner *r, long reps)
{
    dwf_err e;
    double t0 = now();
    for (long k = 0; k < reps; k++) {
        if (dwf_smodel_forward(r->s, r->ws, g_x + (size_t)r->pos * g_dim, r->b,
                               g_z, &e)) {
            fprintf(stderr, "bench_sparse: %s\n", e.msg);
            exit(1);
        }
        r->pos = (r->pos + r->b) % N_IMG;
    }
    return (now() - t0) / ((double)reps * r->b);
}

/* Calls that take about g_budget / (2 ROUNDS) seconds. */
static long calibrate(runner *r)
{
    long reps = 1;
    run(r, 1); /* warm up */
    while (run(r, reps) * (double)reps * r->b < g_budget / (2 * ROUNDS) &&
           reps < (1L << 30))
        reps *= 2;
    return reps;
}

/* Median microseconds per sample of the sparse (t[0]) and the dense (t[1])
 * model at batch b, measured in interleaved rounds. */
static void time_pair(const dwf_smodel *sp, const dwf_smodel *de, int b,
                      double t[2])
{
    runner r[2];
    runner_init(&r[0], sp, b);
    runner_init(&r[1], de, b);
    long reps[2] = {calibrate(&r[0]), calibrate(&r[1])};
    double m[2][ROUNDS];
    for (int k = 0; k < ROUNDS; k++)
        for (int v = 0; v < 2; v++) {
            int u = k % 2 ? 1 - v : v; /* alternate which runs first */
            m[u][k] = run(&r[u], reps[u]);
        }
    for (int v = 0; v < 2; v++) {
        qsort(m[v], ROUNDS, sizeof(double), cmp_double);
        t[v] = m[v][ROUNDS / 2] * 1e6;
        dwf_sws_free(r[v].ws);
    }
}

/* Models of arch whose weights are N(0, 0.05^2) thresholded to keep a share
 * 1 / cr of them (one global magnitude threshold): *sp with the sparse
 * kernels everywhere, *de with the dense ones. */
static int make_pair(const dwf_arch *a, double cr, uint64_t seed,
                     dwf_smodel *sp, dwf_smodel *de)
{
    dwf_model *m = NULL;
    dwf_err e;
    if (dwf_model_create(a, 1, &m, &e)) {
        fprintf(stderr, "bench_sparse: %s\n", e.msg);
        return -1;
    }
    dwf_rng r;
    dwf_rng_seed(&r, seed);
    int64_t n = 0;
    for (int i = 0; i < m->n_params; i++) {
        dwf_param *p = &m->params[i];
        for (int64_t j = 0; j < p->n; j++)
            p->w[j] = (float)(0.05 * dwf_rng_normal(&r));
        if (p->decay)
            n += p->n;
    }
    float *mag = malloc((size_t)n * sizeof *mag);
    int64_t k = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].decay)
            for (int64_t j = 0; j < m->params[i].n; j++)
                mag[k++] = fabsf(m->params[i].w[j]);
    qsort(mag, (size_t)n, sizeof *mag, cmp_float);
    int64_t keep = (int64_t)llround((double)n / cr);
    float eps = keep >= n ? 0.0f : mag[n - keep];
    free(mag);
    int rc = dwf_smodel_from_model(m, NULL, eps, NULL, NULL, 0, sp, &e);
    if (!rc && (rc = dwf_smodel_from_model(m, NULL, eps, NULL, NULL, 0, de, &e)))
        dwf_smodel_free(sp);
    if (!rc && ((rc = dwf_smodel_set_crossover(sp, 2.0, &e)) ||
                (rc = dwf_smodel_set_crossover(de, 0.0, &e)))) {
        dwf_smodel_free(sp);
        dwf_smodel_free(de);
    }
    if (rc)
        fprintf(stderr, "bench_sparse: %s\n", e.msg);
    dwf_model_free(m);
    return rc;
}

/* N_IMG Fashion-MNIST test images scaled as training does (x / 255), or
 * uniform random numbers when the files are missing; returns the source. */
static const char *load_inputs(float *x, int dim)
{
    const char *dir = getenv("DWF_FMNIST_DIR");
    if (!dir || !*dir)
        dir = "/usr/share/datasets/fashion-mnist";
    char ip[1024], lp[1024];
    snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte.gz", dir);
    dwf_dataset d;
    dwf_err e;
    if (dwf_idx_load(ip, lp, 10, &d, &e) == 0 && d.dim == dim && d.n >= N_IMG) {
        dwf_norm norm;
        dwf_norm_fit(&norm, DWF_NORM_SCALE, &d);
        dwf_dataset_range(&d, &norm, 0, N_IMG, x, NULL);
        dwf_dataset_free(&d);
        return "fashion-mnist t10k";
    }
    fprintf(stderr, "bench_sparse: no Fashion-MNIST test set (%s): uniform "
            "random inputs\n", ip);
    dwf_rng r;
    dwf_rng_seed(&r, 1);
    for (int i = 0; i < N_IMG * dim; i++)
        x[i] = (float)dwf_rng_uniform(&r);
    return "uniform random";
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_budget = atof(argv[1]);
    openblas_set_num_threads(1);
    dwf_arch a;
    dwf_err e;
    const int hidden[] = {300, 100};
    if (dwf_arch_mlp(&a, 1, 28, 28, hidden, 2, 10, 1, &e)) {
        fprintf(stderr, "bench_sparse: %s\n", e.msg);
        return 1;
    }
    g_dim = 784;
    float *x = malloc((size_t)N_IMG * g_dim * sizeof *x);
    g_z = malloc((size_t)BIG_B * 300 * sizeof *g_z); /* up to 300 outputs */
    const char *src = load_inputs(x, g_dim);
    g_x = x;
    int zeros = 0;
    for (int i = 0; i < N_IMG * g_dim; i++)
        zeros += x[i] == 0.0f;

    printf("LeNet-300-100 forward, microseconds per sample (1 BLAS thread); "
           "input: %s, %.0f%% zeros\n", src, 100.0 * zeros / (N_IMG * g_dim));
    printf("%6s %9s | %10s %10s %7s | %10s %10s %7s\n", "CR", "nnz",
           "b1 sparse", "b1 dense", "speedup", "b128 sparse", "b128 dense",
           "speedup");
    const double crs[] = {10, 50, 100};
    char json[4096];
    int jn = snprintf(json, sizeof json, "{\"input\": \"%s\", \"lenet300\": [",
                      src);
    for (int c = 0; c < 3; c++) {
        dwf_smodel sp, de;
        if (make_pair(&a, crs[c], 7 + (uint64_t)c, &sp, &de))
            return 1;
        int64_t w, nz;
        dwf_smodel_counts(&sp, &w, &nz, NULL, NULL);
        double t[2][2];
        time_pair(&sp, &de, 1, t[0]);
        time_pair(&sp, &de, BIG_B, t[1]);
        printf("%6.0f %9lld | %10.3f %10.2f %6.1fx | %11.3f %10.3f %6.1fx\n",
               crs[c], (long long)nz, t[0][0], t[0][1], t[0][1] / t[0][0],
               t[1][0], t[1][1], t[1][1] / t[1][0]);
        jn += snprintf(json + jn, sizeof json - (size_t)jn,
                       "%s{\"cr\": %g, \"nnz\": %lld, \"b1_sparse_us\": %.3f, "
                       "\"b1_dense_us\": %.3f, \"b128_sparse_us\": %.4f, "
                       "\"b128_dense_us\": %.4f}",
                       c ? ", " : "", crs[c], (long long)nz, t[0][0], t[0][1],
                       t[1][0], t[1][1]);
        dwf_smodel_free(&sp);
        dwf_smodel_free(&de);
    }

    /* crossover: one dense layer 784 -> 300 at rising density */
    printf("\nOne 784->300 layer: microseconds per sample, sparse vs dense\n");
    printf("%8s | %9s %9s | %10s %10s\n", "density", "b1 sparse", "b1 dense",
           "b128 sparse", "b128 dense");
    dwf_arch one;
    const int none[] = {0};
    dwf_arch_mlp(&one, 1, 28, 28, none, 0, 300, 1, &e);
    const double dens[] = {0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35,
                           0.4, 0.5, 0.7, 1.0};
    const int nd = (int)(sizeof dens / sizeof *dens);
    double cross[2] = {NAN, NAN};
    jn += snprintf(json + jn, sizeof json - (size_t)jn, "], \"crossover\": [");
    for (int i = 0; i < nd; i++) {
        dwf_smodel sp, de;
        if (make_pair(&one, 1.0 / dens[i], 100 + (uint64_t)i, &sp, &de))
            return 1;
        double t[2][2];
        time_pair(&sp, &de, 1, t[0]);
        time_pair(&sp, &de, BIG_B, t[1]);
        for (int b = 0; b < 2; b++)
            if (isnan(cross[b]) && t[b][0] > t[b][1])
                cross[b] = dens[i];
        printf("%8.2f | %9.2f %9.2f | %10.3f %10.3f\n", dens[i], t[0][0],
               t[0][1], t[1][0], t[1][1]);
        jn += snprintf(json + jn, sizeof json - (size_t)jn,
                       "%s[%g, %.3f, %.3f, %.4f, %.4f]", i ? ", " : "", dens[i],
                       t[0][0], t[0][1], t[1][0], t[1][1]);
        dwf_smodel_free(&sp);
        dwf_smodel_free(&de);
    }
    printf("sparse stops winning at density ~%g (batch 1), ~%g (batch 128); "
           "DWF_SPARSE_CROSSOVER is %g\n", cross[0], cross[1],
           DWF_SPARSE_CROSSOVER);
    char c1[32] = "null", c2[32] = "null"; /* null: sparse won everywhere */
    if (!isnan(cross[0]))
        snprintf(c1, sizeof c1, "%g", cross[0]);
    if (!isnan(cross[1]))
        snprintf(c2, sizeof c2, "%g", cross[1]);
    snprintf(json + jn, sizeof json - (size_t)jn,
             "], \"crossover_b1\": %s, \"crossover_b128\": %s}", c1, c2);
    printf("%s\n", json);
    free(x);
    free(g_z);
    return 0;
}
