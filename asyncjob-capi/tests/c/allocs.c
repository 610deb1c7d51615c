/*
 * Heap allocations per start/pause/resume/finish in steady state: the project target is zero. The
 * program interposes malloc and friends (a definition in the executable wins over libc's for every
 * library, including libasyncjob's Rust allocator) and counts calls during a measured loop that
 * starts jobs with a 16-byte args copy and a wait ctx, pauses, resumes and finishes them, with one
 * and with several jobs paused at once.
 * With -DTEST_OPENSSL it prints OpenSSL's count for comparison instead of checking it.
 */
#include "common.h"

#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static int counting;
static long allocations;

void *malloc(size_t n)
{
    allocations += counting;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    allocations += counting;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    allocations += counting;
    return __libc_realloc(p, n);
}
void *memalign(size_t al, size_t n)
{
    allocations += counting;
    return __libc_memalign(al, n);
}
void *aligned_alloc(size_t al, size_t n)
{
    allocations += counting;
    return __libc_memalign(al, n);
}
int posix_memalign(void **out, size_t al, size_t n)
{
    allocations += counting;
    *out = __libc_memalign(al, n);
    return *out == NULL ? 12 : 0;
}
void free(void *p)
{
    __libc_free(p);
}

static int pause_and_sum(void *arg)
{
    const unsigned char *a = arg;
    ASYNC_pause_job();
    return a[0] + a[15];
}

/* One round: `width` jobs started (each pauses), then each resumed to FINISH. */
static int round_trip(ASYNC_WAIT_CTX *ctx, int width)
{
    ASYNC_JOB *jobs[8] = {0};
    unsigned char args[16] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
    int i, ret, ok = 1;

    for (i = 0; i < width; i++)
        ok &= ASYNC_start_job(&jobs[i], ctx, &ret, pause_and_sum, args, sizeof(args)) == ASYNC_PAUSE;
    for (i = width - 1; i >= 0; i--)
        ok &= ASYNC_start_job(&jobs[i], ctx, &ret, pause_and_sum, NULL, 0) == ASYNC_FINISH && ret == 3;
    return ok;
}

int main(void)
{
    ASYNC_WAIT_CTX *ctx = ASYNC_WAIT_CTX_new();
    int width, i, ok = 1;

    /* The counter sees the library's allocations: the very first job needs memory. */
    counting = 1;
    ok &= round_trip(ctx, 1);
    counting = 0;
    CHECK(allocations > 0);

    for (width = 1; width <= 8; width *= 2) {
        /* Warm-up: the pool, the paused-job table and any lazily created state reach their size. */
        for (i = 0; i < 4; i++)
            ok &= round_trip(ctx, width);
        allocations = 0;
        counting = 1;
        for (i = 0; i < 1000; i++)
            ok &= round_trip(ctx, width);
        counting = 0;
        CHECK(ok);
#ifdef TEST_OPENSSL
        printf("openssl: %ld allocations for %d jobs x 1000 rounds\n", allocations, width);
#else
        CHECK_EQ(allocations, 0);
#endif
    }
    ASYNC_WAIT_CTX_free(ctx);
    ASYNC_cleanup_thread();
    return t_report("allocs");
}
