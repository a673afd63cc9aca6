//! Reading a large `invocationresult` with its `result` kept as the worker's JSON text.
//!
//! Why: the router relays a worker's result to its caller in a frame of its own. Parsed
//! into a `Value`, a 3 MB answer costs an allocation per JSON node on the way in and a
//! whole serialisation on the way out, the latter on a runtime thread every connection
//! shares. Kept as text (checked to be JSON, not built into a tree), it is spliced into
//! the caller's frame as it is.

use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;

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

/// The frame as an `invocationresult` with its result as text; `None` when it is another
/// kind of frame or not readable this way (the ordinary decoder then decides).
pub fn decode(bytes: &[u8]) -> Option<InvocationResult> {
    let raw: RawInvocationResult = serde_json::from_slice(bytes).ok()?;
    if raw.kind != "invocationresult" {
        return None;
    }
    // A raw value skips what parsing checks (the nesting limit, `\u` escapes): the whole
    // frame is walked once more, so the node relays no answer it would have refused to parse.
    serde_json::from_slice::<Valid>(bytes).ok()?;
    Some(InvocationResult {
        invocation_id: raw.invocation_id,
        result: raw.result.map(Payload::Rendered),
        error: raw.error,
    })
}

/// A result another node relayed (the JSON text of one value), checked as a worker's frame
/// is checked: one JSON value, within serde_json's nesting limit, with valid escapes. Its
/// text is kept as it is. An error when it is not (nothing a node sends, but the bytes come
/// from the network).
pub fn from_peer(bytes: &[u8]) -> Result<Payload, serde_json::Error> {
    serde_json::from_slice::<Valid>(bytes)?;
    serde_json::from_slice::<Box<RawValue>>(bytes).map(Payload::Rendered)
}

/// Any JSON document, walked and not kept: serde_json applies its own nesting limit and
/// string checks exactly as when it builds a `Value`, without allocating the tree.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Valid)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = Valid;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
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
    fn a_result_kept_as_text_passes_exactly_what_parsing_the_frame_passes() {
        let nested =
            |depth: usize| format!("{}\"[{{\\\"\"{}", "[".repeat(depth), "]".repeat(depth));
        let mut cases: Vec<String> = (120..=130)
            .map(|depth| big_result(&nested(depth)))
            .collect();
        cases.push(big_result(r#""\ud800""#));
        cases.push(big_result(r#"{"\udc00": 1}"#));
        cases.push(big_result(r#""\ud83d\ude00 fine""#));
        for frame in cases {
            let parses = serde_json::from_slice::<Value>(frame.as_bytes()).is_ok();
            assert_eq!(
                decode(frame.as_bytes()).is_some(),
                parses,
                "kept as text exactly when the frame parses: {}",
                &frame[..frame.len().min(160)]
            );
        }
        assert!(decode(big_result(&nested(126)).as_bytes()).is_some());
        let deep = big_result(&nested(127));
        assert!(crate::protocol::decode(deep.as_bytes()).is_err());
    }
}
