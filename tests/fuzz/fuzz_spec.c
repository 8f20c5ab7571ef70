/*
 * fuzz_spec.c - libFuzzer target: job specs (server/dwf_spec.c).
 *
 * Any byte string is either a valid spec or an error whose message names
 * the problem (and usually a field); never a crash, a leak or undefined
 * behaviour (the target is built with ASan and UBSan). A valid spec's
 * canonical JSON (defaults filled) parses again to the same canonical JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dwf_spec.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dwf_spec s;
    dwf_err err = {0};
    char field[DWF_FIELD_LEN] = "";
    if (dwf_spec_parse((const char *)data, size, NULL, 0, &s, field, &err) != 0) {
        FUZZ_CHECK(err.msg[0] != '\0', "a rejected spec has a message");
        return 0;
    }
    FUZZ_CHECK(s.json != NULL, "a parsed spec has its canonical JSON");
    dwf_spec t;
    dwf_err err2 = {0};
    int rc = dwf_spec_parse(s.json, strlen(s.json), NULL, 0, &t, field, &err2);
    if (rc != 0)
        fuzz_fail("canonical spec rejected", err2.msg, s.json);
    if (strcmp(s.json, t.json) != 0)
        fuzz_fail("canonical spec not a fixed point", s.json, t.json);
    dwf_spec_free(&t);
    dwf_spec_free(&s);
    return 0;
}
