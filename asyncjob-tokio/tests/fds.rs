//! Wait fds under `run`: registered with tokio's reactor (as duplicates, so two jobs may share an
//! fd), readiness cleared only once the fd is seen empty (no busy loop, no lost data), changes
//! applied round by round, EAGAIN, and fds the reactor cannot watch.
#![cfg(unix)]

mod common;

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use asyncjob::{WaitCtx, WaitKey};
use asyncjob_tokio::run;
use common::{CountPolls, drain, local, pipe, poke, until, yield_many};

#[test]
fn eagain_resumes_on_the_next_poll_even_with_an_idle_fd() {
    let (r, _w) = pipe();
    let fd = r.as_raw_fd();
    let (fut, polls) = CountPolls::new(run(move || {
        let ctx = asyncjob::current_wait_ctx().unwrap();
        ctx.set_wait_fd(WaitKey::from_addr(1), fd, std::ptr::null_mut(), None);
        ctx.set_status(WaitCtx::STATUS_EAGAIN);
        asyncjob::pause();
        drop(r);
        ctx.clear_fd(WaitKey::from_addr(1))
    }));
    assert!(local(fut).unwrap());
    assert_eq!(polls.get(), 2);
}

/// A job that waits on a pipe and counts its resumes; the bytes arrive one at a time, long after
/// the job paused.
#[test]
fn an_fd_written_later_wakes_the_job_with_no_spurious_resume() {
    local(async {
        let (r, w) = pipe();
        let resumes = Rc::new(Cell::new(0usize));
        let pauses = Rc::new(Cell::new(0usize));
        let (res, pau) = (resumes.clone(), pauses.clone());
        let (fut, polls) = CountPolls::new(run(move || {
            let ctx = asyncjob::current_wait_ctx().unwrap();
            ctx.set_wait_fd(WaitKey::of(&r), r.as_raw_fd(), std::ptr::null_mut(), None);
            let mut got = 0;
            while got < 3 {
                pau.set(pau.get() + 1);
                asyncjob::pause();
                res.set(res.get() + 1);
                got += drain(r.as_raw_fd());
            }
            ctx.clear_fd(WaitKey::of(&r));
            got
        }));
        let task = tokio::task::spawn_local(fut);
        for round in 1..=3 {
            until(|| pauses.get() >= round).await;
            // A job whose readiness was never cleared would be resumed here again and again.
            yield_many(20).await;
            assert_eq!(resumes.get(), round - 1, "a resume without data");
            poke(w.as_raw_fd());
        }
        assert_eq!(task.await.unwrap().unwrap(), 3);
        assert_eq!(resumes.get(), 3);
        assert_eq!(polls.get(), 4, "one poll to start, one per byte");
    });
}

/// Readiness is cleared only once the fd is seen empty: a job that consumes less than what arrived
/// is resumed again without a new event.
#[test]
fn data_left_unread_resumes_the_job_again() {
    local(async {
        let (r, w) = pipe();
        let paused = Rc::new(Cell::new(false));
        let p = paused.clone();
        let task = tokio::task::spawn_local(run(move || {
            let ctx = asyncjob::current_wait_ctx().unwrap();
            ctx.set_wait_fd(WaitKey::of(&r), r.as_raw_fd(), std::ptr::null_mut(), None);
            let mut bytes = 0;
            let mut resumes = 0;
            while bytes < 3 {
                p.set(true);
                asyncjob::pause();
                resumes += 1;
                let mut one = [0u8; 1];
                // SAFETY: one byte into a live buffer.
                let n = unsafe { libc::read(r.as_raw_fd(), one.as_mut_ptr().cast(), 1) };
                if n == 1 {
                    bytes += 1;
                }
            }
            ctx.clear_fd(WaitKey::of(&r));
            resumes
        }));
        until(|| paused.get()).await;
        // Three bytes in one write: a single edge for the reactor.
        // SAFETY: three bytes from a live buffer.
        let n = unsafe { libc::write(w.as_raw_fd(), b"abc".as_ptr().cast(), 3) };
        assert_eq!(n, 3);
        let resumes = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the unread bytes never resumed the job");
        assert_eq!(resumes.unwrap().unwrap(), 3, "one resume per byte read");
    });
}

#[test]
fn an_fd_readable_at_the_pause_counts_as_ready() {
    let (r, w) = pipe();
    poke(w.as_raw_fd());
    let (fut, polls) = CountPolls::new(run(move || {
        let ctx = asyncjob::current_wait_ctx().unwrap();
        ctx.set_wait_fd(WaitKey::of(&r), r.as_raw_fd(), std::ptr::null_mut(), None);
        asyncjob::pause();
        ctx.clear_fd(WaitKey::of(&r));
        drain(r.as_raw_fd())
    }));
    assert_eq!(local(fut).unwrap(), 1);
    assert_eq!(polls.get(), 2);
}

