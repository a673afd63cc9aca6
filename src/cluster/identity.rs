//! The cluster id: a random id made when a cluster is founded, kept in the data directory of
//! every member, and carried on every Raft RPC.
//!
//! It keeps clusters apart: a node refuses Raft RPCs from any other cluster, so a node whose
//! data was wiped (and which may have founded a cluster of its own at the same address) can
//! never reach the Raft of its old cluster, whose leader would otherwise stop on seeing a
//! follower's log go backwards. A node with no id yet (it is joining) refuses every Raft RPC
//! until the leader has admitted it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Name of the file in the data directory that holds the id.
const FILE: &str = "cluster_id";

/// This node's cluster id, shared by the Raft network (which stamps it on requests) and the
/// service (which checks it). Cheap to clone; clones share the value.
#[derive(Clone, Debug, Default)]
pub struct ClusterId {
    value: Arc<RwLock<Option<String>>>,
}

/// Why the cluster id could not be read or kept.
#[derive(Debug, thiserror::Error)]
#[error("cluster id file {path}: {source}")]
pub struct ClusterIdError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl ClusterId {
    /// The id stored in `data_dir`, if any.
    pub fn load(data_dir: &Path) -> Result<Self, ClusterIdError> {
        let path = data_dir.join(FILE);
        let value = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(ClusterIdError { path, source }),
        };
        Ok(Self {
            value: Arc::new(RwLock::new(value)),
        })
    }

    /// The id, or `None` while this node belongs to no cluster yet.
    pub fn get(&self) -> Option<String> {
        self.value.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a request stamped `id` comes from this node's cluster.
    pub fn accepts(&self, id: &str) -> bool {
        self.get().is_some_and(|mine| !id.is_empty() && mine == id)
    }

    /// Makes `id` this node's cluster id, written to `data_dir` first so it survives restarts.
    pub fn adopt(&self, data_dir: &Path, id: &str) -> Result<(), ClusterIdError> {
        let path = data_dir.join(FILE);
        std::fs::write(&path, id).map_err(|source| ClusterIdError { path, source })?;
        *self.value.write().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
        Ok(())
    }

    /// A fresh id for a newly founded cluster.
    pub fn generate() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_id_is_kept_and_only_it_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let id = ClusterId::load(dir.path()).unwrap();
        assert_eq!(id.get(), None);
        assert!(!id.accepts(""), "a node with no id accepts nothing");
        id.adopt(dir.path(), "abc").unwrap();
        assert!(id.accepts("abc"));
        assert!(!id.accepts("other"));
        assert_eq!(
            ClusterId::load(dir.path()).unwrap().get().as_deref(),
            Some("abc")
        );
    }
}
