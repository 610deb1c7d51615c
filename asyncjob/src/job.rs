//! Starting, pausing, resuming and finishing jobs (`ASYNC_start_job`, `ASYNC_pause_job`, ...).

use std::any::Any;
use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::panic::{self, AssertUnwindSafe};

use crate::error::Error;
use crate::fiber::{self, Exit, RawSwitch, Resumer, Wake};
use crate::hook;
use crate::pool::{JobBox, JobFiber};
use crate::thread::{self, ThreadState};
use crate::wait_ctx::WaitCtx;

/// Unwind payload that tears down a job whose handle was dropped while it was paused.
struct CancelJob;

/// The identity of a job (`ASYNC_JOB *`): the same value inside the job ([`current_job`]) and on its
/// paused handle ([`Job::id`]).
///
/// Jobs are pooled, so an identity is reused: a job that finishes returns to the pool, and the next
/// job started on the thread gets the same identity (the pool is last in, first out).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId(*const c_void);

impl JobId {
    /// The identity as the C API's `ASYNC_JOB *`.
    pub fn as_ptr(self) -> *const c_void {
        self.0
    }

    /// The identity as a number.
    pub fn addr(self) -> usize {
        self.0 as usize
    }

    fn of(fiber: &JobFiber) -> Self {
        JobId((fiber as *const JobFiber).cast())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({:p})", self.0)
    }
}

/// What [`start`] did with the closure.
pub enum Started<F, R: 'static> {
    /// The job ran to the end without pausing (`ASYNC_FINISH`); here is its result.
    Finished(R),
    /// The job paused (`ASYNC_PAUSE`); resume it with [`Job::resume`].
    Paused(Job<R>),
    /// The pool has no job to give (`ASYNC_NO_JOBS`): it is at its `max_size` and every job is in
    /// use, or no new stack could be had. The closure is handed back untouched, to retry later.
    NoJobs(F),
}

/// What [`Job::resume`] did.
pub enum Resumed<R: 'static> {
    /// The job finished (`ASYNC_FINISH`); here is its result.
    Finished(R),
    /// The job paused again (`ASYNC_PAUSE`).
    Paused(Job<R>),
}

/// A refused [`Job::resume`]: the job, untouched, and why.
pub struct ResumeError<R: 'static> {
    /// The job, still paused.
    pub job: Job<R>,
    /// Why it was not resumed.
    pub error: Error,
}

impl<F, R: 'static> fmt::Debug for Started<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Started::Finished(_) => f.write_str("Finished(..)"),
            Started::Paused(job) => f.debug_tuple("Paused").field(job).finish(),
            Started::NoJobs(_) => f.write_str("NoJobs(..)"),
        }
    }
}

impl<R: 'static> fmt::Debug for Resumed<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resumed::Finished(_) => f.write_str("Finished(..)"),
            Resumed::Paused(job) => f.debug_tuple("Paused").field(job).finish(),
        }
    }
}

impl<R: 'static> fmt::Debug for ResumeError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumeError")
            .field("job", &self.job)
            .field("error", &self.error)
            .finish()
    }
}

impl<R: 'static> fmt::Display for ResumeError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job not resumed: {}", self.error)
    }
}

impl<R: 'static> std::error::Error for ResumeError<R> {}

/// Makes a handle `!Send + !Sync` while still naming its result type.
type NotSendOf<R> = PhantomData<(*const (), fn() -> R)>;

/// A paused job (the `ASYNC_JOB *` that `ASYNC_start_job` hands back with `ASYNC_PAUSE`).
///
/// A job belongs to the thread that started it: `Job` is neither `Send` nor `Sync`, so it can only be
/// resumed there (OpenSSL crashes when a job finishes on another thread). It can be resumed only
/// while it is paused, because [`resume`](Job::resume) consumes it; a finished job has no handle left,
/// so the stale-handle corruption of OpenSSL cannot be expressed.
///
/// Dropping a paused job unwinds its stack, which runs the destructors of everything its closure
/// owns, and returns the job to the pool. Where it cannot be unwound soundly, it is leaked instead
/// (its stack is never freed or reused, and counted in [`leaked_jobs`](crate::leaked_jobs)): in a
/// `panic = "abort"` build, and once its thread is exiting, when thread-locals that the job may
/// borrow can already be destroyed. OpenSSL leaks every job paused at thread exit.
pub struct Job<R: 'static> {
    /// Taken out only by the consuming methods and `drop`, each exactly once; a plain pointer, so
    /// that an `Option<Job>` is one word.
    fiber: ManuallyDrop<JobBox>,
    _not_send: NotSendOf<R>,
}

