/*
 * check_store.c - tests of server/dwf_store.c on temporary database files:
 * migrations, jobs, pagination, idempotency, concurrent claims, metrics,
 * checkpoints, models, delete, crash recovery, sweeps, thresholds, WAL.
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "dwf_store.h"
#include "testutil.h"

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static char tmpdir[256];
static char dbpath[512];

static void rm_tree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dwf-store-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    /* parent folders that do not exist yet */
    snprintf(dbpath, sizeof dbpath, "%s/a/b/dwfd.db", tmpdir);
}

static void teardown(void)
{
    rm_tree(tmpdir);
}

static dwf_store *open_ok(void)
{
    dwf_store *s = NULL;
    dwf_err e = {0};
    int rc = dwf_store_open(dbpath, NULL, &s, &e);
    ck_assert_msg(rc == 0, "open: %s", e.msg);
    return s;
}

static const char *SPEC = "{\"name\":\"t\",\"train\":{\"epochs\":3}}";

static int64_t mkjob(dwf_store *s, const char *name, int prio, const char *key)
{
    dwf_store_job_new j = {0};
    j.spec_json = SPEC;
    j.name = name;
    j.priority = prio;
    j.method = "dwf";
    j.depth = 3;
    j.lambda = 0.01;
    j.seed = 7;
    j.epochs = 3;
    j.idempotency_key = key;
    int64_t id = 0;
    dwf_err e = {0};
    int rc = dwf_store_job_create(s, &j, &id, NULL, &e);
    ck_assert_msg(rc == 0, "create: %s", e.msg);
    ck_assert_int_gt(id, 0);
    return id;
}

static dwf_store_state state_of(dwf_store *s, int64_t id)
{
    dwf_store_state st;
    dwf_err e = {0};
    ck_assert_int_eq(dwf_store_job_state(s, id, &st, &e), 0);
    return st;
}

static json_t *metrics_obj(int epoch, double cr, double acc)
{
    json_t *m = json_pack("{s:i, s:i, s:i, s:f, s:f, s:f, s:f, s:I, s:I, s:f, s:[{s:s, s:I, s:I}]}",
                          "epoch", epoch, "epochs", 3, "step", epoch * 10,
                          "train_loss", 1.0 / epoch, "test_acc", acc,
                          "sparse_test_acc", acc - 0.01, "lr", 0.1,
                          "weights", (json_int_t)1000, "nonzero", (json_int_t)(1000 / cr),
                          "cr", cr, "layers", "name", "dense0", "total", (json_int_t)1000,
                          "nonzero", (json_int_t)(1000 / cr));
    ck_assert_ptr_nonnull(m);
    return m;
}

static sqlite3 *raw_open(void)
{
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    return db;
}

