/*
 * check_http.c - dwfd over real HTTP (libcurl): jobs, SSE, models,
 * predict, sweeps, auth, every error status, concurrency, the OpenAPI
 * document, and crash/shutdown recovery. Each daemon runs on an ephemeral
 * port with a temporary database.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <ctype.h>
#include <dirent.h>
#include <sched.h>

#include "dwf_http.h"
#include "dwf_sparse.h"
#include "dwf_store.h"
#include "testutil.h"

/* ---- daemon control ----------------------------------------------------- */

typedef struct daemon_t {
    pid_t pid;
    int port;
    char base[64];
    char db[256];
    char log[256];
} daemon_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A new temporary folder; returns its path in buf. */
static void temp_dir(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/dwf-http-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(buf));
}

/* Starts build/dwfd with the given extra args (NULL-terminated) on db. */
static void start_daemon(daemon_t *d, const char *db, const char *const *extra)
{
    memset(d, 0, sizeof *d);
    snprintf(d->db, sizeof d->db, "%s", db);
    snprintf(d->log, sizeof d->log, "%s.log", db);
    const char *argv[64];
    int a = 0;
    argv[a++] = tu_bin("dwfd");
    argv[a++] = "--listen";
    argv[a++] = "127.0.0.1:0";
    argv[a++] = "--db";
    argv[a++] = d->db;
    argv[a++] = "--sse-ping";
    argv[a++] = "0.5";
    argv[a++] = "--blas-threads";
    argv[a++] = "1";
    for (int i = 0; extra && extra[i] && a < 62; i++)
        argv[a++] = extra[i];
    argv[a] = NULL;
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pfd[1], 1);
        int lf = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (lf >= 0)
            dup2(lf, 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    d->pid = pid;
    char line[256];
    size_t len = 0;
    double deadline = now_s() + (tu_sanitized() ? 60 : 20);
    while (now_s() < deadline && len < sizeof line - 1) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t n = read(pfd[0], line + len, 1);
        if (n <= 0)
            break;
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = 0;
    close(pfd[0]);
    const char *pre = "dwfd listening on http://127.0.0.1:";
    ck_assert_msg(strncmp(line, pre, strlen(pre)) == 0,
                  "dwfd did not start (stdout '%s', log %s)", line, d->log);
    d->port = atoi(line + strlen(pre));
    ck_assert_int_gt(d->port, 0);
    snprintf(d->base, sizeof d->base, "http://127.0.0.1:%d", d->port);
}

/* Wait status of process pid once it has exited, -1 while it runs.
 * Works for children and, through /proc (a zombie's exit_code field), for
 * daemons started by check's parent process before it forked this test. */
static int exit_status(pid_t pid)
{
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
        return status;
    if (r == 0 || errno != ECHILD)
        return -1;
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || p[2] != 'Z')
        return -1;
    /* fields after ')': state is field 3, exit_code field 52 */
    int field = 2;
    for (p += 1; *p && field < 52; p++)
        if (*p == ' ')
            field++;
    return field == 52 ? atoi(p) : -1;
}

/* Sends sig and waits up to timeout seconds; returns the wait status or
 * -1 on timeout (then kills it). *secs receives the time taken. */
static int stop_daemon(daemon_t *d, int sig, double timeout, double *secs)
{
    double t0 = now_s();
    kill(d->pid, sig);
    int status = -1;
    while (now_s() - t0 < timeout) {
        status = exit_status(d->pid);
        if (status >= 0)
            break;
        sleep_ms(20);
    }
    if (secs)
        *secs = now_s() - t0;
    if (status < 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    d->pid = 0;
    return status;
}

/* Stops the daemon with SIGTERM and checks it exits 0 (no sanitizer
 * report either: those change the status). */
static void stop_ok(daemon_t *d)
{
    double secs = 0;
    int st = stop_daemon(d, SIGTERM, 30, &secs);
    ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "dwfd exited with status %d after %.1f s (log %s)", st, secs, d->log);
}

/* Removes a temporary folder made by temp_dir (files only, one level). */
static void rm_dir(const char *dir)
{
    DIR *dd = opendir(dir);
    if (!dd)
        return;
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (e->d_name[0] == '.')
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(dd);
    rmdir(dir);
}

static int alive(const daemon_t *d)
{
    if (d->pid <= 0 || kill(d->pid, 0) != 0)
        return 0;
    CURL *c = curl_easy_init();
    char url[768];
    snprintf(url, sizeof url, "%s/healthz", d->base);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return rc == CURLE_OK && status == 200;
}

/* ---- HTTP ---------------------------------------------------------------- */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char *headers;
    size_t hlen;
    json_t *json;
} resp;

typedef struct bufpair {
    char *p;
    size_t len;
} bufpair;

static size_t sink_pair(char *p, size_t sz, size_t n, void *ud)
{
    bufpair *b = ud;
    size_t add = sz * n;
    char *q = realloc(b->p, b->len + add + 1);
    if (!q)
        return 0;
    memcpy(q + b->len, p, add);
    b->len += add;
    q[b->len] = 0;
    b->p = q;
    return add;
}

static void resp_free(resp *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* One request; hdrs is a NULL-terminated list of "Name: value". */
static void http(const daemon_t *d, const char *method, const char *path,
                 const char *body, const char *const *hdrs, resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    char url[768];
    snprintf(url, sizeof url, "%s%s", d->base, path);
    bufpair b = {0}, h = {0};
    struct curl_slist *sl = NULL;
    for (int i = 0; hdrs && hdrs[i]; i++)
        sl = curl_slist_append(sl, hdrs[i]);
    if (body)
        sl = curl_slist_append(sl, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_pair);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink_pair);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    ck_assert_msg(rc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(sl);
    curl_easy_cleanup(c);
    out->body = b.p ? b.p : calloc(1, 1);
    out->len = b.len;
    out->headers = h.p ? h.p : calloc(1, 1);
    out->hlen = h.len;
    if (out->len)
        out->json = json_loadb(out->body, out->len, 0, NULL);
}

/* Value of response header name (case-insensitive) into buf, or NULL. */
static const char *resp_header(const resp *r, const char *name, char *buf,
                               size_t n)
{
    size_t nl = strlen(name);
    const char *p = r->headers;
    while (p && *p) {
        const char *e = strstr(p, "\r\n");
        size_t ll = e ? (size_t)(e - p) : strlen(p);
        if (ll > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = ll - (size_t)(v - p);
            if (vl >= n)
                vl = n - 1;
            memcpy(buf, v, vl);
            buf[vl] = 0;
            return buf;
        }
        p = e ? e + 2 : NULL;
    }
    return NULL;
}

static const char *err_code(const resp *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

static const char *err_field(const resp *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "field"));
}

static void expect_error(const daemon_t *d, const char *method, const char *path,
                         const char *body, const char *const *hdrs, long status,
                         const char *code, const char *field)
{
    resp r;
    http(d, method, path, body, hdrs, &r);
    ck_assert_msg(r.status == status, "%s %s: status %ld, want %ld (%s)", method,
                  path, r.status, status, r.body);
    if (method[0] != 'H') {
        ck_assert_msg(err_code(&r) && strcmp(err_code(&r), code) == 0,
                      "%s %s: code %s, want %s (%s)", method, path,
                      err_code(&r) ? err_code(&r) : "(none)", code, r.body);
        if (field)
            ck_assert_msg(err_field(&r) && strcmp(err_field(&r), field) == 0,
                          "%s %s: field %s, want %s (%s)", method, path,
                          err_field(&r) ? err_field(&r) : "(null)", field, r.body);
    }
    resp_free(&r);
}

/* ---- jobs ---------------------------------------------------------------- */

#define TINY_SPEC                                                            \
    "{\"name\": \"%s\", \"data\": {\"train_subset\": 1000, \"test_subset\": 500},"   \
    " \"model\": {\"arch\": \"mlp\", \"hidden\": [32]},"                     \
    " \"train\": {\"epochs\": %d, \"lambda\": 0.01, \"lr\": 0.2}}"

static char *tiny_spec(const char *name, int epochs)
{
    char *s = malloc(512);
    snprintf(s, 512, TINY_SPEC, name, epochs);
    return s;
}

/* A job long enough to interrupt: epochs of a few thousand samples. */
static char *long_spec(const char *name, int epochs)
{
    char *s = malloc(512);
    snprintf(s, 512,
             "{\"name\": \"%s\", \"data\": {\"train_subset\": %d, \"test_subset\": 500},"
             " \"model\": {\"arch\": \"mlp\", \"hidden\": [256, 128]},"
             " \"train\": {\"epochs\": %d, \"lambda\": 0.001, \"lr\": 0.1,"
             " \"batch_size\": 64}}",
             name, tu_sanitized() ? 3000 : 8000, epochs);
    return s;
}

static int64_t submit(const daemon_t *d, const char *spec, const char *const *hdrs,
                      long want)
{
    resp r;
    http(d, "POST", "/v1/jobs", spec, hdrs, &r);
    ck_assert_msg(r.status == want, "submit: status %ld want %ld: %s", r.status,
                  want, r.body);
    int64_t id = json_integer_value(json_object_get(r.json, "id"));
    if (want == 201) {
        char loc[128], exp[128];
        ck_assert_ptr_nonnull(resp_header(&r, "Location", loc, sizeof loc));
        snprintf(exp, sizeof exp, "/v1/jobs/%lld", (long long)id);
        ck_assert_str_eq(loc, exp);
        const char *st = json_string_value(json_object_get(r.json, "state"));
        ck_assert(st && dwf_store_state_parse(st) >= 0); /* a worker may be fast */
    }
    resp_free(&r);
    return id;
}

static char *job_state(const daemon_t *d, int64_t id)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)id);
    resp r;
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    char *s = strdup(json_string_value(json_object_get(r.json, "state")));
    resp_free(&r);
    return s;
}

