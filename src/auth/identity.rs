//! Who a certificate on the cluster port speaks for: a node (subject CN `node`) or an
//! operator (CN `client.NAME`), and the node's identity, the SHA-256 of its public key.
//!
//! The identity is the key, not the certificate, so re-issuing a node's certificate with the
//! same key (new names, new expiry, a new CA) keeps the node id bound to it.

use sha2::{Digest, Sha256};

/// The subject CN of every node certificate.
pub const NODE_COMMON_NAME: &str = "node";

/// The subject CN prefix of operator certificates.
const CLIENT_PREFIX: &str = "client.";

/// The subject CN of operator `name`'s certificate.
pub fn client_common_name(name: &str) -> String {
    format!("{CLIENT_PREFIX}{name}")
}

/// What a peer's certificate makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A node's certificate: may join, and speaks as the member its identity is bound to.
    Node,
    /// An operator's certificate, with the operator's name.
    Client(String),
    /// Signed by the CA but neither: accepted by no RPC.
    Unknown(String),
}

/// The parts of a verified peer certificate the cluster port decides with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    pub role: Role,
    /// Hex SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub identity: String,
}

/// Why a certificate could not be read.
#[derive(Debug, thiserror::Error)]
#[error("not an X.509 certificate: {0}")]
pub struct BadCertificate(String);

impl PeerCert {
    /// Reads the role and identity of a DER certificate (already verified against the CA).
    pub fn from_der(der: &[u8]) -> Result<Self, BadCertificate> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| BadCertificate(e.to_string()))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let role = if common_name == NODE_COMMON_NAME {
            Role::Node
        } else if let Some(name) = common_name.strip_prefix(CLIENT_PREFIX) {
            Role::Client(name.to_string())
        } else {
            Role::Unknown(common_name)
        };
        Ok(Self {
            role,
            identity: key_identity(cert.public_key().raw),
        })
    }
}

/// The identity of a public key: hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn key_identity(spki_der: &[u8]) -> String {
    Sha256::digest(spki_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
