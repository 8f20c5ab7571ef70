/*
 * dwf_http.c - the REST API, SSE, /metrics and the dashboard files on
 * libmicrohttpd (a pool of epoll threads; SSE by suspend/resume).
 */
#include "dwf_http.h"
#include "dwf_sweep.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "dwf_export.h"
#include "dwf_sparse.h"
#include "dwf_spec.h"
#include "web_assets.h"

/* Reals with 15 significant digits: 0.9 stays 0.9 (17 would print
 * 0.90000000000000002) and every decimal of up to 15 digits round-trips. */
#define JSON_FMT (JSON_COMPACT | JSON_REAL_PRECISION(15))
#define MAX_SWEEP_CHILDREN 1000
#define MAX_GRID_VALUES 100
#define MAX_PREDICT_ROWS 1024
#define MODEL_CACHE 8
#define MAX_DATASETS 500
#define WALK_DEPTH 4

/* ---- types ---------------------------------------------------------------- */

struct sse;

/* The SSE streams of one job: a generation bumped by each of its store
 * events, and the streams suspended until the next one. */
typedef struct watch {
    int64_t job_id;
    int refs;
    uint64_t gen;
    struct sse *waiters;         /* suspended streams */
    struct watch *next;
} watch;

typedef struct cache_slot {
    int64_t id;
    dwf_smodel *m;     /* NULL = empty */
    int refs;
    int dead;          /* invalidated; freed when refs reaches 0 */
    uint64_t used;
} cache_slot;

/* Status codes counted in dwf_http_requests_total. */
static const int counted_status[] = {200, 201, 204, 304, 400, 401, 403, 404,
                                     405, 409, 413, 429, 500, 503, 0};
#define N_STATUS ((int)(sizeof counted_status / sizeof *counted_status))

typedef struct req req;
typedef enum MHD_Result (*handler_fn)(dwf_http *h, struct MHD_Connection *c,
                                      req *r);

typedef struct route {
    const char *method;
    const char *pattern;
    int mutating;
    int body;          /* reads a request body */
    int open;          /* never needs a token (health, dashboard files) */
    handler_fn fn;
} route;

struct req {
    int route;         /* index into routes, -1 = none */
    char id[64];       /* the {id} segment */
    char asset[256];   /* the {asset} rest of the path ("" = none) */
    char *body;
    size_t len, cap;
    int too_large;
};

#define N_ROUTES_MAX 32
#define JCACHE_N 1024
#define LCACHE_N 16

/* A rendered response body kept for repeated GETs. */
typedef struct cached {
    int64_t id;                  /* job id (job cache) */
    char key[200];               /* query (list cache) */
    uint64_t gen;
    char *text;
    size_t len;
    uint64_t filling;            /* gen + 1 being rendered by a thread, 0 = none */
} cached;

struct dwf_http {
    struct MHD_Daemon *d;
    dwf_store *store;
    dwf_pool *pool;
    int listen_fd;
    int ipv6;
    int http_nice;
    int max_connections;
    size_t max_body;
    int max_queue;
    char **tokens;
    int n_tokens;
    char **read_tokens;
    int n_read_tokens;
    int auth_reads;
    char **roots;
    int n_roots;
    double sse_ping;
    dwf_log_fn log;
    void *log_ud;
    atomic_int stopping;
    int quiesced;
    time_t started_at;
    pthread_mutex_t submit_mu;   /* queue check + insert */
    pthread_mutex_t w_mu;        /* watches */
    watch *watches;
    pthread_cond_t ping_cv;      /* wakes the heartbeat thread to stop */
    pthread_t ping_thread;
    int ping_started, ping_stop;
    int n_streams;               /* open SSE streams */
    int http_threads;
    pthread_mutex_t cache_mu;
    cache_slot cache[MODEL_CACHE];
    uint64_t cache_tick;
    atomic_uint_fast64_t counts[N_ROUTES_MAX + 1][N_STATUS];
    int n_assets;
    char (*asset_etag)[24];
    /* rendered GET responses, valid while their generation is current */
    pthread_mutex_t rc_mu;
    uint64_t boot;               /* makes ETags unique across restarts */
    uint64_t job_gen[JCACHE_N];  /* bumped by every store event of a job */
    cached job_cache[JCACHE_N];  /* direct-mapped by id */
    uint64_t list_gen;           /* bumped by every store event */
    cached list_cache[LCACHE_N];
    int list_next;               /* round-robin replacement */
};

#define LOG(h, ...)                                                          \
    do {                                                                     \
        if ((h)->log)                                                        \
            (h)->log((h)->log_ud, __VA_ARGS__);                              \
    } while (0)

/* ---- small helpers -------------------------------------------------------- */

static int ct_equal(const char *a, size_t an, const char *b, size_t bn)
{
    /* Time depends on the configured token's length only. */
    volatile unsigned char d = (unsigned char)(an != bn);
    for (size_t i = 0; i < bn; i++) {
        unsigned char x = i < an ? (unsigned char)a[i] : 0;
        d |= (unsigned char)(x ^ (unsigned char)b[i]);
    }
    return d == 0;
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s)
        return -1;
    for (const char *p = s; *p; p++)
        if (!(isdigit((unsigned char)*p) || (p == s && *p == '-')))
            return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Growable text buffer. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b,
                                                            const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sb_put(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}

/* ---- responses ------------------------------------------------------------ */

static void count_status(dwf_http *h, req *r, int status)
{
    int ri = r && r->route >= 0 ? r->route : N_ROUTES_MAX;
    int si = N_STATUS - 1;
    for (int i = 0; i < N_STATUS - 1; i++)
        if (counted_status[i] == status) {
            si = i;
            break;
        }
    atomic_fetch_add_explicit(&h->counts[ri][si], 1, memory_order_relaxed);
}

static enum MHD_Result reply(dwf_http *h, struct MHD_Connection *c, req *r,
                             int status, struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    if (atomic_load(&h->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    count_status(h, r, status);
    return ret;
}

static struct MHD_Response *text_response(char *text, size_t len,
                                          const char *type)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    return resp;
}

static enum MHD_Result reply_error(dwf_http *h, struct MHD_Connection *c,
                                   req *r, int status, const char *code,
                                   const char *field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* Serializes j (stolen) as the response body. */
static enum MHD_Result reply_json_flags(dwf_http *h, struct MHD_Connection *c,
                                        req *r, int status, json_t *j,
                                        size_t flags)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | (flags ? flags : JSON_FMT)) : NULL;
    json_decref(j);
    if (!text) {
        if (status >= 500)
            return MHD_NO;
        return reply_error(h, c, r, 500, "internal", NULL,
                           "out of memory rendering the response");
    }
    struct MHD_Response *resp = text_response(text, strlen(text), "application/json");
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return reply(h, c, r, status, resp);
}

static enum MHD_Result reply_json(dwf_http *h, struct MHD_Connection *c, req *r,
                                  int status, json_t *j)
{
    return reply_json_flags(h, c, r, status, j, 0);
}

static enum MHD_Result reply_error(dwf_http *h, struct MHD_Connection *c,
                                   req *r, int status, const char *code,
                                   const char *field, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:{s:s,s:s,s:o}}", "error", "code", code, "message",
                          msg, "field", field && *field ? json_string(field)
                                                        : json_null());
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return MHD_NO;
    struct MHD_Response *resp = text_response(text, strlen(text), "application/json");
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"dwfd\"");
    if (status == 429 || status == 503)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    return reply(h, c, r, status, resp);
}

/* Maps a store/library error to its HTTP status. */
static enum MHD_Result reply_store_error(dwf_http *h, struct MHD_Connection *c,
                                         req *r, int rc, const dwf_err *e,
                                         const char *field)
{
    switch (rc) {
    case DWF_STORE_NOTFOUND:
        return reply_error(h, c, r, 404, "not_found", NULL, "%s", e->msg);
    case DWF_STORE_CONFLICT:
        return reply_error(h, c, r, 409, "conflict", NULL, "%s", e->msg);
    case DWF_EINVAL:
        return reply_error(h, c, r, 400, "invalid_request", field, "%s", e->msg);
    default:
        LOG(h, "internal error: %s", e->msg);
        return reply_error(h, c, r, 500, "internal", NULL, "%s", e->msg);
    }
}

static const char *query(struct MHD_Connection *c, const char *key)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
}

static const char *header(struct MHD_Connection *c, const char *key)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, key);
}

/* The {id} of the path as a positive integer, or a 404 reply. */
static int path_id(req *r, int64_t *id)
{
    return parse_i64(r->id, 1, INT64_MAX, id);
}

#define NEED_ID(what)                                                        \
    int64_t id;                                                              \
    if (path_id(r, &id))                                                     \
        return reply_error(h, c, r, 404, "not_found", NULL,                  \
                           "no " what " '%s'", r->id)

/* Does If-None-Match carry etag (quoted)? */
static int etag_matches(struct MHD_Connection *c, const char *etag)
{
    const char *inm = header(c, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (!inm)
        return 0;
    size_t el = strlen(etag);
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *q = p;
        while (*q && *q != ',')
            q++;
        const char *e = q;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if ((size_t)(e - p) == el && memcmp(p, etag, el) == 0)
            return 1;
        p = q;
    }
    return 0;
}

static enum MHD_Result reply_not_modified(dwf_http *h, struct MHD_Connection *c,
                                          req *r, const char *etag,
                                          const char *cache_control)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    if (cache_control)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, cache_control);
    return reply(h, c, r, 304, resp);
}

/* ---- watches: the suspended SSE streams of each job ----------------------- */

static watch *watch_acquire(dwf_http *h, int64_t id)
{
    pthread_mutex_lock(&h->w_mu);
    watch *w = h->watches;
    while (w && w->job_id != id)
        w = w->next;
    if (!w) {
        w = calloc(1, sizeof *w);
        if (w) {
            w->job_id = id;
            w->next = h->watches;
            h->watches = w;
        }
    }
    if (w)
        w->refs++;
    pthread_mutex_unlock(&h->w_mu);
    return w;
}

static void watch_release(dwf_http *h, watch *w)
{
    pthread_mutex_lock(&h->w_mu);
    if (--w->refs == 0) {
        watch **pp = &h->watches;
        while (*pp && *pp != w)
            pp = &(*pp)->next;
        if (*pp)
            *pp = w->next;
        free(w);
    }
    pthread_mutex_unlock(&h->w_mu);
}

static void sse_resume_all(watch *w, double now);

/* A store event of job id (0: every job): bump and resume its streams. */
static void watch_wake(dwf_http *h, int64_t id)
{
    pthread_mutex_lock(&h->w_mu);
    for (watch *w = h->watches; w; w = w->next) {
        if (id == 0 || w->job_id == id) {
            w->gen++;
            sse_resume_all(w, -1);
        }
    }
    pthread_mutex_unlock(&h->w_mu);
}

void dwf_http_on_event(void *ud, dwf_store_event ev, int64_t job_id,
                       int64_t arg)
{
    dwf_http *h = ud;
    if (!h)
        return;
    pthread_mutex_lock(&h->rc_mu);
    h->job_gen[(uint64_t)job_id % JCACHE_N]++;
    h->list_gen++;
    pthread_mutex_unlock(&h->rc_mu);
    switch (ev) {
    case DWF_STORE_EV_CREATED:
        dwf_pool_notify(h->pool);
        break;
    case DWF_STORE_EV_STATE:
        if (arg == DWF_STORE_QUEUED)
            dwf_pool_notify(h->pool);
        watch_wake(h, job_id);
        if (arg == DWF_STORE_SUCCEEDED || arg == DWF_STORE_FAILED ||
            arg == DWF_STORE_CANCELED) {
            /* a search sweep's next run (its EV_CREATED wakes the pool) */
            dwf_err e;
            if (dwf_sweep_on_job_end(h->store, job_id, (const char *const *)h->roots,
                                     h->n_roots, &e))
                LOG(h, "job %" PRId64 ": advancing its search failed: %s", job_id,
                     e.msg);
        }
        break;
    case DWF_STORE_EV_EPOCH:
    case DWF_STORE_EV_DELETED:
        watch_wake(h, job_id);
        break;
    case DWF_STORE_EV_PROGRESS:
        break;
    }
}

