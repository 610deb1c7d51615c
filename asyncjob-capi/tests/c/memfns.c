/*
 * ASYNC_set_mem_functions / ASYNC_get_mem_functions (OpenSSL 3.2+). The lock is process-global, so
 * each scenario runs in its own process: `memfns` (default) and `memfns precreate`.
 */
#include "common.h"

#include <stdint.h>

static size_t requested_num, alloc_calls, free_calls, fail_next;
static void *last_stack;

static void *my_alloc(size_t *num)
{
    alloc_calls++;
    requested_num = *num;
    if (fail_next) {
        fail_next = 0;
        return NULL;
    }
    /* Twice the requested size: the job below needs more than 32 KiB of stack. */
    *num = 2 * *num;
    last_stack = malloc(*num);
    return last_stack;
}

static void my_free(void *p)
{
    if (p == last_stack)
        free_calls++;
    free(p);
}

/* Uses about 48 KiB of stack: only fits because my_alloc grew the stack to 64 KiB. */
static int deep_job(void *arg)
{
    volatile unsigned char big[48 * 1024];
    size_t i, sum = 0;
    (void)arg;
    for (i = 0; i < sizeof(big); i += 512)
        big[i] = (unsigned char)i;
    ASYNC_pause_job();
    for (i = 0; i < sizeof(big); i += 512)
        sum += big[i];
    return (int)(sum & 0x7fffffff);
}

static int expected_sum(void)
{
    size_t i, sum = 0;
    for (i = 0; i < 48 * 1024; i += 512)
        sum += (unsigned char)i;
    return (int)sum;
}

static void scenario_default(void)
{
    ASYNC_stack_alloc_fn a = NULL, da;
    ASYNC_stack_free_fn f = NULL, df;
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    ASYNC_JOB *job = NULL;
    int ret = 0;
    size_t num = 32768;
    void *p;

    /* Defaults are real, usable functions. */
    ASYNC_get_mem_functions(&da, &df);
    CHECK(da != NULL && df != NULL);
    p = da(&num);
    CHECK(p != NULL);
    CHECK(num >= 32768);
    if (p != NULL)
        memset(p, 0xab, num);
    df(p);
    /* Each out-parameter may be NULL. */
    ASYNC_get_mem_functions(NULL, &f);
    CHECK(f == df);
    ASYNC_get_mem_functions(&a, NULL);
    CHECK(a == da);

    /* (NULL, NULL) succeeds, changes nothing and does not lock. */
    CHECK_EQ(ASYNC_set_mem_functions(NULL, NULL), 1);
    ASYNC_get_mem_functions(&a, &f);
    CHECK(a == da && f == df);
    /* init_thread(0, 0) allocates no stack, so setting still works afterwards. */
    CHECK_EQ(ASYNC_init_thread(0, 0), 1);
    CHECK_EQ(ASYNC_set_mem_functions(my_alloc, my_free), 1);
    ASYNC_get_mem_functions(&a, &f);
    CHECK(a == my_alloc && f == my_free);

    /* A NULL allocation result: the job cannot be created, NO_JOBS. */
    fail_next = 1;
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, deep_job, NULL, 0), ASYNC_NO_JOBS);
    CHECK(job == NULL);
    CHECK_EQ(alloc_calls, 1);
    CHECK_EQ(requested_num, 32768);

    /* Then a real one, asked for 32768 bytes, grown to 64 KiB. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, deep_job, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(alloc_calls, 2);
    CHECK_EQ(requested_num, 32768);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    CHECK_EQ(ret, expected_sum());

    /* Locked now, and the pointers stay. */
    CHECK_EQ(ASYNC_set_mem_functions(da, df), 0);
    ASYNC_get_mem_functions(&a, &f);
    CHECK(a == my_alloc && f == my_free);
    /* The pooled job is reused: no new allocation. */
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, deep_job, NULL, 0), ASYNC_PAUSE);
    CHECK_EQ(alloc_calls, 2);
    CHECK_EQ(ASYNC_start_job(&job, ctx, &ret, NULL, NULL, 0), ASYNC_FINISH);
    /* cleanup_thread frees the idle stack through my_free. */
    CHECK_EQ(free_calls, 0);
    ASYNC_cleanup_thread();
    CHECK_EQ(free_calls, 1);
    CHECK_EQ(ASYNC_set_mem_functions(da, df), 0); /* never unlocked */
    ASYNC_WAIT_CTX_free(ctx);
}

static void scenario_precreate(void)
{
    /* Pre-creating a job allocates a stack, which locks customisation. */
    CHECK_EQ(ASYNC_init_thread(1, 1), 1);
    CHECK_EQ(ASYNC_set_mem_functions(my_alloc, my_free), 0);
    CHECK_EQ(alloc_calls, 0);
    ASYNC_cleanup_thread();
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "precreate") == 0) {
        scenario_precreate();
        return t_report("memfns precreate");
    }
    scenario_default();
    return t_report("memfns");
}
