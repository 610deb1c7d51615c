//! A one-thread TLS server driven by `poll(2)`, in which each connection's
//! `ServerConnection::process_new_packets` can run inside an asyncjob job.
//!
//! With [`Handshakes::InJob`], a signer that pauses (the job+fd signer) suspends only its own
//! connection: the loop polls the paused job's wait fds and resumes the job when one is readable,
//! and meanwhile serves every other connection. With [`Handshakes::Direct`] the same loop calls
//! `process_new_packets` directly, so a blocking signer blocks the whole server: that is the
//! baseline ("plain") path. Nothing in rustls is changed.
//!
//! A connection whose client goes away while its job is paused is dropped at once; dropping the
//! paused job unwinds it (the signer's guard clears its fd, its service connection is closed).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Wake, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use asyncjob::{Job, Resumed, Started, WaitCtx};
use rustls::{ServerConfig, ServerConnection};

use crate::net;

/// Where `process_new_packets` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshakes {
    /// Inside a job per connection.
    InJob,
    /// Directly on the loop's thread.
    Direct,
}

/// Counters published by a running server (read from any thread).
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Handshakes completed (the server sent its "ok").
    pub handshakes: AtomicU64,
    /// Connections that ended in a TLS error (an alert was sent if possible).
    pub tls_errors: AtomicU64,
    /// Connections dropped because the client went away while their job was paused.
    pub cancelled: AtomicU64,
    /// Connections open now.
    pub live: AtomicU64,
    /// Jobs paused now.
    pub paused: AtomicU64,
    /// Jobs ever created by the server thread's pool (`asyncjob::pool_stats().created`).
    pub pool_created: AtomicU64,
    /// Idle jobs in the server thread's pool.
    pub pool_idle: AtomicU64,
}

/// What a server reports when it stops.
#[derive(Debug, Clone, Copy)]
pub struct ServerReport {
    /// CPU time of the server thread.
    pub cpu: Duration,
    /// The server thread's job pool after every connection was dropped.
    pub pool: Option<asyncjob::PoolStats>,
}

/// A running server; [`stop`](Self::stop) ends it.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    thread: Option<JoinHandle<ServerReport>>,
}

