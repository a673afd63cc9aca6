//! The size cap of what one worker message may add to the registry. Everything registered is
//! replicated through the Raft log and kept in every node's memory and snapshots, so one
//! registration (a function with its formats and metadata, a trigger type, a trigger with its
//! config) and one announcement (the worker's metadata, `telemetry` included) may each take at
//! most a set number of bytes of JSON. Oversized ones are refused before they are proposed.
//!
//! Measuring stops as soon as the cap is passed, so a 60 MiB registration costs no 60 MiB copy.

use std::io::Write;

use serde::Serialize;

use super::command::Registration;
use super::model::WorkerMeta;

/// A registration or announcement over the cap; the message says what and which setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is larger than {limit} bytes of JSON (the node's --max-registration-bytes)")]
pub struct TooLarge {
    /// What was refused, e.g. "the registration of function `orders::get`".
    pub what: String,
    /// The cap it broke.
    pub limit: usize,
}

/// Splits registrations into those within `limit` bytes and the refused ones (with why), in
/// order.
pub fn screen(
    items: Vec<Registration>,
    limit: usize,
) -> (Vec<Registration>, Vec<(Registration, TooLarge)>) {
    let mut kept = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for item in items {
        if fits(&item, limit) {
            kept.push(item);
        } else {
            let error = TooLarge {
                what: describe(&item),
                limit,
            };
            refused.push((item, error));
        }
    }
    (kept, refused)
}

/// Checks an announced worker's metadata against `limit`.
pub fn check_meta(meta: &WorkerMeta, limit: usize) -> Result<(), TooLarge> {
    check(
        "the worker's metadata (engine::workers::register)",
        meta,
        limit,
    )
}

/// Checks any one thing about to be registered (e.g. the input of `engine::register_trigger`)
/// against `limit`; `what` names it in the refusal.
pub fn check<T: Serialize>(what: &str, value: &T, limit: usize) -> Result<(), TooLarge> {
    if fits(value, limit) {
        return Ok(());
    }
    Err(TooLarge {
        what: what.to_string(),
        limit,
    })
}

impl From<TooLarge> for crate::protocol::error::EngineError {
    fn from(too_large: TooLarge) -> Self {
        Self::RegistrationTooLarge(too_large.to_string())
    }
}

/// Whether `value` serialises to at most `limit` bytes of JSON.
pub fn fits<T: Serialize>(value: &T, limit: usize) -> bool {
    let mut counter = Counter { bytes: 0, limit };
    // The only error is the counter refusing more bytes, or a value serde cannot write,
    // which is not something to store either.
    serde_json::to_writer(&mut counter, value).is_ok()
}

/// Names a registration for a refusal message, with a bounded echo of its id.
fn describe(item: &Registration) -> String {
    let echo = crate::protocol::names::echo;
    match item {
        Registration::Function { id, .. } => format!("the registration of function `{}`", echo(id)),
        Registration::UnregisterFunction { id } => {
            format!("the unregistration of function `{}`", echo(id))
        }
        Registration::TriggerType { id, .. } | Registration::UnregisterTriggerType { id, .. } => {
            format!("the trigger type `{}`", echo(id))
        }
        Registration::Trigger { id, .. } | Registration::UnregisterTrigger { id } => {
            format!("the trigger `{}`", echo(id))
        }
        Registration::Service { id, .. } => format!("the service `{}`", echo(id)),
        Registration::Announce(_) => "the worker's metadata (engine::workers::register)".into(),
        Registration::FixNamespace { .. } => "the namespace".into(),
    }
}

/// A writer that only counts, and fails once more than `limit` bytes were written.
struct Counter {
    bytes: usize,
    limit: usize,
}

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len());
        if self.bytes > self.limit {
            return Err(std::io::Error::other("over the registration size cap"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn function(id: &str, metadata: serde_json::Value) -> Registration {
        Registration::Function {
            id: id.into(),
            description: None,
            request_format: None,
            response_format: None,
            metadata: Some(metadata),
            invocation: None,
        }
    }

    #[test]
    fn a_value_fits_up_to_exactly_the_limit() {
        let text = json!("abc"); // 5 bytes of JSON with its quotes
        assert!(fits(&text, 5));
        assert!(!fits(&text, 4));
    }

    #[test]
    fn oversized_registrations_are_refused_and_the_rest_kept_in_order() {
        let big = json!({"blob": "x".repeat(2_000)});
        let items = vec![
            function("a", json!({})),
            function("b", big.clone()),
            function("c", json!({})),
            Registration::Trigger {
                id: "t".into(),
                trigger_type: "cron".into(),
                function_id: "a".into(),
                config: big,
                metadata: None,
                namespace: None,
                trigger_namespace: None,
            },
        ];
        let (kept, refused) = screen(items, 1_024);
        let kept_ids: Vec<_> = kept
            .iter()
            .map(|r| match r {
                Registration::Function { id, .. } => id.as_str(),
                _ => "?",
            })
            .collect();
        assert_eq!(kept_ids, ["a", "c"]);
        assert_eq!(refused.len(), 2);
        assert_eq!(
            refused[0].1.to_string(),
            "the registration of function `b` is larger than 1024 bytes of JSON (the node's --max-registration-bytes)"
        );
        assert!(refused[1].1.what.contains("trigger `t`"));
    }

    #[test]
    fn worker_telemetry_counts_towards_the_announcement_cap() {
        let meta = WorkerMeta {
            name: Some("w".into()),
            telemetry: Some(json!({"blob": "x".repeat(5_000)})),
            ..Default::default()
        };
        let err = check_meta(&meta, 4_096).unwrap_err();
        assert!(err.to_string().contains("worker's metadata"), "{err}");
        assert!(check_meta(&meta, 8_192).is_ok());
    }

    #[test]
    fn a_huge_id_is_echoed_only_as_a_prefix() {
        let id = "f".repeat(100_000);
        let (_, refused) = screen(vec![Registration::UnregisterFunction { id }], 1_024);
        assert!(refused[0].1.to_string().len() < 1_024);
    }
}
