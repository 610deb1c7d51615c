//! A driver for many jobs: it starts them, waits for what their wait contexts say they wait on (fds,
//! notifications), resumes exactly the jobs that are ready and reports how each one ended.
//!
//! The waiting happens in one OS call per turn: `epoll` on Linux, `poll(2)` on other POSIX systems.
//! Windows has no fd to wait on here (its wait "fds" are `HANDLE`s); there the driver waits for
//! notifications only, on a condition variable, and resumes jobs that wait on handles on every turn.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
#[cfg(windows)]
use std::sync::{Mutex, PoisonError};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::job::{Job, ResumeError, Resumed, Started};
use crate::wait_ctx::WaitCtx;

#[cfg(unix)]
mod sys;

#[cfg(unix)]
use std::os::fd::{AsRawFd, RawFd};

/// Names a job spawned on a [`Driver`]: what [`Completion::token`] reports and what
/// [`Driver::cancel`] takes. Tokens are not reused: a slot that a finished job frees gets a new
/// generation, so a stale token names nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct JobToken {
    index: u32,
    generation: u32,
}

impl JobToken {
    /// The driver slot the job occupies (slots are reused by later jobs, with a new generation).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// Why the driver ended a job that had not finished.
#[non_exhaustive]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CancelReason {
    /// The job paused with its wait context's status set to [`WaitCtx::STATUS_ERR`].
    StatusErr,
    /// The job's deadline ([`Driver::spawn_with_deadline`], [`Driver::set_deadline`]) passed.
    Deadline,
}

/// How a job ended.
pub enum Outcome<R> {
    /// It returned this value.
    Finished(R),
    /// It panicked; here is the payload (the job went back to the pool).
    Panicked(Box<dyn Any + Send>),
    /// The driver ended it (its stack was unwound, so everything it owned was dropped).
    Cancelled(CancelReason),
    /// It could not be started or resumed (for example [`Error::NotCapable`]); it was dropped.
    Failed(Error),
}

impl<R> fmt::Debug for Outcome<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Finished(_) => f.write_str("Finished(..)"),
            Outcome::Panicked(_) => f.write_str("Panicked(..)"),
            Outcome::Cancelled(why) => f.debug_tuple("Cancelled").field(why).finish(),
            Outcome::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

/// A job that ended, as [`Driver::completions`] reports it.
pub struct Completion<R> {
    /// The job, as [`Driver::spawn`] named it.
    pub token: JobToken,
    /// How it ended.
    pub outcome: Outcome<R>,
}

impl<R> fmt::Debug for Completion<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("token", &self.token)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// Counters of what a [`Driver`] did, since it was made.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct DriverStats {
    /// Calls to [`Driver::turn`] (refused ones not counted).
    pub turns: u64,
    /// Jobs started (their closure began to run).
    pub starts: u64,
    /// Starts the pool refused (`NoJobs`): the closure was queued, or stayed queued.
    pub starts_refused: u64,
    /// Resumes of paused jobs.
    pub resumes: u64,
}

/// The cross-thread half: where wakers queue the slots whose job was notified, and how they wake
/// the driver.
///
/// The queue is a list threaded through the slots' wakers (`SlotWake::next`), pushed onto with a
/// compare-exchange and taken whole by the driver; atomics only, no `std::sync::Mutex`, so that
/// ThreadSanitizer sees the synchronisation even with an uninstrumented std (ci/step-11). Taking the
/// whole list at once is what makes the push free of ABA trouble.
struct WakeShared {
    /// The most recently queued slot's index + 1; 0 when the list is empty.
    head: AtomicU32,
    signal: Signal,
}

/// Wakes a driver blocked in [`Driver::turn`]: an eventfd (Linux) or a pipe (other POSIX) that the
/// driver waits on along with the jobs' fds; a condition variable on Windows. `pending` makes the
/// many wakes between two turns cost one write.
struct Signal {
    pending: AtomicBool,
    #[cfg(unix)]
    read_fd: RawFd,
    #[cfg(unix)]
    write_fd: RawFd,
    #[cfg(windows)]
    raised: Mutex<bool>,
    #[cfg(windows)]
    cond: std::sync::Condvar,
}

impl Signal {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn eventfd() -> io::Result<Signal> {
        let fd = sys::new_eventfd()?;
        Ok(Signal {
            pending: AtomicBool::new(false),
            read_fd: fd,
            write_fd: fd,
        })
    }

    #[cfg(unix)]
    fn pipe() -> io::Result<Signal> {
        let (read_fd, write_fd) = sys::new_pipe()?;
        Ok(Signal {
            pending: AtomicBool::new(false),
            read_fd,
            write_fd,
        })
    }

    #[cfg(windows)]
    fn condvar() -> Signal {
        Signal {
            pending: AtomicBool::new(false),
            raised: Mutex::new(false),
            cond: std::sync::Condvar::new(),
        }
    }

