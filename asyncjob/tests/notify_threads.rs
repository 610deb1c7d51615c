//! `Notifier::notify` from several threads at once while the job's thread drives the jobs: first with
//! a `Driver` (both backends), then by hand with `set_waker` / `take_notification` / `clear_waker`,
//! wakers replaced while notifications are in flight, and notifiers that outlive their contexts and
//! are dropped on the notifying threads.
//!
//! Without libtest's harness and without std's locks or channels in the test itself, so that
//! ThreadSanitizer (ci/step-11) sees only asyncjob and this program: std is not instrumented there,
//! and synchronisation hidden inside it would be reported as races. The threads share atomics only;
//! `thread::spawn` and `join` are seen (pthread is intercepted).
//!
//! Exactly one `notify` is issued per job and round (a notifier thread claims the round with a
//! compare-exchange), so the counts are exact: a job is resumed once per round, only after its
//! round's notification began, and a notification that has returned is never lost (the turn that
//! follows resumes the job; by hand, the registered waker was woken or the mark is there).
//!
//! `ASYNCJOB_NOTIFY_THREADS_SCALE` (default 1) multiplies the rounds.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Wake, Waker};
use std::thread;
use std::time::Duration;

use asyncjob::{Driver, Notifier, Outcome, Resumed, Started, WaitCtx};

const NOTIFIER_THREADS: usize = 3;
const DRIVER_JOBS: usize = 24;
const DRIVER_ROUNDS: u64 = 40;
const HAND_JOBS: usize = 12;
const HAND_ROUNDS: u64 = 40;
/// Bounds a turn: a correct driver returns as soon as a notification has arrived.
const BOUND: Option<Duration> = Some(Duration::from_secs(30));

