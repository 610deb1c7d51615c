//! Soak test of asyncjob (`conformance stress`): `threads` workers each run rounds of random job
//! patterns (start, pause, resume, cancel by drop, panic, pool re-init and cleanup, `NO_JOBS`), with
//! wait contexts shared between jobs and dropped in every order and real fds (pipes, eventfds)
//! registered with cleanups that close them. Every job's result is checked, and the process's
//! resources are sampled at quiescent points, where every worker has finished its round (no job
//! paused, no wait ctx alive, no fd of the workload open):
//!
//! - open fds (`/proc/self/fd`) must equal the count before the workers started, exactly: the
//!   workload owns no fd at a quiescent point, so any difference is a leak (or a double close);
//! - memory maps (`/proc/self/maps` lines) and RSS must stay within [`MAPS_SLACK`] /
//!   [`RSS_SLACK`] of their highest value during the warm-up. At a quiescent point what each worker
//!   legitimately holds is bounded by the workload (its pool keeps at most [`MAX_JOBS`] idle jobs, the
//!   allocator keeps freed memory), so after the warm-up has reached those bounds, growth is a leak.
//!
//! The slacks cover what the process does outside the workload's control: glibc's per-thread malloc
//! arenas grow and trim their heaps (each heap is one or two map lines, and trimming moves RSS by the
//! arena's free top, a few MiB per arena at most), and the allocator's fragmentation settles over
//! time. A leak of a job stack (≥ 4 KiB touched), of a closure's state or of one fd per round exceeds
//! them within a few hundred rounds; the tests in `tests/stress.rs` check that such leaks are caught.

use asyncjob::{Job, Resumed, Started, WaitCtx, WaitKey};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Most jobs started per round (and so most paused at once on a worker).
pub const MAX_JOBS: u64 = 8;
/// Most pauses of one job.
pub const MAX_PAUSES: u64 = 5;
/// Allowed growth of the memory-map count over the warm-up's highest value (see the module docs):
/// 2 lines per malloc arena heap that may be added or split, for up to 8 arenas, plus 8.
pub const MAPS_SLACK: usize = 24;
/// Allowed RSS growth over the warm-up's highest value (see the module docs).
pub const RSS_SLACK: usize = 16 << 20;

/// When a worker ends an epoch and waits at the quiescent point.
#[derive(Clone, Copy, Debug)]
pub enum Epoch {
    /// After this long (the soak command).
    Time(Duration),
    /// After this many rounds per worker (tests: no timing involved).
    Rounds(u64),
}

/// A deliberate leak, for testing the checker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Leak {
    /// One pipe per round is never closed.
    Fd,
    /// 256 KiB of touched heap per round is never freed.
    Memory,
    /// One page per round is mapped and never unmapped (alternating protections, so the kernel
    /// cannot merge them into one line).
    Map,
    /// One paused job per round is ended with `Job::leak` (its closure is never dropped).
    Job,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub threads: usize,
    pub epoch: Epoch,
    /// Epochs whose samples set the baseline.
    pub warmup_epochs: u32,
    /// Stop after this many epochs, or at this time, whichever comes first.
    pub max_epochs: u32,
    pub deadline: Option<Duration>,
    pub seed: u64,
    pub leak: Option<Leak>,
}

impl Config {
    /// The soak command: 1-second epochs for `seconds`, warm-up 10% of the run (at least 5 epochs).
    pub fn timed(seconds: f64, threads: usize, seed: u64) -> Self {
        let total = Duration::from_secs_f64(seconds.max(1.0));
        let epochs = total.as_secs().max(1);
        Config {
            threads: threads.max(1),
            epoch: Epoch::Time(Duration::from_secs(1)),
            warmup_epochs: u32::try_from((epochs / 10).max(5)).unwrap_or(u32::MAX),
            max_epochs: u32::MAX,
            deadline: Some(total),
            seed,
            leak: None,
        }
    }
}

/// One sample of the process's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub rss: usize,
    pub fds: usize,
    pub maps: usize,
}

impl Sample {
    /// Reads /proc/self (Linux).
    pub fn now() -> Self {
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
        let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |s| s.lines().count());
        Sample {
            rss: crate::ffi::rss_bytes(),
            fds,
            maps,
        }
    }
}

/// Counts kept by every worker.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    pub rounds: u64,
    pub jobs: u64,
    pub finished: u64,
    pub cancelled: u64,
    pub panicked: u64,
    pub no_jobs: u64,
    pub pauses: u64,
    pub fds_registered: u64,
    pub fds_cleared: u64,
    pub pool_reinits: u64,
}