impl<R: 'static> fmt::Debug for Job<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Job").field(&JobId::of(&self.fiber)).finish()
    }
}

/// Start a job running `f` (`ASYNC_start_job`).
///
/// A job is taken from the calling thread's pool (a `(0, 0)` pool, without limit, is created on first
/// use if [`init_thread`](crate::init_thread) was not called) and `f` runs on its stack straight away,
/// until it returns or calls [`pause`]. `wait_ctx` is the job's wait context for all its runs; the job
/// keeps a clone of it until it finishes.
///
/// The closure and its result take the place of C's `func`, `args` and `*ret`: whatever `f` captures
/// is moved onto the job's stack before it first runs, so the caller's originals can change at once.
///
/// A panic inside the job is caught at the root of the job's stack and resumed here, in the caller;
/// the job goes back to the pool, which stays usable.
///
/// # Errors
///
/// [`Error::Nested`] when called inside a running job (OpenSSL crashes or corrupts its pool there),
/// [`Error::NotCapable`] or [`Error::ThreadSetup`] when the thread cannot run fibers.
// Inlined into its caller: the closure and the `Started` that may hand it back then stay in
// registers and the caller's frame instead of being copied through a separate call (34 of the 256
// instructions of a Rust start→finish).
#[inline(always)]
pub fn start<F, R>(wait_ctx: Option<&WaitCtx>, f: F) -> Result<Started<F, R>, Error>
where
    F: FnOnce() -> R + 'static,
    R: 'static,
{
    let t = thread::thread();
    let from = t.resumer()?;
    let Some(fiber) = t.take_job()? else {
        return Ok(Started::NoJobs(f));
    };
    // A job from the pool holds no wait context (`release_finished` took it): only a context given
    // is stored, and the empty slot has nothing to drop.
    if let Some(ctx) = wait_ctx {
        let held = fiber.data.wait_ctx.replace(Some(ctx.clone()));
        debug_assert!(held.is_none());
        std::mem::forget(held);
    }
    let hook = hook::hook();
    let token = hook.map(|h| hook::enter(h, 0, true));
    // SAFETY: `from` is the thread's own context, running now (`resumer` refuses inside a job), and
    // a job from the pool is idle.
    let exit = t.run_from_thread(&fiber, || unsafe { fiber.launch::<F, R>(from, f) });
    if let (Some(h), Some(token)) = (hook, token) {
        fiber.data.hook_word.set(hook::leave(h, token));
    }
    Ok(match settle(t, fiber, exit) {
        Resumed::Finished(r) => Started::Finished(r),
        Resumed::Paused(job) => Started::Paused(job),
    })
}

/// Turn what the fiber did into the caller's view: a paused handle, or the finished job's result with
/// the job back in the pool.
#[inline(always)]
fn settle<R: 'static>(t: &'static ThreadState, fiber: JobBox, exit: Exit<R>) -> Resumed<R> {
    match exit {
        Exit::Paused => {
            t.count_outstanding(1);
            Resumed::Paused(Job {
                fiber: ManuallyDrop::new(fiber),
                _not_send: PhantomData,
            })
        }
        Exit::Finished(Ok(r)) => {
            release_finished(t, fiber);
            Resumed::Finished(r)
        }
        Exit::Finished(Err(payload)) => release_panicked(t, fiber, payload),
    }
}

/// Return a job that panicked to the pool and resume its panic here. Its panic comes first: one
/// raised meanwhile by the cleanups of its wait context (when the job held the last handle) is
/// dropped, as the first of several cleanup panics is the one that propagates.
#[cold]
fn release_panicked<R>(t: &ThreadState, fiber: JobBox, payload: Box<dyn Any + Send>) -> R {
    let released = panic::catch_unwind(AssertUnwindSafe(|| release_finished(t, fiber)));
    drop(released);
    panic::resume_unwind(payload)
}

