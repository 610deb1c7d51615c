/*
 * The parts of the contract that involve libcrypto itself: errors on OpenSSL's error queue, the
 * per-job default OSSL_LIB_CTX (reference §3) and the behaviour after OPENSSL_cleanup() (§4).
 * Built against the system libcrypto alone, and against libasyncjob linked before libcrypto (the
 * library finds libcrypto's functions at run time).
 */
#include "common.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <pthread.h>

static OSSL_LIB_CTX *current_default(void)
{
    /* set0_default(NULL) reports the current default without changing it. */
    return OSSL_LIB_CTX_set0_default(NULL);
}

static void check_one_error(int lib, int reason)
{
    unsigned long e = ERR_get_error();
    CHECK_EQ(ERR_GET_LIB(e), lib);
    CHECK_EQ(ERR_GET_REASON(e), reason);
    CHECK_EQ(ERR_get_error(), 0);
}

static void test_errors(void)
{
    ERR_clear_error();
    CHECK_EQ(ASYNC_init_thread(1, 2), 0);
    check_one_error(ERR_LIB_ASYNC, ASYNC_R_INVALID_POOL_SIZE);
    CHECK_EQ(ASYNC_init_thread(0, 1), 0);
    check_one_error(ERR_LIB_ASYNC, ASYNC_R_INVALID_POOL_SIZE);
    CHECK_EQ(ASYNC_init_thread(0, 0), 1);
    CHECK_EQ(ERR_peek_error(), 0);
    ASYNC_cleanup_thread();
}

static int ret_5(void *arg)
{
    (void)arg;
    return 5;
}

/* Args too large to copy: ASYNC_ERR with OpenSSL 3.0's ASYNC / ERR_R_MALLOC_FAILURE, *job and *ret
   unchanged (3.2+ raise the malloc failure under ERR_LIB_CRYPTO instead). */
static void test_huge_args_error(void)
{
    static char args[8];
    ASYNC_JOB *job = NULL;
    int ret = -1;

    ERR_clear_error();
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, ret_5, args, (size_t)-1), ASYNC_ERR);
    CHECK(job == NULL);
    CHECK_EQ(ret, -1);
    check_one_error(ERR_LIB_ASYNC, ERR_R_MALLOC_FAILURE);
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, ret_5, args, sizeof(args)), ASYNC_FINISH);
    CHECK_EQ(ret, 5);
    CHECK_EQ(ERR_peek_error(), 0);
    ASYNC_cleanup_thread();
}

static OSSL_LIB_CTX *global_ctx, *l1, *l2;
static int libctx_failures;

static int libctx_job(void *arg)
{
    (void)arg;
    /* The job inherits the caller's default at its first start. */
    if (current_default() != global_ctx)
        libctx_failures++;
    OSSL_LIB_CTX_set0_default(l1);
    ASYNC_pause_job();
    /* It gets its own default back, whatever the caller did meanwhile. */
    if (current_default() != l1)
        libctx_failures++;
    OSSL_LIB_CTX_set0_default(global_ctx);
    return 1;
}

static void test_libctx(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;

    global_ctx = current_default();
    l1 = OSSL_LIB_CTX_new();
    l2 = OSSL_LIB_CTX_new();
    CHECK(global_ctx != NULL && l1 != NULL && l2 != NULL);

    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, libctx_job, NULL, 0), ASYNC_PAUSE);
    CHECK(current_default() == global_ctx); /* the job's change did not leak out */
    OSSL_LIB_CTX_set0_default(l2);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, libctx_job, NULL, 0), ASYNC_FINISH);
    CHECK(current_default() == l2); /* the caller's default at resume time is restored */
    CHECK_EQ(libctx_failures, 0);

    OSSL_LIB_CTX_set0_default(global_ctx);
    OSSL_LIB_CTX_free(l1);
    OSSL_LIB_CTX_free(l2);
    ASYNC_WAIT_CTX_free(ctx);
    ASYNC_cleanup_thread();
}

/* The first ASYNC call of the process (here, before any other) leaves the calling thread's default
   as it was, whatever the library does to learn about libcrypto. */
static void test_first_call_keeps_the_default(void)
{
    OSSL_LIB_CTX *global = current_default();
    OSSL_LIB_CTX *mine = OSSL_LIB_CTX_new();

    CHECK(mine != NULL);
    OSSL_LIB_CTX_set0_default(mine);
    CHECK(ASYNC_get_current_job() == NULL);
    CHECK(current_default() == mine);
    OSSL_LIB_CTX_set0_default(global);
    CHECK(current_default() == global);
    OSSL_LIB_CTX_free(mine);
}

/* Defaults are per thread: a job on a second thread starts with that thread's default and keeps its
   own across a pause, while a job paused on the main thread keeps the main thread's. */
static int other_thread_failures;

static int job_on_other_thread(void *arg)
{
    /* The args copy holds the pointer to [0] the thread's default, [1] the job's own. */
    OSSL_LIB_CTX **ctxs = *(OSSL_LIB_CTX ***)arg;
    if (current_default() != ctxs[0])
        other_thread_failures++;
    OSSL_LIB_CTX_set0_default(ctxs[1]);
    ASYNC_pause_job();
    if (current_default() != ctxs[1])
        other_thread_failures++;
    return 1;
}

