//! The per-thread table of paused jobs, which turns C's `ASYNC_JOB *` back into an `asyncjob::Job`.
//!
//! The C API hands out a bare pointer for a paused job and takes it back on resume. asyncjob's
//! `Job<c_int>` is the owning handle, so every paused job lives here, keyed by its `JobId` address
//! (the pointer C sees). A pointer that is not in the calling thread's table (a finished job, a
//! forged pointer, a job paused on another thread) is refused instead of being trusted, which is
//! where OpenSSL crashes or corrupts its pool.
//!
//! Nothing here allocates in steady state: the most recently paused job sits in a one-entry slot
//! of plain cells (a single job that pauses and resumes never touches the map or its `RefCell`), and
//! the map keeps its capacity once it has grown.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_int;
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr;

use asyncjob::{Error, Job, ResumeError, Resumed, Started, WaitCtx};

/// What a start or resume did, in the C API's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `ASYNC_FINISH` with the job's return value.
    Finished(c_int),
    /// `ASYNC_PAUSE`; the job's handle (its `JobId` address).
    Paused(usize),
    /// `ASYNC_NO_JOBS`.
    NoJobs,
    /// The job could not copy its args (the copy's allocation failed or its size overflowed): it
    /// ended before calling the job function, its pool slot is free again.
    ArgsNotCopied,
    /// The handle is not a job paused on this thread.
    Unknown,
    /// asyncjob refused the call.
    Failed(ErrorKind),
}

/// The asyncjob errors the C face tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Started or resumed from inside a running job.
    Nested,
    /// No fiber support: OpenSSL's ASYNC_NULL build answers `ASYNC_NO_JOBS` here.
    NotCapable,
    /// Anything else (thread cannot switch fibers, thread-local state torn down, ...).
    Other,
}

impl From<&Error> for ErrorKind {
    fn from(e: &Error) -> Self {
        match e {
            Error::Nested => ErrorKind::Nested,
            Error::NotCapable => ErrorKind::NotCapable,
            _ => ErrorKind::Other,
        }
    }
}

/// Mixes a job address into a table hash. Addresses are aligned, so their low bits carry nothing;
/// a folded 128-bit multiply spreads the high bits over the whole word.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        let m = u128::from(n ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

/// What a C job's closure returns: the job function's value, or `None` when the args could not be
/// copied and the job function was not called.
pub(crate) type JobResult = Option<c_int>;

struct ThreadState {
    /// The job paused last, kept out of the map and its `RefCell`, so that a job that pauses and is
    /// resumed over and over never touches them: its handle, and the id it was paused under (0 until
    /// the first pause). The id stays when the job is taken out to be resumed, so that a job paused
    /// again is put back without rewriting it; `recent_job` alone says whether the slot holds a job.
    recent_id: Cell<usize>,
    recent_job: Cell<Option<Job<JobResult>>>,
    /// Every other paused job, by id.
    paused: RefCell<HashMap<usize, Job<JobResult>, BuildHasherDefault<AddrHasher>>>,
}

impl ThreadState {
    /// Keep a paused job. A job that was resumed from the slot goes back into it with one store; any
    /// other takes the slot, and the slot's job moves to the map (out of line, in `park_elsewhere`).
    #[inline]
    fn park(&self, id: usize, job: Job<JobResult>) {
        if self.recent_id.get() == id {
            // Taken out of the slot to be resumed (nothing else empties or refills the slot while
            // a job of this thread runs: starting and resuming are refused inside a job).
            let empty = self.recent_job.replace(Some(job));
            debug_assert!(empty.is_none());
            std::mem::forget(empty);
            return;
        }
        self.park_elsewhere(id, job);
    }

    /// `park` for a job that was not the slot's: it takes the slot, whose job moves to the map.
    #[cold]
    #[inline(never)]
    fn park_elsewhere(&self, id: usize, job: Job<JobResult>) {
        let older_id = self.recent_id.replace(id);
        if let Some(older) = self.recent_job.replace(Some(job)) {
            self.paused.borrow_mut().insert(older_id, older);
        }
    }

    /// Take out the job paused under `id`.
    #[inline]
    fn unpark(&self, id: usize) -> Option<Job<JobResult>> {
        if id != 0 && self.recent_id.get() == id {
            if let Some(job) = self.recent_job.take() {
                return Some(job);
            }
        }
        self.paused.borrow_mut().remove(&id)
    }

