//! One channel: the items between its two ends, bounded in messages and bytes, and the state
//! of each end.
//!
//! Why: the writer may run ahead of the reader (or finish before the reader connects), so the
//! channel holds what was written until it is read. It holds at most `capacity` items and
//! `byte_cap` bytes (one item larger than the cap still fits into an empty channel); a writer
//! that finds it full waits, and the caller waiting stops reading the writer's socket. Every
//! byte held is charged to the writer's [`Share`] of the node's client memory budget.
//!
//! An item the reader took counts until the reader says it was sent ([`Channel::delivered`]):
//! the bytes on their way to a slow reader's socket are still in this node's memory, so the
//! channel's bytes, queued and being sent, never exceed the cap.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::id::{AccessKey, ChannelId};
use crate::budget::Share;

/// One relayed frame; its kind and boundaries survive the trip. A text frame keeps the
/// proof that it is UTF-8 (checked once, where it entered the node), so it is never checked
/// again on its way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A text frame (an SDK "message").
    Text(Utf8Bytes),
    /// A binary frame (a data chunk).
    Binary(Bytes),
}

impl Item {
    /// The payload's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Item::Text(text) => text.len(),
            Item::Binary(data) => data.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The writer sent a Close: the reader gets everything, then Close 1000.
    Clean,
    /// The writer vanished (socket error, its process or node died), or the channel was
    /// swept: the reader gets Close 1011, never a clean end.
    Broken,
}

/// Which end of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Read,
    Write,
}

impl Direction {
    /// The `dir` query value and the ref's `direction`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Read => "read",
            Direction::Write => "write",
        }
    }

    /// Reads a `dir` value; anything else is `None`.
    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "read" => Some(Direction::Read),
            "write" => Some(Direction::Write),
            _ => None,
        }
    }
}

/// The state of one end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndState {
    Waiting,
    Connected,
    Finished,
}

/// Why a writer may not push any more.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("the channel is gone (its reader left, or it was swept)")]
    Gone,
    #[error("the writer is over its share of the node's client memory budget")]
    OverBudget,
}

/// What a reader gets next.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped {
    Item(Item),
    End(End),
}

struct State {
    items: VecDeque<Item>,
    /// Bytes held: the queued items and those taken by the reader and not yet delivered.
    bytes: u64,
    /// Of `bytes`, those taken by the reader and not yet delivered.
    sending: u64,
    writer: EndState,
    reader: EndState,
    /// How the writer finished, once it did.
    end: Option<End>,
    /// Set when the channel is torn down under its ends (swept, node going away).
    abandoned: bool,
    /// The account the buffered bytes are charged to: the writer's.
    charged_to: Option<Share>,
}

/// One channel living on this node.
pub struct Channel {
    pub id: ChannelId,
    key: AccessKey,
    capacity: usize,
    byte_cap: u64,
    pub created: Instant,
    state: Mutex<State>,
    /// Wakes the writer when room appears or the channel goes away.
    space: Notify,
    /// Wakes the reader when an item or the end arrives.
    data: Notify,
    /// Cancelled once nobody will read any more (the reader left, or the channel was torn
    /// down): a waiting writer stops.
    gone: CancellationToken,
}

impl Channel {
    /// An empty channel holding at most `capacity` items and `byte_cap` bytes.
    pub fn new(id: ChannelId, key: AccessKey, capacity: usize, byte_cap: u64) -> Channel {
        Channel {
            id,
            key,
            capacity: capacity.max(1),
            byte_cap,
            created: Instant::now(),
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                sending: 0,
                writer: EndState::Waiting,
                reader: EndState::Waiting,
                end: None,
                abandoned: false,
                charged_to: None,
            }),
            space: Notify::new(),
            data: Notify::new(),
            gone: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The access key, for the refs.
    pub fn key(&self) -> &AccessKey {
        &self.key
    }

    /// Whether `key` opens this channel (constant time).
    pub fn opens_with(&self, key: &str) -> bool {
        self.key.matches(key)
    }

    /// Takes an end; false when it is already taken (the caller closes the new socket). The
    /// writer's buffered bytes are charged to `share`.
    pub fn claim(&self, direction: Direction, share: Option<Share>) -> bool {
        let mut state = self.lock();
        if state.abandoned {
            return false;
        }
        let end = match direction {
            Direction::Read => &mut state.reader,
            Direction::Write => &mut state.writer,
        };
        if *end != EndState::Waiting {
            return false;
        }
        *end = EndState::Connected;
        if direction == Direction::Write {
            state.charged_to = share;
        }
        true
    }

