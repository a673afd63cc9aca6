//! The membership a leader showed this node when it admitted it with empty storage.
//!
//! A node that rejoins with a wiped log learns the membership from its log, one batch of
//! entries at a time. Until the log reaches the membership the cluster has now, it shows an
//! older one, in which a member that joined later (often the current leader) is missing. The
//! certificate check on Raft messages would then refuse that leader's replication for good,
//! since the entries that would name it never arrive. So, for ids its own membership lacks,
//! the check also consults the members the admitting leader listed, and only until this
//! node's log holds a membership at least as new as theirs.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::consensus::Member;
use crate::ids::NodeId;
use crate::rpc::pb;

/// The admitting leader's members and the log index of their membership, once admitted.
#[derive(Default)]
pub struct AdmittedMembers {
    admitted: Mutex<Option<Admitted>>,
}

struct Admitted {
    index: u64,
    members: BTreeMap<NodeId, Member>,
}

impl AdmittedMembers {
    /// Remembers the members of a leader's join answer (an answer without the index of its
    /// membership, from an older leader, is not used).
    pub fn record(&self, reply: &pb::JoinReply) {
        if reply.membership_index == 0 || reply.cluster_id.is_empty() {
            return;
        }
        let members = reply
            .members
            .iter()
            .map(|m| {
                let identity = (!m.identity.is_empty()).then(|| m.identity.clone());
                (m.node_id, Member::new(&m.address, identity))
            })
            .collect();
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if admitted
            .as_ref()
            .is_none_or(|a| a.index <= reply.membership_index)
        {
            *admitted = Some(Admitted {
                index: reply.membership_index,
                members,
            });
        }
    }

    /// The members a caller's certificate is checked against: `local` (this node's view, from
    /// its log, whose membership is at `local_index`), plus the admitted members it lacks
    /// while `local` is older than the admission's membership.
    pub fn check_against<'a>(
        &self,
        local: impl IntoIterator<Item = (&'a NodeId, &'a Member)>,
        local_index: Option<u64>,
    ) -> BTreeMap<NodeId, Member> {
        let mut members: BTreeMap<NodeId, Member> =
            local.into_iter().map(|(id, m)| (*id, m.clone())).collect();
        let admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(admitted) = admitted.as_ref() {
            if local_index.is_none_or(|index| index < admitted.index) {
                for (id, member) in &admitted.members {
                    members.entry(*id).or_insert_with(|| member.clone());
                }
            }
        }
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(index: u64, members: &[(NodeId, &str)]) -> pb::JoinReply {
        pb::JoinReply {
            cluster_id: "c1".into(),
            membership_index: index,
            members: members
                .iter()
                .map(|(id, identity)| pb::Member {
                    node_id: *id,
                    address: format!("n{id}:1"),
                    identity: identity.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ids(members: &BTreeMap<NodeId, Member>) -> Vec<NodeId> {
        members.keys().copied().collect()
    }

    #[test]
    fn a_log_behind_the_admission_also_trusts_the_admitted_members() {
        let admitted = AdmittedMembers::default();
        admitted.record(&reply(11, &[(2, "b"), (3, "c")]));
        // The log so far shows an older membership without node 2 (it joined later).
        let local = BTreeMap::from([(3, Member::new("n3:1", Some("c".into())))]);
        let merged = admitted.check_against(&local, Some(6));
        assert_eq!(ids(&merged), vec![2, 3]);
        assert_eq!(merged[&2].identity.as_deref(), Some("b"));
        assert_eq!(
            ids(&admitted.check_against(&BTreeMap::new(), None)),
            vec![2, 3]
        );
    }

    #[test]
    fn a_log_that_caught_up_trusts_only_itself() {
        let admitted = AdmittedMembers::default();
        admitted.record(&reply(11, &[(2, "b"), (3, "c")]));
        let local = BTreeMap::from([(3, Member::new("n3:1", Some("c".into())))]);
        // Node 2 was removed since the admission: its certificate speaks for nobody now.
        assert_eq!(ids(&admitted.check_against(&local, Some(11))), vec![3]);
        assert_eq!(ids(&admitted.check_against(&local, Some(20))), vec![3]);
    }

    #[test]
    fn the_log_wins_over_the_admission_for_a_member_it_knows() {
        let admitted = AdmittedMembers::default();
        admitted.record(&reply(11, &[(3, "old")]));
        let local = BTreeMap::from([(3, Member::new("n3:1", Some("new".into())))]);
        let merged = admitted.check_against(&local, Some(4));
        assert_eq!(merged[&3].identity.as_deref(), Some("new"));
    }

    #[test]
    fn an_answer_without_a_membership_index_is_not_used() {
        let admitted = AdmittedMembers::default();
        admitted.record(&reply(0, &[(2, "b")]));
        assert!(admitted.check_against(&BTreeMap::new(), None).is_empty());
    }
}
