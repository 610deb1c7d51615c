/*
 * Fiber stacks and the stack-overflow reporter for POSIX systems.
 *
 * Stacks are carved from slabs. A slab is one anonymous private mapping (MAP_NORESERVE where it
 * exists, MAP_STACK, no transparent huge pages) holding up to 64 slots of one size class; a slot is a
 * gap of ASYNCJOB_STACK_GAP inaccessible bytes followed by the usable pages, so every stack has its
 * own gap right below it (and the next slot's gap right above it, above the top of the stack where the
 * fiber state lives). The gap is that wide, not one page, so that a single frame bigger than a page
 * (C built without -fstack-clash-protection) still lands in it instead of in the neighbouring stack;
 * the header states the guarantee. Nothing here touches the usable pages, so memory is committed
 * only as the fiber really uses it. Compared with one mapping per stack this saves the mmap and,
 * where the guards can be installed for a whole slab at once, the guard syscall of every fresh stack:
 * a fresh stack then costs only the page fault of its first use.
 *
 * For a slot, asyncjob_stack.mapping is the slot's start (its gap) and mapping_size is the slot's size
 * (gap + usable bytes), not the slab's mapping, which is never handed out.
 *
 * The gap (the "guard"), in order of preference:
 *   1. Linux >= 6.13: madvise(MADV_GUARD_INSTALL). The guard is a page-table marker, not a separate
 *      mapping, so a slab stays one VMA (adjacent slabs even merge) and a million guarded stacks fit
 *      under the default vm.max_map_count (65530). Checked once per process to really fault (emulators
 *      such as qemu-user accept unknown advice and do nothing). When process_madvise() accepts the
 *      same advice for our own process (also checked once, by effect), a new slab gets all its guards
 *      in one call; otherwise each slot gets its guard when it is first handed out.
 *   2. mprotect(PROT_NONE) of the slot's gap when it is first handed out (elsewhere, on older kernels,
 *      under Valgrind). That splits the slab's VMA, so each guard costs up to two map entries; on Linux
 *      at most a quarter of vm.max_map_count guards exist at once (mprotect_guards_max), after which
 *      allocation fails with ENOMEM rather than leave the application without map entries.
 *   3. Fallback when neither works: ENOMEM. A stack without a guard page is never handed out, so an
 *      overflow can never run silently into other memory.
 * A guard stays installed while its slot is free, so a recycled slot costs no syscall at all.
 * On Linux the environment variable ASYNCJOB_STACK_GUARD, read once, narrows the choice: "mprotect"
 * skips 1., "madvise" skips the process_madvise() batching (for seccomp filters that kill on it).
 *
 * Freeing a stack gives its pages back to the kernel at once (MADV_DONTNEED on Linux; MADV_FREE
 * elsewhere, which the kernel reclaims under memory pressure) and puts the slot on its slab's free
 * list. A slab whose slots are all free is unmapped, except one such slab per size class, which is
 * kept so that a pool repeatedly creating and dropping a few jobs does not map and unmap a slab each
 * time. The slab bookkeeping sits behind one mutex: creating and dropping stacks is not the hot path
 * (jobs reuse their stacks through the per-thread pools).
 *
 * Overflow reporting: every stack handed out is recorded in a table (read without a lock) keyed by its
 * base. The first allocation installs a SIGSEGV/SIGBUS handler (SA_SIGINFO | SA_ONSTACK), chained to
 * the handler that was there before. A fault whose address lies in one of our gaps prints
 *   asyncjob: stack overflow in a fiber: the job used more than its N-byte stack (guard page hit at 0x...)
 * with write(2) and aborts. Any other fault goes to the previous handler, or, when that was the
 * default action, the default action is restored and the faulting instruction re-runs and dies the
 * usual way. A signal sent by a process (si_code <= 0: kill, raise, sigqueue) is never taken for a
 * fault: it goes to the previous handler, stays ignored if that was SIG_IGN, or is raised again with
 * the default action. The handler runs on the alternate signal stack that asyncjob_thread_fiber()
 * gives the thread (a fiber that overflowed has no stack left to run a handler on).
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
#if defined(__linux__)
#  include <fcntl.h>
#  include <sys/syscall.h>
#  include <sys/uio.h>
#endif

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
#if defined(__linux__) && !defined(SYS_process_madvise) && (defined(__x86_64__) || defined(__aarch64__))
#  define SYS_process_madvise 440
#endif
#if defined(__linux__) && !defined(SYS_pidfd_open) && (defined(__x86_64__) || defined(__aarch64__))
#  define SYS_pidfd_open 434
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

/* ---- The gap below every stack --------------------------------------------------------------------- */

