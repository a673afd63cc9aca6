//! One worker connection: the reader loop, namespace buffering, announcements,
//! and disconnect cleanup.
//!
//! Frames from one connection are handled strictly in arrival order; consecutive
//! registrations already read are committed through Raft as one batch (`batch.rs`) before
//! any other frame is handled, while calls are handed to the router (built-ins run on
//! their own task, `builtins::fairness`) so a slow handler never blocks the socket. A
//! malformed frame is logged and dropped; it never ends the connection.

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, info_span, warn, Instrument};

use super::batch::{self, Batch};
use super::connections::{now_ms, ConnectionHandle, Outbound};
use super::frames::{announced_meta, rejection_frame, screen_sizes};
use super::idle::{IdleTimer, IDLE_LIMIT};
use super::log_limit::{LogLimit, Noise};
use super::{writer, WorkerSocket};
use crate::auth::{grant::Grant, tokens::sha256_hex};
use crate::budget::{self, Outbox};
use crate::builtins::fairness::{route_call, QueryShare};
use crate::ids::{WorkerId, DEFAULT_NAMESPACE};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::protocol::error::EngineError;
use crate::protocol::messages::{error_body_from, Action, InvokeFunction, RegisterTrigger};
use crate::protocol::names::{echo, namespace_problem};
use crate::protocol::{is_telemetry_frame, Incoming, Outgoing};
use crate::registry::{Announcement, Command, Registration};
use crate::router::{CallRequest, Caller};

/// The engine pings every worker this often, so half-open sockets are found.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a drained connection is still read for calls sent before the worker saw the
/// close.
const LINGER: Duration = Duration::from_secs(2);
/// WebSocket close codes used here.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_INTERNAL: u16 = 1011;
const CLOSE_TRY_AGAIN: u16 = 1013;

/// The function id SDKs call to announce themselves.
const REGISTER_WORKER: &str = "engine::workers::register";

/// Where the connection's namespace stands.
enum NamespaceState {
    /// Not announced yet: registrations wait here, in order.
    Pending(Vec<Registration>),
    /// Fixed for the rest of the connection.
    Fixed(String),
}

struct Session {
    node: Arc<Node>,
    worker: WorkerId,
    outbox: Outbox<Outbound>,
    namespace: NamespaceState,
    /// What the connection's worker token allows.
    grant: Arc<Grant>,
    /// Set when the session decided to end (name conflict, fatal error).
    closing: bool,
    /// Keeps the warnings this client causes to a line per kind and interval.
    noise: LogLimit,
    /// Whether the connection already made its one `reattach` claim.
    reattached: bool,
    /// Registrations read in one burst, committed together.
    batch: Batch,
    /// The built-in queries this connection may run at once.
    share: QueryShare,
}

