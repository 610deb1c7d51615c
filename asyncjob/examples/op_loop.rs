//! A fixed number of job operations, for counting instructions per operation under callgrind
//! (`ci/step-45-instruction-counts.sh`): `op_loop [pause_resume|start_finish|start_finish_a16] [N]`.
//! The difference between two runs with different N, divided by the difference in N, is the cost of
//! one operation without the process's start-up.

use std::hint::black_box;

use asyncjob::{Resumed, Started};

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "pause_resume".to_owned());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    asyncjob::init_thread(8, 8).unwrap();
    let mut sum = 0u64;
    match case.as_str() {
        "pause_resume" => {
            let Ok(Started::Paused(mut job)) = asyncjob::start(None, || {
                loop {
                    asyncjob::pause();
                }
            }) else {
                panic!("the job did not pause")
            };
            for _ in 0..n {
                job = match job.resume() {
                    Ok(Resumed::Paused(job)) => job,
                    _ => panic!("the job did not pause again"),
                };
            }
            drop(job);
        }
        "start_finish" => {
            for _ in 0..n {
                if let Ok(Started::Finished(v)) = asyncjob::start(None, || black_box(1u64)) {
                    sum += v;
                }
            }
        }
        "start_finish_a16" => {
            let args = [7u8; 16];
            for _ in 0..n {
                let a = black_box(args);
                if let Ok(Started::Finished(v)) =
                    asyncjob::start(None, move || u64::from(a[0]) + u64::from(a[15]))
                {
                    sum += v;
                }
            }
        }
        other => panic!("unknown case {other:?}: pause_resume, start_finish or start_finish_a16"),
    }
    black_box(sum);
}
