//! The `Invocations` stream between two nodes: invoke, result and cancel frames
//! multiplexed over one long-lived bidirectional gRPC stream per ordered pair of nodes.
//!
//! The node that holds a caller opens a stream to the node that holds the owner and
//! sends `Invoke` and `Cancel` frames on it; the owner's node answers with `CallResult`
//! frames on the same stream. When a stream breaks, the node is presumed lost: calls it
//! was executing end with `invocation_stopped` at once, calls it had handed us are
//! dropped. Peer bytes are decoded with errors, never unwrapped; channels are bounded.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::client::PeerClients;
use super::pb::invocation_frame::Kind;
use super::pb::{CallResult, Cancel, InvocationFrame, Invoke, WorkerAnswer};
use super::relayed::RelayedChecks;
use crate::auth::access::Caller;
use crate::ids::{InvocationId, NodeId, WorkerId};
use crate::node::Node;
use crate::protocol::{ErrorBody, Payload};
use crate::router::{CallRequest, OwedAnswer, RemoteCall, RemoteLink};

/// The stream of frames this node sends back to the peer that opened the stream.
pub type InvocationStream = Pin<Box<dyn Stream<Item = Result<InvocationFrame, Status>> + Send>>;

/// Request metadata naming the node that opened a stream.
const NODE_HEADER: &str = "x-quorum-node";
/// Frames queued towards one peer before senders wait.
const LINK_CAPACITY: usize = 4096;

/// How often an unreachable peer is reported at warn level.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The invocation links of this node: outgoing streams by peer, and the reply side of
/// the streams peers opened to us.
pub struct InvocationLinks {
    me: NodeId,
    clients: PeerClients,
    node: OnceLock<Weak<Node>>,
    outgoing: Mutex<HashMap<NodeId, mpsc::Sender<InvocationFrame>>>,
    /// When a failure to reach each peer was last logged at warn (once per [`WARN_EVERY`]).
    warned: Mutex<HashMap<NodeId, std::time::Instant>>,
    incoming: Mutex<HashMap<NodeId, mpsc::Sender<Result<InvocationFrame, Status>>>>,
}

