//! Managed workers in the registry: the operator's specs, the node the leader placed each on,
//! what that node reports about it, and the labels each node was started with.
//!
//! Placement only ever changes by a command: the leader's `ManagedWorkerPlaced`, or a
//! `NodePurged` that frees every placement on the purged node (the old copy is fenced by then,
//! and the purge released its name lease in the same step, so a replacement can never meet it).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::command::Outcome;
use super::limits;
use super::model::Registry;
use crate::ids::NodeId;
use crate::managed::spec::WorkerSpec;

/// The most bytes of JSON one spec (its manifest text included) may take in the registry.
pub const MAX_SPEC_BYTES: usize = 256 * 1024;

/// A node's labels (`--node-label K=V`), which a spec's `node_labels` must all match.
pub type NodeLabels = BTreeMap<String, String>;

/// Whether a node carrying `labels` may run a spec that asks for `wanted` (all of them).
pub fn labels_fit(wanted: &NodeLabels, labels: &NodeLabels) -> bool {
    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The placement a leader's decision was made from. The registry applies the decision only
/// while the worker is still placed so (a compare-and-set), so a decision made from an old
/// view (e.g. sent just before leadership moved) cannot move or unplace a running worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedPlacement {
    /// No check: how entries written before the check existed are replayed (as they were).
    #[default]
    Any,
    /// Applies only while the worker's placement is this.
    Was(Option<NodeId>),
}

impl ExpectedPlacement {
    fn allows(self, current: Option<NodeId>) -> bool {
        match self {
            Self::Any => true,
            Self::Was(expected) => expected == current,
        }
    }
}

/// Where a managed worker's spec came from. A node's `workers:` list replaces and removes only
/// the specs a config put; the specs an operator put with `quorum worker add` are theirs alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecOrigin {
    /// `quorum worker add`; also what specs logged before origins existed are taken for.
    #[default]
    Cli,
    /// A node's `workers:` list.
    Config,
}

impl SpecOrigin {
    /// How the origin is spelled in logs and in `quorum worker status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Config => "config",
        }
    }
}

/// One managed worker: what the operator asked for and where it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManagedWorker {
    pub spec: WorkerSpec,
    /// Who put the spec; the first put decides, and it never changes afterwards.
    #[serde(default)]
    pub origin: SpecOrigin,
    /// When the spec was put (ms since the epoch): a new spec is a new version, and the
    /// placed node runs `scripts.install` once per version.
    pub version: u64,
    /// The node that runs it; `None` until the leader places it (or after its node was purged).
    pub placement: Option<NodeId>,
    /// What the placed node last reported, and why the leader could not place it.
    pub status: ManagedStatus,
    /// Bumped by `quorum worker restart`: the placed node restarts the worker once per bump.
    #[serde(default)]
    pub restart_requests: u64,
}

/// What `quorum worker status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedStatus {
    /// The supervisor's state on the placed node ("starting", "running", "backoff", ...), or
    /// "pending" until a node reports.
    pub state: String,
    /// Whether a connection on the placed node announced the worker's name.
    pub ready: bool,
    pub restarts: u32,
    /// How the last run ended ("exit 3", "signal 9").
    pub last_exit: Option<String>,
    /// The last failure to start or install it.
    pub last_error: Option<String>,
    /// Why no node can run it (e.g. "no node has label zone=x"); `None` once placed.
    pub unplaceable: Option<String>,
}

impl ManagedStatus {
    fn pending() -> Self {
        Self {
            state: "pending".into(),
            ..Self::default()
        }
    }
}

impl Registry {
    /// Every managed worker, by name.
    pub fn managed_workers(&self) -> impl Iterator<Item = &ManagedWorker> {
        self.managed.values()
    }

    /// The managed worker of that name.
    pub fn managed_worker(&self, name: &str) -> Option<&ManagedWorker> {
        self.managed.get(name)
    }

    /// The labels each node committed once its supervisor was installed: only these nodes can
    /// run managed workers (a node whose supervisor failed, one still starting, or one of an
    /// older version is absent). A restart forgets them until the new process commits again.
    pub fn node_labels(&self) -> &BTreeMap<NodeId, NodeLabels> {
        &self.node_labels
    }

