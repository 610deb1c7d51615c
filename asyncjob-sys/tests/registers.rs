//! The switch preserves what the x86_64 System V ABI makes callee-saved: rbx, rbp, r12-r15, the
//! MXCSR control bits and the x87 control word; and a fiber's first frame is ABI-aligned.
//! (Windows uses the Win64 convention and the OS's fiber switch; its FP control state is covered by
//! the C-level test in ci/xplat/windows_fiber_test.c.)
#![cfg(all(target_arch = "x86_64", not(windows)))]

mod support;

use asyncjob_sys as sys;
use core::arch::{asm, global_asm};
use core::cell::Cell;
use core::ffi::c_void;
use support::{Fiber, Stack, arg_ref, finish, start, switch, thread_fiber};

#[cfg(target_vendor = "apple")]
macro_rules! sym_name {
    ($s:literal) => {
        concat!("_", $s)
    };
}
#[cfg(not(target_vendor = "apple"))]
macro_rules! sym_name {
    ($s:literal) => {
        $s
    };
}

// regs_switch(from, to, value, run, regs): loads rbx, rbp, r12-r15 from regs[0..6], switches (`run`
// unused), and writes the registers' values after the switch returns back into regs[0..6].
// regs_start: the same around asyncjob_fiber_start(from, to, value, run).
macro_rules! regs_helper {
    ($name:literal, $switch:path) => {
        global_asm!(
            concat!(".globl ", sym_name!($name)),
            ".p2align 4",
            concat!(sym_name!($name), ":"),
            "push rbp",
            "push rbx",
            "push r12",
            "push r13",
            "push r14",
            "push r15",
            "push r8",
            "mov rbx, [r8]",
            "mov rbp, [r8 + 8]",
            "mov r12, [r8 + 16]",
            "mov r13, [r8 + 24]",
            "mov r14, [r8 + 32]",
            "mov r15, [r8 + 40]",
            "call {switch}",
            "pop r8",
            "mov [r8], rbx",
            "mov [r8 + 8], rbp",
            "mov [r8 + 16], r12",
            "mov [r8 + 24], r13",
            "mov [r8 + 32], r14",
            "mov [r8 + 40], r15",
            "pop r15",
            "pop r14",
            "pop r13",
            "pop r12",
            "pop rbx",
            "pop rbp",
            "ret",
            switch = sym $switch,
        );
    };
}
regs_helper!("asyncjob_test_regs_switch", sys::asyncjob_fiber_switch);
regs_helper!("asyncjob_test_regs_start", sys::asyncjob_fiber_start);

// align_probe(arg, first): records rsp as seen at the entry of a fiber's entry function into
// *(u64 *)arg, then continues in align_probe_body with the same arguments and stack.
global_asm!(
    concat!(".globl ", sym_name!("asyncjob_test_align_probe")),
    ".p2align 4",
    concat!(sym_name!("asyncjob_test_align_probe"), ":"),
    "mov [rdi], rsp",
    "jmp {body}",
    body = sym align_probe_body,
);

unsafe extern "C" {
    fn asyncjob_test_regs_switch(
        from: *mut sys::asyncjob_fiber,
        to: *mut sys::asyncjob_fiber,
        value: usize,
        run: sys::asyncjob_fiber_entry,
        regs: *mut [u64; 6],
    ) -> usize;
    fn asyncjob_test_regs_start(
        from: *mut sys::asyncjob_fiber,
        to: *mut sys::asyncjob_fiber,
        value: usize,
        run: sys::asyncjob_fiber_entry,
        regs: *mut [u64; 6],
    ) -> usize;
    fn asyncjob_test_align_probe(arg: *mut c_void, first: *mut c_void);
}

/// One of the helpers above: `asyncjob_test_regs_switch` or `asyncjob_test_regs_start`.
type RegsHelper = unsafe extern "C" fn(
    *mut sys::asyncjob_fiber,
    *mut sys::asyncjob_fiber,
    usize,
    sys::asyncjob_fiber_entry,
    *mut [u64; 6],
) -> usize;

