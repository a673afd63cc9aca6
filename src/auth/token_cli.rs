//! `quorum token create | list | revoke`: worker tokens, through any member of the cluster.
//!
//! `create` makes the token here, on the operator's machine, from 256 random bits; only its
//! SHA-256 travels and is stored, and the token is printed once, on the last line.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use super::tokens::{random_hex, sha256_hex};
use crate::cluster::cli::{run_operator_command, Target};
use crate::node::COMMIT_RETRY_BUDGET;
use crate::rpc::errors::RpcError;
use crate::rpc::pb;

/// Marks quorum worker tokens, so secret scanners and people recognise one.
const TOKEN_PREFIX: &str = "qwt_";

/// How long `token list` waits for the member's answer.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The `quorum token` subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a worker token; prints it once, on the last line (only its hash is stored).
    Create {
        /// A unique name for the token (letters, digits, `.`, `_`, `-`).
        name: String,
        /// A namespace its holder may use (repeat for more; only `default` when none).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Its holder may not register functions or trigger types (it only calls).
        #[arg(long)]
        no_register: bool,
        /// A glob (`*` = anything) over the function ids it may call (repeat; any when none).
        #[arg(long = "call")]
        call: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Worker tokens (names and rules; never a full hash) and revoked names.
    List(Target),
    /// Revoke a token cluster-wide: its connections close with 1008 and the name is refused
    /// from then on (a tokens-file entry of that name too).
    Revoke {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
enum TokenCliError {
    #[error("{0}")]
    Rpc(#[from] RpcError),
    #[error("cannot get randomness for a token from the operating system: {0}")]
    Random(getrandom::Error),
}

/// Runs one `quorum token` command to completion.
pub fn run(command: TokenCommand) -> ExitCode {
    run_operator_command(execute(command))
}

async fn execute(command: TokenCommand) -> Result<String, TokenCliError> {
    // A change may wait out a leader election before it commits.
    let change_timeout = COMMIT_RETRY_BUDGET + Duration::from_secs(5);
    match command {
        TokenCommand::Create {
            name,
            namespaces,
            no_register,
            call,
            target,
        } => {
            let token = new_token()?;
            let request = pb::CreateTokenRequest {
                name: name.clone(),
                sha256: sha256_hex(&token),
                namespaces: namespaces.clone(),
                register: !no_register,
                call: call.clone(),
            };
            let reply = target
                .peers()?
                .unary(&target.address, change_timeout, |mut client| async move {
                    client.create_token(request).await
                })
                .await?;
            Ok(if target.json {
                json!({"name": name, "token": token}).to_string()
            } else {
                format!(
                    "{}\nnamespaces: {}\nregister: {}\ncall: {}\nThe token is shown only now; keep it secret:\n{token}",
                    reply.message,
                    or_default(&namespaces, "default"),
                    !no_register,
                    or_default(&call, "any function"),
                )
            })
        }
        TokenCommand::List(target) => {
            let reply = target
                .peers()?
                .unary(&target.address, LIST_TIMEOUT, |mut client| async move {
                    client.list_tokens(pb::ListTokensRequest {}).await
                })
                .await?;
            Ok(if target.json {
                list_json(&reply).to_string()
            } else {
                list_table(&reply)
            })
        }
        TokenCommand::Revoke { name, target } => {
            let reply = target
                .peers()?
                .unary(&target.address, change_timeout, |mut client| async move {
                    client.revoke_token(pb::RevokeTokenRequest { name }).await
                })
                .await?;
            Ok(if target.json {
                json!({"message": reply.message}).to_string()
            } else {
                reply.message
            })
        }
    }
}

/// A new token: the prefix and 256 random bits in hex.
fn new_token() -> Result<String, TokenCliError> {
    let hex = random_hex(32).map_err(TokenCliError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{hex}"))
}

fn or_default(items: &[String], default: &str) -> String {
    if items.is_empty() {
        default.to_string()
    } else {
        items.join(", ")
    }
}

fn list_json(reply: &pb::ListTokensReply) -> serde_json::Value {
    let tokens: Vec<_> = reply
        .tokens
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "source": t.source,
                "namespaces": t.namespaces,
                "register": t.register,
                "call": t.call,
                "sha256_prefix": t.sha256_prefix,
            })
        })
        .collect();
    json!({"tokens": tokens, "revoked": reply.revoked})
}

fn list_table(reply: &pb::ListTokensReply) -> String {
    let width = reply
        .tokens
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let mut out = format!(
        "{:<width$}  {:<8}  {:<10}  {:<8}  {:<20}  CALL\n",
        "NAME", "SOURCE", "HASH", "REGISTER", "NAMESPACES"
    );
    for t in &reply.tokens {
        out.push_str(&format!(
            "{:<width$}  {:<8}  {:<10}  {:<8}  {:<20}  {}\n",
            t.name,
            t.source,
            format!("{}…", t.sha256_prefix),
            t.register,
            or_default(&t.namespaces, "default"),
            or_default(&t.call, "*"),
        ));
    }
    if !reply.revoked.is_empty() {
        out.push_str(&format!("\nrevoked: {}\n", reply.revoked.join(", ")));
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_256_random_bits_with_the_prefix() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
    }

    #[test]
    fn the_list_never_shows_a_full_hash() {
        let reply = pb::ListTokensReply {
            tokens: vec![pb::TokenInfo {
                name: "ci".into(),
                source: "registry".into(),
                namespaces: vec![],
                register: false,
                call: vec!["orders::*".into()],
                sha256_prefix: "abcdef01".into(),
            }],
            revoked: vec!["old".into()],
        };
        let table = list_table(&reply);
        assert!(
            table.contains("ci") && table.contains("orders::*"),
            "{table}"
        );
        assert!(table.contains("revoked: old"), "{table}");
        assert_eq!(list_json(&reply)["tokens"][0]["sha256_prefix"], "abcdef01");
    }
}
