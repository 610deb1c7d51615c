//! Fault injection (issue 8): wait-context fd cleanups and wake-up callbacks that panic or call back
//! into the API, paused jobs dropped from inside cleanups and from inside other jobs, and the default
//! stack allocator running out of address space or memory map entries.
//!
//! Every case has one defined outcome, documented on the public items of `wait_ctx.rs`:
//! * A panicking fd cleanup: the context's other cleanups still run (newest first), then the first
//!   panic goes on to whoever dropped the last handle. A context dropped while its thread is already
//!   unwinding (a panicking or cancelled job) swallows cleanup panics instead of aborting.
//! * Cleanups may call any asyncjob function; they run on whatever context dropped the last handle:
//!   the thread's own (a job finishing or being dropped there) or a job's (a job dropping it).
//! * No cleanup ever runs twice, and none runs for an fd removed with `clear_fd`.
//!
//! Cases that aborted the process before their fix run in a child copy of this binary, so that a
//! regression fails one test instead of killing the whole run.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::ptr;
use std::rc::Rc;

use asyncjob::{AsyncFd, Error, FdCleanup, Job, Resumed, Started, WaitCallback, WaitCtx, WaitKey};

type Log = Rc<RefCell<Vec<String>>>;

fn key(n: usize) -> WaitKey {
    WaitKey::from_addr(0x2000 + n)
}

/// A wait fd value for tests: an int on POSIX, a HANDLE-sized value on Windows.
fn fd(n: i32) -> AsyncFd {
    #[cfg(unix)]
    return n;
    #[cfg(windows)]
    return n as usize as AsyncFd;
}

fn note(log: &Log, what: impl Into<String>) {
    log.borrow_mut().push(what.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// A cleanup that records its name.
fn logged(log: &Log, name: &'static str) -> Option<FdCleanup> {
    let log = log.clone();
    Some(Box::new(move |_, _, _| note(&log, name)))
}

/// A cleanup that records its name, then panics with `cleanup <name>`.
fn panicking(log: &Log, name: &'static str) -> Option<FdCleanup> {
    let log = log.clone();
    Some(Box::new(move |_, _, _| {
        note(&log, name);
        panic!("cleanup {name}")
    }))
}

/// Records `name` when dropped.
struct Noisy(Log, &'static str);
impl Drop for Noisy {
    fn drop(&mut self) {
        note(&self.0, self.1);
    }
}

/// Panics with `drop <name>` when dropped (after recording it).
struct PanicOnDrop(Log, &'static str);
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        note(&self.0, self.1);
        panic!("drop {}", self.1);
    }
}

fn catch<R>(f: impl FnOnce() -> R) -> Result<R, Box<dyn Any + Send>> {
    panic::catch_unwind(AssertUnwindSafe(f))
}

fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

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

fn idle() -> usize {
    asyncjob::pool_stats().map_or(0, |s| s.idle)
}

const ROLE: &str = "ASYNCJOB_FAULTS_CHILD";

/// Run `body` in a child copy of this binary that runs only the test `name` (the caller), so that an
/// abort fails this one test. The child must finish normally.
fn in_child(name: &str, extra_env: &[(&str, &str)], body: impl FnOnce()) {
    if std::env::var(ROLE).as_deref() == Ok(name) {
        body();
        println!("child finished: {name}");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        name,
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .env(ROLE, name)
    .env("RUST_BACKTRACE", "0");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("child finished: {name}")),
        "child {name} failed: {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

// ---- fd cleanups that panic ------------------------------------------------------------------------

#[test]
fn a_panicking_cleanup_at_drop_lets_the_others_run_then_the_first_panic_propagates() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "1"));
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), panicking(&log, "2"));
    ctx.set_wait_fd(key(3), fd(3), ptr::null_mut(), logged(&log, "3"));
    ctx.set_wait_fd(key(4), fd(4), ptr::null_mut(), panicking(&log, "4"));
    let payload = catch(|| drop(ctx)).expect_err("the cleanup's panic reaches the dropper");
    assert_eq!(message(&*payload), "cleanup 4", "the first (newest) panic");
    assert_eq!(
        entries(&log),
        ["4", "3", "2", "1"],
        "every cleanup ran once, newest first"
    );
}

#[test]
fn a_cleared_fd_whose_cleanup_panics_on_drop_does_not_stop_the_other_cleanups() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "1"));
    // Registered in a job round, then cleared in the next: marked deleted, freed with the context.
    let guard = PanicOnDrop(log.clone(), "cleared");
    let job = paused(asyncjob::start(Some(&ctx), move || {
        let c = asyncjob::current_wait_ctx().unwrap();
        c.set_wait_fd(
            key(2),
            fd(2),
            ptr::null_mut(),
            Some(Box::new(move |_, _, _| drop(guard))),
        );
        asyncjob::pause();
        assert!(c.clear_fd(key(2)));
    }));
    resume_finished(job);
    assert_eq!(ctx.changed_counts(), (0, 1));
    ctx.set_wait_fd(key(3), fd(3), ptr::null_mut(), logged(&log, "3"));
    let payload = catch(|| drop(ctx)).expect_err("the destructor's panic propagates");
    assert_eq!(message(&*payload), "drop cleared");
    assert_eq!(entries(&log), ["3", "cleared", "1"]);
}

