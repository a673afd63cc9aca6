//! What `/healthz` and `/readyz` answer: one function each, so a new condition (draining,
//! say) is added in one place and every probe sees it.

use crate::node::Node;

/// Alive: the process answers and Raft has not stopped on a fatal error. A node that
/// fails this should be restarted.
pub fn liveness(node: &Node) -> Result<(), &'static str> {
    match node.consensus.raft().metrics().borrow().running_state {
        Ok(()) => Ok(()),
        Err(_) => Err("raft stopped on a fatal error"),
    }
}

/// Ready: alive, serving workers, not fenced, and a member of a cluster that has a
/// leader. A node that fails this should get no new workers; the reason says why.
pub fn readiness(node: &Node) -> Result<(), &'static str> {
    liveness(node)?;
    if node.shutdown.is_cancelled() {
        return Err("shutting down");
    }
    if !node.is_serving() {
        return Err("not serving workers yet");
    }
    if node.is_draining() {
        return Err("draining for a shutdown");
    }
    if node.is_fenced() {
        return Err("fenced: no contact with a quorum");
    }
    let raft = node.consensus.raft().metrics();
    let raft = raft.borrow();
    if raft
        .membership_config
        .membership()
        .get_node(&node.id)
        .is_none()
    {
        return Err("not a member of the cluster");
    }
    if raft.current_leader.is_none() {
        return Err("the cluster has no leader");
    }
    Ok(())
}
