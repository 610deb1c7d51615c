//! Job stacks: the default guarded allocator and the process-wide hook to replace it.

use std::fmt;
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

use crate::error::Error;

/// Usable bytes of a stack from the default allocator: 256 KiB.
///
/// That is enough for ordinary Rust code inside a job, including a panic that prints a full
/// backtrace. The memory is reserved, not committed: a job pays only for the pages it touches (a job
/// that pauses straight away costs one page), and a guard page below the stack turns an overflow into
/// a clean abort with a message instead of silent corruption. OpenSSL's own stacks are 32 KiB of heap
/// with no guard.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

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
/// uses until it is passed back to `release`, and that stays valid until then. asyncjob runs code on
/// it, so a too-small stack overflows; unlike the default allocator, custom memory has no guard page
/// unless the allocator arranges one.
pub unsafe trait StackAllocator: Send + Sync + 'static {
    /// A new stack, or `None` when none can be had (the job is then not created: `start` reports
    /// [`Started::NoJobs`](crate::Started::NoJobs), pre-creation in `init_thread` stops). The allocator
    /// chooses the size, as the C allocator may rewrite `*num`.
    fn allocate(&self) -> Option<StackMemory>;
    /// Take back a stack that `allocate` returned, once its job is destroyed.
    fn release(&self, stack: StackMemory);
}

/// The allocator fixed for the life of the process at the first stack allocation.
pub(crate) enum Allocator {
    Default,
    Custom(Box<dyn StackAllocator>),
}

impl fmt::Debug for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Allocator::Default => f.write_str("Default"),
            Allocator::Custom(_) => f.write_str("Custom"),
        }
    }
}

static PENDING: Mutex<Option<Box<dyn StackAllocator>>> = Mutex::new(None);
static FIXED: OnceLock<Allocator> = OnceLock::new();

/// Install the allocator every job stack of the process will come from (`ASYNC_set_mem_functions`).
///
/// This works only until the first stack is allocated, in any thread: by the first
/// [`start`](crate::start) that creates a job, or by [`init_thread`](crate::init_thread) pre-creating
/// one. After that it fails with [`Error::AllocatorLocked`], for ever, as in OpenSSL. On Windows the
/// operating system owns fiber stacks and this fails with [`Error::Unsupported`].
pub fn set_stack_allocator(allocator: Box<dyn StackAllocator>) -> Result<(), Error> {
    if !crate::fiber::uses_caller_stacks() {
        return Err(Error::Unsupported);
    }
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if FIXED.get().is_some() {
        return Err(Error::AllocatorLocked);
    }
    *pending = Some(allocator);
    Ok(())
}

/// True once a job stack has been allocated in this process, so that the allocator can no longer be
/// changed.
pub fn stack_allocator_locked() -> bool {
    FIXED.get().is_some()
}

/// The process's allocator, fixed on first use.
pub(crate) fn allocator() -> &'static Allocator {
    FIXED.get_or_init(|| {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        match pending.take() {
            Some(custom) => Allocator::Custom(custom),
            None => Allocator::Default,
        }
    })
}
