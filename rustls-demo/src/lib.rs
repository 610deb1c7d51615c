//! Asynchronous private-key signing for unmodified rustls, with asyncjob (issue 10's demo).
//!
//! rustls calls `Signer::sign` synchronously. Run the handshake inside an asyncjob job, and a
//! signer that waits for a remote signing service can pause the job instead of blocking the
//! thread: one thread then serves many handshakes whose signatures are in flight at once.

pub mod bench;
pub mod client;
pub mod config;
pub mod net;
pub mod pki;
pub mod server;
pub mod service;
pub mod signer;
pub mod tokio_job;
pub mod tokio_servers;
