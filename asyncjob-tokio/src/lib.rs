//! Run [`asyncjob`] jobs as tokio futures, and await futures from the synchronous code inside them.
//!
//! A job is a closure that runs on a stack of its own and can pause anywhere (see [`asyncjob`]).
//! [`run`] turns one into a future: the job runs inside the future's `poll`, on the runtime's thread,
//! and whenever it pauses the future waits for what the job waits on (its wait fds, its
//! [`Notifier`](asyncjob::Notifier)) and resumes it. [`block_on`], called inside such a job, awaits a
//! future by pausing the job until the future is ready. Together they let synchronous code (a
//! `rustls` `Signer::sign`, an OpenSSL-style engine) wait for asynchronous work without blocking the
//! thread and without being `async` itself:
//!
//! ```
//! use std::time::Duration;
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let local = tokio::task::LocalSet::new();
//! let answer = local.block_on(&rt, async {
//!     // Synchronous code, which awaits a timer in the middle.
//!     let job = asyncjob_tokio::run(|| {
//!         asyncjob_tokio::block_on(tokio::time::sleep(Duration::from_millis(1))).unwrap();
//!         6 * 7
//!     });
//!     tokio::task::spawn_local(job).await.unwrap()
//! });
//! assert_eq!(answer.unwrap(), 42);
//! ```
//!
//! # One thread
//!
//! A job belongs to the thread that started it, so [`Run`] is `!Send`: it runs on a current-thread
//! runtime (with [`Runtime::block_on`](tokio::runtime::Runtime::block_on)), inside a
//! [`LocalSet`](tokio::task::LocalSet), or on a [`LocalRuntime`](tokio::runtime::LocalRuntime), and is
//! spawned with [`spawn_local`](tokio::task::spawn_local). A multi-threaded runtime's
//! `tokio::spawn` refuses it:
//!
//! ```compile_fail
//! async fn spawn_it() {
//!     let _ = tokio::spawn(asyncjob_tokio::run(|| 1));
//! }
//! ```
//!
//! # What wakes a paused job
//!
//! Each [`Run`] gives its job a [`WaitCtx`] of its own. After every pause the future looks at it:
//!
//! - [`STATUS_ERR`](WaitCtx::STATUS_ERR): the job is cancelled (dropped, so its destructors run) and
//!   the future resolves to [`Error::Status`].
//! - [`STATUS_EAGAIN`](WaitCtx::STATUS_EAGAIN): the job is resumed on the next poll, and the status
//!   is set back to [`STATUS_UNSUPPORTED`](WaitCtx::STATUS_UNSUPPORTED) so that it does not stick to
//!   later pauses.
//! - Its wait fds: the fds added and deleted in the round are applied (deletions first), each added
//!   fd registered with tokio's reactor as an [`AsyncFd`](tokio::io::unix::AsyncFd) for reading.
//!   The job is resumed when one of them is readable, an fd already readable at the pause included.
//! - Its [`Notifier`](asyncjob::Notifier): the task's waker is registered with
//!   [`WaitCtx::set_waker`] before the notification mark is looked at, so a
//!   [`notify`](asyncjob::Notifier::notify) from any thread, before or after the pause, resumes the
//!   job on the next poll.
//! - A pause with no wait fd, when the job did not ask for a notifier in that round, means "go on
//!   later": the job is resumed on the next poll (the task wakes itself at once). Asking marks only
//!   the current round, so code that pauses again after a resume (a spurious one, or to wait
//!   longer) asks again ([`asyncjob::current_notifier`]) before each pause.
//!
//! A job is resumed at most once per poll; when it is ready again at once, the task wakes itself and
//! returns `Pending`, so that the runtime's other tasks (and tokio's cooperative budget) get their
//! turn.
//!
//! ## Fds: duplicates, and readiness
//!
//! The reactor registers a *duplicate* of each wait fd (`dup`, close-on-exec), never the fd itself.
//! Two jobs that wait on the same fd (an engine's one eventfd, say) would otherwise make the second
//! registration fail with `EEXIST`, and closing the job's fd (its cleanup, at the end of the job)
//! cannot disturb the reactor. The duplicate is deregistered and closed when the fd leaves the wait
//! context, when the job ends, and when the future is dropped, before the job is. An fd the reactor
//! cannot watch (a regular file) cancels the job with [`Error::Io`].
//!
//! Tokio's readiness is edge-triggered, and the job, not this crate, reads the fd. So readiness is
//! cleared only when the fd is seen to be empty: each time the reactor reports an fd ready, a
//! zero-timeout `poll(2)` asks whether it still is; if not, the readiness guard's
//! [`clear_ready`](tokio::io::unix::AsyncFdReadyGuard::clear_ready) clears it, which leaves alone an
//! event that arrived after the guard was made (tokio's tick), and the fd is polled again. A job that
//! pauses again on an fd it emptied therefore waits for new data instead of spinning, and a job that
//! left data unread is resumed again.
//!
//! # Cancellation, panics, errors
//!
//! Dropping a [`Run`] (`tokio::time::timeout`, `JoinHandle::abort`, a `select!` that lost) cancels
//! the job: its fds are deregistered from the reactor, its waker is let go (a notification that
//! arrives later wakes nobody), and the job is dropped, which unwinds its stack so that everything
//! it owns is dropped; its wait context's fd cleanups run then. A panic inside the job propagates
//! out of `poll`, so a task spawned with `spawn_local` ends with a
//! [`JoinError`](tokio::task::JoinError) for which `is_panic()` holds.
//!
//! # The pool limit
//!
//! When the thread's job pool is exhausted ([`asyncjob::init_thread`] with a `max_size`, all jobs
//! paused), the future waits without polling in a loop: it queues its waker on a thread-local list
//! that is woken each time a job of a [`Run`] on this thread finishes, fails or is dropped, and
//! then tries again. Every waiting `Run` is woken at each such end and all but one queue again, so
//! `k` waiting runs cost `k` polls per freed job. If no [`Run`] of this thread holds a job (the pool is taken by jobs started by
//! hand), nothing would ever wake it, and it resolves to [`Error::NoJobs`] instead.
//!
//! # `block_on`
//!
//! [`block_on`] polls its future with a waker that notifies the job's notifier, and pauses the job
//! while the future is pending. The job runs inside the task's `poll`, in the runtime's context, so
//! the future may use timers, sockets, `spawn_local` and so on. Calls nest: a future awaited by
//! `block_on` may call code that calls `block_on` again. Outside a job driven by [`run`] (a plain
//! thread, a job started by hand, the task that polls a `Run`) it returns
//! [`BlockOnError::NotInRun`] rather than blocking the thread.
//!
//! # Platforms
//!
//! Wait fds need `AsyncFd`, which exists on Unix. Elsewhere [`run`] and [`block_on`] work with the
//! notifier and fd-less pauses, and a job that registers a wait fd is cancelled with [`Error::Io`]
//! (`Unsupported`).