static int64_t raw_count(const char *sql)
{
    sqlite3 *db = raw_open();
    sqlite3_stmt *st = NULL;
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ */
/* migrations                                                          */

START_TEST(t_migrate)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int v = -1;
    ck_assert_int_eq(dwf_store_schema_version(s, &v, &e), 0);
    ck_assert_int_ge(dwf_store_latest_version(), 1);
    ck_assert_int_eq(v, dwf_store_latest_version());
    int64_t id = mkjob(s, "keep", 0, NULL);
    dwf_store_close(s);

    /* WAL mode and the version persist in the file */
    sqlite3 *db = raw_open();
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    ck_assert_int_eq(raw_count("PRAGMA user_version"), dwf_store_latest_version());

    s = open_ok(); /* re-open: no migration re-run (it would fail: tables exist) */
    ck_assert_int_eq(dwf_store_schema_version(s, &v, &e), 0);
    ck_assert_int_eq(v, dwf_store_latest_version());
    ck_assert_int_eq(state_of(s, id), DWF_STORE_QUEUED);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_too_new)
{
    dwf_store_close(open_ok());
    sqlite3 *db = raw_open();
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", dwf_store_latest_version() + 5);
    ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    dwf_store *s = NULL;
    dwf_err e = {0};
    int rc = dwf_store_open(dbpath, NULL, &s, &e);
    ck_assert_int_eq(rc, DWF_EFORMAT);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(e.msg, "newer") != NULL, "message: %s", e.msg);

    /* a file that is not a database */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/junk.db", tmpdir);
    FILE *f = fopen(bad, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not sqlite ", f);
    fclose(f);
    rc = dwf_store_open(bad, NULL, &s, &e);
    ck_assert_int_eq(rc, DWF_EFORMAT);
    ck_assert_ptr_null(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* jobs                                                                */

START_TEST(t_job_object)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id = mkjob(s, "first", 2, NULL);
    json_t *j = NULL;
    ck_assert_int_eq(dwf_store_job_get(s, id, &j, &e), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), id);
    ck_assert_str_eq(json_string_value(json_object_get(j, "name")), "first");
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "queued");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "priority")), 2);
    ck_assert(json_is_null(json_object_get(j, "sweep_id")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "method")), "dwf");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "depth")), 3);
    ck_assert(fabs(json_number_value(json_object_get(j, "lambda")) - 0.01) < 1e-12);
    ck_assert(json_is_null(json_object_get(j, "target_cr")));
    ck_assert_int_eq(json_integer_value(json_object_get(j, "seed")), 7);
    json_t *spec = json_object_get(j, "spec");
    ck_assert(json_is_object(spec));
    ck_assert_str_eq(json_string_value(json_object_get(spec, "name")), "t");
    const char *ca = json_string_value(json_object_get(j, "created_at"));
    ck_assert_ptr_nonnull(ca);
    int Y, M, D, h, m, sec;
    char z = 0;
    ck_assert_int_eq(sscanf(ca, "%4d-%2d-%2dT%2d:%2d:%2d%c", &Y, &M, &D, &h, &m, &sec, &z), 7);
    ck_assert_int_eq(z, 'Z');
    ck_assert_int_eq((int)strlen(ca), 20);
    ck_assert_int_ge(Y, 2024);
    ck_assert(json_is_null(json_object_get(j, "started_at")));
    ck_assert(json_is_null(json_object_get(j, "finished_at")));
    json_t *p = json_object_get(j, "progress");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "epochs")), 3);
    ck_assert(json_real_value(json_object_get(p, "fraction")) == 0.0);
    ck_assert(json_is_null(json_object_get(p, "eta_seconds")));
    ck_assert(json_is_null(json_object_get(j, "metrics")));
    ck_assert(json_is_null(json_object_get(j, "error")));
    ck_assert(json_is_null(json_object_get(j, "model")));
    char self[64];
    snprintf(self, sizeof self, "/v1/jobs/%lld/events", (long long)id);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "links"), "events")),
                     self);
    json_decref(j);

    ck_assert_int_eq(dwf_store_job_get(s, id + 100, &j, &e), DWF_STORE_NOTFOUND);
    ck_assert_ptr_null(j);

    /* a spec that is not an object is refused */
    dwf_store_job_new bad = {.spec_json = "[1,2]"};
    int64_t bid = 0;
    ck_assert_int_eq(dwf_store_job_create(s, &bad, &bid, NULL, &e), DWF_EINVAL);

    /* progress renders a fraction and eta */
    ck_assert_int_eq(dwf_store_job_progress(s, id, 2, 4, 50, 100, 12.5, &e), 0);
    ck_assert_int_eq(dwf_store_job_get(s, id, &j, &e), 0);
    p = json_object_get(j, "progress");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "epoch")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(p, "epochs")), 4);
    ck_assert(fabs(json_real_value(json_object_get(p, "fraction")) - 1.5 / 4) < 1e-12);
    ck_assert(json_real_value(json_object_get(p, "eta_seconds")) == 12.5);
    json_decref(j);
    ck_assert_int_eq(dwf_store_job_progress(s, id + 100, 1, 1, 1, 1, 0, &e),
                     DWF_STORE_NOTFOUND);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_list_pages)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    enum { N = 37 };
    int64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = mkjob(s, "j", 0, NULL);
    /* every third job canceled */
    for (int i = 0; i < N; i += 3)
        ck_assert_int_eq(dwf_store_job_set_state(s, ids[i], DWF_STORE_CANCELED, NULL, &e), 0);

    for (int pass = 0; pass < 2; pass++) {
        int state = pass == 0 ? -1 : DWF_STORE_CANCELED;
        int expect = pass == 0 ? N : (N + 2) / 3;
        char *cursor = NULL;
        int seen = 0, pages = 0;
        int64_t prev = INT64_MAX;
        int hit[N] = {0};
        do {
            json_t *jobs = NULL;
            char *next = NULL;
            int rc = dwf_store_job_list(s, state, 5, cursor, DWF_STORE_LIST_SUMMARY,
                                        &jobs, &next, &e);
            ck_assert_msg(rc == 0, "list: %s", e.msg);
            ck_assert_int_le(json_array_size(jobs), 5);
            size_t k;
            json_t *j;
            json_array_foreach(jobs, k, j) {
                int64_t id = json_integer_value(json_object_get(j, "id"));
                ck_assert_int_lt(id, prev); /* newest first, no repeat */
                prev = id;
                ck_assert_ptr_null(json_object_get(j, "spec")); /* summary */
                if (state >= 0)
                    ck_assert_str_eq(json_string_value(json_object_get(j, "state")),
                                     "canceled");
                int idx = (int)(id - ids[0]);
                ck_assert(idx >= 0 && idx < N);
                hit[idx]++;
                seen++;
                /* jobs created while paging land before the cursor: unseen */
                if (pass == 0 && pages == 1 && k == 0)
                    mkjob(s, "late", 0, NULL);
            }
            json_decref(jobs);
            free(cursor);
            cursor = next;
            pages++;
        } while (cursor);
        ck_assert_int_eq(seen, expect);
        ck_assert_int_eq(pages, (expect + 4) / 5);
        for (int i = 0; i < N; i++)
            ck_assert_int_eq(hit[i], pass == 0 || i % 3 == 0 ? 1 : 0);
    }
    json_t *jobs = NULL;
    char *next = NULL;
    ck_assert_int_eq(dwf_store_job_list(s, -1, 5, "12x", 0, &jobs, &next, &e), DWF_EINVAL);
    ck_assert_int_eq(dwf_store_job_list(s, -1, 5, "-3", 0, &jobs, &next, &e), DWF_EINVAL);
    /* full objects by default */
    ck_assert_int_eq(dwf_store_job_list(s, -1, 1, NULL, 0, &jobs, &next, &e), 0);
    ck_assert(json_is_object(json_object_get(json_array_get(jobs, 0), "spec")));
    ck_assert_ptr_nonnull(next);
    json_decref(jobs);
    free(next);

    int64_t counts[DWF_STORE_NSTATES];
    ck_assert_int_eq(dwf_store_count(s, counts, &e), 0);
    ck_assert_int_eq(counts[DWF_STORE_CANCELED], (N + 2) / 3);
    ck_assert_int_eq(counts[DWF_STORE_QUEUED], N - (N + 2) / 3 + 1); /* + "late" */
    ck_assert_int_eq(counts[DWF_STORE_RUNNING], 0);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_idempotency)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    dwf_store_job_new j = {.spec_json = SPEC, .idempotency_key = "abc"};
    int64_t a = 0, b = 0, c = 0;
    int existed = -1;
    ck_assert_int_eq(dwf_store_job_create(s, &j, &a, &existed, &e), 0);
    ck_assert_int_eq(existed, 0);
    ck_assert_int_eq(dwf_store_job_create(s, &j, &b, &existed, &e), 0);
    ck_assert_int_eq(existed, 1);
    ck_assert_int_eq(a, b);
    j.idempotency_key = "abd";
    ck_assert_int_eq(dwf_store_job_create(s, &j, &c, &existed, &e), 0);
    ck_assert_int_eq(existed, 0);
    ck_assert_int_ne(a, c);
    int64_t counts[DWF_STORE_NSTATES];
    ck_assert_int_eq(dwf_store_count(s, counts, &e), 0);
    ck_assert_int_eq(counts[DWF_STORE_QUEUED], 2);
    /* lookup by key: the job that has it, NOTFOUND for an unused one */
    int64_t f = 0;
    ck_assert_int_eq(dwf_store_job_find_key(s, "abc", &f, &e), 0);
    ck_assert_int_eq(f, a);
    ck_assert_int_eq(dwf_store_job_find_key(s, "abd", &f, &e), 0);
    ck_assert_int_eq(f, c);
    ck_assert_int_eq(dwf_store_job_find_key(s, "abe", &f, &e), DWF_STORE_NOTFOUND);
    ck_assert_int_eq(dwf_store_job_find_key(s, "", &f, &e), DWF_STORE_NOTFOUND);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_claim_order)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t a = mkjob(s, "a", 0, NULL);
    int64_t b = mkjob(s, "b", 5, NULL);
    int64_t c = mkjob(s, "c", 0, NULL);
    int64_t d = mkjob(s, "d", 5, NULL);
    int64_t x = mkjob(s, "x", 9, NULL);
    ck_assert_int_eq(dwf_store_job_set_state(s, x, DWF_STORE_CANCELED, NULL, &e), 0);
    int64_t want[] = {b, d, a, c};
    for (int i = 0; i < 4; i++) {
        dwf_store_claim cl;
        ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
        ck_assert_int_eq(cl.id, want[i]);
        ck_assert_str_eq(cl.spec_json, SPEC);
        ck_assert_int_eq(cl.has_checkpoint, 0);
        ck_assert_int_eq(state_of(s, cl.id), DWF_STORE_RUNNING);
        json_t *j;
        ck_assert_int_eq(dwf_store_job_get(s, cl.id, &j, &e), 0);
        ck_assert(json_is_string(json_object_get(j, "started_at")));
        json_decref(j);
        dwf_store_claim_free(&cl);
    }
    dwf_store_claim cl;
    ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), DWF_STORE_NOTFOUND);
    dwf_store_close(s);
}
END_TEST

enum { CLAIM_JOBS = 200, CLAIM_THREADS = 4 };

typedef struct claimer {
    dwf_store *s;
    int64_t got[CLAIM_JOBS];
    int n, errors;
} claimer;

static void *claim_thread(void *arg)
{
    claimer *c = arg;
    for (;;) {
        dwf_store_claim cl;
        dwf_err e = {0};
        int rc = dwf_store_job_claim(c->s, &cl, &e);
        if (rc == DWF_STORE_NOTFOUND)
            break;
        if (rc) {
            c->errors++;
            break;
        }
        if (c->n < CLAIM_JOBS)
            c->got[c->n] = cl.id;
        c->n++;
        /* readers in between, like HTTP threads would */
        json_t *j = NULL;
        if (dwf_store_job_get(c->s, cl.id, &j, &e) != 0)
            c->errors++;
        json_decref(j);
        dwf_store_claim_free(&cl);
    }
    return NULL;
}

