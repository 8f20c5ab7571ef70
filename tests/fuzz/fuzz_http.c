/*
 * fuzz_http.c - libFuzzer target: dwfd's HTTP API (server/dwf_http.c and
 * what its handlers call: spec and sweep parsing, the store, exports,
 * predictions), in process over a real socket.
 *
 * Setup (once): a store in a temporary folder holding a tiny CSV data set
 * (the only data root), two finished jobs trained there by a one-worker
 * pool (a DWF run with a validation split, selection and per-epoch
 * curves; a magnitude-pruning run); then the server with
 * a pool of no workers, so that jobs the fuzzer creates stay queued.
 *
 * Input: "METHOD TARGET\n" then header lines, an empty line and the body
 * (no empty line: no body). The request is sent as HTTP/1.1 with
 * Connection: close and the body's Content-Length. The answer must come
 * (an event stream is closed once its header arrives), be HTTP, carry
 * no 500 (a bad request is the client's error, never an internal one),
 * and the server must answer /healthz after it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dwf_http.h"
#include "dwf_pool.h"
#include "dwf_spec.h"
#include "dwf_store.h"
#include "fuzz_util.h"

static dwf_store *g_store;
static dwf_http *g_http;
static int g_port;
static char g_dir[64] = "/tmp/dwf-fuzz-http-XXXXXX";

static void make_csv(const char *path, int n, unsigned seed)
{
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f != NULL, "temporary file");
    fputs("label,a,b,c,d\n", f);
    for (int i = 0; i < n; i++) {
        int c = i % 3;
        seed = seed * 1103515245u + 12345u;
        double noise = (double)(seed >> 16 & 0x7fff) / 32768.0 - 0.5;
        fprintf(f, "%d,%.3f,%.3f,%.3f,%.3f\n", c, c == 0 ? 2.0 + noise : noise,
                c == 1 ? 2.0 - noise : noise, c == 2 ? 2.0 + noise : -noise, noise);
    }
    fclose(f);
}

static int64_t add_job(const char *json)
{
    dwf_spec s;
    dwf_err err = {0};
    char field[DWF_FIELD_LEN];
    const char *roots[1] = {g_dir};
    if (dwf_spec_parse(json, strlen(json), roots, 1, &s, field, &err))
        fuzz_fail("seed job spec", err.msg, json);
    dwf_store_job_new j;
    dwf_store_job_new_from_spec(&j, &s);
    int64_t id = 0;
    if (dwf_store_job_create(g_store, &j, &id, NULL, &err))
        fuzz_fail("seed job", err.msg, NULL);
    dwf_spec_free(&s);
    return id;
}

static void wait_done(int64_t id)
{
    for (int i = 0; i < 6000; i++) {
        dwf_store_state st;
        dwf_err err = {0};
        FUZZ_CHECK(dwf_store_job_state(g_store, id, &st, &err) == 0, "job state");
        if (st == DWF_STORE_SUCCEEDED)
            return;
        FUZZ_CHECK(st != DWF_STORE_FAILED, "seed job failed");
        usleep(10000);
    }
    fuzz_fail("seed job did not finish in 60 s", NULL, NULL);
}

static void on_event(void *ud, dwf_store_event ev, int64_t job_id, int64_t arg)
{
    (void)ud;
    if (g_http)
        dwf_http_on_event(g_http, ev, job_id, arg);
}

static void cleanup(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_http: could not remove %s\n", g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    FUZZ_CHECK(mkdtemp(g_dir) != NULL, "temporary folder");
    atexit(cleanup);
    char path[256], spec[2048];
    snprintf(path, sizeof path, "%s/train.csv", g_dir);
    make_csv(path, 90, 1);
    snprintf(path, sizeof path, "%s/test.csv", g_dir);
    make_csv(path, 30, 2);
    snprintf(path, sizeof path, "%s/dwf.db", g_dir);
    dwf_err err = {0};
    if (dwf_store_open(path, NULL, &g_store, &err))
        fuzz_fail("store", err.msg, NULL);
    dwf_store_set_listener(g_store, on_event, NULL);

    /* two finished jobs, trained for real by a one-worker pool */
    const char *roots[1] = {g_dir};
    dwf_pool_config pc = {.workers = 1, .train_cores = 1, .checkpoint_every = -1,
                          .roots = roots, .n_roots = 1};
    dwf_pool *pool = NULL;
    if (dwf_pool_create(&pc, g_store, dwf_executor_local(), &pool, &err))
        fuzz_fail("pool", err.msg, NULL);
    const char *data = "\"data\": {\"dataset\": \"csv\", \"train\": \"%s/train.csv\", "
                       "\"test\": \"%s/test.csv\", \"validation\": 0.2}";
    char d[600];
    snprintf(d, sizeof d, data, g_dir, g_dir);
    snprintf(spec, sizeof spec,
             "{\"name\": \"seed-dwf\", %s, \"model\": {\"hidden\": [6]}, \"train\": "
             "{\"epochs\": 3, \"lambda\": 0.05, \"batch_size\": 16}, \"select\": {}, "
             "\"thresholds\": {\"every\": 1}}", d);
    int64_t a = add_job(spec);
    snprintf(spec, sizeof spec,
             "{\"name\": \"seed-mag\", \"method\": \"magnitude\", %s, \"model\": "
             "{\"hidden\": [6]}, \"train\": {\"epochs\": 2, \"batch_size\": 16}, "
             "\"prune\": {\"target_cr\": 3}}", d);
    int64_t b = add_job(spec);
    dwf_pool_notify(pool);
    wait_done(a);
    wait_done(b);
    dwf_pool_free(pool);

    /* the server, with a pool that runs nothing */
    pc.workers = 0;
    if (dwf_pool_create(&pc, g_store, dwf_executor_local(), &pool, &err))
        fuzz_fail("pool", err.msg, NULL);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    FUZZ_CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                   listen(fd, 64) == 0 && getsockname(fd, (struct sockaddr *)&sa, &sl) == 0,
               "listening socket");
    g_port = ntohs(sa.sin_port);
    dwf_http_config hc = {.listen_fd = fd, .max_body = 65536, .max_queue = 100000,
                          .roots = roots, .n_roots = 1, .sse_ping = 1, .threads = 2};
    dwf_http *h = NULL;
    if (dwf_http_create(&hc, g_store, pool, &h, &err))
        fuzz_fail("http", err.msg, NULL);
    g_http = h;
    if (dwf_http_listen(h, &err))
        fuzz_fail("listen", err.msg, NULL);
    /* the pool, store and server live until the process ends */
    return 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Whether the answer resp[0..got) is whole: its header and
 * Content-Length bytes of body; for an event stream (which does not end)
 * the header. Else the answer ends when the server closes the connection
 * (which it may keep open: the fuzzer can ask for keep-alive). */
