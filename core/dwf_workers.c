/*
 * dwf_workers.c - fork-join team of threads. A run bumps the generation
 * counter `gen`; helpers that see a new generation run the function and
 * count `pending` down. Both sides spin for a few microseconds (a training
 * step hands out work every few hundred microseconds) before sleeping on a
 * condition variable, and every change a sleeper waits for is made or
 * re-checked under the mutex, so no wake-up is lost.
 */
#include "dwf_workers.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define SPIN 4000 /* pause instructions before sleeping (~20-50 us) */

struct dwf_workers {
    int n;
    pthread_t th[DWF_MAX_THREADS];
    int started;               /* helpers created */
    pthread_mutex_t mu;
    pthread_cond_t wake;       /* gen changed */
    pthread_cond_t done;       /* pending reached 0 */
    atomic_uint gen;
    atomic_int pending;        /* helpers still running this generation */
    int quit;                  /* read by helpers after a new gen */
    dwf_work_fn fn;
    void *arg;
};

typedef struct helper_arg {
    dwf_workers *w;
    int lane;
} helper_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *helper(void *p)
{
    dwf_workers *w = ((helper_arg *)p)[0].w;
    int lane = ((helper_arg *)p)[0].lane;
    free(p);
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&w->gen, memory_order_acquire);
        for (int i = 0; i < SPIN && g == seen; i++) {
            cpu_relax();
            g = atomic_load_explicit(&w->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&w->mu);
            while ((g = atomic_load(&w->gen)) == seen)
                pthread_cond_wait(&w->wake, &w->mu);
            pthread_mutex_unlock(&w->mu);
        }
        seen = g;
        if (w->quit)
            break;
        w->fn(w->arg, lane);
        if (atomic_fetch_sub_explicit(&w->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&w->mu);
            pthread_cond_signal(&w->done);
            pthread_mutex_unlock(&w->mu);
        }
    }
    return NULL;
}

/* Publishes fn/arg/quit to the helpers as a new generation. */
static void start_gen(dwf_workers *w)
{
    atomic_store_explicit(&w->pending, w->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&w->mu);
    atomic_fetch_add_explicit(&w->gen, 1, memory_order_release);
    pthread_cond_broadcast(&w->wake);
    pthread_mutex_unlock(&w->mu);
}

static void wait_helpers(dwf_workers *w)
{
    for (int i = 0; i < SPIN; i++) {
        if (atomic_load_explicit(&w->pending, memory_order_acquire) == 0)
            return;
        cpu_relax();
    }
    pthread_mutex_lock(&w->mu);
    while (atomic_load(&w->pending) != 0)
        pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

int dwf_workers_create(int n, dwf_workers **out, dwf_err *err)
{
    *out = NULL;
    if (n < 1 || n > DWF_MAX_THREADS)
        return dwf_errorf(err, DWF_EINVAL, "threads: %d must be in 1..%d", n,
                          DWF_MAX_THREADS);
    dwf_workers *w = calloc(1, sizeof *w);
    if (!w)
        return dwf_errorf(err, DWF_ENOMEM, "out of memory for worker threads");
    w->n = n;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->wake, NULL);
    pthread_cond_init(&w->done, NULL);
    atomic_init(&w->gen, 0);
    atomic_init(&w->pending, 0);
    for (int i = 1; i < n; i++) {
        helper_arg *a = malloc(sizeof *a);
        if (a) {
            a->w = w;
            a->lane = i;
        }
        if (!a || pthread_create(&w->th[i], NULL, helper, a) != 0) {
            free(a);
            w->n = w->started + 1; /* only the running helpers to stop */
            dwf_workers_free(w);
            return dwf_errorf(err, DWF_ENOMEM, "threads: cannot start helper %d of %d",
                              i, n - 1);
        }
        w->started++;
    }
    *out = w;
    return 0;
}

void dwf_workers_free(dwf_workers *w)
{
    if (!w)
        return;
    if (w->started > 0) {
        w->quit = 1;
        w->n = w->started + 1;
        start_gen(w);
        for (int i = 1; i <= w->started; i++)
            pthread_join(w->th[i], NULL);
    }
    pthread_cond_destroy(&w->done);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int dwf_workers_count(const dwf_workers *w)
{
    return w->n;
}

void dwf_workers_run(dwf_workers *w, dwf_work_fn fn, void *arg)
{
    if (w->n == 1) {
        fn(arg, 0);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    start_gen(w);
    fn(arg, 0);
    wait_helpers(w);
}
