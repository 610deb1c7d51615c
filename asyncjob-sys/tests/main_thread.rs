//! Fibers switched from the process's main thread (a test binary without libtest's harness, which
//! would run every test on a thread of its own), with an allocation on every fiber and pools of
//! stacks made and dropped again in rounds, the pattern of an OpenSSL program that calls
//! ASYNC_init_thread and ASYNC_cleanup_thread repeatedly. The main thread's stack lies far from the
//! slabs that fiber stacks come from. ci/step-11-sys-reliability.sh runs it under Valgrind, with 0
//! errors and no "client switching stacks?" warning required. Before the shim registered stacks with
//! Valgrind in every build, this binary (built without features) crashed Valgrind itself in every
//! run: "valgrind: the 'impossible' happened: Killed by fatal signal" in its stack unwinder
//! (vgPlain_get_StackTrace_wrk), after "Warning: client switching stacks?".

mod support;

use asyncjob_sys as sys;
use core::cell::Cell;
use core::ffi::c_void;
use support::{Fiber, Stack, arg_ref, switch, thread_fiber};

struct State {
    thread: *mut sys::asyncjob_fiber,
    me: Cell<*mut sys::asyncjob_fiber>,
    sum: Cell<usize>,
}

unsafe extern "C" fn entry(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: `arg` is main's State, which outlives the fiber; main does not touch it while the
    // fiber runs.
    let state: &State = unsafe { arg_ref(arg) };
    let mut value = first as usize;
    loop {
        // An allocation on the fiber: under Valgrind it records a backtrace of the fiber's stack.
        let boxed = std::hint::black_box(Box::new(value));
        state.sum.set(state.sum.get() + *boxed);
        // Freed before switching away: the fiber is never resumed after its last switch.
        drop(boxed);
        value = switch(state.me.get(), state.thread, value + 1);
    }
}

fn main() {
    if !support::uses_caller_stack() {
        return; // Windows Fibers: the OS owns the stacks.
    }
    let thread = thread_fiber();
    for round in 0..3 {
        // A pool created, used and dropped again, as an OpenSSL program does with ASYNC_init_thread
        // and ASYNC_cleanup_thread.
        let stacks: Vec<Stack> = (0..4)
            .map(|_| Stack::new(64 * 1024).expect("stack"))
            .collect();
        for stack in &stacks {
            let state = State {
                thread,
                me: Cell::new(core::ptr::null_mut()),
                sum: Cell::new(0),
            };
            let fiber = Fiber::new(stack, entry, (&raw const state).cast_mut().cast());
            state.me.set(fiber.raw);
            for i in 0..5 {
                assert_eq!(switch(thread, fiber.raw, i), i + 1);
            }
            assert_eq!(state.sum.get(), 10);
        }
        eprintln!("main_thread: round {round} ok");
    }
    support::release_thread_fiber();
    println!("main_thread: ok");
}
