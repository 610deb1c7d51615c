//! The job's wait fds as tokio sees them: one registration with the reactor per live wait-context
//! entry, each on a duplicate of the job's fd.

use std::io;
use std::task::Context;

use asyncjob::{AsyncFd as RawWaitFd, WaitCtx};

#[cfg(unix)]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
    use std::task::{Context, Poll};

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// One wait fd, registered with the reactor through a duplicate.
    pub(super) struct Watched {
        /// The job's fd number, as the wait context lists it.
        pub(super) fd: RawFd,
        watcher: AsyncFd<OwnedFd>,
    }

    impl Watched {
        pub(super) fn new(fd: RawFd) -> io::Result<Self> {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(io::Error::other(
                    "a job waits on an fd, but the `Run` is not polled inside a tokio runtime",
                ));
            }
            if fd < 0 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            // SAFETY: the fd is only borrowed for the duplication, which fails with EBADF if the fd
            // is not open. The job registered it, and keeps it open while it is in its wait context.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let dup = borrowed.try_clone_to_owned()?;
            // SAFETY: `dup` is an open fd that this `OwnedFd` owns: it stays open, refers to the
            // same file description and reports the same number until the `AsyncFd` is dropped.
            let watcher = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
            Ok(Watched { fd, watcher })
        }

        /// Whether the fd is readable now. The reactor's readiness is cleared when it is not,
        /// unless an event arrived since the reactor reported it (the guard's tick).
        pub(super) fn poll_readable(&self, cx: &mut Context<'_>) -> io::Result<bool> {
            loop {
                match self.watcher.poll_read_ready(cx) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Ready(Ok(mut guard)) => {
                        if readable_now(self.watcher.get_ref().as_raw_fd()) {
                            // Left set: the job has not read everything yet.
                            return Ok(true);
                        }
                        // Seen empty: clear, and poll again so that the waker is registered (or a
                        // newer event is seen).
                        guard.clear_ready();
                    }
                }
            }
        }
    }

    /// A zero-timeout `poll(2)` for input (end of file and errors count: a read would not block).
    fn readable_now(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        // An interrupted poll says nothing: count the fd as readable, which costs at most one
        // resume that finds nothing.
        n != 0
    }
}

#[cfg(not(unix))]
mod imp {
    use std::io;
    use std::task::Context;

    use asyncjob::AsyncFd as RawWaitFd;

    /// Wait fds are not supported here: registering one fails.
    pub(super) struct Watched {
        pub(super) fd: RawWaitFd,
    }

    impl Watched {
        pub(super) fn new(_fd: RawWaitFd) -> io::Result<Self> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "asyncjob-tokio watches wait fds on Unix only",
            ))
        }

        pub(super) fn poll_readable(&self, _cx: &mut Context<'_>) -> io::Result<bool> {
            Ok(false)
        }
    }
}

/// The fds of one job's wait context that the reactor watches.
pub(crate) struct Registry {
    watched: Vec<imp::Watched>,
    added: Vec<RawWaitFd>,
    deleted: Vec<RawWaitFd>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            watched: Vec::new(),
            added: Vec::new(),
            deleted: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.watched.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Deregister every fd (and close the duplicates).
    pub(crate) fn clear(&mut self) {
        self.watched.clear();
    }

    /// Apply the round's changes: deletions first (an fd number closed and reused within the round
    /// is then deleted and added again), additions oldest first.
    pub(crate) fn apply_changes(&mut self, ctx: &WaitCtx) -> io::Result<()> {
        let (added, deleted) = ctx.changed_counts();
        if added == 0 && deleted == 0 {
            return Ok(());
        }
        self.added.clear();
        self.added.resize(added, placeholder());
        self.deleted.clear();
        self.deleted.resize(deleted, placeholder());
        ctx.copy_changed_fds(Some(&mut self.added), Some(&mut self.deleted));
        for fd in &self.deleted {
            if let Some(i) = self.watched.iter().rposition(|w| w.fd == *fd) {
                self.watched.remove(i);
            }
        }
        for fd in self.added.iter().rev() {
            self.watched.push(imp::Watched::new(*fd)?);
        }
        Ok(())
    }

    /// Register the task's waker with every fd; whether one of them is readable now.
    pub(crate) fn poll_any_readable(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut any = false;
        for w in &self.watched {
            any |= w.poll_readable(cx)?;
        }
        Ok(any)
    }
}

#[cfg(unix)]
fn placeholder() -> RawWaitFd {
    -1
}

#[cfg(not(unix))]
fn placeholder() -> RawWaitFd {
    std::ptr::null_mut()
}
