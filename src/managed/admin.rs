//! The operator side of managed workers on the cluster port: add, list, status, restart and
//! remove. Changes go through the node's normal commit path (a follower forwards them to the
//! leader), so `quorum worker` works through any member.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::info;

use super::logs::{LogSources, Placement};
use super::manifest::launch_plan;
use super::wire;
use crate::node::Node;
use crate::registry::{Command, SpecOrigin};
use crate::rpc::errors::ServiceError;
use crate::rpc::pb;

/// Records a managed worker's spec; the leader then places it. The same spec again changes
/// nothing; another spec under a taken name is refused by the registry.
pub async fn add(
    node: &Node,
    request: pb::AddManagedWorkerRequest,
) -> Result<pb::ManagedWorkerReply, ServiceError> {
    let spec = wire::spec_of(request).map_err(|reason| ServiceError::BadRequest {
        what: "managed worker",
        reason,
    })?;
    // The CLI checked the manifest already; a request from elsewhere is checked the same way.
    launch_plan(&spec).map_err(|e| ServiceError::BadRequest {
        what: "managed worker",
        reason: e.to_string(),
    })?;
    let name = spec.name.clone();
    let unchanged = node
        .registry()
        .managed_worker(&name)
        .is_some_and(|worker| worker.spec == spec);
    commit(
        node,
        Command::ManagedWorkerPut {
            spec,
            at_ms: now_ms(),
            origin: SpecOrigin::Cli,
        },
    )
    .await?;
    info!(node = node.id, worker = %name, unchanged, "managed worker spec recorded");
    Ok(pb::ManagedWorkerReply {
        message: if unchanged {
            format!("managed worker '{name}' already has this spec; nothing changed")
        } else {
            format!("managed worker '{name}' added; the leader places it on a node")
        },
    })
}

/// Every managed worker as this node's replica has it, by name.
pub fn list(node: &Node) -> pb::ListManagedWorkersReply {
    let registry = node.registry();
    let mut workers: Vec<pb::ManagedWorkerInfo> =
        registry.managed_workers().map(wire::info_of).collect();
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    pb::ListManagedWorkersReply { workers }
}

/// One managed worker, or a refusal naming the unknown name.
pub fn status(
    node: &Node,
    request: pb::ManagedWorkerStatusRequest,
) -> Result<pb::ManagedWorkerInfo, ServiceError> {
    node.registry()
        .managed_worker(&request.name)
        .map(wire::info_of)
        .ok_or_else(|| unknown(&request.name))
}

/// Asks the node running the worker to restart it once. The command moves the count of
/// restart requests on from the one read here, so a write the forwarder proposes again (its
/// first outcome unknown) cannot restart the worker twice.
pub async fn restart(
    node: &Node,
    request: pb::RestartManagedWorkerRequest,
) -> Result<pb::ManagedWorkerReply, ServiceError> {
    let name = request.name;
    let from = node
        .registry()
        .managed_worker(&name)
        .map(|worker| worker.restart_requests)
        .ok_or_else(|| unknown(&name))?;
    commit(
        node,
        Command::ManagedWorkerRestart {
            name: name.clone(),
            from: Some(from),
        },
    )
    .await?;
    info!(node = node.id, worker = %name, from, "managed worker restart requested");
    Ok(pb::ManagedWorkerReply {
        message: format!("managed worker '{name}' is being restarted"),
    })
}

/// Removes the spec; the worker stops wherever it runs.
pub async fn remove(
    node: &Node,
    request: pb::RemoveManagedWorkerRequest,
) -> Result<pb::ManagedWorkerReply, ServiceError> {
    let name = request.name;
    let existed = node.registry().managed_worker(&name).is_some();
    match commit(node, Command::ManagedWorkerRemoved { name: name.clone() }).await {
        Ok(()) => {}
        // Known here before the write, unknown when it applied: a first attempt whose outcome
        // the forwarder did not learn (or another operator) removed it already. It is gone,
        // as asked.
        Err(ServiceError::Refused(_)) if existed => {}
        Err(err) => return Err(err),
    }
    info!(node = node.id, worker = %name, "managed worker removed");
    Ok(pb::ManagedWorkerReply {
        message: format!("managed worker '{name}' removed; its process is being stopped"),
    })
}

/// What the `ManagedWorkerLogs` RPC needs of this node: its supervisor, its peer clients, the
/// placement its replica records, and its shutdown.
pub fn log_sources(node: &Arc<Node>) -> LogSources {
    let placed = node.clone();
    LogSources {
        node_id: node.id,
        supervisor: node.managed.supervisor().cloned(),
        peers: node.peers.clone(),
        placement: Arc::new(move |name: &str| placement(&placed, name)),
        stop: node.shutdown.clone(),
    }
}

fn placement(node: &Node, name: &str) -> Placement {
    let placed = node
        .registry()
        .managed_worker(name)
        .map(|worker| worker.placement);
    match placed {
        None => Placement::Unknown,
        Some(None) => Placement::Unplaced,
        Some(Some(id)) if id == node.id => Placement::Here,
        Some(Some(id)) => Placement::Elsewhere {
            node: id,
            address: node.peer_address(id),
        },
    }
}

/// Commits through the leader; the registry's refusal becomes the operator's error.
async fn commit(node: &Node, command: Command) -> Result<(), ServiceError> {
    let outcome = node
        .commit(command)
        .await
        .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
    match outcome.refusal {
        Some(reason) => Err(ServiceError::Refused(reason)),
        None => Ok(()),
    }
}

fn unknown(name: &str) -> ServiceError {
    ServiceError::Refused(format!("no managed worker named '{name}'"))
}

/// Wall-clock milliseconds, recorded with a spec so operators see when it was added.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
