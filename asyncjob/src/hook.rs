//! A process-wide hook around every switch into a job, for state that must follow the job rather than
//! the thread.

use std::sync::OnceLock;

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

static HOOK: OnceLock<&'static dyn SwitchHook> = OnceLock::new();

/// Install the process's switch hook. There can be only one; returns false when one was installed
/// before. Install it before starting jobs: jobs already paused then were entered without it.
pub fn set_switch_hook(hook: &'static dyn SwitchHook) -> bool {
    HOOK.set(hook).is_ok()
}

#[inline]
pub(crate) fn hook() -> Option<&'static dyn SwitchHook> {
    HOOK.get().copied()
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
