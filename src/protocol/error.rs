//! The one place where quorum's internal failures become protocol `ErrorBody` codes.
//! No other module spells a wire error code.

use serde::{Deserialize, Serialize};

/// The `error` object of an `invocationresult` or `triggerregistrationresult`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacktrace: Option<String>,
}

/// Why the engine itself ends a call or refuses a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Function {} not found in namespace {}.{elsewhere}", super::names::echo(.id), super::names::echo(.namespace))]
    FunctionNotFound {
        id: String,
        namespace: String,
        /// Empty, or " It is registered in namespace(s): a, b."
        elsewhere: String,
    },
    #[error("Invocation stopped")]
    InvocationStopped,
    #[error("the owner's connection is closed")]
    ChannelSendFailed,
    #[error("{0}")]
    InvalidNamespace(String),
    #[error("no queue provider is installed: quorum does not run queues yet, so `enqueue` cannot be delivered")]
    EnqueueUnavailable,
    #[error("Failed to deserialize input for {function_id}: {reason}")]
    Deserialization { function_id: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArguments(String),
    #[error("too many calls in flight on this connection (limit {limit})")]
    TooManyPendingCalls { limit: usize },
    #[error("{0}")]
    TriggerRegistrationFailed(String),
    #[error("the registry could not commit the change: {0}")]
    Unavailable(String),
    /// The leader did not propose the change: some member's binary cannot apply it yet (see
    /// `cluster::command_level`). Nothing was written; retry once every node is upgraded.
    #[error("the registry did not take the change yet: {0}")]
    HeldBack(String),
    #[error("the result is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The connection's worker token does not allow this (the message names the token's name
    /// and the rule, never the token).
    #[error("{0}")]
    Forbidden(String),
    /// A registration or announcement over the node's size cap (never proposed to Raft).
    #[error("{0}")]
    RegistrationTooLarge(String),
    /// `engine::channels::create` refused: the node holds its maximum, or is draining.
    #[error("{0}")]
    ChannelRefused(String),
    /// Another node relayed a result that is not one valid JSON value.
    #[error("the result relayed by node {peer} is not valid JSON: {reason}")]
    InvalidRelayedResult { peer: u64, reason: String },
    /// A built-in could not render its answer (never expected: its rows are plain JSON).
    #[error("the answer could not be rendered: {0}")]
    AnswerNotRendered(String),
}

impl EngineError {
    /// The wire code the SDKs know for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::FunctionNotFound { .. } => "function_not_found",
            Self::InvocationStopped => "invocation_stopped",
            Self::ChannelSendFailed => "channel_send_failed",
            Self::InvalidNamespace(_) => "INVALID_NAMESPACE",
            Self::EnqueueUnavailable => "enqueue_error",
            Self::Deserialization { .. } => "deserialization_error",
            Self::NotFound(_) => "NOT_FOUND",
            Self::InvalidArguments(_) => "INVALID_ARGUMENTS",
            Self::TooManyPendingCalls { .. } => "too_many_pending_calls",
            Self::TriggerRegistrationFailed(_) => "trigger_registration_failed",
            Self::Unavailable(_) | Self::HeldBack(_) => "engine_unavailable",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::RegistrationTooLarge(_) => "payload_too_large",
            Self::ChannelRefused(_) => "channel_unavailable",
            Self::AnswerNotRendered(_) => "invocation_failed",
            Self::InvalidRelayedResult { .. } => "invocation_failed",
        }
    }

    /// The `ErrorBody` a worker receives.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().to_string(),
            message: self.to_string(),
            stacktrace: None,
        }
    }
}

impl From<EngineError> for ErrorBody {
    fn from(err: EngineError) -> Self {
        err.body()
    }
}

/// `registrationrejected` code: another live worker owns this (namespace, function id).
pub const FUNCTION_NAMESPACE_CONFLICT: &str = "FUNCTION_NAMESPACE_CONFLICT";
/// `registrationrejected` code: another live worker holds this (namespace, worker name).
pub const WORKER_NAMESPACE_CONFLICT: &str = "WORKER_NAMESPACE_CONFLICT";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_not_found_message_matches_the_reference_wording() {
        let err = EngineError::FunctionNotFound {
            id: "math::add".into(),
            namespace: "default".into(),
            elsewhere: " It is registered in namespace(s): a, b.".into(),
        };
        assert_eq!(err.code(), "function_not_found");
        assert_eq!(
            err.to_string(),
            "Function math::add not found in namespace default. It is registered in namespace(s): a, b."
        );
    }

    #[test]
    fn invocation_stopped_has_the_sdk_known_body() {
        let body = EngineError::InvocationStopped.body();
        assert_eq!(body.code, "invocation_stopped");
        assert_eq!(body.message, "Invocation stopped");
    }
}
