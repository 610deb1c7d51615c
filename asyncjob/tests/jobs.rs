//! Jobs, the pool, pausing and blocking, checked against the rows of OpenSSL's behaviour reference.
//! Every test runs on its own thread (the test harness's), so each one starts with a fresh pool.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use asyncjob::{Error, Job, PoolStats, Resumed, Started, WaitCtx};

fn paused<F, R>(s: Result<Started<F, R>, Error>) -> Job<R> {
    match s.expect("start succeeds") {
        Started::Paused(job) => job,
        Started::Finished(_) => panic!("expected PAUSE, got FINISH"),
        Started::NoJobs(_) => panic!("expected PAUSE, got NO_JOBS"),
    }
}

fn finished<F, R>(s: Result<Started<F, R>, Error>) -> R {
    match s.expect("start succeeds") {
        Started::Finished(r) => r,
        Started::Paused(_) => panic!("expected FINISH, got PAUSE"),
        Started::NoJobs(_) => panic!("expected FINISH, got NO_JOBS"),
    }
}

fn resume_finished<R: 'static>(job: Job<R>) -> R {
    match job.resume().expect("resume succeeds") {
        Resumed::Finished(r) => r,
        Resumed::Paused(_) => panic!("expected FINISH, got PAUSE"),
    }
}

fn resume_paused<R: 'static>(job: Job<R>) -> Job<R> {
    match job.resume().expect("resume succeeds") {
        Resumed::Paused(j) => j,
        Resumed::Finished(_) => panic!("expected PAUSE, got FINISH"),
    }
}

/// A wait fd value for tests: an int on POSIX, a HANDLE-sized value on Windows.
fn fd(n: i32) -> asyncjob::AsyncFd {
    #[cfg(unix)]
    return n;
    #[cfg(windows)]
    return n as usize as asyncjob::AsyncFd;
}

fn is_no_jobs<F, R>(s: Result<Started<F, R>, Error>) -> bool {
    matches!(s, Ok(Started::NoJobs(_)))
}

#[test]
fn is_capable_on_supported_platforms() {
    assert!(asyncjob::is_capable());
}

#[test]
fn job_that_returns_finishes_with_its_value() {
    assert_eq!(finished(asyncjob::start(None, || 77)), 77);
}

#[test]
fn pause_then_resume_finishes() {
    let job = paused(asyncjob::start(None, || {
        asyncjob::pause();
        11
    }));
    assert_eq!(resume_finished(job), 11);
}

#[test]
fn several_pauses_each_return_to_the_caller() {
    let steps = Rc::new(Cell::new(0));
    let s = steps.clone();
    let mut job = paused(asyncjob::start(None, move || {
        for _ in 0..5 {
            s.set(s.get() + 1);
            asyncjob::pause();
        }
        "done"
    }));
    for expected in 1..5 {
        assert_eq!(steps.get(), expected);
        job = resume_paused(job);
    }
    assert_eq!(resume_finished(job), "done");
    assert_eq!(steps.get(), 5);
}

#[test]
fn current_job_is_the_paused_handle_inside_and_none_outside() {
    assert_eq!(asyncjob::current_job(), None);
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let job = paused(asyncjob::start(None, move || {
        s.set(asyncjob::current_job());
        asyncjob::pause();
        asyncjob::current_job()
    }));
    assert_eq!(seen.get(), Some(job.id()));
    // Outside, even while a job is paused.
    assert_eq!(asyncjob::current_job(), None);
    let id = job.id();
    assert_eq!(resume_finished(job), Some(id));
}

#[test]
fn pause_outside_a_job_is_a_no_op() {
    asyncjob::pause();
    assert_eq!(asyncjob::current_job(), None);
    assert_eq!(finished(asyncjob::start(None, || 1)), 1);
}

