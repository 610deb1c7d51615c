//! Raw switch round trip (thread -> fiber -> thread, two switches) of the shim, next to corosensei's
//! resume/suspend round trip in the same run; and the same round trip with each switch called from a
//! function that returns right after it, as `ASYNC_start_job` and `ASYNC_pause_job` must: that return
//! comes after a jump from another stack, so the return-address predictor gets it wrong. On x86_64
//! Linux also with each switch in a thunk that calls it, then calls a function, and returns to its
//! caller by `pop` and `jmp`: every return after the switch then matches a call made after it.

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

/// A switch and a return right after it: what an out-of-line C entry point around a switch does.
#[inline(never)]
fn switch_and_return(
    from: *mut sys::asyncjob_fiber,
    to: *mut sys::asyncjob_fiber,
    value: *mut c_void,
) -> *mut c_void {
    // SAFETY: the callers keep to the switch contract (`from` runs, `to` is suspended or new).
    black_box(unsafe { sys::asyncjob_fiber_switch(from, to, value) })
}

// `asyncjob_bench_switch_then_jump(from, to, value)`: the switch, then a call of `after_switch` with its
// value, then back to the caller by an indirect jump instead of `ret`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".globl asyncjob_bench_switch_then_jump",
    ".p2align 4",
    "asyncjob_bench_switch_then_jump:",
    "push rbx",
    "call {switch}",
    "mov rdi, rax",
    "call {after}",
    "pop rbx",
    "pop rcx",
    "jmp rcx",
    switch = sym sys::asyncjob_fiber_switch,
    after = sym after_switch,
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe extern "C" {
    fn asyncjob_bench_switch_then_jump(
        from: *mut sys::asyncjob_fiber,
        to: *mut sys::asyncjob_fiber,
        value: *mut c_void,
    ) -> *mut c_void;
}

/// What a C entry point does after its switch, kept out of line.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(never)]
extern "C" fn after_switch(value: *mut c_void) -> *mut c_void {
    black_box(value)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe extern "C" fn echo_jumping(arg: *mut c_void, first: *mut c_void) {
    let pair = arg.cast::<Pair>();
    let mut value = first;
    loop {
        // SAFETY: as in `echo`; the thunk keeps the C ABI (rbx is restored, the stack stays aligned).
        value = unsafe { asyncjob_bench_switch_then_jump((*pair).fiber, (*pair).thread, value) };
    }
}

unsafe extern "C" fn echo_returning(arg: *mut c_void, first: *mut c_void) {
    let pair = arg.cast::<Pair>();
    let mut value = first;
    loop {
        // SAFETY: as in `echo`.
        value = unsafe { switch_and_return((*pair).fiber, (*pair).thread, value) };
    }
}

fn shim_round_trip(c: &mut Criterion) {
    let (mut stack, pair) = new_fiber(echo);
    let (mut stack2, pair2) = new_fiber(echo_returning);
    let (thread, fiber) = (pair.thread, pair.fiber);
    let mut group = c.benchmark_group("switch round trip");
    group.bench_function("asyncjob-sys", |b| {
        b.iter(|| {
            // SAFETY: runs on the thread fiber; the fiber is suspended in `echo` (or new).
            unsafe { sys::asyncjob_fiber_switch(thread, fiber, black_box(core::ptr::null_mut())) }
        })
    });
    group.bench_function(
        "asyncjob-sys, each switch in a function returning after it",
        |b| b.iter(|| switch_and_return(thread, pair2.fiber, black_box(core::ptr::null_mut()))),
    );
    let mut coroutine = Coroutine::new(|yielder, mut input: usize| {
        loop {
            input = yielder.suspend(input);
        }
    });
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    let (mut stack3, pair3) = new_fiber(echo_jumping);
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    group.bench_function(
        "asyncjob-sys, each switch in a thunk returning by a jump",
        |b| {
            b.iter(|| {
                // SAFETY: runs on the thread fiber; the fiber is suspended in `echo_jumping` (or new).
                unsafe {
                    asyncjob_bench_switch_then_jump(
                        thread,
                        pair3.fiber,
                        black_box(core::ptr::null_mut()),
                    )
                }
            })
        },
    );
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    // SAFETY: the fiber is suspended and never resumed again; its stack is freed after it.
    unsafe {
        sys::asyncjob_fiber_free(pair3.fiber);
        sys::asyncjob_stack_free(&mut stack3);
    }
    group.bench_function("corosensei", |b| {
        b.iter(|| coroutine.resume(black_box(0usize)))
    });
    group.finish();
    drop(coroutine);
    // SAFETY: the fibers are suspended and never resumed again; each stack is freed after its fiber.
    unsafe {
        sys::asyncjob_fiber_free(fiber);
        sys::asyncjob_stack_free(&mut stack);
        sys::asyncjob_fiber_free(pair2.fiber);
        sys::asyncjob_stack_free(&mut stack2);
    }
    drop((pair, pair2));
}

/// A fiber running `entry` on a new stack, with the thread fiber, for the round trips.
fn new_fiber(
    entry: unsafe extern "C" fn(*mut c_void, *mut c_void),
) -> (sys::asyncjob_stack, Box<Pair>) {
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
    // SAFETY: the stack is alive and large enough; `pair` (boxed: its address stays) outlives the
    // fiber.
    pair.fiber =
        unsafe { sys::asyncjob_fiber_create(stack.base, stack.size, Some(entry), pair_ptr.cast()) };
    assert!(!pair.fiber.is_null());
    (stack, pair)
}

criterion_group!(benches, shim_round_trip);
criterion_main!(benches);