#[test]
fn a_cleanup_panicking_when_a_finishing_job_drops_the_last_handle_reaches_the_resumer() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), panicking(&log, "newer"));
    let job = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        7
    }));
    let id = job.id();
    drop(ctx); // the job holds the last handle now
    assert!(entries(&log).is_empty());
    let idle_before = idle();
    let payload = catch(|| job.resume()).expect_err("the cleanup's panic reaches the resumer");
    assert_eq!(message(&*payload), "cleanup newer");
    assert_eq!(entries(&log), ["newer", "older"]);
    // The job was back in the pool before its context was let go of; the result (7) is lost.
    assert_eq!(idle(), idle_before + 1);
    let again = paused(asyncjob::start(None, || {
        asyncjob::pause();
        8
    }));
    assert_eq!(again.id(), id, "the same job, reused last in, first out");
    assert_eq!(resume_finished(again), 8);
}

#[test]
fn a_job_panic_wins_over_a_cleanup_panic_when_the_job_held_the_last_handle() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), panicking(&log, "newer"));
    let job = paused(asyncjob::start(Some(&ctx), || -> u8 {
        asyncjob::pause();
        panic!("the job's own panic")
    }));
    drop(ctx);
    let payload = catch(|| job.resume()).expect_err("a panic reaches the resumer");
    assert_eq!(entries(&log), ["newer", "older"]);
    assert_eq!(
        message(&*payload),
        "the job's own panic",
        "the first panic wins, as among cleanups"
    );
    assert_eq!(idle(), 1);
}

#[test]
fn a_cleanup_panicking_when_a_job_is_dropped_on_the_thread_reaches_the_dropper() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), panicking(&log, "newer"));
    let job = paused(asyncjob::start(Some(&ctx), move || {
        let _on_stack = Noisy(Log::default(), "unused");
        asyncjob::pause();
    }));
    drop(ctx);
    let idle_before = idle();
    let payload = catch(|| drop(job)).expect_err("the cleanup's panic leaves Job::drop");
    assert_eq!(message(&*payload), "cleanup newer");
    assert_eq!(entries(&log), ["newer", "older"]);
    assert_eq!(idle(), idle_before + 1);
    assert_eq!(finished(asyncjob::start(None, || 5)), 5);
}

#[test]
fn a_cleanup_panicking_while_a_cancelled_job_unwinds_is_contained() {
    in_child(
        "a_cleanup_panicking_while_a_cancelled_job_unwinds_is_contained",
        &[],
        || {
            let log = Log::default();
            let ctx = WaitCtx::new();
            ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "a"));
            ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), panicking(&log, "b"));
            ctx.set_wait_fd(key(3), fd(3), ptr::null_mut(), logged(&log, "c"));
            // The job's closure owns the only handle: the context is dropped while the job unwinds.
            let job = paused(asyncjob::start(None, move || {
                let _owned = ctx;
                asyncjob::pause();
            }));
            drop(job);
            assert_eq!(entries(&log), ["c", "b", "a"]);
            assert_eq!(idle(), 1);
            assert_eq!(finished(asyncjob::start(None, || 3)), 3);
        },
    );
}

#[test]
fn a_cleanup_panicking_while_a_panicking_job_unwinds_is_contained() {
    in_child(
        "a_cleanup_panicking_while_a_panicking_job_unwinds_is_contained",
        &[],
        || {
            let log = Log::default();
            let ctx = WaitCtx::new();
            ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "a"));
            ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), panicking(&log, "b"));
            let job = paused(asyncjob::start(None, move || {
                let _owned = ctx;
                asyncjob::pause();
                panic!("the job's own panic");
            }));
            let payload = catch(|| job.resume()).expect_err("the job's panic reaches the resumer");
            assert_eq!(message(&*payload), "the job's own panic");
            assert_eq!(entries(&log), ["b", "a"]);
            assert_eq!(finished(asyncjob::start(None, || 3)), 3);
        },
    );
}

#[test]
fn a_panicking_cleanup_and_a_callback_panicking_on_drop_do_not_abort() {
    in_child(
        "a_panicking_cleanup_and_a_callback_panicking_on_drop_do_not_abort",
        &[],
        || {
            let log = Log::default();
            let ctx = WaitCtx::new();
            ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), panicking(&log, "fd"));
            let bomb = PanicOnDrop(log.clone(), "callback");
            ctx.set_callback(Some(Rc::new(move || {
                let _ = &bomb;
                0
            })));
            let payload = catch(|| drop(ctx)).expect_err("a panic propagates");
            assert_eq!(message(&*payload), "cleanup fd", "the first panic wins");
            assert_eq!(entries(&log), ["fd", "callback"]);
        },
    );
}

// ---- fd cleanups that call back into the API -----------------------------------------------------