    /// Nodes that hold a placement: the leader watches their lease like that of nodes with
    /// live workers, so a node that dies while its managed worker is down is purged too.
    pub fn nodes_with_placements(&self) -> std::collections::BTreeSet<NodeId> {
        self.managed.values().filter_map(|m| m.placement).collect()
    }

    /// `ManagedWorkerPut`: a new spec, the same one again (nothing changes, not even the
    /// origin), a config's new spec for a name a config put (replaced), or a refusal.
    pub(super) fn put_managed(
        &mut self,
        spec: &WorkerSpec,
        at_ms: u64,
        origin: SpecOrigin,
        out: &mut Outcome,
    ) {
        if let Err(too_large) = limits::check(
            &format!(
                "the spec of managed worker `{}`",
                crate::protocol::names::echo(&spec.name)
            ),
            spec,
            MAX_SPEC_BYTES,
        ) {
            out.refusal = Some(format!(
                "{} is larger than {MAX_SPEC_BYTES} bytes of JSON",
                too_large.what
            ));
            return;
        }
        let node_labels = &self.node_labels;
        match self.managed.get_mut(&spec.name) {
            Some(existing) if existing.spec == *spec => {}
            Some(existing)
                if existing.origin == SpecOrigin::Config && origin == SpecOrigin::Config =>
            {
                replace(existing, spec, at_ms, node_labels);
            }
            Some(existing) => {
                out.refusal = Some(format!(
                    "a managed worker named '{}' already exists with a different spec (put by {}); remove it first",
                    crate::protocol::names::echo(&spec.name),
                    match existing.origin {
                        SpecOrigin::Cli => "`quorum worker add`",
                        SpecOrigin::Config => "a node's `workers:` config",
                    }
                ));
            }
            None => {
                self.managed.insert(
                    spec.name.clone(),
                    ManagedWorker {
                        spec: spec.clone(),
                        origin,
                        version: at_ms,
                        placement: None,
                        status: ManagedStatus::pending(),
                        restart_requests: 0,
                    },
                );
            }
        }
    }

    /// `ManagedConfigRetained`: removes every spec a config put whose name is not in `names`
    /// (the list of the config that was just submitted); specs put with the CLI stay.
    pub(super) fn retain_config_managed(&mut self, names: &[String]) {
        self.managed
            .retain(|name, worker| worker.origin == SpecOrigin::Cli || names.contains(name));
    }

    /// `ManagedWorkerRemoved`: forgets the spec; its node stops the worker.
    pub(super) fn remove_managed(&mut self, name: &str, out: &mut Outcome) {
        if self.managed.remove(name).is_none() {
            out.refusal = Some(unknown(name));
        }
    }

    /// `ManagedWorkerRestart`: asks the placed node to restart the worker once.
    pub(super) fn restart_managed(&mut self, name: &str, from: Option<u64>, out: &mut Outcome) {
        let Some(worker) = self.managed.get_mut(name) else {
            out.refusal = Some(unknown(name));
            return;
        };
        let current = worker.restart_requests;
        match from {
            None => worker.restart_requests = current.saturating_add(1),
            Some(from) if current == from => worker.restart_requests = current.saturating_add(1),
            // This very request, applied once already (or one just like it, made at the same
            // moment): the worker is being restarted either way.
            Some(from) if from.checked_add(1) == Some(current) => {}
            Some(_) => {
                out.refusal = Some(format!(
                    "managed worker '{}' was restarted by another request meanwhile; \
                     run the restart again if it is still needed",
                    crate::protocol::names::echo(name)
                ))
            }
        }
    }

    /// `ManagedWorkerPlaced`: the leader's choice. The status starts afresh for the new node.
    pub(super) fn place_managed(
        &mut self,
        name: &str,
        node: NodeId,
        expected: ExpectedPlacement,
        out: &mut Outcome,
    ) {
        let Some(worker) = self.managed.get_mut(name) else {
            out.refusal = Some(unknown(name));
            return;
        };
        if !expected.allows(worker.placement) {
            out.refusal = Some(placement_changed(name));
            return;
        }
        if worker.placement != Some(node) {
            worker.placement = Some(node);
            worker.status = ManagedStatus::pending();
        }
    }