START_TEST(t_claim_concurrent)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    dwf_store_job_new *kids = calloc(CLAIM_JOBS, sizeof *kids);
    for (int i = 0; i < CLAIM_JOBS; i++) {
        kids[i].spec_json = SPEC;
        kids[i].priority = i % 3;
    }
    int64_t sid = 0, ids[CLAIM_JOBS];
    json_t *empty = json_object();
    /* one transaction for speed */
    ck_assert_int_eq(dwf_store_sweep_create(s, "many", empty, empty, kids, CLAIM_JOBS, &sid,
                                            ids, &e), 0);
    json_decref(empty);
    free(kids);
    claimer cs[CLAIM_THREADS];
    pthread_t th[CLAIM_THREADS];
    for (int t = 0; t < CLAIM_THREADS; t++) {
        memset(&cs[t], 0, sizeof cs[t]);
        cs[t].s = s;
        ck_assert_int_eq(pthread_create(&th[t], NULL, claim_thread, &cs[t]), 0);
    }
    int hits[CLAIM_JOBS] = {0}, total = 0;
    for (int t = 0; t < CLAIM_THREADS; t++) {
        pthread_join(th[t], NULL);
        ck_assert_int_eq(cs[t].errors, 0);
        total += cs[t].n;
        for (int i = 0; i < cs[t].n; i++) {
            int idx = (int)(cs[t].got[i] - ids[0]);
            ck_assert(idx >= 0 && idx < CLAIM_JOBS);
            hits[idx]++;
        }
    }
    ck_assert_int_eq(total, CLAIM_JOBS);
    for (int i = 0; i < CLAIM_JOBS; i++)
        ck_assert_int_eq(hits[i], 1);
    int64_t counts[DWF_STORE_NSTATES];
    ck_assert_int_eq(dwf_store_count(s, counts, &e), 0);
    ck_assert_int_eq(counts[DWF_STORE_RUNNING], CLAIM_JOBS);
    ck_assert_int_eq(counts[DWF_STORE_QUEUED], 0);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_transition)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t a = mkjob(s, "a", 0, NULL);
    dwf_store_state prev = DWF_STORE_NSTATES;
    /* cancel of a queued job */
    ck_assert_int_eq(dwf_store_job_transition(s, a, DWF_STORE_BIT(DWF_STORE_QUEUED),
                                              DWF_STORE_CANCELED, NULL, &prev, &e), 0);
    ck_assert_int_eq(prev, DWF_STORE_QUEUED);
    json_t *j;
    ck_assert_int_eq(dwf_store_job_get(s, a, &j, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "canceled");
    ck_assert(json_is_string(json_object_get(j, "finished_at")));
    json_decref(j);
    /* a running job cannot be canceled that way */
    int64_t b = mkjob(s, "b", 0, NULL);
    dwf_store_claim cl;
    ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
    ck_assert_int_eq(cl.id, b);
    dwf_store_claim_free(&cl);
    ck_assert_int_eq(dwf_store_job_transition(s, b, DWF_STORE_BIT(DWF_STORE_QUEUED),
                                              DWF_STORE_CANCELED, NULL, &prev, &e),
                     DWF_STORE_CONFLICT);
    ck_assert_int_eq(prev, DWF_STORE_RUNNING);
    ck_assert_int_eq(state_of(s, b), DWF_STORE_RUNNING);
    /* a worker failing it keeps the message */
    ck_assert_int_eq(dwf_store_job_transition(s, b, DWF_STORE_BIT(DWF_STORE_RUNNING),
                                              DWF_STORE_FAILED, "loss is nan", NULL, &e), 0);
    ck_assert_int_eq(dwf_store_job_get(s, b, &j, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(j, "error")), "loss is nan");
    json_decref(j);
    ck_assert_int_eq(dwf_store_job_set_state(s, 999, DWF_STORE_FAILED, NULL, &e),
                     DWF_STORE_NOTFOUND);
    ck_assert_int_eq(dwf_store_state_parse("succeeded"), DWF_STORE_SUCCEEDED);
    ck_assert_int_eq(dwf_store_state_parse("nope"), -1);
    ck_assert_str_eq(dwf_store_state_name(DWF_STORE_CANCELED), "canceled");
    dwf_store_close(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* metrics, checkpoints, models                                        */

START_TEST(t_metrics)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id = mkjob(s, "m", 0, NULL);
    for (int ep = 1; ep <= 3; ep++) {
        json_t *m = metrics_obj(ep, 2.0 * ep, 0.5 + 0.1 * ep);
        ck_assert_int_eq(dwf_store_metrics_append(s, id, m, &e), 0);
        json_decref(m);
    }
    /* replacing an epoch (a resumed run computes it again) */
    json_t *m2 = metrics_obj(2, 4.0, 0.75);
    ck_assert_int_eq(dwf_store_metrics_append(s, id, m2, &e), 0);
    json_decref(m2);

    json_t *arr = NULL;
    ck_assert_int_eq(dwf_store_metrics_list(s, id, 1, &arr, &e), 0);
    ck_assert_int_eq(json_array_size(arr), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(arr, 0), "epoch")), 2);
    ck_assert(fabs(json_number_value(json_object_get(json_array_get(arr, 0), "test_acc")) -
                   0.75) < 1e-12);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(arr, 1), "epoch")), 3);
    json_t *layers = json_object_get(json_array_get(arr, 1), "layers");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(layers, 0), "name")),
                     "dense0");
    json_decref(arr);
    ck_assert_int_eq(dwf_store_metrics_list(s, id, 0, &arr, &e), 0);
    ck_assert_int_eq(json_array_size(arr), 3);
    json_decref(arr);
    ck_assert_int_eq(dwf_store_metrics_list(s, id, 3, &arr, &e), 0);
    ck_assert_int_eq(json_array_size(arr), 0);
    json_decref(arr);
    ck_assert_int_eq(dwf_store_metrics_list(s, id + 50, 0, &arr, &e), DWF_STORE_NOTFOUND);

    /* the job's last metrics: the last appended, with progress at its end */
    json_t *j;
    ck_assert_int_eq(dwf_store_job_get(s, id, &j, &e), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "metrics"), "epoch")),
                     2);
    json_t *p = json_object_get(j, "progress");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "epoch")), 2);
    ck_assert(fabs(json_real_value(json_object_get(p, "fraction")) - 2.0 / 3) < 1e-12);
    json_decref(j);

    /* columns for SQL use */
    ck_assert_int_eq(raw_count("SELECT count(*) FROM metrics WHERE cr = 6.0 AND epoch = 3"), 1);

    /* bad input */
    json_t *bad = json_pack("{s:s}", "epoch", "one");
    ck_assert_int_eq(dwf_store_metrics_append(s, id, bad, &e), DWF_EINVAL);
    json_decref(bad);
    json_t *m = metrics_obj(1, 1, 0.1);
    ck_assert_int_eq(dwf_store_metrics_append(s, id + 50, m, &e), DWF_STORE_NOTFOUND);
    json_decref(m);

    /* metrics_to_json: NaN becomes null, layers listed */
    dwf_metrics dm;
    memset(&dm, 0, sizeof dm);
    dm.epoch = 4;
    dm.epochs = 5;
    dm.test_acc = 0.9;
    dm.val_acc = NAN;
    dm.cr = 12.5;
    dm.n_layers = 2;
    snprintf(dm.layers[0].name, DWF_NAME_LEN, "dense0");
    dm.layers[0].total = 100;
    snprintf(dm.layers[1].name, DWF_NAME_LEN, "dense1");
    json_t *o = dwf_store_metrics_to_json(&dm);
    ck_assert_ptr_nonnull(o);
    ck_assert(json_is_null(json_object_get(o, "val_acc")));
    ck_assert(json_real_value(json_object_get(o, "cr")) == 12.5);
    ck_assert_int_eq(json_array_size(json_object_get(o, "layers")), 2);
    ck_assert_int_eq(dwf_store_metrics_append(s, id, o, &e), 0);
    json_decref(o);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM metrics WHERE epoch = 4 AND val_acc IS NULL"
                               " AND cr = 12.5"), 1);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_checkpoint)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id = mkjob(s, "c", 0, NULL);
    dwf_store_checkpoint ck;
    ck_assert_int_eq(dwf_store_checkpoint_get(s, id, &ck, &e), DWF_STORE_NOTFOUND);
    uint8_t a[1000], b[70000];
    for (size_t i = 0; i < sizeof a; i++)
        a[i] = (uint8_t)(i * 7);
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (uint8_t)(i * 13 + 1);
    ck_assert_int_eq(dwf_store_checkpoint_put(s, id, 1, 10, a, sizeof a, &e), 0);
    ck_assert_int_eq(dwf_store_checkpoint_put(s, id, 2, 20, b, sizeof b, &e), 0);
    ck_assert_int_eq(dwf_store_checkpoint_get(s, id, &ck, &e), 0);
    ck_assert_int_eq(ck.epoch, 2);
    ck_assert_int_eq(ck.step, 20);
    ck_assert_uint_eq(ck.len, sizeof b);
    ck_assert(memcmp(ck.blob, b, sizeof b) == 0);
    ck_assert(ck.created_at > 1e9);
    dwf_store_checkpoint_free(&ck);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM checkpoints"), 1);
    ck_assert_int_eq(dwf_store_checkpoint_put(s, id + 9, 1, 1, a, 10, &e), DWF_STORE_NOTFOUND);
    ck_assert_int_eq(dwf_store_checkpoint_delete(s, id, &e), 0);
    ck_assert_int_eq(dwf_store_checkpoint_get(s, id, &ck, &e), DWF_STORE_NOTFOUND);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_model)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id = mkjob(s, "m", 0, NULL);
    dwf_store_claim cl;
    ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
    dwf_store_claim_free(&cl);
    uint8_t ckb[16] = {1};
    ck_assert_int_eq(dwf_store_checkpoint_put(s, id, 3, 30, ckb, sizeof ckb, &e), 0);
    json_t *m = metrics_obj(3, 10, 0.8);
    ck_assert_int_eq(dwf_store_metrics_append(s, id, m, &e), 0);
    json_decref(m);

    uint8_t blob[5000];
    for (size_t i = 0; i < sizeof blob; i++)
        blob[i] = (uint8_t)(i ^ (i >> 8));
    json_t *fin = metrics_obj(3, 11, 0.81);
    dwf_store_model md = {.blob = blob, .len = sizeof blob, .nonzero = 100, .weights = 1100,
                          .cr = 11.0, .final_metrics = fin};
    ck_assert_int_eq(dwf_store_job_succeed(s, id, &md, &e), 0);
    json_decref(fin);
    md.final_metrics = NULL;

    json_t *j;
    ck_assert_int_eq(dwf_store_job_get(s, id, &j, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
    ck_assert(json_is_string(json_object_get(j, "finished_at")));
    json_t *mo = json_object_get(j, "model");
    ck_assert_int_eq(json_integer_value(json_object_get(mo, "bytes")), sizeof blob);
    ck_assert_int_eq(json_integer_value(json_object_get(mo, "nonzero")), 100);
    ck_assert_int_eq(json_integer_value(json_object_get(mo, "weights")), 1100);
    ck_assert(json_real_value(json_object_get(mo, "cr")) == 11.0);
    ck_assert(json_real_value(json_object_get(json_object_get(j, "progress"), "fraction")) == 1.0);
    ck_assert(json_real_value(json_object_get(json_object_get(j, "metrics"), "cr")) == 11.0);
    json_decref(j);

    dwf_store_model_row r;
    ck_assert_int_eq(dwf_store_model_get(s, id, 0, &r, &e), 0);
    ck_assert_ptr_null(r.blob);
    ck_assert_uint_eq(r.len, sizeof blob);
    char etag[64];
    snprintf(etag, sizeof etag, "%s", r.etag);
    ck_assert(etag[0] == '"' && etag[strlen(etag) - 1] == '"');
    dwf_store_model_free(&r);
    ck_assert_int_eq(dwf_store_model_get(s, id, 1, &r, &e), 0);
    ck_assert_uint_eq(r.len, sizeof blob);
    ck_assert(memcmp(r.blob, blob, sizeof blob) == 0);
    ck_assert_str_eq(r.etag, etag);
    ck_assert_int_eq(r.nonzero, 100);
    dwf_store_model_free(&r);
    /* the checkpoint is gone with success */
    dwf_store_checkpoint ck;
    ck_assert_int_eq(dwf_store_checkpoint_get(s, id, &ck, &e), DWF_STORE_NOTFOUND);

    /* succeeding twice, or a canceled job: conflict and nothing written */
    ck_assert_int_eq(dwf_store_job_succeed(s, id, &md, &e), DWF_STORE_CONFLICT);
    int64_t c = mkjob(s, "c", 0, NULL);
    ck_assert_int_eq(dwf_store_job_set_state(s, c, DWF_STORE_CANCELED, NULL, &e), 0);
    ck_assert_int_eq(dwf_store_job_succeed(s, c, &md, &e), DWF_STORE_CONFLICT);
    ck_assert_int_eq(dwf_store_model_get(s, c, 0, &r, &e), DWF_STORE_NOTFOUND);
    ck_assert_int_eq(state_of(s, c), DWF_STORE_CANCELED);
    ck_assert_int_eq(dwf_store_model_get(s, 9999, 0, &r, &e), DWF_STORE_NOTFOUND);

    /* a different blob has a different etag */
    int64_t d = mkjob(s, "d", 0, NULL);
    blob[0] ^= 1;
    ck_assert_int_eq(dwf_store_job_succeed(s, d, &md, &e), 0);
    ck_assert_int_eq(dwf_store_model_get(s, d, 0, &r, &e), 0);
    ck_assert_str_ne(r.etag, etag);
    dwf_store_model_free(&r);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_delete)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id = mkjob(s, "d", 0, NULL);
    ck_assert_int_eq(dwf_store_job_delete(s, id, &e), DWF_STORE_CONFLICT); /* queued */
    dwf_store_claim cl;
    ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
    dwf_store_claim_free(&cl);
    json_t *m = metrics_obj(1, 2, 0.5);
    ck_assert_int_eq(dwf_store_metrics_append(s, id, m, &e), 0);
    json_decref(m);
    uint8_t b[8] = {0};
    ck_assert_int_eq(dwf_store_checkpoint_put(s, id, 1, 5, b, sizeof b, &e), 0);
    json_t *thr = json_pack("[{s:f, s:f}]", "threshold", 1e-3, "cr", 5.0);
    ck_assert_int_eq(dwf_store_thresholds_put(s, id, thr, &e), 0);
    json_decref(thr);
    ck_assert_int_eq(dwf_store_job_delete(s, id, &e), DWF_STORE_CONFLICT); /* running */
    ck_assert_int_eq(state_of(s, id), DWF_STORE_RUNNING);
    dwf_store_model md = {.blob = b, .len = sizeof b, .nonzero = 1, .weights = 2, .cr = 2};
    ck_assert_int_eq(dwf_store_job_succeed(s, id, &md, &e), 0);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM models"), 1);
    ck_assert_int_eq(dwf_store_job_delete(s, id, &e), 0);
    ck_assert_int_eq(dwf_store_job_delete(s, id, &e), DWF_STORE_NOTFOUND);
    dwf_store_state st;
    ck_assert_int_eq(dwf_store_job_state(s, id, &st, &e), DWF_STORE_NOTFOUND);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM metrics"), 0);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM checkpoints"), 0);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM models"), 0);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM thresholds"), 0);
    /* ids are never reused */
    int64_t id2 = mkjob(s, "n", 0, NULL);
    ck_assert_int_gt(id2, id);
    dwf_store_close(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* crash recovery                                                      */

START_TEST(t_requeue_after_kill)
{
    dwf_store *s = open_ok();
    int64_t a = mkjob(s, "a", 0, NULL);
    int64_t b = mkjob(s, "b", 0, NULL);
    dwf_store_close(s);

    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* the "daemon": claims a, checkpoints it at epoch 2, appends
         * metrics up to epoch 3, and is killed without closing */
        dwf_store *c = NULL;
        dwf_err e = {0};
        dwf_store_claim cl;
        uint8_t blob[3000];
        memset(blob, 0x5a, sizeof blob);
        if (dwf_store_open(dbpath, NULL, &c, &e) || dwf_store_job_claim(c, &cl, &e) ||
            cl.id != a || dwf_store_checkpoint_put(c, a, 2, 22, blob, sizeof blob, &e))
            _exit(3);
        for (int ep = 1; ep <= 3; ep++) {
            json_t *m = json_pack("{s:i, s:f}", "epoch", ep, "cr", (double)ep);
            if (dwf_store_metrics_append(c, a, m, &e))
                _exit(4);
            json_decref(m);
        }
        raise(SIGKILL);
        _exit(5);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d",
                  status);

    s = open_ok();
    dwf_err e = {0};
    ck_assert_int_eq(state_of(s, a), DWF_STORE_RUNNING);
    int n = -1;
    ck_assert_int_eq(dwf_store_requeue_running(s, &n, &e), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(state_of(s, a), DWF_STORE_QUEUED);
    ck_assert_int_eq(state_of(s, b), DWF_STORE_QUEUED);
    ck_assert_int_eq(dwf_store_requeue_running(s, &n, &e), 0);
    ck_assert_int_eq(n, 0);
    /* claimed again first (older), resuming from its checkpoint */
    dwf_store_claim cl;
    ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
    ck_assert_int_eq(cl.id, a);
    ck_assert_int_eq(cl.has_checkpoint, 1);
    ck_assert_int_eq(cl.epoch, 2);
    dwf_store_claim_free(&cl);
    dwf_store_checkpoint ck;
    ck_assert_int_eq(dwf_store_checkpoint_get(s, a, &ck, &e), 0);
    ck_assert_int_eq(ck.step, 22);
    ck_assert_uint_eq(ck.len, 3000);
    ck_assert_int_eq(ck.blob[2999], 0x5a);
    dwf_store_checkpoint_free(&ck);
    /* epoch 3 will be trained again: its metrics were dropped */
    json_t *arr;
    ck_assert_int_eq(dwf_store_metrics_list(s, a, 0, &arr, &e), 0);
    ck_assert_int_eq(json_array_size(arr), 2);
    json_decref(arr);
    json_t *j;
    ck_assert_int_eq(dwf_store_job_get(s, a, &j, &e), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "metrics"), "epoch")),
                     2);
    json_t *p = json_object_get(j, "progress");
    ck_assert(fabs(json_real_value(json_object_get(p, "fraction")) - 2.0 / 3) < 1e-12);
    json_decref(j);
    dwf_store_close(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* sweeps, thresholds                                                  */

START_TEST(t_sweeps)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    static const char *methods[] = {"dwf", "dwf", "magnitude", "magnitude"};
    dwf_store_job_new kids[4];
    memset(kids, 0, sizeof kids);
    for (int i = 0; i < 4; i++) {
        kids[i].spec_json = SPEC;
        kids[i].method = methods[i];
        kids[i].depth = i % 2 ? 3 : 2;
        kids[i].lambda = 0.001 * (i + 1);
        kids[i].target_cr = i >= 2 ? 10.0 : 0.0;
        kids[i].seed = 100 + i;
        kids[i].idempotency_key = "ignored";
    }
    json_t *base = json_pack("{s:s}", "name", "base");
    json_t *grid = json_pack("{s:[f,f]}", "lambda", 0.001, 0.002);
    int64_t sid = 0, ids[4];
    ck_assert_int_eq(dwf_store_sweep_create(s, "sw", base, grid, kids, 4, &sid, ids, &e), 0);
    ck_assert_int_gt(sid, 0);
    int64_t sid2 = 0;
    ck_assert_int_eq(dwf_store_sweep_create(s, "empty", base, grid, NULL, 0, &sid2, NULL, &e), 0);
    json_decref(base);
    json_decref(grid);

    json_t *sw;
    ck_assert_int_eq(dwf_store_sweep_get(s, sid, &sw, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(sw, "name")), "sw");
    ck_assert_str_eq(json_string_value(json_object_get(sw, "state")), "queued");
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(sw, "base"), "name")),
                     "base");
    ck_assert_int_eq(json_array_size(json_object_get(json_object_get(sw, "grid"), "lambda")), 2);
    json_t *jobs = json_object_get(sw, "jobs");
    ck_assert_int_eq(json_array_size(jobs), 4);
    for (int i = 0; i < 4; i++) {
        json_t *j = json_array_get(jobs, i);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "id")), ids[i]);
        ck_assert_int_eq(json_integer_value(json_object_get(j, "sweep_id")), sid);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(sw, "counts"), "queued")),
                     4);
    json_decref(sw);

    /* run: job 0 and 2 succeed, job 1 fails, job 3 stays running */
    for (int i = 0; i < 4; i++) {
        dwf_store_claim cl;
        ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
        ck_assert_int_eq(cl.sweep_id, sid);
        dwf_store_claim_free(&cl);
    }
    for (int i = 0; i < 4; i += 2) {
        json_t *m = metrics_obj(3, 5.0 + i, 0.8 + 0.01 * i);
        ck_assert_int_eq(dwf_store_metrics_append(s, ids[i], m, &e), 0);
        json_decref(m);
    }
    uint8_t b[4] = {1, 2, 3, 4};
    dwf_store_model md = {.blob = b, .len = 4, .nonzero = 10, .weights = 200, .cr = 20.0};
    ck_assert_int_eq(dwf_store_job_succeed(s, ids[0], &md, &e), 0);
    md.cr = 7.0;
    ck_assert_int_eq(dwf_store_job_succeed(s, ids[2], &md, &e), 0);
    ck_assert_int_eq(dwf_store_job_set_state(s, ids[1], DWF_STORE_FAILED, "x", &e), 0);

    ck_assert_int_eq(dwf_store_sweep_get(s, sid, &sw, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(sw, "state")), "running");
    json_t *cnt = json_object_get(sw, "counts");
    ck_assert_int_eq(json_integer_value(json_object_get(cnt, "succeeded")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(cnt, "failed")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(cnt, "running")), 1);
    json_decref(sw);

    json_t *pts;
    ck_assert_int_eq(dwf_store_sweep_curve(s, sid, &pts, &e), 0);
    ck_assert_int_eq(json_array_size(pts), 2);
    json_t *p0 = json_array_get(pts, 0), *p1 = json_array_get(pts, 1);
    ck_assert_int_eq(json_integer_value(json_object_get(p0, "job_id")), ids[0]);
    ck_assert_str_eq(json_string_value(json_object_get(p0, "method")), "dwf");
    ck_assert_int_eq(json_integer_value(json_object_get(p0, "depth")), 2);
    ck_assert(json_is_null(json_object_get(p0, "target_cr")));
    ck_assert_int_eq(json_integer_value(json_object_get(p0, "seed")), 100);
    ck_assert(json_real_value(json_object_get(p0, "cr")) == 20.0); /* the model's */
    ck_assert(fabs(json_real_value(json_object_get(p0, "test_acc")) - 0.8) < 1e-12);
    ck_assert(fabs(json_real_value(json_object_get(p0, "sparse_test_acc")) - 0.79) < 1e-12);
    ck_assert_int_eq(json_integer_value(json_object_get(p1, "job_id")), ids[2]);
    ck_assert_str_eq(json_string_value(json_object_get(p1, "method")), "magnitude");
    ck_assert(json_real_value(json_object_get(p1, "target_cr")) == 10.0);
    ck_assert(json_real_value(json_object_get(p1, "cr")) == 7.0);
    ck_assert(fabs(json_real_value(json_object_get(p1, "lambda")) - 0.003) < 1e-12);
    json_decref(pts);

    ck_assert_int_eq(dwf_store_job_set_state(s, ids[3], DWF_STORE_SUCCEEDED, NULL, &e), 0);
    json_t *list;
    ck_assert_int_eq(dwf_store_sweep_list(s, &list, &e), 0);
    json_t *sws = json_object_get(list, "sweeps");
    ck_assert_int_eq(json_array_size(sws), 2);
    json_t *l0 = json_array_get(sws, 0), *l1 = json_array_get(sws, 1);
    ck_assert_int_eq(json_integer_value(json_object_get(l0, "id")), sid2); /* newest first */
    ck_assert_int_eq(json_integer_value(json_object_get(l0, "n_jobs")), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(l1, "id")), sid);
    ck_assert_int_eq(json_integer_value(json_object_get(l1, "n_jobs")), 4);
    ck_assert_str_eq(json_string_value(json_object_get(l1, "state")), "failed");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(l1, "counts"),
                                                        "succeeded")), 3);
    json_decref(list);

    ck_assert_int_eq(dwf_store_sweep_get(s, sid + 99, &sw, &e), DWF_STORE_NOTFOUND);
    ck_assert_int_eq(dwf_store_sweep_curve(s, sid + 99, &pts, &e), DWF_STORE_NOTFOUND);
    /* all children in one transaction: a bad child inserts nothing */
    kids[2].spec_json = "not json";
    int64_t sid3 = 0;
    json_t *empty = json_object();
    ck_assert_int_eq(dwf_store_sweep_create(s, "bad", empty, empty, kids, 4, &sid3, NULL, &e),
                     DWF_EINVAL);
    json_decref(empty);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM sweeps"), 2);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM jobs"), 4);
    dwf_store_close(s);
}
END_TEST

