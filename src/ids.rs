//! Identities shared by every module. A bare `String` or `u64` crossing a module
//! boundary invites mixing a worker id with an invocation id; these newtypes do not.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// The Raft node id of a quorum node (openraft works with the raw `u64`).
pub type NodeId = u64;

/// The namespace every unnamed thing falls back to.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One worker connection: fresh for every WebSocket, public (listed by discovery).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub Uuid);

impl WorkerId {
    /// A fresh random id for a new connection.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for WorkerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The id the engine puts on an `invokefunction` it sends to the function's owner.
/// Always engine-made, so no caller can collide with another caller's call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvocationId(pub Uuid);

impl InvocationId {
    /// A fresh random id for one routed call.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for InvocationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for InvocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A function is owned per (namespace, id): the same id may live in several namespaces.
///
/// Keys order by (id, namespace), the order `engine::functions::list` pages in, so the
/// registry's map of functions is itself the list's index: a page is a range scan, and
/// one id's namespaces sit side by side.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FunctionKey {
    pub namespace: String,
    pub id: String,
}

impl Ord for FunctionKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.id, &self.namespace).cmp(&(&other.id, &other.namespace))
    }
}

impl PartialOrd for FunctionKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl FunctionKey {
    /// Builds a key from anything string-like.
    pub fn new(namespace: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for FunctionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.id)
    }
}

/// A trigger type (provider) is keyed like a function: (namespace, type id).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TriggerTypeKey {
    pub namespace: String,
    pub id: String,
}

impl TriggerTypeKey {
    /// Builds a key from anything string-like.
    pub fn new(namespace: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for TriggerTypeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.id)
    }
}
