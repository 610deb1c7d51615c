//! `rustls-demo bench`: handshakes/s, latency, threads, memory and CPU for each way of waiting for
//! a slow signer, over concurrency C and signing latency L.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::pki::KeyKind;
use crate::server::{Handshakes, Server};
use crate::service::SigningService;
use crate::signer::{Backend, RemoteKey, Wait};
use crate::tokio_job::JobTokioServer;
use crate::tokio_servers::{TokioMode, TokioServer};
use crate::{client, config, net};

/// One way of serving handshakes with a remote signer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// One thread; handshake in a job; the signer pauses on the service connection's fd.
    JobFd,
    /// One thread; handshake in a job; the signer pauses until a client thread notifies.
    JobNotify,
    /// tokio-rustls on a current-thread runtime, the handshake inside `asyncjob_tokio::run`; the
    /// signer awaits an async client with `asyncjob_tokio::block_on`.
    JobBlockOn,
    /// One thread, no jobs; the signer blocks the thread (the "plain" path).
    Blocking,
    /// tokio-rustls on a multi-thread runtime; the signer blocks inside `block_in_place`.
    BlockInPlace,
    /// Each handshake on tokio's blocking pool (default size, 512).
    SpawnBlocking,
    /// Each handshake on tokio's blocking pool capped at 16 threads.
    SpawnBlocking16,
}

impl Variant {
    /// Every variant, in table order.
    pub const ALL: [Variant; 7] = [
        Variant::JobFd,
        Variant::JobNotify,
        Variant::JobBlockOn,
        Variant::Blocking,
        Variant::BlockInPlace,
        Variant::SpawnBlocking,
        Variant::SpawnBlocking16,
    ];

    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Variant::JobFd => "job+fd",
            Variant::JobNotify => "job+notifier",
            Variant::JobBlockOn => "job+block_on (tokio-rustls)",
            Variant::Blocking => "blocking (1 thread)",
            Variant::BlockInPlace => "block_in_place (MT)",
            Variant::SpawnBlocking => "spawn_blocking (512)",
            Variant::SpawnBlocking16 => "spawn_blocking (16)",
        }
    }

    /// Whether the whole server is one thread (its CPU time is then measured on that thread).
    pub fn one_thread(self) -> bool {
        matches!(
            self,
            Variant::JobFd | Variant::JobNotify | Variant::JobBlockOn | Variant::Blocking
        )
    }

    /// Whether the handshakes run in jobs.
    pub fn job_driven(self) -> bool {
        matches!(
            self,
            Variant::JobFd | Variant::JobNotify | Variant::JobBlockOn
        )
    }

    fn wait(self) -> Wait {
        match self {
            Variant::JobFd => Wait::JobFd,
            Variant::JobNotify => Wait::JobNotify,
            Variant::JobBlockOn => Wait::BlockOn,
            Variant::BlockInPlace => Wait::BlockInPlace,
            Variant::Blocking | Variant::SpawnBlocking | Variant::SpawnBlocking16 => Wait::Blocking,
        }
    }
}

/// What one cell measured.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The variant.
    pub variant: Variant,
    /// Concurrent clients.
    pub c: usize,
    /// Signing latency.
    pub l: Duration,
    /// Completed handshakes.
    pub completed: u64,
    /// Failed handshakes (client side).
    pub failed: u64,
    /// Handshakes per second.
    pub rate: f64,
    /// Median latency (connect to "ok").
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Most OS threads of the process seen during the cell.
    pub threads: u64,
    /// Peak RSS of the process during the cell, KiB.
    pub peak_rss_kib: u64,
    /// CPU of the server thread per handshake (one-thread variants).
    pub server_cpu: Option<Duration>,
    /// CPU of the whole process (server, clients, service) per handshake.
    pub process_cpu: Duration,
}

enum Running {
    Loop(Server),
    Tokio(TokioServer),
    JobTokio(JobTokioServer),
}

