//! Behaviour of the raw fiber primitive on the compiled backend.

mod support;

use asyncjob_sys as sys;
use core::cell::Cell;
use core::ffi::c_void;
use support::{Fiber, Stack, arg_ref, finish, is_asm_backend, start, switch, thread_fiber};

const STACK: usize = 64 * 1024;

/// Shared between a test and its fiber through a raw pointer; Cells keep both sides' accesses
/// shared-reference accesses.
struct PingPong {
    thread: *mut sys::asyncjob_fiber,
    me: Cell<*mut sys::asyncjob_fiber>,
    seen: Cell<usize>,
}

impl PingPong {
    fn new(thread: *mut sys::asyncjob_fiber) -> PingPong {
        PingPong {
            thread,
            me: Cell::new(core::ptr::null_mut()),
            seen: Cell::new(0),
        }
    }

    fn arg(&self) -> *mut c_void {
        (self as *const PingPong).cast_mut().cast()
    }
}

const STOP: usize = usize::MAX;

unsafe extern "C" fn ping_pong_entry(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: `arg` is the test's PingPong, which outlives the fiber; the thread side does not touch
    // it while the fiber runs.
    let state: &PingPong = unsafe { arg_ref(arg) };
    let mut value = first as usize;
    while value != STOP {
        assert_eq!(value, 2 * state.seen.get(), "value handed to the fiber");
        state.seen.set(state.seen.get() + 1);
        value = switch(state.me.get(), state.thread, value + 1);
    }
    switch(state.me.get(), state.thread, STOP - 1);
    unreachable!("a finished fiber is never resumed");
}

#[test]
fn million_ping_pong_switches_carry_values_both_ways() {
    let stack = Stack::new(STACK).expect("stack");
    let thread = thread_fiber();
    let state = PingPong::new(thread);
    let fiber = Fiber::new(&stack, ping_pong_entry, state.arg());
    state.me.set(fiber.raw);
    const ROUNDS: usize = 1_000_000;
    for i in 0..ROUNDS {
        let back = switch(thread, fiber.raw, 2 * i);
        assert_eq!(back, 2 * i + 1, "value handed back to the thread");
    }
    assert_eq!(switch(thread, fiber.raw, STOP), STOP - 1);
    assert_eq!(state.seen.get(), ROUNDS);
}

/// Shared between `every_start_begins_a_run_that_finish_ends` and its fiber.
struct Runs {
    thread: *mut sys::asyncjob_fiber,
    me: Cell<*mut sys::asyncjob_fiber>,
    /// How many times the entry function was entered.
    entries: Cell<usize>,
    /// The values the runs received, in order.
    values: Cell<usize>,
    /// The stack pointer of the entry function in its first and in its latest entry.
    first_frame: Cell<usize>,
    last_frame: Cell<usize>,
}

impl Runs {
    fn new() -> Runs {
        Runs {
            thread: thread_fiber(),
            me: Cell::new(core::ptr::null_mut()),
            entries: Cell::new(0),
            values: Cell::new(0),
            first_frame: Cell::new(0),
            last_frame: Cell::new(0),
        }
    }
}

unsafe extern "C" fn runs_entry(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: `arg` is the test's Runs, which outlives the fiber; the thread side does not touch it
    // while the fiber runs.
    let runs: &Runs = unsafe { arg_ref(arg) };
    // The stack pointer itself, not a local's address: under ASan a local whose address is taken
    // may live on the sanitizer's heap-allocated fake stack.
    let frame = support::stack_pointer();
    if runs.entries.get() == 0 {
        runs.first_frame.set(frame);
    }
    runs.last_frame.set(frame);
    runs.entries.set(runs.entries.get() + 1);
    let value = first as usize;
    assert_eq!(value, runs.values.get() + 1, "value handed to the run");
    runs.values.set(value);
    // Only where a stack cannot be restarted does `finish` return, when the fiber is started again.
    finish(runs.me.get(), runs.thread, value * 10);
}

