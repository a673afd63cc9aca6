//! builtins: the `engine::*` functions every node serves itself, and the discovery
//! trigger types it fires.
//!
//! Reads come from the local registry replica plus this node's live facts (in-flight
//! counts); writes (`engine::register_trigger`) go through Raft like any registration.
//! Input that is null or absent reads as `{}`; malformed input is a
//! `deserialization_error`, never a panic.

pub mod discovery;
pub mod fairness;
mod functions;
mod paging;
pub mod rows;
mod triggers;
mod workers;

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

use crate::ids::WorkerId;
use crate::node::Node;
use crate::protocol::error::EngineError;
use crate::protocol::{ErrorBody, Payload};

/// Whether a built-in only reads the local replica, without awaiting anything: such a
/// query may run on the blocking pool ([`fairness`]).
pub fn is_local_query(function_id: &str) -> bool {
    matches!(
        function_id,
        "engine::functions::list"
            | "engine::functions::info"
            | "engine::trigger-types::list"
            | "engine::triggers::info"
            | "engine::triggers::list"
            | "engine::registered-triggers::list"
            | "engine::registered-triggers::info"
    )
}

/// Runs a built-in that only reads the local replica (see [`is_local_query`]); blocking-pool
/// safe, since it never awaits. The function list comes rendered to text (it can be large).
pub fn local_query(
    node: &Arc<Node>,
    function_id: &str,
    input: Value,
) -> Result<Payload, ErrorBody> {
    if function_id == "engine::functions::list" {
        return functions::list(node, parse(function_id, input)?).map_err(|e| e.body());
    }
    let result = match function_id {
        "engine::functions::info" => functions::info(node, parse(function_id, input)?),
        "engine::trigger-types::list" => triggers::list_types(node, parse(function_id, input)?),
        "engine::triggers::info" => triggers::type_info(node, parse(function_id, input)?),
        "engine::triggers::list" => {
            triggers::list_bindings(node, parse(function_id, input)?, "triggers")
        }
        "engine::registered-triggers::list" => {
            triggers::list_bindings(node, parse(function_id, input)?, "registered_triggers")
        }
        "engine::registered-triggers::info" => {
            triggers::binding_info(node, parse(function_id, input)?)
        }
        other => Err(not_registered(other)),
    };
    result.map(Payload::Value).map_err(|e| e.body())
}

/// Runs a built-in function for a call routed to it; `connection` is the worker connection
/// that called, if one did (resources a built-in creates are counted against it).
pub async fn call(
    node: &Arc<Node>,
    connection: Option<WorkerId>,
    function_id: &str,
    input: Value,
) -> Result<Value, ErrorBody> {
    if is_local_query(function_id) {
        return local_query(node, function_id, input).map(Payload::into_value);
    }
    let result = match function_id {
        "engine::workers::list" => workers::list(node, parse(function_id, input)?).await,
        "engine::workers::info" => workers::info(node, parse(function_id, input)?).await,
        "engine::register_trigger" => triggers::register(node, parse(function_id, input)?).await,
        "engine::unregister_trigger" => {
            triggers::unregister(node, parse(function_id, input)?).await
        }
        // Announcements are handled by the session that owns the connection; one that
        // reaches here came from no connection and cannot claim anything.
        "engine::workers::register" => Ok(serde_json::json!({"success": false})),
        crate::channels::builtin::CREATE => crate::channels::builtin::create(
            &node.channels,
            node.is_draining(),
            connection,
            parse(function_id, input)?,
        ),
        other => Err(not_registered(other)),
    };
    result.map_err(|e| e.body())
}

fn not_registered(function_id: &str) -> EngineError {
    EngineError::NotFound(format!("Function '{function_id}' is not registered."))
}

/// Reads a built-in's input; null or absent means `{}`.
fn parse<T: DeserializeOwned>(function_id: &str, input: Value) -> Result<T, ErrorBody> {
    let input = if input.is_null() {
        Value::Object(Default::default())
    } else {
        input
    };
    serde_json::from_value(input).map_err(|e| {
        EngineError::Deserialization {
            function_id: function_id.to_string(),
            reason: e.to_string(),
        }
        .body()
    })
}
