//! Checking a result another node relayed before it goes to a caller here.
//!
//! Why: the owner's node already checked its worker's answer, but these bytes come from
//! the network; a result that is not one valid JSON value must reach its caller as an
//! error answer, not as `null`. A large result is checked on the blocking pool, as the
//! gateway decodes a large frame, so the walk over megabytes never holds a runtime thread
//! that other connections and streams share; and in a task of its own ([`RelayedChecks`]),
//! so the stream it came on goes on delivering the peer's other results meanwhile.

use std::future::Future;

use serde::de::Error as _;
use tokio::task::JoinSet;

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

/// Large results of one stream checked at once; the stream's reader waits for one of them
/// before it reads past another, so a peer sending many cannot queue unbounded work here.
const CHECKS_PER_STREAM: usize = 4;

/// The checks of large results that arrived on one invocation stream and are still running.
///
/// Why: a stream's reader that awaited each check itself held every other call and result of
/// that peer behind a multi-megabyte walk. The reader hands the check and the delivery of
/// its outcome to a task, and, when the stream ends, waits for them with
/// [`RelayedChecks::finish`], so every result read before the end is delivered before the
/// peer's loss is reported.
#[derive(Default)]
pub struct RelayedChecks {
    running: JoinSet<()>,
}

impl RelayedChecks {
    /// Checks `value_json` from `peer` and hands the outcome to `deliver`: at once for a small
    /// result, in a task for a large one (after waiting for a running check when
    /// [`CHECKS_PER_STREAM`] are).
    pub async fn check_then<F, Fut>(&mut self, peer: NodeId, value_json: Vec<u8>, deliver: F)
    where
        F: FnOnce(Result<Payload, ErrorBody>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if value_json.len() < CHECK_ELSEWHERE_BYTES {
            deliver(checked(peer, value_json).await).await;
            return;
        }
        while self.running.len() >= CHECKS_PER_STREAM {
            self.running.join_next().await;
        }
        self.running
            .spawn(async move { deliver(checked(peer, value_json).await).await });
    }

    /// Waits until every result handed over so far has been delivered.
    pub async fn finish(&mut self) {
        while self.running.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::Arc;
    use tokio::sync::{mpsc, Semaphore};

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

    /// A delivery that waits for a permit, so a test decides when a check's task may end.
    fn gated(
        gate: &Arc<Semaphore>,
        delivered: &mpsc::UnboundedSender<&'static str>,
        what: &'static str,
    ) -> impl FnOnce(Result<Payload, ErrorBody>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    {
        let gate = gate.clone();
        let delivered = delivered.clone();
        move |outcome| {
            Box::pin(async move {
                assert!(outcome.is_ok(), "{what} is valid");
                gate.acquire().await.expect("gate open").forget();
                let _ = delivered.send(what);
            })
        }
    }

    #[tokio::test]
    async fn a_small_result_is_delivered_while_a_large_one_is_still_being_handled() {
        let gate = Arc::new(Semaphore::new(0));
        let (delivered, mut seen) = mpsc::unbounded_channel();
        let mut checks = RelayedChecks::default();
        let large = format!(r#""{}""#, "x".repeat(CHECK_ELSEWHERE_BYTES));
        // Handed to a task: it returns although the delivery cannot end yet (a reader that
        // awaited the delivery itself would hang here, so the wait is bounded).
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            checks.check_then(2, large.into_bytes(), gated(&gate, &delivered, "large")),
        )
        .await
        .expect("the reader is not held by a large result's delivery");
        // The large result's task is held at its gate; the small one still goes through.
        checks
            .check_then(2, b"1".to_vec(), |outcome| async move {
                assert!(outcome.is_ok());
            })
            .await;
        assert!(
            seen.try_recv().is_err(),
            "the large result waits at its gate"
        );
        gate.add_permits(1);
        checks.finish().await;
        assert_eq!(
            seen.try_recv(),
            Ok("large"),
            "finish waits for the delivery"
        );
    }

    #[tokio::test]
    async fn a_fifth_large_result_waits_for_one_of_the_four_running() {
        let gate = Arc::new(Semaphore::new(0));
        let (delivered, mut seen) = mpsc::unbounded_channel();
        let mut checks = RelayedChecks::default();
        let large = format!(r#""{}""#, "x".repeat(CHECK_ELSEWHERE_BYTES));
        for _ in 0..CHECKS_PER_STREAM {
            checks
                .check_then(
                    2,
                    large.clone().into_bytes(),
                    gated(&gate, &delivered, "first"),
                )
                .await;
        }
        {
            let fifth = checks.check_then(
                2,
                large.clone().into_bytes(),
                gated(&gate, &delivered, "fifth"),
            );
            tokio::pin!(fifth);
            // Four checks run and none can end before the gate opens: the fifth is not taken.
            assert!(
                (&mut fifth).now_or_never().is_none(),
                "a fifth check was taken while four were running"
            );
            gate.add_permits(1);
            fifth.await;
        }
        assert_eq!(seen.recv().await, Some("first"));
        gate.add_permits(CHECKS_PER_STREAM);
        checks.finish().await;
        let mut rest = Vec::new();
        while let Ok(what) = seen.try_recv() {
            rest.push(what);
        }
        rest.sort();
        assert_eq!(rest, ["fifth", "first", "first", "first"]);
    }
}
