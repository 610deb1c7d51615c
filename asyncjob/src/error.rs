use std::fmt;

/// Why an asyncjob call was refused.
///
/// Every variant leaves the thread's pool and jobs exactly as they were before the call, except where
/// the variant's documentation says otherwise.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The pool sizes given to [`init_thread`](crate::init_thread) are invalid: `init_size` is larger
    /// than `max_size`, `max_size` is 0 ("unlimited") while `init_size` is not, or `max_size` exceeds
    /// `i32::MAX`. OpenSSL raises `ASYNC_R_INVALID_POOL_SIZE` for the same inputs (3.6 and later for the
    /// last one).
    InvalidPoolSize {
        /// The `max_size` that was asked for.
        max_size: usize,
        /// The `init_size` that was asked for.
        init_size: usize,
    },
    /// [`start`](crate::start) or [`Job::resume`](crate::Job::resume) was called from inside a running
    /// job. Nothing was changed; the running job carries on normally.
    Nested,
    /// [`cleanup_thread`](crate::cleanup_thread) found jobs that are still paused. The idle jobs and the
    /// pool were freed as usual; the paused jobs were left alone and stay valid: they can still be
    /// resumed or dropped.
    JobsOutstanding {
        /// How many jobs of this thread are paused.
        count: usize,
    },
    /// This platform has no fiber support ([`is_capable`](crate::is_capable) returns false).
    NotCapable,
    /// The calling thread could not be prepared to switch fibers (for example, Windows refused to convert
    /// it), or its thread-local state is already being torn down.
    ThreadSetup,
    /// A stack allocator can be installed only before the first job stack is allocated in the process.
    AllocatorLocked,
    /// The operation is not available on this platform (custom stack allocators on Windows, where the
    /// operating system owns fiber stacks).
    Unsupported,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidPoolSize {
                max_size,
                init_size,
            } => write!(
                f,
                "invalid pool size: max_size {max_size}, init_size {init_size} \
                 (need init_size <= max_size, init_size 0 when max_size is 0, max_size <= i32::MAX)"
            ),
            Error::Nested => {
                f.write_str("a job cannot be started or resumed from inside a running job")
            }
            Error::JobsOutstanding { count } => write!(
                f,
                "{count} job(s) of this thread are still paused; they were left alive and can still be resumed"
            ),
            Error::NotCapable => f.write_str("this platform has no fiber support"),
            Error::ThreadSetup => f.write_str("the calling thread cannot switch fibers"),
            Error::AllocatorLocked => f.write_str(
                "a stack was already allocated: the stack allocator can no longer be changed",
            ),
            Error::Unsupported => f.write_str("not supported on this platform"),
        }
    }
}

impl std::error::Error for Error {}
