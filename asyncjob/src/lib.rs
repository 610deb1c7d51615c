//! OpenSSL's ASYNC job API in safe Rust: cooperative fibers with a per-thread job pool, and wait
//! contexts that tell an application when a paused job can go on.
//!
//! # Jobs
//!
//! A *job* is a closure that runs on a stack of its own. [`start`] runs it at once, on the calling
//! thread, until it either returns ([`Started::Finished`]) or calls [`pause`]
//! ([`Started::Paused`]). A paused job is a [`Job`] handle; [`Job::resume`] continues it where it
//! paused. Code deep inside a job (a crypto provider waiting for hardware, say) pauses without its
//! callers knowing: nothing has to be `async`.
//!
//! ```
//! use asyncjob::{Resumed, Started};
//!
//! let started = asyncjob::start(None, || {
//!     asyncjob::pause(); // back to the caller of start()
//!     6 * 7
//! })
//! .unwrap();
//! let Started::Paused(job) = started else { unreachable!() };
//! match job.resume().unwrap() {
//!     Resumed::Finished(answer) => assert_eq!(answer, 42),
//!     Resumed::Paused(_) => unreachable!(),
//! }
//! ```
//!
//! # The pool
//!
//! Each thread has its own pool of jobs, made with [`init_thread`] (`ASYNC_init_thread`) or
//! automatically, without a size limit, by the first [`start`]. A job that finishes goes back to the
//! pool with its stack and is the first one handed out again (last in, first out), so a warm pool
//! starts jobs without allocating. When the pool is at its `max_size` and every job is paused,
//! [`start`] gives the closure back in [`Started::NoJobs`]. [`cleanup_thread`] frees the pool; the
//! thread's exit does so too.
//!
//! # Pausing
//!
//! [`pause`] inside a job returns control to whoever started or resumed it; outside a job it does
//! nothing. [`block_pause`] returns a guard that makes [`pause`] return at once until it is dropped;
//! as in OpenSSL the count is per thread, so a job that finishes while blocked leaves the next jobs of
//! the thread blocked.
//!
//! # Wait contexts
//!
//! A [`WaitCtx`] (`ASYNC_WAIT_CTX`) goes with a job from its start to its end. Code inside the job
//! registers the fds it waits on with [`WaitCtx::set_wait_fd`], then pauses; the application polls
//! [`WaitCtx::all_fds`] or [`WaitCtx::changed_fds`] and resumes the job when one is ready. The change
//! lists cover one *round*, which ends each time a paused job using the context is resumed.
//!
//! # Waking a job from another thread
//!
//! An engine that completes work on a thread of its own (an accelerator's polling thread, a signing
//! client) wakes the job with a [`Notifier`]: [`current_notifier`] inside the job (or
//! [`WaitCtx::notifier`]) gives a `Send + Sync` handle, the job hands it over and pauses, and
//! [`Notifier::notify`] marks the wait context and wakes the [`Waker`](std::task::Waker) that the
//! driver registered with [`WaitCtx::set_waker`]. The mark stays until the driver takes it
//! ([`WaitCtx::take_notification`]), so a notification that comes before the pause is not lost.
//! OpenSSL's callback and status ([`WaitCtx::set_callback`], [`WaitCtx::set_status`]) are unchanged.
//!
//! # Driving many jobs
//!
//! A [`Driver`] owns many jobs of one result type and runs them from one thread, the way nginx or
//! HAProxy run thousands of paused jobs from one event loop. [`Driver::spawn`] starts a job with a
//! wait context of its own (a closure the pool cannot take at once, [`Started::NoJobs`], is queued and
//! started when one of the driver's jobs ends); [`Driver::turn`] waits, at most for its timeout, until
//! some paused job is ready, resumes exactly the ready jobs, and [`Driver::completions`] reports how
//! jobs ended: [`Outcome::Finished`] with the value, [`Outcome::Panicked`] with the payload,
//! [`Outcome::Cancelled`] or [`Outcome::Failed`].
//!
//! After every pause the driver reads the job's wait context:
//! - The fds added and deleted in the round are applied, deletions first, to one epoll set (Linux)
//!   or `poll(2)` list (other POSIX systems). Fds are counted, so an fd two jobs share is registered
//!   once and wakes both, and a number closed and reused within a round ends up registered for the
//!   new file. Readiness is level-triggered: an fd already readable at the pause counts as ready.
//! - A context that handed out its [`Notifier`] in the round waits for [`Notifier::notify`]; a
//!   notification that came before the pause resumes the job on the next turn.
//! - [`WaitCtx::STATUS_EAGAIN`] (which the driver then resets), and a pause with neither fds nor a
//!   notifier, resume the job on the next turn; [`WaitCtx::STATUS_ERR`] cancels it.
//!
//! Cancelling ([`Driver::cancel`], a deadline from [`Driver::spawn_with_deadline`],
//! `STATUS_ERR`, dropping the driver) deregisters the job's fds first, then drops the job, which
//! unwinds its stack, then lets go of its context, whose fd cleanups may close the fds. Turns that
//! resume already-spawned jobs allocate nothing. On POSIX systems the driver is itself an fd
//! ([`AsRawFd`](std::os::fd::AsRawFd)), readable when a turn has work, so it can sit inside another
//! event loop. On Windows, where wait "fds" are `HANDLE`s, the driver waits for notifications only
//! and tries jobs that wait on handles on every turn.
//!
//! ```
//! use std::time::Duration;
//! use asyncjob::{Driver, Outcome};
//!
//! let mut driver = Driver::new().unwrap();
//! let (tx, rx) = std::sync::mpsc::channel();
//! driver
//!     .spawn(move || {
//!         // An engine would hand the notifier to its own thread and pause until notified.
//!         let notifier = asyncjob::current_notifier().unwrap();
//!         tx.send(notifier).unwrap();
//!         asyncjob::pause();
//!         "signed"
//!     })
//!     .unwrap();
//! let notifier = rx.recv().unwrap();
//! std::thread::spawn(move || notifier.notify());
//! while !driver.is_empty() {
//!     driver.turn(Some(Duration::from_secs(5))).unwrap();
//! }
//! let done: Vec<_> = driver.completions().collect();
//! assert!(matches!(done[0].outcome, Outcome::Finished("signed")));
//! ```
//!
//! # Threads
//!
//! A job belongs to the thread that started it. [`Job`] and [`WaitCtx`] are neither `Send` nor `Sync`,
//! so the compiler enforces what OpenSSL only documents (it crashes when a job finishes on another
//! thread). Neither compiles:
//!
//! ```compile_fail
//! fn send<T: Send>() {}
//! send::<asyncjob::Job<()>>();
//! ```
//!
//! ```compile_fail
//! fn sync<T: Sync>() {}
//! sync::<asyncjob::WaitCtx>();
//! ```
//!
//! # Stacks
//!
//! Stacks come from a guarded, lazily committed allocator ([`DEFAULT_STACK_SIZE`] usable bytes, a
//! 128 KiB inaccessible gap below): a stack overflow inside a job ends the process with a message instead of
//! corrupting memory, and a paused job costs only the pages it touched. [`set_stack_allocator`]
//! (`ASYNC_set_mem_functions`) replaces the allocator before the first stack is made.
//!
//! # Panics and dropped jobs
//!
//! A panic inside a job is caught at the root of its stack and resumed in the caller of
//! [`start`]/[`Job::resume`]; the job returns to the pool. Dropping a paused [`Job`] unwinds its stack,
//! so everything its closure owns is dropped, and returns the job to the pool.
//!
//! The rules at the edges, each of them tested:
//! - While a job unwinds (from a panic, or because its handle was dropped), [`pause`] returns at
//!   once: a destructor that pauses cannot carry the thread's panic state to the resumer.
//! - Once the thread is exiting (its thread-local destructors have begun), a paused job never runs
//!   again: dropping it leaks it (counted by [`leaked_jobs`]), and starting or resuming is refused
//!   with [`Error::ThreadSetup`] once asyncjob's own state is gone. On glibc the drop recognises every
//!   thread-local destructor; elsewhere, those that run after asyncjob's own (thread-locals first
//!   used before the thread's first job).
//! - A [`SwitchHook`] that panics, and `pthread_exit` or `pthread_cancel` inside a job, abort the
//!   process with a message: neither can unwind soundly past a job's stack.
//!
//! # Deliberate deviations from OpenSSL
//!
//! Wherever OpenSSL's behaviour is defined, asyncjob does the same. Where OpenSSL crashes, corrupts
//! its state or leaks, asyncjob stays safe:
//!
//! | OpenSSL 3.0 / 3.6 | asyncjob |
//! |---|---|
//! | Resuming a job started with no wait context: SIGSEGV | pauses and resumes normally |
//! | `ret == NULL` when the job finishes: SIGSEGV | the result is a return value |
//! | Nested `ASYNC_start_job` inside a job: error or bogus FINISH, then SIGSEGV | [`Error::Nested`]; the outer job carries on |
//! | Job finished on another thread than the one it first ran on: SIGSEGV | [`Job`] is `!Send` |
//! | Resume after `ASYNC_cleanup_thread`: use-after-free | works; the job joins the thread's next pool |
//! | Stale (finished) handle passed back: double push into the pool, later jobs aliased | impossible: [`Job::resume`] consumes the handle |
//! | `ASYNC_WAIT_CTX_free` while a paused job uses it: use-after-free | the job keeps its own handle; the context lives until the job ends |
//! | More than 32 KiB of stack inside a job: silent heap corruption | 128 KiB guard gap: clean abort with a message |
//! | `ASYNC_cleanup_thread` with jobs paused: they leak | [`Error::JobsOutstanding`]; the jobs stay valid |
//! | `ASYNC_init_thread` twice: the old pool and its jobs leak | the old idle jobs are freed |
//! | `init_thread(max > INT_MAX)`: accepted by 3.0, rejected by 3.6 | rejected, as the newest release does |