/*
 * Bytes of inaccessible guard below every stack: ASYNCJOB_STACK_GAP rounded up to whole pages. A
 * frame that moves the stack pointer by up to this much at once, whatever order it writes in, faults
 * in the gap instead of landing in the stack below (the neighbouring slot, whose top holds that job's
 * fiber state).
 */
static size_t gap_size(void) {
    size_t ps = asyncjob_page_size();
    return (ASYNCJOB_STACK_GAP + ps - 1) & ~(ps - 1);
}

/* ---- Registry of stacks, for the fault handler ------------------------------------------------------ */

/*
 * Open addressing with linear probing, keyed by the stack's base (its lowest usable byte, right above
 * its gap). The table is reserved once (MAP_NORESERVE); only slots in use cost memory.
 *
 * Writers (insert, remove) hold slab_lock. The signal handler only reads, without a lock. Removal
 * leaves no tombstone: it empties the slot and moves later keys of the same cluster back into the hole
 * (the classic deletion for linear probing), so a lookup never scans more than the cluster of keys that
 * are really in use, however many stacks came and went. A key being moved back is briefly in two
 * slots, and a reader racing with a removal could still step over it: removals therefore bump
 * reg_generation before and after (a sequence lock), and a reader that saw it change looks again.
 *
 * The hash keeps neighbours together so that the table costs a few bytes per stack, not a page: a key's
 * home is a pseudo-random start for its 1 GiB region plus its page number within the region divided by
 * 2^g, where 2^g pages is at most the distance between two stacks of that size (the slot: gap plus
 * usable bytes; g up to REG_GRAIN_MAX). Stacks of one slab thus get consecutive homes and never share
 * one. The size of a stack gives g; the signal handler tries every g.
 */
#define REG_EMPTY ((uintptr_t)0)
#define REG_SLOTS ((size_t)1 << 21)
#define REG_REGION_PAGES_LOG2 18
#define REG_GRAIN_MAX 6u

struct reg_slot {
    _Atomic uintptr_t key;
    _Atomic size_t size;
};

static struct reg_slot *registry;
static _Atomic unsigned long reg_generation;
static struct sigaction previous_segv;
static struct sigaction previous_bus;

/* The grain of a stack with `size` usable bytes: the largest g with 2^g pages <= its slot. */
static unsigned reg_grain(size_t size) {
    size_t pages = (gap_size() + size) / asyncjob_page_size();
    unsigned g = 1;
    while (g < REG_GRAIN_MAX && ((size_t)2 << g) <= pages) {
        g++;
    }
    return g;
}

static size_t reg_hash(uintptr_t key, unsigned grain) {
    uint64_t page = (uint64_t)key / asyncjob_page_size();
    uint64_t region = page >> REG_REGION_PAGES_LOG2;
    uint64_t within = page & (((uint64_t)1 << REG_REGION_PAGES_LOG2) - 1u);
    uint64_t start = (region * 0x9e3779b97f4a7c15ull) >> (64 - 21);
    return (size_t)(start + (within >> grain)) & (REG_SLOTS - 1);
}

/* Caller holds slab_lock. */
static int reg_insert(uintptr_t key, size_t size) {
    if (registry == NULL) {
        return -1;
    }
    size_t i = reg_hash(key, reg_grain(size));
    for (size_t n = 0; n < REG_SLOTS; n++, i = (i + 1) & (REG_SLOTS - 1)) {
        if (atomic_load_explicit(&registry[i].key, memory_order_relaxed) == REG_EMPTY) {
            /* The size first: a reader that sees the key (acquire) sees its size. */
            atomic_store_explicit(&registry[i].size, size, memory_order_relaxed);
            atomic_store_explicit(&registry[i].key, key, memory_order_release);
            return 0;
        }
    }
    return -1;
}

/* One lookup; `*probes` (when not NULL) receives the number of slots examined. */
static struct reg_slot *reg_find(uintptr_t key, unsigned grain, size_t *probes) {
    struct reg_slot *found = NULL;
    size_t n = 0;
    if (registry != NULL && key != REG_EMPTY) {
        size_t i = reg_hash(key, grain);
        while (n < REG_SLOTS) {
            uintptr_t cur = atomic_load_explicit(&registry[i].key, memory_order_acquire);
            n++;
            if (cur == key) {
                found = &registry[i];
                break;
            }
            if (cur == REG_EMPTY) {
                break;
            }
            i = (i + 1) & (REG_SLOTS - 1);
        }
    }
    if (probes != NULL) {
        *probes = n;
    }
    return found;
}

