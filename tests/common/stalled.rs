//! Clients that open a port and never finish what they started (a request head, an HTTP/2
//! preface, a TLS handshake), and the check that the node closed them.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens `n` connections to `addr`, each sending `partial` and nothing more.
pub async fn open_stalled(addr: &str, n: usize, partial: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        if !partial.is_empty() {
            // Over a cap the node may already have closed it; that is what is tested later.
            let _ = stream.write_all(partial).await;
        }
        streams.push(stream);
    }
    streams
}

/// Waits until every stream is closed by the node, or the deadline; how many were closed.
pub async fn count_closed_within(streams: &mut [TcpStream], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut closed = 0;
    for stream in streams.iter_mut() {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                // An error answer (408, a GOAWAY) before the close.
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    closed
}
