//! supervisor: runs the managed workers placed on this node as child processes, and restarts
//! them by their policy.
//!
//! Each worker has one task (`run.rs`) that installs it once per `install_key`, starts it,
//! waits for it to become ready (a connection announcing its name, reported by the caller
//! through `mark_ready`) and restarts it with backoff. Every process runs in its own process
//! group and dies with the node (`process.rs`). Output goes to a bounded ring per worker
//! (`logs.rs`). The supervisor never talks to the registry: callers learn what happened from
//! `subscribe()`.
//!
//! Invariants: at most one process group per worker name at a time (a replacement starts
//! only after the old group is gone, and a stopped worker stays known until its group is
//! gone); no lock is held across an `.await`; `kill_all` works without the runtime making
//! progress, and after it nothing starts until `resume`.

mod backoff;
mod env;
mod install;
pub mod logs;
mod process;
mod redact;
mod run;

pub use backoff::{Backoff, BackoffPolicy};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::local::LocalTokens;
use crate::config::Config;
use crate::managed::spec::{check_name, BadName, RestartPolicy};
use logs::LogRing;
use process::Spawner;

/// What the supervisor runs for one worker: resolved from a spec and its manifest by
/// `managed::launch_plan`. Two equal plans run the same way, so `ensure` of an equal plan
/// leaves the running process alone.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchPlan {
    pub name: String,
    /// The directory install and start run in; empty means a directory of the worker's own
    /// under the supervisor's data directory.
    pub dir: PathBuf,
    /// Run once per `install_key` before the first start (`sh -c`).
    pub install: Option<String>,
    /// Changes when the worker's version changes; install runs again for a new key.
    pub install_key: String,
    /// Runs the worker (`sh -c`).
    pub start: String,
    /// The manifest's `env`.
    pub env: Vec<(String, String)>,
    /// The manifest's `config`, handed to the worker as a file and as variables.
    pub config: Option<serde_json::Value>,
    pub restart: RestartPolicy,
    /// How many restarts the operator asked for (`quorum worker restart`): a new count makes
    /// a new plan, so `ensure` replaces the running copy like any other change.
    pub restart_requests: u64,
}

/// How this node's supervisor runs workers.
#[derive(Clone, Debug)]
pub struct SupervisorSettings {
    /// Where install markers, config files and directories of workers without one live.
    pub data_dir: PathBuf,
    /// `III_URL` of every worker: where this node's managed workers connect (see
    /// `managed::door`), without a token.
    pub worker_url: String,
    /// Set when the worker port asks for a token: each start of a worker gets a fresh local
    /// token (`?token=` on its `III_URL`), forgotten when its process is gone, and hidden
    /// from its log.
    pub local_tokens: Option<Arc<LocalTokens>>,
    /// The bytes of output kept per worker.
    pub log_bytes_per_worker: usize,
    /// How long a started worker may take to register before it counts as failed.
    pub ready_timeout: Duration,
    /// How long `scripts.install` may run before its group is killed and the install failed.
    pub install_timeout: Duration,
    /// How long a stopped worker has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    pub backoff: BackoffPolicy,
}

impl SupervisorSettings {
    /// The node's settings: `<data_dir>/managed`, the `--managed-*` flags, and where its
    /// workers connect (`worker_url`, with `local_tokens` when that needs a token).
    pub fn from_config(
        config: &Config,
        worker_url: String,
        local_tokens: Option<Arc<LocalTokens>>,
    ) -> Self {
        SupervisorSettings {
            data_dir: config.data_dir.join("managed"),
            worker_url,
            local_tokens,
            log_bytes_per_worker: config.managed_log_bytes,
            ready_timeout: config.managed_ready_timeout,
            install_timeout: config.managed_install_timeout,
            stop_grace: config.managed_stop_grace,
            backoff: BackoffPolicy::default(),
        }
    }
}

/// Where a worker is in its life on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessState {
    /// Waiting for the previous copy to stop, or checking its directory.
    Pending,
    /// `scripts.install` is running.
    Installing,
    /// The process runs but no connection announces its name (yet, or any more).
    Starting,
    /// The process runs and its connection is registered.
    Ready,
    /// Waiting before the next install or start.
    BackingOff,
    /// SIGTERM sent; waiting for the process group to end.
    Stopping,
    /// Stopped by `stop` or `kill_all`; nothing runs.
    Stopped,
    /// Exited, and its restart policy says not to start it again.
    Exited,
}

/// One worker's state as the supervisor sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub state: ProcessState,
    /// The running process (the group leader), if any.
    pub pid: Option<u32>,
    /// Starts after the first one (crashes, readiness failures, clean exits under `always`).
    pub restarts: u32,
    /// How the last process ended: `exit 3`, `signal 9`.
    pub last_exit: Option<String>,
    /// What went wrong last: a failed install, a readiness timeout, a spawn error.
    pub last_error: Option<String>,
    /// In `BackingOff`, the wait before the next attempt.
    pub retry_in_ms: Option<u64>,
}

