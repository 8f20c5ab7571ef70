/*
 * dwfd.c - the dwf training daemon: flags and config file, the store, the
 * worker pool and the HTTP server; SIGTERM/SIGINT shut it down cleanly
 * (running jobs checkpoint and resume at the next start).
 *
 * Cores: of the C cores this process may run on, --serve-cores S (default
 * 1 when C >= 2, else 0) are kept free of training for the HTTP server and
 * its clients; the other C - S (at least 1) are the training cores, split
 * over the workers by the pool (dwf_pool.h). BLAS is set to one thread
 * once, here: OpenBLAS's thread count is global to the process, and a job
 * trains in parallel through its batch slices (train.threads, capped at its
 * worker's share), so the workers together never use more threads than
 * the training cores.
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <jansson.h>

#include "dwf_http.h"
#include "dwf_job.h"
#include "dwf_pool.h"
#include "dwf_store.h"
#include "dwf_sweep.h"

#define MAX_LIST 64

typedef struct options {
    char listen[256];
    char db[1024];
    int workers;
    int blas_threads;     /* obsolete: only 1 is meaningful (0 = not given) */
    int serve_cores;      /* -1 = 1 when the machine has >= 2 cores, else 0 */
    int max_queue;
    long long max_body;
    const char *roots[MAX_LIST];
    int n_roots;
    const char *tokens[MAX_LIST];
    int n_tokens;
    const char *read_tokens[MAX_LIST];
    int n_read_tokens;
    int auth_reads;
    int checkpoint_every; /* -1 = from the spec */
    double sse_ping;
    int http_nice;
    int http_threads;
    int list_routes;
    int cli_roots;        /* data-root given on the command line */
} options;

static const char usage_text[] =
    "usage: dwfd [options]\n"
    "  --listen HOST:PORT      address to serve (default 127.0.0.1:8080; port 0 = any)\n"
    "  --db PATH               SQLite database (default ./var/dwf.db, created)\n"
    "  --workers N             training worker threads (default 1; 0 = queue only)\n"
    "  --serve-cores N         cores kept free of training for the HTTP server\n"
    "                          and its clients (default 1 with 2 or more cores,\n"
    "                          else 0); the other cores are split over the\n"
    "                          workers, and a job trains min(train.threads, its\n"
    "                          worker's share) batch slices in parallel, each\n"
    "                          with single-threaded BLAS. 0 = fastest training,\n"
    "                          but HTTP load then slows the running jobs\n"
    "  --blas-threads N        obsolete: dwfd always runs BLAS single-threaded\n"
    "                          (values other than 1 are ignored with a warning)\n"
    "  --max-queue N           queued jobs before 429 (default 1000)\n"
    "  --max-body BYTES        largest request body before 413 (default 1048576)\n"
    "  --data-root DIR         folder specs may read data from (repeatable;\n"
    "                          default /usr/share/datasets)\n"
    "  --token TOKEN           read-write bearer token (repeatable)\n"
    "  --read-token TOKEN      read-only bearer token (repeatable)\n"
    "  --auth-reads            require a token for reads too\n"
    "  --checkpoint-every N    epochs between checkpoints (default: the spec's)\n"
    "  --sse-ping SECONDS      heartbeat interval of event streams (default 15)\n"
    "  --http-threads N        threads serving HTTP (default 2)\n"
    "  --http-nice N           nice value (0-19) of HTTP threads: higher keeps\n"
    "                          training fast under heavy HTTP load (default 0)\n"
    "  --config FILE           'key = value' lines with the option names above\n"
    "  --list-routes           print the route table and exit\n"
    "  --help                  this text\n";

static void usage(FILE *f)
{
    fputs(usage_text, f);
}

static void log_stderr(void *ud, const char *fmt, ...)
{
    (void)ud;
    char ts[32];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s dwfd: %s\n", ts, msg);
}