#[derive(Default)]
struct SharedCounts {
    rounds: AtomicU64,
    jobs: AtomicU64,
    finished: AtomicU64,
    cancelled: AtomicU64,
    panicked: AtomicU64,
    no_jobs: AtomicU64,
    pauses: AtomicU64,
    fds_registered: AtomicU64,
    fds_cleared: AtomicU64,
    pool_reinits: AtomicU64,
}

impl SharedCounts {
    fn add(&self, c: &Counts) {
        let r = Ordering::Relaxed;
        self.rounds.fetch_add(c.rounds, r);
        self.jobs.fetch_add(c.jobs, r);
        self.finished.fetch_add(c.finished, r);
        self.cancelled.fetch_add(c.cancelled, r);
        self.panicked.fetch_add(c.panicked, r);
        self.no_jobs.fetch_add(c.no_jobs, r);
        self.pauses.fetch_add(c.pauses, r);
        self.fds_registered.fetch_add(c.fds_registered, r);
        self.fds_cleared.fetch_add(c.fds_cleared, r);
        self.pool_reinits.fetch_add(c.pool_reinits, r);
    }
    fn get(&self) -> Counts {
        let r = Ordering::Relaxed;
        Counts {
            rounds: self.rounds.load(r),
            jobs: self.jobs.load(r),
            finished: self.finished.load(r),
            cancelled: self.cancelled.load(r),
            panicked: self.panicked.load(r),
            no_jobs: self.no_jobs.load(r),
            pauses: self.pauses.load(r),
            fds_registered: self.fds_registered.load(r),
            fds_cleared: self.fds_cleared.load(r),
            pool_reinits: self.pool_reinits.load(r),
        }
    }
}

/// The outcome of a soak run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub threads: usize,
    pub seconds: f64,
    pub epochs: u32,
    pub warmup_epochs: u32,
    /// Before the workers started.
    pub start: Sample,
    /// Highest values during the warm-up (the baseline).
    pub warm: Sample,
    /// Highest values after the warm-up, at quiescent points.
    pub peak_after_warmup: Sample,
    /// At the last quiescent point.
    pub last: Sample,
    /// After every worker exited.
    pub end: Sample,
    pub counts: Counts,
    /// Every check that failed (the first few of each kind).
    pub failures: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        let row = |name: &str, s: &Sample| {
            format!(
                "  {name:<22} rss {:>8.1} MiB   fds {:>4}   maps {:>5}\n",
                mib(s.rss),
                s.fds,
                s.maps
            )
        };
        let c = &self.counts;
        let mut t = format!(
            "stress: {} threads, {:.1} s, {} epochs ({} warm-up)\n",
            self.threads, self.seconds, self.epochs, self.warmup_epochs
        );
        t += &row("start", &self.start);
        t += &row("warm-up peak", &self.warm);
        t += &row("after warm-up peak", &self.peak_after_warmup);
        t += &row("last quiescent", &self.last);
        t += &row("end (workers exited)", &self.end);
        t += &format!(
            "  jobs run {} ({:.0}/s): finished {}, cancelled {}, panicked {}, NO_JOBS {}; \
             pauses {}; fds registered {} (cleared by their job {}); rounds {}; pool re-inits {}\n",
            c.jobs,
            c.jobs as f64 / self.seconds.max(1e-9),
            c.finished,
            c.cancelled,
            c.panicked,
            c.no_jobs,
            c.pauses,
            c.fds_registered,
            c.fds_cleared,
            c.rounds,
            c.pool_reinits
        );
        t += &format!(
            "  bounds: fds == start at every quiescent point; maps <= warm-up peak + {MAPS_SLACK}; \
             rss <= warm-up peak + {} MiB\n",
            RSS_SLACK >> 20
        );
        if self.failures.is_empty() {
            t += "  PASSED\n";
        } else {
            for f in &self.failures {
                t += &format!("  FAILED: {f}\n");
            }
        }
        t
    }
}

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// The failures a worker found (shared; capped so a systematic failure does not flood memory).
#[derive(Default)]
struct Failures(Mutex<Vec<String>>);

impl Failures {
    fn push(&self, s: String) {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if v.len() < 20 {
            v.push(s);
        }
    }
    fn any(&self) -> bool {
        !self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }
}

