//! Cancelling a job by dropping its `Run` (`tokio::time::timeout`): its destructors run, its fd is
//! deregistered from the reactor before the job's cleanup closes it, nothing stays open, and a late
//! notification is harmless. One test in this binary: it counts the process's open fds and the
//! reactor's epoll registrations, which other tests running in parallel would disturb.

#![cfg(target_os = "linux")]

mod common;

use std::cell::{Cell, RefCell};
use std::os::fd::IntoRawFd;
use std::rc::Rc;
use std::time::Duration;

use asyncjob::{Notifier, WaitKey};
use asyncjob_tokio::run;
use common::{local, pipe, until};

/// Open fds of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Fds registered with tokio's reactor: the most registrations any epoll fd of the process has (the
/// reactor's epoll instance is open under two fd numbers; the other epoll fds share it).
fn epoll_registrations() -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:[eventpoll]" {
            continue;
        }
        let info = std::path::Path::new("/proc/self/fdinfo").join(entry.file_name());
        if let Ok(info) = std::fs::read_to_string(info) {
            count = count.max(info.lines().filter(|l| l.starts_with("tfd:")).count());
        }
    }
    count
}

/// Records, when dropped, the reactor's registrations at that moment.
struct RecordOnDrop(Rc<Cell<Option<usize>>>);

impl Drop for RecordOnDrop {
    fn drop(&mut self) {
        self.0.set(Some(epoll_registrations()));
    }
}

#[test]
fn timeout_cancels_the_job_cleanly() {
    local(async {
        let base_fds = open_fds();
        let base_epoll = epoll_registrations();

        let (r, w) = pipe();
        let read_fd = r.into_raw_fd(); // closed by the wait fd's cleanup
        let dropped = Rc::new(Cell::new(None));
        let paused = Rc::new(Cell::new(false));
        // The reactor's registrations when the cleanup closes the fd.
        let epoll_at_cleanup = Rc::new(Cell::new(None));
        let notifier: Rc<RefCell<Option<Notifier>>> = Rc::default();

        let (d, p, at, n) = (
            dropped.clone(),
            paused.clone(),
            epoll_at_cleanup.clone(),
            notifier.clone(),
        );
        let job = run(move || {
            let _guard = RecordOnDrop(d);
            let ctx = asyncjob::current_wait_ctx().unwrap();
            let cleanup = Box::new(move |_key, fd, _data| {
                at.set(Some(epoll_registrations()));
                // SAFETY: the cleanup owns the fd (see `into_raw_fd` above) and closes it once.
                assert_eq!(unsafe { libc::close(fd) }, 0);
            });
            ctx.set_wait_fd(
                WaitKey::from_addr(1),
                read_fd,
                std::ptr::null_mut(),
                Some(cleanup),
            );
            *n.borrow_mut() = Some(asyncjob::current_notifier().unwrap());
            drop(ctx);
            p.set(true);
            loop {
                asyncjob::pause(); // nothing ever writes to the pipe
            }
        });

        let p = paused.clone();
        let checker = tokio::task::spawn_local(async move {
            until(|| p.get()).await;
            (open_fds(), epoll_registrations())
        });
        let result: Result<Result<(), _>, _> =
            tokio::time::timeout(Duration::from_millis(50), job).await;
        assert!(
            result.is_err(),
            "the job never finishes; the timeout must fire"
        );

        let (mid_fds, mid_epoll) = checker.await.unwrap();
        assert_eq!(
            mid_fds,
            base_fds + 3,
            "the pipe's two ends and the reactor's duplicate"
        );
        assert_eq!(mid_epoll, base_epoll + 1, "the duplicate is registered");

        assert_eq!(
            dropped.get(),
            Some(base_epoll),
            "the job's destructors ran, after its fd left the reactor"
        );
        assert_eq!(
            epoll_at_cleanup.get(),
            Some(base_epoll),
            "the cleanup ran, after the fd left the reactor"
        );
        drop(w);
        assert_eq!(open_fds(), base_fds, "no fd left open");
        assert_eq!(epoll_registrations(), base_epoll);

        // The job is gone; its notifier still works and wakes nobody.
        let late = notifier.borrow_mut().take().unwrap();
        std::thread::spawn(move || late.notify()).join().unwrap();
        tokio::task::yield_now().await;

        // The thread's pool got the job back: a new run works.
        assert_eq!(run(|| 5).await.unwrap(), 5);
        let stats = asyncjob::pool_stats().unwrap();
        assert_eq!(stats.idle, stats.created, "every job is back in the pool");
    });
}
