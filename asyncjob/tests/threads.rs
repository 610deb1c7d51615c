//! Several threads running jobs at once, each with its own pool, wait contexts and paused jobs,
//! sharing a count through an atomic and handing their results back when joined. Without libtest's
//! harness, and without std's locks, so that ThreadSanitizer (ci/step-11) sees only asyncjob and
//! this program: std is not instrumented there, so the synchronisation inside libtest's channels or
//! a std `Mutex` is invisible to it and would be reported as races.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use asyncjob::{Job, Resumed, Started, WaitCtx, WaitKey};

const THREADS: usize = 4;
const ROUNDS: usize = 300;

/// Runs one thread's rounds; returns the values of the jobs it finished first in each round.
fn run_thread(id: usize, finished: &AtomicUsize) -> Vec<u64> {
    let mut log = Vec::new();
    asyncjob::init_thread(8, 4).unwrap();
    for round in 0..ROUNDS {
        let ctx = WaitCtx::new();
        let cleaned = Arc::new(AtomicUsize::new(0));
        let c = cleaned.clone();
        ctx.set_wait_fd(
            WaitKey::from_addr(id + 1),
            (100 + id) as asyncjob::AsyncFd,
            std::ptr::null_mut(),
            Some(Box::new(move |_, _, _| {
                c.fetch_add(1, Ordering::Relaxed);
            })),
        );
        let mut paused: Vec<Job<u64>> = Vec::new();
        for k in 0..4u64 {
            let value = (id as u64) << 32 | (round as u64) << 8 | k;
            match asyncjob::start(Some(&ctx), move || {
                asyncjob::pause();
                asyncjob::pause();
                value
            })
            .unwrap()
            {
                Started::Paused(job) => paused.push(job),
                _ => panic!("thread {id}: the job did not pause"),
            }
        }
        // Drop one paused job (unwound), resume the others to the end.
        drop(paused.remove(round % paused.len()));
        for mut job in paused {
            let value = loop {
                match job.resume().unwrap() {
                    Resumed::Paused(j) => job = j,
                    Resumed::Finished(v) => break v,
                }
            };
            assert_eq!(value >> 32, id as u64);
            finished.fetch_add(1, Ordering::Relaxed);
            if value & 0xff == 0 {
                log.push(value);
            }
        }
        drop(ctx);
        assert_eq!(
            cleaned.load(Ordering::Relaxed),
            1,
            "the context's cleanup ran once"
        );
        if round % 50 == 49 {
            asyncjob::cleanup_thread().unwrap();
            asyncjob::init_thread(8, 2).unwrap();
        }
    }
    asyncjob::cleanup_thread().unwrap();
    log
}

fn main() {
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|id| {
            let f = finished.clone();
            std::thread::spawn(move || run_thread(id, &f))
        })
        .collect();
    for (id, t) in threads.into_iter().enumerate() {
        let log = t.join().unwrap();
        assert!(!log.is_empty(), "thread {id} finished jobs");
        assert!(
            log.iter().all(|v| v >> 32 == id as u64),
            "thread {id} got its own results"
        );
    }
    assert_eq!(finished.load(Ordering::Relaxed), THREADS * ROUNDS * 3);
    println!("1 passed, 0 failed");
}
