//! What a hostile but safe caller can do: thread-local teardown in any order, destructors that pause
//! while a job is cancelled or unwinding from a panic. Each test here failed before its fix (issue 8).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use asyncjob::{Job, Started};

fn paused<F, R>(s: Result<Started<F, R>, asyncjob::Error>) -> Job<R> {
    match s.expect("start") {
        Started::Paused(job) => job,
        Started::Finished(_) => panic!("finished instead of pausing"),
        Started::NoJobs(_) => panic!("no jobs"),
    }
}

/// A thread-local that a paused job borrows across its pause. Its destructor marks it dead.
struct Borrowed {
    alive: Cell<bool>,
}
impl Drop for Borrowed {
    fn drop(&mut self) {
        self.alive.set(false);
    }
}

/// Lives on the job's stack and holds the borrow: counts its drop, and counts a drop that came after
/// the borrowed thread-local was destroyed (real code would write into freed memory there).
struct UseOnDrop<'a> {
    borrowed: &'a Borrowed,
    drops: Arc<AtomicUsize>,
    late_uses: Arc<AtomicUsize>,
}
impl Drop for UseOnDrop<'_> {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
        if !self.borrowed.alive.get() {
            self.late_uses.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Order {
    /// The thread-local that keeps the job is registered first, then asyncjob's state (by the first
    /// start), then the borrowed one (inside the job).
    KeepFirst,
    /// asyncjob's state first (a pool), then the keeper, then the borrowed one.
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    PoolFirst,
}

/// On a fresh thread, park a paused job that borrows a thread-local across its pause in another
/// thread-local, and let the thread exit. Returns (drops on the job's stack, late uses).
fn park_and_exit(order: Order) -> (usize, usize) {
    thread_local! {
        static KEEP: RefCell<Option<Job<()>>> = const { RefCell::new(None) };
        static BORROWED: Borrowed = const { Borrowed { alive: Cell::new(true) } };
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let late_uses = Arc::new(AtomicUsize::new(0));
    let (d, l) = (drops.clone(), late_uses.clone());
    std::thread::spawn(move || {
        match order {
            Order::KeepFirst => KEEP.with(|_| ()),
            Order::PoolFirst => {
                asyncjob::init_thread(0, 0).unwrap();
                KEEP.with(|_| ());
            }
        }
        let job = paused(asyncjob::start(None, move || {
            BORROWED.with(|borrowed| {
                let _use = UseOnDrop {
                    borrowed,
                    drops: d,
                    late_uses: l,
                };
                asyncjob::pause();
            });
        }));
        KEEP.with(|k| *k.borrow_mut() = Some(job));
    })
    .join()
    .unwrap();
    (
        drops.load(Ordering::SeqCst),
        late_uses.load(Ordering::SeqCst),
    )
}

/// Where thread-locals are destroyed in the reverse order of their first use (glibc, musl, macOS),
/// the keeper goes last, after asyncjob's exit marker: the job is leaked. On Windows the order is not
/// fixed: under Wine 8 the keeper usually goes first (the unwind then runs while what the job borrows
/// is alive), but in 3 of 15 runs with the other tests of this file in parallel the borrowed
/// thread-local went before the keeper and the unwind used it late. That is the documented limit off
/// glibc (a thread-local first used after the thread's first job may be destroyed before asyncjob's
/// marker), so on Windows this test only checks that the job ran its destructors at most once.
#[test]
fn a_job_kept_in_an_earlier_thread_local_is_leaked_at_thread_exit_not_unwound() {
    let leaked_before = asyncjob::leaked_jobs();
    let (drops, late_uses) = park_and_exit(Order::KeepFirst);
    if cfg!(windows) {
        assert!(
            drops <= 1 && late_uses <= drops,
            "drops {drops}, late uses {late_uses}"
        );
        return;
    }
    assert_eq!(
        late_uses, 0,
        "the job ran after a thread-local it borrows was destroyed"
    );
    assert_eq!(
        drops, 0,
        "nothing on a job's stack runs once the thread is exiting"
    );
    assert!(
        asyncjob::leaked_jobs() > leaked_before,
        "the job was leaked"
    );
}

/// Thread-locals registered after asyncjob's own are destroyed before asyncjob learns of the exit
/// from its own destructor; the job is still leaked (glibc: the drop sees it runs inside the thread's
/// thread-local destructors).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_job_kept_in_a_later_thread_local_is_leaked_at_thread_exit_not_unwound() {
    let leaked_before = asyncjob::leaked_jobs();
    let (drops, late_uses) = park_and_exit(Order::PoolFirst);
    assert_eq!(
        late_uses, 0,
        "the job ran after a thread-local it borrows was destroyed"
    );
    assert_eq!(
        drops, 0,
        "nothing on a job's stack runs once the thread is exiting"
    );
    assert!(
        asyncjob::leaked_jobs() > leaked_before,
        "the job was leaked"
    );
}

/// A start or resume from a thread-local destructor that runs after asyncjob's thread state was torn
/// down is refused, and must not prepare the thread again: that leaked a 64 KiB signal stack per
/// thread (1,000 threads: 64,000 kB).
#[cfg(target_os = "linux")]
#[test]
fn a_start_from_a_late_thread_local_destructor_is_refused_and_leaks_nothing() {
    fn vm_size_kb() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
    static REFUSED: AtomicUsize = AtomicUsize::new(0);
    struct StartOnDrop;
    impl Drop for StartOnDrop {
        fn drop(&mut self) {
            if let Err(asyncjob::Error::ThreadSetup) = asyncjob::start(None, || ()) {
                REFUSED.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    // Registered before asyncjob's state, so destroyed after it.
    thread_local! { static LATE: StartOnDrop = const { StartOnDrop }; }
    let one_thread = || {
        std::thread::spawn(|| {
            LATE.with(|_| ());
            let job = paused(asyncjob::start(None, asyncjob::pause));
            drop(job);
        })
        .join()
        .unwrap();
    };
    // Under qemu-user (ci/xplat/lib.sh sets this) VmSize is the emulator's, which grows with every
    // guest thread: the measurement would be of qemu, not of asyncjob.
    if std::env::var_os("ASYNCJOB_UNDER_EMULATION").is_some() {
        println!("not measured under emulation: VmSize is the emulator's");
        return;
    }
    // Measured alone, in a child copy of this binary: other tests' threads move the address space.
    const NAME: &str = "a_start_from_a_late_thread_local_destructor_is_refused_and_leaks_nothing";
    if std::env::var_os("ASYNCJOB_SOUNDNESS_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
            .env("ASYNCJOB_SOUNDNESS_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed: {text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    // Warm up: the first threads populate glibc's stack cache and the allocator's arenas.
    for _ in 0..20 {
        one_thread();
    }
    let before = vm_size_kb();
    const THREADS: usize = 300;
    for _ in 0..THREADS {
        one_thread();
    }
    let grown_per_thread = vm_size_kb().saturating_sub(before) / THREADS;
    assert_eq!(REFUSED.load(Ordering::SeqCst), 20 + THREADS);
    assert!(
        grown_per_thread < 16,
        "{grown_per_thread} kB of address space kept per exited thread"
    );
}

/// Pauses when dropped.
struct PauseOnDrop(Arc<AtomicUsize>);
impl Drop for PauseOnDrop {
    fn drop(&mut self) {
        asyncjob::pause();
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn pause_inside_a_destructor_of_a_cancelled_job_returns_at_once() {
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let job = paused(asyncjob::start(None, move || {
        let _g = PauseOnDrop(d);
        asyncjob::pause();
    }));
    drop(job); // aborted the process ("panic in a destructor during cleanup") before the fix
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    assert_eq!(asyncjob::pool_stats().map(|s| s.idle), Some(1));
}

#[test]
fn pause_while_a_job_unwinds_from_a_panic_returns_at_once_and_the_panic_reaches_the_caller() {
    let lock = Mutex::new(0);
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let guard = lock.lock().unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let started = asyncjob::start(None, move || {
            let _g = PauseOnDrop(d);
            panic!("the job panics");
        });
        // Before the fix the job paused inside its unwind, and the caller got here with the thread
        // marked as panicking.
        (
            matches!(started, Ok(Started::Paused(_))),
            std::thread::panicking(),
        )
    }));
    assert!(
        !std::thread::panicking(),
        "the caller's thread is not left panicking"
    );
    drop(guard);
    assert!(
        !lock.is_poisoned(),
        "a mutex held by the caller is not poisoned"
    );
    let payload = outcome.expect_err("the job's panic reaches the caller of start");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the job panics"));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the destructor ran once, without pausing"
    );
}

#[test]
fn a_job_resumed_while_the_caller_unwinds_can_still_pause() {
    // The rule is about the job's own unwinding: a caller that is itself panicking (a drop guard that
    // drives a job) still gets real pauses.
    struct DriveOnDrop(Option<Job<u32>>, Arc<AtomicUsize>);
    impl Drop for DriveOnDrop {
        fn drop(&mut self) {
            let job = self.0.take().unwrap();
            match job.resume().unwrap() {
                asyncjob::Resumed::Paused(job) => {
                    self.1.fetch_add(1, Ordering::SeqCst);
                    match job.resume().unwrap() {
                        asyncjob::Resumed::Finished(v) => assert_eq!(v, 7),
                        asyncjob::Resumed::Paused(_) => panic!("paused twice"),
                    }
                }
                asyncjob::Resumed::Finished(_) => panic!("did not pause"),
            }
        }
    }
    let pauses = Arc::new(AtomicUsize::new(0));
    let job = paused(asyncjob::start(None, || {
        asyncjob::pause();
        asyncjob::pause();
        7
    }));
    let p = pauses.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _drive = DriveOnDrop(Some(job), p);
        panic!("caller unwinds");
    }));
    assert!(r.is_err());
    assert_eq!(pauses.load(Ordering::SeqCst), 1);
}

/// A leaked job never runs again, so it lets go of its wait context: the context's fd cleanups run
/// when the application's last handle goes, as they would for a job that finished.
#[test]
fn a_leaked_job_lets_go_of_its_wait_context() {
    let cleaned = Arc::new(AtomicUsize::new(0));
    let c = cleaned.clone();
    let ctx = asyncjob::WaitCtx::new();
    ctx.set_wait_fd(
        asyncjob::WaitKey::from_addr(1),
        3 as asyncjob::AsyncFd,
        std::ptr::null_mut(),
        Some(Box::new(move |_, _, _| {
            c.fetch_add(1, Ordering::SeqCst);
        })),
    );
    let job = paused(asyncjob::start(Some(&ctx), asyncjob::pause));
    job.leak();
    assert_eq!(
        cleaned.load(Ordering::SeqCst),
        0,
        "the application still holds the context"
    );
    drop(ctx);
    assert_eq!(
        cleaned.load(Ordering::SeqCst),
        1,
        "the cleanup ran with the last handle"
    );
}