/// Serves one upgraded worker socket until it closes, then cleans up after it.
pub async fn run(node: Arc<Node>, ws: WorkerSocket, peer: SocketAddr, grant: Arc<Grant>) {
    let refusal = if node.is_fenced() {
        // Cut off from the cluster: send the worker to a node that has a quorum.
        Some("engine node cut off from its cluster")
    } else if node.is_draining() {
        Some("engine node draining for a shutdown")
    } else {
        None
    };
    if let Some(reason) = refusal {
        let mut ws = ws;
        let close = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CLOSE_TRY_AGAIN.into(),
            reason: reason.into(),
        };
        let _ = ws.close(Some(close)).await;
        return;
    }
    let share = ws.get_ref().share().clone();
    let (outbox, outbox_rx) = budget::outbox(share.clone(), node.config.max_outbound_queue_bytes);
    let (sink, mut stream) = ws.split();
    let worker = WorkerId::new();
    share.identify(worker);
    // The writer's own logs (an unsendable message) carry the connection they are about.
    let writer = tokio::spawn(
        writer::run(
            sink,
            outbox_rx,
            PING_INTERVAL,
            node.config.outbound_stall_timeout,
        )
        .instrument(info_span!("writer", node = node.id, worker_id = %worker)),
    );
    let token = uuid::Uuid::new_v4().to_string();
    let token_hash = sha256_hex(&token);
    let cancel = node.shutdown.child_token();

    let connected = node
        .commit(Command::WorkerConnected {
            worker,
            node: node.id,
            token_hash: token_hash.clone(),
            at_ms: now_ms(),
            ip_address: Some(peer.ip().to_string()),
        })
        .await;
    if let Err(err) = connected {
        warn!(node = node.id, worker_id = %worker, error = %err, "cannot record the connection; closing it");
        let _ = outbox.push(Outbound::Close {
            code: CLOSE_INTERNAL,
            reason: "registry unavailable".into(),
        });
        drop(outbox);
        let _ = writer.await;
        return;
    }
    node.connections.insert(
        worker,
        ConnectionHandle {
            outbox: outbox.clone(),
            cancel: cancel.clone(),
            grant: grant.clone(),
        },
    );
    Metrics::bump(&node.metrics.workers_connected);
    info!(node = node.id, worker_id = %worker, peer = %peer, "worker connected");
    let hello = Outgoing::WorkerRegistered {
        worker_id: worker.to_string(),
        reattach_token: token,
    };
    let _ = outbox.push(Outbound::Text(hello.to_text()));

    let mut session = Session {
        node: node.clone(),
        worker,
        outbox,
        namespace: NamespaceState::Pending(Vec::new()),
        grant,
        closing: false,
        noise: LogLimit::default(),
        reattached: false,
        batch: Batch::default(),
        share: QueryShare::new(node.config.max_builtin_calls_per_connection, worker),
    };
    let grace = tokio::time::sleep(node.config.registration_grace);
    tokio::pin!(grace);
    // One timer and one cancellation waiter for the connection's life: arming a new
    // timeout per frame costs a timer-wheel lock on every call.
    let mut idle = IdleTimer::new();
    let idle_check = tokio::time::sleep(IDLE_LIMIT);
    tokio::pin!(idle_check);
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    while !session.closing {
        tokio::select! {
            _ = &mut cancelled => {
                let drained = node.is_draining() && !node.shutdown.is_cancelled();
                let fenced = node.is_fenced() && !node.shutdown.is_cancelled();
                let (code, reason) = if node.shutdown.is_cancelled() {
                    (CLOSE_GOING_AWAY, "engine node shutting down")
                } else if node.is_fenced() {
                    (CLOSE_GOING_AWAY, "engine node cut off from its cluster")
                } else if drained {
                    (CLOSE_GOING_AWAY, "engine node draining for a shutdown")
                } else {
                    (CLOSE_NORMAL, "connection retired")
                };
                if node.shutdown.is_cancelled() {
                    // This node stops: nothing will carry their answers.
                    node.router.stop_waiting(worker).await;
                    session.close(code, reason);
                } else {
                    // Drained, fenced or retired: its SDK keeps its calls pending across the
                    // reconnect, so their answers wait here until it reattaches.
                    node.router.close_now(worker, token_hash.clone());
                    session.close(code, reason);
                    if drained || fenced {
                        session.linger(&mut stream).await;
                    }
                }
                break;
            }
            _ = &mut grace, if session.is_pending() => session.grace_expired().await,
            _ = &mut idle_check => match idle.deadline() {
                Some(later) => idle_check.as_mut().reset(later),
                None => {
                    info!(node = node.id, worker_id = %worker, "no frame for the idle limit; closing");
                    break;
                }
            },
            frame = stream.next() => {
                idle.saw_frame();
                // What the socket already holds is handled at once, so its consecutive
                // registrations commit together; the batch is empty whenever we wait.
                for read in batch::ready_after(frame, &mut stream) {
                    share.settle_inbound();
                    if session.closing || !session.take(read).await {
                        session.closing = true;
                    }
                }
                session.flush_registrations().await;
            }
        }
    }
    // The socket ends before the disconnect is recorded: on a fenced node that commit waits
    // up to 15 s for a leader, and the SDK reconnects elsewhere only once TCP closes.
    drop(stream);
    session.cleanup().await;
    drop(session);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

