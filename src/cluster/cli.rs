//! `quorum cluster status | leave | remove NODE`: operator commands sent to any member over
//! gRPC. They print a readable table (or JSON with `--json`) and exit non-zero with a clear
//! message when the member cannot be reached or refuses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use clap::Subcommand;
use serde_json::json;
use serde_json::Value;

use super::membership::REMOVE_TIMEOUT;
use crate::auth::certs::DEFAULT_CLIENT;
use crate::auth::cluster_tls::operator_client;
use crate::ids::NodeId;
use crate::rpc::client::PeerClients;
use crate::rpc::errors::RpcError;
use crate::rpc::pb;

/// The member a command talks to when `--address` is not given (the default cluster port).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:50051";

/// How long `cluster status` waits for the member's answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The `quorum cluster` subcommands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members with their roles and worker counts, the leader, term and last applied entry.
    Status(Target),
    /// Remove the node at --address from its cluster; it stops itself afterwards.
    Leave(Target),
    /// Remove node NODE (alive or dead) from the cluster, through any member.
    Remove {
        /// The id of the node to remove.
        node: NodeId,
        #[command(flatten)]
        target: Target,
    },
}

/// Which member to ask, and how to print the answer.
#[derive(Args, Debug)]
pub struct Target {
    /// Cluster (gRPC) address of any member.
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    pub address: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Directory with ca.crt and the operator's certificate, for a cluster whose nodes run
    /// with --certs-dir.
    #[arg(long, env = "QUORUM_CERTS_DIR")]
    pub certs_dir: Option<PathBuf>,
    /// Whose certificate to present: client.NAME.crt/.key in --certs-dir (`node` presents the
    /// node's own node.crt, which `cluster status` accepts).
    #[arg(long, default_value = DEFAULT_CLIENT)]
    pub client: String,
}

impl Target {
    /// The clients an operator command reaches the member with: plaintext, or TLS with the
    /// operator's certificate when `--certs-dir` is given.
    pub fn peers(&self) -> Result<PeerClients, RpcError> {
        let Some(dir) = &self.certs_dir else {
            return Ok(PeerClients::default());
        };
        let tls =
            operator_client(dir, &self.client).map_err(|e| RpcError::Credentials(e.to_string()))?;
        Ok(PeerClients::default().with_tls(Some(tls)))
    }
}

/// Runs one `quorum cluster` command to completion.
pub fn run(command: ClusterCommand) -> ExitCode {
    run_operator_command(execute(command))
}

