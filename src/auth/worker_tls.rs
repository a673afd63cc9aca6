//! `wss://` on the worker port: the certificate and key from `--tls-cert`/`--tls-key`, the
//! rustls acceptor made from them, and [`WorkerStream`], the one socket type the gateway
//! upgrades whether the port speaks TLS or not.
//!
//! The files are read once at start, so a missing or malformed file stops the node before it
//! joins its cluster instead of failing every worker later. The TLS handshake runs inside the
//! gateway's upgrade timeout: a client that never finishes it is dropped like one that never
//! finishes its HTTP upgrade.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::WorkerTlsFiles;

/// Why the worker port's certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkerTlsError {
    #[error("cannot read the worker TLS certificate {path}: {source}")]
    Cert {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the worker TLS certificate {path} holds no certificate (expected PEM `CERTIFICATE` blocks)")]
    NoCert { path: PathBuf },
    #[error("cannot read the worker TLS key {path} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1): {source}")]
    Key {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the worker TLS certificate {cert} and key {key} do not work together: {source}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The worker port's TLS acceptor, made once at start from `--tls-cert` and `--tls-key`.
#[derive(Clone)]
pub struct WorkerTls {
    acceptor: TlsAcceptor,
}

impl WorkerTls {
    /// Loads the certificate chain and key, or `None` when the worker port is plaintext.
    pub fn from_config(files: Option<&WorkerTlsFiles>) -> Result<Option<Self>, WorkerTlsError> {
        files.map(|f| Self::load(&f.cert, &f.key)).transpose()
    }

    /// Reads a PEM certificate chain (leaf first) and its private key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, WorkerTlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|source| WorkerTlsError::Cert {
                path: cert.to_path_buf(),
                source,
            })?;
        if chain.is_empty() {
            return Err(WorkerTlsError::NoCert {
                path: cert.to_path_buf(),
            });
        }
        let private_key =
            PrivateKeyDer::from_pem_file(key).map_err(|source| WorkerTlsError::Key {
                path: key.to_path_buf(),
                source,
            })?;
        let config_err = |source| WorkerTlsError::Config {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        };
        // The provider is named here, so nothing depends on a process-wide default.
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(config_err)?
                .with_no_client_auth()
                .with_single_cert(chain, private_key)
                .map_err(config_err)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Runs the server side of the TLS handshake on an accepted connection.
    async fn handshake(&self, tcp: TcpStream) -> io::Result<WorkerStream> {
        let tls = self.acceptor.accept(tcp).await?;
        Ok(WorkerStream::Tls(Box::new(tls)))
    }
}

/// Wraps an accepted worker connection in TLS when the port has a certificate; the caller
/// bounds how long this may take.
pub async fn secure(tls: Option<&WorkerTls>, tcp: TcpStream) -> io::Result<WorkerStream> {
    match tls {
        Some(tls) => tls.handshake(tcp).await,
        None => Ok(WorkerStream::Plain(tcp)),
    }
}

/// A worker's socket: plain TCP, or TLS over TCP. One type, so the sessions and the
/// telemetry sink stay the same on both kinds of port.
pub enum WorkerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for WorkerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WorkerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            WorkerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WorkerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WorkerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            WorkerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WorkerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            WorkerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WorkerStream::Plain(s) => s.is_write_vectored(),
            WorkerStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WorkerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            WorkerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WorkerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            WorkerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_certificate_and_key_load() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cert = write(dir.path(), "w.crt", &cert);
        let key = write(dir.path(), "w.key", &key);
        assert!(WorkerTls::load(&cert, &key).is_ok());
    }

    #[test]
    fn missing_empty_swapped_or_mismatched_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        let cert = write(dir.path(), "w.crt", &cert);
        let key = write(dir.path(), "w.key", &key);
        let other_key = write(dir.path(), "other.key", &other_key);
        let empty = write(dir.path(), "empty.pem", "not pem at all\n");
        let missing = dir.path().join("missing.crt");

        let err = WorkerTls::load(&missing, &key).err().unwrap();
        assert!(matches!(err, WorkerTlsError::Cert { .. }), "{err}");
        assert!(err.to_string().contains("missing.crt"), "{err}");
        let err = WorkerTls::load(&empty, &key).err().unwrap();
        assert!(matches!(err, WorkerTlsError::NoCert { .. }), "{err}");
        let err = WorkerTls::load(&cert, &cert).err().unwrap();
        assert!(matches!(err, WorkerTlsError::Key { .. }), "{err}");
        let err = WorkerTls::load(&cert, &other_key).err().unwrap();
        assert!(matches!(err, WorkerTlsError::Config { .. }), "{err}");
    }
}