impl<R: 'static> Job<R> {
    /// Continue the job where it paused (`ASYNC_start_job` with `*job` set), until it pauses again or
    /// finishes. The job keeps the wait context it was started with.
    ///
    /// A panic inside the job is resumed here, in the caller; the job goes back to the pool.
    ///
    /// # Errors
    ///
    /// [`Error::Nested`] when called inside a running job; the job is handed back untouched.
    // Always inlined, like `start` and `pause`: control comes back here by a jump from another
    // stack, so the processor's return-address predictor holds the job's return addresses, not
    // the caller's, and the `ret` of an out-of-line `resume` was mispredicted on every round trip
    // (25 ns instead of 10 ns per pause→resume in the conformance report's loop). Not written as
    // `resume_begin` + switch + `resume_end`: carrying the hook and the output through a
    // `ResumeInFlight` made the Rust round trip 120 instructions instead of 109.
    #[inline(always)]
    pub fn resume(self) -> Result<Resumed<R>, ResumeError<R>> {
        let t = owner_of(&self.fiber);
        let from = match t.resumer() {
            Ok(from) => from,
            Err(error) => return Err(ResumeError { job: self, error }),
        };
        let fiber = self.into_fiber(t);
        let wake = wake_for_resume(&fiber);
        // `resumer` succeeded: no job runs, `from` is the thread's own context.
        let exit = switch_with_hook::<R>(t, &fiber, from, SwitchFrom::Thread, wake);
        Ok(settle(t, fiber, exit))
    }

    /// The job's identity: what [`current_job`] returns inside it.
    pub fn id(&self) -> JobId {
        JobId::of(&self.fiber)
    }

    /// The wait context the job was started with (`ASYNC_get_wait_ctx`).
    pub fn wait_ctx(&self) -> Option<WaitCtx> {
        self.fiber.data.wait_ctx.cloned()
    }

    /// Take the fiber out of the handle, which ends without running its destructor.
    #[inline(always)]
    fn into_fiber(self, t: &ThreadState) -> JobBox {
        let mut emptied = ManuallyDrop::new(self);
        t.count_outstanding(-1);
        // SAFETY: `emptied` is never dropped, so the fiber is taken out exactly once.
        unsafe { ManuallyDrop::take(&mut emptied.fiber) }
    }
}

/// The state of the thread that made the job: the calling thread's, since jobs never leave their
/// thread (a `Job` is not `Send`, and a running job's fiber is reached only on its thread).
#[inline(always)]
fn owner_of(fiber: &JobFiber) -> &'static ThreadState {
    // SAFETY: `owner` is the `&'static ThreadState` of the thread that made the job (see
    // `JobData::owner`).
    unsafe { fiber.data.owner.cast().as_ref() }
}

/// [`Job::resume`] in two halves around a switch that the caller makes itself, for an entry point
/// that must not return right after a switch (the C face's `ASYNC_start_job`; see [`pause_begin`]).
/// It holds what the first half leaves for the second: it stays in place, untouched, in between.
#[doc(hidden)]
pub struct ResumeInFlight<R: 'static> {
    fiber: JobBox,
    hook: Option<(&'static dyn hook::SwitchHook, usize)>,
    output: Option<std::thread::Result<R>>,
}

impl<R: 'static> fmt::Debug for ResumeInFlight<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResumeInFlight")
            .field(&JobId::of(&self.fiber))
            .finish()
    }
}

impl<R: 'static> Job<R> {
    /// The first half of [`Job::resume`]: `Ok((switch, value))` when the caller is to switch with
    /// [`switch_into`](crate::split::switch_into)`(switch, value)` and hand the switch's value to
    /// [`resume_end`] with `flight`; `Err` as `resume` refuses.
    ///
    /// # Safety
    ///
    /// After `Ok`, the caller makes exactly that switch at once, with nothing run in between, keeps
    /// `flight` in place and untouched until the switch has come back, and then calls `resume_end`
    /// with it.
    #[doc(hidden)]
    #[inline(always)]
    pub unsafe fn resume_begin(
        self,
        flight: &mut MaybeUninit<ResumeInFlight<R>>,
    ) -> Result<(RawSwitch, usize), ResumeError<R>> {
        let t = owner_of(&self.fiber);
        let from = match t.resumer() {
            Ok(from) => from,
            Err(error) => return Err(ResumeError { job: self, error }),
        };
        let fiber = self.into_fiber(t);
        // SAFETY: `resumer` succeeded: no job runs, `from` is the thread's own context; the rest is
        // the caller's promise.
        Ok(
            unsafe {
                resume_in_flight::<R, true>(t, fiber, from, flight, std::thread::panicking())
            },
        )
    }

    /// [`resume_begin`](Job::resume_begin) in the common case (the thread prepared, no job running),
    /// written so that a caller's fast path needs no stack frame of its own when `HOOKED` is false:
    /// `Err(self)`, untouched, in every other case. `HOOKED` says whether a switch hook is installed,
    /// as the caller found ([`hook_installed`](crate::split::hook_installed)); without one nothing is
    /// called out to. `panicking` is `std::thread::panicking()`, asked by the caller before anything
    /// else (the answer may take a call).
    ///
    /// # Safety
    ///
    /// As for `resume_begin`.
    #[doc(hidden)]
    #[inline(always)]
    pub unsafe fn resume_begin_plain<const HOOKED: bool>(
        self,
        flight: &mut MaybeUninit<ResumeInFlight<R>>,
        panicking: bool,
    ) -> Result<(RawSwitch, usize), Self> {
        let t = owner_of(&self.fiber);
        let Some(from) = t.prepared_context() else {
            return Err(self);
        };
        if t.in_job() {
            return Err(self);
        }
        let fiber = self.into_fiber(t);
        // SAFETY: no job runs, so the prepared context is the one running; the rest is the caller's
        // promise.
        Ok(unsafe { resume_in_flight::<R, HOOKED>(t, fiber, from, flight, panicking) })
    }
}