START_TEST(t_thresholds)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id = mkjob(s, "t", 0, NULL);
    json_t *arr;
    ck_assert_int_eq(dwf_store_thresholds_get(s, id, &arr, &e), 0);
    ck_assert_int_eq(json_array_size(arr), 0);
    json_decref(arr);
    json_t *rows = json_pack("[{s:f, s:f, s:f, s:f, s:s}, {s:f, s:f, s:n, s:f}]",
                             "threshold", 1e-4, "cr", 10.0, "val_acc", 0.8, "test_acc", 0.79,
                             "note", "a", "threshold", 1e-3, "cr", 30.0, "val_acc",
                             "test_acc", 0.7);
    ck_assert_int_eq(dwf_store_thresholds_put(s, id, rows, &e), 0);
    ck_assert_int_eq(dwf_store_thresholds_put(s, id, rows, &e), 0); /* replaces */
    ck_assert_int_eq(dwf_store_thresholds_get(s, id, &arr, &e), 0);
    ck_assert(json_equal(arr, rows));
    json_decref(arr);
    json_decref(rows);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM thresholds WHERE cr = 30 AND val_acc IS NULL"),
                     1);
    ck_assert_int_eq(dwf_store_thresholds_get(s, id + 1, &arr, &e), DWF_STORE_NOTFOUND);
    json_t *notarr = json_object();
    ck_assert_int_eq(dwf_store_thresholds_put(s, id, notarr, &e), DWF_EINVAL);
    json_decref(notarr);
    dwf_store_close(s);
}
END_TEST

