//! The per-thread job pool (`ASYNC_init_thread` / `ASYNC_cleanup_thread`).

use crate::error::Error;
use crate::fiber::{self, Fiber, FiberBox};
use crate::job::JobData;

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
    /// Last in, first out: the job that finished last is the next one handed out. On the heap because
    /// the fiber shim and `JobId` keep each job's address.
    idle: Vec<FiberBox>,
    created: usize,
    max_size: usize,
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
    let mut idle = Vec::with_capacity(init_size);
    for _ in 0..init_size {
        match Fiber::create(JobData::default()) {
            Some(fiber) => idle.push(fiber),
            None => break,
        }
    }
    let created = idle.len();
    let t = fiber::thread();
    if !t.may_make_pool() {
        return Err(Error::ThreadSetup);
    }
    let replaced = t.pool().borrow_mut().replace(Pool {
        idle,
        created,
        max_size,
    });
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
    let t = fiber::thread();
    t.reset_pause_block();
    let old = t.pool().borrow_mut().take();
    // Freed outside the borrow.
    drop(old);
    let outstanding = t.outstanding();
    if outstanding > 0 {
        return Err(Error::JobsOutstanding { count: outstanding });
    }
    fiber::release_thread_context();
    Ok(())
}

/// The calling thread's pool, or `None` when it has none.
pub fn pool_stats() -> Option<PoolStats> {
    fiber::thread().pool().borrow().as_ref().map(|p| PoolStats {
        max_size: p.max_size,
        created: p.created,
        idle: p.idle.len(),
    })
}

/// What taking a job from the pool gave.
pub(crate) enum Take {
    Job(FiberBox),
    /// The pool is at its limit and every job is in use (`ASYNC_NO_JOBS`).
    Exhausted,
}

/// A job from the thread's pool, creating the pool `(0, 0)` or a new job when needed.
#[inline]
pub(crate) fn take_job(t: &fiber::ThreadState) -> Result<Take, Error> {
    {
        let mut slot = t.pool().borrow_mut();
        let pool = match slot.as_mut() {
            Some(pool) => pool,
            None => {
                if !t.may_make_pool() {
                    return Err(Error::ThreadSetup);
                }
                slot.insert(Pool {
                    idle: Vec::new(),
                    created: 0,
                    max_size: 0,
                })
            }
        };
        if let Some(fiber) = pool.idle.pop() {
            return Ok(Take::Job(fiber));
        }
        if pool.max_size != 0 && pool.created >= pool.max_size {
            return Ok(Take::Exhausted);
        }
    }
    // Created outside the pool borrow: a custom stack allocator is user code.
    let Some(fiber) = Fiber::create(JobData::default()) else {
        return Ok(Take::Exhausted);
    };
    if let Some(pool) = t.pool().borrow_mut().as_mut() {
        pool.created += 1;
    }
    Ok(Take::Job(fiber))
}

/// Put a finished job back into the thread's current pool (LIFO), or free it when there is none.
#[inline]
pub(crate) fn give_back(t: &fiber::ThreadState, fiber: FiberBox) {
    let leftover = match t.pool().borrow_mut().as_mut() {
        Some(pool) => {
            pool.idle.push(fiber);
            None
        }
        None => Some(fiber),
    };
    // Freed outside the borrow.
    drop(leftover);
}