    /// Queues `item`, waiting while the channel is full.
    pub async fn push(&self, item: Item) -> Result<(), PushError> {
        let len = item.len() as u64;
        let mut item = Some(item);
        loop {
            {
                let mut state = self.lock();
                if state.abandoned || state.reader == EndState::Finished {
                    return Err(PushError::Gone);
                }
                // One item larger than the cap fits when nothing else is held.
                let fits = (state.items.is_empty() && state.bytes == 0)
                    || (state.items.len() < self.capacity && state.bytes + len <= self.byte_cap);
                if fits {
                    if let Some(share) = &state.charged_to {
                        if !share.charge(len) {
                            return Err(PushError::OverBudget);
                        }
                    }
                    state.bytes += len;
                    if let Some(item) = item.take() {
                        state.items.push_back(item);
                    }
                    drop(state);
                    self.data.notify_one();
                    return Ok(());
                }
            }
            self.space.notified().await;
        }
    }

    /// The writer is done: cleanly (Close) or not.
    pub fn finish_writer(&self, end: End) {
        {
            let mut state = self.lock();
            if state.writer == EndState::Finished {
                return;
            }
            state.writer = EndState::Finished;
            state.end = Some(end);
        }
        self.data.notify_one();
    }

    /// The next item, waiting for one; then the end once the writer finished.
    pub async fn pop(&self) -> Popped {
        loop {
            if let Some(popped) = self.try_pop() {
                return popped;
            }
            self.data.notified().await;
        }
    }

    /// The next item or the end if there is one now; `None` when the reader would wait.
    /// The item's bytes stay counted until [`Channel::delivered`].
    pub fn try_pop(&self) -> Option<Popped> {
        self.try_pop_within(usize::MAX)
    }

    /// Like [`Channel::try_pop`], but an item larger than `room` bytes stays queued (`None`);
    /// the end is returned whatever `room` is.
    pub fn try_pop_within(&self, room: usize) -> Option<Popped> {
        let mut state = self.lock();
        if let Some(next) = state.items.front() {
            let len = next.len();
            if len > room {
                return None;
            }
            state.sending += len as u64;
            let item = state.items.pop_front().map(Popped::Item);
            drop(state);
            // A message's room is free at once; its bytes once delivered.
            self.space.notify_one();
            return item;
        }
        if state.abandoned {
            return Some(Popped::End(End::Broken));
        }
        state.end.map(Popped::End)
    }

    /// The reader's socket took `bytes` of the items it popped: they no longer count, and the
    /// writer may fill their room.
    pub fn delivered(&self, bytes: usize) {
        {
            let mut state = self.lock();
            // Nothing to give back after the channel was abandoned (it gave everything back).
            let len = (bytes as u64).min(state.sending);
            state.sending -= len;
            state.bytes -= len;
            if let Some(share) = &state.charged_to {
                share.release(len);
            }
        }
        self.space.notify_one();
    }

    /// The reader is gone (it finished, or left early): the writer can push no more.
    pub fn finish_reader(&self) {
        self.lock().reader = EndState::Finished;
        self.gone.cancel();
        self.space.notify_one();
    }

    /// Tears the channel down under whoever is connected: the writer gets `Gone`, the reader
    /// a broken end. Gives the buffered bytes back.
    pub fn abandon(&self) {
        {
            let mut state = self.lock();
            state.abandoned = true;
            let held = state.bytes;
            state.items.clear();
            state.bytes = 0;
            state.sending = 0;
            if let Some(share) = state.charged_to.take() {
                share.release(held);
            }
        }
        self.gone.cancel();
        self.space.notify_one();
        self.data.notify_one();
    }

    /// Resolves once nobody will read any more.
    pub async fn gone(&self) {
        self.gone.cancelled().await
    }

    /// Whether an end has not connected yet (the sweep removes such channels when old).
    pub fn has_unconnected_end(&self) -> bool {
        let state = self.lock();
        state.writer == EndState::Waiting || state.reader == EndState::Waiting
    }

