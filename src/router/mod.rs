//! router: where a call goes, and how its answer comes back.
//!
//! Owns the pending-call table: one entry per call handed to a worker, keyed by the
//! engine-made invocation id the owner sees. Every way a call can end (the owner
//! answers, the owner disconnects, the caller disconnects, the entry expires) goes
//! through this table, so a caller is answered exactly once. Calls are routed from
//! the local replica of the registry: no Raft round trip and no await while the
//! table's lock is held.
//!
//! A call whose owner sits on another node takes the same table and the same answer
//! path; only the transport differs: a [`RemoteLink`] (the gRPC invocation streams)
//! carries the call there and its answer back. When a link to a node is lost, every
//! call that node was executing ends with `invocation_stopped` at once.
//!
//! [`Router::answer`] is also where calls are counted: once, on the node where the
//! call started (answers sent back to another node are that node's to count).
//!
//! Two companions: `hold` keeps calls waiting while their function moves off a draining
//! node; `owed` keeps the answers of workers whose connection the engine closed (or whose
//! node died) until they reattach elsewhere.

mod hold;
mod owed;
mod parked;
mod pending;
mod prepared;
mod reroute;

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::gateway::connections::{Connections, Outbound};
use crate::ids::{FunctionKey, InvocationId, NodeId, WorkerId};
use crate::metrics::Metrics;
use crate::protocol::error::EngineError;
use crate::protocol::{names::echo, ErrorBody, Outgoing, Payload, MAX_MESSAGE_BYTES};
use crate::registry::{Registry, Resolution};
pub use parked::{OwedAnswer, Successor};
use parked::{ParkedWorkers, Redirect};
use pending::{PendingCall, PendingTable};
pub use prepared::FramedAnswer;
pub use reroute::Reroute;

/// Who is waiting for a call's answer.
#[derive(Debug)]
pub enum Caller {
    /// A worker's sync call: answer it with its own invocation id.
    Worker {
        worker: WorkerId,
        invocation_id: String,
    },
    /// Fire-and-forget: void calls and discovery trigger fires.
    Discard,
    /// A call another node forwarded here: answer it over the link to that node.
    Remote {
        node: NodeId,
        invocation_id: InvocationId,
    },
}

impl Caller {
    fn worker(&self) -> Option<WorkerId> {
        match self {
            Self::Worker { worker, .. } => Some(*worker),
            _ => None,
        }
    }
}

/// One call to route, already resolved to its namespace.
#[derive(Debug)]
pub struct CallRequest {
    pub function_id: String,
    pub namespace: String,
    pub data: Value,
    pub metadata: Option<Value>,
    pub traceparent: Option<String>,
    pub baggage: Option<String>,
}

/// What the router did with a call.
#[derive(Debug)]
pub enum Routed {
    /// Handed to the owning worker; its answer will come back through `complete`.
    Sent,
    /// An `engine::*` function: the caller of `route` runs it and answers with `answer`.
    Builtin(Caller, CallRequest),
    /// Already answered with an error.
    Failed,
}

/// A call crossing to the node that holds its owner's socket.
#[derive(Debug)]
pub struct RemoteCall {
    /// The id both nodes use for this call (made by the caller's node).
    pub invocation_id: InvocationId,
    pub owner: WorkerId,
    pub request: CallRequest,
    /// The calling worker and its own id for the call, when a worker waits for the answer.
    pub origin: Option<(WorkerId, String)>,
}

/// How calls and answers reach other nodes. Implemented by the gRPC invocation
/// streams; the router never knows the transport.
#[async_trait::async_trait]
pub trait RemoteLink: Send + Sync {
    /// Hands a call to `node`; false when the link to it is down.
    async fn forward(&self, node: NodeId, call: RemoteCall) -> bool;
    /// Sends the answer of a call that `node` forwarded here.
    async fn reply(
        &self,
        node: NodeId,
        invocation_id: InvocationId,
        outcome: Result<Payload, ErrorBody>,
    );
    /// Tells `node` that nobody waits for this call any more.
    async fn cancel(&self, node: NodeId, invocation_id: InvocationId);
    /// Sends an answer owed to a worker that reconnected to `node` as `worker`.
    async fn answer_worker(&self, node: NodeId, worker: WorkerId, answer: OwedAnswer);
}

