/*
 * Every function of the C API in its well-defined behaviour (reference §2). Built against both
 * libasyncjob and the system libcrypto; every check must pass in both builds.
 */
#include "common.h"

#include <pthread.h>
#include <stdint.h>

/* ---- small job bodies ------------------------------------------------------------------------ */

static int ret_77(void *arg)
{
    (void)arg;
    return 77;
}

static ASYNC_JOB *seen_job;
static ASYNC_WAIT_CTX *seen_ctx;

/* Records what the job sees, pauses once, returns 11. */
static int pause_once(void *arg)
{
    (void)arg;
    seen_job = ASYNC_get_current_job();
    seen_ctx = ASYNC_get_wait_ctx(seen_job);
    if (ASYNC_pause_job() != 1)
        return -1;
    return 11;
}

static int pause_twice(void *arg)
{
    (void)arg;
    ASYNC_pause_job();
    ASYNC_pause_job();
    return 22;
}

static int saw_null_arg;
static int first_byte;

static int args_job(void *arg)
{
    saw_null_arg = arg == NULL;
    first_byte = arg == NULL ? -1 : ((unsigned char *)arg)[0];
    ASYNC_pause_job();
    /* The copy must still hold what the caller passed at start, whatever happened to the original. */
    return arg == NULL ? -1 : ((unsigned char *)arg)[0] + 256 * ((unsigned char *)arg)[63];
}

static int aligned_arg;
static int align_job(void *arg)
{
    aligned_arg = ((uintptr_t)arg % 8) == 0;
    return 1;
}

static int paused_inside; /* set when ASYNC_pause_job really switched out */
static int try_pause(void *arg)
{
    (void)arg;
    paused_inside = 0;
    ASYNC_pause_job();
    return 5;
}

static int block_and_finish(void *arg)
{
    (void)arg;
    ASYNC_block_pause();
    return 6;
}

static int unblock_then_pause(void *arg)
{
    (void)arg;
    ASYNC_unblock_pause();
    ASYNC_pause_job();
    return 7;
}

static int block_block_unblock_pause(void *arg)
{
    (void)arg;
    ASYNC_block_pause();
    ASYNC_block_pause();
    ASYNC_unblock_pause();
    ASYNC_pause_job(); /* still blocked once: must not pause */
    ASYNC_unblock_pause();
    return 8;
}

static int underflow_then_pause(void *arg)
{
    (void)arg;
    ASYNC_unblock_pause(); /* counter already 0: stays 0 */
    ASYNC_unblock_pause();
    ASYNC_block_pause();
    ASYNC_unblock_pause();
    ASYNC_pause_job(); /* must pause */
    return 9;
}

/* ---- outside any job ------------------------------------------------------------------------- */

static void test_outside(void)
{
    CHECK_EQ(ASYNC_is_capable(), 1);
    CHECK_EQ(ASYNC_pause_job(), 1);
    CHECK(ASYNC_get_current_job() == NULL);
    ASYNC_block_pause();
    ASYNC_unblock_pause();
    ASYNC_cleanup_thread(); /* nothing initialised: no-op */
    ASYNC_cleanup_thread();
}

/* ---- ASYNC_init_thread ----------------------------------------------------------------------- */

static void test_init_thread(void)
{
    CHECK_EQ(ASYNC_init_thread(1, 2), 0); /* init > max */
    CHECK_EQ(ASYNC_init_thread(0, 1), 0); /* cannot pre-create in an unlimited pool */
    CHECK_EQ(ASYNC_init_thread(2, 2), 1);
    CHECK_EQ(ASYNC_init_thread(0, 0), 1);
    CHECK_EQ(ASYNC_init_thread(5, 0), 1);
    ASYNC_cleanup_thread();
}

static int pause_once(void *arg);

