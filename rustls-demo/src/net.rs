//! Small socket helpers.

use std::io;
use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::time::Duration;

/// A non-blocking TCP listener on 127.0.0.1 with an ephemeral port and a backlog deep enough for
/// 1024 clients connecting at once (std's `bind` listens with a backlog of 128).
pub fn listen_loopback() -> io::Result<TcpListener> {
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it over.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        if libc::bind(
            fd,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) != 0
            || libc::listen(fd, 4096) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(listener)
    }
}

/// CPU time used so far by the calling thread.
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time used so far by the whole process (every thread).
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the call.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A field of /proc/self/status in kB (or a count, for `Threads`).
pub fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The process's OS thread count.
pub fn threads() -> u64 {
    proc_status("Threads").unwrap_or(0)
}

/// Resident set size now, in KiB.
pub fn rss_kib() -> u64 {
    proc_status("VmRSS").unwrap_or(0)
}

/// Peak resident set size since the last [`reset_peak_rss`], in KiB.
pub fn peak_rss_kib() -> u64 {
    proc_status("VmHWM").unwrap_or(0)
}

/// Reset the kernel's peak-RSS mark (`/proc/self/clear_refs`, value 5); false where refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// How many file descriptors the process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1))
}