/* ---- model cache (parsed models for predict) ------------------------------ */

typedef struct model_ref {
    dwf_smodel *m;
    int slot;          /* -1 = private copy, freed on release */
} model_ref;

static void smodel_destroy(dwf_smodel *m)
{
    if (m) {
        dwf_smodel_free(m);
        free(m);
    }
}

/* 0, or a store/format error code with e filled. */
static int model_acquire(dwf_http *h, int64_t id, model_ref *ref, dwf_err *e)
{
    pthread_mutex_lock(&h->cache_mu);
    for (int i = 0; i < MODEL_CACHE; i++) {
        cache_slot *s = &h->cache[i];
        if (s->m && !s->dead && s->id == id) {
            s->refs++;
            s->used = ++h->cache_tick;
            ref->m = s->m;
            ref->slot = i;
            pthread_mutex_unlock(&h->cache_mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&h->cache_mu);

    dwf_store_model_row row;
    memset(&row, 0, sizeof row);
    int rc = dwf_store_model_get(h->store, id, 1, &row, e);
    if (rc)
        return rc;
    dwf_smodel *m = calloc(1, sizeof *m);
    if (!m) {
        dwf_store_model_free(&row);
        return dwf_errorf(e, DWF_ENOMEM, "out of memory loading the model");
    }
    rc = dwf_smodel_load(m, row.blob, row.len, e);
    dwf_store_model_free(&row);
    if (rc) {
        free(m);
        return rc;
    }

    pthread_mutex_lock(&h->cache_mu);
    for (int i = 0; i < MODEL_CACHE; i++) {
        cache_slot *s = &h->cache[i];
        if (s->m && !s->dead && s->id == id) { /* loaded meanwhile */
            s->refs++;
            s->used = ++h->cache_tick;
            ref->m = s->m;
            ref->slot = i;
            pthread_mutex_unlock(&h->cache_mu);
            smodel_destroy(m);
            return 0;
        }
    }
    int victim = -1;
    for (int i = 0; i < MODEL_CACHE; i++) {
        cache_slot *s = &h->cache[i];
        if (!s->m) {
            victim = i;
            break;
        }
        if (s->refs == 0 && (victim < 0 || s->used < h->cache[victim].used))
            victim = i;
    }
    if (victim < 0) { /* every slot in use: keep this one private */
        pthread_mutex_unlock(&h->cache_mu);
        ref->m = m;
        ref->slot = -1;
        return 0;
    }
    cache_slot *s = &h->cache[victim];
    dwf_smodel *old = s->m;
    s->m = m;
    s->id = id;
    s->refs = 1;
    s->dead = 0;
    s->used = ++h->cache_tick;
    ref->m = m;
    ref->slot = victim;
    pthread_mutex_unlock(&h->cache_mu);
    smodel_destroy(old);
    return 0;
}

static void model_release(dwf_http *h, model_ref *ref)
{
    if (ref->slot < 0) {
        smodel_destroy(ref->m);
        return;
    }
    dwf_smodel *drop = NULL;
    pthread_mutex_lock(&h->cache_mu);
    cache_slot *s = &h->cache[ref->slot];
    if (--s->refs == 0 && s->dead) {
        drop = s->m;
        memset(s, 0, sizeof *s);
    }
    pthread_mutex_unlock(&h->cache_mu);
    smodel_destroy(drop);
}

static void model_invalidate(dwf_http *h, int64_t id)
{
    dwf_smodel *drop = NULL;
    pthread_mutex_lock(&h->cache_mu);
    for (int i = 0; i < MODEL_CACHE; i++) {
        cache_slot *s = &h->cache[i];
        if (s->m && s->id == id && !s->dead) {
            if (s->refs == 0) {
                drop = s->m;
                memset(s, 0, sizeof *s);
            } else {
                s->dead = 1;
            }
        }
    }
    pthread_mutex_unlock(&h->cache_mu);
    smodel_destroy(drop);
}

/* ---- auth ------------------------------------------------------------------ */

static int token_in(const char *tok, size_t n, char *const *list, int count)
{
    int hit = 0;
    for (int i = 0; i < count; i++)
        hit |= ct_equal(tok, n, list[i], strlen(list[i]));
    return hit;
}

/* 0 when allowed, else 401 or 403. */
static int auth_status(dwf_http *h, struct MHD_Connection *c, int mutating)
{
    if (h->n_tokens == 0 && h->n_read_tokens == 0)
        return 0;
    if (!mutating && !h->auth_reads)
        return 0;
    const char *a = header(c, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7) != 0)
        return 401;
    const char *tok = a + 7;
    while (*tok == ' ')
        tok++;
    size_t n = strlen(tok);
    while (n && (tok[n - 1] == ' ' || tok[n - 1] == '\t'))
        n--;
    int rw = token_in(tok, n, h->tokens, h->n_tokens);
    int ro = token_in(tok, n, h->read_tokens, h->n_read_tokens);
    if (mutating)
        return rw ? 0 : ro ? 403 : 401;
    return rw || ro ? 0 : 401;
}

/* ---- JSON body parsing ------------------------------------------------------ */

/* Parses the body as a JSON value, replying 400 invalid_json on failure. */
static json_t *body_json(dwf_http *h, struct MHD_Connection *c, req *r,
                         enum MHD_Result *ret)
{
    json_error_t je;
    if (!r->body || r->len == 0) {
        *ret = reply_error(h, c, r, 400, "invalid_json", NULL,
                           "the request needs a JSON body");
        return NULL;
    }
    json_t *j = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        *ret = reply_error(h, c, r, 400, "invalid_json", NULL,
                           "malformed JSON at line %d, column %d: %s", je.line,
                           je.column, je.text);
    return j;
}

/* ---- handlers: jobs --------------------------------------------------------- */

static enum MHD_Result reply_sweep(dwf_http *h, struct MHD_Connection *c, req *r,
                                   int64_t sid);

/* Creates the target-CR search of spec (parsed from r's body, or from body
 * when not NULL) and replies 201 with the sweep. */
static enum MHD_Result reply_search_created(dwf_http *h, struct MHD_Connection *c,
                                            req *r, const dwf_spec *spec)
{
    json_t *user = json_loadb(r->body, r->len, 0, NULL);
    json_t *base = json_object_get(user, "base"); /* POST /v1/sweeps */
    const json_t *uspec = json_is_object(base) ? base : user;
    if (!json_is_object(uspec)) {
        json_decref(user);
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    }
    int64_t counts[DWF_STORE_NSTATES] = {0}, sid = 0;
    char field[DWF_FIELD_LEN] = "";
    dwf_err e;
    dwf_err_clear(&e);
    pthread_mutex_lock(&h->submit_mu);
    int rc = dwf_store_count(h->store, counts, &e);
    if (rc == 0 && counts[DWF_STORE_QUEUED] >= h->max_queue) {
        pthread_mutex_unlock(&h->submit_mu);
        json_decref(user);
        return reply_error(h, c, r, 429, "queue_full", NULL,
                           "the queue is full (%d jobs queued); retry later",
                           h->max_queue);
    }
    if (rc == 0)
        rc = dwf_sweep_search_start(h->store, uspec, spec,
                                    (const char *const *)h->roots, h->n_roots, &sid,
                                    NULL, field, &e);
    pthread_mutex_unlock(&h->submit_mu);
    json_decref(user);
    if (rc && field[0])
        return reply_error(h, c, r, 400, "invalid_spec", field, "%s", e.msg);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    return reply_sweep(h, c, r, sid);
}

static enum MHD_Result h_job_create(dwf_http *h, struct MHD_Connection *c, req *r)
{
    enum MHD_Result ret;
    json_t *j = body_json(h, c, r, &ret);
    if (!j)
        return ret;
    int is_obj = json_is_object(j);
    json_decref(j);
    if (!is_obj)
        return reply_error(h, c, r, 400, "invalid_spec", NULL,
                           "the job spec must be a JSON object");
    const char *key = header(c, "Idempotency-Key");
    if (key && (strlen(key) == 0 || strlen(key) > 200))
        return reply_error(h, c, r, 400, "invalid_request", "Idempotency-Key",
                           "Idempotency-Key must have 1 to 200 characters");
    dwf_spec spec;
    memset(&spec, 0, sizeof spec);
    char field[DWF_FIELD_LEN] = "";
    dwf_err e;
    dwf_err_clear(&e);
    int rc = dwf_spec_parse(r->body, r->len, (const char *const *)h->roots,
                            h->n_roots, &spec, field, &e);
    if (rc)
        return reply_error(h, c, r, 400, "invalid_spec", field, "%s", e.msg);
    if (spec.search.enabled) { /* a target-CR search: a sweep of runs */
        ret = key ? reply_error(h, c, r, 400, "invalid_request", "Idempotency-Key",
                                "a search job (spec with \"search\") takes no "
                                "Idempotency-Key")
                  : reply_search_created(h, c, r, &spec);
        dwf_spec_free(&spec);
        return ret;
    }

    dwf_store_job_new jn;
    dwf_store_job_new_from_spec(&jn, &spec);
    jn.idempotency_key = key;
    int64_t id = 0;
    int existed = 0;
    int64_t counts[DWF_STORE_NSTATES] = {0};
    pthread_mutex_lock(&h->submit_mu);
    rc = dwf_store_count(h->store, counts, &e);
    if (rc == 0 && counts[DWF_STORE_QUEUED] >= h->max_queue) {
        /* a repeated key still gets its job: the retry of a request that
         * did create one is never refused */
        if (key)
            rc = dwf_store_job_find_key(h->store, key, &id, &e);
        if (!key || rc == DWF_STORE_NOTFOUND) {
            pthread_mutex_unlock(&h->submit_mu);
            dwf_spec_free(&spec);
            return reply_error(h, c, r, 429, "queue_full", NULL,
                               "the queue is full (%d jobs queued); retry later",
                               h->max_queue);
        }
        existed = rc == 0;
    } else if (rc == 0) {
        rc = dwf_store_job_create(h->store, &jn, &id, &existed, &e);
    }
    pthread_mutex_unlock(&h->submit_mu);
    dwf_spec_free(&spec);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);

    json_t *job = NULL;
    rc = dwf_store_job_get(h->store, id, &job, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/jobs/%" PRId64, id);
    char *text = json_dumps(job, JSON_FMT);
    json_decref(job);
    if (!text)
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    struct MHD_Response *resp = text_response(text, strlen(text), "application/json");
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc);
    return reply(h, c, r, existed ? 200 : 201, resp);
}

/* Replies with a cached text: a copy with its ETag, or 304. */
static enum MHD_Result reply_cached(dwf_http *h, struct MHD_Connection *c, req *r,
                                    char *text, size_t len, const char *etag)
{
    if (etag_matches(c, etag)) {
        free(text);
        return reply_not_modified(h, c, r, etag, "no-cache");
    }
    struct MHD_Response *resp = text_response(text, len, "application/json");
    if (resp) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    }
    return reply(h, c, r, 200, resp);
}

/* One lookup of the response caches. A miss makes this thread the slot's
 * filler unless another thread is filling it (then this one renders
 * without caching: with a few HTTP threads, at most that many render). */
typedef struct fill {
    cached *e;
    uint64_t gen;
    int filler;
} fill;

static int slot_is(const cached *e, int64_t id, const char *key)
{
    return key ? strcmp(e->key, key) == 0 : e->id == id;
}

/* With rc_mu held: a malloc'd copy of the valid body of (id or key) in
 * slot e, or NULL (then render; f->filler says whether to cache_end). */
