//! The channels living on this node, and the sweep of those whose ends never connected.
//!
//! Why: a channel is created by one call and used by two sockets that may never come; the
//! table bounds how many exist at once, node-wide and per creating connection (so one client
//! cannot take every channel from the others), and removes a channel as soon as it is
//! finished or abandoned, so nothing leaks. A channel counts against its creator's share
//! until it is removed, also after the creator's connection closed (it was handed on).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::buffer::Channel;
use super::id::{AccessKey, ChannelId};
use crate::ids::{NodeId, WorkerId};

/// The largest `buffer_size` a channel may ask for, and the default.
pub const MAX_BUFFER_ITEMS: usize = 1024;
pub const DEFAULT_BUFFER_ITEMS: usize = 64;

/// The settings a table works with.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes one channel may hold.
    pub buffer_bytes: u64,
    /// How long an end may stay unconnected before the channel is swept.
    pub unconnected_timeout: Duration,
    /// Channels this node holds at once.
    pub max_channels: usize,
    /// Channels created by one connection held at once.
    pub max_per_connection: usize,
    /// How long a send to a reader may make no progress before the reader is cut off.
    pub reader_stall: Duration,
}

/// Why a channel could not be created.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateError {
    #[error("this node holds its maximum of {0} channels")]
    Full(usize),
    #[error("this connection holds its maximum of {0} open channels; finish or drop some first")]
    ConnectionFull(usize),
    #[error("this node is draining and creates no channels")]
    Draining,
}

/// The channels whose home is this node.
pub struct Table {
    node: NodeId,
    limits: Limits,
    held: Mutex<Held>,
}

/// The channels, and how many each creating connection holds.
#[derive(Default)]
struct Held {
    channels: HashMap<ChannelId, Entry>,
    by_creator: HashMap<WorkerId, usize>,
}

/// One channel and the connection that created it (none for a call from no connection).
struct Entry {
    channel: Arc<Channel>,
    creator: Option<WorkerId>,
}

impl Held {
    /// Forgets `id`, giving its creator's share back.
    fn remove(&mut self, id: &ChannelId) -> Option<Arc<Channel>> {
        let held = self.channels.remove(id)?;
        if let Some(creator) = held.creator {
            if let Some(count) = self.by_creator.get_mut(&creator) {
                *count -= 1;
                if *count == 0 {
                    self.by_creator.remove(&creator);
                }
            }
        }
        Some(held.channel)
    }
}