/* Caller holds slab_lock. */
static void reg_remove(uintptr_t key, size_t size) {
    struct reg_slot *slot = reg_find(key, reg_grain(size), NULL);
    if (slot == NULL) {
        return;
    }
    atomic_fetch_add_explicit(&reg_generation, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    size_t hole = (size_t)(slot - registry);
    size_t j = hole;
    for (;;) {
        j = (j + 1) & (REG_SLOTS - 1);
        uintptr_t k = atomic_load_explicit(&registry[j].key, memory_order_relaxed);
        if (k == REG_EMPTY) {
            break;
        }
        size_t ksize = atomic_load_explicit(&registry[j].size, memory_order_relaxed);
        size_t home = reg_hash(k, reg_grain(ksize));
        /* The key at j stays when its home lies cyclically in (hole, j]: a lookup from there never
           passes the hole. Otherwise it moves back into the hole, and j becomes the hole. */
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (stays) {
            continue;
        }
        atomic_store_explicit(&registry[hole].size, ksize, memory_order_relaxed);
        atomic_store_explicit(&registry[hole].key, k, memory_order_release);
        hole = j;
    }
    atomic_store_explicit(&registry[hole].key, REG_EMPTY, memory_order_release);
    atomic_fetch_add_explicit(&reg_generation, 1, memory_order_release);
}

/*
 * The registered stack whose gap holds `addr`, or NULL; async-signal-safe. `*worst` (when not NULL)
 * receives the most slots one lookup examined.
 */
static struct reg_slot *reg_lookup_fault(uintptr_t addr, size_t *worst) {
    size_t ps = asyncjob_page_size();
    uintptr_t page = addr & ~(uintptr_t)(ps - 1);
    size_t gap = gap_size();
    unsigned grain_min = reg_grain(ps);
    struct reg_slot *slot = NULL;
    /* A removal that runs meanwhile (on another thread) may move keys; look again if one did. After
       many tries (a writer interrupted on this very thread never finishes) the last answer stands. */
    for (int attempt = 0; attempt < 1000; attempt++) {
        unsigned long before = atomic_load_explicit(&reg_generation, memory_order_acquire);
        slot = NULL;
        if (worst != NULL) {
            *worst = 0;
        }
        /* The stack's base is one of the gap/ps pages above the faulting page. */
        for (size_t up = ps; up <= gap && slot == NULL && page + up > page; up += ps) {
            for (unsigned grain = grain_min; grain <= REG_GRAIN_MAX && slot == NULL; grain++) {
                size_t probes = 0;
                slot = reg_find(page + up, grain, &probes);
                if (worst != NULL && probes > *worst) {
                    *worst = probes;
                }
            }
        }
        atomic_thread_fence(memory_order_acquire);
        unsigned long after = atomic_load_explicit(&reg_generation, memory_order_relaxed);
        if (before == after && (before & 1u) == 0) {
            break;
        }
    }
    return slot;
}

/* Test hook (declared in internal.h, not part of the header's contract): how the fault handler fares
   for a fault at `addr`. */
size_t asyncjob__stack_registry_probe(const void *addr, int *found) {
    size_t worst = 0;
    struct reg_slot *slot = reg_lookup_fault((uintptr_t)addr, &worst);
    if (found != NULL) {
        *found = slot != NULL;
    }
    return worst;
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
    const struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;
    /* si_code <= 0 (SI_USER, SI_QUEUE, SI_TKILL, ...): sent by a process with kill(), raise() and
       the like, not a fault. si_addr means nothing then; the signal gets exactly what it would get
       without this library. */
    int sent = info == NULL || info->si_code <= 0;
    if (!sent) {
        struct reg_slot *slot = reg_lookup_fault((uintptr_t)info->si_addr, NULL);
        if (slot != NULL) {
            char msg[256];
            size_t n = append(msg, 0, "asyncjob: stack overflow in a fiber: the job used more than its ");
            n += fmt_dec(msg + n, atomic_load_explicit(&slot->size, memory_order_relaxed));
            n = append(msg, n, "-byte stack (guard page hit at ");
            n += fmt_hex(msg + n, (uintptr_t)info->si_addr);
            n = append(msg, n, ")\n");
            ssize_t ignored = write(2, msg, n);
            (void)ignored;
            abort();
        }
    }
    if ((prev->sa_flags & SA_SIGINFO) != 0 && prev->sa_sigaction != NULL) {
        prev->sa_sigaction(sig, info, context);
        return;
    }
    if ((prev->sa_flags & SA_SIGINFO) == 0 && prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
        prev->sa_handler(sig);
        return;
    }
    if (sent && prev->sa_handler == SIG_IGN) {
        return; /* ignored, as it would have been */
    }
    /* The default action. A fault re-runs the faulting instruction once the handler returns, which
       then dies the usual way (the kernel never lets a fault be ignored). A sent signal is sent again:
       blocked while this handler runs, it is delivered with the default action as the handler
       returns. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (sent) {
        raise(sig);
    }
}

#if defined(__linux__)
/*
 * 1 when MADV_GUARD_INSTALL really guards. A kernel without it fails the madvise, but an emulator
 * (qemu-user ignores advice it does not know and reports success) would hand out stacks without a
 * guard, so the first allocation checks once: a write(2) from a guarded page must fail with EFAULT.
 */
static int madvise_guard_works;

/*
 * How a whole slab gets its guards in one process_madvise() call (Linux >= 6.13 accepts any advice
 * for the caller's own process): BATCH_NONE (one madvise per slot instead), BATCH_SELF (the
 * PIDFD_SELF_THREAD_GROUP sentinel, Linux >= 6.15) or BATCH_PIDFD (a pidfd opened for the call).
 */
enum { BATCH_NONE, BATCH_SELF, BATCH_PIDFD };
static int guard_batch;

#define PIDFD_SELF_PROCESS_SENTINEL (-10001)

static int guard_faults(const char *page) {
    int fds[2];
    if (pipe(fds) != 0) {
        return 0;
    }
    ssize_t written = write(fds[1], page, 1);
    int faulted = written < 0 && errno == EFAULT;
    close(fds[0]);
    close(fds[1]);
    return faulted;
}

/* Installs guards on the `n` pages listed in `iov` with one call; 0 only when all of them took. */
static int batch_guard_install(int mode, struct iovec *iov, size_t n, size_t ps) {
#if defined(SYS_process_madvise)
    int pidfd = PIDFD_SELF_PROCESS_SENTINEL;
#  if defined(SYS_pidfd_open)
    if (mode == BATCH_PIDFD) {
        pidfd = (int)syscall(SYS_pidfd_open, (long)getpid(), 0L);
        if (pidfd < 0) {
            return -1;
        }
    }
#  else
    if (mode == BATCH_PIDFD) {
        return -1;
    }
#  endif
    long done = syscall(SYS_process_madvise, (long)pidfd, iov, (unsigned long)n, (long)MADV_GUARD_INSTALL, 0L);
    if (mode == BATCH_PIDFD) {
        close(pidfd);
    }
    return done >= 0 && (size_t)done == n * ps ? 0 : -1;
#else
    (void)mode;
    (void)iov;
    (void)n;
    (void)ps;
    return -1;
#endif
}

static void probe_madvise_guard(int allow_batch) {
    size_t ps = asyncjob_page_size();
    char *mem = mmap(NULL, 4 * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        return;
    }
    if (madvise(mem, ps, MADV_GUARD_INSTALL) == 0 && guard_faults(mem)) {
        madvise_guard_works = 1;
        /* Batched guards are trusted only when both listed pages fault and the page between does not. */
        for (int mode = BATCH_SELF; allow_batch && mode <= BATCH_PIDFD && guard_batch == BATCH_NONE; mode++) {
            struct iovec iov[2] = {{mem + ps, ps}, {mem + 3 * ps, ps}};
            if (batch_guard_install(mode, iov, 2, ps) == 0 && guard_faults(mem + ps) && guard_faults(mem + 3 * ps) &&
                !guard_faults(mem + 2 * ps)) {
                guard_batch = mode;
            }
        }
    }
    munmap(mem, 4 * ps);
}
#endif

static pthread_once_t reporter_once = PTHREAD_ONCE_INIT;

static void slabs_init(void);

/*
 * mprotect guards in place (installed, whether their slot is in use or free) and the most allowed.
 * Each one splits the slab's mapping, costing up to two entries of vm.max_map_count, which the whole
 * process shares: past the limit every mmap, mprotect, malloc of a big block and pthread_create of
 * the application fails. So the fallback takes at most a quarter of vm.max_map_count in guards (half
 * of the map entries), after which asyncjob_stack_alloc fails with ENOMEM. Guarded by slab_lock.
 */
static size_t mprotect_guards;
static size_t mprotect_guards_max = SIZE_MAX;
#define VALGRIND_GUARDS_MAX ((size_t)4096)

#if defined(__linux__)
static size_t read_max_map_count(void) {
    size_t value = 65530; /* the kernel's default, if /proc cannot tell */
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[32];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0) {
            size_t v = 0;
            ssize_t i = 0;
            for (; i < n && buf[i] >= '0' && buf[i] <= '9'; i++) {
                v = v * 10 + (size_t)(buf[i] - '0');
            }
            if (i > 0) {
                value = v;
            }
        }
    }
    return value;
}
#endif

