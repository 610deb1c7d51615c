//! `ASYNC_start_job` and `ASYNC_pause_job` on x86_64 Linux: thunks in assembly that make the
//! switch of a resume and of a pause themselves, so that nothing returns right after a switch.
//!
//! A switch arrives on the other stack by a jump, so the processor's return-address predictor
//! still holds the return addresses of the stack it left: a `ret` executed after a switch, before a
//! call made after it, goes to an address the predictor does not expect. Written in Rust, each of
//! the two entry points returns to its caller right after its switch comes back, which costs two
//! mispredicted returns per pause→resume round trip (about 22 of 44 ns on the development machine;
//! see `asyncjob-sys/benches/switch.rs`). Each thunk instead calls a Rust first half (everything
//! before the switch), which ends in the switch, made as a call in tail position: the switch comes
//! back straight to the thunk. The thunk then calls a Rust second half if there is anything left to
//! do, and returns to its caller by `pop` and an indirect `jmp`, which the branch predictor learns.
//! (Should the compiler not turn a first half's switch into a jump, the first half returns after
//! it: one mispredicted return, nothing wrong.) Every other call of `ASYNC_start_job` (a start, a
//! NULL `job`) goes to a Rust function of `ffi` by a tail jump.
//!
//! The halves keep the steps of the Rust functions, in their order; asyncjob's `split` module holds
//! the bookkeeping on either side of the switch. Each half has a common case written to need no
//! stack frame (libcrypto known alive, not panicking, the job in the one-entry slot, no switch hook,
//! no job running), a variant for a switch hook, and the general case out of line; a pause's second
//! half only runs when the resumer left it work (see `asyncjob::split::RESUMED_DONE`). The thunks
//! carry no `endbr64`: Rust code is never built for indirect-branch tracking, so the library is not
//! IBT-marked.

use std::ffi::{c_int, c_void};
use std::mem::{MaybeUninit, offset_of, size_of};
use std::ptr;

use asyncjob::split::{self, RESUMED_DONE, ResumeInFlight};

use crate::ffi;
use crate::state::{self, JobResult, StateRef};

/// A resume's frame in the `ASYNC_start_job` thunk: the arguments that the second half needs, as
/// the thunk stored them, then what the first half leaves for the second.
#[repr(C)]
struct ResumeFrame {
    job: *mut *mut c_void,
    ret: *mut c_int,
    /// The return value when there was no switch to make.
    code: c_int,
    /// The job being resumed (`*job`).
    id: usize,
    /// The thread's state, as the first half found it.
    state: StateRef,
    flight: MaybeUninit<ResumeInFlight<JobResult>>,
}

/// What a first half returns when it made no switch (a switch never comes back with 0).
const NO_SWITCH: *mut c_void = ptr::null_mut();

/// Bytes the start thunk reserves: the frame, 16-byte aligned, plus 8 so that the stack is aligned
/// at its calls (it is entered with the return address just pushed).
const RESUME_RESERVE: usize = size_of::<ResumeFrame>().div_ceil(16) * 16 + 8;

/// The first half of `ASYNC_start_job` for a resume (`job` and `*job` not NULL, checked by the
/// thunk): its steps up to and including the switch. Returns the value the switch came back with,
/// or `NO_SWITCH`, with the result in `code`, when there was none to make.
///
/// The common case (libcrypto known alive, not panicking, the job in the one-entry slot, no switch
/// hook) is done here without a stack frame; with a switch hook by `resume_first_half_hooked`,
/// everything else by `resume_first_half_in_full`.
///
/// # Safety
///
/// Called by the thunk only, with its frame, whose `job` and `ret` are the application's; the thunk
/// keeps the frame in place until the second half.
unsafe extern "C" fn resume_first_half(frame: *mut ResumeFrame) -> *mut c_void {
    // Asked first, so that only `frame` is live across the call the answer may take; a panicking
    // thread goes the general way.
    if std::thread::panicking() || !ffi::crypto_known_alive() {
        // SAFETY: guaranteed by the caller.
        return unsafe { resume_first_half_in_full(frame) };
    }
    if split::hook_installed() {
        // SAFETY: guaranteed by the caller.
        return unsafe { resume_first_half_hooked(frame) };
    }
    // SAFETY: guaranteed by the caller.
    unsafe { resume_first_half_plain::<false>(frame) }
}

/// `resume_first_half` with a switch hook installed (and not panicking).
///
/// # Safety
///
/// As for `resume_first_half`.
#[inline(never)]
unsafe extern "C" fn resume_first_half_hooked(frame: *mut ResumeFrame) -> *mut c_void {
    // SAFETY: guaranteed by the caller.
    unsafe { resume_first_half_plain::<true>(frame) }
}