    /// `ManagedWorkerUnplaceable`: no node may run it; the reason is shown in its status.
    pub(super) fn unplaceable_managed(
        &mut self,
        name: &str,
        reason: &str,
        expected: ExpectedPlacement,
        out: &mut Outcome,
    ) {
        if let Some(worker) = self.managed.get_mut(name) {
            if !expected.allows(worker.placement) {
                out.refusal = Some(placement_changed(name));
                return;
            }
            worker.placement = None;
            worker.status = ManagedStatus {
                unplaceable: Some(reason.to_string()),
                ..ManagedStatus::pending()
            };
        }
    }

    /// `ManagedWorkerStatus`: a report from `node`, kept only while the worker is placed there
    /// (a late report from a previous node changes nothing).
    pub(super) fn report_managed(&mut self, name: &str, node: NodeId, status: &ManagedStatus) {
        if let Some(worker) = self.managed.get_mut(name) {
            if worker.placement == Some(node) {
                worker.status = ManagedStatus {
                    unplaceable: None,
                    ..status.clone()
                };
            }
        }
    }

    /// A purged node's placements are freed, for the leader to place on survivors.
    pub(super) fn unplace_node(&mut self, node: NodeId) {
        for worker in self.managed.values_mut() {
            if worker.placement == Some(node) {
                worker.placement = None;
                worker.status = ManagedStatus::pending();
            }
        }
    }

    /// Whether a name lease or function held by `holder` passes to a newcomer that claims the
    /// same: yes when the holder is a managed worker (it announced a managed spec's name) on a
    /// draining node. This is how a managed worker's replacement takes over from the copy on a
    /// draining node while that copy finishes its calls; any other worker keeps what it holds.
    pub(super) fn yields_to_newcomer(&self, holder: crate::ids::WorkerId) -> bool {
        self.workers.get(&holder).is_some_and(|w| {
            self.draining_nodes.contains(&w.node)
                && w.meta
                    .as_ref()
                    .and_then(|m| m.name.as_ref())
                    .is_some_and(|name| self.managed.contains_key(name))
        })
    }
}

/// A config's new spec for a worker a config put: a new version, so the placed node replaces
/// the running process (and runs `scripts.install` again when its key changed). The worker
/// stays on its node while that node has the new spec's labels; otherwise it is unplaced and the
/// leader places it again.
fn replace(
    worker: &mut ManagedWorker,
    spec: &WorkerSpec,
    at_ms: u64,
    node_labels: &BTreeMap<NodeId, NodeLabels>,
) {
    worker.spec = spec.clone();
    // Strictly newer, even with a clock behind the one that put the old spec.
    worker.version = at_ms.max(worker.version + 1);
    let still_fits = worker
        .placement
        .and_then(|node| node_labels.get(&node))
        .is_some_and(|labels| labels_fit(&spec.node_labels, labels));
    if !still_fits {
        worker.placement = None;
        worker.status = ManagedStatus::pending();
    }
}

fn placement_changed(name: &str) -> String {
    format!(
        "the placement of managed worker '{}' changed since this decision",
        crate::protocol::names::echo(name)
    )
}

