/*
 * asyncjob fiber primitive: the one header of asyncjob-sys, identical on every target.
 *
 * A fiber is a saved execution context. Exactly one fiber runs per thread at a time; the thread's own
 * original context is represented by the "thread fiber". Control moves only through
 * asyncjob_fiber_switch(), which saves the running context into `from` and resumes `to`.
 *
 * Nothing here knows about jobs, pools or OpenSSL; those rules live in the Rust crate `asyncjob`.
 */
#ifndef ASYNCJOB_FIBER_H
#define ASYNCJOB_FIBER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque saved context. */
typedef struct asyncjob_fiber asyncjob_fiber;

/*
 * Entry point of a fiber. `arg` is the pointer given to asyncjob_fiber_create(); `first_value` is the
 * value passed by the asyncjob_fiber_switch() that entered the fiber for the first time.
 * An entry function must never return: it ends by switching away for good. Returning aborts the process.
 * The same type is the function of a run begun by asyncjob_fiber_start(), with the start's value as
 * `first_value`; a run ends with asyncjob_fiber_finish(), after which it may return (see there).
 */
typedef void (*asyncjob_fiber_entry)(void *arg, void *first_value);

/* Name of the compiled backend: "x86_64-sysv-asm", "aarch64-aapcs64-asm", "ucontext" or "windows-fibers". */
const char *asyncjob_fiber_backend(void);

/* 1 when fibers can be created and switched on this platform, 0 otherwise. Initialises nothing. */
int asyncjob_fiber_is_capable(void);

/*
 * 1 when fibers run on caller-provided stacks (asm, ucontext). 0 when the operating system owns
 * fiber stacks (Windows Fibers): then asyncjob_fiber_create() ignores `stack_base` and uses
 * `stack_size` as the size of the stack it reserves.
 */
int asyncjob_fiber_uses_caller_stack(void);

/*
 * Bytes at the top of a caller-provided stack that asyncjob_fiber_create() may use for the fiber's
 * own bookkeeping (so that creating a fiber needs no heap allocation). The usable stack for the
 * entry function is stack_size minus this. 0 where the fiber lives on the heap.
 */
size_t asyncjob_fiber_stack_reserve(void);

/*
 * The fiber that stands for the calling thread's original context, created on first use (on Windows
 * this converts the thread with ConvertThreadToFiberEx(FIBER_FLAG_FLOAT_SWITCH), or adopts
 * GetCurrentFiber() when the thread already is a fiber). Idempotent per thread.
 * Returns NULL if the thread cannot be prepared.
 */
asyncjob_fiber *asyncjob_thread_fiber(void);

/*
 * Undo asyncjob_thread_fiber() for the calling thread (Windows: ConvertFiberToThread, only if this
 * library converted it). Must be called while the thread runs on its thread fiber. Safe to call when
 * the thread was never prepared. A later asyncjob_thread_fiber() prepares the thread again.
 */
void asyncjob_thread_fiber_release(void);

/*
 * Make a fiber that will run entry(arg, first_value) on the stack [stack_base, stack_base + stack_size)
 * when first switched to. stack_base must be 16-byte aligned and stack_size a multiple of 16 and at
 * least 4096. Until the fiber first runs, only the top asyncjob_fiber_stack_reserve() bytes and the
 * first-entry frame just below them (at most 256 bytes) are written. Returns NULL on failure. The
 * caller keeps ownership of the stack memory.
 */
asyncjob_fiber *asyncjob_fiber_create(void *stack_base, size_t stack_size, asyncjob_fiber_entry entry,
                                      void *arg);

/*
 * Save the running context into `from` (which must be the fiber currently running on this thread)
 * and resume `to` (which must not be running anywhere). `value` is delivered to `to`: as the return
 * value of the asyncjob_fiber_switch() that suspended it, or as `first_value` of its entry function.
 * Returns the value passed by whichever switch later resumes `from`.
 */
void *asyncjob_fiber_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value);

/*
 * asyncjob_fiber_switch() for a caller that knows which way it goes, a little cheaper with the asm
 * backends (the same call elsewhere). _into: `to` is being entered or resumed by `from`, not handing
 * control back to it. _back: `to` is the context that last switched into `from`. Debuggers and
 * unwinders walk from a fiber into the context that last resumed it; a switch named for the wrong
 * direction leaves that walk wrong, nothing else.
 */
void *asyncjob_fiber_switch_into(asyncjob_fiber *from, asyncjob_fiber *to, void *value);
void *asyncjob_fiber_switch_back(asyncjob_fiber *from, asyncjob_fiber *to, void *value);

/*
 * A fiber's life as a series of runs, each of a function of its own and cheaper to begin and end
 * than a switch. asyncjob_fiber_start() saves the running context into `from`, like
 * asyncjob_fiber_switch_into(), and begins entry(arg, value) on `to`, `arg` being the pointer given
 * to asyncjob_fiber_create(); `to` must be idle: never entered, or its last run ended by
 * asyncjob_fiber_finish(). asyncjob_fiber_finish(), called by the running fiber `from` as the last
 * thing its run does, ends that run and resumes `to`, the context that last entered `from`, with
 * `value`; nothing of `from` is saved. Each returns the value of the switch that later resumes its
 * caller.
 *
 * With the asm backends a start begins the function on the fiber's empty stack, with the current
 * floating-point control state, as a function call would (a switch carries each context's own), and
 * asyncjob_fiber_finish() never returns. The ucontext and Windows backends cannot restart a stack:
 * there a start resumes the fiber inside the finish that ended its previous run, that finish returns
 * (its value means nothing), and the function that called it must then return at once; the fiber's
 * own loop then calls the start's function with the start's value. So a run's function is right on
 * every backend when it ends with `asyncjob_fiber_finish(...); return;`. A run's function that
 * returns without finishing aborts the process, as an entry function that returns does.
 */
