/*
 * C-level tests of csrc/fiber_windows.c, cross-compiled with mingw-w64 and run under Wine by
 * ci/step-30-windows.sh. The Rust tests of asyncjob-sys cover the API; these cover the Windows-only
 * rules: converting the thread and converting it back, adopting a thread that already is a fiber
 * (and leaving it a fiber), fibers on a second thread that then exits, the floating-point control
 * state travelling with each fiber, and the abort when an entry function returns.
 */
#define _WIN32_WINNT 0x0600
#include <windows.h>
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "asyncjob_fiber.h"

static int failures;
#define CHECK(cond)                                                                                    \
    do {                                                                                               \
        if (!(cond)) {                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                   \
            failures++;                                                                                \
        }                                                                                              \
    } while (0)

static _Thread_local asyncjob_fiber *main_fiber;

struct ping {
    asyncjob_fiber *self;
    void *first_seen;
};

static void ping_entry(void *arg, void *first_value) {
    struct ping *p = arg;
    p->first_seen = first_value;
    uintptr_t v = (uintptr_t)first_value;
    for (;;) {
        v = (uintptr_t)asyncjob_fiber_switch(p->self, main_fiber, (void *)(v * 2));
    }
}

/* Runs a ping fiber for a few thousand round trips on the calling thread. */
static int ping_rounds(void) {
    int bad = 0;
    struct ping p = {0};
    p.self = asyncjob_fiber_create(NULL, 64 * 1024, ping_entry, &p);
    if (p.self == NULL) {
        return 1;
    }
    void *r = asyncjob_fiber_switch(main_fiber, p.self, (void *)(uintptr_t)21);
    bad += p.first_seen != (void *)(uintptr_t)21;
    bad += r != (void *)(uintptr_t)42;
    for (uintptr_t i = 1; i <= 5000; i++) {
        r = asyncjob_fiber_switch(main_fiber, p.self, (void *)i);
        bad += r != (void *)(2 * i);
    }
    asyncjob_fiber_free(p.self);
    return bad;
}

static void test_convert_and_release(void) {
    CHECK(!IsThreadAFiber());
    main_fiber = asyncjob_thread_fiber();
    CHECK(main_fiber != NULL);
    CHECK(asyncjob_thread_fiber() == main_fiber);
    CHECK(IsThreadAFiber());
    CHECK(ping_rounds() == 0);
    asyncjob_thread_fiber_release();
    CHECK(!IsThreadAFiber());
    /* Releasing twice, or an unprepared thread, is fine. */
    asyncjob_thread_fiber_release();
    /* And the thread can be prepared again. */
    main_fiber = asyncjob_thread_fiber();
    CHECK(main_fiber != NULL);
    CHECK(ping_rounds() == 0);
    asyncjob_thread_fiber_release();
    CHECK(!IsThreadAFiber());
}

static void test_adopt(void) {
    LPVOID own = ConvertThreadToFiber(NULL);
    CHECK(own != NULL);
    main_fiber = asyncjob_thread_fiber();
    CHECK(main_fiber != NULL);
    CHECK(ping_rounds() == 0);
    asyncjob_thread_fiber_release();
    /* We did not convert it, so we must not have converted it back. */
    CHECK(IsThreadAFiber());
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
    CHECK(GetCurrentFiber() == own);
#pragma GCC diagnostic pop
    CHECK(ConvertFiberToThread());
}

static DWORD WINAPI second_thread(LPVOID param) {
    int *bad = param;
    main_fiber = asyncjob_thread_fiber();
    *bad = main_fiber == NULL ? 1 : ping_rounds();
    asyncjob_thread_fiber_release();
    *bad += IsThreadAFiber() ? 1 : 0;
    return 0;
}

static void test_other_thread(void) {
    for (int i = 0; i < 4; i++) {
        int bad = -1;
        HANDLE t = CreateThread(NULL, 0, second_thread, &bad, 0, NULL);
        CHECK(t != NULL);
        CHECK(WaitForSingleObject(t, INFINITE) == WAIT_OBJECT_0);
        CloseHandle(t);
        CHECK(bad == 0);
    }
}