/* Polls until the job's state is one of the finished ones or `want`. */
static char *wait_state(const daemon_t *d, int64_t id, const char *want,
                        double timeout)
{
    double t0 = now_s();
    for (;;) {
        char *s = job_state(d, id);
        if ((want && strcmp(s, want) == 0) || strcmp(s, "succeeded") == 0 ||
            strcmp(s, "failed") == 0 || strcmp(s, "canceled") == 0)
            return s;
        free(s);
        ck_assert_msg(now_s() - t0 < timeout, "job %lld: no state %s in %.0f s",
                      (long long)id, want ? want : "finished", timeout);
        sleep_ms(30);
    }
}

static json_t *job_metrics(const daemon_t *d, int64_t id, int since)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%lld/metrics?since=%d", (long long)id, since);
    resp r;
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    json_t *m = json_incref(json_object_get(r.json, "metrics"));
    resp_free(&r);
    ck_assert(json_is_array(m));
    return m;
}

/* Metrics epochs are exactly 1..n. */
static void check_epochs(json_t *m, int n)
{
    ck_assert_int_eq((int)json_array_size(m), n);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(m, (size_t)i),
                                                            "epoch")), i + 1);
}

/* ---- the main daemon ----------------------------------------------------- */

static daemon_t main_d;
static char main_dir[128];

static void main_setup(void)
{
    temp_dir(main_dir, sizeof main_dir);
    char db[200];
    snprintf(db, sizeof db, "%s/dwf.db", main_dir);
    /* a second data root holding a malformed CSV (test_failing_jobs) */
    const char *extra[] = {"--workers", "1", "--data-root", "/usr/share/datasets",
                           "--data-root", main_dir, NULL};
    start_daemon(&main_d, db, extra);
}

/* The fixture daemon must also stop cleanly: checked in the last test of
 * its case (test_shutdown_*), which runs after the others. */
static void main_teardown(void)
{
    if (main_d.pid > 0)
        stop_daemon(&main_d, SIGKILL, 30, NULL);
}

START_TEST(test_job_flow)
{
    daemon_t *d = &main_d;
    char *spec = tiny_spec("flow", 2);
    int64_t id = submit(d, spec, NULL, 201);
    free(spec);
    ck_assert_int_gt(id, 0);

    /* SSE until the job ends: history first, then live */
    char url[768];
    snprintf(url, sizeof url, "%s/v1/jobs/%lld/events", d->base, (long long)id);
    CURL *c = curl_easy_init();
    bufpair b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_pair);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, tu_sanitized() ? 240L : 90L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    char *ctype = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    ck_assert_msg(rc == CURLE_OK, "events: %s", curl_easy_strerror(rc));
    ck_assert_int_eq(status, 200);
    ck_assert_ptr_nonnull(ctype);
    ck_assert_ptr_nonnull(strstr(ctype, "text/event-stream"));
    curl_easy_cleanup(c);
    ck_assert_ptr_nonnull(b.p);
    int epochs = 0, states = 0, last_epoch = 0;
    char last_state[32] = "";
    for (char *line = strtok(b.p, "\n"); line; line = strtok(NULL, "\n")) {
        if (strcmp(line, "event: epoch") == 0) {
            epochs++;
            char *data = strtok(NULL, "\n");
            ck_assert_ptr_nonnull(data);
            ck_assert(strncmp(data, "data: ", 6) == 0);
            json_t *m = json_loads(data + 6, 0, NULL);
            ck_assert_ptr_nonnull(m);
            int ep = (int)json_integer_value(json_object_get(m, "epoch"));
            ck_assert_int_eq(ep, last_epoch + 1);
            last_epoch = ep;
            ck_assert(json_is_number(json_object_get(m, "test_acc")));
            json_decref(m);
        } else if (strcmp(line, "event: state") == 0) {
            states++;
            char *data = strtok(NULL, "\n");
            ck_assert_ptr_nonnull(data);
            json_t *j = json_loads(data + 6, 0, NULL);
            ck_assert_ptr_nonnull(j);
            snprintf(last_state, sizeof last_state, "%s",
                     json_string_value(json_object_get(j, "state")));
            json_decref(j);
        }
    }
    free(b.p);
    ck_assert_int_eq(epochs, 2);
    ck_assert_int_ge(states, 1);
    ck_assert_str_eq(last_state, "succeeded");

    /* the job */
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)id);
    resp r;
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "succeeded");
    json_t *model = json_object_get(r.json, "model");
    ck_assert(json_is_object(model));
    int64_t weights = json_integer_value(json_object_get(model, "weights"));
    int64_t nonzero = json_integer_value(json_object_get(model, "nonzero"));
    ck_assert_int_eq(weights, 784 * 32 + 32 * 10);
    ck_assert_int_gt(nonzero, 0);
    ck_assert(json_is_object(json_object_get(r.json, "metrics")));
    resp_free(&r);

    /* metrics and since */
    json_t *m = job_metrics(d, id, 0);
    check_epochs(m, 2);
    json_decref(m);
    m = job_metrics(d, id, 1);
    ck_assert_int_eq((int)json_array_size(m), 1);
    json_decref(m);
    m = job_metrics(d, id, 2);
    ck_assert_int_eq((int)json_array_size(m), 0);
    json_decref(m);

    /* the threshold curve: first point at prune.eps with the model's CR,
     * then CR growing */
    snprintf(path, sizeof path, "/v1/jobs/%lld/thresholds", (long long)id);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(r.json, "job_id")), id);
    json_t *pts = json_object_get(r.json, "points");
    ck_assert_int_ge((int)json_array_size(pts), 2);
    double prev_cr = 0.0;
    for (size_t i = 0; i < json_array_size(pts); i++) {
        json_t *pt = json_array_get(pts, i);
        double cr = json_number_value(json_object_get(pt, "cr"));
        if (i == 0) {
            ck_assert(fabs(json_number_value(json_object_get(pt, "threshold")) -
                           1.1920929e-07) < 1e-12);
            ck_assert(fabs(cr - (double)weights / (double)nonzero) < 1e-9);
        }
        if (json_is_number(json_object_get(pt, "cr")))
            ck_assert(cr >= prev_cr), prev_cr = cr;
        ck_assert(json_is_number(json_object_get(pt, "test_acc")));
        ck_assert(json_is_array(json_object_get(pt, "layers")));
    }
    resp_free(&r);

    /* model in every format */
    static const char *const fmts[][2] = {{"", "dwfm"},
                                          {"?format=dwfm", "dwfm"},
                                          {"?format=safetensors", "safetensors"},
                                          {"?format=safetensors-dense", "safetensors"},
                                          {"?format=npz", "npz"},
                                          {"?format=json", "json"}};
    char etag0[128] = "";
    for (int f = 0; f < 6; f++) {
        snprintf(path, sizeof path, "/v1/jobs/%lld/model%s", (long long)id, fmts[f][0]);
        http(d, "GET", path, NULL, NULL, &r);
        ck_assert_msg(r.status == 200, "%s: %ld %s", path, r.status, r.body);
        char hv[256], want[128];
        ck_assert_ptr_nonnull(resp_header(&r, "Content-Disposition", hv, sizeof hv));
        snprintf(want, sizeof want, "filename=\"job-%lld.%s\"", (long long)id, fmts[f][1]);
        ck_assert_msg(strstr(hv, "attachment") && strstr(hv, want), "%s", hv);
        ck_assert_ptr_nonnull(resp_header(&r, "Content-Length", hv, sizeof hv));
        ck_assert_int_eq(atol(hv), (long)r.len);
        ck_assert_ptr_nonnull(resp_header(&r, "X-DWF-Nonzero", hv, sizeof hv));
        ck_assert_int_eq(atoll(hv), nonzero);
        ck_assert_ptr_nonnull(resp_header(&r, "X-DWF-Weights", hv, sizeof hv));
        ck_assert_int_eq(atoll(hv), weights);
        ck_assert_ptr_nonnull(resp_header(&r, "X-DWF-CR", hv, sizeof hv));
        ck_assert(fabs(atof(hv) - (double)weights / nonzero) < 0.01 * weights / nonzero);
        char etag[128];
        ck_assert_ptr_nonnull(resp_header(&r, "ETag", etag, sizeof etag));
        ck_assert(etag[0] == '"');
        if (f == 0) {
            snprintf(etag0, sizeof etag0, "%s", etag);
            dwf_smodel sm;
            dwf_err e;
            ck_assert_msg(dwf_smodel_load(&sm, (const uint8_t *)r.body, r.len, &e) == 0,
                          "reload: %s", e.msg);
            int64_t w = 0, nz = 0, pa = 0, pnz = 0;
            dwf_smodel_counts(&sm, &w, &nz, &pa, &pnz);
            ck_assert_int_eq(w, weights);
            ck_assert_int_eq(nz, nonzero);
            dwf_smodel_free(&sm);
        } else if (f == 1) {
            ck_assert_str_eq(etag, etag0);
        } else {
            ck_assert_str_ne(etag, etag0);
        }
        if (f == 2 || f == 3)
            ck_assert(r.len > 8); /* safetensors: u64 header length + JSON */
        if (f == 4)
            ck_assert(r.len > 4 && memcmp(r.body, "PK", 2) == 0);
        if (f == 5)
            ck_assert_ptr_nonnull(r.json);
        /* conditional request */
        char inm[200];
        snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
        const char *hdr[] = {inm, NULL};
        resp r2;
        http(d, "GET", path, NULL, hdr, &r2);
        ck_assert_int_eq(r2.status, 304);
        ck_assert_int_eq((int)r2.len, 0);
        resp_free(&r2);
        resp_free(&r);
    }
    snprintf(path, sizeof path, "/v1/jobs/%lld/model?format=onnx", (long long)id);
    expect_error(d, "GET", path, NULL, NULL, 400, "invalid_request", "format");

    /* predict: raw 0..255 features of two test images */
    dwf_dataset test = {0};
    dwf_err e;
    ck_assert_int_eq(dwf_idx_load(FMNIST_DIR "/t10k-images-idx3-ubyte.gz",
                                  FMNIST_DIR "/t10k-labels-idx1-ubyte.gz", 10,
                                  &test, &e), 0);
    char *body = malloc(20000);
    size_t bl = (size_t)snprintf(body, 20000, "{\"inputs\": [");
    for (int i = 0; i < 3; i++) {
        bl += (size_t)snprintf(body + bl, 20000 - bl, "%s[", i ? "," : "");
        for (int k = 0; k < 784; k++)
            bl += (size_t)snprintf(body + bl, 20000 - bl, "%s%d", k ? "," : "",
                                   test.x_u8[i * 784 + k]);
        bl += (size_t)snprintf(body + bl, 20000 - bl, "]");
    }
    snprintf(body + bl, 20000 - bl, "]}");
    dwf_dataset_free(&test);
    snprintf(path, sizeof path, "/v1/jobs/%lld/predict", (long long)id);
    http(d, "POST", path, body, NULL, &r);
    free(body);
    ck_assert_msg(r.status == 200, "predict: %ld %s", r.status, r.body);
    json_t *cls = json_object_get(r.json, "classes");
    json_t *probs = json_object_get(r.json, "probabilities");
    ck_assert_int_eq((int)json_array_size(cls), 3);
    ck_assert_int_eq((int)json_array_size(probs), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *p = json_array_get(probs, i);
        ck_assert_int_eq((int)json_array_size(p), 10);
        double sum = 0, best = -1;
        int arg = -1;
        for (size_t k = 0; k < 10; k++) {
            double v = json_number_value(json_array_get(p, k));
            sum += v;
            if (v > best) {
                best = v;
                arg = (int)k;
            }
        }
        ck_assert(fabs(sum - 1.0) < 1e-3);
        ck_assert_int_eq(json_integer_value(json_array_get(cls, i)), arg);
    }
    resp_free(&r);
    expect_error(d, "POST", path, "{\"inputs\": [[1, 2, 3]]}", NULL, 400,
                 "invalid_request", "inputs[0]");
    expect_error(d, "POST", path, "{\"inputs\": []}", NULL, 400, "invalid_request",
                 "inputs");
    expect_error(d, "POST", path, "{\"input\": [[1]]}", NULL, 400, "invalid_request",
                 "input");
    expect_error(d, "POST", path, "[1,", NULL, 400, "invalid_json", NULL);

    /* a finished job cannot be canceled; it can be deleted */
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", (long long)id);
    expect_error(d, "POST", path, NULL, NULL, 409, "conflict", NULL);
}
END_TEST