/// The common end of the two first halves: the job's round begins, the switch hook (if `HOOKED`
/// and one is installed) is entered, the job is marked running, and the fiber is lent the output
/// slot of `flight`. Returns the switch to make and its value.
///
/// # Safety
///
/// `from` is the thread's own context, running now, `fiber` a job paused under a `Job<R>`, and the
/// caller makes the switch as `Job::resume_begin` requires.
#[inline(always)]
unsafe fn resume_in_flight<R: 'static, const HOOKED: bool>(
    t: &'static ThreadState,
    fiber: JobBox,
    from: Resumer,
    flight: &mut MaybeUninit<ResumeInFlight<R>>,
    panicking: bool,
) -> (RawSwitch, usize) {
    let wake = wake_for_resume(&fiber);
    let hook = if HOOKED {
        hook::hook().map(|h| (h, hook::enter(h, fiber.data.hook_word.get(), false)))
    } else {
        None
    };
    t.enter_from_thread(&fiber);
    let flight = flight.write(ResumeInFlight {
        fiber,
        hook,
        output: None,
    });
    // SAFETY: guaranteed by the caller; `flight.output` stays in place until the switch is back.
    let switch = unsafe {
        flight
            .fiber
            .resume_begin(from, &mut flight.output, panicking)
    };
    (switch, fiber::wake_value(wake))
}

/// The second half of [`Job::resume_begin`]: `exit` is the value the switch came back with.
///
/// # Safety
///
/// `flight` was filled by `resume_begin` or `resume_begin_plain`, whose switch has come back, and is
/// read (moved out) here once.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn resume_end<R: 'static>(
    flight: *mut ResumeInFlight<R>,
    exit: *mut c_void,
) -> Resumed<R> {
    // SAFETY: guaranteed by the caller.
    let ResumeInFlight {
        fiber,
        hook,
        output,
    } = unsafe { flight.read() };
    let t = owner_of(&fiber);
    t.leave_to_thread();
    if let Some((h, token)) = hook {
        fiber.data.hook_word.set(hook::leave(h, token));
    }
    settle(t, fiber, fiber::exit_of(output, exit))
}

/// [`resume_end`] when the job paused, written so that a caller's fast path needs no stack frame of
/// its own when `HOOKED` is false: the paused job's handle, or `None` with `flight` untouched, for
/// `resume_end` (the job finished, or a hook ran but `HOOKED` is false).
///
/// # Safety
///
/// As for `resume_end`; after `Some`, `flight` has been moved out.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn resume_end_paused<R: 'static, const HOOKED: bool>(
    flight: *mut ResumeInFlight<R>,
) -> Option<Job<R>> {
    // SAFETY: filled, and not yet moved out (the caller's promise).
    let held = unsafe { &*flight };
    if (!HOOKED && held.hook.is_some()) || held.output.is_some() {
        return None;
    }
    // SAFETY: as above; the output slot left behind is empty, nothing to drop.
    let ResumeInFlight { fiber, hook, .. } = unsafe { flight.read() };
    let t = owner_of(&fiber);
    t.leave_to_thread();
    if let (true, Some((h, token))) = (HOOKED, hook) {
        fiber.data.hook_word.set(hook::leave(h, token));
    }
    t.count_outstanding(1);
    Some(Job {
        fiber: ManuallyDrop::new(fiber),
        _not_send: PhantomData,
    })
}

