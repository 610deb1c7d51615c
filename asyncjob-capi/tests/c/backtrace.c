/*
 * Unwinding out of a job through the entry points: a backtrace taken inside a job, on its first run
 * and after it was resumed, walks through ASYNC_start_job to the code that called it. Debuggers,
 * profilers and crash reporters rely on this; it needs correct unwind information for every frame
 * on the way, including the entry points' own (on x86_64 Linux they are written in assembly). Built
 * against libasyncjob only: OpenSSL's jobs start on a makecontext stack whose frames end there.
 */
#include "common.h"

#include <stdint.h>
#include <unwind.h>

#define MAX_FRAMES 64

struct trace {
    uintptr_t ips[MAX_FRAMES];
    int count;
};

static struct trace on_start, after_resume;

static _Unwind_Reason_Code collect(struct _Unwind_Context *ctx, void *arg)
{
    struct trace *t = arg;
    if (t->count == MAX_FRAMES)
        return _URC_END_OF_STACK;
    t->ips[t->count++] = (uintptr_t)_Unwind_GetIP(ctx);
    return _URC_NO_REASON;
}

static void __attribute__((noinline)) take(struct trace *t)
{
    t->count = 0;
    _Unwind_Backtrace(collect, t);
}

static int traced_job(void *arg)
{
    (void)arg;
    take(&on_start);
    ASYNC_pause_job();
    take(&after_resume);
    return 1;
}

static volatile int last_result;

/* One ASYNC_start_job call each, in small functions of their own, so that a trace can be matched
   against their code: whether it passed through them is whether it holds a return address there.
   The store after the call keeps it from becoming a tail call. */
static int __attribute__((noinline)) start_here(ASYNC_JOB **job, int *ret)
{
    int r = ASYNC_start_job(job, NULL, ret, traced_job, NULL, 0);
    last_result = r;
    return r;
}

static int __attribute__((noinline)) resume_here(ASYNC_JOB **job, int *ret)
{
    int r = ASYNC_start_job(job, NULL, ret, traced_job, NULL, 0);
    last_result = r;
    return r;
}

/* Whether the trace holds a return address in the first 64 bytes of `fn` (each function above is
   far smaller than that). */
static int passes_through(const struct trace *t, int (*fn)(ASYNC_JOB **, int *))
{
    uintptr_t start = (uintptr_t)fn;
    for (int i = 0; i < t->count; i++)
        if (t->ips[i] > start && t->ips[i] - start < 64)
            return 1;
    return 0;
}

int main(void)
{
    ASYNC_JOB *job = NULL;
    int ret = 0;
    CHECK_EQ(start_here(&job, &ret), ASYNC_PAUSE);
    CHECK_EQ(resume_here(&job, &ret), ASYNC_FINISH);
    CHECK_EQ(ret, 1);
    CHECK(on_start.count > 2);
    CHECK(passes_through(&on_start, start_here));
    CHECK(after_resume.count > 2);
    CHECK(passes_through(&after_resume, resume_here));
    /* Not through the other call: each trace went up its own call site. */
    CHECK(!passes_through(&on_start, resume_here));
    CHECK(!passes_through(&after_resume, start_here));
    return t_report("backtrace");
}
