//! managed: workers quorum starts itself, from an `iii.worker.yaml` or a command, and keeps
//! running on this node.
//!
//! `spec` is what the operator asked for (replicated as it is); `manifest` turns a spec into a
//! `LaunchPlan` (pure); `supervisor` runs the plans placed on this node as child processes.
//! These three never talk to the registry or to other nodes. The cluster side (`leader`,
//! `placement`, `agent`, `handover`, ...) places specs and drives the supervisor; the
//! operator's side (`cli`, `admin`, `logs`, `config_list`) records specs through the
//! registry's commit path and reads a worker's output from the node that runs it.

pub mod manifest;
pub mod spec;
pub mod supervisor;

// The cluster side (placement by the leader, the node agent, failover and drain).
pub mod agent;
mod door;
pub mod evacuate;
pub mod handover;
pub mod leader;
pub mod local;
pub mod move_gate;
pub mod placement;
pub mod ready;
pub mod stranded;
mod wiring;

pub use wiring::start;

// The operator's side: `quorum worker`, its RPC handlers, and the config's `workers:` list.
pub mod admin;
pub mod cli;
pub mod config_list;
pub mod logs;
pub mod source;
pub mod wire;

pub use manifest::{launch_plan, ManifestError, Planned};
pub use spec::{RestartPolicy, WorkerSpec};
pub use supervisor::{
    LaunchPlan, ProcessState, ProcessStatus, StatusChange, Supervisor, SupervisorSettings,
};