#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use asyncjob::{Job, Resumed, Started, WaitCtx};

mod fds;

use fds::Registry;

/// Why a [`Run`] did not give the job's result.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The job could not be started or resumed (for example [`asyncjob::Error::Nested`]: the `Run`
    /// was polled inside another job).
    Start(asyncjob::Error),
    /// The thread's job pool is exhausted and no [`Run`] of this thread holds a job whose end could
    /// free one.
    NoJobs,
    /// The job paused with its wait context's status set to
    /// [`STATUS_ERR`](WaitCtx::STATUS_ERR); it was cancelled.
    Status,
    /// One of the job's wait fds could not be registered with tokio's reactor (or polling it failed);
    /// the job was cancelled.
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Start(e) => write!(f, "the job could not run: {e}"),
            Error::NoJobs => f.write_str(
                "the job pool is exhausted and no job of this thread's `run` futures can free one",
            ),
            Error::Status => f.write_str("the job paused with ASYNC_STATUS_ERR and was cancelled"),
            Error::Io(e) => write!(f, "a wait fd of the job could not be watched: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Start(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`block_on`] did not wait.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOnError {
    /// Not inside a job driven by [`run`]: nothing would resume the job (or there is no job to
    /// pause), and blocking the thread is what `block_on` exists to avoid.
    NotInRun,
    /// Inside such a job, but the job cannot pause now: pausing is blocked
    /// ([`asyncjob::block_pause`]), or the job is unwinding (its `Run` was dropped, or it panics).
    CannotPause,
}

