//! TLS for the cluster port: the node's server configuration (requiring a client certificate
//! signed by the cluster's CA), and the client configurations nodes and operators dial with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::certs::{client_file, CA_CERT, NODE_CERT, NODE_KEY};
use super::identity::{PeerCert, Role};

/// The name `--client` takes to dial with the node's own certificate (for a node's health
/// check, which has no operator certificate).
pub const NODE_CLIENT: &str = "node";

/// Why a certificates directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    Empty { path: PathBuf },
    #[error("{path} is not a node certificate (its subject CN must be `node`; make one with `quorum cert create-node`)")]
    NotNode { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A node's TLS material for the cluster port, loaded once at start.
#[derive(Clone)]
pub struct ClusterTls {
    /// Serves the cluster port: the node's certificate, client certificates required.
    pub server: Arc<ServerConfig>,
    /// Dials peers with the node's certificate.
    pub client: ClientTlsConfig,
    /// The node's own identity, recorded in the membership when it founds or joins.
    pub identity: String,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    /// Loads `ca.crt`, `node.crt` and `node.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        install_crypto_provider();
        let ca_path = dir.join(CA_CERT);
        let cert_path = dir.join(NODE_CERT);
        let key_path = dir.join(NODE_KEY);
        let roots = root_store(&ca_path)?;
        let chain = certificates(&cert_path)?;
        let own = PeerCert::from_der(&chain[0]).map_err(|e| TlsError::File {
            path: cert_path.clone(),
            reason: e.to_string(),
        })?;
        if own.role != Role::Node {
            return Err(TlsError::NotNode { path: cert_path });
        }
        let key = private_key(&key_path)?;
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::File {
                path: key_path.clone(),
                reason: e.to_string(),
            })?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: client_config(&ca_path, &cert_path, &key_path)?,
            identity: own.identity,
        })
    }
}

/// The configuration an operator command dials with: `client.NAME.crt` from `dir`, or the
/// node's own certificate for `NAME` = [`NODE_CLIENT`].
pub fn operator_client(dir: &Path, name: &str) -> Result<ClientTlsConfig, TlsError> {
    install_crypto_provider();
    let (cert, key) = if name == NODE_CLIENT {
        (dir.join(NODE_CERT), dir.join(NODE_KEY))
    } else {
        (
            dir.join(client_file(name, "crt")),
            dir.join(client_file(name, "key")),
        )
    };
    client_config(&dir.join(CA_CERT), &cert, &key)
}

fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsConfig, TlsError> {
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?)))
}

/// rustls needs one process-wide crypto provider; quorum uses ring everywhere.
pub fn install_crypto_provider() {
    // Fails only when one is installed already, which is what we want either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Every certificate in a PEM file; a CA file may hold several (old and new CA during a
/// rotation).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