    fn raise(&self) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        #[cfg(unix)]
        sys::signal_fd(self.write_fd);
        #[cfg(windows)]
        {
            *self.raised.lock().unwrap_or_else(PoisonError::into_inner) = true;
            self.cond.notify_one();
        }
    }

    /// The driver saw the signal: clear it (before draining the wake queue, so that a wake coming
    /// after the drain raises it again).
    #[cfg(unix)]
    fn clear(&self) {
        self.clear_around(|| {});
    }

    /// `clear`, with `between` run between its two steps (for the test of their order). The fd is
    /// emptied before `pending` drops: a raise in between finds `pending` still set and writes
    /// nothing (its wake is already queued, and the queue is drained after this). The other order
    /// let such a raise's byte be read here while `pending` stayed set, so every later raise skipped
    /// its write and the driver slept out each turn's timeout (seen under Valgrind: notify_threads'
    /// poll phase took 30 s a turn).
    #[cfg(unix)]
    fn clear_around(&self, between: impl FnOnce()) {
        sys::drain_fd(self.read_fd);
        between();
        self.pending.store(false, Ordering::SeqCst);
    }

    /// Whether a raise is recorded (for the tests).
    #[cfg(all(test, unix))]
    fn is_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Wait until raised or `timeout` passes; true when it was raised (and is now cleared).
    #[cfg(windows)]
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let guard = self.raised.lock().unwrap_or_else(PoisonError::into_inner);
        let mut guard = match timeout {
            None => self
                .cond
                .wait_while(guard, |raised| !*raised)
                .unwrap_or_else(PoisonError::into_inner),
            Some(t) => {
                self.cond
                    .wait_timeout_while(guard, t, |raised| !*raised)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
        let fired = std::mem::replace(&mut *guard, false);
        if fired {
            self.pending.store(false, Ordering::SeqCst);
        }
        fired
    }
}

#[cfg(unix)]
impl Drop for Signal {
    fn drop(&mut self) {
        sys::close_fd(self.read_fd);
        if self.write_fd != self.read_fd {
            sys::close_fd(self.write_fd);
        }
    }
}

/// The waker of one driver slot, made once with the slot and reused by every job it holds.
struct SlotWake {
    shared: Arc<WakeShared>,
    index: u32,
    queued: AtomicBool,
    /// While queued: the next slot in the list (index + 1, 0 for the end).
    next: AtomicU32,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Pairs with the fence in `Driver::take_woken`: either this swap sees the driver's clearing
        // of `queued` (and queues the slot again), or the driver sees the notification mark that
        // was set before this wake.
        fence(Ordering::SeqCst);
        if self.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        // Only the waker that set `queued` pushes, and the driver reads `next` before it clears
        // `queued`, so `next` is not rewritten while the driver may still follow it.
        let head = &self.shared.head;
        let mut first = head.load(Ordering::Acquire);
        loop {
            self.next.store(first, Ordering::Relaxed);
            // SeqCst, like the driver's take of the list and both sides' use of `pending`: a raise
            // that finds `pending` still set writes nothing, and the driver, clearing `pending`
            // after that, must then find this push when it takes the list.
            match head.compare_exchange_weak(
                first,
                self.index + 1,
                Ordering::SeqCst,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => first = now,
            }
        }
        self.shared.signal.raise();
    }
}

enum SlotState<R: 'static> {
    Free,
    /// Spawned while the pool had no job to give: started when one of the driver's jobs ends.
    Queued(Box<dyn FnOnce() -> R>),
    Paused(Job<R>),
    /// Being started or resumed right now.
    Running,
}

struct Slot<R: 'static> {
    generation: u32,
    state: SlotState<R>,
    ctx: Option<WaitCtx>,
    /// The context of the slot's last job, reset for the next one (see `WaitCtx::recycle`).
    spare_ctx: Option<WaitCtx>,
    wake: Arc<SlotWake>,
    waker: Waker,
    /// The fds registered for this job, one entry per registration.
    #[cfg(unix)]
    fds: Vec<RawFd>,
    deadline: Option<Instant>,
    /// The turn in which this slot was last put on the ready list.
    marked: u64,
}

/// An fd's registrations: which slots wait on it (a slot once per registration).
#[cfg(unix)]
#[derive(Default)]
struct FdEntry {
    watchers: Vec<u32>,
    /// Where the fd sits in `FdTable::registered` while it has watchers.
    pos: usize,
    /// epoll refused it (a regular file, say): it counts as always ready, as `poll` reports it.
    unpollable: bool,
}

#[cfg(unix)]
#[derive(Default)]
struct FdTable {
    /// Indexed by fd number.
    entries: Vec<FdEntry>,
    /// The fds with at least one watcher.
    registered: Vec<RawFd>,
}

#[cfg(unix)]
enum Os {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Epoll {
        epfd: RawFd,
        events: Vec<sys::EpollEvent>,
    },
    Poll {
        pollfds: Vec<sys::PollFd>,
    },
}

#[cfg(unix)]
impl Drop for Os {
    fn drop(&mut self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Os::Epoll { epfd, .. } = self {
            sys::close_fd(*epfd);
        }
    }
}

/// On Windows the driver waits on its [`Signal`] alone.
#[cfg(windows)]
struct Os;

/// epoll's `data` for the driver's own signal fd.
#[cfg(any(target_os = "linux", target_os = "android"))]
const SIGNAL_DATA: u64 = u64::MAX;

