//! Job stacks: the default guarded allocator and the process-wide hook to replace it.

use std::fmt;
use std::ptr::{self, NonNull};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, Ordering};

use asyncjob_sys as sys;

use crate::error::Error;

/// Usable bytes of a stack from the default allocator: 256 KiB.
///
/// That is enough for ordinary Rust code inside a job, including a panic that prints a full
/// backtrace. The memory is reserved, not committed: a job pays only for the pages it touches (a job
/// that pauses straight away costs one page), and an inaccessible gap of 128 KiB below the stack
/// turns an overflow into a clean abort with a message instead of silent corruption, even when one
/// frame jumps up to 128 KiB past the stack's end: Rust frames are always probed page by page, and C
/// frames larger than the gap need `-fstack-clash-protection`. OpenSSL's own stacks are 32 KiB of
/// heap with no guard.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The least guard region a [`StackAllocator`] must leave inaccessible below each stack: one 4 KiB page.
/// The default allocator leaves far more (see [`DEFAULT_STACK_SIZE`]).
pub const MIN_STACK_GUARD: usize = 4096;

/// Memory handed out by a [`StackAllocator`]: `size` bytes starting at `base` (the lowest address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackMemory {
    /// Lowest address of the memory.
    pub base: NonNull<u8>,
    /// Length in bytes.
    pub size: usize,
}

/// A source of job stacks, installed with [`set_stack_allocator`] (`ASYNC_set_mem_functions`).
///
/// # Safety
///
/// `allocate` must return memory that is readable and writable for `size` bytes, that nothing else
/// uses until it is passed back to `release`, and that stays valid until then.
///
/// **A guard region below the stack.** Stacks grow down, towards `base`. Directly below `base` there
/// must be at least [`MIN_STACK_GUARD`] bytes that fault on any access (a `PROT_NONE` mapping, say),
/// for as long as the stack is handed out: a job that outgrows its stack then faults there instead of
/// writing over whatever lies below. Safe Rust code inside a job relies on it, because unbounded
/// recursion is safe Rust; Rust probes each frame larger than a page, so it always reaches the guard.
/// C code reaches it only frame by frame: a C frame larger than the guard (a big array or `alloca`)
/// can jump it unless the C code is built with `-fstack-clash-protection`.
///
/// An allocator that cannot give a guard region, such as one built on C `malloc` (what OpenSSL's
/// `ASYNC_set_mem_functions` accepts), may be installed only by code that guarantees that no job
/// ever outgrows its stack; that is the burden OpenSSL puts on its C callers.
pub unsafe trait StackAllocator: Send + Sync + 'static {
    /// A new stack, or `None` when none can be had (the job is then not created: `start` reports
    /// [`Started::NoJobs`](crate::Started::NoJobs), pre-creation in `init_thread` stops). The allocator
    /// chooses the size, as the C allocator may rewrite `*num`.
    fn allocate(&self) -> Option<StackMemory>;
    /// Take back a stack that `allocate` returned, once its job is destroyed.
    fn release(&self, stack: StackMemory);
}

/// The allocator fixed for the life of the process at the first stack allocation.
pub(crate) enum Allocator<'a> {
    Default,
    Custom(&'a dyn StackAllocator),
}

impl fmt::Debug for Allocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allocator::Default => f.write_str("Default"),
            Allocator::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// The process's allocator: replaceable until first used, then fixed for ever.
static ALLOCATOR: FixedOnUse<Box<dyn StackAllocator>> = FixedOnUse::new();

/// A value that may be set and replaced until it is first used, and is fixed from then on: either a
/// custom value or, if none was set, the default. The fixed value is published through an atomic
/// pointer of this crate (not `OnceLock`), so that ThreadSanitizer sees the release and the acquire
/// even with an uninstrumented std.
struct FixedOnUse<T> {
    pending: Mutex<Option<T>>,
    /// Null until fixed; then a leaked `Option<T>` that lives for the rest of the process.
    fixed: AtomicPtr<Option<T>>,
}

