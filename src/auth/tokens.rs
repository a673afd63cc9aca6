//! Worker tokens as data: how a token is hashed, what a valid token entry looks like, the
//! tokens file (`--worker-tokens-file`, for a Kubernetes Secret) and the `*` globs of `call`.
//!
//! The same rules check an entry of the file at start-up and a `quorum token create`, so a
//! token is valid or not whichever way it was made.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;

use crate::ids::DEFAULT_NAMESPACE;
use crate::registry::WorkerToken;

/// Longest token name accepted (names appear in logs and refusals).
const MAX_NAME_CHARS: usize = 64;

/// Lowercase hex SHA-256 of `text`'s UTF-8 bytes: what the registry keeps instead of a token.
pub fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// `count` bytes from the operating system's random source, in lowercase hex: the secret part
/// of every token quorum makes (worker tokens and managed workers' local tokens).
pub fn random_hex(count: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; count];
    getrandom::fill(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a token entry is not acceptable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenRuleError {
    #[error("`name` must be 1 to {MAX_NAME_CHARS} characters of letters, digits, `.`, `_` or `-`, got `{0}`")]
    Name(String),
    #[error("`sha256` must be 64 hex characters (the SHA-256 of the token), got {0} characters")]
    Hash(usize),
    #[error("`namespaces` must not contain a blank namespace")]
    BlankNamespace,
    #[error("`call` must not contain a blank glob")]
    BlankGlob,
    #[error("the name `{0}` is used by an earlier entry")]
    Duplicate(String),
}

/// Checks a token entry and normalises its hash to lowercase.
pub fn validate(mut token: WorkerToken) -> Result<WorkerToken, TokenRuleError> {
    let name_ok = !token.name.is_empty()
        && token.name.chars().count() <= MAX_NAME_CHARS
        && token
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(TokenRuleError::Name(token.name));
    }
    if token.sha256.len() != 64 || !token.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(TokenRuleError::Hash(token.sha256.chars().count()));
    }
    token.sha256.make_ascii_lowercase();
    if token.namespaces.iter().any(|ns| ns.trim().is_empty()) {
        return Err(TokenRuleError::BlankNamespace);
    }
    if token.call.iter().any(|glob| glob.trim().is_empty()) {
        return Err(TokenRuleError::BlankGlob);
    }
    Ok(token)
}

/// The namespaces a token may use: its list, or only `default` when the list is empty.
pub fn namespaces(token: &WorkerToken) -> Vec<&str> {
    if token.namespaces.is_empty() {
        vec![DEFAULT_NAMESPACE]
    } else {
        token.namespaces.iter().map(String::as_str).collect()
    }
}

/// Whether `text` matches `glob`, where `*` stands for any run of characters (`::` included)
/// and every other character for itself.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: an exact match.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// One entry of the tokens file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default = "default_register")]
    register: bool,
    #[serde(default)]
    call: Vec<String>,
}

fn default_register() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<FileEntry>,
}

/// Why the tokens file cannot be used; every variant names the file, and the entry when one
/// is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read worker tokens file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("worker tokens file {path} is not valid YAML of the form `tokens: [{{name, sha256, ...}}]`: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
    #[error("worker tokens file {path}, entry {index} (`{name}`): {source}")]
    Entry {
        path: String,
        index: usize,
        name: String,
        source: TokenRuleError,
    },
}

/// Reads and checks a tokens file (blocking: called once, before the runtime starts).
pub fn read_tokens_file(path: &Path) -> Result<Vec<WorkerToken>, TokensFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokensFileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_tokens_file(&shown, &text)
}

