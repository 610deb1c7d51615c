//! `Driver`: many jobs driven by their wait fds and notifiers. Every fd test runs on each backend the
//! platform has (epoll and `poll(2)` on Linux); the notifier tests run everywhere, Windows included.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[cfg(unix)]
use asyncjob::WaitKey;
use asyncjob::{CancelReason, Completion, Driver, JobToken, Outcome, WaitCtx};

/// Long enough never to be reached by a working driver; only bounds a broken one.
const BOUND: Option<Duration> = Some(Duration::from_secs(20));
/// A turn that should find nothing ready.
const IDLE: Option<Duration> = Some(Duration::from_millis(20));

/// Sets its flag when dropped: shows that a cancelled job's stack was unwound.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

fn drain<R>(driver: &mut Driver<R>) -> Vec<Completion<R>> {
    driver.completions().collect()
}

fn finished<R: Copy>(c: &Completion<R>) -> Option<R> {
    match c.outcome {
        Outcome::Finished(v) => Some(v),
        _ => None,
    }
}

#[cfg(unix)]
mod fds {
    use std::os::fd::RawFd;

    /// A pipe whose read end does not block: `(read, write)`.
    pub fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: room for the two fds.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: our own fd.
        unsafe {
            let flags = libc::fcntl(fds[0], libc::F_GETFL);
            libc::fcntl(fds[0], libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        (fds[0], fds[1])
    }

    pub fn write_byte(fd: RawFd) {
        // SAFETY: one readable byte.
        assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
    }

    /// Read what is there; how many bytes (0 when nothing: the read end does not block).
    pub fn read_all(fd: RawFd) -> usize {
        let mut buf = [0u8; 64];
        // SAFETY: 64 writable bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        n.max(0) as usize
    }

    pub fn close(fd: RawFd) {
        // SAFETY: the test's own fd, not used afterwards.
        unsafe { libc::close(fd) };
    }

    /// Whether `fd` is readable right now.
    pub fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1 && p.revents & libc::POLLIN != 0
    }
}

/// Every backend this platform has: epoll and poll on Linux, poll on other POSIX systems.
#[cfg(unix)]
fn backends<R>() -> Vec<(&'static str, Driver<R>)> {
    let mut v = vec![("new", Driver::new().unwrap())];
    if cfg!(any(target_os = "linux", target_os = "android")) {
        v.push(("with_poll", Driver::with_poll().unwrap()));
    }
    v
}

/// Inside a job: register `fd` in the job's wait context under `key`.
#[cfg(unix)]
fn wait_on(key: usize, fd: std::os::fd::RawFd) {
    asyncjob::current_wait_ctx().unwrap().set_wait_fd(
        WaitKey::from_addr(key),
        fd,
        std::ptr::null_mut(),
        None,
    );
}

#[cfg(unix)]
#[test]
fn n_jobs_on_n_pipes_resume_exactly_when_their_own_fd_is_ready() {
    const N: usize = 24;
    for (name, mut driver) in backends::<usize>() {
        let pipes: Vec<_> = (0..N).map(|_| fds::pipe()).collect();
        let resumes: Rc<Vec<Cell<u32>>> = Rc::new((0..N).map(|_| Cell::new(0)).collect());
        let mut tokens = Vec::new();
        for (i, &(r, _)) in pipes.iter().enumerate() {
            let resumes = resumes.clone();
            tokens.push(
                driver
                    .spawn(move || {
                        wait_on(1, r);
                        loop {
                            asyncjob::pause();
                            resumes[i].set(resumes[i].get() + 1);
                            if fds::read_all(r) > 0 {
                                return i;
                            }
                        }
                    })
                    .unwrap(),
            );
        }
        assert_eq!(driver.len(), N);
        assert_eq!(driver.turn(IDLE).unwrap(), 0, "{name}: nothing is ready");
        // A shuffled order (a fixed linear congruential sequence).
        let mut order: Vec<usize> = (0..N).collect();
        let mut x = 12345u64;
        for i in (1..N).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        for (done, &k) in order.iter().enumerate() {
            fds::write_byte(pipes[k].1);
            assert_eq!(driver.turn(BOUND).unwrap(), 1, "{name}: job {k} alone runs");
            let c = drain(&mut driver);
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].token, tokens[k]);
            assert_eq!(finished(&c[0]), Some(k));
            let total: u32 = resumes.iter().map(Cell::get).sum();
            assert_eq!(total as usize, done + 1, "{name}: zero spurious resumes");
            assert_eq!(resumes[k].get(), 1);
        }
        assert!(driver.is_empty());
        assert_eq!(driver.stats().resumes, N as u64);
        for (r, w) in pipes {
            fds::close(r);
            fds::close(w);
        }
    }
}

