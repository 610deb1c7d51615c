//! Wait contexts: fd lists, the round model, clear_fd, cleanup order, callback and status
//! (reference §2.10 to §2.12).

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr;
use std::rc::Rc;

use asyncjob::{AsyncFd, FdCleanup, Resumed, Started, WaitCtx, WaitKey};

fn key(n: usize) -> WaitKey {
    WaitKey::from_addr(0x1000 + n)
}

#[cfg(unix)]
fn fd(n: i32) -> AsyncFd {
    n
}
#[cfg(windows)]
fn fd(n: i32) -> AsyncFd {
    n as usize as AsyncFd
}

type Log = Rc<RefCell<Vec<AsyncFd>>>;

fn logging_cleanup(log: &Log) -> Option<FdCleanup> {
    let log = log.clone();
    Some(Box::new(move |_, fd, _| log.borrow_mut().push(fd)))
}

/// Run `inside` in a job that pauses once, and return after resuming it (which ends the round).
fn job_round(ctx: &WaitCtx, inside: impl FnOnce(&WaitCtx) + 'static) {
    let job = match asyncjob::start(Some(ctx), move || {
        let c = asyncjob::current_wait_ctx().expect("ctx");
        inside(&c);
        asyncjob::pause();
    }) {
        Ok(Started::Paused(job)) => job,
        _ => panic!("expected PAUSE"),
    };
    assert!(matches!(job.resume(), Ok(Resumed::Finished(()))));
}

#[test]
fn a_new_context_is_empty_with_status_unsupported() {
    let ctx = WaitCtx::new();
    assert_eq!(ctx.fd_count(), 0);
    assert!(ctx.all_fds().is_empty());
    assert_eq!(ctx.changed_counts(), (0, 0));
    assert!(ctx.callback().is_none());
    assert_eq!(ctx.status(), WaitCtx::STATUS_UNSUPPORTED);
    assert_eq!(ctx.fd(key(1)), None);
    assert!(!ctx.clear_fd(key(1)));
}

#[test]
fn fds_are_listed_newest_first_and_duplicates_are_kept() {
    let ctx = WaitCtx::new();
    let data = 0x55usize as *mut c_void;
    ctx.set_wait_fd(key(1), fd(10), ptr::null_mut(), None);
    ctx.set_wait_fd(key(2), fd(11), data, None);
    ctx.set_wait_fd(key(5), fd(14), ptr::null_mut(), None);
    ctx.set_wait_fd(key(5), fd(15), ptr::null_mut(), None);
    assert_eq!(ctx.all_fds(), vec![fd(15), fd(14), fd(11), fd(10)]);
    assert_eq!(ctx.fd_count(), 4);
    assert_eq!(
        ctx.fd(key(5)),
        Some((fd(15), ptr::null_mut())),
        "the newer duplicate wins"
    );
    assert_eq!(ctx.fd(key(2)), Some((fd(11), data)));
    let mut out = [fd(0); 2];
    assert_eq!(ctx.copy_all_fds(&mut out), 4);
    assert_eq!(out, [fd(15), fd(14)]);
    assert_eq!(
        ctx.changed_counts(),
        (4, 0),
        "adds outside a job count as added"
    );
}

#[test]
fn clear_in_the_same_round_removes_at_once_without_cleanup() {
    let log: Log = Rc::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(11), ptr::null_mut(), logging_cleanup(&log));
    ctx.set_wait_fd(key(3), fd(13), ptr::null_mut(), logging_cleanup(&log));
    assert!(ctx.clear_fd(key(3)));
    assert_eq!(ctx.all_fds(), vec![fd(11)]);
    assert_eq!(ctx.changed_fds(), (vec![fd(11)], vec![]));
    assert_eq!(ctx.changed_counts(), (1, 0));
    assert!(!ctx.clear_fd(key(3)), "already gone");
    drop(ctx);
    assert_eq!(
        *log.borrow(),
        vec![fd(11)],
        "cleared fds never get their cleanup"
    );
}

#[test]
fn clear_of_an_earlier_round_marks_deleted_until_the_next_round() {
    let log: Log = Rc::default();
    let ctx = WaitCtx::new();
    let l = log.clone();
    job_round(&ctx, move |c| {
        c.set_wait_fd(key(1), fd(10), ptr::null_mut(), logging_cleanup(&l));
    });
    // The resume ended the round that added fd 10.
    assert_eq!(ctx.changed_counts(), (0, 0));
    assert!(ctx.clear_fd(key(1)));
    assert_eq!(ctx.all_fds(), Vec::<AsyncFd>::new());
    assert_eq!(ctx.fd(key(1)), None);
    assert_eq!(ctx.changed_fds(), (vec![], vec![fd(10)]));
    assert_eq!(ctx.changed_counts(), (0, 1));
    assert!(!ctx.clear_fd(key(1)), "clear again -> 0");
    // Asking does not reset.
    assert_eq!(ctx.changed_counts(), (0, 1));
    // The next resume frees the marked node, still without its cleanup.
    job_round(&ctx, |_| {});
    assert_eq!(ctx.changed_fds(), (vec![], vec![]));
    drop(ctx);
    assert!(log.borrow().is_empty());
}