impl InvocationLinks {
    /// Links for node `me`, dialling peers through the shared channel pool.
    pub fn new(me: NodeId, clients: PeerClients) -> Self {
        Self {
            me,
            clients,
            node: OnceLock::new(),
            outgoing: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a failure to reach `peer` should be logged at warn: every call to an
    /// unreachable node tries the link again, and one line per [`WARN_EVERY`] is enough.
    fn should_warn(&self, peer: NodeId) -> bool {
        let mut warned = lock(&self.warned);
        let now = std::time::Instant::now();
        match warned.get(&peer) {
            Some(last) if now.duration_since(*last) < WARN_EVERY => false,
            _ => {
                warned.insert(peer, now);
                true
            }
        }
    }

    /// Frames waiting in this node's send queues to other nodes: a draining node lets them
    /// go out before it closes the streams.
    pub fn queued_frames(&self) -> usize {
        let outgoing: usize = lock(&self.outgoing)
            .values()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .sum();
        let incoming: usize = lock(&self.incoming)
            .values()
            .map(|tx| tx.max_capacity() - tx.capacity())
            .sum();
        outgoing + incoming
    }

    /// Connects the links to their node once it exists (the node owns the links).
    pub fn attach(&self, node: &Arc<Node>) {
        let _ = self.node.set(Arc::downgrade(node));
    }

    fn node(&self) -> Option<Arc<Node>> {
        self.node.get().and_then(Weak::upgrade)
    }

    /// The sender of the stream to `peer`, opening it when there is none.
    fn outgoing_to(&self, peer: NodeId) -> Option<mpsc::Sender<InvocationFrame>> {
        let mut outgoing = lock(&self.outgoing);
        if let Some(tx) = outgoing.get(&peer).filter(|tx| !tx.is_closed()) {
            return Some(tx.clone());
        }
        let node = self.node()?;
        let address = node.peer_address(peer)?;
        let (tx, rx) = mpsc::channel(LINK_CAPACITY);
        outgoing.insert(peer, tx.clone());
        drop(outgoing);
        tokio::spawn(run_outgoing(
            node,
            self.me,
            peer,
            address,
            self.clients.clone(),
            rx,
        ));
        Some(tx)
    }

    fn forget_outgoing(&self, peer: NodeId) {
        let mut outgoing = lock(&self.outgoing);
        if outgoing.get(&peer).is_some_and(|tx| tx.is_closed()) {
            outgoing.remove(&peer);
        }
    }
}

#[async_trait::async_trait]
impl RemoteLink for InvocationLinks {
    async fn forward(&self, node: NodeId, call: RemoteCall) -> bool {
        let Some(tx) = self.outgoing_to(node) else {
            return false;
        };
        tx.send(invoke_frame(self.me, call)).await.is_ok()
    }

    async fn reply(
        &self,
        node: NodeId,
        invocation_id: InvocationId,
        outcome: Result<Payload, ErrorBody>,
    ) {
        let tx = lock(&self.incoming).get(&node).cloned();
        match tx {
            Some(tx) => {
                let _ = tx.send(Ok(result_frame(invocation_id, outcome))).await;
            }
            None => debug!(node = self.me, peer = node, invocation_id = %invocation_id,
                "answer for a node whose stream is gone dropped"),
        }
    }

    async fn cancel(&self, node: NodeId, invocation_id: InvocationId) {
        let tx = lock(&self.outgoing).get(&node).cloned();
        if let Some(tx) = tx {
            let frame = InvocationFrame {
                kind: Some(Kind::Cancel(Cancel {
                    invocation_id: invocation_id.to_string(),
                })),
            };
            let _ = tx.send(frame).await;
        }
    }

    async fn answer_worker(&self, node: NodeId, worker: WorkerId, answer: OwedAnswer) {
        let Some(tx) = self.outgoing_to(node) else {
            debug!(node = self.me, peer = node, worker_id = %worker,
                "answer owed to a reconnected worker dropped: no link to its node");
            return;
        };
        let _ = tx.send(worker_answer_frame(worker, answer)).await;
    }
}

/// Runs this node's stream to `peer` until it breaks; then the calls `peer` was
/// executing for us stop.
async fn run_outgoing(
    node: Arc<Node>,
    me: NodeId,
    peer: NodeId,
    address: String,
    clients: PeerClients,
    rx: mpsc::Receiver<InvocationFrame>,
) {
    let outbound = super::receiver_stream(rx);
    let mut request = Request::new(outbound);
    if let Ok(value) = me.to_string().parse() {
        request.metadata_mut().insert(NODE_HEADER, value);
    }
    let opened = match clients.cluster(&address) {
        Ok(mut client) => client.invocations(request).await,
        Err(err) => Err(Status::unavailable(err.to_string())),
    };
    match opened {
        Ok(response) => {
            info!(node = me, peer, "invocation stream open");
            let mut inbound = response.into_inner();
            let mut checks = RelayedChecks::default();
            loop {
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = node.shutdown.cancelled() => break,
                };
                match next {
                    Ok(Some(frame)) => on_result(&node, peer, frame, &mut checks).await,
                    Ok(None) => break,
                    Err(status) => {
                        debug!(node = me, peer, error = %status, "invocation stream broke");
                        break;
                    }
                }
            }
            checks.finish().await;
        }
        Err(status) => {
            if node.links.should_warn(peer) {
                warn!(node = me, peer, error = %status, "cannot open an invocation stream");
            } else {
                debug!(node = me, peer, error = %status, "cannot open an invocation stream");
            }
        }
    }
    node.links.forget_outgoing(peer);
    node.router.owner_node_lost(peer).await;
}

async fn on_result(
    node: &Arc<Node>,
    peer: NodeId,
    frame: InvocationFrame,
    checks: &mut RelayedChecks,
) {
    let Some(Kind::Result(result)) = frame.kind else {
        debug!(
            node = node.id,
            peer, "unexpected frame on an outgoing invocation stream dropped"
        );
        return;
    };
    let Some(invocation_id) = parse_invocation(&result.invocation_id) else {
        return;
    };
    let node = node.clone();
    let complete = move |outcome| async move {
        node.router
            .complete_remote(peer, invocation_id, outcome)
            .await
    };
    if result.ok {
        checks.check_then(peer, result.value_json, complete).await;
    } else {
        complete(Err(ErrorBody {
            code: result.error_code,
            message: result.error_message,
            stacktrace: None,
        }))
        .await;
    }
}

/// Serves the stream a peer opened to us: its calls run on our workers and their
/// answers go back on the same stream.
pub async fn serve(
    node: Arc<Node>,
    caller: &Caller,
    request: Request<Streaming<InvocationFrame>>,
) -> Result<Response<InvocationStream>, Status> {
    let peer: NodeId = request
        .metadata()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            Status::invalid_argument("the invocation stream must name its node in x-quorum-node")
        })?;
    caller.require_speaks_as(peer, "the invocation stream")?;
    let mut inbound = request.into_inner();
    let (tx, rx) = mpsc::channel(LINK_CAPACITY);
    lock(&node.links.incoming).insert(peer, tx.clone());
    let reader = node.clone();
    tokio::spawn(async move {
        let mut checks = RelayedChecks::default();
        loop {
            let next = tokio::select! {
                next = inbound.message() => next,
                _ = reader.shutdown.cancelled() => break,
            };
            let Ok(Some(frame)) = next else { break };
            on_call_frame(&reader, peer, frame, &mut checks).await;
        }
        checks.finish().await;
        {
            let mut incoming = lock(&reader.links.incoming);
            if incoming
                .get(&peer)
                .is_some_and(|current| current.same_channel(&tx))
            {
                incoming.remove(&peer);
            }
        }
        reader.router.caller_node_lost(peer).await;
    });
    // The answers end with the node, so a shutting-down node never waits on this stream.
    let stop = node.shutdown.clone();
    let outbound = super::receiver_stream(rx).take_until(async move { stop.cancelled().await });
    Ok(Response::new(outbound.boxed()))
}

