//! Fatal paths, each checked in a child process (this test binary re-executed with an env var):
//! a stack overflow ends on the guard page with a clear message, an ordinary bad access is not
//! mistaken for one, and a returning entry function aborts.
#![cfg(unix)]

mod support;

use asyncjob_sys as sys;
use core::cell::Cell;
use core::ffi::c_void;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use support::{Fiber, Stack, arg_ref, switch, thread_fiber};

const CHILD: &str = "ASYNCJOB_SYS_TEST_CHILD";
const SIGSEGV: i32 = 11;
const SIGABRT: i32 = 6;
const STACK: usize = 64 * 1024;

/// Runs `test` of this binary in a child with CHILD=`test`; returns (signal, stderr).
fn run_child(test: &str) -> (Option<i32>, String) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .expect("spawn child");
    (
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn in_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|v| v == test)
}

struct Shared {
    thread: *mut sys::asyncjob_fiber,
    me: Cell<*mut sys::asyncjob_fiber>,
}

#[inline(never)]
fn recurse(depth: usize) -> usize {
    let mut frame = [0u8; 512];
    frame[depth % 512] = depth as u8;
    let frame = std::hint::black_box(frame);
    if depth == usize::MAX {
        return 0;
    }
    recurse(depth + 1) + frame[(depth * 7) % 512] as usize
}

unsafe extern "C" fn overflow_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the child's Shared, alive while the fiber runs, only used through `&`.
    let s: &Shared = unsafe { arg_ref(arg) };
    let n = recurse(0);
    switch(s.me.get(), s.thread, n);
}

fn run_in_fiber(entry: support::Entry) {
    let stack = Stack::new(STACK).expect("stack");
    let s = Shared {
        thread: thread_fiber(),
        me: Cell::new(core::ptr::null_mut()),
    };
    let fiber = Fiber::new(&stack, entry, (&raw const s).cast_mut().cast());
    s.me.set(fiber.raw);
    switch(s.thread, fiber.raw, 0);
}

#[test]
fn stack_overflow_hits_the_guard_page_and_says_so() {
    const NAME: &str = "stack_overflow_hits_the_guard_page_and_says_so";
    if in_child(NAME) {
        run_in_fiber(overflow_entry);
        eprintln!("child survived the overflow");
        return;
    }
    let (signal, stderr) = run_child(NAME);
    assert_eq!(signal, Some(SIGABRT), "stderr: {stderr}");
    let expected = format!(
        "asyncjob: stack overflow in a fiber: the job used more than its {STACK}-byte stack (guard page hit at 0x"
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");
    assert!(!stderr.contains("child survived"));
}

unsafe extern "C" fn wild_read_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the child's Shared, alive while the fiber runs, only used through `&`.
    let s: &Shared = unsafe { arg_ref(arg) };
    let wild = std::hint::black_box(16usize) as *const u8;
    // SAFETY: not safe at all: this child process exists to fault on an unmapped low address.
    let v = unsafe { wild.read_volatile() };
    switch(s.me.get(), s.thread, v as usize);
}

#[test]
fn an_ordinary_fault_in_a_fiber_is_not_reported_as_overflow() {
    const NAME: &str = "an_ordinary_fault_in_a_fiber_is_not_reported_as_overflow";
    if in_child(NAME) {
        // Make sure the reporter is installed before the fault.
        drop(Stack::new(4096).expect("stack"));
        run_in_fiber(wild_read_entry);
        eprintln!("child survived the bad read");
        return;
    }
    let (signal, stderr) = run_child(NAME);
    // The fault goes to the handler that was installed before ours: Rust's (which restores the
    // default action, so the process dies of SIGSEGV) or, in ASan builds, ASan's report.
    let asan_report = stderr.contains("AddressSanitizer: SEGV on unknown address 0x000000000010");
    assert!(
        signal == Some(SIGSEGV) || asan_report,
        "signal {signal:?}, stderr: {stderr}"
    );
    assert!(!stderr.contains("asyncjob:"), "stderr: {stderr}");
}

unsafe extern "C" fn returning_entry(_arg: *mut c_void, _first: *mut c_void) {}

