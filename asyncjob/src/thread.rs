//! A thread's job state: its pool, the job running on it, its pause-block count, and the end of all
//! of it when the thread exits (`ASYNC_init_thread`, `ASYNC_cleanup_thread`).

use std::cell::{Cell, RefCell};
use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use crate::error::Error;
use crate::fiber::{self, Resumer};
use crate::pool::{JobBox, JobData, JobFiber, Pool, PoolStats};

/// The per-thread state every job operation touches, kept in one thread-local with a constant
/// initialiser and no destructor: each operation reaches it once (inside a shared library every
/// thread-local lookup is a call), and it stays reachable through the whole of thread teardown.
pub(crate) struct ThreadState {
    /// The job running on this thread, or null on the thread's own context.
    running: Cell<*const JobFiber>,
    /// The thread's own context once prepared.
    thread_fiber: Cell<Option<Resumer>>,
    /// `ASYNC_block_pause` depth: per thread, not per job, as in OpenSSL.
    pause_blocked: Cell<u32>,
    /// Jobs handed out paused and not yet finished or dropped.
    outstanding: Cell<usize>,
    /// The thread's job pool. `ManuallyDrop` keeps the thread-local free of a destructor; the pool is
    /// dropped at thread exit by `ThreadExit` instead.
    pool: ManuallyDrop<RefCell<Option<Pool>>>,
    /// Whether `pool` holds a pool, readable without a borrow.
    has_pool: Cell<bool>,
    /// The idle job that finished last, kept in front of the pool's vector so that the next start
    /// takes it, and the next finish puts it back, without borrowing the pool. It belongs to the
    /// pool: set only while there is one, counted in its idle jobs, freed with it. `ManuallyDrop`
    /// for the same reason as `pool`.
    hot: ManuallyDrop<Cell<Option<JobBox>>>,
    /// Set once the thread is known to be exiting: `ThreadExit` has run, or a paused job was dropped
    /// from inside the thread's thread-local destructors. From then on no job runs again on this
    /// thread (a paused job may borrow a thread-local that is already destroyed), the thread is never
    /// prepared again and no new pool is made (it would never be freed).
    exiting: Cell<bool>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            running: Cell::new(ptr::null()),
            thread_fiber: Cell::new(None),
            pause_blocked: Cell::new(0),
            outstanding: Cell::new(0),
            pool: ManuallyDrop::new(RefCell::new(None)),
            has_pool: Cell::new(false),
            hot: ManuallyDrop::new(Cell::new(None)),
            exiting: Cell::new(false),
        }
    };
    /// Marks the thread as exiting and frees its pool; registered when the first pool is made.
    static THREAD_EXIT: ThreadExit = const { ThreadExit };
}

struct ThreadExit;

impl Drop for ThreadExit {
    fn drop(&mut self) {
        let t = thread();
        t.exiting.set(true);
        let pool = t.take_pool();
        drop(pool);
        t.release_context();
    }
}

/// The calling thread's job state.
#[cfg(not(feature = "initial-exec-tls"))]
#[inline(always)]
pub(crate) fn thread() -> &'static ThreadState {
    let state: *const ThreadState = THREAD.with(|t| t as *const ThreadState);
    // SAFETY: THREAD has a constant initialiser and no destructor, so its storage is valid for the
    // whole life of the thread. The reference cannot outlive the thread: `ThreadState` is not `Sync`
    // (it is all `Cell`s), so `&ThreadState` is not `Send` and can reach no other thread, and nothing
    // of this thread runs after it has exited.
    unsafe { &*state }
}

#[cfg(feature = "initial-exec-tls")]
crate::thread_word! {
    /// The address of this thread's `THREAD`, or 0 before the thread's first lookup: read instead of
    /// `THREAD` itself, which in a shared library costs a `__tls_get_addr` call on every job operation.
    struct ThreadStateAddr = "asyncjob_thread_state_addr";
}