fn parse_tokens_file(path: &str, text: &str) -> Result<Vec<WorkerToken>, TokensFileError> {
    let file: TokensFile = serde_yaml::from_str(text).map_err(|source| TokensFileError::Parse {
        path: path.to_string(),
        source,
    })?;
    let mut seen = BTreeSet::new();
    let mut tokens = Vec::with_capacity(file.tokens.len());
    for (index, entry) in file.tokens.into_iter().enumerate() {
        let name = entry.name.clone();
        let bad = |source| TokensFileError::Entry {
            path: path.to_string(),
            index: index + 1,
            name: name.clone(),
            source,
        };
        let token = validate(WorkerToken {
            name: entry.name,
            sha256: entry.sha256,
            namespaces: entry.namespaces,
            register: entry.register,
            call: entry.call,
        })
        .map_err(bad)?;
        if !seen.insert(token.name.clone()) {
            return Err(bad(TokenRuleError::Duplicate(token.name)));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn the_hash_is_sha256_of_the_utf8_bytes() {
        assert_eq!(sha256_hex("test"), HASH);
    }

    #[test]
    fn random_hex_gives_two_lowercase_hex_digits_per_byte_and_differs_each_time() {
        let first = random_hex(32).expect("random source");
        let second = random_hex(32).expect("random source");
        assert_eq!(first.len(), 64);
        assert!(first
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(first, second);
    }

    #[test]
    fn globs_match_any_run_of_characters_and_nothing_else() {
        assert!(glob_matches("*", "anything::at::all"));
        assert!(glob_matches("orders::*", "orders::create"));
        assert!(glob_matches("orders::*", "orders::"));
        assert!(!glob_matches("orders::*", "order::create"));
        assert!(glob_matches("*::get", "state::get"));
        assert!(!glob_matches("*::get", "state::get2"));
        assert!(glob_matches("a*b*c", "a-x-b-y-c"));
        assert!(!glob_matches("a*b*c", "a-c-b"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn a_file_with_defaults_reads_and_hashes_are_lowercased() {
        let text = format!(
            "tokens:\n  - name: bootstrap\n    sha256: \"{}\"\n  - name: ci\n    sha256: {HASH}\n    namespaces: [orders]\n    register: false\n    call: [\"orders::*\"]\n",
            HASH.to_uppercase()
        );
        let tokens = parse_tokens_file("t.yaml", &text).unwrap();
        assert_eq!(tokens[0].sha256, HASH);
        assert!(tokens[0].register);
        assert!(tokens[0].call.is_empty());
        assert_eq!(namespaces(&tokens[0]), vec!["default"]);
        assert_eq!(namespaces(&tokens[1]), vec!["orders"]);
        assert!(!tokens[1].register);
    }

    #[test]
    fn a_bad_entry_is_named_with_the_file_and_its_position() {
        let text = format!(
            "tokens:\n  - name: ok\n    sha256: {HASH}\n  - name: short\n    sha256: abc\n"
        );
        let err = parse_tokens_file("secret/tokens.yaml", &text).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("secret/tokens.yaml"), "{message}");
        assert!(message.contains("entry 2 (`short`)"), "{message}");
        assert!(message.contains("64 hex"), "{message}");
    }

    #[test]
    fn duplicates_unknown_keys_blank_rules_and_bad_names_are_refused() {
        let dup =
            format!("tokens:\n  - name: a\n    sha256: {HASH}\n  - name: a\n    sha256: {HASH}\n");
        assert!(parse_tokens_file("f", &dup)
            .unwrap_err()
            .to_string()
            .contains("earlier entry"));
        let unknown = format!("tokens:\n  - name: a\n    sha256: {HASH}\n    namespace: [x]\n");
        assert!(matches!(
            parse_tokens_file("f", &unknown),
            Err(TokensFileError::Parse { .. })
        ));
        let blank = format!("tokens:\n  - name: a\n    sha256: {HASH}\n    call: [\" \"]\n");
        assert!(parse_tokens_file("f", &blank)
            .unwrap_err()
            .to_string()
            .contains("blank glob"));
        let name = format!("tokens:\n  - name: \"a b\"\n    sha256: {HASH}\n");
        assert!(parse_tokens_file("f", &name)
            .unwrap_err()
            .to_string()
            .contains("`name`"));
        assert!(matches!(
            parse_tokens_file("f", "nope: 1"),
            Err(TokensFileError::Parse { .. })
        ));
    }
}
