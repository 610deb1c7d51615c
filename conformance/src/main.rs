//! `cargo run --release -p conformance`: the conformance report (scenarios diffed against the
//! linked OpenSSL, the deviations table, the speed table). Subcommands run one part.

use clap::{Parser, Subcommand};
use conformance::{
    Verdict, bench, decode, deviations, ffi, judge, memfns, programs, scenarios, stress,
};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: ffi::CountingAlloc = ffi::CountingAlloc;

#[derive(Parser, Debug)]
#[command(about = "Diff asyncjob against the linked OpenSSL's ASYNC API, and compare their speed")]
struct Cli {
    /// Print everything as one JSON document.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Only the named scenarios (and the process-wide mem-function cases).
    Scenarios,
    /// Only the speed table.
    Bench {
        /// Larger runs, plus 1,000,000 paused jobs on one thread.
        #[arg(long)]
        full: bool,
    },
    /// Random defined-behaviour programs diffed between the backends; prints the shrunk program of
    /// any mismatch.
    Fuzz {
        #[arg(long, default_value_t = 1000)]
        cases: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Writes the fuzz seed corpus: every named scenario and `--random` generated programs, encoded
    /// for `conformance/fuzz` (`conformance::decode`).
    FuzzSeeds {
        /// Directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16)]
        random: usize,
    },
    /// Decodes fuzz inputs (crash files, corpus entries) into programs, runs each on both backends and
    /// prints the first difference. Exits 1 when any differs.
    Decode { files: Vec<PathBuf> },
    /// Soak test: threads × jobs × random pause/resume/cancel patterns on asyncjob, checking that
    /// RSS, open fds and memory maps stay flat and every job's result is right.
    Stress {
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        #[arg(long, default_value_t = 4)]
        threads: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Internal: a case that must run in a process of its own.
    #[command(name = "__child", hide = true)]
    Child { what: String },
}

#[derive(Serialize, Default)]
struct Report {
    openssl: Option<OpenSsl>,
    scenarios: Vec<ScenarioLine>,
    process_cases: Vec<memfns::Diffed>,
    random: Option<Random>,
    deviations: Vec<deviations::Row>,
    speed: Vec<bench::Row>,
    failed: bool,
}

#[derive(Serialize)]
struct OpenSsl {
    version: String,
    number: String,
    built_against: String,
    vendored: bool,
}

#[derive(Serialize)]
struct ScenarioLine {
    name: &'static str,
    about: &'static str,
    verdict: Verdict,
}

#[derive(Serialize)]
struct Random {
    cases: u32,
    seed: u64,
    runs: u64,
    mismatch: Option<programs::Found>,
}

struct Out {
    json: bool,
    progress: bool,
}

impl Out {
    fn line(&self, s: impl AsRef<str>) {
        if !self.json {
            println!("{}", s.as_ref());
        }
    }
    fn progress(&self, s: &str) {
        if self.progress {
            eprint!("\r\x1b[K{s}");
            let _ = std::io::stderr().flush();
        }
    }
    fn done(&self) {
        if self.progress {
            eprint!("\r\x1b[K");
        }
    }
}

fn exe() -> Option<PathBuf> {
    std::env::current_exe().ok()
}

fn openssl_section(out: &Out, rep: &mut Report) {
    let o = OpenSsl {
        version: ffi::openssl_version_text(),
        number: format!("{:x}", ffi::openssl_version_number()),
        built_against: env!("CONFORMANCE_OPENSSL_VERSION_NUMBER").to_string(),
        vendored: env!("CONFORMANCE_OPENSSL_VENDORED") == "1",
    };
    out.line(format!(
        "linked OpenSSL: {} (0x{}, built against 0x{}{})",
        o.version,
        o.number,
        o.built_against,
        if o.vendored { ", vendored" } else { ", system" }
    ));
    rep.openssl = Some(o);
}

fn scenarios_section(out: &Out, rep: &mut Report) {
    out.line("\n== scenarios (✓ same as OpenSSL, ✗ differs, - skipped)");
    let all = scenarios::all();
    let n = all.len();
    for (i, sc) in all.into_iter().enumerate() {
        out.progress(&format!("scenario {}/{n} {}", i + 1, sc.name));
        let (v, _, _) = judge(&sc);
        out.done();
        match &v {
            Verdict::Same => out.line(format!("✓ {}", sc.name)),
            Verdict::Skipped(why) => out.line(format!("- {}  (skipped: {why})", sc.name)),
            Verdict::Differs(d) => {
                rep.failed = true;
                out.line(format!(
                    "✗ {}\n    step {}: {}\n    openssl : {}\n    asyncjob: {}",
                    sc.name, d.index, d.step, d.openssl, d.asyncjob
                ));
            }
            Verdict::ReferenceMismatch(m) => {
                rep.failed = true;
                out.line(format!(
                    "✗ {}  OpenSSL departs from the reference\n    step {}: {}\n    expected: {}\n    openssl : {}",
                    sc.name, m.index, m.step, m.expected, m.got
                ));
            }
        }
        rep.scenarios.push(ScenarioLine {
            name: sc.name,
            about: sc.about,
            verdict: v,
        });
    }
    if let Some(exe) = exe() {
        for d in memfns::diff_all(&exe) {
            let name = format!("mem_functions_{}", d.case.replace('-', "_"));
            match &d.openssl {
                None => out.line(format!(
                    "- {name}  (skipped: needs OpenSSL >= 3.2.0: no ASYNC_set_mem_functions)"
                )),
                Some(o) if *o == d.asyncjob => out.line(format!("✓ {name}  (own process)")),
                Some(o) => {
                    rep.failed = true;
                    out.line(format!(
                        "✗ {name}  (own process)\n    openssl : {o}\n    asyncjob: {}",
                        d.asyncjob
                    ));
                }
            }
            rep.process_cases.push(d);
        }
    }
    let same = rep
        .scenarios
        .iter()
        .filter(|s| matches!(s.verdict, Verdict::Same))
        .count();
    let skipped = rep
        .scenarios
        .iter()
        .filter(|s| matches!(s.verdict, Verdict::Skipped(_)))
        .count();
    out.line(format!(
        "{same} same, {} differ, {skipped} skipped",
        rep.scenarios.len() - same - skipped
    ));
}

fn random_section(out: &Out, rep: &mut Report, cases: u32, seed: u64) {
    out.line(format!("\n== random programs ({cases} cases, seed {seed})"));
    let r = programs::fuzz(cases, seed, |i| {
        if i % 25 == 0 {
            out.progress(&format!("random program {i}/{cases}"));
        }
    });
    out.done();
    let (runs, mismatch) = match r {
        Ok(runs) => {
            out.line(format!("✓ all {runs} programs gave identical traces"));
            (runs, None)
        }
        Err(found) => {
            rep.failed = true;
            out.line("✗ mismatch; shrunk program:");
            for (i, s) in found.steps.iter().enumerate() {
                out.line(format!("    {i:2}. {s}"));
            }
            let d = &found.difference;
            out.line(format!(
                "    first difference at step {}: {}\n    openssl : {}\n    asyncjob: {}",
                d.index, d.step, d.openssl, d.asyncjob
            ));
            (0, Some(found))
        }
    };
    rep.random = Some(Random {
        cases,
        seed,
        runs,
        mismatch,
    });
}

fn deviations_section(out: &Out, rep: &mut Report) {
    out.line("\n== deliberate deviations (OpenSSL undefined/crashing; checked on asyncjob alone)");
    out.progress("deviations");
    let rows = deviations::rows(exe().as_deref());
    out.done();
    for r in &rows {
        let mark = match &r.check {
            deviations::Check::Passed => "✓ checked".to_string(),
            deviations::Check::PreventedByTypes(w) => {
                format!("✓ prevented by the type system: {w}")
            }
            deviations::Check::NotApplicable(w) => format!("- n/a: {w}"),
            deviations::Check::Failed(e) => {
                rep.failed = true;
                format!("✗ FAILED: {e}")
            }
        };
        out.line(format!(
            "{:<32} {mark}\n    openssl : {}\n    asyncjob: {}",
            r.name, r.openssl, r.asyncjob
        ));
    }
    rep.deviations = rows;
}

fn speed_section(out: &Out, rep: &mut Report, plan: bench::Plan) {
    out.line(format!(
        "\n== speed (same process, interleaved A/B, median of {} rounds)",
        plan.rounds
    ));
    let rows = bench::run(plan, &|c| out.progress(&format!("bench: {c}")));
    out.done();
    out.line(format!(
        "{:<46} {:>16} {:>16} {:>9}  {:<26} {}",
        "case", "openssl", "asyncjob", "ratio", "target", "met"
    ));
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let ratio = if r.ratio.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}×", r.ratio)
        };
        out.line(format!(
            "{:<46} {:>10.1} {:<5} {:>10.1} {:<5} {:>9}  {:<26} {met}",
            r.case, r.openssl, r.unit, r.asyncjob, r.unit, ratio, r.target
        ));
        if !r.note.is_empty() {
            out.line(format!("    {}", r.note));
        }
    }
    rep.speed = rows;
}