#[test]
fn captured_values_are_copied_at_start() {
    let mut arg = 42;
    let a = arg;
    let job = paused(asyncjob::start(None, move || {
        asyncjob::pause();
        a
    }));
    arg = 99;
    assert_eq!(arg, 99);
    assert_eq!(resume_finished(job), 42);
}

#[test]
fn finished_job_is_reused_last_in_first_out() {
    asyncjob::init_thread(0, 0).unwrap();
    let x = paused(asyncjob::start(None, asyncjob::pause));
    let y = paused(asyncjob::start(None, asyncjob::pause));
    let (xid, yid) = (x.id(), y.id());
    assert_ne!(xid, yid);
    resume_finished(y);
    resume_finished(x);
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    finished(asyncjob::start(None, move || {
        s.set(asyncjob::current_job())
    }));
    assert_eq!(
        seen.get(),
        Some(xid),
        "the job that finished last is handed out first"
    );
}

#[test]
fn full_pool_gives_no_jobs_and_hands_the_closure_back() {
    asyncjob::init_thread(3, 3).unwrap();
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 3,
            created: 3,
            idle: 3
        })
    );
    let jobs: Vec<_> = (0..3)
        .map(|i| {
            paused(asyncjob::start(None, move || {
                asyncjob::pause();
                i
            }))
        })
        .collect();
    let marker = Rc::new(());
    let m = marker.clone();
    let closure = match asyncjob::start(None, move || Rc::strong_count(&m)) {
        Ok(Started::NoJobs(f)) => f,
        _ => panic!("expected NO_JOBS"),
    };
    // The closure was not run and still owns its capture.
    assert_eq!(Rc::strong_count(&marker), 2);
    let first_id = jobs[0].id();
    let mut jobs = jobs.into_iter();
    assert_eq!(resume_finished(jobs.next().unwrap()), 0);
    // A retry after a job finished gets that very job.
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    assert_eq!(
        finished(asyncjob::start(None, move || {
            s.set(asyncjob::current_job());
            closure()
        })),
        2
    );
    assert_eq!(seen.get(), Some(first_id));
    for job in jobs {
        resume_finished(job);
    }
}

#[test]
fn init_thread_rejects_the_sizes_openssl_rejects() {
    let bad = [
        (1, 2),
        (0, 1),
        (i32::MAX as usize + 1, 0),
        (usize::MAX, 0),
        (5, 6),
    ];
    for (max, init) in bad {
        assert_eq!(
            asyncjob::init_thread(max, init),
            Err(Error::InvalidPoolSize {
                max_size: max,
                init_size: init
            }),
            "init_thread({max}, {init})"
        );
        assert_eq!(
            asyncjob::pool_stats(),
            None,
            "a rejected init creates no pool"
        );
    }
    assert_eq!(asyncjob::init_thread(i32::MAX as usize, 0), Ok(()));
    assert_eq!(asyncjob::init_thread(0, 0), Ok(()));
    assert_eq!(asyncjob::init_thread(2, 2), Ok(()));
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 2,
            created: 2,
            idle: 2
        })
    );
}

#[test]
fn start_without_init_makes_an_unlimited_pool() {
    assert_eq!(asyncjob::pool_stats(), None);
    let jobs: Vec<_> = (0..300)
        .map(|_| paused(asyncjob::start(None, asyncjob::pause)))
        .collect();
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 0,
            created: 300,
            idle: 0
        })
    );
    for job in jobs {
        resume_finished(job);
    }
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 0,
            created: 300,
            idle: 300
        })
    );
}

#[test]
fn init_twice_replaces_the_pool_and_its_limits() {
    asyncjob::init_thread(2, 2).unwrap();
    asyncjob::init_thread(3, 1).unwrap();
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 3,
            created: 1,
            idle: 1
        })
    );
    let jobs: Vec<_> = (0..3)
        .map(|_| paused(asyncjob::start(None, asyncjob::pause)))
        .collect();
    assert!(is_no_jobs(asyncjob::start(None, || ())));
    for job in jobs {
        resume_finished(job);
    }
}

