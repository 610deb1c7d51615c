//! A signer that cannot sign makes rustls send an alert: the client sees a handshake failure
//! promptly, never a hang. The job signers refuse (with an error, at once) outside a job.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use rustls_demo::config;
use rustls_demo::pki::KeyKind;
use rustls_demo::server::{Handshakes, Server};
use rustls_demo::service::SigningService;
use rustls_demo::signer::{Backend, RemoteKey, Wait};

/// Far longer than a handshake takes; reaching it means the server hung.
const TIMEOUT: Duration = Duration::from_secs(10);

fn alert_not_hang(wait: Wait, mode: Handshakes, tls13: bool) {
    let service = SigningService::start(Duration::from_millis(1)).unwrap();
    let backend = Backend::new(&service, wait);
    let key = RemoteKey::broken(KeyKind::EcdsaP256, backend.clone()).certified();
    let server =
        Server::start(config::server(key, &config::versions(tls13, !tls13)), mode).unwrap();
    let client = config::client(&config::versions(true, true));
    let err = rustls_demo::client::handshake(server.addr(), client, TIMEOUT)
        .expect_err("the handshake must fail");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        inner,
        Some(&rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure
        )),
        "{wait:?}: expected a handshake_failure alert, got {err:?}"
    );
    assert_eq!(backend.stats.errors.load(Ordering::Relaxed), 1);
    assert_eq!(service.stats().failed.load(Ordering::Relaxed), 1);
    assert_eq!(server.stats().tls_errors.load(Ordering::Relaxed), 1);
}

#[test]
fn service_error_is_an_alert_job_fd_tls13() {
    alert_not_hang(Wait::JobFd, Handshakes::InJob, true);
}

#[test]
fn service_error_is_an_alert_job_fd_tls12() {
    alert_not_hang(Wait::JobFd, Handshakes::InJob, false);
}

#[test]
fn service_error_is_an_alert_job_notify() {
    alert_not_hang(Wait::JobNotify, Handshakes::InJob, true);
}

#[test]
fn service_error_is_an_alert_blocking() {
    alert_not_hang(Wait::Blocking, Handshakes::Direct, true);
}

/// The job signers used where there is no job (a server that runs `process_new_packets` directly)
/// fail the handshake with an alert instead of spinning or blocking.
#[test]
fn job_signers_outside_a_job_are_an_alert() {
    for wait in [Wait::JobFd, Wait::JobNotify] {
        let service = SigningService::start(Duration::from_millis(1)).unwrap();
        let backend = Backend::new(&service, wait);
        let key = RemoteKey::new(KeyKind::EcdsaP256, backend.clone()).certified();
        let server = Server::start(
            config::server(key, &config::versions(true, false)),
            Handshakes::Direct,
        )
        .unwrap();
        let client = config::client(&config::versions(true, true));
        let err = rustls_demo::client::handshake(server.addr(), client, TIMEOUT).unwrap_err();
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert_eq!(
            inner,
            Some(&rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            )),
            "{wait:?}: {err:?}"
        );
        assert_eq!(
            service.stats().signed.load(Ordering::Relaxed),
            0,
            "nothing was sent"
        );
        assert_eq!(backend.stats.pauses.load(Ordering::Relaxed), 0);
    }
}

/// Called directly on this (non-job) thread, the job signers return an error at once, even with a
/// service so slow that waiting for it would show.
#[test]
fn job_signers_return_an_error_outside_a_job() {
    let service = SigningService::start(Duration::from_secs(30)).unwrap();
    for wait in [Wait::JobFd, Wait::JobNotify, Wait::BlockOn] {
        let backend = Backend::new(&service, wait);
        let key = RemoteKey::new(KeyKind::EcdsaP256, backend);
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let t0 = Instant::now();
        assert!(signer.sign(b"message").is_err(), "{wait:?}");
        assert!(t0.elapsed() < TIMEOUT, "{wait:?} waited");
    }
    // Inside a job with pausing blocked, too.
    let backend = Backend::new(&service, Wait::JobFd);
    let key = RemoteKey::new(KeyKind::EcdsaP256, backend);
    let started = asyncjob::start(Some(&asyncjob::WaitCtx::new()), move || {
        let _block = asyncjob::block_pause();
        let signer = key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        signer.sign(b"message").is_err()
    })
    .unwrap();
    assert!(matches!(started, asyncjob::Started::Finished(true)));
}

/// Under tokio-rustls (job + block_on) a signer error ends the handshake promptly too. The client
/// sees the connection close rather than an alert: rustls queues no alert for a signer error, and
/// tokio-rustls flushes the unfinished flight before it returns the error, so the demo cannot
/// replace that flight with an alert there as its own server does.
#[test]
fn service_error_under_tokio_rustls_is_not_a_hang() {
    let service = SigningService::start(Duration::from_millis(1)).unwrap();
    let backend = Backend::new(&service, Wait::BlockOn);
    let key = RemoteKey::broken(KeyKind::EcdsaP256, backend.clone()).certified();
    let server = rustls_demo::tokio_job::JobTokioServer::start(config::server(
        key,
        &config::versions(true, false),
    ))
    .unwrap();
    let client = config::client(&config::versions(true, true));
    let err = rustls_demo::client::handshake(server.addr(), client, TIMEOUT).unwrap_err();
    assert!(
        !matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "the server hung: {err:?}"
    );
    assert_eq!(backend.stats.errors.load(Ordering::Relaxed), 1);
    // The stream is closed inside tokio-rustls before the server task counts the error.
    let t0 = Instant::now();
    while server.stats().tls_errors.load(Ordering::Relaxed) != 1 {
        assert!(t0.elapsed() < TIMEOUT, "the server did not see the error");
        std::thread::sleep(Duration::from_millis(5));
    }
}