fn fuzz_seeds(dir: &std::path::Path, random: usize) {
    use proptest::strategy::{Strategy, ValueTree};
    std::fs::create_dir_all(dir).expect("create the seed directory");
    let mut n = 0;
    let mut write = |name: String, steps: &[conformance::model::Step]| {
        std::fs::write(dir.join(name), decode::to_bytes(steps)).expect("write a seed");
        n += 1;
    };
    for sc in scenarios::all() {
        write(format!("named-{}", sc.name), &sc.steps);
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = programs::program();
    for i in 0..random {
        let steps = strategy.new_tree(&mut runner).expect("tree").current();
        write(format!("random-{i:02}"), &steps);
    }
    println!("wrote {n} seeds to {}", dir.display());
}

fn decode_files(files: &[PathBuf]) -> bool {
    let mut all_same = true;
    for f in files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        let steps = decode::from_bytes(&data);
        println!(
            "{} ({} bytes, {} steps):",
            f.display(),
            data.len(),
            steps.len()
        );
        for (i, s) in steps.iter().enumerate() {
            println!("  {i:3}. {s}");
        }
        match programs::check(&steps) {
            None => println!("  same on both backends"),
            Some(d) => {
                all_same = false;
                println!(
                    "  DIFFERS at step {} `{}`\n    openssl : {}\n    asyncjob: {}",
                    d.index, d.step, d.openssl, d.asyncjob
                );
            }
        }
    }
    all_same
}