START_TEST(test_cancel_running)
{
    daemon_t *d = &main_d;
    char *spec = long_spec("cancel-me", 50);
    int64_t id = submit(d, spec, NULL, 201);
    free(spec);
    free(wait_state(d, id, "running", 60));
    sleep_ms(200);
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", (long long)id);
    double t0 = now_s();
    resp r;
    http(d, "POST", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    char *st = wait_state(d, id, NULL, 30);
    ck_assert_str_eq(st, "canceled");
    free(st);
    ck_assert_msg(now_s() - t0 < (tu_sanitized() ? 20 : 5), "cancel took %.1f s",
                  now_s() - t0);
    /* a job without a curve: an empty list */
    snprintf(path, sizeof path, "/v1/jobs/%lld/thresholds", (long long)id);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(json_is_array(json_object_get(r.json, "points")));
    ck_assert_int_eq((int)json_array_size(json_object_get(r.json, "points")), 0);
    resp_free(&r);
    /* the next job still runs */
    spec = tiny_spec("after-cancel", 1);
    int64_t id2 = submit(d, spec, NULL, 201);
    free(spec);
    st = wait_state(d, id2, NULL, 120);
    ck_assert_str_eq(st, "succeeded");
    free(st);
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)id);
    http(d, "DELETE", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 204);
    resp_free(&r);
    expect_error(d, "GET", path, NULL, NULL, 404, "not_found", NULL);
}
END_TEST

/* select: the stored model is the one at the threshold chosen on
 * validation; the job's metrics and the curve say which. */
START_TEST(test_select)
{
    daemon_t *d = &main_d;
    const char *spec =
        "{\"name\": \"select\", \"data\": {\"train_subset\": 1000, \"test_subset\": 500,"
        " \"validation\": 0.25}, \"model\": {\"arch\": \"mlp\", \"hidden\": [32]},"
        " \"train\": {\"epochs\": 2, \"lambda\": 0.01, \"lr\": 0.2},"
        " \"select\": {\"max_drop\": 0.05}, \"thresholds\": {\"every\": 1}}";
    int64_t id = submit(d, spec, NULL, 201);
    char *st = wait_state(d, id, NULL, 120);
    ck_assert_str_eq(st, "succeeded");
    free(st);
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)id);
    resp r;
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    json_t *m = json_object_get(r.json, "metrics");
    double thr = json_number_value(json_object_get(m, "selected_threshold"));
    ck_assert(json_is_number(json_object_get(m, "selected_threshold")));
    ck_assert(json_is_number(json_object_get(m, "dense_val_acc")));
    /* the curve's cost is reported */
    ck_assert(json_number_value(json_object_get(m, "curve_seconds")) > 0);
    ck_assert(json_integer_value(json_object_get(m, "curve_points")) >= 1);
    ck_assert(json_is_number(json_object_get(m, "curve_epoch_fraction")));
    int64_t nonzero = json_integer_value(json_object_get(json_object_get(r.json, "model"),
                                                         "nonzero"));
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/thresholds", (long long)id);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    json_t *pts = json_object_get(r.json, "points");
    int n_sel = 0;
    for (size_t i = 0; i < json_array_size(pts); i++) {
        json_t *pt = json_array_get(pts, i);
        if (!json_is_true(json_object_get(pt, "selected")))
            continue;
        n_sel++;
        ck_assert(json_number_value(json_object_get(pt, "threshold")) == thr);
        ck_assert_int_eq(json_integer_value(json_object_get(pt, "nonzero")), nonzero);
        ck_assert(json_is_number(json_object_get(pt, "val_acc")));
    }
    ck_assert_int_eq(n_sel, 1);
    /* thresholds.every = 1: a curve after epoch 1 (the end's is above) */
    json_t *ep = json_object_get(r.json, "epochs");
    ck_assert_int_eq((int)json_array_size(ep), 1);
    ck_assert_int_eq(json_integer_value(json_array_get(ep, 0)), 1);
    double last_thr = json_number_value(json_object_get(json_array_get(pts, 0), "threshold"));
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/thresholds?epoch=1", (long long)id);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(r.json, "epoch")), 1);
    pts = json_object_get(r.json, "points");
    ck_assert_int_ge((int)json_array_size(pts), 2);
    /* the first point is the eps model, as at the end */
    ck_assert(json_number_value(json_object_get(json_array_get(pts, 0), "threshold")) ==
              last_thr);
    for (size_t i = 0; i < json_array_size(pts); i++)
        ck_assert(json_is_number(json_object_get(json_array_get(pts, i), "val_acc")));
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld/thresholds?epoch=2", (long long)id);
    expect_error(d, "GET", path, NULL, NULL, 404, "not_found", NULL);
    snprintf(path, sizeof path, "/v1/jobs/%lld/thresholds?epoch=0", (long long)id);
    expect_error(d, "GET", path, NULL, NULL, 400, "invalid_request", "epoch");
    expect_error(d, "POST", "/v1/jobs", "{\"thresholds\": {\"every\": 99}}", NULL, 400,
                 "invalid_spec", "thresholds.every");
}
END_TEST

/* Blobs in 16 dimensions as CSV rows "label,x0,...,x15". */
static void write_blobs_csv(const char *path, int n, uint64_t noise_seed)
{
    dwf_dataset b;
    tu_make_blobs(&b, n, 16, 4, 1.0, 3, noise_seed);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%d", b.y[i]);
        for (int j = 0; j < 16; j++)
            fprintf(f, ",%.9g", b.x_f32[(size_t)i * 16 + j]);
        fprintf(f, "\n");
    }
    ck_assert_int_eq(fclose(f), 0);
    dwf_dataset_free(&b);
}

/* A target-CR search: POST /v1/jobs with "search" creates a search sweep
 * whose runs come one at a time until one is within tolerance. */
