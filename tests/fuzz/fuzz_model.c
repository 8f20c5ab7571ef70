/*
 * fuzz_model.c - libFuzzer target: .dwfm model files (dwf_smodel_load).
 *
 * The input's last four bytes are replaced by its CRC-32 before the
 * parse (else nearly every mutation would stop at the checksum); the
 * unchanged input is parsed too, for the checksum path. A model that
 * loads must save to bytes that load again and save identically, and
 * must run forward (batches of 1 and 3, which take different kernels)
 * on zero inputs to finite or at least well-defined logits without a
 * fault. A rejected file has a message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwf_sparse.h"
#include "fuzz_util.h"

/* Activation elements a forward of one sample touches (to skip models
 * too large to run in a fuzzing iteration: they are valid, not wrong). */
static double activations(const dwf_arch *a)
{
    double t = (double)a->in_c * a->in_h * a->in_w;
    for (int i = 0; i < a->n_layers; i++) {
        const dwf_layer_spec *l = &a->layers[i];
        t += (double)l->out_c * l->out_h * l->out_w;
        if (l->kind == DWF_LAYER_CONV2D) /* the unfolded input */
            t += (double)l->in_c * l->kernel * l->kernel * l->out_h * l->out_w;
    }
    return t;
}

static void run_model(const dwf_smodel *s)
{
    const dwf_arch *a = &s->arch;
    if (activations(a) > 1 << 20)
        return;
    int dim = a->in_c * a->in_h * a->in_w;
    float *x = calloc((size_t)3 * dim, sizeof(float));
    float *y = malloc((size_t)3 * a->n_classes * sizeof(float));
    int32_t cls[3];
    dwf_sws *ws = NULL;
    dwf_err err = {0};
    FUZZ_CHECK(x && y, "allocation");
    if (dwf_sws_create(s, 3, &ws, &err) == 0) {
        FUZZ_CHECK(dwf_smodel_forward(s, ws, x, 1, y, &err) == 0, "forward, batch 1");
        FUZZ_CHECK(dwf_smodel_forward(s, ws, x, 3, y, &err) == 0, "forward, batch 3");
        FUZZ_CHECK(dwf_smodel_predict(s, ws, x, 3, cls, NULL, &err) == 0, "predict");
        for (int i = 0; i < 3; i++)
            FUZZ_CHECK(cls[i] >= 0 && cls[i] < a->n_classes, "predicted class in range");
        dwf_sws_free(ws);
    }
    free(x);
    free(y);
}

static void load_one(const uint8_t *data, size_t size)
{
    dwf_smodel s, t;
    dwf_err err = {0};
    if (dwf_smodel_load(&s, data, size, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != '\0', "a rejected model has a message");
        return;
    }
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t n1 = 0, n2 = 0;
    FUZZ_CHECK(dwf_smodel_save(&s, &b1, &n1, &err) == 0, "a loaded model saves");
    if (dwf_smodel_load(&t, b1, n1, &err) != 0)
        fuzz_fail("a saved model does not load", err.msg, NULL);
    FUZZ_CHECK(dwf_smodel_save(&t, &b2, &n2, &err) == 0, "a reloaded model saves");
    FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0, "save is a fixed point");
    run_model(&s);
    free(b1);
    free(b2);
    dwf_smodel_free(&t);
    dwf_smodel_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_with_crc(data, size, load_one);
    return 0;
}
