//! `rustls-demo bench [--quick]` and `rustls-demo instructions`: the issue 10 measurements.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "asyncjob + rustls: asynchronous private-key signing for unmodified rustls")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure every variant over concurrency × signing latency and print a Markdown table.
    Bench {
        /// A few cells only (CI): C in {1,128}, L in {0,20} ms, 0.5 s per cell.
        #[arg(long)]
        quick: bool,
        /// Seconds per cell (default 1, or 0.5 with --quick).
        #[arg(long)]
        seconds: Option<f64>,
        /// Only these variants (by table name prefix, e.g. "job+fd"; repeatable).
        #[arg(long)]
        only: Vec<String>,
        /// Only these concurrencies (repeatable).
        #[arg(long = "clients")]
        clients: Vec<usize>,
        /// Only these signing latencies in ms (repeatable).
        #[arg(long = "latency-ms")]
        latency_ms: Vec<u64>,
    },
    /// Serve N handshakes at L = 0 with one loop variant and print "served <count>" (what
    /// `instructions` runs under callgrind).
    Handshakes {
        /// "job+fd" or "plain" (the one-thread loop with the blocking signer).
        #[arg(long)]
        variant: String,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Handshakes to serve.
        #[arg(short = 'n', default_value_t = 100)]
        n: u64,
    },
    /// Instructions per handshake of the server thread at L = 0, job+fd vs plain, counted by
    /// callgrind (needs valgrind); with --check, exit 1 when job+fd costs more than 5 % more.
    Instructions {
        /// Concurrencies (repeatable; default 16).
        #[arg(long = "clients")]
        clients: Vec<usize>,
        /// N: each figure is (count at 2N handshakes - count at N) / N.
        #[arg(short = 'n', default_value_t = 100)]
        n: u64,
        /// Measure every figure twice and show both (they should be equal or nearly).
        #[arg(long)]
        repeat: bool,
        /// Exit with status 1 when the ratio exceeds 1.05.
        #[arg(long)]
        check: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Handshakes {
            variant,
            clients,
            n,
        } => {
            let v = match variant.as_str() {
                "job+fd" => rustls_demo::bench::Variant::JobFd,
                "plain" => rustls_demo::bench::Variant::Blocking,
                other => {
                    eprintln!("unknown variant {other:?} (job+fd or plain)");
                    std::process::exit(2);
                }
            };
            println!("served {}", rustls_demo::bench::serve_count(v, clients, n));
        }
        Command::Instructions {
            clients,
            n,
            repeat,
            check,
        } => {
            let clients = if clients.is_empty() {
                vec![16]
            } else {
                clients
            };
            let (text, ok) = rustls_demo::bench::instruction_check(&clients, n, repeat);
            println!("{text}");
            if check && !ok {
                std::process::exit(1);
            }
        }
        Command::Bench {
            quick,
            seconds,
            only,
            clients,
            latency_ms,
        } => {
            let mut plan = if quick {
                rustls_demo::bench::Plan::quick()
            } else {
                rustls_demo::bench::Plan::full()
            };
            if let Some(s) = seconds {
                plan.duration = std::time::Duration::from_secs_f64(s);
            }
            let filtered = !only.is_empty() || !clients.is_empty() || !latency_ms.is_empty();
            if !only.is_empty() {
                plan.variants
                    .retain(|v| only.iter().any(|o| v.name().starts_with(o.as_str())));
            }
            if !clients.is_empty() {
                plan.concurrency = clients;
            }
            if !latency_ms.is_empty() {
                plan.latency = latency_ms
                    .into_iter()
                    .map(std::time::Duration::from_millis)
                    .collect();
            }
            let cells = rustls_demo::bench::run(&plan, |line| println!("{line}"));
            let (text, _) = rustls_demo::bench::targets(&cells);
            println!("{text}");
            if filtered {
                return;
            }
            let (c, rounds, warmup, secs): (&[usize], usize, f64, f64) = if quick {
                (&[16], 1, 0.25, 0.5)
            } else {
                (&[1, 16, 128], 5, 0.25, 1.0)
            };
            let (text, _) = rustls_demo::bench::cpu_check(
                c,
                rounds,
                std::time::Duration::from_secs_f64(warmup),
                std::time::Duration::from_secs_f64(secs),
            );
            println!("{text}");
            if !quick {
                println!("{}", rustls_demo::bench::blocking_steady_state());
                // The same target in instructions (deterministic; needs valgrind, about 15 s).
                let (text, _) = rustls_demo::bench::instruction_check(&[16], 100, false);
                println!("{text}");
            }
        }
    }
}
