//! A thread's job pool: idle jobs ready for reuse, last in first out, and the limit on how many the
//! pool creates (`ASYNC_init_thread`'s sizes). The functions that act on the calling thread's pool
//! are in `thread.rs`.

use std::cell::Cell;
use std::ptr::NonNull;

use crate::fiber::{Fiber, FiberBox};
use crate::wait_ctx::WaitCtx;

/// What a job keeps between its runs, besides its stack: the payload of a job's fiber.
pub(crate) struct JobData {
    pub(crate) wait_ctx: JobWaitCtx,
    /// The switch hook's saved word (the job's default `OSSL_LIB_CTX` in the C library).
    pub(crate) hook_word: Cell<usize>,
    /// The state of the thread that made the job. A job never leaves that thread (pools are per
    /// thread and a paused `Job` is not `Send`), so a resume finds the thread's state here, saving
    /// the thread-local lookup (a call into the dynamic linker when asyncjob is in a shared library).
    /// Untyped so that the pool does not name the thread layer above it: the thread layer stores it
    /// and `job.rs` reads it, as a `&'static ThreadState`.
    pub(crate) owner: NonNull<()>,
}

impl JobData {
    /// The data of a new job made by the thread whose state is `owner`.
    pub(crate) fn new(owner: NonNull<()>) -> JobData {
        JobData {
            wait_ctx: JobWaitCtx::default(),
            hook_word: Cell::new(0),
            owner,
        }
    }
}

/// A job's wait context. A `Cell`, not a `RefCell`: it is read on every pause, where a borrow flag
/// cost more than the read, and written only while its job is not running (before a start, when
/// the job is done or leaked), which `get` relies on.
#[derive(Default)]
pub(crate) struct JobWaitCtx(Cell<Option<WaitCtx>>);

impl JobWaitCtx {
    /// Store `ctx`, returning the context held before.
    #[inline]
    pub(crate) fn replace(&self, ctx: Option<WaitCtx>) -> Option<WaitCtx> {
        self.0.replace(ctx)
    }

    /// Take the context out, leaving none.
    #[inline]
    pub(crate) fn take(&self) -> Option<WaitCtx> {
        self.0.take()
    }

    /// A new handle on the context.
    pub(crate) fn cloned(&self) -> Option<WaitCtx> {
        // Cloning a handle runs no user code, so nothing can see the slot empty meanwhile.
        let ctx = self.0.take();
        let copy = ctx.clone();
        self.0.set(ctx);
        copy
    }

    /// The context, borrowed.
    ///
    /// # Safety
    ///
    /// Neither `replace` nor `take` may be called on this slot while the reference lives.
    #[inline]
    pub(crate) unsafe fn get(&self) -> Option<&WaitCtx> {
        // SAFETY: the only writers are `replace` and `take`, excluded by the caller for the life of
        // the reference; `Cell` is not `Sync`, so no other thread can write.
        unsafe { (*self.0.as_ptr()).as_ref() }
    }
}

/// A job's fiber.
pub(crate) type JobFiber = Fiber<JobData>;
/// The owner of a job's fiber.
pub(crate) type JobBox = FiberBox<JobData>;

/// A snapshot of the calling thread's pool, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// The most jobs this pool creates; 0 means no limit.
    pub max_size: usize,
    /// How many jobs this pool has created (OpenSSL's `curr_size`). Jobs that finish after the pool
    /// was replaced are taken in without being counted, as in OpenSSL.
    pub created: usize,
    /// How many jobs wait in the pool, ready for reuse.
    pub idle: usize,
}

pub(crate) struct Pool {
    /// Last in, first out: the job that finished last is the next one handed out.
    idle: Vec<JobBox>,
    created: usize,
    max_size: usize,
}

impl Pool {
    /// A pool of at most `max_size` jobs (0: no limit) holding `idle` jobs made for it.
    pub(crate) fn new(max_size: usize, idle: Vec<JobBox>) -> Pool {
        Pool {
            created: idle.len(),
            idle,
            max_size,
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            max_size: self.max_size,
            created: self.created,
            idle: self.idle.len(),
        }
    }

    /// The idle job that finished last.
    #[inline]
    pub(crate) fn take_idle(&mut self) -> Option<JobBox> {
        self.idle.pop()
    }

    /// Whether the pool may create another job.
    #[inline]
    pub(crate) fn may_create(&self) -> bool {
        self.max_size == 0 || self.created < self.max_size
    }

    /// Count a job created for this pool.
    pub(crate) fn count_created(&mut self) {
        self.created += 1;
    }

    /// Take in a job that is done, for reuse.
    #[inline]
    pub(crate) fn give_back(&mut self, job: JobBox) {
        self.idle.push(job);
    }
}