/// Measure one cell: `c` clients against `variant` with signing latency `l`, for `duration` after
/// a warm-up of `warmup` (CPU, threads and RSS cover both).
pub fn run_cell(
    variant: Variant,
    c: usize,
    l: Duration,
    warmup: Duration,
    duration: Duration,
) -> Cell {
    let service = SigningService::start(l).expect("signing service");
    let backend = Backend::new(&service, variant.wait());
    let key = RemoteKey::new(KeyKind::EcdsaP256, backend.clone()).certified();
    let server_config = config::server(key, &config::versions(true, false));
    let server = match variant {
        Variant::JobFd | Variant::JobNotify => {
            Running::Loop(Server::start(server_config, Handshakes::InJob).expect("server"))
        }
        Variant::JobBlockOn => {
            Running::JobTokio(JobTokioServer::start(server_config).expect("server"))
        }
        Variant::Blocking => {
            Running::Loop(Server::start(server_config, Handshakes::Direct).expect("server"))
        }
        Variant::BlockInPlace => Running::Tokio(
            TokioServer::start(server_config, TokioMode::BlockInPlace).expect("server"),
        ),
        Variant::SpawnBlocking => Running::Tokio(
            TokioServer::start(server_config, TokioMode::SpawnBlocking(512)).expect("server"),
        ),
        Variant::SpawnBlocking16 => Running::Tokio(
            TokioServer::start(server_config, TokioMode::SpawnBlocking(16)).expect("server"),
        ),
    };
    let addr = match &server {
        Running::Loop(s) => s.addr(),
        Running::Tokio(s) => s.addr(),
        Running::JobTokio(s) => s.addr(),
    };
    let client_config = config::client(&config::versions(true, false));

    net::reset_peak_rss();
    let cpu0 = net::process_cpu();
    let done = Arc::new(AtomicBool::new(false));
    let client_done = done.clone();
    let clients = std::thread::Builder::new()
        .name("bench-clients".into())
        .spawn(move || {
            let load = client::load(addr, client_config, c, warmup, duration, u64::MAX);
            client_done.store(true, Ordering::Release);
            load
        })
        .expect("client thread");
    let mut threads = net::threads();
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(10));
        threads = threads.max(net::threads());
    }
    let mut load = clients.join().expect("clients");
    let cpu = net::process_cpu() - cpu0;
    let peak_rss_kib = net::peak_rss_kib();
    let served = match &server {
        Running::Loop(s) => s.stats().handshakes.load(Ordering::Relaxed),
        Running::Tokio(s) => s.stats().handshakes.load(Ordering::Relaxed),
        Running::JobTokio(s) => s.stats().handshakes.load(Ordering::Relaxed),
    };
    drop(service);
    let server_cpu = match server {
        Running::Loop(s) => Some(s.stop().cpu),
        Running::Tokio(s) => {
            drop(s);
            None
        }
        Running::JobTokio(s) => Some(s.stop()),
    };
    drop(backend);

    load.latencies.sort_unstable();
    let pct = |p: f64| -> Duration {
        if load.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((load.latencies.len() as f64 - 1.0) * p).round() as usize;
        load.latencies[i]
    };
    // CPU covers the warm-up too: divide by every handshake the server completed meanwhile.
    let n = served.max(1);
    Cell {
        variant,
        c,
        l,
        completed: load.completed,
        failed: load.failed,
        rate: load.completed as f64 / load.elapsed.as_secs_f64(),
        p50: pct(0.5),
        p99: pct(0.99),
        threads,
        peak_rss_kib,
        server_cpu: server_cpu
            .filter(|_| variant.one_thread())
            .map(|t| t / n as u32),
        process_cpu: cpu / n as u32,
    }
}

/// Which cells a run covers.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Variants, in table order.
    pub variants: Vec<Variant>,
    /// Concurrencies.
    pub concurrency: Vec<usize>,
    /// Signing latencies.
    pub latency: Vec<Duration>,
    /// Warm-up per cell (not counted in rate and latency).
    pub warmup: Duration,
    /// Measured time per cell.
    pub duration: Duration,
}

