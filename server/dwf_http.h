/*
 * dwf_http.h - dwfd's HTTP front end on libmicrohttpd: the REST API of
 * .notes/api.md (JSON with jansson), bearer-token auth, Server-Sent
 * Events, Prometheus /metrics, the OpenAPI document and the embedded
 * dashboard (web_assets.h).
 *
 * Threading: libmicrohttpd runs a small pool of threads, each serving many
 * connections from its own epoll set, so handlers never block for long:
 * an SSE stream with nothing to send suspends its connection, and the
 * job's next store event (or the heartbeat timer) resumes it. Handlers
 * read the store through its reader pool and never wait for a training
 * step. GET /v1/jobs/{id} and GET /v1/jobs keep their
 * rendered bodies until a store event of that job (any job, for lists)
 * invalidates them, and answer If-None-Match with 304: the store's events
 * must reach dwf_http_on_event() for every change of a job.
 *
 * Ownership: dwf_http borrows the store and the pool (both must outlive
 * it) and copies the config's strings. It owns the listening socket it
 * was given. Stop with dwf_http_quiesce() (no new connections, streams
 * end) and free with dwf_http_stop() (waits for the connection threads).
 */
#ifndef DWF_HTTP_H
#define DWF_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "dwf_err.h"
#include "dwf_pool.h"
#include "dwf_store.h"

#ifndef DWF_VERSION
#define DWF_VERSION "0.1.0"
#endif

typedef struct dwf_http dwf_http;

typedef struct dwf_http_config {
    int listen_fd;               /* bound, listening socket (owned after start) */
    int ipv6;                    /* the socket is AF_INET6 */
    size_t max_body;             /* bytes; larger bodies get 413 */
    int max_queue;               /* queued jobs before 429 */
    const char *const *tokens;   /* read-write tokens */
    int n_tokens;
    const char *const *read_tokens; /* read-only tokens */
    int n_read_tokens;
    int auth_reads;              /* GETs need a token too */
    const char *const *roots;    /* data roots specs may read from */
    int n_roots;
    double sse_ping;             /* seconds between SSE heartbeats; 0 = 15 */
    int max_connections;         /* 0 = 1000 */
    int threads;                 /* HTTP threads; 0 = 2 */
    int http_nice;               /* nice value of connection threads (0..19):
                                    > 0 favours training over HTTP load */
    dwf_log_fn log;              /* may be NULL */
    void *log_ud;
} dwf_http_config;

/* Makes the server (nothing is served yet): register dwf_http_on_event
 * as (part of) the store's listener, then call dwf_http_listen(). */
int dwf_http_create(const dwf_http_config *cfg, dwf_store *store,
                    dwf_pool *pool, dwf_http **out, dwf_err *err);
/* Starts serving on cfg->listen_fd. */
int dwf_http_listen(dwf_http *h, dwf_err *err);
/* Stops accepting connections, makes new requests on kept-alive
 * connections answer 503 and ends the SSE streams. Returns at once. */
void dwf_http_quiesce(dwf_http *h);
/* Quiesces (if not yet), stops the daemon (joins its threads) and frees
 * everything (also after a failed dwf_http_listen). NULL is a no-op. */
void dwf_http_stop(dwf_http *h);

/* The store's change listener: wakes SSE streams (and the pool on job
 * creation). Register with dwf_store_set_listener(store, dwf_http_on_event,
 * h) once h exists. */
void dwf_http_on_event(void *ud, dwf_store_event ev, int64_t job_id,
                       int64_t arg);

/* The route table, in one place: method, path pattern ("{id}" matches one
 * path segment), and whether it changes state (needs a read-write token).
 * Static; *n receives the count. */
typedef struct dwf_http_route_info {
    const char *method;
    const char *pattern;
    int mutating;
} dwf_http_route_info;
const dwf_http_route_info *dwf_http_routes(int *n);

/* The OpenAPI 3 document (JSON text) served at /v1/openapi.json. */
const char *dwf_openapi_json(void);

/* Pareto marks of n points (x = CR, y = accuracy; NaN = never on the
 * front): on[i] = 1 when no other point has x >= x_i and y >= y_i with one
 * of them strictly greater. */
void dwf_pareto_front(const double *x, const double *y, int n, int *on);

#endif