#[test]
fn a_cleanup_run_by_the_last_drop_on_the_thread_can_start_jobs() {
    let log = Log::default();
    let stash: Rc<RefCell<Option<Job<i32>>>> = Rc::default();
    let ctx = WaitCtx::new();
    let (l, s) = (log.clone(), stash.clone());
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            let r = finished(asyncjob::start(None, || 40 + 2));
            note(&l, format!("finished {r}"));
            let job = paused(asyncjob::start(None, || {
                asyncjob::pause();
                9
            }));
            *s.borrow_mut() = Some(job);
        })),
    );
    drop(ctx);
    assert_eq!(entries(&log), ["finished 42"]);
    let job = stash
        .borrow_mut()
        .take()
        .expect("the cleanup left a paused job");
    assert_eq!(resume_finished(job), 9);
}

#[test]
fn a_cleanup_run_by_a_finishing_job_can_start_a_job_on_the_same_pooled_stack() {
    let stash: Rc<RefCell<Option<Job<Option<asyncjob::JobId>>>>> = Rc::default();
    let ctx = WaitCtx::new();
    let s = stash.clone();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            let job = paused(asyncjob::start(None, || {
                let me = asyncjob::current_job();
                asyncjob::pause();
                me
            }));
            *s.borrow_mut() = Some(job);
        })),
    );
    let job = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        7
    }));
    let first = job.id();
    drop(ctx);
    assert_eq!(
        resume_finished(job),
        7,
        "the finishing job's result is intact"
    );
    let second = stash.borrow_mut().take().expect("started by the cleanup");
    assert_eq!(
        second.id(),
        first,
        "the finished job was already back in the pool"
    );
    assert_eq!(resume_finished(second), Some(first));
}

#[test]
fn a_cleanup_run_by_a_finishing_job_can_free_the_pool() {
    let ctx = WaitCtx::new();
    let result: Rc<RefCell<Option<Result<(), Error>>>> = Rc::default();
    let r = result.clone();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            *r.borrow_mut() = Some(asyncjob::cleanup_thread());
        })),
    );
    asyncjob::init_thread(2, 1).unwrap();
    let job = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        7
    }));
    drop(ctx);
    assert_eq!(resume_finished(job), 7);
    assert_eq!(*result.borrow(), Some(Ok(())));
    assert_eq!(asyncjob::pool_stats(), None, "the cleanup freed the pool");
    assert_eq!(
        finished(asyncjob::start(None, || 6)),
        6,
        "a new pool is made"
    );
}

#[test]
fn a_cleanup_run_inside_a_job_cannot_start_jobs_but_can_pause_the_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    let l = log.clone();
    ctx.set_wait_fd(
        key(2),
        fd(2),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            let nested = asyncjob::start(None, || 1);
            note(&l, format!("nested: {:?}", nested.err()));
            asyncjob::pause();
            note(&l, "resumed inside the cleanup");
        })),
    );
    let l = log.clone();
    let job = paused(asyncjob::start(None, move || {
        drop(ctx); // the last handle: the cleanups run here, on the job's stack
        note(&l, "dropped");
        5
    }));
    assert_eq!(entries(&log), ["nested: Some(Nested)"]);
    assert_eq!(resume_finished(job), 5);
    assert_eq!(
        entries(&log),
        [
            "nested: Some(Nested)",
            "resumed inside the cleanup",
            "older",
            "dropped"
        ]
    );
}

#[test]
fn a_job_paused_inside_a_cleanup_and_then_dropped_runs_the_remaining_cleanups() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    let l = log.clone();
    ctx.set_wait_fd(
        key(2),
        fd(2),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            note(&l, "pausing");
            asyncjob::pause();
            note(&l, "never");
        })),
    );
    let job = paused(asyncjob::start(None, move || {
        drop(ctx);
    }));
    drop(job); // cancels the job inside the cleanup
    assert_eq!(entries(&log), ["pausing", "older"]);
    assert_eq!(idle(), 1);
}

#[test]
fn a_cleanup_can_drop_the_last_handle_of_another_context() {
    let log = Log::default();
    let other = WaitCtx::new();
    other.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "y-a"));
    other.set_wait_fd(key(2), fd(2), ptr::null_mut(), logged(&log, "y-b"));
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(3), fd(3), ptr::null_mut(), logged(&log, "x-a"));
    let l = log.clone();
    ctx.set_wait_fd(
        key(4),
        fd(4),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            note(&l, "x-b");
            drop(other);
        })),
    );
    drop(ctx);
    assert_eq!(entries(&log), ["x-b", "y-b", "y-a", "x-a"]);
}

/// Touches its own context from its destructor: clears one fd and registers another.
struct Toucher {
    ctx: WaitCtx,
    log: Log,
}
impl Drop for Toucher {
    fn drop(&mut self) {
        let cleared = self.ctx.clear_fd(key(9));
        self.ctx
            .set_wait_fd(key(10), fd(10), ptr::null_mut(), logged(&self.log, "late"));
        note(&self.log, format!("toucher dropped, cleared: {cleared}"));
    }
}

