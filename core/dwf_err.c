#include "dwf_err.h"

#include <stdarg.h>
#include <stdio.h>

int dwf_errorf(dwf_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

void dwf_err_clear(dwf_err *e)
{
    if (e) {
        e->code = 0;
        e->msg[0] = '\0';
    }
}

const char *dwf_strerror(int code)
{
    switch (code) {
    case DWF_OK: return "ok";
    case DWF_EINVAL: return "invalid argument";
    case DWF_ENOMEM: return "out of memory";
    case DWF_EIO: return "i/o error";
    case DWF_EFORMAT: return "malformed input";
    case DWF_ECANCELED: return "canceled";
    case DWF_ENUMERIC: return "numerical failure";
    default: return "unknown error";
    }
}