START_TEST(test_search)
{
    daemon_t *d = &main_d;
    char train[200], test[200], spec[1200];
    snprintf(train, sizeof train, "%s/blobs-train.csv", main_dir);
    snprintf(test, sizeof test, "%s/blobs-test.csv", main_dir);
    write_blobs_csv(train, 800, 4);
    write_blobs_csv(test, 200, 5);
    snprintf(spec, sizeof spec,
             "{\"name\": \"cr8\", \"data\": {\"dataset\": \"csv\", \"train\": \"%s\","
             " \"test\": \"%s\", \"validation\": 0.25, \"normalize\": \"none\"},"
             " \"model\": {\"arch\": \"mlp\", \"hidden\": [48], \"depth\": 3},"
             " \"train\": {\"epochs\": 40, \"batch_size\": 32, \"lr\": 0.3}, \"seed\": 11,"
             " \"search\": {\"target_cr\": 8, \"budget\": 10, \"lambda_min\": 0.001,"
             " \"lambda_max\": 1}}", train, test);
    resp r;
    http(d, "POST", "/v1/jobs", spec, NULL, &r);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    ck_assert_str_eq(json_string_value(json_object_get(r.json, "kind")), "search");
    int64_t sid = json_integer_value(json_object_get(r.json, "id"));
    char loc[64], want[64], path[96];
    ck_assert_ptr_nonnull(resp_header(&r, "Location", loc, sizeof loc));
    snprintf(want, sizeof want, "/v1/sweeps/%lld", (long long)sid);
    ck_assert_str_eq(loc, want);
    json_t *runs = json_object_get(json_object_get(r.json, "search"), "runs");
    ck_assert_int_eq((int)json_array_size(runs), 1); /* one run at a time */
    resp_free(&r);

    snprintf(path, sizeof path, "/v1/sweeps/%lld", (long long)sid);
    double t0 = now_s();
    const char *state = NULL;
    for (;;) {
        http(d, "GET", path, NULL, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        json_t *so = json_object_get(r.json, "search");
        state = json_string_value(json_object_get(so, "state"));
        int active = 0;
        json_t *rr = json_object_get(so, "runs");
        for (size_t i = 0; i < json_array_size(rr); i++) {
            const char *st = json_string_value(json_object_get(json_array_get(rr, i), "state"));
            active += !strcmp(st, "queued") || !strcmp(st, "running");
        }
        ck_assert_int_le(active, 1);
        if (state && strcmp(state, "searching") != 0)
            break;
        resp_free(&r);
        ck_assert_msg(now_s() - t0 < (tu_sanitized() ? 600 : 180), "search did not end");
        sleep_ms(100);
    }
    json_t *so = json_object_get(r.json, "search");
    runs = json_object_get(so, "runs");
    size_t n = json_array_size(runs);
    ck_assert_msg(!strcmp(state, "reached"), "search %s: %s", state,
                  json_string_value(json_object_get(so, "message")));
    ck_assert(n >= 1 && n <= 10);
    int64_t best = json_integer_value(json_object_get(so, "best_job_id"));
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(runs, i);
        double lam = json_number_value(json_object_get(x, "lambda"));
        ck_assert(lam >= 0.001 && lam <= 1);
        ck_assert_str_eq(json_string_value(json_object_get(x, "state")), "succeeded");
        if (json_integer_value(json_object_get(x, "job_id")) == best) {
            found = 1;
            ck_assert(json_is_true(json_object_get(x, "within")));
            double cr = json_number_value(json_object_get(x, "cr"));
            ck_assert(cr >= 7.2 && cr <= 8.8);
        }
    }
    ck_assert(found);
    ck_assert(json_is_string(json_object_get(so, "message")));
    /* lambda0: the first run's lambda (no train.lambda: the bracket's
     * geometric middle); every run says whether its dense model learned */
    json_t *r0 = json_array_get(runs, 0);
    ck_assert(json_number_value(json_object_get(so, "lambda0")) ==
              json_number_value(json_object_get(r0, "lambda")));
    ck_assert(fabs(json_number_value(json_object_get(so, "lambda0")) - sqrt(0.001)) < 1e-9);
    for (size_t i = 0; i < n; i++)
        ck_assert(json_is_boolean(json_object_get(json_array_get(runs, i), "collapsed")));
    int64_t run0 = json_integer_value(json_object_get(r0, "job_id"));
    resp_free(&r);
    /* its runs are its record: not deleted one by one */
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)run0);
    http(d, "DELETE", path, NULL, NULL, &r);
    ck_assert_msg(r.status == 409, "%ld %s", r.status, r.body);
    resp_free(&r);
    /* the best run's model is there to download */
    snprintf(path, sizeof path, "/v1/jobs/%lld/model?format=json", (long long)best);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    /* the sweep list tells searches from grids */
    http(d, "GET", "/v1/sweeps", NULL, NULL, &r);
    json_t *sw = json_object_get(r.json, "sweeps");
    int seen = 0;
    for (size_t i = 0; i < json_array_size(sw); i++) {
        json_t *x = json_array_get(sw, i);
        if (json_integer_value(json_object_get(x, "id")) == sid) {
            seen = 1;
            ck_assert_str_eq(json_string_value(json_object_get(x, "kind")), "search");
        }
    }
    ck_assert(seen);
    resp_free(&r);

    /* bad searches name their field */
    expect_error(d, "POST", "/v1/jobs", "{\"search\": {}}", NULL, 400, "invalid_spec",
                 "search.target_cr");
    expect_error(d, "POST", "/v1/jobs",
                 "{\"method\": \"magnitude\", \"search\": {\"target_cr\": 5}}", NULL,
                 400, "invalid_spec", "search");
    expect_error(d, "POST", "/v1/jobs",
                 "{\"search\": {\"target_cr\": 5, \"lambda_min\": 0.1, \"lambda_max\": 0.01}}",
                 NULL, 400, "invalid_spec", "search.lambda_max");
    expect_error(d, "POST", "/v1/jobs",
                 "{\"train\": {\"lambda\": 0.9}, \"search\": {\"target_cr\": 5}}", NULL,
                 400, "invalid_spec", "train.lambda");
    expect_error(d, "POST", "/v1/jobs", "{\"search\": {\"target_cr\": 5, \"budget\": 0}}",
                 NULL, 400, "invalid_spec", "search.budget");
    const char *key[] = {"Idempotency-Key: k-search", NULL};
    expect_error(d, "POST", "/v1/jobs", "{\"search\": {\"target_cr\": 5}}", key, 400,
                 "invalid_request", "Idempotency-Key");
    expect_error(d, "POST", "/v1/sweeps",
                 "{\"base\": {\"search\": {\"target_cr\": 5}}, \"grid\": {\"seed\": [1]}}",
                 NULL, 400, "invalid_spec", "grid");
    expect_error(d, "POST", "/v1/sweeps", "{\"base\": {\"search\": {\"target_cr\": 0.5}}}",
                 NULL, 400, "invalid_spec", "base.search.target_cr");
    /* a grid of target_cr with DWF only: nothing would read it */
    expect_error(d, "POST", "/v1/sweeps", "{\"base\": {}, \"grid\": {\"target_cr\": [0]}}",
                 NULL, 400, "invalid_spec", "grid.target_cr");
    expect_error(d, "POST", "/v1/sweeps",
                 "{\"base\": {}, \"grid\": {\"method\": [\"dwf\"], \"target_cr\": [20]}}",
                 NULL, 400, "invalid_spec", "grid.target_cr");
}
END_TEST

START_TEST(test_bad_input)
{
    daemon_t *d = &main_d;
    expect_error(d, "POST", "/v1/jobs", "{\"name\": ", NULL, 400, "invalid_json", NULL);
    expect_error(d, "POST", "/v1/jobs", "", NULL, 400, "invalid_json", NULL);
    expect_error(d, "POST", "/v1/jobs", "[1, 2]", NULL, 400, "invalid_spec", NULL);
    expect_error(d, "POST", "/v1/jobs", "{\"train\": {\"epochs\": \"ten\"}}", NULL, 400,
                 "invalid_spec", "train.epochs");
    expect_error(d, "POST", "/v1/jobs", "{\"bogus\": 1}", NULL, 400, "invalid_spec",
                 "bogus");
    expect_error(d, "POST", "/v1/jobs", "{\"train\": {\"lr\": -0.5}}", NULL, 400,
                 "invalid_spec", "train.lr");
    expect_error(d, "POST", "/v1/jobs", "{\"train\": {\"epochs\": 1000000000000}}",
                 NULL, 400, "invalid_spec", "train.epochs");
    expect_error(d, "POST", "/v1/jobs", "{\"train\": {\"batch_size\": -1}}", NULL, 400,
                 "invalid_spec", "train.batch_size");
    expect_error(d, "POST", "/v1/jobs",
                 "{\"data\": {\"dataset\": \"idx\", \"train_images\": \"/etc/passwd\","
                 " \"train_labels\": \"/etc/passwd\", \"test_images\": \"/etc/passwd\","
                 " \"test_labels\": \"/etc/passwd\"}}",
                 NULL, 400, "invalid_spec", "data.train_images");
    expect_error(d, "POST", "/v1/jobs", "{\"data\": {\"dir\": \"/etc\"}}", NULL, 400,
                 "invalid_spec", "data.dir");
    /* ids, routes, methods */
    expect_error(d, "GET", "/v1/jobs/987654", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/jobs/abc", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/jobs/-3/metrics", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/jobs/987654/metrics", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/jobs/987654/thresholds", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/jobs/987654/events", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/jobs/987654/model", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "POST", "/v1/jobs/987654/cancel", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "DELETE", "/v1/jobs/987654", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/sweeps/987654", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/sweeps/987654/curve", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/nothing", NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "POST", "/v1/nothing", "{}", NULL, 404, "not_found", NULL);
    expect_error(d, "PUT", "/v1/jobs", "{}", NULL, 405, "method_not_allowed", NULL);
    expect_error(d, "DELETE", "/v1/sweeps", NULL, NULL, 405, "method_not_allowed", NULL);
    expect_error(d, "PATCH", "/v1/jobs/1", "{}", NULL, 405, "method_not_allowed", NULL);
    expect_error(d, "GET", "/v1/jobs/1/cancel", NULL, NULL, 405, "method_not_allowed", NULL);
    expect_error(d, "POST", "/index.html", "{}", NULL, 404, "not_found", NULL);
    expect_error(d, "GET", "/v1/jobs?limit=0", NULL, NULL, 400, "invalid_request", "limit");
    expect_error(d, "GET", "/v1/jobs?limit=abc", NULL, NULL, 400, "invalid_request", "limit");
    expect_error(d, "GET", "/v1/jobs?state=sleeping", NULL, NULL, 400, "invalid_request",
                 "state");
    expect_error(d, "GET", "/v1/jobs?cursor=%21%21garbage", NULL, NULL, 400,
                 "invalid_request", "cursor");
    expect_error(d, "GET", "/v1/jobs/1/metrics?since=-1", NULL, NULL, 400,
                 "invalid_request", "since");
    resp r;
    http(d, "GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_string_value(json_object_get(r.json, "status")), "ok");
    resp_free(&r);
    ck_assert(alive(d));
}
END_TEST

/* Streams n bytes of JSON-ish junk as the request body. */
typedef struct stream_src {
    size_t left;
    size_t sent;
} stream_src;

static size_t stream_read(char *buf, size_t sz, size_t n, void *ud)
{
    stream_src *s = ud;
    size_t k = sz * n;
    if (k > s->left)
        k = s->left;
    memset(buf, ' ', k);
    if (s->sent == 0 && k)
        buf[0] = '[';
    s->left -= k;
    s->sent += k;
    return k;
}

static long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atol(line + 6);
    fclose(f);
    return kb;
}

static long post_stream(const daemon_t *d, size_t n, int chunked, size_t *sent,
                        double *secs)
{
    CURL *c = curl_easy_init();
    char url[768];
    snprintf(url, sizeof url, "%s/v1/jobs", d->base);
    stream_src s = {n, 0};
    struct curl_slist *sl = curl_slist_append(NULL, "Content-Type: application/json");
    if (chunked)
        sl = curl_slist_append(sl, "Transfer-Encoding: chunked");
    bufpair b = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, stream_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &s);
    if (!chunked)
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_pair);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    double t0 = now_s();
    CURLcode rc = curl_easy_perform(c);
    *secs = now_s() - t0;
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    ck_assert_msg(rc == CURLE_OK || status == 413, "stream: %s", curl_easy_strerror(rc));
    if (b.p)
        ck_assert_ptr_nonnull(strstr(b.p, "payload_too_large"));
    free(b.p);
    curl_slist_free_all(sl);
    curl_easy_cleanup(c);
    *sent = s.sent;
    return status;
}