/*
 * 1 when the process runs under Valgrind. With valgrind.h (the build found it) that is its client
 * request, which costs a few instructions natively. Without it, the heuristic is Valgrind's preload
 * library in LD_PRELOAD, and stacks cannot be registered with Valgrind (see asyncjob_fiber.h).
 */
static int under_valgrind(void) {
#if defined(ASYNCJOB_VALGRIND)
    return RUNNING_ON_VALGRIND != 0;
#else
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
#endif
}

static void reporter_init(void) {
#if defined(__linux__)
    /* ASYNCJOB_STACK_GUARD=mprotect or =madvise restricts the choice (to test the fallbacks, or where a
       seccomp filter forbids process_madvise/pidfd_open). */
    const char *only = getenv("ASYNCJOB_STACK_GUARD");
    int allow_batch = only == NULL || strcmp(only, "madvise") != 0;
    /* Valgrind knows nothing of guard markers (it takes the pages for accessible and its own stack
       unwinder reads them) nor of process_madvise and pidfd_open: mprotect guards only. */
    int use_madvise = only == NULL || strcmp(only, "mprotect") != 0;
    int valgrind = under_valgrind();
    if (valgrind) {
        use_madvise = 0;
    }
    if (use_madvise) {
        probe_madvise_guard(allow_batch);
    }
    mprotect_guards_max = read_max_map_count() / 4;
    /* Valgrind keeps its own table of mappings, which is smaller (VG_N_SEGMENTS, 30000 in 3.19) and
       fatal when full. */
    if (valgrind && mprotect_guards_max > VALGRIND_GUARDS_MAX) {
        mprotect_guards_max = VALGRIND_GUARDS_MAX;
    }
#else
    (void)under_valgrind;
#endif
    slabs_init();
}