fn scale() -> u64 {
    std::env::var("ASYNCJOB_NOTIFY_THREADS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// What the job thread and the notifier threads share: per job, the round the job waits for, the
/// round a notifier claimed (its `notify` began) and the round whose `notify` returned.
struct Rounds {
    want: Vec<AtomicU64>,
    claimed: Vec<AtomicU64>,
    completed: Vec<AtomicU64>,
    /// Notify calls made, in total.
    notifies: AtomicUsize,
    /// No more rounds: the notifier threads stop claiming.
    stop: AtomicBool,
    /// The contexts are gone: notify every notifier once more, then drop them.
    dead: AtomicBool,
}

impl Rounds {
    fn new(jobs: usize) -> Arc<Self> {
        let zeros = || (0..jobs).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Rounds {
            want: zeros(),
            claimed: zeros(),
            completed: zeros(),
            notifies: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
        })
    }

    /// Wait (yielding) until job `j`'s round `round` notification has returned.
    fn await_completed(&self, j: usize, round: u64) {
        while self.completed[j].load(Ordering::Acquire) < round {
            thread::yield_now();
        }
    }
}

/// A notifier thread: claim and notify the rounds the jobs wait for, starting at job `first` so that
/// the threads meet on different jobs; after `stop` and `dead`, notify everything once more and drop
/// the notifiers here. Returns how many rounds this thread notified.
fn notifier_thread(first: usize, notifiers: Vec<Notifier>, rounds: Arc<Rounds>) -> u64 {
    let n = notifiers.len();
    let mut mine = 0;
    while !rounds.stop.load(Ordering::Acquire) {
        let mut idle = true;
        for k in 0..n {
            let j = (first + k) % n;
            let want = rounds.want[j].load(Ordering::Acquire);
            let claimed = rounds.claimed[j].load(Ordering::Acquire);
            if want > claimed
                && rounds.claimed[j]
                    .compare_exchange(claimed, want, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                assert_eq!(want, claimed + 1, "job {j}: one round at a time");
                notifiers[j].notify();
                rounds.notifies.fetch_add(1, Ordering::Relaxed);
                rounds.completed[j].store(want, Ordering::Release);
                mine += 1;
                idle = false;
            }
        }
        if idle {
            thread::yield_now();
        }
    }
    while !rounds.dead.load(Ordering::Acquire) {
        thread::yield_now();
    }
    for notifier in &notifiers {
        notifier.notify();
        assert!(notifier.is_notified());
    }
    drop(notifiers);
    mine
}

fn spawn_notifiers(notifiers: &[Notifier], rounds: &Arc<Rounds>) -> Vec<thread::JoinHandle<u64>> {
    (0..NOTIFIER_THREADS)
        .map(|t| {
            let mine = notifiers.to_vec();
            let rounds = rounds.clone();
            let first = t * notifiers.len() / NOTIFIER_THREADS;
            thread::spawn(move || notifier_thread(first, mine, rounds))
        })
        .collect()
}

fn join_notifiers(threads: Vec<thread::JoinHandle<u64>>) -> u64 {
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// Phase 1: `DRIVER_JOBS` jobs on a driver, each pausing for a notification `rounds` times.
fn driver_phase(name: &str, mut driver: Driver<usize>, rounds_per_job: u64) {
    let rounds = Rounds::new(DRIVER_JOBS);
    let resumes: Rc<Vec<Cell<u64>>> = Rc::new((0..DRIVER_JOBS).map(|_| Cell::new(0)).collect());
    let mut tokens = Vec::new();
    for j in 0..DRIVER_JOBS {
        let shared = rounds.clone();
        let resumed = resumes.clone();
        let token = driver
            .spawn(move || {
                for round in 1..=rounds_per_job {
                    let notifier = asyncjob::current_notifier().expect("a notifier");
                    drop(notifier);
                    shared.want[j].store(round, Ordering::Release);
                    asyncjob::pause();
                    resumed[j].set(resumed[j].get() + 1);
                    assert_eq!(
                        shared.claimed[j].load(Ordering::Acquire),
                        round,
                        "job {j} resumed in round {round} only after that round's notify began"
                    );
                }
                j
            })
            .unwrap();
        tokens.push(token);
    }
    assert_eq!(driver.len(), DRIVER_JOBS, "{name}: every job paused");
    let notifiers: Vec<Notifier> = tokens
        .iter()
        .map(|&t| driver.wait_ctx(t).expect("live").notifier())
        .collect();
    let threads = spawn_notifiers(&notifiers, &rounds);
    drop(notifiers);

    let mut finished = [false; DRIVER_JOBS];
    let mut turns = 0u64;
    while !driver.is_empty() {
        // Jobs whose notification for the round they wait in has returned: this turn must resume
        // them (their mark is set and their waker was woken before the turn began).
        let due: Vec<(usize, u64)> = (0..DRIVER_JOBS)
            .filter(|&j| !finished[j])
            .filter_map(|j| {
                let want = rounds.want[j].load(Ordering::Acquire);
                (rounds.completed[j].load(Ordering::Acquire) == want).then_some((j, want))
            })
            .collect();
        let ran = driver.turn(BOUND).unwrap();
        turns += 1;
        for &(j, want) in &due {
            assert!(
                resumes[j].get() >= want,
                "{name}: lost wake-up: job {j}'s round {want} notification returned before turn \
                 {turns}, which ran {ran} jobs without it"
            );
        }
        for completion in driver.completions() {
            match completion.outcome {
                Outcome::Finished(j) => {
                    assert!(!finished[j], "{name}: job {j} finished twice");
                    finished[j] = true;
                }
                other => panic!("{name}: a job ended with {other:?}"),
            }
        }
    }
    let stats = driver.stats();
    rounds.stop.store(true, Ordering::Release);
    drop(driver);
    rounds.dead.store(true, Ordering::Release);
    let notified = join_notifiers(threads);

    let total = DRIVER_JOBS as u64 * rounds_per_job;
    assert!(finished.iter().all(|&f| f), "{name}: every job finished");
    for j in 0..DRIVER_JOBS {
        assert_eq!(
            resumes[j].get(),
            rounds_per_job,
            "{name}: job {j}'s resumes"
        );
        assert_eq!(rounds.claimed[j].load(Ordering::Relaxed), rounds_per_job);
    }
    assert_eq!(notified, total, "{name}: one notify per job and round");
    assert_eq!(
        rounds.notifies.load(Ordering::Relaxed) as u64,
        total,
        "{name}: notify calls"
    );
    assert_eq!(
        stats.resumes, total,
        "{name}: the driver resumed once per notification"
    );
    assert_eq!(stats.starts, DRIVER_JOBS as u64);
    println!(
        "driver [{name}]: {DRIVER_JOBS} jobs x {rounds_per_job} rounds, {NOTIFIER_THREADS} \
         notifier threads, {turns} turns: ok"
    );
}

/// A waker that counts its wakes (from whichever thread).
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Counting>, Waker) {
    let c = Arc::new(Counting::default());
    (c.clone(), Waker::from(c))
}

fn wakes(c: &Counting) -> usize {
    c.0.load(Ordering::SeqCst)
}

/// Phase 2: the driver's protocol written out by hand, varied per job and round.
fn hand_phase(rounds_per_job: u64) {
    let rounds = Rounds::new(HAND_JOBS);
    let ctxs: Vec<WaitCtx> = (0..HAND_JOBS).map(|_| WaitCtx::new()).collect();
    let mut jobs = Vec::new();
    for (j, ctx) in ctxs.iter().enumerate() {
        let started = asyncjob::start(Some(ctx), move || {
            for _ in 0..rounds_per_job {
                drop(asyncjob::current_notifier().expect("a notifier"));
                asyncjob::pause();
            }
            j
        })
        .unwrap();
        let Started::Paused(job) = started else {
            panic!("job {j} did not pause")
        };
        jobs.push(Some(job));
    }
    let notifiers: Vec<Notifier> = ctxs.iter().map(WaitCtx::notifier).collect();
    let threads = spawn_notifiers(&notifiers, &rounds);
    drop(notifiers);

    // Per job: the two wakers of the current round and the variant used.
    let mut current: Vec<Option<(Arc<Counting>, Arc<Counting>)>> = vec![None; HAND_JOBS];
    let mut taken_at_once = 0u64;
    let mut taken_after_wake = 0u64;
    let mut resumes = [0u64; HAND_JOBS];
    for round in 1..=rounds_per_job {
        // Register (or not), then let the notifiers at the job.
        for (j, ctx) in ctxs.iter().enumerate() {
            assert!(ctx.awaits_notification(), "job {j} awaits a notification");
            let (a, wa) = counting();
            let (b, _) = counting();
            match (round + j as u64) % 4 {
                0 | 1 => ctx.set_waker(&wa),
                2 => ctx.clear_waker(),
                _ => {}
            }
            drop(wa);
            rounds.want[j].store(round, Ordering::Release);
            current[j] = Some((a, b));
        }
        // Replace or clear the waker while the notification may be in flight, then look.
        for (j, ctx) in ctxs.iter().enumerate() {
            let (a, b) = current[j].take().expect("set above");
            let variant = (round + j as u64) % 4;
            let wb = Waker::from(b.clone());
            match variant {
                0 | 2 => ctx.set_waker(&wb),
                3 => ctx.clear_waker(),
                _ => {}
            }
            drop(wb);
            let last = match variant {
                0 | 2 => Some(&b),
                1 => Some(&a),
                _ => None,
            };
            if ctx.take_notification() {
                taken_at_once += 1;
            } else {
                // The notification comes after the look, so after the last registration: it wakes
                // exactly the waker registered last (nobody after a clear) and leaves the mark.
                rounds.await_completed(j, round);
                assert!(
                    ctx.take_notification(),
                    "job {j} round {round}: the mark is there once notify returned"
                );
                match last {
                    Some(w) => assert_eq!(wakes(w), 1, "job {j} round {round}: last waker woken"),
                    None => assert_eq!(wakes(&a) + wakes(&b), 0, "job {j}: cleared, nobody woken"),
                }
                taken_after_wake += 1;
            }
            rounds.await_completed(j, round);
            assert!(!ctx.take_notification(), "one mark per notification");
            // One notification per round: it woke at most one waker, and one exactly when a waker
            // was registered throughout.
            let total = wakes(&a) + wakes(&b);
            assert!(total <= 1, "job {j} round {round}: {total} wakes");
            if variant == 0 || variant == 1 {
                assert_eq!(
                    total, 1,
                    "job {j} round {round}: registered throughout, woken once"
                );
            }
            let job = jobs[j].take().expect("paused");
            resumes[j] += 1;
            match job.resume().unwrap() {
                Resumed::Paused(job) => jobs[j] = Some(job),
                Resumed::Finished(r) => {
                    assert_eq!(r, j);
                    assert_eq!(round, rounds_per_job, "job {j} finished in the last round");
                }
            }
        }
    }
    assert!(jobs.iter().all(Option::is_none), "every job finished");
    assert_eq!(
        taken_at_once + taken_after_wake,
        HAND_JOBS as u64 * rounds_per_job
    );

    // The contexts die with a waker registered on the even jobs; the notifier threads then notify
    // once more (only the first flips the mark and wakes) and drop the last handles there.
    rounds.stop.store(true, Ordering::Release);
    let mut last_wakers = Vec::new();
    for (j, ctx) in ctxs.iter().enumerate() {
        if j % 2 == 0 {
            let (c, w) = counting();
            ctx.set_waker(&w);
            last_wakers.push(c);
        } else {
            ctx.clear_waker();
        }
    }
    drop(ctxs);
    rounds.dead.store(true, Ordering::Release);
    let notified = join_notifiers(threads);
    for (k, c) in last_wakers.iter().enumerate() {
        assert_eq!(
            wakes(c),
            1,
            "job {}: woken once after its context died",
            2 * k
        );
        assert_eq!(
            Arc::strong_count(c),
            1,
            "the dead context's waker was dropped"
        );
    }
    assert_eq!(notified, HAND_JOBS as u64 * rounds_per_job);
    assert_eq!(
        resumes.iter().sum::<u64>(),
        HAND_JOBS as u64 * rounds_per_job
    );
    println!(
        "by hand: {HAND_JOBS} jobs x {rounds_per_job} rounds ({taken_at_once} taken at once, \
         {taken_after_wake} after the wake): ok"
    );
}

fn main() {
    let scale = scale();
    asyncjob::init_thread(0, 0).unwrap();
    driver_phase("new", Driver::new().unwrap(), DRIVER_ROUNDS * scale);
    #[cfg(unix)]
    driver_phase(
        "with_poll",
        Driver::with_poll().unwrap(),
        DRIVER_ROUNDS * scale,
    );
    hand_phase(HAND_ROUNDS * scale);
    asyncjob::cleanup_thread().unwrap();
    println!("4 passed, 0 failed");
}
