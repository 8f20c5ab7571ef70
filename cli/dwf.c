/*
 * dwf - the command line front end of libdwf.
 *
 *   dwf train SPEC.json [-o MODEL.dwfm] [--threads N] [--quiet]
 *       (a spec with "search" runs the target-CR search: one run per lambda
 *        tried, the best run's model is written)
 *   dwf eval MODEL [--spec SPEC.json] [--test-subset N]
 *   dwf predict MODEL [--spec SPEC.json] [--test-subset N] [--probs]
 *   dwf export MODEL --format F [-o FILE]
 *   dwf info MODEL
 *   dwf schema
 *
 * The spec is parsed by the same parser as dwfd (server/dwf_spec.c).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dwf_export.h"
#include "dwf_job.h"
#include "dwf_sparse.h"
#include "dwf_search.h"
#include "dwf_spec.h"
#include "dwf_sweep.h"

static atomic_int g_cancel;

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_cancel, 1);
}

static int die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("dwf: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int usage(void)
{
    fputs("usage:\n"
          "  dwf train SPEC.json [-o MODEL.dwfm] [--threads N] [--quiet]\n"
          "  dwf eval MODEL [--spec SPEC.json] [--test-subset N]\n"
          "  dwf predict MODEL [--spec SPEC.json] [--test-subset N] [--probs]\n"
          "  dwf export MODEL --format dwfm|safetensors|safetensors-dense|npz|json [-o FILE]\n"
          "  dwf info MODEL\n"
          "  dwf schema\n",
          stderr);
    return 2;
}

/* Reads a whole file into a NUL-terminated malloc'd buffer. */
static char *read_file(const char *path, size_t *len, dwf_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        dwf_errorf(err, DWF_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        dwf_errorf(err, DWF_EIO, "%s: cannot read", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int write_file(const char *path, const void *data, size_t len, dwf_err *err)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "wb") : stdout;
    if (!f)
        return dwf_errorf(err, DWF_EIO, "%s: %s", path, strerror(errno));
    size_t w = fwrite(data, 1, len, f);
    int bad = w != len || fflush(f) != 0;
    if (f != stdout)
        bad |= fclose(f) != 0;
    if (bad)
        return dwf_errorf(err, DWF_EIO, "%s: write failed", path);
    return 0;
}

static int parse_spec_file(const char *path, dwf_spec *spec, dwf_err *err)
{
    size_t len;
    char *text = read_file(path, &len, err);
    if (!text)
        return DWF_EIO;
    char field[DWF_FIELD_LEN] = "";
    dwf_err e = {0};
    int rc = dwf_spec_parse(text, len, NULL, 0, spec, field, &e);
    free(text);
    if (rc)
        dwf_errorf(err, rc, "%s: %s", path, e.msg);
    return rc;
}

/* ---- train ------------------------------------------------------------ */

typedef struct train_ui {
    int tty, quiet;
    double t0, last_draw;
    int epochs;
} train_ui;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void ui_batch(int epoch, int batch, int n, void *ud)
{
    train_ui *u = ud;
    if (!u->tty || u->quiet)
        return;
    double t = now();
    if (t - u->last_draw < 0.1 && batch < n)
        return;
    u->last_draw = t;
    double done = (double)(epoch - 1) + (double)batch / n;
    double eta = done > 0 ? (t - u->t0) / done * (u->epochs - done) : 0.0;
    int width = 30, fill = (int)(width * batch / n);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    printf("\r\033[Kepoch %d/%d [%s] %3d%%  ETA %.0fs", epoch, u->epochs, bar,
           100 * batch / n, eta);
    fflush(stdout);
}

static int ui_epoch(const dwf_metrics *m, void *ud)
{
    train_ui *u = ud;
    if (u->quiet)
        return 0;
    if (u->tty)
        printf("\r\033[K");
    printf("epoch %3d/%d  lr %.4f  loss %.4f + %.4f  train %.4f  test %.4f  "
           "sparse %.4f  CR %.1f  nz %lld/%lld  %.0f samples/s  %.1fs\n",
           m->epoch, m->epochs, m->lr, m->train_loss, m->train_penalty,
           m->train_acc, m->test_acc, m->sparse_test_acc, m->cr,
           (long long)m->nonzero, (long long)m->weights, m->samples_per_sec,
           m->wall_time);
    fflush(stdout);
    return 0;
}

/* The run's threshold curve as a small table, and the selection. */
static void print_curve(const dwf_job_result *r)
{
    if (r->curve.n < 1)
        return;
    printf("threshold curve (%.3fs, %.1f%% of the last epoch):\n",
           r->curve.seconds,
           r->epoch_seconds > 0 ? 100.0 * r->curve.seconds / r->epoch_seconds : 0.0);
    printf("  %-10s %10s %12s %8s %8s\n", "|w| <", "CR", "non-zero", "val", "test");
    for (int i = 0; i < r->curve.n; i++) {
        const dwf_thresh_point *p = &r->curve.points[i];
        printf("  %-10.3g %10.2f %12lld %8.4f %8.4f%s\n", p->threshold, p->cr,
               (long long)p->nonzero, p->val_acc, p->test_acc,
               r->selected && i == r->select_index ? "  <- selected" : "");
    }
    if (r->selected)
        printf("selected threshold %g: CR %.2f, validation %.4f (dense %.4f), "
               "test %.4f%s\n", r->threshold, r->cr, r->val_acc, r->dense_val_acc,
               r->test_acc, r->select_within ? "" : " (no threshold within max_drop)");
}

/* The target-CR search of spec (parsed from path): trains one run per
 * lambda dwf_search_next() picks, like dwfd's search sweeps, and writes
 * the best run's model to out. */
static int cmd_search(const char *path, dwf_spec *spec, const char *out,
                      int threads, int quiet)
{
    const dwf_search_opts *o = &spec->search.opts;
    json_error_t je;
    json_t *user = json_load_file(path, 0, &je);
    if (!user)
        return die("%s: %s", path, je.text);
    dwf_search_run *runs = calloc((size_t)o->budget + 1, sizeof *runs);
    dwf_smodel *models = calloc((size_t)o->budget + 1, sizeof *models);
    if (!runs || !models) {
        json_decref(user);
        free(runs);
        free(models);
        return die("out of memory");
    }
    printf("dwf: searching lambda in [%g, %g] for CR %g (within %g%%), at most %d "
           "runs\n", o->lambda_min, o->lambda_max, o->target_cr, 100 * o->tolerance,
           o->budget);
    int n = 0, rc = 0;
    dwf_search_step st;
    dwf_err err = {0};
    while (!(rc = dwf_search_next(o, runs, n, &st, &err)) && st.status == DWF_SEARCH_NEXT) {
        json_t *cj = dwf_sweep_search_child(user, st.next_lambda);
        char *text = cj ? json_dumps(cj, JSON_COMPACT) : NULL;
        json_decref(cj);
        if (!text) {
            rc = dwf_errorf(&err, DWF_ENOMEM, "out of memory");
            break;
        }
        dwf_spec child;
        char field[DWF_FIELD_LEN] = "";
        rc = dwf_spec_parse(text, strlen(text), NULL, 0, &child, field, &err);
        free(text);
        if (rc)
            break;
        if (threads > 0)
            child.opts.threads = threads;
        train_ui ui = {isatty(STDOUT_FILENO), 1, now(), 0.0, child.opts.epochs};
        (void)quiet;
        dwf_job_hooks hooks = {.ud = &ui, .on_epoch = ui_epoch, .cancel = &g_cancel};
        dwf_job_result res;
        hooks.result = &res;
        dwf_metrics final;
        dwf_search_run *r = &runs[n];
        r->lambda = st.next_lambda;
        rc = dwf_job_run(&child, &hooks, &models[n], &final, &err);
        dwf_spec_free(&child);
        if (rc == DWF_ECANCELED)
            break;
        if (rc) {
            printf("run %d: lambda %.4g failed: %s\n", n + 1, r->lambda, err.msg);
            r->state = DWF_SEARCH_RUN_FAILED;
            r->cr = r->val_acc = NAN;
            rc = 0;
        } else {
            r->state = res.collapsed ? DWF_SEARCH_RUN_COLLAPSED : DWF_SEARCH_RUN_OK;
            r->cr = res.selected ? res.cr : final.cr;
            r->val_acc = res.selected ? res.val_acc : final.sparse_val_acc;
            double test = res.selected ? res.test_acc : final.sparse_test_acc;
            printf("run %d: lambda %.4g -> CR %.3g, validation %.4f, test %.4f%s\n",
                   n + 1, r->lambda, r->cr, r->val_acc, test,
                   res.collapsed ? "  (the dense model is at chance: lambda too large)"
                   : dwf_search_within(o, r->cr) ? "  (within tolerance)" : "");
            dwf_job_result_free(&res);
        }
        fflush(stdout);
        n++;
    }
    if (rc == DWF_ECANCELED) {
        die("canceled");
        rc = 130;
    } else if (rc) {
        die("%s", err.msg);
        rc = 1;
    } else {
        printf("search %s after %d runs", dwf_search_status_name(st.status), n);
        if (st.best >= 0)
            printf("; best: run %d, lambda %.4g, CR %.3g, validation %.4f",
                   st.best + 1, runs[st.best].lambda, runs[st.best].cr,
                   runs[st.best].val_acc);
        printf("\n");
        if (out && st.best >= 0) {
            if (dwf_smodel_write_file(&models[st.best], out, &err)) {
                die("%s", err.msg);
                rc = 1;
            } else {
                printf("model of run %d written to %s\n", st.best + 1, out);
            }
        }
        if (rc == 0 && st.status != DWF_SEARCH_REACHED)
            rc = 2; /* finished, but the target was not reached */
    }
    for (int i = 0; i <= n && i <= o->budget; i++)
        dwf_smodel_free(&models[i]);
    free(models);
    free(runs);
    json_decref(user);
    return rc;
}

static int cmd_train(int argc, char **argv)
{
    const char *spec_path = NULL, *out = NULL;
    int threads = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc)
            out = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quiet"))
            quiet = 1;
        else if (argv[i][0] == '-')
            return usage();
        else if (!spec_path)
            spec_path = argv[i];
        else
            return usage();
    }
    if (!spec_path)
        return usage();
    dwf_err err = {0};
    dwf_spec spec;
    if (parse_spec_file(spec_path, &spec, &err))
        return die("%s", err.msg);
    /* train.threads trains that many batch slices in parallel, each with a
     * single-threaded BLAS (faster on small layers than threaded sgemm) */
    if (threads > 0)
        spec.opts.threads = threads;
    dwf_blas_threads(1);
    if (spec.search.enabled) {
        int rc = cmd_search(spec_path, &spec, out, threads, quiet);
        dwf_spec_free(&spec);
        return rc;
    }
    train_ui ui = {isatty(STDOUT_FILENO), quiet, now(), 0.0, spec.opts.epochs};
    if (spec.opts.method == DWF_METHOD_MAGNITUDE)
        ui.epochs += spec.opts.finetune_epochs;
    if (!quiet)
        printf("dwf: training %s (%s, method %s, D=%d, lambda %g, %d epochs)\n",
               spec.name, spec.arch_name, dwf_method_name(spec.opts.method),
               spec.arch.depth, spec.opts.lambda, spec.opts.epochs);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    dwf_job_hooks hooks = {.ud = &ui, .on_epoch = ui_epoch, .on_batch = ui_batch,
                           .cancel = &g_cancel};
    dwf_job_result res;
    hooks.result = &res;
    dwf_smodel model;
    dwf_metrics final;
    int rc = dwf_job_run(&spec, &hooks, &model, &final, &err);
    if (rc == DWF_ECANCELED) {
        dwf_spec_free(&spec);
        return die("canceled"), 130;
    }
    if (rc) {
        dwf_spec_free(&spec);
        return die("%s", err.msg);
    }
    printf("done: test accuracy %.4f (dense) %.4f (sparse), CR %.2f "
           "(%lld of %lld weights non-zero), %.1fs\n",
           final.test_acc, final.sparse_test_acc, final.cr,
           (long long)final.nonzero, (long long)final.weights, final.wall_time);
    if (!quiet)
        print_curve(&res);
    dwf_job_result_free(&res);
    if (out) {
        rc = dwf_smodel_write_file(&model, out, &err);
        if (rc)
            die("%s", err.msg);
        else
            printf("model written to %s\n", out);
    }
    dwf_smodel_free(&model);
    dwf_spec_free(&spec);
    return rc ? 1 : 0;
}

