//! Knowing that the calling thread runs its thread-local destructors.
//!
//! Thread-locals are destroyed in the reverse order of their first use, so asyncjob's own marker is
//! not the first to go: a thread-local first used after it (say, one a job borrows across a pause) is
//! destroyed before the marker is set. Before a dropped job is unwound, this looks at the call stack
//! instead: glibc runs every thread-local destructor from `__call_tls_dtors`, at thread exit and at
//! `exit()`. Elsewhere only asyncjob's own marker is known.

/// Whether glibc's thread-local destructor loop is on the call stack. Costs a stack walk (a few
/// microseconds): called only before a paused job is unwound, never on the start/pause/resume path.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn in_thread_local_destructors() -> bool {
    use std::ffi::{CStr, c_char, c_int, c_void};

    #[repr(C)]
    struct DlInfo {
        fname: *const c_char,
        fbase: *mut c_void,
        sname: *const c_char,
        saddr: *mut c_void,
    }
    /// `_URC_NO_REASON` continues the walk, `_URC_END_OF_STACK` stops it.
    const CONTINUE: c_int = 0;
    const STOP: c_int = 5;

    unsafe extern "C" {
        fn _Unwind_Backtrace(
            trace: extern "C" fn(*mut c_void, *mut c_void) -> c_int,
            arg: *mut c_void,
        ) -> c_int;
        fn _Unwind_GetIP(context: *mut c_void) -> usize;
        fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
    }

    extern "C" fn visit(context: *mut c_void, found: *mut c_void) -> c_int {
        // SAFETY: the unwinder passes a live frame context to its callback.
        let ip = unsafe { _Unwind_GetIP(context) };
        if ip == 0 {
            return CONTINUE;
        }
        let mut info = DlInfo {
            fname: std::ptr::null(),
            fbase: std::ptr::null_mut(),
            sname: std::ptr::null(),
            saddr: std::ptr::null_mut(),
        };
        // SAFETY: `info` is a valid place for dladdr's answer; a return address inside the caller
        // (ip - 1) is a plain address to look up.
        let named = unsafe { dladdr((ip - 1) as *const c_void, &mut info) } != 0;
        if !named || info.sname.is_null() {
            return CONTINUE;
        }
        // SAFETY: dladdr's symbol name, when set, is a NUL-terminated string of the loaded object.
        let name = unsafe { CStr::from_ptr(info.sname) };
        if name == c"__call_tls_dtors" {
            // SAFETY: `found` is the `bool` that `in_thread_local_destructors` passed in.
            unsafe { *found.cast::<bool>() = true };
            return STOP;
        }
        CONTINUE
    }

    let mut found = false;
    // SAFETY: the callback only reads frame addresses and writes `found`, which outlives the walk.
    unsafe { _Unwind_Backtrace(visit, (&mut found as *mut bool).cast()) };
    found
}

/// Whether the thread's thread-local destructors are on the call stack: not known on this platform.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn in_thread_local_destructors() -> bool {
    false
}