/// The calling thread's job state.
#[cfg(feature = "initial-exec-tls")]
#[inline(always)]
pub(crate) fn thread() -> &'static ThreadState {
    let mut state = ThreadStateAddr::get() as *const ThreadState;
    if state.is_null() {
        state = thread_first_lookup();
    }
    // SAFETY: `state` is this thread's `THREAD` (the word holds nothing else, and is per thread): see
    // the other `thread` for why a `'static` reference to it is sound.
    unsafe { &*state }
}

#[cfg(feature = "initial-exec-tls")]
#[cold]
#[inline(never)]
fn thread_first_lookup() -> *const ThreadState {
    let state = THREAD.with(|t| t as *const ThreadState);
    ThreadStateAddr::set(state as usize);
    state
}

impl ThreadState {
    /// The thread's own context, to start or resume a job from. Jobs are not started or resumed
    /// from inside a job ([`Error::Nested`]).
    #[inline]
    pub(crate) fn resumer(&self) -> Result<Resumer, Error> {
        if !self.running.get().is_null() {
            return Err(Error::Nested);
        }
        match self.thread_fiber.get() {
            Some(ctx) => Ok(ctx),
            None => self.prepare().ok_or(Error::ThreadSetup),
        }
    }

    /// The thread's own context if it is prepared (whether or not a job runs now).
    #[inline]
    pub(crate) fn prepared_context(&self) -> Option<Resumer> {
        self.thread_fiber.get()
    }

    #[cold]
    fn prepare(&self) -> Option<Resumer> {
        if self.exiting.get() {
            // The thread's fiber context was released for good; preparing it again would leak it.
            return None;
        }
        let ctx = fiber::prepare_thread()?;
        self.thread_fiber.set(Some(ctx));
        Some(ctx)
    }

    /// Undo the thread preparation (Windows converts the thread back), when called on the thread's
    /// own context.
    pub(crate) fn release_context(&self) {
        if self.running.get().is_null() && self.thread_fiber.take().is_some() {
            // SAFETY: no job runs (`running` is null), so this is the thread's own context; the
            // thread is prepared again before any job is started or resumed from it (`resumer`).
            unsafe { fiber::release_thread() };
        }
    }

    /// The context that is running now (the thread's own, or a job's), as a resumer for another
    /// fiber.
    pub(crate) fn running_context(&self) -> Option<Resumer> {
        self.with_running(|running| match running {
            Some(job) => Some(job.as_resumer()),
            None => self.thread_fiber.get().or_else(|| self.prepare()),
        })
    }

    /// Run `f` with the running job's fiber, if any.
    #[inline]
    pub(crate) fn with_running<T>(&self, f: impl FnOnce(Option<&JobFiber>) -> T) -> T {
        let running = self.running.get();
        if running.is_null() {
            return f(None);
        }
        // SAFETY: `running` is set only while that fiber runs (`run_in`), and a running fiber cannot
        // be freed: its owner (a job handle consumed by `resume`, or a local of `start`) is out of
        // reach of the code on its stack.
        f(Some(unsafe { &*running }))
    }

    /// Mark `job` as the running job for the duration of `switch`, which switches into it from the
    /// thread's own context, where no job runs: none is marked running afterwards. (Cheaper than
    /// `run_in`, which keeps and restores the job running before.)
    #[inline(always)]
    pub(crate) fn run_from_thread<T>(&self, job: &JobFiber, switch: impl FnOnce() -> T) -> T {
        self.enter_from_thread(job);
        let out = switch();
        self.leave_to_thread();
        out
    }

    /// The first half of `run_from_thread`, for a switch made elsewhere: `job` is marked running.
    #[inline(always)]
    pub(crate) fn enter_from_thread(&self, job: &JobFiber) {
        debug_assert!(self.running.get().is_null(), "switching from inside a job");
        self.running.set(job as *const JobFiber);
    }