/* A second init_thread replaces the pool and its limits. */
static void test_init_twice(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *j[4] = {NULL, NULL, NULL, NULL};
    int ret = 0, i;

    CHECK_EQ(ASYNC_init_thread(2, 2), 1);
    CHECK_EQ(ASYNC_init_thread(3, 1), 1);
    for (i = 0; i < 3; i++)
        CHECK_EQ(ASYNC_start_job(&j[i], ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&j[3], ctx, &ret, pause_once, NULL, 0), ASYNC_NO_JOBS);
    for (i = 0; i < 3; i++)
        CHECK_EQ(ASYNC_start_job(&j[i], ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    ASYNC_cleanup_thread();
    ASYNC_WAIT_CTX_free(ctx);
}

/* ---- start / pause / resume / finish --------------------------------------------------------- */

static void test_start_basics(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_WAIT_CTX *other = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = -1;

    CHECK(ctx != NULL && other != NULL);

    /* A job that returns at once. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, ret_77, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 77);
    CHECK(job == NULL);

    /* A job that pauses: *job is its handle, the same as ASYNC_get_current_job() inside. */
    ret = -1;
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK(job != NULL);
    CHECK(job == seen_job);
    CHECK(seen_ctx == ctx);
    CHECK_EQ(ret, -1); /* untouched on PAUSE */
    CHECK(ASYNC_get_current_job() == NULL); /* outside, even with a paused job */
    CHECK(ASYNC_get_wait_ctx(job) == ctx);

    /* Resume with a different ctx and func: both ignored. */
    CHECK_EQ(ASYNC_start_job(&job, other, &ret, ret_77, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 11);
    CHECK(job == NULL);

    /* Two pauses. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_twice, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_twice, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_twice, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 22);

    /* A NULL wait ctx is fine for a job that never pauses; it sees NULL as its ctx. */
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, ret_77, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 77);

    ASYNC_WAIT_CTX_free(ctx);
    ASYNC_WAIT_CTX_free(other);
    ASYNC_cleanup_thread();
}

/* ---- args are copied at start ---------------------------------------------------------------- */

static void test_args(void)
{
    unsigned char buf[64];
    ASYNC_JOB *job = NULL, *job2 = NULL;
    ASYNC_WAIT_CTX *ctx;
    int ret = 0;
    double aligned_src[4] = {0};

    memset(buf, 0, sizeof(buf));
    buf[0] = 42;
    buf[63] = 3;
    /* A NULL wait ctx with a pausing job: OpenSSL crashes when this job is resumed, so it is only
     * resumed (at the end) in the libasyncjob build. */
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, args_job, buf, sizeof(buf)), ASYNC_PAUSE);
    CHECK_EQ(saw_null_arg, 0);
    CHECK_EQ(first_byte, 42);
    /* The caller may overwrite its buffer immediately. */
    memset(buf, 99, sizeof(buf));
    ctx = ASYNC_WAIT_CTX_new();
    memset(buf, 0, sizeof(buf));
    buf[0] = 42;
    buf[63] = 3;
    CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, buf, sizeof(buf)), ASYNC_PAUSE);
    memset(buf, 99, sizeof(buf));
    CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, buf, sizeof(buf)), ASYNC_FINISH);
    CHECK_EQ(ret, 42 + 256 * 3);

    /* args == NULL with size > 0: func(NULL). */
    CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, NULL, 16), ASYNC_PAUSE);
    CHECK_EQ(saw_null_arg, 1);
    CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, NULL, 16), ASYNC_FINISH);
    CHECK_EQ(ret, -1);

    /* args != NULL with size == 0: func(NULL) (OpenSSL 3.0.19 and 3.5.5+). */
    CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, buf, 0), ASYNC_PAUSE);
    CHECK_EQ(saw_null_arg, 1);
    CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, buf, 0), ASYNC_FINISH);

    /* The copy has at least malloc-like alignment for 8-byte types. */
    CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, align_job, aligned_src, sizeof(aligned_src)), ASYNC_FINISH);
    CHECK_EQ(aligned_arg, 1);

    /* Large args are copied too. */
    {
        size_t big = 100000;
        unsigned char *p = malloc(big);
        memset(p, 0, big);
        p[0] = 7;
        p[63] = 1;
        CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, p, big), ASYNC_PAUSE);
        memset(p, 0, big);
        free(p);
        CHECK_EQ(ASYNC_start_job(&job2, ctx, &ret, args_job, NULL, 0), ASYNC_FINISH);
        CHECK_EQ(ret, 7 + 256);
    }

    /* The first paused job (NULL ctx): still sees its own copy. */