fn regs_call(
    helper: RegsHelper,
    from: *mut sys::asyncjob_fiber,
    to: *mut sys::asyncjob_fiber,
    value: usize,
    run: sys::asyncjob_fiber_entry,
    regs: &mut [u64; 6],
) -> usize {
    // SAFETY: the helpers follow the C ABI (each saves and restores every callee-saved register it
    // sets) and the tests keep to the contract of the switch or start for `from` and `to`.
    unsafe { helper(from, to, value, run, regs) }
}

fn regs_switch(
    from: *mut sys::asyncjob_fiber,
    to: *mut sys::asyncjob_fiber,
    value: usize,
    regs: &mut [u64; 6],
) -> usize {
    regs_call(asyncjob_test_regs_switch, from, to, value, None, regs)
}

const THREAD_PATTERN: [u64; 6] = [
    0x1111_1111_1111_1111,
    0x2222_2222_2222_2222,
    0x3333_3333_3333_3333,
    0x4444_4444_4444_4444,
    0x5555_5555_5555_5555,
    0x6666_6666_6666_6666,
];
const FIBER_PATTERN: [u64; 6] = [
    0xa1a1_a1a1_a1a1_a1a1,
    0xb2b2_b2b2_b2b2_b2b2,
    0xc3c3_c3c3_c3c3_c3c3,
    0xd4d4_d4d4_d4d4_d4d4,
    0xe5e5_e5e5_e5e5_e5e5,
    0xf6f6_f6f6_f6f6_f6f6,
];

struct Shared {
    thread: *mut sys::asyncjob_fiber,
    me: Cell<*mut sys::asyncjob_fiber>,
    failures: Cell<usize>,
    rounds: Cell<usize>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            thread: thread_fiber(),
            me: Cell::new(core::ptr::null_mut()),
            failures: Cell::new(0),
            rounds: Cell::new(0),
        }
    }

    fn arg(&self) -> *mut c_void {
        (self as *const Shared).cast_mut().cast()
    }
}

unsafe extern "C" fn regs_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the test's Shared, alive until the fiber is done, only used through `&`.
    let shared: &Shared = unsafe { arg_ref(arg) };
    loop {
        let mut regs = FIBER_PATTERN;
        let value = regs_switch(shared.me.get(), shared.thread, 1, &mut regs);
        if regs != FIBER_PATTERN {
            shared.failures.set(shared.failures.get() + 1);
        }
        shared.rounds.set(shared.rounds.get() + 1);
        if value == 0 {
            switch(shared.me.get(), shared.thread, 2);
            unreachable!("finished fiber resumed");
        }
    }
}

#[test]
fn callee_saved_registers_survive_switches_both_ways() {
    let stack = Stack::new(64 * 1024).expect("stack");
    let shared = Shared::new();
    let fiber = Fiber::new(&stack, regs_entry, shared.arg());
    shared.me.set(fiber.raw);
    for round in 0..1000 {
        let mut regs = THREAD_PATTERN;
        let back = regs_switch(shared.thread, fiber.raw, 7, &mut regs);
        assert_eq!(back, 1);
        assert_eq!(regs, THREAD_PATTERN, "thread registers after round {round}");
    }
    assert_eq!(switch(shared.thread, fiber.raw, 0), 2);
    assert_eq!(shared.failures.get(), 0, "fiber saw clobbered registers");
    assert_eq!(shared.rounds.get(), 1000);
}

/// A run that fills the callee-saved registers with its own pattern and finishes.
unsafe extern "C" fn regs_run_entry(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: `arg` is the test's Shared, alive until the fiber is done, only used through `&`.
    let shared: &Shared = unsafe { arg_ref(arg) };
    let mut regs = FIBER_PATTERN;
    // A switch that comes straight back (the thread resumes at once), so that the run's registers
    // hold its pattern when it finishes.
    let back = regs_switch(
        shared.me.get(),
        shared.thread,
        first as usize + 1,
        &mut regs,
    );
    if regs != FIBER_PATTERN {
        shared.failures.set(shared.failures.get() + 1);
    }
    shared.rounds.set(shared.rounds.get() + 1);
    finish(shared.me.get(), shared.thread, back + 1);
}