    /// The second half of `run_from_thread`: control is back on the thread's own context.
    #[inline(always)]
    pub(crate) fn leave_to_thread(&self) {
        self.running.set(ptr::null());
    }

    /// Mark `job` as the running job for the duration of `switch`, which switches into it from the
    /// context running now (the thread's own or a job's), which is marked running again afterwards.
    #[inline(always)]
    pub(crate) fn run_in<T>(&self, job: &JobFiber, switch: impl FnOnce() -> T) -> T {
        let previous = self.running.replace(job as *const JobFiber);
        let out = switch();
        self.running.set(previous);
        out
    }

    /// Whether a job is running on this thread.
    #[inline]
    pub(crate) fn in_job(&self) -> bool {
        !self.running.get().is_null()
    }

    /// The thread's pause-block depth.
    #[inline]
    pub(crate) fn pause_blocked(&self) -> u32 {
        self.pause_blocked.get()
    }

    /// Change the pause-block depth if a job is running (block and unblock are ignored outside).
    #[inline]
    pub(crate) fn adjust_pause_block(&self, block: bool) {
        if self.in_job() {
            let depth = self.pause_blocked.get();
            self.pause_blocked.set(if block {
                depth.saturating_add(1)
            } else {
                depth.saturating_sub(1)
            });
        }
    }

    /// Count jobs handed out paused: +1 when one pauses, -1 when it is resumed or dropped.
    #[inline]
    pub(crate) fn count_outstanding(&self, delta: isize) {
        self.outstanding
            .set(self.outstanding.get().wrapping_add_signed(delta));
    }

    /// Whether a pool may still be made on this thread, registering its release at thread exit.
    fn may_make_pool(&self) -> bool {
        if self.exiting.get() {
            return false;
        }
        THREAD_EXIT.try_with(|_| ()).is_ok()
    }

    /// Whether the thread is exiting, so that a paused job must never run again. Checked before a
    /// dropped job is unwound: besides asyncjob's own exit marker, this looks for the thread's
    /// thread-local destructors on the call stack, because thread-locals registered after asyncjob's
    /// state are destroyed before that marker is set, and the job may borrow one of them.
    #[cold]
    pub(crate) fn exiting_for_drop(&self) -> bool {
        if !self.exiting.get() && crate::teardown::in_thread_local_destructors() {
            self.exiting.set(true);
        }
        self.exiting.get()
    }

    /// A job from the thread's pool, creating the pool `(0, 0)` or a new job when needed; `None`
    /// when the pool is at its limit and every job is in use, or no stack could be had.
    #[inline(always)]
    pub(crate) fn take_job(&self) -> Result<Option<JobBox>, Error> {
        if let Some(job) = self.hot.take() {
            return Ok(Some(job));
        }
        self.take_job_from_pool()
    }

    fn take_job_from_pool(&self) -> Result<Option<JobBox>, Error> {
        {
            let mut slot = self.pool.borrow_mut();
            let pool = match slot.as_mut() {
                Some(pool) => pool,
                None => {
                    if !self.may_make_pool() {
                        return Err(Error::ThreadSetup);
                    }
                    self.has_pool.set(true);
                    slot.insert(Pool::new(0, Vec::new()))
                }
            };
            if let Some(job) = pool.take_idle() {
                return Ok(Some(job));
            }
            if !pool.may_create() {
                return Ok(None);
            }
        }
        // Created outside the pool borrow: a custom stack allocator is user code.
        let Some(job) = JobFiber::create(JobData::new(NonNull::from(self).cast())) else {
            return Ok(None);
        };
        if let Some(pool) = self.pool.borrow_mut().as_mut() {
            pool.count_created();
        }
        Ok(Some(job))
    }

