//! Answers whose `invocationresult` frame is serialised before it reaches the router, so a
//! built-in with a large answer can build and serialise it on the blocking pool and the
//! runtime threads only queue the finished text.

use serde_json::Value;
use std::time::Instant;

use super::parked::{OwedAnswer, Redirect};
use super::{Caller, Router};
use crate::gateway::connections::Outbound;
use crate::ids::WorkerId;
use crate::protocol::error::EngineError;
use crate::protocol::messages::error_body_from;
use crate::protocol::{names::echo, ErrorBody, Outgoing, Payload, MAX_MESSAGE_BYTES};

/// A worker's answer, already turned into the frame its connection will carry.
pub struct FramedAnswer {
    pub worker: WorkerId,
    pub invocation_id: String,
    pub ok: bool,
    pub text: String,
}

impl FramedAnswer {
    /// Serialises `outcome` for `worker`; pure CPU work, meant for the blocking pool.
    pub fn build(
        worker: WorkerId,
        invocation_id: String,
        function_id: &str,
        outcome: Result<Payload, ErrorBody>,
    ) -> Self {
        let ok = outcome.is_ok();
        let text = result_frame_text(invocation_id.clone(), function_id, outcome);
        Self {
            worker,
            invocation_id,
            ok,
            text,
        }
    }
}

/// The `invocationresult` frame for a worker; `payload_too_large` in its place when the
/// answer would exceed what an SDK accepts.
pub fn result_frame_text(
    invocation_id: String,
    function_id: &str,
    outcome: Result<impl Into<Payload>, ErrorBody>,
) -> String {
    let (result, error) = match outcome {
        Ok(value) => (Some(value.into()), None),
        Err(error) => (None, Some(error)),
    };
    let frame = Outgoing::InvocationResult {
        invocation_id: invocation_id.clone(),
        function_id: echo(function_id).into_owned(),
        result,
        error,
        traceparent: None,
        baggage: None,
    };
    let text = frame.to_text();
    if text.len() <= MAX_MESSAGE_BYTES {
        return text;
    }
    // Never send a worker more than its SDK accepts: say why instead.
    let too_large = EngineError::PayloadTooLarge {
        limit: MAX_MESSAGE_BYTES,
    };
    Outgoing::InvocationResult {
        invocation_id,
        function_id: echo(function_id).into_owned(),
        result: None,
        error: Some(too_large.body()),
        traceparent: None,
        baggage: None,
    }
    .to_text()
}

/// Reads an answer back out of its frame: only for the rare worker whose connection was
/// closed while its built-in ran, so the answer can be kept for its reattach.
fn outcome_of(text: &str) -> Result<Value, ErrorBody> {
    let mut frame: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match frame.get_mut("error").map(Value::take) {
        Some(error) if !error.is_null() => Err(error_body_from(error)),
        _ => Ok(frame
            .get_mut("result")
            .map(Value::take)
            .unwrap_or(Value::Null)),
    }
}

impl Router {
    /// Counts and delivers an answer serialised off the runtime threads.
    pub async fn answer_framed(&self, answer: FramedAnswer, function_id: &str, started: Instant) {
        self.metrics
            .invocation_finished(answer.ok, started.elapsed());
        if !self.lock_parked().is_parked(answer.worker) {
            let text = Outbound::Text(answer.text);
            self.connections.send(answer.worker, text);
            return;
        }
        let owed = OwedAnswer {
            invocation_id: answer.invocation_id,
            function_id: echo(function_id).into_owned(),
            outcome: outcome_of(&answer.text).map(Payload::Value),
        };
        let redirect = self.lock_parked().redirect(answer.worker, owed);
        match redirect {
            Redirect::Kept => {}
            Redirect::To(successor, owed) => self.send_owed(successor, owed).await,
            Redirect::NotParked(owed) => {
                let caller = Caller::Worker {
                    worker: answer.worker,
                    invocation_id: owed.invocation_id,
                };
                self.deliver_answer(caller, function_id, owed.outcome).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_read_back_from_its_frame_is_the_same() {
        let ok = result_frame_text("i".into(), "f", Ok(json!({"functions": [1, 2]})));
        assert_eq!(outcome_of(&ok), Ok(json!({"functions": [1, 2]})));
        let error = ErrorBody {
            code: "x".into(),
            message: "y".into(),
            stacktrace: None,
        };
        let failed = result_frame_text("i".into(), "f", Err::<Value, _>(error.clone()));
        assert_eq!(outcome_of(&failed), Err(error));
    }
}
