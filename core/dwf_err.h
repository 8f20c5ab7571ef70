/*
 * dwf_err.h - error codes and the error message buffer of libdwf.
 *
 * Every fallible function of libdwf returns 0 on success or one of the
 * negative DWF_E* codes below, and fills a caller-owned dwf_err with a
 * message the caller can show as is ("file.idx: truncated at byte 16").
 * The library never prints and never exits. dwf_err is a plain value:
 * nothing to free.
 */
#ifndef DWF_ERR_H
#define DWF_ERR_H

#include <stddef.h>

enum {
    DWF_OK = 0,
    DWF_EINVAL = -1,    /* bad argument or configuration */
    DWF_ENOMEM = -2,    /* allocation failed */
    DWF_EIO = -3,       /* file cannot be opened / read / written */
    DWF_EFORMAT = -4,   /* malformed file or buffer */
    DWF_ECANCELED = -5, /* run stopped by its cancel flag */
    DWF_ENUMERIC = -6,  /* loss became NaN or infinite */
};

typedef struct dwf_err {
    int code;
    char msg[512];
} dwf_err;

/* Formats msg into e (when e is non-NULL) and returns code. */
int dwf_errorf(dwf_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Clears e. */
void dwf_err_clear(dwf_err *e);

/* Short name of a code, e.g. "invalid argument". */
const char *dwf_strerror(int code);

#endif
