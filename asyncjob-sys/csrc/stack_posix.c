/*
 * Fiber stacks and the stack-overflow reporter for POSIX systems.
 *
 * A stack is one anonymous private mapping: a guard page at the bottom, then the usable pages. The
 * mapping is MAP_NORESERVE (where it exists) and is never touched here, so memory is committed only
 * as the fiber really uses it.
 *
 * The guard page, in order of preference:
 *   1. Linux >= 6.13: madvise(MADV_GUARD_INSTALL). The guard is a page-table marker, not a separate
 *      mapping, so adjacent stacks merge into one VMA and a million guarded stacks fit under the
 *      default vm.max_map_count (65530). Checked once per process to really fault (emulators such
 *      as qemu-user accept unknown advice and do nothing).
 *   2. mprotect(PROT_NONE) on the first page (elsewhere, or on older kernels). That splits the VMA, so
 *      each stack costs two map entries; near the map-count limit mprotect fails with ENOMEM.
 *   3. Fallback when neither works: the mapping is released and ENOMEM is returned. A stack without
 *      a guard page is never handed out, so an overflow can never run silently into other memory.
 *
 * Overflow reporting: every stack made here is recorded in a lock-free table keyed by its guard page.
 * The first allocation installs a SIGSEGV/SIGBUS handler (SA_SIGINFO | SA_ONSTACK), chained to the
 * handler that was there before. A fault whose address lies in one of our guard pages prints
 *   asyncjob: stack overflow in a fiber: the job used more than its N-byte stack (guard page hit at 0x...)
 * with write(2) and aborts. Any other fault goes to the previous handler, or, when that was the
 * default action, the default action is restored and the faulting instruction re-runs and dies the
 * usual way. The handler runs on the alternate signal stack that asyncjob_thread_fiber() gives the
 * thread (a fiber that overflowed has no stack left to run a handler on).
 */
#if !defined(_GNU_SOURCE) && defined(__linux__)
#  define _GNU_SOURCE
#endif
#if defined(__APPLE__) && !defined(_DARWIN_C_SOURCE)
#  define _DARWIN_C_SOURCE
#endif

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#if !defined(MAP_ANONYMOUS) && defined(MAP_ANON)
#  define MAP_ANONYMOUS MAP_ANON
#endif
#if !defined(MAP_NORESERVE)
#  define MAP_NORESERVE 0
#endif
#if !defined(MAP_STACK)
#  define MAP_STACK 0
#endif
#if defined(__linux__) && !defined(MADV_GUARD_INSTALL)
#  define MADV_GUARD_INSTALL 102
#endif

/* ---- Page size ------------------------------------------------------------------------------------- */

static _Atomic size_t page_size_cache;

size_t asyncjob_page_size(void) {
    size_t ps = atomic_load_explicit(&page_size_cache, memory_order_relaxed);
    if (ps == 0) {
        long r = sysconf(_SC_PAGESIZE);
        ps = r > 0 ? (size_t)r : 4096u;
        atomic_store_explicit(&page_size_cache, ps, memory_order_relaxed);
    }
    return ps;
}

/* ---- Registry of guard pages ----------------------------------------------------------------------- */

/*
 * Open addressing with linear probing. A slot's key is the guard page address, EMPTY or TOMB;
 * insertions claim an EMPTY or TOMB slot with a CAS, removals write TOMB. Only the owner of a stack
 * inserts or removes its key, so a key is never in the table twice. The signal handler only reads.
 * The table is reserved once (MAP_NORESERVE); only slots in use cost memory.
 */
#define REG_EMPTY ((uintptr_t)0)
#define REG_TOMB ((uintptr_t)1)
#define REG_SLOTS ((size_t)1 << 21)

struct reg_slot {
    _Atomic uintptr_t key;
    _Atomic size_t size;
};

static struct reg_slot *registry;
static struct sigaction previous_segv;
static struct sigaction previous_bus;

static size_t reg_hash(uintptr_t key) {
    uint64_t h = (uint64_t)key / asyncjob_page_size();
    h *= 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> (64 - 21));
}