/// Which context a switch into a job starts from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SwitchFrom {
    /// The thread's own context: no job runs now.
    Thread,
    /// Whichever context runs now, perhaps a job.
    Running,
}

/// Switch into a paused job of result type `R`, from the context running now (`from`), with the
/// switch hook around the switch.
#[inline(always)]
fn switch_with_hook<R: 'static>(
    t: &ThreadState,
    fiber: &JobFiber,
    from: Resumer,
    from_kind: SwitchFrom,
    wake: Wake,
) -> Exit<R> {
    let hook = hook::hook();
    let token = hook.map(|h| hook::enter(h, fiber.data.hook_word.get(), false));
    // One closure shared by the two arms was inlined into neither, hence the repetition.
    let exit = match from_kind {
        SwitchFrom::Thread => {
            // SAFETY: the callers pass the context running now, and a job taken out of a paused
            // handle of type `Job<R>`: suspended in `pause`, launched with a closure returning `R`.
            t.run_from_thread(fiber, || unsafe { fiber.resume::<R>(from, wake) })
        }
        SwitchFrom::Running => {
            // SAFETY: as above.
            t.run_in(fiber, || unsafe { fiber.resume::<R>(from, wake) })
        }
    };
    if let (Some(h), Some(token)) = (hook, token) {
        fiber.data.hook_word.set(hook::leave(h, token));
    }
    exit
}

impl<R: 'static> Drop for Job<R> {
    fn drop(&mut self) {
        let t = thread::thread();
        t.count_outstanding(-1);
        // SAFETY: the handles emptied by `into_fiber` are never dropped; this is the only other
        // place the fiber is taken out, once.
        let fiber = unsafe { ManuallyDrop::take(&mut self.fiber) };
        // Once the thread is exiting, a job may borrow thread-locals that are already destroyed:
        // it never runs again, and its stack is leaked (OpenSSL leaks such jobs too).
        if cfg!(panic = "unwind") && !t.exiting_for_drop() {
            if let Some(from) = t.running_context() {
                // The job unwinds to its root and finishes; whatever its closure owned is dropped
                // on the way. The result (a caught cancellation, or a value) is dropped too; a
                // panic raised while unwinding aborts, as any double panic does.
                match switch_with_hook::<R>(t, &fiber, from, SwitchFrom::Running, Wake::Cancel) {
                    Exit::Finished(_) => release_finished(t, fiber),
                    Exit::Paused => unreachable!("a cancelled job cannot pause"),
                }
                return;
            }
        }
        // Without unwinding the job's destructors cannot run, so its stack is never reused.
        leak_job(fiber);
    }
}

/// Give up a paused job for ever: its stack is never freed or reused. It lets go of its wait
/// context, which it can no longer use (any handle on its stack keeps the context alive on its own).
fn leak_job(fiber: JobBox) {
    let wait_ctx = fiber.data.wait_ctx.take();
    fiber.leak();
    // Dropped last: this may be the context's last handle, and its fd cleanups are user code.
    drop(wait_ctx);
}

impl<R: 'static> Job<R> {
    /// End a paused job without running anything on its stack, and never free or reuse that stack:
    /// whatever lives on it (a local whose address was published, a pinned value) stays valid for
    /// the life of the process. This is what OpenSSL does with every job still paused when its thread
    /// exits. The destructors of what the closure owns do not run. The job lets go of its wait
    /// context, and is counted in [`leaked_jobs`].
    ///
    /// The C library ends C jobs paused at thread exit this way: whether their frames may be
    /// abandoned and their memory reused cannot be known.
    pub fn leak(self) {
        leak_job(self.into_fiber(thread::thread()));
    }

    /// Free a paused job without unwinding its stack: the job's code never runs again, the
    /// destructors of what its closure owns do not run, and the job goes back to the pool for reuse.
    ///
    /// Dropping a [`Job`] is the safe way to end a paused job, and [`leak`](Job::leak) the safe way
    /// not to run it again; this exists for jobs whose stacks hold foreign frames that cannot be
    /// unwound and whose memory may be reused. OpenSSL has no counterpart.
    ///
    /// # Safety
    ///
    /// Nothing on the job's stack may rely on being dropped before its memory is reused: no value
    /// pinned on it (a pinned future, an intrusive list node), no guard whose destructor must run, no
    /// address of a local published anywhere. A job whose stack holds only C frames and plain data
    /// that nobody refers to qualifies.
    pub unsafe fn discard(self) {
        let t = thread::thread();
        let fiber = self.into_fiber(t);
        // SAFETY: a paused job is suspended; the caller vouches for what lives on its stack.
        if unsafe { fiber.reset_without_unwinding() } {
            release_finished(t, fiber);
        } else {
            leak_job(fiber);
        }
    }
}