thread_local! {
    /// Closure states alive on this worker (each job's closure owns one).
    static LIVE_STATES: Cell<i64> = const { Cell::new(0) };
    /// The fds registered during the current round, with who closed them.
    static FD_TOKENS: RefCell<Vec<Rc<FdToken>>> = const { RefCell::new(Vec::new()) };
    /// Problems found inside jobs and cleanups, reported by the round.
    static PROBLEMS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Distinct wait keys on this worker.
    static NEXT_KEY: Cell<usize> = const { Cell::new(0x10_0000) };
}

fn problem(s: String) {
    PROBLEMS.with(|p| p.borrow_mut().push(s));
}

/// What a job's closure owns: some heap, so that a closure that is never dropped shows in RSS.
struct State {
    _heap: Vec<u64>,
}

impl State {
    fn new(words: usize) -> Self {
        LIVE_STATES.with(|l| l.set(l.get() + 1));
        State {
            _heap: vec![7; words],
        }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        LIVE_STATES.with(|l| l.set(l.get() - 1));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closer {
    Open,
    /// The wait ctx's cleanup closed it.
    Cleanup,
    /// The job cleared it from its ctx and closed it itself.
    Owner,
}

/// One registered fd (or pipe pair) and who closed it.
struct FdToken {
    fds: [i32; 2],
    closed: Cell<Closer>,
}

impl FdToken {
    fn close(&self, by: Closer) {
        if self.closed.get() != Closer::Open {
            problem(format!(
                "fd {:?} closed twice (first by {:?}, then by {by:?})",
                self.fds,
                self.closed.get()
            ));
            return;
        }
        self.closed.set(by);
        for fd in self.fds {
            if fd >= 0 {
                // SAFETY: the fd was opened by this worker for this token and, the token being
                // open, has not been closed.
                if unsafe { libc::close(fd) } != 0 {
                    problem(format!("close({fd}) failed"));
                }
            }
        }
    }
}

/// A pipe (read end registered) or an eventfd.
fn open_fds(pipe: bool) -> Option<[i32; 2]> {
    if pipe {
        let mut p = [-1; 2];
        // SAFETY: `p` has room for the two fds.
        (unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } == 0).then_some(p)
    } else {
        // SAFETY: no pointers involved.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        (fd >= 0).then_some([fd, -1])
    }
}

/// The plan of one job, decided by the driver.
#[derive(Clone, Copy, Debug)]
struct Plan {
    seed: u64,
    pauses: u64,
    /// Bit i: register an fd before pause i.
    fd_mask: u64,
    /// Bit i: clear the fd of pause i (and close it) after it.
    clear_mask: u64,
    /// Panic after this many pauses (never when >= pauses + 1).
    panic_at: u64,
    /// Address of the wait ctx the job must see (0: none).
    ctx_addr: usize,
}

/// The result a job following `plan` returns when nothing went wrong.
fn expected(plan: &Plan) -> u64 {
    let mut acc = [0u64; 32];
    fill(&mut acc, plan.seed);
    for i in 0..plan.pauses {
        mix(&mut acc, i);
    }
    acc.iter().fold(0u64, |a, &x| a.rotate_left(5) ^ x)
}

fn fill(acc: &mut [u64; 32], seed: u64) {
    let mut r = Rng::new(seed);
    for x in acc.iter_mut() {
        *x = r.next_u64();
    }
}

fn mix(acc: &mut [u64; 32], i: u64) {
    for (j, x) in acc.iter_mut().enumerate() {
        *x = x.rotate_left(7) ^ (i.wrapping_mul(31) + j as u64);
    }
}

/// Marker payload of the deliberate panics (kept out of the panic hook's output).
#[derive(Debug)]
pub struct StressPanic(pub u64);

fn job_body(plan: Plan) -> u64 {
    // The accumulator lives on the job's stack across every pause: corruption of a paused stack
    // changes the result.
    let mut acc = [0u64; 32];
    fill(&mut acc, plan.seed);
    let mut poison = 0u64;
    for i in 0..plan.pauses {
        if i == plan.panic_at {
            std::panic::panic_any(StressPanic(plan.seed));
        }
        let seen = asyncjob::current_wait_ctx().map_or(0, |c| c.as_ptr() as usize);
        if seen != plan.ctx_addr || asyncjob::current_job().is_none() {
            poison = 1;
        }
        let mut registered = None;
        if plan.fd_mask >> i & 1 == 1 {
            if let Some(ctx) = asyncjob::current_wait_ctx() {
                if let Some(fds) = open_fds(plan.seed >> i & 1 == 1) {
                    let token = Rc::new(FdToken {
                        fds,
                        closed: Cell::new(Closer::Open),
                    });
                    FD_TOKENS.with(|t| t.borrow_mut().push(token.clone()));
                    let key = NEXT_KEY.with(|k| {
                        k.set(k.get() + 8);
                        WaitKey::from_addr(k.get())
                    });
                    let t2 = token.clone();
                    ctx.set_wait_fd(
                        key,
                        fds[0],
                        std::ptr::null_mut::<c_void>(),
                        Some(Box::new(move |_, fd, _| {
                            if fd != t2.fds[0] {
                                problem(format!("cleanup got fd {fd}, registered {}", t2.fds[0]));
                            }
                            t2.close(Closer::Cleanup);
                        })),
                    );
                    if ctx.fd(key).map(|(fd, _)| fd) != Some(fds[0]) {
                        poison |= 2;
                    }
                    registered = Some((ctx, key, token));
                }
            }
        }
        asyncjob::pause();
        mix(&mut acc, i);
        if let Some((ctx, key, token)) = registered {
            if plan.clear_mask >> i & 1 == 1 {
                if ctx.clear_fd(key) {
                    token.close(Closer::Owner);
                } else {
                    poison |= 4;
                }
            }
        }
    }
    acc.iter().fold(0u64, |a, &x| a.rotate_left(5) ^ x) ^ poison
}

type StressJob = Job<u64>;

/// Per-worker driver of one round.
struct Worker<'a> {
    rng: Rng,
    counts: Counts,
    failures: &'a Failures,
    leak: Option<Leak>,
    id: usize,
    leaked: Vec<*mut c_void>,
}