impl fmt::Display for BlockOnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockOnError::NotInRun => {
                f.write_str("block_on called outside a job driven by asyncjob_tokio::run")
            }
            BlockOnError::CannotPause => {
                f.write_str("block_on called where the job cannot pause (blocked or unwinding)")
            }
        }
    }
}

impl std::error::Error for BlockOnError {}

thread_local! {
    /// The wait context of the job that a `Run` on this thread is resuming right now.
    static DRIVING: Cell<*const c_void> = const { Cell::new(std::ptr::null()) };
    /// Paused jobs held by `Run`s of this thread.
    static HELD_JOBS: Cell<usize> = const { Cell::new(0) };
    /// `Run`s waiting for a job of the pool to become free.
    static POOL_WAITERS: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Marks the wait context being driven for the time of a start or resume; restores the previous
/// mark on the way out, by return or by unwind.
struct Driving(*const c_void);

impl Driving {
    fn enter(ctx: &WaitCtx) -> Self {
        Driving(DRIVING.with(|d| d.replace(ctx.as_ptr())))
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        let _ = DRIVING.try_with(|d| d.set(self.0));
    }
}

/// Run `f` as an [`asyncjob`] job, to completion, as a future.
///
/// Nothing runs until the future is first polled; the job then starts inside `poll`, and is resumed
/// inside later polls, whenever what it waits on is ready (see the [crate documentation](crate)).
/// The future is `!Send`: poll it on the thread that created it (current-thread runtime, `LocalSet`,
/// `LocalRuntime`). Dropping it cancels the job.
///
/// # Errors
///
/// The future resolves to an [`Error`] when the job could not start, when the pool has no job to
/// give and none will be freed, when the job paused with `STATUS_ERR`, or when its wait fds cannot
/// be watched.
///
/// # Panics
///
/// A panic inside the job propagates out of `poll`. Polling after completion panics.
pub fn run<F, R>(f: F) -> Run<R>
where
    F: FnOnce() -> R + 'static,
    R: 'static,
{
    Run {
        fds: Registry::new(),
        state: State::Start(Box::new(f)),
        ctx: WaitCtx::new(),
        ready_next: false,
        holds_job: false,
        _not_send: PhantomData,
    }
}

enum State<R: 'static> {
    Start(Box<dyn FnOnce() -> R>),
    Paused(Job<R>),
    Done,
}

/// The future returned by [`run`]: a job driven to completion. `!Send`, `Unpin`.
///
/// Dropping it cancels the job: the job's fds leave the reactor first, then the job is dropped,
/// which unwinds it (its destructors and wait-fd cleanups run).
#[must_use = "futures do nothing unless polled"]
pub struct Run<R: 'static> {
    // Field order is drop order: the reactor lets go of the fds before the job ends.
    fds: Registry,
    state: State<R>,
    ctx: WaitCtx,
    /// The job is ready to be resumed on the next poll (what made it ready was already consumed).
    ready_next: bool,
    /// `state` holds a paused job, counted in `HELD_JOBS`.
    holds_job: bool,
    _not_send: PhantomData<*const ()>,
}

impl<R: 'static> fmt::Debug for Run<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Start(_) => "not started",
            State::Paused(_) => "paused",
            State::Done => "done",
        };
        f.debug_struct("Run")
            .field("state", &state)
            .field("registered_fds", &self.fds.len())
            .finish_non_exhaustive()
    }
}