static void *other_thread(void *arg)
{
    OSSL_LIB_CTX **ctxs = arg;
    /* A wait ctx: OpenSSL 3.0 crashes when a job started without one pauses. */
    ASYNC_WAIT_CTX *wctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;

    OSSL_LIB_CTX_set0_default(ctxs[0]);
    if (ASYNC_start_job(&job, wctx, &ret, job_on_other_thread, &ctxs, sizeof(ctxs)) != ASYNC_PAUSE)
        other_thread_failures++;
    if (current_default() != ctxs[0])
        other_thread_failures++;
    if (ASYNC_start_job(&job, wctx, &ret, job_on_other_thread, &ctxs, sizeof(ctxs)) != ASYNC_FINISH)
        other_thread_failures++;
    if (current_default() != ctxs[0])
        other_thread_failures++;
    ASYNC_WAIT_CTX_free(wctx);
    ASYNC_cleanup_thread();
    return NULL;
}

static void test_libctx_per_thread(void)
{
    OSSL_LIB_CTX *global = current_default();
    OSSL_LIB_CTX *main_job_ctx = OSSL_LIB_CTX_new(), *thread_ctx = OSSL_LIB_CTX_new(),
                 *thread_job_ctx = OSSL_LIB_CTX_new();
    OSSL_LIB_CTX *ctxs[2] = {thread_ctx, thread_job_ctx};
    ASYNC_WAIT_CTX *wctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    pthread_t t;
    int ret = 0;

    CHECK(main_job_ctx != NULL && thread_ctx != NULL && thread_job_ctx != NULL);
    l1 = main_job_ctx;
    global_ctx = global;
    libctx_failures = 0;
    /* libctx_job: inherits the global default, sets l1, pauses, expects l1 back. */
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, libctx_job, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(pthread_create(&t, NULL, other_thread, ctxs), 0);
    CHECK_EQ(pthread_join(t, NULL), 0);
    CHECK_EQ(other_thread_failures, 0);
    CHECK(current_default() == global);
    CHECK_EQ(ASYNC_start_job(&job, wctx, &ret, libctx_job, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(libctx_failures, 0);
    CHECK(current_default() == global);
    ASYNC_WAIT_CTX_free(wctx);
    OSSL_LIB_CTX_free(main_job_ctx);
    OSSL_LIB_CTX_free(thread_ctx);
    OSSL_LIB_CTX_free(thread_job_ctx);
    ASYNC_cleanup_thread();
}

static void test_after_cleanup(void)
{
    ASYNC_WAIT_CTX *ctx;
    ASYNC_JOB *job = NULL;
    OSSL_ASYNC_FD fd = -1;
    size_t n = 0;
    int ret = -1;

    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, ret_5, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, 5);
    OPENSSL_cleanup();

    ret = -1;
    CHECK_EQ(ASYNC_init_thread(0, 0), 0);
    CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, ret_5, NULL, 0), ASYNC_ERR);
    CHECK_EQ(ret, -1);
    CHECK(job == NULL);
    CHECK(ASYNC_get_current_job() == NULL);
    ASYNC_cleanup_thread();
    CHECK_EQ(ASYNC_is_capable(), 1);
    CHECK_EQ(ASYNC_pause_job(), 1);
    /* The wait ctx functions keep working. */
    ctx = ASYNC_WAIT_CTX_new();
    CHECK(ctx != NULL);
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, &n, 3, NULL, NULL), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_all_fds(ctx, &fd, &n), 1);
    CHECK_EQ(n, 1);
    CHECK_EQ(fd, 3);
    CHECK_EQ(ASYNC_WAIT_CTX_set_status(ctx, 2), 1);
    CHECK_EQ(ASYNC_WAIT_CTX_get_status(ctx), 2);
    ASYNC_WAIT_CTX_free(ctx);
}

#ifndef TEST_OPENSSL
/* Our refusals (deviations from OpenSSL, which crashes there) also queue an error. */
static int nested_rc = -1;
static int try_nested(void *arg)
{
    ASYNC_JOB *j = NULL;
    int r;
    (void)arg;
    nested_rc = ASYNC_start_job(&j, NULL, &r, ret_5, NULL, 0);
    return 1;
}

static int pause_then_1(void *arg)
{
    (void)arg;
    ASYNC_pause_job();
    return 1;
}

static void test_deviation_errors(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL, *stale;
    int ret = 0;

    ERR_clear_error();
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, pause_then_1, NULL, 0), ASYNC_PAUSE);
    stale = job;
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ERR_peek_error(), 0);
    job = stale;
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_ERR);
    check_one_error(ERR_LIB_ASYNC, ERR_R_PASSED_INVALID_ARGUMENT);

    job = NULL;
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, try_nested, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(nested_rc, ASYNC_ERR);
    check_one_error(ERR_LIB_ASYNC, ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED);

    CHECK_EQ(ASYNC_start_job(NULL, ctx, &ret, ret_5, NULL, 0), ASYNC_ERR);
    check_one_error(ERR_LIB_ASYNC, ERR_R_PASSED_NULL_PARAMETER);
    CHECK_EQ(ASYNC_WAIT_CTX_get_status(NULL), 0);
    check_one_error(ERR_LIB_ASYNC, ERR_R_PASSED_NULL_PARAMETER);
    ASYNC_WAIT_CTX_free(ctx);
    ASYNC_cleanup_thread();
}
#endif

int main(void)
{
    test_first_call_keeps_the_default();
    test_errors();
    test_huge_args_error();
    test_libctx();
    test_libctx_per_thread();
#ifndef TEST_OPENSSL
    test_deviation_errors();
#endif
    test_after_cleanup();
    return t_report("with_libcrypto");
}