#[test]
fn a_cleared_cleanup_whose_destructor_changes_the_same_context_sees_it_consistent() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(9), fd(9), ptr::null_mut(), logged(&log, "nine"));
    let toucher = Toucher {
        ctx: ctx.clone(), // a reference cycle until the fd is cleared
        log: log.clone(),
    };
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| drop(toucher))),
    );
    assert!(ctx.clear_fd(key(1)), "clears, dropping the cleanup unrun");
    assert_eq!(entries(&log), ["toucher dropped, cleared: true"]);
    assert_eq!(ctx.all_fds(), [fd(10)]);
    assert_eq!(ctx.changed_counts(), (1, 0));
    drop(ctx); // the cycle is gone, so this is the last handle
    assert_eq!(
        entries(&log),
        ["toucher dropped, cleared: true", "late"],
        "cleared fds never run their cleanup; the late one does"
    );
}

#[test]
fn a_cleanup_dropped_at_the_end_of_a_round_may_change_the_same_context() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    let toucher = Toucher {
        ctx: ctx.clone(),
        log: log.clone(),
    };
    let job = paused(asyncjob::start(Some(&ctx), move || {
        let c = asyncjob::current_wait_ctx().unwrap();
        c.set_wait_fd(key(9), fd(9), ptr::null_mut(), None);
        c.set_wait_fd(
            key(1),
            fd(1),
            ptr::null_mut(),
            Some(Box::new(move |_, _, _| drop(toucher))),
        );
        asyncjob::pause();
        assert!(c.clear_fd(key(1)), "an earlier round's fd: marked deleted");
        asyncjob::pause();
        // The round ended inside pause(): the deleted entry was freed, and its destructor cleared
        // fd 9 (an earlier round's: marked deleted) and added fd 10, in the new round.
        (c.changed_fds(), c.all_fds())
    }));
    let job = resume_paused(job);
    assert!(entries(&log).is_empty());
    let (changed, all) = resume_finished(job);
    assert_eq!(entries(&log), ["toucher dropped, cleared: true"]);
    assert_eq!(changed, (vec![fd(10)], vec![fd(9)]));
    assert_eq!(all, [fd(10)]);
    drop(ctx);
    assert_eq!(
        entries(&log),
        ["toucher dropped, cleared: true", "late"],
        "the context was freed"
    );
}

/// Starts a job when dropped, and records what `start` said.
struct StartOnDrop(Log);
impl Drop for StartOnDrop {
    fn drop(&mut self) {
        let said = match asyncjob::start(None, || 6) {
            Ok(Started::Finished(r)) => format!("finished {r}"),
            Ok(_) => "paused or no jobs".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        note(&self.0, format!("start on drop: {said}"));
    }
}

#[test]
fn a_cleanup_dropped_by_clear_fd_can_start_a_job_and_free_another_context() {
    let log = Log::default();
    let other = WaitCtx::new();
    other.set_wait_fd(
        key(7),
        fd(7),
        ptr::null_mut(),
        logged(&log, "other's cleanup"),
    );
    let starter = StartOnDrop(log.clone());
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            let _ = (&starter, &other);
            unreachable!("a cleared fd's cleanup never runs");
        })),
    );
    assert!(ctx.clear_fd(key(1)));
    assert_eq!(
        entries(&log),
        ["start on drop: finished 6", "other's cleanup"],
        "captures drop in declaration order"
    );
    assert_eq!(ctx.fd_count(), 0);
}

#[test]
fn a_cleanup_dropped_at_the_end_of_a_round_runs_inside_the_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    let starter = StartOnDrop(log.clone());
    let job = paused(asyncjob::start(Some(&ctx), move || {
        let c = asyncjob::current_wait_ctx().unwrap();
        c.set_wait_fd(
            key(1),
            fd(1),
            ptr::null_mut(),
            Some(Box::new(move |_, _, _| drop(starter))),
        );
        asyncjob::pause();
        assert!(c.clear_fd(key(1)));
        asyncjob::pause(); // the round ends in here, on the job's stack
    }));
    let job = resume_paused(job);
    assert!(entries(&log).is_empty());
    resume_finished(job);
    assert_eq!(entries(&log), ["start on drop: Nested"]);
}

#[test]
fn a_cleared_cleanup_panicking_on_drop_propagates_from_clear_fd_with_the_fd_gone() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    let bomb = PanicOnDrop(log.clone(), "bomb");
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), logged(&log, "keep"));
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| drop(bomb))),
    );
    let payload = catch(|| ctx.clear_fd(key(1))).expect_err("propagates");
    assert_eq!(message(&*payload), "drop bomb");
    assert_eq!(ctx.all_fds(), [fd(2)]);
    assert_eq!(ctx.changed_counts(), (1, 0));
    assert!(!ctx.clear_fd(key(1)), "already gone");
    drop(ctx);
    assert_eq!(entries(&log), ["bomb", "keep"]);
}

// ---- paused jobs dropped from cleanups and from other jobs ------------------------------------

/// A paused job with something on its stack that records its drop.
fn paused_noisy(log: &Log, name: &'static str) -> Job<()> {
    let l = log.clone();
    paused(asyncjob::start(None, move || {
        let _on_stack = Noisy(l, name);
        asyncjob::pause();
        unreachable!("resumed");
    }))
}

/// A cleanup that owns a paused job and drops it.
fn dropping(log: &Log, job: Job<()>) -> Option<FdCleanup> {
    let log = log.clone();
    Some(Box::new(move |_, _, _| {
        note(&log, "cleanup");
        drop(job);
    }))
}