    /// The wait context of the job paused under `id`.
    fn wait_ctx_of(&self, id: usize) -> Option<WaitCtx> {
        if id != 0 && self.recent_id.get() == id {
            // A job in the slot under `id` is the one: an id is in the slot or in the map, never both.
            let job = self.recent_job.take();
            if let Some(held) = &job {
                let ctx = held.wait_ctx();
                self.recent_job.set(job);
                return ctx;
            }
        }
        self.paused
            .try_borrow()
            .ok()
            .and_then(|map| map.get(&id).and_then(Job::wait_ctx))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let recent = self.recent_job.take();
        let in_slot = usize::from(recent.is_some());
        self.recent_job.set(recent);
        in_slot + self.paused.try_borrow().map_or(0, |m| m.len())
    }
}

impl Drop for ThreadState {
    /// At thread exit, the jobs still paused are leaked, as OpenSSL leaks them: nothing runs on their
    /// stacks (C frames built without unwind tables would abort an unwind), and the stacks are never
    /// freed or reused, because the C code may have published the address of a local (a wait node in
    /// a global list, say) that must stay valid. Counted by `asyncjob::leaked_jobs()`.
    fn drop(&mut self) {
        // From here on `with_state` looks `STATE` up and finds it destroyed.
        StateAddr::set(0);
        let recent = self.recent_job.take();
        let rest = self.paused.get_mut().drain().map(|(_, job)| job);
        for job in recent.into_iter().chain(rest) {
            job.leak();
        }
    }
}

thread_local! {
    // Dropped at thread exit: the jobs still paused are leaked with it, as in OpenSSL (see
    // `ThreadState`'s `Drop`).
    static STATE: ThreadState = const {
        ThreadState {
            recent_id: Cell::new(0),
            recent_job: Cell::new(None),
            paused: RefCell::new(HashMap::with_hasher(BuildHasherDefault::new())),
        }
    };
}

asyncjob::thread_word! {
    /// The address of this thread's `STATE` while it is alive, 0 before the thread's first lookup
    /// and after its destructor: read instead of `STATE` itself, which in a shared library costs a
    /// `__tls_get_addr` call on every start and resume.
    struct StateAddr = "asyncjob_capi_state_addr";
}

/// `f` with this thread's state; `None` once it has been destroyed (thread exit).
#[inline(always)]
fn with_state<T>(f: impl FnOnce(&ThreadState) -> T) -> Option<T> {
    let mut addr = StateAddr::get() as *const ThreadState;
    if addr.is_null() {
        addr = state_first_lookup()?;
    }
    // SAFETY: see `state_at`.
    Some(f(unsafe { state_at(addr) }))
}

/// `with_state` when the state's address is already known, without ever looking it up (no call):
/// `None` before the thread's first lookup and after its state was destroyed.
#[cfg(split_entry_points)]
#[inline(always)]
fn with_cached_state<T>(f: impl FnOnce(&ThreadState) -> T) -> Option<T> {
    let addr = StateAddr::get() as *const ThreadState;
    if addr.is_null() {
        return None;
    }
    // SAFETY: see `state_at`.
    Some(f(unsafe { state_at(addr) }))
}

/// The state at a non-zero `StateAddr` word.
///
/// # Safety
///
/// `addr` was read from `StateAddr` and is not null; the reference is used only during one call of
/// `with_state`'s or `with_cached_state`'s `f`.
#[inline(always)]
unsafe fn state_at<'a>(addr: *const ThreadState) -> &'a ThreadState {
    // SAFETY: a non-zero word is the address of this thread's `STATE`, set by `state_first_lookup`
    // while it was alive and cleared first thing by its destructor, so `STATE` is alive now. It stays
    // so while `f` runs: a thread-local is destroyed only when its thread exits, which cannot happen
    // inside `f` (a thread exiting from inside a job aborts the process).
    unsafe { &*addr }
}

/// The address of this thread's `STATE`, kept in `StateAddr`; `None` once it has been destroyed.
#[cold]
#[inline(never)]
fn state_first_lookup() -> Option<*const ThreadState> {
    STATE
        .try_with(|st| {
            let addr = ptr::from_ref(st);
            StateAddr::set(addr as usize);
            addr
        })
        .ok()
}

fn finished(result: JobResult) -> Outcome {
    result.map_or(Outcome::ArgsNotCopied, Outcome::Finished)
}