/* ---- eval / predict --------------------------------------------------- */

/* Loads the test data of the spec stored in the model (or spec_path). */
static int load_test(const dwf_smodel *sm, const char *spec_path, int subset,
                     dwf_dataset *test, dwf_err *err)
{
    dwf_spec spec;
    int rc;
    if (spec_path) {
        rc = parse_spec_file(spec_path, &spec, err);
    } else {
        if (!sm->spec)
            return dwf_errorf(err, DWF_EINVAL,
                              "the model holds no spec: pass --spec SPEC.json");
        char field[DWF_FIELD_LEN];
        rc = dwf_spec_parse(sm->spec, strlen(sm->spec), NULL, 0, &spec, field, err);
    }
    if (rc)
        return rc;
    if (subset > 0)
        spec.data.test_subset = subset;
    /* only the test split is used: keep the training part small */
    spec.data.validation = 0;
    spec.data.train_subset = 1;
    dwf_dataset train = {0}, val = {0};
    rc = dwf_spec_load_data(&spec, &train, &val, test, err);
    dwf_dataset_free(&train);
    dwf_dataset_free(&val);
    dwf_spec_free(&spec);
    if (!rc && test->dim != sm->arch.in_c * sm->arch.in_h * sm->arch.in_w) {
        dwf_dataset_free(test);
        rc = dwf_errorf(err, DWF_EINVAL, "the data has %d features, the model wants %d",
                        test->dim, sm->arch.in_c * sm->arch.in_h * sm->arch.in_w);
    }
    return rc;
}