/// How many epoll events one turn takes at most (level-triggered: the rest come next turn).
#[cfg(any(target_os = "linux", target_os = "android"))]
const EVENTS_PER_TURN: usize = 256;

/// Drives many jobs of result type `R` from one thread: see [the crate documentation](crate#driving-many-jobs).
///
/// `Driver` is `!Send` (its jobs belong to the thread that started them):
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<asyncjob::Driver<()>>();
/// ```
pub struct Driver<R: 'static> {
    slots: Vec<Slot<R>>,
    free: Vec<u32>,
    /// Jobs queued or paused.
    live: usize,
    paused: usize,
    queued: usize,
    /// Queued jobs in spawn order (stale tokens are skipped).
    queue: VecDeque<JobToken>,
    /// Jobs to resume on the next turn without waiting (EAGAIN, pauses with nothing to wait on,
    /// notifications seen at the pause).
    run_next: Vec<JobToken>,
    /// This turn's jobs to resume.
    ready: Vec<JobToken>,
    epoch: u64,
    #[cfg(unix)]
    fds: FdTable,
    #[cfg(unix)]
    added: Vec<RawFd>,
    #[cfg(unix)]
    deleted: Vec<RawFd>,
    #[cfg(unix)]
    ready_fds: Vec<RawFd>,
    shared: Arc<WakeShared>,
    woken: Vec<u32>,
    os: Os,
    completions: Vec<Completion<R>>,
    /// Slots with a deadline.
    deadlines: usize,
    /// A job went back to the pool since the queue was last tried.
    may_start: bool,
    stats: DriverStats,
    /// The first panic of user code the driver ran on its own account (fd cleanups, destructors of
    /// cancelled jobs), resumed once the driver's state is consistent again.
    cleanup_panic: Option<Box<dyn Any + Send>>,
}

impl<R: 'static> fmt::Debug for Driver<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("live", &self.live)
            .field("paused", &self.paused)
            .field("queued", &self.queued)
            .field("completions", &self.completions.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(unix)]
fn ms_ceil(d: Duration) -> i32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(i32::MAX as u128) as i32
}