#[cfg(unix)]
#[test]
fn an_fd_number_closed_and_reused_in_one_round_is_waited_on() {
    for (name, mut driver) in backends::<()>() {
        let (r1, w1) = fds::pipe();
        let new_pipe = Rc::new(Cell::new((-1, -1)));
        let np = new_pipe.clone();
        driver
            .spawn(move || {
                let ctx = asyncjob::current_wait_ctx().unwrap();
                ctx.set_wait_fd(WaitKey::from_addr(1), r1, std::ptr::null_mut(), None);
                asyncjob::pause();
                assert_eq!(fds::read_all(r1), 1);
                // One round: clear the fd, then close it and open another pipe under the same
                // number (dup2 does both at once, so no other thread can take the number between).
                assert!(ctx.clear_fd(WaitKey::from_addr(1)));
                let (fresh, w2) = fds::pipe();
                // SAFETY: both fds are ours; r1's old file (its only read end) is closed by dup2.
                assert_eq!(unsafe { libc::dup2(fresh, r1) }, r1);
                fds::close(fresh);
                let r2 = r1;
                np.set((r2, w2));
                ctx.set_wait_fd(WaitKey::from_addr(1), r2, std::ptr::null_mut(), None);
                asyncjob::pause();
                assert_eq!(fds::read_all(r2), 1);
            })
            .unwrap();
        fds::write_byte(w1);
        assert_eq!(driver.turn(BOUND).unwrap(), 1);
        let (r2, w2) = new_pipe.get();
        assert_eq!(
            driver.turn(IDLE).unwrap(),
            0,
            "{name}: the new pipe is empty"
        );
        fds::write_byte(w2);
        assert_eq!(
            driver.turn(BOUND).unwrap(),
            1,
            "{name}: the new file is waited on"
        );
        let c = drain(&mut driver);
        assert!(matches!(c[0].outcome, Outcome::Finished(())), "{name}");
        fds::close(w1);
        fds::close(r2);
        fds::close(w2);
    }
}

#[cfg(unix)]
#[test]
fn one_fd_shared_by_two_jobs_wakes_both_and_stays_registered_for_the_last() {
    for (name, mut driver) in backends::<&'static str>() {
        let (r, w) = fds::pipe();
        let resumes = Rc::new(Cell::new(0));
        let ra = resumes.clone();
        driver
            .spawn(move || {
                wait_on(1, r);
                asyncjob::pause();
                ra.set(ra.get() + 1);
                "a"
            })
            .unwrap();
        let rb = resumes.clone();
        driver
            .spawn(move || {
                wait_on(2, r);
                loop {
                    asyncjob::pause();
                    rb.set(rb.get() + 1);
                    if fds::read_all(r) > 0 {
                        return "b";
                    }
                }
            })
            .unwrap();
        assert_eq!(driver.turn(IDLE).unwrap(), 0);
        fds::write_byte(w);
        // Both jobs wake: A finishes (its registration goes), B reads the byte or finds it gone.
        assert_eq!(driver.turn(BOUND).unwrap(), 2, "{name}: both woken");
        assert_eq!(resumes.get(), 2);
        let done: Vec<_> = drain(&mut driver).iter().filter_map(finished).collect();
        assert!(done.contains(&"a"), "{name}: {done:?}");
        fds::read_all(r);
        if !done.contains(&"b") {
            assert_eq!(driver.turn(IDLE).unwrap(), 0, "{name}: B waits on");
            fds::write_byte(w);
            assert_eq!(
                driver.turn(BOUND).unwrap(),
                1,
                "{name}: B is still registered"
            );
            assert_eq!(finished(&drain(&mut driver)[0]), Some("b"));
        }
        assert!(driver.is_empty());
        fds::close(r);
        fds::close(w);
    }
}