impl Session {
    fn is_pending(&self) -> bool {
        matches!(self.namespace, NamespaceState::Pending(_))
    }

    fn fixed_namespace(&self) -> &str {
        match &self.namespace {
            NamespaceState::Fixed(ns) => ns,
            NamespaceState::Pending(_) => DEFAULT_NAMESPACE,
        }
    }

    /// Queues a frame for the worker; never waits (the outbox is bounded in bytes).
    fn send(&self, frame: Outgoing) {
        let _ = self.outbox.push(Outbound::Text(frame.to_text()));
    }

    fn close(&mut self, code: u16, reason: &str) {
        self.closing = true;
        let _ = self.outbox.push(Outbound::Close {
            code,
            reason: reason.to_string(),
        });
    }

    /// After a drain or fencing closed the socket: calls the worker sent before it saw the
    /// close are still routed (their answers follow the worker to its next connection);
    /// everything else is dropped. Ends with the worker's own close, or after [`LINGER`].
    async fn linger(&mut self, stream: &mut futures_util::stream::SplitStream<WorkerSocket>) {
        let until = tokio::time::Instant::now() + LINGER;
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, stream.next()).await {
            let bytes = match &message {
                Message::Text(text) => text.as_bytes(),
                Message::Binary(bytes) => bytes,
                Message::Close(_) => return,
                _ => continue,
            };
            if let Ok(Incoming::InvokeFunction(call)) = crate::protocol::decode(bytes) {
                debug!(node = self.node.id, worker_id = %self.worker, function_id = %call.function_id,
                    "call sent before the drain's close routed");
                self.invoke(call).await;
            }
        }
    }

    /// Disconnect cleanup: stop calls at once, then remove the worker cluster-wide.
    async fn cleanup(&self) {
        let node = &self.node;
        node.connections.remove(self.worker);
        Metrics::bump(&node.metrics.workers_disconnected);
        node.router.worker_gone(self.worker).await;
        if let Err(err) = node
            .commit(Command::WorkerDisconnected {
                worker: self.worker,
            })
            .await
        {
            warn!(node = node.id, worker_id = %self.worker, error = %err, "could not record the disconnect");
        }
        info!(node = node.id, worker_id = %self.worker, "worker disconnected");
    }

    /// Handles one read from the socket; false once the socket has ended.
    async fn take(&mut self, read: batch::Read) -> bool {
        match read {
            None | Some(Ok(Message::Close(_))) => return false,
            Some(Err(err)) => {
                if matches!(err, WsError::Capacity(_)) {
                    self.close(CLOSE_TOO_BIG, "message over 64 MiB");
                }
                debug!(node = self.node.id, worker_id = %self.worker, error = %err, "socket error");
                return false;
            }
            Some(Ok(Message::Text(text))) => self.handle_frame(text.into()).await,
            Some(Ok(Message::Binary(bytes))) if is_telemetry_frame(&bytes) => {
                Metrics::bump(&self.node.metrics.telemetry_frames);
            }
            Some(Ok(Message::Binary(bytes))) => self.handle_frame(bytes).await,
            Some(Ok(_)) => {}
        }
        true
    }

    async fn handle_frame(&mut self, bytes: bytes::Bytes) {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let frame_bytes = bytes.len();
        let message = match super::decode::decode(bytes).await {
            Ok(message) => message,
            Err(err) => {
                if let Some(suppressed) = self.noise.admit(Noise::MalformedFrame) {
                    warn!(node = self.node.id, worker_id = %self.worker, error = %echo(&err.to_string()), suppressed, "malformed or unknown frame dropped");
                }
                return;
            }
        };
        if batch::is_registration(&message) {
            self.batch.note_frame(frame_bytes);
        } else {
            self.flush_registrations().await;
        }
        match message {
            Incoming::InvokeFunction(call) => self.invoke(call).await,
            Incoming::InvocationResult(result) => {
                let outcome = match result.error {
                    Some(error) => Err(error_body_from(error)),
                    None => Ok(result.result.unwrap_or_default()),
                };
                self.node
                    .router
                    .complete(self.worker, &result.invocation_id, outcome)
                    .await;
            }
            Incoming::RegisterFunction(f) => {
                self.register(Registration::Function {
                    id: f.id,
                    description: f.description,
                    request_format: f.request_format,
                    response_format: f.response_format,
                    metadata: f.metadata,
                    invocation: f.invocation,
                })
                .await
            }
            Incoming::UnregisterFunction(f) => {
                self.register(Registration::UnregisterFunction { id: f.id })
                    .await
            }
            Incoming::RegisterTriggerType(t) => {
                if let Some(problem) = namespace_problem("namespace", &t.namespace) {
                    if let Some(suppressed) = self.noise.admit(Noise::RefusedRegistration) {
                        warn!(node = self.node.id, worker_id = %self.worker, %problem, suppressed, "trigger type with an invalid namespace ignored");
                    }
                    return;
                }
                self.register(Registration::TriggerType {
                    namespace: t.namespace,
                    id: t.id,
                    description: t.description.unwrap_or_default(),
                    trigger_request_format: t.trigger_request_format,
                    call_request_format: t.call_request_format,
                })
                .await
            }
            Incoming::UnregisterTriggerType(t) => {
                self.register(Registration::UnregisterTriggerType {
                    namespace: t.namespace.filter(|ns| !ns.trim().is_empty()),
                    id: t.id,
                })
                .await
            }
            Incoming::RegisterTrigger(t) => self.register_trigger(t).await,
            Incoming::UnregisterTrigger(t) => {
                self.register(Registration::UnregisterTrigger { id: t.id })
                    .await
            }
            Incoming::TriggerRegistrationResult(answer) => {
                let error = answer.error.map(error_body_from);
                let waiter = self.node.lock_trigger_waiters().remove(&answer.id);
                let waited_here = waiter.is_some();
                if let Some(waiter) = waiter {
                    let _ = waiter.send(error.clone());
                }
                let durable = self
                    .node
                    .registry()
                    .trigger(&answer.id)
                    .is_some_and(|t| t.owner.is_none());
                if error.is_none() && durable && !waited_here {
                    // The `engine::register_trigger` call waits on another node.
                    let accepted = Command::TriggerAccepted {
                        provider: self.worker,
                        trigger_id: answer.id.clone(),
                    };
                    if let Err(err) = self.node.commit(accepted).await {
                        warn!(node = self.node.id, worker_id = %self.worker, error = %err, "could not pass a provider's acceptance on");
                    }
                }
                if let Some(error) = error {
                    let refused = Command::TriggerRefused {
                        provider: self.worker,
                        trigger_id: answer.id,
                        error_code: error.code,
                        error_message: error.message,
                    };
                    if let Err(err) = self.node.commit(refused).await {
                        warn!(node = self.node.id, worker_id = %self.worker, error = %err, "could not park a refused trigger");
                    }
                }
            }
            Incoming::Reattach(reattach) => {
                self.reattach(reattach.previous_worker_id, reattach.reattach_token)
                    .await
            }
            Incoming::RegisterService(s) => {
                self.register(Registration::Service {
                    id: s.id,
                    name: s.name,
                    description: s.description,
                    parent_service_id: s.parent_service_id,
                })
                .await
            }
            Incoming::Ping => self.send(Outgoing::Pong),
            Incoming::Pong | Incoming::WorkerRegistered(_) | Incoming::RegistrationRejected(_) => {}
        }
    }

    /// Buffers a registration while the namespace is pending, else commits it.
    async fn register(&mut self, item: Registration) {
        let limit = self.node.config.max_buffered_registrations;
        match &mut self.namespace {
            NamespaceState::Pending(buffer) if buffer.len() >= limit => {
                let Some(suppressed) = self.noise.admit(Noise::RefusedRegistration) else {
                    return;
                };
                warn!(node = self.node.id, worker_id = %self.worker, limit, suppressed, "too many registrations before the announcement; dropped");
            }
            NamespaceState::Pending(buffer) => buffer.push(item),
            NamespaceState::Fixed(_) if self.batch.push(item) => self.flush_registrations().await,
            NamespaceState::Fixed(_) => {}
        }
    }

    /// Commits the registrations batched so far, if any.
    async fn flush_registrations(&mut self) {
        let items = self.batch.take();
        if !items.is_empty() {
            self.commit_registrations(items).await;
        }
    }

    /// Commits registrations and tells the worker about any refusal. Returns whether the
    /// announcement in them (if any) lost its name lease.
    async fn commit_registrations(&mut self, items: Vec<Registration>) -> bool {
        let (items, refused) = self.grant.screen(self.fixed_namespace(), items);
        let cap = self.node.config.max_registration_bytes;
        let (items, oversized) = screen_sizes(self.fixed_namespace(), items, cap);
        for frame in refused.into_iter().chain(oversized) {
            self.send(frame);
        }
        let command = Command::Registrations {
            worker: self.worker,
            items,
        };
        let outcome = match self.node.commit(command).await {
            Ok(outcome) => outcome,
            Err(err) => {
                warn!(node = self.node.id, worker_id = %self.worker, error = %err, "registrations not committed");
                return false;
            }
        };
        for rejection in outcome.rejections {
            self.send(rejection_frame(rejection));
        }
        outcome.name_rejected
    }

    async fn register_trigger(&mut self, t: RegisterTrigger) {
        for (field, value) in [
            ("namespace", &t.namespace),
            ("trigger_namespace", &t.trigger_namespace),
        ] {
            if let Some(problem) = namespace_problem(field, value) {
                let error = EngineError::InvalidNamespace(problem).body();
                self.send(Outgoing::TriggerRegistrationResult {
                    id: t.id.clone(),
                    trigger_type: t.trigger_type.clone(),
                    function_id: t.function_id.clone(),
                    error: Some(error),
                });
                return;
            }
        }
        self.register(Registration::Trigger {
            id: t.id,
            trigger_type: t.trigger_type,
            function_id: t.function_id,
            config: t.config.unwrap_or(Value::Null),
            metadata: t.metadata,
            namespace: t.namespace,
            trigger_namespace: t.trigger_namespace,
        })
        .await
    }

    /// No announcement in time: the namespace becomes `default` and the buffer applies.
    async fn grace_expired(&mut self) {
        let buffered = match std::mem::replace(
            &mut self.namespace,
            NamespaceState::Fixed(DEFAULT_NAMESPACE.to_string()),
        ) {
            NamespaceState::Pending(buffered) => buffered,
            NamespaceState::Fixed(ns) => {
                self.namespace = NamespaceState::Fixed(ns);
                return;
            }
        };
        debug!(node = self.node.id, worker_id = %self.worker, "grace period over; namespace is default");
        let mut items = vec![Registration::FixNamespace {
            namespace: DEFAULT_NAMESPACE.to_string(),
        }];
        items.extend(buffered);
        self.commit_registrations(items).await;
    }

    async fn invoke(&mut self, call: InvokeFunction) {
        let started = std::time::Instant::now();
        let is_void = call.action == Some(Action::Void);
        let caller = match (&call.invocation_id, is_void) {
            (Some(id), false) => Caller::Worker {
                worker: self.worker,
                invocation_id: id.clone(),
            },
            _ => Caller::Discard,
        };
        if let Some(problem) = namespace_problem("namespace", &call.namespace) {
            let error = EngineError::InvalidNamespace(problem);
            self.node
                .router
                .answer(caller, &call.function_id, Err(error.body()), started)
                .await;
            return;
        }
        let namespace = call
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        if let Err(error) = self
            .grant
            .check_call(&namespace, &call.function_id, call.data.as_ref())
        {
            let router = &self.node.router;
            return router
                .answer(caller, &call.function_id, Err(error), started)
                .await;
        }
        if call.function_id == REGISTER_WORKER && namespace == DEFAULT_NAMESPACE {
            let answer = self.announce(call.data.unwrap_or(Value::Null)).await;
            self.node
                .router
                .answer(caller, REGISTER_WORKER, answer.map(Into::into), started)
                .await;
            return;
        }
        if matches!(call.action, Some(Action::Enqueue { .. })) {
            let error = EngineError::EnqueueUnavailable.body();
            self.node
                .router
                .answer(caller, &call.function_id, Err(error), started)
                .await;
            return;
        }
        let request = CallRequest {
            function_id: call.function_id,
            namespace,
            data: call.data.unwrap_or(Value::Null),
            metadata: call.metadata,
            traceparent: call.traceparent,
            baggage: call.baggage,
        };
        if self.node.router.would_hold(&request) {
            // Its worker is moving off a draining node: wait on a task of its own, so this
            // connection's other frames (its answers above all) keep flowing.
            let (node, grant, share) = (self.node.clone(), self.grant.clone(), self.share.clone());
            let call =
                async move { route_call(node, grant, &share, caller, request, started).await };
            tokio::spawn(call);
            return;
        }
        let (node, grant) = (self.node.clone(), self.grant.clone());
        route_call(node, grant, &self.share, caller, request, started).await;
    }

    /// `engine::workers::register`: fix the namespace, take the name lease, apply the
    /// buffered registrations, all in one committed command.
    async fn announce(&mut self, payload: Value) -> Result<Value, crate::protocol::ErrorBody> {
        let declared = match payload.get("namespace") {
            None | Some(Value::Null) => DEFAULT_NAMESPACE.to_string(),
            Some(Value::String(ns)) => match namespace_problem("namespace", &Some(ns.clone())) {
                Some(problem) => return Err(EngineError::InvalidNamespace(problem).body()),
                None => ns.clone(),
            },
            Some(_) => {
                let error = EngineError::InvalidNamespace("`namespace` must be a string".into());
                return Err(error.body());
            }
        };
        let meta = announced_meta(&payload, self.node.config.max_registration_bytes)
            .map_err(|error| error.body())?;
        self.grant.check_announcement(&declared, &meta)?;
        let (namespace, buffered) = match std::mem::replace(
            &mut self.namespace,
            NamespaceState::Pending(vec![]),
        ) {
            NamespaceState::Pending(buffered) => (declared, buffered),
            NamespaceState::Fixed(fixed) => {
                if fixed != declared && self.noise.admit(Noise::ProtocolViolation).is_some() {
                    warn!(node = self.node.id, worker_id = %self.worker, fixed = %fixed, declared = %declared, "late announcement keeps the namespace fixed by the grace timer");
                }
                (fixed, vec![])
            }
        };
        let mut items = vec![Registration::Announce(Announcement {
            namespace: namespace.clone(),
            meta,
        })];
        items.extend(buffered);
        self.namespace = NamespaceState::Fixed(namespace);
        if self.commit_registrations(items).await {
            self.close(CLOSE_POLICY, "worker name already in use");
            return Ok(json!({"success": false}));
        }
        Ok(json!({"success": true}))
    }

    /// `reattach` (`gateway::reattach`): honoured once, as the first claim of the
    /// connection; any later one is a protocol violation that costs no Raft write.
    async fn reattach(&mut self, previous: Option<String>, token: Option<String>) {
        if std::mem::replace(&mut self.reattached, true) {
            if let Some(suppressed) = self.noise.admit(Noise::ProtocolViolation) {
                warn!(node = self.node.id, worker_id = %self.worker, suppressed, "second reattach on a connection ignored");
            }
            return;
        }
        let claim = super::reattach::Claim { previous, token };
        claim.settle(&self.node, self.worker, &mut self.noise).await;
    }
}