static char *cache_begin(cached *e, const uint64_t *genp, int64_t id,
                         const char *key, size_t *len, fill *f)
{
    uint64_t gen = *genp;
    f->e = e;
    f->gen = gen;
    f->filler = 0;
    int same = slot_is(e, id, key);
    if (same && e->text && e->gen == gen) {
        char *t = malloc(e->len + 1);
        if (t) {
            memcpy(t, e->text, e->len + 1);
            *len = e->len;
        }
        return t;
    }
    if (e->filling)
        return NULL; /* another thread renders into it: render uncached
                        (never wait: this thread serves other clients) */
    if (!same) {
        free(e->text);
        e->text = NULL;
        e->id = id;
        snprintf(e->key, sizeof e->key, "%s", key ? key : "");
    }
    e->filling = gen + 1;
    f->filler = 1;
    return NULL;
}

/* Ends a fill: keeps text (NULL: the render failed) when the generation
 * has not moved meanwhile. */
static void cache_end(dwf_http *h, fill *f, const uint64_t *genp, const char *text,
                      size_t len)
{
    if (!f->filler)
        return;
    pthread_mutex_lock(&h->rc_mu);
    cached *e = f->e;
    e->filling = 0;
    if (text && *genp == f->gen) {
        char *t = malloc(len + 1);
        if (t) {
            memcpy(t, text, len + 1);
            free(e->text);
            e->text = t;
            e->len = len;
            e->gen = f->gen;
        }
    }
    pthread_mutex_unlock(&h->rc_mu);
    f->filler = 0;
}

static enum MHD_Result h_job_list(dwf_http *h, struct MHD_Connection *c, req *r)
{
    int state = -1;
    const char *s = query(c, "state");
    if (s && *s) {
        state = dwf_store_state_parse(s);
        if (state < 0)
            return reply_error(h, c, r, 400, "invalid_request", "state",
                               "state must be queued, running, succeeded, "
                               "failed or canceled");
    }
    int64_t limit = 50;
    const char *l = query(c, "limit");
    if (l && parse_i64(l, 1, 1000, &limit))
        return reply_error(h, c, r, 400, "invalid_request", "limit",
                           "limit must be an integer from 1 to 1000");
    int flags = 0;
    const char *v = query(c, "view");
    if (v && strcmp(v, "summary") == 0)
        flags |= DWF_STORE_LIST_SUMMARY;
    else if (v && strcmp(v, "full") != 0)
        return reply_error(h, c, r, 400, "invalid_request", "view",
                           "view must be full or summary");
    const char *cursor = query(c, "cursor");
    char key[200];
    int keyn = snprintf(key, sizeof key, "%d|%d|%d|%s", state, (int)limit, flags,
                        cursor ? cursor : "");
    size_t len = 0;
    char *text = NULL, etag[96];
    fill f = {NULL, 0, 0};
    pthread_mutex_lock(&h->rc_mu);
    uint64_t gen = h->list_gen;
    if (keyn > 0 && (size_t)keyn < sizeof key) {
        cached *e = NULL;
        for (int i = 0; i < LCACHE_N && !e; i++)
            if (strcmp(h->list_cache[i].key, key) == 0)
                e = &h->list_cache[i];
        for (int i = 0; i < LCACHE_N && !e; i++) {
            cached *x = &h->list_cache[(h->list_next + i) % LCACHE_N];
            if (!x->filling) {
                e = x;
                h->list_next = (h->list_next + i + 1) % LCACHE_N;
            }
        }
        if (e) {
            text = cache_begin(e, &h->list_gen, 0, key, &len, &f);
            gen = f.gen;
        }
    }
    pthread_mutex_unlock(&h->rc_mu);
    uint64_t kh = 1469598103934665603ull; /* FNV-1a of the query */
    for (const char *k = key; *k; k++)
        kh = (kh ^ (unsigned char)*k) * 1099511628211ull;
    snprintf(etag, sizeof etag, "\"l%" PRIx64 "-%" PRIx64 "-%" PRIu64 "\"", h->boot,
             kh, gen);
    if (text)
        return reply_cached(h, c, r, text, len, etag);
    json_t *jobs = NULL;
    char *next = NULL;
    dwf_err e;
    int rc = dwf_store_job_list(h->store, state, (int)limit, cursor, flags, &jobs,
                                &next, &e);
    if (rc) {
        cache_end(h, &f, &h->list_gen, NULL, 0);
        return reply_store_error(h, c, r, rc, &e, "cursor");
    }
    json_t *out = json_pack("{s:o,s:o}", "jobs", jobs, "next_cursor",
                            next ? json_string(next) : json_null());
    free(next);
    text = out ? json_dumps(out, JSON_FMT) : NULL;
    json_decref(out);
    len = text ? strlen(text) : 0;
    cache_end(h, &f, &h->list_gen, text, len);
    if (!text)
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    return reply_cached(h, c, r, text, len, etag);
}

static enum MHD_Result h_job_get(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    size_t slot = (uint64_t)id % JCACHE_N, len = 0;
    char etag[96];
    fill f;
    pthread_mutex_lock(&h->rc_mu);
    char *text = cache_begin(&h->job_cache[slot], &h->job_gen[slot], id, NULL, &len,
                             &f);
    pthread_mutex_unlock(&h->rc_mu);
    snprintf(etag, sizeof etag, "\"j%" PRIx64 "-%" PRId64 "-%" PRIu64 "\"", h->boot, id,
             f.gen);
    if (text)
        return reply_cached(h, c, r, text, len, etag);
    json_t *job = NULL;
    dwf_err e;
    int rc = dwf_store_job_get(h->store, id, &job, &e);
    if (rc) {
        cache_end(h, &f, &h->job_gen[slot], NULL, 0);
        return reply_store_error(h, c, r, rc, &e, NULL);
    }
    text = json_dumps(job, JSON_FMT);
    json_decref(job);
    len = text ? strlen(text) : 0;
    cache_end(h, &f, &h->job_gen[slot], text, len);
    if (!text)
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    return reply_cached(h, c, r, text, len, etag);
}

static enum MHD_Result h_job_cancel(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    dwf_err e;
    dwf_store_state prev = DWF_STORE_QUEUED;
    int rc = dwf_store_job_transition(h->store, id, DWF_STORE_BIT(DWF_STORE_QUEUED),
                                      DWF_STORE_CANCELED, "canceled by request",
                                      &prev, &e);
    if (rc == DWF_STORE_CONFLICT) {
        if (prev == DWF_STORE_RUNNING) {
            dwf_pool_cancel(h->pool, id);
        } else {
            return reply_error(h, c, r, 409, "conflict", NULL,
                               "job %" PRId64 " is already %s", id,
                               dwf_store_state_name(prev));
        }
    } else if (rc) {
        return reply_store_error(h, c, r, rc, &e, NULL);
    }
    json_t *job = NULL;
    rc = dwf_store_job_get(h->store, id, &job, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    if (prev == DWF_STORE_RUNNING)
        json_object_set_new(job, "cancel_requested", json_true());
    return reply_json(h, c, r, 200, job);
}

static enum MHD_Result h_job_delete(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    dwf_err e;
    int rc = dwf_store_job_delete(h->store, id, &e);
    if (rc == DWF_STORE_CONFLICT) {
        dwf_store_state st = DWF_STORE_QUEUED;
        dwf_err e2;
        dwf_store_job_state(h->store, id, &st, &e2);
        return reply_error(h, c, r, 409, "conflict", NULL,
                           "job %" PRId64 " is %s: only finished jobs can be "
                           "deleted (cancel it first)", id,
                           dwf_store_state_name(st));
    }
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    model_invalidate(h, id);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    return reply(h, c, r, 204, resp);
}

static enum MHD_Result h_job_metrics(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    int64_t since = 0;
    const char *s = query(c, "since");
    if (s && parse_i64(s, 0, INT_MAX, &since))
        return reply_error(h, c, r, 400, "invalid_request", "since",
                           "since must be an epoch number >= 0");
    json_t *list = NULL;
    dwf_err e;
    int rc = dwf_store_metrics_list(h->store, id, (int)since, &list, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    return reply_json(h, c, r, 200,
                      json_pack("{s:I,s:o}", "job_id", (json_int_t)id, "metrics", list));
}

/* The end-of-run curve (and the epochs with curves taken during
 * training), or with ?epoch=k the curve taken after epoch k. */
static enum MHD_Result h_job_thresholds(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    int64_t epoch = 0;
    const char *q = query(c, "epoch");
    if (q && parse_i64(q, 1, INT_MAX, &epoch))
        return reply_error(h, c, r, 400, "invalid_request", "epoch",
                           "epoch must be an epoch number >= 1");
    json_t *list = NULL, *epochs = NULL;
    dwf_err e;
    int rc = epoch > 0 ? dwf_store_epoch_thresholds_get(h->store, id, (int)epoch, &list, &e)
                       : dwf_store_thresholds_get(h->store, id, &list, &e);
    if (!rc)
        rc = dwf_store_epoch_thresholds_list(h->store, id, &epochs, &e);
    if (rc) {
        json_decref(list);
        return reply_store_error(h, c, r, rc, &e, NULL);
    }
    json_t *out = json_pack("{s:I,s:o,s:o}", "job_id", (json_int_t)id, "points", list,
                            "epochs", epochs);
    if (out && epoch > 0)
        json_object_set_new(out, "epoch", json_integer(epoch));
    return reply_json(h, c, r, 200, out);
}

/* ---- SSE ------------------------------------------------------------------ */

typedef struct sse {
    dwf_http *h;
    struct MHD_Connection *conn;
    int64_t id;
    watch *w;
    int last_epoch;
    int last_state;    /* -1 = nothing sent yet */
    int done;
    int suspended;     /* in w->waiters, connection suspended */
    double ping_due;   /* monotonic time of the next heartbeat */
    struct sse *next_waiter;
    sbuf out;
    size_t off;
} sse;

/* Resumes the suspended streams of w (all when now < 0, else those whose
 * heartbeat is due). Call with w_mu held. */
static void sse_resume_all(watch *w, double now)
{
    struct sse **pp = &w->waiters;
    while (*pp) {
        struct sse *s = *pp;
        if (now < 0 || s->ping_due <= now) {
            *pp = s->next_waiter;
            s->next_waiter = NULL;
            s->suspended = 0;
            MHD_resume_connection(s->conn);
        } else {
            pp = &s->next_waiter;
        }
    }
}

static int state_finished(int st)
{
    return st == DWF_STORE_SUCCEEDED || st == DWF_STORE_FAILED ||
           st == DWF_STORE_CANCELED;
}

static void sse_event(sbuf *b, const char *name, const json_t *data, int id)
{
    char *text = json_dumps(data, JSON_FMT);
    if (!text) {
        b->oom = 1;
        return;
    }
    if (id > 0)
        sb_printf(b, "id: %d\n", id);
    sb_printf(b, "event: %s\ndata: ", name);
    sb_puts(b, text);
    sb_puts(b, "\n\n");
    free(text);
}

/* Appends what is new for the stream. */
static void sse_produce(sse *s)
{
    dwf_http *h = s->h;
    dwf_err e;
    dwf_store_state st;
    int rc = dwf_store_job_state(h->store, s->id, &st, &e);
    if (rc) {
        if (rc == DWF_STORE_NOTFOUND) {
            json_t *d = json_pack("{s:I}", "id", (json_int_t)s->id);
            if (d)
                sse_event(&s->out, "deleted", d, 0);
            json_decref(d);
        } else {
            LOG(h, "sse job %" PRId64 ": %s", s->id, e.msg);
        }
        s->done = 1;
        return;
    }
    json_t *job = NULL;
    if ((int)st != s->last_state) {
        rc = dwf_store_job_get(h->store, s->id, &job, &e);
        if (rc) {
            s->done = 1;
            return;
        }
        int st2 = dwf_store_state_parse(json_string_value(json_object_get(job, "state")));
        if (st2 >= 0)
            st = (dwf_store_state)st2;
    }
    json_t *list = NULL;
    rc = dwf_store_metrics_list(h->store, s->id, s->last_epoch, &list, &e);
    if (rc) {
        json_decref(job);
        s->done = 1;
        return;
    }
    int first = s->last_state < 0;
    if (first && job)
        sse_event(&s->out, "state", job, 0);
    size_t i;
    json_t *m;
    json_array_foreach(list, i, m)
    {
        int ep = (int)json_integer_value(json_object_get(m, "epoch"));
        sse_event(&s->out, "epoch", m, ep);
        if (ep > s->last_epoch)
            s->last_epoch = ep;
    }
    if (!first && job)
        sse_event(&s->out, "state", job, 0);
    json_decref(list);
    json_decref(job);
    s->last_state = (int)st;
    if (state_finished(st) || s->out.oom)
        s->done = 1;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The stream's content reader. Never blocks (the connection shares its
 * thread with others): with nothing to send it suspends the connection
 * until the job's next store event or heartbeat (returning 0 with the
 * connection suspended, as libmicrohttpd documents). */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse *s = cls;
    dwf_http *h = s->h;
    for (;;) {
        if (s->off < s->out.len) {
            size_t n = s->out.len - s->off;
            if (n > max)
                n = max;
            memcpy(buf, s->out.p + s->off, n);
            s->off += n;
            return (ssize_t)n;
        }
        s->off = s->out.len = 0;
        if (s->done || s->out.oom || atomic_load(&h->stopping))
            return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&h->w_mu);
        uint64_t gen = s->w->gen;
        pthread_mutex_unlock(&h->w_mu);
        sse_produce(s);
        if (s->out.len > 0 || s->done)
            continue;
        double now = mono_now();
        if (now >= s->ping_due) {
            s->ping_due = now + h->sse_ping;
            sb_puts(&s->out, ": ping\n\n");
            continue;
        }
        pthread_mutex_lock(&h->w_mu);
        if (s->w->gen != gen || atomic_load(&h->stopping)) {
            pthread_mutex_unlock(&h->w_mu); /* changed meanwhile */
            continue;
        }
        s->suspended = 1;
        s->next_waiter = s->w->waiters;
        s->w->waiters = s;
        MHD_suspend_connection(s->conn);
        pthread_mutex_unlock(&h->w_mu);
        return 0;
    }
}

