//! The cluster port's TLS listener: accepts TCP, completes the TLS handshake (a client
//! certificate signed by the CA is required) within a deadline, and hands tonic only
//! connections that finished it, each carrying what its certificate says ([`PeerInfo`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use super::cluster_tls::ClusterTls;
use super::identity::PeerCert;

/// A peer that has not finished its TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress at once; further connections wait in the kernel's backlog, so a
/// flood of half-open connections costs bounded memory and never more than this many tasks.
const MAX_HANDSHAKES: usize = 256;

/// Finished connections waiting for tonic to take them.
const READY_QUEUE: usize = 64;

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

/// The stream of authenticated connections tonic serves. Accepting stops when the stream is
/// dropped (tonic drops it at shutdown).
pub fn incoming(
    listener: TcpListener,
    tls: &ClusterTls,
    node: u64,
) -> impl Stream<Item = Result<PeerStream, io::Error>> {
    let acceptor = TlsAcceptor::from(tls.server.clone());
    let (ready, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept_loop(listener, acceptor, ready, node));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|stream| (Ok(stream), rx))
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<PeerStream>,
    node: u64,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(node, error = %err, "cluster port accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = ready.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match handshake(&acceptor, tcp, remote).await {
                Ok(stream) => {
                    let _ = ready.send(stream).await;
                }
                Err(reason) => debug!(node, %remote, %reason, "cluster connection refused"),
            }
        });
    }
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Result<PeerStream, String> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(format!("TLS handshake failed: {err}")),
        Err(_) => return Err("TLS handshake timed out".to_string()),
    };
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