    /// Items queued and bytes held now (queued, and taken by the reader but not delivered).
    pub fn held(&self) -> (usize, u64) {
        let state = self.lock();
        (state.items.len(), state.bytes)
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let state = self.lock();
        if let Some(share) = &state.charged_to {
            share.release(state.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn channel(capacity: usize, byte_cap: u64) -> Channel {
        Channel::new(ChannelId::new(1), AccessKey::new(), capacity, byte_cap)
    }

    fn binary(n: usize) -> Item {
        Item::Binary(Bytes::from(vec![0u8; n]))
    }

    #[tokio::test]
    async fn items_come_out_in_order_then_the_end() {
        let ch = channel(8, 1 << 20);
        ch.push(Item::Text(Utf8Bytes::from_static("a")))
            .await
            .unwrap();
        ch.push(binary(3)).await.unwrap();
        ch.finish_writer(End::Clean);
        assert_eq!(
            ch.pop().await,
            Popped::Item(Item::Text(Utf8Bytes::from_static("a")))
        );
        assert_eq!(ch.pop().await, Popped::Item(binary(3)));
        assert_eq!(ch.pop().await, Popped::End(End::Clean));
    }

    /// Bytes a reader took count until they are delivered, so a batch on its way to a slow
    /// socket and a channel filled again behind it never hold more than the cap together.
    #[tokio::test]
    async fn bytes_being_sent_count_until_delivered_and_never_exceed_the_cap() {
        let budget = crate::budget::Budget::new(1, 1 << 30);
        let share = budget.open(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        let ch = channel(64, 4 * 64);
        assert!(ch.claim(Direction::Write, Some(share.clone())));
        for _ in 0..4 {
            ch.push(binary(64)).await.unwrap();
        }
        let mut taken = 0;
        while let Some(Popped::Item(item)) = ch.try_pop() {
            taken += item.len();
        }
        assert_eq!(taken, 4 * 64);
        assert_eq!(ch.held(), (0, 4 * 64), "the taken batch still counts");
        assert_eq!(share.held(), 4 * 64, "and stays charged to the writer");
        let mut refill = std::pin::pin!(ch.push(binary(64)));
        assert!(
            futures_util::poll!(refill.as_mut()).is_pending(),
            "the writer waits while the batch is sent"
        );
        ch.delivered(taken);
        refill.await.unwrap();
        assert_eq!(
            ch.held(),
            (1, 64),
            "the waiting frame went in once the batch was sent"
        );
        assert_eq!(share.held(), 64);
    }

    #[tokio::test]
    async fn an_item_larger_than_the_room_stays_queued() {
        let ch = channel(8, 1 << 20);
        ch.push(binary(10)).await.unwrap();
        assert_eq!(ch.try_pop_within(9), None);
        assert_eq!(ch.try_pop_within(10), Some(Popped::Item(binary(10))));
        ch.finish_writer(End::Clean);
        assert_eq!(ch.try_pop_within(0), Some(Popped::End(End::Clean)));
    }

    #[tokio::test]
    async fn a_full_channel_holds_the_writer_back() {
        let ch = channel(2, 1 << 20);
        ch.push(binary(1)).await.unwrap();
        ch.push(binary(1)).await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), ch.push(binary(1))).await;
        assert!(third.is_err(), "the third item waits for room");
        ch.pop().await;
        ch.push(binary(1)).await.unwrap();
    }

    #[tokio::test]
    async fn the_byte_cap_holds_the_writer_back_but_one_big_item_fits() {
        let ch = channel(64, 10);
        ch.push(binary(100)).await.unwrap();
        let next = tokio::time::timeout(Duration::from_millis(50), ch.push(binary(1))).await;
        assert!(next.is_err());
        assert_eq!(ch.held(), (1, 100));
    }

    #[tokio::test]
    async fn a_gone_reader_stops_the_writer() {
        let ch = channel(1, 1 << 20);
        ch.push(binary(1)).await.unwrap();
        ch.finish_reader();
        assert_eq!(ch.push(binary(1)).await, Err(PushError::Gone));
    }

    #[tokio::test]
    async fn an_abandoned_channel_ends_broken() {
        let ch = channel(4, 1 << 20);
        ch.push(binary(1)).await.unwrap();
        ch.abandon();
        assert_eq!(ch.pop().await, Popped::End(End::Broken));
        assert_eq!(ch.held(), (0, 0));
    }

    #[test]
    fn an_end_is_taken_once() {
        let ch = channel(4, 1 << 20);
        assert!(ch.claim(Direction::Write, None));
        assert!(!ch.claim(Direction::Write, None));
        assert!(ch.claim(Direction::Read, None));
    }
}