impl Worker<'_> {
    fn fail(&self, s: String) {
        self.failures.push(format!("worker {}: {s}", self.id));
    }

    fn check_result(&mut self, plan: &Plan, v: u64) {
        self.counts.finished += 1;
        if v != expected(plan) {
            self.fail(format!(
                "job {plan:?} returned {v:#x}, expected {:#x}",
                expected(plan)
            ));
        }
    }

    /// Runs `f` (a start or resume), checking the payload of a deliberate panic.
    fn guarded<T>(&mut self, plan: &Plan, f: impl FnOnce() -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(payload) => {
                match payload.downcast_ref::<StressPanic>() {
                    Some(StressPanic(s)) if *s == plan.seed && plan.panic_at < plan.pauses => {
                        self.counts.panicked += 1;
                    }
                    _ => self.fail(format!("unexpected panic from job {plan:?}")),
                }
                None
            }
        }
    }

    fn resume(&mut self, job: StressJob, plan: Plan, paused: &mut Vec<(StressJob, Plan)>) {
        self.counts.pauses += 1;
        match self.guarded(&plan, || job.resume()) {
            Some(Ok(Resumed::Finished(v))) => self.check_result(&plan, v),
            Some(Ok(Resumed::Paused(j))) => paused.push((j, plan)),
            Some(Err(e)) => self.fail(format!("resume failed: {}", e.error)),
            None => {}
        }
    }

    fn round(&mut self) {
        let r = &mut self.rng;
        match r.below(40) {
            0 => {
                let max = r.below(MAX_JOBS + 1) as usize;
                let init = if max == 0 {
                    0
                } else {
                    r.below(max as u64 + 1) as usize
                };
                if let Err(e) = asyncjob::init_thread(max, init) {
                    self.fail(format!("init_thread({max}, {init}): {e}"));
                }
                self.counts.pool_reinits += 1;
            }
            1 => {
                if let Err(e) = asyncjob::cleanup_thread() {
                    self.fail(format!("cleanup_thread with no job paused: {e}"));
                }
                self.counts.pool_reinits += 1;
            }
            _ => {}
        }
        let nctx = 1 + self.rng.below(3) as usize;
        let mut ctxs: Vec<Option<WaitCtx>> = (0..nctx).map(|_| Some(WaitCtx::new())).collect();
        let njobs = 1 + self.rng.below(MAX_JOBS);
        let mut paused: Vec<(StressJob, Plan)> = Vec::new();
        for _ in 0..njobs {
            let ci = self.rng.below(nctx as u64 + 1) as usize;
            // The driver may have dropped its handle of that ctx already: then no ctx.
            let ctx = ctxs.get(ci).and_then(Option::as_ref);
            let pauses = self.rng.below(MAX_PAUSES + 1);
            let plan = Plan {
                seed: self.rng.next_u64(),
                pauses,
                fd_mask: self.rng.next_u64(),
                clear_mask: self.rng.next_u64(),
                panic_at: if self.rng.chance(16) {
                    self.rng.below(pauses + 1)
                } else {
                    u64::MAX
                },
                ctx_addr: ctx.map_or(0, |c| c.as_ptr() as usize),
            };
            let state = State::new(1 + self.rng.below(64) as usize);
            self.counts.jobs += 1;
            let started = self.guarded(&plan, || {
                asyncjob::start(ctx, move || {
                    let _state = &state;
                    job_body(plan)
                })
            });
            match started {
                Some(Ok(Started::Finished(v))) => self.check_result(&plan, v),
                Some(Ok(Started::Paused(j))) => paused.push((j, plan)),
                Some(Ok(Started::NoJobs(f))) => {
                    self.counts.no_jobs += 1;
                    drop(f);
                }
                Some(Err(e)) => self.fail(format!("start failed: {e}")),
                None => {}
            }
            self.shuffle_some(&mut paused, &mut ctxs);
        }
        if self.leak == Some(Leak::Job) {
            if let Some((j, _)) = paused.pop() {
                j.leak();
            }
        }
        while !paused.is_empty() {
            self.shuffle_some(&mut paused, &mut ctxs);
            if let Some(i) = (!paused.is_empty()).then(|| self.rng.below(paused.len() as u64)) {
                let (j, plan) = paused.swap_remove(i as usize);
                self.resume(j, plan, &mut paused);
            }
        }
        // The driver's remaining handles go in random order.
        while !ctxs.is_empty() {
            let i = self.rng.below(ctxs.len() as u64) as usize;
            drop(ctxs.swap_remove(i));
        }
        self.deliberate_leak();
        self.end_of_round_checks();
        self.counts.rounds += 1;
    }

    /// Between starts: resume, cancel (drop) or leave a few paused jobs, and drop driver ctx handles.
    fn shuffle_some(&mut self, paused: &mut Vec<(StressJob, Plan)>, ctxs: &mut [Option<WaitCtx>]) {
        for _ in 0..self.rng.below(3) {
            if paused.is_empty() {
                break;
            }
            let i = self.rng.below(paused.len() as u64) as usize;
            match self.rng.below(8) {
                0 => {
                    let (j, _) = paused.swap_remove(i);
                    drop(j);
                    self.counts.cancelled += 1;
                }
                1..=4 => {
                    let (j, plan) = paused.swap_remove(i);
                    self.resume(j, plan, paused);
                }
                _ => {}
            }
        }
        if self.rng.chance(4) && !ctxs.is_empty() {
            let i = self.rng.below(ctxs.len() as u64) as usize;
            ctxs[i] = None;
        }
    }

    fn deliberate_leak(&mut self) {
        match self.leak {
            Some(Leak::Fd) => {
                let _ = open_fds(true);
            }
            Some(Leak::Memory) => {
                std::mem::forget(vec![1u8; 256 << 10]);
            }
            Some(Leak::Map) => {
                let prot = if self.leaked.len() % 2 == 0 {
                    libc::PROT_READ
                } else {
                    libc::PROT_READ | libc::PROT_WRITE
                };
                // SAFETY: a fresh anonymous mapping; nothing else is affected.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        prot,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                self.leaked.push(p);
            }
            Some(Leak::Job) | None => {}
        }
    }

    /// At the end of a round: no closure state alive, every registered fd closed exactly once.
    fn end_of_round_checks(&mut self) {
        let live = LIVE_STATES.with(Cell::get);
        if live != 0 {
            self.fail(format!("{live} job closures were never dropped"));
            LIVE_STATES.with(|l| l.set(0));
        }
        let tokens = FD_TOKENS.with(|t| std::mem::take(&mut *t.borrow_mut()));
        for t in &tokens {
            self.counts.fds_registered += 1;
            match t.closed.get() {
                Closer::Open => {
                    self.fail(format!("fd {:?}: its cleanup never ran", t.fds));
                }
                Closer::Owner => self.counts.fds_cleared += 1,
                Closer::Cleanup => {}
            }
        }
        for p in PROBLEMS.with(|p| std::mem::take(&mut *p.borrow_mut())) {
            self.fail(p);
        }
    }
}