#[test]
fn a_cleanup_run_by_the_last_drop_on_the_thread_can_drop_a_paused_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        dropping(&log, paused_noisy(&log, "b")),
    );
    let idle_before = idle();
    drop(ctx);
    assert_eq!(entries(&log), ["cleanup", "b"]);
    assert_eq!(idle(), idle_before + 1);
}

#[test]
fn a_cleanup_run_by_a_finishing_job_can_drop_another_paused_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        dropping(&log, paused_noisy(&log, "b")),
    );
    let a = paused(asyncjob::start(Some(&ctx), || {
        asyncjob::pause();
        1
    }));
    drop(ctx);
    let idle_before = idle();
    assert_eq!(resume_finished(a), 1);
    assert_eq!(entries(&log), ["cleanup", "b"]);
    assert_eq!(idle(), idle_before + 2, "both jobs are back in the pool");
    // Both stacks are fit for reuse.
    let x = paused(asyncjob::start(None, asyncjob::pause));
    let y = paused(asyncjob::start(None, asyncjob::pause));
    resume_finished(x);
    resume_finished(y);
}

#[test]
fn a_cleanup_run_by_a_dropped_job_can_drop_another_paused_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        dropping(&log, paused_noisy(&log, "b")),
    );
    let l = log.clone();
    let a = paused(asyncjob::start(Some(&ctx), move || {
        let _on_stack = Noisy(l, "a");
        asyncjob::pause();
    }));
    drop(ctx);
    let idle_before = idle();
    drop(a);
    assert_eq!(entries(&log), ["a", "cleanup", "b"]);
    assert_eq!(idle(), idle_before + 2);
}

#[test]
fn a_cleanup_run_inside_a_job_can_drop_another_paused_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        dropping(&log, paused_noisy(&log, "b")),
    );
    let l = log.clone();
    let a = paused(asyncjob::start(None, move || {
        drop(ctx); // last handle, on this job's stack: the paused job is dropped from in here
        note(&l, "a goes on");
        asyncjob::pause();
        2
    }));
    assert_eq!(entries(&log), ["cleanup", "b", "a goes on"]);
    assert_eq!(resume_finished(a), 2);
}

#[test]
fn a_cleanup_run_while_a_cancelled_job_unwinds_can_drop_another_paused_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        dropping(&log, paused_noisy(&log, "b")),
    );
    let l = log.clone();
    let a = paused(asyncjob::start(None, move || {
        let _owned = ctx; // dropped while `a` unwinds
        let _first = Noisy(l, "a");
        asyncjob::pause();
    }));
    let idle_before = idle();
    drop(a);
    assert_eq!(entries(&log), ["a", "cleanup", "b"]);
    assert_eq!(idle(), idle_before + 2);
}

#[test]
fn clearing_an_fd_drops_the_paused_job_its_cleanup_owns() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(
        key(1),
        fd(1),
        ptr::null_mut(),
        dropping(&log, paused_noisy(&log, "b")),
    );
    assert!(ctx.clear_fd(key(1)));
    assert_eq!(
        entries(&log),
        ["b"],
        "the cleanup did not run; its job was dropped"
    );
    drop(ctx);
    assert_eq!(entries(&log), ["b"]);
}

#[test]
fn a_paused_job_whose_cleanup_panics_dropped_inside_another_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    ctx.set_wait_fd(key(2), fd(2), ptr::null_mut(), panicking(&log, "newer"));
    let inner = paused(asyncjob::start(Some(&ctx), asyncjob::pause));
    drop(ctx);
    let l = log.clone();
    let outer = paused(asyncjob::start(None, move || {
        let caught = catch(move || drop(inner));
        note(&l, format!("caught: {}", message(&*caught.unwrap_err())));
        asyncjob::pause();
        3
    }));
    assert_eq!(entries(&log), ["newer", "older", "caught: cleanup newer"]);
    assert_eq!(resume_finished(outer), 3);
    assert_eq!(idle(), 2);
}

#[test]
fn a_panic_from_a_job_dropped_inside_another_job_reaches_the_outer_resumer() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), panicking(&log, "c"));
    let inner = paused(asyncjob::start(Some(&ctx), asyncjob::pause));
    drop(ctx);
    let l = log.clone();
    let outer = paused(asyncjob::start(None, move || {
        asyncjob::pause();
        drop(inner);
        note(&l, "not reached");
    }));
    let payload = catch(|| outer.resume()).expect_err("propagates through the outer job");
    assert_eq!(message(&*payload), "cleanup c");
    assert_eq!(entries(&log), ["c"]);
    assert_eq!(idle(), 2);
    assert_eq!(finished(asyncjob::start(None, || 1)), 1);
}

