/*
 * dwf_openapi.c - the OpenAPI 3 document of dwfd's routes, served at
 * /v1/openapi.json. The document is schema/openapi.json, embedded at build
 * time (build/openapi_text.c, by scripts/embed_text.sh). Keep it true to
 * the route table of dwf_http.c: tests/check_http.c fails when a
 * registered route is missing there.
 */
#include "dwf_http.h"

extern const char dwf_openapi_doc[];

const char *dwf_openapi_json(void)
{
    return dwf_openapi_doc;
}