/// Two jobs wait on the same fd number: each registers it with tokio (as a duplicate), and one
/// write wakes both.
#[test]
fn two_runs_share_one_fd() {
    local(async {
        let (r, w) = pipe();
        let fd = r.as_raw_fd();
        let paused = Rc::new(Cell::new(0));
        let job = |paused: Rc<Cell<i32>>| {
            move || {
                let ctx = asyncjob::current_wait_ctx().unwrap();
                ctx.set_wait_fd(WaitKey::from_addr(7), fd, std::ptr::null_mut(), None);
                paused.set(paused.get() + 1);
                asyncjob::pause();
                ctx.clear_fd(WaitKey::from_addr(7));
                "resumed"
            }
        };
        let a = tokio::task::spawn_local(run(job(paused.clone())));
        let b = tokio::task::spawn_local(run(job(paused.clone())));
        until(|| paused.get() == 2).await;
        yield_many(10).await;
        assert!(!a.is_finished() && !b.is_finished());
        poke(w.as_raw_fd());
        assert_eq!(a.await.unwrap().unwrap(), "resumed");
        assert_eq!(b.await.unwrap().unwrap(), "resumed");
        assert_eq!(drain(r.as_raw_fd()), 1);
    });
}

/// An fd that epoll cannot watch (`/dev/null`) cancels the job with an I/O error. (kqueue watches
/// more kinds of files.)
#[cfg(target_os = "linux")]
#[test]
fn an_fd_the_reactor_cannot_watch_cancels_the_job() {
    let null = std::fs::File::open("/dev/null").unwrap();
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let r = local(run(move || {
        struct SetOnDrop(Rc<Cell<bool>>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let _guard = SetOnDrop(d);
        let ctx = asyncjob::current_wait_ctx().unwrap();
        ctx.set_wait_fd(
            WaitKey::of(&null),
            null.as_raw_fd(),
            std::ptr::null_mut(),
            None,
        );
        asyncjob::pause();
        unreachable!("resumed on an fd that cannot be watched");
    }));
    let Err(asyncjob_tokio::Error::Io(e)) = r else {
        panic!("expected an I/O error, got {r:?}")
    };
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(dropped.get());
}

/// Wait fds change from round to round: deletions and additions are applied after every pause.
#[test]
fn fds_follow_the_rounds() {
    local(async {
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        let (fd1, fd2) = (r1.as_raw_fd(), r2.as_raw_fd());
        let step = Rc::new(Cell::new(0));
        let s = step.clone();
        let job = run(move || {
            let ctx = asyncjob::current_wait_ctx().unwrap();
            ctx.set_wait_fd(WaitKey::from_addr(1), fd1, std::ptr::null_mut(), None);
            s.set(1);
            asyncjob::pause(); // waits on fd1
            drain(fd1);
            ctx.clear_fd(WaitKey::from_addr(1));
            ctx.set_wait_fd(WaitKey::from_addr(2), fd2, std::ptr::null_mut(), None);
            s.set(2);
            asyncjob::pause(); // waits on fd2 only
            drain(fd2);
            ctx.clear_fd(WaitKey::from_addr(2));
            "done"
        });
        let (job, polls) = CountPolls::new(job);
        let task = tokio::task::spawn_local(job);
        until(|| step.get() == 1).await;
        poke(w1.as_raw_fd());
        until(|| step.get() == 2).await;
        // fd1 is no longer watched: data on it does not resume the job.
        poke(w1.as_raw_fd());
        yield_many(20).await;
        assert_eq!(polls.get(), 2);
        poke(w2.as_raw_fd());
        assert_eq!(task.await.unwrap().unwrap(), "done");
        assert_eq!(polls.get(), 3);
        drop((r1, r2));
    });
}

/// `Runtime::block_on(run(..))` on a multi-threaded runtime: the job runs on the calling thread while
/// worker threads drive the reactor, so readiness may change while the job runs. Each byte is
/// written only once the job is about to pause for it: exactly one resume per byte.
#[test]
fn a_multi_threaded_runtime_drives_the_reactor_without_spurious_resumes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (r, w) = pipe();
    let (round_tx, round_rx) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for _ in round_rx {
            poke(w.as_raw_fd());
        }
    });
    let resumes = rt.block_on(run(move || {
        let ctx = asyncjob::current_wait_ctx().unwrap();
        ctx.set_wait_fd(WaitKey::of(&r), r.as_raw_fd(), std::ptr::null_mut(), None);
        let (mut got, mut resumes) = (0, 0);
        while got < 200 {
            round_tx.send(()).unwrap();
            // The byte may arrive before or after the pause: either way one resume reads it.
            loop {
                asyncjob::pause();
                resumes += 1;
                let n = drain(r.as_raw_fd());
                if n > 0 {
                    got += n;
                    break;
                }
            }
        }
        ctx.clear_fd(WaitKey::of(&r));
        resumes
    }));
    writer.join().unwrap();
    assert_eq!(resumes.unwrap(), 200, "a resume that found nothing to read");
}
