//! The few OS calls the driver needs, declared here so that `asyncjob` keeps no dependency: epoll and
//! eventfd on Linux, `poll(2)` and a pipe on every POSIX system. Each wrapper returns the OS error
//! number on failure.

use std::ffi::{c_int, c_void};
use std::io;

#[cfg(any(target_os = "linux", target_os = "android"))]
type NfdsT = std::ffi::c_ulong;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
type NfdsT = std::ffi::c_uint;

/// `struct pollfd`, the same layout on every POSIX system.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct PollFd {
    pub fd: c_int,
    pub events: i16,
    pub revents: i16,
}

pub(crate) const POLLIN: i16 = 0x1;

/// `struct epoll_event`: packed on x86_64 only (the kernel's `EPOLL_PACKED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy)]
pub(crate) struct EpollEvent {
    pub events: u32,
    pub data: u64,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const EPOLLIN: u32 = 0x1;
#[cfg(any(target_os = "linux", target_os = "android"))]
const EPOLL_CTL_ADD: c_int = 1;
#[cfg(any(target_os = "linux", target_os = "android"))]
const EPOLL_CTL_DEL: c_int = 2;

const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
pub(crate) const EINTR: i32 = 4;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) const EEXIST: i32 = 17;

unsafe extern "C" {
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn pipe(fds: *mut c_int) -> c_int;
    fn poll(fds: *mut PollFd, nfds: NfdsT, timeout: c_int) -> c_int;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn epoll_create1(flags: c_int) -> c_int;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut EpollEvent) -> c_int;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn epoll_wait(epfd: c_int, events: *mut EpollEvent, maxevents: c_int, timeout: c_int) -> c_int;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn eventfd(initval: std::ffi::c_uint, flags: c_int) -> c_int;
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A new fd from `make`, closed on exec (set apart from the call: `O_CLOEXEC`'s value differs
/// between architectures, `FD_CLOEXEC`'s does not).
fn cloexec(fd: c_int) -> io::Result<c_int> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened by us; F_SETFD takes an int argument.
    if unsafe { fcntl(fd, F_SETFD, FD_CLOEXEC) } < 0 {
        let e = io::Error::last_os_error();
        close_fd(fd);
        return Err(e);
    }
    Ok(fd)
}

pub(crate) fn close_fd(fd: c_int) {
    // SAFETY: closes an fd the caller owns and no longer uses.
    unsafe { close(fd) };
}

/// Write the 8-byte count 1: what an eventfd needs, and harmless for a pipe.
pub(crate) fn signal_fd(fd: c_int) {
    let one: u64 = 1;
    // SAFETY: `one` is 8 readable bytes for the duration of the call. A failure (a full pipe, which
    // cannot hold less than the few bytes in flight here) leaves the fd readable anyway.
    unsafe { write(fd, (&raw const one).cast(), 8) };
}

/// Read what `signal_fd` wrote (an eventfd's counter, or a pipe's bytes); call only when `fd` is
/// readable, so that the read does not block.
pub(crate) fn drain_fd(fd: c_int) {
    let mut buf = [0u8; 64];
    // SAFETY: `buf` is 64 writable bytes for the duration of the call.
    unsafe { read(fd, buf.as_mut_ptr().cast(), buf.len()) };
}

/// A pipe, both ends closed on exec: `(read, write)`.
pub(crate) fn new_pipe() -> io::Result<(c_int, c_int)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` has room for the two ints pipe(2) writes.
    if unsafe { pipe(fds.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let r = cloexec(fds[0]);
    let w = cloexec(fds[1]);
    match (r, w) {
        (Ok(r), Ok(w)) => Ok((r, w)),
        (Ok(fd), Err(e)) | (Err(e), Ok(fd)) => {
            close_fd(fd);
            Err(e)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

/// `poll(2)`; `Ok(0)` on EINTR.
pub(crate) fn poll_fds(fds: &mut [PollFd], timeout_ms: c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfd structures.
    let n = unsafe { poll(fds.as_mut_ptr(), fds.len() as NfdsT, timeout_ms) };
    if n < 0 {
        return match errno() {
            EINTR => Ok(0),
            _ => Err(io::Error::last_os_error()),
        };
    }
    Ok(n as usize)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn new_eventfd() -> io::Result<c_int> {
    // SAFETY: plain system call; the driver reads it only when epoll says it is readable, so it
    // needs no EFD_NONBLOCK (whose value, like EFD_CLOEXEC's, differs between architectures).
    cloexec(unsafe { eventfd(0, 0) })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn new_epoll() -> io::Result<c_int> {
    // SAFETY: plain system call.
    cloexec(unsafe { epoll_create1(0) })
}

/// Register `fd` for readability with `data`; the OS error number on failure.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn epoll_add(epfd: c_int, fd: c_int, data: u64) -> Result<(), i32> {
    let mut ev = EpollEvent {
        events: EPOLLIN,
        data,
    };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call.
    if unsafe { epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// Deregister `fd`; failures (EBADF for an fd already closed, ENOENT for one that a close removed
/// and a reuse of its number did not re-add) are the caller's to ignore.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn epoll_del(epfd: c_int, fd: c_int) -> Result<(), i32> {
    let mut ev = EpollEvent { events: 0, data: 0 };
    // SAFETY: `ev` is valid (kernels before 2.6.9 required a non-null pointer even for DEL).
    if unsafe { epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &mut ev) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// `epoll_wait(2)` into the whole of `events`; `Ok(0)` on EINTR.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn epoll_wait_into(
    epfd: c_int,
    events: &mut [EpollEvent],
    timeout_ms: c_int,
) -> io::Result<usize> {
    let max = events.len().min(c_int::MAX as usize) as c_int;
    // SAFETY: `events` is a writable array of at least `max` epoll_event structures.
    let n = unsafe { epoll_wait(epfd, events.as_mut_ptr(), max, timeout_ms) };
    if n < 0 {
        return match errno() {
            EINTR => Ok(0),
            _ => Err(io::Error::last_os_error()),
        };
    }
    Ok(n as usize)
}
