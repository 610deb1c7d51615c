/*
 * Every row of the deviations table: cases where OpenSSL crashes, leaks or corrupts its state and
 * libasyncjob instead honours the call safely or returns an error without changing anything. Built
 * only against libasyncjob (on OpenSSL most of these crash).
 */
#include "common.h"

#include <pthread.h>
#include <stdint.h>

static ASYNC_WAIT_CTX *wctx;

static int ret_77(void *arg)
{
    (void)arg;
    return 77;
}

static int pause_once(void *arg)
{
    (void)arg;
    ASYNC_pause_job();
    return 11;
}

static int inner_called;
static int inner(void *arg)
{
    (void)arg;
    inner_called++;
    return 99;
}

/* Tries a nested start, then checks the outer job is intact: still current, can pause, finishes. */
static int nested_result, nested_current_ok, nested_ret_untouched;
static ASYNC_JOB *nested_other; /* another paused job to pass as the inner *job */
static int nested_outer(void *arg)
{
    ASYNC_JOB *self = ASYNC_get_current_job();
    ASYNC_JOB *inner_job = nested_other;
    int iret = -3;

    (void)arg;
    if (*(int *)arg == 1)
        ASYNC_pause_job(); /* the nested call then happens inside a resumed job */
    nested_result = ASYNC_start_job(&inner_job, wctx, &iret, inner, NULL, 0);
    nested_ret_untouched = iret == -3 && inner_job == nested_other;
    nested_current_ok = ASYNC_get_current_job() == self && self != NULL;
    ASYNC_pause_job();
    return 33;
}

static void test_nested(void)
{
    ASYNC_JOB *job = NULL, *other = NULL;
    int ret = 0, mode, i;

    /* (a) fresh outer job, (b) reused pool job, (c) resumed outer job, (d) inner *job = another
     * paused job. OpenSSL: (a)/(b) crash when the outer job returns; (d) is UB. */
    for (i = 0; i < 4; i++) {
        mode = i == 2 ? 1 : 0;
        nested_other = NULL;
        if (i == 3) {
            CHECK_EQ(ASYNC_start_job(&other, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
            nested_other = other;
        }
        if (i == 0)
            ASYNC_cleanup_thread(); /* so that the first outer job is brand new */
        nested_result = -1;
        inner_called = 0;
        CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, nested_outer, &mode, sizeof(mode)), ASYNC_PAUSE);
        if (mode == 1)
            CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, NULL, NULL, 0), ASYNC_PAUSE);
        CHECK_EQ(nested_result, ASYNC_ERR);
        CHECK_EQ(inner_called, 0);
        CHECK_EQ(nested_ret_untouched, 1);
        CHECK_EQ(nested_current_ok, 1);
        CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
        CHECK_EQ(ret, 33);
        if (i == 3) {
            /* The job handed to the nested call is untouched and still resumable. */
            CHECK_EQ(ASYNC_start_job(&other, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
            CHECK_EQ(ret, 11);
        }
    }
}

static void test_stale_and_forged(void)
{
    ASYNC_JOB *job = NULL, *stale, *a = NULL, *b = NULL, *forged;
    static char junk[256];
    int ret = -1;

    ASYNC_cleanup_thread();
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    stale = job;
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    /* Stale handle: OpenSSL returns FINISH with the old ret and pushes the job into the pool twice. */
    job = stale;
    ret = -1;
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, ret_77, NULL, 0), ASYNC_ERR);
    CHECK(job == stale);
    CHECK_EQ(ret, -1);
    CHECK(ASYNC_get_wait_ctx(stale) == NULL);
    /* The pool is intact: two new jobs are two different objects. */
    CHECK_EQ(ASYNC_start_job(&a, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&b, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK(a != b);
    CHECK(a == stale); /* LIFO: the finished job's slot was reused once */

    /* Forged handles: pointers that were never jobs. */
    forged = (ASYNC_JOB *)(void *)junk;
    job = forged;
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, ret_77, NULL, 0), ASYNC_ERR);
    CHECK(job == forged);
    CHECK(ASYNC_get_wait_ctx(forged) == NULL);
    job = (ASYNC_JOB *)(uintptr_t)0x10;
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, ret_77, NULL, 0), ASYNC_ERR);
    CHECK(ASYNC_get_wait_ctx((ASYNC_JOB *)(uintptr_t)0x10) == NULL);

    CHECK_EQ(ASYNC_start_job(&a, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ASYNC_start_job(&b, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 11);
}

static int saw_null_ctx;
static int null_ctx_job(void *arg)
{
    (void)arg;
    saw_null_ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job()) == NULL;
    ASYNC_pause_job();
    ASYNC_pause_job();
    return 44;
}

