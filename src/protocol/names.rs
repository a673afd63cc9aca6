//! The one rule for names a client chooses and the engine stores or shows others
//! (namespaces and worker names), and the bounded echo of any id in an error answer.
//!
//! Why: a stored name is shown by every list built-in and written to every log, so a
//! control character, a NUL or a bidi override in it would reach other workers'
//! terminals and operators' screens; and an error answer that repeats a 10 MB id costs
//! the node 10 MB per refusal.

use std::borrow::Cow;

/// Longest namespace or worker name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 256;
/// Ids up to this many characters are repeated whole in an answer; longer ones as this
/// many characters and their length.
pub const ECHO_CHARS: usize = 128;

/// Why a name breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is longer than {MAX_NAME_CHARS} characters ({0} characters)")]
    TooLong(usize),
    #[error("holds a control character (U+{0:04X}) at character {1}")]
    Control(u32, usize),
    #[error("holds a bidirectional-text control (U+{0:04X}) at character {1}")]
    Bidi(u32, usize),
}

/// Checks a namespace or worker name: at most [`MAX_NAME_CHARS`] characters, no
/// control character (NUL and line breaks included), no bidi override, isolate or mark.
pub fn check_name(name: &str) -> Result<(), NameError> {
    for (at, c) in name.chars().enumerate() {
        if at >= MAX_NAME_CHARS {
            return Err(NameError::TooLong(name.chars().count()));
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            return Err(NameError::Control(c as u32, at));
        }
        if is_bidi_control(c) {
            return Err(NameError::Bidi(c as u32, at));
        }
    }
    Ok(())
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// An id as an error answer may repeat it: whole when short, else its first
/// [`ECHO_CHARS`] characters (controls escaped) and its length in bytes.
pub fn echo(id: &str) -> Cow<'_, str> {
    let clean = |s: &str| s.chars().all(|c| !c.is_control() && !is_bidi_control(c));
    if id.chars().count() <= ECHO_CHARS && clean(id) {
        return Cow::Borrowed(id);
    }
    let prefix: String = id
        .chars()
        .take(ECHO_CHARS)
        .flat_map(|c| {
            let shown = if c.is_control() || is_bidi_control(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            };
            shown.chars().collect::<Vec<_>>()
        })
        .collect();
    Cow::Owned(format!("{prefix}… ({} bytes)", id.len()))
}

/// The `INVALID_NAMESPACE` message for a namespace field that was sent and is blank or
/// breaks the rule; `None` when absent or fine.
pub fn namespace_problem(field: &str, value: &Option<String>) -> Option<String> {
    let value = value.as_deref()?;
    if value.trim().is_empty() {
        return Some(super::blank_namespace_message(field));
    }
    check_name(value)
        .err()
        .map(|err| format!("`{field}` `{}` {err}", echo(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "default",
            "billing-eu",
            "host-1:4242",
            "Ünïcödé 名前",
            &"n".repeat(256),
        ] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn controls_nul_and_bidi_are_refused() {
        assert_eq!(check_name("a\0b"), Err(NameError::Control(0, 1)));
        assert_eq!(check_name("a\nb"), Err(NameError::Control(10, 1)));
        assert_eq!(
            check_name("\u{202E}../../etc\0"),
            Err(NameError::Bidi(0x202E, 0))
        );
        assert_eq!(check_name("x\u{2067}y"), Err(NameError::Bidi(0x2067, 1)));
        assert_eq!(check_name("x\u{2028}"), Err(NameError::Control(0x2028, 1)));
    }

    #[test]
    fn names_over_the_limit_are_refused_with_their_length() {
        assert_eq!(check_name(&"n".repeat(257)), Err(NameError::TooLong(257)));
    }

    #[test]
    fn echo_keeps_short_ids_and_bounds_long_ones() {
        assert_eq!(echo("math::add"), "math::add");
        let long = "f".repeat(10 * 1024 * 1024);
        let shown = echo(&long);
        assert!(shown.len() < 200, "{}", shown.len());
        assert!(shown.ends_with("… (10485760 bytes)"));
        assert_eq!(echo("\u{202E}x"), "\\u{202e}x… (4 bytes)");
    }

    #[test]
    fn namespace_problem_names_blank_and_broken_namespaces() {
        assert_eq!(namespace_problem("namespace", &None), None);
        assert_eq!(namespace_problem("namespace", &Some("ok".into())), None);
        assert!(namespace_problem("namespace", &Some(" ".into())).is_some());
        let bad = namespace_problem("namespace", &Some("\u{202E}../../etc\0".into())).unwrap();
        assert!(bad.contains("bidirectional"), "{bad}");
        assert!(!bad.contains('\u{202E}') && !bad.contains('\0'), "{bad}");
    }
}