#[test]
fn jobs_outstanding_at_reinit_join_the_new_pool_uncounted() {
    asyncjob::init_thread(1, 0).unwrap();
    let e = paused(asyncjob::start(None, asyncjob::pause));
    asyncjob::init_thread(1, 0).unwrap();
    // The new pool may create its one job although E is still out.
    let f = paused(asyncjob::start(None, asyncjob::pause));
    assert!(is_no_jobs(asyncjob::start(None, || ())));
    resume_finished(e);
    resume_finished(f);
    // Both now sit in the new pool, which counts only the job it made itself.
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 1,
            created: 1,
            idle: 2
        })
    );
}

#[test]
fn cleanup_thread_frees_the_pool_and_is_idempotent() {
    assert_eq!(asyncjob::cleanup_thread(), Ok(()));
    asyncjob::init_thread(4, 2).unwrap();
    assert_eq!(asyncjob::cleanup_thread(), Ok(()));
    assert_eq!(asyncjob::pool_stats(), None);
    assert_eq!(asyncjob::cleanup_thread(), Ok(()));
    // A new start makes a fresh (0, 0) pool.
    assert_eq!(finished(asyncjob::start(None, || 5)), 5);
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 0,
            created: 1,
            idle: 1
        })
    );
}

#[test]
fn cleanup_with_paused_jobs_reports_them_and_they_still_resume() {
    asyncjob::init_thread(2, 2).unwrap();
    let job = paused(asyncjob::start(None, || {
        asyncjob::pause();
        31
    }));
    assert_eq!(
        asyncjob::cleanup_thread(),
        Err(Error::JobsOutstanding { count: 1 })
    );
    assert_eq!(
        asyncjob::pool_stats(),
        None,
        "idle jobs and the pool are gone"
    );
    // OpenSSL: use-after-free. Here the job finishes normally ...
    assert_eq!(resume_finished(job), 31);
    // ... and, with no pool to return to, its stack is freed; the next start makes a new pool.
    assert_eq!(asyncjob::pool_stats(), None);
    assert_eq!(asyncjob::cleanup_thread(), Ok(()));
}

#[test]
fn block_pause_stops_pausing_and_nests() {
    let job_result = finished(asyncjob::start(None, || {
        let outer = asyncjob::block_pause();
        let inner = asyncjob::block_pause();
        drop(inner);
        asyncjob::pause(); // still blocked once: no pause
        drop(outer);
        asyncjob::pause_blocked_count()
    }));
    assert_eq!(job_result, 0);
}

#[test]
fn block_and_unblock_outside_a_job_are_ignored() {
    asyncjob::block_pause().leak();
    asyncjob::block_pause().leak();
    assert_eq!(asyncjob::pause_blocked_count(), 0);
    let job = paused(asyncjob::start(None, asyncjob::pause));
    resume_finished(job);
    // Unblock outside a job cannot go below zero or reach inside.
    asyncjob::unblock_pause();
    assert_eq!(asyncjob::pause_blocked_count(), 0);
}

#[test]
fn a_block_left_by_a_finished_job_blocks_later_jobs_of_the_thread() {
    finished(asyncjob::start(None, || asyncjob::block_pause().leak()));
    assert_eq!(asyncjob::pause_blocked_count(), 1);
    // The next job cannot pause: it finishes straight through.
    assert_eq!(
        finished(asyncjob::start(None, || {
            asyncjob::pause();
            2
        })),
        2
    );
    // Unblocking outside a job does not clear it.
    asyncjob::unblock_pause();
    assert_eq!(asyncjob::pause_blocked_count(), 1);
    // An unblock inside a job does.
    finished(asyncjob::start(None, asyncjob::unblock_pause));
    assert_eq!(asyncjob::pause_blocked_count(), 0);
    let job = paused(asyncjob::start(None, asyncjob::pause));
    resume_finished(job);
}

