/*
 * Private declarations shared by the POSIX parts of the shim (fiber backends and stacks).
 * Not installed, not part of the contract in asyncjob_fiber.h.
 */
#ifndef ASYNCJOB_INTERNAL_H
#define ASYNCJOB_INTERNAL_H

#include <stddef.h>
#include "asyncjob_fiber.h"

#if defined(__GNUC__) || defined(__clang__)
#  define ASYNCJOB_HIDDEN __attribute__((visibility("hidden")))
#  define ASYNCJOB_NORETURN __attribute__((noreturn))
#else
#  define ASYNCJOB_HIDDEN
#  define ASYNCJOB_NORETURN
#endif

/*
 * Per-thread preparation done by asyncjob_thread_fiber(): gives the thread an alternate signal stack
 * (when it has none) so that the stack-overflow reporter can run after a fiber hit its guard page.
 * Failure to get one is not fatal: an overflow then still ends the process with a plain SIGSEGV.
 */
ASYNCJOB_HIDDEN void asyncjob__thread_prepare(void);
/* Undoes asyncjob__thread_prepare(): frees the alternate signal stack if this library made it. */
ASYNCJOB_HIDDEN void asyncjob__thread_unprepare(void);

/* Called when a fiber's entry function returns, which the contract forbids. */
ASYNCJOB_HIDDEN ASYNCJOB_NORETURN void asyncjob__fiber_returned(void);

/* Test hook of stack_posix.c (tests/stacks.rs): the most table slots one lookup of the fault handler
   examines for a fault at `addr`, and in *found whether it finds a stack whose gap holds `addr`. */
size_t asyncjob__stack_registry_probe(const void *addr, int *found);

/* ---- Valgrind (every build that found valgrind/valgrind.h) ----------------------------------------- */

/*
 * Fiber stacks are registered with Valgrind (VALGRIND_STACK_REGISTER) so that it knows a switch from a
 * stack change and its unwinder stays within the fiber's stack; natively the client requests cost a
 * few instructions. Built without the header, nothing is registered (see asyncjob_fiber.h).
 */
#if defined(ASYNCJOB_VALGRIND)
#  include <valgrind/valgrind.h>
static inline unsigned asyncjob__valgrind_register(void *base, size_t size) {
    /* On platforms valgrind.h has no client requests for (macOS arm64, say) the macro ignores its
       arguments. */
    (void)base;
    (void)size;
    return VALGRIND_STACK_REGISTER(base, (char *)base + size);
}
static inline void asyncjob__valgrind_deregister(unsigned id) {
    if (id != 0) {
        VALGRIND_STACK_DEREGISTER(id);
    }
}
#endif

/* ---- Sanitizer support (feature `sanitizers`) ------------------------------------------------------ */

#if defined(ASYNCJOB_SANITIZERS)

#  if !defined(ASYNCJOB_ASAN)
#    if defined(__SANITIZE_ADDRESS__)
#      define ASYNCJOB_ASAN 1
#    elif defined(__has_feature)
#      if __has_feature(address_sanitizer)
#        define ASYNCJOB_ASAN 1
#      endif
#    endif
#  endif

#  if !defined(ASYNCJOB_TSAN)
#    if defined(__SANITIZE_THREAD__)
#      define ASYNCJOB_TSAN 1
#    elif defined(__has_feature)
#      if __has_feature(thread_sanitizer)
#        define ASYNCJOB_TSAN 1
#      endif
#    endif
#  endif

#  if defined(ASYNCJOB_TSAN)
/* Provided by the TSan runtime (rustc's -Zsanitizer=thread or the C compiler's -fsanitize=thread):
   every fiber gets a TSan context of its own, with its own shadow stack, and a switch (flags 0)
   orders what the fiber left did before what the fiber entered does. */
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#  endif

#  if defined(ASYNCJOB_ASAN)
/* Provided by the ASan runtime (rustc's -Zsanitizer=address or the C compiler's -fsanitize=address). */
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
#  endif

/* What the sanitizers need to know about one fiber's stack. */
struct asyncjob__san {
    void *fake_stack;       /* ASan's fake stack of this fiber while it is switched out */
    const void *bottom;     /* lowest byte of the stack (for the thread fiber: learnt on first switch) */
    size_t size;
    void *tsan_fiber;       /* TSan's context (for the thread fiber: learnt on its first switch) */
    int tsan_owned;         /* 1 when tsan_fiber was made by asyncjob__san_register */
};

/* The fiber that performed the latest switch on this thread, so the arriving side can record the
   bounds of the stack it left (the only way to learn the thread stack's bounds from ASan). */
extern _Thread_local struct asyncjob__san *asyncjob__san_prev;

static inline void asyncjob__san_register(struct asyncjob__san *s, void *base, size_t size) {
    s->fake_stack = NULL;
    s->bottom = base;
    s->size = size;
    s->tsan_fiber = NULL;
    s->tsan_owned = 0;
#  if defined(ASYNCJOB_TSAN)
    s->tsan_fiber = __tsan_create_fiber(0);
    s->tsan_owned = 1;
#  endif
}

/* Only for fibers that asyncjob__san_register set up, never for a thread fiber. */
static inline void asyncjob__san_deregister(struct asyncjob__san *s) {
#  if defined(ASYNCJOB_TSAN)
    if (s->tsan_owned && s->tsan_fiber != NULL) {
        __tsan_destroy_fiber(s->tsan_fiber);
    }
#  endif
    s->tsan_fiber = NULL;
    s->tsan_owned = 0;
}

static inline void asyncjob__san_before(struct asyncjob__san *from, struct asyncjob__san *to) {
    asyncjob__san_prev = from;
#  if defined(ASYNCJOB_ASAN)
    __sanitizer_start_switch_fiber(&from->fake_stack, to->bottom, to->size);
#  endif
#  if defined(ASYNCJOB_TSAN)
    /* A thread fiber leaves for the first time: its context is the thread's own. */
    if (from->tsan_fiber == NULL) {
        from->tsan_fiber = __tsan_get_current_fiber();
    }
    /* Immediately before the switch: from here on TSan attributes everything to `to`. */
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#  endif
#  if !defined(ASYNCJOB_ASAN) && !defined(ASYNCJOB_TSAN)
    (void)to;
#  endif
}

/* asyncjob__san_before for a fiber whose run ends for good (asyncjob_fiber_finish): ASan frees its
   fake stack instead of keeping it for a resume that never comes. */
static inline void asyncjob__san_before_end(struct asyncjob__san *from, struct asyncjob__san *to) {
#  if defined(ASYNCJOB_ASAN)
    asyncjob__san_prev = from;
    from->fake_stack = NULL;
    __sanitizer_start_switch_fiber(NULL, to->bottom, to->size);
#    if defined(ASYNCJOB_TSAN)
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#    endif
#  else
    asyncjob__san_before(from, to);
#  endif
}

/* Runs on the arriving side: `self` is the fiber that now runs. */
static inline void asyncjob__san_after(struct asyncjob__san *self) {
    struct asyncjob__san *prev = asyncjob__san_prev;
#  if defined(ASYNCJOB_ASAN)
    const void *bottom = NULL;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(self->fake_stack, &bottom, &size);
    if (prev != NULL && bottom != NULL) {
        prev->bottom = bottom;
        prev->size = size;
    }
#  else
    (void)self;
    (void)prev;
#  endif
}

#endif /* ASYNCJOB_SANITIZERS */

#endif /* ASYNCJOB_INTERNAL_H */