/// The common case of `resume_first_half` when not panicking (see `state::resume_begin_plain`),
/// with `resume_first_half_in_full` for every other case.
///
/// # Safety
///
/// As for `resume_first_half`.
#[inline(always)]
unsafe fn resume_first_half_plain<const HOOKED: bool>(frame: *mut ResumeFrame) -> *mut c_void {
    // SAFETY: the thunk's frame, alive until the thunk returns and used by nobody else.
    let f = unsafe { &mut *frame };
    // SAFETY: the caller's job pointer, not NULL (checked by the thunk).
    let id = unsafe { *f.job } as usize;
    // SAFETY: the switch is made at once, and the thunk keeps the frame in place until the second
    // half.
    let Some((switch, wake, state)) =
        (unsafe { state::resume_begin_plain::<HOOKED>(id, &mut f.flight, false) })
    else {
        // SAFETY: guaranteed by the caller.
        return unsafe { resume_first_half_in_full(frame) };
    };
    f.id = id;
    f.state = state;
    // SAFETY: the switch that `resume_begin_plain` asked for, made at once.
    unsafe { split::switch_into(switch, wake) }
}

/// `resume_first_half` in every case.
///
/// # Safety
///
/// As for `resume_first_half`.
#[cold]
#[inline(never)]
unsafe extern "C" fn resume_first_half_in_full(frame: *mut ResumeFrame) -> *mut c_void {
    // SAFETY: the thunk's frame, alive until the thunk returns and used by nobody else.
    let f = unsafe { &mut *frame };
    // `ffi::ASYNC_start_job`'s steps for a resume, in its order: libcrypto's state, then the job.
    if !ffi::crypto_alive() {
        f.code = ffi::ASYNC_ERR;
        return NO_SWITCH;
    }
    // SAFETY: the caller's job pointer, not NULL (checked by the thunk).
    let id = unsafe { *f.job } as usize;
    // SAFETY: the switch is made at once, and the thunk keeps the frame in place until the second
    // half.
    match unsafe { state::resume_begin(id, &mut f.flight) } {
        Ok((switch, wake, state)) => {
            f.id = id;
            f.state = state;
            // SAFETY: the switch that `resume_begin` asked for, made at once.
            unsafe { split::switch_into(switch, wake) }
        }
        Err(outcome) => {
            // SAFETY: the caller's pointers, `job` not NULL.
            f.code = unsafe { ffi::report_outcome(f.job, f.ret, outcome) };
            NO_SWITCH
        }
    }
}

/// The second half of a resume, once its switch has come back with `exit`: `ASYNC_start_job`'s
/// return value. A job that paused again goes back to the one-entry slot, without a stack frame when
/// no switch hook ran (with one by `resume_second_half_hooked`); everything else is done by
/// `resume_second_half_in_full`.
///
/// # Safety
///
/// Called by the thunk only, with the frame whose first half made a switch.
unsafe extern "C" fn resume_second_half(frame: *mut ResumeFrame, exit: *mut c_void) -> c_int {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if resume_second_half_plain::<false>(frame) {
            return ffi::ASYNC_PAUSE;
        }
        resume_second_half_hooked(frame, exit)
    }
}

/// `resume_second_half` when a switch hook ran (or the job did not pause).
///
/// # Safety
///
/// As for `resume_second_half`, with `flight` not yet moved out.
#[inline(never)]
unsafe extern "C" fn resume_second_half_hooked(
    frame: *mut ResumeFrame,
    exit: *mut c_void,
) -> c_int {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if resume_second_half_plain::<true>(frame) {
            return ffi::ASYNC_PAUSE;
        }
        resume_second_half_in_full(frame, exit)
    }
}

/// The common case of `resume_second_half`: the job paused again and goes back to the one-entry
/// slot (see `state::resume_end_plain`); true when done, false with nothing changed otherwise.
///
/// # Safety
///
/// As for `resume_second_half_hooked`.
#[inline(always)]
unsafe fn resume_second_half_plain<const HOOKED: bool>(frame: *mut ResumeFrame) -> bool {
    // SAFETY: the thunk's frame; `flight` was filled by the first half, whose switch has come back,
    // and is moved out only if this succeeds.
    unsafe {
        let flight = (&raw mut (*frame).flight).cast::<ResumeInFlight<JobResult>>();
        let id = (*frame).id;
        if !state::resume_end_plain::<HOOKED>((*frame).state, id, flight) {
            return false;
        }
        // As `ffi::report_outcome` for a pause.
        *(*frame).job = id as *mut c_void;
        true
    }
}

/// `resume_second_half` in every case.
///
/// # Safety
///
/// As for `resume_second_half`, with `flight` not yet moved out.
#[cold]
#[inline(never)]
unsafe extern "C" fn resume_second_half_in_full(
    frame: *mut ResumeFrame,
    exit: *mut c_void,
) -> c_int {
    // SAFETY: the thunk's frame; `flight` was filled by the first half, whose switch has come
    // back, and is moved out once.
    unsafe {
        let flight = (&raw mut (*frame).flight).cast::<ResumeInFlight<JobResult>>();
        let outcome = state::resume_end((*frame).state, (*frame).id, flight, exit);
        ffi::report_outcome((*frame).job, (*frame).ret, outcome)
    }
}

