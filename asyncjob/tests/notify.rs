//! The cross-thread wake-up: `Notifier` handed out by a job's wait context, notified from other
//! threads before and after the job pauses.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};
use std::thread;

use asyncjob::{Notifier, Resumed, Started, WaitCtx};

/// A waker that counts its wakes.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker::default());
    (counter.clone(), Waker::from(counter))
}

fn wakes(counter: &CountingWaker) -> usize {
    counter.0.load(Ordering::SeqCst)
}

#[test]
fn a_notifier_crosses_threads() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<Notifier>();
}

#[test]
fn no_notifier_outside_a_job_or_without_a_wait_context() {
    assert!(asyncjob::current_notifier().is_none());
    let Ok(Started::Finished(inside)) =
        asyncjob::start(None, || asyncjob::current_notifier().is_none())
    else {
        panic!("expected the job to finish");
    };
    assert!(inside, "a job without a wait context has no notifier");
}

#[test]
fn a_notification_from_another_thread_after_the_pause_wakes_the_driver() {
    let ctx = WaitCtx::new();
    let (tx, rx) = std::sync::mpsc::channel::<Notifier>();
    let started = asyncjob::start(Some(&ctx), move || {
        tx.send(asyncjob::current_notifier().expect("a notifier"))
            .unwrap();
        asyncjob::pause();
        "done"
    })
    .unwrap();
    let Started::Paused(job) = started else {
        panic!("expected a pause")
    };
    assert!(ctx.awaits_notification());
    let (counter, waker) = counting_waker();
    ctx.set_waker(&waker);
    assert!(!ctx.take_notification(), "nothing notified yet");
    let notifier = rx.recv().unwrap();
    thread::spawn(move || notifier.notify()).join().unwrap();
    assert_eq!(wakes(&counter), 1);
    assert!(ctx.take_notification());
    assert!(!ctx.take_notification(), "taking clears the mark");
    let Ok(Resumed::Finished(r)) = job.resume() else {
        panic!("expected the job to finish")
    };
    assert_eq!(r, "done");
}

#[test]
fn a_notification_before_the_pause_is_not_lost() {
    let ctx = WaitCtx::new();
    let started = asyncjob::start(Some(&ctx), || {
        let notifier = asyncjob::current_notifier().expect("a notifier");
        // The engine answers before the job has even paused, and before any waker exists.
        thread::spawn(move || notifier.notify()).join().unwrap();
        asyncjob::pause();
    })
    .unwrap();
    let Started::Paused(job) = started else {
        panic!("expected a pause")
    };
    let (counter, waker) = counting_waker();
    ctx.set_waker(&waker);
    assert!(
        ctx.take_notification(),
        "the early notification is still there"
    );
    assert_eq!(wakes(&counter), 0, "registered after the notification");
    assert!(matches!(job.resume(), Ok(Resumed::Finished(()))));
}

#[test]
fn notifications_before_the_driver_looks_count_once() {
    let ctx = WaitCtx::new();
    let notifier = ctx.notifier();
    let (counter, waker) = counting_waker();
    ctx.set_waker(&waker);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let n = notifier.clone();
            thread::spawn(move || n.notify())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(wakes(&counter), 1, "one wake per mark");
    assert!(notifier.is_notified());
    assert!(ctx.take_notification());
    assert!(!notifier.is_notified());
    notifier.notify();
    assert_eq!(wakes(&counter), 2, "a new mark wakes again");
}

#[test]
fn awaiting_a_notification_lasts_one_round() {
    let ctx = WaitCtx::new();
    let started = asyncjob::start(Some(&ctx), || {
        let _ = asyncjob::current_notifier();
        asyncjob::pause(); // round 1: waits for the notifier
        asyncjob::pause(); // round 2: asked for nothing
        let _ = asyncjob::current_wait_ctx().unwrap().notifier();
        asyncjob::pause(); // round 3: waits again
    })
    .unwrap();
    let Started::Paused(job) = started else {
        panic!("expected a pause")
    };
    assert!(ctx.awaits_notification());
    let Ok(Resumed::Paused(job)) = job.resume() else {
        panic!("expected a pause")
    };
    assert!(!ctx.awaits_notification(), "the resume ended the round");
    let Ok(Resumed::Paused(job)) = job.resume() else {
        panic!("expected a pause")
    };
    assert!(ctx.awaits_notification());
    assert!(matches!(job.resume(), Ok(Resumed::Finished(()))));
}

#[test]
fn all_notifiers_of_a_context_share_one_mark() {
    let ctx = WaitCtx::new();
    let a = ctx.notifier();
    let b = ctx.clone().notifier();
    assert!(a.ptr_eq(&b));
    assert!(!a.ptr_eq(&WaitCtx::new().notifier()));
    b.notify();
    assert!(a.is_notified());
}

#[test]
fn a_cleared_waker_is_not_woken_and_a_notifier_may_outlive_its_context() {
    let ctx = WaitCtx::new();
    let notifier = ctx.notifier();
    let (counter, waker) = counting_waker();
    ctx.set_waker(&waker);
    ctx.clear_waker();
    notifier.notify();
    assert_eq!(wakes(&counter), 0);
    assert!(ctx.take_notification());
    ctx.set_waker(&waker);
    drop(ctx);
    // The context is gone; its notifier still works and still wakes the registered waker.
    notifier.notify();
    assert_eq!(wakes(&counter), 1);
    assert_eq!(
        Arc::strong_count(&counter),
        3,
        "ours, our waker, the registered one"
    );
    drop(notifier);
    assert_eq!(
        Arc::strong_count(&counter),
        2,
        "the registered waker goes with the last notifier"
    );
}

#[test]
fn a_waker_for_the_same_task_is_kept_not_cloned() {
    let ctx = WaitCtx::new();
    let (counter, waker) = counting_waker();
    ctx.set_waker(&waker);
    let after_first = Arc::strong_count(&counter);
    for _ in 0..10 {
        ctx.set_waker(&waker);
    }
    assert_eq!(Arc::strong_count(&counter), after_first);
    let (other, other_waker) = counting_waker();
    ctx.set_waker(&other_waker);
    assert_eq!(
        Arc::strong_count(&counter),
        after_first - 1,
        "the old waker is let go"
    );
    ctx.notifier().notify();
    assert_eq!((wakes(&counter), wakes(&other)), (0, 1));
}
