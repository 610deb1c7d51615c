//! Every key type and protocol version completes a handshake whose signature comes from the
//! signing service, with the handshake inside a job that pauses at least once per handshake.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls::ProtocolVersion;
use rustls_demo::config;
use rustls_demo::pki::KeyKind;
use rustls_demo::server::{Handshakes, Server};
use rustls_demo::service::SigningService;
use rustls_demo::signer::{Backend, RemoteKey, Wait};
use rustls_demo::tokio_job::JobTokioServer;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The server's count of completed handshakes, once it has reached `n` or `TIMEOUT` has passed: a
/// client's handshake is complete (TLS 1.3: after it sent its Finished) before the server has read
/// that Finished and counted it.
fn server_handshakes(count: &std::sync::atomic::AtomicU64, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while count.load(Ordering::Relaxed) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    count.load(Ordering::Relaxed)
}

fn run(kind: KeyKind, tls13: bool, wait: Wait, mode: Handshakes, n: u64) {
    let service = SigningService::start(Duration::from_millis(2)).unwrap();
    let backend = Backend::new(&service, wait);
    let key = RemoteKey::new(kind, backend.clone()).certified();
    let server =
        Server::start(config::server(key, &config::versions(tls13, !tls13)), mode).unwrap();
    let client = config::client(&config::versions(true, true));
    for _ in 0..n {
        let outcome = rustls_demo::client::handshake(server.addr(), client.clone(), TIMEOUT)
            .unwrap_or_else(|e| panic!("{kind:?} tls13={tls13} {wait:?}: {e}"));
        let want = if tls13 {
            ProtocolVersion::TLSv1_3
        } else {
            ProtocolVersion::TLSv1_2
        };
        assert_eq!(outcome.version, Some(want));
    }
    let stats = &backend.stats;
    assert_eq!(
        stats.signed.load(Ordering::Relaxed),
        n,
        "one remote signature per handshake"
    );
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    let remote = if wait == Wait::Local { 0 } else { n };
    assert_eq!(service.stats().signed.load(Ordering::Relaxed), remote);
    let pauses = stats.pauses.load(Ordering::Relaxed);
    if matches!(wait, Wait::JobFd | Wait::JobNotify) {
        assert!(pauses >= n, "{pauses} pauses for {n} handshakes");
    } else {
        assert_eq!(pauses, 0);
    }
    assert_eq!(server_handshakes(&server.stats().handshakes, n), n);
    let report = server.stop();
    if let Some(pool) = report.pool {
        assert_eq!(pool.idle, pool.created, "every job back in the pool");
    }
}

#[test]
fn ecdsa_p256_tls13_job_fd() {
    run(KeyKind::EcdsaP256, true, Wait::JobFd, Handshakes::InJob, 5);
}

#[test]
fn ecdsa_p256_tls12_job_fd() {
    run(KeyKind::EcdsaP256, false, Wait::JobFd, Handshakes::InJob, 5);
}

#[test]
fn rsa_2048_tls13_job_fd() {
    run(KeyKind::Rsa2048, true, Wait::JobFd, Handshakes::InJob, 5);
}

#[test]
fn rsa_2048_tls12_job_fd() {
    run(KeyKind::Rsa2048, false, Wait::JobFd, Handshakes::InJob, 5);
}

/// RSA-4096 signing (ring's largest) runs in the service, but the handshake, the certificate chain
/// and the verification state all live on the job's stack: the default stack is enough.
#[test]
fn rsa_4096_fits_the_default_job_stack() {
    run(KeyKind::Rsa4096, true, Wait::JobFd, Handshakes::InJob, 2);
    run(KeyKind::Rsa4096, false, Wait::JobFd, Handshakes::InJob, 2);
    // And with ring's RSA-4096 signing itself on the job's stack.
    run(KeyKind::Rsa4096, true, Wait::Local, Handshakes::InJob, 2);
    run(KeyKind::Rsa4096, false, Wait::Local, Handshakes::InJob, 2);
}

#[test]
fn blocking_signer_without_jobs() {
    run(
        KeyKind::EcdsaP256,
        true,
        Wait::Blocking,
        Handshakes::Direct,
        3,
    );
    run(
        KeyKind::Rsa2048,
        false,
        Wait::Blocking,
        Handshakes::Direct,
        3,
    );
}

#[test]
fn ecdsa_p256_tls13_job_notify() {
    run(
        KeyKind::EcdsaP256,
        true,
        Wait::JobNotify,
        Handshakes::InJob,
        5,
    );
}

#[test]
fn ecdsa_p256_tls12_job_notify() {
    run(
        KeyKind::EcdsaP256,
        false,
        Wait::JobNotify,
        Handshakes::InJob,
        5,
    );
}

#[test]
fn rsa_2048_tls13_job_notify() {
    run(
        KeyKind::Rsa2048,
        true,
        Wait::JobNotify,
        Handshakes::InJob,
        5,
    );
}

#[test]
fn rsa_2048_tls12_job_notify() {
    run(
        KeyKind::Rsa2048,
        false,
        Wait::JobNotify,
        Handshakes::InJob,
        5,
    );
}

fn run_block_on(kind: KeyKind, tls13: bool, n: u64) {
    let service = SigningService::start(Duration::from_millis(2)).unwrap();
    let backend = Backend::new(&service, Wait::BlockOn);
    let key = RemoteKey::new(kind, backend.clone()).certified();
    let server =
        JobTokioServer::start(config::server(key, &config::versions(tls13, !tls13))).unwrap();
    let client = config::client(&config::versions(true, true));
    for _ in 0..n {
        let outcome = rustls_demo::client::handshake(server.addr(), client.clone(), TIMEOUT)
            .unwrap_or_else(|e| panic!("{kind:?} tls13={tls13} block_on: {e}"));
        let want = if tls13 {
            ProtocolVersion::TLSv1_3
        } else {
            ProtocolVersion::TLSv1_2
        };
        assert_eq!(outcome.version, Some(want));
    }
    let stats = &backend.stats;
    assert_eq!(stats.signed.load(Ordering::Relaxed), n);
    assert_eq!(service.stats().signed.load(Ordering::Relaxed), n);
    let pauses = stats.pauses.load(Ordering::Relaxed);
    assert!(pauses >= n, "{pauses} pauses for {n} handshakes");
    assert_eq!(server_handshakes(&server.stats().handshakes, n), n);
}

#[test]
fn ecdsa_p256_tls13_block_on() {
    run_block_on(KeyKind::EcdsaP256, true, 5);
}

#[test]
fn ecdsa_p256_tls12_block_on() {
    run_block_on(KeyKind::EcdsaP256, false, 5);
}

#[test]
fn rsa_2048_tls13_block_on() {
    run_block_on(KeyKind::Rsa2048, true, 5);
}

#[test]
fn rsa_2048_tls12_block_on() {
    run_block_on(KeyKind::Rsa2048, false, 5);
}

#[test]
fn rsa_4096_block_on() {
    run_block_on(KeyKind::Rsa4096, true, 2);
}