async fn on_call_frame(
    node: &Arc<Node>,
    peer: NodeId,
    frame: InvocationFrame,
    checks: &mut RelayedChecks,
) {
    match frame.kind {
        Some(Kind::Invoke(invoke)) => match decode_invoke(invoke) {
            Some(call) => {
                if let Some(handed_back) = node.router.deliver(peer, call).await {
                    // Waits for the worker to move: never on the stream's reader.
                    let node = node.clone();
                    tokio::spawn(async move { node.router.reroute(handed_back).await });
                }
            }
            None => warn!(node = node.id, peer, "malformed invoke frame dropped"),
        },
        Some(Kind::Cancel(cancel)) => {
            if let Some(id) = parse_invocation(&cancel.invocation_id) {
                node.router.cancel_remote(peer, id);
            }
        }
        Some(Kind::WorkerAnswer(answer)) => {
            let Some(worker) = uuid::Uuid::parse_str(&answer.worker_id).ok().map(WorkerId) else {
                warn!(
                    node = node.id,
                    peer, "malformed worker answer frame dropped"
                );
                return;
            };
            let node = node.clone();
            let (invocation_id, function_id) = (answer.invocation_id, answer.function_id);
            let deliver = move |outcome| async move {
                let owed = OwedAnswer {
                    invocation_id,
                    function_id,
                    outcome,
                };
                node.router.deliver_owed(worker, owed).await
            };
            if answer.ok {
                checks.check_then(peer, answer.value_json, deliver).await;
            } else {
                deliver(Err(ErrorBody {
                    code: answer.error_code,
                    message: answer.error_message,
                    stacktrace: None,
                }))
                .await;
            }
        }
        Some(Kind::Result(_)) | None => {
            debug!(
                node = node.id,
                peer, "unexpected frame on an incoming invocation stream dropped"
            )
        }
    }
}