static int reg_insert(uintptr_t key, size_t size) {
    if (registry == NULL) {
        return -1;
    }
    size_t i = reg_hash(key);
    for (size_t n = 0; n < REG_SLOTS; n++, i = (i + 1) & (REG_SLOTS - 1)) {
        uintptr_t cur = atomic_load_explicit(&registry[i].key, memory_order_relaxed);
        while (cur == REG_EMPTY || cur == REG_TOMB) {
            atomic_store_explicit(&registry[i].size, size, memory_order_relaxed);
            if (atomic_compare_exchange_weak_explicit(&registry[i].key, &cur, key, memory_order_release,
                                                      memory_order_relaxed)) {
                return 0;
            }
        }
    }
    return -1;
}

static struct reg_slot *reg_find(uintptr_t key) {
    /* Page 0 (a NULL dereference) would otherwise match the first empty slot. */
    if (registry == NULL || key == REG_EMPTY || key == REG_TOMB) {
        return NULL;
    }
    size_t i = reg_hash(key);
    for (size_t n = 0; n < REG_SLOTS; n++, i = (i + 1) & (REG_SLOTS - 1)) {
        uintptr_t cur = atomic_load_explicit(&registry[i].key, memory_order_acquire);
        if (cur == key) {
            return &registry[i];
        }
        if (cur == REG_EMPTY) {
            return NULL;
        }
    }
    return NULL;
}

static void reg_remove(uintptr_t key) {
    struct reg_slot *slot = reg_find(key);
    if (slot != NULL) {
        atomic_store_explicit(&slot->key, REG_TOMB, memory_order_release);
    }
}

/* ---- The overflow reporter ------------------------------------------------------------------------- */

static size_t fmt_dec(char *out, size_t v) {
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    return n;
}

static size_t fmt_hex(char *out, uintptr_t v) {
    static const char digits[] = "0123456789abcdef";
    char tmp[2 * sizeof v];
    size_t n = 0;
    do {
        tmp[n++] = digits[v & 15u];
        v >>= 4;
    } while (v != 0);
    out[0] = '0';
    out[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        out[2 + i] = tmp[n - 1 - i];
    }
    return n + 2;
}

static size_t append(char *out, size_t at, const char *s) {
    size_t n = strlen(s);
    memcpy(out + at, s, n);
    return at + n;
}

static void on_fault(int sig, siginfo_t *info, void *context) {
    uintptr_t addr = (uintptr_t)info->si_addr;
    uintptr_t page = addr & ~(uintptr_t)(asyncjob_page_size() - 1);
    struct reg_slot *slot = reg_find(page);
    if (slot != NULL) {
        char msg[256];
        size_t n = append(msg, 0, "asyncjob: stack overflow in a fiber: the job used more than its ");
        n += fmt_dec(msg + n, atomic_load_explicit(&slot->size, memory_order_relaxed));
        n = append(msg, n, "-byte stack (guard page hit at ");
        n += fmt_hex(msg + n, addr);
        n = append(msg, n, ")\n");
        ssize_t ignored = write(2, msg, n);
        (void)ignored;
        abort();
    }
    const struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;
    if ((prev->sa_flags & SA_SIGINFO) != 0 && prev->sa_sigaction != NULL) {
        prev->sa_sigaction(sig, info, context);
        return;
    }
    if ((prev->sa_flags & SA_SIGINFO) == 0 && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
        prev->sa_handler(sig);
        return;
    }
    /* Default action: restore it; returning re-runs the faulting instruction, which then kills us. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

#if defined(__linux__)
/*
 * 1 when MADV_GUARD_INSTALL really guards. A kernel without it fails the madvise, but an emulator
 * (qemu-user ignores advice it does not know and reports success) would hand out stacks without a
 * guard, so the first allocation checks once: a write(2) from a guarded page must fail with EFAULT.
 */
static int madvise_guard_works;

static void probe_madvise_guard(void) {
    size_t ps = asyncjob_page_size();
    char *mem = mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        return;
    }
    int fds[2];
    if (madvise(mem, ps, MADV_GUARD_INSTALL) == 0 && pipe(fds) == 0) {
        ssize_t written = write(fds[1], mem, 1);
        if (written < 0 && errno == EFAULT) {
            madvise_guard_works = 1;
        }
        close(fds[0]);
        close(fds[1]);
    }
    munmap(mem, 2 * ps);
}
#endif