#[test]
fn every_start_begins_a_run_that_finish_ends() {
    let stack = Stack::new(STACK).expect("stack");
    let runs = Runs::new();
    let fiber = Fiber::new(&stack, runs_entry, (&raw const runs).cast_mut().cast());
    runs.me.set(fiber.raw);
    const RUNS: usize = 100_000;
    for i in 1..=RUNS {
        assert_eq!(
            start(runs.thread, fiber.raw, i, runs_entry),
            i * 10,
            "value handed back"
        );
    }
    assert_eq!(runs.values.get(), RUNS);
    // Each start called the function anew, at the same depth of the fiber's stack (with the asm
    // backends on the empty stack; elsewhere from the fiber's own loop). The depth is known only
    // where `stack_pointer` can read it.
    assert_eq!(runs.entries.get(), RUNS);
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert_ne!(runs.first_frame.get(), 0, "stack pointer read");
        assert_eq!(runs.first_frame.get(), runs.last_frame.get());
    }
}

/// Each start runs the function it is given, with the fiber's own argument.
unsafe extern "C" fn tens_entry(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: as in `runs_entry`.
    let runs: &Runs = unsafe { arg_ref(arg) };
    runs.entries.set(runs.entries.get() + 10);
    finish(runs.me.get(), runs.thread, first as usize + 10);
}

#[test]
fn each_start_runs_its_own_function() {
    let stack = Stack::new(STACK).expect("stack");
    let runs = Runs::new();
    let fiber = Fiber::new(&stack, runs_entry, (&raw const runs).cast_mut().cast());
    runs.me.set(fiber.raw);
    // runs_entry: +1 entry, value * 10; tens_entry: +10 entries, value + 10.
    assert_eq!(start(runs.thread, fiber.raw, 1, tens_entry), 11);
    assert_eq!(start(runs.thread, fiber.raw, 1, runs_entry), 10);
    assert_eq!(start(runs.thread, fiber.raw, 5, tens_entry), 15);
    assert_eq!(start(runs.thread, fiber.raw, 2, runs_entry), 20);
    assert_eq!(runs.entries.get(), 22);
    assert_eq!(runs.values.get(), 2);
}

/// A start after switches: the fiber's first run pauses (a plain switch back) and is resumed before
/// it finishes; the next start begins afresh all the same.
unsafe extern "C" fn pausing_runs_entry(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: as in `runs_entry`.
    let runs: &Runs = unsafe { arg_ref(arg) };
    runs.entries.set(runs.entries.get() + 1);
    let resumed = switch(runs.me.get(), runs.thread, first as usize + 1);
    finish(runs.me.get(), runs.thread, resumed + 1);
}

#[test]
fn a_run_that_paused_and_was_resumed_finishes_and_starts_again() {
    let stack = Stack::new(STACK).expect("stack");
    let runs = Runs::new();
    let fiber = Fiber::new(
        &stack,
        pausing_runs_entry,
        (&raw const runs).cast_mut().cast(),
    );
    runs.me.set(fiber.raw);
    for i in 0..1000 {
        assert_eq!(
            start(runs.thread, fiber.raw, 10 * i, pausing_runs_entry),
            10 * i + 1,
            "paused"
        );
        assert_eq!(
            switch(runs.thread, fiber.raw, 10 * i + 5),
            10 * i + 6,
            "finished"
        );
    }
    assert_eq!(runs.entries.get(), 1000);
}

#[test]
fn freeing_a_never_started_fiber_is_fine() {
    let stack = Stack::new(STACK).expect("stack");
    for _ in 0..3 {
        let fiber = Fiber::new(&stack, ping_pong_entry, core::ptr::null_mut());
        drop(fiber);
    }
    // The stack is still usable for a fiber that runs.
    let thread = thread_fiber();
    let state = PingPong::new(thread);
    let fiber = Fiber::new(&stack, ping_pong_entry, state.arg());
    state.me.set(fiber.raw);
    assert_eq!(switch(thread, fiber.raw, 0), 1);
    assert_eq!(switch(thread, fiber.raw, STOP), STOP - 1);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Windows Fibers take no caller stack, so there is none to reject"
)]
fn create_rejects_bad_stacks() {
    let stack = Stack::new(STACK).expect("stack");
    let base = stack.0.base;
    let size = stack.0.size;
    let arg = core::ptr::null_mut();
    assert!(support::create_raw(core::ptr::null_mut(), size, ping_pong_entry, arg).is_null());
    assert!(
        support::create_raw(base.wrapping_byte_add(8), size - 16, ping_pong_entry, arg).is_null()
    );
    assert!(support::create_raw(base, size - 8, ping_pong_entry, arg).is_null());
    assert!(support::create_raw(base, 2048, ping_pong_entry, arg).is_null());
}

