//! Raw switch round trip (thread -> fiber -> thread, two switches) of the shim, next to corosensei's
//! resume/suspend round trip in the same run.

use asyncjob_sys as sys;
use core::ffi::c_void;
use corosensei::Coroutine;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

struct Pair {
    thread: *mut sys::asyncjob_fiber,
    fiber: *mut sys::asyncjob_fiber,
}

unsafe extern "C" fn echo(arg: *mut c_void, first: *mut c_void) {
    let pair = arg.cast::<Pair>();
    let mut value = first;
    loop {
        // SAFETY: `pair` outlives the fiber (the benchmark never resumes it after dropping the
        // pair) and holds the running fiber and the thread fiber that resumed it.
        value = unsafe { sys::asyncjob_fiber_switch((*pair).fiber, (*pair).thread, value) };
    }
}

fn shim_round_trip(c: &mut Criterion) {
    let mut stack = sys::asyncjob_stack {
        base: core::ptr::null_mut(),
        size: 0,
        mapping: core::ptr::null_mut(),
        mapping_size: 0,
        guard: sys::ASYNCJOB_GUARD_NONE,
    };
    // SAFETY: `stack` is a valid out parameter.
    let rc = unsafe { sys::asyncjob_stack_alloc(64 * 1024, &mut stack) };
    assert_eq!(rc, 0);
    let mut pair = Box::new(Pair {
        thread: core::ptr::null_mut(),
        fiber: core::ptr::null_mut(),
    });
    // SAFETY: no preconditions.
    pair.thread = unsafe { sys::asyncjob_thread_fiber() };
    let pair_ptr: *mut Pair = &mut *pair;
    // SAFETY: the stack is alive and large enough; `pair` outlives the fiber.
    pair.fiber =
        unsafe { sys::asyncjob_fiber_create(stack.base, stack.size, Some(echo), pair_ptr.cast()) };
    assert!(!pair.fiber.is_null());
    let (thread, fiber) = (pair.thread, pair.fiber);
    let mut group = c.benchmark_group("switch round trip");
    group.bench_function("asyncjob-sys", |b| {
        b.iter(|| {
            // SAFETY: runs on the thread fiber; the fiber is suspended in `echo` (or new).
            unsafe { sys::asyncjob_fiber_switch(thread, fiber, black_box(core::ptr::null_mut())) }
        })
    });
    let mut coroutine = Coroutine::new(|yielder, mut input: usize| {
        loop {
            input = yielder.suspend(input);
        }
    });
    group.bench_function("corosensei", |b| {
        b.iter(|| coroutine.resume(black_box(0usize)))
    });
    group.finish();
    drop(coroutine);
    // SAFETY: the fiber is suspended and never resumed again; its stack is freed after it.
    unsafe {
        sys::asyncjob_fiber_free(fiber);
        sys::asyncjob_stack_free(&mut stack);
    }
    drop(pair);
}

criterion_group!(benches, shim_round_trip);
criterion_main!(benches);
