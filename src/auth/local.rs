//! Local tokens: the credential a node hands its own managed workers, so they get through
//! `--worker-auth token` without an operator's worker token.
//!
//! One random token per managed worker name, made when its process is about to start and
//! forgotten when that process is gone. Held in this node's memory only: never written to a
//! file, the registry or a log. The worker gate accepts one only from a loopback peer, and
//! the connection it admits may announce that worker's name and no other (`Grant::managed`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// Random bytes in one local token.
const TOKEN_BYTES: usize = 32;

/// The local tokens of this node's managed workers, by worker name.
#[derive(Default)]
pub struct LocalTokens {
    by_name: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTokens").finish_non_exhaustive()
    }
}

/// One managed worker's local token, valid until this is dropped (or a newer one is issued
/// for the same name). Its `Debug` never shows the token.
pub struct LocalToken {
    name: String,
    token: String,
    tokens: Arc<LocalTokens>,
}

impl fmt::Debug for LocalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalToken")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl LocalToken {
    /// The token itself, for the worker's `III_URL` and for hiding it in the worker's output.
    pub fn secret(&self) -> &str {
        &self.token
    }
}

impl Drop for LocalToken {
    fn drop(&mut self) {
        let mut by_name = self.tokens.lock();
        if by_name.get(&self.name) == Some(&self.token) {
            by_name.remove(&self.name);
        }
    }
}

impl LocalTokens {
    /// Makes a new token for worker `name`, replacing any earlier one of that name.
    pub fn issue(self: &Arc<Self>, name: &str) -> Result<LocalToken, getrandom::Error> {
        let token = super::tokens::random_hex(TOKEN_BYTES)?;
        self.lock().insert(name.to_string(), token.clone());
        Ok(LocalToken {
            name: name.to_string(),
            token,
            tokens: self.clone(),
        })
    }

    /// The worker name whose live token `presented` is. Every token is compared, in constant
    /// time, so the time taken says nothing about how close a guess was.
    pub fn name_of(&self, presented: &str) -> Option<String> {
        let by_name = self.lock();
        let mut found = None;
        for (name, token) in by_name.iter() {
            let same: bool = token.as_bytes().ct_eq(presented.as_bytes()).into();
            if same && found.is_none() {
                found = Some(name.clone());
            }
        }
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.by_name.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_worker_until_dropped_or_replaced() {
        let tokens = Arc::new(LocalTokens::default());
        let a = tokens.issue("a").unwrap();
        let b = tokens.issue("b").unwrap();
        assert_eq!(a.secret().len(), 2 * TOKEN_BYTES);
        assert_ne!(a.secret(), b.secret());
        assert_eq!(tokens.name_of(a.secret()).as_deref(), Some("a"));
        assert_eq!(tokens.name_of(b.secret()).as_deref(), Some("b"));
        assert_eq!(tokens.name_of("not-a-token"), None);
        assert_eq!(tokens.name_of(""), None);

        let a_again = tokens.issue("a").unwrap();
        assert_eq!(tokens.name_of(a.secret()), None, "replaced");
        let old = a.secret().to_string();
        drop(a);
        assert_eq!(tokens.name_of(&old), None);
        assert_eq!(
            tokens.name_of(a_again.secret()).as_deref(),
            Some("a"),
            "dropping a replaced token leaves the newer one"
        );
        let gone = b.secret().to_string();
        drop(b);
        assert_eq!(tokens.name_of(&gone), None);
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let tokens = Arc::new(LocalTokens::default());
        let token = tokens.issue("a").unwrap();
        let shown = format!("{token:?} {tokens:?}");
        assert!(!shown.contains(token.secret()), "{shown}");
    }
}
