/*
 * The portable POSIX fiber backend.
 *
 * A fiber's first entry goes through getcontext/makecontext/setcontext; every later switch is a
 * _setjmp/_longjmp pair, which costs no signal-mask system call (the approach of OpenSSL's
 * crypto/async/arch/async_posix.c). Where longjmp across stacks is unsafe, that is with shadow
 * stacks (__CET__) or with clang and BTI, every switch uses swapcontext instead, which the C library
 * keeps consistent with those features.
 *
 * The fiber struct lives in the top asyncjob_fiber_stack_reserve() bytes of its stack, so creating a
 * fiber allocates nothing. The thread fiber is a _Thread_local struct.
 *
 * _setjmp does not save the floating-point control state that the ABI makes callee-saved (x86 MXCSR
 * control bits and x87 control word, AArch64 FPCR), so the switch saves and restores it itself.
 */
/* glibc's fortified longjmp rejects jumps to another stack. */
#undef _FORTIFY_SOURCE
/* _setjmp/_longjmp and the ucontext functions are XSI; glibc and macOS hide them under strict C11. */
#if !defined(_XOPEN_SOURCE)
#  define _XOPEN_SOURCE 700
#endif
#if !defined(_DEFAULT_SOURCE)
#  define _DEFAULT_SOURCE
#endif
#if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#  define _DARWIN_C_SOURCE
#endif

#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "internal.h"

#if defined(__CET__) || (defined(__clang__) && defined(__ARM_FEATURE_BTI_DEFAULT))
#  define USE_SWAPCONTEXT 1
#else
#  define USE_SWAPCONTEXT 0
#endif

struct asyncjob_fiber {
    ucontext_t uc;   /* first entry (and every switch when USE_SWAPCONTEXT) */
    jmp_buf env;     /* later switches */
    void *value;     /* value delivered to this fiber by the switch that resumes it */
    asyncjob_fiber_entry entry; /* the function of the fiber's next run (see trampoline) */
    void *arg;
    int started;     /* 1 once the fiber was entered: env is then valid */
    int finished;    /* 1 from asyncjob_fiber_finish until its run's function has returned */
#if defined(__x86_64__) || defined(__i386__)
    uint32_t mxcsr;
    uint16_t fcw;
#elif defined(__aarch64__)
    uint64_t fpcr;
#endif
#if defined(ASYNCJOB_SANITIZERS)
    struct asyncjob__san san;
#endif
#if defined(ASYNCJOB_VALGRIND)
    unsigned valgrind_id; /* 0 when not registered (not under Valgrind) */
#endif
};

#define FIBER_RESERVE ((sizeof(struct asyncjob_fiber) + 15u) & ~(size_t)15u)

#if defined(ASYNCJOB_SANITIZERS)
_Thread_local struct asyncjob__san *asyncjob__san_prev;
#endif

static _Thread_local struct asyncjob_fiber thread_fiber;

static inline void save_fp_control(asyncjob_fiber *f) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(f->mxcsr), "=m"(f->fcw));
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    f->fpcr = v;
#else
    (void)f;
#endif
}

static inline void restore_fp_control(const asyncjob_fiber *f) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(f->mxcsr), "m"(f->fcw));
#elif defined(__aarch64__)
    __asm__ volatile("msr fpcr, %0" : : "r"(f->fpcr));
#else
    (void)f;
#endif
}

const char *asyncjob_fiber_backend(void) { return "ucontext"; }

int asyncjob_fiber_is_capable(void) { return 1; }

int asyncjob_fiber_uses_caller_stack(void) { return 1; }

size_t asyncjob_fiber_stack_reserve(void) { return FIBER_RESERVE; }

asyncjob_fiber *asyncjob_thread_fiber(void) {
    asyncjob__thread_prepare();
    thread_fiber.started = 1;
    return &thread_fiber;
}

void asyncjob_thread_fiber_release(void) { asyncjob__thread_unprepare(); }

