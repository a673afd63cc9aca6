//! The membership a leader showed this node when it admitted it with empty storage.
//!
//! A node that rejoins with a wiped log learns the membership from its log, one batch of
//! entries at a time. Until the log reaches the membership the cluster has now, it shows an
//! older one, in which a member that joined later (often the current leader) is missing. The
//! certificate check on Raft messages would then refuse that leader's replication for good,
//! since the entries that would name it never arrive. So, for ids its own membership lacks,
//! the check also consults the members the admitting leader listed, and only until this
//! node's log holds a membership at least as new as theirs.
//!
//! The admission is kept in a small file next to `cluster_id` (written to a temporary file
//! and renamed, so a crash leaves the old file or the new one, never half of one): a node that
//! crashes during its catch-up still accepts the leader after its restart. The file is
//! removed once the log holds that membership, and one from another cluster is ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::consensus::Member;
use crate::ids::NodeId;
use crate::rpc::pb;

/// Name of the file in the data directory that holds the admission during a catch-up.
const FILE: &str = "admitted_members.json";

/// The admitting leader's members and the log index of their membership, once admitted.
#[derive(Default)]
pub struct AdmittedMembers {
    admitted: Mutex<Option<Admitted>>,
}

/// One admission, as kept in memory and in the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Admitted {
    /// The cluster that admitted this node: a file from any other is not used.
    cluster_id: String,
    /// The log index of the membership the members come from.
    index: u64,
    members: BTreeMap<NodeId, Member>,
}