static void test_null_wait_ctx(void)
{
    ASYNC_JOB *job = NULL;
    int ret = 0;

    /* OpenSSL: SIGSEGV on the first resume. */
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, null_ctx_job, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(saw_null_ctx, 1);
    CHECK(ASYNC_get_wait_ctx(job) == NULL);
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, NULL, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 44);
}

static void test_null_ret_job_func(void)
{
    ASYNC_JOB *job = NULL;
    int ret = -1;

    /* ret == NULL: the job runs and its return value is discarded (OpenSSL: SIGSEGV at FINISH). */
    CHECK_EQ(ASYNC_start_job(&job, wctx, NULL, ret_77, NULL, 0), ASYNC_FINISH);
    CHECK(job == NULL);
    CHECK_EQ(ASYNC_start_job(&job, wctx, NULL, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, wctx, NULL, NULL, NULL, 0), ASYNC_FINISH);
    CHECK(job == NULL);

    /* job == NULL and func == NULL (on a fresh start): ERR, nothing consumed. */
    ASYNC_cleanup_thread();
    CHECK_EQ(ASYNC_init_thread(1, 0), 1);
    CHECK_EQ(ASYNC_start_job(NULL, wctx, &ret, ret_77, NULL, 0), ASYNC_ERR);
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, NULL, NULL, 0), ASYNC_ERR);
    CHECK(job == NULL);
    CHECK_EQ(ret, -1);
    /* The single pool slot is still free. */
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    /* A NULL func on resume is ignored, as in OpenSSL. */
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 11);
    ASYNC_cleanup_thread();
}

static int k1, k2;
static void null_cleanup(ASYNC_WAIT_CTX *c, const void *k, OSSL_ASYNC_FD fd, void *d)
{
    (void)c;
    (void)k;
    (void)fd;
    (void)d;
}

static void test_null_ctx_functions(void)
{
    OSSL_ASYNC_FD fds[4] = {-9, -9, -9, -9};
    size_t n = 77, m = 78;
    void *cd = &k2;
    ASYNC_callback_fn cb = NULL;
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();

    /* OpenSSL: SIGSEGV for each of these. */
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(NULL, &k1, 5, NULL, null_cleanup), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(NULL, &k1, &fds[0], &cd), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_all_fds(NULL, fds, &n), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_changed_fds(NULL, fds, &n, fds, &m), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_clear_fd(NULL, &k1), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_set_status(NULL, 2), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_status(NULL), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_callback(NULL, &cb, &cd), 0);
    CHECK(ASYNC_get_wait_ctx(NULL) == NULL);
    CHECK_EQ(fds[0], -9);
    CHECK_EQ(n, 77);
    CHECK_EQ(m, 78);
    CHECK(cd == &k2 && cb == NULL);

    /* NULL count pointers (OpenSSL dereferences them): 0 and nothing written. */
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k1, 5, NULL, NULL), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, fds, NULL), 0);
    CHECK_EQ(fds[0], -9);
    CHECK_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, fds, NULL, NULL, &m), 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &n, NULL, NULL), 0);
    CHECK_EQ(fds[0], -9);
    CHECK_EQ(n, 77);
    CHECK_EQ(m, 78);
    /* NULL output pointers of get_fd / get_callback: the call is honoured, the NULL one skipped. */
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &k1, &fds[0], NULL), 1);
    CHECK_EQ(fds[0], 5);
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &k1, NULL, &cd), 1);
    CHECK(cd == NULL);
    CHECK_EQ(ASYNC_WAIT_CTX_set_callback(ctx, ret_77, &k1), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_callback(ctx, NULL, &cd), 1);
    CHECK(cd == &k1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_callback(ctx, &cb, NULL), 1);
    CHECK(cb == ret_77);
    ASYNC_WAIT_CTX_free(ctx);
}