/// Starts a job (`ASYNC_start_job` with `*job == NULL`).
pub(crate) fn start<F>(wait_ctx: Option<&WaitCtx>, f: F) -> Outcome
where
    F: FnOnce() -> JobResult + 'static,
{
    with_state(|st| match asyncjob::start(wait_ctx, f) {
        Ok(Started::Finished(v)) => finished(v),
        Ok(Started::Paused(job)) => {
            let id = job.id().addr();
            st.park(id, job);
            Outcome::Paused(id)
        }
        Ok(Started::NoJobs(_)) => Outcome::NoJobs,
        Err(e) => Outcome::Failed(ErrorKind::from(&e)),
    })
    .unwrap_or(Outcome::Failed(ErrorKind::Other))
}

/// Resumes the job paused on this thread under `id` (`ASYNC_start_job` with `*job != NULL`).
#[inline]
pub(crate) fn resume(id: usize) -> Outcome {
    with_state(|st| {
        let Some(job) = st.unpark(id) else {
            return Outcome::Unknown;
        };
        match job.resume() {
            Ok(Resumed::Finished(v)) => finished(v),
            Ok(Resumed::Paused(job)) => {
                st.park(id, job);
                Outcome::Paused(id)
            }
            Err(ResumeError { job, error }) => {
                st.park(id, job);
                Outcome::Failed(ErrorKind::from(&error))
            }
        }
    })
    .unwrap_or(Outcome::Failed(ErrorKind::Other))
}

/// This thread's state as the first half of a resume found it, kept for the second half (see
/// `entry`), which so needs no lookup of its own.
#[cfg(split_entry_points)]
#[derive(Clone, Copy)]
pub(crate) struct StateRef(*const ThreadState);

#[cfg(split_entry_points)]
impl StateRef {
    /// # Safety
    ///
    /// Called on the thread whose first half made it, before that `ASYNC_start_job` returns. The
    /// state is then alive: it is destroyed only when its thread exits, and a thread cannot exit
    /// inside that call (a thread exiting inside a job aborts the process).
    #[inline(always)]
    unsafe fn get<'a>(self) -> &'a ThreadState {
        // SAFETY: guaranteed by the caller.
        unsafe { &*self.0 }
    }
}

/// The switch a first half asks for (see `asyncjob::split::switch_into`): the switch, its value,
/// and the state for the second half.
#[cfg(split_entry_points)]
pub(crate) type ResumeSwitch = (asyncjob::split::RawSwitch, usize, StateRef);

/// The first half of `resume` around a switch that the caller makes itself (see `entry`):
/// `Ok` with the switch to make, or `Err` with the outcome when there is none.
///
/// # Safety
///
/// As for `asyncjob::Job::resume_begin`: after `Ok`, the caller makes that switch at once, keeps
/// `flight` in place and untouched, and then calls `resume_end` with the same `id` and `flight`
/// and the `StateRef`.
#[cfg(split_entry_points)]
#[inline(always)]
pub(crate) unsafe fn resume_begin(
    id: usize,
    flight: &mut std::mem::MaybeUninit<asyncjob::split::ResumeInFlight<JobResult>>,
) -> Result<ResumeSwitch, Outcome> {
    with_state(|st| {
        let Some(job) = st.unpark(id) else {
            return Err(Outcome::Unknown);
        };
        // SAFETY: passed on to the caller.
        match unsafe { job.resume_begin(flight) } {
            Ok((switch, value)) => Ok((switch, value, StateRef(st))),
            Err(ResumeError { job, error }) => {
                st.park(id, job);
                Err(Outcome::Failed(ErrorKind::from(&error)))
            }
        }
    })
    .unwrap_or(Err(Outcome::Failed(ErrorKind::Other)))
}

/// `resume_begin` for a job in the one-entry slot in the common case (see
/// `Job::resume_begin_plain`, which says what `HOOKED` and `panicking` are): without a hook, the
/// caller needs no stack frame. `None`, with nothing changed, in every other case.
///
/// # Safety
///
/// As for `resume_begin`.
#[cfg(split_entry_points)]
#[inline(always)]
pub(crate) unsafe fn resume_begin_plain<const HOOKED: bool>(
    id: usize,
    flight: &mut std::mem::MaybeUninit<asyncjob::split::ResumeInFlight<JobResult>>,
    panicking: bool,
) -> Option<ResumeSwitch> {
    with_cached_state(|st| {
        if st.recent_id.get() != id {
            return None;
        }
        // (An `id` of 0 matches only a table that never held a job, whose slot is empty.)
        let job = st.recent_job.take()?;
        // SAFETY: passed on to the caller.
        match unsafe { job.resume_begin_plain::<HOOKED>(flight, panicking) } {
            Ok((switch, value)) => Some((switch, value, StateRef(st))),
            Err(job) => {
                // Back where it was: the slot was emptied just above, so there is nothing to drop.
                std::mem::forget(st.recent_job.replace(Some(job)));
                None
            }
        }
    })
    .flatten()
}