static int model_args(int argc, char **argv, const char **model,
                      const char **spec, int *subset, int *probs)
{
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--spec") && i + 1 < argc)
            *spec = argv[++i];
        else if (!strcmp(argv[i], "--test-subset") && i + 1 < argc)
            *subset = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--probs") && probs)
            *probs = 1;
        else if (argv[i][0] == '-' || *model)
            return -1;
        else
            *model = argv[i];
    }
    return *model ? 0 : -1;
}

static int cmd_eval(int argc, char **argv)
{
    const char *path = NULL, *spec = NULL;
    int subset = 0;
    if (model_args(argc, argv, &path, &spec, &subset, NULL))
        return usage();
    dwf_err err = {0};
    dwf_smodel sm;
    if (dwf_smodel_read_file(&sm, path, &err))
        return die("%s", err.msg);
    dwf_dataset test = {0};
    int rc = load_test(&sm, spec, subset, &test, &err);
    double acc = 0, loss = 0;
    if (!rc)
        rc = dwf_smodel_evaluate(&sm, &test, &acc, &loss, &err);
    if (!rc) {
        int64_t w, nz, p, pnz;
        dwf_smodel_counts(&sm, &w, &nz, &p, &pnz);
        printf("samples %d  accuracy %.4f  loss %.4f  CR %.2f  non-zero %lld/%lld\n",
               test.n, acc, loss, nz ? (double)w / nz : INFINITY, (long long)nz,
               (long long)w);
    }
    dwf_dataset_free(&test);
    dwf_smodel_free(&sm);
    return rc ? die("%s", err.msg) : 0;
}

