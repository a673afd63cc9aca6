//! Registration batching: consecutive registrations a connection has already sent are
//! committed as one `Command::Registrations`, so a worker registering 100,000 functions
//! costs about a hundred Raft round trips instead of 100,000.
//!
//! Order is kept: the session flushes the batch before it handles any frame that is not a
//! registration, so a worker that registers and then calls still finds its function.

use futures_util::{FutureExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::protocol::Incoming;
use crate::registry::Registration;

/// Most registrations in one command.
pub const MAX_BATCH_ITEMS: usize = 1_000;
/// Most frame bytes behind one command (the frames' sizes, a bound on the command's size).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// One read from the socket, as `StreamExt::next` yields it.
pub type Read = Option<Result<Message, WsError>>;

/// Takes `first` and the frames the socket already holds behind it, without waiting, up to
/// the batch bounds. A terminal read (end, error, close) ends the burst.
pub fn ready_after<S>(first: Read, stream: &mut S) -> Vec<Read>
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let mut bytes = frame_len(&first);
    let mut burst = vec![first];
    while burst.len() < MAX_BATCH_ITEMS && bytes < MAX_BATCH_BYTES && !is_terminal(burst.last()) {
        match stream.next().now_or_never() {
            Some(read) => {
                bytes += frame_len(&read);
                burst.push(read);
            }
            None => break,
        }
    }
    burst
}

fn frame_len(read: &Read) -> usize {
    match read {
        Some(Ok(message)) => message.len(),
        _ => 0,
    }
}

fn is_terminal(read: Option<&Read>) -> bool {
    matches!(
        read,
        Some(None | Some(Err(_)) | Some(Ok(Message::Close(_))))
    )
}

/// Whether a frame joins the batch; any other frame commits the batch before it is handled.
pub fn is_registration(message: &Incoming) -> bool {
    matches!(
        message,
        Incoming::RegisterFunction(_)
            | Incoming::UnregisterFunction(_)
            | Incoming::RegisterTriggerType(_)
            | Incoming::UnregisterTriggerType(_)
            | Incoming::RegisterTrigger(_)
            | Incoming::UnregisterTrigger(_)
            | Incoming::RegisterService(_)
    )
}

/// Registrations waiting to be committed together.
#[derive(Default)]
pub struct Batch {
    items: Vec<Registration>,
    bytes: usize,
    /// Size of the frame being handled: what its registration adds to `bytes`.
    frame_bytes: usize,
}

impl Batch {
    /// Records the size of the registration frame about to be handled.
    pub fn note_frame(&mut self, frame_bytes: usize) {
        self.frame_bytes = frame_bytes;
    }

    /// Adds a registration; true when the batch is full and must be committed before the
    /// next one.
    pub fn push(&mut self, item: Registration) -> bool {
        self.items.push(item);
        self.bytes += std::mem::take(&mut self.frame_bytes);
        self.items.len() >= MAX_BATCH_ITEMS || self.bytes >= MAX_BATCH_BYTES
    }

    /// The waiting registrations, in order; empties the batch.
    pub fn take(&mut self) -> Vec<Registration> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unregister(id: &str) -> Registration {
        Registration::UnregisterFunction { id: id.into() }
    }

    #[test]
    fn a_batch_is_full_at_its_item_bound() {
        let mut batch = Batch::default();
        for i in 0..MAX_BATCH_ITEMS - 1 {
            batch.note_frame(10);
            assert!(!batch.push(unregister(&i.to_string())));
        }
        assert!(batch.push(unregister("last")));
        assert_eq!(batch.take().len(), MAX_BATCH_ITEMS);
        assert!(batch.take().is_empty());
    }

    #[test]
    fn a_batch_is_full_at_its_byte_bound() {
        let mut batch = Batch::default();
        batch.note_frame(MAX_BATCH_BYTES - 1);
        assert!(!batch.push(unregister("a")));
        batch.note_frame(1);
        assert!(batch.push(unregister("b")));
    }

    #[test]
    fn a_burst_takes_only_ready_frames_and_stops_at_a_close() {
        let frames = vec![
            Ok(Message::text("b")),
            Ok(Message::Close(None)),
            Ok(Message::text("never")),
        ];
        let mut stream = futures_util::stream::iter(frames);
        let burst = ready_after(Some(Ok(Message::text("a"))), &mut stream);
        assert_eq!(burst.len(), 3);
        assert!(is_terminal(burst.last()));
    }
}
