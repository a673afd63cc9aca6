//! The socket under a worker connection's WebSocket, counting what is read from it.
//!
//! Why here: bytes of a message that is not complete yet live in the WebSocket library's
//! buffers, out of our sight. Counting them as they come off the socket (and settling the
//! count when a whole message comes out, see [`Share::settle_inbound`]) charges a fragmented
//! message that never ends to the connection that sends it. The wrapper is also the
//! connection's kill switch: once the budget dooms the connection, reads fail at once, so
//! its session ends and cleans up exactly as for any disconnect.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

use super::share::Share;

/// A stream whose reads are charged to a [`Share`].
#[derive(Debug)]
pub struct Metered<S> {
    inner: S,
    share: Share,
}

impl<S> Metered<S> {
    /// Wraps `inner`; what it reads is charged to `share`.
    pub fn new(inner: S, share: Share) -> Self {
        Metered { inner, share }
    }

    /// The connection's account.
    pub fn share(&self) -> &Share {
        &self.share
    }
}

fn aborted(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason)
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(eviction) = this.share.poll_doomed(cx) {
            return Poll::Ready(Err(aborted(eviction.reason)));
        }
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        let read = (buf.filled().len() - before) as u64;
        if read > 0 && !this.share.charge_inbound(read) {
            let reason = this.share.eviction().map(|e| e.reason).unwrap_or_default();
            return Poll::Ready(Err(aborted(reason)));
        }
        Poll::Ready(result)
    }
}

crate::write_through::write_through!(Metered);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Budget;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_are_charged_until_settled() {
        let budget = Budget::new(1, 1 << 20);
        let (mut client, server) = tokio::io::duplex(1024);
        let mut metered = Metered::new(server, budget.open("127.0.0.1:1".parse().unwrap()));
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 16];
        let n = metered.read(&mut buf).await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(budget.used(), 5);
        metered.share().settle_inbound();
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn a_doomed_connection_stops_reading_at_once() {
        let budget = Budget::new(1, 1 << 20);
        let (_client, server) = tokio::io::duplex(1024);
        let mut metered = Metered::new(server, budget.open("127.0.0.1:1".parse().unwrap()));
        let share = metered.share().clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            metered.read(&mut buf).await
        });
        tokio::task::yield_now().await;
        share.doom(1008, "test");
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }

    #[tokio::test]
    async fn a_read_over_the_share_fails() {
        let budget = Budget::new(1, 4);
        let (mut client, server) = tokio::io::duplex(1024);
        let mut metered = Metered::new(server, budget.open("127.0.0.1:1".parse().unwrap()));
        client.write_all(b"too many bytes").await.unwrap();
        let mut buf = [0u8; 16];
        assert!(metered.read(&mut buf).await.is_err());
        assert_eq!(metered.share().eviction().map(|e| e.code), Some(1008));
        assert_eq!(budget.used(), 0);
    }
}