#[test]
fn a_cleanup_run_when_a_job_dropped_inside_another_job_ends_can_pause_the_outer_job() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    let l = log.clone();
    ctx.set_wait_fd(
        key(2),
        fd(2),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            note(&l, "pausing the outer job");
            asyncjob::pause();
            note(&l, "outer resumed");
        })),
    );
    let inner = paused(asyncjob::start(Some(&ctx), asyncjob::pause));
    drop(ctx);
    let l = log.clone();
    let outer = paused(asyncjob::start(None, move || {
        drop(inner); // ends `inner`; its context's cleanups run here, on this job's stack
        note(&l, "inner dropped");
        11
    }));
    assert_eq!(entries(&log), ["pausing the outer job"]);
    assert_eq!(idle(), 1, "the inner job is back in the pool already");
    assert_eq!(resume_finished(outer), 11);
    assert_eq!(
        entries(&log),
        [
            "pausing the outer job",
            "outer resumed",
            "older",
            "inner dropped"
        ]
    );
    assert_eq!(idle(), 2);
}

#[test]
fn an_outer_job_paused_by_a_cleanup_of_a_job_it_dropped_can_itself_be_dropped() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "older"));
    let l = log.clone();
    ctx.set_wait_fd(
        key(2),
        fd(2),
        ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            asyncjob::pause();
            note(&l, "never");
        })),
    );
    let inner = paused(asyncjob::start(Some(&ctx), asyncjob::pause));
    drop(ctx);
    let l = log.clone();
    let outer = paused(asyncjob::start(None, move || {
        let _local = Noisy(l.clone(), "outer unwound");
        drop(inner);
        note(&l, "never");
    }));
    drop(outer);
    assert_eq!(entries(&log), ["older", "outer unwound"]);
    assert_eq!(idle(), 2);
    assert_eq!(finished(asyncjob::start(None, || 1)), 1);
}

#[test]
fn a_cleanup_run_at_thread_exit_may_start_and_drop_jobs() {
    in_child(
        "a_cleanup_run_at_thread_exit_may_start_and_drop_jobs",
        &[],
        || {
            use std::sync::{Arc, Mutex};
            let seen: Arc<Mutex<Vec<String>>> = Arc::default();
            let s = seen.clone();
            std::thread::spawn(move || {
                thread_local! {
                    static KEEP: RefCell<Option<Job<()>>> = const { RefCell::new(None) };
                }
                let other = paused_noisy(&Log::default(), "other");
                let ctx = WaitCtx::new();
                let s2 = s.clone();
                ctx.set_wait_fd(
                    key(1),
                    fd(1),
                    ptr::null_mut(),
                    Some(Box::new(move |_, _, _| {
                        let started = asyncjob::start(None, || 5).map(|st| match st {
                            Started::Finished(r) => r,
                            _ => panic!("expected FINISH"),
                        });
                        s2.lock()
                            .unwrap()
                            .push(format!("start at exit: {started:?}"));
                        drop(other);
                        s2.lock().unwrap().push("other dropped".into());
                    })),
                );
                let job = paused(asyncjob::start(Some(&ctx), asyncjob::pause));
                drop(ctx);
                KEEP.with(|k| *k.borrow_mut() = Some(job));
            })
            .join()
            .unwrap();
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(
                seen[0] == "start at exit: Ok(5)" || seen[0] == "start at exit: Err(ThreadSetup)",
                "{seen:?}"
            );
            assert_eq!(seen[1], "other dropped");
            println!("{seen:?}");
        },
    );
}

/// Pauses when dropped.
struct PauseOnDrop;
impl Drop for PauseOnDrop {
    fn drop(&mut self) {
        asyncjob::pause();
    }
}

#[test]
fn cleanup_panics_on_the_thread_propagate_after_a_job_paused_in_the_middle_of_a_panic() {
    in_child(
        "cleanup_panics_on_the_thread_propagate_after_a_job_paused_in_the_middle_of_a_panic",
        &[],
        || {
            let started = catch(|| {
                asyncjob::start(None, || {
                    let _pauses_while_unwinding = PauseOnDrop;
                    panic!("the job's own panic");
                })
            });
            // However pause() treats an unwinding job, the thread's own context is not unwinding.
            let thread_unwinding = std::thread::panicking();
            if let Ok(Ok(Started::Paused(job))) = started {
                job.leak(); // dropping it would unwind a second time
            }
            assert!(
                !thread_unwinding,
                "the thread looks as if it were unwinding"
            );
            let log = Log::default();
            let ctx = WaitCtx::new();
            ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), panicking(&log, "c"));
            let payload = catch(|| drop(ctx)).expect_err("the cleanup's panic propagates");
            assert_eq!(message(&*payload), "cleanup c");
        },
    );
}

// ---- wake-up callbacks ------------------------------------------------------------------------

#[test]
fn a_panicking_callback_leaves_the_context_as_it_was() {
    let ctx = WaitCtx::new();
    ctx.set_status(WaitCtx::STATUS_EAGAIN);
    let cb: Rc<dyn WaitCallback> = Rc::new(|| -> i32 { panic!("callback") });
    ctx.set_callback(Some(cb.clone()));
    let got = ctx.callback().expect("stored");
    let payload = catch(|| got.call()).expect_err("the panic reaches the caller");
    assert_eq!(message(&*payload), "callback");
    assert!(Rc::ptr_eq(&ctx.callback().unwrap(), &cb), "still stored");
    assert_eq!(ctx.status(), WaitCtx::STATUS_EAGAIN);
}