/* A v1 database (schema/001_init.sql only) with a grid sweep migrates
 * forward keeping its rows; the sweep reads back as kind "grid". */
START_TEST(t_migrate_from_v1)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/a/b", tmpdir);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
    FILE *f = fopen("schema/001_init.sql", "rb");
    ck_assert_ptr_nonnull(f);
    static char sql[65536];
    size_t n = fread(sql, 1, sizeof sql - 1, f);
    fclose(f);
    sql[n] = 0;
    sqlite3 *db = NULL;
    ck_assert_int_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db,
                                  "INSERT INTO sweeps (name, base, grid, created_at)"
                                  " VALUES ('old', '{}', '{\"seed\":[1]}', 1);"
                                  "PRAGMA user_version = 1;",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int v = 0;
    ck_assert_int_eq(dwf_store_schema_version(s, &v, &e), 0);
    ck_assert_int_eq(v, dwf_store_latest_version());
    ck_assert_int_ge(v, 2);
    json_t *sw;
    ck_assert_int_eq(dwf_store_sweep_get(s, 1, &sw, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(sw, "name")), "old");
    ck_assert_str_eq(json_string_value(json_object_get(sw, "kind")), "grid");
    ck_assert_ptr_null(json_object_get(sw, "search"));
    json_decref(sw);
    dwf_store_close(s);
}
END_TEST