/// Whether a call was recorded in the pending table.
enum Admission {
    Admitted,
    /// Refused and already answered (the caller waits on too many calls).
    Refused,
    /// The owner is being closed by a drain: the call was not recorded.
    OwnerClosing(Caller),
}

/// Calls in flight on one worker connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Calls the worker is executing.
    pub executing: usize,
    /// Calls the worker started and is waiting on.
    pub waiting: usize,
}

/// Routes calls to local workers and relays their answers.
pub struct Router {
    node: NodeId,
    registry: Arc<RwLock<Registry>>,
    connections: Arc<Connections>,
    table: Mutex<PendingTable>,
    max_pending_per_caller: usize,
    link: OnceLock<Arc<dyn RemoteLink>>,
    /// Answers owed to workers closed by this node's drain.
    parked: Mutex<ParkedWorkers>,
    /// How long a call waits for a function whose worker is moving off a draining node.
    hold: Duration,
    /// Woken after each batch of registry changes, for calls on hold.
    changed: Notify,
    /// When this node first held a call for each moving function (holds are bounded).
    moving_since: Mutex<HashMap<(FunctionKey, WorkerId), Instant>>,
    /// Calls waiting on a hold, or handed back to be routed again, right now (a draining
    /// node lets them finish).
    holding: std::sync::atomic::AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Router {
    /// A router over this node's registry replica and local connections.
    pub fn new(
        node: NodeId,
        registry: Arc<RwLock<Registry>>,
        connections: Arc<Connections>,
        max_pending_per_caller: usize,
        hold: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            registry,
            connections,
            table: Mutex::new(PendingTable::default()),
            max_pending_per_caller,
            link: OnceLock::new(),
            parked: Mutex::new(ParkedWorkers::default()),
            hold,
            changed: Notify::new(),
            moving_since: Mutex::new(HashMap::new()),
            holding: std::sync::atomic::AtomicUsize::new(0),
            metrics,
        }
    }

    /// Connects the router to other nodes; set once at start-up, after the links exist.
    pub fn set_link(&self, link: Arc<dyn RemoteLink>) {
        let _ = self.link.set(link);
    }

    /// Routes one call and, unless it is a built-in, takes care of its answer.
    pub async fn route(&self, caller: Caller, mut request: CallRequest) -> Routed {
        let started = Instant::now();
        let resolution = self.resolve_holding(&request).await;
        let owner = match resolution {
            Resolution::Builtin => return Routed::Builtin(caller, request),
            Resolution::NotFound { elsewhere } => {
                let elsewhere = if elsewhere.is_empty() {
                    String::new()
                } else {
                    format!(
                        " It is registered in namespace(s): {}.",
                        elsewhere.join(", ")
                    )
                };
                let err = EngineError::FunctionNotFound {
                    id: request.function_id.clone(),
                    namespace: request.namespace.clone(),
                    elsewhere,
                };
                self.answer(caller, &request.function_id, Err(err.body()), started)
                    .await;
                return Routed::Failed;
            }
            Resolution::Worker { owner, node } => (owner, node),
        };
        let (owner, owner_node) = owner;
        if let Some(worker) = caller.worker() {
            if let Value::Object(map) = &mut request.data {
                map.insert(
                    "_caller_worker_id".into(),
                    Value::String(worker.to_string()),
                );
            }
        }
        if owner_node != self.node {
            return self
                .route_remote(caller, owner, owner_node, request, started)
                .await;
        }
        let Some(outbox) = self.connections.outbox(owner) else {
            self.answer(
                caller,
                &request.function_id,
                Err(EngineError::ChannelSendFailed.body()),
                started,
            )
            .await;
            return Routed::Failed;
        };
        let invocation_id = InvocationId::new();
        let call = PendingCall::new(
            caller,
            request.function_id.clone(),
            owner,
            self.node,
            started,
        );
        match self.admit(invocation_id, call).await {
            Admission::Admitted => {}
            Admission::Refused => return Routed::Failed,
            Admission::OwnerClosing(caller) => {
                // Held as long as allowed, and the owner is leaving now.
                self.answer(
                    caller,
                    &request.function_id,
                    Err(EngineError::InvocationStopped.body()),
                    started,
                )
                .await;
                return Routed::Failed;
            }
        }
        debug!(invocation_id = %invocation_id, function_id = %request.function_id, worker_id = %owner, "call routed");
        if self.send_invoke(&outbox, invocation_id, request).await {
            Routed::Sent
        } else {
            Routed::Failed
        }
    }