#[test]
fn a_notification_before_the_pause_is_not_lost() {
    let mut driver = Driver::new().unwrap();
    let token = driver
        .spawn(|| {
            let notifier = asyncjob::current_notifier().unwrap();
            thread::spawn(move || notifier.notify()).join().unwrap();
            asyncjob::pause();
            7
        })
        .unwrap();
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    let c = drain(&mut driver);
    assert_eq!((c[0].token, finished(&c[0])), (token, Some(7)));
}

#[test]
fn a_notification_from_another_thread_after_the_pause_wakes_the_job() {
    let mut driver = Driver::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let resumes = Rc::new(Cell::new(0));
    let r = resumes.clone();
    driver
        .spawn(move || {
            for round in 0..3 {
                tx.send(asyncjob::current_notifier().unwrap()).unwrap();
                asyncjob::pause();
                r.set(r.get() + 1);
                assert_eq!(r.get(), round + 1);
            }
            "done"
        })
        .unwrap();
    for round in 0..3 {
        let notifier = rx.recv().unwrap();
        assert_eq!(driver.turn(IDLE).unwrap(), 0, "not notified yet");
        assert_eq!(resumes.get(), round);
        let t = thread::spawn(move || notifier.notify());
        assert_eq!(driver.turn(BOUND).unwrap(), 1, "round {round}");
        t.join().unwrap();
    }
    assert_eq!(finished(&drain(&mut driver)[0]), Some("done"));
}