#ifndef TEST_OPENSSL
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, args_job, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 42 + 256 * 3);
#endif
    ASYNC_WAIT_CTX_free(ctx);
}

/* ---- pool: limits, NO_JOBS, LIFO reuse -------------------------------------------------------- */

static void test_pool(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL;
    ASYNC_JOB *jobs[300];
    int ret = -1, i, ok;

    ASYNC_cleanup_thread();
    CHECK_EQ(ASYNC_init_thread(3, 3), 1);
    CHECK_EQ(ASYNC_start_job(&a, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&b, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&c, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    CHECK(a != b && b != c && a != c);
    /* Fourth: pool exhausted. *job and *ret untouched. */
    CHECK_EQ(ASYNC_start_job(&d, ctx, &ret, pause_once, NULL, 0), ASYNC_NO_JOBS);
    CHECK(d == NULL);
    CHECK_EQ(ret, -1);
    /* Finish b then a: LIFO gives a back first, then b. */
    {
        ASYNC_JOB *old_a = a, *old_b = b;
        CHECK_EQ(ASYNC_start_job(&b, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
        CHECK_EQ(ret, 11);
        CHECK_EQ(ASYNC_start_job(&a, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
        CHECK(a == NULL && b == NULL);
        CHECK_EQ(ASYNC_start_job(&d, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
        CHECK(d == old_a);
        CHECK_EQ(ASYNC_start_job(&e, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
        CHECK(e == old_b);
    }
    /* Retry after NO_JOBS gets the job that just finished. */
    {
        ASYNC_JOB *f = NULL, *old_c = c;
        CHECK_EQ(ASYNC_start_job(&f, ctx, &ret, pause_once, NULL, 0), ASYNC_NO_JOBS);
        CHECK_EQ(ASYNC_start_job(&c, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
        CHECK_EQ(ASYNC_start_job(&f, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
        CHECK(f == old_c);
        CHECK_EQ(ASYNC_start_job(&f, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    }
    {
        ASYNC_JOB *first_d = d, *first_e = e;
        CHECK_EQ(ASYNC_start_job(&e, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
        CHECK_EQ(ASYNC_start_job(&d, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
        /* d finished last, so it is reused first. */
        CHECK_EQ(ASYNC_start_job(&a, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
        CHECK(a == first_d);
        CHECK_EQ(ASYNC_start_job(&b, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
        CHECK(b == first_e);
        CHECK_EQ(ASYNC_start_job(&a, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
        CHECK_EQ(ASYNC_start_job(&b, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    }
    ASYNC_cleanup_thread();

    /* Unlimited pool: 300 jobs paused at the same time. */
    CHECK_EQ(ASYNC_init_thread(0, 0), 1);
    ok = 1;
    for (i = 0; i < 300; i++) {
        jobs[i] = NULL;
        ok &= ASYNC_start_job(&jobs[i], ctx, &ret, pause_once, NULL, 0) == ASYNC_PAUSE;
    }
    CHECK(ok);
    for (i = 0; i < 300; i++) {
        ret = 0;
        ok &= ASYNC_start_job(&jobs[i], ctx, &ret, NULL, NULL, 0) == ASYNC_FINISH && ret == 11
              && jobs[i] == NULL;
    }
    CHECK(ok);
    ASYNC_cleanup_thread();

    /* Auto-initialisation: start without init_thread works. */
    CHECK_EQ(ASYNC_start_job(&a, ctx, &ret, ret_77, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 77);
    ASYNC_cleanup_thread();
    ASYNC_WAIT_CTX_free(ctx);
}

/* ---- ASYNC_block_pause / ASYNC_unblock_pause ------------------------------------------------- */

static void test_block(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;

    /* Blocks outside a job are ignored. */
    ASYNC_block_pause();
    ASYNC_block_pause();
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, try_pause, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, try_pause, NULL, 0), ASYNC_FINISH);

    /* A block left behind by a finished job applies to the next job on this thread. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, block_and_finish, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 6);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, try_pause, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 5);
    ASYNC_unblock_pause(); /* outside a job: does not clear it */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, try_pause, NULL, 0), ASYNC_FINISH);
    /* An unblock inside a job clears it. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, unblock_then_pause, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 7);

    /* Nesting counts. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, block_block_unblock_pause, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 8);
    /* Underflow saturates at 0. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, underflow_then_pause, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 9);

    /* ASYNC_cleanup_thread resets the counter. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, block_and_finish, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, try_pause, NULL, 0), ASYNC_FINISH);
    ASYNC_cleanup_thread();
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, try_pause, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    ASYNC_cleanup_thread();
    ASYNC_WAIT_CTX_free(ctx);
}

/* ---- wait ctx: fds and the round model ------------------------------------------------------- */

static int k1, k2, k3, k4, k5;
static int cleanup_log[8];
static int cleanup_count;
static ASYNC_WAIT_CTX *cleanup_ctx_seen;

static void log_cleanup(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd, void *data)
{
    (void)key;
    (void)data;
    cleanup_ctx_seen = ctx;
    if (cleanup_count < 8)
        cleanup_log[cleanup_count] = fd;
    cleanup_count++;
}

static int round_job_failures;
#define JCHECK(c)                                                                         \
    do {                                                                                  \
        if (!(c)) {                                                                       \
            round_job_failures++;                                                         \
            fprintf(stderr, "%s:%d: in-job check failed: %s\n", __FILE__, __LINE__, #c); \
        }                                                                                 \
    } while (0)

static int round_job(void *arg)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    OSSL_ASYNC_FD fds[8], dels[8];
    size_t nadd = 99, ndel = 99, n = 0;
    OSSL_ASYNC_FD fd;
    void *cd;

    (void)arg;
    /* Round 1: k1 (fd 10) was added outside; we add k2 (fd 11). No reset at start. */
    JCHECK(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k2, 11, NULL, NULL) == 1);
    ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel);
    JCHECK(nadd == 2 && ndel == 0);
    ASYNC_pause_job();

    /* Round 2: the resume reset the counters. */
    ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel);
    JCHECK(nadd == 0 && ndel == 0);
    /* Added and cleared in the same round: gone at once, no cleanup. */
    JCHECK(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k3, 12, NULL, log_cleanup) == 1);
    JCHECK(ASYNC_WAIT_CTX_clear_fd(ctx, &k3) == 1);
    ASYNC_WAIT_CTX_get_all_fds(ctx, fds, &n);
    JCHECK(n == 2 && fds[0] == 11 && fds[1] == 10);
    ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel);
    JCHECK(nadd == 0 && ndel == 0);
    /* Cleared from an earlier round: marked deleted, listed in the del array. */
    JCHECK(ASYNC_WAIT_CTX_clear_fd(ctx, &k1) == 1);
    ASYNC_WAIT_CTX_get_changed_fds(ctx, fds, &nadd, dels, &ndel);
    JCHECK(nadd == 0 && ndel == 1 && dels[0] == 10);
    JCHECK(ASYNC_WAIT_CTX_get_fd(ctx, &k1, &fd, &cd) == 0);
    JCHECK(ASYNC_WAIT_CTX_clear_fd(ctx, &k1) == 0); /* again: 0 */
    ASYNC_WAIT_CTX_get_all_fds(ctx, fds, &n);
    JCHECK(n == 1 && fds[0] == 11);
    ASYNC_pause_job();

    /* Round 3: the deleted node is gone for good. */
    ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel);
    JCHECK(nadd == 0 && ndel == 0);
    JCHECK(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k4, 13, NULL, NULL) == 1);
    return 1;
}

static void test_wait_ctx_fds(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    OSSL_ASYNC_FD fds[8], dels[8], fd = -5;
    size_t n = 99, nadd = 99, ndel = 99;
    void *cd = (void *)&fd;
    int ret = 0;

    /* Fresh ctx. */
    CHECK_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, NULL, &n), 1);
    CHECK_EQ(n, 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel), 1);
    CHECK_EQ(nadd, 0);
    CHECK_EQ(ndel, 0);
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &k1, &fd, &cd), 0);
    CHECK_EQ(fd, -5); /* untouched */
    CHECK(cd == (void *)&fd);
    CHECK_EQ(ASYNC_WAIT_CTX_clear_fd(ctx, &k1), 0);

    /* An add outside any job counts as added until a job on this ctx is resumed. */
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k1, 10, &k5, NULL), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &k1, &fd, &cd), 1);
    CHECK_EQ(fd, 10);
    CHECK(cd == (void *)&k5);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, round_job, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, fds, &n), 1);
    CHECK_EQ(n, 2);
    CHECK_EQ(fds[0], 11); /* newest first */
    CHECK_EQ(fds[1], 10);
    CHECK_EQ(ASYNC_WAIT_CTX_get_changed_fds(ctx, fds, &nadd, dels, &ndel), 1);
    CHECK_EQ(nadd, 2);
    CHECK_EQ(fds[0], 11);
    CHECK_EQ(fds[1], 10);
    CHECK_EQ(ndel, 0);
    /* get_changed_fds resets nothing. */
    nadd = 0;
    ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel);
    CHECK_EQ(nadd, 2);

    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, round_job, NULL, 0), ASYNC_PAUSE);
    ASYNC_WAIT_CTX_get_changed_fds(ctx, fds, &nadd, dels, &ndel);
    CHECK_EQ(nadd, 0);
    CHECK_EQ(ndel, 1);
    CHECK_EQ(dels[0], 10);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, round_job, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 1);
    CHECK_EQ(round_job_failures, 0);
    /* Counters are not reset on FINISH. */
    ASYNC_WAIT_CTX_get_changed_fds(ctx, fds, &nadd, NULL, &ndel);
    CHECK_EQ(nadd, 1);
    CHECK_EQ(fds[0], 13);
    CHECK_EQ(ndel, 0);
    /* Nor at the next start. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel);
    CHECK_EQ(nadd, 1);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_once, NULL, 0), ASYNC_FINISH);
    ASYNC_WAIT_CTX_get_changed_fds(ctx, NULL, &nadd, NULL, &ndel);
    CHECK_EQ(nadd, 0);

    /* Duplicate keys: no check; the newest node wins and clear takes the newest. */
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k5, 14, NULL, NULL), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k5, 15, NULL, NULL), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &k5, &fd, &cd), 1);
    CHECK_EQ(fd, 15);
    ASYNC_WAIT_CTX_get_all_fds(ctx, fds, &n);
    CHECK_EQ(n, 4);
    CHECK_EQ(fds[0], 15);
    CHECK_EQ(fds[1], 14);
    CHECK_EQ(fds[2], 13);
    CHECK_EQ(fds[3], 11);
    CHECK_EQ(ASYNC_WAIT_CTX_clear_fd(ctx, &k5), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &k5, &fd, &cd), 1);
    CHECK_EQ(fd, 14);
    /* Keys are compared as pointers, not by what they point to. */
    k2 = k3;
    CHECK_EQ(ASYNC_WAIT_CTX_get_fd(ctx, &k3, &fd, &cd), 0);
    ASYNC_WAIT_CTX_free(ctx);

    /* Free: cleanups run newest first, skipping cleared nodes and nodes without a cleanup. */
    ctx = ASYNC_WAIT_CTX_new();
    cleanup_count = 0;
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k1, 1, NULL, log_cleanup), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k2, 2, NULL, log_cleanup), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k3, 3, NULL, NULL), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &k4, 4, NULL, log_cleanup), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_clear_fd(ctx, &k2), 1);
    CHECK_EQ(cleanup_count, 0); /* clear never calls the cleanup */
    ASYNC_WAIT_CTX_free(ctx);
    CHECK_EQ(cleanup_count, 2);
    CHECK_EQ(cleanup_log[0], 4);
    CHECK_EQ(cleanup_log[1], 1);
    CHECK(cleanup_ctx_seen == ctx);

    ASYNC_WAIT_CTX_free(NULL); /* no-op */
    ASYNC_cleanup_thread();
}