void *asyncjob_fiber_start(asyncjob_fiber *from, asyncjob_fiber *to, void *value, asyncjob_fiber_entry entry);
void *asyncjob_fiber_finish(asyncjob_fiber *from, asyncjob_fiber *to, void *value);

/*
 * Release a fiber that is not running (a never-started fiber is fine). Does not free a caller-provided
 * stack. Must not be given a thread fiber.
 */
void asyncjob_fiber_free(asyncjob_fiber *fiber);

/* ---- Stacks ---------------------------------------------------------------------------------------- */

/*
 * Bytes of inaccessible address space (the "gap") below every stack from asyncjob_stack_alloc(),
 * rounded up to whole pages. Guarantee: code whose every stack-pointer decrement (one frame, one
 * alloca, one variable-length array) is at most this many bytes hits the gap when it runs off the
 * bottom of its stack, whatever order it writes its frame in: the process ends with the overflow
 * message and never writes into another stack. Rust code has stack probes (every page of a big frame
 * is touched in order), so any Rust frame qualifies. C code qualifies up to this size; larger frames
 * need -fstack-clash-protection (GCC, Clang), which probes them page by page likewise. For scale: the
 * largest fixed frame in the x86_64 builds of glibc 2.36 and OpenSSL 3.0 (libc.so.6, libcrypto.so.3,
 * libssl.so.3, built without stack-clash probes) is 33312 bytes (vfwprintf), the next 18600
 * (fnmatch); glibc allocas up to 64 KiB (__MAX_ALLOCA_CUTOFF), so 128 KiB covers a maximal glibc
 * alloca on top of the largest fixed frame. The gap costs address space and page-table entries only:
 * no RSS, and with MADV_GUARD_INSTALL no extra map entry either.
 */
#define ASYNCJOB_STACK_GAP (128 * 1024)

/* How the guard below a stack was made. */
typedef enum asyncjob_guard_kind {
    ASYNCJOB_GUARD_NONE = 0,        /* no guard page (only for caller-supplied memory) */
    ASYNCJOB_GUARD_MADVISE = 1,     /* Linux >= 6.13 MADV_GUARD_INSTALL: no extra memory mapping */
    ASYNCJOB_GUARD_MPROTECT = 2,    /* PROT_NONE gap (up to two extra map entries per stack) */
    ASYNCJOB_GUARD_OS = 3           /* the OS fiber stack's own guard (Windows) */
} asyncjob_guard_kind;

/* A stack made by asyncjob_stack_alloc(). `base` is the lowest usable byte, `size` the usable bytes. */
typedef struct asyncjob_stack {
    void *base;
    size_t size;
    void *mapping;        /* start of the stack's own region, gap included (a slot of a slab) */
    size_t mapping_size;  /* size of that region, gap included */
    asyncjob_guard_kind guard;
} asyncjob_stack;

/* The system page size. */
size_t asyncjob_page_size(void);

/*
 * Reserve a stack of at least `size` usable bytes (rounded up to whole pages) with an inaccessible gap
 * of ASYNCJOB_STACK_GAP bytes below it. Memory is committed lazily: only touched pages cost RSS.
 * Returns 0 on success and fills *out; returns an errno value on failure (ENOMEM when neither a guard
 * nor the mapping can be had: a stack without a guard is never handed out).
 * Where asyncjob_fiber_uses_caller_stack() is 0 this returns ENOTSUP.
 *
 * Linux guards the gap with MADV_GUARD_INSTALL (>= 6.13), else with mprotect(PROT_NONE), which splits
 * a mapping: then at most a quarter of vm.max_map_count (read once) such guards exist at a time, so
 * that the stacks take at most half of the process's map entries and the application keeps the rest
 * for its own mmap, malloc and pthread_create; beyond that this returns ENOMEM. ASYNCJOB_STACK_GUARD
 * =mprotect in the environment forces that fallback.
 *
 * Under Valgrind (detected at run time in every build) the gap is always made with mprotect, which
 * Valgrind understands (at most 4096 such guards: Valgrind's own table of mappings is smaller than
 * the kernel's), and every fiber's stack is registered with VALGRIND_STACK_REGISTER. That needs
 * valgrind/valgrind.h when the shim is built (build.rs looks for it, or ASYNCJOB_VALGRIND_INCLUDE);
 * built without it, Valgrind is recognised by its preload library in LD_PRELOAD and gets mprotect
 * gaps, but stacks stay unregistered, so Valgrind may warn about stack switches.
 */
int asyncjob_stack_alloc(size_t size, asyncjob_stack *out);

/* Return a stack made by asyncjob_stack_alloc(). */
void asyncjob_stack_free(asyncjob_stack *stack);

#ifdef __cplusplus
}
#endif

#endif /* ASYNCJOB_FIBER_H */