/* The overflow table and the fault handler that reads it, made by the first stack allocation that
   can map the table: a stack is never handed out without them, and a failed mapping (address space
   short at the first allocation) is tried again by the next allocation. Caller holds slab_lock. */
static int reporter_ready(void) {
    if (registry != NULL) {
        return 1;
    }
    void *table = mmap(NULL, REG_SLOTS * sizeof(struct reg_slot), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (table == MAP_FAILED) {
        return 0;
    }
    registry = table;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
    return 1;
}

/* Shared by the POSIX backends: a fiber entry function returned, which the contract forbids. */
void asyncjob__fiber_returned(void) {
    static const char msg[] = "asyncjob: a fiber entry function returned; aborting\n";
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    (void)ignored;
    abort();
}

/* ---- Alternate signal stacks ----------------------------------------------------------------------- */

#define ALTSTACK_SIZE ((size_t)64 * 1024)

static _Thread_local void *own_altstack;
static _Thread_local size_t own_altstack_size;
/* Set between prepare and unprepare, so that repeated calls cost no system call. */
static _Thread_local int thread_prepared;

void asyncjob__thread_prepare(void) {
    if (thread_prepared) {
        return;
    }
    thread_prepared = 1;
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
    thread_prepared = 0;
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

/* ---- Slabs --------------------------------------------------------------------------------------- */

#define SLAB_SLOTS_MAX 64u
/* Slots per slab shrink for big stacks so that one slab reserves about this much address space. */
#define SLAB_SPAN_TARGET ((size_t)32 << 20)
/* Fully free slabs kept per size class (more are unmapped at once). */
#define SLAB_KEEP_EMPTY 1u

struct slab_class;

struct slab {
    char *base;              /* start of the mapping: slot i starts at base + i * class slot size */
    size_t span;             /* size of the mapping */
    struct slab_class *cls;
    struct slab *prev, *next; /* in cls->avail while the slab has a free slot */
    uint64_t free;           /* bit i: slot i is not handed out */
    uint64_t guarded;        /* bit i: slot i's guard page is installed */
    uint64_t mprotected;     /* bit i: ... by mprotect (else by MADV_GUARD_INSTALL) */
    unsigned nslots;
    int listed;              /* in cls->avail */
};

struct slab_class {
    size_t slot_size;        /* guard page + usable bytes */
    unsigned nslots;         /* slots of a new slab */
    unsigned empty;          /* slabs of this class with every slot free */
    struct slab *avail;      /* slabs with a free slot; fully free ones at the end */
    struct slab *avail_tail;
    struct slab_class *next;
};

/* Bookkeeping records (slabs and classes) come from pages mapped here, never from malloc. */
union slab_record {
    struct slab slab;
    struct slab_class cls;
    union slab_record *next_free;
};

static pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slab_class *classes;
static union slab_record *free_records;
/* Every slab, sorted by base address (descending), to find the slab of a stack being freed. */
static struct slab **slab_index;
static size_t slab_count;
static size_t slab_index_cap;

static void slab_lock_acquire(void) { pthread_mutex_lock(&slab_lock); }
static void slab_lock_release(void) { pthread_mutex_unlock(&slab_lock); }

static void slabs_init(void) {
    /* A child forked while another thread held the lock would otherwise never get it. */
    pthread_atfork(slab_lock_acquire, slab_lock_release, slab_lock_release);
}

static uint64_t slab_all(unsigned nslots) {
    return nslots >= 64u ? ~(uint64_t)0 : ((uint64_t)1 << nslots) - 1u;
}

static unsigned lowest_bit(uint64_t v) {
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctzll((unsigned long long)v);
#else
    unsigned i = 0;
    while ((v & 1u) == 0) {
        v >>= 1;
        i++;
    }
    return i;
#endif
}

static unsigned popcount64(uint64_t v) {
    unsigned n = 0;
    while (v != 0) {
        v &= v - 1;
        n++;
    }
    return n;
}

static union slab_record *record_alloc(void) {
    if (free_records == NULL) {
        size_t ps = asyncjob_page_size();
        char *page = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) {
            return NULL;
        }
        for (size_t off = 0; off + sizeof(union slab_record) <= ps; off += sizeof(union slab_record)) {
            union slab_record *r = (union slab_record *)(void *)(page + off);
            r->next_free = free_records;
            free_records = r;
        }
    }
    union slab_record *r = free_records;
    free_records = r->next_free;
    memset(r, 0, sizeof *r);
    return r;
}

static void record_free(union slab_record *r) {
    r->next_free = free_records;
    free_records = r;
}

/*
 * Position of the first slab whose base is at or below `addr`. The index runs from high to low
 * addresses because mmap hands out addresses top-down, so new slabs usually go at the end.
 */
static size_t index_lower(const char *addr) {
    size_t lo = 0, hi = slab_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)slab_index[mid]->base > (uintptr_t)addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static int index_insert(struct slab *s) {
    if (slab_count == slab_index_cap) {
        size_t ps = asyncjob_page_size();
        size_t cap = slab_index_cap == 0 ? ps / sizeof *slab_index : 2 * slab_index_cap;
        struct slab **grown = mmap(NULL, cap * sizeof *grown, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (grown == MAP_FAILED) {
            return -1;
        }
        if (slab_index != NULL) {
            memcpy(grown, slab_index, slab_count * sizeof *grown);
            munmap(slab_index, slab_index_cap * sizeof *slab_index);
        }
        slab_index = grown;
        slab_index_cap = cap;
    }
    size_t at = index_lower(s->base);
    memmove(slab_index + at + 1, slab_index + at, (slab_count - at) * sizeof *slab_index);
    slab_index[at] = s;
    slab_count++;
    return 0;
}

static void index_remove(struct slab *s) {
    size_t at = index_lower(s->base);
    if (at < slab_count && slab_index[at] == s) {
        memmove(slab_index + at, slab_index + at + 1, (slab_count - at - 1) * sizeof *slab_index);
        slab_count--;
    }
}

/* The slab whose mapping contains `addr`, or NULL. */
static struct slab *slab_containing(const char *addr) {
    size_t at = index_lower(addr);
    if (at == slab_count) {
        return NULL;
    }
    struct slab *s = slab_index[at];
    return (uintptr_t)addr - (uintptr_t)s->base < s->span ? s : NULL;
}

static void avail_unlink(struct slab *s) {
    if (!s->listed) {
        return;
    }
    struct slab_class *c = s->cls;
    if (s->prev != NULL) {
        s->prev->next = s->next;
    } else {
        c->avail = s->next;
    }
    if (s->next != NULL) {
        s->next->prev = s->prev;
    } else {
        c->avail_tail = s->prev;
    }
    s->prev = s->next = NULL;
    s->listed = 0;
}

static void avail_push_front(struct slab *s) {
    struct slab_class *c = s->cls;
    s->prev = NULL;
    s->next = c->avail;
    if (c->avail != NULL) {
        c->avail->prev = s;
    } else {
        c->avail_tail = s;
    }
    c->avail = s;
    s->listed = 1;
}

static void avail_push_back(struct slab *s) {
    struct slab_class *c = s->cls;
    s->next = NULL;
    s->prev = c->avail_tail;
    if (c->avail_tail != NULL) {
        c->avail_tail->next = s;
    } else {
        c->avail = s;
    }
    c->avail_tail = s;
    s->listed = 1;
}

static struct slab_class *class_for(size_t slot_size) {
    for (struct slab_class *c = classes; c != NULL; c = c->next) {
        if (c->slot_size == slot_size) {
            return c;
        }
    }
    union slab_record *r = record_alloc();
    if (r == NULL) {
        return NULL;
    }
    struct slab_class *c = &r->cls;
    c->slot_size = slot_size;
    size_t fit = SLAB_SPAN_TARGET / slot_size;
    c->nslots = fit == 0 ? 1u : fit > SLAB_SLOTS_MAX ? SLAB_SLOTS_MAX : (unsigned)fit;
    c->next = classes;
    classes = c;
    return c;
}

/*
 * Takes a fully free slab out of the bookkeeping if its class already keeps enough of them; the
 * caller unmaps what this returns (base, span) once the lock is released. Returns 0 when kept.
 */
static int slab_retire_if_surplus(struct slab *s, char **base, size_t *span) {
    struct slab_class *c = s->cls;
    if (s->free != slab_all(s->nslots) || c->empty <= SLAB_KEEP_EMPTY) {
        return 0;
    }
    c->empty--;
    avail_unlink(s);
    index_remove(s);
    mprotect_guards -= (size_t)popcount64(s->mprotected);
    *base = s->base;
    *span = s->span;
    record_free((union slab_record *)(void *)s);
    return 1;
}

static struct slab *slab_create(struct slab_class *c, int *err) {
    size_t gap = gap_size();
    unsigned nslots = c->nslots;
    size_t span = (size_t)nslots * c->slot_size;
    void *mem = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED && nslots > 1) {
        /* Short of address space (RLIMIT_AS, a 32-bit process): a single slot may still fit. */
        nslots = 1;
        span = c->slot_size;
        mem = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    }
    if (mem == MAP_FAILED) {
        *err = errno != 0 ? errno : ENOMEM;
        return NULL;
    }
#if defined(MADV_NOHUGEPAGE)
    /* A huge page would make the first touch of a stack cost 2 MiB (Linux >= 6.7 already does this for
       MAP_STACK). */
    (void)madvise(mem, span, MADV_NOHUGEPAGE);
#endif
    union slab_record *r = record_alloc();
    if (r == NULL) {
        munmap(mem, span);
        *err = ENOMEM;
        return NULL;
    }
    struct slab *s = &r->slab;
    s->base = mem;
    s->span = span;
    s->cls = c;
    s->nslots = nslots;
    s->free = slab_all(nslots);
    if (index_insert(s) != 0) {
        record_free(r);
        munmap(mem, span);
        *err = ENOMEM;
        return NULL;
    }
#if defined(__linux__)
    if (madvise_guard_works && guard_batch != BATCH_NONE) {
        struct iovec iov[SLAB_SLOTS_MAX];
        for (unsigned i = 0; i < nslots; i++) {
            iov[i].iov_base = s->base + (size_t)i * c->slot_size;
            iov[i].iov_len = gap;
        }
        if (batch_guard_install(guard_batch, iov, nslots, gap) == 0) {
            s->guarded = s->free;
        }
        /* Otherwise (a partial success included) each slot gets its guard when handed out;
           installing a guard twice is harmless. */
    }
#else
    (void)gap;
#endif
    c->empty++;
    avail_push_front(s);
    return s;
}

/* Makes the gap at the start of one slot inaccessible: MADV_GUARD_INSTALL, else mprotect (within its
   cap), else nothing. Caller holds slab_lock. */
static asyncjob_guard_kind guard_install(char *slot, size_t gap) {
#if defined(__linux__)
    if (madvise_guard_works && madvise(slot, gap, MADV_GUARD_INSTALL) == 0) {
        return ASYNCJOB_GUARD_MADVISE;
    }
#endif
    if (mprotect_guards < mprotect_guards_max && mprotect(slot, gap, PROT_NONE) == 0) {
        mprotect_guards++;
        return ASYNCJOB_GUARD_MPROTECT;
    }
    return ASYNCJOB_GUARD_NONE;
}

/* Gives the pages of a freed stack back to the kernel. */
static void release_pages(char *base, size_t size) {
#if defined(__linux__)
    (void)madvise(base, size, MADV_DONTNEED);
#elif defined(MADV_FREE)
    (void)madvise(base, size, MADV_FREE);
#else
    (void)posix_madvise(base, size, POSIX_MADV_DONTNEED);
#endif
}

#if defined(ASYNCJOB_ASAN)
/* Provided by the ASan runtime. */
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

/* ---- Stacks ---------------------------------------------------------------------------------------- */

int asyncjob_stack_alloc(size_t size, asyncjob_stack *out) {
    if (out == NULL || size == 0) {
        return EINVAL;
    }
    memset(out, 0, sizeof *out);
    pthread_once(&reporter_once, reporter_init);
    size_t ps = asyncjob_page_size();
    size_t gap = gap_size();
    if (size > SIZE_MAX - 2 * ps - gap) {
        return ENOMEM;
    }
    size_t usable = (size + ps - 1) & ~(ps - 1);
    size_t slot_size = usable + gap;

    pthread_mutex_lock(&slab_lock);
    struct slab_class *c = reporter_ready() ? class_for(slot_size) : NULL;
    if (c == NULL) {
        pthread_mutex_unlock(&slab_lock);
        return ENOMEM;
    }
    struct slab *s = c->avail;
    if (s == NULL) {
        int err = ENOMEM;
        s = slab_create(c, &err);
        if (s == NULL) {
            pthread_mutex_unlock(&slab_lock);
            return err;
        }
    }
    /* A slot whose guard is already in place costs no syscall. */
    uint64_t candidates = s->free & s->guarded;
    unsigned i = lowest_bit(candidates != 0 ? candidates : s->free);
    uint64_t bit = (uint64_t)1 << i;
    char *slot = s->base + (size_t)i * slot_size;
    if ((s->guarded & bit) == 0) {
        asyncjob_guard_kind kind = guard_install(slot, gap);
        if (kind == ASYNCJOB_GUARD_NONE) {
            char *base = NULL;
            size_t span = 0;
            int retired = slab_retire_if_surplus(s, &base, &span);
            pthread_mutex_unlock(&slab_lock);
            if (retired) {
                munmap(base, span);
            }
            return ENOMEM;
        }
        s->guarded |= bit;
        if (kind == ASYNCJOB_GUARD_MPROTECT) {
            s->mprotected |= bit;
        }
    }
    asyncjob_guard_kind guard = (s->mprotected & bit) != 0 ? ASYNCJOB_GUARD_MPROTECT : ASYNCJOB_GUARD_MADVISE;
    /* A stack whose overflow could not be reported is not handed out (the slot stays free, guarded). */
    if (reg_insert((uintptr_t)(slot + gap), usable) != 0) {
        pthread_mutex_unlock(&slab_lock);
        return ENOMEM;
    }
    if (s->free == slab_all(s->nslots)) {
        c->empty--;
    }
    s->free &= ~bit;
    if (s->free == 0) {
        avail_unlink(s);
    }
    pthread_mutex_unlock(&slab_lock);

    out->base = slot + gap;
    out->size = usable;
    out->mapping = slot;
    out->mapping_size = slot_size;
    out->guard = guard;
    return 0;
}

void asyncjob_stack_free(asyncjob_stack *stack) {
    if (stack == NULL || stack->mapping == NULL) {
        return;
    }
    size_t gap = gap_size();
    char *slot = stack->mapping;
    size_t slot_size = stack->mapping_size;
    int valid = stack->base == slot + gap && stack->size + gap == slot_size;
    memset(stack, 0, sizeof *stack);

    /* Anything but a handed-out slot (a stale copy of a freed stack) is left alone. */
    pthread_mutex_lock(&slab_lock);
    struct slab *s = valid ? slab_containing(slot) : NULL;
    unsigned i = 0;
    if (s != NULL) {
        size_t off = (size_t)(slot - s->base);
        i = (unsigned)(off / s->cls->slot_size);
        if (s->cls->slot_size != slot_size || off % slot_size != 0 || (s->free & ((uint64_t)1 << i)) != 0) {
            s = NULL;
        }
    }
    if (s != NULL) {
        reg_remove((uintptr_t)(slot + gap), slot_size - gap);
    }
    pthread_mutex_unlock(&slab_lock);
    if (s == NULL) {
        return;
    }
    /* The slot is still ours (not on the free list), so its slab cannot go away meanwhile. */
#if defined(ASYNCJOB_ASAN)
    /* Frames of a fiber that never returned leave poisoned redzones; the next stack here starts clean. */
    __asan_unpoison_memory_region(slot + gap, slot_size - gap);
#endif
    release_pages(slot + gap, slot_size - gap);

    pthread_mutex_lock(&slab_lock);
    struct slab_class *c = s->cls;
    int was_full = s->free == 0;
    s->free |= (uint64_t)1 << i;
    char *base = NULL;
    size_t span = 0;
    int retired = 0;
    if (s->free == slab_all(s->nslots)) {
        c->empty++;
        retired = slab_retire_if_surplus(s, &base, &span);
        if (!retired) {
            /* Partly used slabs are handed out from first, so that this one can drain. */
            avail_unlink(s);
            avail_push_back(s);
        }
    } else if (was_full) {
        avail_push_front(s);
    }
    pthread_mutex_unlock(&slab_lock);
    if (retired) {
        munmap(base, span);
    }
}