impl ProcessStatus {
    fn new() -> Self {
        ProcessStatus {
            state: ProcessState::Pending,
            pid: None,
            restarts: 0,
            last_exit: None,
            last_error: None,
            retry_in_ms: None,
        }
    }
}

/// A worker's status just after it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub name: String,
    pub status: ProcessStatus,
}

/// What `ensure` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// Nothing ran under that name; it starts now.
    Started,
    /// Another plan (or a killed one) ran under that name; it is stopped and this one starts.
    Replaced,
    /// The same plan already runs (or ran to its end under its policy).
    Unchanged,
}

/// Why the supervisor cannot do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("{0}")]
    Name(#[from] BadName),
    #[error("the supervisor needs a tokio runtime")]
    NoRuntime,
    #[error("cannot start the process spawner thread: {0}")]
    Spawner(std::io::Error),
    #[error("the node is fenced or shutting down: no managed worker starts")]
    Fenced,
}

/// Runs this node's managed workers. Cheap to clone; all clones share the workers.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SupervisorSettings,
    spawner: Spawner,
    /// Every worker with a task or a process, including those being stopped. The flag is
    /// `fenced`, read and written under the same lock.
    workers: Mutex<Workers>,
    events: broadcast::Sender<StatusChange>,
}

#[derive(Default)]
struct Workers {
    by_name: HashMap<String, Arc<Worker>>,
    /// Set by `kill_all` (cleared by `resume`) and by `shut_down`: `ensure` refuses meanwhile.
    fenced: bool,
}

/// One worker's shared state: written by its task, read by the `Supervisor` handle.
struct Worker {
    plan: LaunchPlan,
    /// Shared with the copies before and after this one, so a restart keeps the output.
    log: Arc<LogRing>,
    status: Mutex<ProcessStatus>,
    /// The process group running now (install or worker), for a synchronous `kill_all`.
    group: Mutex<Option<i32>>,
    ready: watch::Sender<bool>,
    /// Asks the task to stop its process and end.
    stop: CancellationToken,
    /// Set by `kill_all`: stop without grace, and `ensure` of the same plan starts it again.
    halted: AtomicBool,
    /// Set by `stop`: the worker is on its way out and is forgotten once `finished`.
    stopping: AtomicBool,
    /// The copy this one replaces, until its group is gone (so `kill_all` reaches it).
    replaces: Mutex<Option<Arc<Worker>>>,
    /// Cancelled when the task has ended and its process group is gone.
    finished: CancellationToken,
    events: broadcast::Sender<StatusChange>,
}

impl Worker {
    /// Changes the status and tells subscribers.
    fn update(&self, change: impl FnOnce(&mut ProcessStatus)) {
        let status = {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut status);
            status.clone()
        };
        let _ = self.events.send(StatusChange {
            name: self.plan.name.clone(),
            status,
        });
    }

    fn status(&self) -> ProcessStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// SIGKILLs this copy's group, and the groups of the copies it still waits for.
    fn kill(&self) {
        self.halted.store(true, Ordering::SeqCst);
        if let Some(group) = *self.group.lock().unwrap_or_else(|p| p.into_inner()) {
            process::kill_group(group, libc::SIGKILL);
        }
        self.stop.cancel();
        let replaces = self
            .replaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(old) = replaces {
            old.kill();
        }
    }
}

/// Status changes kept for a subscriber that falls behind.
const EVENT_BACKLOG: usize = 1024;

