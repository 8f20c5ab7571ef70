/*
 * fuzz_ckpt.c - libFuzzer target: training checkpoints
 * (dwf_trainer_restore), which dwfd reads back from its store to resume
 * jobs after a restart.
 *
 * Byte 0 picks one of two tiny trainers (a D = 2 network with momentum,
 * a gradual-pruning one with masks); the rest is the checkpoint, whose
 * last four bytes are replaced by its CRC-32 (the unchanged bytes are
 * tried too). A checkpoint that restores must leave a trainer that
 * trains to the end (or stops with DWF_ENUMERIC on non-finite values)
 * and evaluates; a rejected one has a message.
 *
 * DWF_FUZZ_SEEDS=DIR writes one valid input per trainer into DIR (the
 * seed corpus: checkpoints taken inside the second epoch) and exits.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwf_rng.h"
#include "dwf_train.h"
#include "fuzz_util.h"

#define N_KIND 2
#define EPOCHS 3

static dwf_dataset g_train, g_test;

static void make_data(dwf_dataset *d, int n, uint64_t seed)
{
    dwf_rng r;
    memset(d, 0, sizeof *d);
    d->n = n;
    d->c = d->dim = 4;
    d->h = d->w = 1;
    d->n_classes = 2;
    d->x_f32 = malloc((size_t)n * 4 * sizeof(float));
    d->y = malloc((size_t)n * sizeof(int32_t));
    FUZZ_CHECK(d->x_f32 && d->y, "allocation");
    dwf_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        d->y[i] = i % 2;
        for (int j = 0; j < 4; j++)
            d->x_f32[i * 4 + j] = (float)dwf_rng_normal(&r) + (j == 0 ? 2.0f * (i % 2) : 0.0f);
    }
}

static dwf_trainer *make_trainer(int kind)
{
    dwf_arch a;
    dwf_train_opts o;
    dwf_err err = {0};
    int hidden[1] = {3};
    dwf_trainer *t = NULL;
    FUZZ_CHECK(dwf_arch_mlp(&a, 4, 1, 1, hidden, 1, 2, kind == 0 ? 2 : 1, &err) == 0, "arch");
    dwf_train_opts_default(&o);
    o.epochs = EPOCHS;
    o.batch_size = 4;
    o.lambda = 1e-3;
    if (kind == 0) {
        o.optim.momentum = 0.9;
    } else {
        o.method = DWF_METHOD_GRADUAL;
        o.target_cr = 2.0;
        o.prune_start = 0.0;
        o.prune_end = 2.0;
        o.prune_every = 1;
    }
    if (dwf_trainer_create(&a, &o, &g_train, NULL, &g_test, &t, &err) != 0)
        fuzz_fail("trainer", err.msg, NULL);
    return t;
}

static void stop_after_four(int epoch, int batch, int n_batches, void *ud)
{
    (void)epoch;
    (void)batch;
    (void)n_batches;
    atomic_int *c = ud;
    static int seen;
    if (++seen % 4 == 0)
        atomic_store(c, 1);
}

static void write_seeds(const char *dir)
{
    for (int kind = 0; kind < N_KIND; kind++) {
        dwf_trainer *t = make_trainer(kind);
        atomic_int cancel = 0;
        dwf_err err = {0};
        uint8_t *buf = NULL;
        size_t len = 0;
        int rc = dwf_trainer_run(t, NULL, stop_after_four, &cancel, &cancel, &err);
        FUZZ_CHECK(rc == DWF_ECANCELED, "the seed run stops inside training");
        FUZZ_CHECK(dwf_trainer_checkpoint(t, &buf, &len, &err) == 0, "checkpoint");
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%d", dir, kind);
        FILE *f = fopen(path, "wb");
        FUZZ_CHECK(f != NULL, "seed file");
        uint8_t k = (uint8_t)kind;
        FUZZ_CHECK(fwrite(&k, 1, 1, f) == 1 && fwrite(buf, 1, len, f) == len, "seed write");
        fclose(f);
        free(buf);
        dwf_trainer_free(t);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    make_data(&g_train, 10, 1);
    make_data(&g_test, 6, 2);
    const char *dir = getenv("DWF_FUZZ_SEEDS");
    if (dir) {
        write_seeds(dir);
        exit(0);
    }
    return 0;
}

static int g_kind; /* the trainer of the current input */

static void restore_one(const uint8_t *data, size_t size)
{
    dwf_trainer *t = make_trainer(g_kind);
    dwf_err err = {0};
    if (dwf_trainer_restore(t, data, size, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != '\0', "a rejected checkpoint has a message");
    } else {
        int rc = dwf_trainer_run(t, NULL, NULL, NULL, NULL, &err);
        if (rc != 0 && rc != DWF_ENUMERIC)
            fuzz_fail("training after a restore", err.msg, NULL);
        if (rc == 0) {
            dwf_metrics m;
            FUZZ_CHECK(dwf_trainer_done(t), "trained to the end");
            if (dwf_trainer_evaluate(t, &m, &err) != 0)
                fuzz_fail("evaluation after a restore", err.msg, NULL);
        }
    }
    dwf_trainer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    g_kind = data[0] % N_KIND;
    fuzz_with_crc(data + 1, size - 1, restore_one);
    return 0;
}