impl<R: 'static> Run<R> {
    /// The job's wait context (the one [`asyncjob::current_wait_ctx`] returns inside it).
    pub fn wait_ctx(&self) -> &WaitCtx {
        &self.ctx
    }

    /// How many fds are registered with tokio's reactor for the job right now.
    pub fn registered_fds(&self) -> usize {
        self.fds.len()
    }

    fn hold_job(&mut self, job: Job<R>) {
        if !self.holds_job {
            self.holds_job = true;
            HELD_JOBS.with(|n| n.set(n.get() + 1));
        }
        self.state = State::Paused(job);
    }

    /// The job is gone (finished, failed, cancelled): let the reactor and the waker go, and wake the
    /// runs waiting for a free job.
    fn release_job(&mut self) {
        self.fds.clear();
        self.ctx.clear_waker();
        if std::mem::replace(&mut self.holds_job, false) {
            let _ = HELD_JOBS.try_with(|n| n.set(n.get() - 1));
            let waiters = POOL_WAITERS
                .try_with(|w| std::mem::take(&mut *w.borrow_mut()))
                .unwrap_or_default();
            for waker in waiters {
                waker.wake();
            }
        }
    }

    /// Cancel the paused job: fds out of the reactor first, then the job is dropped (unwound).
    fn cancel(&mut self) {
        self.fds.clear();
        self.ctx.clear_waker();
        {
            // While it unwinds the job is still driven by this `Run`: a destructor that calls
            // `block_on` learns that it cannot pause, not that it is outside a `run`.
            let _driving = Driving::enter(&self.ctx);
            self.state = State::Done;
        }
        self.release_job();
    }

    /// Register the task's waker with everything that can make the paused job ready, and say whether
    /// something already has.
    fn check_ready(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        self.ctx.set_waker(cx.waker());
        if self.ctx.take_notification() {
            return Ok(true);
        }
        if self.fds.is_empty() && !self.ctx.awaits_notification() {
            return Ok(true);
        }
        self.fds.poll_any_readable(cx)
    }

    /// The job just paused: act on its status and fd changes, then wait for it to become ready.
    fn after_pause(&mut self, cx: &mut Context<'_>) -> Poll<Result<R, Error>> {
        let status = self.ctx.status();
        if status == WaitCtx::STATUS_ERR {
            self.cancel();
            return Poll::Ready(Err(Error::Status));
        }
        if let Err(e) = self.fds.apply_changes(&self.ctx) {
            self.cancel();
            return Poll::Ready(Err(Error::Io(e)));
        }
        let ready = if status == WaitCtx::STATUS_EAGAIN {
            self.ctx.set_status(WaitCtx::STATUS_UNSUPPORTED);
            true
        } else {
            match self.check_ready(cx) {
                Ok(ready) => ready,
                Err(e) => {
                    self.cancel();
                    return Poll::Ready(Err(Error::Io(e)));
                }
            }
        };
        if ready {
            // Resumed on the next poll: one resume per poll, so that other tasks get their turn.
            self.ready_next = true;
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// Queue the task until a `Run` of this thread lets go of its job; an error if none holds one.
fn wait_for_pool(cx: &mut Context<'_>) -> Poll<Error> {
    if HELD_JOBS.with(Cell::get) == 0 {
        return Poll::Ready(Error::NoJobs);
    }
    POOL_WAITERS.with(|w| {
        let mut w = w.borrow_mut();
        if !w.iter().any(|q| q.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
    });
    Poll::Pending
}

impl<R: 'static> Future for Run<R> {
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let paused = match std::mem::replace(&mut this.state, State::Done) {
            State::Done => panic!("`asyncjob_tokio::Run` polled after completion"),
            State::Start(f) => {
                let started = {
                    let _driving = Driving::enter(&this.ctx);
                    asyncjob::start(Some(&this.ctx), f)
                };
                match started {
                    Err(e) => return Poll::Ready(Err(Error::Start(e))),
                    Ok(Started::Finished(r)) => return Poll::Ready(Ok(r)),
                    Ok(Started::NoJobs(f)) => {
                        this.state = State::Start(f);
                        return wait_for_pool(cx).map(Err);
                    }
                    Ok(Started::Paused(job)) => job,
                }
            }
            State::Paused(job) => {
                let ready = std::mem::take(&mut this.ready_next) || {
                    match this.check_ready(cx) {
                        Ok(ready) => ready,
                        Err(e) => {
                            this.state = State::Paused(job);
                            this.cancel();
                            return Poll::Ready(Err(Error::Io(e)));
                        }
                    }
                };
                if !ready {
                    this.state = State::Paused(job);
                    return Poll::Pending;
                }
                let resumed = {
                    let _driving = Driving::enter(&this.ctx);
                    job.resume()
                };
                match resumed {
                    Ok(Resumed::Finished(r)) => {
                        this.release_job();
                        return Poll::Ready(Ok(r));
                    }
                    Ok(Resumed::Paused(job)) => job,
                    Err(e) => {
                        this.state = State::Paused(e.job);
                        this.cancel();
                        return Poll::Ready(Err(Error::Start(e.error)));
                    }
                }
            }
        };
        this.hold_job(paused);
        this.after_pause(cx)
    }
}

impl<R: 'static> Drop for Run<R> {
    fn drop(&mut self) {
        // Out of the reactor before the job's cleanups may close the fds, then the job unwinds.
        self.cancel();
    }
}

