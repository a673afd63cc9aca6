//! The narrow handle a node keeps on its managed-worker side: the local supervisor (set once
//! the worker port is bound, since the workers need its address) and a change counter the
//! placement loop and the node agent wait on instead of polling the registry.

use std::sync::OnceLock;

use tokio::sync::watch;

use super::supervisor::Supervisor;

/// This node's managed workers, as other modules (the `quorum worker logs` RPC, the drain)
/// reach them.
pub struct LocalManaged {
    supervisor: OnceLock<Supervisor>,
    changes: watch::Sender<u64>,
}

impl Default for LocalManaged {
    fn default() -> Self {
        Self {
            supervisor: OnceLock::new(),
            changes: watch::Sender::new(0),
        }
    }
}

impl LocalManaged {
    /// The supervisor running this node's managed workers; `None` until the node serves
    /// workers.
    pub fn supervisor(&self) -> Option<&Supervisor> {
        self.supervisor.get()
    }

    /// Installs the supervisor (once; a second call is ignored) and returns the one in use.
    pub(super) fn install(&self, supervisor: Supervisor) -> &Supervisor {
        self.supervisor.get_or_init(|| supervisor)
    }

    /// Called after each batch of applied registry changes.
    pub fn registry_changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Follows the registry changes (the value is only a counter).
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
