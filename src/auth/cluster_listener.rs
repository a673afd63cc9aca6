//! The cluster port's TLS handshake: a client certificate signed by the CA is required, and
//! each connection that finished it carries what its certificate says ([`PeerInfo`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use super::identity::PeerCert;

/// What the cluster service knows about the peer of a connection: set once at the handshake,
/// found in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// The verified client certificate's role and identity.
    pub cert: PeerCert,
}

/// A TLS connection whose peer presented a certificate signed by the cluster's CA.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Completes the TLS handshake of `tcp` and reads what its client certificate says. The
/// cluster port's door (`rpc::incoming`) runs it under its deadline and connection cap.
pub async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Result<PeerStream, String> {
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
    Ok(PeerStream {
        inner: stream,
        info: PeerInfo { remote, cert },
    })
}