/// The waker `block_on` polls its future with: it records the wake for this `block_on` call and
/// notifies the job's notifier, which wakes the task driving the job.
struct JobWaker {
    woken: AtomicBool,
    notifier: asyncjob::Notifier,
}

impl Wake for JobWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.notifier.notify();
    }
}

/// The wait context of the running job, if a [`Run`] drives it.
fn driven_ctx() -> Option<WaitCtx> {
    let ctx = asyncjob::current_wait_ctx()?;
    let driving = DRIVING.try_with(Cell::get).ok()?;
    (driving == ctx.as_ptr()).then_some(ctx)
}

/// Await `fut` from synchronous code running inside a job driven by [`run`], and return its output.
///
/// While `fut` is pending the job pauses (without wait fds, awaiting its notifier), so the thread
/// goes back to the runtime; `fut`'s waker notifies the job, and the job polls `fut` again when it is
/// resumed. `fut` is polled inside the task that drives the job, so it may use the runtime (timers,
/// IO, `spawn_local`). A future that wakes itself while polled (a yield) makes the job pause once
/// and come back on the task's next poll. Calls nest: `fut` may call code that calls `block_on`.
///
/// If the job is cancelled while waiting (its [`Run`] is dropped), `fut` is dropped as the job
/// unwinds.
///
/// While `block_on` waits, the job's own wait fds still count: one that is readable resumes the
/// job, which finds its future still pending and pauses again, on every poll of the task. Code that
/// calls `block_on` should not leave a readable wait fd registered meanwhile.
///
/// # Errors
///
/// [`BlockOnError::NotInRun`] outside a job driven by [`run`] (then `fut` is dropped unpolled), and
/// [`BlockOnError::CannotPause`] where the job cannot pause: pausing blocked by
/// [`asyncjob::block_pause`], or the job unwinding.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output, BlockOnError> {
    let ctx = driven_ctx().ok_or(BlockOnError::NotInRun)?;
    if asyncjob::pause_blocked_count() > 0 || asyncjob::is_cancelling() || std::thread::panicking()
    {
        return Err(BlockOnError::CannotPause);
    }
    let state = Arc::new(JobWaker {
        woken: AtomicBool::new(false),
        notifier: ctx.notifier(),
    });
    let waker = Waker::from(state.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        state.woken.store(false, Ordering::Release);
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        if state.woken.load(Ordering::Acquire) {
            // Woken while being polled: give the runtime a turn (the notifier is marked, so the job
            // comes back on the task's next poll), then poll again.
            state.notifier.notify();
            let _ = ctx.notifier();
            asyncjob::pause();
            continue;
        }
        // Wait for this future's own wake-up: a resume for another reason (an outer `block_on`'s
        // future woken, the job's fds) pauses again. The other wake-up is kept in its own flag.
        while !state.woken.load(Ordering::Acquire) {
            let _ = ctx.notifier();
            asyncjob::pause();
        }
    }
}
