//! What the Raft membership records about each node: where it listens and, on a cluster with
//! certificates, the identity its certificate must carry.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node in the membership. Serialised like openraft's `Member` (`{"addr": ...}`) plus an
/// optional `identity`, so logs and snapshots written before identities existed still load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The cluster address peers dial.
    pub addr: String,
    /// The certificate identity (`auth::identity`) the leader admitted this node id with;
    /// `None` on a cluster formed without certificates. Only a peer presenting this identity
    /// may speak as this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Member {
    /// A member at `addr`, bound to `identity` when the cluster runs with certificates.
    pub fn new(addr: impl Into<String>, identity: Option<String>) -> Self {
        Self {
            addr: addr.into(),
            identity,
        }
    }

    /// Whether a peer with certificate identity `presented` may speak as this member. A member
    /// recorded without an identity (admitted before the cluster had certificates) accepts any
    /// node certificate until it is bound by its next join.
    pub fn accepts(&self, presented: &str) -> bool {
        self.identity
            .as_deref()
            .is_none_or(|bound| bound == presented)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_basic_node_shape_of_older_logs() {
        let old: Member = serde_json::from_str(r#"{"addr":"10.0.0.1:50051"}"#).unwrap();
        assert_eq!(old, Member::new("10.0.0.1:50051", None));
        let bound = Member::new("a:1", Some("ab".into()));
        let text = serde_json::to_string(&bound).unwrap();
        assert_eq!(serde_json::from_str::<Member>(&text).unwrap(), bound);
    }

    #[test]
    fn only_the_bound_identity_speaks_for_a_member() {
        let bound = Member::new("a:1", Some("ab".into()));
        assert!(bound.accepts("ab"));
        assert!(!bound.accepts("cd"));
        assert!(Member::new("a:1", None).accepts("cd"));
    }
}