#[test]
fn cleanup_thread_resets_the_block_counter() {
    finished(asyncjob::start(None, || asyncjob::block_pause().leak()));
    assert_eq!(asyncjob::pause_blocked_count(), 1);
    asyncjob::cleanup_thread().unwrap();
    assert_eq!(asyncjob::pause_blocked_count(), 0);
    let job = paused(asyncjob::start(None, asyncjob::pause));
    resume_finished(job);
}

#[test]
fn unblock_at_zero_stays_zero() {
    let count = finished(asyncjob::start(None, || {
        asyncjob::unblock_pause();
        asyncjob::unblock_pause();
        let block = asyncjob::block_pause();
        let c = asyncjob::pause_blocked_count();
        drop(block);
        (c, asyncjob::pause_blocked_count())
    }));
    assert_eq!(count, (1, 0));
}

#[test]
fn nested_start_is_refused_and_the_outer_job_carries_on() {
    let job = paused(asyncjob::start(None, || {
        let nested = asyncjob::start(None, || 1);
        let refused = matches!(nested, Err(Error::Nested));
        let still_inside = asyncjob::current_job().is_some();
        asyncjob::pause();
        (refused, still_inside)
    }));
    assert_eq!(resume_finished(job), (true, true));
    // The pool is intact: one job, idle.
    assert_eq!(
        asyncjob::pool_stats().map(|s| (s.created, s.idle)),
        Some((1, 1))
    );
}

#[test]
fn resume_inside_another_job_is_refused_and_the_job_is_handed_back() {
    let other = paused(asyncjob::start(None, || {
        asyncjob::pause();
        "other"
    }));
    let slot = Rc::new(RefCell::new(Some(other)));
    let s = slot.clone();
    let outer = finished(asyncjob::start(None, move || {
        let job = s.borrow_mut().take().unwrap();
        match job.resume() {
            Err(refused) => {
                let err = refused.error.clone();
                *s.borrow_mut() = Some(refused.job);
                Some(err)
            }
            Ok(_) => None,
        }
    }));
    assert_eq!(outer, Some(Error::Nested));
    let other = slot.borrow_mut().take().unwrap();
    assert_eq!(resume_finished(other), "other");
}

#[test]
fn a_panic_inside_a_job_reaches_the_caller_and_the_pool_stays_usable() {
    asyncjob::init_thread(1, 1).unwrap();
    let result = std::panic::catch_unwind(|| {
        let _ = asyncjob::start(None, || -> u8 { panic!("boom in job") });
    });
    let payload = result.expect_err("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in job"));
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 1,
            created: 1,
            idle: 1
        })
    );
    // The only job of the pool works again.
    assert_eq!(finished(asyncjob::start(None, || 3)), 3);
}

#[test]
fn a_panic_after_a_pause_reaches_the_resumer() {
    asyncjob::init_thread(1, 0).unwrap();
    let job = paused(asyncjob::start(None, || -> i32 {
        asyncjob::pause();
        panic!("late boom")
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _ = job.resume();
    }));
    assert!(result.is_err());
    assert_eq!(asyncjob::pool_stats().map(|s| s.idle), Some(1));
    assert_eq!(finished(asyncjob::start(None, || 4)), 4);
}

struct DropCounter(Rc<Cell<u32>>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn dropping_a_paused_job_runs_its_destructors_and_returns_it_to_the_pool() {
    asyncjob::init_thread(1, 0).unwrap();
    let drops = Rc::new(Cell::new(0));
    let captured = DropCounter(drops.clone());
    let d = drops.clone();
    let reached_end = Rc::new(Cell::new(false));
    let r = reached_end.clone();
    let job = paused(asyncjob::start(None, move || {
        let _owned_by_closure = &captured;
        let _on_the_job_stack = DropCounter(d);
        asyncjob::pause();
        r.set(true);
    }));
    assert_eq!(drops.get(), 0);
    drop(job);
    assert_eq!(
        drops.get(),
        2,
        "the captured value and the stack local were both dropped"
    );
    assert!(!reached_end.get(), "the job did not run on past its pause");
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 1,
            created: 1,
            idle: 1
        })
    );
    assert_eq!(finished(asyncjob::start(None, || 8)), 8);
}