#[test]
fn many_jobs_notified_from_many_threads_each_resume_once_per_notification() {
    const N: usize = 32;
    let mut driver = Driver::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let resumes = Rc::new(Cell::new(0));
    for i in 0..N {
        let tx = tx.clone();
        let r = resumes.clone();
        driver
            .spawn(move || {
                tx.send(asyncjob::current_notifier().unwrap()).unwrap();
                asyncjob::pause();
                r.set(r.get() + 1);
                i
            })
            .unwrap();
    }
    let notifiers: Vec<_> = rx.try_iter().collect();
    assert_eq!(notifiers.len(), N);
    let threads: Vec<_> = notifiers
        .into_iter()
        .map(|n| thread::spawn(move || n.notify()))
        .collect();
    let mut done = 0;
    while done < N {
        let ran = driver.turn(BOUND).unwrap();
        assert!(ran > 0, "each turn makes progress");
        done += drain(&mut driver).len();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(resumes.get(), N, "no spurious resumes");
}

#[test]
fn status_err_cancels_the_job_and_unwinds_it() {
    let mut driver = Driver::<u8>::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let token = driver
        .spawn(move || {
            let _guard = DropFlag(d);
            asyncjob::pause(); // nothing to wait on: next turn
            asyncjob::current_wait_ctx()
                .unwrap()
                .set_status(WaitCtx::STATUS_ERR);
            asyncjob::pause();
            unreachable!("cancelled at the pause")
        })
        .unwrap();
    assert!(!dropped.get());
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert!(dropped.get(), "the job's destructors ran");
    let c = drain(&mut driver);
    assert_eq!(c[0].token, token);
    assert!(matches!(
        c[0].outcome,
        Outcome::Cancelled(CancelReason::StatusErr)
    ));
    assert!(driver.is_empty() && !driver.contains(token));
}

#[cfg(unix)]
#[test]
fn eagain_resumes_on_the_next_turn_once() {
    for (name, mut driver) in backends::<()>() {
        let (r, w) = fds::pipe();
        let resumes = Rc::new(Cell::new(0));
        let rs = resumes.clone();
        driver
            .spawn(move || {
                wait_on(1, r);
                let ctx = asyncjob::current_wait_ctx().unwrap();
                ctx.set_status(WaitCtx::STATUS_EAGAIN);
                asyncjob::pause();
                rs.set(1);
                asyncjob::pause(); // waits on the fd again
                rs.set(2);
            })
            .unwrap();
        assert_eq!(
            driver.turn(BOUND).unwrap(),
            1,
            "{name}: EAGAIN: resumed though the fd is not ready"
        );
        assert_eq!(resumes.get(), 1);
        assert_eq!(
            driver.turn(IDLE).unwrap(),
            0,
            "{name}: the status was consumed"
        );
        fds::write_byte(w);
        assert_eq!(driver.turn(BOUND).unwrap(), 1);
        assert_eq!(resumes.get(), 2);
        fds::close(r);
        fds::close(w);
    }
}

#[test]
fn a_pause_with_nothing_to_wait_on_resumes_on_the_next_turn() {
    let mut driver = Driver::new().unwrap();
    let resumes = Rc::new(Cell::new(0));
    let rs = resumes.clone();
    driver
        .spawn(move || {
            for _ in 0..3 {
                asyncjob::pause();
                rs.set(rs.get() + 1);
            }
        })
        .unwrap();
    for turn in 1..=3 {
        assert_eq!(driver.turn(BOUND).unwrap(), 1);
        assert_eq!(resumes.get(), turn, "one resume per turn");
    }
    assert!(driver.is_empty());
    assert_eq!(
        driver.turn(BOUND).unwrap(),
        0,
        "nothing to wait for: returns at once"
    );
}

#[test]
fn an_expired_deadline_cancels_the_job() {
    let mut driver = Driver::<()>::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let d = dropped.clone();
    let (tx, _rx) = mpsc::channel();
    let token = driver
        .spawn_with_deadline(Instant::now() + Duration::from_millis(30), move || {
            let _guard = DropFlag(d);
            // Waits for a notification that never comes.
            tx.send(asyncjob::current_notifier().unwrap()).unwrap();
            asyncjob::pause();
            unreachable!("never notified")
        })
        .unwrap();
    let mut turns = 0;
    while driver.contains(token) {
        // Each turn waits at most until the deadline.
        driver.turn(BOUND).unwrap();
        turns += 1;
        assert!(turns < 1000);
    }
    assert!(dropped.get());
    let c = drain(&mut driver);
    assert!(matches!(
        c[0].outcome,
        Outcome::Cancelled(CancelReason::Deadline)
    ));
    // A deadline removed in time does nothing.
    let t = driver
        .spawn_with_deadline(Instant::now(), asyncjob::pause)
        .unwrap();
    assert!(driver.set_deadline(t, None));
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert!(matches!(
        drain(&mut driver)[0].outcome,
        Outcome::Finished(())
    ));
}

#[cfg(unix)]
#[test]
fn a_pool_of_one_queues_the_second_job_and_starts_it_when_the_first_ends() {
    asyncjob::init_thread(1, 1).unwrap();
    for (name, mut driver) in backends::<&'static str>() {
        let (r, w) = fds::pipe();
        let b_ran = Rc::new(Cell::new(false));
        let a = driver
            .spawn(move || {
                wait_on(1, r);
                while fds::read_all(r) == 0 {
                    asyncjob::pause();
                }
                "a"
            })
            .unwrap();
        let br = b_ran.clone();
        let b = driver
            .spawn(move || {
                br.set(true);
                "b"
            })
            .unwrap();
        assert_eq!((driver.len(), driver.queued()), (2, 1), "{name}");
        assert_eq!(driver.stats().starts_refused, 1);
        for _ in 0..5 {
            assert_eq!(driver.turn(IDLE).unwrap(), 0, "{name}");
        }
        let stats = driver.stats();
        assert_eq!(
            (stats.starts, stats.starts_refused, stats.resumes),
            (1, 1, 0),
            "{name}: idle turns neither retried the start nor resumed anything"
        );
        assert!(!b_ran.get());
        fds::write_byte(w);
        assert_eq!(
            driver.turn(BOUND).unwrap(),
            2,
            "{name}: A resumed, B started"
        );
        let c = drain(&mut driver);
        let got: Vec<_> = c.iter().map(|c| (c.token, finished(c))).collect();
        assert_eq!(got, vec![(a, Some("a")), (b, Some("b"))]);
        assert!(driver.is_empty());
        fds::close(r);
        fds::close(w);
    }
    asyncjob::cleanup_thread().unwrap();
}

