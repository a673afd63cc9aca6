//! Frames a session builds from registry data and announcements: the refusals it sends
//! back and the sanitised metadata of `engine::workers::register`.

use serde_json::Value;

use crate::protocol::error::{EngineError, FUNCTION_NAMESPACE_CONFLICT, WORKER_NAMESPACE_CONFLICT};
use crate::protocol::names::{check_name, echo};
use crate::protocol::Outgoing;
use crate::registry::limits::{self, TooLarge};
use crate::registry::{Registration, Rejection, WorkerMeta};

/// Longest announced name or description kept.
const MAX_TEXT_CHARS: usize = 280;

/// The `registrationrejected` frame for a refusal of the registry.
pub fn rejection_frame(rejection: Rejection) -> Outgoing {
    match rejection {
        Rejection::Function {
            namespace,
            function_id,
            owner,
        } => Outgoing::RegistrationRejected {
            code: FUNCTION_NAMESPACE_CONFLICT.into(),
            namespace,
            owner_worker_id: owner.map(|o| o.to_string()).unwrap_or_default(),
            function_id: Some(function_id),
            worker_name: None,
            message: None,
        },
        Rejection::WorkerName {
            namespace,
            name,
            owner,
        } => Outgoing::RegistrationRejected {
            code: WORKER_NAMESPACE_CONFLICT.into(),
            namespace,
            owner_worker_id: owner.to_string(),
            function_id: None,
            worker_name: Some(name),
            message: None,
        },
        Rejection::InvalidName { field, message } => Outgoing::RegistrationRejected {
            code: match field.as_str() {
                "name" => EngineError::InvalidArguments(String::new()).code(),
                _ => EngineError::InvalidNamespace(String::new()).code(),
            }
            .into(),
            namespace: String::new(),
            owner_worker_id: String::new(),
            function_id: None,
            worker_name: None,
            message: Some(message),
        },
    }
}

/// Reads the announcement payload loosely, sanitising free text; a worker name that
/// breaks the name rule (`protocol::names`) is refused with the reason, never stored.
pub fn announced_meta(payload: &Value, max_bytes: usize) -> Result<WorkerMeta, EngineError> {
    let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_string);
    let name = text("name").map(|n| n.trim().to_string());
    if let Some(Err(err)) = name.as_deref().map(check_name) {
        let shown = echo(name.as_deref().unwrap_or_default());
        return Err(EngineError::InvalidArguments(format!(
            "worker name `{shown}` {err}"
        )));
    }
    let meta = WorkerMeta {
        name: name.filter(|n| !n.is_empty()),
        description: text("description").and_then(|s| sanitize(&s)),
        runtime: text("runtime").or_else(|| Some("unknown".into())),
        version: text("version"),
        os: text("os"),
        pid: payload.get("pid").and_then(Value::as_u64),
        isolation: text("isolation"),
        telemetry: payload.get("telemetry").cloned().filter(|v| !v.is_null()),
    };
    limits::check_meta(&meta, max_bytes)?;
    Ok(meta)
}

/// Splits registrations into those within `max_bytes` and the refusals to send back for the
/// others: `registrationrejected` (with the reason in `message`, and the code the SDKs treat as
/// "this one refused, keep serving") or, for a trigger, its `triggerregistrationresult`.
pub fn screen_sizes(
    namespace: &str,
    items: Vec<Registration>,
    max_bytes: usize,
) -> (Vec<Registration>, Vec<Outgoing>) {
    let (kept, refused) = limits::screen(items, max_bytes);
    let frames = refused
        .into_iter()
        .map(|(item, why)| size_refusal(namespace, item, why))
        .collect();
    (kept, frames)
}

fn size_refusal(namespace: &str, item: Registration, why: TooLarge) -> Outgoing {
    let message = why.to_string();
    let (namespace, function_id) = match item {
        Registration::Trigger {
            id,
            trigger_type,
            function_id,
            ..
        } => {
            return Outgoing::TriggerRegistrationResult {
                id: echo(&id).into_owned(),
                trigger_type: echo(&trigger_type).into_owned(),
                function_id: echo(&function_id).into_owned(),
                error: Some(EngineError::RegistrationTooLarge(message).body()),
            }
        }
        Registration::Function { id, .. } | Registration::UnregisterFunction { id } => {
            (namespace.to_string(), Some(echo(&id).into_owned()))
        }
        Registration::TriggerType {
            namespace: Some(ns),
            ..
        } => (echo(&ns).into_owned(), None),
        _ => (namespace.to_string(), None),
    };
    Outgoing::RegistrationRejected {
        code: FUNCTION_NAMESPACE_CONFLICT.into(),
        namespace,
        owner_worker_id: String::new(),
        function_id,
        worker_name: None,
        message: Some(message),
    }
}

/// Drops control, bidi-override and line-separator characters, trims, and cuts to
/// 280 characters; nothing left means no value.
pub fn sanitize(text: &str) -> Option<String> {
    let cleaned: String = text
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
        })
        .collect();
    let trimmed: String = cleaned.trim().chars().take(MAX_TEXT_CHARS).collect();
    let trimmed = trimmed.trim().to_string();
    (!trimmed.is_empty()).then_some(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_drops_controls_and_bidi_and_cuts_to_280() {
        assert_eq!(sanitize(" a\u{202E}b\nc "), Some("abc".into()));
        assert_eq!(sanitize("\u{2028} \t"), None);
        assert_eq!(sanitize(&"x".repeat(400)).map(|s| s.len()), Some(280));
    }

    #[test]
    fn an_announced_name_that_breaks_the_rule_is_refused_not_cleaned() {
        let meta = announced_meta(&serde_json::json!({"name": " host:42 "}), MIB).unwrap();
        assert_eq!(meta.name.as_deref(), Some("host:42"));
        let refused =
            announced_meta(&serde_json::json!({"name": "a\u{202E}b\u{0}"}), MIB).unwrap_err();
        assert!(refused.to_string().contains("bidirectional"), "{refused}");
        assert!(announced_meta(&serde_json::json!({"name": "n".repeat(300)}), MIB).is_err());
    }

    const MIB: usize = 1 << 20;

    #[test]
    fn an_announcement_over_the_cap_is_refused_as_too_large() {
        let payload = serde_json::json!({"name": "w", "telemetry": {"blob": "x".repeat(MIB)}});
        let body = announced_meta(&payload, MIB).unwrap_err().body();
        assert_eq!(body.code, "payload_too_large");
        assert!(
            body.message.contains("--max-registration-bytes"),
            "{}",
            body.message
        );
    }

    #[test]
    fn an_oversized_function_gets_a_registrationrejected_that_keeps_the_sdk_serving() {
        let items = vec![Registration::Function {
            id: "big".into(),
            description: None,
            request_format: Some(serde_json::json!("x".repeat(2_000))),
            response_format: None,
            metadata: None,
            invocation: None,
        }];
        let (kept, frames) = screen_sizes("orders", items, 1_000);
        assert!(kept.is_empty());
        let frame = serde_json::to_value(&frames[0]).unwrap();
        assert_eq!(frame["type"], "registrationrejected");
        assert_eq!(frame["code"], FUNCTION_NAMESPACE_CONFLICT);
        assert_eq!(frame["namespace"], "orders");
        assert_eq!(frame["function_id"], "big");
        assert!(frame["message"].as_str().unwrap().contains("1000 bytes"));
    }
}