/// Runs an operator command's future on a small runtime: its text on stdout and success, or
/// its error on stderr and failure. Shared by the `cluster`, `token` and `worker` commands.
pub fn run_operator_command<E: std::fmt::Display>(
    command: impl std::future::Future<Output = Result<String, E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("quorum: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(text) => {
            // A command that printed as it went (worker logs) has nothing left to say.
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("quorum: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: ClusterCommand) -> Result<String, RpcError> {
    // Removals wait for the change to commit, maybe across a leader change.
    // A removal first moves the node's managed workers (bounded by their own budget).
    let change_timeout =
        REMOVE_TIMEOUT + crate::managed::evacuate::MOVE_BUDGET + Duration::from_secs(5);
    match command {
        ClusterCommand::Status(target) => {
            let reply = target
                .peers()?
                .unary(&target.address, STATUS_TIMEOUT, |mut client| async move {
                    client.status(pb::StatusRequest {}).await
                })
                .await?;
            Ok(if target.json {
                status_json(&reply).to_string()
            } else {
                status_table(&reply)
            })
        }
        ClusterCommand::Leave(target) => {
            let reply = target
                .peers()?
                .unary(&target.address, change_timeout, |mut client| async move {
                    client.leave(pb::LeaveRequest {}).await
                })
                .await?;
            Ok(membership_text(
                &reply,
                target.json,
                &format!("the node at {} left the cluster", target.address),
            ))
        }
        ClusterCommand::Remove { node, target } => {
            let reply = target
                .peers()?
                .unary(&target.address, change_timeout, |mut client| async move {
                    client.remove(pb::RemoveRequest { node_id: node }).await
                })
                .await?;
            Ok(membership_text(
                &reply,
                target.json,
                &format!("node {node} was removed from the cluster"),
            ))
        }
    }
}

fn nonzero(value: u64) -> Value {
    if value == 0 {
        Value::Null
    } else {
        json!(value)
    }
}

fn members_json(members: &[pb::Member]) -> Value {
    members
        .iter()
        .map(|m| {
            json!({
                "node_id": m.node_id,
                "address": m.address,
                "role": m.role,
                "workers": m.workers,
            })
        })
        .collect()
}

/// The JSON shape of `cluster status --json` (also what the tests read).
fn status_json(reply: &pb::StatusReply) -> Value {
    json!({
        "node_id": reply.node_id,
        "cluster_id": reply.cluster_id,
        "state": reply.state,
        "leader_id": nonzero(reply.leader_id),
        "term": reply.term,
        "last_applied": reply.last_applied,
        "last_log_index": reply.last_log_index,
        "local_workers": reply.local_workers,
        "initialized": reply.initialized,
        "command_level": reply.command_level,
        "members": members_json(&reply.members),
    })
}

fn members_table(members: &[pb::Member]) -> String {
    let width = members
        .iter()
        .map(|m| m.address.len())
        .max()
        .unwrap_or(0)
        .max("ADDRESS".len());
    let mut out = format!(
        "{:<20}  {:<width$}  {:<8}  WORKERS\n",
        "NODE", "ADDRESS", "ROLE"
    );
    for m in members {
        out.push_str(&format!(
            "{:<20}  {:<width$}  {:<8}  {}\n",
            m.node_id, m.address, m.role, m.workers
        ));
    }
    out.trim_end().to_string()
}

fn status_table(reply: &pb::StatusReply) -> String {
    let leader = if reply.leader_id == 0 {
        "none".to_string()
    } else {
        reply.leader_id.to_string()
    };
    format!(
        "cluster {}\nnode {} ({}), leader {}, term {}, last applied {}, {} local worker(s)\n\n{}",
        if reply.cluster_id.is_empty() {
            "(not admitted yet)"
        } else {
            &reply.cluster_id
        },
        reply.node_id,
        reply.state,
        leader,
        reply.term,
        reply.last_applied,
        reply.local_workers,
        members_table(&reply.members)
    )
}

fn membership_text(reply: &pb::MembershipReply, as_json: bool, done: &str) -> String {
    if as_json {
        json!({
            "leader_id": nonzero(reply.leader_id),
            "members": members_json(&reply.members),
        })
        .to_string()
    } else {
        format!("{done}\n\n{}", members_table(&reply.members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_prints_every_member_and_json_has_nulls_for_unknowns() {
        let reply = pb::StatusReply {
            node_id: 2,
            state: "follower".into(),
            leader_id: 0,
            term: 3,
            last_applied: 10,
            last_log_index: 10,
            members: vec![
                pb::Member {
                    node_id: 1,
                    address: "127.0.0.1:50051".into(),
                    role: "follower".into(),
                    workers: 4,
                    identity: String::new(),
                },
                pb::Member {
                    node_id: 2,
                    address: "127.0.0.1:50052".into(),
                    role: "follower".into(),
                    workers: 0,
                    identity: String::new(),
                },
            ],
            local_workers: 0,
            cluster_id: "c1".into(),
            initialized: true,
            command_level: 1,
        };
        let table = status_table(&reply);
        assert!(table.contains("leader none"), "{table}");
        assert!(table.contains("127.0.0.1:50052"), "{table}");
        let value = status_json(&reply);
        assert_eq!(value["leader_id"], Value::Null);
        assert_eq!(value["members"][0]["workers"], 4);
    }
}
