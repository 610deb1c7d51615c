//! `run` and `block_on` on a one-thread runtime: wake-ups by notifier and by fd, readiness that is
//! cleared without losing data, panics, errors, the pool limit, and nested `block_on`.

mod common;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::Poll;
use std::time::Duration;

use asyncjob::{WaitCtx, WaitKey};
use asyncjob_tokio::{BlockOnError, Error, block_on, run};
use common::{CountPolls, drain, local, pipe, poke};

/// Let every other ready task of the `LocalSet` run a few times.
async fn yield_many(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Yield until `cond` holds (it is set by another task or a job of this thread).
async fn until(cond: impl Fn() -> bool) {
    while !cond() {
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_job_that_never_pauses_finishes_on_the_first_poll() {
    let (fut, polls) = CountPolls::new(run(|| 6 * 7));
    assert_eq!(local(fut).unwrap(), 42);
    assert_eq!(polls.get(), 1);
}

#[test]
fn a_notification_from_a_thread_after_the_pause_wakes_the_job() {
    local(async {
        let paused = Rc::new(Cell::new(false));
        let resumes = Rc::new(Cell::new(0));
        let (tx, rx) = mpsc::channel();
        let (p, r) = (paused.clone(), resumes.clone());
        let (fut, polls) = CountPolls::new(run(move || {
            tx.send(asyncjob::current_notifier().unwrap()).unwrap();
            p.set(true);
            asyncjob::pause();
            r.set(r.get() + 1);
            "woken"
        }));
        let task = tokio::task::spawn_local(fut);
        until(|| paused.get()).await;
        yield_many(10).await;
        assert_eq!(resumes.get(), 0, "nobody notified yet");
        assert_eq!(polls.get(), 1, "the paused job is not polled without a wake");
        let notifier = rx.recv().unwrap();
        std::thread::spawn(move || notifier.notify())
            .join()
            .unwrap();
        assert_eq!(task.await.unwrap().unwrap(), "woken");
        assert_eq!(resumes.get(), 1);
        assert_eq!(polls.get(), 2);
    });
}

#[test]
fn a_notification_from_a_thread_before_the_pause_is_not_lost() {
    let (fut, polls) = CountPolls::new(run(|| {
        let notifier = asyncjob::current_notifier().unwrap();
        std::thread::spawn(move || notifier.notify())
            .join()
            .unwrap();
        asyncjob::pause();
        "done"
    }));
    assert_eq!(local(fut).unwrap(), "done");
    assert_eq!(polls.get(), 2, "resumed on the poll after the pause");
}

#[test]
fn a_pause_without_fds_or_notifier_resumes_on_the_next_poll() {
    let (fut, polls) = CountPolls::new(run(|| {
        for _ in 0..3 {
            asyncjob::pause();
        }
        7
    }));
    assert_eq!(local(fut).unwrap(), 7);
    assert_eq!(polls.get(), 4);
}

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

#[test]
fn status_err_cancels_the_job() {
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let dropped = Rc::new(Cell::new(false));
    let d = Flag(dropped.clone());
    let reached = Rc::new(Cell::new(false));
    let re = reached.clone();
    let result = local(run(move || {
        let _guard = d;
        asyncjob::current_wait_ctx()
            .unwrap()
            .set_status(WaitCtx::STATUS_ERR);
        asyncjob::pause();
        re.set(true);
    }));
    assert!(matches!(result, Err(Error::Status)), "{result:?}");
    assert!(dropped.get(), "the job's destructors ran");
    assert!(!reached.get(), "the job was not resumed");
}

#[test]
fn a_panic_in_the_job_reaches_the_join_handle() {
    local(async {
        let before = tokio::task::spawn_local(run(|| -> () { panic!("boom before a pause") }));
        let err = before.await.unwrap_err();
        assert!(err.is_panic());
        let after = tokio::task::spawn_local(run(|| {
            block_on(tokio::task::yield_now()).unwrap();
            panic!("boom after a pause")
        }));
        let err = after.await.unwrap_err();
        assert!(err.is_panic());
        let msg = err.into_panic();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom after a pause"));
        // The pool is still usable.
        assert_eq!(run(|| 1).await.unwrap(), 1);
    });
}

#[test]
fn block_on_outside_a_run_is_an_error() {
    assert_eq!(block_on(async { 1 }), Err(BlockOnError::NotInRun));
    std::thread::spawn(|| assert_eq!(block_on(async { 1 }), Err(BlockOnError::NotInRun)))
        .join()
        .unwrap();
    // A job started by hand is not driven by `run`.
    let by_hand = asyncjob::start(Some(&WaitCtx::new()), || block_on(async { 1 })).unwrap();
    let asyncjob::Started::Finished(r) = by_hand else {
        panic!("expected the job to finish")
    };
    assert_eq!(r, Err(BlockOnError::NotInRun));
    // Nor is the code that polls a `run` future.
    local(async {
        assert_eq!(block_on(async { 1 }), Err(BlockOnError::NotInRun));
    });
}

#[test]
fn block_on_inside_a_job_returns_the_output() {
    let r = local(run(|| block_on(async { 5 }).unwrap() + 1));
    assert_eq!(r.unwrap(), 6);
}

/// While the job waits in `block_on(sleep)`, the runtime runs other tasks; the order of events shows
/// it.
#[test]
fn block_on_sleep_lets_other_tasks_run() {
    local(async {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let job = tokio::task::spawn_local(run(move || {
            l.borrow_mut().push("job: sleeping");
            block_on(tokio::time::sleep(Duration::from_millis(30))).unwrap();
            l.borrow_mut().push("job: awake");
        }));
        let l = log.clone();
        let other = tokio::task::spawn_local(async move {
            l.borrow_mut().push("other task");
        });
        job.await.unwrap().unwrap();
        other.await.unwrap();
        assert_eq!(*log.borrow(), ["job: sleeping", "other task", "job: awake"]);
    });
}

/// A job that waits, from synchronous code, for a value that another task of the same thread sends.
#[test]
fn block_on_a_channel_fed_by_another_task() {
    local(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = tokio::task::spawn_local(run(move || block_on(rx).unwrap().unwrap() * 2));
        yield_many(5).await;
        tx.send(21).unwrap();
        assert_eq!(job.await.unwrap().unwrap(), 42);
    });
}

/// `block_on` inside a future that `block_on` polls, where the outer future is woken while the
/// inner `block_on` waits: the outer wake-up must not be lost.
#[test]
fn nested_block_on_keeps_both_wakeups() {
    local(async {
        let (tx_outer, mut rx_outer) = tokio::sync::oneshot::channel::<i32>();
        let (tx_inner, rx_inner) = tokio::sync::oneshot::channel::<i32>();
        let inner_waiting = Rc::new(Cell::new(false));
        let iw = inner_waiting.clone();
        let job = tokio::task::spawn_local(run(move || {
            let mut rx_inner = Some(rx_inner);
            let mut inner = None;
            block_on(poll_fn(move |cx| {
                if let Poll::Ready(v) = Pin::new(&mut rx_outer).poll(cx) {
                    return Poll::Ready(v.unwrap() + inner.unwrap_or(0));
                }
                if let Some(rx) = rx_inner.take() {
                    iw.set(true);
                    inner = Some(block_on(rx).unwrap().unwrap());
                }
                Poll::Pending
            }))
            .unwrap()
        }));
        until(|| inner_waiting.get()).await;
        yield_many(5).await;
        tx_outer.send(40).unwrap();
        yield_many(5).await;
        tx_inner.send(2).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), job).await;
        assert_eq!(r.expect("lost wake-up").unwrap().unwrap(), 42);
    });
}

