//! Worker tokens in the registry: created and revoked by operators, read by every node's
//! worker port. Only hashes are kept; a revoked name stays refused for good, so a token of
//! that name in a node's tokens file is refused too and the name cannot be handed out again.

use super::model::{Registry, WorkerToken};

impl Registry {
    /// Stores a new token; the reason when its name is taken or was revoked.
    pub(super) fn create_token(&mut self, token: &WorkerToken) -> Option<String> {
        if self.revoked_tokens.contains(&token.name) {
            return Some(format!(
                "token name '{}' was revoked and cannot be used again",
                token.name
            ));
        }
        match self.tokens.get(&token.name) {
            // The same write proposed again (its first outcome unknown): the token exists, as
            // asked. Another token under the name carries another secret's hash.
            Some(existing) if existing == token => return None,
            Some(_) => return Some(format!("a token named '{}' already exists", token.name)),
            None => {}
        }
        self.tokens.insert(token.name.clone(), token.clone());
        None
    }

    /// Forgets the token of that name (if the registry has one) and refuses the name from now
    /// on, wherever it is defined.
    pub(super) fn revoke_token(&mut self, name: &str) {
        self.tokens.remove(name);
        self.revoked_tokens.insert(name.to_string());
    }

    /// Tokens made with `quorum token create` that are not revoked, by name.
    pub fn worker_tokens(&self) -> impl Iterator<Item = &WorkerToken> {
        self.tokens.values()
    }

    /// Whether a token name was revoked (blocks a tokens-file entry of that name too).
    pub fn is_token_revoked(&self, name: &str) -> bool {
        self.revoked_tokens.contains(name)
    }

    /// Every revoked token name, sorted.
    pub fn revoked_token_names(&self) -> impl Iterator<Item = &String> {
        self.revoked_tokens.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Command, Event};
    use super::*;

    fn token(name: &str, hash: char) -> WorkerToken {
        WorkerToken {
            name: name.into(),
            sha256: hash.to_string().repeat(64),
            namespaces: vec!["orders".into()],
            register: false,
            call: vec!["orders::*".into()],
        }
    }

    #[test]
    fn a_created_token_is_listed_and_a_second_of_the_same_name_is_refused() {
        let mut reg = Registry::default();
        let out = reg.apply(&Command::TokenCreated(token("ci", 'a')));
        assert_eq!(out.refusal, None);
        let out = reg.apply(&Command::TokenCreated(token("ci", 'b')));
        assert!(out.refusal.unwrap().contains("already exists"));
        let listed: Vec<_> = reg.worker_tokens().cloned().collect();
        assert_eq!(listed, vec![token("ci", 'a')]);
    }

    #[test]
    fn a_token_creation_proposed_twice_is_one_token_and_no_refusal() {
        let mut reg = Registry::default();
        let create = Command::TokenCreated(token("ci", 'a'));
        assert_eq!(reg.apply(&create).refusal, None);
        assert_eq!(reg.apply(&create).refusal, None);
        assert_eq!(reg.worker_tokens().count(), 1);
        // Revoked in between: the late copy does not bring it back.
        reg.apply(&Command::TokenRevoked { name: "ci".into() });
        assert!(reg.apply(&create).refusal.unwrap().contains("revoked"));
        assert_eq!(reg.worker_tokens().count(), 0);
    }

    #[test]
    fn revoking_removes_the_token_tells_every_node_and_blocks_the_name_for_good() {
        let mut reg = Registry::default();
        reg.apply(&Command::TokenCreated(token("ci", 'a')));
        let out = reg.apply(&Command::TokenRevoked { name: "ci".into() });
        assert_eq!(out.events, vec![Event::TokenRevoked { name: "ci".into() }]);
        assert_eq!(reg.worker_tokens().count(), 0);
        assert!(reg.is_token_revoked("ci"));
        let out = reg.apply(&Command::TokenCreated(token("ci", 'c')));
        assert!(out.refusal.unwrap().contains("revoked"));
        assert_eq!(reg.worker_tokens().count(), 0);
    }

    #[test]
    fn revoking_a_name_only_a_tokens_file_defines_still_records_it() {
        let mut reg = Registry::default();
        reg.apply(&Command::TokenRevoked {
            name: "bootstrap".into(),
        });
        assert!(reg.is_token_revoked("bootstrap"));
        assert_eq!(
            reg.revoked_token_names().collect::<Vec<_>>(),
            vec!["bootstrap"]
        );
    }

    #[test]
    fn tokens_survive_a_snapshot_and_an_old_snapshot_without_them_still_reads() {
        let mut reg = Registry::default();
        reg.apply(&Command::TokenCreated(token("ci", 'a')));
        reg.apply(&Command::TokenRevoked { name: "old".into() });
        let bytes = serde_json::to_vec(&reg).unwrap();
        let back: Registry = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, reg);
        let mut value = serde_json::to_value(Registry::default()).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("tokens");
        object.remove("revoked_tokens");
        let old: Registry = serde_json::from_value(value).unwrap();
        assert_eq!(old, Registry::default());
    }
}