static int complete(const char *resp, size_t got)
{
    const char *he = strstr(resp, "\r\n\r\n");
    if (!he)
        return 0;
    size_t hlen = (size_t)(he + 4 - resp);
    for (const char *l = resp; l < he; l = strstr(l, "\r\n") + 2) {
        if (strncasecmp(l, "Content-Type: text/event-stream", 31) == 0)
            return 1;
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            return got >= hlen + strtoull(l + 15, NULL, 10);
    }
    return 0;
}

/* Sends req[0..n) and reads the answer into resp (NUL-terminated, cut at
 * cap - 1). Returns the status code, 0 when the connection closed
 * without one (the server may refuse garbage that way). */
static int exchange(const char *req, size_t n, char *resp, size_t cap)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = -1;
    for (int attempt = 0; fd < 0; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        FUZZ_CHECK(fd >= 0, "socket");
        /* closed with a reset: no TIME_WAIT, so the ports do not run out */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            break;
        int e = errno;
        close(fd);
        fd = -1;
        if (attempt == 50)
            fuzz_fail("connect", strerror(e), NULL);
        usleep(20000);
    }
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, req + off, n - off, MSG_NOSIGNAL);
        if (w <= 0)
            break; /* the server may close early on a bad request */
        off += (size_t)w;
    }
    size_t got = 0;
    double end = now() + 10.0;
    for (;;) {
        double left = end - now();
        if (left <= 0) {
            resp[got] = '\0';
            fuzz_fail("no complete answer within 10 s", req, resp);
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
            continue;
        char tmp[4096];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r <= 0)
            break;
        size_t k = (size_t)r < cap - 1 - got ? (size_t)r : cap - 1 - got;
        memcpy(resp + got, tmp, k);
        got += k;
        resp[got] = '\0';
        if (complete(resp, got))
            break;
    }
    close(fd);
    resp[got] = '\0';
    if (got == 0)
        return 0;
    if (strncmp(resp, "HTTP/1.", 7) != 0 || got < 12)
        fuzz_fail("not an HTTP answer", req, resp);
    return atoi(resp + 9);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* request line: up to the first newline; headers: lines up to an
     * empty one; the rest is the body (no empty line: no headers, no
     * body). CR and NUL are dropped from the request line and the
     * headers, leading blanks from header lines (folded lines would merge
     * into ours), and the framing headers the harness sets itself. */
    const char *p = (const char *)data, *e = p + size;
    const char *nl = memchr(p, '\n', size);
    if (!nl)
        return 0;
    size_t cap = 2 * size + 512; /* CR before every LF, the fixed headers, a NUL */
    char *req = malloc(cap), *resp = malloc(1 << 16), *line = malloc(size + 1);
    FUZZ_CHECK(req && resp && line, "allocation");
    size_t n = 0;
    for (const char *q = p; q < nl; q++)
        if (*q != '\r' && *q != '\0')
            req[n++] = *q;
    n += (size_t)snprintf(req + n, cap - n, " HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    size_t hstart = n;
    const char *body = e;
    for (const char *q = nl + 1; q < e;) {
        const char *l = memchr(q, '\n', (size_t)(e - q));
        if (!l)
            break;
        size_t k = 0;
        for (; q < l; q++)
            if (*q != '\r' && *q != '\0' && (k > 0 || (*q != ' ' && *q != '\t')))
                line[k++] = *q;
        q = l + 1;
        if (k == 0) { /* the empty line */
            body = q;
            break;
        }
        line[k] = '\0';
        if (strncasecmp(line, "content-length", 14) == 0 ||
            strncasecmp(line, "transfer-encoding", 17) == 0 ||
            strncasecmp(line, "connection", 10) == 0)
            continue;
        memcpy(req + n, line, k);
        n += k;
        req[n++] = '\r';
        req[n++] = '\n';
    }
    if (body == e)
        n = hstart;
    n += (size_t)snprintf(req + n, cap - n, "Content-Length: %zu\r\n\r\n", (size_t)(e - body));
    memcpy(req + n, body, (size_t)(e - body));
    n += (size_t)(e - body);
    req[n] = '\0'; /* for messages */
    int status = exchange(req, n, resp, 1 << 16);
    if (status == 500)
        fuzz_fail("internal server error", req, resp);
    static const char health[] = "GET /healthz HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n";
    FUZZ_CHECK(exchange(health, sizeof health - 1, resp, 1 << 16) == 200, "healthz after");
    free(req);
    free(resp);
    free(line);
    return 0;
}
