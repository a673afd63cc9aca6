//! The node agent: makes this node's supervisor run exactly the managed workers the registry
//! places here, tells it which are ready (registered), and commits what it reports.
//!
//! - placed here → `ensure(launch_plan(spec))` (once per version and per restart request),
//!   but not while a connection on another, serving node still holds the worker's name: a
//!   worker moved here (relabelled) waits for its old copy to stop (`move_gate.rs`);
//! - placed elsewhere or removed → `stop`; while this node drains, a worker moving to another
//!   node is handed over instead (`handover.rs`): the local copy stops once its replacement is
//!   registered;
//! - fenced → `kill_all()` at once (`Node::set_fenced` does it as it fences, and the agent again
//!   when it sees the fence, in case it ensured a worker in between), before the majority may
//!   purge this node and place the workers elsewhere; its commits are bounded so it never
//!   waits on a cluster it cannot reach; on unfencing the agent first commits a barrier, so its replica is
//!   current, and starts again only what is still placed here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{info, warn};

use super::handover;
use super::manifest::launch_plan;
use super::move_gate::{Gate, MoveGate};
use super::ready::{name_held_elsewhere, ready_on};
use super::supervisor::{ProcessState, ProcessStatus, Supervisor};
use crate::node::Node;
use crate::registry::{Command, ManagedStatus, ManagedWorker};

/// How often the agent looks again without being woken.
const TICK: Duration = Duration::from_millis(500);

/// The least time between two status commits of one worker: a worker that crashes in a loop
/// costs the log at most one entry per this.
const REPORT_EVERY: Duration = Duration::from_millis(500);

/// How long one status commit may retry (no leader, a cut-off node) before the agent moves on.
const REPORT_BUDGET: Duration = Duration::from_secs(2);

/// What the agent last asked of the supervisor for one worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ensured {
    version: u64,
    restart_requests: u64,
}

/// The agent's memory between passes.
struct Agent {
    ensured: BTreeMap<String, Ensured>,
    /// Names marked ready in the supervisor.
    ready: BTreeSet<String>,
    /// Hand-overs under way (drain), by name.
    handing_over: BTreeSet<String>,
    /// Statuses to commit, and when each worker's last commit went out.
    dirty: BTreeSet<String>,
    reported: BTreeMap<String, (ManagedStatus, Instant)>,
    /// Plans that cannot be made (bad manifest), reported once per version.
    plan_errors: BTreeMap<String, (u64, String)>,
    /// Workers placed here that wait for their copy on another node to let go of the name.
    gate: MoveGate,
}

impl Agent {
    fn new(gate: MoveGate) -> Self {
        Agent {
            ensured: BTreeMap::new(),
            ready: BTreeSet::new(),
            handing_over: BTreeSet::new(),
            dirty: BTreeSet::new(),
            reported: BTreeMap::new(),
            plan_errors: BTreeMap::new(),
            gate,
        }
    }
}

/// Runs the agent until the node shuts down (the node itself then stops its managed workers,
/// within their grace: `stop_managed_workers`).
pub async fn run(node: Arc<Node>, supervisor: Supervisor) {
    // The old copy stops within its grace; a dead node's copy is gone (and its name freed)
    // once the node is purged.
    let move_bound = node.config.managed_stop_grace + node.config.lease.purge_after;
    let mut agent = Agent::new(MoveGate::new(move_bound));
    let mut changes = node.managed.watch_changes();
    let mut fenced = node.watch_fenced();
    let mut events = supervisor.subscribe();
    let mut tick = tokio::time::interval(TICK);
    let mut was_fenced = false;
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            _ = fenced.changed() => {}
            _ = tick.tick() => {}
            event = events.recv() => match event {
                Ok(change) => { agent.dirty.insert(change.name); }
                Err(RecvError::Lagged(_)) => agent.dirty.extend(supervisor.names()),
                Err(RecvError::Closed) => {}
            },
            _ = node.shutdown.cancelled() => break,
        }
        if node.shutdown.is_cancelled() {
            break;
        }
        let is_fenced = *fenced.borrow_and_update();
        if is_fenced {
            if !was_fenced {
                supervisor.kill_all();
                agent.ensured.clear();
                agent.ready.clear();
                warn!(
                    node = node.id,
                    "fenced: killed every managed worker on this node"
                );
            }
            was_fenced = true;
            continue;
        }
        if was_fenced || supervisor.is_fenced() {
            // (The supervisor may have been fenced, and unfenced, between two passes.)
            // The replica may be behind what the majority decided while this node was cut
            // off: a committed write returns once it is applied here, so after it the
            // placements read below are current.
            if let Err(err) = node
                .commit_within(
                    Command::NodeLabels {
                        node: node.id,
                        labels: node.config.node_labels.clone(),
                    },
                    REPORT_BUDGET,
                )
                .await
            {
                warn!(node = node.id, error = %err, "unfenced but cannot reach the cluster yet; managed workers stay stopped");
                continue;
            }
            was_fenced = false;
            agent.ensured.clear();
            agent.ready.clear();
            supervisor.resume();
            if node.is_fenced() {
                // Fenced again since the barrier: kill_all may have run before the resume.
                supervisor.kill_all();
                continue;
            }
            info!(
                node = node.id,
                "unfenced: starting the managed workers still placed here"
            );
        }
        agent.reconcile(&node, &supervisor);
        agent.report(&node, &supervisor).await;
    }
}

