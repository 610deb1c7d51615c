//! A driver in steady state makes no heap allocation: turns that resume already-spawned jobs which
//! wait on fds (re-registering them), on notifications and on EAGAIN; and jobs spawned and finished
//! again and again, as a server's connections are. A counting global allocator
//! sees every allocation of the process; this binary has no test harness, so nothing else runs while
//! it counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[cfg(unix)]
use asyncjob::WaitKey;
use asyncjob::{Driver, Notifier, WaitCtx};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FD_JOBS: usize = 8;
const NOTIFY_JOBS: usize = 8;
const EAGAIN_JOBS: usize = 4;
const BOUND: Option<Duration> = Some(Duration::from_secs(20));

#[cfg(unix)]
fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: room for the two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

struct Setup {
    driver: Driver<()>,
    #[cfg(unix)]
    writers: Vec<i32>,
    notifiers: Rc<RefCell<Vec<Option<Notifier>>>>,
    resumes: Rc<Cell<usize>>,
}

fn setup(mut driver: Driver<()>) -> Setup {
    let resumes = Rc::new(Cell::new(0));
    #[cfg(unix)]
    let mut writers = Vec::new();
    #[cfg(unix)]
    for _ in 0..FD_JOBS {
        let (r, w) = pipe();
        writers.push(w);
        let resumes = resumes.clone();
        driver
            .spawn(move || {
                let ctx = asyncjob::current_wait_ctx().unwrap();
                let key = WaitKey::from_addr(1);
                ctx.set_wait_fd(key, r, std::ptr::null_mut(), None);
                let mut round = 0u64;
                loop {
                    asyncjob::pause();
                    resumes.set(resumes.get() + 1);
                    let mut byte = 0u8;
                    // SAFETY: one writable byte; the driver resumed us because the pipe is readable.
                    assert_eq!(unsafe { libc::read(r, (&raw mut byte).cast(), 1) }, 1);
                    round += 1;
                    if round % 2 == 0 {
                        // Deregister and register again: a round with a deletion and an addition.
                        assert!(ctx.clear_fd(key));
                        ctx.set_wait_fd(key, r, std::ptr::null_mut(), None);
                    }
                }
            })
            .unwrap();
    }
    let notifiers = Rc::new(RefCell::new(vec![None; NOTIFY_JOBS]));
    for i in 0..NOTIFY_JOBS {
        let (resumes, notifiers) = (resumes.clone(), notifiers.clone());
        driver
            .spawn(move || {
                loop {
                    notifiers.borrow_mut()[i] = asyncjob::current_notifier();
                    asyncjob::pause();
                    resumes.set(resumes.get() + 1);
                }
            })
            .unwrap();
    }
    for _ in 0..EAGAIN_JOBS {
        let resumes = resumes.clone();
        driver
            .spawn(move || {
                let ctx = asyncjob::current_wait_ctx().unwrap();
                loop {
                    ctx.set_status(WaitCtx::STATUS_EAGAIN);
                    asyncjob::pause();
                    resumes.set(resumes.get() + 1);
                }
            })
            .unwrap();
    }
    Setup {
        driver,
        #[cfg(unix)]
        writers,
        notifiers,
        resumes,
    }
}

/// One round: make every job ready once and turn until each has run once.
fn round(s: &mut Setup) {
    let target = s.resumes.get() + NOTIFY_JOBS + EAGAIN_JOBS + if cfg!(unix) { FD_JOBS } else { 0 };
    #[cfg(unix)]
    for &w in &s.writers {
        // SAFETY: one readable byte.
        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
    }
    for n in s.notifiers.borrow().iter() {
        n.as_ref().unwrap().notify();
    }
    let mut turns = 0;
    while s.resumes.get() < target {
        s.driver.turn(BOUND).unwrap();
        turns += 1;
        assert!(turns <= 3, "every job runs within a turn or two");
    }
    assert_eq!(s.resumes.get(), target, "no job ran twice");
    assert_eq!(s.driver.completions().count(), 0);
}

fn steady_state(name: &str, driver: Driver<()>) {
    let mut s = setup(driver);
    for _ in 0..10 {
        round(&mut s);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let rounds = 2_000;
    for _ in 0..rounds {
        round(&mut s);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "{name}: {allocations} heap allocations in {rounds} rounds of {} driver turns",
        s.driver.stats().turns
    );
    assert_eq!(
        allocations, 0,
        "{name}: the driver's steady state must not allocate"
    );
}

/// A server's steady state: every connection is a new job. Jobs that wait on an fd once, on a
/// notification once, or not at all, spawned and finished again and again.
fn spawn_and_finish(name: &str, mut driver: Driver<u32>) {
    #[cfg(unix)]
    let (r, w) = pipe();
    let notifier: Rc<RefCell<Option<Notifier>>> = Rc::new(RefCell::new(None));
    let cycle = |driver: &mut Driver<u32>| {
        #[cfg(unix)]
        driver
            .spawn(move || {
                let ctx = asyncjob::current_wait_ctx().unwrap();
                ctx.set_wait_fd(WaitKey::from_addr(1), r, std::ptr::null_mut(), None);
                asyncjob::pause();
                let mut byte = 0u8;
                // SAFETY: one writable byte; the driver resumed us because the pipe is readable.
                assert_eq!(unsafe { libc::read(r, (&raw mut byte).cast(), 1) }, 1);
                assert!(ctx.clear_fd(WaitKey::from_addr(1)));
                1
            })
            .unwrap();
        let slot = notifier.clone();
        driver
            .spawn(move || {
                *slot.borrow_mut() = asyncjob::current_notifier();
                asyncjob::pause();
                2
            })
            .unwrap();
        driver.spawn(|| 3).unwrap();
        #[cfg(unix)]
        // SAFETY: one readable byte.
        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
        // The engine answers and lets go of its handle.
        notifier.borrow_mut().take().unwrap().notify();
        let mut finished = 0;
        let expected = if cfg!(unix) { 3 } else { 2 };
        while finished < expected {
            driver.turn(BOUND).unwrap();
            finished += driver.completions().count();
        }
        assert!(driver.is_empty());
    };
    for _ in 0..10 {
        cycle(&mut driver);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let cycles = 1_000;
    for _ in 0..cycles {
        cycle(&mut driver);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "{name}: {allocations} heap allocations in {cycles} cycles of spawning and finishing jobs"
    );
    assert_eq!(
        allocations, 0,
        "{name}: spawning and finishing jobs must not allocate in steady state"
    );
}

fn main() {
    steady_state("Driver::new", Driver::new().unwrap());
    #[cfg(unix)]
    steady_state("Driver::with_poll", Driver::with_poll().unwrap());
    spawn_and_finish("Driver::new", Driver::new().unwrap());
    #[cfg(unix)]
    spawn_and_finish("Driver::with_poll", Driver::with_poll().unwrap());
    println!("2 passed, 0 failed");
}
