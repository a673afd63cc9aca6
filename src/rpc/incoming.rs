//! The cluster port's door: accepts TCP up to a cap on concurrent connections, and hands
//! tonic only connections that, within one deadline, finished their handshake (TLS, when the
//! port has certificates) and sent the whole HTTP/2 client preface. A flood of half-open or
//! silent connections therefore costs at most the cap in file descriptors, each for at most
//! the deadline, and never reaches tonic (which has no such timeout of its own).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;
use tracing::{debug, warn};

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Admitted connections waiting for tonic to take them.
const READY_QUEUE: usize = 64;

/// How often the count of connections refused at the cap is logged, at most.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The bounds of the door (`--cluster-handshake-timeout-ms`, `--cluster-max-connections`).
#[derive(Clone, Copy, Debug)]
pub struct DoorLimits {
    /// From accept to the last byte of the preface, handshake included.
    pub handshake_timeout: Duration,
    /// Connections held at once, from accept until tonic drops them.
    pub max_connections: usize,
}

/// A connection that passed the door, with what its handshake learned about the peer (`I`,
/// found in every request's extensions). It replays the preface it was checked with, and
/// holds its place under the cap until tonic drops it.
pub struct Admitted<S, I> {
    inner: S,
    info: I,
    preface: &'static [u8],
    _place: OwnedSemaphorePermit,
}

impl<S, I: Clone + Send + Sync + 'static> Connected for Admitted<S, I> {
    type ConnectInfo = I;

    fn connect_info(&self) -> I {
        self.info.clone()
    }
}

impl<S: AsyncRead + Unpin, I: Unpin> AsyncRead for Admitted<S, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.preface.is_empty() {
            let n = self.preface.len().min(buf.remaining());
            buf.put_slice(&self.preface[..n]);
            self.preface = &self.preface[n..];
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, I: Unpin> AsyncWrite for Admitted<S, I> {
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

/// The stream of admitted connections tonic serves. `handshake` turns a TCP connection into
/// the stream tonic reads and what is known of its peer (the TLS handshake and the client
/// certificate, or nothing in plaintext); it runs inside the deadline. Accepting stops when
/// the stream is dropped (tonic drops it at shutdown).
pub fn incoming<S, I, H, F>(
    listener: TcpListener,
    limits: DoorLimits,
    node: u64,
    handshake: H,
) -> impl Stream<Item = Result<Admitted<S, I>, io::Error>>
where
    S: AsyncRead + Unpin + Send + 'static,
    I: Send + 'static,
    H: Fn(TcpStream, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(S, I), String>> + Send + 'static,
{
    let (ready, rx) = mpsc::channel(READY_QUEUE);
    tokio::spawn(accept_loop(listener, limits, node, handshake, ready));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|stream| (Ok(stream), rx))
    })
}

async fn accept_loop<S, I, H, F>(
    listener: TcpListener,
    limits: DoorLimits,
    node: u64,
    handshake: H,
    ready: mpsc::Sender<Admitted<S, I>>,
) where
    S: AsyncRead + Unpin + Send + 'static,
    I: Send + 'static,
    H: Fn(TcpStream, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(S, I), String>> + Send + 'static,
{
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let mut refusals = RefusalLog::new("cluster port");
    loop {
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
        let Ok(place) = places.clone().try_acquire_owned() else {
            // Over the cap: closed at once, so a flood never holds more than the cap.
            drop(tcp);
            refusals.note(node, limits.max_connections);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let ready = ready.clone();
        let handshake = handshake(tcp, remote);
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake_timeout, admit(handshake)).await {
                Ok(Ok((inner, info))) => {
                    let admitted = Admitted {
                        inner,
                        info,
                        preface: PREFACE,
                        _place: place,
                    };
                    let _ = ready.send(admitted).await;
                }
                Ok(Err(reason)) => debug!(node, %remote, %reason, "cluster connection refused"),
                Err(_) => {
                    debug!(node, %remote, "cluster connection dropped: no HTTP/2 preface in time")
                }
            }
        });
    }
}

/// Runs the handshake, then reads and checks the HTTP/2 preface.
async fn admit<S, I, F>(handshake: F) -> Result<(S, I), String>
where
    S: AsyncRead + Unpin,
    F: Future<Output = Result<(S, I), String>>,
{
    let (mut stream, info) = handshake.await?;
    let mut preface = [0u8; PREFACE.len()];
    stream
        .read_exact(&mut preface)
        .await
        .map_err(|err| format!("connection ended before the HTTP/2 preface: {err}"))?;
    if &preface != PREFACE {
        return Err("not an HTTP/2 client preface".to_string());
    }
    Ok((stream, info))
}

/// Counts connections a port refused at its cap and logs one line per interval with the
/// count, so a flood cannot fill the log.
pub(crate) struct RefusalLog {
    door: &'static str,
    count: u64,
    last_line: Option<Instant>,
}

impl RefusalLog {
    pub(crate) fn new(door: &'static str) -> Self {
        Self {
            door,
            count: 0,
            last_line: None,
        }
    }

    pub(crate) fn note(&mut self, node: u64, cap: usize) {
        self.count += 1;
        if self
            .last_line
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            warn!(
                node,
                door = self.door,
                refused = self.count,
                max_connections = cap,
                "connection cap reached: new connections closed"
            );
            self.count = 0;
            self.last_line = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admitted_stream_replays_the_preface_then_reads_on() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, PREFACE)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, b"rest")
            .await
            .unwrap();
        let (inner, info) = admit(async { Ok((server, "peer")) }).await.unwrap();
        let place = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let mut admitted = Admitted {
            inner,
            info,
            preface: PREFACE,
            _place: place,
        };
        let mut read = vec![0u8; PREFACE.len() + 4];
        admitted.read_exact(&mut read).await.unwrap();
        assert_eq!(&read[..PREFACE.len()], PREFACE);
        assert_eq!(&read[PREFACE.len()..], b"rest");
        assert_eq!(admitted.connect_info(), "peer");
    }

    #[tokio::test]
    async fn a_wrong_preface_is_refused() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &[b'x'; 24])
            .await
            .unwrap();
        assert!(admit(async { Ok((server, ())) }).await.is_err());
    }
}
