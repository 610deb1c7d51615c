//! Several threads running jobs at once, each with its own pool, wait contexts and paused jobs, and
//! sharing results through atomics and a mutex. Without libtest's harness, so that ThreadSanitizer
//! (ci/step-11) sees only asyncjob and this program: libtest's own channels are not instrumented
//! there and would be reported.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use asyncjob::{Job, Resumed, Started, WaitCtx, WaitKey};

const THREADS: usize = 4;
const ROUNDS: usize = 300;

fn run_thread(id: usize, finished: &AtomicUsize, log: &Mutex<Vec<(usize, u64)>>) {
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
                log.lock().unwrap().push((id, value));
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
}

fn main() {
    let finished = Arc::new(AtomicUsize::new(0));
    let log = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|id| {
            let (f, l) = (finished.clone(), log.clone());
            std::thread::spawn(move || run_thread(id, &f, &l))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(finished.load(Ordering::Relaxed), THREADS * ROUNDS * 3);
    let log = log.lock().unwrap();
    for id in 0..THREADS {
        let mine = log.iter().filter(|(t, _)| *t == id).count();
        assert!(mine > 0, "thread {id} logged its results");
    }
    println!("1 passed, 0 failed");
}