/* Parses a whole decimal integer in [lo, hi]. */
static int parse_int(const char *s, long long lo, long long hi, long long *out)
{
    if (!s || !*s)
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Copies of option values, freed at exit (free_kept). */
static char *kept[3 * MAX_LIST + 8];
static int n_kept;

static char *keep(const char *s)
{
    char *d = strdup(s);
    if (!d || n_kept == (int)(sizeof kept / sizeof *kept)) {
        fprintf(stderr, "dwfd: out of memory\n");
        exit(1);
    }
    kept[n_kept++] = d;
    return d;
}

static void free_kept(void)
{
    for (int i = 0; i < n_kept; i++)
        free(kept[i]);
    n_kept = 0;
}

/* Applies option `name` = value. Returns 0, or -1 after printing why. */
static int set_option(options *o, const char *name, const char *value,
                      int from_cli, const char *where)
{
    long long v;
#define BAD(...)                                                             \
    do {                                                                     \
        fprintf(stderr, "dwfd: %s: ", where);                                \
        fprintf(stderr, __VA_ARGS__);                                        \
        fputc('\n', stderr);                                                 \
        return -1;                                                           \
    } while (0)
    if (!strcmp(name, "listen")) {
        if (strlen(value) >= sizeof o->listen || !*value)
            BAD("--listen needs HOST:PORT");
        snprintf(o->listen, sizeof o->listen, "%s", value);
    } else if (!strcmp(name, "db")) {
        if (strlen(value) >= sizeof o->db || !*value)
            BAD("--db needs a path");
        snprintf(o->db, sizeof o->db, "%s", value);
    } else if (!strcmp(name, "workers")) {
        if (parse_int(value, 0, 256, &v))
            BAD("--workers must be an integer from 0 to 256");
        o->workers = (int)v;
    } else if (!strcmp(name, "blas-threads")) {
        if (parse_int(value, 1, 256, &v))
            BAD("--blas-threads must be an integer from 1 to 256");
        o->blas_threads = (int)v;
    } else if (!strcmp(name, "serve-cores")) {
        if (parse_int(value, 0, 1024, &v))
            BAD("--serve-cores must be an integer from 0 to 1024");
        o->serve_cores = (int)v;
    } else if (!strcmp(name, "max-queue")) {
        if (parse_int(value, 1, 10000000, &v))
            BAD("--max-queue must be an integer from 1 to 10000000");
        o->max_queue = (int)v;
    } else if (!strcmp(name, "max-body")) {
        if (parse_int(value, 1024, 1LL << 32, &v))
            BAD("--max-body must be a byte count from 1024 to 4294967296");
        o->max_body = v;
    } else if (!strcmp(name, "data-root")) {
        if (from_cli && !o->cli_roots) { /* the command line replaces the file's */
            o->n_roots = 0;
            o->cli_roots = 1;
        }
        if (o->n_roots >= MAX_LIST || !*value)
            BAD("--data-root needs a folder (at most %d)", MAX_LIST);
        o->roots[o->n_roots++] = keep(value);
    } else if (!strcmp(name, "token")) {
        if (o->n_tokens >= MAX_LIST || strlen(value) < 8)
            BAD("--token needs at least 8 characters");
        o->tokens[o->n_tokens++] = keep(value);
    } else if (!strcmp(name, "read-token")) {
        if (o->n_read_tokens >= MAX_LIST || strlen(value) < 8)
            BAD("--read-token needs at least 8 characters");
        o->read_tokens[o->n_read_tokens++] = keep(value);
    } else if (!strcmp(name, "auth-reads")) {
        if (!strcmp(value, "") || !strcmp(value, "1") || !strcmp(value, "true") ||
            !strcmp(value, "yes"))
            o->auth_reads = 1;
        else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "no"))
            o->auth_reads = 0;
        else
            BAD("auth-reads must be true or false");
    } else if (!strcmp(name, "checkpoint-every")) {
        if (parse_int(value, 0, 10000, &v))
            BAD("--checkpoint-every must be an integer from 0 to 10000");
        o->checkpoint_every = (int)v;
    } else if (!strcmp(name, "http-threads")) {
        if (parse_int(value, 1, 64, &v))
            BAD("--http-threads must be an integer from 1 to 64");
        o->http_threads = (int)v;
    } else if (!strcmp(name, "http-nice")) {
        if (parse_int(value, 0, 19, &v))
            BAD("--http-nice must be an integer from 0 to 19");
        o->http_nice = (int)v;
    } else if (!strcmp(name, "sse-ping")) {
        char *end;
        double d = strtod(value, &end);
        if (*end || !(d >= 0.05 && d <= 3600))
            BAD("--sse-ping must be seconds from 0.05 to 3600");
        o->sse_ping = d;
    } else {
        BAD("unknown option '%s'", name);
    }
    return 0;