#[test]
fn a_callback_can_remove_itself_and_set_the_status_of_its_own_context() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    ctx.set_wait_fd(key(1), fd(1), ptr::null_mut(), logged(&log, "freed"));
    let own = ctx.clone(); // a reference cycle, broken when the callback removes itself
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    ctx.set_callback(Some(Rc::new(move || {
        own.set_status(WaitCtx::STATUS_OK);
        own.set_callback(None);
        // Still alive: the caller's handle keeps the callback until it returns.
        c.set(c.get() + 1);
        c.get()
    })));
    let cb = ctx.callback().unwrap();
    assert_eq!(cb.call(), 1);
    assert!(ctx.callback().is_none());
    assert_eq!(ctx.status(), WaitCtx::STATUS_OK);
    drop(cb); // the callback and its handle to the context go now
    drop(ctx);
    assert_eq!(entries(&log), ["freed"], "the context was freed");
    assert_eq!(calls.get(), 1);
}

#[test]
fn a_callback_panicking_on_drop_propagates_from_set_callback_with_the_new_one_stored() {
    let log = Log::default();
    let ctx = WaitCtx::new();
    let bomb = PanicOnDrop(log.clone(), "old callback");
    ctx.set_callback(Some(Rc::new(move || {
        let _ = &bomb;
        1
    })));
    let new: Rc<dyn WaitCallback> = Rc::new(|| 2);
    let payload = catch(|| ctx.set_callback(Some(new.clone()))).expect_err("propagates");
    assert_eq!(message(&*payload), "drop old callback");
    assert!(Rc::ptr_eq(&ctx.callback().unwrap(), &new));
}

/// Replaces the callback of its context when dropped.
struct Replacer {
    ctx: WaitCtx,
    with: Rc<dyn WaitCallback>,
}
impl Drop for Replacer {
    fn drop(&mut self) {
        self.ctx.set_callback(Some(self.with.clone()));
    }
}

#[test]
fn a_callback_whose_drop_sets_the_callback_again_wins_as_the_last_writer() {
    let ctx = WaitCtx::new();
    let from_drop: Rc<dyn WaitCallback> = Rc::new(|| 3);
    let replacer = Replacer {
        ctx: ctx.clone(),
        with: from_drop.clone(),
    };
    ctx.set_callback(Some(Rc::new(move || {
        let _ = &replacer;
        1
    })));
    ctx.set_callback(Some(Rc::new(|| 2)));
    assert!(
        Rc::ptr_eq(&ctx.callback().unwrap(), &from_drop),
        "the old callback's destructor ran after the new one was stored"
    );
    // The replacer's handle to the context is gone with it: nothing keeps the context alive.
    ctx.set_callback(None);
    assert_eq!(Rc::strong_count(&from_drop), 1);
}

#[test]
fn a_callback_called_inside_a_job_cannot_start_a_job_but_can_pause_it() {
    let ctx = WaitCtx::new();
    let log = Log::default();
    let l = log.clone();
    ctx.set_callback(Some(Rc::new(move || {
        let nested = asyncjob::start(None, || 1);
        note(&l, format!("nested: {:?}", nested.err()));
        asyncjob::pause();
        note(&l, "resumed in callback");
        4
    })));
    let job = paused(asyncjob::start(Some(&ctx), || {
        let cb = asyncjob::current_wait_ctx().unwrap().callback().unwrap();
        cb.call()
    }));
    assert_eq!(entries(&log), ["nested: Some(Nested)"]);
    assert_eq!(resume_finished(job), 4);
    assert_eq!(
        entries(&log),
        ["nested: Some(Nested)", "resumed in callback"]
    );
}

// ---- the default stack allocator out of resources ---------------------------------------------

/// Start paused jobs until the pool says NO_JOBS (at most `limit`); the closure handed back runs.
#[cfg(target_os = "linux")]
fn start_until_no_jobs(jobs: &mut Vec<Job<()>>, limit: usize) -> usize {
    let before = jobs.len();
    while jobs.len() < limit {
        match asyncjob::start(None, asyncjob::pause) {
            Ok(Started::Paused(job)) => jobs.push(job),
            Ok(Started::NoJobs(f)) => {
                f(); // handed back untouched (outside a job, pause does nothing)
                return jobs.len() - before;
            }
            Ok(Started::Finished(())) => panic!("the job paused"),
            Err(e) => panic!("start failed: {e}"),
        }
    }
    panic!("no NO_JOBS within {limit} jobs");
}