/// How many paused jobs the process has ended by leaking them ([`Job::leak`], a paused job dropped
/// once its thread is exiting or in a `panic = "abort"` build): their stacks are never freed or
/// reused, so whatever lives on them stays valid.
pub fn leaked_jobs() -> usize {
    fiber::leaked_fibers()
}

/// Return a job that is done (finished, cancelled or discarded) to the pool, letting go of its wait
/// context.
#[inline(always)]
fn release_finished(t: &ThreadState, fiber: JobBox) {
    let wait_ctx = fiber.data.wait_ctx.take();
    fiber.data.hook_word.set(0);
    t.give_back(fiber);
    // Dropped after the job is back in the pool: this may be the context's last handle, and its fd
    // cleanups are user code.
    drop(wait_ctx);
}

/// Pause the running job (`ASYNC_pause_job`): control returns to the caller of [`start`] or
/// [`Job::resume`], which gets [`Started::Paused`] / [`Resumed::Paused`]. When the job is resumed,
/// the current round of its wait context ends and `pause` returns.
///
/// Outside a job, and while pausing is blocked ([`block_pause`]), this does nothing and returns at
/// once, as in OpenSSL. It also returns at once while the job itself is unwinding, from a panic or
/// from its cancellation (a destructor that pauses): the thread's panic state cannot be carried to
/// whoever resumed the job.
///
/// If the job's handle is dropped while it is paused, `pause` does not return: it unwinds the job
/// (running its destructors), as a panic would. Code that catches panics inside a job should let this
/// unwind continue: a job that catches it and pauses again is unwound again.
// Always inlined for the reason given at `Job::resume`: a `ret` right after a switch is mispredicted.
#[inline(always)]
pub fn pause() {
    // SAFETY: the switch that `pause_begin` asks for is made at once, and `pause_end` follows it
    // unless it came back with `RESUMED_DONE`.
    unsafe {
        let Some(switch) = pause_begin(std::thread::panicking) else {
            return;
        };
        let wake = fiber::switch_back(switch);
        if wake as usize != fiber::RESUMED_DONE {
            pause_end(wake);
        }
    }
}

/// The resumer's part of waking a paused job, just before the switch: the round of its wait context
/// ends here. What may run user code (dropping the entries cleared in that round) is left to the
/// job's own side ([`woken_up`]), as the answer says.
#[inline(always)]
fn wake_for_resume(fiber: &JobFiber) -> Wake {
    // SAFETY: the slot of a paused job is written only by `release_finished`, `leak_job` and
    // `discard`, which take the job's fiber, held here by the resumer.
    match unsafe { fiber.data.wait_ctx.get() } {
        Some(ctx) if ctx.begin_round() => Wake::ResumeWithWork,
        _ => Wake::Resume,
    }
}

/// What a paused job does on waking, before its `pause` returns: the rest of its wait context's round
/// end, when the resumer left it.
#[inline(always)]
fn woken_up(fiber: &JobFiber, wake: Wake) {
    if wake == Wake::ResumeWithWork {
        // SAFETY: the slot of a running job is not written while it runs: it is written before a
        // start, and by `release_finished`, `leak_job` and `discard`, which only take jobs that are
        // done or paused, never the running one; the reset may run user code (destructors of
        // entries dropped), which has no handle on a running job.
        if let Some(ctx) = unsafe { fiber.data.wait_ctx.get() } {
            ctx.reset_fd_changes();
        }
    }
}

