//! `quorum worker add | list | status | logs | restart | remove`: managed workers, through any
//! member of the cluster.
//!
//! `add PATH` reads `PATH/iii.worker.yaml` here, on the operator's machine, checks it, prints
//! its warnings, and sends the absolute path with the manifest text: every node must have the
//! worker's directory at that same path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::source::{self, SourceError, SpecSource};
use super::spec::RestartPolicy;
use super::wire;
use crate::cluster::cli::{run_operator_command, Target};
use crate::node::COMMIT_RETRY_BUDGET;
use crate::rpc::errors::RpcError;
use crate::rpc::pb;

/// How long `list` and `status` wait for the member's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `logs` waits for the stream to open (the member may relay it from another node).
const LOGS_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `logs` without `--follow` may take to print the whole tail.
const LOGS_TAIL_TIMEOUT: Duration = Duration::from_secs(30);

/// The `quorum worker` subcommands.
#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// Run a worker on the cluster, kept running on some live node: from the iii.worker.yaml
    /// in PATH (a directory at that same path on every node), or from --name and --command.
    Add(AddArgs),
    /// Every managed worker: where it runs, whether it is ready, its restarts and last exit.
    List(Target),
    /// One managed worker in full.
    Status {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// A managed worker's recent output (stdout and stderr), from whichever node runs it.
    Logs {
        name: String,
        /// Keep printing new output until interrupted (or until the worker moves).
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Restart a managed worker once, where it runs.
    Restart {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a managed worker: its process stops wherever it runs.
    Remove {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// What `quorum worker add` takes.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// Directory holding iii.worker.yaml (the same path on every node).
    #[arg(required_unless_present_all = ["name", "command"])]
    pub path: Option<PathBuf>,
    /// The worker's name (overrides the manifest's `name`).
    #[arg(long)]
    pub name: Option<String>,
    /// The command that starts it, run with `sh -c` in its directory (overrides the
    /// manifest's start command).
    #[arg(long)]
    pub command: Option<String>,
    /// When the node restarts it after it exits.
    #[arg(long, default_value = "always", value_parser = ["always", "on-failure", "never"])]
    pub restart: String,
    /// Run it only on nodes with this label (repeat; all must match).
    #[arg(long = "node-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
    #[command(flatten)]
    pub target: Target,
}

/// Why a worker command failed.
#[derive(Debug, thiserror::Error)]
enum WorkerCliError {
    #[error("{0}")]
    Rpc(#[from] RpcError),
    #[error("{0}")]
    Spec(#[from] SourceError),
    #[error("{0}")]
    Restart(String),
    #[error("reading the manifest failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

/// Runs one `quorum worker` command to completion.
pub fn run(command: WorkerCommand) -> ExitCode {
    run_operator_command(execute(command))
}

async fn execute(command: WorkerCommand) -> Result<String, WorkerCliError> {
    // A change may wait out a leader election before it commits.
    let change_timeout = COMMIT_RETRY_BUDGET + Duration::from_secs(5);
    match command {
        WorkerCommand::Add(args) => add(args, change_timeout).await,
        WorkerCommand::List(target) => {
            let reply = target
                .peers()?
                .unary(&target.address, READ_TIMEOUT, |mut client| async move {
                    client
                        .list_managed_workers(pb::ListManagedWorkersRequest {})
                        .await
                })
                .await?;
            Ok(if target.json {
                json!({"workers": reply.workers.iter().map(info_json).collect::<Vec<_>>()})
                    .to_string()
            } else {
                list_table(&reply.workers)
            })
        }
        WorkerCommand::Status { name, target } => {
            let reply = target
                .peers()?
                .unary(&target.address, READ_TIMEOUT, |mut client| async move {
                    client
                        .managed_worker_status(pb::ManagedWorkerStatusRequest { name })
                        .await
                })
                .await?;
            Ok(if target.json {
                info_json(&reply).to_string()
            } else {
                status_text(&reply)
            })
        }
        WorkerCommand::Logs {
            name,
            follow,
            target,
        } => logs(name, follow, target).await,
        WorkerCommand::Restart { name, target } => {
            let reply = target
                .peers()?
                .unary(&target.address, change_timeout, |mut client| async move {
                    client
                        .restart_managed_worker(pb::RestartManagedWorkerRequest { name })
                        .await
                })
                .await?;
            Ok(message_text(reply, target.json))
        }
        WorkerCommand::Remove { name, target } => {
            let reply = target
                .peers()?
                .unary(&target.address, change_timeout, |mut client| async move {
                    client
                        .remove_managed_worker(pb::RemoveManagedWorkerRequest { name })
                        .await
                })
                .await?;
            Ok(message_text(reply, target.json))
        }
    }
}

async fn add(args: AddArgs, timeout: Duration) -> Result<String, WorkerCliError> {
    let restart = args
        .restart
        .parse::<RestartPolicy>()
        .map_err(|e| WorkerCliError::Restart(e.to_string()))?;
    let request = SpecSource {
        path: args.path,
        name: args.name,
        command: args.command,
        restart,
        node_labels: args.node_labels.into_iter().collect::<BTreeMap<_, _>>(),
    };
    // Reading the manifest is a few kilobytes of blocking file I/O; keep it off the runtime.
    let checked = tokio::task::spawn_blocking(move || source::check(request)).await??;
    for warning in &checked.warnings {
        eprintln!("warning: {warning}");
    }
    let request = wire::add_request(&checked.spec);
    let target = args.target;
    let reply = target
        .peers()?
        .unary(&target.address, timeout, |mut client| async move {
            client.add_managed_worker(request).await
        })
        .await?;
    Ok(if target.json {
        json!({"name": checked.spec.name, "message": reply.message, "warnings": checked.warnings})
            .to_string()
    } else {
        reply.message
    })
}

/// Prints the output as it comes; returns the notice that ended the stream, if any.
async fn logs(name: String, follow: bool, target: Target) -> Result<String, WorkerCliError> {
    let address = target.address.clone();
    let mut client = target.peers()?.cluster(&address)?;
    let request = pb::ManagedWorkerLogsRequest {
        name,
        follow,
        relayed: false,
    };
    let opened = tokio::time::timeout(LOGS_OPEN_TIMEOUT, client.managed_worker_logs(request))
        .await
        .map_err(|_| RpcError::Timeout {
            addr: address.clone(),
            timeout: LOGS_OPEN_TIMEOUT,
        })?
        .map_err(|status| RpcError::from_status(&address, status))?;
    let mut stream = opened.into_inner();
    let print = async {
        let mut stdout = tokio::io::stdout();
        let mut notice = String::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|status| RpcError::from_status(&address, status))?
        {
            if !chunk.notice.is_empty() {
                notice = chunk.notice;
                continue;
            }
            let bytes = if target.json {
                let mut line =
                    json!({"node": chunk.node, "output": String::from_utf8_lossy(&chunk.output)})
                        .to_string()
                        .into_bytes();
                line.push(b'\n');
                line
            } else {
                chunk.output
            };
            stdout
                .write_all(&bytes)
                .await
                .map_err(WorkerCliError::Stdout)?;
            stdout.flush().await.map_err(WorkerCliError::Stdout)?;
        }
        Ok::<_, WorkerCliError>(notice)
    };
    let notice = if follow {
        print.await?
    } else {
        tokio::time::timeout(LOGS_TAIL_TIMEOUT, print)
            .await
            .map_err(|_| RpcError::Timeout {
                addr: address.clone(),
                timeout: LOGS_TAIL_TIMEOUT,
            })??
    };
    if !notice.is_empty() {
        eprintln!("quorum: {notice}");
    }
    // The output is already printed.
    Ok(String::new())
}

/// `KEY=VALUE` of `--node-label`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

fn message_text(reply: pb::ManagedWorkerReply, as_json: bool) -> String {
    if as_json {
        json!({"message": reply.message}).to_string()
    } else {
        reply.message
    }
}

fn or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    }
}

/// When the spec was added, in RFC 3339 (UTC, milliseconds), from the registry's version
/// (milliseconds since the epoch): the same spec added again keeps its time.
fn added_text(version_ms: u64) -> String {
    let nanos = i128::from(version_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        ),
        Err(_) => format!("{version_ms} ms after the epoch"),
    }
}

/// The JSON shape of one worker in `list --json` and `status --json` (also what tests read).
fn info_json(info: &pb::ManagedWorkerInfo) -> Value {
    json!({
        "name": info.name,
        "dir": or_null(&info.dir),
        "command": or_null(&info.command),
        "restart": info.restart,
        "node_labels": info.node_labels.iter().collect::<BTreeMap<_, _>>(),
        "added": added_text(info.version),
        "node": if info.node == 0 { Value::Null } else { json!(info.node) },
        "state": info.state,
        "ready": info.ready,
        "restarts": info.restarts,
        "last_exit": or_null(&info.last_exit),
        "last_error": or_null(&info.last_error),
        "unplaceable": or_null(&info.unplaceable),
        "origin": or_null(&info.origin),
    })
}

fn node_text(info: &pb::ManagedWorkerInfo) -> String {
    if info.node == 0 {
        "-".to_string()
    } else {
        info.node.to_string()
    }
}

fn list_table(workers: &[pb::ManagedWorkerInfo]) -> String {
    if workers.is_empty() {
        return "no managed workers".to_string();
    }
    let width = workers
        .iter()
        .map(|w| w.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let mut out = format!(
        "{:<width$}  {:<20}  {:<12}  {:<5}  {:<8}  LAST EXIT\n",
        "NAME", "NODE", "STATE", "READY", "RESTARTS"
    );
    for w in workers {
        let state = if w.unplaceable.is_empty() {
            w.state.clone()
        } else {
            "unplaceable".to_string()
        };
        out.push_str(&format!(
            "{:<width$}  {:<20}  {:<12}  {:<5}  {:<8}  {}\n",
            w.name,
            node_text(w),
            state,
            w.ready,
            w.restarts,
            if w.last_exit.is_empty() {
                "-"
            } else {
                &w.last_exit
            },
        ));
    }
    out.trim_end().to_string()
}

fn status_text(info: &pb::ManagedWorkerInfo) -> String {
    let labels: Vec<String> = info
        .node_labels
        .iter()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut lines = vec![
        format!("name:        {}", info.name),
        format!("node:        {}", node_text(info)),
        format!("state:       {}", info.state),
        format!("ready:       {}", info.ready),
        format!("restarts:    {}", info.restarts),
        format!("restart:     {}", info.restart),
        format!("added:       {}", added_text(info.version)),
    ];
    let optional = [
        ("dir", &info.dir),
        ("command", &info.command),
        ("last exit", &info.last_exit),
        ("last error", &info.last_error),
        ("unplaceable", &info.unplaceable),
        ("origin", &info.origin),
    ];
    for (label, value) in optional {
        if !value.is_empty() {
            lines.push(format!("{:<13}{value}", format!("{label}:")));
        }
    }
    if !labels.is_empty() {
        lines.push(format!("node labels: {}", labels.join(", ")));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> pb::ManagedWorkerInfo {
        pb::ManagedWorkerInfo {
            name: "echo".into(),
            dir: "/srv/echo".into(),
            restart: "always".into(),
            node_labels: [("zone".to_string(), "a".to_string())].into(),
            version: 2,
            node: 3,
            state: "running".into(),
            ready: true,
            restarts: 1,
            last_exit: "exit 3".into(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_are_key_equals_value() {
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert_eq!(parse_label("gpu=").unwrap(), ("gpu".into(), "".into()));
        assert!(parse_label("zone").is_err());
        assert!(parse_label("=a").is_err());
    }

    #[test]
    fn list_and_status_show_placement_readiness_and_exits() {
        let table = list_table(&[info()]);
        assert!(
            table.contains("echo") && table.contains("running") && table.contains("exit 3"),
            "{table}"
        );
        let text = status_text(&info());
        assert!(text.contains("node labels: zone=a"), "{text}");
        assert!(
            text.contains("added:       1970-01-01T00:00:00.002Z"),
            "{text}"
        );
        assert_eq!(info_json(&info())["added"], "1970-01-01T00:00:00.002Z");
        assert_eq!(
            added_text(1_796_227_835_495),
            "2026-12-02T16:10:35.495Z",
            "a real spec's time"
        );
        let value = info_json(&pb::ManagedWorkerInfo {
            node: 0,
            unplaceable: "no node has label zone=a".into(),
            ..info()
        });
        assert_eq!(value["node"], Value::Null);
        assert_eq!(value["unplaceable"], "no node has label zone=a");
        assert_eq!(value["command"], Value::Null);
    }
}
