/*
 * Micro-benchmark of the C API, built once against libcrypto and once against libasyncjob; the CI
 * step prints the ratios. Each figure is the best of several timed runs, in nanoseconds per operation:
 *   pause_resume      a paused job resumed and pausing again (one round trip)
 *   start_finish      a pooled job started that returns at once
 *   start_finish_a16  the same with a 16-byte args copy
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef TEST_OPENSSL
#include <openssl/async.h>
#else
#include "asyncjob.h"
#endif

static volatile int stop;

static int ping(void *arg)
{
    (void)arg;
    while (!stop)
        ASYNC_pause_job();
    return 1;
}

static int nop(void *arg)
{
    return arg == NULL ? 0 : ((const unsigned char *)arg)[3];
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void fail(const char *what)
{
    fprintf(stderr, "bench: %s failed\n", what);
    exit(1);
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    /* Optional second argument: only "pr", "sf" or "sa" (for profiling one loop). */
    const char *only = argc > 2 ? argv[2] : "";
    int do_pr = !*only || !strcmp(only, "pr"), do_sf = !*only || !strcmp(only, "sf"),
        do_sa = !*only || !strcmp(only, "sa");
    int runs = 7, r;
    long i;
    double best_pr = 1e30, best_sf = 1e30, best_sa = 1e30;
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    unsigned char args[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    int ret;

    if (ctx == NULL || ASYNC_init_thread(4, 1) != 1)
        fail("setup");
    for (r = 0; r < runs; r++) {
        double t0, t1;

        if (!do_pr)
            goto skip_pr;
        stop = 0;
        job = NULL;
        if (ASYNC_start_job(&job, ctx, &ret, ping, NULL, 0) != ASYNC_PAUSE)
            fail("start ping");
        t0 = now_ns();
        for (i = 0; i < iters; i++)
            if (ASYNC_start_job(&job, ctx, &ret, ping, NULL, 0) != ASYNC_PAUSE)
                fail("resume");
        t1 = now_ns();
        stop = 1;
        if (ASYNC_start_job(&job, ctx, &ret, ping, NULL, 0) != ASYNC_FINISH)
            fail("finish ping");
        if ((t1 - t0) / iters < best_pr)
            best_pr = (t1 - t0) / iters;
    skip_pr:
        if (!do_sf)
            goto skip_sf;
        t0 = now_ns();
        for (i = 0; i < iters; i++) {
            job = NULL;
            if (ASYNC_start_job(&job, ctx, &ret, nop, NULL, 0) != ASYNC_FINISH)
                fail("start_finish");
        }
        t1 = now_ns();
        if ((t1 - t0) / iters < best_sf)
            best_sf = (t1 - t0) / iters;
    skip_sf:
        if (!do_sa)
            continue;
        t0 = now_ns();
        for (i = 0; i < iters; i++) {
            job = NULL;
            if (ASYNC_start_job(&job, ctx, &ret, nop, args, sizeof(args)) != ASYNC_FINISH || ret != 4)
                fail("start_finish_a16");
        }
        t1 = now_ns();
        if ((t1 - t0) / iters < best_sa)
            best_sa = (t1 - t0) / iters;
    }
    printf("pause_resume %.2f\nstart_finish %.2f\nstart_finish_a16 %.2f\n", best_pr, best_sf, best_sa);
    ASYNC_WAIT_CTX_free(ctx);
    ASYNC_cleanup_thread();
    return 0;
}