#undef BAD
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' ||
                 s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

static int load_config(options *o, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "dwfd: cannot open config %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[2048];
    int ln = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char where[1100];
        snprintf(where, sizeof where, "%s:%d", path, ln);
        char *eq = strchr(s, '=');
        char *key = s, *val = (char *)"";
        if (eq) {
            *eq = 0;
            val = trim(eq + 1);
            key = trim(s);
        }
        if (!eq && strcmp(key, "auth-reads") != 0) {
            fprintf(stderr, "dwfd: %s: expected 'key = value'\n", where);
            rc = -1;
            break;
        }
        if (!strcmp(key, "config")) {
            fprintf(stderr, "dwfd: %s: config files do not nest\n", where);
            rc = -1;
            break;
        }
        if (set_option(o, key, val, 0, where)) {
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

/* Opens a listening socket for "host:port" ("[v6]:port"). */
static int open_listener(const char *spec, int *ipv6, char *shown, size_t n)
{
    char host[256];
    const char *port;
    if (spec[0] == '[') {
        const char *rb = strchr(spec, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - spec - 1) >= sizeof host)
            return -1;
        memcpy(host, spec + 1, (size_t)(rb - spec - 1));
        host[rb - spec - 1] = 0;
        port = rb + 2;
    } else {
        const char *colon = strrchr(spec, ':');
        if (!colon || (size_t)(colon - spec) >= sizeof host)
            return -1;
        memcpy(host, spec, (size_t)(colon - spec));
        host[colon - spec] = 0;
        port = colon + 1;
    }
    long long pv;
    if (parse_int(port, 0, 65535, &pv))
        return -1;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int e = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (e) {
        fprintf(stderr, "dwfd: --listen %s: %s\n", spec, gai_strerror(e));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, p->ai_addr, p->ai_addrlen) == 0 && listen(fd, 512) == 0) {
            *ipv6 = p->ai_family == AF_INET6;
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "dwfd: cannot listen on %s: %s\n", spec, strerror(errno));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[INET6_ADDRSTRLEN] = "?";
    int bound = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, addr, sizeof addr);
            bound = ntohs(a->sin_port);
            snprintf(shown, n, "%s:%d", addr, bound);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof addr);
            bound = ntohs(a->sin6_port);
            snprintf(shown, n, "[%s]:%d", addr, bound);
        }
    }
    return fd;
}

/* Cores this process may run on (its affinity mask, so taskset and
 * cpusets are respected), at least 1. */
static int usable_cores(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* The store's listener forwards to the HTTP server while it exists. The
 * mutex is recursive: the server's handler may write to the store (the
 * next run of a target-CR search), which emits again on the same thread. */
typedef struct event_fanout {
    pthread_mutex_t mu;
    dwf_http *http;
} event_fanout;

static void on_store_event(void *ud, dwf_store_event ev, int64_t job_id,
                           int64_t arg)
{
    event_fanout *f = ud;
    pthread_mutex_lock(&f->mu);
    if (f->http)
        dwf_http_on_event(f->http, ev, job_id, arg);
    pthread_mutex_unlock(&f->mu);
}