/* makecontext passes int arguments only, so the fiber pointer arrives in two halves. */
static void trampoline(unsigned int hi, unsigned int lo) {
    uintptr_t bits = (uintptr_t)lo;
#if UINTPTR_MAX > 0xffffffffu
    bits |= (uintptr_t)hi << 32;
#else
    (void)hi;
#endif
    asyncjob_fiber *fiber = (asyncjob_fiber *)bits;
#if defined(ASYNCJOB_SANITIZERS)
    asyncjob__san_after(&fiber->san);
#endif
    /* A stack cannot be restarted here, so the fiber's runs are this loop's rounds: a run's function
       returns after the finish that ended it was resumed by a start, which set the next one. */
    for (;;) {
        fiber->entry(fiber->arg, fiber->value);
        if (!fiber->finished) {
            asyncjob__fiber_returned();
        }
        fiber->finished = 0;
    }
}

asyncjob_fiber *asyncjob_fiber_create(void *stack_base, size_t stack_size, asyncjob_fiber_entry entry,
                                      void *arg) {
    if (stack_base == NULL || entry == NULL || ((uintptr_t)stack_base & 15u) != 0 || (stack_size & 15u) != 0 ||
        stack_size < 4096 || stack_size <= FIBER_RESERVE + 1024 ||
        (uintptr_t)stack_base + stack_size < (uintptr_t)stack_base) {
        return NULL;
    }
    /* volatile: getcontext "returns twice" as far as the compiler knows (it never does here, because
       makecontext rewrites the context before anything resumes it). */
    asyncjob_fiber *volatile fiber =
        (asyncjob_fiber *)(void *)((char *)stack_base + stack_size - FIBER_RESERVE);
    memset(fiber, 0, sizeof *fiber);
    if (getcontext(&fiber->uc) != 0) {
        return NULL;
    }
    fiber->uc.uc_stack.ss_sp = stack_base;
    fiber->uc.uc_stack.ss_size = stack_size - FIBER_RESERVE;
    fiber->uc.uc_link = NULL;
    fiber->entry = entry;
    fiber->arg = arg;
    uintptr_t bits = (uintptr_t)fiber;
#if UINTPTR_MAX > 0xffffffffu
    unsigned int hi = (unsigned int)(bits >> 32);
#else
    unsigned int hi = 0;
#endif
    unsigned int lo = (unsigned int)(bits & 0xffffffffu);
    makecontext(&fiber->uc, (void (*)(void))trampoline, 2, hi, lo);
#if defined(ASYNCJOB_SANITIZERS)
    asyncjob__san_register(&fiber->san, stack_base, stack_size);
#endif
#if defined(ASYNCJOB_VALGRIND)
    fiber->valgrind_id = asyncjob__valgrind_register(stack_base, stack_size);
#endif
    return fiber;
}

void *asyncjob_fiber_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    to->value = value;
    save_fp_control(from);
#if defined(ASYNCJOB_SANITIZERS)
    asyncjob__san_before(&from->san, &to->san);
#endif
#if USE_SWAPCONTEXT
    from->started = 1;
    to->started = 1;
    if (swapcontext(&from->uc, &to->uc) != 0) {
        abort();
    }
#else
    if (_setjmp(from->env) == 0) {
        if (to->started) {
            _longjmp(to->env, 1);
        }
        to->started = 1;
        setcontext(&to->uc);
        abort();
    }
#endif
#if defined(ASYNCJOB_SANITIZERS)
    asyncjob__san_after(&from->san);
#endif
    restore_fp_control(from);
    return from->value;
}

void *asyncjob_fiber_switch_into(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    return asyncjob_fiber_switch(from, to, value);
}

void *asyncjob_fiber_switch_back(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    return asyncjob_fiber_switch(from, to, value);
}

/* A stack cannot be restarted here: a start resumes the fiber where its finish left it (see the
   header). */
void *asyncjob_fiber_start(asyncjob_fiber *from, asyncjob_fiber *to, void *value, asyncjob_fiber_entry entry) {
    to->entry = entry;
    return asyncjob_fiber_switch(from, to, value);
}

void *asyncjob_fiber_finish(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    from->finished = 1;
    return asyncjob_fiber_switch(from, to, value);
}

void asyncjob_fiber_free(asyncjob_fiber *fiber) {
    if (fiber == NULL) {
        return;
    }
#if defined(ASYNCJOB_SANITIZERS)
    asyncjob__san_deregister(&fiber->san);
#endif
#if defined(ASYNCJOB_VALGRIND)
    asyncjob__valgrind_deregister(fiber->valgrind_id);
    fiber->valgrind_id = 0;
#endif
}
