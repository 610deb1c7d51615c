//! The comparison servers on tokio: what rustls users do today when the signer blocks.
//!
//! - [`TokioMode::BlockInPlace`]: tokio-rustls on a multi-thread runtime; the signer wraps its
//!   blocking call in `tokio::task::block_in_place`.
//! - [`TokioMode::SpawnBlocking`]: the whole handshake (rustls with blocking I/O and a blocking
//!   signer) runs on tokio's blocking pool via `spawn_blocking`, with the default pool size (512) or
//!   a cap.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::net;
use crate::server::ServerStats;

/// How a tokio server runs its handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokioMode {
    /// tokio-rustls on a multi-thread runtime (the signer uses `block_in_place`).
    BlockInPlace,
    /// Each handshake on the blocking pool, which has at most this many threads (tokio's
    /// default is 512).
    SpawnBlocking(usize),
}

/// A running tokio server.
#[derive(Debug)]
pub struct TokioServer {
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TokioServer {
    /// Start a server on a thread of its own.
    pub fn start(config: Arc<ServerConfig>, mode: TokioMode) -> io::Result<TokioServer> {
        let listener = net::listen_loopback()?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ServerStats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("tokio-server".into())
            .spawn(move || {
                let mut builder = match mode {
                    TokioMode::BlockInPlace => tokio::runtime::Builder::new_multi_thread(),
                    TokioMode::SpawnBlocking(_) => tokio::runtime::Builder::new_current_thread(),
                };
                if let TokioMode::SpawnBlocking(max) = mode {
                    builder.max_blocking_threads(max);
                }
                let rt = builder.enable_all().build().expect("server runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let accept = async {
                        loop {
                            let Ok((tcp, _)) = listener.accept().await else {
                                continue;
                            };
                            let _ = tcp.set_nodelay(true);
                            let (config, stats) = (config.clone(), thread_stats.clone());
                            match mode {
                                TokioMode::BlockInPlace => {
                                    tokio::spawn(serve_async(tcp, config, stats));
                                }
                                TokioMode::SpawnBlocking(_) => {
                                    let Ok(tcp) = tcp.into_std() else { continue };
                                    tokio::task::spawn_blocking(move || {
                                        serve_blocking(tcp, config, &stats)
                                    });
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = stop_rx => {}
                        () = accept => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        Ok(TokioServer {
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
}

impl Drop for TokioServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Handshake with tokio-rustls, send "ok", wait for the client to close.
pub async fn serve_async(
    tcp: tokio::net::TcpStream,
    config: Arc<ServerConfig>,
    stats: Arc<ServerStats>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let Ok(mut tls) = acceptor.accept(tcp).await else {
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

/// The same with blocking I/O, for a thread of the blocking pool.
fn serve_blocking(mut tcp: TcpStream, config: Arc<ServerConfig>, stats: &ServerStats) {
    if tcp.set_nonblocking(false).is_err() {
        return;
    }
    let Ok(mut tls) = ServerConnection::new(config) else {
        return;
    };
    while tls.is_handshaking() {
        if tls.complete_io(&mut tcp).is_err() {
            stats.tls_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    if tls.writer().write_all(b"ok").is_err() || tls.complete_io(&mut tcp).is_err() {
        return;
    }
    stats.handshakes.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 64];
    while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
}
