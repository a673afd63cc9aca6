//! Reading an upgrade request's head before the WebSocket library does.
//!
//! Why: deciding a channel socket may need an answer from another node (an `.await`), and
//! the WebSocket library's request callback is synchronous. So the gateway reads the head
//! itself (bounded in size, under the handshake deadline), decides, then hands the bytes it
//! read, followed by the rest of the socket, to the library as if nothing had been read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_tungstenite::tungstenite::http::{Request, Uri};

/// The largest request head read; a longer one is refused.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// A socket whose first bytes were already read: they are read again first.
pub struct Rewind<S> {
    read: Vec<u8>,
    at: usize,
    inner: S,
}

/// Reads the request head off `stream`: the request (for routing and the token check) and
/// the stream rewound to its first byte.
pub async fn read<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(Request<()>, Rewind<S>)> {
    let mut read = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&chunk[..n]);
        if let Some(request) = parse(&read)? {
            return Ok((
                request,
                Rewind {
                    read,
                    at: 0,
                    inner: stream,
                },
            ));
        }
        if read.len() > MAX_HEAD_BYTES {
            return Err(invalid("request head too large"));
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The request, once `bytes` hold a whole head.
fn parse(bytes: &[u8]) -> io::Result<Option<Request<()>>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            let uri: Uri = parsed
                .path
                .unwrap_or("/")
                .parse()
                .map_err(|_| invalid("bad request target"))?;
            let mut request = Request::builder()
                .method(parsed.method.unwrap_or("GET"))
                .uri(uri);
            for header in parsed.headers.iter() {
                request = request.header(header.name, header.value);
            }
            request
                .body(())
                .map(Some)
                .map_err(|_| invalid("bad header"))
        }
        Err(err) => Err(invalid(&err.to_string())),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let n = (this.read.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

crate::write_through::write_through!(Rewind);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_head_is_read_again_after_routing() {
        let (mut client, server) = tokio::io::duplex(4096);
        let head = b"GET /ws/channels/x?key=k&dir=read HTTP/1.1\r\nHost: a\r\n\r\nrest";
        client.write_all(head).await.unwrap();
        let (request, mut rewound) = read(server).await.unwrap();
        assert_eq!(request.uri().path(), "/ws/channels/x");
        assert_eq!(request.uri().query(), Some("key=k&dir=read"));
        let mut again = vec![0u8; head.len()];
        rewound.read_exact(&mut again).await.unwrap();
        assert_eq!(&again[..], &head[..]);
    }

    #[tokio::test]
    async fn an_endless_head_is_refused() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        client.write_all(&head).await.unwrap();
        assert!(read(server).await.is_err());
    }
}
