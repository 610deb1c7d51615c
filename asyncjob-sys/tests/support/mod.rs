//! The only unsafe code of the integration tests: small wrappers over the raw shim.
#![allow(dead_code)]

use asyncjob_sys as sys;
use core::ffi::c_void;

/// A stack from `asyncjob_stack_alloc`, freed on drop. Where the operating system owns fiber stacks
/// (Windows) it only carries the size to ask for: a null base.
pub struct Stack(pub sys::asyncjob_stack);

/// Whether fibers run on stacks the caller provides.
pub fn uses_caller_stack() -> bool {
    // SAFETY: a pure query.
    unsafe { sys::asyncjob_fiber_uses_caller_stack() != 0 }
}

impl Stack {
    pub fn new(size: usize) -> Result<Stack, i32> {
        let mut raw = sys::asyncjob_stack {
            base: core::ptr::null_mut(),
            size: 0,
            mapping: core::ptr::null_mut(),
            mapping_size: 0,
            guard: sys::ASYNCJOB_GUARD_NONE,
        };
        if !uses_caller_stack() {
            raw.size = size;
            raw.guard = sys::ASYNCJOB_GUARD_OS;
            return Ok(Stack(raw));
        }
        // SAFETY: `raw` is a valid, writable asyncjob_stack.
        let rc = unsafe { sys::asyncjob_stack_alloc(size, &mut raw) };
        if rc == 0 { Ok(Stack(raw)) } else { Err(rc) }
    }
}

impl Stack {
    /// Writes `byte` to the `len` usable bytes starting `offset` bytes above the stack's base.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) {
        assert!(offset <= self.0.size && len <= self.0.size - offset);
        // SAFETY: the range lies inside the usable part of a live stack that no fiber runs on.
        unsafe { core::ptr::write_bytes(self.0.base.cast::<u8>().add(offset), byte, len) };
    }

    /// The usable byte `offset` bytes above the stack's base.
    pub fn read(&self, offset: usize) -> u8 {
        assert!(offset < self.0.size);
        // SAFETY: inside the usable part of a live stack that no fiber runs on; stack memory is
        // always readable (zero where never written).
        unsafe { core::ptr::read_volatile(self.0.base.cast::<u8>().add(offset)) }
    }

    /// Writes to the guard page below the stack: the overflow reporter must end the process.
    pub fn poke_guard(&self) {
        let guard = self.0.base.cast::<u8>().wrapping_sub(1);
        // SAFETY: not memory safe by design: the page is PROT_NONE or a guard marker, so the
        // write faults before touching anything, and the fault handler aborts the process. Only
        // called in a child process that exists to die this way.
        unsafe { core::ptr::write_volatile(guard, 1) };
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.0.base.is_null() {
            return; // an OS-owned fiber stack: nothing of ours to free
        }
        // SAFETY: the stack came from asyncjob_stack_alloc and no fiber runs on it any more (a
        // `Fiber` borrows its `Stack`, so it is dropped first).
        unsafe { sys::asyncjob_stack_free(&mut self.0) };
    }
}

/// The calling thread's fiber.
pub fn thread_fiber() -> *mut sys::asyncjob_fiber {
    // SAFETY: no preconditions.
    let f = unsafe { sys::asyncjob_thread_fiber() };
    assert!(!f.is_null());
    f
}

/// Releases the calling thread's fiber (must run on the thread fiber).
pub fn release_thread_fiber() {
    // SAFETY: called from the thread's own context, which is the thread fiber.
    unsafe { sys::asyncjob_thread_fiber_release() };
}

pub type Entry = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// A fiber on a borrowed stack, freed on drop (it must not be running then).
pub struct Fiber<'s> {
    pub raw: *mut sys::asyncjob_fiber,
    _stack: &'s Stack,
}

