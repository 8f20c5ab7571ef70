/*
 * bench_sparse - sparse inference speed: LeNet-300-100 (784-300-100-10)
 * at compression ratios 10, 50 and 100 (a random sparsity pattern: random
 * normal weights thresholded at the magnitude that keeps 1/CR of them),
 * CSR kernels against dense cblas_sgemm / sgemv, at batch 1 and 128; then
 * the crossover density of one 300x784 layer, where CSR stops being faster
 * than dense. One BLAS thread. Prints a table and one JSON line.
 *
 *   bench_sparse [SECONDS_PER_POINT]   (default 0.2)
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dwf_model.h"
#include "dwf_rng.h"
#include "dwf_sparse.h"

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

static double g_budget = 0.2;

/* Microseconds per sample of dwf_smodel_forward at batch b: the best of
 * five runs of about g_budget / 5 seconds each. */
static double time_forward(const dwf_smodel *s, int b, const float *x,
                           float *z)
{
    dwf_sws *ws = NULL;
    dwf_err e;
    if (dwf_sws_create(s, b, &ws, &e)) {
        fprintf(stderr, "bench_sparse: %s\n", e.msg);
        exit(1);
    }
    dwf_smodel_forward(s, ws, x, b, z, &e); /* warm up */
    int reps = 1;
    for (;;) {
        double t0 = now();
        for (int r = 0; r < reps; r++)
            dwf_smodel_forward(s, ws, x, b, z, &e);
        if (now() - t0 > g_budget / 20)
            break;
        reps *= 2;
    }
    double best = INFINITY;
    for (int k = 0; k < 5; k++) {
        double t0 = now();
        for (int r = 0; r < reps; r++)
            dwf_smodel_forward(s, ws, x, b, z, &e);
        double t = (now() - t0) / reps;
        if (t < best)
            best = t;
    }
    dwf_sws_free(ws);
    return best * 1e6 / b;
}

/* A model of arch whose weights are N(0, 1) thresholded to keep a share
 * 1 / cr of them (one global magnitude threshold). */
static int make_sparse(const dwf_arch *a, double cr, uint64_t seed,
                       dwf_smodel *out)
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
    int rc = dwf_smodel_from_model(m, NULL, eps, NULL, NULL, 0, out, &e);
    if (rc)
        fprintf(stderr, "bench_sparse: %s\n", e.msg);
    dwf_model_free(m);
    return rc;
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
    const int B = 128, dim = 784;
    float *x = malloc((size_t)B * dim * sizeof *x), *z = malloc((size_t)B * 300 * sizeof *z); /* up to 300 outputs */
    dwf_rng r;
    dwf_rng_seed(&r, 1);
    for (int i = 0; i < B * dim; i++)
        x[i] = (float)dwf_rng_uniform(&r);

    printf("LeNet-300-100 forward, microseconds per sample (1 BLAS thread)\n");
    printf("%6s %9s | %10s %10s %7s | %10s %10s %7s\n", "CR", "nnz",
           "b1 sparse", "b1 dense", "speedup", "b128 sparse", "b128 dense",
           "speedup");
    const double crs[] = {10, 50, 100};
    char json[2048];
    int jn = snprintf(json, sizeof json, "{\"lenet300\": [");
    for (int c = 0; c < 3; c++) {
        dwf_smodel s;
        if (make_sparse(&a, crs[c], 7 + (uint64_t)c, &s))
            return 1;
        int64_t w, nz;
        dwf_smodel_counts(&s, &w, &nz, NULL, NULL);
        double t[2][2];
        for (int d = 0; d < 2; d++) {
            dwf_smodel_set_crossover(&s, d ? 0.0 : 2.0, &e);
            t[0][d] = time_forward(&s, 1, x, z);
            t[1][d] = time_forward(&s, B, x, z);
        }
        printf("%6.0f %9lld | %10.2f %10.2f %6.1fx | %11.3f %10.3f %6.1fx\n",
               crs[c], (long long)nz, t[0][0], t[0][1], t[0][1] / t[0][0],
               t[1][0], t[1][1], t[1][1] / t[1][0]);
        jn += snprintf(json + jn, sizeof json - (size_t)jn,
                       "%s{\"cr\": %g, \"nnz\": %lld, \"b1_sparse_us\": %.3f, "
                       "\"b1_dense_us\": %.3f, \"b128_sparse_us\": %.4f, "
                       "\"b128_dense_us\": %.4f}",
                       c ? ", " : "", crs[c], (long long)nz, t[0][0], t[0][1],
                       t[1][0], t[1][1]);
        dwf_smodel_free(&s);
    }

    /* crossover: one dense layer 784 -> 300 at rising density */
    printf("\nOne 784->300 layer: microseconds per sample, CSR vs dense\n");
    printf("%8s | %9s %9s | %10s %10s\n", "density", "b1 csr", "b1 dense",
           "b128 csr", "b128 dense");
    dwf_arch one;
    const int none[] = {0};
    dwf_arch_mlp(&one, 1, 28, 28, none, 0, 300, 1, &e);
    const double dens[] = {0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0};
    const int nd = (int)(sizeof dens / sizeof *dens);
    double cross[2] = {NAN, NAN};
    jn += snprintf(json + jn, sizeof json - (size_t)jn, "], \"crossover\": [");
    for (int i = 0; i < nd; i++) {
        dwf_smodel s;
        if (make_sparse(&one, 1.0 / dens[i], 100 + (uint64_t)i, &s))
            return 1;
        double t[2][2];
        for (int d = 0; d < 2; d++) {
            dwf_smodel_set_crossover(&s, d ? 0.0 : 2.0, &e);
            t[0][d] = time_forward(&s, 1, x, z);
            t[1][d] = time_forward(&s, B, x, z);
        }
        for (int b = 0; b < 2; b++)
            if (isnan(cross[b]) && t[b][0] > t[b][1])
                cross[b] = dens[i];
        printf("%8.2f | %9.2f %9.2f | %10.3f %10.3f\n", dens[i], t[0][0],
               t[0][1], t[1][0], t[1][1]);
        jn += snprintf(json + jn, sizeof json - (size_t)jn,
                       "%s[%g, %.3f, %.3f, %.4f, %.4f]", i ? ", " : "", dens[i],
                       t[0][0], t[0][1], t[1][0], t[1][1]);
        dwf_smodel_free(&s);
    }
    printf("CSR stops winning at density ~%g (batch 1), ~%g (batch 128); "
           "DWF_SPARSE_CROSSOVER is %g\n", cross[0], cross[1],
           DWF_SPARSE_CROSSOVER);
    char c1[32] = "null", c2[32] = "null"; /* null: CSR won everywhere */
    if (!isnan(cross[0]))
        snprintf(c1, sizeof c1, "%g", cross[0]);
    if (!isnan(cross[1]))
        snprintf(c2, sizeof c2, "%g", cross[1]);
    snprintf(json + jn, sizeof json - (size_t)jn,
             "], \"crossover_b1\": %s, \"crossover_b128\": %s}", c1, c2);
    printf("%s\n", json);
    free(x);
    free(z);
    return 0;
}
