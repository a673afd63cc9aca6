//! The `Invocations` stream between two nodes: invoke, result and cancel frames multiplexed
//! over one long-lived bidirectional gRPC stream per pair of nodes.
//!
//! Not built yet: the integrator replaces this file (only this file) with the real handler.
//! [`InvocationStream`] is the response stream type the service declares, so changing it here
//! changes it there too.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::pb::InvocationFrame;
use crate::node::Node;

/// The stream of frames this node sends back to the peer that opened the stream.
pub type InvocationStream = Pin<Box<dyn Stream<Item = Result<InvocationFrame, Status>> + Send>>;

/// Serves one peer's invocation stream.
///
/// Placeholder: calls between workers on different nodes are not forwarded yet, so the stream
/// is refused with `UNIMPLEMENTED`. The integrator replaces this function in this file.
pub async fn serve(
    _node: Arc<Node>,
    _request: Request<Streaming<InvocationFrame>>,
) -> Result<Response<InvocationStream>, Status> {
    Err(Status::unimplemented(
        "the invocation stream between nodes is not implemented yet",
    ))
}
