//! An answer's JSON as a worker receives it: a value, or text already rendered.
//!
//! Why: a list of 100,000 functions built as a `serde_json::Value` costs allocations for
//! every field of every row, then a walk to serialise them and another to free them. The
//! built-ins that answer that much render their rows straight from the registry to JSON
//! text, once, and the answer frame carries that text as it is.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON answer: a value, or text a built-in rendered or a worker sent.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Payload {
    Value(Value),
    Rendered(Box<RawValue>),
}

/// `null`, what an answer without a result carries.
impl Default for Payload {
    fn default() -> Self {
        Payload::Value(Value::Null)
    }
}

/// Read as a value: what the frame decoder gives when it reads a small answer (a large
/// one keeps its text, see `protocol::raw_result`).
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Payload::Value)
    }
}

impl Payload {
    /// Renders `answer` to JSON text, once.
    pub fn render(answer: &impl Serialize) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(answer).map(Payload::Rendered)
    }

    /// The answer as a value. Rendered text is parsed back: only for the few callers that
    /// look inside an answer (a worker token's filter, a caller on another node).
    pub fn into_value(self) -> Value {
        match self {
            Payload::Value(value) => value,
            Payload::Rendered(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
        }
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload::Value(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rendered_text_is_written_as_it_is_and_reads_back_the_same() {
        let answer = json!({"functions": [{"function_id": "a::b"}], "next_cursor": "x"});
        let rendered = Payload::render(&answer).unwrap();
        assert_eq!(
            serde_json::to_string(&rendered).unwrap(),
            serde_json::to_string(&answer).unwrap()
        );
        assert_eq!(rendered.into_value(), answer);
    }
}
