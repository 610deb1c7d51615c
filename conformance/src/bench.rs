//! The speed table: each case runs on both backends in the same process, interleaved A/B/A/B after a
//! warm-up, and the medians are compared.
//!
//! The wall-time targets for the Rust API are issue 11's: pause→resume at least 5× OpenSSL's speed,
//! start→finish at least 4×. They are reported (the `met` column), never a pass/fail criterion: wall
//! time on a shared machine is noisy. The C ABI's ratios are printed by `ci/step-42-capi-bench.sh`.

use crate::ffi;
use asyncjob::{Resumed, Started, WaitCtx};
use serde::Serialize;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Sizes of one bench run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub rounds: usize,
    pub round_trips: u64,
    pub starts: u64,
    pub fresh_jobs: usize,
    pub million: bool,
}

impl Plan {
    /// Fits the default report's time budget.
    pub const QUICK: Plan = Plan {
        rounds: 11,
        round_trips: 1_000_000,
        starts: 1_000_000,
        fresh_jobs: 5_000,
        million: false,
    };
    /// `bench --full`.
    pub const FULL: Plan = Plan {
        rounds: 15,
        round_trips: 1_000_000,
        starts: 1_000_000,
        fresh_jobs: 20_000,
        million: true,
    };
}

/// One row of the speed table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub case: &'static str,
    pub unit: &'static str,
    pub openssl: f64,
    pub asyncjob: f64,
    /// openssl / asyncjob for times (higher is better for asyncjob); asyncjob / openssl for throughput;
    /// NaN (JSON null) where a ratio means nothing.
    pub ratio: f64,
    pub target: &'static str,
    /// Whether the target is met (None when the row has no numeric target).
    pub met: Option<bool>,
    pub note: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn per_op(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// Interleaves A and B `rounds` times after one warm-up of each; returns both medians.
fn ab(rounds: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> (f64, f64) {
    a();
    b();
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        va.push(a());
        vb.push(b());
    }
    (median(va), median(vb))
}

fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// asyncjob: `n` pause→resume round trips; also returns heap allocations per round trip.
fn aj_pause_resume(n: u64) -> (Duration, f64) {
    let stop = Rc::new(Cell::new(false));
    let s2 = Rc::clone(&stop);
    let ctx = WaitCtx::new();
    let Ok(Started::Paused(mut job)) = asyncjob::start(Some(&ctx), move || {
        while !s2.get() {
            asyncjob::pause();
        }
    }) else {
        panic!("benchmark job did not pause")
    };
    let a0 = ffi::thread_allocations();
    let t = Instant::now();
    for _ in 0..n {
        job = match job.resume() {
            Ok(Resumed::Paused(j)) => j,
            _ => panic!("benchmark job stopped pausing"),
        };
    }
    let d = t.elapsed();
    let allocs = (ffi::thread_allocations() - a0) as f64 / n as f64;
    stop.set(true);
    assert!(matches!(job.resume(), Ok(Resumed::Finished(()))));
    (d, allocs)
}

/// asyncjob: `n` start→finish runs; with `args16` the closure captures a 16-byte array.
fn aj_start_finish(n: u64, args16: bool) -> (Duration, f64) {
    let args = [7u8; 16];
    let a0 = ffi::thread_allocations();
    let t = Instant::now();
    for _ in 0..n {
        let r = if args16 {
            asyncjob::start(None, move || i32::from(std::hint::black_box(args)[3]))
                .map(|s| matches!(s, Started::Finished(_)))
        } else {
            asyncjob::start(None, || 5).map(|s| matches!(s, Started::Finished(_)))
        };
        debug_assert!(matches!(r, Ok(true)));
        std::hint::black_box(r).ok();
    }
    let d = t.elapsed();
    (d, (ffi::thread_allocations() - a0) as f64 / n as f64)
}

fn held_bytes<T>(v: &[T]) -> usize {
    std::mem::size_of_val(v)
}

/// asyncjob: `n` fresh paused jobs on this (fresh) thread: (time, RSS delta, held).
fn aj_fresh_paused(n: usize) -> (Duration, i64, usize) {
    let ctx = WaitCtx::new();
    let mut jobs = Vec::with_capacity(n);
    let rss0 = ffi::rss_bytes();
    let t = Instant::now();
    for _ in 0..n {
        match asyncjob::start(Some(&ctx), asyncjob::pause) {
            Ok(Started::Paused(j)) => jobs.push(j),
            _ => break,
        }
    }
    let d = t.elapsed();
    // Not counted: the harness's own vector of handles.
    let handles = held_bytes(&jobs) as i64;
    let rss = ffi::rss_bytes() as i64 - rss0 as i64 - handles;
    let held = jobs.len();
    for j in jobs {
        let _ = j.resume();
    }
    let _ = asyncjob::cleanup_thread();
    (d, rss, held)
}

/// Throughput of start→finish on two threads at once relative to one thread (ideal: 2.0).
fn scaling(n: u64, f: fn(u64) -> Duration) -> f64 {
    let one = on_thread(move || f(n));
    let t = Instant::now();
    let a = std::thread::spawn(move || f(n));
    let b = std::thread::spawn(move || f(n));
    a.join().ok();
    b.join().ok();
    let two = t.elapsed();
    2.0 * one.as_secs_f64() / two.as_secs_f64()
}

fn ossl_sf(n: u64) -> Duration {
    ffi::ossl_start_finish(n, false)
}

fn aj_sf(n: u64) -> Duration {
    aj_start_finish(n, false).0
}

/// Runs every case of `plan`; `progress` gets the name of each case as it starts.
pub fn run(plan: Plan, progress: &dyn Fn(&str)) -> Vec<Row> {
    let mut rows = Vec::new();
    let r = plan.rounds;

    progress("pause→resume");
    let n = plan.round_trips;
    let (o, a) = on_thread(move || {
        ab(
            r,
            || per_op(ffi::ossl_pause_resume(n), n),
            || per_op(aj_pause_resume(n).0, n),
        )
    });
    let pr_allocs = on_thread(move || aj_pause_resume(1000).1);
    rows.push(Row {
        case: "pause→resume round trip",
        unit: "ns",
        openssl: o,
        asyncjob: a,
        ratio: o / a,
        target: "≥ 5× faster",
        met: Some(o / a >= 5.0),
        note: format!("asyncjob heap allocations per round trip: {pr_allocs:.2}"),
    });

    for (args16, case, target, want) in [
        (false, "start→finish, no pause", "≥ 4× faster", 4.0),
        (true, "start→finish, 16-byte args", "≥ 4× faster", 4.0),
    ] {
        progress(case);
        let n = plan.starts;
        let ((o, a), al) = on_thread(move || {
            let m = ab(
                r,
                || per_op(ffi::ossl_start_finish(n, args16), n),
                || per_op(aj_start_finish(n, args16).0, n),
            );
            (m, aj_start_finish(1000, args16).1)
        });
        rows.push(Row {
            case,
            unit: "ns",
            openssl: o,
            asyncjob: a,
            ratio: o / a,
            target,
            met: Some(o / a >= want),
            note: format!("asyncjob heap allocations per start: {al:.2} (target 0)"),
        });
    }

    let (pr, sf) = on_thread(|| (aj_pause_resume(10_000).1, aj_start_finish(10_000, true).1));
    rows.push(Row {
        case: "heap allocations per op, steady state",
        unit: "",
        openssl: 1.0,
        asyncjob: pr.max(sf),
        ratio: f64::NAN,
        target: "0",
        met: Some(pr == 0.0 && sf == 0.0),
        note: format!(
            "asyncjob measured: {pr:.3}/pause→resume, {sf:.3}/start→finish with 16-byte capture; \
             openssl from the reference (1 malloc+free per start with args), not measured"
        ),
    });

    progress("fresh paused jobs");
    let n = plan.fresh_jobs;
    let (mut ot, mut at, mut orss, mut arss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..r.min(5) {
        let (d, rss, _) = on_thread(move || ffi::ossl_fresh_paused(n));
        ot.push(per_op(d, n as u64));
        orss.push(rss as f64 / n as f64);
        let (d, rss, _) = on_thread(move || aj_fresh_paused(n));
        at.push(per_op(d, n as u64));
        arss.push(rss as f64 / n as f64);
    }
    let (o, a) = (median(ot), median(at));
    rows.push(Row {
        case: "create a fresh paused job",
        unit: "ns",
        openssl: o,
        asyncjob: a,
        ratio: o / a,
        target: "no slower (ratio ≥ 1)",
        met: Some(o / a >= 1.0),
        note: format!("{n} jobs at once"),
    });
    let (o, a) = (median(orss), median(arss));
    rows.push(Row {
        case: "RSS per fresh paused job",
        unit: "bytes",
        openssl: o,
        asyncjob: a,
        ratio: o / a,
        target: "≤ 4.2 KB",
        met: Some(a <= 4200.0),
        note: format!("{n} jobs, /proc/self/statm delta minus the harness's handle vector"),
    });

    if plan.million {
        progress("1,000,000 paused jobs");
        let n = 1_000_000;
        let (od, orss, oheld) = on_thread(move || ffi::ossl_fresh_paused(n));
        let (ad, arss, aheld) = on_thread(move || aj_fresh_paused(n));
        rows.push(Row {
            case: "1,000,000 paused jobs: RSS per job",
            unit: "bytes",
            openssl: orss as f64 / oheld.max(1) as f64,
            asyncjob: arss as f64 / aheld.max(1) as f64,
            ratio: (orss as f64 / oheld.max(1) as f64) / (arss as f64 / aheld.max(1) as f64),
            target: "hold 1M, with guard pages",
            met: Some(aheld == n),
            note: format!(
                "held: openssl {oheld}, asyncjob {aheld}; creation {:.1} s vs {:.1} s",
                od.as_secs_f64(),
                ad.as_secs_f64()
            ),
        });
    }

    progress("two threads");
    let n = plan.starts;
    let os = scaling(n, ossl_sf);
    let as_ = scaling(n, aj_sf);
    rows.push(Row {
        case: "two threads vs one (start→finish throughput)",
        unit: "×",
        openssl: os,
        asyncjob: as_,
        ratio: as_ / os,
        target: "asyncjob ≥ 1.9×",
        met: Some(as_ >= 1.9),
        note: format!(
            "{} cores available; other processes share them",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
    });
    rows
}
