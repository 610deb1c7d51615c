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
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench { quick, seconds } => {
            let mut plan = if quick {
                rustls_demo::bench::Plan::quick()
            } else {
                rustls_demo::bench::Plan::full()
            };
            if let Some(s) = seconds {
                plan.duration = std::time::Duration::from_secs_f64(s);
            }
            let cells = rustls_demo::bench::run(&plan, |line| println!("{line}"));
            let (text, _) = rustls_demo::bench::targets(&cells);
            println!("{text}");
        }
    }
}
