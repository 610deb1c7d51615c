//! Helpers shared by the test binaries.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Let every other ready task of the `LocalSet` run a few times.
pub async fn yield_many(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Yield until `cond` holds (it is set by another task or a job of this thread).
pub async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

/// A one-thread runtime with IO and timers, and a `LocalSet` to `spawn_local` on.
pub fn local<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Counts how often the wrapped future is polled.
pub struct CountPolls<F> {
    pub inner: Pin<Box<F>>,
    pub polls: Rc<Cell<usize>>,
}

impl<F: Future> CountPolls<F> {
    pub fn new(f: F) -> (Self, Rc<Cell<usize>>) {
        let polls = Rc::new(Cell::new(0));
        (
            CountPolls {
                inner: Box::pin(f),
                polls: polls.clone(),
            },
            polls,
        )
    }
}

impl<F: Future> Future for CountPolls<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

/// A pipe: (read end, write end), both close-on-exec and the read end non-blocking.
#[cfg(unix)]
pub fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe writes.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: pipe just opened both descriptors and nothing else owns them.
    let (r, w) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    for (fd, nonblock) in [(r.as_raw_fd(), true), (w.as_raw_fd(), false)] {
        // SAFETY: fcntl on descriptors owned above.
        unsafe {
            assert_eq!(libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC), 0);
            if nonblock {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
            }
        }
    }
    (r, w)
}

/// Read whatever is in a non-blocking fd; how many bytes.
#[cfg(unix)]
pub fn drain(fd: std::os::fd::RawFd) -> usize {
    let mut buf = [0u8; 256];
    let mut total = 0;
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return total;
        }
        total += n as usize;
    }
}

/// Write one byte to an fd.
#[cfg(unix)]
pub fn poke(fd: std::os::fd::RawFd) {
    // SAFETY: one byte from a live buffer.
    let n = unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    assert_eq!(n, 1, "write: {}", std::io::Error::last_os_error());
}
