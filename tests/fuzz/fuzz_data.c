/*
 * fuzz_data.c - libFuzzer target: the data readers (dwf_idx_load,
 * dwf_csv_load), which take files named in specs.
 *
 * Input: byte 0 picks the reader. IDX (even): bytes 1..4 (little-endian)
 * give the length of the image file, which follows; the label file is
 * the rest. Either may be gzipped (the reader detects it by content).
 * CSV (odd): byte 1 is the label column (signed: -1 = last), the rest is
 * the file. A data set that loads must be consistent (shape, every label
 * below n_classes, one feature array); a rejected file has a message
 * naming it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwf_data.h"
#include "fuzz_util.h"

static void check_dataset(const dwf_dataset *d)
{
    dwf_err err = {0};
    FUZZ_CHECK(d->n >= 0 && d->dim == d->c * d->h * d->w && d->dim > 0, "shape");
    FUZZ_CHECK((d->x_u8 != NULL) != (d->x_f32 != NULL), "one feature array");
    FUZZ_CHECK(d->n == 0 || d->y, "labels");
    FUZZ_CHECK(dwf_dataset_check_labels(d, d->n_classes, "data", &err) == 0,
               "labels below n_classes");
}

/* A load's outcome: a consistent data set (freed here), or an error
 * naming the file. */
static void check_load(int rc, dwf_dataset *d, const dwf_err *err)
{
    if (rc == 0) {
        check_dataset(d);
        dwf_dataset_free(d);
    } else {
        FUZZ_CHECK(strstr(err->msg, "/proc/self/fd/") != NULL, "the error names the file");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    dwf_dataset d;
    dwf_err err = {0};
    memset(&d, 0, sizeof d);
    if (data[0] % 2 == 0) {
        if (size < 5)
            return 0;
        uint32_t ni;
        memcpy(&ni, data + 1, 4);
        size_t rest = size - 5;
        if (ni > rest)
            ni = (uint32_t)rest;
        char pi[32], pl[32];
        int fi = fuzz_memfile(data + 5, ni, pi);
        int fl = fuzz_memfile(data + 5 + ni, rest - ni, pl);
        FUZZ_CHECK(fi >= 0 && fl >= 0, "memfd");
        check_load(dwf_idx_load(pi, pl, 0, &d, &err), &d, &err);
        close(fi);
        close(fl);
    } else {
        char p[32];
        int f = fuzz_memfile(data + 2, size - 2, p);
        FUZZ_CHECK(f >= 0, "memfd");
        check_load(dwf_csv_load(p, (int8_t)data[1], &d, &err), &d, &err);
        close(f);
    }
    return 0;
}
