//! A one-thread TLS server driven by `poll(2)`, in which each connection's
//! `ServerConnection::process_new_packets` can run inside an asyncjob job.
//!
//! With [`Handshakes::InJob`], a signer that pauses (the job+fd or job+notifier signer) suspends
//! only its own connection: the job runs on an [`asyncjob::Driver`], whose epoll fd sits in the
//! loop's `poll` set; the driver resumes a job when its wait fd is readable or its notifier fires,
//! and meanwhile the loop serves every other connection. With [`Handshakes::Direct`] the same loop
//! calls `process_new_packets` directly, so a blocking signer blocks the whole server: that is the
//! baseline ("plain") path. Nothing in rustls is changed.
//!
//! A connection whose client goes away while its job is paused is dropped at once: the loop
//! cancels the job on the driver, which unwinds it (the signer's guard clears its fd and closes its
//! service connection, or forgets its pending request).

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use asyncjob::{Completion, Driver, JobToken, Outcome};
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
    /// The job running `process_new_packets` for this connection, while there is one.
    job: Option<JobToken>,
    tls: Rc<RefCell<ServerConnection>>,
    tcp: TcpStream,
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
    /// Connection slots (a freed slot is reused).
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    /// Which connection each running job belongs to.
    by_job: JobMap,
    /// The driver's completions of one turn (kept to reuse its buffer).
    done: Vec<Completion<Processed>>,
    /// Runs the jobs (`InJob` only); `run` drops it before the connections.
    driver: Option<Driver<Processed>>,
    /// A job was spawned since the driver last turned.
    spawned: bool,
    pollfds: Vec<libc::pollfd>,
    /// For each entry of `pollfds` after the listener and the driver: its connection.
    owners: Vec<usize>,
}

/// Which connection each running job belongs to, indexed by the job's driver slot
/// ([`JobToken::index`]; the driver reuses slots, so this stays as small as the most jobs at once,
/// and a lookup is an index and a token comparison, not a hash).
#[derive(Default)]
struct JobMap {
    slots: Vec<Option<(JobToken, usize)>>,
    len: usize,
}

impl JobMap {
    fn insert(&mut self, token: JobToken, conn: usize) {
        let i = token.index();
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        if self.slots[i].replace((token, conn)).is_none() {
            self.len += 1;
        }
    }

    /// The connection of `token`, which is forgotten; `None` for a token not (or no longer) here.
    fn remove(&mut self, token: JobToken) -> Option<usize> {
        let slot = self.slots.get_mut(token.index())?;
        match *slot {
            Some((t, conn)) if t == token => {
                *slot = None;
                self.len -= 1;
                Some(conn)
            }
            _ => None,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
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
        let driver = match mode {
            Handshakes::InJob => Some(Driver::new()?),
            Handshakes::Direct => None,
        };
        Ok(Loop {
            listener,
            config,
            mode,
            stats,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_job: JobMap::default(),
            done: Vec::new(),
            driver,
            spawned: false,
            pollfds: Vec::new(),
            owners: Vec::new(),
        })
    }

    // Never inlined: its name is how `rustls-demo instructions` finds the server thread's callgrind
    // profile (with LTO it was inlined into the thread's closure and the check found no thread).
    #[inline(never)]
    fn run(mut self, stop: &AtomicBool) -> ServerReport {
        let cpu0 = net::thread_cpu();
        while !stop.load(Ordering::Relaxed) {
            self.turn(20);
            self.publish();
        }
        // The driver first: cancelling its paused jobs unwinds them while their connections live.
        self.driver = None;
        self.by_job.clear();
        self.conns.clear();
        self.live = 0;
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
        s.paused.store(self.by_job.len() as u64, Ordering::Relaxed);
        // Last, with Release: whoever reads `live` with Acquire sees the pool of the same turn.
        s.live.store(self.live as u64, Ordering::Release);
    }

    fn turn(&mut self, timeout_ms: i32) {
        if std::mem::take(&mut self.spawned) {
            self.drive();
            self.reap();
        }
        self.pollfds.clear();
        self.owners.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // The driver's fd is readable when one of its jobs' fds is, or a notifier fired.
        self.pollfds.push(libc::pollfd {
            fd: self.driver.as_ref().map_or(-1, |d| d.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        });
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let events = if c.job.is_some() {
                // In a job: only notice a client that goes away meanwhile.
                libc::POLLRDHUP
            } else if c.tls.borrow().wants_write() {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            };
            self.pollfds.push(libc::pollfd {
                fd: c.tcp.as_raw_fd(),
                events,
                revents: 0,
            });
            self.owners.push(i);
        }
        // SAFETY: `pollfds` is a valid array of that many entries for the duration of the call.
        let n = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        // Resume whatever the driver finds ready (it does not wait: its fd told us, or not).
        self.drive();
        if n > 0 {
            for k in 2..self.pollfds.len() {
                let revents = self.pollfds[k].revents;
                if revents == 0 {
                    continue;
                }
                let i = self.owners[k - 2];
                self.on_socket(i, revents);
            }
            if self.pollfds[0].revents != 0 {
                self.accept();
            }
        }
        self.reap();
    }

    /// One turn of the driver, and what its jobs' ends mean for their connections.
    fn drive(&mut self) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        if self.by_job.is_empty() {
            return;
        }
        let _ = driver.turn(Some(Duration::ZERO));
        self.completions();
    }

