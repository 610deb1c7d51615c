/*
 * Reliability cases where libasyncjob must do what OpenSSL does (built against libasyncjob and
 * against the system libcrypto; the same checks pass on both):
 *   - the stack of a job still paused when its thread exits stays valid for good (OpenSSL leaks
 *     it): a local whose address the job published keeps its contents while other threads run many
 *     jobs of their own;
 *   - args too large to copy (the copy's allocation fails, or its size overflows) give ASYNC_ERR,
 *     and nothing else changes.
 * With an argument, one case on its own:
 *   ctx_of_leaked_job  a job paused at thread exit holds a wait ctx that the application freed:
 *                      once the thread is gone, the ctx's fd cleanup has run, once (OpenSSL runs
 *                      it at the free; libasyncjob defers it while the job can still use the ctx);
 * and the cases that must end the process (run in a child by the test driver):
 *   pthread_exit    a job calls pthread_exit(NULL);
 *   pthread_cancel  a job cancels its own thread (deferred cancellation) and reaches a
 *                   cancellation point.
 * A thread cannot end on a job's stack: both must abort with a message, never unwind the job.
 */
#include "common.h"

#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

/* ---- The stack of a job paused at thread exit stays valid ------------------------------------- */

#define PATTERN_BYTES 2048
#define CHURN_THREADS 4
#define CHURN_ROUNDS 40
#define CHURN_JOBS 16

static unsigned char *volatile published;

static unsigned char pattern(int i)
{
    return (unsigned char)(i * 7 + 3);
}

/* Publishes the address of a local (as a wait node in a global list would be), then pauses. */
static int publish_and_pause(void *arg)
{
    unsigned char local[PATTERN_BYTES];
    int i;

    (void)arg;
    for (i = 0; i < PATTERN_BYTES; i++)
        local[i] = pattern(i);
    published = local;
    ASYNC_pause_job();
    /* Never resumed. */
    published = NULL;
    return local[1];
}

static void *start_and_exit(void *arg)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;

    *(int *)arg = ASYNC_start_job(&job, ctx, &ret, publish_and_pause, NULL, 0);
    ASYNC_WAIT_CTX_free(ctx);
    /* The thread ends with the job paused. */
    return NULL;
}

/* Fills a good part of its stack, pauses, fills it again. */
static int fill_stack(void *arg)
{
    volatile unsigned char big[12 * 1024];
    unsigned i;

    (void)arg;
    for (i = 0; i < sizeof(big); i++)
        big[i] = 0xEE;
    ASYNC_pause_job();
    for (i = 0; i < sizeof(big); i++)
        big[i] = (unsigned char)i;
    return big[5];
}

/* Many jobs at once, repeatedly, with the pool emptied between rounds so that stacks are freed and
   allocated again: the freed stacks of this process would be handed out here. */
static void *churn(void *arg)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    int round, i, ret, *bad = arg;

    for (round = 0; round < CHURN_ROUNDS; round++) {
        ASYNC_JOB *jobs[CHURN_JOBS];
        for (i = 0; i < CHURN_JOBS; i++) {
            jobs[i] = NULL;
            if (ASYNC_start_job(&jobs[i], ctx, &ret, fill_stack, NULL, 0) != ASYNC_PAUSE)
                (*bad)++;
        }
        for (i = 0; i < CHURN_JOBS; i++)
            if (jobs[i] != NULL && ASYNC_start_job(&jobs[i], ctx, &ret, NULL, NULL, 0) != ASYNC_FINISH)
                (*bad)++;
        ASYNC_cleanup_thread();
    }
    ASYNC_WAIT_CTX_free(ctx);
    return NULL;
}

static void test_paused_stack_survives_thread_exit(void)
{
    pthread_t t[CHURN_THREADS];
    int started = -1, bad[CHURN_THREADS + 1], i, intact = 0;

    memset(bad, 0, sizeof(bad));
    CHECK_EQ(pthread_create(&t[0], NULL, start_and_exit, &started), 0);
    pthread_join(t[0], NULL);
    CHECK_EQ(started, ASYNC_PAUSE);
    CHECK(published != NULL);
    if (published == NULL)
        return;
    for (i = 0; i < CHURN_THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, churn, &bad[i]), 0);
    churn(&bad[CHURN_THREADS]);
    for (i = 0; i < CHURN_THREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i <= CHURN_THREADS; i++)
        CHECK_EQ(bad[i], 0);
    /* The paused job's local still holds what it wrote. */
    for (i = 0; i < PATTERN_BYTES; i++)
        intact += published[i] == pattern(i);
    CHECK_EQ(intact, PATTERN_BYTES);
}

