/*
 * The C half of the hand-written asm backends (arch/x86_64_sysv.S, arch/aarch64_aapcs64.S).
 *
 * The asm provides the switch and the first-entry frame (see the contract at the top of
 * arch/x86_64_sysv.S); this file provides the rest of asyncjob_fiber.h. A fiber is a small struct that
 * lives in the top asyncjob_fiber_stack_reserve() bytes of its own stack, so creating one allocates
 * nothing. The thread fiber is a _Thread_local struct that only ever holds a saved stack pointer.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct asyncjob_fiber {
    void *sp;   /* offset 0, read and written by the asm: saved stack pointer while suspended */
    void *link; /* offset sizeof(void *), written by the asm: stack pointer of the last resumer */
    void *start_arg; /* offset 2 * sizeof(void *), read by the asm's start: the first argument of a run */
#if defined(ASYNCJOB_SANITIZERS)
    asyncjob_fiber_entry entry;
    void *arg;
    struct asyncjob__san san;
#endif
#if defined(ASYNCJOB_VALGRIND)
    unsigned valgrind_id; /* 0 when not registered (not under Valgrind) */
#endif
};

_Static_assert(offsetof(struct asyncjob_fiber, sp) == 0, "the asm reads sp at offset 0");
_Static_assert(offsetof(struct asyncjob_fiber, link) == sizeof(void *), "the asm writes link at offset 8");
_Static_assert(offsetof(struct asyncjob_fiber, start_arg) == 2 * sizeof(void *), "the asm reads start_arg at 16");

#define FIBER_RESERVE ((sizeof(struct asyncjob_fiber) + 15u) & ~(size_t)15u)

void *asyncjob__arch_init_stack(void *top, void (*fn)(void *, void *), void *arg);

#if defined(ASYNCJOB_SANITIZERS)
void *asyncjob__arch_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value);
void *asyncjob__arch_switch_into(asyncjob_fiber *from, asyncjob_fiber *to, void *value);
void *asyncjob__arch_switch_back(asyncjob_fiber *from, asyncjob_fiber *to, void *value);
void *asyncjob__arch_start(asyncjob_fiber *from, asyncjob_fiber *to, void *value, asyncjob_fiber_entry entry);
void *asyncjob__arch_finish(asyncjob_fiber *from, asyncjob_fiber *to, void *value);
_Thread_local struct asyncjob__san *asyncjob__san_prev;
#endif

static _Thread_local struct asyncjob_fiber thread_fiber;

const char *asyncjob_fiber_backend(void) {
#if defined(__x86_64__)
    return "x86_64-sysv-asm";
#elif defined(__aarch64__)
    return "aarch64-aapcs64-asm";
#else
#  error "fiber_asm.c is only built for x86_64 and aarch64"
#endif
}

int asyncjob_fiber_is_capable(void) { return 1; }

int asyncjob_fiber_uses_caller_stack(void) { return 1; }

size_t asyncjob_fiber_stack_reserve(void) { return FIBER_RESERVE; }

asyncjob_fiber *asyncjob_thread_fiber(void) {
    asyncjob__thread_prepare();
    return &thread_fiber;
}

void asyncjob_thread_fiber_release(void) { asyncjob__thread_unprepare(); }

#if defined(ASYNCJOB_SANITIZERS)
/* First code of a fiber, and of each of its runs, in sanitizer builds: tells the sanitizers the switch
   has completed. */
static void sanitizer_entry(void *fiber_ptr, void *first_value) {
    asyncjob_fiber *fiber = fiber_ptr;
    asyncjob__san_after(&fiber->san);
    fiber->entry(fiber->arg, first_value);
    asyncjob__fiber_returned();
}

void *asyncjob_fiber_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    asyncjob__san_before(&from->san, &to->san);
    void *result = asyncjob__arch_switch(from, to, value);
    asyncjob__san_after(&from->san);
    return result;
}

void *asyncjob_fiber_switch_into(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    asyncjob__san_before(&from->san, &to->san);
    void *result = asyncjob__arch_switch_into(from, to, value);
    asyncjob__san_after(&from->san);
    return result;
}

void *asyncjob_fiber_switch_back(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    asyncjob__san_before(&from->san, &to->san);
    void *result = asyncjob__arch_switch_back(from, to, value);
    asyncjob__san_after(&from->san);
    return result;
}

void *asyncjob_fiber_start(asyncjob_fiber *from, asyncjob_fiber *to, void *value, asyncjob_fiber_entry entry) {
    to->entry = entry;
    asyncjob__san_before(&from->san, &to->san);
    void *result = asyncjob__arch_start(from, to, value, sanitizer_entry);
    asyncjob__san_after(&from->san);
    return result;
}

/* The run that ends never continues, so its ASan fake stack goes with it (sanitizer_entry of the
   next run then begins without one, like a new fiber's). */
void *asyncjob_fiber_finish(asyncjob_fiber *from, asyncjob_fiber *to, void *value) {
    asyncjob__san_before_end(&from->san, &to->san);
    return asyncjob__arch_finish(from, to, value);
}
#endif

asyncjob_fiber *asyncjob_fiber_create(void *stack_base, size_t stack_size, asyncjob_fiber_entry entry,
                                      void *arg) {
    if (stack_base == NULL || entry == NULL || ((uintptr_t)stack_base & 15u) != 0 || (stack_size & 15u) != 0 ||
        stack_size < 4096 || (uintptr_t)stack_base + stack_size < (uintptr_t)stack_base) {
        return NULL;
    }
    char *top = (char *)stack_base + stack_size - FIBER_RESERVE;
    asyncjob_fiber *fiber = (asyncjob_fiber *)(void *)top;
    memset(fiber, 0, sizeof *fiber);
#if defined(ASYNCJOB_SANITIZERS)
    fiber->entry = entry;
    fiber->arg = arg;
    asyncjob__san_register(&fiber->san, stack_base, stack_size);
    fiber->start_arg = fiber;
    fiber->sp = asyncjob__arch_init_stack(top, sanitizer_entry, fiber);
#else
    fiber->start_arg = arg;
    fiber->sp = asyncjob__arch_init_stack(top, entry, arg);
#endif
#if defined(ASYNCJOB_VALGRIND)
    fiber->valgrind_id = asyncjob__valgrind_register(stack_base, stack_size);
#endif
    return fiber;
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