/* Search sweeps: one run at a time, added atomically; ending is final. */
START_TEST(t_search)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    json_t *base = json_pack("{s:s,s:{s:f}}", "name", "srch", "search", "target_cr", 10.0);
    json_t *opts = json_pack("{s:f,s:f,s:i}", "target_cr", 10.0, "tolerance", 0.1,
                             "budget", 4);
    dwf_store_job_new j = {0};
    j.spec_json = SPEC;
    j.name = "srch 1";
    j.method = "dwf";
    j.depth = 3;
    j.lambda = 0.01;
    int64_t sid = 0, c1 = 0, c2 = 0;
    ck_assert_int_eq(dwf_store_search_create(s, "srch", base, opts, &j, &sid, &c1, &e), 0);
    json_t *so, *bo;
    dwf_store_search_run *runs;
    int n;
    char st[16];
    ck_assert_int_eq(dwf_store_search_get(s, sid, &so, &bo, st, &runs, &n, &e), 0);
    ck_assert_str_eq(st, "searching");
    ck_assert(json_equal(so, opts) && json_equal(bo, base));
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(runs[0].job_id, c1);
    ck_assert_int_eq(runs[0].state, DWF_STORE_QUEUED);
    ck_assert(isnan(runs[0].cr) && isnan(runs[0].val_acc));
    free(runs);
    json_decref(so);
    json_decref(bo);
    /* no second run while the first is queued, nor with a stale count */
    int added = 1;
    j.lambda = 0.02;
    ck_assert_int_eq(dwf_store_search_add(s, sid, 1, &j, &c2, &added, &e), 0);
    ck_assert_int_eq(added, 0);
    /* the first run succeeds with a selected model: CR and accuracies */
    dwf_store_claim cl;
    ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
    dwf_store_claim_free(&cl);
    json_t *fin = json_pack("{s:i,s:f,s:f,s:f,s:f}", "epoch", 3, "sparse_val_acc", 0.5,
                            "selected_val_acc", 0.75, "sparse_test_acc", 0.7,
                            "selected_test_acc", 0.72);
    uint8_t blob[8] = {0};
    dwf_store_model md = {.blob = blob, .len = sizeof blob, .nonzero = 10, .weights = 120,
                          .cr = 12.0, .final_metrics = fin};
    ck_assert_int_eq(dwf_store_job_succeed(s, c1, &md, &e), 0);
    json_decref(fin);
    ck_assert_int_eq(dwf_store_search_add(s, sid, 0, &j, &c2, &added, &e), 0);
    ck_assert_int_eq(added, 0); /* stale count: someone added already */
    ck_assert_int_eq(dwf_store_search_add(s, sid, 1, &j, &c2, &added, &e), 0);
    ck_assert_int_eq(added, 1);
    ck_assert_int_gt(c2, c1);
    ck_assert_int_eq(dwf_store_search_get(s, sid, &so, NULL, st, &runs, &n, &e), 0);
    ck_assert_int_eq(n, 2);
    ck_assert(runs[0].cr == 12.0 && runs[0].val_acc == 0.75 && runs[0].test_acc == 0.72);
    ck_assert_int_eq(runs[0].collapsed, 0);
    ck_assert(runs[1].lambda == 0.02 && runs[1].state == DWF_STORE_QUEUED);
    free(runs);
    json_decref(so);
    int64_t *ids;
    ck_assert_int_eq(dwf_store_search_active(s, &ids, &n, &e), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], sid);
    free(ids);
    /* ending is final: a second end and later adds change nothing */
    ck_assert_int_eq(dwf_store_search_finish(s, sid, "reached", c1, "done", &e), 0);
    ck_assert_int_eq(dwf_store_search_finish(s, sid, "budget", 0, "again", &e), 0);
    json_t *sw;
    ck_assert_int_eq(dwf_store_sweep_get(s, sid, &sw, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(sw, "kind")), "search");
    json_t *sj = json_object_get(sw, "search");
    ck_assert_str_eq(json_string_value(json_object_get(sj, "state")), "reached");
    ck_assert_int_eq(json_integer_value(json_object_get(sj, "best_job_id")), c1);
    ck_assert_str_eq(json_string_value(json_object_get(sj, "message")), "done");
    json_t *rr = json_object_get(sj, "runs");
    ck_assert_int_eq((int)json_array_size(rr), 2);
    ck_assert(json_is_false(json_object_get(json_array_get(rr, 0), "within"))); /* 12 vs 10 */
    ck_assert(json_is_false(json_object_get(json_array_get(rr, 0), "collapsed")));
    json_decref(sw);
    ck_assert_int_eq(dwf_store_search_active(s, &ids, &n, &e), 0);
    ck_assert_int_eq(n, 0);
    free(ids);
    ck_assert_int_eq(dwf_store_search_add(s, sid, 2, &j, &c2, &added, &e), 0);
    ck_assert_int_eq(added, 0);
    /* a finished run is the search's record: not deleted on its own */
    ck_assert_int_eq(dwf_store_job_delete(s, c1, &e), DWF_STORE_CONFLICT);
    ck_assert_ptr_nonnull(strstr(e.msg, "lambda search sweep"));
    /* a grid sweep is not a search */
    int64_t gid;
    json_t *grid = json_object();
    ck_assert_int_eq(dwf_store_sweep_create(s, "g", base, grid, &j, 1, &gid, NULL, &e), 0);
    ck_assert_int_eq(dwf_store_search_get(s, gid, &so, NULL, st, &runs, &n, &e),
                     DWF_STORE_NOT_SEARCH);
    ck_assert_int_eq(dwf_store_search_get(s, gid + 100, &so, NULL, st, &runs, &n, &e),
                     DWF_STORE_NOTFOUND);
    json_decref(grid);
    json_decref(base);
    json_decref(opts);
    dwf_store_close(s);
}
END_TEST