#[test]
fn callee_saved_registers_survive_start_and_finish() {
    let stack = Stack::new(64 * 1024).expect("stack");
    let shared = Shared::new();
    let fiber = Fiber::new(&stack, regs_run_entry, shared.arg());
    shared.me.set(fiber.raw);
    for round in 0..1000 {
        let mut regs = THREAD_PATTERN;
        assert_eq!(
            regs_call(
                asyncjob_test_regs_start,
                shared.thread,
                fiber.raw,
                10,
                Some(regs_run_entry),
                &mut regs
            ),
            11
        );
        assert_eq!(
            regs, THREAD_PATTERN,
            "thread registers after the start, round {round}"
        );
        let mut regs = THREAD_PATTERN;
        assert_eq!(regs_switch(shared.thread, fiber.raw, 20, &mut regs), 21);
        assert_eq!(
            regs, THREAD_PATTERN,
            "thread registers after the finish, round {round}"
        );
    }
    assert_eq!(shared.failures.get(), 0, "the run saw clobbered registers");
    assert_eq!(shared.rounds.get(), 1000);
}

// MXCSR bits 0-5 are exception flags (status, caller-saved); the rest is control state.
const MXCSR_CONTROL: u32 = !0x3f;
const MXCSR_ROUND_ZERO: u32 = 0x7f80;
const MXCSR_ROUND_DOWN: u32 = 0x3f80;
const FCW_ROUND_ZERO: u16 = 0x0f7f;
const FCW_ROUND_DOWN: u16 = 0x077f;

fn mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr stores 4 bytes into `v`.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn set_mxcsr(v: u32) {
    // SAFETY: loads a valid MXCSR value (reserved bits zero) from `v`.
    unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly)) };
}

fn fcw() -> u16 {
    let mut v: u16 = 0;
    // SAFETY: fnstcw stores 2 bytes into `v`.
    unsafe { asm!("fnstcw [{}]", in(reg) &mut v, options(nostack)) };
    v
}

fn set_fcw(v: u16) {
    // SAFETY: loads an x87 control word from `v`; exceptions stay masked in every value used here.
    unsafe { asm!("fldcw [{}]", in(reg) &v, options(nostack, readonly)) };
}

struct FpShared {
    base: Shared,
    at_entry: Cell<(u32, u16)>,
    kept: Cell<bool>,
}

unsafe extern "C" fn fp_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the test's FpShared, alive until the fiber is done, only used through `&`.
    let s: &FpShared = unsafe { arg_ref(arg) };
    s.at_entry.set((mxcsr() & MXCSR_CONTROL, fcw()));
    set_mxcsr(MXCSR_ROUND_ZERO);
    set_fcw(FCW_ROUND_ZERO);
    switch(s.base.me.get(), s.base.thread, 1);
    s.kept
        .set(mxcsr() & MXCSR_CONTROL == MXCSR_ROUND_ZERO && fcw() == FCW_ROUND_ZERO);
    switch(s.base.me.get(), s.base.thread, 2);
    unreachable!("finished fiber resumed");
}

