//! What each RPC on the cluster port demands of its caller, and who the caller turned out to
//! be.

use tonic::Status;

use super::cluster_listener::PeerInfo;
use super::identity::Role;
use crate::consensus::Member;
use crate::ids::NodeId;

/// The kind of caller an RPC on the cluster port accepts. With certificates, every RPC needs a
/// certificate signed by the cluster's CA; this says which ones beyond that. Without
/// certificates (a plaintext cluster), every caller is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A member node speaking as itself: its certificate identity is the one the membership
    /// records for the node id it claims (Raft, invocation streams, forwarded writes).
    Member,
    /// An operator: a client certificate (`quorum cert create-client`), or a member node
    /// passing an operator's request on to the leader.
    Operator,
    /// Any holder of a certificate signed by the CA, node or client (status, join).
    Certified,
}

/// Who an admitted request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A plaintext cluster: nobody is authenticated, everybody is let in.
    Unauthenticated,
    /// An operator's client certificate, with the operator's name.
    Operator(String),
    /// A node certificate.
    Node {
        /// The certificate's identity.
        identity: String,
        /// The member ids this identity may speak as; `None` while this node has no
        /// membership yet (it is being admitted and cannot tell members apart).
        speaks_for: Option<Vec<NodeId>>,
    },
}

impl Caller {
    /// Whether this caller may act as node `id` (send its Raft messages, open its invocation
    /// stream).
    pub fn may_speak_as(&self, id: NodeId) -> bool {
        match self {
            Caller::Unauthenticated => true,
            Caller::Operator(_) => false,
            Caller::Node { speaks_for, .. } => {
                speaks_for.as_ref().is_none_or(|ids| ids.contains(&id))
            }
        }
    }

    /// The certificate identity a joining node is admitted with (`None` in plaintext).
    pub fn identity(&self) -> Option<&str> {
        match self {
            Caller::Node { identity, .. } => Some(identity),
            _ => None,
        }
    }

    /// Refuses a request in which this caller claims to be node `id` without being it.
    #[allow(clippy::result_large_err)]
    pub fn require_speaks_as(&self, id: NodeId, what: &str) -> Result<(), Status> {
        if self.may_speak_as(id) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{what} claims to come from node {id}, but the caller's certificate is not that member's"
            )))
        }
    }
}

/// Decides whether the peer of a request is let in for `access`. `peer` is `None` on a
/// plaintext cluster port; `members` is this node's current membership (empty before it is
/// admitted anywhere).
#[allow(clippy::result_large_err)]
pub fn admit<'a>(
    peer: Option<&PeerInfo>,
    access: Access,
    members: impl IntoIterator<Item = (&'a NodeId, &'a Member)>,
    secure: bool,
) -> Result<Caller, Status> {
    if !secure {
        return Ok(Caller::Unauthenticated);
    }
    let Some(peer) = peer else {
        return Err(Status::unauthenticated("a client certificate is required"));
    };
    match &peer.cert.role {
        Role::Unknown(cn) => Err(Status::permission_denied(format!(
            "certificate subject `{cn}` is neither a node (`node`) nor an operator (`client.NAME`)"
        ))),
        Role::Client(name) if access == Access::Member => Err(Status::permission_denied(format!(
            "operator certificate `{name}` cannot speak as a cluster member"
        ))),
        Role::Client(name) => Ok(Caller::Operator(name.clone())),
        Role::Node => {
            let identity = peer.cert.identity.clone();
            let mut known = false;
            let mut speaks_for = Vec::new();
            for (id, member) in members {
                known = true;
                if member.accepts(&identity) {
                    speaks_for.push(*id);
                }
            }
            let member = !known || !speaks_for.is_empty();
            if access != Access::Certified && !member {
                return Err(Status::permission_denied(
                    "this node certificate belongs to no member of the cluster",
                ));
            }
            Ok(Caller::Node {
                identity,
                speaks_for: known.then_some(speaks_for),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::PeerCert;
    use std::collections::BTreeMap;

    fn peer(role: Role, identity: &str) -> PeerInfo {
        PeerInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            cert: PeerCert {
                role,
                identity: identity.to_string(),
            },
        }
    }

    fn members() -> BTreeMap<NodeId, Member> {
        BTreeMap::from([
            (1, Member::new("a:1", Some("one".into()))),
            (2, Member::new("b:1", Some("two".into()))),
        ])
    }

    #[test]
    fn plaintext_lets_everyone_in() {
        let caller = admit(None, Access::Member, &members(), false).unwrap();
        assert!(caller.may_speak_as(7));
    }

    #[test]
    fn a_member_speaks_only_as_itself() {
        let caller = admit(
            Some(&peer(Role::Node, "two")),
            Access::Member,
            &members(),
            true,
        )
        .unwrap();
        assert!(caller.may_speak_as(2));
        assert!(!caller.may_speak_as(1));
        assert!(!caller.may_speak_as(99_999));
    }

    #[test]
    fn a_stranger_node_certificate_may_only_ask_status_and_join() {
        let stranger = peer(Role::Node, "three");
        assert!(admit(Some(&stranger), Access::Member, &members(), true).is_err());
        assert!(admit(Some(&stranger), Access::Operator, &members(), true).is_err());
        let caller = admit(Some(&stranger), Access::Certified, &members(), true).unwrap();
        assert!(!caller.may_speak_as(1));
        assert_eq!(caller.identity(), Some("three"));
    }

    #[test]
    fn operators_operate_but_never_speak_as_members() {
        let admin = peer(Role::Client("admin".into()), "x");
        assert!(admit(Some(&admin), Access::Member, &members(), true).is_err());
        let caller = admit(Some(&admin), Access::Operator, &members(), true).unwrap();
        assert_eq!(caller, Caller::Operator("admin".into()));
    }

    #[test]
    fn a_node_without_membership_accepts_any_node_certificate() {
        let empty = BTreeMap::<NodeId, Member>::new();
        let caller = admit(Some(&peer(Role::Node, "z")), Access::Member, &empty, true).unwrap();
        assert!(caller.may_speak_as(5));
    }

    #[test]
    fn missing_or_unknown_certificates_are_refused() {
        assert!(admit(None, Access::Certified, &members(), true).is_err());
        let odd = peer(Role::Unknown("web".into()), "w");
        assert!(admit(Some(&odd), Access::Certified, &members(), true).is_err());
    }
}