impl<R: 'static> Driver<R> {
    /// A driver with no jobs: epoll and an eventfd on Linux, `poll(2)` and a pipe on other POSIX
    /// systems, a condition variable on Windows.
    ///
    /// # Errors
    ///
    /// The OS refused the fds (`EMFILE`, say).
    pub fn new() -> io::Result<Self> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let signal = Signal::eventfd()?;
            let epfd = sys::new_epoll()?;
            let os = Os::Epoll {
                epfd,
                events: vec![sys::EpollEvent { events: 0, data: 0 }; EVENTS_PER_TURN],
            };
            if let Err(errno) = sys::epoll_add(epfd, signal.read_fd, SIGNAL_DATA) {
                return Err(io::Error::from_raw_os_error(errno));
            }
            Ok(Self::with_os(signal, os))
        }
        #[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
        {
            Self::with_poll()
        }
        #[cfg(windows)]
        {
            Ok(Self::with_os(Signal::condvar(), Os))
        }
    }

    /// A driver that waits with `poll(2)`, as on POSIX systems other than Linux. On Linux this is
    /// for testing that backend, and for fds epoll refuses; [`new`](Self::new) is the better choice.
    ///
    /// # Errors
    ///
    /// The OS refused the pipe.
    #[cfg(unix)]
    pub fn with_poll() -> io::Result<Self> {
        Ok(Self::with_os(
            Signal::pipe()?,
            Os::Poll {
                pollfds: Vec::new(),
            },
        ))
    }

    fn with_os(signal: Signal, os: Os) -> Self {
        Driver {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            paused: 0,
            queued: 0,
            queue: VecDeque::new(),
            run_next: Vec::new(),
            ready: Vec::new(),
            epoch: 0,
            #[cfg(unix)]
            fds: FdTable::default(),
            #[cfg(unix)]
            added: Vec::new(),
            #[cfg(unix)]
            deleted: Vec::new(),
            #[cfg(unix)]
            ready_fds: Vec::new(),
            shared: Arc::new(WakeShared {
                head: AtomicU32::new(0),
                signal,
            }),
            woken: Vec::new(),
            os,
            completions: Vec::new(),
            deadlines: 0,
            may_start: false,
            stats: DriverStats::default(),
            cleanup_panic: None,
        }
    }

    /// Start a job running `f`, with a wait context of its own; it runs until it first pauses or
    /// finishes (a job that finishes at once is reported by [`completions`](Self::completions)).
    /// When the thread's pool has no job to give ([`Started::NoJobs`]), or jobs spawned earlier are
    /// still queued, `f` is queued and started, in spawn order, as the driver's jobs end.
    ///
    /// # Errors
    ///
    /// [`Error::Nested`] inside a job, [`Error::NotCapable`] or [`Error::ThreadSetup`] when the
    /// thread cannot run jobs; `f` is dropped.
    pub fn spawn<F>(&mut self, f: F) -> Result<JobToken, Error>
    where
        F: FnOnce() -> R + 'static,
    {
        self.spawn_inner(None, f)
    }

    /// [`spawn`](Self::spawn) with a deadline: if the job has not ended by `deadline`, the first
    /// [`turn`](Self::turn) after it cancels the job and reports [`CancelReason::Deadline`].
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    pub fn spawn_with_deadline<F>(&mut self, deadline: Instant, f: F) -> Result<JobToken, Error>
    where
        F: FnOnce() -> R + 'static,
    {
        self.spawn_inner(Some(deadline), f)
    }

    fn spawn_inner<F>(&mut self, deadline: Option<Instant>, f: F) -> Result<JobToken, Error>
    where
        F: FnOnce() -> R + 'static,
    {
        if crate::current_job().is_some() {
            return Err(Error::Nested);
        }
        let index = self.alloc_slot();
        self.set_slot_deadline(index, deadline);
        let token = self.token(index);
        if self.queued > 0 {
            // Behind the jobs already queued (the queue may also hold cancelled ones: skipped).
            self.enqueue(index, Box::new(f));
            return Ok(token);
        }
        let ctx = self.slots[index]
            .ctx
            .clone()
            .expect("a live slot has a context");
        let started = panic::catch_unwind(AssertUnwindSafe(|| crate::start(Some(&ctx), f)));
        drop(ctx);
        let result = match started {
            Ok(Ok(Started::Paused(job))) => {
                self.stats.starts += 1;
                self.after_pause(index, job);
                Ok(token)
            }
            Ok(Ok(Started::Finished(value))) => {
                self.stats.starts += 1;
                self.end(index, Some(Outcome::Finished(value)));
                Ok(token)
            }
            Ok(Ok(Started::NoJobs(f))) => {
                self.stats.starts_refused += 1;
                self.enqueue(index, Box::new(f));
                Ok(token)
            }
            Ok(Err(error)) => {
                self.end(index, None);
                Err(error)
            }
            Err(payload) => {
                self.stats.starts += 1;
                self.end(index, Some(Outcome::Panicked(payload)));
                Ok(token)
            }
        };
        self.rethrow_cleanup_panic();
        result
    }

    /// Wait for jobs to become ready, at most `timeout` (`None`: until one is), and resume every job
    /// that is ready: its fds are readable, it was notified, it asked to be resumed on the next turn
    /// (status [`WaitCtx::STATUS_EAGAIN`], or a pause with nothing to wait on). Jobs whose deadline
    /// passed are cancelled first; queued jobs start as jobs end. Returns how many jobs ran (were
    /// resumed or started). How jobs ended is in [`completions`](Self::completions).
    ///
    /// It returns at once, without waiting, when no job is paused (nothing could become ready).
    ///
    /// # Errors
    ///
    /// [`Error::Nested`] inside a job: nothing is done.
    ///
    /// # Panics
    ///
    /// When an fd cleanup or the destructor of a cancelled job panics, the first such panic is
    /// resumed here at the end of the turn, with the driver consistent. Jobs' own panics are
    /// reported as [`Outcome::Panicked`] instead.
    pub fn turn(&mut self, timeout: Option<Duration>) -> Result<usize, Error> {
        if crate::current_job().is_some() {
            return Err(Error::Nested);
        }
        self.stats.turns += 1;
        self.epoch += 1;
        let mut ran = 0;
        if self.paused == 0 && self.queued > 0 {
            // Nothing of ours can end and free a job: the pool may have room by now.
            self.may_start = true;
        }
        if self.may_start {
            ran += self.start_queued();
        }

        let mut wait = if !self.run_next.is_empty() || self.paused == 0 {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        if self.deadlines > 0 && wait != Some(Duration::ZERO) {
            if let Some(nearest) = self.nearest_deadline() {
                let left = nearest.saturating_duration_since(Instant::now());
                wait = Some(wait.map_or(left, |w| w.min(left)));
            }
        }
        let wait_until = wait.and_then(|w| Instant::now().checked_add(w));
        loop {
            self.wait(wait);

            let mut run_next = std::mem::take(&mut self.run_next);
            for token in run_next.drain(..) {
                if let Some(index) = self.live_index(token) {
                    self.mark(index);
                }
            }
            self.run_next = run_next;
            #[cfg(unix)]
            for i in 0..self.ready_fds.len() {
                let fd = self.ready_fds[i] as usize;
                let Some(entry) = self.fds.entries.get(fd) else {
                    continue;
                };
                for &watcher in &entry.watchers {
                    mark(
                        &mut self.slots,
                        &mut self.ready,
                        self.epoch,
                        watcher as usize,
                    );
                }
            }
            self.take_woken();

            // A wake-up with nothing to run (the eventfd written by a notification whose job an
            // earlier turn already took) is not the end of the wait: wait out the rest of it.
            if !self.ready.is_empty() || wait == Some(Duration::ZERO) || self.deadlines > 0 {
                break;
            }
            if let Some(until) = wait_until {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                wait = Some(left);
            }
        }

        if self.deadlines > 0 {
            let now = Instant::now();
            for index in 0..self.slots.len() {
                let slot = &self.slots[index];
                if slot.deadline.is_some_and(|d| d <= now)
                    && matches!(slot.state, SlotState::Queued(_) | SlotState::Paused(_))
                {
                    self.end(index, Some(Outcome::Cancelled(CancelReason::Deadline)));
                }
            }
        }

        let mut i = 0;
        while i < self.ready.len() {
            let token = self.ready[i];
            i += 1;
            let Some(index) = self.live_index(token) else {
                continue;
            };
            if !matches!(self.slots[index].state, SlotState::Paused(_)) {
                continue;
            }
            self.resume_slot(index);
            ran += 1;
            if self.may_start {
                ran += self.start_queued();
            }
        }
        self.ready.clear();
        self.rethrow_cleanup_panic();
        Ok(ran)
    }

    /// Turn until every job has ended, each turn waiting at most `timeout_per_turn`; returns how
    /// many turns it took. The completions stay to be drained (they pile up meanwhile). Jobs queued
    /// while the pool is full of jobs that are not this driver's are retried on every turn, without
    /// waiting.
    ///
    /// # Errors
    ///
    /// As [`turn`](Self::turn).
    pub fn run(&mut self, timeout_per_turn: Option<Duration>) -> Result<u64, Error> {
        let mut turns = 0;
        while self.live > 0 {
            self.turn(timeout_per_turn)?;
            turns += 1;
        }
        Ok(turns)
    }

    /// Take the reports of the jobs that ended, oldest first. The buffer keeps its capacity, so
    /// draining it every turn allocates nothing.
    pub fn completions(&mut self) -> std::vec::Drain<'_, Completion<R>> {
        self.completions.drain(..)
    }

    /// Cancel a job: deregister its fds, then drop it (a paused job's stack unwinds, so everything
    /// its closure owns is dropped; a queued closure is dropped), then let go of its wait context
    /// (whose fd cleanups run if nobody else holds it). No completion is reported. False when the
    /// token names no live job.
    ///
    /// # Panics
    ///
    /// Resumes the first panic of the destructors or cleanups it ran, after the driver is consistent.
    pub fn cancel(&mut self, token: JobToken) -> bool {
        let Some(index) = self.live_index(token) else {
            return false;
        };
        self.end(index, None);
        self.rethrow_cleanup_panic();
        true
    }

    /// Set or remove a job's deadline; false when the token names no live job.
    pub fn set_deadline(&mut self, token: JobToken, deadline: Option<Instant>) -> bool {
        let Some(index) = self.live_index(token) else {
            return false;
        };
        self.set_slot_deadline(index, deadline);
        true
    }

    /// The job's wait context (a clone of the handle), while it is live.
    pub fn wait_ctx(&self, token: JobToken) -> Option<WaitCtx> {
        self.live_index(token)
            .and_then(|index| self.slots[index].ctx.clone())
    }

    /// Whether the token names a job that is queued or paused.
    pub fn contains(&self, token: JobToken) -> bool {
        self.live_index(token).is_some()
    }

    /// Jobs queued or paused.
    pub fn len(&self) -> usize {
        self.live
    }

    /// No job is queued or paused.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Jobs queued because the pool had no job to give.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// What the driver did so far.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    fn token(&self, index: usize) -> JobToken {
        JobToken {
            index: index as u32,
            generation: self.slots[index].generation,
        }
    }

    fn live_index(&self, token: JobToken) -> Option<usize> {
        let slot = self.slots.get(token.index())?;
        (slot.generation == token.generation
            && matches!(slot.state, SlotState::Queued(_) | SlotState::Paused(_)))
        .then_some(token.index())
    }

    fn alloc_slot(&mut self) -> usize {
        let index = match self.free.pop() {
            Some(index) => index as usize,
            None => {
                let index = self.slots.len();
                let wake = Arc::new(SlotWake {
                    shared: self.shared.clone(),
                    index: index as u32,
                    queued: AtomicBool::new(false),
                    next: AtomicU32::new(0),
                });
                let waker = Waker::from(wake.clone());
                self.slots.push(Slot {
                    generation: 0,
                    state: SlotState::Free,
                    ctx: None,
                    spare_ctx: None,
                    wake,
                    waker,
                    #[cfg(unix)]
                    fds: Vec::new(),
                    deadline: None,
                    marked: 0,
                });
                // Room for every slot on every list, so that turns never grow them.
                let n = self.slots.len();
                self.free.reserve(n);
                self.run_next.reserve(2 * n);
                self.ready.reserve(2 * n);
                self.woken.reserve(n);
                index
            }
        };
        let slot = &mut self.slots[index];
        slot.state = SlotState::Running;
        // The slot's previous context when it could be recycled: spawning allocates nothing then.
        slot.ctx = Some(slot.spare_ctx.take().unwrap_or_default());
        self.live += 1;
        index
    }

    fn enqueue(&mut self, index: usize, f: Box<dyn FnOnce() -> R>) {
        self.slots[index].state = SlotState::Queued(f);
        self.queued += 1;
        let token = self.token(index);
        self.queue.push_back(token);
    }

    fn set_slot_deadline(&mut self, index: usize, deadline: Option<Instant>) {
        let slot = &mut self.slots[index];
        match (slot.deadline.is_some(), deadline.is_some()) {
            (false, true) => self.deadlines += 1,
            (true, false) => self.deadlines -= 1,
            _ => {}
        }
        slot.deadline = deadline;
    }

    fn nearest_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter(|s| !matches!(s.state, SlotState::Free))
            .filter_map(|s| s.deadline)
            .min()
    }

    fn mark(&mut self, index: usize) {
        mark(&mut self.slots, &mut self.ready, self.epoch, index);
    }

    /// Wait for the OS (or the signal) and collect the ready fds; clear the signal if it fired.
    #[cfg(unix)]
    fn wait(&mut self, timeout: Option<Duration>) {
        let timeout_ms = timeout.map_or(-1, ms_ceil);
        self.ready_fds.clear();
        let signal_fd = self.shared.signal.read_fd;
        let fired = match &mut self.os {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Os::Epoll { epfd, events } => {
                let n = sys::epoll_wait_into(*epfd, events, timeout_ms)
                    .unwrap_or_else(|e| panic!("asyncjob driver: epoll_wait failed: {e}"));
                let mut fired = false;
                for event in &events[..n] {
                    let data = event.data;
                    if data == SIGNAL_DATA {
                        fired = true;
                    } else {
                        self.ready_fds.push(data as RawFd);
                    }
                }
                fired
            }
            Os::Poll { pollfds } => {
                pollfds.clear();
                pollfds.push(sys::PollFd {
                    fd: signal_fd,
                    events: sys::POLLIN,
                    revents: 0,
                });
                for &fd in &self.fds.registered {
                    pollfds.push(sys::PollFd {
                        fd,
                        events: sys::POLLIN,
                        revents: 0,
                    });
                }
                sys::poll_fds(pollfds, timeout_ms)
                    .unwrap_or_else(|e| panic!("asyncjob driver: poll failed: {e}"));
                for p in &pollfds[1..] {
                    if p.revents != 0 {
                        self.ready_fds.push(p.fd);
                    }
                }
                pollfds[0].revents != 0
            }
        };
        if fired {
            self.shared.signal.clear();
        }
    }

    #[cfg(windows)]
    fn wait(&mut self, timeout: Option<Duration>) {
        let _ = &self.os;
        self.shared.signal.wait(timeout);
    }

    /// Mark the jobs whose notifier woke their slot's waker and whose notification is there.
    fn take_woken(&mut self) {
        // The whole list at once; it runs newest first, so it is walked into `woken` and that is
        // read backwards, oldest first.
        let mut next = self.shared.head.swap(0, Ordering::SeqCst);
        while next != 0 {
            let index = next - 1;
            self.woken.push(index);
            next = self.slots[index as usize].wake.next.load(Ordering::Relaxed);
        }
        for i in (0..self.woken.len()).rev() {
            let index = self.woken[i] as usize;
            let slot = &self.slots[index];
            slot.wake.queued.store(false, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if let (SlotState::Paused(_), Some(ctx)) = (&slot.state, &slot.ctx) {
                if ctx.take_notification() {
                    self.mark(index);
                }
            }
        }
        self.woken.clear();
    }

    /// Start queued jobs until the pool refuses.
    fn start_queued(&mut self) -> usize {
        let mut started = 0;
        while let Some(&token) = self.queue.front() {
            let index = token.index();
            let slot = &mut self.slots[index];
            if slot.generation != token.generation || !matches!(slot.state, SlotState::Queued(_)) {
                self.queue.pop_front();
                continue;
            }
            let SlotState::Queued(f) = std::mem::replace(&mut slot.state, SlotState::Running)
            else {
                unreachable!()
            };
            let ctx = slot.ctx.clone().expect("a live slot has a context");
            let result = panic::catch_unwind(AssertUnwindSafe(|| crate::start(Some(&ctx), f)));
            drop(ctx);
            if let Ok(Ok(Started::NoJobs(f))) = result {
                self.slots[index].state = SlotState::Queued(f);
                self.stats.starts_refused += 1;
                break;
            }
            self.queue.pop_front();
            self.queued -= 1;
            started += 1;
            self.stats.starts += 1;
            match result {
                Ok(Ok(Started::Paused(job))) => self.after_pause(index, job),
                Ok(Ok(Started::Finished(value))) => {
                    self.end(index, Some(Outcome::Finished(value)));
                }
                Ok(Ok(Started::NoJobs(_))) => unreachable!(),
                Ok(Err(error)) => self.end(index, Some(Outcome::Failed(error))),
                Err(payload) => self.end(index, Some(Outcome::Panicked(payload))),
            }
        }
        self.may_start = false;
        started
    }

    fn resume_slot(&mut self, index: usize) {
        let SlotState::Paused(job) =
            std::mem::replace(&mut self.slots[index].state, SlotState::Running)
        else {
            unreachable!("only paused jobs are resumed")
        };
        self.paused -= 1;
        self.stats.resumes += 1;
        match panic::catch_unwind(AssertUnwindSafe(move || job.resume())) {
            Ok(Ok(Resumed::Paused(job))) => self.after_pause(index, job),
            Ok(Ok(Resumed::Finished(value))) => self.end(index, Some(Outcome::Finished(value))),
            Ok(Err(ResumeError { job, error })) => {
                self.slots[index].state = SlotState::Paused(job);
                self.paused += 1;
                self.end(index, Some(Outcome::Failed(error)));
            }
            Err(payload) => self.end(index, Some(Outcome::Panicked(payload))),
        }
    }

    /// Resume the job at the next turn, and make the driver's fd readable so that an outer loop
    /// sleeping on it comes back (also after a `spawn`, which has no turn of its own).
    fn retry_next_turn(&mut self, token: JobToken) {
        self.run_next.push(token);
        self.shared.signal.raise();
    }

    /// The job paused: apply its context's fd changes and decide what it waits for.
    fn after_pause(&mut self, index: usize, job: Job<R>) {
        self.slots[index].state = SlotState::Paused(job);
        self.paused += 1;
        let ctx = self.slots[index]
            .ctx
            .clone()
            .expect("a live slot has a context");
        #[cfg(unix)]
        self.apply_fd_changes(index, &ctx);
        let status = ctx.status();
        if status == WaitCtx::STATUS_ERR {
            drop(ctx);
            self.end(index, Some(Outcome::Cancelled(CancelReason::StatusErr)));
            return;
        }
        let token = self.token(index);
        if status == WaitCtx::STATUS_EAGAIN {
            // Consumed: it asks for one retry, not for every later pause.
            ctx.set_status(WaitCtx::STATUS_UNSUPPORTED);
            self.retry_next_turn(token);
            return;
        }
        #[cfg(unix)]
        let (has_fds, unpollable) = {
            let slot = &self.slots[index];
            let unpollable = slot.fds.iter().any(|&fd| {
                self.fds
                    .entries
                    .get(fd as usize)
                    .is_some_and(|e| e.unpollable)
            });
            (!slot.fds.is_empty(), unpollable)
        };
        // Windows: the driver cannot wait on handles, so a job waiting on them is tried each turn.
        #[cfg(windows)]
        let (has_fds, unpollable) = (ctx.fd_count() > 0, ctx.fd_count() > 0);
        if unpollable {
            self.retry_next_turn(token);
        } else if ctx.awaits_notification() {
            // Registered before looking, so a notification is either seen here or wakes the slot.
            ctx.set_waker(&self.slots[index].waker);
            if ctx.take_notification() {
                self.retry_next_turn(token);
            }
        } else if !has_fds {
            self.retry_next_turn(token);
        }
    }

    /// Apply the round's changes: deletions first, then additions, so that an fd number closed and
    /// reused in one round ends registered (for the new file).
    #[cfg(unix)]
    fn apply_fd_changes(&mut self, index: usize, ctx: &WaitCtx) {
        let (added, deleted) = ctx.changed_counts();
        if added == 0 && deleted == 0 {
            return;
        }
        self.added.resize(added, -1);
        self.deleted.resize(deleted, -1);
        ctx.copy_changed_fds(Some(&mut self.added), Some(&mut self.deleted));
        for i in 0..deleted {
            let fd = self.deleted[i];
            self.unwatch(index, fd);
        }
        for i in 0..added {
            let fd = self.added[i];
            self.watch(index, fd);
        }
    }

    #[cfg(unix)]
    fn watch(&mut self, index: usize, fd: RawFd) {
        let Ok(n) = usize::try_from(fd) else {
            return; // a negative fd cannot be waited on
        };
        if self.fds.entries.len() <= n {
            self.fds.entries.resize_with(n + 1, FdEntry::default);
        }
        self.slots[index].fds.push(fd);
        let entry = &mut self.fds.entries[n];
        entry.watchers.push(index as u32);
        if entry.watchers.len() > 1 {
            return;
        }
        entry.pos = self.fds.registered.len();
        self.fds.registered.push(fd);
        entry.unpollable = match &self.os {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Os::Epoll { epfd, .. } => match sys::epoll_add(*epfd, fd, fd as u64) {
                Ok(()) => false,
                // Already there: a registration left by a file whose number came back.
                Err(sys::EEXIST) => false,
                // EPERM (a regular file, which is always ready), EBADF (not open): let the job
                // find out on its next run.
                Err(_) => true,
            },
            Os::Poll { .. } => false,
        };
    }

    #[cfg(unix)]
    fn unwatch(&mut self, index: usize, fd: RawFd) {
        let slot_fds = &mut self.slots[index].fds;
        let Some(at) = slot_fds.iter().position(|&f| f == fd) else {
            return;
        };
        slot_fds.swap_remove(at);
        let n = fd as usize;
        let entry = &mut self.fds.entries[n];
        let Some(at) = entry.watchers.iter().position(|&w| w as usize == index) else {
            return;
        };
        entry.watchers.swap_remove(at);
        if !entry.watchers.is_empty() {
            return;
        }
        let pos = entry.pos;
        let unpollable = std::mem::replace(&mut entry.unpollable, false);
        self.fds.registered.swap_remove(pos);
        if let Some(&moved) = self.fds.registered.get(pos) {
            self.fds.entries[moved as usize].pos = pos;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let (Os::Epoll { epfd, .. }, false) = (&self.os, unpollable) {
            // EBADF / ENOENT: the fd was closed already (which removed it), perhaps reused.
            let _ = sys::epoll_del(*epfd, fd);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = unpollable; // poll has nothing to deregister
    }

    /// End a job: deregister its fds, drop the job (a paused one unwinds) or its queued closure,
    /// let go of its context, free the slot and report `outcome`.
    fn end(&mut self, index: usize, outcome: Option<Outcome<R>>) {
        let token = self.token(index);
        #[cfg(unix)]
        while let Some(&fd) = self.slots[index].fds.last() {
            self.unwatch(index, fd);
        }
        let slot = &mut self.slots[index];
        let ctx = slot.ctx.take();
        if let Some(ctx) = &ctx {
            ctx.clear_waker();
        }
        let state = std::mem::replace(&mut slot.state, SlotState::Free);
        slot.generation = slot.generation.wrapping_add(1);
        match &state {
            SlotState::Paused(_) => {
                self.paused -= 1;
                self.may_start = true;
            }
            SlotState::Running => self.may_start = true,
            SlotState::Queued(_) => self.queued -= 1,
            SlotState::Free => unreachable!("ending a free slot"),
        }
        self.set_slot_deadline(index, None);
        self.live -= 1;
        self.free.push(index as u32);
        if let Some(outcome) = outcome {
            self.completions.push(Completion { token, outcome });
        }
        // The job (unwound) and then its context (fd cleanups): user code, contained.
        self.contain(move || drop(state));
        match ctx {
            Some(ctx) if ctx.recycle() => self.slots[index].spare_ctx = Some(ctx),
            ctx => self.contain(move || drop(ctx)),
        }
    }

    fn contain(&mut self, user_code: impl FnOnce()) {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(user_code)) {
            match self.cleanup_panic {
                None => self.cleanup_panic = Some(payload),
                Some(_) => drop(panic::catch_unwind(AssertUnwindSafe(move || drop(payload)))),
            }
        }
    }

    fn rethrow_cleanup_panic(&mut self) {
        if let Some(payload) = self.cleanup_panic.take() {
            panic::resume_unwind(payload);
        }
    }
}

fn mark<R>(slots: &mut [Slot<R>], ready: &mut Vec<JobToken>, epoch: u64, index: usize) {
    let slot = &mut slots[index];
    if slot.marked == epoch || !matches!(slot.state, SlotState::Paused(_)) {
        return;
    }
    slot.marked = epoch;
    ready.push(JobToken {
        index: index as u32,
        generation: slot.generation,
    });
}

impl<R: 'static> Drop for Driver<R> {
    /// Cancels every job (deregistering its fds first) and drops the queued closures.
    fn drop(&mut self) {
        for index in 0..self.slots.len() {
            if !matches!(self.slots[index].state, SlotState::Free) {
                self.end(index, None);
            }
        }
        if let Some(payload) = self.cleanup_panic.take() {
            if !std::thread::panicking() {
                panic::resume_unwind(payload);
            }
        }
    }
}

