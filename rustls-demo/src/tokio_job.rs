//! Variant (4): tokio-rustls's acceptor inside `asyncjob_tokio::run`, on a current-thread runtime,
//! with a signer that awaits an async signing client through `asyncjob_tokio::block_on`.
//!
//! The handshake future is polled inside a job (`run(|| block_on(acceptor.accept(tcp)))`); when
//! rustls calls `Signer::sign`, the signer's own `block_on(client.sign(..))` pauses the job, and the
//! runtime serves other connections until the service answers. tokio-rustls and rustls are used
//! unchanged.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::net;
use crate::server::ServerStats;
use crate::service::{self, Request};

/// An async client of the signing service: idle connections in a pool, one request in flight per
/// connection. Used from inside `asyncjob_tokio::block_on` (so on the runtime's thread).
#[derive(Debug)]
pub struct AsyncClient {
    addr: std::os::unix::net::SocketAddr,
    idle: std::sync::Mutex<Vec<tokio::net::UnixStream>>,
}

impl AsyncClient {
    /// A client of the service at `addr`.
    pub fn new(addr: std::os::unix::net::SocketAddr) -> AsyncClient {
        AsyncClient {
            addr,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Close the idle connections.
    pub fn close_idle(&self) {
        self.idle.lock().expect("idle pool").clear();
    }

    /// Ask the service for a signature. A connection whose request is abandoned (the future is
    /// dropped) is closed with it, never reused.
    pub async fn sign(&self, req: &Request) -> io::Result<Result<Vec<u8>, String>> {
        let pooled = self.idle.lock().expect("idle pool").pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let std = std::os::unix::net::UnixStream::connect_addr(&self.addr)?;
                std.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(std)?
            }
        };
        let mut frame = Vec::with_capacity(16 + req.message.len());
        service::encode_request(&mut frame, req.id, req.key, req.scheme, &req.message);
        conn.write_all(&frame).await?;
        let len = conn.read_u32_le().await? as usize;
        if len > service::MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
        }
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).await?;
        let (id, answer) = service::decode_response(&body)?;
        if id != req.id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "answer to another request",
            ));
        }
        self.idle.lock().expect("idle pool").push(conn);
        Ok(answer)
    }
}

/// A tokio-rustls server whose handshakes run in jobs (`asyncjob_tokio::run`).
#[derive(Debug)]
pub struct JobTokioServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Duration>>,
}

impl JobTokioServer {
    /// Start the server on a thread of its own (one current-thread runtime).
    pub fn start(config: Arc<ServerConfig>) -> io::Result<JobTokioServer> {
        let listener = net::listen_loopback()?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("job-tokio-server".into())
            .spawn(move || {
                let cpu0 = net::thread_cpu();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let accept = async {
                        loop {
                            let Ok((tcp, _)) = listener.accept().await else {
                                continue;
                            };
                            let _ = tcp.set_nodelay(true);
                            let (config, stats) = (config.clone(), thread_stats.clone());
                            tokio::task::spawn_local(serve(tcp, config, stats));
                        }
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        () = accept => {}
                    }
                });
                // Dropping the LocalSet drops every connection's task, cancelling paused jobs.
                drop(local);
                let cpu = net::thread_cpu() - cpu0;
                drop(rt);
                cpu
            })?;
        Ok(JobTokioServer {
            addr,
            stats,
            stop: Some(stop_tx),
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

    /// Stop the server and return the CPU time of its thread.
    pub fn stop(mut self) -> Duration {
        let _ = self.stop.take().expect("running").send(());
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for JobTokioServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(tcp: tokio::net::TcpStream, config: Arc<ServerConfig>, stats: Arc<ServerStats>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // The handshake's future is polled inside the job, so the signer can pause it.
    let handshake = asyncjob_tokio::run(move || asyncjob_tokio::block_on(acceptor.accept(tcp)));
    let Ok(Ok(Ok(mut tls))) = handshake.await else {
        stats.tls_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if tls.write_all(b"ok").await.is_err() || tls.flush().await.is_err() {
        return;
    }
    stats.handshakes.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 64];
    while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
}