/// The second half of `resume_begin`, once its switch has come back with `exit`.
///
/// # Safety
///
/// `flight` was filled by `resume_begin(id, ..)` or `resume_begin_plain(id, ..)`, whose switch has
/// come back; it is moved out here. `state` came with that switch.
#[cfg(split_entry_points)]
#[inline(always)]
pub(crate) unsafe fn resume_end(
    state: StateRef,
    id: usize,
    flight: *mut asyncjob::split::ResumeInFlight<JobResult>,
    exit: *mut std::ffi::c_void,
) -> Outcome {
    // SAFETY: guaranteed by the caller.
    let (st, resumed) = unsafe { (state.get(), asyncjob::split::resume_end(flight, exit)) };
    match resumed {
        Resumed::Finished(v) => finished(v),
        Resumed::Paused(job) => {
            st.park(id, job);
            Outcome::Paused(id)
        }
    }
}

/// `resume_end` when the job paused again, back into the one-entry slot it came from (see
/// `asyncjob::split::resume_end_paused` for `HOOKED`): without a hook, the caller needs no stack
/// frame. True when done; false, with nothing changed, in every other case.
///
/// # Safety
///
/// As for `resume_end`.
#[cfg(split_entry_points)]
#[inline(always)]
pub(crate) unsafe fn resume_end_plain<const HOOKED: bool>(
    state: StateRef,
    id: usize,
    flight: *mut asyncjob::split::ResumeInFlight<JobResult>,
) -> bool {
    // SAFETY: guaranteed by the caller.
    let st = unsafe { state.get() };
    if st.recent_id.get() != id {
        return false;
    }
    // SAFETY: guaranteed by the caller.
    let Some(job) = (unsafe { asyncjob::split::resume_end_paused::<_, HOOKED>(flight) }) else {
        return false;
    };
    // Back into the slot it was taken from: the slot is empty, as `park` finds it (whatever a
    // nested call refused inside the job put back into the slot changed its id).
    let empty = st.recent_job.replace(Some(job));
    debug_assert!(empty.is_none());
    std::mem::forget(empty);
    true
}

/// The wait context of job `id` (`ASYNC_get_wait_ctx`): the running job's, or a paused job's of this
/// thread; `None` for anything else (a finished job has none, as in OpenSSL).
pub(crate) fn wait_ctx_of(id: usize) -> Option<WaitCtx> {
    if asyncjob::current_job().is_some_and(|j| j.addr() == id) {
        return asyncjob::current_wait_ctx();
    }
    with_state(|st| st.wait_ctx_of(id)).flatten()
}

