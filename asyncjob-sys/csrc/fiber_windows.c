/*
 * asyncjob fiber backend for Windows: the operating system's Fibers.
 *
 * The OS owns each fiber's stack (CreateFiberEx reserves it, with its own guard page), so
 * asyncjob_fiber_uses_caller_stack() is 0, asyncjob_fiber_stack_reserve() is 0, stack_base is ignored
 * and asyncjob_stack_alloc() answers ENOTSUP. The asyncjob_fiber struct lives on the heap and carries
 * the value handed over by asyncjob_fiber_switch(), since SwitchToFiber() passes nothing.
 *
 * Floating-point control state (rounding mode, exception masks) belongs to each fiber, as in the asm
 * backends: every fiber, the thread's one included, is made with FIBER_FLAG_FLOAT_SWITCH, and on x86
 * the switch also saves and restores MXCSR and the x87 control word itself, because Wine (the CI's
 * Windows) ignores that flag. A new fiber starts with its creator's control state.
 *
 * Thread-local storage and thread exit. Rust std (and the CRT) run a thread's TLS destructors from a
 * fiber-local-storage (FLS) callback, and FLS values belong to the fiber that set them: if the first
 * FlsSetValue of a thread happened while a job fiber was running, DeleteFiber() of that job would run
 * the whole thread's TLS teardown while the thread lives on. This is avoided, not detected:
 *   - A thread becomes a fiber (asyncjob_thread_fiber) only through the Rust crate's per-thread pool,
 *     a thread_local with a destructor that is created, on the thread fiber, before any job fiber
 *     exists. So the thread's teardown hook is registered on the thread fiber, whose FLS data is the
 *     thread's own and stays with the thread when it is converted back.
 *   - Job fibers are deleted only from another fiber (normally the thread fiber), never by
 *     themselves, so DeleteFiber never ends the thread; their own FLS data (per-fiber CRT state)
 *     is released by it, as intended.
 *   - The pool's destructor runs at thread exit on the thread fiber, frees the remaining jobs and
 *     calls asyncjob_thread_fiber_release(), which undoes ConvertThreadToFiberEx. The thread thus
 *     ends as the plain thread it started as.
 * A thread that already was a fiber when asyncjob_thread_fiber() was first called is adopted and
 * never converted back: whoever converted it owns that.
 *
 * Thread-local variables here use _Thread_local (mingw-w64 gcc silently ignores __declspec(thread))
 * except under MSVC, whose C mode spells it __declspec(thread).
 */
#ifndef WIN32_LEAN_AND_MEAN
#  define WIN32_LEAN_AND_MEAN
#endif
#ifndef _WIN32_WINNT
#  define _WIN32_WINNT 0x0600 /* ConvertThreadToFiberEx, IsThreadAFiber: Vista and later */
#endif
#include <windows.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asyncjob_fiber.h"

#ifndef ENOTSUP
#  define ENOTSUP 129 /* the value of MSVC's and mingw-w64's errno.h */
#endif

/* MXCSR: wherever SSE is there (MSVC's intrinsics need no -msse; 32-bit gcc only with SSE on). */
#if defined(__x86_64__) || defined(_M_X64) || defined(_M_IX86) || (defined(__i386__) && defined(__SSE__))
#  include <xmmintrin.h>
#  define AJ_MXCSR_SWITCH 1
#endif
/* x87 control word: gcc/clang only. MSVC has no inline asm, and x64 code it compiles never uses
   the x87 unit. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#  define AJ_X87_SWITCH 1
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#  define AJ_THREAD_LOCAL __declspec(thread)
#else
#  define AJ_THREAD_LOCAL _Thread_local
#endif

struct asyncjob_fiber {
    LPVOID handle;               /* the OS fiber */
    void *value;                 /* delivered by the switch that resumes this fiber */
    asyncjob_fiber_entry entry;  /* the function of the fiber's next run; NULL for a thread fiber */
    void *arg;
    int finished;                /* 1 from asyncjob_fiber_finish until its run's function returned */
    unsigned int mxcsr;          /* floating-point control state, saved while switched out */
    unsigned short x87_cw;
};

static void fp_save(asyncjob_fiber *f) {
    f->mxcsr = 0;
    f->x87_cw = 0;
#if defined(AJ_MXCSR_SWITCH)
    f->mxcsr = _mm_getcsr();
#endif
#if defined(AJ_X87_SWITCH)
    __asm__ volatile("fnstcw %0" : "=m"(f->x87_cw));
#endif
}

static void fp_restore(const asyncjob_fiber *f) {
#if defined(AJ_MXCSR_SWITCH)
    _mm_setcsr(f->mxcsr);
#endif
#if defined(AJ_X87_SWITCH)
    __asm__ volatile("fldcw %0" : : "m"(f->x87_cw));
#endif
    (void)f;
}