#[test]
fn a_job_that_catches_its_cancellation_cannot_pause_again() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let job = paused(asyncjob::start(None, move || {
        let caught = std::panic::catch_unwind(asyncjob::pause);
        assert!(caught.is_err());
        assert!(asyncjob::is_cancelling());
        let _local = DropCounter(d);
        asyncjob::pause(); // unwinds again instead of pausing
        unreachable!("pause returned during cancellation");
    }));
    drop(job);
    assert_eq!(drops.get(), 1);
    assert_eq!(asyncjob::pool_stats().map(|s| s.idle), Some(1));
}

#[test]
fn dropping_a_paused_job_inside_another_job_works() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let inner = paused(asyncjob::start(None, move || {
        let _x = DropCounter(d);
        asyncjob::pause();
    }));
    let slot = Rc::new(RefCell::new(Some(inner)));
    let s = slot.clone();
    let outer = paused(asyncjob::start(None, move || {
        drop(s.borrow_mut().take());
        let inside = asyncjob::current_job();
        asyncjob::pause();
        inside
    }));
    assert_eq!(drops.get(), 1);
    let outer_id = outer.id();
    assert_eq!(resume_finished(outer), Some(outer_id));
}

#[test]
fn each_thread_has_its_own_pool_and_block_counter() {
    asyncjob::init_thread(1, 1).unwrap();
    let job = paused(asyncjob::start(None, asyncjob::pause));
    assert!(is_no_jobs(asyncjob::start(None, || ())));
    std::thread::spawn(|| {
        assert_eq!(asyncjob::pool_stats(), None);
        assert_eq!(asyncjob::pause_blocked_count(), 0);
        let job = paused(asyncjob::start(None, || {
            asyncjob::pause();
            9
        }));
        assert_eq!(resume_finished(job), 9);
    })
    .join()
    .unwrap();
    resume_finished(job);
}

#[test]
fn job_without_a_wait_ctx_pauses_and_resumes() {
    // OpenSSL dereferences the NULL wait ctx when such a job is resumed.
    let job = paused(asyncjob::start(None, || {
        assert!(asyncjob::current_wait_ctx().is_none());
        asyncjob::pause();
        asyncjob::pause();
        "ok"
    }));
    assert!(job.wait_ctx().is_none());
    let job = resume_paused(job);
    assert_eq!(resume_finished(job), "ok");
}

#[test]
fn resume_keeps_the_original_wait_ctx() {
    let ctx = WaitCtx::new();
    let job = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        asyncjob::current_wait_ctx().map(|c| c.as_ptr())
    }));
    assert!(job.wait_ctx().unwrap().ptr_eq(&ctx));
    assert_eq!(resume_finished(job), Some(ctx.as_ptr()));
}

#[test]
fn fds_added_by_a_finished_job_stay_counted_until_the_next_resume() {
    let ctx = WaitCtx::new();
    finished(asyncjob::start(Some(&ctx), || {
        let c = asyncjob::current_wait_ctx().unwrap();
        c.set_wait_fd(
            asyncjob::WaitKey::from_addr(1),
            fd(13),
            std::ptr::null_mut(),
            None,
        );
    }));
    assert_eq!(ctx.changed_fds(), (vec![fd(13)], vec![]));
    // A new job on the same context: no reset at start ...
    let job = paused(asyncjob::start(Some(&ctx), || {
        let c = asyncjob::current_wait_ctx().unwrap();
        c.set_wait_fd(
            asyncjob::WaitKey::from_addr(2),
            fd(14),
            std::ptr::null_mut(),
            None,
        );
        asyncjob::pause();
    }));
    assert_eq!(ctx.changed_counts(), (2, 0));
    assert_eq!(ctx.changed_fds(), (vec![fd(14), fd(13)], vec![]));
    // ... only when it is resumed.
    resume_finished(job);
    assert_eq!(ctx.changed_counts(), (0, 0));
    assert_eq!(ctx.all_fds(), vec![fd(14), fd(13)]);
}