impl Agent {
    /// Brings the supervisor in line with the registry's placements on this node.
    fn reconcile(&mut self, node: &Arc<Node>, supervisor: &Supervisor) {
        let (mine, elsewhere, ready_now, draining) = {
            let registry = node.registry();
            // Draining by SIGTERM, or by `quorum cluster leave/remove` (evacuate.rs).
            let draining = node.is_draining() || registry.is_draining(node.id);
            let mine: Vec<ManagedWorker> = registry
                .managed_workers()
                .filter(|m| m.placement == Some(node.id))
                .cloned()
                .collect();
            let elsewhere: BTreeMap<String, Option<crate::ids::NodeId>> = registry
                .managed_workers()
                .filter(|m| m.placement != Some(node.id))
                .map(|m| (m.spec.name.clone(), m.placement))
                .collect();
            (mine, elsewhere, ready_on(&registry, node.id), draining)
        };
        let wanted: BTreeSet<String> = mine.iter().map(|m| m.spec.name.clone()).collect();
        self.gate.retain(|name| wanted.contains(name));
        for worker in &mine {
            self.ensure(node, supervisor, worker);
        }
        for name in supervisor.names() {
            if wanted.contains(&name)
                || self.handing_over.contains(&name)
                || supervisor.is_stopping(&name)
            {
                continue;
            }
            self.ensured.remove(&name);
            self.ready.remove(&name);
            match elsewhere.get(&name).copied().flatten() {
                Some(to) if draining => {
                    self.handing_over.insert(name.clone());
                    let deadline = Instant::now() + node.config.drain_grace;
                    info!(node = node.id, worker_name = %name, to, "handing the managed worker over");
                    tokio::spawn(handover::hand_over(
                        node.clone(),
                        supervisor.clone(),
                        name,
                        to,
                        deadline,
                    ));
                }
                Some(to) => {
                    // Not a drain: this node was purged while alive, or its placement is
                    // stale. The replacement may be starting already, so no grace.
                    warn!(node = node.id, worker_name = %name, to, "managed worker placed on another node; killing the local copy");
                    let supervisor = supervisor.clone();
                    tokio::spawn(async move { supervisor.kill(&name).await });
                }
                None => {
                    info!(node = node.id, worker_name = %name, "managed worker no longer placed here; stopping it");
                    let supervisor = supervisor.clone();
                    tokio::spawn(async move { supervisor.stop(&name).await });
                }
            }
        }
        self.handing_over
            .retain(|name| supervisor.names().contains(name));
        for name in &wanted {
            let ready = ready_now.contains(name);
            if ready != self.ready.contains(name) {
                if ready {
                    supervisor.mark_ready(name);
                    self.ready.insert(name.clone());
                } else {
                    supervisor.mark_unready(name);
                    self.ready.remove(name);
                }
                self.dirty.insert(name.clone());
            }
        }
    }

