//! Checking a result another node relayed before it goes to a caller here.
//!
//! Why: the owner's node already checked its worker's answer, but these bytes come from
//! the network; a result that is not one valid JSON value must reach its caller as an
//! error answer, not as `null`. A large result is checked on the blocking pool, as the
//! gateway decodes a large frame, so the walk over megabytes never holds a runtime thread
//! that other connections and streams share.

use serde::de::Error as _;

use crate::ids::NodeId;
use crate::protocol::error::EngineError;
use crate::protocol::{raw_result, ErrorBody, Payload};

/// Results of at least this many bytes are checked off the runtime threads.
const CHECK_ELSEWHERE_BYTES: usize = 256 * 1024;

/// The result `peer` relayed as `value_json`, or the error answer its caller gets when it is
/// not one valid JSON value.
pub async fn checked(peer: NodeId, value_json: Vec<u8>) -> Result<Payload, ErrorBody> {
    let checked = if value_json.len() < CHECK_ELSEWHERE_BYTES {
        raw_result::from_peer(&value_json)
    } else {
        tokio::task::spawn_blocking(move || raw_result::from_peer(&value_json))
            .await
            .unwrap_or_else(|join_error| Err(serde_json::Error::custom(join_error)))
    };
    checked.map_err(|err| {
        EngineError::InvalidRelayedResult {
            peer,
            reason: err.to_string(),
        }
        .body()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(text: &str) -> Result<Payload, ErrorBody> {
        checked(2, text.as_bytes().to_vec()).await
    }

    #[tokio::test]
    async fn a_valid_result_keeps_its_text_small_or_large() {
        let small = r#"{"a": [1, "two", null]}"#;
        let large = format!(r#"{{"blob":"{}"}}"#, "b".repeat(CHECK_ELSEWHERE_BYTES));
        for text in [small, large.as_str()] {
            let payload = check(text).await.expect("valid");
            assert_eq!(serde_json::to_string(&payload).unwrap(), text);
        }
    }

    #[tokio::test]
    async fn an_invalid_result_is_an_error_answer_small_or_large() {
        let pad = "p".repeat(CHECK_ELSEWHERE_BYTES);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in [
            String::new(),
            "{not json".to_string(),
            format!(r#"{{"blob":"{pad}""#),
            r#""\ud800""#.to_string(),
            deep,
            format!(r#"{{"a":1}} {{"b":"{pad}"}}"#),
        ] {
            let error = check(&text).await.expect_err("invalid");
            assert_eq!(error.code, "invocation_failed");
            assert!(
                error
                    .message
                    .starts_with("the result relayed by node 2 is not valid JSON"),
                "{}",
                error.message
            );
        }
    }
}