#[cfg(target_os = "linux")]
fn proc_status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn the_default_allocator_out_of_address_space_gives_no_jobs_and_recovers() {
    if under_emulation() {
        return;
    }
    in_child(
        "the_default_allocator_out_of_address_space_gives_no_jobs_and_recovers",
        &[],
        || {
            // One job first, so that the allocator's one-time tables exist.
            let first = paused(asyncjob::start(None, asyncjob::pause));
            resume_finished(first);
            let mut jobs = Vec::with_capacity(4096);
            let vm_kib = proc_status_kib("VmSize:");
            let limit = (vm_kib * 1024 + (24 << 20)) as libc::rlim_t;
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: libc::RLIM_INFINITY,
            };
            // SAFETY: setrlimit reads the struct we pass; lowering our own soft limit is allowed.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
            let n1 = start_until_no_jobs(&mut jobs, 4096);
            assert!(n1 >= 1, "some jobs fit in 24 MiB");
            // Jobs already paused still work, and finishing one frees a job for the next start.
            let last = jobs.pop().unwrap();
            resume_finished(last);
            jobs.push(paused(asyncjob::start(None, asyncjob::pause)));
            // Free every stack, then fill the space again.
            for job in jobs.drain(..) {
                drop(job);
            }
            asyncjob::cleanup_thread().unwrap();
            let n2 = start_until_no_jobs(&mut jobs, 4096);
            println!("jobs that fit: {n1}, then after freeing them all: {n2}");
            assert!(
                n2 >= n1,
                "the freed address space can be used again ({n2} < {n1})"
            );
            for job in jobs.drain(..) {
                resume_finished(job);
            }
        },
    );
}

#[cfg(target_os = "linux")]
#[test]
fn mprotect_guards_out_of_map_entries_give_no_jobs_and_recover() {
    in_child(
        "mprotect_guards_out_of_map_entries_give_no_jobs_and_recover",
        &[("ASYNCJOB_STACK_GUARD", "mprotect")],
        || {
            let max_maps: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // About 4.3 KiB of memory per paused job: up to 2M map entries is at most 4.5 GB.
            if max_maps > 2_000_000 {
                println!("vm.max_map_count is {max_maps}: too many jobs to reach it here");
                return;
            }
            // Every stack with an mprotect guard costs up to two map entries (the guard splits its
            // slab); the allocator takes at most max_map_count / 4 guards, half of the entries, and
            // leaves the rest to the application.
            let limit = max_maps + 1024;
            let mut jobs = Vec::with_capacity(limit);
            let n1 = start_until_no_jobs(&mut jobs, limit);
            let maps = std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .count();
            println!("max_map_count {max_maps}: {n1} jobs, {maps} mappings at NO_JOBS");
            assert!(
                n1 <= max_maps / 4 && n1 + 128 >= max_maps / 4,
                "NO_JOBS came from the cap of max_map_count / 4 guards ({n1} jobs)"
            );
            assert!(
                maps <= max_maps / 2 + 1000,
                "map entries left to the application ({maps} of {max_maps})"
            );
            // Half of them go; their slots (guards still installed) are used again.
            let half = jobs.len() / 2;
            for job in jobs.drain(..half) {
                drop(job);
            }
            asyncjob::cleanup_thread().unwrap_err();
            let n2 = start_until_no_jobs(&mut jobs, limit);
            assert!(n2 >= half, "the freed slots are reused ({n2} < {half})");
            for job in jobs.drain(..) {
                resume_finished(job);
            }
        },
    );
}

#[cfg(target_os = "linux")]
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth as u8; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + u64::from(pad[0])
}

#[cfg(target_os = "linux")]
#[test]
fn a_stack_overflow_is_reported_even_when_address_space_was_short_at_the_first_stack() {
    if under_emulation() {
        return;
    }
    const NAME: &str =
        "a_stack_overflow_is_reported_even_when_address_space_was_short_at_the_first_stack";
    if std::env::var(ROLE).as_deref() == Ok(NAME) {
        // Tight before the first stack: a slab (about 17 MiB) fits, the reporter's table (32 MiB of
        // address space) does not.
        let vm_kib = proc_status_kib("VmSize:");
        let rl = libc::rlimit {
            rlim_cur: (vm_kib * 1024 + (24 << 20)) as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads the struct we pass; lowering our own soft limit is allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
        // A stack whose overflow could not be reported is not handed out.
        match asyncjob::start(None, || ()) {
            Ok(Started::NoJobs(_)) => println!("refused while the reporter could not be made"),
            other => println!("not refused: {other:?}"),
        }
        // Plenty of address space again: only the first allocation was short.
        let rl = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: as above; raising the soft limit up to the hard limit is allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
        resume_finished(paused(asyncjob::start(None, asyncjob::pause)));
        let _ = asyncjob::start(None, || recurse(0));
        println!("ran on past the stack");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(ROLE, NAME)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("spawn child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child must die: {stdout}");
    assert!(!stdout.contains("ran on past the stack"));
    assert!(
        stdout.contains("refused while the reporter could not be made"),
        "{stdout}"
    );
    assert!(
        stderr.contains("stack overflow in a fiber"),
        "the overflow is reported ({:?}): {stderr}",
        out.status
    );
}

/// Set by the CI step that runs these tests under qemu-user (ci/xplat/lib.sh): there `RLIMIT_AS`
/// limits the emulator's own address space, which it reserves in bulk, so the address-space tests
/// would measure qemu, not asyncjob. They say so and stop.
fn under_emulation() -> bool {
    let emulated = std::env::var_os("ASYNCJOB_UNDER_EMULATION").is_some();
    if emulated {
        println!("not run under emulation: RLIMIT_AS would limit the emulator, not this program");
    }
    emulated
}