impl<T> FixedOnUse<T> {
    const fn new() -> Self {
        FixedOnUse {
            pending: Mutex::new(None),
            fixed: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Set (or replace) the value; refused once it was used.
    fn set(&self, value: T) -> Result<(), T> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_fixed() {
            return Err(value);
        }
        *pending = Some(value);
        Ok(())
    }

    fn is_fixed(&self) -> bool {
        !self.fixed.load(Ordering::Acquire).is_null()
    }

    /// The value in force, fixing it on first use; `None` for the default.
    fn get(&self) -> Option<&T> {
        let mut fixed = self.fixed.load(Ordering::Acquire);
        if fixed.is_null() {
            // The pending value is taken and published under the lock: a `set` either comes before
            // and is taken, or comes after and sees the value fixed. Never accepted and then ignored.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            fixed = self.fixed.load(Ordering::Acquire);
            if fixed.is_null() {
                fixed = Box::into_raw(Box::new(pending.take()));
                self.fixed.store(fixed, Ordering::Release);
            }
        }
        // SAFETY: a non-null pointer was published once, under the lock, from `Box::into_raw`, and
        // is never freed or written again.
        unsafe { (*fixed).as_ref() }
    }
}

impl<T> Drop for FixedOnUse<T> {
    fn drop(&mut self) {
        let fixed = *self.fixed.get_mut();
        if !fixed.is_null() {
            // SAFETY: made by `Box::into_raw` in `get`; `&mut self` proves no borrow from `get` is
            // alive. (The process's own instance is a static and is never dropped.)
            drop(unsafe { Box::from_raw(fixed) });
        }
    }
}

/// Install the allocator every job stack of the process will come from (`ASYNC_set_mem_functions`).
///
/// This works only until the first stack is allocated, in any thread: by the first
/// [`start`](crate::start) that creates a job, or by [`init_thread`](crate::init_thread) pre-creating
/// one. After that it fails with [`Error::AllocatorLocked`], for ever, as in OpenSSL. On Windows the
/// operating system owns fiber stacks and this fails with [`Error::Unsupported`].
pub fn set_stack_allocator(allocator: Box<dyn StackAllocator>) -> Result<(), Error> {
    if !uses_caller_stacks() {
        return Err(Error::Unsupported);
    }
    ALLOCATOR
        .set(allocator)
        .map_err(|_refused| Error::AllocatorLocked)
}

/// Whether the fiber backend runs fibers on stacks that asyncjob provides (false with Windows
/// Fibers, whose stacks the operating system owns).
pub(crate) fn uses_caller_stacks() -> bool {
    // SAFETY: a pure query with no preconditions.
    unsafe { sys::asyncjob_fiber_uses_caller_stack() != 0 }
}

/// True once a job stack has been allocated in this process, so that the allocator can no longer be
/// changed.
pub fn stack_allocator_locked() -> bool {
    ALLOCATOR.is_fixed()
}

/// The process's allocator, fixed on first use.
pub(crate) fn allocator() -> Allocator<'static> {
    match ALLOCATOR.get() {
        Some(custom) => Allocator::Custom(custom.as_ref()),
        None => Allocator::Default,
    }
}

#[cfg(test)]
mod tests {
    use super::FixedOnUse;
    use std::sync::Barrier;

    /// `set` racing the first `get`: whatever `set` accepted is what `get` fixes. Before the fix the
    /// pending value was taken under the lock but published after it, so a `set` in between was
    /// accepted and then ignored.
    #[test]
    fn a_value_accepted_by_set_is_never_ignored() {
        let mut ignored = 0;
        for _ in 0..2000 {
            let cell = FixedOnUse::<u32>::new();
            let barrier = Barrier::new(2);
            let (last_accepted, fixed) = std::thread::scope(|s| {
                let setter = s.spawn(|| {
                    barrier.wait();
                    let mut last = None;
                    for v in 1.. {
                        match cell.set(v) {
                            Ok(()) => last = Some(v),
                            Err(_) => return last,
                        }
                    }
                    unreachable!()
                });
                barrier.wait();
                let fixed = cell.get().copied();
                (setter.join().unwrap(), fixed)
            });
            if last_accepted.is_some() && fixed != last_accepted {
                ignored += 1;
            }
        }
        assert_eq!(ignored, 0, "values accepted by set and then ignored");
    }
}