    fn completions(&mut self) {
        let Some(driver) = self.driver.as_mut() else {
            return;
        };
        let mut done = std::mem::take(&mut self.done);
        done.extend(driver.completions());
        for Completion { token, outcome } in done.drain(..) {
            let Some(i) = self.by_job.remove(token) else {
                continue;
            };
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            conn.job = None;
            match outcome {
                Outcome::Finished(r) => {
                    conn.processed(r, &self.stats);
                    if !conn.dead {
                        conn.flush(&self.stats);
                    }
                }
                Outcome::Panicked(payload) => std::panic::resume_unwind(payload),
                _ => conn.dead = true,
            }
        }
        self.done = done;
    }

    fn on_socket(&mut self, i: usize, revents: libc::c_short) {
        let Some(conn) = self.conns[i].as_mut() else {
            return;
        };
        if conn.dead {
            return;
        }
        if let Some(token) = conn.job {
            if revents & RDHUP != 0 {
                // The client went away mid-signature: cancel (unwind) the job at once.
                conn.dead = true;
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                self.by_job.remove(token);
                conn.job = None;
                if let Some(driver) = self.driver.as_mut() {
                    driver.cancel(token);
                }
            }
            return;
        }
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            if conn.read() {
                conn.dead = true;
                return;
            }
            if !conn.sent_ok && !conn.failed {
                match self.mode {
                    Handshakes::Direct => {
                        let r = conn.tls.borrow_mut().process_new_packets().map(|_| ());
                        conn.processed(r, &self.stats);
                    }
                    Handshakes::InJob => {
                        let tls = conn.tls.clone();
                        let run = move || tls.borrow_mut().process_new_packets().map(|_| ());
                        let driver = self.driver.as_mut().expect("InJob has a driver");
                        match driver.spawn(run) {
                            Ok(token) => {
                                self.spawned = true;
                                conn.job = Some(token);
                                self.by_job.insert(token, i);
                                // A job that finished at once is reported already.
                                self.completions();
                                return;
                            }
                            Err(_) => conn.dead = true,
                        }
                    }
                }
                if conn.dead {
                    return;
                }
            }
        }
        conn.flush(&self.stats);
    }

    fn reap(&mut self) {
        for i in 0..self.conns.len() {
            if self.conns[i].as_ref().is_some_and(|c| c.dead) {
                let conn = self.conns[i].take().expect("checked");
                if let (Some(token), Some(driver)) = (conn.job, self.driver.as_mut()) {
                    self.by_job.remove(token);
                    driver.cancel(token);
                }
                drop(conn);
                self.free.push(i);
                self.live -= 1;
            }
        }
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
            let conn = Conn {
                job: None,
                tls: Rc::new(RefCell::new(tls)),
                tcp,
                sent_ok: false,
                failed: false,
                dead: false,
            };
            match self.free.pop() {
                Some(i) => self.conns[i] = Some(conn),
                None => self.conns.push(Some(conn)),
            }
            self.live += 1;
        }
    }
}

impl Conn {
    /// Read what the socket has into rustls; true at end of stream (or a read error), or when data
    /// comes after the "ok" (the server only waits for the client to close first, so that
    /// TIME_WAIT stays on the client side, which closes with linger 0).
    fn read(&mut self) -> bool {
        loop {
            let r = self.tls.borrow_mut().read_tls(&mut self.tcp);
            match r {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
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
