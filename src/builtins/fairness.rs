//! Fair built-ins: one connection's discovery queries cannot take the node's attention from
//! the others.
//!
//! - Each connection may have [`Config::max_builtin_calls_per_connection`] queries running.
//!   Beyond that its reader waits for one to finish: the connection's own socket stops
//!   being read (TCP backpressure), it gets every answer in order of completion and no
//!   error, and nobody else notices. An error instead would make a pipelining client retry
//!   in a loop, and waiting costs the node nothing but the client's own kernel buffers.
//! - Queries that only read the local replica run on the blocking pool, at most
//!   [`Config::max_running_builtin_queries`] at once node-wide, and their answer is
//!   serialised there too: the runtime threads that carry pings and call relays only queue
//!   the finished frame.
//!
//! [`Config::max_builtin_calls_per_connection`]: crate::config::Config::max_builtin_calls_per_connection
//! [`Config::max_running_builtin_queries`]: crate::config::Config::max_running_builtin_queries

use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::auth::grant::Grant;
use crate::ids::WorkerId;
use crate::node::Node;
use crate::protocol::Payload;
use crate::router::{CallRequest, Caller, FramedAnswer, Routed};

/// A connection's share of built-ins: permits for the queries it may run at once, and the
/// connection whatever it creates is counted against (a fire-and-forget call included).
#[derive(Clone)]
pub struct QueryShare {
    permits: Arc<Semaphore>,
    connection: WorkerId,
}

impl QueryShare {
    /// A share of `limit` queries at once for the connection `connection`.
    pub fn new(limit: usize, connection: WorkerId) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            connection,
        }
    }

    /// Waits for a free permit; the caller awaits it on the connection's reader.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }
}

/// The node-wide cap on built-in queries running on the blocking pool.
pub struct QuerySlots(Arc<Semaphore>);

impl QuerySlots {
    /// `slots` queries may run at once.
    pub fn new(slots: usize) -> Self {
        Self(Arc::new(Semaphore::new(slots)))
    }

    /// Waits for a slot; held until the permit is dropped.
    async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().acquire_owned().await.ok()
    }
}

/// Built-ins that only read the registry: counted against the connection's share.
/// `engine::register_trigger` and friends are left out, since they may wait for an answer
/// that arrives on this very connection.
fn is_query(function_id: &str) -> bool {
    super::is_local_query(function_id)
        || matches!(
            function_id,
            "engine::workers::list" | "engine::workers::info"
        )
}

/// Routes a worker's call. A built-in runs on its own task after the connection's share
/// admitted it (awaited here, so a connection over its share is not read meanwhile).
pub async fn route_call(
    node: Arc<Node>,
    grant: Arc<Grant>,
    share: &QueryShare,
    caller: Caller,
    request: CallRequest,
    started: Instant,
) {
    let Routed::Builtin(caller, request) = node.router.route(caller, request).await else {
        return;
    };
    let permit = match is_query(&request.function_id) {
        true => share.admit().await,
        false => None,
    };
    // A void call or one without an invocation id has no worker caller, yet what it creates
    // still counts against the connection that sent it.
    let connection = share.connection;
    tokio::spawn(async move {
        let _permit = permit;
        if super::is_local_query(&request.function_id) {
            return run_local_query(node, grant, caller, request, started).await;
        }
        let result = super::call(&node, Some(connection), &request.function_id, request.data).await;
        let result = grant
            .filter_builtin(&request.function_id, result)
            .map(Payload::from);
        node.router
            .answer(caller, &request.function_id, result, started)
            .await;
    });
}

/// What the blocking pool hands back: a worker's finished frame, or a plain answer for any
/// other caller.
enum Finished {
    Framed(FramedAnswer),
    Plain(Caller, Result<Payload, crate::protocol::ErrorBody>),
}

/// Runs a replica query on the blocking pool under the node-wide cap, answer serialised there.
async fn run_local_query(
    node: Arc<Node>,
    grant: Arc<Grant>,
    caller: Caller,
    request: CallRequest,
    started: Instant,
) {
    let Some(_slot) = node.query_slots.acquire().await else {
        return;
    };
    let function_id = request.function_id.clone();
    let on_pool = node.clone();
    let work = tokio::task::spawn_blocking(move || {
        let id = &request.function_id;
        let result = super::local_query(&on_pool, id, request.data);
        let result = grant.filter_payload(id, result);
        match caller {
            Caller::Worker {
                worker,
                invocation_id,
            } => Finished::Framed(FramedAnswer::build(worker, invocation_id, id, result)),
            other => Finished::Plain(other, result),
        }
    });
    match work.await {
        Ok(Finished::Framed(answer)) => {
            node.router
                .answer_framed(answer, &function_id, started)
                .await
        }
        Ok(Finished::Plain(caller, result)) => {
            node.router
                .answer(caller, &function_id, result, started)
                .await
        }
        Err(err) => {
            // A panic inside a query: its caller's SDK times out; the node goes on.
            warn!(node = node.id, function_id = %function_id, error = %err, "built-in query failed");
        }
    }
}