/* ---- Args too large to copy -------------------------------------------------------------------- */

static int huge_called;
static int count_call(void *arg)
{
    (void)arg;
    huge_called++;
    return 1;
}

static void test_huge_args(void)
{
    /* The size is checked (allocation) before anything is read: a small buffer is enough. */
    static char args[16];
    static const size_t sizes[] = {SIZE_MAX, SIZE_MAX / 2 + 1, (size_t)1 << 62, (size_t)1 << 50};
    ASYNC_JOB *job = NULL, *first = NULL, *again = NULL;
    unsigned k;
    int ret = -7;

    CHECK_EQ(ASYNC_init_thread(1, 0), 1);
    /* The pool slot that a failed start borrows and gives back. */
    CHECK_EQ(ASYNC_start_job(&first, NULL, &ret, count_call, NULL, 0), ASYNC_FINISH);
    ret = -7;
    huge_called = 0;
    for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        job = NULL;
        CHECK_EQ(ASYNC_start_job(&job, NULL, &ret, count_call, args, sizes[k]), ASYNC_ERR);
        CHECK(job == NULL);
    }
    CHECK_EQ(ret, -7);
    CHECK_EQ(huge_called, 0);
    /* The pool (one job) is intact: a normal start with args still works. */
    CHECK_EQ(ASYNC_start_job(&again, NULL, &ret, count_call, args, sizeof(args)), ASYNC_FINISH);
    CHECK_EQ(ret, 1);
    CHECK_EQ(huge_called, 1);
    ASYNC_cleanup_thread();
}

/* ---- The wait ctx of a job paused at thread exit ----------------------------------------------- */

static int cleanups_run;
static void count_cleanup(ASYNC_WAIT_CTX *c, const void *k, OSSL_ASYNC_FD fd, void *d)
{
    (void)c;
    (void)k;
    (void)fd;
    (void)d;
    cleanups_run++;
}

static int pause_once(void *arg)
{
    (void)arg;
    ASYNC_pause_job();
    return 1;
}

static int fd_key;
static void *start_free_ctx_and_exit(void *arg)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;

    *(int *)arg = ASYNC_start_job(&job, ctx, &ret, pause_once, NULL, 0);
    ASYNC_WAIT_CTX_set_wait_fd(ctx, &fd_key, 3, NULL, count_cleanup);
    ASYNC_WAIT_CTX_free(ctx);
    return NULL;
}

static int ctx_of_leaked_job(void)
{
    pthread_t t;
    int started = -1;

    CHECK_EQ(pthread_create(&t, NULL, start_free_ctx_and_exit, &started), 0);
    pthread_join(t, NULL);
    CHECK_EQ(started, ASYNC_PAUSE);
    CHECK_EQ(cleanups_run, 1);
    return t_report("ctx_of_leaked_job");
}

/* ---- A thread ending from inside a job (child modes) ------------------------------------------- */

static int exit_from_job(void *arg)
{
    (void)arg;
    pthread_exit(NULL);
    return 0;
}

static int cancel_from_job(void *arg)
{
    (void)arg;
    pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, NULL);
    pthread_cancel(pthread_self());
    for (;;)
        pthread_testcancel(); /* a cancellation point: the forced unwind starts here */
    return 0;
}

static void *run_job_in_thread(void *arg)
{
    ASYNC_JOB *job = NULL;
    int ret = 0;

    ASYNC_start_job(&job, NULL, &ret, (int (*)(void *))arg, NULL, 0);
    return NULL;
}

static int child_mode(const char *mode)
{
    int (*fn)(void *) = strcmp(mode, "pthread_exit") == 0 ? exit_from_job : cancel_from_job;
    pthread_t t;

    if (pthread_create(&t, NULL, run_job_in_thread, (void *)fn) != 0)
        return 2;
    pthread_join(t, NULL);
    /* Reached only when the thread ended without taking the process down. */
    printf("%s: the thread ended and the process went on\n", mode);
    return 3;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "ctx_of_leaked_job") == 0)
        return ctx_of_leaked_job();
    if (argc > 1)
        return child_mode(argv[1]);
    test_paused_stack_survives_thread_exit();
    test_huge_args();
    return t_report("reliability");
}