static void sse_free(void *cls)
{
    sse *s = cls;
    dwf_http *h = s->h;
    pthread_mutex_lock(&h->w_mu);
    if (s->suspended) { /* not expected: streams are resumed before closing */
        struct sse **pp = &s->w->waiters;
        while (*pp && *pp != s)
            pp = &(*pp)->next_waiter;
        if (*pp)
            *pp = s->next_waiter;
    }
    h->n_streams--;
    pthread_cond_broadcast(&h->ping_cv);
    pthread_mutex_unlock(&h->w_mu);
    watch_release(h, s->w);
    free(s->out.p);
    free(s);
}

/* Resumes the streams whose heartbeat is due, until the server stops. */
static void *ping_main(void *arg)
{
    dwf_http *h = arg;
    pthread_mutex_lock(&h->w_mu);
    while (!h->ping_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double step = h->sse_ping < 1.0 ? h->sse_ping / 4 : 0.25;
        double t = ts.tv_sec + ts.tv_nsec * 1e-9 + step;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&h->ping_cv, &h->w_mu, &ts);
        double now = mono_now();
        for (watch *w = h->watches; w; w = w->next)
            sse_resume_all(w, now);
    }
    pthread_mutex_unlock(&h->w_mu);
    return NULL;
}

static enum MHD_Result h_job_events(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    dwf_err e;
    dwf_store_state st;
    int rc = dwf_store_job_state(h->store, id, &st, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    if (atomic_load(&h->stopping))
        return reply_error(h, c, r, 503, "unavailable", NULL,
                           "the server is shutting down");
    sse *s = calloc(1, sizeof *s);
    if (!s)
        return MHD_NO;
    s->h = h;
    s->conn = c;
    s->id = id;
    s->last_state = -1;
    s->ping_due = mono_now() + h->sse_ping;
    const char *lei = header(c, "Last-Event-ID");
    int64_t from = 0;
    if (lei && parse_i64(lei, 0, INT_MAX, &from) == 0)
        s->last_epoch = (int)from;
    s->w = watch_acquire(h, id);
    if (!s->w) {
        free(s);
        return MHD_NO;
    }
    pthread_mutex_lock(&h->w_mu);
    h->n_streams++;
    pthread_mutex_unlock(&h->w_mu);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 8192, sse_read, s, sse_free);
    if (!resp) {
        sse_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return reply(h, c, r, 200, resp);
}

/* ---- model download -------------------------------------------------------- */

static const struct {
    const char *name, *ext, *type;
} formats[] = {
    {"dwfm", "dwfm", "application/octet-stream"},
    {"safetensors", "safetensors", "application/octet-stream"},
    {"safetensors-dense", "safetensors", "application/octet-stream"},
    {"npz", "npz", "application/octet-stream"},
    {"json", "json", "application/json"},
};

/* Converts the .dwfm bytes to format f (1..) into a new malloc'd buffer. */
static int export_model(int f, const uint8_t *blob, size_t len, uint8_t **out,
                        size_t *out_len, dwf_err *e)
{
    dwf_smodel m;
    memset(&m, 0, sizeof m);
    int rc = dwf_smodel_load(&m, blob, len, e);
    if (rc)
        return rc;
    rc = dwf_export_buffer(&m, formats[f].name, out, out_len, e);
    dwf_smodel_free(&m);
    return rc;
}

static enum MHD_Result h_job_model(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    const char *fmt = query(c, "format");
    int f = 0;
    if (fmt && *fmt) {
        f = -1;
        for (int i = 0; i < (int)(sizeof formats / sizeof *formats); i++)
            if (strcmp(fmt, formats[i].name) == 0)
                f = i;
        if (f < 0)
            return reply_error(h, c, r, 400, "invalid_request", "format",
                               "format must be dwfm, safetensors, "
                               "safetensors-dense, npz or json");
    }
    dwf_err e;
    dwf_store_model_row row;
    memset(&row, 0, sizeof row);
    int rc = dwf_store_model_get(h->store, id, 0, &row, &e);
    if (rc == DWF_STORE_NOTFOUND) {
        dwf_store_state st;
        dwf_err e2;
        if (dwf_store_job_state(h->store, id, &st, &e2))
            return reply_error(h, c, r, 404, "not_found", NULL,
                               "no job %" PRId64, id);
        return reply_error(h, c, r, 404, "not_found", NULL,
                           "job %" PRId64 " has no model (it is %s)", id,
                           dwf_store_state_name(st));
    }
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    /* ETag: the stored model's tag with the format. */
    char tag[128];
    const char *base = row.etag;
    size_t bl = strlen(base);
    if (bl >= 2 && base[0] == '"' && base[bl - 1] == '"') {
        base++;
        bl -= 2;
    }
    snprintf(tag, sizeof tag, "\"%.*s-%s\"", (int)(bl > 90 ? 90 : bl), base,
             formats[f].name);
    int64_t nz = row.nonzero, w = row.weights;
    double cr = row.cr;
    dwf_store_model_free(&row);
    if (etag_matches(c, tag))
        return reply_not_modified(h, c, r, tag, "no-cache");

    memset(&row, 0, sizeof row);
    rc = dwf_store_model_get(h->store, id, 1, &row, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    uint8_t *data = row.blob;
    size_t len = row.len;
    row.blob = NULL;
    dwf_store_model_free(&row);
    if (f != 0) {
        uint8_t *conv = NULL;
        size_t clen = 0;
        rc = export_model(f, data, len, &conv, &clen, &e);
        free(data);
        if (rc)
            return reply_error(h, c, r, 500, "internal", NULL,
                               "exporting the model as %s failed: %s",
                               formats[f].name, e.msg);
        data = conv;
        len = clen;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    char disp[128], num[64];
    snprintf(disp, sizeof disp, "attachment; filename=\"job-%" PRId64 ".%s\"", id,
             formats[f].ext);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, formats[f].type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, tag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    snprintf(num, sizeof num, "%" PRId64, nz);
    MHD_add_response_header(resp, "X-DWF-Nonzero", num);
    snprintf(num, sizeof num, "%" PRId64, w);
    MHD_add_response_header(resp, "X-DWF-Weights", num);
    snprintf(num, sizeof num, "%.6g", cr);
    MHD_add_response_header(resp, "X-DWF-CR", num);
    MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                            "ETag, Content-Disposition, X-DWF-Nonzero, "
                            "X-DWF-Weights, X-DWF-CR");
    return reply(h, c, r, 200, resp);
}

/* ---- predict ---------------------------------------------------------------- */

static enum MHD_Result h_job_predict(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("job");
    enum MHD_Result ret;
    json_t *j = body_json(h, c, r, &ret);
    if (!j)
        return ret;
    if (!json_is_object(j)) {
        json_decref(j);
        return reply_error(h, c, r, 400, "invalid_request", NULL,
                           "the body must be an object {\"inputs\": [[...], ...]}");
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        if (strcmp(k, "inputs") != 0) {
            ret = reply_error(h, c, r, 400, "invalid_request", k,
                              "unknown field '%s' (expected only \"inputs\")", k);
            json_decref(j);
            return ret;
        }
    }
    json_t *in = json_object_get(j, "inputs");
    size_t b = json_array_size(in);
    if (!json_is_array(in) || b == 0 || b > MAX_PREDICT_ROWS) {
        json_decref(j);
        return reply_error(h, c, r, 400, "invalid_request", "inputs",
                           "inputs must be an array of 1 to %d input rows",
                           MAX_PREDICT_ROWS);
    }
    model_ref ref = {NULL, -1};
    dwf_err e;
    int rc = model_acquire(h, id, &ref, &e);
    if (rc) {
        json_decref(j);
        if (rc == DWF_STORE_NOTFOUND) {
            dwf_store_state st;
            dwf_err e2;
            if (dwf_store_job_state(h->store, id, &st, &e2))
                return reply_error(h, c, r, 404, "not_found", NULL,
                                   "no job %" PRId64, id);
            return reply_error(h, c, r, 409, "conflict", NULL,
                               "job %" PRId64 " has no model (it is %s)", id,
                               dwf_store_state_name(st));
        }
        return reply_store_error(h, c, r, rc, &e, NULL);
    }
    const dwf_smodel *m = ref.m;
    int dim = m->arch.in_c * m->arch.in_h * m->arch.in_w;
    int nc = m->arch.n_classes;
    float *x = malloc(b * (size_t)dim * sizeof *x);
    int32_t *cls = malloc(b * sizeof *cls);
    float *probs = malloc(b * (size_t)nc * sizeof *probs);
    dwf_sws *ws = NULL;
    json_t *out = NULL;
    char field[64] = "";
    if (!x || !cls || !probs) {
        ret = reply_error(h, c, r, 500, "internal", NULL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < b; i++) {
        json_t *row = json_array_get(in, i);
        if (!json_is_array(row) || json_array_size(row) != (size_t)dim) {
            snprintf(field, sizeof field, "inputs[%zu]", i);
            ret = reply_error(h, c, r, 400, "invalid_request", field,
                              "input row %zu must be an array of %d numbers", i,
                              dim);
            goto done;
        }
        for (int t = 0; t < dim; t++) {
            json_t *val = json_array_get(row, (size_t)t);
            double d = json_number_value(val);
            if (!json_is_number(val) || !isfinite(d) || fabs(d) > 1e30) {
                snprintf(field, sizeof field, "inputs[%zu][%d]", i, t);
                ret = reply_error(h, c, r, 400, "invalid_request", field,
                                  "input values must be finite numbers");
                goto done;
            }
            x[i * (size_t)dim + (size_t)t] = (float)d;
        }
    }
    rc = dwf_sws_create(m, (int)b, &ws, &e);
    if (rc == 0)
        rc = dwf_smodel_predict(m, ws, x, (int)b, cls, probs, &e);
    if (rc) {
        ret = reply_error(h, c, r, 500, "internal", NULL, "prediction failed: %s",
                          e.msg);
        goto done;
    }
    out = json_object();
    json_t *jc = json_array(), *jp = json_array();
    json_object_set_new(out, "job_id", json_integer(id));
    json_object_set_new(out, "classes", jc);
    json_object_set_new(out, "probabilities", jp);
    for (size_t i = 0; i < b; i++) {
        json_array_append_new(jc, json_integer(cls[i]));
        json_t *pr = json_array();
        for (int t = 0; t < nc; t++)
            json_array_append_new(pr, json_real(probs[i * (size_t)nc + (size_t)t]));
        json_array_append_new(jp, pr);
    }
    ret = reply_json_flags(h, c, r, 200, out, JSON_REAL_PRECISION(7));
done:
    dwf_sws_free(ws);
    free(x);
    free(cls);
    free(probs);
    model_release(h, &ref);
    json_decref(j);
    return ret;
}

/* ---- sweeps ------------------------------------------------------------------ */

static const char *const grid_keys[] = {"lambda", "depth", "method", "seed",
                                        "target_cr"};
#define N_GRID 5

/* Spec path each grid key sets. */
static const char *const grid_path[N_GRID][2] = {
    {"train", "lambda"}, {"model", "depth"}, {NULL, "method"},
    {NULL, "seed"},      {"prune", "target_cr"}};
static const char *const grid_field[N_GRID] = {"train.lambda", "model.depth",
                                               "method", "seed",
                                               "prune.target_cr"};

static int grid_value_ok(int k, const json_t *v)
{
    switch (k) {
    case 0:
    case 4:
        return json_is_number(v);
    case 1:
    case 3:
        return json_is_integer(v);
    default:
        return json_is_string(v);
    }
}

/* Sets child.section.key = v (section NULL: top level). */
static int set_path(json_t *child, const char *section, const char *key,
                    json_t *v)
{
    json_t *obj = child;
    if (section) {
        obj = json_object_get(child, section);
        if (!obj) {
            obj = json_object();
            if (!obj || json_object_set_new(child, section, obj))
                return -1;
        }
        if (!json_is_object(obj))
            return -1;
    }
    return json_object_set(obj, key, v);
}

static void describe_value(char *buf, size_t n, const json_t *v)
{
    if (json_is_string(v))
        snprintf(buf, n, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else
        snprintf(buf, n, "%g", json_number_value(v));
}

static enum MHD_Result h_sweep_create(dwf_http *h, struct MHD_Connection *c, req *r)
{
    enum MHD_Result ret;
    json_t *j = body_json(h, c, r, &ret);
    if (!j)
        return ret;
    json_t *children_json = NULL;
    dwf_spec *specs = NULL;
    dwf_store_job_new *jn = NULL;
    size_t n_specs = 0, total = 1;
    json_t *vals[N_GRID] = {0};
    size_t nvals[N_GRID];
    char field[DWF_FIELD_LEN + 32];
    if (!json_is_object(j)) {
        ret = reply_error(h, c, r, 400, "invalid_spec", NULL,
                          "the sweep must be a JSON object {\"name\", \"base\", \"grid\"}");
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        if (strcmp(k, "name") && strcmp(k, "base") && strcmp(k, "grid")) {
            ret = reply_error(h, c, r, 400, "invalid_spec", k,
                              "unknown field '%s' (expected name, base, grid)", k);
            goto done;
        }
    }
    json_t *jname = json_object_get(j, "name");
    if (jname && (!json_is_string(jname) || json_string_length(jname) == 0 ||
                  json_string_length(jname) > 100)) {
        ret = reply_error(h, c, r, 400, "invalid_spec", "name",
                          "name must be a string of 1 to 100 characters");
        goto done;
    }
    const char *name = jname ? json_string_value(jname) : "sweep";
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20) {
            ret = reply_error(h, c, r, 400, "invalid_spec", "name",
                              "name must not contain control characters");
            goto done;
        }
    json_t *base = json_object_get(j, "base");
    if (!json_is_object(base)) {
        ret = reply_error(h, c, r, 400, "invalid_spec", "base",
                          "base must be a job spec object");
        goto done;
    }
    json_t *grid = json_object_get(j, "grid");
    if (json_object_get(base, "search")) { /* a target-CR search */
        if (grid) {
            ret = reply_error(h, c, r, 400, "invalid_spec", "grid",
                              "a search sweep (base with \"search\") takes no grid");
            goto done;
        }
        if (jname)
            json_object_set(base, "name", jname);
        char *text = json_dumps(base, JSON_COMPACT);
        if (!text) {
            ret = reply_error(h, c, r, 500, "internal", NULL, "out of memory");
            goto done;
        }
        dwf_spec spec;
        char sfield[DWF_FIELD_LEN] = "";
        dwf_err e;
        dwf_err_clear(&e);
        int rc = dwf_spec_parse(text, strlen(text), (const char *const *)h->roots,
                                h->n_roots, &spec, sfield, &e);
        free(text);
        if (rc) {
            snprintf(field, sizeof field, "base%s%s", sfield[0] ? "." : "", sfield);
            ret = reply_error(h, c, r, 400, "invalid_spec", field, "%s", e.msg);
            goto done;
        }
        /* reply_search_created reads the base from the body: give it ours */
        char *body = json_dumps(j, JSON_COMPACT);
        if (!body) {
            dwf_spec_free(&spec);
            ret = reply_error(h, c, r, 500, "internal", NULL, "out of memory");
            goto done;
        }
        const char *ob = r->body;
        size_t ol = r->len;
        r->body = body;
        r->len = strlen(body);
        ret = reply_search_created(h, c, r, &spec);
        r->body = (char *)ob;
        r->len = ol;
        free(body);
        dwf_spec_free(&spec);
        goto done;
    }
    if (grid && !json_is_object(grid)) {
        ret = reply_error(h, c, r, 400, "invalid_spec", "grid",
                          "grid must be an object of value lists");
        goto done;
    }
    if (grid) {
        json_object_foreach(grid, k, v)
        {
            int known = 0;
            for (int g = 0; g < N_GRID; g++)
                known |= strcmp(k, grid_keys[g]) == 0;
            if (!known) {
                snprintf(field, sizeof field, "grid.%s", k);
                ret = reply_error(h, c, r, 400, "invalid_spec", field,
                                  "unknown grid key '%s' (expected lambda, depth, "
                                  "method, seed, target_cr)", k);
                goto done;
            }
        }
    }
    for (int g = 0; g < N_GRID; g++) {
        nvals[g] = 1;
        json_t *a = grid ? json_object_get(grid, grid_keys[g]) : NULL;
        if (!a)
            continue;
        snprintf(field, sizeof field, "grid.%s", grid_keys[g]);
        if (!json_is_array(a) || json_array_size(a) == 0 ||
            json_array_size(a) > MAX_GRID_VALUES) {
            ret = reply_error(h, c, r, 400, "invalid_spec", field,
                              "%s must be an array of 1 to %d values", field,
                              MAX_GRID_VALUES);
            goto done;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!grid_value_ok(g, json_array_get(a, i))) {
                snprintf(field, sizeof field, "grid.%s[%zu]", grid_keys[g], i);
                ret = reply_error(h, c, r, 400, "invalid_spec", field,
                                  "%s must be %s", field,
                                  g == 2   ? "a string"
                                  : g == 1 || g == 3 ? "an integer"
                                                     : "a number");
                goto done;
            }
        }
        vals[g] = a;
        nvals[g] = json_array_size(a);
        total *= nvals[g];
        if (total > MAX_SWEEP_CHILDREN) {
            ret = reply_error(h, c, r, 400, "invalid_spec", "grid",
                              "the grid has more than %d combinations",
                              MAX_SWEEP_CHILDREN);
            goto done;
        }
    }
    /* target_cr is the baselines' (DWF's CR follows lambda): a grid of it
     * needs a method that reads it */
    if (vals[4]) {
        int uses = 0;
        if (vals[2]) {
            for (size_t i = 0; i < json_array_size(vals[2]); i++)
                uses |= strcmp(json_string_value(json_array_get(vals[2], i)), "dwf") != 0;
        } else {
            json_t *bm = json_object_get(base, "method");
            uses = json_is_string(bm) && strcmp(json_string_value(bm), "dwf") != 0;
        }
        if (!uses) {
            ret = reply_error(h, c, r, 400, "invalid_spec", "grid.target_cr",
                              "no method of this sweep uses grid.target_cr: it is the "
                              "pruning baselines' target (DWF's CR follows lambda); for "
                              "method dwf, base.search.target_cr searches lambda");
            goto done;
        }
    }
    specs = calloc(total, sizeof *specs);
    jn = calloc(total, sizeof *jn);
    children_json = json_array();
    if (!specs || !jn || !children_json) {
        ret = reply_error(h, c, r, 500, "internal", NULL, "out of memory");
        goto done;
    }
    for (size_t idx = 0; idx < total; idx++) {
        size_t sel[N_GRID], rem = idx;
        for (int g = N_GRID - 1; g >= 0; g--) {
            sel[g] = rem % nvals[g];
            rem /= nvals[g];
        }
        /* DWF ignores target_cr: one child per other combination. */
        json_t *mv = vals[2] ? json_array_get(vals[2], sel[2])
                             : json_object_get(base, "method");
        const char *method = json_is_string(mv) ? json_string_value(mv) : "dwf";
        if (vals[4] && sel[4] > 0 && strcmp(method, "dwf") == 0)
            continue;
        json_t *child = json_deep_copy(base);
        if (!child) {
            ret = reply_error(h, c, r, 500, "internal", NULL, "out of memory");
            goto done;
        }
        char label[256] = "";
        size_t ll = 0;
        for (int g = 0; g < N_GRID; g++) {
            if (!vals[g])
                continue;
            json_t *val = json_array_get(vals[g], sel[g]);
            if (g == 4 && strcmp(method, "dwf") == 0)
                continue;
            if (set_path(child, grid_path[g][0], grid_path[g][1], val)) {
                json_decref(child);
                snprintf(field, sizeof field, "base.%s", grid_path[g][0]);
                ret = reply_error(h, c, r, 400, "invalid_spec", field,
                                  "%s must be an object", field);
                goto done;
            }
            char vs[64];
            describe_value(vs, sizeof vs, val);
            if (ll < sizeof label)
                ll += (size_t)snprintf(label + ll, sizeof label - ll, "%s%s=%s",
                                       ll ? " " : "", grid_keys[g], vs);
        }
        char cname[128];
        snprintf(cname, sizeof cname, "%.60s%s%.60s", name, label[0] ? " " : "",
                 label);
        json_object_set_new(child, "name", json_string(cname));
        char *text = json_dumps(child, JSON_COMPACT);
        json_array_append_new(children_json, child);
        if (!text) {
            ret = reply_error(h, c, r, 500, "internal", NULL, "out of memory");
            goto done;
        }
        char sfield[DWF_FIELD_LEN] = "";
        dwf_err e;
        dwf_err_clear(&e);
        int rc = dwf_spec_parse(text, strlen(text), (const char *const *)h->roots,
                                h->n_roots, &specs[n_specs], sfield, &e);
        free(text);
        if (rc) {
            const char *gk = NULL;
            int gi = 0;
            for (int g = 0; g < N_GRID; g++)
                if (vals[g] && strcmp(sfield, grid_field[g]) == 0) {
                    gk = grid_keys[g];
                    gi = g;
                }
            if (gk)
                snprintf(field, sizeof field, "grid.%s[%zu]", gk, sel[gi]);
            else
                snprintf(field, sizeof field, "base%s%s", sfield[0] ? "." : "",
                         sfield);
            ret = reply_error(h, c, r, 400, "invalid_spec", field,
                              "sweep child %zu (%s): %s", n_specs,
                              label[0] ? label : "base", e.msg);
            goto done;
        }
        dwf_store_job_new_from_spec(&jn[n_specs], &specs[n_specs]);
        n_specs++;
    }
    {
        int64_t counts[DWF_STORE_NSTATES] = {0};
        int64_t sid = 0;
        dwf_err e;
        pthread_mutex_lock(&h->submit_mu);
        int rc = dwf_store_count(h->store, counts, &e);
        if (rc == 0 && counts[DWF_STORE_QUEUED] + (int64_t)n_specs > h->max_queue) {
            pthread_mutex_unlock(&h->submit_mu);
            ret = reply_error(h, c, r, 429, "queue_full", NULL,
                              "the sweep's %zu jobs do not fit in the queue "
                              "(%" PRId64 " of %d queued)", n_specs,
                              counts[DWF_STORE_QUEUED], h->max_queue);
            goto done;
        }
        json_t *empty = grid ? NULL : json_object();
        if (rc == 0)
            rc = dwf_store_sweep_create(h->store, name, base, grid ? grid : empty,
                                        jn, (int)n_specs, &sid, NULL, &e);
        json_decref(empty);
        pthread_mutex_unlock(&h->submit_mu);
        if (rc) {
            ret = reply_store_error(h, c, r, rc, &e, NULL);
            goto done;
        }
        ret = reply_sweep(h, c, r, sid);
    }
done:
    for (size_t i = 0; i < n_specs; i++)
        dwf_spec_free(&specs[i]);
    free(specs);
    free(jn);
    json_decref(children_json);
    json_decref(j);
    return ret;
}

/* 201 with the new sweep sid and its Location. */
static enum MHD_Result reply_sweep(dwf_http *h, struct MHD_Connection *c, req *r,
                                   int64_t sid)
{
    json_t *sw = NULL;
    dwf_err e;
    int rc = dwf_store_sweep_get(h->store, sid, &sw, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    char *text = json_dumps(sw, JSON_FMT);
    json_decref(sw);
    if (!text)
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    char loc[64];
    snprintf(loc, sizeof loc, "/v1/sweeps/%" PRId64, sid);
    struct MHD_Response *resp = text_response(text, strlen(text), "application/json");
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, loc);
    return reply(h, c, r, 201, resp);
}

static enum MHD_Result h_sweep_list(dwf_http *h, struct MHD_Connection *c, req *r)
{
    json_t *out = NULL;
    dwf_err e;
    int rc = dwf_store_sweep_list(h->store, &out, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    return reply_json(h, c, r, 200, out);
}

static enum MHD_Result h_sweep_get(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("sweep");
    json_t *out = NULL;
    dwf_err e;
    int rc = dwf_store_sweep_get(h->store, id, &out, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    return reply_json(h, c, r, 200, out);
}

void dwf_pareto_front(const double *x, const double *y, int n, int *on)
{
    for (int i = 0; i < n; i++) {
        on[i] = isfinite(x[i]) && isfinite(y[i]);
        for (int k = 0; k < n && on[i]; k++) {
            if (k == i || !isfinite(x[k]) || !isfinite(y[k]))
                continue;
            if (x[k] >= x[i] && y[k] >= y[i] && (x[k] > x[i] || y[k] > y[i]))
                on[i] = 0;
        }
    }
}

static double num_or_nan(const json_t *v)
{
    return json_is_number(v) ? json_number_value(v) : NAN;
}

typedef struct curve_sort {
    double cr;
    int idx;
} curve_sort;

static int cmp_curve(const void *a, const void *b)
{
    const curve_sort *p = a, *q = b;
    int pn = isnan(p->cr), qn = isnan(q->cr);
    if (pn != qn)
        return pn - qn;
    if (!pn && p->cr != q->cr)
        return p->cr < q->cr ? -1 : 1;
    return p->idx - q->idx;
}

/* The threshold curves of the sweep's children as series, labelled from
 * their points in pts (the lambda curve's rows). */
static int threshold_series(dwf_http *h, int64_t id, const json_t *pts,
                            json_t **out, dwf_err *e)
{
    json_t *thr = NULL;
    int rc = dwf_store_sweep_thresholds(h->store, id, &thr, e);
    if (rc)
        return rc;
    static const char *const keep[] = {"threshold", "cr", "val_acc", "test_acc",
                                       "selected"};
    json_t *series = json_array();
    size_t i, k;
    json_t *t, *p;
    json_array_foreach(thr, i, t)
    {
        json_t *jid = json_object_get(t, "job_id");
        json_t *row = NULL;
        json_array_foreach(pts, k, p)
        {
            if (json_equal(json_object_get(p, "job_id"), jid)) {
                row = p;
                break;
            }
        }
        const char *method = json_string_value(json_object_get(row, "method"));
        char label[96];
        snprintf(label, sizeof label, "%s D=%lld \xce\xbb=%.3g", method ? method : "?",
                 (long long)json_integer_value(json_object_get(row, "depth")),
                 json_number_value(json_object_get(row, "lambda")));
        json_t *tp = json_array();
        json_t *q;
        json_array_foreach(json_object_get(t, "points"), k, q)
        {
            json_t *o = json_object();
            for (size_t f = 0; o && f < sizeof keep / sizeof *keep; f++) {
                json_t *v = json_object_get(q, keep[f]);
                if (v)
                    json_object_set(o, keep[f], v);
            }
            if (!o || json_array_append_new(tp, o))
                break;
        }
        json_t *ser = json_pack("{s:O,s:s,s:o,s:o?,s:o?,s:o}", "job_id", jid, "label",
                                label, "method",
                                method ? json_string(method) : json_null(), "depth",
                                json_copy(json_object_get(row, "depth")), "lambda",
                                json_copy(json_object_get(row, "lambda")), "points", tp);
        if (!ser || json_array_append_new(series, ser)) {
            rc = dwf_errorf(e, DWF_ENOMEM, "out of memory");
            break;
        }
    }
    json_decref(thr);
    if (rc || !series) {
        json_decref(series);
        return rc ? rc : dwf_errorf(e, DWF_ENOMEM, "out of memory");
    }
    *out = series;
    return 0;
}

/* The curve of sweep id with Pareto marks and series, or an error code. */
static int build_curve(dwf_http *h, int64_t id, json_t **out, dwf_err *e)
{
    json_t *pts = NULL;
    int rc = dwf_store_sweep_curve(h->store, id, &pts, e);
    if (rc)
        return rc;
    int n = (int)json_array_size(pts);
    double *x = calloc((size_t)n + 1, sizeof *x), *y = calloc((size_t)n + 1, sizeof *y);
    int *on = calloc((size_t)n + 1, sizeof *on);
    curve_sort *cs = calloc((size_t)n + 1, sizeof *cs);
    json_t *series = json_array();
    json_t *front = json_array();
    if (!x || !y || !on || !cs || !series || !front) {
        rc = dwf_errorf(e, DWF_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        json_t *p = json_array_get(pts, (size_t)i);
        x[i] = num_or_nan(json_object_get(p, "cr"));
        y[i] = num_or_nan(json_object_get(p, "sparse_test_acc"));
    }
    dwf_pareto_front(x, y, n, on);
    for (int i = 0; i < n; i++) {
        json_object_set_new(json_array_get(pts, (size_t)i), "pareto", json_boolean(on[i]));
        cs[i].cr = x[i];
        cs[i].idx = i;
    }
    qsort(cs, (size_t)n, sizeof *cs, cmp_curve);
    for (int t = 0; t < n; t++)
        if (on[cs[t].idx])
            json_array_append_new(front, json_integer(cs[t].idx));
    /* series: one per (method, depth), points sorted by CR */
    for (int t = 0; t < n; t++) {
        json_t *p = json_array_get(pts, (size_t)cs[t].idx);
        const char *method = json_string_value(json_object_get(p, "method"));
        json_t *depth = json_object_get(p, "depth");
        json_t *ser = NULL;
        size_t si;
        json_t *s;
        json_array_foreach(series, si, s)
        {
            const char *sm = json_string_value(json_object_get(s, "method"));
            if (((!sm && !method) || (sm && method && strcmp(sm, method) == 0)) &&
                json_equal(json_object_get(s, "depth"), depth)) {
                ser = s;
                break;
            }
        }
        if (!ser) {
            ser = json_pack("{s:o,s:O,s:[],s:[]}", "method",
                            method ? json_string(method) : json_null(), "depth",
                            depth ? depth : json_null(), "points", "indexes");
            if (!ser || json_array_append_new(series, ser)) {
                rc = dwf_errorf(e, DWF_ENOMEM, "out of memory");
                goto fail;
            }
        }
        json_array_append(json_object_get(ser, "points"), p);
        json_array_append_new(json_object_get(ser, "indexes"), json_integer(cs[t].idx));
    }
    json_t *tseries = NULL;
    if ((rc = threshold_series(h, id, pts, &tseries, e)))
        goto fail;
    *out = json_pack("{s:I,s:o,s:o,s:o,s:o}", "sweep_id", (json_int_t)id, "points", pts,
                     "series", series, "pareto", front, "threshold_series", tseries);
    free(x);
    free(y);
    free(on);
    free(cs);
    if (!*out)
        return dwf_errorf(e, DWF_ENOMEM, "out of memory");
    return 0;
fail:
    json_decref(pts);
    json_decref(series);
    json_decref(front);
    free(x);
    free(y);
    free(on);
    free(cs);
    return rc;
}

static enum MHD_Result h_sweep_curve(dwf_http *h, struct MHD_Connection *c, req *r)
{
    NEED_ID("sweep");
    json_t *out = NULL;
    dwf_err e;
    int rc = build_curve(h, id, &out, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    return reply_json(h, c, r, 200, out);
}

static void csv_num(sbuf *b, const json_t *v)
{
    if (json_is_integer(v))
        sb_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        sb_printf(b, "%.10g", json_real_value(v));
    else if (json_is_string(v)) {
        /* quote when needed */
        const char *s = json_string_value(v);
        if (strpbrk(s, ",\"\n\r")) {
            sb_puts(b, "\"");
            for (; *s; s++) {
                if (*s == '"')
                    sb_puts(b, "\"\"");
                else
                    sb_put(b, s, 1);
            }
            sb_puts(b, "\"");
        } else {
            sb_puts(b, s);
        }
    } else if (json_is_boolean(v))
        sb_puts(b, json_is_true(v) ? "true" : "false");
}

static enum MHD_Result h_sweep_curve_csv(dwf_http *h, struct MHD_Connection *c,
                                         req *r)
{
    NEED_ID("sweep");
    json_t *out = NULL;
    dwf_err e;
    int rc = build_curve(h, id, &out, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    static const char *const cols[] = {"job_id", "method", "depth", "lambda",
                                       "target_cr", "seed", "cr",
                                       "sparse_test_acc", "test_acc", "pareto"};
    const int nc = (int)(sizeof cols / sizeof *cols);
    sbuf b = {0};
    for (int i = 0; i < nc; i++) {
        sb_puts(&b, cols[i]);
        sb_puts(&b, i + 1 < nc ? "," : "\n");
    }
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(out, "points"), i, p)
    {
        for (int k = 0; k < nc; k++) {
            csv_num(&b, json_object_get(p, cols[k]));
            sb_puts(&b, k + 1 < nc ? "," : "\n");
        }
    }
    json_decref(out);
    if (b.oom) {
        free(b.p);
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    }
    struct MHD_Response *resp = text_response(b.p, b.len, "text/csv; charset=utf-8");
    if (resp) {
        char disp[96];
        snprintf(disp, sizeof disp, "attachment; filename=\"sweep-%" PRId64 "-curve.csv\"",
                 id);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_DISPOSITION, disp);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    }
    return reply(h, c, r, 200, resp);
}

/* ---- datasets ------------------------------------------------------------------ */

/* Sample count in an IDX file's header (raw or gzipped), or -1. */
static int64_t idx_count(const char *path)
{
    gzFile g = gzopen(path, "rb");
    if (!g)
        return -1;
    unsigned char hdr[8];
    int n = gzread(g, hdr, sizeof hdr);
    gzclose(g);
    if (n != 8 || hdr[0] != 0 || hdr[1] != 0 || hdr[2] != 8)
        return -1;
    return ((int64_t)hdr[4] << 24) | (hdr[5] << 16) | (hdr[6] << 8) | hdr[7];
}

/* The IDX file base (e.g. "train-images-idx3-ubyte") in dir, raw or .gz. */
static int find_idx(const char *dir, const char *base, char *out, size_t n)
{
    struct stat st;
    snprintf(out, n, "%s/%s", dir, base);
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
        return 1;
    snprintf(out, n, "%s/%s.gz", dir, base);
    return stat(out, &st) == 0 && S_ISREG(st.st_mode);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

typedef struct ds_walk {
    json_t *list;
    int n_entries;   /* directory entries visited */
    int n_found;
} ds_walk;

static void add_mnist_dir(ds_walk *w, const char *dir)
{
    char tr[PATH_MAX], te[PATH_MAX];
    if (!find_idx(dir, "train-images-idx3-ubyte", tr, sizeof tr) ||
        !find_idx(dir, "t10k-images-idx3-ubyte", te, sizeof te))
        return;
    const char *name = strrchr(dir, '/');
    name = name ? name + 1 : dir;
    const char *kind = strstr(name, "fashion") ? "fashion-mnist" : "mnist";
    json_t *d = json_pack("{s:s,s:s,s:s}", "name", name, "kind", kind, "path", dir);
    if (!d)
        return;
    int64_t ntr = idx_count(tr), nte = idx_count(te);
    json_object_set_new(d, "train", ntr >= 0 ? json_integer(ntr) : json_null());
    json_object_set_new(d, "test", nte >= 0 ? json_integer(nte) : json_null());
    json_array_append_new(w->list, d);
    w->n_found++;
}

static void walk_dir(ds_walk *w, const char *dir, int depth)
{
    if (depth > WALK_DEPTH || w->n_found >= MAX_DATASETS || w->n_entries > 20000)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    add_mnist_dir(w, dir);
    struct dirent *de;
    char **subs = NULL;
    int n_subs = 0, cap_subs = 0;
    while ((de = readdir(d)) && w->n_entries++ <= 20000 && w->n_found < MAX_DATASETS) {
        if (de->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path)
            continue;
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (n_subs == cap_subs) {
                int nc = cap_subs ? cap_subs * 2 : 8;
                char **q = realloc(subs, (size_t)nc * sizeof *q);
                if (!q)
                    continue;
                subs = q;
                cap_subs = nc;
            }
            subs[n_subs] = strdup(path);
            if (subs[n_subs])
                n_subs++;
            continue;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        const char *kind = NULL;
        if (ends_with(de->d_name, ".csv"))
            kind = "csv";
        else if (ends_with(de->d_name, ".idx") || ends_with(de->d_name, ".idx.gz") ||
                 ends_with(de->d_name, "-ubyte") || ends_with(de->d_name, "-ubyte.gz"))
            kind = "idx";
        if (!kind)
            continue;
        json_t *e = json_pack("{s:s,s:s,s:s,s:I}", "name", de->d_name, "kind", kind,
                              "path", path, "bytes", (json_int_t)st.st_size);
        if (e && strcmp(kind, "idx") == 0) {
            int64_t cnt = idx_count(path);
            if (cnt >= 0)
                json_object_set_new(e, "count", json_integer(cnt));
        }
        if (e) {
            json_array_append_new(w->list, e);
            w->n_found++;
        }
    }
    closedir(d);
    for (int i = 0; i < n_subs; i++) {
        walk_dir(w, subs[i], depth + 1);
        free(subs[i]);
    }
    free(subs);
}

static enum MHD_Result h_datasets(dwf_http *h, struct MHD_Connection *c, req *r)
{
    ds_walk w = {json_array(), 0, 0};
    if (!w.list)
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    for (int i = 0; i < h->n_roots; i++)
        walk_dir(&w, h->roots[i], 0);
    json_t *roots = json_array();
    for (int i = 0; i < h->n_roots; i++)
        json_array_append_new(roots, json_string(h->roots[i]));
    return reply_json(h, c, r, 200,
                      json_pack("{s:o,s:o}", "datasets", w.list, "roots", roots));
}

/* ---- misc ------------------------------------------------------------------------ */

static enum MHD_Result h_schema(dwf_http *h, struct MHD_Connection *c, req *r)
{
    const char *s = dwf_spec_schema();
    if (!s)
        return reply_error(h, c, r, 500, "internal", NULL, "no schema");
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(s), (void *)s, MHD_RESPMEM_PERSISTENT);
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/schema+json");
    return reply(h, c, r, 200, resp);
}

static enum MHD_Result h_openapi(dwf_http *h, struct MHD_Connection *c, req *r)
{
    const char *s = dwf_openapi_json();
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(s), (void *)s, MHD_RESPMEM_PERSISTENT);
    if (resp)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return reply(h, c, r, 200, resp);
}

static enum MHD_Result h_healthz(dwf_http *h, struct MHD_Connection *c, req *r)
{
    int64_t counts[DWF_STORE_NSTATES] = {0};
    dwf_err e;
    int rc = dwf_store_count(h->store, counts, &e);
    if (rc)
        return reply_error(h, c, r, 503, "unavailable", NULL, "store: %s", e.msg);
    int stopping = atomic_load(&h->stopping);
    json_t *j = json_pack("{s:s,s:s,s:i,s:I,s:I,s:I}", "status",
                          stopping ? "stopping" : "ok", "version", DWF_VERSION,
                          "workers", dwf_pool_workers(h->pool), "queued",
                          (json_int_t)counts[DWF_STORE_QUEUED], "running",
                          (json_int_t)counts[DWF_STORE_RUNNING], "uptime_seconds",
                          (json_int_t)(time(NULL) - h->started_at));
    return reply_json(h, c, r, stopping ? 503 : 200, j);
}

static const route routes[];
static const int n_routes;

static enum MHD_Result h_metrics(dwf_http *h, struct MHD_Connection *c, req *r)
{
    int64_t counts[DWF_STORE_NSTATES] = {0};
    dwf_err e;
    int rc = dwf_store_count(h->store, counts, &e);
    if (rc)
        return reply_store_error(h, c, r, rc, &e, NULL);
    int running = 0;
    double sps = 0;
    dwf_pool_stats(h->pool, &running, &sps);
    sbuf b = {0};
    sb_puts(&b, "# HELP dwf_jobs Jobs in the store by state.\n# TYPE dwf_jobs gauge\n");
    for (int s = 0; s < DWF_STORE_NSTATES; s++)
        sb_printf(&b, "dwf_jobs{state=\"%s\"} %" PRId64 "\n",
                  dwf_store_state_name((dwf_store_state)s), counts[s]);
    sb_printf(&b, "# HELP dwf_queue_length Jobs waiting for a worker.\n"
                  "# TYPE dwf_queue_length gauge\ndwf_queue_length %" PRId64 "\n",
              counts[DWF_STORE_QUEUED]);
    sb_printf(&b, "# HELP dwf_workers Worker threads.\n# TYPE dwf_workers gauge\n"
                  "dwf_workers %d\n", dwf_pool_workers(h->pool));
    sb_printf(&b, "# HELP dwf_training_samples_per_second Training throughput of "
                  "the running jobs.\n# TYPE dwf_training_samples_per_second gauge\n"
                  "dwf_training_samples_per_second %.3f\n", sps);
    sb_puts(&b, "# HELP dwf_http_requests_total HTTP requests by route and status.\n"
                "# TYPE dwf_http_requests_total counter\n");
    for (int ri = 0; ri <= n_routes; ri++) {
        int idx = ri < n_routes ? ri : N_ROUTES_MAX;
        for (int si = 0; si < N_STATUS; si++) {
            uint64_t v = atomic_load_explicit(&h->counts[idx][si], memory_order_relaxed);
            if (!v)
                continue;
            char st[16];
            if (counted_status[si])
                snprintf(st, sizeof st, "%d", counted_status[si]);
            else
                snprintf(st, sizeof st, "other");
            if (ri < n_routes)
                sb_printf(&b, "dwf_http_requests_total{route=\"%s %s\",status=\"%s\"} %" PRIu64 "\n",
                          routes[ri].method, routes[ri].pattern, st, v);
            else
                sb_printf(&b, "dwf_http_requests_total{route=\"unmatched\",status=\"%s\"} %" PRIu64 "\n",
                          st, v);
        }
    }
    if (b.oom) {
        free(b.p);
        return reply_error(h, c, r, 500, "internal", NULL, "out of memory");
    }
    struct MHD_Response *resp =
        text_response(b.p, b.len, "text/plain; version=0.0.4; charset=utf-8");
    return reply(h, c, r, 200, resp);
}

static enum MHD_Result h_static(dwf_http *h, struct MHD_Connection *c, req *r)
{
    const char *path = r->asset[0] ? r->asset : "/index.html";
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (int i = 0; i < h->n_assets; i++) {
        const dwf_web_asset *a = &dwf_web_assets[i];
        if (strcmp(a->path, path) != 0)
            continue;
        const char *tag = h->asset_etag[i];
        if (etag_matches(c, tag))
            return reply_not_modified(h, c, r, tag, "no-cache");
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->content_type);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, tag);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        return reply(h, c, r, 200, resp);
    }
    return reply_error(h, c, r, 404, "not_found", NULL, "no route or file %s", path);
}

/* ---- the route table --------------------------------------------------------------- */

static const route routes[] = {
    {"POST", "/v1/jobs", 1, 1, 0, h_job_create},
    {"GET", "/v1/jobs", 0, 0, 0, h_job_list},
    {"GET", "/v1/jobs/{id}", 0, 0, 0, h_job_get},
    {"DELETE", "/v1/jobs/{id}", 1, 0, 0, h_job_delete},
    {"POST", "/v1/jobs/{id}/cancel", 1, 0, 0, h_job_cancel},
    {"GET", "/v1/jobs/{id}/metrics", 0, 0, 0, h_job_metrics},
    {"GET", "/v1/jobs/{id}/thresholds", 0, 0, 0, h_job_thresholds},
    {"GET", "/v1/jobs/{id}/events", 0, 0, 0, h_job_events},
    {"GET", "/v1/jobs/{id}/model", 0, 0, 0, h_job_model},
    {"POST", "/v1/jobs/{id}/predict", 0, 1, 0, h_job_predict},
    {"POST", "/v1/sweeps", 1, 1, 0, h_sweep_create},
    {"GET", "/v1/sweeps", 0, 0, 0, h_sweep_list},
    {"GET", "/v1/sweeps/{id}", 0, 0, 0, h_sweep_get},
    {"GET", "/v1/sweeps/{id}/curve", 0, 0, 0, h_sweep_curve},
    {"GET", "/v1/sweeps/{id}/curve.csv", 0, 0, 0, h_sweep_curve_csv},
    {"GET", "/v1/datasets", 0, 0, 0, h_datasets},
    {"GET", "/v1/schema", 0, 0, 0, h_schema},
    {"GET", "/v1/openapi.json", 0, 0, 0, h_openapi},
    {"GET", "/healthz", 0, 0, 1, h_healthz},
    {"GET", "/metrics", 0, 0, 0, h_metrics},
    {"GET", "/", 0, 0, 1, h_static},
    {"GET", "/{asset}", 0, 0, 1, h_static},
};
static const int n_routes = (int)(sizeof routes / sizeof *routes);

static dwf_http_route_info route_infos[sizeof routes / sizeof *routes];
static pthread_once_t route_infos_once = PTHREAD_ONCE_INIT;

static void fill_route_infos(void)
{
    for (int i = 0; i < n_routes; i++) {
        route_infos[i].method = routes[i].method;
        route_infos[i].pattern = routes[i].pattern;
        route_infos[i].mutating = routes[i].mutating;
    }
}

const dwf_http_route_info *dwf_http_routes(int *n)
{
    pthread_once(&route_infos_once, fill_route_infos);
    *n = n_routes;
    return route_infos;
}

/* Matches url against pattern; fills r->id / r->asset. */
static int match_route(const char *pat, const char *url, req *r)
{
    const char *p = pat, *u = url;
    if (strcmp(pat, "/") == 0)
        return strcmp(url, "/") == 0;
    while (*p && *u) {
        if (*p != '/' || *u != '/')
            return 0;
        p++;
        u++;
        const char *pe = strchr(p, '/');
        const char *ue = strchr(u, '/');
        size_t pl = pe ? (size_t)(pe - p) : strlen(p);
        size_t ul = ue ? (size_t)(ue - u) : strlen(u);
        if (pl == 7 && strncmp(p, "{asset}", 7) == 0) {
            if (ul == 0 || strlen(u - 1) >= sizeof r->asset)
                return 0;
            snprintf(r->asset, sizeof r->asset, "%s", u - 1);
            return 1;
        }
        if (pl == 4 && strncmp(p, "{id}", 4) == 0) {
            if (ul == 0 || ul >= sizeof r->id)
                return 0;
            memcpy(r->id, u, ul);
            r->id[ul] = 0;
        } else if (pl != ul || strncmp(p, u, pl) != 0) {
            return 0;
        }
        p += pl;
        u += ul;
    }
    return *p == 0 && *u == 0;
}

/* ---- the MHD callbacks ---------------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    dwf_http *h = cls;
    req *r = *con_cls;
    if (!r) {
        static __thread int niced;
        if (h->http_nice && !niced) { /* this connection's thread */
            setpriority(PRIO_PROCESS, (id_t)gettid(), h->http_nice);
            niced = 1;
        }
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        r->route = -1;
        const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
        int path_hit = 0;
        char allow[128] = "";
        int fallback = -1;
        for (int i = 0; i < n_routes; i++) {
            if (strcmp(routes[i].pattern, "/{asset}") == 0) {
                fallback = i; /* dashboard files: only when no route matches */
                continue;
            }
            if (!match_route(routes[i].pattern, url, r))
                continue;
            if (strcmp(routes[i].method, m) == 0) {
                r->route = i;
                break;
            }
            path_hit = 1;
            if (!strstr(allow, routes[i].method)) {
                size_t al = strlen(allow);
                snprintf(allow + al, sizeof allow - al, "%s%s%s", al ? ", " : "",
                         routes[i].method,
                         strcmp(routes[i].method, "GET") == 0 ? ", HEAD" : "");
            }
        }
        if (r->route < 0 && !path_hit && fallback >= 0 &&
            strcmp(routes[fallback].method, m) == 0 &&
            match_route(routes[fallback].pattern, url, r))
            r->route = fallback;
        if (r->route < 0) {
            if (path_hit) {
                char *text = NULL;
                json_t *j = json_pack("{s:{s:s,s:s,s:n}}", "error", "code",
                                      "method_not_allowed", "message",
                                      "method not allowed on this path", "field");
                if (j)
                    text = json_dumps(j, JSON_COMPACT);
                json_decref(j);
                if (!text)
                    return MHD_NO;
                struct MHD_Response *resp =
                    text_response(text, strlen(text), "application/json");
                if (resp)
                    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
                return reply(h, c, r, 405, resp);
            }
            return reply_error(h, c, r, 404, "not_found", NULL, "no route %s %s",
                               method, url);
        }
        const route *rt = &routes[r->route];
        int a = rt->open ? 0 : auth_status(h, c, rt->mutating);
        if (a == 401)
            return reply_error(h, c, r, 401, "unauthorized", NULL,
                               "this request needs Authorization: Bearer <token>");
        if (a == 403)
            return reply_error(h, c, r, 403, "forbidden", NULL,
                               "this token may only read");
        if (rt->mutating && atomic_load(&h->stopping))
            return reply_error(h, c, r, 503, "unavailable", NULL,
                               "the server is shutting down");
        if (rt->body) {
            const char *cl = header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
            if (cl) {
                int64_t n = 0;
                if (parse_i64(cl, 0, INT64_MAX, &n) || (uint64_t)n > h->max_body)
                    return reply_error(h, c, r, 413, "payload_too_large", NULL,
                                       "the body is larger than %zu bytes",
                                       h->max_body);
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->route < 0 || !routes[r->route].body || r->too_large)
            return MHD_YES; /* discard */
        if (r->len + n > h->max_body) {
            r->too_large = 1;
            free(r->body);
            r->body = NULL;
            r->len = r->cap = 0;
            return MHD_YES;
        }
        if (r->len + n + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + n + 1)
                cap *= 2;
            if (cap > h->max_body + 1)
                cap = h->max_body + 1;
            char *q = realloc(r->body, cap);
            if (!q)
                return MHD_NO;
            r->body = q;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload_data, n);
        r->len += n;
        r->body[r->len] = 0;
        return MHD_YES;
    }
    if (r->too_large)
        return reply_error(h, c, r, 413, "payload_too_large", NULL,
                           "the body is larger than %zu bytes", h->max_body);
    return routes[r->route].fn(h, c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    req *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    dwf_http *h = cls;
    if (!h->log)
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    h->log(h->log_ud, "http: %s", msg);
}

