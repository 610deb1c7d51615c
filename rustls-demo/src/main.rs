//! `rustls-demo bench [--quick]`: the issue 10 measurements.

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
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
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
            }
        }
    }
}
