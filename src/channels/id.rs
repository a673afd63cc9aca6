//! A channel's id and access key.
//!
//! Why: every node must tell where a channel lives from its id alone, without a Raft write,
//! and the SDKs want a UUID string. The id is a UUIDv8 whose custom bits carry the home
//! node's id (64 bits) and 58 random bits. The access key is a random UUIDv4 string,
//! compared in constant time.

use std::fmt;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::ids::NodeId;

/// Why a channel id or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("channel id is not a UUID")]
    NotUuid,
    #[error("channel id is not a quorum channel id (UUID version 8)")]
    NotChannelId,
}

/// A channel id: a UUIDv8 naming the node the channel lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelId(Uuid);

impl ChannelId {
    /// A fresh id for a channel living on `home`.
    pub fn new(home: NodeId) -> ChannelId {
        let mut bytes = *Uuid::new_v4().as_bytes();
        let node = home.to_be_bytes();
        // Bytes 6 and 8 hold the version and variant bits; the node id goes around them.
        bytes[0..6].copy_from_slice(&node[0..6]);
        bytes[7] = node[6];
        bytes[9] = node[7];
        ChannelId(Uuid::new_v8(bytes))
    }

    /// Reads an id from a URL path or a peer; malformed text is an error, never a panic.
    pub fn parse(text: &str) -> Result<ChannelId, IdError> {
        let uuid = Uuid::try_parse(text).map_err(|_| IdError::NotUuid)?;
        if uuid.get_version_num() != 8 {
            return Err(IdError::NotChannelId);
        }
        Ok(ChannelId(uuid))
    }

    /// The node this channel lives on.
    pub fn home(&self) -> NodeId {
        let bytes = self.0.as_bytes();
        let mut node = [0u8; 8];
        node[0..6].copy_from_slice(&bytes[0..6]);
        node[6] = bytes[7];
        node[7] = bytes[9];
        NodeId::from_be_bytes(node)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The secret both ends of a channel present; random, compared in constant time.
#[derive(Clone)]
pub struct AccessKey(String);

impl AccessKey {
    /// A fresh random key.
    pub fn new() -> AccessKey {
        AccessKey(Uuid::new_v4().hyphenated().to_string())
    }

    /// Whether `presented` is this key, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// The key as the SDKs receive it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for AccessKey {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_node_survives_the_round_trip() {
        for home in [1, 42, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = ChannelId::new(home);
            let parsed = ChannelId::parse(&id.to_string()).expect("own id parses");
            assert_eq!(parsed, id);
            assert_eq!(parsed.home(), home);
        }
    }

    #[test]
    fn two_ids_of_one_node_differ() {
        assert_ne!(ChannelId::new(7), ChannelId::new(7));
    }

    #[test]
    fn malformed_ids_are_errors() {
        assert_eq!(ChannelId::parse("nope"), Err(IdError::NotUuid));
        assert_eq!(ChannelId::parse(""), Err(IdError::NotUuid));
        let v4 = Uuid::new_v4().to_string();
        assert_eq!(ChannelId::parse(&v4), Err(IdError::NotChannelId));
    }

    #[test]
    fn keys_match_only_themselves() {
        let key = AccessKey::new();
        assert!(key.matches(key.as_str()));
        assert!(!key.matches(AccessKey::new().as_str()));
        assert!(!key.matches(""));
    }
}
