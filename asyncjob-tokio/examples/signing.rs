//! Synchronous signing code that waits for an "accelerator" without blocking the thread: eight jobs
//! run at once on a one-thread tokio runtime, each calling a plain `fn sign(..)` that hands the
//! request to the engine's own thread and pauses until the answer comes.
//!
//! Three ways of waiting are shown, one per `sign` flavour:
//! - the engine's thread calls the job's `Notifier` (the cross-thread wake-up);
//! - the engine writes to a socket that the job registered as its wait fd (OpenSSL's way);
//! - the job awaits a tokio future with `block_on` (here a oneshot channel the engine answers on).

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use asyncjob_tokio::{block_on, run};

/// How long the engine takes per request.
const LATENCY: Duration = Duration::from_millis(20);

/// What the engine's thread is asked to do: "sign" a number, then say so.
enum Reply {
    Notify(
        asyncjob::Notifier,
        std::sync::Arc<std::sync::Mutex<Option<u64>>>,
    ),
    #[cfg(unix)]
    Socket(std::os::unix::net::UnixStream),
    Channel(tokio::sync::oneshot::Sender<u64>),
}

/// The engine's request queue.
type Engine = mpsc::Sender<(u64, Reply)>;

/// One way of signing from synchronous code.
type Sign = fn(&Engine, u64) -> u64;

fn signature(msg: u64) -> u64 {
    msg.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

fn engine() -> Engine {
    let (tx, rx) = mpsc::channel::<(u64, Reply)>();
    thread::spawn(move || {
        for (msg, reply) in rx {
            // The engine works on each request in the background, several at once.
            thread::spawn(move || {
                thread::sleep(LATENCY);
                let sig = signature(msg);
                match reply {
                    Reply::Notify(notifier, slot) => {
                        *slot.lock().unwrap() = Some(sig);
                        notifier.notify();
                    }
                    #[cfg(unix)]
                    Reply::Socket(mut s) => {
                        use std::io::Write;
                        s.write_all(&sig.to_le_bytes()).unwrap();
                    }
                    Reply::Channel(tx) => {
                        let _ = tx.send(sig);
                    }
                }
            });
        }
    });
    tx
}

/// Synchronous code: asks the engine and pauses the job until its thread notifies.
fn sign_notified(engine: &Engine, msg: u64) -> u64 {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
    let notifier = asyncjob::current_notifier().expect("inside a job");
    engine
        .send((msg, Reply::Notify(notifier, slot.clone())))
        .unwrap();
    loop {
        if let Some(sig) = slot.lock().unwrap().take() {
            return sig;
        }
        // Asking for the notifier marks the pause as "wait for a notification"; the mark lasts one
        // round, so a pause after a resume (here: a spurious one) asks again.
        let _ = asyncjob::current_notifier();
        asyncjob::pause();
    }
}

/// Synchronous code, OpenSSL style: registers a wait fd, pauses until it is readable.
#[cfg(unix)]
fn sign_fd(engine: &Engine, msg: u64) -> u64 {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    engine.send((msg, Reply::Socket(theirs))).unwrap();
    let ctx = asyncjob::current_wait_ctx().expect("inside a job");
    let key = asyncjob::WaitKey::of(&ours);
    ctx.set_wait_fd(key, ours.as_raw_fd(), std::ptr::null_mut(), None);
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match ours.read(&mut buf[got..]) {
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => asyncjob::pause(),
            Err(e) => panic!("{e}"),
        }
    }
    ctx.clear_fd(key);
    u64::from_le_bytes(buf)
}

/// Synchronous code that awaits a future.
fn sign_block_on(engine: &Engine, msg: u64) -> u64 {
    let (tx, rx) = tokio::sync::oneshot::channel();
    engine.send((msg, Reply::Channel(tx))).unwrap();
    block_on(rx).expect("inside a job driven by run").unwrap()
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let engine = engine();
    local.block_on(&rt, async move {
        let flavours: [(&str, Sign); 3] = [
            ("notifier", sign_notified),
            #[cfg(unix)]
            ("wait fd", sign_fd),
            #[cfg(not(unix))]
            ("notifier", sign_notified),
            ("block_on", sign_block_on),
        ];
        for (name, sign) in flavours {
            let start = Instant::now();
            let jobs: Vec<_> = (0..8u64)
                .map(|msg| {
                    let engine = engine.clone();
                    tokio::task::spawn_local(run(move || sign(&engine, msg)))
                })
                .collect();
            for (msg, job) in (0..8u64).zip(jobs) {
                let sig = job.await.expect("no panic").expect("the job ran");
                assert_eq!(sig, signature(msg));
            }
            println!(
                "{name:>8}: 8 signatures of {} ms each on one thread in {} ms",
                LATENCY.as_millis(),
                start.elapsed().as_millis()
            );
        }
    });
}
