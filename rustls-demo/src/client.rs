//! Clients: a blocking one for tests and an in-process load generator for the bench.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tokio::io::AsyncReadExt;

/// What one handshake by [`handshake`] saw.
#[derive(Debug)]
pub struct Outcome {
    /// The negotiated protocol version.
    pub version: Option<rustls::ProtocolVersion>,
    /// The negotiated cipher suite.
    pub suite: Option<rustls::SupportedCipherSuite>,
}

/// Connect, handshake, and read the server's "ok"; every read gives up after `timeout`, so a
/// server that hangs is an error (`WouldBlock`/`TimedOut`), never a hang of the caller.
pub fn handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> io::Result<Outcome> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut ok = [0u8; 2];
    rustls::Stream::new(&mut tls, &mut tcp).read_exact(&mut ok)?;
    if &ok != b"ok" {
        return Err(io::Error::other("unexpected greeting"));
    }
    Ok(Outcome {
        version: tls.protocol_version(),
        suite: tls.negotiated_cipher_suite(),
    })
}

/// Start a handshake (send the ClientHello) and hang up after `after`, abortively (RST).
pub fn hang_up_mid_handshake(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    after: Duration,
) -> io::Result<()> {
    let mut tcp = TcpStream::connect(addr)?;
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
    tls.write_tls(&mut tcp)?;
    std::thread::sleep(after);
    set_zero_linger(&tcp);
    Ok(())
}

fn set_zero_linger(tcp: &impl std::os::fd::AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an fd the caller owns, with a valid option value.
    unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// What a load run measured.
#[derive(Debug, Default)]
pub struct Load {
    /// Handshakes completed before the deadline.
    pub completed: u64,
    /// Handshakes that failed.
    pub failed: u64,
    /// Latency of every completed handshake (connect to "ok").
    pub latencies: Vec<Duration>,
    /// Wall time of the measured part of the run (after the warm-up).
    pub elapsed: Duration,
}

/// Run `concurrency` clients in a loop against `addr` for `warmup + duration` (or until `max`
/// handshakes are done), on a current-thread runtime in the calling thread. Only handshakes that
/// complete after the warm-up are counted (so the first wave of `concurrency` connections does not
/// decide the result). Handshakes still in flight at the deadline are abandoned (their clients hang
/// up) and not counted.
pub fn load(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    max: u64,
) -> Load {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let connector = tokio_rustls::TlsConnector::from(config);
    let started = Instant::now();
    let measured_from = started + warmup;
    let deadline = tokio::time::Instant::from_std(measured_from + duration);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let results = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let connector = connector.clone();
            let done = done.clone();
            tasks.spawn(async move {
                let mut load = Load::default();
                while done.load(std::sync::atomic::Ordering::Relaxed) < max {
                    let t0 = Instant::now();
                    let one = async {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        tcp.set_nodelay(true)?;
                        set_zero_linger(&tcp);
                        let name = ServerName::try_from("localhost").expect("valid name");
                        let mut tls = connector.connect(name, tcp).await?;
                        let mut ok = [0u8; 2];
                        tls.read_exact(&mut ok).await?;
                        io::Result::Ok(())
                    };
                    match tokio::time::timeout_at(deadline, one).await {
                        Err(_) => break,
                        Ok(Ok(())) => {
                            let now = Instant::now();
                            if now >= measured_from {
                                load.completed += 1;
                                load.latencies.push(now - t0);
                            }
                            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(Err(_)) => load.failed += 1,
                    }
                }
                load
            });
        }
        let mut total = Load::default();
        while let Some(Ok(part)) = tasks.join_next().await {
            total.completed += part.completed;
            total.failed += part.failed;
            total.latencies.extend(part.latencies);
        }
        total
    });
    Load {
        elapsed: started
            .elapsed()
            .saturating_sub(warmup)
            .min(duration)
            .max(Duration::from_millis(1)),
        ..results
    }
}