/// How many jobs are paused on this thread.
#[cfg(test)]
pub(crate) fn paused_count() -> usize {
    with_state(ThreadState::len).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `wait_ctx_of(id)` is `ctx`.
    fn has_ctx(id: usize, ctx: &WaitCtx) -> bool {
        wait_ctx_of(id).is_some_and(|c| c.ptr_eq(ctx))
    }

    #[test]
    fn pause_resume_finish_through_the_table() {
        let ctx = WaitCtx::new();
        let Outcome::Paused(id) = start(Some(&ctx), || {
            asyncjob::pause();
            Some(5)
        }) else {
            panic!("expected a pause");
        };
        assert_eq!(paused_count(), 1);
        assert!(has_ctx(id, &ctx));
        assert_eq!(resume(id), Outcome::Finished(5));
        assert_eq!(paused_count(), 0);
        assert!(wait_ctx_of(id).is_none());
        assert_eq!(resume(id), Outcome::Unknown);
    }

    #[test]
    fn many_paused_jobs_resume_in_any_order() {
        let mut jobs = Vec::new();
        for i in 0..50 {
            let ctx = WaitCtx::new();
            match start(Some(&ctx), move || {
                asyncjob::pause();
                asyncjob::pause();
                Some(i)
            }) {
                Outcome::Paused(id) => jobs.push((id, i, ctx)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(paused_count(), 50);
        // Each resumed to its second pause, then to its end: every other one first, then the rest
        // backwards.
        for (id, _, ctx) in &jobs {
            assert_eq!(resume(*id), Outcome::Paused(*id));
            assert!(has_ctx(*id, ctx));
        }
        for (id, i, ctx) in jobs.iter().step_by(2) {
            assert!(has_ctx(*id, ctx));
            assert_eq!(resume(*id), Outcome::Finished(*i));
        }
        for (id, i, ctx) in jobs.iter().skip(1).step_by(2).rev() {
            assert!(has_ctx(*id, ctx));
            assert_eq!(resume(*id), Outcome::Finished(*i));
        }
        assert_eq!(paused_count(), 0);
    }

    #[test]
    fn a_finished_job_in_the_slot_is_not_found_and_its_stack_serves_again() {
        let first = WaitCtx::new();
        let Outcome::Paused(id) = start(Some(&first), || {
            asyncjob::pause();
            Some(1)
        }) else {
            panic!("expected a pause");
        };
        assert_eq!(resume(id), Outcome::Finished(1));
        assert!(wait_ctx_of(id).is_none(), "finished: no wait ctx");
        assert_eq!(resume(id), Outcome::Unknown, "finished: unknown");
        // The pool hands the same job out again: same id, another wait ctx.
        let second = WaitCtx::new();
        assert_eq!(
            start(Some(&second), || {
                asyncjob::pause();
                Some(2)
            }),
            Outcome::Paused(id)
        );
        assert!(has_ctx(id, &second));
        assert_eq!(resume(id), Outcome::Finished(2));
    }

    #[test]
    fn nested_resume_is_refused_and_the_job_kept() {
        let Outcome::Paused(inner) = start(None, || {
            asyncjob::pause();
            Some(1)
        }) else {
            panic!("expected a pause");
        };
        let Outcome::Finished(seen) = start(None, move || match resume(inner) {
            Outcome::Failed(ErrorKind::Nested) => Some(10),
            _ => Some(20),
        }) else {
            panic!("expected the outer job to finish");
        };
        assert_eq!(seen, 10);
        assert_eq!(resume(inner), Outcome::Finished(1));
    }

    #[test]
    fn jobs_paused_at_thread_exit_are_leaked_and_counted() {
        use std::sync::Mutex;

        /// What a resume of the last paused job gave once the table was destroyed.
        static SEEN_AFTER_EXIT: Mutex<Option<Outcome>> = Mutex::new(None);
        /// Destroyed after `STATE` (thread-local destructors run newest first, and this one is
        /// registered before `STATE` is first reached): asks the destroyed table for a job.
        struct AskAfterExit(Cell<usize>);
        impl Drop for AskAfterExit {
            fn drop(&mut self) {
                *SEEN_AFTER_EXIT.lock().unwrap() = Some(resume(self.0.get()));
            }
        }
        thread_local! {
            static ASK: AskAfterExit = const { AskAfterExit(Cell::new(0)) };
        }

        let before = asyncjob::leaked_jobs();
        std::thread::spawn(|| {
            ASK.with(|_| {});
            // Two, so that both the one-entry slot and the map are emptied at thread exit.
            for i in 0..2 {
                let started = start(None, move || {
                    asyncjob::pause();
                    Some(i)
                });
                let Outcome::Paused(id) = started else {
                    panic!("expected a pause, got {started:?}");
                };
                ASK.with(|ask| ask.0.set(id));
            }
            assert_eq!(paused_count(), 2);
        })
        .join()
        .expect("the thread ends normally");
        // No other test of this binary leaves a job paused.
        assert_eq!(asyncjob::leaked_jobs() - before, 2);
        // The table is gone: refused, not looked up through the cached address (which finds an
        // emptied table and says `Unknown`).
        assert_eq!(
            *SEEN_AFTER_EXIT.lock().unwrap(),
            Some(Outcome::Failed(ErrorKind::Other))
        );
    }

    #[test]
    fn hasher_spreads_aligned_addresses() {
        let buckets: std::collections::HashSet<u64> = (0..64usize)
            .map(|i| {
                let mut h = AddrHasher::default();
                h.write_usize(0x7f00_0000_0000 + i * 4096);
                h.finish() & 63
            })
            .collect();
        assert!(
            buckets.len() > 32,
            "only {} distinct buckets",
            buckets.len()
        );
    }
}