int main(int argc, char **argv)
{
    options o;
    memset(&o, 0, sizeof o);
    atexit(free_kept);
    snprintf(o.listen, sizeof o.listen, "127.0.0.1:8080");
    snprintf(o.db, sizeof o.db, "./var/dwf.db");
    o.workers = 1;
    o.max_queue = 1000;
    o.max_body = 1048576;
    o.checkpoint_every = -1;
    o.serve_cores = -1;
    o.sse_ping = 15;

    static const struct option longopts[] = {
        {"listen", required_argument, 0, 'l'},
        {"db", required_argument, 0, 'd'},
        {"workers", required_argument, 0, 'w'},
        {"blas-threads", required_argument, 0, 'b'},
        {"serve-cores", required_argument, 0, 's'},
        {"max-queue", required_argument, 0, 'q'},
        {"max-body", required_argument, 0, 'm'},
        {"data-root", required_argument, 0, 'r'},
        {"token", required_argument, 0, 't'},
        {"read-token", required_argument, 0, 'T'},
        {"auth-reads", no_argument, 0, 'a'},
        {"checkpoint-every", required_argument, 0, 'c'},
        {"sse-ping", required_argument, 0, 'p'},
        {"http-nice", required_argument, 0, 'n'},
        {"http-threads", required_argument, 0, 'H'},
        {"config", required_argument, 0, 'C'},
        {"list-routes", no_argument, 0, 'L'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    /* The config file first, so that flags override it. */
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            path = argv[i] + 9;
        if (path && load_config(&o, path)) {
            usage(stderr);
            return 2;
        }
    }
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        const char *name = NULL;
        switch (ch) {
        case 'C':
            continue;
        case 'L':
            o.list_routes = 1;
            continue;
        case 'h':
            usage(stdout);
            return 0;
        case 'a':
            o.auth_reads = 1;
            continue;
        case '?':
            if (optopt)
                fprintf(stderr, "dwfd: option needs a value or is unknown: %s\n",
                        argv[optind - 1]);
            else
                fprintf(stderr, "dwfd: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            for (const struct option *lo = longopts; lo->name; lo++)
                if (lo->val == ch)
                    name = lo->name;
        }
        if (!name || set_option(&o, name, optarg, 1, "command line")) {
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dwfd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (o.list_routes) {
        int n;
        const dwf_http_route_info *r = dwf_http_routes(&n);
        for (int i = 0; i < n; i++)
            printf("%s %s%s\n", r[i].method, r[i].pattern,
                   r[i].mutating ? " (mutating)" : "");
        return 0;
    }
    if (o.n_roots == 0)
        o.roots[o.n_roots++] = "/usr/share/datasets";
    int cores = usable_cores();
    int serve_cores = o.serve_cores >= 0 ? o.serve_cores : cores >= 2 ? 1 : 0;
    int train_cores = cores - serve_cores;
    if (train_cores < 1) {
        log_stderr(NULL, "--serve-cores %d leaves no core of %d for training: "
                   "jobs train with one thread", serve_cores, cores);
        train_cores = 1;
    }
    if (o.blas_threads > 1)
        log_stderr(NULL, "--blas-threads %d ignored: dwfd runs BLAS "
                   "single-threaded and trains in parallel through batch "
                   "slices (train.threads, --serve-cores)", o.blas_threads);

    /* Signals: handled by sigwait() in this thread only. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    json_object_seed(0);
    /* global to the process: one thread, parallelism is in the slices */
    dwf_blas_threads(1);

    int ipv6 = 0;
    char shown[300] = "";
    int fd = open_listener(o.listen, &ipv6, shown, sizeof shown);
    if (fd < 0) {
        if (!shown[0])
            fprintf(stderr, "dwfd: bad --listen '%s' (HOST:PORT)\n", o.listen);
        return 2;
    }

    dwf_err err;
    dwf_store *store = NULL;
    if (dwf_store_open(o.db, NULL, &store, &err)) {
        fprintf(stderr, "dwfd: %s: %s\n", o.db, err.msg);
        close(fd);
        return 1;
    }
    event_fanout fan = {PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP, NULL};
    dwf_store_set_listener(store, on_store_event, &fan);
    int requeued = 0;
    if (dwf_store_requeue_running(store, &requeued, &err)) {
        fprintf(stderr, "dwfd: requeueing interrupted jobs: %s\n", err.msg);
        dwf_store_close(store);
        close(fd);
        return 1;
    }
    if (requeued)
        log_stderr(NULL, "%d interrupted job(s) queued again; they resume from "
                   "their checkpoints", requeued);

    dwf_pool_config pc = {
        .workers = o.workers,
        .train_cores = train_cores,
        .checkpoint_every = o.checkpoint_every,
        .roots = o.roots,
        .n_roots = o.n_roots,
        .log = log_stderr,
    };
    dwf_pool *pool = NULL;
    if (dwf_pool_create(&pc, store, dwf_executor_local(), &pool, &err)) {
        fprintf(stderr, "dwfd: %s\n", err.msg);
        dwf_store_close(store);
        close(fd);
        return 1;
    }
    dwf_http_config hc = {
        .listen_fd = fd,
        .ipv6 = ipv6,
        .max_body = (size_t)o.max_body,
        .max_queue = o.max_queue,
        .tokens = o.tokens,
        .n_tokens = o.n_tokens,
        .read_tokens = o.read_tokens,
        .n_read_tokens = o.n_read_tokens,
        .auth_reads = o.auth_reads,
        .roots = o.roots,
        .n_roots = o.n_roots,
        .sse_ping = o.sse_ping,
        .http_nice = o.http_nice,
        .threads = o.http_threads,
        .log = log_stderr,
    };
    dwf_http *http = NULL;
    if (dwf_http_create(&hc, store, pool, &http, &err)) {
        fprintf(stderr, "dwfd: %s\n", err.msg);
        dwf_pool_free(pool);
        dwf_store_close(store);
        close(fd);
        return 1;
    }
    /* events reach the server before its first request */
    pthread_mutex_lock(&fan.mu);
    fan.http = http;
    pthread_mutex_unlock(&fan.mu);
    /* target-CR searches whose next run was not yet created (a run ended
     * while dwfd was stopped or killed) */
    if (dwf_sweep_search_resume(store, (const char *const *)o.roots, o.n_roots, &err))
        fprintf(stderr, "dwfd: resuming searches: %s\n", err.msg);
    if (dwf_http_listen(http, &err)) {
        fprintf(stderr, "dwfd: %s\n", err.msg);
        pthread_mutex_lock(&fan.mu);
        fan.http = NULL;
        pthread_mutex_unlock(&fan.mu);
        dwf_http_stop(http); /* closes fd */
        dwf_pool_free(pool);
        dwf_store_close(store);
        return 1;
    }
    dwf_pool_notify(pool);

    printf("dwfd listening on http://%s\n", shown);
    fflush(stdout);
    log_stderr(NULL, "serving http://%s (db %s, %d worker(s); %d core(s): %d "
               "for training, %d kept for serving; a job trains with up to "
               "%d thread(s), BLAS single-threaded)", shown, o.db, o.workers,
               cores, train_cores, serve_cores,
               dwf_pool_budget(pool, 0));

    int sig = 0;
    sigwait(&sigs, &sig);
    log_stderr(NULL, "%s: stopping (running jobs checkpoint and resume at the "
               "next start)", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* A hard deadline in case something hangs. */
    signal(SIGALRM, SIG_DFL);
    alarm(30);

    dwf_http_quiesce(http);   /* no new connections; event streams end */
    dwf_pool_stop(pool);      /* running jobs stop within one batch */
    pthread_mutex_lock(&fan.mu);
    fan.http = NULL;
    pthread_mutex_unlock(&fan.mu);
    dwf_http_stop(http);      /* joins the connection threads */
    log_stderr(NULL, "http stopped");
    dwf_pool_free(pool);      /* joins the workers (jobs requeued) */
    log_stderr(NULL, "workers stopped");
    dwf_store_close(store);
    log_stderr(NULL, "stopped");
    return 0;
}