impl Table {
    /// An empty table for node `node`.
    pub fn new(node: NodeId, limits: Limits) -> Table {
        Table {
            node,
            limits,
            held: Mutex::new(Held::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a channel holding `buffer_size` items (default 64, clamped to 1..=1024), counted
    /// against the share of `creator`, the connection that asked.
    pub fn create(
        &self,
        creator: Option<WorkerId>,
        buffer_size: Option<usize>,
    ) -> Result<Arc<Channel>, CreateError> {
        let capacity = buffer_size
            .unwrap_or(DEFAULT_BUFFER_ITEMS)
            .clamp(1, MAX_BUFFER_ITEMS);
        let channel = Arc::new(Channel::new(
            ChannelId::new(self.node),
            AccessKey::new(),
            capacity,
            self.limits.buffer_bytes,
        ));
        let mut held = self.lock();
        if held.channels.len() >= self.limits.max_channels {
            return Err(CreateError::Full(self.limits.max_channels));
        }
        if let Some(creator) = creator {
            let count = held.by_creator.entry(creator).or_default();
            if *count >= self.limits.max_per_connection {
                return Err(CreateError::ConnectionFull(self.limits.max_per_connection));
            }
            *count += 1;
        }
        let entry = Entry {
            channel: channel.clone(),
            creator,
        };
        held.channels.insert(channel.id, entry);
        Ok(channel)
    }

    /// How long a send to a reader may make no progress before the reader is cut off.
    pub fn reader_stall(&self) -> Duration {
        self.limits.reader_stall
    }

    /// Channels held now that `creator` created.
    pub fn created_by(&self, creator: WorkerId) -> usize {
        self.lock().by_creator.get(&creator).copied().unwrap_or(0)
    }

    /// The channel `id` when `key` opens it; `None` for an unknown id or a wrong key alike.
    pub fn open(&self, id: ChannelId, key: &str) -> Option<Arc<Channel>> {
        let channel = self.lock().channels.get(&id)?.channel.clone();
        channel.opens_with(key).then_some(channel)
    }

    /// Forgets a finished channel.
    pub fn remove(&self, id: ChannelId) {
        self.lock().remove(&id);
    }

    /// Channels held now.
    pub fn len(&self) -> usize {
        self.lock().channels.len()
    }

    /// Whether no channel is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes (and abandons) every channel with an end that has not connected within the
    /// timeout; returns how many.
    pub fn sweep(&self) -> usize {
        let timeout = self.limits.unconnected_timeout;
        let stale: Vec<Arc<Channel>> = {
            let mut held = self.lock();
            let stale: Vec<ChannelId> = held
                .channels
                .values()
                .map(|h| &h.channel)
                .filter(|c| c.created.elapsed() >= timeout && c.has_unconnected_end())
                .map(|c| c.id)
                .collect();
            stale.iter().filter_map(|id| held.remove(id)).collect()
        };
        for channel in &stale {
            channel.abandon();
        }
        stale.len()
    }

    /// Abandons every channel (the node is going away).
    pub fn abandon_all(&self) {
        let all: Vec<Arc<Channel>> = {
            let mut held = self.lock();
            held.by_creator.clear();
            held.channels.drain().map(|(_, h)| h.channel).collect()
        };
        for channel in all {
            channel.abandon();
        }
    }

    /// Sweeps until `stop`, checking a few times per timeout (at most once a minute).
    pub async fn sweep_until(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.limits.unconnected_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let swept = self.sweep();
            if swept > 0 {
                debug!(
                    node = self.node,
                    swept, "swept channels whose ends never connected"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::buffer::Direction;

    fn table(max_channels: usize, timeout: Duration) -> Table {
        Table::new(
            3,
            Limits {
                buffer_bytes: 1 << 20,
                unconnected_timeout: timeout,
                max_channels,
                max_per_connection: 2,
                reader_stall: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn a_channel_opens_only_with_its_key() {
        let table = table(10, Duration::from_secs(60));
        let channel = table.create(None, None).unwrap();
        assert_eq!(channel.id.home(), 3);
        assert!(table.open(channel.id, channel.key().as_str()).is_some());
        assert!(table.open(channel.id, "wrong").is_none());
        assert!(table
            .open(ChannelId::new(3), channel.key().as_str())
            .is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let table = table(2, Duration::from_secs(60));
        table.create(None, None).unwrap();
        table.create(None, Some(5000)).unwrap();
        assert_eq!(table.create(None, None).err(), Some(CreateError::Full(2)));
    }

    #[test]
    fn a_connection_at_its_share_is_refused_and_others_still_create() {
        let table = table(10, Duration::ZERO);
        let (greedy, other) = (WorkerId::default(), WorkerId::default());
        let first = table.create(Some(greedy), None).unwrap();
        table.create(Some(greedy), None).unwrap();
        assert_eq!(
            table.create(Some(greedy), None).err(),
            Some(CreateError::ConnectionFull(2))
        );
        table.create(Some(other), None).unwrap();
        // A finished channel gives its creator's share back; a swept one too.
        table.remove(first.id);
        assert_eq!(table.created_by(greedy), 1);
        table.create(Some(greedy), None).unwrap();
        assert_eq!(table.sweep(), 3);
        assert_eq!(table.created_by(greedy), 0);
    }

    #[test]
    fn channels_with_unconnected_ends_are_swept() {
        let table = table(10, Duration::ZERO);
        let connected = table.create(None, None).unwrap();
        assert!(connected.claim(Direction::Read, None));
        assert!(connected.claim(Direction::Write, None));
        table.create(None, None).unwrap();
        assert_eq!(table.sweep(), 1);
        assert_eq!(table.len(), 1);
    }
}