/* ---- start / stop ----------------------------------------------------------------------- */

static char **copy_strings(const char *const *src, int n, int *ok)
{
    if (n <= 0)
        return NULL;
    char **d = calloc((size_t)n, sizeof *d);
    if (!d) {
        *ok = 0;
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        d[i] = strdup(src[i]);
        if (!d[i])
            *ok = 0;
    }
    return d;
}

static void free_strings(char **s, int n)
{
    if (!s)
        return;
    for (int i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

static void http_free(dwf_http *h)
{
    free_strings(h->tokens, h->n_tokens);
    free_strings(h->read_tokens, h->n_read_tokens);
    free_strings(h->roots, h->n_roots);
    for (int i = 0; i < MODEL_CACHE; i++)
        smodel_destroy(h->cache[i].m);
    while (h->watches) { /* none remain once MHD has stopped */
        watch *w = h->watches;
        h->watches = w->next;
        free(w);
    }
    pthread_cond_destroy(&h->ping_cv);
    free(h->asset_etag);
    for (int i = 0; i < JCACHE_N; i++)
        free(h->job_cache[i].text);
    for (int i = 0; i < LCACHE_N; i++)
        free(h->list_cache[i].text);
    pthread_mutex_destroy(&h->rc_mu);
    pthread_mutex_destroy(&h->submit_mu);
    pthread_mutex_destroy(&h->w_mu);
    pthread_mutex_destroy(&h->cache_mu);
    free(h);
}

int dwf_http_create(const dwf_http_config *cfg, dwf_store *store,
                    dwf_pool *pool, dwf_http **out, dwf_err *err)
{
    *out = NULL;
    if (!cfg || !store || !pool || cfg->listen_fd < 0)
        return dwf_errorf(err, DWF_EINVAL, "http: bad arguments");
    if (n_routes > N_ROUTES_MAX)
        return dwf_errorf(err, DWF_EINVAL, "http: too many routes");
    dwf_http *h = calloc(1, sizeof *h);
    if (!h)
        return dwf_errorf(err, DWF_ENOMEM, "http: out of memory");
    pthread_mutex_init(&h->submit_mu, NULL);
    pthread_mutex_init(&h->w_mu, NULL);
    pthread_mutex_init(&h->cache_mu, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&h->ping_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    pthread_mutex_init(&h->rc_mu, NULL);
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        h->boot = ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)ts.tv_nsec ^
                  ((uint64_t)getpid() << 40);
    }
    h->store = store;
    h->pool = pool;
    h->listen_fd = cfg->listen_fd;
    h->max_body = cfg->max_body ? cfg->max_body : 1048576;
    h->max_queue = cfg->max_queue > 0 ? cfg->max_queue : 1000;
    h->auth_reads = cfg->auth_reads;
    h->sse_ping = cfg->sse_ping > 0 ? cfg->sse_ping : 15.0;
    h->log = cfg->log;
    h->log_ud = cfg->log_ud;
    h->started_at = time(NULL);
    int ok = 1;
    h->tokens = copy_strings(cfg->tokens, cfg->n_tokens, &ok);
    h->n_tokens = h->tokens ? cfg->n_tokens : 0;
    h->read_tokens = copy_strings(cfg->read_tokens, cfg->n_read_tokens, &ok);
    h->n_read_tokens = h->read_tokens ? cfg->n_read_tokens : 0;
    h->roots = copy_strings(cfg->roots, cfg->n_roots, &ok);
    h->n_roots = h->roots ? cfg->n_roots : 0;
    while (dwf_web_assets[h->n_assets].path)
        h->n_assets++;
    h->asset_etag = calloc((size_t)h->n_assets + 1, sizeof *h->asset_etag);
    if (!ok || !h->asset_etag) {
        http_free(h);
        return dwf_errorf(err, DWF_ENOMEM, "http: out of memory");
    }
    for (int i = 0; i < h->n_assets; i++) {
        uint64_t f = 1469598103934665603ull; /* FNV-1a 64 */
        const unsigned char *d = dwf_web_assets[i].data;
        for (size_t k = 0; k < dwf_web_assets[i].size; k++)
            f = (f ^ d[k]) * 1099511628211ull;
        snprintf(h->asset_etag[i], sizeof h->asset_etag[i], "\"%016" PRIx64 "\"", f);
    }
    h->ipv6 = cfg->ipv6;
    h->http_nice = cfg->http_nice;
    h->http_threads = cfg->threads > 0 ? cfg->threads : 2;
    h->max_connections = cfg->max_connections > 0 ? cfg->max_connections : 1000;
    *out = h;
    return 0;
}

int dwf_http_listen(dwf_http *h, dwf_err *err)
{
    if (h->d)
        return dwf_errorf(err, DWF_EINVAL, "http: already listening");
    /* A small pool of threads, each with its own epoll set: many
     * connections per thread, so nothing may block (SSE suspends). */
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD |
                         MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (h->ipv6)
        flags |= MHD_USE_IPv6;
    unsigned int max_conn = (unsigned)h->max_connections;
    int e = pthread_create(&h->ping_thread, NULL, ping_main, h);
    if (e)
        return dwf_errorf(err, DWF_EIO, "http: cannot start a thread: %s", strerror(e));
    h->ping_started = 1;
    h->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
        MHD_OPTION_CONNECTION_LIMIT, max_conn,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)h->http_threads, MHD_OPTION_END);
    if (!h->d)
        return dwf_errorf(err, DWF_EIO, "http: libmicrohttpd did not start");
    return 0;
}

void dwf_http_quiesce(dwf_http *h)
{
    if (!h || h->quiesced)
        return;
    h->quiesced = 1;
    atomic_store(&h->stopping, 1);
    if (h->d) {
        MHD_socket fd = MHD_quiesce_daemon(h->d);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
    } else if (h->listen_fd >= 0) {
        close(h->listen_fd);
    }
    h->listen_fd = -1;
    watch_wake(h, 0);
}

void dwf_http_stop(dwf_http *h)
{
    if (!h)
        return;
    dwf_http_quiesce(h);
    /* let the resumed event streams end cleanly (up to a second) */
    pthread_mutex_lock(&h->w_mu);
    double until = mono_now() + 1.0;
    while (h->d && h->n_streams > 0 && mono_now() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 20000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&h->ping_cv, &h->w_mu, &ts);
    }
    pthread_mutex_unlock(&h->w_mu);
    if (h->d)
        MHD_stop_daemon(h->d);
    if (h->ping_started) {
        pthread_mutex_lock(&h->w_mu);
        h->ping_stop = 1;
        pthread_cond_broadcast(&h->ping_cv);
        pthread_mutex_unlock(&h->w_mu);
        pthread_join(h->ping_thread, NULL);
    }
    http_free(h);
}