START_TEST(test_body_limit)
{
    daemon_t *d = &main_d;
    long before = vm_hwm_kb(d->pid);
    size_t sent = 0;
    double secs = 0;
    /* 100 MB with Content-Length: refused at the headers */
    long st = post_stream(d, (size_t)100 << 20, 0, &sent, &secs);
    ck_assert_int_eq(st, 413);
    ck_assert_msg(sent < ((size_t)50 << 20), "sent %zu bytes before the 413", sent);
    ck_assert_msg(secs < 10, "413 took %.1f s", secs);
    /* chunked (no length): counted and dropped, never buffered */
    st = post_stream(d, (size_t)20 << 20, 1, &sent, &secs);
    ck_assert_int_eq(st, 413);
    long after = vm_hwm_kb(d->pid);
    ck_assert_msg(after - before < 15 * 1024, "dwfd grew from %ld to %ld kB", before,
                  after);
    /* just under the limit is fine (and then a spec error) */
    char *big = malloc(900000);
    memset(big, ' ', 899999);
    big[899999] = 0;
    memcpy(big, "{\"name\": \"x\"", 12);
    big[899998] = '}';
    resp r;
    http(d, "POST", "/v1/jobs", big, NULL, &r);
    free(big);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    int64_t id = json_integer_value(json_object_get(r.json, "id"));
    resp_free(&r);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", (long long)id);
    http(d, "POST", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    ck_assert(alive(d));
}
END_TEST

static void curve_check(json_t *curve)
{
    json_t *pts = json_object_get(curve, "points");
    size_t n = json_array_size(pts);
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(pts, i);
        double cr = json_number_value(json_object_get(p, "cr"));
        double acc = json_number_value(json_object_get(p, "sparse_test_acc"));
        int dominated = 0;
        for (size_t k = 0; k < n; k++) {
            json_t *q = json_array_get(pts, k);
            double cq = json_number_value(json_object_get(q, "cr"));
            double aq = json_number_value(json_object_get(q, "sparse_test_acc"));
            if (k != i && cq >= cr && aq >= acc && (cq > cr || aq > acc))
                dominated = 1;
        }
        ck_assert(json_is_boolean(json_object_get(p, "pareto")));
        ck_assert_int_eq(json_is_true(json_object_get(p, "pareto")), !dominated);
    }
}

START_TEST(test_sweep)
{
    daemon_t *d = &main_d;
    char body[1024];
    snprintf(body, sizeof body,
             "{\"name\": \"grid\", \"base\": {\"data\": {\"train_subset\": 1000,"
             " \"test_subset\": 500}, \"model\": {\"hidden\": [32]},"
             " \"train\": {\"epochs\": 1, \"lr\": 0.2}},"
             " \"grid\": {\"lambda\": [0.0001, 0.05], \"depth\": [1, 2]}}");
    resp r;
    http(d, "POST", "/v1/sweeps", body, NULL, &r);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    int64_t sid = json_integer_value(json_object_get(r.json, "id"));
    json_t *jobs = json_object_get(r.json, "jobs");
    ck_assert_int_eq((int)json_array_size(jobs), 4);
    int64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = json_integer_value(json_object_get(json_array_get(jobs, (size_t)i), "id"));
    char loc[64], want[64];
    ck_assert_ptr_nonnull(resp_header(&r, "Location", loc, sizeof loc));
    snprintf(want, sizeof want, "/v1/sweeps/%lld", (long long)sid);
    ck_assert_str_eq(loc, want);
    resp_free(&r);
    for (int i = 0; i < 4; i++) {
        char *st = wait_state(d, ids[i], NULL, tu_sanitized() ? 240 : 90);
        ck_assert_str_eq(st, "succeeded");
        free(st);
    }
    char path[96];
    snprintf(path, sizeof path, "/v1/sweeps/%lld", (long long)sid);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "succeeded");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(r.json, "counts"),
                                                        "succeeded")), 4);
    resp_free(&r);
    http(d, "GET", "/v1/sweeps", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_ge((int)json_array_size(json_object_get(r.json, "sweeps")), 1);
    resp_free(&r);

    snprintf(path, sizeof path, "/v1/sweeps/%lld/curve", (long long)sid);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    json_t *pts = json_object_get(r.json, "points");
    ck_assert_int_eq((int)json_array_size(pts), 4);
    curve_check(r.json);
    int on_front = 0;
    for (size_t i = 0; i < 4; i++)
        on_front += json_is_true(json_object_get(json_array_get(pts, i), "pareto"));
    ck_assert_int_ge(on_front, 1);
    json_t *series = json_object_get(r.json, "series");
    ck_assert_int_eq((int)json_array_size(series), 2); /* dwf x depth 1, 2 */
    for (size_t i = 0; i < 2; i++) {
        json_t *sp = json_object_get(json_array_get(series, i), "points");
        ck_assert_int_eq((int)json_array_size(sp), 2);
        double a = json_number_value(json_object_get(json_array_get(sp, 0), "cr"));
        double b = json_number_value(json_object_get(json_array_get(sp, 1), "cr"));
        ck_assert(a <= b);
    }
    /* the threshold curve of every child, beside the lambda curve */
    json_t *ts = json_object_get(r.json, "threshold_series");
    ck_assert_int_eq((int)json_array_size(ts), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *t = json_array_get(ts, i);
        ck_assert_int_eq(json_integer_value(json_object_get(t, "job_id")), ids[i]);
        ck_assert(json_is_string(json_object_get(t, "label")));
        json_t *tp = json_object_get(t, "points");
        ck_assert_int_ge((int)json_array_size(tp), 1);
        double prev = 0;
        for (size_t k = 0; k < json_array_size(tp); k++) {
            json_t *q = json_object_get(json_array_get(tp, k), "cr");
            double cr = json_is_number(q) ? json_number_value(q) : INFINITY;
            ck_assert(cr >= prev); /* monotone in CR */
            prev = cr;
        }
    }
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/sweeps/%lld/curve.csv", (long long)sid);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(strncmp(r.body, "job_id,method,depth,lambda,target_cr,seed,cr,", 45) == 0);
    int lines = 0;
    for (const char *p = r.body; *p; p++)
        lines += *p == '\n';
    ck_assert_int_eq(lines, 5);
    resp_free(&r);

    /* a bad child names its grid field; bad grids are 400 */
    expect_error(d, "POST", "/v1/sweeps",
                 "{\"base\": {}, \"grid\": {\"lambda\": [0.1, -1]}}", NULL, 400,
                 "invalid_spec", "grid.lambda[1]");
    expect_error(d, "POST", "/v1/sweeps",
                 "{\"base\": {\"train\": {\"lr\": -1}}, \"grid\": {\"seed\": [1, 2]}}",
                 NULL, 400, "invalid_spec", "base.train.lr");
    expect_error(d, "POST", "/v1/sweeps", "{\"base\": {}, \"grid\": {\"width\": [1]}}",
                 NULL, 400, "invalid_spec", "grid.width");
    expect_error(d, "POST", "/v1/sweeps", "{\"base\": {}, \"grid\": {\"depth\": [1.5]}}",
                 NULL, 400, "invalid_spec", "grid.depth[0]");
    expect_error(d, "POST", "/v1/sweeps", "{\"grid\": {}}", NULL, 400, "invalid_spec",
                 "base");
    expect_error(d, "POST", "/v1/sweeps", "{\"base\": {}, \"extra\": 1}", NULL, 400,
                 "invalid_spec", "extra");
}
END_TEST

