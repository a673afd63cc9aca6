//! Typed errors of the gRPC layer, and the one place where handler failures become a gRPC
//! [`tonic::Status`] for the peer (or CLI) on the other end.

use std::time::Duration;

use tonic::Code;
use tonic::Status;

/// Why a call to another node failed, from the caller's side.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The peer address cannot be turned into an endpoint (a configuration mistake).
    #[error("`{addr}` is not a usable cluster address: {source}")]
    BadAddress {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// Nothing answered at that address (connection refused or reset, node down).
    #[error("node at {addr} is unreachable: {message}")]
    Unreachable { addr: String, message: String },
    /// The peer did not answer in time.
    #[error("node at {addr} did not answer within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    /// The peer answered with an error of its own.
    #[error("node at {addr}: {message} ({code:?})")]
    Remote {
        addr: String,
        code: Code,
        message: String,
    },
    /// A payload could not be encoded, or the peer's could not be decoded.
    #[error("malformed payload for {what} with {addr}: {source}")]
    Codec {
        what: &'static str,
        addr: String,
        #[source]
        source: serde_json::Error,
    },
    /// The operator's certificates cannot be used.
    #[error("{0}")]
    Credentials(String),
    /// The peer broke the protocol (e.g. a reply missing its mandatory part).
    #[error("node at {addr} broke the protocol: {message}")]
    Protocol { addr: String, message: String },
}

impl RpcError {
    /// Classifies a gRPC status received from (or on the way to) `addr`.
    pub fn from_status(addr: &str, status: Status) -> Self {
        match status.code() {
            // tonic reports connect and transport failures as `Unavailable`.
            Code::Unavailable => RpcError::Unreachable {
                addr: addr.to_string(),
                message: status.message().to_string(),
            },
            Code::DeadlineExceeded => RpcError::Remote {
                addr: addr.to_string(),
                code: Code::DeadlineExceeded,
                message: status.message().to_string(),
            },
            code => RpcError::Remote {
                addr: addr.to_string(),
                code,
                message: status.message().to_string(),
            },
        }
    }

    /// Whether the request certainly never reached a handler on the peer, so repeating it
    /// elsewhere cannot apply it twice.
    pub fn never_delivered(&self) -> bool {
        matches!(
            self,
            RpcError::Unreachable { .. } | RpcError::BadAddress { .. }
        )
    }
}

/// Why a handler refused a request, turned into a [`Status`] at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request's payload could not be decoded.
    #[error("malformed {what}: {reason}")]
    BadRequest { what: &'static str, reason: String },
    /// The request is well-formed but cannot be done now or ever (e.g. it would lose quorum).
    #[error("{0}")]
    Refused(String),
    /// The node cannot serve right now (no leader, Raft stopped); the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside this node.
    #[error("{0}")]
    Internal(String),
    /// The caller's certificate does not allow this request.
    #[error("{0}")]
    Forbidden(String),
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        let message = err.to_string();
        match err {
            ServiceError::BadRequest { .. } => Status::invalid_argument(message),
            ServiceError::Refused(_) => Status::failed_precondition(message),
            ServiceError::Unavailable(_) => Status::unavailable(message),
            ServiceError::Internal(_) => Status::internal(message),
            ServiceError::Forbidden(_) => Status::permission_denied(message),
        }
    }
}