#[test]
fn clear_with_duplicate_keys_takes_the_newest_live_one() {
    let log: Log = Rc::default();
    let ctx = WaitCtx::new();
    let l = log.clone();
    job_round(&ctx, move |c| {
        c.set_wait_fd(key(5), fd(14), ptr::null_mut(), logging_cleanup(&l));
        c.set_wait_fd(key(5), fd(15), ptr::null_mut(), logging_cleanup(&l));
    });
    assert!(ctx.clear_fd(key(5)));
    assert_eq!(ctx.changed_fds(), (vec![], vec![fd(15)]));
    assert_eq!(ctx.fd(key(5)), Some((fd(14), ptr::null_mut())));
    drop(ctx);
    assert_eq!(
        *log.borrow(),
        vec![fd(14)],
        "fd 14 is still present and cleaned up at free"
    );
}

#[test]
fn free_runs_cleanups_newest_first_skipping_cleared_and_callbackless() {
    let log: Log = Rc::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logging_cleanup(&log));
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), logging_cleanup(&log));
    ctx.set_wait_fd(key(3), fd(3), ptr::null_mut(), None);
    ctx.set_wait_fd(key(4), fd(4), ptr::null_mut(), logging_cleanup(&log));
    assert!(ctx.clear_fd(key(2)));
    drop(ctx);
    assert_eq!(*log.borrow(), vec![fd(4), fd(1)]);
}

#[test]
fn cleanup_receives_key_fd_and_custom_data() {
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let ctx = WaitCtx::new();
    let data = 0xabcusize as *mut c_void;
    ctx.set_wait_fd(
        key(9),
        fd(90),
        data,
        Some(Box::new(move |k, f, d| *s.borrow_mut() = Some((k, f, d)))),
    );
    drop(ctx);
    assert_eq!(*seen.borrow(), Some((key(9), fd(90), data)));
}

#[test]
fn the_round_model_across_pause_and_resume() {
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(13), fd(13), ptr::null_mut(), None);
    ctx.set_wait_fd(key(14), fd(14), ptr::null_mut(), None);
    let observed = Rc::new(RefCell::new(Vec::new()));
    let o = observed.clone();
    let job = match asyncjob::start(Some(&ctx), move || {
        let c = asyncjob::current_wait_ctx().unwrap();
        // No reset at the first start.
        o.borrow_mut().push(c.changed_counts());
        c.set_wait_fd(key(10), fd(10), ptr::null_mut(), None);
        asyncjob::pause();
        // Reset happened inside pause, before the job continued.
        o.borrow_mut().push(c.changed_counts());
        c.set_wait_fd(key(11), fd(11), ptr::null_mut(), None);
        assert!(c.clear_fd(key(13)));
        asyncjob::pause();
        o.borrow_mut().push(c.changed_counts());
    }) {
        Ok(Started::Paused(job)) => job,
        _ => panic!("expected PAUSE"),
    };
    // Pausing does not reset either.
    assert_eq!(ctx.changed_fds(), (vec![fd(10), fd(14), fd(13)], vec![]));
    let job = match job.resume() {
        Ok(Resumed::Paused(job)) => job,
        _ => panic!("expected PAUSE"),
    };
    assert_eq!(ctx.changed_fds(), (vec![fd(11)], vec![fd(13)]));
    assert_eq!(ctx.all_fds(), vec![fd(11), fd(10), fd(14)]);
    assert!(matches!(job.resume(), Ok(Resumed::Finished(()))));
    assert_eq!(*observed.borrow(), vec![(2, 0), (0, 0), (0, 0)]);
    // Finishing does not reset: the last round's state was already reset by the resume.
    assert_eq!(ctx.changed_counts(), (0, 0));
    assert_eq!(ctx.all_fds(), vec![fd(11), fd(10), fd(14)]);
}

#[test]
fn copy_changed_fds_fills_what_it_is_given_and_reports_counters() {
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), None);
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), None);
    let mut added = [fd(0); 2];
    assert_eq!(ctx.copy_changed_fds(Some(&mut added), None), (2, 0));
    assert_eq!(added, [fd(2), fd(1)]);
    assert_eq!(ctx.copy_changed_fds(None, None), (2, 0));
}

#[test]
fn callback_and_status_round_trip() {
    let ctx = WaitCtx::new();
    let cb: Rc<dyn asyncjob::WaitCallback> = Rc::new(|| 7);
    ctx.set_callback(Some(cb));
    assert_eq!(ctx.callback().expect("callback").call(), 7);
    ctx.set_callback(None);
    assert!(ctx.callback().is_none());
    for status in [
        WaitCtx::STATUS_ERR,
        WaitCtx::STATUS_OK,
        WaitCtx::STATUS_EAGAIN,
        42,
        -7,
    ] {
        ctx.set_status(status);
        assert_eq!(ctx.status(), status);
    }
}

#[test]
fn clones_share_one_context() {
    let a = WaitCtx::new();
    let b = a.clone();
    b.set_wait_fd(key(1), fd(1), ptr::null_mut(), None);
    assert_eq!(a.all_fds(), vec![fd(1)]);
    assert!(a.ptr_eq(&b));
    assert_eq!(a.as_ptr(), b.as_ptr());
    assert!(!a.ptr_eq(&WaitCtx::new()));
}