    /// Starts (or restarts, on a new version or restart request) one worker placed here.
    fn ensure(&mut self, node: &Node, supervisor: &Supervisor, worker: &ManagedWorker) {
        let name = &worker.spec.name;
        let want = Ensured {
            version: worker.version,
            restart_requests: worker.restart_requests,
        };
        let previous = self.ensured.get(name).copied();
        if previous == Some(want) || node.is_fenced() {
            return;
        }
        let holder = name_held_elsewhere(&node.registry(), node.id, name);
        let was_waiting = self.gate.holder(name);
        match self.gate.check(name, holder, Instant::now()) {
            Gate::Open => {}
            Gate::Wait { holder, until } => {
                if was_waiting != Some(holder) {
                    info!(node = node.id, worker_name = %name, holder,
                        wait_at_most_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                        "managed worker placed here waits for its copy on another node to stop");
                    self.dirty.insert(name.clone());
                }
                return;
            }
            Gate::Overdue { holder } => {
                warn!(node = node.id, worker_name = %name, holder,
                    "the copy on another node still holds the name after the stop grace and the purge time; starting anyway");
            }
        }
        let planned = match launch_plan(&worker.spec) {
            Ok(planned) => planned,
            Err(err) => {
                if self.plan_errors.get(name).map(|(v, _)| *v) != Some(worker.version) {
                    warn!(node = node.id, worker_name = %name, error = %err, "managed worker cannot be started");
                    self.plan_errors
                        .insert(name.clone(), (worker.version, err.to_string()));
                    self.dirty.insert(name.clone());
                }
                return;
            }
        };
        self.plan_errors.remove(name);
        for warning in &planned.warnings {
            warn!(node = node.id, worker_name = %name, warning = %warning, "managed worker manifest");
        }
        // A new restart count is a new plan: the supervisor replaces the running copy (once
        // its group is gone), in order with every other ensure and under the fence.
        let mut plan = planned.plan;
        plan.restart_requests = worker.restart_requests;
        if let Err(err) = supervisor.ensure(plan) {
            warn!(node = node.id, worker_name = %name, error = %err, "managed worker not started");
            return;
        } else {
            info!(node = node.id, worker_name = %name, version = worker.version, "managed worker ensured");
        }
        self.ensured.insert(name.clone(), want);
        self.ready.remove(name);
        self.dirty.insert(name.clone());
    }

    /// Commits the changed statuses of workers placed here, at most one per worker per
    /// [`REPORT_EVERY`].
    async fn report(&mut self, node: &Node, supervisor: &Supervisor) {
        let placed_here: BTreeSet<String> = node
            .registry()
            .managed_workers()
            .filter(|m| m.placement == Some(node.id))
            .map(|m| m.spec.name.clone())
            .collect();
        let now = Instant::now();
        let due: Vec<String> = self
            .dirty
            .iter()
            .filter(|name| placed_here.contains(*name))
            .filter(|name| {
                self.reported
                    .get(*name)
                    .is_none_or(|(_, at)| now.duration_since(*at) >= REPORT_EVERY)
            })
            .cloned()
            .collect();
        self.dirty.retain(|name| placed_here.contains(name));
        for name in due {
            self.dirty.remove(&name);
            let status = self.status_of(&name, supervisor);
            if self.reported.get(&name).map(|(s, _)| s) == Some(&status) {
                continue;
            }
            let command = Command::ManagedWorkerStatus {
                name: name.clone(),
                node: node.id,
                status: status.clone(),
            };
            if node.is_fenced() {
                return;
            }
            // Bounded: a report must never keep the agent from noticing a fence.
            match node.commit_within(command, REPORT_BUDGET).await {
                Ok(_) => {
                    self.reported.insert(name, (status, Instant::now()));
                }
                Err(err) => {
                    warn!(node = node.id, worker_name = %name, error = %err, "managed worker status not committed");
                    self.dirty.insert(name);
                    return;
                }
            }
        }
    }

    fn status_of(&self, name: &str, supervisor: &Supervisor) -> ManagedStatus {
        let process = supervisor.status(name);
        let mut status = match &process {
            Some(process) => from_process(process),
            None => match self.gate.holder(name) {
                Some(holder) => ManagedStatus {
                    state: "waiting".into(),
                    last_error: Some(format!(
                        "waiting for the copy on node {holder} to stop (it still holds the name)"
                    )),
                    ..ManagedStatus::default()
                },
                None => ManagedStatus {
                    state: "pending".into(),
                    ..ManagedStatus::default()
                },
            },
        };
        status.ready = self.ready.contains(name);
        if let Some((_, error)) = self.plan_errors.get(name) {
            status.state = "invalid".into();
            status.last_error = Some(error.clone());
        }
        status
    }
}

/// The registry's view of a supervisor status.
fn from_process(process: &ProcessStatus) -> ManagedStatus {
    ManagedStatus {
        state: state_name(process.state).into(),
        ready: process.state == ProcessState::Ready,
        restarts: process.restarts,
        last_exit: process.last_exit.clone(),
        last_error: process.last_error.clone(),
        unplaceable: None,
    }
}

fn state_name(state: ProcessState) -> &'static str {
    match state {
        ProcessState::Pending => "pending",
        ProcessState::Installing => "installing",
        ProcessState::Starting => "starting",
        ProcessState::Ready => "ready",
        ProcessState::BackingOff => "backing-off",
        ProcessState::Stopping => "stopping",
        ProcessState::Stopped => "stopped",
        ProcessState::Exited => "exited",
    }
}
