/*
 * C-level tests of the aarch64 asm backend (arch/aarch64_aapcs64.S + csrc/fiber_asm.c), run under
 * qemu-aarch64 by ci/step-31-aarch64.sh, once plain and once built with -mbranch-protection=standard
 * (return addresses signed with PAC; qemu's default CPU implements PAC, so a wrong signature faults).
 * The Rust tests of asyncjob-sys cover the API; these cover what only C and asm can see: every
 * callee-saved register, stack alignment at entry, DWARF unwinding from a fiber into its resumer, and
 * the abort when an entry function returns.
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/wait.h>
#include <unistd.h>

#include "asyncjob_fiber.h"

int aj_test_regcheck(asyncjob_fiber *from, asyncjob_fiber *to, void *value);
void *aj_test_clobber_and_switch(asyncjob_fiber *from, asyncjob_fiber *to, void *value);

static int failures;
#define CHECK(cond)                                                                                    \
    do {                                                                                               \
        if (!(cond)) {                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                   \
            failures++;                                                                                \
        }                                                                                              \
    } while (0)

#define STACK_SIZE (64 * 1024)
static _Alignas(16) unsigned char stacks[3][STACK_SIZE];

static asyncjob_fiber *main_fiber;

/* ---- values: arg, first_value, and values both ways ------------------------------------------------ */

struct ping {
    asyncjob_fiber *self;
    void *arg_seen;
    void *first_seen;
};

static void ping_entry(void *arg, void *first_value) {
    struct ping *p = arg;
    p->arg_seen = arg;
    p->first_seen = first_value;
    uintptr_t v = (uintptr_t)first_value;
    for (;;) {
        v = (uintptr_t)asyncjob_fiber_switch(p->self, main_fiber, (void *)(v * 2));
    }
}

static void test_values(void) {
    struct ping p = {0};
    p.self = asyncjob_fiber_create(stacks[0], STACK_SIZE, ping_entry, &p);
    CHECK(p.self != NULL);
    void *r = asyncjob_fiber_switch(main_fiber, p.self, (void *)(uintptr_t)21);
    CHECK(p.arg_seen == &p);
    CHECK(p.first_seen == (void *)(uintptr_t)21);
    CHECK(r == (void *)(uintptr_t)42);
    for (uintptr_t i = 1; i <= 10000; i++) {
        r = asyncjob_fiber_switch(main_fiber, p.self, (void *)i);
        if (r != (void *)(2 * i)) {
            CHECK(r == (void *)(2 * i));
            break;
        }
    }
    asyncjob_fiber_free(p.self);
}

/* ---- callee-saved registers ------------------------------------------------------------------------- */

static asyncjob_fiber *clobber_self;

static void clobber_entry(void *arg, void *first_value) {
    (void)arg;
    (void)first_value;
    for (;;) {
        aj_test_clobber_and_switch(clobber_self, main_fiber, NULL);
    }
}

static void test_registers(void) {
    clobber_self = asyncjob_fiber_create(stacks[1], STACK_SIZE, clobber_entry, NULL);
    CHECK(clobber_self != NULL);
    /* First entry (fresh frame), then resumes of a suspended fiber. */
    for (int i = 0; i < 3; i++) {
        int bad = aj_test_regcheck(main_fiber, clobber_self, NULL);
        if (bad != 0) {
            fprintf(stderr, "round %d: %d callee-saved registers changed\n", i, bad);
        }
        CHECK(bad == 0);
    }
    asyncjob_fiber_free(clobber_self);
}

/* ---- stack alignment and placement ------------------------------------------------------------------ */

static asyncjob_fiber *align_self;
static uintptr_t entry_sp;

static void align_entry(void *arg, void *first_value) {
    (void)arg;
    (void)first_value;
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    entry_sp = sp;
    asyncjob_fiber_switch(align_self, main_fiber, NULL);
    abort();
}

static void test_alignment(void) {
    /* Odd-but-legal sizes: the fiber must still start on a 16-byte aligned stack. */
    size_t sizes[] = {4096, 4096 + 16, STACK_SIZE - 48};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        entry_sp = 0;
        align_self = asyncjob_fiber_create(stacks[2], sizes[i], align_entry, NULL);
        CHECK(align_self != NULL);
        asyncjob_fiber_switch(main_fiber, align_self, NULL);
        CHECK(entry_sp % 16 == 0);
        uintptr_t lo = (uintptr_t)stacks[2];
        uintptr_t hi = lo + sizes[i] - asyncjob_fiber_stack_reserve();
        CHECK(entry_sp > lo && entry_sp < hi);
        asyncjob_fiber_free(align_self);
    }
}

/* ---- fiber to fiber --------------------------------------------------------------------------------- */

static asyncjob_fiber *fa, *fb;
static int order[4], order_n;

static void b_entry(void *arg, void *first_value) {
    (void)arg;
    order[order_n++] = 2 + (first_value == (void *)fb);
    asyncjob_fiber_switch(fb, fa, (void *)(uintptr_t)7);
    abort();
}

static void a_entry(void *arg, void *first_value) {
    (void)arg;
    order[order_n++] = 1;
    void *r = asyncjob_fiber_switch(fa, fb, fb);
    order[order_n++] = r == (void *)(uintptr_t)7 ? 4 : -1;
    asyncjob_fiber_switch(fa, main_fiber, first_value);
    abort();
}