static int cmd_predict(int argc, char **argv)
{
    const char *path = NULL, *spec = NULL;
    int subset = 0, probs = 0;
    if (model_args(argc, argv, &path, &spec, &subset, &probs))
        return usage();
    dwf_err err = {0};
    dwf_smodel sm;
    if (dwf_smodel_read_file(&sm, path, &err))
        return die("%s", err.msg);
    dwf_dataset test = {0};
    dwf_sws *ws = NULL;
    int rc = load_test(&sm, spec, subset, &test, &err);
    const int B = 256, C = sm.arch.n_classes;
    float *x = malloc((size_t)B * test.dim * sizeof(float));
    float *p = malloc((size_t)B * C * sizeof(float));
    int32_t *cls = malloc((size_t)B * sizeof(int32_t));
    if (!rc && (!x || !p || !cls))
        rc = dwf_errorf(&err, DWF_ENOMEM, "out of memory");
    if (!rc)
        rc = dwf_sws_create(&sm, B, &ws, &err);
    dwf_norm raw = {DWF_NORM_NONE, 0.0f, 1.0f};
    for (int s = 0; !rc && s < test.n; s += B) {
        int b = test.n - s < B ? test.n - s : B;
        dwf_dataset_range(&test, &raw, s, b, x, NULL);
        rc = dwf_smodel_predict(&sm, ws, x, b, cls, p, &err);
        for (int i = 0; !rc && i < b; i++) {
            printf("%d", cls[i]);
            if (probs)
                for (int j = 0; j < C; j++)
                    printf(" %.6f", p[(size_t)i * C + j]);
            putchar('\n');
        }
    }
    free(x);
    free(p);
    free(cls);
    dwf_sws_free(ws);
    dwf_dataset_free(&test);
    dwf_smodel_free(&sm);
    return rc ? die("%s", err.msg) : 0;
}

