//! A process-wide hook around every switch into a job, for state that must follow the job rather than
//! the thread.

use std::sync::OnceLock;

/// Code that must run on every switch into and out of a job.
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