    /// Put a finished job back into the thread's current pool (LIFO), or free it when there is none.
    #[inline(always)]
    pub(crate) fn give_back(&self, job: JobBox) {
        if !self.has_pool.get() {
            // Freed: no pool to take it in.
            drop(job);
            return;
        }
        if let Some(older) = self.hot.replace(Some(job)) {
            self.give_back_to_pool(older);
        }
    }

    /// Put a finished job into the pool's vector, below the hot job.
    fn give_back_to_pool(&self, job: JobBox) {
        let leftover = match self.pool.borrow_mut().as_mut() {
            Some(pool) => {
                pool.give_back(job);
                None
            }
            None => Some(job),
        };
        // Freed outside the borrow.
        drop(leftover);
    }

    /// Take the thread's pool, with its hot job, and leave none.
    fn take_pool(&self) -> Option<(Pool, Option<JobBox>)> {
        let pool = self.pool.borrow_mut().take();
        self.has_pool.set(false);
        let hot = self.hot.take();
        pool.map(|p| (p, hot))
    }
}

/// Create the calling thread's job pool (`ASYNC_init_thread`).
///
/// `max_size` is the most jobs the pool will ever create (0: no limit) and `init_size` how many to
/// create now. The sizes are checked as OpenSSL 3.6 checks them: `init_size > max_size`,
/// `max_size == 0` with `init_size > 0`, and `max_size > i32::MAX` give
/// [`Error::InvalidPoolSize`]. If a job cannot be created up front (no stack memory), creation stops
/// there and the call still succeeds, as in OpenSSL.
///
/// Calling it again replaces the pool with a new one; the idle jobs of the old pool are freed (OpenSSL
/// leaks them). Jobs that are paused keep running and, when they finish, join the new pool without
/// counting against its `max_size`, exactly as in OpenSSL.
pub fn init_thread(max_size: usize, init_size: usize) -> Result<(), Error> {
    if init_size > max_size || (max_size == 0 && init_size > 0) || max_size > i32::MAX as usize {
        return Err(Error::InvalidPoolSize {
            max_size,
            init_size,
        });
    }
    if !fiber::is_capable() {
        return Err(Error::NotCapable);
    }
    let t = thread();
    let mut idle = Vec::with_capacity(init_size);
    for _ in 0..init_size {
        match JobFiber::create(JobData::new(NonNull::from(t).cast())) {
            Some(job) => idle.push(job),
            None => break,
        }
    }
    if !t.may_make_pool() {
        return Err(Error::ThreadSetup);
    }
    let replaced = t.take_pool();
    *t.pool.borrow_mut() = Some(Pool::new(max_size, idle));
    t.has_pool.set(true);
    // Freed outside the borrow.
    drop(replaced);
    Ok(())
}

/// Free the calling thread's pool and its idle jobs (`ASYNC_cleanup_thread`), and reset the thread's
/// pause-block counter.
///
/// Paused jobs are never freed from under their handles: when some are outstanding, this does the
/// same cleanup and then reports [`Error::JobsOutstanding`]. Those jobs stay valid; when they finish,
/// their stacks go to whatever pool the thread has then (a new one is made automatically by the next
/// [`start`](crate::start)), or are freed if it has none. Calling it with no pool does nothing.
pub fn cleanup_thread() -> Result<(), Error> {
    let t = thread();
    t.pause_blocked.set(0);
    let old = t.take_pool();
    // Freed outside the borrow.
    drop(old);
    let outstanding = t.outstanding.get();
    if outstanding > 0 {
        return Err(Error::JobsOutstanding { count: outstanding });
    }
    t.release_context();
    Ok(())
}

/// The calling thread's pool, or `None` when it has none.
pub fn pool_stats() -> Option<PoolStats> {
    let t = thread();
    let hot = t.hot.take();
    let hot_idle = usize::from(hot.is_some());
    t.hot.set(hot);
    t.pool.borrow().as_ref().map(|p| {
        let mut stats = p.stats();
        stats.idle += hot_idle;
        stats
    })
}
