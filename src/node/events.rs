//! Reactions to committed registry changes on this node: deliver notices to local
//! workers, retire local sessions the registry removed, close the connections of a revoked
//! worker token, fire discovery triggers.
//! Every node sees every change; each acts only on the workers it holds.

use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

use super::Node;
use crate::auth::revocation;
use crate::builtins::discovery;
use crate::consensus::Applied;
use crate::gateway::connections::Outbound;
use crate::ids::DEFAULT_NAMESPACE;
use crate::protocol::{ErrorBody, Outgoing};
use crate::registry::{Event, Notice, WorkerEventKind};
use crate::router::Successor;

/// Consumes applied outcomes in log order until the node stops.
pub async fn run(node: Arc<Node>, mut applied: UnboundedReceiver<Applied>) {
    loop {
        let first = tokio::select! {
            item = applied.recv() => item,
            _ = node.shutdown.cancelled() => return,
        };
        let Some(first) = first else { return };
        // Take whatever else is already applied, so a burst of function changes fires
        // one functions-available event.
        let mut batch = vec![first];
        while let Ok(more) = applied.try_recv() {
            batch.push(more);
        }
        let mut functions_changed = false;
        for item in batch {
            tracing::trace!(
                node = node.id,
                log_index = item.log_index,
                "reacting to an applied change"
            );
            for event in item.outcome.events {
                match event {
                    Event::FunctionsChanged => functions_changed = true,
                    other => react(&node, other).await,
                }
            }
        }
        // Calls waiting for a function to move off a draining node look again.
        node.router.registry_changed();
        node.managed.registry_changed();
        if functions_changed {
            discovery::functions_changed(&node).await;
        }
    }
}

async fn react(node: &Arc<Node>, event: Event) {
    match event {
        Event::Notify { worker, notice } => {
            if node.connections.is_local(worker) {
                let frame = notice_frame(notice);
                node.connections
                    .send(worker, Outbound::Text(frame.to_text()));
            }
        }
        Event::WorkerLifecycle { worker, kind } => {
            if kind == WorkerEventKind::Disconnected {
                match node.connections.get(worker) {
                    // Retired by a reattach elsewhere, or purged: end the local session too;
                    // its cleanup settles its calls (keeping answers owed to it).
                    Some(handle) => handle.cancel.cancel(),
                    None => node.router.worker_gone(worker).await,
                }
            }
            discovery::workers_changed(node, worker, kind).await;
        }
        Event::FunctionsChanged => discovery::functions_changed(node).await,
        Event::TriggerVerdict { trigger_id, error } => {
            // The provider sits on another node; the caller of `engine::register_trigger`
            // may wait here.
            if let Some(waiter) = node.lock_trigger_waiters().remove(&trigger_id) {
                let _ = waiter.send(error.map(|(code, message)| ErrorBody {
                    code,
                    message,
                    stacktrace: None,
                }));
            }
        }
        Event::Reattached {
            previous,
            token_hash,
            successor,
            node: successor_node,
        } => {
            let successor = Successor {
                node: successor_node,
                worker: successor,
            };
            node.router
                .reattached(previous, &token_hash, successor)
                .await;
        }
        Event::TokenRevoked { name } => {
            let connections = node.connections.clone();
            tokio::spawn(revocation::close_connections(node.id, connections, name));
        }
    }
}

fn notice_frame(notice: Notice) -> Outgoing {
    match notice {
        Notice::RegisterTrigger(trigger) => {
            let provider_namespace = trigger.provider.as_ref().map(|k| k.namespace.clone());
            Outgoing::RegisterTrigger {
                id: trigger.id,
                trigger_type: trigger.trigger_type,
                function_id: trigger.function_id,
                config: trigger.config,
                metadata: trigger.metadata,
                namespace: Some(trigger.target_namespace).filter(|ns| ns != DEFAULT_NAMESPACE),
                trigger_namespace: provider_namespace.filter(|ns| ns != DEFAULT_NAMESPACE),
            }
        }
        Notice::UnregisterTrigger { id, trigger_type } => {
            Outgoing::UnregisterTrigger { id, trigger_type }
        }
        Notice::TriggerRefused {
            id,
            trigger_type,
            function_id,
            error_code,
            error_message,
        } => Outgoing::TriggerRegistrationResult {
            id,
            trigger_type,
            function_id,
            error: Some(ErrorBody {
                code: error_code,
                message: error_message,
                stacktrace: None,
            }),
        },
    }
}