impl Plan {
    /// The full table: C ∈ {1,16,128,1024} × L ∈ {0,1,5,20} ms × every variant, 1 s per cell
    /// after 0.5 s of warm-up.
    pub fn full() -> Plan {
        Plan {
            variants: Variant::ALL.to_vec(),
            concurrency: vec![1, 16, 128, 1024],
            latency: [0, 1, 5, 20].map(Duration::from_millis).to_vec(),
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(1),
        }
    }

    /// A few cells for CI: C ∈ {1,128} × L ∈ {0,20} ms, 0.5 s per cell after 0.25 s of warm-up.
    pub fn quick() -> Plan {
        Plan {
            variants: Variant::ALL.to_vec(),
            concurrency: vec![1, 128],
            latency: [0, 20].map(Duration::from_millis).to_vec(),
            warmup: Duration::from_millis(250),
            duration: Duration::from_millis(500),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn us(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e6))
}

/// Run every cell of `plan`, printing each row as it is measured; return the cells.
pub fn run(plan: &Plan, mut out: impl FnMut(&str)) -> Vec<Cell> {
    out(concat!(
        "| variant | C | L ms | handshakes/s | p50 ms | p99 ms | OS threads | peak RSS MiB ",
        "| server CPU µs/hs | process CPU µs/hs | failed |\n",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    ));
    let mut cells = Vec::new();
    for &variant in &plan.variants {
        for &l in &plan.latency {
            for &c in &plan.concurrency {
                let cell = run_cell(variant, c, l, plan.warmup, plan.duration);
                out(&format!(
                    "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {} | {} | {} |",
                    variant.name(),
                    c,
                    l.as_millis(),
                    cell.rate,
                    ms(cell.p50),
                    ms(cell.p99),
                    cell.threads,
                    cell.peak_rss_kib as f64 / 1024.0,
                    // Nothing served: no per-handshake cost to show.
                    us(cell.server_cpu.filter(|_| cell.completed > 0)),
                    us(Some(cell.process_cpu).filter(|_| cell.completed > 0)),
                    cell.failed,
                ));
                cells.push(cell);
            }
        }
    }
    cells
}

/// The targets, checked against the measured cells: lines of text, and whether all held.
pub fn targets(cells: &[Cell]) -> (String, bool) {
    let find = |v: Variant, c: usize, l: u64| {
        cells
            .iter()
            .find(|x| x.variant == v && x.c == c && x.l == Duration::from_millis(l))
    };
    let mut s = String::new();
    let mut all = true;
    let _ = writeln!(s, "\nTargets (C = 128, one server thread):");
    for v in [Variant::JobFd, Variant::JobNotify, Variant::JobBlockOn] {
        if let (Some(slow), Some(fast)) = (find(v, 128, 20), find(v, 128, 0)) {
            let target = (0.5 * 128.0 / 0.020f64).min(0.8 * fast.rate);
            let ok = slow.rate >= target;
            all &= ok;
            let _ = writeln!(
                s,
                "- {} at L=20ms: target >= min(0.5*C/L = 3200, 0.8 * {:.0} (its L=0 rate)) = {:.0}/s; measured {:.0}/s: {}",
                v.name(),
                fast.rate,
                target,
                slow.rate,
                if ok { "met" } else { "NOT met" }
            );
        }
    }
    if let Some(b) = find(Variant::Blocking, 128, 20) {
        let _ = writeln!(
            s,
            "- blocking at L=20ms: expected near 1/L = 50/s; measured {:.0}/s",
            b.rate
        );
    }
    (s, all)
}

/// The CPU target, measured apart from the table so that noise from other processes on the machine
/// weighs less: at L = 0, job+fd and the plain path (the same one-thread server calling
/// `process_new_packets` directly, with the blocking signer) alternate `rounds` times per
/// concurrency, and the medians of the server thread's CPU per handshake are compared.
pub fn cpu_check(
    concurrency: &[usize],
    rounds: usize,
    warmup: Duration,
    duration: Duration,
) -> (String, bool) {
    let mut s =
        String::from("\nCPU per handshake at L = 0 (server thread; median of alternating runs):\n");
    let mut all = true;
    for &c in concurrency {
        let mut job = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..rounds {
            for (v, out) in [(Variant::JobFd, &mut job), (Variant::Blocking, &mut plain)] {
                let cell = run_cell(v, c, Duration::ZERO, warmup, duration);
                out.push(cell.server_cpu.expect("one-thread variant"));
            }
        }
        job.sort_unstable();
        plain.sort_unstable();
        let (j, p) = (job[job.len() / 2], plain[plain.len() / 2]);
        let ratio = j.as_secs_f64() / p.as_secs_f64();
        let ok = ratio <= 1.05;
        all &= ok;
        let range =
            |v: &[Duration]| format!("{}..{}", us(v.first().copied()), us(v.last().copied()));
        let _ = writeln!(
            s,
            "- C={c}: job+fd {} µs (runs {}) vs plain {} µs (runs {}) per handshake: ratio {:.3} (target <= 1.05): {}",
            us(Some(j)),
            range(&job),
            us(Some(p)),
            range(&plain),
            ratio,
            if ok { "met" } else { "NOT met" }
        );
    }
    (s, all)
}

/// The blocking signer's steady state at C = 128, L = 20 ms: one loop turn serves every readable
/// connection, and each of them blocks for L, so the first completions come only after
/// C × L = 2.56 s: a 1 s cell of the table sees none. This cell warms up for 3 s and measures 5 s.
pub fn blocking_steady_state() -> String {
    let cell = run_cell(
        Variant::Blocking,
        128,
        Duration::from_millis(20),
        Duration::from_secs(3),
        Duration::from_secs(5),
    );
    format!(
        "\nBlocking signer, C=128, L=20ms, after 3 s of warm-up, 5 s: {:.0} handshakes/s (1/L = 50/s), p50 {} ms, p99 {} ms\n",
        cell.rate,
        ms(cell.p50),
        ms(cell.p99)
    )
}

/// Serve exactly `n` handshakes with `variant` (a one-thread loop variant: job+fd or the plain
/// blocking one) to `c` clients in this process, at L = 0, and return how many the server
/// completed (`n` plus at most `c - 1` that had started when the n-th ended). No timing is
/// involved: this is what `rustls-demo instructions` runs under callgrind.
pub fn serve_count(variant: Variant, c: usize, n: u64) -> u64 {
    assert!(
        matches!(variant, Variant::JobFd | Variant::Blocking),
        "serve_count runs the one-thread loop variants job+fd and blocking"
    );
    let service = SigningService::start(Duration::ZERO).expect("signing service");
    let backend = Backend::new(&service, variant.wait());
    let key = RemoteKey::new(KeyKind::EcdsaP256, backend.clone()).certified();
    let server_config = config::server(key, &config::versions(true, false));
    let mode = match variant {
        Variant::JobFd => Handshakes::InJob,
        _ => Handshakes::Direct,
    };
    let server = Server::start(server_config, mode).expect("server");
    let client_config = config::client(&config::versions(true, false));
    let load = client::load(
        server.addr(),
        client_config,
        c,
        Duration::ZERO,
        Duration::from_secs(3600),
        n,
    );
    assert_eq!(load.failed, 0, "no handshake fails");
    let served = server.stats().handshakes.load(Ordering::Relaxed);
    server.stop();
    drop(service);
    served
}

/// Instructions of the server thread, as callgrind counted them in one run of `serve_count`.
#[derive(Debug, Clone, Copy)]
pub struct ThreadCount {
    /// Handshakes the server completed.
    pub served: u64,
    /// Instructions executed by the server thread (start to end of the thread).
    pub instructions: u64,
}

/// Run `exe handshakes --variant NAME --clients C -n N` under callgrind with one output file per
/// thread, and return the server thread's count (the thread whose profile contains the server
/// loop). An error when valgrind cannot be run or the run fails.
pub fn callgrind_server_thread(
    exe: &std::path::Path,
    variant: Variant,
    c: usize,
    n: u64,
) -> Result<ThreadCount, String> {
    let dir = std::env::temp_dir().join(format!(
        "rustls-demo-callgrind-{}-{}",
        std::process::id(),
        NEXT_RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--separate-threads=yes")
        .arg(format!("--callgrind-out-file={}/cg.out", dir.display()))
        .arg(exe)
        .args(["handshakes", "--variant", variant_arg(variant)])
        .args(["--clients", &c.to_string(), "-n", &n.to_string()])
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    let result = (|| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "valgrind run failed ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let served = stdout
            .lines()
            .find_map(|l| l.strip_prefix("served ")?.trim().parse().ok())
            .ok_or_else(|| format!("no 'served' line in: {stdout}"))?;
        let mut found = None;
        for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
            let text = std::fs::read_to_string(entry.map_err(|e| e.to_string())?.path())
                .map_err(|e| e.to_string())?;
            if !text.contains("rustls_demo::server::Loop::run") {
                continue;
            }
            let total = text
                .lines()
                .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .ok_or("no summary line in the server thread's profile")?;
            if found.replace(total).is_some() {
                return Err("two threads ran the server loop".into());
            }
        }
        let instructions = found.ok_or("no thread ran rustls_demo::server::Loop::run")?;
        Ok(ThreadCount {
            served,
            instructions,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The `--variant` argument of `rustls-demo handshakes` for `v`.
pub fn variant_arg(v: Variant) -> &'static str {
    match v {
        Variant::JobFd => "job+fd",
        _ => "plain",
    }
}

/// Instructions per handshake of the server thread: (count at 2N - count at N) / (handshakes
/// served at 2N - at N), so the thread's start-up and the first connections cancel out.
pub fn instructions_per_handshake(
    exe: &std::path::Path,
    variant: Variant,
    c: usize,
    n: u64,
) -> Result<f64, String> {
    let a = callgrind_server_thread(exe, variant, c, n)?;
    let b = callgrind_server_thread(exe, variant, c, 2 * n)?;
    if b.served <= a.served {
        return Err("the 2N run served no more than the N run".into());
    }
    Ok((b.instructions as f64 - a.instructions as f64) / (b.served - a.served) as f64)
}

/// The CPU target in instructions: for each concurrency, the server thread's instructions per
/// handshake at L = 0 for job+fd and for the plain path, their ratio, and whether it is at most
/// 1.05 (`repeat` measures everything twice). Text and verdict; a failure to run valgrind is
/// reported in the text and counts as not met.
pub fn instruction_check(concurrency: &[usize], n: u64, repeat: bool) -> (String, bool) {
    let mut s = format!(
        "\nInstructions per handshake at L = 0 (server thread, callgrind; (count at {} - count at {n}) / handshakes between):\n",
        2 * n
    );
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return (format!("{s}- cannot find this executable: {e}\n"), false),
    };
    let mut all = true;
    for &c in concurrency {
        let runs = if repeat { 2 } else { 1 };
        let mut line = format!("- C={c}:");
        for run in 0..runs {
            let j = instructions_per_handshake(&exe, Variant::JobFd, c, n);
            let p = instructions_per_handshake(&exe, Variant::Blocking, c, n);
            match (j, p) {
                (Ok(j), Ok(p)) => {
                    let ratio = j / p;
                    let ok = ratio <= 1.05;
                    all &= ok;
                    let _ = write!(
                        line,
                        "{} job+fd {:.0} vs plain {:.0}: ratio {:.3} (target <= 1.05): {}",
                        if run > 0 { "; repeat:" } else { "" },
                        j,
                        p,
                        ratio,
                        if ok { "met" } else { "NOT met" }
                    );
                }
                (Err(e), _) | (_, Err(e)) => {
                    all = false;
                    let _ = write!(line, " not measured: {e}");
                    break;
                }
            }
        }
        let _ = writeln!(s, "{line}");
    }
    (s, all)
}