#[test]
fn mxcsr_and_x87_control_word_are_per_fiber() {
    let (orig_mxcsr, orig_fcw) = (mxcsr(), fcw());
    let stack = Stack::new(64 * 1024).expect("stack");
    let s = FpShared {
        base: Shared::new(),
        at_entry: Cell::new((0, 0)),
        kept: Cell::new(false),
    };
    // A new fiber starts with its creator's control state.
    set_mxcsr(MXCSR_ROUND_DOWN);
    set_fcw(FCW_ROUND_DOWN);
    let fiber = Fiber::new(&stack, fp_entry, (&raw const s).cast_mut().cast());
    s.base.me.set(fiber.raw);
    set_mxcsr(orig_mxcsr);
    set_fcw(orig_fcw);

    assert_eq!(switch(s.base.thread, fiber.raw, 0), 1);
    let after_fiber = (mxcsr() & MXCSR_CONTROL, fcw());
    set_mxcsr(MXCSR_ROUND_DOWN);
    set_fcw(FCW_ROUND_DOWN);
    assert_eq!(switch(s.base.thread, fiber.raw, 0), 2);
    let after_second = (mxcsr() & MXCSR_CONTROL, fcw());
    set_mxcsr(orig_mxcsr);
    set_fcw(orig_fcw);

    assert_eq!(
        s.at_entry.get(),
        (MXCSR_ROUND_DOWN, FCW_ROUND_DOWN),
        "fiber starts with the creator's state"
    );
    assert_eq!(
        after_fiber,
        (orig_mxcsr & MXCSR_CONTROL, orig_fcw),
        "the fiber's settings leaked out"
    );
    assert!(s.kept.get(), "the thread's settings leaked into the fiber");
    assert_eq!(
        after_second,
        (MXCSR_ROUND_DOWN, FCW_ROUND_DOWN),
        "the thread's own settings were lost"
    );
}

/// A run that records the control state it began with, changes it, and finishes.
#[cfg(not(feature = "ucontext"))]
unsafe extern "C" fn fp_run_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the test's FpShared, alive until the fiber is done, only used through `&`.
    let s: &FpShared = unsafe { arg_ref(arg) };
    s.at_entry.set((mxcsr() & MXCSR_CONTROL, fcw()));
    set_mxcsr(MXCSR_ROUND_ZERO);
    set_fcw(FCW_ROUND_ZERO);
    finish(s.base.me.get(), s.base.thread, 1);
}

/// A run begins with the starter's control state, as a called function would (not with the state
/// its fiber had when a previous run finished), and the starter gets its own back. (The ucontext
/// backend cannot restart a stack: there a start resumes the fiber, with its own state.)
#[cfg(not(feature = "ucontext"))]
#[test]
fn a_run_begins_with_the_starters_control_state() {
    let (orig_mxcsr, orig_fcw) = (mxcsr(), fcw());
    let stack = Stack::new(64 * 1024).expect("stack");
    let s = FpShared {
        base: Shared::new(),
        at_entry: Cell::new((0, 0)),
        kept: Cell::new(false),
    };
    let fiber = Fiber::new(&stack, fp_run_entry, (&raw const s).cast_mut().cast());
    s.base.me.set(fiber.raw);
    let mut seen = Vec::new();
    for (m, f) in [
        (MXCSR_ROUND_DOWN, FCW_ROUND_DOWN),
        (orig_mxcsr & MXCSR_CONTROL, orig_fcw),
    ] {
        set_mxcsr(m);
        set_fcw(f);
        assert_eq!(start(s.base.thread, fiber.raw, 0, fp_run_entry), 1);
        seen.push(((mxcsr() & MXCSR_CONTROL, fcw()), s.at_entry.get()));
    }
    set_mxcsr(orig_mxcsr);
    set_fcw(orig_fcw);
    assert_eq!(
        seen,
        [
            (
                (MXCSR_ROUND_DOWN, FCW_ROUND_DOWN),
                (MXCSR_ROUND_DOWN, FCW_ROUND_DOWN)
            ),
            (
                (orig_mxcsr & MXCSR_CONTROL, orig_fcw),
                (orig_mxcsr & MXCSR_CONTROL, orig_fcw)
            ),
        ],
        "(the starter's state after the run, the state the run began with) for each start"
    );
}

/// MXCSR precision flag (a sticky status bit: any inexact result sets it).
#[cfg(not(feature = "ucontext"))]
const MXCSR_PE: u32 = 0x20;
#[cfg(not(feature = "ucontext"))]
const MXCSR_FLAGS: u32 = 0x3f;

