/*
 * testutil.h - helpers shared by the check suites: temporary files, the
 * run of a suite, and where the data and binaries are.
 */
#ifndef DWF_TESTUTIL_H
#define DWF_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dwf_data.h"
#include "dwf_rng.h"

/* ck_assert() records a "mark point" (a write to a pipe) on every
 * success, which is slow inside loops over many elements: these only act
 * on failure. */
#define CHECK(c)                                                            \
    do {                                                                    \
        if (!(c))                                                           \
            ck_abort_msg("Assertion '%s' failed", #c);                      \
    } while (0)
#define CHECK_MSG(c, ...)                                                   \
    do {                                                                    \
        if (!(c))                                                           \
            ck_abort_msg(__VA_ARGS__);                                      \
    } while (0)

/* k Gaussian blobs in dim dimensions, n samples, float features, flat
 * shape: centers ~ N(0, center_scale^2) from center_seed, labels and unit
 * noise from noise_seed. The caller frees d with dwf_dataset_free(). */
static inline void tu_make_blobs(dwf_dataset *d, int n, int dim, int k,
                                 double center_scale, uint64_t center_seed,
                                 uint64_t noise_seed)
{
    dwf_rng r;
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = d->dim = dim;
    d->h = d->w = 1;
    d->n_classes = k;
    d->x_f32 = malloc((size_t)n * dim * sizeof(float));
    d->y = malloc((size_t)n * sizeof(int32_t));
    float *centers = malloc((size_t)k * dim * sizeof(float));
    ck_assert(d->x_f32 && d->y && centers);
    dwf_rng_seed(&r, center_seed);
    for (int i = 0; i < k * dim; i++)
        centers[i] = (float)(center_scale * dwf_rng_normal(&r));
    dwf_rng_seed(&r, noise_seed);
    for (int i = 0; i < n; i++) {
        int c = (int)dwf_rng_below(&r, (uint64_t)k);
        d->y[i] = c;
        for (int j = 0; j < dim; j++)
            d->x_f32[(size_t)i * dim + j] =
                centers[c * dim + j] + (float)dwf_rng_normal(&r);
    }
    free(centers);
}

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Writes n bytes to a new temporary file; returns its malloc'd path. */
static inline char *tu_write_temp(const void *data, size_t n, const char *suffix)
{
    char tmpl[] = "/tmp/dwf-test-XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd < 0)
        return NULL;
    if (n && write(fd, data, n) != (ssize_t)n) {
        close(fd);
        return NULL;
    }
    close(fd);
    size_t len = strlen(tmpl) + (suffix ? strlen(suffix) : 0) + 1;
    char *path = malloc(len);
    snprintf(path, len, "%s%s", tmpl, suffix ? suffix : "");
    if (suffix && rename(tmpl, path) != 0) {
        free(path);
        return NULL;
    }
    return path;
}

/* Runs one suite and returns the process exit status. */
static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Path of a built binary ("dwf", "dwfd") in $DWF_BUILD (default build). */
static inline const char *tu_bin(const char *name)
{
    static char buf[512];
    const char *b = getenv("DWF_BUILD");
    snprintf(buf, sizeof buf, "%s/%s", b && *b ? b : "build", name);
    return buf;
}

/* True when the suites run under the sanitizer build (slower: tests that
 * train may use fewer samples). */
static inline int tu_sanitized(void)
{
    const char *s = getenv("DWF_SAN");
    return s && *s == '1';
}

#endif