/* WAIT_CTX_free while a paused job still uses the ctx (OpenSSL: use-after-free on resume). */
static int cleanups_run;
static ASYNC_WAIT_CTX *cleanup_saw;
static void count_cleanup(ASYNC_WAIT_CTX *c, const void *k, OSSL_ASYNC_FD fd, void *d)
{
    (void)k;
    (void)d;
    (void)fd;
    cleanup_saw = c;
    cleanups_run++;
}

static int free_job_ok;
static int uses_ctx_after_free(void *arg)
{
    ASYNC_WAIT_CTX *c = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    OSSL_ASYNC_FD fd = -1;
    size_t n = 0;

    (void)arg;
    ASYNC_WAIT_CTX_set_wait_fd(c, &k1, 21, NULL, count_cleanup);
    ASYNC_pause_job();
    /* The caller freed the ctx meanwhile: it is still ours, with its fds. */
    free_job_ok = ASYNC_get_wait_ctx(ASYNC_get_current_job()) == c
                  && ASYNC_WAIT_CTX_get_all_fds(c, &fd, &n) == 1 && n == 1 && fd == 21
                  && ASYNC_WAIT_CTX_set_wait_fd(c, &k2, 22, NULL, count_cleanup) == 1;
    ASYNC_pause_job();
    return 55;
}

static void test_free_while_paused(void)
{
    ASYNC_WAIT_CTX *c = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;

    cleanups_run = 0;
    CHECK_EQ(ASYNC_start_job(&job, c, &ret, uses_ctx_after_free, NULL, 0), ASYNC_PAUSE);
    ASYNC_WAIT_CTX_free(c);
    CHECK_EQ(cleanups_run, 0); /* deferred: the job still holds the ctx */
    CHECK(ASYNC_get_wait_ctx(job) == c);
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, NULL, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(free_job_ok, 1);
    CHECK_EQ(cleanups_run, 0);
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 55);
    /* The job's end released the last reference: both cleanups ran, with the original pointer. */
    CHECK_EQ(cleanups_run, 2);
    CHECK(cleanup_saw == c);
}

/* A cleanup that calls back into the context being freed (OpenSSL: reads a half-freed context). */
static int reentry_get, reentry_set, reentry_runs;
static void reentrant_cleanup(ASYNC_WAIT_CTX *c, const void *k, OSSL_ASYNC_FD fd, void *d)
{
    size_t n = 5;
    (void)k;
    (void)fd;
    (void)d;
    reentry_runs++;
    reentry_get = ASYNC_WAIT_CTX_get_all_fds(c, NULL, &n) + (n != 5);
    reentry_set = ASYNC_WAIT_CTX_set_wait_fd(c, &k2, 9, NULL, reentrant_cleanup);
    ASYNC_WAIT_CTX_free(c); /* a second free from inside: ignored */
}

static void test_cleanup_reentry(void)
{
    ASYNC_WAIT_CTX *c = ASYNC_WAIT_CTX_new();

    reentry_runs = 0;
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, &k1, 7, NULL, reentrant_cleanup), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(c, &k2, 8, NULL, reentrant_cleanup), 1);
    ASYNC_WAIT_CTX_free(c);
    CHECK_EQ(reentry_runs, 2);
    CHECK_EQ(reentry_get, 0);
    CHECK_EQ(reentry_set, 0);
}