/// The first half of `ASYNC_pause_job`, up to and including its switch: the value the switch came
/// back with, or `RESUMED_DONE` when there was none to make (the pause is done). Not panicking (the
/// common case), nothing is live across a call; panicking, `pause_first_half_in_full`.
///
/// # Safety
///
/// Called by the thunk only, which calls `pause_second_half` with the value, unless it is
/// `RESUMED_DONE`.
unsafe extern "C" fn pause_first_half() -> *mut c_void {
    if std::thread::panicking() {
        // SAFETY: guaranteed by the caller.
        return unsafe { pause_first_half_in_full(true) };
    }
    // SAFETY: as for `pause_first_half_in_full`.
    unsafe { pause_first_half_in_full(false) }
}

/// `pause_first_half`, `panicking` being `std::thread::panicking()`.
///
/// # Safety
///
/// As for `pause_first_half`.
#[inline(always)]
unsafe fn pause_first_half_in_full(panicking: bool) -> *mut c_void {
    // SAFETY: the switch is made at once, and the thunk calls `pause_second_half` right after it
    // unless the switch brings back `RESUMED_DONE`.
    match unsafe { split::pause_begin(|| panicking) } {
        // SAFETY: the switch that `pause_begin` asked for, made at once.
        Some(switch) => unsafe { split::switch_back(switch) },
        None => RESUMED_DONE as *mut c_void,
    }
}

/// The second half of `ASYNC_pause_job`, once its switch has come back with `wake` (anything but
/// `RESUMED_DONE`, which leaves it nothing to do). Like `ffi::ASYNC_pause_job`, it would abort (the
/// "C" boundary) if a cancellation ever unwound here: this library never cancels a paused job.
///
/// # Safety
///
/// Called by the thunk only, right after the switch that `pause_first_half` asked for.
unsafe extern "C" fn pause_second_half(wake: *mut c_void) {
    // SAFETY: guaranteed by the caller.
    unsafe { split::pause_end(wake) }
}

// Both thunks: the callee-saved registers are the switch's to keep; the stack is 16-byte aligned
// at every call; the CFI describes each step, so that unwinders and debuggers walk through.
std::arch::global_asm!(
    ".globl ASYNC_start_job",
    ".type ASYNC_start_job, @function",
    ".p2align 4",
    "ASYNC_start_job:",
    ".cfi_startproc",
    // Anything but a resume (`job` and `*job` not NULL): the Rust function, as a tail call.
    "test rdi, rdi",
    "jz 4f",
    "cmp qword ptr [rdi], 0",
    "je 5f",
    "sub rsp, {reserve}",
    ".cfi_adjust_cfa_offset {reserve}",
    "mov [rsp + {job}], rdi",
    "mov [rsp + {ret}], rdx",
    "mov rdi, rsp",
    // The first half makes the switch; 0: none made.
    "call {resume_first}",
    "test rax, rax",
    "jz 2f",
    "mov rdi, rsp",
    "mov rsi, rax",
    "call {resume_second}",
    "3:",
    ".cfi_remember_state",
    "add rsp, {reserve}",
    ".cfi_adjust_cfa_offset -{reserve}",
    "pop rcx",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_register rip, rcx",
    "jmp rcx",
    // No switch to make: the first half's return value.
    "2:",
    ".cfi_restore_state",
    "mov eax, dword ptr [rsp + {code}]",
    "jmp 3b",
    "4:",
    ".cfi_adjust_cfa_offset -{reserve}",
    "jmp {start_job}",
    // A start (`*job` NULL): the Rust function for starts, as a tail call.
    "5:",
    "jmp {start_job_new}",
    ".cfi_endproc",
    ".size ASYNC_start_job, . - ASYNC_start_job",
    "",
    ".globl ASYNC_pause_job",
    ".type ASYNC_pause_job, @function",
    ".p2align 4",
    "ASYNC_pause_job:",
    ".cfi_startproc",
    "sub rsp, 8",
    ".cfi_adjust_cfa_offset 8",
    // The first half makes the switch, if any.
    "call {pause_first}",
    "cmp rax, {resumed_done}",
    "je 2f",
    "mov rdi, rax",
    "call {pause_second}",
    "2:",
    "add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "mov eax, 1",
    "pop rcx",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_register rip, rcx",
    "jmp rcx",
    ".cfi_endproc",
    ".size ASYNC_pause_job, . - ASYNC_pause_job",
    reserve = const RESUME_RESERVE,
    job = const offset_of!(ResumeFrame, job),
    ret = const offset_of!(ResumeFrame, ret),
    code = const offset_of!(ResumeFrame, code),
    resumed_done = const RESUMED_DONE,
    resume_first = sym resume_first_half,
    resume_second = sym resume_second_half,
    start_job = sym ffi::ASYNC_start_job,
    start_job_new = sym ffi::start_job_new,
    pause_first = sym pause_first_half,
    pause_second = sym pause_second_half,
);