START_TEST(test_misc_routes)
{
    daemon_t *d = &main_d;
    resp r;
    /* dashboard */
    http(d, "GET", "/", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    char ct[128], etag[128], cc[128];
    ck_assert_ptr_nonnull(resp_header(&r, "Content-Type", ct, sizeof ct));
    ck_assert_ptr_nonnull(strstr(ct, "text/html"));
    ck_assert_ptr_nonnull(resp_header(&r, "ETag", etag, sizeof etag));
    ck_assert_ptr_nonnull(resp_header(&r, "Cache-Control", cc, sizeof cc));
    ck_assert_int_gt((int)r.len, 0);
    size_t len = r.len;
    resp_free(&r);
    http(d, "GET", "/index.html", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq((int)r.len, (int)len);
    resp_free(&r);
    char inm[200];
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
    const char *h1[] = {inm, NULL};
    http(d, "GET", "/", NULL, h1, &r);
    ck_assert_int_eq(r.status, 304);
    resp_free(&r);
    const char *h2[] = {"If-None-Match: \"nope\"", NULL};
    http(d, "GET", "/", NULL, h2, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    expect_error(d, "GET", "/no-such-file.js", NULL, NULL, 404, "not_found", NULL);

    /* schema, datasets, healthz */
    http(d, "GET", "/v1/schema", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(json_is_object(json_object_get(r.json, "properties")));
    resp_free(&r);
    http(d, "GET", "/v1/datasets", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    json_t *ds = json_object_get(r.json, "datasets");
    ck_assert(json_is_array(ds));
    int found = 0;
    size_t i;
    json_t *v;
    json_array_foreach(ds, i, v)
    {
        const char *kind = json_string_value(json_object_get(v, "kind"));
        if (kind && strcmp(kind, "fashion-mnist") == 0) {
            found = 1;
            ck_assert_int_eq(json_integer_value(json_object_get(v, "train")), 60000);
            ck_assert_int_eq(json_integer_value(json_object_get(v, "test")), 10000);
        }
    }
    ck_assert(found);
    resp_free(&r);
    http(d, "GET", "/healthz", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(r.json, "workers")), 1);
    ck_assert(json_is_string(json_object_get(r.json, "version")));
    resp_free(&r);

    /* Prometheus text */
    http(d, "GET", "/metrics", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "dwf_jobs{state=\"queued\"}"));
    ck_assert_ptr_nonnull(strstr(r.body, "dwf_queue_length "));
    ck_assert_ptr_nonnull(strstr(r.body, "dwf_training_samples_per_second "));
    ck_assert_ptr_nonnull(
        strstr(r.body, "dwf_http_requests_total{route=\"GET /healthz\",status=\"200\"}"));
    ck_assert_ptr_nonnull(
        strstr(r.body, "dwf_http_requests_total{route=\"GET /{asset}\",status=\"404\"}"));
    resp_free(&r);
    ck_assert(alive(d));
}
END_TEST

START_TEST(test_openapi)
{
    daemon_t *d = &main_d;
    resp r;
    http(d, "GET", "/v1/openapi.json", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(r.json);
    ck_assert(strncmp(json_string_value(json_object_get(r.json, "openapi")), "3.", 2) == 0);
    json_t *paths = json_object_get(r.json, "paths");
    int n = 0;
    const dwf_http_route_info *routes = dwf_http_routes(&n);
    ck_assert_int_ge(n, 19);
    for (int i = 0; i < n; i++) {
        json_t *p = json_object_get(paths, routes[i].pattern);
        ck_assert_msg(p != NULL, "route %s %s is not in the OpenAPI document",
                      routes[i].method, routes[i].pattern);
        char m[16];
        snprintf(m, sizeof m, "%s", routes[i].method);
        for (char *c = m; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        ck_assert_msg(json_object_get(p, m) != NULL,
                      "route %s %s is not in the OpenAPI document",
                      routes[i].method, routes[i].pattern);
    }
    resp_free(&r);
    /* dwfd --list-routes prints the same table */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s --list-routes", tu_bin("dwfd"));
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        ck_assert(lines < n);
        char want[200];
        snprintf(want, sizeof want, "%s %s", routes[lines].method, routes[lines].pattern);
        ck_assert(strncmp(line, want, strlen(want)) == 0);
        lines++;
    }
    ck_assert_int_eq(pclose(f), 0);
    ck_assert_int_eq(lines, n);
}
END_TEST

/* Bad data and a diverging run end as failed with a readable error; the
 * daemon keeps serving. */
START_TEST(test_failing_jobs)
{
    daemon_t *d = &main_d;
    char csv[300], spec[900];
    snprintf(csv, sizeof csv, "%s/bad.csv", main_dir);
    FILE *f = fopen(csv, "w");
    ck_assert_ptr_nonnull(f);
    fputs("label,a,b\n1,0.5,0.25\n0,0.5\n", f);
    fclose(f);
    snprintf(spec, sizeof spec,
             "{\"name\": \"bad-csv\", \"data\": {\"dataset\": \"csv\", \"train\": \"%s\","
             " \"test\": \"%s\"}, \"model\": {\"hidden\": [4]}, \"train\": {\"epochs\": 1}}",
             csv, csv);
    int64_t id = submit(d, spec, NULL, 201);
    char *st = wait_state(d, id, NULL, 60);
    ck_assert_str_eq(st, "failed");
    free(st);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)id);
    resp r;
    http(d, "GET", path, NULL, NULL, &r);
    const char *msg = json_string_value(json_object_get(r.json, "error"));
    ck_assert_msg(msg && strstr(msg, "bad.csv"), "error text: %s", msg ? msg : "(null)");
    resp_free(&r);

    snprintf(spec, sizeof spec,
             "{\"name\": \"diverge\", \"data\": {\"train_subset\": 1000, \"test_subset\": 200},"
             " \"model\": {\"hidden\": [32]}, \"train\": {\"epochs\": 2, \"lr\": 1e30,"
             " \"schedule\": \"constant\"}}");
    id = submit(d, spec, NULL, 201);
    st = wait_state(d, id, NULL, 60);
    ck_assert_str_eq(st, "failed");
    free(st);
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)id);
    http(d, "GET", path, NULL, NULL, &r);
    msg = json_string_value(json_object_get(r.json, "error"));
    ck_assert_msg(msg && strstr(msg, "loss"), "error text: %s", msg ? msg : "(null)");
    resp_free(&r);
    ck_assert(alive(d));
}
END_TEST

/* Last test of the api case: the daemon that served everything above
 * stops cleanly and in time. */
START_TEST(test_shutdown_main)
{
    ck_assert(alive(&main_d));
    stop_ok(&main_d);
    rm_dir(main_dir);
}
END_TEST

/* ---- queue-only daemon: listing, cancel/delete, concurrency -------------- */

static daemon_t q_d;
static char q_dir[128];

static void q_setup(void)
{
    temp_dir(q_dir, sizeof q_dir);
    char db[200];
    snprintf(db, sizeof db, "%s/dwf.db", q_dir);
    const char *extra[] = {"--workers", "0", "--max-queue", "100000", NULL};
    start_daemon(&q_d, db, extra);
}

static void q_teardown(void)
{
    if (q_d.pid > 0)
        stop_daemon(&q_d, SIGKILL, 30, NULL);
}

START_TEST(test_list_cancel_delete)
{
    daemon_t *d = &q_d;
    int64_t ids[7];
    for (int i = 0; i < 7; i++) {
        char name[32];
        snprintf(name, sizeof name, "list-%d", i);
        char *spec = tiny_spec(name, 1);
        ids[i] = submit(d, spec, NULL, 201);
        free(spec);
        if (i)
            ck_assert_int_gt(ids[i], ids[i - 1]);
    }
    /* pages of 3, newest first, no repeats */
    char path[256] = "/v1/jobs?limit=3&state=queued";
    int64_t seen[64];
    int n_seen = 0, pages = 0;
    for (;;) {
        resp r;
        http(d, "GET", path, NULL, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        json_t *jobs = json_object_get(r.json, "jobs");
        ck_assert_int_le((int)json_array_size(jobs), 3);
        size_t i;
        json_t *j;
        json_array_foreach(jobs, i, j)
        {
            int64_t id = json_integer_value(json_object_get(j, "id"));
            ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "queued");
            if (n_seen)
                ck_assert_int_lt(id, seen[n_seen - 1]);
            ck_assert_int_lt(n_seen, 64);
            seen[n_seen++] = id;
        }
        pages++;
        json_t *next = json_object_get(r.json, "next_cursor");
        if (!json_is_string(next)) {
            resp_free(&r);
            break;
        }
        CURL *c = curl_easy_init();
        char *esc = curl_easy_escape(c, json_string_value(next), 0);
        snprintf(path, sizeof path, "/v1/jobs?limit=3&state=queued&cursor=%s", esc);
        curl_free(esc);
        curl_easy_cleanup(c);
        resp_free(&r);
        ck_assert_int_lt(pages, 20);
    }
    /* every job of ours appears exactly once */
    for (int i = 0; i < 7; i++) {
        int hits = 0;
        for (int k = 0; k < n_seen; k++)
            hits += seen[k] == ids[i];
        ck_assert_int_eq(hits, 1);
    }
    ck_assert_int_ge(pages, 3);

    /* job bodies are cached with an ETag until the job changes */
    resp r;
    char etag[128], inm[200];
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)ids[0]);
    http(d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(resp_header(&r, "ETag", etag, sizeof etag));
    resp_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
    const char *hinm[] = {inm, NULL};
    http(d, "GET", path, NULL, hinm, &r);
    ck_assert_int_eq(r.status, 304);
    resp_free(&r);
    http(d, "GET", "/v1/jobs?limit=2", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(resp_header(&r, "ETag", etag, sizeof etag));
    resp_free(&r);
    char inm2[200];
    snprintf(inm2, sizeof inm2, "If-None-Match: %s", etag);
    const char *hinm2[] = {inm2, NULL};

    /* cancel queued: at once; twice: 409; delete: 204; queued delete: 409 */
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", (long long)ids[0]);
    http(d, "POST", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "canceled");
    resp_free(&r);
    expect_error(d, "POST", path, NULL, NULL, 409, "conflict", NULL);
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)ids[0]);
    http(d, "GET", path, NULL, hinm, &r); /* changed: a new body */
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "canceled");
    resp_free(&r);
    http(d, "GET", "/v1/jobs?limit=2", NULL, hinm2, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)ids[1]);
    expect_error(d, "DELETE", path, NULL, NULL, 409, "conflict", NULL);
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)ids[0]);
    http(d, "DELETE", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 204);
    resp_free(&r);
    expect_error(d, "GET", path, NULL, NULL, 404, "not_found", NULL);
    expect_error(d, "DELETE", path, NULL, NULL, 404, "not_found", NULL);
    http(d, "GET", "/v1/jobs?state=canceled", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

#define N_THREADS 8
#define PER_THREAD 25

typedef struct conc_arg {
    const daemon_t *d;
    int t;
    int ok;
    int64_t ids[PER_THREAD];
} conc_arg;

static void *conc_main(void *p)
{
    conc_arg *a = p;
    CURL *c = curl_easy_init();
    char url[768];
    snprintf(url, sizeof url, "%s/v1/jobs", a->d->base);
    for (int i = 0; i < PER_THREAD; i++) {
        char name[64], spec[600], key[96];
        /* even slots carry an idempotency key shared with the next thread */
        int keyed = i % 2 == 0;
        snprintf(name, sizeof name, "conc-%d-%d", a->t, i);
        if (keyed)
            snprintf(name, sizeof name, "keyed-%d-%d", a->t / 2, i);
        snprintf(spec, sizeof spec, TINY_SPEC, name, 1);
        snprintf(key, sizeof key, "Idempotency-Key: key-%d-%d", a->t / 2, i);
        struct curl_slist *sl = curl_slist_append(NULL, "Content-Type: application/json");
        if (keyed)
            sl = curl_slist_append(sl, key);
        bufpair b = {0};
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, spec);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, sl);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_pair);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
        CURLcode rc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(sl);
        json_t *j = b.p ? json_loads(b.p, 0, NULL) : NULL;
        a->ids[i] = json_integer_value(json_object_get(j, "id"));
        if (rc == CURLE_OK && (status == 201 || (keyed && status == 200)) && a->ids[i] > 0)
            a->ok++;
        json_decref(j);
        free(b.p);
    }
    curl_easy_cleanup(c);
    return NULL;
}