static pthread_once_t reporter_once = PTHREAD_ONCE_INIT;

static void reporter_init(void) {
#if defined(__linux__)
    probe_madvise_guard();
#endif
    void *table = mmap(NULL, REG_SLOTS * sizeof(struct reg_slot), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (table == MAP_FAILED) {
        return;
    }
    registry = table;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
}

/* ---- Alternate signal stacks ----------------------------------------------------------------------- */

#define ALTSTACK_SIZE ((size_t)64 * 1024)

static _Thread_local void *own_altstack;
static _Thread_local size_t own_altstack_size;

void asyncjob__thread_prepare(void) {
    stack_t current;
    if (own_altstack != NULL || sigaltstack(NULL, &current) != 0 || (current.ss_flags & SS_DISABLE) == 0) {
        return;
    }
    size_t size = ALTSTACK_SIZE;
#if defined(_SC_SIGSTKSZ)
    long min = sysconf(_SC_SIGSTKSZ);
    if (min > 0 && (size_t)min > size) {
        size = (size_t)min;
    }
#endif
    size_t ps = asyncjob_page_size();
    size = (size + ps - 1) & ~(ps - 1);
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        return;
    }
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = mem;
    ss.ss_size = size;
    ss.ss_flags = 0;
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(mem, size);
        return;
    }
    own_altstack = mem;
    own_altstack_size = size;
}

void asyncjob__thread_unprepare(void) {
    if (own_altstack == NULL) {
        return;
    }
    stack_t current;
    if (sigaltstack(NULL, &current) == 0 && current.ss_sp == own_altstack && (current.ss_flags & SS_ONSTACK) == 0) {
        stack_t off;
        memset(&off, 0, sizeof off);
        off.ss_flags = SS_DISABLE;
        if (sigaltstack(&off, NULL) == 0) {
            munmap(own_altstack, own_altstack_size);
        }
    }
    /* If someone replaced our alternate stack, it may still be referenced: leave the memory alone. */
    own_altstack = NULL;
    own_altstack_size = 0;
}

/* ---- Stacks ---------------------------------------------------------------------------------------- */

int asyncjob_stack_alloc(size_t size, asyncjob_stack *out) {
    if (out == NULL || size == 0) {
        return EINVAL;
    }
    memset(out, 0, sizeof *out);
    pthread_once(&reporter_once, reporter_init);
    size_t ps = asyncjob_page_size();
    if (size > SIZE_MAX - 2 * ps) {
        return ENOMEM;
    }
    size_t usable = (size + ps - 1) & ~(ps - 1);
    size_t total = usable + ps;
    void *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                     -1, 0);
    if (mem == MAP_FAILED) {
        return errno != 0 ? errno : ENOMEM;
    }
    asyncjob_guard_kind guard = ASYNCJOB_GUARD_NONE;
#if defined(__linux__)
    if (madvise_guard_works && madvise(mem, ps, MADV_GUARD_INSTALL) == 0) {
        guard = ASYNCJOB_GUARD_MADVISE;
    }
#endif
    if (guard == ASYNCJOB_GUARD_NONE) {
        if (mprotect(mem, ps, PROT_NONE) == 0) {
            guard = ASYNCJOB_GUARD_MPROTECT;
        } else {
            munmap(mem, total);
            return ENOMEM;
        }
    }
    (void)reg_insert((uintptr_t)mem, usable);
    out->base = (char *)mem + ps;
    out->size = usable;
    out->mapping = mem;
    out->mapping_size = total;
    out->guard = guard;
    return 0;
}

void asyncjob_stack_free(asyncjob_stack *stack) {
    if (stack == NULL || stack->mapping == NULL) {
        return;
    }
    reg_remove((uintptr_t)stack->mapping);
    munmap(stack->mapping, stack->mapping_size);
    memset(stack, 0, sizeof *stack);
}
