//! The cluster port's TLS handshake: a client certificate signed by the CA is required, and
//! each connection that finished it carries what its certificate says ([`PeerInfo`]).

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::identity::PeerCert;

/// What the cluster service knows about the peer of a connection: set once at the handshake,
/// found in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The verified client certificate's role and identity.
    pub cert: PeerCert,
}

/// Completes the TLS handshake of `tcp` and reads what its client certificate says. The
/// cluster port's door (`rpc::incoming`) runs it under its deadline and connection cap.
pub async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Result<(TlsStream<TcpStream>, PeerInfo), String> {
    let stream = acceptor
        .accept(tcp)
        .await
        .map_err(|err| format!("TLS handshake failed: {err}"))?;
    let der = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("no client certificate")?;
    let cert = PeerCert::from_der(der).map_err(|e| e.to_string())?;
    Ok((stream, PeerInfo { remote, cert }))
}
