/*
 * fuzz_util.h - shared helpers of the libFuzzer targets in tests/fuzz:
 * invariant checks that abort (so libFuzzer keeps the input) with a
 * message, and writing bytes to an anonymous file for readers that take
 * a path. Nothing here is allocated for the caller.
 */
#ifndef DWF_FUZZ_UTIL_H
#define DWF_FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static inline void fuzz_fail(const char *what, const char *a, const char *b)
{
    fprintf(stderr, "fuzz invariant broken: %s\n  %s\n  %s\n", what, a ? a : "",
            b ? b : "");
    abort();
}

#define FUZZ_CHECK(cond, what)                                                 \
    do {                                                                       \
        if (!(cond))                                                           \
            fuzz_fail(what, #cond, NULL);                                      \
    } while (0)

/* An anonymous in-memory file holding data[0..n): its descriptor, or -1.
 * path (>= 32 bytes) receives /proc/self/fd/N for readers taking a path. */
static inline int fuzz_memfile(const void *data, size_t n, char *path)
{
    int fd = memfd_create("fuzz", 0);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    snprintf(path, 32, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