/* ---- callback and status --------------------------------------------------------------------- */

static int my_callback(void *arg)
{
    return arg == NULL ? 3 : *(int *)arg;
}

static void test_callback_status(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_callback_fn cb = (ASYNC_callback_fn)ret_77;
    void *arg = (void *)&k1;
    int value = 41;

    CHECK_EQ(ASYNC_WAIT_CTX_get_status(ctx), ASYNC_STATUS_UNSUPPORTED);
    CHECK_EQ(ASYNC_WAIT_CTX_get_callback(ctx, &cb, &arg), 0);
    CHECK(cb == (ASYNC_callback_fn)ret_77 && arg == (void *)&k1); /* untouched */

    CHECK_EQ(ASYNC_WAIT_CTX_set_callback(ctx, my_callback, &value), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_callback(ctx, &cb, &arg), 1);
    CHECK(cb == my_callback);
    CHECK(arg == &value);
    CHECK_EQ(cb(arg), 41);

    CHECK_EQ(ASYNC_WAIT_CTX_set_callback(ctx, my_callback, NULL), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_callback(ctx, &cb, &arg), 1);
    CHECK(arg == NULL);
    CHECK_EQ(cb(arg), 3);

    /* A NULL callback is stored, but get_callback then reports none and leaves the outputs alone. */
    cb = NULL;
    arg = NULL;
    CHECK_EQ(ASYNC_WAIT_CTX_set_callback(ctx, NULL, &value), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_callback(ctx, &cb, &arg), 0);
    CHECK(cb == NULL && arg == NULL);

    CHECK_EQ(ASYNC_WAIT_CTX_set_callback(NULL, my_callback, NULL), 0);

    CHECK_EQ(ASYNC_WAIT_CTX_set_status(ctx, ASYNC_STATUS_EAGAIN), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_status(ctx), ASYNC_STATUS_EAGAIN);
    CHECK_EQ(ASYNC_WAIT_CTX_set_status(ctx, 42), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_status(ctx), 42);
    CHECK_EQ(ASYNC_WAIT_CTX_set_status(ctx, -7), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_status(ctx), -7);
    ASYNC_WAIT_CTX_free(ctx);
}