#[test]
fn a_paused_job_keeps_its_wait_ctx_alive_and_cleanups_run_when_it_ends() {
    let cleaned = Rc::new(RefCell::new(Vec::new()));
    let ctx = WaitCtx::new();
    let c2 = cleaned.clone();
    let job = paused(asyncjob::start(Some(&ctx), move || {
        let c = asyncjob::current_wait_ctx().unwrap();
        let log = c2.clone();
        c.set_wait_fd(
            asyncjob::WaitKey::from_addr(7),
            fd(70),
            std::ptr::null_mut(),
            Some(Box::new(move |_, fd, _| log.borrow_mut().push(fd))),
        );
        asyncjob::pause();
        c.all_fds()
    }));
    drop(ctx); // the application's handle: OpenSSL would free the context here
    assert!(cleaned.borrow().is_empty());
    assert_eq!(resume_finished(job), vec![fd(70)]);
    assert_eq!(
        *cleaned.borrow(),
        vec![fd(70)],
        "cleanup ran once the job released the context"
    );
}

#[test]
fn discarding_a_paused_job_skips_its_code_and_destructors_and_reuses_its_stack() {
    asyncjob::init_thread(1, 0).unwrap();
    let drops = Rc::new(Cell::new(0));
    let captured = DropCounter(drops.clone());
    let ran_on = Rc::new(Cell::new(false));
    let r = ran_on.clone();
    let ctx = WaitCtx::new();
    let cleaned = Rc::new(Cell::new(0));
    let c = cleaned.clone();
    ctx.set_wait_fd(
        asyncjob::WaitKey::from_addr(1),
        fd(1),
        std::ptr::null_mut(),
        Some(Box::new(move |_, _, _| c.set(c.get() + 1))),
    );
    let job = paused(asyncjob::start(Some(&ctx), move || {
        let _owned = &captured;
        asyncjob::pause();
        r.set(true);
    }));
    let id = job.id();
    // SAFETY: the job's stack holds only plain data and a drop counter whose skipped destructor
    // breaks nothing.
    unsafe { job.discard() };
    // The job let go of its wait context: dropping the test's handle frees it at once.
    drop(ctx);
    assert_eq!(
        cleaned.get(),
        1,
        "the discarded job released its wait context"
    );
    assert!(!ran_on.get(), "the job's code did not run again");
    assert_eq!(drops.get(), 0, "nothing on the job's stack was dropped");
    assert_eq!(
        Rc::strong_count(&drops),
        2,
        "the captured counter was leaked, not freed"
    );
    assert_eq!(
        Rc::strong_count(&ran_on),
        2,
        "the captured flag was leaked too"
    );
    // Take back the two handles the discarded closure leaked, so that leak checkers (ci step-12
    // runs this under Valgrind) see this test free everything it allocated.
    // SAFETY: each count was raised by a clone moved into the discarded closure, whose memory was
    // given up without dropping it: nothing else will ever decrement them.
    unsafe {
        Rc::decrement_strong_count(Rc::as_ptr(&drops));
        Rc::decrement_strong_count(Rc::as_ptr(&ran_on));
    }
    assert_eq!(
        asyncjob::pool_stats(),
        Some(PoolStats {
            max_size: 1,
            created: 1,
            idle: 1
        })
    );
    // A pool of one still has its job: the discarded one, ready for reuse.
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let job = paused(asyncjob::start(None, move || {
        s.set(asyncjob::current_job());
        asyncjob::pause();
        5
    }));
    assert_eq!(seen.get(), Some(id));
    assert_eq!(resume_finished(job), 5);
    assert_eq!(
        asyncjob::cleanup_thread(),
        Ok(()),
        "no job is outstanding any more"
    );
}

