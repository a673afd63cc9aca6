//! Commands (the Raft log's payload) and outcomes (what applying one means for the
//! other modules). Timestamps and ids travel inside commands so `apply` stays pure.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::drains::DrainCause;
use super::managed::{ExpectedPlacement, ManagedStatus, NodeLabels, SpecOrigin};
use super::model::{Trigger, WorkerMeta, WorkerToken};
use crate::ids::{NodeId, WorkerId};
use crate::managed::spec::WorkerSpec;

/// One change to the registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A WebSocket was accepted on `node`.
    WorkerConnected {
        worker: WorkerId,
        node: NodeId,
        token_hash: String,
        at_ms: u64,
        ip_address: Option<String>,
    },
    /// The connection closed, was retired by a reattach, or its node is gone.
    WorkerDisconnected { worker: WorkerId },
    /// Registrations from one connection, applied in order. A batch lets the whole
    /// replay a reconnecting SDK sends before its announcement commit at once.
    Registrations {
        worker: WorkerId,
        items: Vec<Registration>,
    },
    /// A provider refused a binding: park it and tell the registrant.
    TriggerRefused {
        provider: WorkerId,
        trigger_id: String,
        error_code: String,
        error_message: String,
    },
    /// `engine::register_trigger`: a binding owned by no connection.
    DurableTriggerRegistered {
        id: String,
        trigger_type: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
        trigger_namespace: Option<String>,
    },
    /// `engine::unregister_trigger`.
    TriggerRemoved { id: String },
    /// A node (re)started: every worker recorded on it belongs to a dead process.
    NodeRestarted { node: NodeId },
    /// The leader saw no contact from a node for longer than its lease: the node has
    /// fenced itself (closed its sockets), so its workers are gone.
    NodePurged { node: NodeId },
    /// A provider accepted a binding made through `engine::register_trigger` (its node tells
    /// the node waiting for the verdict, which may be another).
    TriggerAccepted {
        provider: WorkerId,
        trigger_id: String,
    },
    /// A node is draining (for its shutdown, or for a removal that moves its managed workers
    /// first): hold calls to its workers until they move. A shutdown drain stays one.
    NodeDraining {
        node: NodeId,
        /// Entries logged before causes existed (`None`) count as a shutdown.
        #[serde(default)]
        cause: Option<DrainCause>,
    },
    /// A removal that marked the node draining failed: the node serves again, if it still
    /// drains for that removal (a compare-and-set, see `drains.rs`): never after its own
    /// shutdown drain began, nor after a newer removal marked it.
    NodeUndrained {
        node: NodeId,
        /// The removal's id. Entries logged before ids existed (`None`) undo any drain.
        #[serde(default)]
        removal: Option<u64>,
    },
    /// A reconnected worker claims the calls its previous connection was waiting on (that
    /// connection is gone, so only the node that closed it can check the token's hash).
    ReattachClaim {
        previous: WorkerId,
        token_hash: String,
        successor: WorkerId,
        node: NodeId,
    },
    /// `quorum token create`: a new worker token (refused when the name is taken or revoked).
    TokenCreated(WorkerToken),
    /// `quorum token revoke`: the name is refused from now on, wherever it is defined.
    TokenRevoked { name: String },
    /// `quorum worker add` (or the node's `workers:` list): a managed worker's spec. The same
    /// spec again changes nothing; another spec under a taken name is refused, unless both it
    /// and the taken one come from a config (then it replaces it, as a new version).
    ManagedWorkerPut {
        spec: WorkerSpec,
        at_ms: u64,
        /// Entries logged before origins existed were all `quorum worker add`s.
        #[serde(default)]
        origin: SpecOrigin,
    },
    /// A node submitted its `workers:` list (these names): the specs a config put under any
    /// other name are removed; those put with the CLI stay. Applying it again changes nothing.
    ManagedConfigRetained { names: Vec<String> },
    /// `quorum worker remove`: the worker stops wherever it runs (refused when unknown).
    ManagedWorkerRemoved { name: String },
    /// `quorum worker restart`: the placed node restarts the worker once. With `from`, a
    /// compare-and-set: the count of restart requests moves from `from` to `from + 1` only, so
    /// a write proposed again (its first outcome unknown) restarts the worker once, not twice.
    /// Without it (entries logged before the check existed), the count just goes up by one.
    ManagedWorkerRestart {
        name: String,
        #[serde(default)]
        from: Option<u64>,
    },
    /// The leader placed a managed worker on `node`; refused unless the worker is still placed
    /// as `expected` (the leader's view when it decided).
    ManagedWorkerPlaced {
        name: String,
        node: NodeId,
        #[serde(default)]
        expected: ExpectedPlacement,
    },
    /// The leader found no node that may run it, for `reason`; refused unless the worker is
    /// still placed as `expected`.
    ManagedWorkerUnplaceable {
        name: String,
        reason: String,
        #[serde(default)]
        expected: ExpectedPlacement,
    },
    /// The placed node's report on a managed worker (ignored from any other node).
    ManagedWorkerStatus {
        name: String,
        node: NodeId,
        status: ManagedStatus,
    },
    /// The labels a node was started with (`--node-label`), committed at each start.
    NodeLabels { node: NodeId, labels: NodeLabels },
}