/// Silences the deliberate panics (and only those) in the panic hook, once per process.
fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<StressPanic>() {
                prev(info);
            }
        }));
    });
}

/// Runs the soak described by `cfg` and reports.
pub fn run(cfg: &Config) -> Report {
    quiet_deliberate_panics();
    let start = Sample::now();
    let t0 = Instant::now();
    let threads = cfg.threads.max(1);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let epoch_over = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Failures::default());
    let counts = Arc::new(SharedCounts::default());
    let mut handles = Vec::new();
    for id in 0..threads {
        let (barrier, epoch_over, stop, failures, counts) = (
            barrier.clone(),
            epoch_over.clone(),
            stop.clone(),
            failures.clone(),
            counts.clone(),
        );
        let (epoch, leak, seed) = (cfg.epoch, cfg.leak, cfg.seed);
        handles.push(
            std::thread::Builder::new()
                .name(format!("stress-{id}"))
                .spawn(move || {
                    let mut w = Worker {
                        rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1)),
                        counts: Counts::default(),
                        failures: &failures,
                        leak,
                        id,
                        leaked: Vec::new(),
                    };
                    loop {
                        let mut n = 0u64;
                        loop {
                            match epoch {
                                Epoch::Rounds(r) if n >= r => break,
                                Epoch::Time(_) if epoch_over.load(Ordering::Acquire) => break,
                                _ => {}
                            }
                            // A panic outside a job is a bug of asyncjob or of this checker; it is
                            // reported, and the worker goes on so that the barrier is still met.
                            if catch_unwind(AssertUnwindSafe(|| w.round())).is_err() {
                                w.fail("a round panicked outside any job".into());
                            }
                            n += 1;
                        }
                        counts.add(&std::mem::take(&mut w.counts));
                        barrier.wait();
                        // The main thread samples here.
                        barrier.wait();
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                    }
                })
                .expect("spawn a stress worker"),
        );
    }
    let mut warm = Sample::default();
    let mut peak = Sample::default();
    let mut last;
    let mut epochs = 0u32;
    let mut resource_failures = Vec::new();
    loop {
        if let Epoch::Time(d) = cfg.epoch {
            std::thread::sleep(d);
            epoch_over.store(true, Ordering::Release);
        }
        barrier.wait();
        // Quiescent: every worker is between rounds.
        let s = Sample::now();
        last = s;
        epochs += 1;
        let warmup = epochs <= cfg.warmup_epochs;
        let max = |a: Sample, b: Sample| Sample {
            rss: a.rss.max(b.rss),
            fds: a.fds.max(b.fds),
            maps: a.maps.max(b.maps),
        };
        if s.fds != start.fds && resource_failures.len() < 5 {
            resource_failures.push(format!(
                "epoch {epochs}: {} fds open at a quiescent point, {} before the run",
                s.fds, start.fds
            ));
        }
        if warmup {
            warm = max(warm, s);
        } else {
            peak = max(peak, s);
            if s.maps > warm.maps + MAPS_SLACK && resource_failures.len() < 5 {
                resource_failures.push(format!(
                    "epoch {epochs}: {} memory maps, warm-up peak {} (+{MAPS_SLACK} allowed)",
                    s.maps, warm.maps
                ));
            }
            if s.rss > warm.rss + RSS_SLACK && resource_failures.len() < 5 {
                resource_failures.push(format!(
                    "epoch {epochs}: RSS {} KiB, warm-up peak {} KiB (+{} KiB allowed)",
                    s.rss >> 10,
                    warm.rss >> 10,
                    RSS_SLACK >> 10
                ));
            }
        }
        let done = epochs >= cfg.max_epochs
            || cfg.deadline.is_some_and(|d| t0.elapsed() >= d)
            || (failures.any() && !warmup)
            || resource_failures.len() >= 5;
        stop.store(done, Ordering::Release);
        epoch_over.store(false, Ordering::Release);
        barrier.wait();
        if done {
            break;
        }
    }
    for h in handles {
        if h.join().is_err() {
            resource_failures.push("a worker panicked".into());
        }
    }
    let end = Sample::now();
    if end.fds != start.fds {
        resource_failures.push(format!(
            "{} fds open after the workers exited, {} before the run",
            end.fds, start.fds
        ));
    }
    let mut all = std::mem::take(
        &mut *failures
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    all.extend(resource_failures);
    Report {
        threads,
        seconds: t0.elapsed().as_secs_f64(),
        epochs,
        warmup_epochs: cfg.warmup_epochs,
        start,
        warm,
        peak_after_warmup: peak,
        last,
        end,
        counts: counts.get(),
        failures: all,
    }
}