    /// Writes a recorded call to its owner's outbox. A call whose frame would be over the
    /// 64 MiB every SDK accepts (the engine adds the caller's id to its data), or whose
    /// owner's outbox is gone or full (pushing never waits on a worker), ends here; false then.
    async fn send_invoke(
        &self,
        outbox: &crate::budget::Outbox<Outbound>,
        invocation_id: InvocationId,
        request: CallRequest,
    ) -> bool {
        let text = Outgoing::InvokeFunction {
            invocation_id: invocation_id.to_string(),
            function_id: request.function_id.clone(),
            data: request.data,
            metadata: request.metadata,
            traceparent: request.traceparent,
            baggage: request.baggage,
        }
        .to_text();
        if text.len() > MAX_MESSAGE_BYTES {
            debug!(invocation_id = %invocation_id, function_id = %request.function_id, bytes = text.len(),
                "call too large to hand to its owner");
            let too_large = EngineError::PayloadTooLarge {
                limit: MAX_MESSAGE_BYTES,
            };
            self.abandon(invocation_id, too_large).await;
            return false;
        }
        if outbox.push(Outbound::Text(text)).is_err() {
            self.abandon(invocation_id, EngineError::ChannelSendFailed)
                .await;
            return false;
        }
        true
    }

    /// Forwards a call to the node holding its owner; a lost link means the call stops.
    async fn route_remote(
        &self,
        caller: Caller,
        owner: WorkerId,
        node: NodeId,
        request: CallRequest,
        started: Instant,
    ) -> Routed {
        let Some(link) = self.link.get().cloned() else {
            let err = EngineError::FunctionNotFound {
                id: request.function_id.clone(),
                namespace: request.namespace.clone(),
                elsewhere: String::new(),
            };
            self.answer(caller, &request.function_id, Err(err.body()), started)
                .await;
            return Routed::Failed;
        };
        let invocation_id = InvocationId::new();
        let origin = match &caller {
            Caller::Worker {
                worker,
                invocation_id,
            } => Some((*worker, invocation_id.clone())),
            _ => None,
        };
        let call = PendingCall::new(caller, request.function_id.clone(), owner, node, started);
        if !matches!(self.admit(invocation_id, call).await, Admission::Admitted) {
            return Routed::Failed;
        }
        debug!(invocation_id = %invocation_id, function_id = %request.function_id, worker_id = %owner,
            owner_node = node, "call forwarded");
        let call = RemoteCall {
            invocation_id,
            owner,
            request,
            origin,
        };
        if !link.forward(node, call).await {
            self.abandon(invocation_id, EngineError::InvocationStopped)
                .await;
            return Routed::Failed;
        }
        Metrics::bump(&self.metrics.forwarded_sent);
        Routed::Sent
    }

    /// Records a call in the pending table, or answers its caller that it already waits
    /// on as many calls as it may. A call for a local owner a drain is closing is not
    /// recorded; its caller is handed back.
    async fn admit(&self, invocation_id: InvocationId, call: PendingCall) -> Admission {
        let function_id = call.function_id.clone();
        let started = call.started();
        let admitted = {
            let mut table = self.lock_table();
            if call.owner_node == self.node && table.is_closing(call.owner) {
                return Admission::OwnerClosing(call.caller);
            }
            table.insert(invocation_id, call, self.max_pending_per_caller)
        };
        match admitted {
            Ok(()) => Admission::Admitted,
            Err(caller) => {
                let err = EngineError::TooManyPendingCalls {
                    limit: self.max_pending_per_caller,
                };
                self.answer(caller, &function_id, Err(err.body()), started)
                    .await;
                Admission::Refused
            }
        }
    }

