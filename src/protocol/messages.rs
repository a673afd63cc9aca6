//! Frame shapes. `Incoming` is what a worker may send; `Outgoing` is what quorum sends.
//! Decoding ignores unknown fields and reads null as absent; blank strings are kept so
//! the session can answer `INVALID_NAMESPACE` where the protocol asks for it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ErrorBody;

/// A frame from a worker, by its lowercase `type` tag.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Incoming {
    RegisterFunction(RegisterFunction),
    UnregisterFunction(UnregisterById),
    InvokeFunction(InvokeFunction),
    InvocationResult(InvocationResult),
    RegisterTriggerType(RegisterTriggerType),
    UnregisterTriggerType(UnregisterTriggerType),
    RegisterTrigger(RegisterTrigger),
    UnregisterTrigger(UnregisterById),
    TriggerRegistrationResult(TriggerRegistrationResult),
    Reattach(Reattach),
    RegisterService(RegisterService),
    Ping,
    Pong,
    /// Sent by engines, tolerated from workers and ignored.
    WorkerRegistered(Ignored),
    /// Sent by engines, tolerated from workers and ignored.
    RegistrationRejected(Ignored),
}

/// A frame body whose content does not matter.
#[derive(Debug, Deserialize)]
pub struct Ignored {}

/// `registerfunction`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterFunction {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub request_format: Option<Value>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Present only for HTTP-invoked functions (not served yet; kept for discovery).
    #[serde(default)]
    pub invocation: Option<Value>,
}

/// `unregisterfunction` and `unregistertrigger` carry just an id (and tolerated extras).
#[derive(Debug, Clone, Deserialize)]
pub struct UnregisterById {
    pub id: String,
}

/// The `action` of an `invokefunction`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Action {
    Void,
    Enqueue {
        #[serde(default)]
        queue: Option<String>,
    },
}

/// `invokefunction` from a worker (a call).
#[derive(Debug, Clone, Deserialize)]
pub struct InvokeFunction {
    #[serde(default)]
    pub invocation_id: Option<String>,
    pub function_id: String,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub action: Option<Action>,
    #[serde(default)]
    pub traceparent: Option<String>,
    #[serde(default)]
    pub baggage: Option<String>,
}

/// `invocationresult` from the worker that ran a call.
#[derive(Debug, Clone, Deserialize)]
pub struct InvocationResult {
    pub invocation_id: String,
    #[serde(default)]
    pub result: Option<super::Payload>,
    #[serde(default)]
    pub error: Option<Value>,
}

/// `registertriggertype`.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterTriggerType {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub trigger_request_format: Option<Value>,
    #[serde(default)]
    pub call_request_format: Option<Value>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `unregistertriggertype` (Node sends the whole registration; extras are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct UnregisterTriggerType {
    pub id: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `registertrigger` from a worker.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterTrigger {
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub trigger_namespace: Option<String>,
}

/// `triggerregistrationresult` from a provider.
#[derive(Debug, Clone, Deserialize)]
pub struct TriggerRegistrationResult {
    pub id: String,
    #[serde(default)]
    pub error: Option<Value>,
}

/// `reattach`, the first frame of a reconnect.
#[derive(Debug, Clone, Deserialize)]
pub struct Reattach {
    #[serde(default)]
    pub previous_worker_id: Option<String>,
    #[serde(default)]
    pub reattach_token: Option<String>,
}

/// `registerservice` (legacy grouping).
#[derive(Debug, Clone, Deserialize)]
pub struct RegisterService {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parent_service_id: Option<String>,
}

/// A frame quorum sends to a worker. Fields the Rust SDK requires are never optional.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Outgoing {
    WorkerRegistered {
        worker_id: String,
        reattach_token: String,
    },
    InvokeFunction {
        invocation_id: String,
        function_id: String,
        data: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        baggage: Option<String>,
    },
    InvocationResult {
        invocation_id: String,
        function_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<super::Payload>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
        #[serde(skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        baggage: Option<String>,
    },
    RegisterTrigger {
        id: String,
        trigger_type: String,
        function_id: String,
        config: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        trigger_namespace: Option<String>,
    },
    UnregisterTrigger {
        id: String,
        trigger_type: String,
    },
    TriggerRegistrationResult {
        id: String,
        trigger_type: String,
        function_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    RegistrationRejected {
        code: String,
        namespace: String,
        owner_worker_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        function_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        worker_name: Option<String>,
        /// Why, when a worker token refused it (SDKs ignore the field; logs and raw clients
        /// read it).
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Pong,
}

impl Outgoing {
    /// The frame text. Serialising these shapes cannot fail (string keys, JSON values).
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

/// Reads an `error` object sent by a worker; anything malformed becomes a generic failure.
pub fn error_body_from(value: Value) -> ErrorBody {
    let fallback_message = value.to_string();
    serde_json::from_value::<ErrorBody>(value).unwrap_or(ErrorBody {
        code: "invocation_failed".into(),
        message: fallback_message,
        stacktrace: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_a_python_call_without_data_and_with_extras() {
        let frame = json!({"type":"invokefunction","function_id":"f","invocation_id":"x",
            "message_type":"invoke","caller":{}});
        let Incoming::InvokeFunction(call) = serde_json::from_value(frame).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(call.function_id, "f");
        assert!(call.data.is_none());
        assert!(call.action.is_none());
    }

    #[test]
    fn decodes_void_action_and_null_namespace() {
        let frame = json!({"type":"invokefunction","function_id":"f","action":{"type":"void"},
            "namespace":null});
        let Incoming::InvokeFunction(call) = serde_json::from_value(frame).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(call.action, Some(Action::Void));
        assert!(call.namespace.is_none());
    }

    #[test]
    fn unknown_type_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<Incoming>(r#"{"type":"observe","id":"x"}"#).is_err());
        assert!(serde_json::from_str::<Incoming>(r#"{"type":"registerfunction"}"#).is_err());
    }

    #[test]
    fn invocation_result_always_carries_function_id() {
        let text = Outgoing::InvocationResult {
            invocation_id: "i".into(),
            function_id: "f".into(),
            result: Some(Value::Null.into()),
            error: None,
            traceparent: None,
            baggage: None,
        }
        .to_text();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "invocationresult");
        assert_eq!(v["function_id"], "f");
        assert!(v.get("result").is_some());
    }
}