/// One registration message from a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Registration {
    /// `engine::workers::register`: fix the namespace (if not yet) and take the name lease.
    Announce(Announcement),
    /// The grace timer ran out before an announcement: the namespace becomes this one.
    FixNamespace {
        namespace: String,
    },
    Function {
        id: String,
        description: Option<String>,
        request_format: Option<Value>,
        response_format: Option<Value>,
        metadata: Option<Value>,
        invocation: Option<Value>,
    },
    UnregisterFunction {
        id: String,
    },
    TriggerType {
        namespace: Option<String>,
        id: String,
        description: String,
        trigger_request_format: Option<Value>,
        call_request_format: Option<Value>,
    },
    UnregisterTriggerType {
        namespace: Option<String>,
        id: String,
    },
    Trigger {
        id: String,
        trigger_type: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
        namespace: Option<String>,
        trigger_namespace: Option<String>,
    },
    UnregisterTrigger {
        id: String,
    },
    Service {
        id: String,
        name: Option<String>,
        description: Option<String>,
        parent_service_id: Option<String>,
    },
}

/// The sanitised content of `engine::workers::register`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub namespace: String,
    pub meta: WorkerMeta,
}

/// What applying a command produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Refusals to send back to the worker whose registrations these were.
    pub rejections: Vec<Rejection>,
    /// The announcement lost the name lease: the connection must be closed.
    pub name_rejected: bool,
    /// For `TriggerRemoved`: whether a binding existed.
    pub removed: bool,
    /// For `DurableTriggerRegistered`: the worker that must confirm the binding.
    pub awaiting_provider: Option<WorkerId>,
    /// Why an operator's command changed nothing (e.g. a token name already taken).
    #[serde(default)]
    pub refusal: Option<String>,
    /// Reactions for the nodes holding the affected connections.
    pub events: Vec<Event>,
}

/// A registration the registry refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rejection {
    Function {
        namespace: String,
        function_id: String,
        /// The live owner; `None` for reserved `engine::` ids.
        owner: Option<WorkerId>,
    },
    WorkerName {
        namespace: String,
        name: String,
        owner: WorkerId,
    },
    /// A namespace or worker name that breaks the name rule; its whole batch was refused.
    InvalidName {
        /// The input field that held it (`namespace`, `trigger_namespace`, `name`).
        field: String,
        /// What is wrong, with at most a bounded prefix of the name.
        message: String,
    },
}

/// Something a node must do after the change, if it holds the worker concerned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// Send a message to a worker (a provider or a trigger's registrant).
    Notify { worker: WorkerId, notice: Notice },
    /// Fire `engine::workers-available`.
    WorkerLifecycle {
        worker: WorkerId,
        kind: WorkerEventKind,
    },
    /// Fire `engine::functions-available`: the set of function ids changed.
    FunctionsChanged,
    /// A provider's verdict on a binding owned by no connection: the node whose
    /// `engine::register_trigger` waits for it answers its caller. `error` is (code, message).
    TriggerVerdict {
        trigger_id: String,
        error: Option<(String, String)>,
    },
    /// A reconnected worker (`successor`, on `node`) claims the answers owed to `previous`.
    Reattached {
        previous: WorkerId,
        token_hash: String,
        successor: WorkerId,
        node: NodeId,
    },
    /// A worker token was revoked: every node closes the connections it admitted with it.
    TokenRevoked { name: String },
}

/// The `event` field of a workers-available payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerEventKind {
    Connected,
    MetadataUpdated,
    Disconnected,
}

impl WorkerEventKind {
    /// The wire value of the payload's `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "worker_connected",
            Self::MetadataUpdated => "worker_metadata_updated",
            Self::Disconnected => "worker_disconnected",
        }
    }
}

/// A message the registry asks the holder of a worker's socket to deliver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Notice {
    /// To a provider: start serving this binding.
    RegisterTrigger(Box<Trigger>),
    /// To a provider: stop serving this binding.
    UnregisterTrigger { id: String, trigger_type: String },
    /// To a registrant: the provider refused its binding.
    TriggerRefused {
        id: String,
        trigger_type: String,
        function_id: String,
        error_code: String,
        error_message: String,
    },
}
