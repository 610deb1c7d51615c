//! `run` and `block_on` on a one-thread runtime: wake-ups by notifier, fd-less pauses, panics,
//! errors, cancellation inside `block_on`, the pool limit, and nested `block_on`. (Wait fds:
//! tests/fds.rs; cancellation's fd and reactor bookkeeping: tests/cancel.rs.)

mod common;

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::task::Poll;
use std::time::Duration;

use asyncjob::WaitCtx;
use asyncjob_tokio::{BlockOnError, Error, block_on, run};
use common::{CountPolls, local, until, yield_many};

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
        assert_eq!(
            polls.get(),
            1,
            "the paused job is not polled without a wake"
        );
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
        assert_eq!(
            polls.get(),
            1,
            "the waiting run is not polled again until a job is free"
        );
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

/// Aborting the task drops the `Run` while the job waits in `block_on`: the awaited future and
/// everything the job owns are dropped.
#[test]
fn abort_drops_the_future_awaited_by_block_on() {
    struct SetOnDrop(Rc<Cell<bool>>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    local(async {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let job_state = Rc::new(Cell::new(false));
        let future_state = Rc::new(Cell::new(false));
        let waiting = Rc::new(Cell::new(false));
        let (js, fs, w) = (job_state.clone(), future_state.clone(), waiting.clone());
        let task = tokio::task::spawn_local(run(move || {
            let _owned = SetOnDrop(js);
            let guard = SetOnDrop(fs);
            w.set(true);
            let r = block_on(async move {
                let _guard = guard;
                rx.await
            });
            unreachable!("the job was cancelled, yet block_on returned {r:?}");
        }));
        until(|| waiting.get()).await;
        assert!(!job_state.get() && !future_state.get());
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(job_state.get(), "the job's own values were dropped");
        assert!(
            future_state.get(),
            "the future block_on awaited was dropped"
        );
        assert!(tx.is_closed(), "and with it the receiver");
    });
}

/// Off Unix the reactor cannot watch wait fds: a job that registers one is cancelled with an error.
#[cfg(not(unix))]
#[test]
fn a_wait_fd_is_unsupported_off_unix() {
    let r = local(run(|| {
        let ctx = asyncjob::current_wait_ctx().unwrap();
        ctx.set_wait_fd(
            asyncjob::WaitKey::from_addr(1),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            None,
        );
        asyncjob::pause();
    }));
    let Err(Error::Io(e)) = r else {
        panic!("expected an I/O error, got {r:?}")
    };
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
}

/// Where the job cannot pause, `block_on` says so instead of spinning: pausing blocked, or the job
/// unwinding because its `Run` was dropped.
#[test]
fn block_on_where_the_job_cannot_pause_is_an_error() {
    let r = local(run(|| {
        let _blocked = asyncjob::block_pause();
        block_on(async { 1 })
    }));
    assert_eq!(r.unwrap(), Err(BlockOnError::CannotPause));

    struct BlockOnInDrop(Rc<Cell<Option<Result<i32, BlockOnError>>>>);
    impl Drop for BlockOnInDrop {
        fn drop(&mut self) {
            self.0.set(Some(block_on(async { 2 })));
        }
    }
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    local(async move {
        let mut job = Box::pin(run(move || {
            let _guard = BlockOnInDrop(s);
            let _ = asyncjob::current_notifier();
            asyncjob::pause();
        }));
        // One poll starts the job, which then waits for a notification that never comes.
        let first = std::future::poll_fn(|cx| Poll::Ready(job.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        drop(job);
    });
    assert_eq!(seen.get(), Some(Err(BlockOnError::CannotPause)));
}