/* Curves taken during training, and a sweep's end-of-run curves. */
START_TEST(t_epoch_thresholds)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id = mkjob(s, "t", 0, NULL);
    json_t *c1 = json_pack("[{s:f,s:f}]", "threshold", 1e-7, "cr", 1.0);
    json_t *c2 = json_pack("[{s:f,s:f},{s:f,s:f}]", "threshold", 1e-7, "cr", 2.0,
                           "threshold", 1e-6, "cr", 5.0);
    ck_assert_int_eq(dwf_store_epoch_thresholds_put(s, id, 2, c2, &e), 0);
    ck_assert_int_eq(dwf_store_epoch_thresholds_put(s, id, 1, c1, &e), 0);
    ck_assert_int_eq(dwf_store_epoch_thresholds_put(s, id, 1, c1, &e), 0); /* replaces */
    json_t *out;
    ck_assert_int_eq(dwf_store_epoch_thresholds_list(s, id, &out, &e), 0);
    ck_assert_int_eq((int)json_array_size(out), 2);
    ck_assert_int_eq(json_integer_value(json_array_get(out, 0)), 1);
    ck_assert_int_eq(json_integer_value(json_array_get(out, 1)), 2);
    json_decref(out);
    ck_assert_int_eq(dwf_store_epoch_thresholds_get(s, id, 2, &out, &e), 0);
    ck_assert(json_equal(out, c2));
    json_decref(out);
    ck_assert_int_eq(dwf_store_epoch_thresholds_get(s, id, 3, &out, &e), DWF_STORE_NOTFOUND);
    ck_assert_int_eq(dwf_store_epoch_thresholds_list(s, id + 9, &out, &e), DWF_STORE_NOTFOUND);
    ck_assert_int_eq(dwf_store_epoch_thresholds_get(s, id + 9, 1, &out, &e),
                     DWF_STORE_NOTFOUND);
    ck_assert_int_eq(dwf_store_epoch_thresholds_put(s, id + 9, 1, c1, &e), DWF_STORE_NOTFOUND);
    /* deleting the job deletes its curves */
    ck_assert_int_eq(dwf_store_job_set_state(s, id, DWF_STORE_CANCELED, NULL, &e), 0);
    ck_assert_int_eq(dwf_store_job_delete(s, id, &e), 0);
    ck_assert_int_eq(raw_count("SELECT count(*) FROM epoch_thresholds"), 0);
    /* a sweep's curves: succeeded children with a curve, in id order */
    json_t *base = json_object(), *grid = json_object();
    dwf_store_job_new jn[2] = {{0}};
    for (int i = 0; i < 2; i++) {
        jn[i].spec_json = SPEC;
        jn[i].method = "dwf";
        jn[i].depth = 2;
    }
    int64_t sid, kids[2];
    ck_assert_int_eq(dwf_store_sweep_create(s, "g", base, grid, jn, 2, &sid, kids, &e), 0);
    for (int i = 0; i < 2; i++) {
        dwf_store_claim cl;
        ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
        dwf_store_claim_free(&cl);
    }
    uint8_t blob[4] = {0};
    dwf_store_model md = {.blob = blob, .len = 4, .nonzero = 1, .weights = 2, .cr = 2};
    ck_assert_int_eq(dwf_store_job_succeed(s, kids[1], &md, &e), 0);
    ck_assert_int_eq(dwf_store_thresholds_put(s, kids[1], c2, &e), 0);
    ck_assert_int_eq(dwf_store_thresholds_put(s, kids[0], c1, &e), 0); /* still running */
    ck_assert_int_eq(dwf_store_sweep_thresholds(s, sid, &out, &e), 0);
    ck_assert_int_eq((int)json_array_size(out), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(out, 0), "job_id")),
                     kids[1]);
    ck_assert(json_equal(json_object_get(json_array_get(out, 0), "points"), c2));
    json_decref(out);
    ck_assert_int_eq(dwf_store_sweep_thresholds(s, sid + 5, &out, &e), DWF_STORE_NOTFOUND);
    json_decref(base);
    json_decref(grid);
    json_decref(c1);
    json_decref(c2);
    dwf_store_close(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* WAL: readers are not blocked by a writer                            */

START_TEST(t_wal_reader)
{
    dwf_store *s = NULL;
    dwf_err e = {0};
    dwf_store_opts o = {.busy_timeout_ms = 300};
    ck_assert_int_eq(dwf_store_open(dbpath, &o, &s, &e), 0);
    int64_t id = mkjob(s, "w", 0, NULL);
    /* another connection holds a long write transaction */
    sqlite3 *db = raw_open();
    ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE; UPDATE jobs SET name = 'changed';",
                                  NULL, NULL, NULL), SQLITE_OK);
    double t0 = mono();
    for (int i = 0; i < 20; i++) {
        json_t *j = NULL;
        ck_assert_int_eq(dwf_store_job_get(s, id, &j, &e), 0);
        /* the uncommitted change is invisible */
        ck_assert_str_eq(json_string_value(json_object_get(j, "name")), "w");
        json_decref(j);
        int64_t counts[DWF_STORE_NSTATES];
        ck_assert_int_eq(dwf_store_count(s, counts, &e), 0);
    }
    double dt = mono() - t0;
    ck_assert_msg(dt < 0.25, "reads took %.3f s while a write was open", dt);
    /* the write lock is real: a store write waits and gives up */
    t0 = mono();
    dwf_store_job_new j = {.spec_json = SPEC};
    int64_t nid;
    ck_assert_int_eq(dwf_store_job_create(s, &j, &nid, NULL, &e), DWF_EIO);
    ck_assert_msg(mono() - t0 >= 0.25, "the write did not wait for the lock");
    ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    json_t *got = NULL;
    ck_assert_int_eq(dwf_store_job_get(s, id, &got, &e), 0);
    ck_assert_str_eq(json_string_value(json_object_get(got, "name")), "changed");
    json_decref(got);
    ck_assert_int_eq(dwf_store_job_create(s, &j, &nid, NULL, &e), 0);
    dwf_store_close(s);
}
END_TEST

