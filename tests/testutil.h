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