static void test_fiber_to_fiber(void) {
    fa = asyncjob_fiber_create(stacks[0], STACK_SIZE, a_entry, NULL);
    fb = asyncjob_fiber_create(stacks[1], STACK_SIZE, b_entry, NULL);
    CHECK(fa != NULL && fb != NULL);
    void *r = asyncjob_fiber_switch(main_fiber, fa, (void *)(uintptr_t)99);
    CHECK(r == (void *)(uintptr_t)99);
    CHECK(order_n == 3);
    CHECK(order[0] == 1 && order[1] == 3 && order[2] == 4);
    asyncjob_fiber_free(fa);
    asyncjob_fiber_free(fb);
}

/* ---- unwinding from a fiber into its resumer -------------------------------------------------------- */

static asyncjob_fiber *bt_self;
static int bt_found_resumer, bt_found_main, bt_depth;

static __attribute__((noinline)) void bt_inner(void) {
    void *frames[64];
    int n = backtrace(frames, 64);
    char **names = backtrace_symbols(frames, n);
    bt_depth = n;
    for (int i = 0; names != NULL && i < n; i++) {
        if (getenv("AJ_TEST_VERBOSE") != NULL) {
            fprintf(stderr, "  #%d %s\n", i, names[i]);
        }
        if (strstr(names[i], "(bt_resumer_marker+") != NULL) {
            bt_found_resumer = 1;
        }
        if (strstr(names[i], "(main+") != NULL) {
            bt_found_main = 1;
        }
    }
    free(names);
}

static void bt_entry(void *arg, void *first_value) {
    (void)arg;
    (void)first_value;
    bt_inner();
    asyncjob_fiber_switch(bt_self, main_fiber, NULL);
    abort();
}

__attribute__((noinline)) void bt_resumer_marker(void) {
    bt_self = asyncjob_fiber_create(stacks[0], STACK_SIZE, bt_entry, NULL);
    CHECK(bt_self != NULL);
    asyncjob_fiber_switch(main_fiber, bt_self, NULL);
    asyncjob_fiber_free(bt_self);
    __asm__ volatile("" ::: "memory"); /* keeps this frame from becoming a tail call */
}

static void test_backtrace(void) {
    bt_resumer_marker();
    if (!bt_found_resumer || !bt_found_main) {
        fprintf(stderr, "backtrace from the fiber (%d frames) missed the resumer/main\n", bt_depth);
    }
    CHECK(bt_found_resumer);
    CHECK(bt_found_main);
}

/* ---- an entry function that returns aborts the process ---------------------------------------------- */

static void returning_entry(void *arg, void *first_value) {
    (void)arg;
    (void)first_value;
}

static void test_return_aborts(void) {
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* Quiet the expected message; the parent checks the signal. */
        FILE *devnull = freopen("/dev/null", "w", stderr);
        (void)devnull;
        asyncjob_fiber *self = asyncjob_thread_fiber();
        asyncjob_fiber *f = asyncjob_fiber_create(stacks[0], STACK_SIZE, returning_entry, NULL);
        asyncjob_fiber_switch(self, f, NULL);
        _exit(0); /* not reached if the backend aborts */
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

/* ---- argument checks of create ---------------------------------------------------------------------- */

static void test_create_rejects(void) {
    CHECK(asyncjob_fiber_create(stacks[0] + 8, 8192, ping_entry, NULL) == NULL);
    CHECK(asyncjob_fiber_create(stacks[0], 4080, ping_entry, NULL) == NULL);
    CHECK(asyncjob_fiber_create(stacks[0], 8200, ping_entry, NULL) == NULL);
    CHECK(asyncjob_fiber_create(stacks[0], 8192, NULL, NULL) == NULL);
    CHECK(asyncjob_fiber_create(NULL, 8192, ping_entry, NULL) == NULL);
}

int main(void) {
#ifndef HWCAP_PACA
#  define HWCAP_PACA (1UL << 30)
#endif
    printf("backend %s, stack reserve %zu, PAC in hardware: %s, built with PAC: %s\n",
           asyncjob_fiber_backend(), asyncjob_fiber_stack_reserve(),
           (getauxval(AT_HWCAP) & HWCAP_PACA) ? "yes" : "no",
#if defined(__ARM_FEATURE_PAC_DEFAULT)
           "yes"
#else
           "no"
#endif
    );
    CHECK(strcmp(asyncjob_fiber_backend(), "aarch64-aapcs64-asm") == 0);
    CHECK(asyncjob_fiber_is_capable() == 1);
    CHECK(asyncjob_fiber_uses_caller_stack() == 1);
    main_fiber = asyncjob_thread_fiber();
    CHECK(main_fiber != NULL);
    CHECK(asyncjob_thread_fiber() == main_fiber);

    test_values();
    test_registers();
    test_alignment();
    test_fiber_to_fiber();
    test_backtrace();
    test_return_aborts();
    test_create_rejects();

    asyncjob_thread_fiber_release();
    if (failures != 0) {
        printf("FAILED: %d check(s)\n", failures);
        return 1;
    }
    printf("all aarch64 asm checks passed\n");
    return 0;
}
