//! A test CA with a server certificate for the worker port's `wss://`, and a relay that
//! lets clients which only speak `ws://` reach a TLS worker port (it dials the node over TLS
//! and verifies its certificate against that CA).

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::Node;

/// A CA and a server certificate for `127.0.0.1` and `localhost`, as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "quorum wss test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server names");
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = server.signed_by(&key, &issuer).expect("server certificate");
        let pki = Pki {
            ca_der: ca_cert.der().clone(),
            dir,
        };
        std::fs::write(pki.ca(), ca_cert.pem()).expect("write ca.crt");
        std::fs::write(pki.cert(), cert.pem()).expect("write server.crt");
        std::fs::write(pki.key(), key.serialize_pem()).expect("write server.key");
        pki
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The `serve` arguments that make the worker port serve `wss://` with this certificate.
    pub fn tls_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert().display().to_string(),
            "--tls-key".into(),
            self.key().display().to_string(),
        ]
    }

    /// A TLS client that trusts this CA only.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("CA into the roots");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

/// Plain TCP in, TLS (verified against the test CA) out to the node: a `ws://` door to the
/// `wss://` port for clients in this process. Stops when dropped.
pub struct TlsRelay {
    /// `ws://127.0.0.1:PORT` of the relay.
    pub url: String,
    task: JoinHandle<()>,
}

impl TlsRelay {
    pub async fn start(pki: &Pki, node: &Node) -> TlsRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let url = format!("ws://{}", listener.local_addr().expect("relay address"));
        let connector = pki.connector();
        let target = node.listen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let connector = connector.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(tcp) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let name = ServerName::try_from("localhost").expect("server name");
                    let Ok(mut outbound) = connector.connect(name, tcp).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
            }
        });
        TlsRelay { url, task }
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