#[test]
fn an_entry_function_that_returns_aborts() {
    const NAME: &str = "an_entry_function_that_returns_aborts";
    if in_child(NAME) {
        run_in_fiber(returning_entry);
        eprintln!("child survived the return");
        return;
    }
    let (signal, stderr) = run_child(NAME);
    assert_eq!(signal, Some(SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("asyncjob: a fiber entry function returned"),
        "stderr: {stderr}"
    );
}

// ---- SIGSEGV sent by a process (raise, kill) is not a fault: the reporter stays out of the way ----

const SIG_DFL: usize = 0;

unsafe extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn raise(sig: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn getpid() -> i32;
}

/// Sends SIGSEGV to this process the way `how` says ("raise" or "kill").
fn send_sigsegv(how: &str) {
    // SAFETY: plain libc calls; the child process running this expects the signal.
    let rc = unsafe {
        if how == "raise" {
            raise(SIGSEGV)
        } else {
            kill(getpid(), SIGSEGV)
        }
    };
    assert_eq!(rc, 0, "sending SIGSEGV with {how}");
}

const HOW: &str = "ASYNCJOB_SYS_TEST_HOW";

#[test]
fn a_user_sent_sigsegv_kills_as_without_the_library() {
    const NAME: &str = "a_user_sent_sigsegv_kills_as_without_the_library";
    if in_child(NAME) {
        // SAFETY: restores the default action (Rust's runtime installed its own handler).
        unsafe { signal(SIGSEGV, SIG_DFL) };
        // The first stack installs the overflow reporter, chained to the default action.
        let stack = Stack::new(STACK).expect("stack");
        let how = std::env::var(HOW).expect("how");
        send_sigsegv(&how);
        if how == "kill" {
            // A process-directed signal may be taken by another thread: give it time to end us.
            for _ in 0..600 {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        eprintln!("child survived the first SIGSEGV");
        drop(stack);
        return;
    }
    for how in ["raise", "kill"] {
        let exe = std::env::current_exe().expect("test binary");
        let out = Command::new(exe)
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, NAME)
            .env(HOW, how)
            .output()
            .expect("spawn child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(SIGSEGV),
            "[{how}] stderr: {stderr}"
        );
        assert!(!stderr.contains("survived"), "[{how}] stderr: {stderr}");
        assert!(!stderr.contains("asyncjob:"), "[{how}] stderr: {stderr}");
    }
}

static USER_HANDLER_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn user_handler(_sig: i32) {
    USER_HANDLER_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn a_user_sent_sigsegv_reaches_the_previous_handler_and_the_reporter_stays() {
    const NAME: &str = "a_user_sent_sigsegv_reaches_the_previous_handler_and_the_reporter_stays";
    if in_child(NAME) {
        // SAFETY: installs an async-signal-safe handler (one atomic add) before the reporter.
        unsafe { signal(SIGSEGV, user_handler as extern "C" fn(i32) as usize) };
        let stack = Stack::new(STACK).expect("stack");
        send_sigsegv("raise");
        send_sigsegv("kill");
        // The process-directed one may be handled on another thread: wait for it (bounded).
        let mut calls = 0;
        for _ in 0..600 {
            calls = USER_HANDLER_CALLS.load(std::sync::atomic::Ordering::SeqCst);
            if calls >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("user handler calls: {calls}");
        // The reporter is still in place: a guard hit is still reported.
        stack.poke_guard();
        eprintln!("child survived the guard page");
        return;
    }
    let (signal, stderr) = run_child(NAME);
    assert!(stderr.contains("user handler calls: 2"), "stderr: {stderr}");
    assert_eq!(signal, Some(SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("asyncjob: stack overflow in a fiber"),
        "stderr: {stderr}"
    );
}

#[test]
fn an_ignored_user_sent_sigsegv_stays_ignored_and_the_reporter_stays() {
    const NAME: &str = "an_ignored_user_sent_sigsegv_stays_ignored_and_the_reporter_stays";
    const SIG_IGN: usize = 1;
    if in_child(NAME) {
        // SAFETY: ignoring a signal that only this process sends to itself.
        unsafe { signal(SIGSEGV, SIG_IGN) };
        let stack = Stack::new(STACK).expect("stack");
        send_sigsegv("raise");
        send_sigsegv("kill");
        eprintln!("child ignored both");
        // A real fault is never ignored: the guard hit is reported.
        stack.poke_guard();
        eprintln!("child survived the guard page");
        return;
    }
    let (signal, stderr) = run_child(NAME);
    assert!(stderr.contains("child ignored both"), "stderr: {stderr}");
    assert_eq!(signal, Some(SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("asyncjob: stack overflow in a fiber"),
        "stderr: {stderr}"
    );
}