/* ---- export / info / schema ------------------------------------------- */

static int cmd_export(int argc, char **argv)
{
    const char *path = NULL, *fmt_name = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--format") && i + 1 < argc)
            fmt_name = argv[++i];
        else if (!strcmp(argv[i], "-o") && i + 1 < argc)
            out = argv[++i];
        else if (argv[i][0] == '-' || path)
            return usage();
        else
            path = argv[i];
    }
    if (!path || !fmt_name)
        return usage();
    int fmt = dwf_export_format_parse(fmt_name);
    if (fmt < 0)
        return die("--format: unknown format '%s'", fmt_name);
    dwf_err err = {0};
    dwf_smodel sm;
    if (dwf_smodel_read_file(&sm, path, &err))
        return die("%s", err.msg);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = dwf_export(&sm, (dwf_export_format)fmt, &buf, &len, &err);
    char def[1024];
    if (!rc && !out) {
        snprintf(def, sizeof def, "%s.%s", path,
                 dwf_export_extension((dwf_export_format)fmt));
        out = def;
    }
    if (!rc)
        rc = write_file(out, buf, len, &err);
    if (!rc && strcmp(out, "-"))
        fprintf(stderr, "dwf: wrote %s (%zu bytes)\n", out, len);
    free(buf);
    dwf_smodel_free(&sm);
    return rc ? die("%s", err.msg) : 0;
}

static int cmd_info(int argc, char **argv)
{
    if (argc != 1)
        return usage();
    dwf_err err = {0};
    dwf_smodel sm;
    if (dwf_smodel_read_file(&sm, argv[0], &err))
        return die("%s", err.msg);
    char desc[512];
    dwf_arch_describe(&sm.arch, desc, sizeof desc);
    int64_t w, nz, p, pnz;
    dwf_smodel_counts(&sm, &w, &nz, &p, &pnz);
    printf("architecture  %s\n", desc);
    printf("threshold     %g\n", (double)sm.eps);
    printf("weights       %lld non-zero of %lld (CR %.2f)\n", (long long)nz,
           (long long)w, nz ? (double)w / nz : INFINITY);
    printf("parameters    %lld non-zero of %lld\n", (long long)pnz, (long long)p);
    for (int i = 0; i < sm.n_kv; i++)
        printf("%-13s %g\n", sm.kv[i].key, sm.kv[i].value);
    if (sm.spec)
        printf("spec          %s\n", sm.spec);
    dwf_smodel_free(&sm);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "train"))
        return cmd_train(argc - 2, argv + 2);
    if (!strcmp(cmd, "eval"))
        return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(cmd, "predict"))
        return cmd_predict(argc - 2, argv + 2);
    if (!strcmp(cmd, "export"))
        return cmd_export(argc - 2, argv + 2);
    if (!strcmp(cmd, "info"))
        return cmd_info(argc - 2, argv + 2);
    if (!strcmp(cmd, "schema")) {
        fputs(dwf_spec_schema(), stdout);
        return 0;
    }
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage();
        return 0;
    }
    return usage();
}