/// A pool of one job: the second `run` waits for the first to finish, without polling in between.
#[test]
fn a_pool_of_one_queues_the_second_run_without_spinning() {
    asyncjob::init_thread(1, 1).unwrap();
    local(async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let first = tokio::task::spawn_local(run(move || block_on(rx).unwrap().unwrap()));
        let (second, polls) = CountPolls::new(run(|| "second"));
        let second = tokio::task::spawn_local(second);
        yield_many(20).await;
        assert_eq!(polls.get(), 1, "the waiting run is not polled again until a job is free");
        assert!(!second.is_finished());
        tx.send("first").unwrap();
        assert_eq!(first.await.unwrap().unwrap(), "first");
        assert_eq!(second.await.unwrap().unwrap(), "second");
        assert_eq!(polls.get(), 2);
    });
    // With no job of a `run` to wait for, an exhausted pool is an error rather than a hang.
    let Ok(asyncjob::Started::Paused(held)) = asyncjob::start(None, asyncjob::pause) else {
        panic!("expected a pause")
    };
    let r = local(run(|| ()));
    assert!(matches!(r, Err(Error::NoJobs)), "{r:?}");
    drop(held);
    asyncjob::cleanup_thread().unwrap();
}

#[test]
fn a_run_polled_inside_a_job_reports_nesting() {
    let r = local(run(|| block_on(run(|| 1)).unwrap()));
    assert!(
        matches!(r, Ok(Err(Error::Start(asyncjob::Error::Nested)))),
        "{r:?}"
    );
}

#[test]
fn works_on_a_local_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build_local(Default::default())
        .unwrap();
    let r = rt.block_on(async {
        tokio::task::spawn_local(run(|| {
            block_on(tokio::time::sleep(Duration::from_millis(1))).unwrap();
            "local"
        }))
        .await
        .unwrap()
    });
    assert_eq!(r.unwrap(), "local");
}
