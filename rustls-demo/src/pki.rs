//! The committed test PKI (`fixtures/`, made by `fixtures/gen.sh`): a CA and three leaf keys.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;

/// The leaf keys of the fixtures; the discriminant is the key id the signing service knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256 = 0,
    /// RSA, 2048 bits.
    Rsa2048 = 1,
    /// RSA, 4096 bits.
    Rsa4096 = 2,
}

impl KeyKind {
    /// Every key of the fixtures.
    pub const ALL: [KeyKind; 3] = [KeyKind::EcdsaP256, KeyKind::Rsa2048, KeyKind::Rsa4096];

    /// The id under which the signing service holds this key.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The key for an id, if there is one.
    pub fn from_id(id: u8) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| k.id() == id)
    }

    fn pem(self) -> (&'static [u8], &'static [u8]) {
        match self {
            KeyKind::EcdsaP256 => (
                include_bytes!("../fixtures/ecdsa-p256.pem"),
                include_bytes!("../fixtures/ecdsa-p256.key"),
            ),
            KeyKind::Rsa2048 => (
                include_bytes!("../fixtures/rsa-2048.pem"),
                include_bytes!("../fixtures/rsa-2048.key"),
            ),
            KeyKind::Rsa4096 => (
                include_bytes!("../fixtures/rsa-4096.pem"),
                include_bytes!("../fixtures/rsa-4096.key"),
            ),
        }
    }

    /// The leaf certificate followed by the CA certificate.
    pub fn chain(self) -> Vec<CertificateDer<'static>> {
        let leaf = CertificateDer::from_pem_slice(self.pem().0).expect("fixture certificate");
        vec![leaf, ca_cert()]
    }

    /// The private key, as rustls' ring provider loads it (`any_supported_type`).
    pub fn signing_key(self) -> Arc<dyn SigningKey> {
        let der = PrivateKeyDer::from_pem_slice(self.pem().1).expect("fixture key");
        rustls::crypto::ring::sign::any_supported_type(&der).expect("supported key type")
    }
}

/// The CA certificate of the fixtures.
pub fn ca_cert() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(include_bytes!("../fixtures/ca.pem")).expect("fixture CA")
}

/// A root store holding only the fixtures' CA.
pub fn roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert()).expect("CA certificate");
    roots
}
