/*
 * The way OpenSSL's own users drive the API across a thread's life: create a pool, start and pause
 * jobs, resume them, tear the pool down, create it again, several times, on several threads at once.
 * Built against libasyncjob and against the system libcrypto (the same checks pass on both). CI also
 * runs it under Valgrind against the release library built without feature `sanitizers`, which once
 * made Valgrind itself die with "Valgrind received a signal 11".
 */
#include "common.h"

#include <pthread.h>

#define THREADS 4
#define CYCLES 6
#define JOBS 8

static int fd_key;

static void free_data(ASYNC_WAIT_CTX *ctx, const void *key, OSSL_ASYNC_FD fd, void *data)
{
    (void)ctx;
    (void)key;
    (void)fd;
    free(data);
}

/*
 * Registers a wait fd with heap data (allocations from the job's stack), pauses twice, touching a
 * few KiB of its stack each time, and returns the sum of its args.
 */
static int worker(void *arg)
{
    const int *in = arg;
    volatile unsigned char scratch[4096];
    int i, sum = 0;
    ASYNC_WAIT_CTX *ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());

    for (i = 0; i < (int)sizeof(scratch); i++)
        scratch[i] = (unsigned char)(i + in[0]);
    if (ctx == NULL || !ASYNC_WAIT_CTX_set_wait_fd(ctx, &fd_key, 0, malloc(64), free_data))
        return -1;
    ASYNC_pause_job();
    for (i = 0; i < (int)sizeof(scratch); i += 512)
        sum += scratch[i] == (unsigned char)(i + in[0]);
    ASYNC_pause_job();
    return in[0] + in[1] + (sum == (int)sizeof(scratch) / 512 ? 0 : 1000);
}

struct result {
    int checks, failures;
};

static void *thread_main(void *arg)
{
    struct result *r = arg;
    int cycle, i, round, ret;

    for (cycle = 0; cycle < CYCLES; cycle++) {
        ASYNC_WAIT_CTX *ctx[JOBS];
        ASYNC_JOB *job[JOBS];
        int done = 0;

        r->checks++;
        if (ASYNC_init_thread(JOBS, cycle % 2 ? JOBS / 2 : 0) != 1)
            r->failures++;
        for (i = 0; i < JOBS; i++) {
            int in[2] = {cycle * 100 + i, 7};
            ctx[i] = ASYNC_WAIT_CTX_new();
            job[i] = NULL;
            r->checks++;
            if (ASYNC_start_job(&job[i], ctx[i], &ret, worker, in, sizeof(in)) != ASYNC_PAUSE)
                r->failures++;
        }
        /* Every job is paused once; resume them round-robin until all finished. */
        for (round = 0; round < 3 && done < JOBS; round++) {
            for (i = 0; i < JOBS; i++) {
                int rc;
                if (job[i] == NULL)
                    continue;
                rc = ASYNC_start_job(&job[i], ctx[i], &ret, worker, NULL, 0);
                r->checks++;
                if (rc == ASYNC_FINISH) {
                    done++;
                    if (ret != cycle * 100 + i + 7)
                        r->failures++;
                } else if (rc != ASYNC_PAUSE) {
                    r->failures++;
                    job[i] = NULL;
                }
            }
        }
        r->checks++;
        if (done != JOBS)
            r->failures++;
        for (i = 0; i < JOBS; i++)
            ASYNC_WAIT_CTX_free(ctx[i]);
        ASYNC_cleanup_thread();
    }
    return NULL;
}

int main(void)
{
    pthread_t t[THREADS];
    struct result r[THREADS];
    int i;

    memset(r, 0, sizeof(r));
    for (i = 0; i < THREADS; i++)
        CHECK_EQ(pthread_create(&t[i], NULL, thread_main, &r[i]), 0);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* And once more on the main thread, after the others are gone. */
    thread_main(&r[0]);
    for (i = 0; i < THREADS; i++) {
        t_checks += r[i].checks;
        t_failures += r[i].failures;
    }
    return t_report("pool_cycles");
}
