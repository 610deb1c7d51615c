//! The signing service: a thread behind a loopback Unix socket that holds the real private keys.
//!
//! Each request is answered after a configurable latency L (the stand-in for a remote HSM or
//! key server). The latency is a timer on the service's own current-thread runtime, so any number
//! of requests wait at once; signing itself is done on the service thread with the fixture key.
//!
//! Wire format, little-endian, every frame prefixed by a `u32` length of what follows:
//! - request: `u64 id, u8 key id, u16 scheme, message bytes`
//! - response: `u64 id, u8 status (0 = signature, 1 = error), signature or error text`

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::pki::KeyKind;

/// Requests are bounded so that a broken peer cannot make the service allocate without limit.
pub const MAX_FRAME: usize = 64 * 1024;

/// A signing request as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the client; the response carries it back.
    pub id: u64,
    /// Which key (see [`KeyKind::id`]); an unknown id is answered with an error.
    pub key: u8,
    /// The signature scheme rustls chose.
    pub scheme: SignatureScheme,
    /// What to sign.
    pub message: Vec<u8>,
}

/// Append the frame of a request to `out`.
pub fn encode_request(out: &mut Vec<u8>, id: u64, key: u8, scheme: SignatureScheme, msg: &[u8]) {
    let len = 8 + 1 + 2 + msg.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(key);
    out.extend_from_slice(&u16::from(scheme).to_le_bytes());
    out.extend_from_slice(msg);
}

/// Append the frame of a response to `out`.
pub fn encode_response(out: &mut Vec<u8>, id: u64, result: &Result<Vec<u8>, String>) {
    let (status, body) = match result {
        Ok(sig) => (0u8, sig.as_slice()),
        Err(e) => (1u8, e.as_bytes()),
    };
    out.extend_from_slice(&((8 + 1 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(status);
    out.extend_from_slice(body);
}

/// If `buf` starts with a whole frame, its body and the length of the frame.
pub fn split_frame(buf: &[u8]) -> io::Result<Option<(&[u8], usize)>> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    Ok(buf.get(4..4 + len).map(|body| (body, 4 + len)))
}

/// Parse a request body (without its length prefix).
pub fn decode_request(body: &[u8]) -> io::Result<Request> {
    if body.len() < 11 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short request"));
    }
    Ok(Request {
        id: u64::from_le_bytes(body[..8].try_into().expect("8 bytes")),
        key: body[8],
        scheme: SignatureScheme::from(u16::from_le_bytes([body[9], body[10]])),
        message: body[11..].to_vec(),
    })
}

/// Parse a response body (without its length prefix): the id and the signature or error.
pub fn decode_response(body: &[u8]) -> io::Result<(u64, Result<Vec<u8>, String>)> {
    if body.len() < 9 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short response"));
    }
    let id = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let rest = body[9..].to_vec();
    Ok(match body[8] {
        0 => (id, Ok(rest)),
        _ => (id, Err(String::from_utf8_lossy(&rest).into_owned())),
    })
}

/// Send one request and wait for its answer, on a blocking stream with nothing else in flight.
pub fn call_blocking(
    stream: &mut UnixStream,
    req: &Request,
) -> io::Result<Result<Vec<u8>, String>> {
    let mut frame = Vec::with_capacity(16 + req.message.len());
    encode_request(&mut frame, req.id, req.key, req.scheme, &req.message);
    stream.write_all(&frame)?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let (id, result) = decode_response(&body)?;
    if id != req.id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer to another request",
        ));
    }
    Ok(result)
}

/// Counters of a running service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Requests answered with a signature.
    pub signed: AtomicU64,
    /// Requests answered with an error.
    pub failed: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed (after their last answer was written or dropped).
    pub closed: AtomicU64,
}

/// A running signing service; dropping it stops the thread and closes every connection.
#[derive(Debug)]
pub struct SigningService {
    addr: SocketAddr,
    stats: Arc<ServiceStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

static NEXT_SERVICE: AtomicU64 = AtomicU64::new(0);

impl SigningService {
    /// Start a service answering after `latency`, holding every fixture key.
    pub fn start(latency: Duration) -> io::Result<SigningService> {
        let name = format!(
            "asyncjob-rustls-demo-{}-{}",
            std::process::id(),
            NEXT_SERVICE.fetch_add(1, Ordering::Relaxed)
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = UnixListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        let keys: HashMap<u8, Arc<dyn SigningKey>> = KeyKind::ALL
            .iter()
            .map(|k| (k.id(), k.signing_key()))
            .collect();
        let stats = Arc::new(ServiceStats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("signing-service".into())
            .spawn(move || serve(listener, keys, latency, thread_stats, stop_rx))?;
        Ok(SigningService {
            addr,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The address to connect to.
    pub fn addr(&self) -> &SocketAddr {
        &self.addr
    }

    /// A new blocking connection to the service.
    pub fn connect(&self) -> io::Result<UnixStream> {
        UnixStream::connect_addr(&self.addr)
    }

    /// The service's counters.
    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }
}

impl Drop for SigningService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sign(keys: &HashMap<u8, Arc<dyn SigningKey>>, req: &Request) -> Result<Vec<u8>, String> {
    let key = keys
        .get(&req.key)
        .ok_or_else(|| format!("no key {}", req.key))?;
    let signer = key
        .choose_scheme(&[req.scheme])
        .ok_or_else(|| format!("key {} cannot sign with {:?}", req.key, req.scheme))?;
    signer.sign(&req.message).map_err(|e| e.to_string())
}

fn serve(
    listener: UnixListener,
    keys: HashMap<u8, Arc<dyn SigningKey>>,
    latency: Duration,
    stats: Arc<ServiceStats>,
    stop: oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("service runtime");
    let local = tokio::task::LocalSet::new();
    let keys = Arc::new(keys);
    local.block_on(&rt, async move {
        let listener = tokio::net::UnixListener::from_std(listener).expect("register listener");
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                stats.connections.fetch_add(1, Ordering::Relaxed);
                tokio::task::spawn_local(connection(stream, keys.clone(), latency, stats.clone()));
            }
        };
        tokio::select! {
            _ = stop => {}
            () = accept => {}
        }
    });
    // Dropping the LocalSet and the runtime drops every connection task and closes its stream.
}

async fn connection(
    stream: tokio::net::UnixStream,
    keys: Arc<HashMap<u8, Arc<dyn SigningKey>>>,
    latency: Duration,
    stats: Arc<ServiceStats>,
) {
    let stream_stats = stats.clone();
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let (req, used) = match split_frame(&buf) {
                Ok(Some((body, used))) => match decode_request(body) {
                    Ok(req) => (req, used),
                    Err(_) => break 'read,
                },
                Ok(None) => break,
                Err(_) => break 'read,
            };
            buf.drain(..used);
            let tx = tx.clone();
            let keys = keys.clone();
            let stats = stream_stats.clone();
            // One task per request: the latency timers of all outstanding requests run at once.
            tokio::task::spawn_local(async move {
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                let result = sign(&keys, &req);
                let counter = if result.is_ok() {
                    &stats.signed
                } else {
                    &stats.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let mut frame = Vec::with_capacity(16 + 512);
                encode_response(&mut frame, req.id, &result);
                let _ = tx.send(frame);
            });
        }
    }
    drop(tx);
    let _ = writer.await;
    stats.closed.fetch_add(1, Ordering::Release);
}