impl<'s> Fiber<'s> {
    pub fn new(stack: &'s Stack, entry: Entry, arg: *mut c_void) -> Fiber<'s> {
        let raw = create_raw(stack.0.base, stack.0.size, entry, arg);
        assert!(!raw.is_null(), "asyncjob_fiber_create failed");
        Fiber { raw, _stack: stack }
    }
}

impl Drop for Fiber<'_> {
    fn drop(&mut self) {
        // SAFETY: the tests only drop fibers that are suspended or were never started.
        unsafe { sys::asyncjob_fiber_free(self.raw) };
    }
}

/// asyncjob_fiber_create, for tests that check argument validation.
pub fn create_raw(
    base: *mut c_void,
    size: usize,
    entry: Entry,
    arg: *mut c_void,
) -> *mut sys::asyncjob_fiber {
    // SAFETY: the tests pass either a stack they own for the fiber's lifetime or arguments that the
    // shim must reject before touching any memory.
    unsafe { sys::asyncjob_fiber_create(base, size, Some(entry), arg) }
}

/// Switches from the running fiber `from` to `to`.
pub fn switch(from: *mut sys::asyncjob_fiber, to: *mut sys::asyncjob_fiber, value: usize) -> usize {
    // SAFETY: the tests keep to the switch contract: `from` is the fiber running on this thread and
    // `to` is a suspended (or new) fiber whose stack is alive.
    unsafe { sys::asyncjob_fiber_switch(from, to, value as *mut c_void) as usize }
}

/// Begins a run of `run` on the idle fiber `to` from the running fiber `from`
/// (`asyncjob_fiber_start`).
pub fn start(
    from: *mut sys::asyncjob_fiber,
    to: *mut sys::asyncjob_fiber,
    value: usize,
    run: Entry,
) -> usize {
    // SAFETY: the tests keep to the contract: `from` is the fiber running on this thread and `to` an
    // idle fiber (never entered, or its last run finished) whose stack is alive; every run ends with
    // `finish` and then returns.
    unsafe { sys::asyncjob_fiber_start(from, to, value as *mut c_void, Some(run)) as usize }
}

/// Ends the run of the running fiber `from` and resumes `to`, which entered it
/// (`asyncjob_fiber_finish`). Returns only where a stack cannot be restarted, when the fiber is
/// started again; the run must then return.
pub fn finish(from: *mut sys::asyncjob_fiber, to: *mut sys::asyncjob_fiber, value: usize) -> usize {
    // SAFETY: the tests call it on the running fiber's own stack with nothing on it still in use,
    // and `to` is the context that started or resumed it last.
    unsafe { sys::asyncjob_fiber_finish(from, to, value as *mut c_void) as usize }
}

/// The stack pointer of the caller (0 on architectures without an asm backend).
#[inline(always)]
pub fn stack_pointer() -> usize {
    let sp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads rsp into a register; touches no memory.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads sp into a register; touches no memory.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        sp = 0;
    }
    sp
}

/// Whether the backend is one of the hand-written asm switches (which restart a fiber's stack on
/// every start).
pub fn is_asm_backend() -> bool {
    backend().ends_with("-asm")
}

/// The backend's name.
pub fn backend() -> &'static str {
    // SAFETY: asyncjob_fiber_backend returns a static NUL-terminated string.
    let name = unsafe { core::ffi::CStr::from_ptr(sys::asyncjob_fiber_backend()) };
    name.to_str().expect("backend name is ASCII")
}

pub fn stack_reserve() -> usize {
    // SAFETY: no preconditions.
    unsafe { sys::asyncjob_fiber_stack_reserve() }
}

pub fn page_size() -> usize {
    // SAFETY: no preconditions.
    unsafe { sys::asyncjob_page_size() }
}

/// The value behind the `arg` pointer a test handed to its fiber.
///
/// # Safety
/// `arg` must point to a live `T` that is only accessed through shared references meanwhile.
pub unsafe fn arg_ref<'a, T>(arg: *mut c_void) -> &'a T {
    // SAFETY: guaranteed by the caller.
    unsafe { &*arg.cast::<T>() }
}
