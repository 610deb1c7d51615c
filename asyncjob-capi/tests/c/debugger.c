/*
 * A program for a debugger to stop in: the test driver runs it under gdb with breakpoints on the
 * switches and on the Rust halves of the entry points, and checks that each backtrace walks through
 * ASYNC_start_job or ASYNC_pause_job to the C function that called it. The job adds a wait fd
 * before it pauses, so that its resume leaves the pause work to do on the job's side (the pause's
 * second half runs). Built against libasyncjob only.
 */
#include "common.h"

static int paused_job(void *arg)
{
    (void)arg;
    ASYNC_WAIT_CTX *ctx = ASYNC_get_wait_ctx(ASYNC_get_current_job());
    CHECK(ctx != NULL);
    CHECK_EQ(ASYNC_WAIT_CTX_set_wait_fd(ctx, "debugger", 5, NULL, NULL), 1);
    CHECK_EQ(ASYNC_pause_job(), 1);
    return 7;
}

static volatile int last_result;

/* Its own function, so that a backtrace can name the code that called ASYNC_start_job. The store
   after the call keeps it from becoming a tail call. */
static int __attribute__((noinline)) resume_here(ASYNC_JOB **job, ASYNC_WAIT_CTX *ctx, int *ret)
{
    int r = ASYNC_start_job(job, ctx, ret, paused_job, NULL, 0);
    last_result = r;
    return r;
}

int main(void)
{
    ASYNC_JOB *job = NULL;
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    int ret = 0;
    CHECK(ctx != NULL);
    CHECK_EQ(resume_here(&job, ctx, &ret), ASYNC_PAUSE);
    CHECK_EQ(resume_here(&job, ctx, &ret), ASYNC_FINISH);
    CHECK_EQ(ret, 7);
    ASYNC_WAIT_CTX_free(ctx);
    return t_report("debugger");
}