/// The driver's own fd, to wait on in another event loop: readable when [`Driver::turn`] has work.
///
/// With epoll (Linux, [`Driver::new`]) this is the epoll fd, readable when a job's fd is ready, a job
/// was notified or a job waits for the next turn. With the `poll(2)` backend (other POSIX systems,
/// [`Driver::with_poll`]) it is the read end of the wake pipe: readable for notifications and
/// next-turn work only, not for the jobs' own fds.
#[cfg(unix)]
impl<R: 'static> AsRawFd for Driver<R> {
    fn as_raw_fd(&self) -> RawFd {
        match &self.os {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Os::Epoll { epfd, .. } => *epfd,
            Os::Poll { .. } => self.shared.signal.read_fd,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Whether the signal's fd can be read now.
    fn readable(signal: &Signal) -> bool {
        let mut fds = [sys::PollFd {
            fd: signal.read_fd,
            events: sys::POLLIN,
            revents: 0,
        }];
        sys::poll_fds(&mut fds, 0).expect("poll") > 0
    }

    /// A raise that lands while the driver clears the signal must leave it either readable or not
    /// pending: pending with nothing to read means no later raise writes, and the driver sleeps
    /// out every timeout.
    #[test]
    fn a_raise_during_the_clear_is_not_lost() {
        #[allow(unused_mut)]
        let mut signals = vec![Signal::pipe().expect("pipe")];
        #[cfg(any(target_os = "linux", target_os = "android"))]
        signals.push(Signal::eventfd().expect("eventfd"));
        for signal in signals {
            signal.raise();
            assert!(readable(&signal));
            signal.clear_around(|| signal.raise());
            assert!(
                readable(&signal) || !signal.is_pending(),
                "pending with an empty fd after a raise during the clear"
            );
            // And the next raise gets through (the driver clears only a signal it saw).
            if readable(&signal) {
                signal.clear();
            }
            signal.raise();
            assert!(readable(&signal), "a raise after the clear is not seen");
        }
    }
}