/// Why the admission could not be kept on disk.
#[derive(Debug, thiserror::Error)]
#[error("admission file {path}: {source}")]
pub struct AdmissionFileError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl AdmittedMembers {
    /// The admission kept in `data_dir` by a previous run, if it was made by `cluster_id` (this
    /// node's cluster). A missing file is no admission; an unreadable or foreign one is
    /// ignored (said in the log): without it the node is no worse off than before it existed.
    pub fn load(data_dir: &Path, cluster_id: Option<&str>) -> Self {
        let path = data_dir.join(FILE);
        let admitted = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Admitted>(&bytes) {
                Ok(a) if Some(a.cluster_id.as_str()) == cluster_id => {
                    info!(
                        index = a.index,
                        members = a.members.len(),
                        "admission kept from a catch-up before a restart"
                    );
                    Some(a)
                }
                Ok(a) => {
                    warn!(path = %path.display(), cluster = %a.cluster_id, "admission file from another cluster; ignored");
                    None
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "admission file unreadable; ignored");
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "admission file unreadable; ignored");
                None
            }
        };
        Self {
            admitted: Mutex::new(admitted),
        }
    }

    /// Remembers the members of a leader's join answer (an answer without the index of its
    /// membership, from an older leader, is not used), in `data_dir` first so a restart
    /// during the catch-up keeps them.
    pub async fn record(
        &self,
        data_dir: &Path,
        reply: &pb::JoinReply,
    ) -> Result<(), AdmissionFileError> {
        if reply.membership_index == 0 || reply.cluster_id.is_empty() {
            return Ok(());
        }
        let members = reply
            .members
            .iter()
            .map(|m| {
                let identity = (!m.identity.is_empty()).then(|| m.identity.clone());
                (m.node_id, Member::new(&m.address, identity))
            })
            .collect();
        let new = Admitted {
            cluster_id: reply.cluster_id.clone(),
            index: reply.membership_index,
            members,
        };
        let newer = self
            .lock()
            .as_ref()
            .is_none_or(|a| a.cluster_id != new.cluster_id || a.index <= new.index);
        if newer {
            write_atomically(data_dir, &new).await?;
            *self.lock() = Some(new);
        }
        Ok(())
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
        if let Some(admitted) = self.lock().as_ref() {
            if !caught_up(admitted, local_index) {
                for (id, member) in &admitted.members {
                    members.entry(*id).or_insert_with(|| member.clone());
                }
            }
        }
        members
    }

    /// Whether an admission still widens the members (the log at `local_index` has not
    /// reached it): only then does a caller need [`Self::check_against`]'s copy.
    pub fn pending(&self, local_index: Option<u64>) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|a| !caught_up(a, local_index))
    }

    /// Forgets the admission, and removes its file, once this node's log holds a membership
    /// at least as new as the admitted one. Returns whether it did.
    pub async fn forget_if_caught_up(
        &self,
        data_dir: &Path,
        local_index: Option<u64>,
    ) -> Result<bool, AdmissionFileError> {
        if !self
            .lock()
            .as_ref()
            .is_some_and(|a| caught_up(a, local_index))
        {
            return Ok(false);
        }
        let path = data_dir.join(FILE);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(AdmissionFileError { path, source }),
        }
        *self.lock() = None;
        Ok(true)
    }

    /// The log index of the admitted membership, while there is one to catch up to.
    pub fn index(&self) -> Option<u64> {
        self.lock().as_ref().map(|a| a.index)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Admitted>> {
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits until this node's log holds the admitted membership (or newer), then forgets the
/// admission and removes its file. Returns at once when there is no admission; never while
/// the log stays behind (the task ends with the node).
pub async fn forget_when_caught_up(
    node: NodeId,
    admitted: &AdmittedMembers,
    data_dir: &Path,
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, Member>>,
) {
    let Some(index) = admitted.index() else {
        return;
    };
    let reached = metrics.wait_for(|m| {
        let local = m.membership_config.log_id().map(|id| id.index);
        local.is_some_and(|local| local >= index)
    });
    let local_index = match reached.await {
        Ok(m) => m.membership_config.log_id().map(|id| id.index),
        Err(_) => return,
    };
    match admitted.forget_if_caught_up(data_dir, local_index).await {
        Ok(true) => info!(
            node,
            index, "caught up with the admitted membership; admission forgotten"
        ),
        Ok(false) => {}
        Err(e) => warn!(node, error = %e, "could not remove the admission file"),
    }
}

/// Whether a log whose membership is at `local_index` holds the admitted membership or newer.
fn caught_up(admitted: &Admitted, local_index: Option<u64>) -> bool {
    local_index.is_some_and(|index| index >= admitted.index)
}

/// Writes the admission to a temporary file, flushes it, and renames it over the old one.
async fn write_atomically(data_dir: &Path, admitted: &Admitted) -> Result<(), AdmissionFileError> {
    let path = data_dir.join(FILE);
    let bytes = serde_json::to_vec(admitted).map_err(|e| AdmissionFileError {
        path: path.clone(),
        source: e.into(),
    })?;
    let temp = data_dir.join(format!("{FILE}.tmp"));
    let (from, to) = (temp.clone(), path.clone());
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&from)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&from, &to)
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    written.map_err(|source| AdmissionFileError { path, source })
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

    async fn recorded(reply: pb::JoinReply) -> (AdmittedMembers, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let admitted = AdmittedMembers::default();
        admitted.record(dir.path(), &reply).await.unwrap();
        (admitted, dir)
    }

    #[tokio::test]
    async fn a_log_behind_the_admission_also_trusts_the_admitted_members() {
        let (admitted, _dir) = recorded(reply(11, &[(2, "b"), (3, "c")])).await;
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

    #[tokio::test]
    async fn a_log_that_caught_up_trusts_only_itself() {
        let (admitted, _dir) = recorded(reply(11, &[(2, "b"), (3, "c")])).await;
        let local = BTreeMap::from([(3, Member::new("n3:1", Some("c".into())))]);
        // Node 2 was removed since the admission: its certificate speaks for nobody now.
        assert_eq!(ids(&admitted.check_against(&local, Some(11))), vec![3]);
        assert_eq!(ids(&admitted.check_against(&local, Some(20))), vec![3]);
        // So requests are checked against the log as it is, with no copy to make.
        assert!(admitted.pending(Some(10)));
        assert!(!admitted.pending(Some(11)));
        assert!(!admitted.pending(Some(20)));
    }

    #[tokio::test]
    async fn the_log_wins_over_the_admission_for_a_member_it_knows() {
        let (admitted, _dir) = recorded(reply(11, &[(3, "old")])).await;
        let local = BTreeMap::from([(3, Member::new("n3:1", Some("new".into())))]);
        let merged = admitted.check_against(&local, Some(4));
        assert_eq!(merged[&3].identity.as_deref(), Some("new"));
    }

    #[tokio::test]
    async fn an_answer_without_a_membership_index_is_not_used() {
        let (admitted, dir) = recorded(reply(0, &[(2, "b")])).await;
        assert!(admitted.check_against(&BTreeMap::new(), None).is_empty());
        assert!(!dir.path().join(FILE).exists());
    }

    #[tokio::test]
    async fn a_restart_during_the_catch_up_keeps_the_admission() {
        let (_before_crash, dir) = recorded(reply(11, &[(2, "b"), (3, "c")])).await;
        let restarted = AdmittedMembers::load(dir.path(), Some("c1"));
        assert_eq!(restarted.index(), Some(11));
        let merged = restarted.check_against(&BTreeMap::new(), Some(6));
        assert_eq!(ids(&merged), vec![2, 3]);
        assert_eq!(merged[&2].identity.as_deref(), Some("b"));
        assert_eq!(merged[&2].addr, "n2:1");
        assert!(
            !dir.path().join(format!("{FILE}.tmp")).exists(),
            "the temporary file was renamed"
        );
    }

    #[tokio::test]
    async fn a_newer_admission_replaces_the_file_and_an_older_one_does_not() {
        let (admitted, dir) = recorded(reply(11, &[(2, "b")])).await;
        admitted
            .record(dir.path(), &reply(15, &[(4, "d")]))
            .await
            .unwrap();
        admitted
            .record(dir.path(), &reply(9, &[(5, "e")]))
            .await
            .unwrap();
        let restarted = AdmittedMembers::load(dir.path(), Some("c1"));
        assert_eq!(restarted.index(), Some(15));
        assert_eq!(
            ids(&restarted.check_against(&BTreeMap::new(), None)),
            vec![4]
        );
    }

    #[tokio::test]
    async fn an_admission_is_forgotten_and_its_file_removed_once_the_log_caught_up() {
        let (admitted, dir) = recorded(reply(11, &[(2, "b")])).await;
        assert!(!admitted
            .forget_if_caught_up(dir.path(), None)
            .await
            .unwrap());
        assert!(!admitted
            .forget_if_caught_up(dir.path(), Some(10))
            .await
            .unwrap());
        assert!(dir.path().join(FILE).exists(), "still catching up");
        assert!(admitted
            .forget_if_caught_up(dir.path(), Some(11))
            .await
            .unwrap());
        assert!(!dir.path().join(FILE).exists());
        assert_eq!(admitted.index(), None);
        let restarted = AdmittedMembers::load(dir.path(), Some("c1"));
        assert!(restarted.check_against(&BTreeMap::new(), None).is_empty());
    }

    #[tokio::test]
    async fn an_outdated_or_foreign_or_broken_file_is_ignored() {
        let (_admitted, dir) = recorded(reply(11, &[(2, "b")])).await;
        // Kept, but a log that holds index 11 or later trusts only itself.
        let kept = AdmittedMembers::load(dir.path(), Some("c1"));
        let local = BTreeMap::from([(3, Member::new("n3:1", None))]);
        assert_eq!(ids(&kept.check_against(&local, Some(12))), vec![3]);
        // Made by another cluster (the node was wiped and joined a different one).
        let foreign = AdmittedMembers::load(dir.path(), Some("c2"));
        assert_eq!(foreign.index(), None);
        assert!(AdmittedMembers::load(dir.path(), None).index().is_none());
        // Garbage (not something this code writes, thanks to the rename) stops nothing.
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(AdmittedMembers::load(dir.path(), Some("c1")).index(), None);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            AdmittedMembers::load(empty.path(), Some("c1")).index(),
            None
        );
    }
}
