//! rustls `SigningKey`/`Signer` implementations whose signatures come from the signing service.
//!
//! The variants differ only in how `Signer::sign` waits for the answer:
//! - [`Wait::Blocking`]: a synchronous request/response; the calling thread blocks for L.
//! - [`Wait::BlockInPlace`]: the same, wrapped in `tokio::task::block_in_place`.
//! - [`Wait::JobFd`]: inside an asyncjob job, the request's connection fd goes into the job's wait
//!   context and the job pauses until the fd is readable. Outside a job: an error.
//! - [`Wait::JobNotify`]: inside a job, the request goes to a client thread that multiplexes one
//!   connection to the service; the job hands over its [`asyncjob::Notifier`] and pauses without fds;
//!   the client thread calls `notify()` when the answer is there. Outside a job: an error.
//! - [`Wait::BlockOn`]: inside a job driven by `asyncjob_tokio::run`, the signer awaits an async
//!   client with `asyncjob_tokio::block_on`, which pauses the job until the answer is there.
//!   Elsewhere: an error.
//! - [`Wait::Local`]: no service at all; the key signs in place (the baseline).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::pki::KeyKind;
use crate::service::{self, Request, SigningService};

/// How a signer waits for the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Block the calling thread.
    Blocking,
    /// Block inside `tokio::task::block_in_place` (multi-thread runtime only).
    BlockInPlace,
    /// Pause the calling job until the connection's fd is readable.
    JobFd,
    /// Pause the calling job until a client thread notifies it.
    JobNotify,
    /// `asyncjob_tokio::block_on(async_client.sign(..))` (inside `asyncjob_tokio::run`).
    BlockOn,
    /// Sign in place with the local key; the service is not used.
    Local,
}

/// Counters shared by every signer of one [`Backend`].
#[derive(Debug, Default)]
pub struct SignerStats {
    /// Calls to `Signer::sign`.
    pub calls: AtomicU64,
    /// Calls that returned a signature.
    pub signed: AtomicU64,
    /// Calls that returned an error.
    pub errors: AtomicU64,
    /// `asyncjob::pause()` calls made while waiting for an answer.
    pub pauses: AtomicU64,
}

/// What the signers of one configuration share: where the service is, idle connections to it, and
/// counters.
#[derive(Debug)]
pub struct Backend {
    wait: Wait,
    addr: std::os::unix::net::SocketAddr,
    /// Idle connections, each with nothing in flight (blocking for the blocking variants,
    /// non-blocking for the job variant). A connection whose request was abandoned is closed,
    /// never returned here.
    idle: Mutex<Vec<UnixStream>>,
    next_id: AtomicU64,
    notify: Option<NotifyClient>,
    async_client: Option<crate::tokio_job::AsyncClient>,
    /// The counters.
    pub stats: SignerStats,
}

impl Backend {
    /// A backend talking to `service` in the given way.
    pub fn new(service: &SigningService, wait: Wait) -> Arc<Backend> {
        let notify = (wait == Wait::JobNotify)
            .then(|| NotifyClient::start(service).expect("connect the notifying client"));
        let async_client = (wait == Wait::BlockOn)
            .then(|| crate::tokio_job::AsyncClient::new(service.addr().clone()));
        Arc::new(Backend {
            wait,
            notify,
            async_client,
            addr: service.addr().clone(),
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stats: SignerStats::default(),
        })
    }

    /// How this backend waits.
    pub fn wait(&self) -> Wait {
        self.wait
    }

    fn take_conn(&self) -> io::Result<UnixStream> {
        if let Some(conn) = self.idle.lock().expect("idle pool").pop() {
            return Ok(conn);
        }
        let conn = UnixStream::connect_addr(&self.addr)?;
        conn.set_nonblocking(self.wait == Wait::JobFd)?;
        Ok(conn)
    }

    fn put_conn(&self, conn: UnixStream) {
        self.idle.lock().expect("idle pool").push(conn);
    }

    /// Connections to the service that stay open for the backend's life (the notifying client's).
    pub fn persistent_connections(&self) -> u64 {
        u64::from(self.notify.is_some())
    }

    /// Requests of the notifying client still waiting for an answer (0 for the other variants).
    pub fn in_flight(&self) -> usize {
        self.notify
            .as_ref()
            .map_or(0, |n| n.pending.lock().expect("pending").len())
    }

    /// Close the idle connections (they are reopened on demand).
    pub fn close_idle(&self) {
        self.idle.lock().expect("idle pool").clear();
        if let Some(client) = &self.async_client {
            client.close_idle();
        }
    }

    fn request(&self, key: u8, scheme: SignatureScheme, message: &[u8]) -> Request {
        Request {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key,
            scheme,
            message: message.to_vec(),
        }
    }