impl Supervisor {
    /// A supervisor with no workers. Call it inside the node's tokio runtime.
    pub fn new(settings: SupervisorSettings) -> Result<Self, SupervisorError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SupervisorError::NoRuntime)?;
        let spawner = Spawner::start(runtime).map_err(SupervisorError::Spawner)?;
        Ok(Supervisor {
            inner: Arc::new(Inner {
                settings,
                spawner,
                workers: Mutex::new(Workers::default()),
                events: broadcast::channel(EVENT_BACKLOG).0,
            }),
        })
    }

    /// Makes `plan` run: starts it, replaces a different plan of the same name (or one being
    /// stopped or killed: the old process group is gone first), or leaves an equal plan
    /// alone. Refused while fenced (after `kill_all`, until `resume`).
    pub fn ensure(&self, plan: LaunchPlan) -> Result<Ensured, SupervisorError> {
        check_name(&plan.name)?;
        let mut workers = self.workers();
        if workers.fenced {
            return Err(SupervisorError::Fenced);
        }
        let previous = workers.by_name.get(&plan.name).cloned();
        if let Some(old) = &previous {
            if old.plan == plan && !old.halted() && !old.stopping() {
                return Ok(Ensured::Unchanged);
            }
            old.stop.cancel();
        }
        let log = match &previous {
            Some(old) => old.log.clone(),
            None => Arc::new(LogRing::new(self.inner.settings.log_bytes_per_worker)),
        };
        let worker = Arc::new(Worker {
            log,
            status: Mutex::new(ProcessStatus::new()),
            group: Mutex::new(None),
            ready: watch::channel(false).0,
            stop: CancellationToken::new(),
            halted: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            replaces: Mutex::new(previous.clone()),
            finished: CancellationToken::new(),
            events: self.inner.events.clone(),
            plan,
        });
        workers
            .by_name
            .insert(worker.plan.name.clone(), worker.clone());
        drop(workers);
        let after = previous.as_ref().map(|old| old.finished.clone());
        tokio::spawn(run::run(
            worker,
            self.inner.settings.clone(),
            self.inner.spawner.clone(),
            after,
        ));
        Ok(match previous {
            Some(_) => Ensured::Replaced,
            None => Ensured::Started,
        })
    }

    /// Stops a worker: SIGTERM to its process group, SIGKILL after the grace; resolves when
    /// the group is gone. Until then the worker stays known (an `ensure` of the name waits
    /// for it, `kill_all` kills it); then it is forgotten. False when no worker had that name.
    pub async fn stop(&self, name: &str) -> bool {
        self.stop_with(name, false).await
    }

    /// Like `stop`, but SIGKILL at once: for a copy whose replacement may already be
    /// starting elsewhere.
    pub async fn kill(&self, name: &str) -> bool {
        self.stop_with(name, true).await
    }

    /// The node shuts down: refuses every `ensure` from now on and stops every worker at
    /// once (SIGTERM, SIGKILL after the grace; not one after the other); resolves when all
    /// are gone.
    pub async fn shut_down(&self) {
        let names: Vec<String> = {
            let mut workers = self.workers();
            workers.fenced = true;
            workers.by_name.keys().cloned().collect()
        };
        futures_util::future::join_all(names.iter().map(|name| self.stop(name))).await;
    }

    async fn stop_with(&self, name: &str, at_once: bool) -> bool {
        let Some(worker) = self.workers().by_name.get(name).cloned() else {
            return false;
        };
        worker.stopping.store(true, Ordering::SeqCst);
        if at_once {
            worker.kill();
        } else {
            worker.stop.cancel();
        }
        worker.finished.cancelled().await;
        let mut workers = self.workers();
        if workers
            .by_name
            .get(name)
            .is_some_and(|now| Arc::ptr_eq(now, &worker))
        {
            workers.by_name.remove(name);
        }
        true
    }

    /// Whether `stop` or `kill` is ending this worker (it is still known until its group is
    /// gone).
    pub fn is_stopping(&self, name: &str) -> bool {
        self.workers()
            .by_name
            .get(name)
            .is_some_and(|worker| worker.stopping())
    }

    /// SIGKILLs every worker's process group now (those being stopped or replaced too),
    /// without waiting for the runtime, and refuses every `ensure` until `resume` (the node
    /// fenced itself).
    pub fn kill_all(&self) {
        let mut workers = self.workers();
        workers.fenced = true;
        for worker in workers.by_name.values() {
            worker.kill();
        }
    }

    /// The node is unfenced and current again: `ensure` may start workers anew.
    pub fn resume(&self) {
        self.workers().fenced = false;
    }

    /// Whether `kill_all` ran and no `resume` followed.
    pub fn is_fenced(&self) -> bool {
        self.workers().fenced
    }

    /// A connection announcing this worker's name appeared on this node: it is ready.
    pub fn mark_ready(&self, name: &str) -> bool {
        self.set_ready(name, true)
    }

    /// That connection is gone: the worker must register again within the ready timeout.
    pub fn mark_unready(&self, name: &str) -> bool {
        self.set_ready(name, false)
    }

    /// A worker's state, pid, restarts and last exit.
    pub fn status(&self, name: &str) -> Option<ProcessStatus> {
        self.workers()
            .by_name
            .get(name)
            .map(|worker| worker.status())
    }

    /// The names of the workers this supervisor runs (or ran to their end), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.workers().by_name.keys().cloned().collect();
        names.sort();
        names
    }

    /// The plan a worker runs.
    pub fn plan(&self, name: &str) -> Option<LaunchPlan> {
        self.workers()
            .by_name
            .get(name)
            .map(|worker| worker.plan.clone())
    }

    /// A worker's kept output and a stream of what follows (a follower that falls behind
    /// skips ahead: `RecvError::Lagged`).
    pub fn logs(&self, name: &str) -> Option<(Vec<u8>, broadcast::Receiver<Bytes>)> {
        self.workers()
            .by_name
            .get(name)
            .map(|worker| worker.log.snapshot())
    }

    /// Every status change of every worker from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.inner.events.subscribe()
    }

    /// The settings this supervisor runs with.
    pub fn settings(&self) -> &SupervisorSettings {
        &self.inner.settings
    }

    fn set_ready(&self, name: &str, ready: bool) -> bool {
        match self.workers().by_name.get(name) {
            Some(worker) => {
                worker.ready.send_replace(ready);
                true
            }
            None => false,
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, Workers> {
        self.inner.workers.lock().unwrap_or_else(|p| p.into_inner())
    }
}
