//! The `workers:` list of the node's YAML config, for GitOps: the same fields as `quorum worker
//! add` (`path`, or `name` + `command`; `restart`; `node_labels`). Checked when the config is
//! loaded (a manifest that does not parse, or two entries with one name, stop the node before
//! it starts); reconciled once the node serves (see [`reconcile`]).
//!
//! The list is the desired state of the specs a config put: an entry is added, or replaces a
//! config-put spec of its name; a config-put spec the list does not name is removed. Every
//! node may carry the same list (the same spec twice changes nothing), and nodes restarted with
//! different lists leave the last one's. Specs put with `quorum worker add` are never changed
//! or removed: an entry under such a name is logged as an error, and the node keeps running.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracing::{error, info, warn};

use super::source::{self, SourceError, SpecSource};
use super::spec::{RestartPolicy, WorkerSpec};
use crate::ids::NodeId;
use crate::node::Node;
use crate::protocol::error::EngineError;
use crate::registry::{Command, Outcome, SpecOrigin};

/// One entry of `workers:` as written in the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerEntry {
    /// A directory holding `iii.worker.yaml`; relative to the config file's directory.
    pub path: Option<PathBuf>,
    pub name: Option<String>,
    pub command: Option<String>,
    /// `always` (default), `on-failure` or `never`.
    pub restart: Option<String>,
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
}

/// Why the `workers:` list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorkerListError {
    #[error("workers[{index}]: {source}")]
    Entry {
        index: usize,
        #[source]
        source: SourceError,
    },
    #[error("workers[{index}]: restart: {reason}")]
    Restart { index: usize, reason: String },
    #[error("workers: two entries are named '{name}'; each managed worker needs its own name")]
    DuplicateName { name: String },
}

/// The checked specs of a `workers:` list; `base` is the config file's directory.
pub fn specs(entries: Vec<WorkerEntry>, base: &Path) -> Result<Vec<WorkerSpec>, WorkerListError> {
    let mut names = HashSet::new();
    let mut specs = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let restart = match &entry.restart {
            None => RestartPolicy::default(),
            Some(text) => text
                .parse::<RestartPolicy>()
                .map_err(|e| WorkerListError::Restart {
                    index,
                    reason: e.to_string(),
                })?,
        };
        let request = SpecSource {
            path: entry.path.map(|p| base.join(p)),
            name: entry.name,
            command: entry.command,
            restart,
            node_labels: entry.node_labels,
        };
        let checked =
            source::check(request).map_err(|source| WorkerListError::Entry { index, source })?;
        if !names.insert(checked.spec.name.clone()) {
            return Err(WorkerListError::DuplicateName {
                name: checked.spec.name,
            });
        }
        specs.push(checked.spec);
    }
    Ok(specs)
}

/// Reconciles the registry with this node's `workers:` list in the background, once it serves.
/// A config without a `workers:` key touches nothing; an empty list removes every spec a
/// config put.
pub fn submit_at_start(node: &Arc<Node>) {
    let Some(specs) = node.config.managed_workers.clone() else {
        return;
    };
    let node = node.clone();
    tokio::spawn(async move { reconcile(node.id, specs, |command| node.commit(command)).await });
}

/// The first wait before a write the leader held back is submitted again (doubling each time).
const HELD_BACK_FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two submissions of a held-back write.
const HELD_BACK_MAX_RETRY: Duration = Duration::from_secs(60);

/// Makes the registry's config-put specs this list, through `commit` (the node's commit path):
/// one `ManagedWorkerPut` per entry (origin config: it adds the spec, or replaces a spec a
/// config put under that name), then one `ManagedConfigRetained` that removes the config-put
/// specs the list no longer names. Each command is idempotent, so a retried write is
/// harmless. A refusal (a spec put with the CLI holds the name) or a failed commit is logged,
/// and the other entries are still submitted. A write the leader holds back (a member still
/// runs an older binary, during a rolling upgrade) is submitted again until it is taken, after
/// 5 s, then twice as long each time up to 60 s.
pub async fn reconcile<F, Fut>(node: NodeId, specs: Vec<WorkerSpec>, commit: F)
where
    F: Fn(Command) -> Fut,
    Fut: Future<Output = Result<Outcome, EngineError>>,
{
    let names: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
    for spec in specs {
        let name = spec.name.clone();
        if let Ok(planned) = super::manifest::launch_plan(&spec) {
            for warning in planned.warnings {
                warn!(node, worker = %name, warning = %warning, "managed worker manifest");
            }
        }
        let put = Command::ManagedWorkerPut {
            spec,
            at_ms: super::admin::now_ms(),
            origin: SpecOrigin::Config,
        };
        match until_taken(node, &commit, put).await {
            Ok(Outcome {
                refusal: Some(reason),
                ..
            }) => {
                error!(node, worker = %name, reason = %reason, "the config's managed worker was refused; the registry keeps its spec")
            }
            Ok(_) => info!(node, worker = %name, "managed worker from the config submitted"),
            Err(err) => {
                error!(node, worker = %name, error = %err, "cannot submit the config's managed worker")
            }
        }
    }
    let kept = names.len();
    match until_taken(node, &commit, Command::ManagedConfigRetained { names }).await {
        Ok(_) => info!(
            node,
            kept, "managed workers from a config that this one no longer lists are removed"
        ),
        Err(err) => {
            error!(node, error = %err, "cannot remove the managed workers this config no longer lists")
        }
    }
}