    /// Takes a call out of the table because it cannot be delivered, and tells its caller why.
    async fn abandon(&self, invocation_id: InvocationId, why: EngineError) {
        let call = self.lock_table().remove(invocation_id);
        if let Some(call) = call {
            self.finish(call, Err(why.body())).await;
        }
    }

    /// A call another node forwarded for a worker held here. When the worker is moving
    /// off this draining node, the call is handed back to be routed again with
    /// [`Router::reroute`] (on a task of its own: it may wait for the worker to move).
    pub async fn deliver(&self, from: NodeId, call: RemoteCall) -> Option<Reroute> {
        Metrics::bump(&self.metrics.forwarded_received);
        let started = Instant::now();
        let caller = Caller::Remote {
            node: from,
            invocation_id: call.invocation_id,
        };
        let function_id = call.request.function_id.clone();
        let Some(outbox) = self.connections.outbox(call.owner) else {
            if self.draining_here() {
                // The owner moved off this draining node: send the call where it went.
                return Some(self.hand_back(caller, call.request));
            }
            // The owner left between the caller's lookup and now.
            self.answer(
                caller,
                &function_id,
                Err(EngineError::InvocationStopped.body()),
                started,
            )
            .await;
            return None;
        };
        // A remote caller waits on the caller's node, where its limit was applied.
        let mut pending =
            PendingCall::new(caller, function_id.clone(), call.owner, self.node, started);
        pending.origin = call.origin;
        match self.admit(call.invocation_id, pending).await {
            Admission::Admitted => {}
            Admission::Refused => return None,
            Admission::OwnerClosing(caller) => return Some(self.hand_back(caller, call.request)),
        }
        self.send_invoke(&outbox, call.invocation_id, call.request)
            .await;
        None
    }

    /// Whether the registry records this node as draining.
    fn draining_here(&self) -> bool {
        self.registry
            .read()
            .map(|r| r.is_draining(self.node))
            .unwrap_or(false)
    }

    /// The answer to a call this node forwarded to `from`.
    pub async fn complete_remote(
        &self,
        from: NodeId,
        invocation_id: InvocationId,
        outcome: Result<Payload, ErrorBody>,
    ) {
        let call = self.lock_table().remove_if_on_node(invocation_id, from);
        match call {
            Some(call) => self.finish(call, outcome).await,
            None => {
                debug!(invocation_id = %invocation_id, from_node = from, "remote result for an unknown or finished call dropped")
            }
        }
    }

    /// The caller of a call forwarded from `from` is gone: forget the call.
    pub fn cancel_remote(&self, from: NodeId, invocation_id: InvocationId) {
        self.lock_table().remove_if_caller_node(invocation_id, from);
    }

    /// Our stream to `node` broke (the node died or is cut off): every call it was
    /// executing for us ends at once with `invocation_stopped`.
    pub async fn owner_node_lost(&self, node: NodeId) {
        let stopped = self.lock_table().drop_owner_node(node);
        self.stop_all(stopped).await;
    }

    /// The owner answered: relay to whoever waits. Answers from anyone but the call's
    /// owner, and answers nobody waits for any more, are dropped.
    pub async fn complete(
        &self,
        from: WorkerId,
        invocation_id: &str,
        outcome: Result<Payload, ErrorBody>,
    ) {
        let Ok(uuid) = uuid::Uuid::parse_str(invocation_id) else {
            debug!(worker_id = %from, invocation_id, "result for a non-UUID invocation id dropped");
            return;
        };
        let call = self
            .lock_table()
            .remove_if_owned_by(InvocationId(uuid), from);
        match call {
            Some(call) => self.finish(call, outcome).await,
            None => {
                debug!(worker_id = %from, invocation_id, "result for an unknown or finished call dropped")
            }
        }
    }

    /// A worker connection ended: calls it was executing end with `invocation_stopped`
    /// at once; calls it was waiting on are forgotten (their owners are not told).
    pub async fn worker_gone(&self, worker: WorkerId) {
        if self.lock_parked().is_parked(worker) {
            // Closed by a drain: the calls it waits on are owed to its next connection.
            let stopped = self.lock_table().drop_closed_worker(worker);
            self.stop_all(stopped).await;
            return;
        }
        // A call forwarded to a draining node stays: that node routes it again (see reroute).
        let rerouting = self.draining_elsewhere();
        let (stopped, abandoned) = self
            .lock_table()
            .drop_worker(worker, |call| rerouting.contains(&call.owner_node));
        if let Some(link) = self.link.get() {
            // Calls executed here need no message: the table already forgot them.
            for (node, invocation_id) in abandoned.into_iter().filter(|(n, _)| *n != self.node) {
                link.cancel(node, invocation_id).await;
            }
        }
        self.stop_all(stopped).await;
    }

