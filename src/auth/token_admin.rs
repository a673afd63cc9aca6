//! The operator side of worker tokens on the cluster port: create, list and revoke. Changes
//! go through the node's normal commit path (a follower forwards them to the leader), so every
//! node's worker port decides the same way once they apply.

use crate::node::Node;
use crate::registry::{Command, WorkerToken};
use crate::rpc::errors::ServiceError;
use crate::rpc::pb;

use super::tokens::{self, TokenRuleError};

/// Hash characters `quorum token list` shows: enough to tell tokens apart, useless to guess.
const SHOWN_HASH_CHARS: usize = 8;

/// Records a new token (its hash only).
pub async fn create(
    node: &Node,
    request: pb::CreateTokenRequest,
) -> Result<pb::TokenReply, ServiceError> {
    let token = tokens::validate(WorkerToken {
        name: request.name,
        sha256: request.sha256,
        namespaces: request.namespaces,
        register: request.register,
        call: request.call,
    })
    .map_err(bad_token)?;
    if node
        .worker_gate
        .file_tokens()
        .iter()
        .any(|t| t.name == token.name)
    {
        return Err(ServiceError::Refused(format!(
            "a token named '{}' is defined in the worker tokens file",
            token.name
        )));
    }
    let name = token.name.clone();
    let outcome = node
        .commit(Command::TokenCreated(token))
        .await
        .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
    match outcome.refusal {
        Some(reason) => Err(ServiceError::Refused(reason)),
        None => Ok(pb::TokenReply {
            message: format!("worker token '{name}' created"),
        }),
    }
}

/// Revokes a token name cluster-wide (a registry token, or a tokens-file entry of that name).
pub async fn revoke(
    node: &Node,
    request: pb::RevokeTokenRequest,
) -> Result<pb::TokenReply, ServiceError> {
    let name = request.name;
    let known = {
        let registry = node.registry();
        let revoked = registry.is_token_revoked(&name);
        let live = registry.worker_tokens().any(|t| t.name == name)
            || node
                .worker_gate
                .file_tokens()
                .iter()
                .any(|t| t.name == name);
        (live, revoked)
    };
    match known {
        (_, true) => {
            return Ok(pb::TokenReply {
                message: format!("worker token '{name}' was already revoked"),
            })
        }
        (false, false) => {
            return Err(ServiceError::Refused(format!(
                "no worker token named '{name}'"
            )))
        }
        (true, false) => {}
    }
    node.commit(Command::TokenRevoked { name: name.clone() })
        .await
        .map_err(|e| ServiceError::Unavailable(e.to_string()))?;
    Ok(pb::TokenReply {
        message: format!("worker token '{name}' revoked; its connections are being closed"),
    })
}

/// The tokens this node admits, from the registry and its tokens file, and revoked names.
pub fn list(node: &Node) -> pb::ListTokensReply {
    let registry = node.registry();
    let info = |token: &WorkerToken, source: &str| pb::TokenInfo {
        name: token.name.clone(),
        source: source.to_string(),
        namespaces: token.namespaces.clone(),
        register: token.register,
        call: token.call.clone(),
        sha256_prefix: token.sha256.chars().take(SHOWN_HASH_CHARS).collect(),
    };
    let mut tokens: Vec<pb::TokenInfo> = registry
        .worker_tokens()
        .map(|t| info(t, "registry"))
        .collect();
    tokens.extend(
        node.worker_gate
            .file_tokens()
            .iter()
            .filter(|t| !registry.is_token_revoked(&t.name))
            .map(|t| info(t, "file")),
    );
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    pb::ListTokensReply {
        tokens,
        revoked: registry.revoked_token_names().cloned().collect(),
    }
}

fn bad_token(err: TokenRuleError) -> ServiceError {
    ServiceError::BadRequest {
        what: "worker token",
        reason: err.to_string(),
    }
}