/* ---- ASYNC_get_wait_ctx of a finished handle ------------------------------------------------- */

static void test_get_wait_ctx_finished(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL, *kept;
    int ret = 0;

    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_once, NULL, 0), ASYNC_PAUSE);
    kept = job;
    CHECK(ASYNC_get_wait_ctx(kept) == ctx);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK(ASYNC_get_wait_ctx(kept) == NULL); /* cleared at finish */
    ASYNC_WAIT_CTX_free(ctx);
    ASYNC_cleanup_thread();
}

/* ---- several threads, each with its own pool, jobs and ctx, at the same time ------------------ */

static int thread_job(void *arg)
{
    int v = *(int *)arg;
    ASYNC_pause_job();
    ASYNC_pause_job();
    return v * 2;
}

static void *thread_main(void *arg)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *jobs[16];
    int i, round, ret, ok = 1;
    long base = (long)(intptr_t)arg;

    ok &= ASYNC_init_thread(16, 4);
    for (round = 0; round < 200; round++) {
        for (i = 0; i < 16; i++) {
            int v = (int)base + i;
            jobs[i] = NULL;
            ok &= ASYNC_start_job(&jobs[i], ctx, &ret, thread_job, &v, sizeof(v)) == ASYNC_PAUSE;
        }
        for (i = 0; i < 16; i++)
            ok &= ASYNC_start_job(&jobs[i], ctx, &ret, NULL, NULL, 0) == ASYNC_PAUSE;
        for (i = 15; i >= 0; i--)
            ok &= ASYNC_start_job(&jobs[i], ctx, &ret, NULL, NULL, 0) == ASYNC_FINISH
                  && ret == 2 * ((int)base + i) && jobs[i] == NULL;
    }
    ASYNC_cleanup_thread();
    ASYNC_WAIT_CTX_free(ctx);
    return ok ? arg : NULL;
}

static void test_threads(void)
{
    pthread_t t[4];
    void *res;
    long i;

    for (i = 0; i < 4; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)(1000 * (i + 1))), 0);
    for (i = 0; i < 4; i++) {
        CHECK_EQ(pthread_join(t[i], &res), 0);
        CHECK(res == (void *)(intptr_t)(1000 * (i + 1)));
    }
}

int main(void)
{
    test_outside();
    test_init_thread();
    test_init_twice();
    test_start_basics();
    test_args();
    test_pool();
    test_block();
    test_wait_ctx_fds();
    test_callback_status();
    test_get_wait_ctx_finished();
    test_threads();
    return t_report("api");
}