    fn sign_blocking(&self, req: &Request) -> Result<Vec<u8>, String> {
        let mut conn = self.take_conn().map_err(|e| e.to_string())?;
        match service::call_blocking(&mut conn, req) {
            Ok(result) => {
                self.put_conn(conn);
                result
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn sign_job_fd(&self, req: &Request) -> Result<Vec<u8>, String> {
        // Outside a job (or with pausing blocked) pausing would return at once and this would spin:
        // refuse instead, and rustls turns the error into an alert.
        let Some(ctx) = asyncjob::current_wait_ctx() else {
            return Err("job+fd signer used outside a job with a wait context".into());
        };
        if asyncjob::pause_blocked_count() > 0 {
            return Err("job+fd signer used with pausing blocked".into());
        }
        let mut conn = self.take_conn().map_err(|e| e.to_string())?;
        let mut frame = Vec::with_capacity(16 + req.message.len());
        service::encode_request(&mut frame, req.id, req.key, req.scheme, &req.message);
        // A fresh or idle connection has an empty send buffer, far larger than one request.
        conn.write_all(&frame).map_err(|e| e.to_string())?;

        // The fd is in the context only while this frame is on the stack: the guard clears it on
        // return and on unwind (a cancelled job), and the connection is closed then, not reused.
        struct Registered<'a> {
            ctx: &'a asyncjob::WaitCtx,
            key: asyncjob::WaitKey,
        }
        impl Drop for Registered<'_> {
            fn drop(&mut self) {
                self.ctx.clear_fd(self.key);
            }
        }
        let key = asyncjob::WaitKey::of(&conn);
        ctx.set_wait_fd(key, conn.as_raw_fd(), std::ptr::null_mut(), None);
        let registered = Registered { ctx: &ctx, key };

        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 2048];
        let (body_len, result) = loop {
            match service::split_frame(&buf) {
                Ok(Some((body, used))) => break (used, service::decode_response(body)),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match conn.read(&mut chunk) {
                Ok(0) => return Err("signing service closed the connection".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.pauses.fetch_add(1, Ordering::Relaxed);
                    asyncjob::pause();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        drop(registered);
        let (id, result) = result.map_err(|e| e.to_string())?;
        if id != req.id || body_len != buf.len() {
            return Err("answer does not match the request".into());
        }
        self.put_conn(conn);
        result
    }
}

/// A `SigningKey` whose private half lives in the signing service.
#[derive(Debug)]
pub struct RemoteKey {
    kind: KeyKind,
    /// The id sent to the service (normally `kind.id()`; a wrong one makes every signature fail).
    key_id: u8,
    /// The same key held locally, used only to choose the scheme (and by [`Wait::Local`]).
    local: Arc<dyn SigningKey>,
    backend: Arc<Backend>,
}

impl RemoteKey {
    /// The fixture key `kind`, signed for by `backend`.
    pub fn new(kind: KeyKind, backend: Arc<Backend>) -> RemoteKey {
        RemoteKey {
            kind,
            key_id: kind.id(),
            local: kind.signing_key(),
            backend,
        }
    }

    /// Like [`new`](Self::new), but asking the service for a key id it does not have: every
    /// signature fails.
    pub fn broken(kind: KeyKind, backend: Arc<Backend>) -> RemoteKey {
        RemoteKey {
            key_id: 0xee,
            ..RemoteKey::new(kind, backend)
        }
    }

    /// The certificate chain and this key, ready for a server config.
    pub fn certified(self) -> Arc<CertifiedKey> {
        let chain = self.kind.chain();
        Arc::new(CertifiedKey::new(chain, Arc::new(self)))
    }
}

impl SigningKey for RemoteKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let local = self.local.choose_scheme(offered)?;
        Some(Box::new(RemoteSigner {
            scheme: local.scheme(),
            local,
            key_id: self.key_id,
            backend: self.backend.clone(),
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.local.algorithm()
    }
}

#[derive(Debug)]
struct RemoteSigner {
    scheme: SignatureScheme,
    local: Box<dyn Signer>,
    key_id: u8,
    backend: Arc<Backend>,
}

impl Signer for RemoteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let b = &self.backend;
        b.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = match b.wait {
            Wait::Local => self.local.sign(message).map_err(|e| e.to_string()),
            Wait::Blocking => b.sign_blocking(&b.request(self.key_id, self.scheme, message)),
            Wait::BlockInPlace => {
                let req = b.request(self.key_id, self.scheme, message);
                tokio::task::block_in_place(|| b.sign_blocking(&req))
            }
            Wait::JobFd => b.sign_job_fd(&b.request(self.key_id, self.scheme, message)),
            Wait::JobNotify => {
                let req = b.request(self.key_id, self.scheme, message);
                b.notify.as_ref().expect("started").sign(&req, &b.stats)
            }
            Wait::BlockOn => {
                let req = b.request(self.key_id, self.scheme, message);
                let client = b.async_client.as_ref().expect("made");
                let fut = CountPending {
                    fut: std::pin::pin!(client.sign(&req)),
                    pending: &b.stats.pauses,
                };
                match asyncjob_tokio::block_on(fut) {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let counter = if result.is_ok() {
            &b.stats.signed
        } else {
            &b.stats.errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result.map_err(|e| rustls::Error::General(format!("signing service: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

type Answer = Result<Vec<u8>, String>;

/// One request in flight through the [`NotifyClient`].
#[derive(Debug)]
struct Slot {
    answer: Mutex<Option<Answer>>,
    notifier: asyncjob::Notifier,
}

type Pending = Arc<Mutex<HashMap<u64, Arc<Slot>>>>;

/// A client thread that owns one connection to the service, multiplexes every job's request on
/// it, and wakes each job with its notifier when the answer arrives.
#[derive(Debug)]
struct NotifyClient {
    writer: Mutex<UnixStream>,
    pending: Pending,
    thread: Option<JoinHandle<()>>,
}

impl NotifyClient {
    fn start(service: &SigningService) -> io::Result<NotifyClient> {
        let conn = service.connect()?;
        let reader = conn.try_clone()?;
        let pending: Pending = Arc::default();
        let thread_pending = pending.clone();
        let thread = std::thread::Builder::new()
            .name("sign-notifier".into())
            .spawn(move || Self::read_answers(reader, &thread_pending))?;
        Ok(NotifyClient {
            writer: Mutex::new(conn),
            pending,
            thread: Some(thread),
        })
    }

    fn read_answers(mut conn: UnixStream, pending: &Pending) {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut used_total = 0;
            while let Ok(Some((body, used))) = service::split_frame(&buf[used_total..]) {
                used_total += used;
                let Ok((id, answer)) = service::decode_response(body) else {
                    continue;
                };
                // A job cancelled meanwhile removed its slot: the answer is dropped.
                let slot = pending.lock().expect("pending").remove(&id);
                if let Some(slot) = slot {
                    *slot.answer.lock().expect("slot") = Some(answer);
                    slot.notifier.notify();
                }
            }
            buf.drain(..used_total);
        }
        // The service is gone: fail whatever still waits.
        let rest: Vec<_> = pending.lock().expect("pending").drain().collect();
        for (_, slot) in rest {
            *slot.answer.lock().expect("slot") = Some(Err("signing service closed".into()));
            slot.notifier.notify();
        }
    }

    fn sign(&self, req: &Request, stats: &SignerStats) -> Answer {
        // Outside a job there is nobody to notify and pausing would not wait: refuse.
        if asyncjob::current_job().is_none() || asyncjob::pause_blocked_count() > 0 {
            return Err("job+notifier signer used outside a job".into());
        }
        let Some(notifier) = asyncjob::current_notifier() else {
            return Err("job+notifier signer used in a job without a wait context".into());
        };
        let slot = Arc::new(Slot {
            answer: Mutex::new(None),
            notifier,
        });
        // Removes the slot when the job is cancelled (unwound) before the answer came.
        struct InFlight<'a>(&'a Pending, u64);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.lock().expect("pending").remove(&self.1);
            }
        }
        self.pending
            .lock()
            .expect("pending")
            .insert(req.id, slot.clone());
        let in_flight = InFlight(&self.pending, req.id);
        let mut frame = Vec::with_capacity(16 + req.message.len());
        service::encode_request(&mut frame, req.id, req.key, req.scheme, &req.message);
        self.writer
            .lock()
            .expect("writer")
            .write_all(&frame)
            .map_err(|e| e.to_string())?;
        loop {
            if let Some(answer) = slot.answer.lock().expect("slot").take() {
                drop(in_flight);
                return answer;
            }
            // Asking for the notifier marks this round's fd-less pause as "wait for notify" (a
            // round ends at every resume, so a spurious resume must ask again).
            drop(asyncjob::current_notifier());
            stats.pauses.fetch_add(1, Ordering::Relaxed);
            asyncjob::pause();
        }
    }
}

impl Drop for NotifyClient {
    fn drop(&mut self) {
        if let Ok(conn) = self.writer.lock() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Counts the times a future is pending: under `asyncjob_tokio::block_on`, each is a pause of the job.
struct CountPending<'a, F> {
    fut: std::pin::Pin<&'a mut F>,
    pending: &'a AtomicU64,
}

impl<F: std::future::Future> std::future::Future for CountPending<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let poll = self.fut.as_mut().poll(cx);
        if poll.is_pending() {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        poll
    }
}