fn child(what: &str) {
    if what == "overflow" {
        deviations::overflow_child();
    } else if let Some(case) = what.strip_prefix("memfns-asyncjob-") {
        println!("{}", memfns::asyncjob_child(case));
    } else if let Some(case) = what.strip_prefix("memfns-openssl-") {
        println!("{}", ffi::openssl_memfns_child(case));
    } else {
        eprintln!("unknown child case {what}");
        std::process::exit(2);
    }
}

fn main() {
    let cli = Cli::parse();
    ffi::init_openssl();
    let out = Out {
        json: cli.json,
        progress: !cli.json && std::io::stdout().is_terminal(),
    };
    let mut rep = Report::default();
    match cli.cmd {
        Some(Cmd::Child { what }) => {
            child(&what);
            return;
        }
        None => {
            openssl_section(&out, &mut rep);
            scenarios_section(&out, &mut rep);
            random_section(&out, &mut rep, 1000, 0);
            deviations_section(&out, &mut rep);
            speed_section(&out, &mut rep, bench::Plan::QUICK);
        }
        Some(Cmd::Scenarios) => {
            openssl_section(&out, &mut rep);
            scenarios_section(&out, &mut rep);
        }
        Some(Cmd::Bench { full }) => {
            openssl_section(&out, &mut rep);
            speed_section(
                &out,
                &mut rep,
                if full {
                    bench::Plan::FULL
                } else {
                    bench::Plan::QUICK
                },
            );
        }
        Some(Cmd::FuzzSeeds { out, random }) => {
            fuzz_seeds(&out, random);
            return;
        }
        Some(Cmd::Decode { files }) => {
            if !decode_files(&files) {
                std::process::exit(1);
            }
            return;
        }
        Some(Cmd::Stress {
            seconds,
            threads,
            seed,
        }) => {
            let rep = stress::run(&stress::Config::timed(seconds, threads, seed));
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rep).expect("report serialises")
                );
            } else {
                print!("{}", rep.text());
            }
            if !rep.passed() {
                std::process::exit(1);
            }
            return;
        }
        Some(Cmd::Fuzz { cases, seed }) => {
            openssl_section(&out, &mut rep);
            random_section(&out, &mut rep, cases, seed);
        }
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rep).expect("report serialises")
        );
    }
    if rep.failed {
        std::process::exit(1);
    }
}