START_TEST(test_concurrency)
{
    daemon_t *d = &q_d;
    pthread_t th[N_THREADS];
    conc_arg args[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].d = d;
        args[t].t = t;
        ck_assert_int_eq(pthread_create(&th[t], NULL, conc_main, &args[t]), 0);
    }
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < N_THREADS; t++)
        ck_assert_int_eq(args[t].ok, PER_THREAD);
    /* threads 2k and 2k+1 share keys: the same job for each key */
    for (int t = 0; t < N_THREADS; t += 2)
        for (int i = 0; i < PER_THREAD; i += 2)
            ck_assert_int_eq(args[t].ids[i], args[t + 1].ids[i]);
    /* every submission is stored exactly once */
    int unkeyed = N_THREADS * (PER_THREAD / 2);
    int keyed = (N_THREADS / 2) * ((PER_THREAD + 1) / 2);
    char path[256] = "/v1/jobs?limit=1000&view=summary";
    int conc = 0, kc = 0;
    char names[N_THREADS * PER_THREAD][32];
    int n_names = 0;
    for (int pages = 0; pages < 50; pages++) {
        resp r;
        http(d, "GET", path, NULL, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        size_t i;
        json_t *j;
        json_array_foreach(json_object_get(r.json, "jobs"), i, j)
        {
            const char *nm = json_string_value(json_object_get(j, "name"));
            if (strncmp(nm, "conc-", 5) && strncmp(nm, "keyed-", 6))
                continue;
            if (nm[0] == 'c')
                conc++;
            else
                kc++;
            for (int k = 0; k < n_names; k++)
                ck_assert_msg(strcmp(names[k], nm) != 0, "job %s stored twice", nm);
            ck_assert_int_lt(n_names, N_THREADS * PER_THREAD);
            snprintf(names[n_names++], 32, "%s", nm);
        }
        json_t *next = json_object_get(r.json, "next_cursor");
        if (!json_is_string(next)) {
            resp_free(&r);
            break;
        }
        CURL *c = curl_easy_init();
        char *esc = curl_easy_escape(c, json_string_value(next), 0);
        snprintf(path, sizeof path, "/v1/jobs?limit=1000&view=summary&cursor=%s", esc);
        curl_free(esc);
        curl_easy_cleanup(c);
        resp_free(&r);
    }
    ck_assert_int_eq(conc, unkeyed);
    ck_assert_int_eq(kc, keyed);
    ck_assert(alive(d));
}
END_TEST

START_TEST(test_queue_full)
{
    char dir[128], db[200];
    temp_dir(dir, sizeof dir);
    snprintf(db, sizeof db, "%s/q.db", dir);
    const char *extra[] = {"--workers", "0", "--max-queue", "3", NULL};
    daemon_t d;
    start_daemon(&d, db, extra);
    char *spec = tiny_spec("q", 1);
    const char *key1[] = {"Idempotency-Key: full-1", NULL};
    const char *key2[] = {"Idempotency-Key: full-2", NULL};
    int64_t keyed = submit(&d, spec, key1, 201);
    for (int i = 0; i < 2; i++)
        submit(&d, spec, NULL, 201);
    expect_error(&d, "POST", "/v1/jobs", spec, NULL, 429, "queue_full", NULL);
    /* with the queue full, a repeated key still returns its job (200), a
     * new key is refused */
    ck_assert_int_eq(submit(&d, spec, key1, 200), keyed);
    expect_error(&d, "POST", "/v1/jobs", spec, key2, 429, "queue_full", NULL);
    /* a key whose job has finished: still that job */
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", (long long)keyed);
    resp cr;
    http(&d, "POST", path, NULL, NULL, &cr);
    ck_assert_int_eq(cr.status, 200);
    resp_free(&cr);
    submit(&d, spec, NULL, 201); /* full again */
    ck_assert_int_eq(submit(&d, spec, key1, 200), keyed);
    expect_error(&d, "POST", "/v1/jobs", spec, key2, 429, "queue_full", NULL);
    expect_error(&d, "POST", "/v1/sweeps",
                 "{\"base\": {}, \"grid\": {\"seed\": [1, 2]}}", NULL, 429,
                 "queue_full", NULL);
    free(spec);
    ck_assert(alive(&d));
    stop_ok(&d);
    rm_dir(dir);
}
END_TEST

START_TEST(test_shutdown_queue)
{
    ck_assert(alive(&q_d));
    stop_ok(&q_d);
    rm_dir(q_dir);
}
END_TEST

/* ---- auth ------------------------------------------------------------------- */