static void test_resume_after_cleanup_thread(void)
{
    ASYNC_JOB *job = NULL, *j2 = NULL;
    int ret = 0;

    /* OpenSSL: the paused job leaks and resuming it is a use-after-free. */
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    ASYNC_cleanup_thread();
    CHECK_EQ(ASYNC_start_job(&j2, wctx, &ret, ret_77, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 11);
    CHECK(job == NULL);
    ASYNC_cleanup_thread();
}

static void test_pool_size_limits(void)
{
    /* OpenSSL 3.0.19 accepts max_size > INT_MAX; 3.6 rejects it. We follow 3.6. */
    CHECK_EQ(ASYNC_init_thread((size_t)INT32_MAX + 1, 0), 0);
    CHECK_EQ(ASYNC_init_thread(SIZE_MAX, 0), 0);
    CHECK_EQ(ASYNC_init_thread(SIZE_MAX, SIZE_MAX), 0);
    CHECK_EQ(ASYNC_init_thread((size_t)INT32_MAX, 0), 1);
    ASYNC_cleanup_thread();
}

/* Resuming a job on another thread (OpenSSL: works until the job finishes there, then SIGSEGV). */
static ASYNC_JOB *shared_job;
static int other_thread_result;
static void *resume_elsewhere(void *arg)
{
    ASYNC_JOB *j = shared_job;
    int ret = -1;
    (void)arg;
    other_thread_result = ASYNC_start_job(&j, wctx, &ret, NULL, NULL, 0);
    if (j != shared_job || ret != -1)
        other_thread_result = -100;
    ASYNC_cleanup_thread();
    return NULL;
}

static void test_cross_thread(void)
{
    pthread_t t;
    int ret = 0;

    shared_job = NULL;
    CHECK_EQ(ASYNC_start_job(&shared_job, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(pthread_create(&t, NULL, resume_elsewhere, NULL), 0);
    pthread_join(t, NULL);
    CHECK_EQ(other_thread_result, ASYNC_ERR);
    /* Still paused here, and resumable on its own thread. */
    CHECK_EQ(ASYNC_start_job(&shared_job, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 11);
}

/*
 * A job left paused when its thread exits is leaked, as in OpenSSL: nothing runs on its stack and the
 * stack is never reused (reliability.c checks that memory; the unit tests of src/state.rs that the
 * job is counted by asyncjob::leaked_jobs()). Valgrind sees no lost bytes: the leaked stack is still
 * mapped, so what it points to stays reachable. Built with and without unwind tables: the job's C
 * frames are never unwound. (The freed ctx's cleanup at thread exit: reliability.c
 * ctx_of_leaked_job.)
 */
static void *leave_paused(void *arg)
{
    ASYNC_WAIT_CTX *c = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *j = NULL;
    int ret = 0;
    int *ok = arg;

    *ok = ASYNC_start_job(&j, c, &ret, pause_once, NULL, 0) == ASYNC_PAUSE;
    ASYNC_WAIT_CTX_free(c);
    return NULL;
}

static void test_thread_exit_with_paused_job(void)
{
    pthread_t t;
    int ok = 0, ret = 0;
    ASYNC_JOB *job = NULL;

    CHECK_EQ(pthread_create(&t, NULL, leave_paused, &ok), 0);
    pthread_join(t, NULL);
    CHECK_EQ(ok, 1);
    /* The process goes on normally. */
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 11);
}

int main(void)
{
    wctx = ASYNC_WAIT_CTX_new();
    test_nested();
    test_stale_and_forged();
    test_null_wait_ctx();
    test_null_ret_job_func();
    test_null_ctx_functions();
    test_free_while_paused();
    test_cleanup_reentry();
    test_resume_after_cleanup_thread();
    test_pool_size_limits();
    test_cross_thread();
    test_thread_exit_with_paused_job();
    ASYNC_WAIT_CTX_free(wctx);
    ASYNC_cleanup_thread();
    return t_report("deviations");
}
