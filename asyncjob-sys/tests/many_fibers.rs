//! Many short-lived fibers on one thread (a test binary without libtest's harness: no other threads).
//! Under ThreadSanitizer each fiber needs a TSan context of its own (feature `sanitizers` makes one
//! per fiber): every fiber's last switch leaves a function without returning from it. Before the
//! shim had TSan annotations this binary, built with -Zsanitizer=thread, printed "many_fibers: ok"
//! and then died inside TSan ("ThreadSanitizer: SEGV on unknown address", "nested bug in the same
//! thread"). ci/step-11-sys-reliability.sh runs it under TSan; natively it is a plain loop.

mod support;

use asyncjob_sys as sys;
use core::cell::Cell;
use core::ffi::c_void;
use support::{Fiber, Stack, arg_ref, switch, thread_fiber};

struct State {
    thread: *mut sys::asyncjob_fiber,
    me: Cell<*mut sys::asyncjob_fiber>,
    value: Cell<usize>,
}

unsafe extern "C" fn entry(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: `arg` is main's State, alive while the fiber runs; main does not touch it meanwhile.
    let state: &State = unsafe { arg_ref(arg) };
    state.value.set(first as usize + 1);
    switch(state.me.get(), state.thread, 0);
    unreachable!("never resumed");
}

fn main() {
    if !support::uses_caller_stack() {
        return;
    }
    let thread = thread_fiber();
    let stack = Stack::new(64 * 1024).expect("stack");
    let state = State {
        thread,
        me: Cell::new(core::ptr::null_mut()),
        value: Cell::new(0),
    };
    for i in 0..200_000 {
        let fiber = Fiber::new(&stack, entry, (&raw const state).cast_mut().cast());
        state.me.set(fiber.raw);
        switch(thread, fiber.raw, i);
        assert_eq!(state.value.get(), i + 1);
    }
    println!("many_fibers: ok");
}