    /// The engine is about to close a worker's socket (fenced, shutting down, retired): the
    /// calls it waits on end with `invocation_stopped` first, so its SDK is not left waiting
    /// for answers no connection will carry. Their owners' nodes forget them.
    pub async fn stop_waiting(&self, worker: WorkerId) {
        let calls = self.lock_table().drop_waiting(worker);
        if let Some(link) = self.link.get() {
            for (id, call) in calls.iter().filter(|(_, c)| c.owner_node != self.node) {
                link.cancel(call.owner_node, *id).await;
            }
        }
        self.stop_all(calls.into_iter().map(|(_, call)| call).collect())
            .await;
    }

    /// Ends each call with `invocation_stopped`: its owner is gone or will never answer.
    async fn stop_all(&self, calls: Vec<PendingCall>) {
        for call in calls {
            self.finish(call, Err(EngineError::InvocationStopped.body()))
                .await;
        }
    }

    /// Ends calls older than `age` with `invocation_stopped` (bounds memory when an owner
    /// never answers; SDK callers have long given up); one log line per sweep.
    pub async fn expire(&self, age: Duration) {
        let expired = self.lock_table().expire(age);
        if let Some(first) = expired.first() {
            warn!(count = expired.len(), function_id = %first.function_id, worker_id = %first.owner, "calls expired without an answer");
        }
        self.stop_all(expired).await;
    }

    /// Calls in flight on a worker, for `engine::workers::*` (status and counts).
    pub fn load(&self, worker: WorkerId) -> Load {
        self.lock_table().load(worker)
    }

    /// Answers a call taken out of the pending table.
    async fn finish(&self, call: PendingCall, outcome: Result<Payload, ErrorBody>) {
        let started = call.started();
        self.answer(call.caller, &call.function_id, outcome, started)
            .await;
    }

    /// Delivers an answer to a caller, and counts the call (begun at `started`) unless
    /// it came from another node, which counts it itself.
    pub async fn answer(
        &self,
        caller: Caller,
        function_id: &str,
        outcome: Result<Payload, ErrorBody>,
        started: Instant,
    ) {
        if !matches!(caller, Caller::Remote { .. }) {
            self.metrics
                .invocation_finished(outcome.is_ok(), started.elapsed());
        }
        self.deliver_answer(caller, function_id, outcome).await;
    }

    /// Sends an answer to whoever waits, without counting it.
    async fn deliver_answer(
        &self,
        caller: Caller,
        function_id: &str,
        outcome: Result<Payload, ErrorBody>,
    ) {
        match caller {
            Caller::Worker {
                worker,
                invocation_id,
            } => {
                let owed = OwedAnswer {
                    invocation_id,
                    function_id: echo(function_id).into_owned(),
                    outcome,
                };
                let redirect = self.lock_parked().redirect(worker, owed);
                let OwedAnswer {
                    invocation_id,
                    outcome,
                    ..
                } = match redirect {
                    Redirect::NotParked(owed) => owed,
                    Redirect::Kept => return,
                    Redirect::To(successor, owed) => {
                        self.send_owed(successor, owed).await;
                        return;
                    }
                };
                let text = prepared::result_frame_text(invocation_id, function_id, outcome);
                self.connections.send(worker, Outbound::Text(text));
            }
            Caller::Remote {
                node,
                invocation_id,
            } => {
                if let Some(link) = self.link.get() {
                    link.reply(node, invocation_id, outcome).await;
                }
            }
            Caller::Discard => {
                if let Err(error) = outcome {
                    debug!(function_id, code = %error.code, message = %error.message, "fire-and-forget call failed");
                }
            }
        }
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, PendingTable> {
        // The table holds no invariant a panic elsewhere could break half-way.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
