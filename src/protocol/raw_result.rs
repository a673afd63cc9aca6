//! Reading a large `invocationresult` with its `result` kept as the worker's JSON text.
//!
//! Why: the router relays a worker's result to its caller in a frame of its own. Parsed
//! into a `Value`, a 3 MB answer costs an allocation per JSON node on the way in and a
//! whole serialisation on the way out, the latter on a runtime thread every connection
//! shares. Kept as text (checked to be JSON, not built into a tree), it is spliced into
//! the caller's frame as it is.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::messages::InvocationResult;
use super::Payload;

/// Frames of at least this many bytes try this path first; smaller results are cheap to
/// parse and serialise again.
pub const RAW_RESULT_BYTES: usize = 16 * 1024;

/// The fields of an `invocationresult`, read straight from the frame (the tagged decoder
/// of `Incoming` buffers every field first, which a raw value cannot pass through).
#[derive(Deserialize)]
struct RawInvocationResult {
    #[serde(rename = "type")]
    kind: String,
    invocation_id: String,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Value>,
}

/// serde_json refuses a tree nested deeper than this; a result kept as text is held to the
/// same bound, so the node relays no answer it would have refused to parse.
const MAX_DEPTH: usize = 128;

/// The frame as an `invocationresult` with its result as text; `None` when it is another
/// kind of frame or not readable this way (the ordinary decoder then decides).
pub fn decode(bytes: &[u8]) -> Option<InvocationResult> {
    let raw: RawInvocationResult = serde_json::from_slice(bytes).ok()?;
    let too_deep = raw
        .result
        .as_ref()
        .is_some_and(|r| nested_deeper_than(r.get(), MAX_DEPTH));
    (raw.kind == "invocationresult" && !too_deep).then(|| InvocationResult {
        invocation_id: raw.invocation_id,
        result: raw.result.map(Payload::Rendered),
        error: raw.error,
    })
}

/// Whether arrays and objects in `json` (valid JSON) nest deeper than `max`.
fn nested_deeper_than(json: &str, max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in json.bytes() {
        match (in_string, byte) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') => in_string = false,
            (true, _) => {}
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            (false, _) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Incoming;

    fn big_result(result: &str) -> String {
        let pad = "p".repeat(RAW_RESULT_BYTES);
        format!(
            r#"{{"type":"invocationresult","invocation_id":"i","result":{result},"x":"{pad}"}}"#
        )
    }

    #[test]
    fn a_large_result_keeps_its_text_and_reads_back_the_same() {
        let frame = big_result(r#"{"blob": [1, "two", null]}"#);
        let Ok(Incoming::InvocationResult(result)) = crate::protocol::decode(frame.as_bytes())
        else {
            panic!("not a result");
        };
        assert_eq!(result.invocation_id, "i");
        match result.result {
            Some(Payload::Rendered(raw)) => assert_eq!(raw.get(), r#"{"blob": [1, "two", null]}"#),
            other => panic!("expected rendered text, got {other:?}"),
        }
    }

    #[test]
    fn null_results_errors_and_other_frames_read_as_before() {
        let frame = big_result("null");
        let Some(result) = decode(frame.as_bytes()) else {
            panic!("not a result");
        };
        assert!(result.result.is_none());
        let pad = "p".repeat(RAW_RESULT_BYTES);
        let invoke = format!(r#"{{"type":"invokefunction","function_id":"f","data":"{pad}"}}"#);
        assert!(decode(invoke.as_bytes()).is_none());
        assert!(matches!(
            crate::protocol::decode(invoke.as_bytes()),
            Ok(Incoming::InvokeFunction(_))
        ));
        let broken = format!(r#"{{"type":"invocationresult","result":{{"{pad}"}}"#);
        assert!(crate::protocol::decode(broken.as_bytes()).is_err());
    }

    #[test]
    fn a_result_nested_deeper_than_a_tree_may_be_is_refused_as_before() {
        let nested =
            |depth: usize| format!("{}\"[{{\\\"\"{}", "[".repeat(depth), "]".repeat(depth));
        assert!(decode(big_result(&nested(MAX_DEPTH)).as_bytes()).is_some());
        let deep = big_result(&nested(MAX_DEPTH + 1));
        assert!(decode(deep.as_bytes()).is_none());
        assert!(crate::protocol::decode(deep.as_bytes()).is_err());
    }
}
