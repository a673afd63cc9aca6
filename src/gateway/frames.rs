//! Frames a session builds from registry data and announcements: the refusals it sends
//! back and the sanitised metadata of `engine::workers::register`.

use serde_json::Value;

use crate::protocol::error::{FUNCTION_NAMESPACE_CONFLICT, WORKER_NAMESPACE_CONFLICT};
use crate::protocol::names::{check_name, echo};
use crate::protocol::Outgoing;
use crate::registry::{Rejection, WorkerMeta};

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
    }
}

/// Reads the announcement payload loosely, sanitising free text; a worker name that
/// breaks the name rule (`protocol::names`) is refused with the reason, never stored.
pub fn announced_meta(payload: &Value) -> Result<WorkerMeta, String> {
    let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_string);
    let name = text("name").map(|n| n.trim().to_string());
    if let Some(Err(err)) = name.as_deref().map(check_name) {
        let shown = echo(name.as_deref().unwrap_or_default());
        return Err(format!("worker name `{shown}` {err}"));
    }
    Ok(WorkerMeta {
        name: name.filter(|n| !n.is_empty()),
        description: text("description").and_then(|s| sanitize(&s)),
        runtime: text("runtime").or_else(|| Some("unknown".into())),
        version: text("version"),
        os: text("os"),
        pid: payload.get("pid").and_then(Value::as_u64),
        isolation: text("isolation"),
        telemetry: payload.get("telemetry").cloned().filter(|v| !v.is_null()),
    })
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
        let meta = announced_meta(&serde_json::json!({"name": " host:42 "})).unwrap();
        assert_eq!(meta.name.as_deref(), Some("host:42"));
        let refused = announced_meta(&serde_json::json!({"name": "a\u{202E}b\u{0}"})).unwrap_err();
        assert!(refused.contains("bidirectional"), "{refused}");
        assert!(announced_meta(&serde_json::json!({"name": "n".repeat(300)})).is_err());
    }
}
