//! A `Driver` running many jobs from one thread: jobs that call a blocking-looking `sign` function
//! which hands the work to a service thread and pauses until the service notifies them, and (on
//! POSIX systems) jobs that wait for their pipe to become readable. One job has a deadline it cannot
//! meet and is cancelled. Runs without arguments and exits 0.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use asyncjob::{Driver, Notifier, Outcome};

/// A request to the "signing service": the input, where to put the answer, whom to wake.
type Request = (u64, Arc<Mutex<Option<u64>>>, Notifier);

/// Called inside a job: looks synchronous to its caller, but pauses the job (not the thread) until
/// the service has answered.
fn sign(service: &mpsc::Sender<Request>, input: u64) -> u64 {
    let answer = Arc::new(Mutex::new(None));
    let notifier = asyncjob::current_notifier().expect("sign runs inside a driver's job");
    service.send((input, answer.clone(), notifier)).unwrap();
    loop {
        if let Some(value) = answer.lock().unwrap().take() {
            return value;
        }
        // Waits for `notify` (a notification that came first is not lost).
        asyncjob::pause();
    }
}

fn main() {
    let (service, requests) = mpsc::channel::<Request>();
    let worker = thread::spawn(move || {
        for (input, answer, notifier) in requests {
            thread::sleep(Duration::from_millis(2)); // the service's latency
            *answer.lock().unwrap() = Some(input.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            notifier.notify(); // from this thread: wakes the driver
        }
    });

    let mut driver: Driver<String> = Driver::new().expect("driver");
    for i in 0..8 {
        let service = service.clone();
        driver
            .spawn(move || {
                let a = sign(&service, i + 1);
                let b = sign(&service, a); // a second pause in the same job
                format!("job {i}: signature {b:016x}")
            })
            .unwrap();
    }

    #[cfg(unix)]
    let pipe_writer = pipe_jobs(&mut driver);

    // A job that waits for a notification that never comes: its deadline cancels it.
    let late = driver
        .spawn_with_deadline(Instant::now() + Duration::from_millis(50), || {
            let _never_notified = asyncjob::current_notifier();
            asyncjob::pause();
            unreachable!("cancelled at its deadline")
        })
        .unwrap();

    let (mut finished, mut cancelled) = (0, 0);
    while !driver.is_empty() {
        driver.turn(Some(Duration::from_secs(5))).unwrap();
        for done in driver.completions() {
            match done.outcome {
                Outcome::Finished(line) => {
                    println!("{line}");
                    finished += 1;
                }
                Outcome::Cancelled(why) => {
                    assert_eq!(done.token, late);
                    println!("cancelled: {why:?}");
                    cancelled += 1;
                }
                Outcome::Panicked(_) | Outcome::Failed(_) => {
                    panic!("unexpected {:?}", done.outcome)
                }
            }
        }
    }
    let stats = driver.stats();
    println!(
        "{finished} finished, {cancelled} cancelled in {} turns ({} resumes)",
        stats.turns, stats.resumes
    );
    drop(service);
    worker.join().unwrap();
    #[cfg(unix)]
    pipe_writer.join().unwrap();
    assert_eq!(cancelled, 1);
    assert_eq!(finished, if cfg!(unix) { 8 + 4 } else { 8 });
}

/// Four jobs that each wait for a line on a pipe of their own, written by another thread.
#[cfg(unix)]
fn pipe_jobs(driver: &mut Driver<String>) -> thread::JoinHandle<()> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    let mut writers = Vec::new();
    for i in 0..4 {
        let (mut reader, writer) = UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        writers.push(writer);
        driver
            .spawn(move || {
                let ctx = asyncjob::current_wait_ctx().unwrap();
                // Key: any address the job owns; no cleanup (the stream closes itself).
                let key = asyncjob::WaitKey::of(&reader);
                ctx.set_wait_fd(key, reader.as_raw_fd(), std::ptr::null_mut(), None);
                let mut buf = [0u8; 64];
                loop {
                    asyncjob::pause(); // resumed when the socket is readable
                    match reader.read(&mut buf) {
                        Ok(n) => {
                            ctx.clear_fd(key); // before the stream (and its fd) goes
                            return format!("pipe job {i}: {}", String::from_utf8_lossy(&buf[..n]));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
            .unwrap();
    }
    thread::spawn(move || {
        for (i, mut w) in writers.into_iter().enumerate().rev() {
            thread::sleep(Duration::from_millis(3));
            // One write: `write!` may split the message, and a job that read the first part
            // finishes and closes its end before the rest arrives.
            w.write_all(format!("hello {i}").as_bytes()).unwrap();
        }
    })
}
