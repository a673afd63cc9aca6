//! How many channel ends this node serves through each home node at once.
//!
//! Why: every cross-node end has a connection of its own to its home's cluster port, and that
//! port's connection cap is shared with the peers' own connections (Raft, invocations). Without
//! a cap here, one client opening many ends through this node could take the whole cap and
//! keep the peers out. An end that finds no free slot is refused with 503 before the upgrade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection slots toward each home node.
pub struct PeerSlots {
    per_peer: usize,
    peers: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl PeerSlots {
    /// At most `per_peer` ends at once through each home node.
    pub fn new(per_peer: usize) -> Self {
        Self {
            per_peer,
            peers: Mutex::default(),
        }
    }

    /// A slot toward the home node at `addr`, held for the end's life; `None` when all are
    /// taken.
    pub fn take(&self, addr: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers
                .entry(addr.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_peer)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_home_node_has_its_own_slots_and_a_freed_slot_is_taken_again() {
        let slots = PeerSlots::new(2);
        let first = slots.take("a:1").expect("a free slot");
        let _second = slots.take("a:1").expect("a free slot");
        assert!(slots.take("a:1").is_none(), "both slots toward a are taken");
        assert!(slots.take("b:1").is_some(), "b has slots of its own");
        drop(first);
        assert!(slots.take("a:1").is_some(), "a freed slot is free again");
    }
}