fn unknown(name: &str) -> String {
    format!(
        "no managed worker named '{}'",
        crate::protocol::names::echo(name)
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{announce_and_register, connect_on};
    use super::super::Command;
    use super::*;

    fn spec(name: &str, command: &str) -> WorkerSpec {
        serde_json::from_value(serde_json::json!({"name": name, "command": command}))
            .expect("a minimal spec")
    }

    fn put(reg: &mut Registry, spec: WorkerSpec) -> Outcome {
        reg.apply(&Command::ManagedWorkerPut {
            spec,
            at_ms: 7,
            origin: SpecOrigin::Cli,
        })
    }

    #[test]
    fn the_same_spec_twice_is_one_worker_and_a_different_one_is_refused() {
        let mut reg = Registry::default();
        assert_eq!(put(&mut reg, spec("echo", "python w.py")).refusal, None);
        assert_eq!(put(&mut reg, spec("echo", "python w.py")).refusal, None);
        let refusal = put(&mut reg, spec("echo", "node w.mjs")).refusal.unwrap();
        assert!(
            refusal.contains("already exists with a different spec"),
            "{refusal}"
        );
        let worker = reg.managed_worker("echo").unwrap();
        assert_eq!(worker.spec, spec("echo", "python w.py"));
        assert_eq!(worker.version, 7);
        assert_eq!(worker.status.state, "pending");
        assert_eq!(reg.managed_workers().count(), 1);
    }

    fn put_from(reg: &mut Registry, spec: WorkerSpec, at_ms: u64, origin: SpecOrigin) -> Outcome {
        reg.apply(&Command::ManagedWorkerPut {
            spec,
            at_ms,
            origin,
        })
    }

    fn labelled(name: &str, command: &str, zone: &str) -> WorkerSpec {
        WorkerSpec {
            node_labels: [("zone".to_string(), zone.to_string())].into(),
            ..spec(name, command)
        }
    }

    #[test]
    fn a_config_replaces_its_own_spec_as_a_new_version_and_a_retry_changes_nothing() {
        let mut reg = Registry::default();
        reg.apply(&Command::NodeLabels {
            node: 1,
            labels: [("zone".to_string(), "a".to_string())].into(),
        });
        put_from(&mut reg, labelled("w", "old", "a"), 100, SpecOrigin::Config);
        reg.apply(&place("w", 1, ExpectedPlacement::Was(None)));
        // Put by a node whose clock is behind: still a newer version.
        let replace = Command::ManagedWorkerPut {
            spec: labelled("w", "new", "a"),
            at_ms: 50,
            origin: SpecOrigin::Config,
        };
        assert_eq!(reg.apply(&replace).refusal, None);
        let worker = reg.managed_worker("w").unwrap().clone();
        assert_eq!(worker.spec.command.as_deref(), Some("new"));
        assert_eq!(worker.origin, SpecOrigin::Config);
        assert_eq!(worker.version, 101);
        assert_eq!(worker.placement, Some(1), "node 1 still has zone=a");
        // The same write again (a retried forward) is no change.
        assert_eq!(reg.apply(&replace).refusal, None);
        assert_eq!(reg.managed_worker("w").unwrap(), &worker);
        // A spec node 1 cannot run any more is placed afresh by the leader.
        put_from(&mut reg, labelled("w", "new", "b"), 200, SpecOrigin::Config);
        let worker = reg.managed_worker("w").unwrap();
        assert_eq!(worker.placement, None);
        assert_eq!(worker.version, 200);
        assert_eq!(worker.status.state, "pending");
    }

    #[test]
    fn a_config_never_changes_or_removes_a_cli_spec_and_the_cli_never_replaces_a_config_one() {
        let mut reg = Registry::default();
        put_from(&mut reg, spec("by-hand", "one"), 1, SpecOrigin::Cli);
        put_from(&mut reg, spec("by-file", "one"), 1, SpecOrigin::Config);
        let refusal = put_from(&mut reg, spec("by-hand", "two"), 2, SpecOrigin::Config)
            .refusal
            .unwrap();
        assert!(refusal.contains("quorum worker add"), "{refusal}");
        let refusal = put_from(&mut reg, spec("by-file", "two"), 2, SpecOrigin::Cli)
            .refusal
            .unwrap();
        assert!(refusal.contains("`workers:` config"), "{refusal}");
        // The same spec from the other origin is no change, and the origin stays the first.
        assert_eq!(
            put_from(&mut reg, spec("by-hand", "one"), 3, SpecOrigin::Config).refusal,
            None
        );
        reg.apply(&Command::ManagedConfigRetained { names: Vec::new() });
        let left: Vec<_> = reg.managed_workers().map(|w| w.spec.clone()).collect();
        assert_eq!(left, [spec("by-hand", "one")]);
        assert_eq!(
            reg.managed_worker("by-hand").unwrap().origin,
            SpecOrigin::Cli
        );
    }

    #[test]
    fn a_config_list_removes_the_config_specs_it_no_longer_names() {
        let mut reg = Registry::default();
        for name in ["a", "b", "c"] {
            put_from(&mut reg, spec(name, "true"), 1, SpecOrigin::Config);
        }
        put_from(&mut reg, spec("d", "true"), 1, SpecOrigin::Cli);
        let retain = Command::ManagedConfigRetained {
            names: vec!["a".into(), "c".into(), "d".into(), "never-put".into()],
        };
        assert_eq!(reg.apply(&retain).refusal, None);
        let names = |reg: &Registry| -> Vec<String> {
            reg.managed_workers().map(|w| w.spec.name.clone()).collect()
        };
        assert_eq!(names(&reg), ["a", "c", "d"]);
        reg.apply(&retain);
        assert_eq!(names(&reg), ["a", "c", "d"], "applied twice: no change");
    }

    #[test]
    fn specs_and_puts_logged_before_origins_existed_are_the_cli_s() {
        let old = r#"{"ManagedWorkerPut":{"spec":{"name":"w","command":"true"},"at_ms":3}}"#;
        let command: Command = serde_json::from_str(old).unwrap();
        assert_eq!(
            command,
            Command::ManagedWorkerPut {
                spec: spec("w", "true"),
                at_ms: 3,
                origin: SpecOrigin::Cli,
            }
        );
        let mut reg = Registry::default();
        put_from(&mut reg, spec("w", "true"), 3, SpecOrigin::Config);
        let mut value = serde_json::to_value(&reg).unwrap();
        let worker = value["managed"]["w"].as_object_mut().unwrap();
        assert_eq!(worker.remove("origin"), Some(serde_json::json!("config")));
        let old: Registry = serde_json::from_value(value).unwrap();
        assert_eq!(old.managed_worker("w").unwrap().origin, SpecOrigin::Cli);
        // So an old snapshot's spec survives a config that does not list it.
        let mut old = old;
        old.apply(&Command::ManagedConfigRetained { names: Vec::new() });
        assert!(old.managed_worker("w").is_some());
    }

    #[test]
    fn an_oversized_spec_is_refused() {
        let mut reg = Registry::default();
        let big = WorkerSpec {
            manifest: Some("x".repeat(MAX_SPEC_BYTES)),
            ..spec("big", "true")
        };
        let refusal = put(&mut reg, big).refusal.unwrap();
        assert!(refusal.contains("larger than"), "{refusal}");
        assert!(reg.managed_worker("big").is_none());
    }

    #[test]
    fn removing_or_restarting_an_unknown_worker_is_refused() {
        let mut reg = Registry::default();
        let out = reg.apply(&Command::ManagedWorkerRemoved { name: "x".into() });
        assert_eq!(out.refusal.as_deref(), Some("no managed worker named 'x'"));
        let out = reg.apply(&restart("x", Some(0)));
        assert!(out.refusal.is_some());
        put(&mut reg, spec("x", "true"));
        let out = reg.apply(&restart("x", Some(0)));
        assert_eq!(out.refusal, None);
        assert_eq!(reg.managed_worker("x").unwrap().restart_requests, 1);
        let out = reg.apply(&Command::ManagedWorkerRemoved { name: "x".into() });
        assert_eq!(out.refusal, None);
        assert!(reg.managed_worker("x").is_none());
    }

    fn restart(name: &str, from: Option<u64>) -> Command {
        Command::ManagedWorkerRestart {
            name: name.into(),
            from,
        }
    }

    fn restart_requests(reg: &Registry, name: &str) -> u64 {
        reg.managed_worker(name).unwrap().restart_requests
    }

    #[test]
    fn a_restart_proposed_twice_restarts_once() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        let request = restart("w", Some(0));
        assert_eq!(reg.apply(&request).refusal, None);
        // The forwarder did not learn the outcome and proposed the same write again.
        assert_eq!(reg.apply(&request).refusal, None);
        assert_eq!(restart_requests(&reg, "w"), 1);
        // The next operator's restart reads 1 and moves it on.
        assert_eq!(reg.apply(&restart("w", Some(1))).refusal, None);
        assert_eq!(reg.apply(&restart("w", Some(1))).refusal, None);
        assert_eq!(restart_requests(&reg, "w"), 2);
    }

    #[test]
    fn a_restart_read_from_an_old_count_is_refused_and_changes_nothing() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        for from in 0..3 {
            reg.apply(&restart("w", Some(from)));
        }
        assert_eq!(restart_requests(&reg, "w"), 3);
        // Read before two other restarts, and retried after them: not a third restart.
        let refusal = reg.apply(&restart("w", Some(1))).refusal.unwrap();
        assert!(
            refusal.contains("restarted by another request"),
            "{refusal}"
        );
        let refusal = reg.apply(&restart("w", Some(9))).refusal;
        assert!(refusal.is_some());
        assert_eq!(restart_requests(&reg, "w"), 3);
        // The largest count cannot wrap around.
        reg.managed.get_mut("w").unwrap().restart_requests = u64::MAX;
        assert_eq!(reg.apply(&restart("w", Some(u64::MAX))).refusal, None);
        assert!(reg
            .apply(&restart("w", Some(u64::MAX - 1)))
            .refusal
            .is_none());
        assert_eq!(restart_requests(&reg, "w"), u64::MAX);
    }

    #[test]
    fn a_restart_logged_before_the_check_existed_still_counts_up() {
        let old = r#"{"ManagedWorkerRestart":{"name":"w"}}"#;
        let command: Command = serde_json::from_str(old).unwrap();
        assert_eq!(command, restart("w", None));
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        reg.apply(&command);
        reg.apply(&command);
        assert_eq!(restart_requests(&reg, "w"), 2, "replayed as it was applied");
        let new = restart("w", Some(2));
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), new);
    }

    #[test]
    fn reports_count_only_from_the_placed_node_and_a_purge_frees_the_placement() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        reg.apply(&Command::ManagedWorkerPlaced {
            name: "w".into(),
            node: 2,
            expected: ExpectedPlacement::Was(None),
        });
        let running = ManagedStatus {
            state: "running".into(),
            ready: true,
            restarts: 1,
            ..ManagedStatus::default()
        };
        reg.apply(&Command::ManagedWorkerStatus {
            name: "w".into(),
            node: 3,
            status: running.clone(),
        });
        assert_eq!(reg.managed_worker("w").unwrap().status.state, "pending");
        reg.apply(&Command::ManagedWorkerStatus {
            name: "w".into(),
            node: 2,
            status: running.clone(),
        });
        assert_eq!(reg.managed_worker("w").unwrap().status, running);
        assert_eq!(
            reg.nodes_with_placements().into_iter().collect::<Vec<_>>(),
            [2]
        );
        reg.apply(&Command::NodePurged { node: 2 });
        let worker = reg.managed_worker("w").unwrap();
        assert_eq!(worker.placement, None);
        assert!(!worker.status.ready);
    }

    #[test]
    fn an_unplaceable_worker_says_why() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        reg.apply(&Command::ManagedWorkerUnplaceable {
            name: "w".into(),
            reason: "no node has label zone=x".into(),
            expected: ExpectedPlacement::Any,
        });
        let status = &reg.managed_worker("w").unwrap().status;
        assert_eq!(
            status.unplaceable.as_deref(),
            Some("no node has label zone=x")
        );
    }

    fn place(name: &str, node: NodeId, expected: ExpectedPlacement) -> Command {
        Command::ManagedWorkerPlaced {
            name: name.into(),
            node,
            expected,
        }
    }

    #[test]
    fn a_decision_from_a_stale_placement_is_refused() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        assert_eq!(
            reg.apply(&place("w", 1, ExpectedPlacement::Was(None)))
                .refusal,
            None
        );
        // An old leader decided from a view where `w` was unplaced: it must not move it.
        let out = reg.apply(&place("w", 2, ExpectedPlacement::Was(None)));
        assert!(out.refusal.is_some(), "{out:?}");
        assert_eq!(reg.managed_worker("w").unwrap().placement, Some(1));
        // Nor declare it unplaceable while it runs on node 1.
        let out = reg.apply(&Command::ManagedWorkerUnplaceable {
            name: "w".into(),
            reason: "no live node can take it".into(),
            expected: ExpectedPlacement::Was(None),
        });
        assert!(out.refusal.is_some(), "{out:?}");
        let worker = reg.managed_worker("w").unwrap();
        assert_eq!(worker.placement, Some(1));
        assert_eq!(worker.status.unplaceable, None);
        // A decision from the current placement moves it.
        let out = reg.apply(&place("w", 2, ExpectedPlacement::Was(Some(1))));
        assert_eq!(out.refusal, None);
        assert_eq!(reg.managed_worker("w").unwrap().placement, Some(2));
    }

    #[test]
    fn a_placement_logged_before_the_check_existed_still_applies() {
        let old = r#"{"ManagedWorkerPlaced":{"name":"w","node":2}}"#;
        let command: Command = serde_json::from_str(old).unwrap();
        assert_eq!(command, place("w", 2, ExpectedPlacement::Any));
        let old = r#"{"ManagedWorkerUnplaceable":{"name":"w","reason":"r"}}"#;
        let command: Command = serde_json::from_str(old).unwrap();
        assert!(matches!(
            command,
            Command::ManagedWorkerUnplaceable {
                expected: ExpectedPlacement::Any,
                ..
            }
        ));
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        reg.apply(&place("w", 1, ExpectedPlacement::Any));
        reg.apply(&place("w", 2, ExpectedPlacement::Any));
        assert_eq!(reg.managed_worker("w").unwrap().placement, Some(2));
        let new = place("w", 3, ExpectedPlacement::Was(Some(2)));
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), new);
    }

    #[test]
    fn node_labels_are_kept_per_node() {
        let mut reg = Registry::default();
        let labels: NodeLabels = [("zone".to_string(), "a".to_string())].into();
        reg.apply(&Command::NodeLabels {
            node: 4,
            labels: labels.clone(),
        });
        assert_eq!(reg.node_labels().get(&4), Some(&labels));
        reg.apply(&Command::NodePurged { node: 4 });
        assert_eq!(reg.node_labels().get(&4), Some(&labels));
        reg.apply(&Command::NodeRestarted { node: 4 });
        assert_eq!(reg.node_labels().get(&4), None, "a new process says again");
    }

    #[test]
    fn managed_workers_survive_a_snapshot_and_an_old_snapshot_without_them_still_reads() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        let bytes = serde_json::to_vec(&reg).unwrap();
        let back: Registry = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, reg);
        let mut value = serde_json::to_value(Registry::default()).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("managed");
        object.remove("node_labels");
        let old: Registry = serde_json::from_value(value).unwrap();
        assert_eq!(old, Registry::default());
    }

    #[test]
    fn a_newcomer_takes_the_name_and_functions_of_a_worker_on_a_draining_node_only() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        let old = connect_on(&mut reg, 1, 1);
        assert!(!announce_and_register(&mut reg, old, "w").name_rejected);
        let rival = connect_on(&mut reg, 2, 2);
        let out = announce_and_register(&mut reg, rival, "w");
        assert!(
            out.name_rejected,
            "a live holder on a serving node keeps its name"
        );

        reg.apply(&Command::NodeDraining {
            node: 1,
            cause: None,
        });
        let newcomer = connect_on(&mut reg, 3, 3);
        let out = announce_and_register(&mut reg, newcomer, "w");
        assert!(!out.name_rejected, "{out:?}");
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        assert_eq!(
            reg.resolve_function("default", "w::echo"),
            super::super::Resolution::Worker {
                owner: newcomer,
                node: 3
            }
        );
        // The old copy leaving later takes nothing with it.
        reg.apply(&Command::WorkerDisconnected { worker: old });
        assert_eq!(
            reg.resolve_function("default", "w::echo"),
            super::super::Resolution::Worker {
                owner: newcomer,
                node: 3
            }
        );
        assert_eq!(reg.moving_from("default", "w::echo"), None);
        reg.check_invariants().unwrap();
    }

    #[test]
    fn a_worker_that_is_not_managed_keeps_its_name_on_a_draining_node() {
        let mut reg = Registry::default();
        let old = connect_on(&mut reg, 1, 1);
        assert!(!announce_and_register(&mut reg, old, "plain").name_rejected);
        reg.apply(&Command::NodeDraining {
            node: 1,
            cause: None,
        });
        let newcomer = connect_on(&mut reg, 3, 3);
        let out = announce_and_register(&mut reg, newcomer, "plain");
        assert!(out.name_rejected, "{out:?}");
        assert_eq!(
            reg.resolve_function("default", "plain::echo"),
            super::super::Resolution::Worker {
                owner: old,
                node: 1
            }
        );
    }

    #[test]
    fn an_undrained_node_keeps_its_workers_names() {
        let mut reg = Registry::default();
        put(&mut reg, spec("w", "true"));
        let old = connect_on(&mut reg, 1, 1);
        assert!(!announce_and_register(&mut reg, old, "w").name_rejected);
        let cause = Some(crate::registry::DrainCause::Removal { id: 9 });
        reg.apply(&Command::NodeDraining { node: 1, cause });
        reg.apply(&Command::NodeUndrained {
            node: 1,
            removal: Some(9),
        });
        assert!(!reg.is_draining(1));
        let newcomer = connect_on(&mut reg, 3, 3);
        assert!(announce_and_register(&mut reg, newcomer, "w").name_rejected);
    }
}