/// [`pause`] in two halves around a switch that the caller makes itself, for an entry point that
/// must not return right after a switch (the C face's `ASYNC_pause_job`: its return would follow a
/// jump from another stack, which the processor's return-address predictor gets wrong). `None`:
/// nothing to switch, `pause` is done. `Some(switch)`: the caller switches with
/// [`switch_back`](crate::split::switch_back) and hands the switch's value to [`pause_end`], unless
/// it is [`RESUMED_DONE`](crate::split::RESUMED_DONE): then the pause is done. `panicking` answers
/// `std::thread::panicking()`, asked only when the answer matters (a caller that wants no stack
/// frame asks it first, since the answer may take a call, and passes the answer).
///
/// # Safety
///
/// After `Some`, the caller makes exactly that switch at once, with nothing run in between, and
/// calls `pause_end` with its value as soon as it comes back (or skips it for `RESUMED_DONE`).
#[doc(hidden)]
#[inline(always)]
pub unsafe fn pause_begin(panicking: impl FnOnce() -> bool) -> Option<RawSwitch> {
    let t = thread::thread();
    if t.pause_blocked() > 0 {
        return None;
    }
    // SAFETY: the running job's code is what runs now, on that job's own stack.
    let begun =
        t.with_running(|running| running.map(|fiber| unsafe { fiber.suspend_begin(panicking) }))?;
    match begun {
        Ok(switch) => Some(switch),
        Err(Some(Wake::Cancel)) => panic::resume_unwind(Box::new(CancelJob)),
        Err(_) => None,
    }
}

/// The second half of [`pause_begin`]: `wake` is the value the switch came back with.
///
/// # Safety
///
/// Only right after the switch that `pause_begin` asked for has come back.
#[doc(hidden)]
#[inline(always)]
pub unsafe fn pause_end(wake: *mut c_void) {
    let t = thread::thread();
    let woken = t.with_running(|running| {
        let fiber = running.expect("a job resumed after pause_begin is the running one");
        let wake = fiber.suspend_end(wake);
        woken_up(fiber, wake);
        wake
    });
    if woken == Wake::Cancel {
        panic::resume_unwind(Box::new(CancelJob));
    }
}

/// The running job's identity, or `None` outside a job (`ASYNC_get_current_job`).
pub fn current_job() -> Option<JobId> {
    thread::thread().with_running(|running| running.map(JobId::of))
}

/// The running job's wait context (`ASYNC_get_wait_ctx(ASYNC_get_current_job())`): `None` outside a
/// job or when the job was started without one.
pub fn current_wait_ctx() -> Option<WaitCtx> {
    let t = thread::thread();
    t.with_running(|running| running.and_then(|f| f.data.wait_ctx.cloned()))
}

/// The running job's [`Notifier`](crate::Notifier) (`WaitCtx::notifier` of its wait context): `None`
/// outside a job or when the job was started without a wait context. Asking marks the context as
/// awaiting a notification for the current round.
pub fn current_notifier() -> Option<crate::Notifier> {
    current_wait_ctx().map(|ctx| ctx.notifier())
}

/// Whether the running job is being torn down because its handle was dropped.
pub fn is_cancelling() -> bool {
    thread::thread().with_running(|running| running.is_some_and(JobFiber::is_cancelling))
}

/// Guard returned by [`block_pause`]; dropping it calls [`unblock_pause`].
#[must_use = "pausing is unblocked again as soon as the guard is dropped"]
pub struct PauseBlock {
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for PauseBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PauseBlock")
    }
}

impl PauseBlock {
    /// Keep pausing blocked beyond the guard's life, for C-style pairing with [`unblock_pause`].
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for PauseBlock {
    fn drop(&mut self) {
        unblock_pause();
    }
}

/// Block pausing until the guard is dropped (`ASYNC_block_pause`): while blocked, [`pause`] returns
/// at once. Blocks nest.
///
/// The count is kept per thread, not per job, as in OpenSSL. Outside a job the call is ignored, so the
/// returned guard then does nothing either.
pub fn block_pause() -> PauseBlock {
    thread::thread().adjust_pause_block(true);
    PauseBlock {
        _not_send: PhantomData,
    }
}

/// Undo one [`block_pause`] (`ASYNC_unblock_pause`). Ignored outside a job; never goes below zero.
pub fn unblock_pause() {
    thread::thread().adjust_pause_block(false);
}

/// The calling thread's pause-block count.
pub fn pause_blocked_count() -> u32 {
    thread::thread().pause_blocked()
}

/// Whether this platform can run jobs (`ASYNC_is_capable`).
pub fn is_capable() -> bool {
    fiber::is_capable()
}

/// The name of the fiber backend compiled in: `"x86_64-sysv-asm"`, `"aarch64-aapcs64-asm"`,
/// `"ucontext"` or `"windows-fibers"`.
pub fn backend() -> &'static str {
    fiber::backend_name()
}