fn invoke_frame(me: NodeId, call: RemoteCall) -> InvocationFrame {
    let request = call.request;
    InvocationFrame {
        kind: Some(Kind::Invoke(Invoke {
            invocation_id: call.invocation_id.to_string(),
            caller_node: me.to_string(),
            owner_worker_id: call.owner.to_string(),
            function_id: request.function_id,
            namespace: request.namespace,
            data_json: serde_json::to_vec(&request.data).unwrap_or_default(),
            metadata_json: request
                .metadata
                .map(|m| serde_json::to_vec(&m).unwrap_or_default())
                .unwrap_or_default(),
            traceparent: request.traceparent.unwrap_or_default(),
            baggage: request.baggage.unwrap_or_default(),
            caller_worker_id: call
                .origin
                .as_ref()
                .map(|(w, _)| w.to_string())
                .unwrap_or_default(),
            caller_invocation_id: call.origin.map(|(_, id)| id).unwrap_or_default(),
        })),
    }
}

fn decode_invoke(invoke: Invoke) -> Option<RemoteCall> {
    let owner = uuid::Uuid::parse_str(&invoke.owner_worker_id)
        .ok()
        .map(WorkerId)?;
    let origin = uuid::Uuid::parse_str(&invoke.caller_worker_id)
        .ok()
        .map(|w| (WorkerId(w), invoke.caller_invocation_id.clone()));
    Some(RemoteCall {
        invocation_id: parse_invocation(&invoke.invocation_id)?,
        owner,
        origin,
        request: CallRequest {
            function_id: invoke.function_id,
            namespace: invoke.namespace,
            data: decode_json(&invoke.data_json).unwrap_or(Value::Null),
            metadata: decode_json(&invoke.metadata_json),
            traceparent: Some(invoke.traceparent).filter(|s| !s.is_empty()),
            baggage: Some(invoke.baggage).filter(|s| !s.is_empty()),
        },
    })
}

fn result_frame(
    invocation_id: InvocationId,
    outcome: Result<Payload, ErrorBody>,
) -> InvocationFrame {
    let result = match outcome {
        Ok(value) => CallResult {
            invocation_id: invocation_id.to_string(),
            ok: true,
            value_json: serde_json::to_vec(&value).unwrap_or_default(),
            error_code: String::new(),
            error_message: String::new(),
        },
        Err(error) => CallResult {
            invocation_id: invocation_id.to_string(),
            ok: false,
            value_json: Vec::new(),
            error_code: error.code,
            error_message: error.message,
        },
    };
    InvocationFrame {
        kind: Some(Kind::Result(result)),
    }
}

fn worker_answer_frame(worker: WorkerId, answer: OwedAnswer) -> InvocationFrame {
    let (ok, value_json, error_code, error_message) = match answer.outcome {
        Ok(value) => (
            true,
            serde_json::to_vec(&value).unwrap_or_default(),
            String::new(),
            String::new(),
        ),
        Err(error) => (false, Vec::new(), error.code, error.message),
    };
    InvocationFrame {
        kind: Some(Kind::WorkerAnswer(WorkerAnswer {
            worker_id: worker.to_string(),
            invocation_id: answer.invocation_id,
            function_id: answer.function_id,
            ok,
            value_json,
            error_code,
            error_message,
        })),
    }
}

fn parse_invocation(text: &str) -> Option<InvocationId> {
    uuid::Uuid::parse_str(text).ok().map(InvocationId)
}

fn decode_json(bytes: &[u8]) -> Option<Value> {
    if bytes.is_empty() {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
