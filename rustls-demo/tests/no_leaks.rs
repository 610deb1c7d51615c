//! 10,000 connections, half of them hanging up while their signature is in flight, leave nothing
//! behind: the job pool has every job back (none outstanding, no more jobs than clients at once),
//! the process has the same open fds, and RSS stays within a small bound after warm-up.
//!
//! RSS bound: after a warm-up round of the same load (which sizes the job pool, the allocator's
//! arenas and the service's buffers), RSS may grow by at most 8 MiB over the 10,000 connections;
//! a leak of one paused job per cancelled connection (a 256 KiB stack, of which a handshake touches
//! tens of KiB) or of one service connection per request would exceed it many times over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls_demo::pki::KeyKind;
use rustls_demo::server::{Handshakes, Server};
use rustls_demo::service::SigningService;
use rustls_demo::signer::{Backend, RemoteKey, Wait};
use rustls_demo::{client, config, net};

const CLIENT_THREADS: usize = 32;
const RSS_BOUND_KIB: u64 = 8 * 1024;
/// Signing latency: a client that hangs up 5 ms after its ClientHello does so mid-signature.
const LATENCY: Duration = Duration::from_millis(20);
const HANG_UP_AFTER: Duration = Duration::from_millis(5);

fn load(addr: SocketAddr, config: &Arc<ClientConfig>, total: usize) -> (usize, usize) {
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let config = config.clone();
            std::thread::spawn(move || {
                let (mut done, mut hung_up) = (0, 0);
                for i in (t..total).step_by(CLIENT_THREADS) {
                    if i % 2 == 0 {
                        client::handshake(addr, config.clone(), Duration::from_secs(20))
                            .expect("a full handshake succeeds");
                        done += 1;
                    } else {
                        client::hang_up_mid_handshake(addr, config.clone(), HANG_UP_AFTER)
                            .expect("connect");
                        hung_up += 1;
                    }
                }
                (done, hung_up)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Wait until the server has no connection left (every hung-up one was noticed and dropped), then
/// close the signer's idle service connections and wait until the service has closed its ends.
fn settle(server: &Server, backend: &Backend, service: &SigningService) {
    let t0 = Instant::now();
    // `live` is published last (Release) each turn: reading 0 (Acquire) also shows that turn's pool.
    while server.stats().live.load(Ordering::Acquire) != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} connections still open",
            server.stats().live.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    backend.close_idle();
    let s = service.stats();
    let persistent = backend.persistent_connections();
    while s.closed.load(Ordering::Acquire) + persistent != s.connections.load(Ordering::Acquire) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "service connections still open"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Both job signers, one after the other (in one test: the fd counts are per process).
#[test]
fn ten_thousand_connections_with_hang_ups_leave_nothing_behind() {
    for wait in [Wait::JobFd, Wait::JobNotify] {
        eprintln!("{wait:?}:");
        check(wait);
    }
}

fn check(wait: Wait) {
    let fds_before = net::open_fds();
    let service = SigningService::start(LATENCY).unwrap();
    let backend = Backend::new(&service, wait);
    let key = RemoteKey::new(KeyKind::EcdsaP256, backend.clone()).certified();
    let server = Server::start(
        config::server(key, &config::versions(true, true)),
        Handshakes::InJob,
    )
    .unwrap();
    let client_config = config::client(&config::versions(true, true));

    load(server.addr(), &client_config, 1_000);
    settle(&server, &backend, &service);
    let fds_warm = net::open_fds();
    let rss_warm = net::rss_kib();
    let stats = server.stats();
    let created_warm = stats.pool_created.load(Ordering::Relaxed);
    assert_eq!(stats.pool_idle.load(Ordering::Relaxed), created_warm);
    let cancelled_warm = stats.cancelled.load(Ordering::Relaxed);

    let (done, hung_up) = load(server.addr(), &client_config, 10_000);
    assert_eq!((done, hung_up), (5_000, 5_000));
    settle(&server, &backend, &service);

    let cancelled = stats.cancelled.load(Ordering::Relaxed) - cancelled_warm;
    let created = stats.pool_created.load(Ordering::Relaxed);
    let idle = stats.pool_idle.load(Ordering::Relaxed);
    let fds_after = net::open_fds();
    let rss_after = net::rss_kib();
    eprintln!(
        "cancelled mid-signature: {cancelled}; jobs created {created_warm} -> {created}, idle {idle}; \
         fds {fds_warm} -> {fds_after}; RSS {rss_warm} -> {rss_after} KiB"
    );
    assert!(cancelled > 0, "no client hung up while its job was paused");
    assert_eq!(
        backend.in_flight(),
        0,
        "requests of cancelled jobs are forgotten"
    );
    assert_eq!(idle, created, "every job is back in the pool");
    assert!(
        created <= 2 * CLIENT_THREADS as u64,
        "{created} jobs for {CLIENT_THREADS} clients at once"
    );
    assert_eq!(fds_after, fds_warm, "open fds");
    assert!(
        rss_after <= rss_warm + RSS_BOUND_KIB,
        "RSS grew from {rss_warm} to {rss_after} KiB"
    );
    assert_eq!(
        stats.handshakes.load(Ordering::Relaxed),
        500 + 5_000,
        "every full handshake was served"
    );

    let report = server.stop();
    let pool = report.pool.expect("the server thread has a pool");
    assert_eq!(pool.idle, pool.created);
    drop(backend);
    drop(service);
    assert_eq!(net::open_fds(), fds_before, "open fds after teardown");
}
