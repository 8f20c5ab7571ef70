/*
 * fuzz_util.h - shared helpers of the libFuzzer targets in tests/fuzz:
 * invariant checks that abort (so libFuzzer keeps the input) with a
 * message, writing bytes to an anonymous file for readers that take a
 * path, and inputs with a valid CRC-32 trailer. Nothing here is allocated
 * for the caller.
 */
#ifndef DWF_FUZZ_UTIL_H
#define DWF_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dwf_buf.h"

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

/* Calls fn(data, size) and, for inputs of 8 bytes or more, fn again on a
 * copy whose last four bytes are the CRC-32 (dwf_crc32) of the rest, the
 * trailer of dwf's binary formats: else nearly every mutation would stop
 * at the checksum. */
static inline void fuzz_with_crc(const uint8_t *data, size_t size,
                                 void (*fn)(const uint8_t *, size_t))
{
    fn(data, size);
    if (size < 8)
        return;
    uint8_t *fixed = malloc(size);
    FUZZ_CHECK(fixed, "allocation");
    memcpy(fixed, data, size);
    uint32_t crc = dwf_crc32(fixed, size - 4);
    memcpy(fixed + size - 4, &crc, 4);
    fn(fixed, size);
    free(fixed);
}

#endif