#![deny(unsafe_op_in_unsafe_fn)]

mod driver;
mod error;
mod fiber;
mod hook;
mod job;
mod notify;
mod pool;
mod stack;
mod teardown;
mod thread;
mod thread_word;
mod wait_ctx;

/// Resume and pause in two halves around a switch that the caller makes itself: for the C face's
/// entry points, which must not return right after a switch. Not a public API.
#[doc(hidden)]
pub mod split {
    pub use crate::fiber::{RESUMED_DONE, RawSwitch, switch_back, switch_into};
    pub use crate::hook::installed as hook_installed;
    pub use crate::job::{ResumeInFlight, pause_begin, pause_end, resume_end, resume_end_paused};
}

pub use driver::{CancelReason, Completion, Driver, DriverStats, JobToken, Outcome};
pub use error::Error;
pub use hook::{SwitchHook, set_switch_hook};
pub use job::{
    Job, JobId, PauseBlock, ResumeError, Resumed, Started, backend, block_pause, current_job,
    current_notifier, current_wait_ctx, is_cancelling, is_capable, leaked_jobs, pause,
    pause_blocked_count, start, unblock_pause,
};
pub use notify::Notifier;
pub use pool::PoolStats;
pub use stack::{
    DEFAULT_STACK_SIZE, MIN_STACK_GUARD, StackAllocator, StackMemory, set_stack_allocator,
    stack_allocator_locked,
};
pub use thread::{cleanup_thread, init_thread, pool_stats};
pub use wait_ctx::{AsyncFd, FdCleanup, WaitCallback, WaitCtx, WaitKey};

/// End the process at once with a message, for states that no unwind can leave soundly.
#[cold]
fn abort_with(why: &str) -> ! {
    eprintln!("asyncjob: {why}; aborting");
    std::process::abort()
}