#[test]
fn backend_name_matches_the_build() {
    let name = support::backend();
    let expected = if cfg!(windows) {
        "windows-fibers"
    } else if cfg!(feature = "ucontext") {
        "ucontext"
    } else if cfg!(target_arch = "x86_64") {
        "x86_64-sysv-asm"
    } else if cfg!(target_arch = "aarch64") {
        "aarch64-aapcs64-asm"
    } else {
        "ucontext"
    };
    assert_eq!(name, expected);
    // SAFETY: no preconditions.
    assert_eq!(unsafe { sys::asyncjob_fiber_is_capable() }, 1);
    if cfg!(windows) {
        // The OS owns fiber stacks and the fiber record lives on the heap.
        assert!(!support::uses_caller_stack());
        assert_eq!(support::stack_reserve(), 0);
        return;
    }
    assert!(support::uses_caller_stack());
    // The bookkeeping at the top of a stack: 16 bytes for the asm backends, a ucontext_t plus a
    // jmp_buf for ucontext (about 1.2 KiB on x86_64, 4.8 KiB on aarch64, whose ucontext_t carries
    // the whole FP/SIMD state).
    let reserve = support::stack_reserve();
    assert!(
        reserve > 0 && reserve % 16 == 0 && reserve < 8192,
        "reserve {reserve}"
    );
}

#[test]
fn thread_fiber_is_idempotent_and_can_be_released() {
    let a = thread_fiber();
    let b = thread_fiber();
    assert_eq!(a, b);
    support::release_thread_fiber();
    support::release_thread_fiber();
    let c = thread_fiber();
    assert!(!c.is_null());
}

struct BacktraceShared {
    base: PingPong,
    text: std::cell::RefCell<String>,
}

unsafe extern "C" fn backtrace_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the test's BacktraceShared, alive until the fiber is done, used through `&`.
    let s: &BacktraceShared = unsafe { arg_ref(arg) };
    *s.text.borrow_mut() = std::backtrace::Backtrace::force_capture().to_string();
    switch(s.base.me.get(), s.base.thread, 1);
    unreachable!("finished fiber resumed");
}

#[inline(never)]
fn resumer_with_a_recognisable_name(
    thread: *mut sys::asyncjob_fiber,
    fiber: *mut sys::asyncjob_fiber,
) -> usize {
    let back = switch(thread, fiber, 0);
    std::hint::black_box(back)
}

/// The asm trampoline's CFI leads unwinders from a fiber's frames into the code that resumed it.
/// Runs `entry` on a new fiber through `enter` (called twice when `twice`, the second time on a stack
/// that has run before) and checks the backtrace it captured: it shows `entry`, and with the asm
/// backends `enter` and the test that called it.
fn check_backtrace(
    entry: support::Entry,
    enter: fn(*mut sys::asyncjob_fiber, *mut sys::asyncjob_fiber) -> usize,
    names: [&str; 3],
    twice: bool,
) {
    let stack = Stack::new(STACK).expect("stack");
    let s = BacktraceShared {
        base: PingPong::new(thread_fiber()),
        text: Default::default(),
    };
    let fiber = Fiber::new(&stack, entry, (&raw const s).cast_mut().cast());
    s.base.me.set(fiber.raw);
    let runs = if twice { 2 } else { 1 };
    for _ in 0..runs {
        assert_eq!(enter(s.base.thread, fiber.raw), 1);
    }
    let text = s.text.borrow();
    let [entry_name, enter_name, test_name] = names;
    assert!(text.contains(entry_name), "{text}");
    if is_asm_backend() {
        assert!(text.contains(enter_name), "{text}");
        assert!(text.contains(test_name), "{text}");
    }
}

#[test]
fn a_backtrace_inside_a_fiber_reaches_the_resumer() {
    check_backtrace(
        backtrace_entry,
        resumer_with_a_recognisable_name,
        [
            "backtrace_entry",
            "resumer_with_a_recognisable_name",
            "a_backtrace_inside_a_fiber_reaches_the_resumer",
        ],
        false,
    );
}

unsafe extern "C" fn backtrace_run_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: as in `backtrace_entry`.
    let s: &BacktraceShared = unsafe { arg_ref(arg) };
    *s.text.borrow_mut() = std::backtrace::Backtrace::force_capture().to_string();
    finish(s.base.me.get(), s.base.thread, 1);
}