/// Commits `command`, submitting it again while the leader holds it back.
async fn until_taken<F, Fut>(
    node: NodeId,
    commit: &F,
    command: Command,
) -> Result<Outcome, EngineError>
where
    F: Fn(Command) -> Fut,
    Fut: Future<Output = Result<Outcome, EngineError>>,
{
    let mut wait = HELD_BACK_FIRST_RETRY;
    loop {
        match commit(command.clone()).await {
            Err(EngineError::HeldBack(reason)) => {
                warn!(node, reason = %reason, retry_in_s = wait.as_secs(), "the config's managed workers are held back until every node is upgraded; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(HELD_BACK_MAX_RETRY);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_entry(name: &str) -> WorkerEntry {
        WorkerEntry {
            name: Some(name.into()),
            command: Some("sleep 100".into()),
            ..WorkerEntry::default()
        }
    }

    #[tokio::test]
    async fn reconciling_puts_each_entry_from_the_config_then_keeps_only_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let specs = specs(vec![command_entry("a"), command_entry("b")], dir.path()).unwrap();
        let sent = std::sync::Mutex::new(Vec::new());
        reconcile(1, specs.clone(), |command| {
            sent.lock().unwrap().push(command);
            async { Ok(Outcome::default()) }
        })
        .await;
        let sent = sent.into_inner().unwrap();
        assert_eq!(sent.len(), 3, "{sent:?}");
        for (command, spec) in sent.iter().zip(&specs) {
            assert!(
                matches!(command, Command::ManagedWorkerPut { spec: put, origin: SpecOrigin::Config, .. } if put == spec),
                "{command:?}"
            );
        }
        assert_eq!(
            sent[2],
            Command::ManagedConfigRetained {
                names: vec!["a".into(), "b".into()]
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_back_write_is_submitted_again_after_5_s_doubling_up_to_60_s() {
        let started = tokio::time::Instant::now();
        let attempts = std::sync::Mutex::new(Vec::new());
        reconcile(1, Vec::new(), |_| {
            let mut attempts = attempts.lock().unwrap();
            attempts.push(started.elapsed().as_secs());
            let held = attempts.len() <= 6;
            async move {
                if held {
                    Err(EngineError::HeldBack("node 2 is older".into()))
                } else {
                    Ok(Outcome::default())
                }
            }
        })
        .await;
        let attempts = attempts.into_inner().unwrap();
        // Waits of 5, 10, 20, 40, 60, 60 s.
        assert_eq!(attempts, [0, 5, 15, 35, 75, 135, 195]);
    }

    #[tokio::test]
    async fn a_write_that_fails_otherwise_is_not_submitted_again() {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        reconcile(1, Vec::new(), |_| {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(EngineError::Unavailable("no leader".into())) }
        })
        .await;
        assert_eq!(attempts.into_inner(), 1);
    }

    #[test]
    fn two_entries_with_one_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = specs(vec![command_entry("a"), command_entry("a")], dir.path()).unwrap_err();
        assert!(
            matches!(&err, WorkerListError::DuplicateName { name } if name == "a"),
            "{err}"
        );
        assert_eq!(
            specs(vec![command_entry("a"), command_entry("b")], dir.path())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_path_is_read_relative_to_the_config_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("echo")).unwrap();
        let entry = WorkerEntry {
            path: Some("echo".into()),
            ..WorkerEntry::default()
        };
        let err = specs(vec![entry.clone()], dir.path()).unwrap_err();
        assert!(err.to_string().contains("iii.worker.yaml"), "{err}");
        std::fs::write(
            dir.path().join("echo/iii.worker.yaml"),
            "name: echo\nscripts:\n  start: ./run.sh\n",
        )
        .unwrap();
        let spec = &specs(vec![entry], dir.path()).unwrap()[0];
        assert_eq!(spec.name, "echo");
        let expected = std::fs::canonicalize(dir.path().join("echo")).unwrap();
        assert_eq!(spec.dir.as_deref(), Some(expected.to_str().unwrap()));
    }

    #[test]
    fn an_entry_needs_a_path_or_a_name_and_a_command() {
        let dir = tempfile::tempdir().unwrap();
        let entry = WorkerEntry {
            name: Some("a".into()),
            ..WorkerEntry::default()
        };
        let err = specs(vec![entry], dir.path()).unwrap_err();
        assert!(err.to_string().starts_with("workers[0]:"), "{err}");
    }
}
