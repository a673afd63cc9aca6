//! The directory of worker connections held by this node: how to reach a session's
//! writer and how to end a session from outside (reattach, node shutdown).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

use crate::auth::grant::Grant;
use crate::budget::{Outbox, Weigh};
use crate::ids::WorkerId;

/// What a session's writer task sends on the socket.
#[derive(Debug)]
pub enum Outbound {
    /// One protocol message, already serialised.
    Text(String),
    /// A Close frame, after which the writer stops.
    Close { code: u16, reason: String },
}

impl Weigh for Outbound {
    fn weight(&self) -> usize {
        match self {
            Outbound::Text(text) => text.len(),
            Outbound::Close { reason, .. } => reason.len(),
        }
    }

    fn must_queue(&self) -> bool {
        matches!(self, Outbound::Close { .. })
    }
}

/// How other tasks reach one live session.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    /// The session's byte-bounded queue; pushing never waits.
    pub outbox: Outbox<Outbound>,
    /// Cancelling it ends the session and runs its disconnect cleanup.
    pub cancel: CancellationToken,
    /// What the connection's worker token allows (revocation finds its connections by it).
    pub grant: Arc<Grant>,
}

/// Live local sessions by worker id. Locks are held only to copy a handle out.
#[derive(Debug, Default)]
pub struct Connections {
    map: RwLock<HashMap<WorkerId, ConnectionHandle>>,
}

impl Connections {
    /// Records a session once it is live.
    pub fn insert(&self, worker: WorkerId, handle: ConnectionHandle) {
        self.write().insert(worker, handle);
    }

    /// Forgets a session that ended.
    pub fn remove(&self, worker: WorkerId) {
        self.write().remove(&worker);
    }

    /// The writer queue of a local session.
    pub fn outbox(&self, worker: WorkerId) -> Option<Outbox<Outbound>> {
        self.read().get(&worker).map(|h| h.outbox.clone())
    }

    /// The handle of a local session.
    pub fn get(&self, worker: WorkerId) -> Option<ConnectionHandle> {
        self.read().get(&worker).cloned()
    }

    /// Whether this node holds the worker's socket.
    pub fn is_local(&self, worker: WorkerId) -> bool {
        self.read().contains_key(&worker)
    }

    /// The workers connected to this node right now (for the live facts peers ask for).
    pub fn ids(&self) -> Vec<WorkerId> {
        self.read().keys().copied().collect()
    }

    /// Every live local session's handle (to end them all, e.g. when fencing).
    pub fn handles(&self) -> Vec<ConnectionHandle> {
        self.read().values().cloned().collect()
    }

    /// Number of live local sessions.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no worker is connected here.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Queues a frame for a local worker without waiting; false when it is not here, already
    /// closing, or its queue is full (a worker that does not read is disconnected soon).
    pub fn send(&self, worker: WorkerId, frame: Outbound) -> bool {
        match self.outbox(worker) {
            Some(outbox) => outbox.push(frame).is_ok(),
            None => false,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<WorkerId, ConnectionHandle>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<WorkerId, ConnectionHandle>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Wall-clock milliseconds since the Unix epoch: when a connection was made, as the
/// registry records it.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