START_TEST(test_auth)
{
    char dir[128], db[200];
    temp_dir(dir, sizeof dir);
    snprintf(db, sizeof db, "%s/a.db", dir);
    const char *extra[] = {"--workers", "0", "--token", "rw-secret-1", "--read-token",
                           "ro-secret-1", NULL};
    daemon_t d;
    start_daemon(&d, db, extra);
    char *spec = tiny_spec("auth", 1);
    const char *none[] = {NULL};
    const char *bad[] = {"Authorization: Bearer rw-secret-2", NULL};
    const char *basic[] = {"Authorization: Basic cnc6cnc=", NULL};
    const char *ro[] = {"Authorization: Bearer ro-secret-1", NULL};
    const char *rw[] = {"Authorization: Bearer rw-secret-1", NULL};
    expect_error(&d, "POST", "/v1/jobs", spec, none, 401, "unauthorized", NULL);
    expect_error(&d, "POST", "/v1/jobs", spec, bad, 401, "unauthorized", NULL);
    expect_error(&d, "POST", "/v1/jobs", spec, basic, 401, "unauthorized", NULL);
    expect_error(&d, "POST", "/v1/jobs", spec, ro, 403, "forbidden", NULL);
    int64_t id = submit(&d, spec, rw, 201);
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld/cancel", (long long)id);
    expect_error(&d, "POST", path, NULL, ro, 403, "forbidden", NULL);
    snprintf(path, sizeof path, "/v1/jobs/%lld", (long long)id);
    expect_error(&d, "DELETE", path, NULL, none, 401, "unauthorized", NULL);
    /* reads stay open without --auth-reads */
    resp r;
    http(&d, "GET", path, NULL, none, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    stop_ok(&d);

    /* --auth-reads: every API read needs a token (any kind) */
    const char *extra2[] = {"--workers", "0", "--token", "rw-secret-1", "--read-token",
                            "ro-secret-1", "--auth-reads", NULL};
    start_daemon(&d, db, extra2);
    expect_error(&d, "GET", path, NULL, none, 401, "unauthorized", NULL);
    expect_error(&d, "GET", "/v1/jobs", NULL, bad, 401, "unauthorized", NULL);
    http(&d, "GET", path, NULL, ro, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    http(&d, "GET", path, NULL, rw, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    http(&d, "GET", "/healthz", NULL, none, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    expect_error(&d, "POST", "/v1/jobs", spec, ro, 403, "forbidden", NULL);
    free(spec);
    ck_assert(alive(&d));
    stop_ok(&d);
    rm_dir(dir);
}
END_TEST

START_TEST(test_bad_flags)
{
    static const char *const cases[][3] = {
        {"--workers", "-1", NULL},  {"--workers", "x", NULL},
        {"--bogus", NULL, NULL},    {"--max-body", "12", NULL},
        {"--listen", "nowhere", NULL}, {"--config", "/nonexistent/dwfd.conf", NULL},
        {"--serve-cores", "-1", NULL}, {"--serve-cores", "x", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "%s %s %s --db /tmp/dwf-http-never.db >/dev/null 2>&1",
                 tu_bin("dwfd"), cases[i][0], cases[i][1] ? cases[i][1] : "");
        int st = system(cmd);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: status %d", cmd, st);
    }
    /* a config file is read; flags override it */
    char conf[] = "/tmp/dwf-http-conf-XXXXXX";
    int fd = mkstemp(conf);
    ck_assert_int_ge(fd, 0);
    const char *text = "# dwfd config\nworkers = 0\nmax-queue = 2\n"
                       "token = conf-token-1\n";
    ck_assert_int_eq((int)write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    char dir[128], db[200];
    temp_dir(dir, sizeof dir);
    snprintf(db, sizeof db, "%s/c.db", dir);
    const char *extra[] = {"--config", conf, "--max-queue", "1", NULL};
    daemon_t d;
    start_daemon(&d, db, extra);
    char *spec = tiny_spec("conf", 1);
    const char *tok[] = {"Authorization: Bearer conf-token-1", NULL};
    expect_error(&d, "POST", "/v1/jobs", spec, NULL, 401, "unauthorized", NULL);
    submit(&d, spec, tok, 201);
    expect_error(&d, "POST", "/v1/jobs", spec, tok, 429, "queue_full", NULL);
    free(spec);
    stop_ok(&d);
    unlink(conf);
    rm_dir(dir);
}
END_TEST

/* ---- thread budget ------------------------------------------------------------ */

/* The "started on worker W (... T training thread(s) of a budget of B)"
 * line of job id in the daemon's log, waiting for it up to 20 s. */
static int job_started(const char *log, int64_t id, int *w, int *t, int *b)
{
    char pat[64];
    snprintf(pat, sizeof pat, "job %lld started on worker ", (long long)id);
    for (int tries = 0; tries < 200; tries++) {
        FILE *f = fopen(log, "r");
        char line[1024];
        int found = 0;
        while (f && !found && fgets(line, sizeof line, f)) {
            char *p = strstr(line, pat);
            const char *q = p ? strstr(p, "executor, ") : NULL;
            found = p && q && sscanf(p + strlen(pat), "%d", w) == 1 &&
                    sscanf(q, "executor, %d training thread(s) of a budget of %d",
                           t, b) == 2;
        }
        if (f)
            fclose(f);
        if (found)
            return 0;
        sleep_ms(100);
    }
    return -1;
}

static int log_has(const char *log, const char *text)
{
    FILE *f = fopen(log, "r");
    char line[1024];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    if (f)
        fclose(f);
    return found;
}

static int usable_cores(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set);
}

/* Submits a tiny job with train.threads = threads and checks the thread
 * count it started with against the budget its worker should have:
 * budget(w) = train_cores / workers (+1 for w < the remainder), 1..8. */
static void check_budget(const daemon_t *d, int threads, int train_cores, int workers)
{
    char spec[512];
    snprintf(spec, sizeof spec,
             "{\"name\": \"budget\", \"data\": {\"train_subset\": 500, \"test_subset\": 200},"
             " \"model\": {\"arch\": \"mlp\", \"hidden\": [16]},"
             " \"train\": {\"epochs\": 1, \"threads\": %d}}", threads);
    int64_t id = submit(d, spec, NULL, 201);
    int w = -1, t = -1, b = -1;
    ck_assert_msg(job_started(d->log, id, &w, &t, &b) == 0,
                  "no start line for job %lld in %s", (long long)id, d->log);
    ck_assert(w >= 0 && w < workers);
    int want = train_cores / workers + (w < train_cores % workers);
    want = want < 1 ? 1 : want > 8 ? 8 : want;
    ck_assert_msg(b == want, "worker %d: budget %d, want %d", w, b, want);
    ck_assert_int_eq(t, threads < b ? threads : b);
    char *st = wait_state(d, id, NULL, tu_sanitized() ? 120 : 60);
    ck_assert_str_eq(st, "succeeded");
    free(st);
}

/* A job trains min(train.threads, its worker's share of the training
 * cores) batch slices: the cores minus --serve-cores, split over the
 * workers; --blas-threads is obsolete (warned about, not fatal). */
START_TEST(test_thread_budget)
{
    int cores = usable_cores();
    char dir[128], db[200];
    temp_dir(dir, sizeof dir);

    /* every core for training, split over two workers */
    snprintf(db, sizeof db, "%s/a.db", dir);
    const char *ea[] = {"--workers", "2", "--serve-cores", "0", "--blas-threads", "2",
                        NULL};
    daemon_t d;
    start_daemon(&d, db, ea);
    ck_assert_msg(log_has(d.log, "--blas-threads 2 ignored"), "no warning in %s", d.log);
    check_budget(&d, 8, cores, 2);
    check_budget(&d, 8, cores, 2);
    stop_ok(&d);

    /* the default keeps one core for serving when there are two or more */
    snprintf(db, sizeof db, "%s/b.db", dir);
    const char *eb[] = {"--workers", "1", NULL};
    start_daemon(&d, db, eb);
    int train = cores >= 2 ? cores - 1 : 1;
    check_budget(&d, 8, train, 1);
    check_budget(&d, 1, train, 1);
    stop_ok(&d);

    /* more serving cores than there are: training still gets one */
    snprintf(db, sizeof db, "%s/c.db", dir);
    const char *ec[] = {"--workers", "1", "--serve-cores", "1024", NULL};
    start_daemon(&d, db, ec);
    ck_assert(log_has(d.log, "leaves no core"));
    check_budget(&d, 8, 1, 1);
    stop_ok(&d);
    rm_dir(dir);
}
END_TEST

/* ---- crash and shutdown recovery ------------------------------------------- */

/* Waits until job id has at least n epochs of metrics while running. */
static int wait_epochs(const daemon_t *d, int64_t id, int n, double timeout)
{
    double t0 = now_s();
    while (now_s() - t0 < timeout) {
        json_t *m = job_metrics(d, id, 0);
        int k = (int)json_array_size(m);
        json_decref(m);
        if (k >= n)
            return k;
        sleep_ms(20);
    }
    return -1;
}

/* Epoch number the daemon's log says job id resumed from, or -1. */
static int resumed_epoch(const char *log, int64_t id)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return -1;
    char line[1024], pat[96];
    snprintf(pat, sizeof pat, "job %lld: resuming from its checkpoint at epoch ",
             (long long)id);
    int ep = -1;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, pat);
        if (p)
            ep = atoi(p + strlen(pat));
    }
    fclose(f);
    return ep;
}

static void recovery(int sig)
{
    const int epochs = 6;
    char dir[128], db[200];
    temp_dir(dir, sizeof dir);
    snprintf(db, sizeof db, "%s/r.db", dir);
    const char *extra[] = {"--workers", "1", NULL};
    daemon_t d;
    start_daemon(&d, db, extra);
    char *spec = long_spec(sig == SIGKILL ? "crash" : "term", epochs);
    int64_t id = submit(&d, spec, NULL, 201);
    /* a queued job that must survive too */
    char *spec2 = tiny_spec("waiting", 1);
    int64_t id2 = submit(&d, spec2, NULL, 201);
    free(spec);
    free(spec2);
    int k = wait_epochs(&d, id, 2, tu_sanitized() ? 300 : 120);
    ck_assert_msg(k >= 2 && k < epochs, "job finished too fast to interrupt (%d epochs)", k);
    double secs = 0;
    int st = stop_daemon(&d, sig, 20, &secs);
    if (sig == SIGKILL) {
        ck_assert(st >= 0 && WIFSIGNALED(st));
    } else {
        ck_assert_msg(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "SIGTERM: status %d after %.1f s (log %s)", st, secs, d.log);
        ck_assert_msg(secs < (tu_sanitized() ? 15 : 5), "SIGTERM took %.1f s", secs);
    }
    /* restart on the same database: the job resumes and finishes */
    start_daemon(&d, db, extra);
    char *s = wait_state(&d, id, NULL, tu_sanitized() ? 300 : 120);
    ck_assert_str_eq(s, "succeeded");
    free(s);
    int ep = resumed_epoch(d.log, id);
    ck_assert_msg(ep >= 1, "job did not resume from a checkpoint (epoch %d, log %s)", ep,
                  d.log);
    json_t *m = job_metrics(&d, id, 0);
    check_epochs(m, epochs);
    json_decref(m);
    s = wait_state(&d, id2, NULL, tu_sanitized() ? 300 : 120);
    ck_assert_str_eq(s, "succeeded");
    free(s);
    resp r;
    char path[64];
    snprintf(path, sizeof path, "/v1/jobs/%lld/model", (long long)id);
    http(&d, "GET", path, NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    stop_ok(&d);
    rm_dir(dir);
}

START_TEST(test_kill9_resume)
{
    recovery(SIGKILL);
}
END_TEST

START_TEST(test_sigterm_resume)
{
    recovery(SIGTERM);
}
END_TEST

Suite *http_suite(void)
{
    Suite *s = suite_create("http");
    TCase *api = tcase_create("api");
    tcase_add_unchecked_fixture(api, main_setup, main_teardown);
    tcase_set_timeout(api, 300);
    tcase_add_test(api, test_job_flow);
    tcase_add_test(api, test_bad_input);
    tcase_add_test(api, test_body_limit);
    tcase_add_test(api, test_cancel_running);
    tcase_add_test(api, test_select);
    tcase_add_test(api, test_sweep);
    tcase_add_test(api, test_search);
    tcase_add_test(api, test_failing_jobs);
    tcase_add_test(api, test_misc_routes);
    tcase_add_test(api, test_openapi);
    tcase_add_test(api, test_shutdown_main);
    suite_add_tcase(s, api);

    TCase *q = tcase_create("queue");
    tcase_add_unchecked_fixture(q, q_setup, q_teardown);
    tcase_set_timeout(q, 300);
    tcase_add_test(q, test_list_cancel_delete);
    tcase_add_test(q, test_concurrency);
    tcase_add_test(q, test_shutdown_queue);
    tcase_add_test(q, test_queue_full);
    tcase_add_test(q, test_auth);
    tcase_add_test(q, test_bad_flags);
    tcase_add_test(q, test_thread_budget);
    suite_add_tcase(s, q);

    TCase *rec = tcase_create("recovery");
    tcase_set_timeout(rec, 600);
    tcase_add_test(rec, test_kill9_resume);
    tcase_add_test(rec, test_sigterm_resume);
    suite_add_tcase(s, rec);
    return s;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = tu_run(http_suite());
    curl_global_cleanup();
    return rc;
}