#[test]
fn a_paused_job_dropped_while_the_thread_unwinds_is_still_torn_down() {
    let drops = Rc::new(Cell::new(0));
    let d = drops.clone();
    let job = paused(asyncjob::start(None, move || {
        let _local = DropCounter(d);
        asyncjob::pause();
    }));
    // The job's handle is dropped during the unwind of an unrelated panic: its cancellation unwinds
    // on the job's own stack, is caught at the job's root, and the outer unwind carries on.
    let outer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _held = job;
        panic!("outer panic");
    }));
    assert_eq!(
        outer.unwrap_err().downcast_ref::<&str>(),
        Some(&"outer panic")
    );
    assert_eq!(drops.get(), 1);
    assert_eq!(asyncjob::pool_stats().map(|s| s.idle), Some(1));
    assert_eq!(finished(asyncjob::start(None, || 6)), 6);
}

/// The MXCSR rounding-control bits (13-14), for the floating-point test below.
#[cfg(all(target_arch = "x86_64", not(windows)))]
mod fp {
    pub const ROUNDING: u32 = 0x6000;
    pub const ROUND_ZERO: u32 = 0x6000;

    pub fn mxcsr() -> u32 {
        let mut v: u32 = 0;
        // SAFETY: stmxcsr stores 4 bytes into `v`.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
        v
    }

    pub fn set_mxcsr(v: u32) {
        // SAFETY: loads an MXCSR value read from the processor with only its rounding bits changed.
        unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly)) };
    }
}

/// With the asm backends a job begins with the floating-point control state of the thread that
/// starts it, as a called function would (and as OpenSSL's jobs do, whose switch keeps no
/// floating-point state), also when its stack comes from the pool after an earlier job changed the
/// state and finished; a job that pauses keeps its own state across the pause, and the starter gets
/// its own back.
#[cfg(all(target_arch = "x86_64", not(windows)))]
#[test]
fn a_job_begins_with_the_starters_rounding_mode_and_keeps_its_own_across_a_pause() {
    use fp::{ROUND_ZERO, ROUNDING, mxcsr, set_mxcsr};
    let orig = mxcsr();
    let rounding = || mxcsr() & ROUNDING;
    // An earlier job leaves round-to-zero behind on its stack's last run.
    let first = finished(asyncjob::start(None, move || {
        set_mxcsr((mxcsr() & !ROUNDING) | ROUND_ZERO);
        rounding()
    }));
    let after_first = rounding();
    // The next job gets the same stack from the pool, and the thread's own mode.
    let job = paused(asyncjob::start(None, move || {
        let at_start = rounding();
        set_mxcsr((mxcsr() & !ROUNDING) | ROUND_ZERO);
        asyncjob::pause();
        (at_start, rounding())
    }));
    let after_pause = rounding();
    let (at_start, after_resume) = match job.resume() {
        Ok(Resumed::Finished(r)) => r,
        _ => panic!("expected the job to finish"),
    };
    let after_finish = rounding();
    set_mxcsr(orig);
    let thread_mode = orig & ROUNDING;
    // The portable ucontext backend cannot begin a run afresh: its job continues on the pooled
    // stack with the state the earlier job left there.
    let begins_with = if asyncjob::backend().ends_with("-asm") {
        thread_mode
    } else {
        ROUND_ZERO
    };
    assert_eq!(first, ROUND_ZERO);
    assert_eq!(
        [
            after_first,
            at_start,
            after_pause,
            after_resume,
            after_finish
        ],
        [
            thread_mode,
            begins_with,
            thread_mode,
            ROUND_ZERO,
            thread_mode
        ],
        "thread after the first job, second job at its start, thread during the pause, job after \
         the resume, thread after the finish"
    );
}