#[test]
fn panics_are_reported_with_their_payload() {
    let mut driver = Driver::<u32>::new().unwrap();
    let at_start = driver.spawn(|| panic!("at start")).unwrap();
    let later = driver
        .spawn(|| {
            asyncjob::pause();
            std::panic::panic_any(42u32)
        })
        .unwrap();
    let ok = driver.spawn(|| 5).unwrap();
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    let c = drain(&mut driver);
    assert_eq!(c.len(), 3);
    let payload_of = |token: JobToken| {
        c.iter()
            .find(|c| c.token == token)
            .map(|c| match &c.outcome {
                Outcome::Panicked(p) => p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<u32>().map(u32::to_string)),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(payload_of(at_start).as_deref(), Some("at start"));
    assert_eq!(payload_of(later).as_deref(), Some("42"));
    assert!(c.iter().any(|c| c.token == ok && finished(c) == Some(5)));
    // The pool is fine: another job runs.
    driver.spawn(|| 1).unwrap();
    assert_eq!(finished(&drain(&mut driver)[0]), Some(1));
}

#[cfg(unix)]
#[test]
fn the_driver_fd_is_readable_when_a_job_is_ready() {
    use std::os::fd::AsRawFd;
    let mut driver = Driver::<()>::new().unwrap();
    let me = driver.as_raw_fd();
    let (r, w) = fds::pipe();
    let (tx, rx) = mpsc::channel();
    driver
        .spawn(move || {
            wait_on(1, r);
            while fds::read_all(r) == 0 {
                asyncjob::pause();
            }
            asyncjob::current_wait_ctx()
                .unwrap()
                .clear_fd(WaitKey::from_addr(1));
            tx.send(asyncjob::current_notifier().unwrap()).unwrap();
            asyncjob::pause();
            asyncjob::pause(); // nothing to wait on: next turn
        })
        .unwrap();
    assert!(!fds::readable(me), "nothing ready");
    if cfg!(any(target_os = "linux", target_os = "android")) {
        // epoll: the job's own fd makes the driver's readable.
        fds::write_byte(w);
        assert!(fds::readable(me), "a job's fd is ready");
    } else {
        fds::write_byte(w);
    }
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert!(!fds::readable(me), "waiting for the notification");
    let n = rx.recv().unwrap();
    thread::spawn(move || n.notify()).join().unwrap();
    assert!(fds::readable(me), "a job was notified");
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert!(fds::readable(me), "a job waits for the next turn");
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert!(driver.is_empty());
    assert!(!fds::readable(me), "all done");
    fds::close(r);
    fds::close(w);
}

#[cfg(unix)]
#[test]
fn the_driver_fd_is_readable_after_a_spawn_that_left_next_turn_work() {
    use std::os::fd::AsRawFd;
    for (name, mut driver) in backends::<u32>() {
        let me = driver.as_raw_fd();
        // An outer loop sleeping on the driver's fd after this spawn must be woken: the job paused
        // with nothing to wait on, so it goes on at the next turn.
        driver
            .spawn(|| {
                asyncjob::pause();
                7
            })
            .unwrap();
        assert!(fds::readable(me), "{name}: next-turn work after a spawn");
        assert_eq!(driver.turn(BOUND).unwrap(), 1, "{name}");
        assert_eq!(finished(&drain(&mut driver)[0]), Some(7), "{name}");
        // The same for a job that asked to be retried (EAGAIN) at its first pause.
        driver
            .spawn(|| {
                let ctx = asyncjob::current_wait_ctx().unwrap();
                ctx.set_status(WaitCtx::STATUS_EAGAIN);
                asyncjob::pause();
                8
            })
            .unwrap();
        assert!(fds::readable(me), "{name}: an EAGAIN retry after a spawn");
        assert_eq!(driver.turn(BOUND).unwrap(), 1, "{name}");
        assert_eq!(finished(&drain(&mut driver)[0]), Some(8), "{name}");
        assert!(!fds::readable(me), "{name}: all done");
    }
}

#[cfg(unix)]
#[test]
fn cancel_deregisters_the_fds_and_unwinds_the_job_and_runs_its_cleanups() {
    for (name, mut driver) in backends::<()>() {
        let (r, w) = fds::pipe();
        let dropped = Rc::new(Cell::new(false));
        let cleaned = Rc::new(Cell::new(false));
        let (d, c) = (dropped.clone(), cleaned.clone());
        let token = driver
            .spawn(move || {
                let _guard = DropFlag(d);
                asyncjob::current_wait_ctx().unwrap().set_wait_fd(
                    WaitKey::from_addr(1),
                    r,
                    std::ptr::null_mut(),
                    Some(Box::new(move |_, fd, _| {
                        fds::close(fd);
                        c.set(true);
                    })),
                );
                asyncjob::pause();
                unreachable!("cancelled")
            })
            .unwrap();
        // A second job on another pipe: the cancelled job's fd leaves its wait untouched.
        let (r2, w2) = fds::pipe();
        let other = driver
            .spawn(move || {
                wait_on(1, r2);
                while fds::read_all(r2) == 0 {
                    asyncjob::pause();
                }
            })
            .unwrap();
        assert!(driver.cancel(token), "{name}");
        assert!(
            dropped.get() && cleaned.get(),
            "{name}: destructors and cleanups ran"
        );
        assert!(!driver.cancel(token), "{name}: a stale token names nothing");
        assert!(
            drain(&mut driver).is_empty(),
            "{name}: cancel reports nothing"
        );
        // The closed fd's number may be reused by the next pipe: it must not wake anyone wrongly.
        let (r3, w3) = fds::pipe();
        fds::write_byte(w3);
        assert_eq!(driver.turn(IDLE).unwrap(), 0, "{name}");
        fds::write_byte(w2);
        assert_eq!(driver.turn(BOUND).unwrap(), 1, "{name}");
        assert_eq!(drain(&mut driver)[0].token, other);
        for fd in [w, r2, w2, r3, w3] {
            fds::close(fd);
        }
    }
}

#[test]
fn dropping_the_driver_cancels_every_job_and_queued_closure() {
    asyncjob::init_thread(2, 2).unwrap();
    let flags: Vec<_> = (0..4).map(|_| Rc::new(Cell::new(false))).collect();
    {
        let mut driver = Driver::<()>::new().unwrap();
        for f in &flags {
            let guard = DropFlag(f.clone());
            driver
                .spawn(move || {
                    let _guard = guard;
                    let _ = asyncjob::current_notifier();
                    asyncjob::pause();
                })
                .unwrap();
        }
        assert_eq!((driver.len(), driver.queued()), (4, 2));
        assert!(flags.iter().all(|f| !f.get()));
    }
    assert!(flags.iter().all(|f| f.get()));
    let pool = asyncjob::pool_stats().unwrap();
    assert_eq!(pool.idle, pool.created, "every job is back in the pool");
    asyncjob::cleanup_thread().unwrap();
}

#[test]
fn turn_and_spawn_inside_a_job_are_refused() {
    let r = asyncjob::start(None, || {
        let mut inner = Driver::<()>::new().unwrap();
        (inner.turn(IDLE).err(), inner.spawn(|| ()).err())
    })
    .unwrap();
    let asyncjob::Started::Finished((turn, spawn)) = r else {
        panic!("expected the job to finish")
    };
    assert_eq!(turn, Some(asyncjob::Error::Nested));
    assert_eq!(spawn, Some(asyncjob::Error::Nested));
}

#[test]
fn a_cancelled_queued_job_does_not_hold_back_later_spawns() {
    asyncjob::init_thread(1, 1).unwrap();
    let mut driver = Driver::<u8>::new().unwrap();
    let a = driver
        .spawn(|| {
            let _ = asyncjob::current_notifier();
            asyncjob::pause();
            1
        })
        .unwrap();
    let b = driver.spawn(|| 2).unwrap();
    assert_eq!(driver.queued(), 1);
    assert!(driver.cancel(b));
    assert!(driver.cancel(a));
    assert_eq!((driver.len(), driver.queued()), (0, 0));
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let c = driver
        .spawn(move || {
            r.set(true);
            3
        })
        .unwrap();
    assert!(ran.get(), "the pool had room: started at once");
    let done = drain(&mut driver);
    assert_eq!((done[0].token, finished(&done[0])), (c, Some(3)));
    asyncjob::cleanup_thread().unwrap();
}

#[test]
fn a_panicking_fd_cleanup_reaches_the_caller_of_cancel_with_the_driver_consistent() {
    let mut driver = Driver::<()>::new().unwrap();
    let token = driver
        .spawn(|| {
            #[cfg(unix)]
            let fd = -1;
            #[cfg(windows)]
            let fd = std::ptr::null_mut();
            asyncjob::current_wait_ctx().unwrap().set_wait_fd(
                asyncjob::WaitKey::from_addr(1),
                fd,
                std::ptr::null_mut(),
                Some(Box::new(|_, _, _| panic!("cleanup"))),
            );
            let _ = asyncjob::current_notifier();
            asyncjob::pause();
        })
        .unwrap();
    let other = driver.spawn(asyncjob::pause).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.cancel(token)));
    let payload = caught.expect_err("the cleanup's panic propagates");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"cleanup"));
    assert!(!driver.contains(token) && driver.contains(other));
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert!(driver.is_empty());
}