/* FIBER_FLAG_FLOAT_SWITCH: each fiber keeps its own rounding mode. */
static asyncjob_fiber *fp_self;
static unsigned fp_seen_in_fiber;

static void fp_entry(void *arg, void *first_value) {
    (void)arg;
    (void)first_value;
    unsigned cw;
    _controlfp_s(&cw, _RC_DOWN, _MCW_RC);
    for (;;) {
        asyncjob_fiber_switch(fp_self, main_fiber, NULL);
        _controlfp_s(&cw, 0, 0);
        fp_seen_in_fiber = cw & _MCW_RC;
    }
}

static void test_float_state(void) {
    unsigned cw;
    main_fiber = asyncjob_thread_fiber();
    fp_self = asyncjob_fiber_create(NULL, 64 * 1024, fp_entry, NULL);
    CHECK(fp_self != NULL);
    _controlfp_s(&cw, _RC_NEAR, _MCW_RC);
    asyncjob_fiber_switch(main_fiber, fp_self, NULL); /* fiber sets round-down */
    _controlfp_s(&cw, 0, 0);
    CHECK((cw & _MCW_RC) == _RC_NEAR);
    _controlfp_s(&cw, _RC_UP, _MCW_RC);
    asyncjob_fiber_switch(main_fiber, fp_self, NULL);
    CHECK(fp_seen_in_fiber == _RC_DOWN);
    _controlfp_s(&cw, 0, 0);
    CHECK((cw & _MCW_RC) == _RC_UP);
    _controlfp_s(&cw, _RC_NEAR, _MCW_RC);
    asyncjob_fiber_free(fp_self);
    asyncjob_thread_fiber_release();
}

static void test_contract_answers(void) {
    CHECK(strcmp(asyncjob_fiber_backend(), "windows-fibers") == 0);
    CHECK(asyncjob_fiber_is_capable() == 1);
    CHECK(asyncjob_fiber_uses_caller_stack() == 0);
    CHECK(asyncjob_fiber_stack_reserve() == 0);
    size_t page = asyncjob_page_size();
    CHECK(page >= 4096 && (page & (page - 1)) == 0);
    asyncjob_stack st;
    memset(&st, 0xab, sizeof st);
    CHECK(asyncjob_stack_alloc(65536, &st) != 0);
    CHECK(st.base == NULL && st.size == 0);
    asyncjob_stack_free(&st);
    CHECK(asyncjob_fiber_create(NULL, 100, ping_entry, NULL) == NULL);
    CHECK(asyncjob_fiber_create(NULL, 8200, ping_entry, NULL) == NULL);
    CHECK(asyncjob_fiber_create(NULL, 8192, NULL, NULL) == NULL);
    /* A never-started fiber can be freed. */
    asyncjob_fiber *f = asyncjob_fiber_create(NULL, 8192, ping_entry, NULL);
    CHECK(f != NULL);
    asyncjob_fiber_free(f);
}

static void returning_entry(void *arg, void *first_value) {
    (void)arg;
    (void)first_value;
}

/* Child mode: an entry function returns; the process must abort (exit code 3 on Windows). */
static int child_return(void) {
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
    main_fiber = asyncjob_thread_fiber();
    asyncjob_fiber *f = asyncjob_fiber_create(NULL, 65536, returning_entry, NULL);
    asyncjob_fiber_switch(main_fiber, f, NULL);
    return 0;
}

static void test_return_aborts(const char *self_path) {
    char cmd[MAX_PATH + 32];
    snprintf(cmd, sizeof cmd, "\"%s\" child-return", self_path);
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    CHECK(CreateProcessA(NULL, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &si, &pi));
    WaitForSingleObject(pi.hProcess, INFINITE);
    DWORD code = 0;
    CHECK(GetExitCodeProcess(pi.hProcess, &code));
    CloseHandle(pi.hProcess);
    CloseHandle(pi.hThread);
    CHECK(code == 3);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child-return") == 0) {
        return child_return();
    }
    test_contract_answers();
    test_convert_and_release();
    test_adopt();
    test_other_thread();
    test_float_state();
    test_return_aborts(argv[0]);
    if (failures != 0) {
        printf("FAILED: %d check(s)\n", failures);
        return 1;
    }
    printf("all windows fiber checks passed\n");
    return 0;
}