impl Server {
    /// Start the loop on a thread of its own.
    pub fn start(config: Arc<ServerConfig>, mode: Handshakes) -> io::Result<Server> {
        let listener = net::listen_loopback()?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ServerStats::default());
        let (thread_stop, thread_stats) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("job-server".into())
            .spawn(move || {
                Loop::new(listener, config, mode, thread_stats)
                    .expect("eventfd")
                    .run(&thread_stop)
            })?;
        Ok(Server {
            addr,
            stop,
            stats,
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stop the loop, drop every connection (cancelling paused jobs) and report.
    pub fn stop(mut self) -> ServerReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Processed = Result<(), rustls::Error>;

struct Conn {
    // Dropped first: unwinding a paused job releases its borrow of `tls`.
    job: Option<Job<Processed>>,
    tls: Rc<RefCell<ServerConnection>>,
    tcp: TcpStream,
    ctx: WaitCtx,
    sent_ok: bool,
    failed: bool,
    /// The connection is finished; remove it.
    dead: bool,
}

struct Loop {
    listener: TcpListener,
    config: Arc<ServerConfig>,
    mode: Handshakes,
    stats: Arc<ServerStats>,
    conns: Vec<Conn>,
    pollfds: Vec<libc::pollfd>,
    /// For each entry of `pollfds` after the listener: the connection index and whether the entry
    /// is the TCP socket (false: a wait fd of the connection's paused job).
    owners: Vec<(usize, bool)>,
    fds: Vec<RawFd>,
    /// Woken by `Notifier::notify` from other threads (the waker writes to it).
    wake: Arc<EventFd>,
    waker: Waker,
    /// Paused jobs to resume without waiting for an fd.
    ready: Vec<usize>,
}

/// An eventfd behind a `Waker`: waking it makes the loop's `poll` return.
#[derive(Debug)]
struct EventFd(OwnedFd);

impl EventFd {
    fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn drain(&self) {
        let mut value = 0u64;
        // SAFETY: reads 8 bytes into `value` from an eventfd this struct owns.
        unsafe { libc::read(self.0.as_raw_fd(), (&raw mut value).cast(), 8) };
    }
}

impl Wake for EventFd {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from `one` to an eventfd this struct owns.
        unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

/// A TLS record (type alert, legacy version 3.3, length 2) holding a fatal (2) handshake_failure
/// (40) alert.
const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 40];

const RDHUP: libc::c_short = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR;

impl Loop {
    fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        mode: Handshakes,
        stats: Arc<ServerStats>,
    ) -> io::Result<Loop> {
        let wake = Arc::new(EventFd::new()?);
        let waker = Waker::from(wake.clone());
        Ok(Loop {
            wake,
            waker,
            ready: Vec::new(),
            listener,
            config,
            mode,
            stats,
            conns: Vec::new(),
            pollfds: Vec::new(),
            owners: Vec::new(),
            fds: Vec::new(),
        })
    }

    fn run(mut self, stop: &AtomicBool) -> ServerReport {
        let cpu0 = net::thread_cpu();
        while !stop.load(Ordering::Relaxed) {
            self.turn(20);
            self.publish();
        }
        self.conns.clear();
        self.publish();
        ServerReport {
            cpu: net::thread_cpu() - cpu0,
            pool: asyncjob::pool_stats(),
        }
    }

    fn publish(&self) {
        let s = &self.stats;
        if let Some(pool) = asyncjob::pool_stats() {
            s.pool_created.store(pool.created as u64, Ordering::Relaxed);
            s.pool_idle.store(pool.idle as u64, Ordering::Relaxed);
        }
        let paused = self.conns.iter().filter(|c| c.job.is_some()).count();
        s.paused.store(paused as u64, Ordering::Relaxed);
        // Last, with Release: whoever reads `live` with Acquire sees the pool of the same turn.
        s.live.store(self.conns.len() as u64, Ordering::Release);
    }

    fn turn(&mut self, timeout_ms: i32) {
        self.pollfds.clear();
        self.owners.clear();
        self.ready.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        self.pollfds.push(libc::pollfd {
            fd: self.wake.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for (i, c) in self.conns.iter().enumerate() {
            let fd = c.tcp.as_raw_fd();
            if c.job.is_some() {
                // Notified (the waker was registered when the connection was made, so a notify
                // that came before the pause left its mark), or paused without anything to wait
                // for: resume this turn.
                if c.ctx.take_notification()
                    || (c.ctx.fd_count() == 0 && !c.ctx.awaits_notification())
                {
                    self.ready.push(i);
                }
                // Paused: wait for the job's fds, and notice a client that goes away meanwhile.
                self.fds.clear();
                self.fds.resize(c.ctx.fd_count(), -1);
                c.ctx.copy_all_fds(&mut self.fds);
                for &wfd in &self.fds {
                    self.pollfds.push(libc::pollfd {
                        fd: wfd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                    self.owners.push((i, false));
                }
                self.pollfds.push(libc::pollfd {
                    fd,
                    events: libc::POLLRDHUP,
                    revents: 0,
                });
            } else {
                let mut events = libc::POLLIN;
                if c.tls.borrow().wants_write() {
                    events |= libc::POLLOUT;
                }
                self.pollfds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
            }
            self.owners.push((i, true));
        }
        let timeout_ms = if self.ready.is_empty() { timeout_ms } else { 0 };
        // SAFETY: `pollfds` is a valid array of that many entries for the duration of the call.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        for &i in &self.ready {
            let conn = &mut self.conns[i];
            if conn.job.is_some() && !conn.dead {
                conn.resume(&self.stats);
            }
        }
        if n <= 0 {
            self.conns.retain(|c| !c.dead);
            return;
        }
        if self.pollfds[1].revents != 0 {
            self.wake.drain();
        }
        for k in 2..self.pollfds.len() {
            let revents = self.pollfds[k].revents;
            if revents == 0 {
                continue;
            }
            let (i, is_tcp) = self.owners[k - 2];
            let mode = self.mode;
            let conn = &mut self.conns[i];
            if conn.dead {
                continue;
            }
            if conn.job.is_some() {
                if is_tcp {
                    if revents & RDHUP != 0 {
                        conn.dead = true;
                        self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    conn.resume(&self.stats);
                }
            } else if is_tcp {
                conn.on_socket(revents, mode, &self.stats);
            }
        }
        if self.pollfds[0].revents != 0 {
            self.accept();
        }
        self.conns.retain(|c| !c.dead);
    }

    fn accept(&mut self) {
        loop {
            let tcp = match self.listener.accept() {
                Ok((tcp, _)) => tcp,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // EMFILE and the like: try again next turn
            };
            if tcp.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = ServerConnection::new(self.config.clone()) else {
                continue;
            };
            let ctx = WaitCtx::new();
            ctx.set_waker(&self.waker);
            self.conns.push(Conn {
                job: None,
                tls: Rc::new(RefCell::new(tls)),
                tcp,
                ctx,
                sent_ok: false,
                failed: false,
                dead: false,
            });
        }
    }
}

impl Conn {
    fn on_socket(&mut self, revents: libc::c_short, mode: Handshakes, stats: &ServerStats) {
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut eof = false;
            loop {
                let r = self.tls.borrow_mut().read_tls(&mut self.tcp);
                match r {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            if eof || self.sent_ok || self.failed {
                // After the "ok" the server only waits for the client to close first (so that
                // TIME_WAIT stays on the client side, which closes with linger 0).
                if eof {
                    self.dead = true;
                    return;
                }
            } else {
                self.process(mode, stats);
                if self.job.is_some() || self.dead {
                    return;
                }
            }
        }
        self.flush(stats);
    }

    fn process(&mut self, mode: Handshakes, stats: &ServerStats) {
        match mode {
            Handshakes::Direct => {
                let r = self.tls.borrow_mut().process_new_packets().map(|_| ());
                self.processed(r, stats);
            }
            Handshakes::InJob => {
                let tls = self.tls.clone();
                let run = move || tls.borrow_mut().process_new_packets().map(|_| ());
                match asyncjob::start(Some(&self.ctx), run) {
                    Ok(Started::Finished(r)) => self.processed(r, stats),
                    Ok(Started::Paused(job)) => self.job = Some(job),
                    // The demo's pool has no size limit, so neither happens; drop the connection.
                    Ok(Started::NoJobs(_)) | Err(_) => self.dead = true,
                }
            }
        }
    }

    fn resume(&mut self, stats: &ServerStats) {
        let job = self.job.take().expect("paused");
        match job.resume() {
            Ok(Resumed::Finished(r)) => {
                self.processed(r, stats);
                self.flush(stats);
            }
            Ok(Resumed::Paused(job)) => self.job = Some(job),
            Err(e) => self.job = Some(e.job),
        }
    }

    fn processed(&mut self, r: Processed, stats: &ServerStats) {
        let Err(e) = r else {
            return;
        };
        self.failed = true;
        stats.tls_errors.fetch_add(1, Ordering::Relaxed);
        if matches!(e, rustls::Error::General(_)) {
            // rustls sends no alert for an error returned by a callback such as `Signer::sign`
            // (it propagates it with `?`): the client would see its connection close without a
            // reason. The signature is made in the middle of the server's first flight, so none
            // of that flight has been written yet: drop it, and send a plaintext fatal
            // handshake_failure alert (what rustls sends when it finds no usable key).
            let mut tls = self.tls.borrow_mut();
            while tls.wants_write() {
                if tls.write_tls(&mut io::sink()).is_err() {
                    break;
                }
            }
            drop(tls);
            let _ = self.tcp.write_all(&HANDSHAKE_FAILURE_ALERT);
            self.dead = true;
        }
    }

    /// Send what rustls has queued; after the handshake, queue the "ok" first.
    fn flush(&mut self, stats: &ServerStats) {
        let mut tls = self.tls.borrow_mut();
        if !self.failed && !self.sent_ok && !tls.is_handshaking() {
            if tls.writer().write_all(b"ok").is_err() {
                self.dead = true;
                return;
            }
            self.sent_ok = true;
            stats.handshakes.fetch_add(1, Ordering::Relaxed);
        }
        while tls.wants_write() {
            match tls.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
        if self.failed {
            // The alert is out: close.
            self.dead = true;
        }
    }
}

/// Read and discard whatever a stream still delivers (used by clients and tests).
pub fn drain(stream: &mut impl Read) {
    let mut buf = [0u8; 256];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}
