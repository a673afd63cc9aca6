//! Fair reading: each worker connection reads at most [`TURN_BYTES`] before it lets the
//! other tasks of the runtime run.
//!
//! Why: a client that pushes bytes as fast as loopback allows keeps its socket readable,
//! and the WebSocket library reads until a frame is whole (16 MiB at most). Tokio's own
//! cooperative budget lets one task make 128 reads per turn, about 2 MiB here, so a few
//! such connections made every other connection wait a turn of tens of milliseconds each.
//! Giving up the turn after a fixed number of bytes makes every connection's turn short
//! and equal: the flood still gets its share of the node's reading, the canary's ping
//! never waits behind megabytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes one connection reads per turn; small next to a runtime thread's time slice
/// (tens of microseconds of work), large next to any ordinary frame.
pub const TURN_BYTES: usize = 64 * 1024;

/// A stream that yields its task's turn after every [`TURN_BYTES`] read.
#[derive(Debug)]
pub struct ReadTurn<S> {
    inner: S,
    /// Bytes read since the task last gave up its turn (here, or on an empty socket).
    read_this_turn: usize,
}

impl<S> ReadTurn<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        ReadTurn {
            inner,
            read_this_turn: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadTurn<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_this_turn >= TURN_BYTES {
            // Wake ourselves and return: the runtime puts the task at the back of its
            // queue, so every other ready task runs before this one reads again.
            this.read_this_turn = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let Poll::Ready(result) = Pin::new(&mut this.inner).poll_read(cx, buf) else {
            // The socket is empty: the task gives up its turn anyway, so the next one is new.
            this.read_this_turn = 0;
            return Poll::Pending;
        };
        this.read_this_turn += buf.filled().len() - before;
        Poll::Ready(result)
    }
}

crate::write_through::write_through!(ReadTurn);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_long_read_gives_up_its_turn_and_loses_no_byte() {
        let (mut client, server) = tokio::io::duplex(4 * TURN_BYTES);
        let sent: Vec<u8> = (0..3 * TURN_BYTES).map(|i| i as u8).collect();
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut reader = ReadTurn::new(server);
        let mut buf = vec![0u8; TURN_BYTES];
        // The first turn reads a whole turn's worth; the next poll yields once.
        let n = reader.read(&mut buf).await.unwrap();
        assert_eq!(n, TURN_BYTES);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut one = [0u8; 1];
        let mut one = ReadBuf::new(&mut one);
        assert!(Pin::new(&mut reader)
            .poll_read(&mut cx, &mut one)
            .is_pending());
        let mut received = buf[..n].to_vec();
        reader.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, sent);
    }
}