#[cfg(not(feature = "ucontext"))]
struct FlagShared {
    base: Shared,
    /// The MXCSR flags the fiber read on entry.
    seen: Cell<u32>,
}

#[cfg(not(feature = "ucontext"))]
unsafe extern "C" fn flag_entry(arg: *mut c_void, _first: *mut c_void) {
    // SAFETY: `arg` is the test's FlagShared, alive until the fiber is done, only used through `&`.
    let s: &FlagShared = unsafe { arg_ref(arg) };
    s.seen.set(mxcsr() & MXCSR_FLAGS);
    set_mxcsr(mxcsr() & !MXCSR_FLAGS);
    switch(s.base.me.get(), s.base.thread, 1);
    unreachable!("finished fiber resumed");
}

/// The MXCSR status flags (bits 0-5) are the thread's, not a context's, like the x87 status word:
/// the switch loads only the control bits, and only when they change (loading an MXCSR that differs
/// only in its flags is slow on some cores). The fiber reads the flags the thread had when it
/// switched in, and the thread reads the flags the fiber left. (Compared with what the thread itself
/// reads back, because Valgrind does not keep the flags at all. The portable ucontext backend keeps
/// them per context: its first entry and, with CET, every switch go through the C library's context
/// functions, which load the whole floating-point environment.)
#[cfg(not(feature = "ucontext"))]
#[test]
fn mxcsr_status_flags_are_the_threads() {
    let orig = mxcsr();
    let stack = Stack::new(64 * 1024).expect("stack");
    let s = FlagShared {
        base: Shared::new(),
        seen: Cell::new(u32::MAX),
    };
    set_mxcsr(orig & !MXCSR_FLAGS);
    let fiber = Fiber::new(&stack, flag_entry, (&raw const s).cast_mut().cast());
    s.base.me.set(fiber.raw);
    set_mxcsr((orig & !MXCSR_FLAGS) | MXCSR_PE);
    let thread_flags = mxcsr() & MXCSR_FLAGS;
    assert_eq!(switch(s.base.thread, fiber.raw, 0), 1);
    let after = mxcsr();
    set_mxcsr(orig);
    assert_eq!(
        s.seen.get(),
        thread_flags,
        "the fiber did not see the thread's flags"
    );
    assert_eq!(
        after & MXCSR_FLAGS,
        0,
        "the flags the fiber cleared came back"
    );
    assert_eq!(
        after & MXCSR_CONTROL,
        orig & MXCSR_CONTROL,
        "control bits changed"
    );
}

#[repr(C)]
struct AlignShared {
    rsp_at_entry: Cell<u64>,
    base: Shared,
}

extern "C" fn align_probe_body(arg: *mut c_void, first: *mut c_void) {
    // SAFETY: `arg` is the test's AlignShared, alive until the fiber is done, only used through `&`.
    let s: &AlignShared = unsafe { arg_ref(arg) };
    switch(s.base.me.get(), s.base.thread, first as usize + 1);
    unreachable!("finished fiber resumed");
}

#[test]
fn first_entry_gets_an_abi_aligned_stack() {
    let stack = Stack::new(64 * 1024).expect("stack");
    let s = AlignShared {
        rsp_at_entry: Cell::new(0),
        base: Shared::new(),
    };
    // rsp_at_entry is the first field, so the probe's store through `arg` lands there.
    let arg = (&raw const s).cast_mut().cast();
    let fiber = Fiber::new(&stack, asyncjob_test_align_probe, arg);
    s.base.me.set(fiber.raw);
    assert_eq!(switch(s.base.thread, fiber.raw, 41), 42);
    let rsp = s.rsp_at_entry.get();
    let top = stack.0.base as u64 + stack.0.size as u64;
    assert!(
        rsp > stack.0.base as u64 && rsp < top,
        "rsp {rsp:#x} is on the fiber's stack"
    );
    assert_eq!(
        (rsp + 8) % 16,
        0,
        "rsp + 8 must be 16-byte aligned at function entry, rsp = {rsp:#x}"
    );
}