#[cfg(unix)]
#[test]
fn an_fd_already_readable_at_the_pause_is_ready() {
    for (name, mut driver) in backends::<usize>() {
        let (r, w) = fds::pipe();
        fds::write_byte(w);
        driver
            .spawn(move || {
                wait_on(1, r);
                asyncjob::pause();
                fds::read_all(r)
            })
            .unwrap();
        assert_eq!(driver.turn(BOUND).unwrap(), 1, "{name}");
        assert_eq!(finished(&drain(&mut driver)[0]), Some(1), "{name}");
        fds::close(r);
        fds::close(w);
    }
}

#[test]
fn a_new_job_never_sees_what_its_slot_held_before() {
    let mut driver = Driver::<u32>::new().unwrap();
    let (tx, rx) = mpsc::channel();
    // Job A: sets a status, takes its notifier, registers and clears an fd, and finishes once
    // notified; the engine keeps A's notifier afterwards.
    let a = driver
        .spawn(move || {
            let ctx = asyncjob::current_wait_ctx().unwrap();
            ctx.set_status(WaitCtx::STATUS_OK);
            tx.send(asyncjob::current_notifier().unwrap()).unwrap();
            asyncjob::pause();
            1
        })
        .unwrap();
    let stale = rx.recv().unwrap();
    stale.notify();
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert_eq!(finished(&drain(&mut driver)[0]), Some(1));
    // Job B, in the slot A had: its context starts fresh, and A's notifier cannot wake it.
    let (tx, rx) = mpsc::channel();
    let b = driver
        .spawn(move || {
            let ctx = asyncjob::current_wait_ctx().unwrap();
            assert_eq!(ctx.status(), WaitCtx::STATUS_UNSUPPORTED);
            assert_eq!(ctx.changed_counts(), (0, 0));
            assert!(!ctx.awaits_notification());
            assert!(!ctx.take_notification());
            tx.send(asyncjob::current_notifier().unwrap()).unwrap();
            asyncjob::pause();
            2
        })
        .unwrap();
    assert_eq!(a.index(), b.index(), "B reuses A's slot");
    let fresh = rx.recv().unwrap();
    assert!(
        !fresh.ptr_eq(&stale),
        "a notifier still held outside is never handed out again"
    );
    stale.notify();
    assert_eq!(driver.turn(IDLE).unwrap(), 0, "A's notifier woke B");
    fresh.notify();
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert_eq!(finished(&drain(&mut driver)[0]), Some(2));
    // A context the application still holds is not reused either: changing it later cannot reach
    // the next job of its slot.
    let c = driver
        .spawn(|| {
            asyncjob::pause();
            3
        })
        .unwrap();
    let held = driver.wait_ctx(c).unwrap();
    assert_eq!(driver.turn(BOUND).unwrap(), 1);
    assert_eq!(finished(&drain(&mut driver)[0]), Some(3));
    held.set_status(WaitCtx::STATUS_ERR);
    let d = driver
        .spawn(|| asyncjob::current_wait_ctx().unwrap().status() as u32)
        .unwrap();
    assert_eq!(c.index(), d.index(), "D reuses C's slot");
    assert_eq!(
        finished(&drain(&mut driver)[0]),
        Some(WaitCtx::STATUS_UNSUPPORTED as u32)
    );
}
