/*
 * libasyncjob loaded with dlopen() and unloaded with dlclose(), as a plugin host would do. Running a
 * job installs the library's SIGSEGV/SIGBUS stack-overflow reporter, chained to the application's
 * handler. After dlclose() the process must handle faults as it did before: the SIGSEGV handler still
 * points into mapped code, and a fault reaches the application's own handler. (If the library's
 * code were unmapped, the kernel would kill the process with SIGSEGV on the first fault.)
 *
 * Usage: dlclose /path/to/libasyncjob.so
 * Not linked with libasyncjob; the header only gives the types.
 */
#define _GNU_SOURCE
#include "common.h"

#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

/* Under Valgrind memcheck (CI), the deliberate faults are not errors. */
#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#  endif
#endif
#if !defined(VALGRIND_DISABLE_ERROR_REPORTING)
#  define VALGRIND_DISABLE_ERROR_REPORTING
#  define VALGRIND_ENABLE_ERROR_REPORTING
#endif

typedef int (*start_job_fn)(ASYNC_JOB **, ASYNC_WAIT_CTX *, int *, int (*)(void *), void *, size_t);
typedef int (*pause_job_fn)(void);
typedef ASYNC_WAIT_CTX *(*ctx_new_fn)(void);
typedef void (*ctx_free_fn)(ASYNC_WAIT_CTX *);

static start_job_fn start_job;
static pause_job_fn pause_job;
static ctx_new_fn ctx_new;
static ctx_free_fn ctx_free;

static sigjmp_buf recover;
static volatile sig_atomic_t app_handler_runs;

static void app_handler(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)info;
    (void)context;
    app_handler_runs++;
    siglongjmp(recover, 1);
}

static int pausing_job(void *arg)
{
    (void)arg;
    pause_job();
    return 5;
}

/* Runs one job to its end on a thread of its own, which then exits: the thread's state in the
   library is gone before dlclose (glibc keeps a library loaded while a live thread has
   thread-local destructors in it). */
static void *run_one_job(void *arg)
{
    ASYNC_WAIT_CTX *ctx = ctx_new();
    ASYNC_JOB *job = NULL;
    int ret = 0, *ok = arg;

    *ok = start_job(&job, ctx, &ret, pausing_job, NULL, 0) == ASYNC_PAUSE
          && start_job(&job, ctx, &ret, NULL, NULL, 0) == ASYNC_FINISH && ret == 5;
    ctx_free(ctx);
    return NULL;
}

/* Writes to a PROT_NONE page; 1 when the application's handler recovered from the fault. */
static int fault_reaches_app_handler(void)
{
    volatile char *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int before = app_handler_runs;

    if (page == MAP_FAILED)
        return 0;
    VALGRIND_DISABLE_ERROR_REPORTING;
    if (sigsetjmp(recover, 1) == 0)
        page[0] = 1;
    VALGRIND_ENABLE_ERROR_REPORTING;
    munmap((void *)page, 4096);
    return app_handler_runs == before + 1;
}

static void *handler_now(void)
{
    struct sigaction sa;
    sigaction(SIGSEGV, NULL, &sa);
    return (sa.sa_flags & SA_SIGINFO) ? (void *)sa.sa_sigaction : (void *)sa.sa_handler;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    pthread_t t;
    Dl_info info;
    void *lib, *handler;
    int ok = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s /path/to/libasyncjob.so\n", argv[0]);
        return 2;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = app_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
    CHECK_EQ(fault_reaches_app_handler(), 1);

    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL);
    if (lib == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return t_report("dlclose");
    }
    start_job = (start_job_fn)dlsym(lib, "ASYNC_start_job");
    pause_job = (pause_job_fn)dlsym(lib, "ASYNC_pause_job");
    ctx_new = (ctx_new_fn)dlsym(lib, "ASYNC_WAIT_CTX_new");
    ctx_free = (ctx_free_fn)dlsym(lib, "ASYNC_WAIT_CTX_free");
    CHECK(start_job != NULL && pause_job != NULL && ctx_new != NULL && ctx_free != NULL);
    if (start_job == NULL || pause_job == NULL || ctx_new == NULL || ctx_free == NULL)
        return t_report("dlclose");

    CHECK_EQ(pthread_create(&t, NULL, run_one_job, &ok), 0);
    pthread_join(t, NULL);
    CHECK_EQ(ok, 1);
    /* The job's stack installed the library's reporter in front of our handler. */
    handler = handler_now();
    CHECK(handler != (void *)app_handler);
    CHECK(dladdr(handler, &info) != 0 && info.dli_fname != NULL && strstr(info.dli_fname, "libasyncjob") != NULL);
    /* ... which passes faults that are not stack overflows on to us. */
    CHECK_EQ(fault_reaches_app_handler(), 1);

    CHECK_EQ(dlclose(lib), 0);
    /* Whatever handler is installed now lies in code that is still mapped... */
    handler = handler_now();
    CHECK(dladdr(handler, &info) != 0);
    /* ... and a fault still reaches our handler, as without the library. */
    CHECK_EQ(fault_reaches_app_handler(), 1);
    return t_report("dlclose");
}