#[inline(never)]
fn starter_with_a_recognisable_name(
    thread: *mut sys::asyncjob_fiber,
    fiber: *mut sys::asyncjob_fiber,
) -> usize {
    let back = start(thread, fiber, 0, backtrace_run_entry);
    std::hint::black_box(back)
}

#[test]
fn a_backtrace_inside_a_started_run_reaches_the_starter() {
    check_backtrace(
        backtrace_run_entry,
        starter_with_a_recognisable_name,
        [
            "backtrace_run_entry",
            "starter_with_a_recognisable_name",
            "a_backtrace_inside_a_started_run_reaches_the_starter",
        ],
        true,
    );
}

/// Each thread has its own thread fiber; fibers on different threads switch independently.
#[test]
fn threads_switch_their_own_fibers_concurrently() {
    // Both workers hold their thread fiber at the same time, so the addresses must differ.
    let both_alive = std::sync::Arc::new(std::sync::Barrier::new(2));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let both_alive = both_alive.clone();
            std::thread::spawn(move || {
                let stack = Stack::new(STACK).expect("stack");
                let thread = thread_fiber();
                both_alive.wait();
                let state = PingPong::new(thread);
                let fiber = Fiber::new(&stack, ping_pong_entry, state.arg());
                state.me.set(fiber.raw);
                for i in 0..100_000 {
                    assert_eq!(switch(thread, fiber.raw, 2 * i), 2 * i + 1);
                }
                assert_eq!(switch(thread, fiber.raw, STOP), STOP - 1);
                both_alive.wait();
                drop(fiber);
                support::release_thread_fiber();
                (thread as usize, state.seen.get())
            })
        })
        .collect();
    let results: Vec<(usize, usize)> = workers
        .into_iter()
        .map(|w| w.join().expect("worker"))
        .collect();
    assert!(results.iter().all(|&(_, seen)| seen == 100_000));
    assert_ne!(results[0].0, results[1].0, "thread fibers are per thread");
}

unsafe extern "C" fn allocating_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the test's PingPong, which outlives the fiber; the thread side does not touch
    // it while the fiber runs.
    let state: &PingPong = unsafe { arg_ref(arg) };
    // Under Valgrind every allocation records a backtrace of the fiber's stack.
    let boxed = std::hint::black_box(Box::new([7u8; 100]));
    state.seen.set(boxed.iter().map(|&b| b as usize).sum());
    drop(boxed);
    switch(state.me.get(), state.thread, 0);
    unreachable!("never resumed");
}

/// Fibers on neighbouring slots (each one's top right below the next one's gap) allocate memory;
/// ci/step-11-sys-reliability.sh runs this under Valgrind, where each allocation records a backtrace
/// of the fiber's stack.
#[test]
fn fibers_on_neighbouring_stacks_allocate() {
    let thread = thread_fiber();
    let stacks: Vec<Stack> = (0..4).map(|_| Stack::new(STACK).expect("stack")).collect();
    for stack in &stacks {
        let state = PingPong::new(thread);
        let fiber = Fiber::new(stack, allocating_entry, state.arg());
        state.me.set(fiber.raw);
        assert_eq!(switch(thread, fiber.raw, 0), 0);
        assert_eq!(state.seen.get(), 700);
    }
}

/// A fiber whose stack lies megabytes away from its thread's stack (the second 4 MiB slot of a slab
/// of its own: at least 8 MiB from anything outside the slab): switches change the stack pointer by
/// more than Valgrind's 2 MB frame limit. ci/step-11-sys-reliability.sh runs this under Valgrind and
/// rejects its "client switching stacks?" warning, which it printed while stacks were not registered.
#[test]
fn a_fiber_far_from_its_thread_stack_switches_cleanly() {
    let thread = thread_fiber();
    let stacks: Vec<Stack> = (0..2)
        .map(|_| Stack::new(4 << 20).expect("stack"))
        .collect();
    let state = PingPong::new(thread);
    let fiber = Fiber::new(&stacks[1], ping_pong_entry, state.arg());
    state.me.set(fiber.raw);
    for i in 0..10 {
        assert_eq!(switch(thread, fiber.raw, 2 * i), 2 * i + 1);
    }
    assert_eq!(switch(thread, fiber.raw, STOP), STOP - 1);
    assert_eq!(state.seen.get(), 10);
}