enum thread_state {
    THREAD_PLAIN = 0,     /* not prepared */
    THREAD_CONVERTED = 1, /* we called ConvertThreadToFiberEx: release converts back */
    THREAD_ADOPTED = 2    /* it already was a fiber: release only forgets it */
};

static AJ_THREAD_LOCAL struct asyncjob_fiber thread_fiber;
static AJ_THREAD_LOCAL int thread_state;

/* GetCurrentFiber() is an inline read of the TEB (gs:[0x20]); gcc 12 mistakes that for an access to
   a zero-sized object and warns under -Warray-bounds. */
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Warray-bounds"
#endif
static LPVOID current_fiber(void) { return GetCurrentFiber(); }
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic pop
#endif

const char *asyncjob_fiber_backend(void) { return "windows-fibers"; }

int asyncjob_fiber_is_capable(void) { return 1; }

int asyncjob_fiber_uses_caller_stack(void) { return 0; }

size_t asyncjob_fiber_stack_reserve(void) { return 0; }

asyncjob_fiber *asyncjob_thread_fiber(void) {
    if (thread_state != THREAD_PLAIN) {
        return &thread_fiber;
    }
    LPVOID handle;
    int state;
    if (IsThreadAFiber()) {
        handle = current_fiber();
        state = THREAD_ADOPTED;
    } else {
        handle = ConvertThreadToFiberEx(NULL, FIBER_FLAG_FLOAT_SWITCH);
        state = THREAD_CONVERTED;
    }
    if (handle == NULL) {
        return NULL;
    }
    thread_fiber.handle = handle;
    thread_fiber.value = NULL;
    thread_fiber.entry = NULL;
    thread_fiber.arg = NULL;
    thread_state = state;
    return &thread_fiber;
}

void asyncjob_thread_fiber_release(void) {
    if (thread_state == THREAD_CONVERTED) {
        /* Only fails when the thread is not a fiber, which THREAD_CONVERTED rules out. */
        (void)ConvertFiberToThread();
    }
    thread_state = THREAD_PLAIN;
    thread_fiber.handle = NULL;
}

static void entry_returned(void) {
    static const char msg[] = "asyncjob: a fiber entry function returned; aborting\n";
    fputs(msg, stderr);
    fflush(stderr);
    abort();
}

/* First code of every fiber. Returning from a fiber procedure would end the thread, so never do. */
static VOID CALLBACK fiber_start(LPVOID param) {
    asyncjob_fiber *self = (asyncjob_fiber *)param;
    fp_restore(self);
    /* A stack cannot be restarted here, so the fiber's runs are this loop's rounds: a run's function
       returns after the finish that ended it was resumed by a start, which set the next one. */
    for (;;) {
        self->entry(self->arg, self->value);
        if (!self->finished) {
            entry_returned();
        }
        self->finished = 0;
    }
}

asyncjob_fiber *asyncjob_fiber_create(void *stack_base, size_t stack_size, asyncjob_fiber_entry entry,
                                      void *arg) {
    (void)stack_base; /* the OS provides the stack */
    if (entry == NULL || stack_size < 4096 || (stack_size & 15u) != 0) {
        return NULL;
    }
    asyncjob_fiber *fiber = (asyncjob_fiber *)malloc(sizeof *fiber);
    if (fiber == NULL) {
        return NULL;
    }
    fiber->value = NULL;
    fiber->entry = entry;
    fiber->arg = arg;
    fiber->finished = 0;
    fp_save(fiber); /* the creator's control state is the new fiber's first one */
    /* Commit 0: the executable's default initial commit; the rest of the reservation is committed
       page by page as the fiber's stack grows past its guard page. */
    fiber->handle = CreateFiberEx(0, stack_size, FIBER_FLAG_FLOAT_SWITCH, fiber_start, fiber);
    if (fiber->handle == NULL) {
        free(fiber);
        return NULL;
    }
    return fiber;
}

void *asyncjob_fiber_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    fp_save(from);
    to->value = value;
    SwitchToFiber(to->handle);
    fp_restore(from);
    /* Whoever resumed us stored its value in our struct before switching. */
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
    /* A thread fiber is not ours to free (contract); the calling thread's own one is cheap to spot. */
    if (fiber == NULL || fiber == &thread_fiber) {
        return;
    }
    /* Never the running fiber (contract), so DeleteFiber only frees its stack and FLS data. */
    DeleteFiber(fiber->handle);
    free(fiber);
}

/* ---- Stacks: the OS owns them ---------------------------------------------------------------------- */

size_t asyncjob_page_size(void) {
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    return (size_t)info.dwPageSize;
}

int asyncjob_stack_alloc(size_t size, asyncjob_stack *out) {
    (void)size;
    if (out != NULL) {
        memset(out, 0, sizeof *out);
    }
    return ENOTSUP;
}

void asyncjob_stack_free(asyncjob_stack *stack) {
    /* asyncjob_stack_alloc never succeeds here, so there is nothing to give back. */
    (void)stack;
}
