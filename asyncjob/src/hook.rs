//! A process-wide hook around every switch into a job, for state that must follow the job rather than
//! the thread.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Code that must run on every switch into and out of a job.
///
/// A hook must not panic: it runs while a job is between its stack and its handle, where no unwind
/// can leave the job in a sound state, so a panic from `enter` or `leave` aborts the process.
///
/// The C library uses it to give each job its own default `OSSL_LIB_CTX`, as OpenSSL does inside
/// `ASYNC_start_job`: the job word holds the job's saved state between runs.
pub trait SwitchHook: Send + Sync + 'static {
    /// Runs just before control enters a job (first start or resume). `job_word` is the word
    /// [`leave`](Self::leave) returned the last time the job stopped (0 before its first run). The
    /// result is handed to `leave` when control comes back.
    fn enter(&self, job_word: usize, first_entry: bool) -> usize;
    /// Runs just after control came back from the job (it paused or finished). Returns the job's new
    /// word.
    fn leave(&self, caller_token: usize) -> usize;
}

/// The installed hook, behind a thin pointer so that the check on every switch is one load.
static HOOK: AtomicPtr<&'static dyn SwitchHook> = AtomicPtr::new(ptr::null_mut());

/// Install the process's switch hook. There can be only one; returns false when one was installed
/// before. Install it before starting jobs: jobs already paused then were entered without it.
pub fn set_switch_hook(hook: &'static dyn SwitchHook) -> bool {
    let slot = Box::into_raw(Box::new(hook));
    let installed = HOOK
        .compare_exchange(ptr::null_mut(), slot, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if !installed {
        // SAFETY: `slot` was never published; it is ours to free.
        drop(unsafe { Box::from_raw(slot) });
    }
    installed
}

#[inline]
pub(crate) fn hook() -> Option<&'static dyn SwitchHook> {
    let slot = HOOK.load(Ordering::Acquire);
    // SAFETY: a non-null slot was published once by `set_switch_hook` and is never freed.
    (!slot.is_null()).then(|| unsafe { *slot })
}

/// Whether a switch hook is installed (the C face's fast paths are for the case without).
#[inline]
pub fn installed() -> bool {
    hook().is_some()
}

/// Calls [`SwitchHook::enter`], aborting the process if it panics.
#[inline]
pub(crate) fn enter(hook: &dyn SwitchHook, job_word: usize, first_entry: bool) -> usize {
    let abort = AbortOnHookPanic;
    let token = hook.enter(job_word, first_entry);
    std::mem::forget(abort);
    token
}

/// Calls [`SwitchHook::leave`], aborting the process if it panics.
#[inline]
pub(crate) fn leave(hook: &dyn SwitchHook, caller_token: usize) -> usize {
    let abort = AbortOnHookPanic;
    let word = hook.leave(caller_token);
    std::mem::forget(abort);
    word
}

/// Dropped only when a hook unwinds: the job's fiber is then a local of `start` or `resume`, and
/// unwinding would free its stack under frames that are still live (or lose a paused job).
struct AbortOnHookPanic;

impl Drop for AbortOnHookPanic {
    fn drop(&mut self) {
        crate::abort_with("a SwitchHook panicked while switching into or out of a job");
    }
}