/* ------------------------------------------------------------------ */
/* events                                                              */

typedef struct evlog {
    int n;
    int ev[32];
    int64_t id[32], arg[32];
} evlog;

static void on_event(void *ud, dwf_store_event ev, int64_t id, int64_t arg)
{
    evlog *l = ud;
    if (l->n < 32) {
        l->ev[l->n] = ev;
        l->id[l->n] = id;
        l->arg[l->n] = arg;
        l->n++;
    }
}

START_TEST(t_events)
{
    dwf_store *s = open_ok();
    dwf_err e = {0};
    evlog l = {0};
    dwf_store_set_listener(s, on_event, &l);
    int64_t id = mkjob(s, "e", 0, NULL);
    dwf_store_claim cl;
    ck_assert_int_eq(dwf_store_job_claim(s, &cl, &e), 0);
    dwf_store_claim_free(&cl);
    ck_assert_int_eq(dwf_store_job_progress(s, id, 1, 3, 5, 10, NAN, &e), 0);
    json_t *m = metrics_obj(1, 2, 0.5);
    ck_assert_int_eq(dwf_store_metrics_append(s, id, m, &e), 0);
    json_decref(m);
    ck_assert_int_eq(dwf_store_job_set_state(s, id, DWF_STORE_CANCELED, NULL, &e), 0);
    ck_assert_int_eq(dwf_store_job_delete(s, id, &e), 0);
    /* a refused write reports nothing */
    ck_assert_int_eq(dwf_store_job_delete(s, id, &e), DWF_STORE_NOTFOUND);
    int want[] = {DWF_STORE_EV_CREATED, DWF_STORE_EV_STATE, DWF_STORE_EV_PROGRESS,
                  DWF_STORE_EV_EPOCH, DWF_STORE_EV_STATE, DWF_STORE_EV_DELETED};
    int64_t warg[] = {0, DWF_STORE_RUNNING, 1, 1, DWF_STORE_CANCELED, 0};
    ck_assert_int_eq(l.n, 6);
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(l.ev[i], want[i]);
        ck_assert_int_eq(l.id[i], id);
        ck_assert_int_eq(l.arg[i], warg[i]);
    }
    dwf_store_close(s);
}
END_TEST

START_TEST(t_from_spec)
{
    dwf_spec *sp = calloc(1, sizeof *sp);
    ck_assert_ptr_nonnull(sp);
    snprintf(sp->name, sizeof sp->name, "fs");
    sp->priority = 4;
    sp->arch.depth = 4;
    sp->opts.method = DWF_METHOD_MAGNITUDE;
    sp->opts.lambda = 0.5;
    sp->opts.target_cr = 20;
    sp->opts.seed = 11;
    sp->opts.epochs = 5;
    sp->opts.finetune_epochs = 2;
    sp->json = (char *)SPEC;
    dwf_store_job_new j;
    dwf_store_job_new_from_spec(&j, sp);
    ck_assert_str_eq(j.name, "fs");
    ck_assert_str_eq(j.method, "magnitude");
    ck_assert_int_eq(j.depth, 4);
    ck_assert_int_eq(j.epochs, 7);
    ck_assert(j.target_cr == 20);
    ck_assert_int_eq(j.seed, 11);
    ck_assert_ptr_eq(j.spec_json, SPEC);
    ck_assert_ptr_null(j.idempotency_key);
    sp->opts.method = DWF_METHOD_DWF;
    dwf_store_job_new_from_spec(&j, sp);
    ck_assert(j.target_cr == 0);
    ck_assert_int_eq(j.epochs, 5);
    dwf_store *s = open_ok();
    dwf_err e = {0};
    int64_t id;
    ck_assert_int_eq(dwf_store_job_create(s, &j, &id, NULL, &e), 0);
    json_t *o;
    ck_assert_int_eq(dwf_store_job_get(s, id, &o, &e), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "priority")), 4);
    ck_assert(json_real_value(json_object_get(o, "lambda")) == 0.5);
    json_decref(o);
    dwf_store_close(s);
    free(sp);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, t_migrate);
    tcase_add_test(tc, t_migrate_from_v1);
    tcase_add_test(tc, t_search);
    tcase_add_test(tc, t_epoch_thresholds);
    tcase_add_test(tc, t_too_new);
    tcase_add_test(tc, t_job_object);
    tcase_add_test(tc, t_list_pages);
    tcase_add_test(tc, t_idempotency);
    tcase_add_test(tc, t_claim_order);
    tcase_add_test(tc, t_claim_concurrent);
    tcase_add_test(tc, t_transition);
    tcase_add_test(tc, t_metrics);
    tcase_add_test(tc, t_checkpoint);
    tcase_add_test(tc, t_model);
    tcase_add_test(tc, t_delete);
    tcase_add_test(tc, t_requeue_after_kill);
    tcase_add_test(tc, t_sweeps);
    tcase_add_test(tc, t_thresholds);
    tcase_add_test(tc, t_wal_reader);
    tcase_add_test(tc, t_events);
    tcase_add_test(tc, t_from_spec);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(store_suite());
}
