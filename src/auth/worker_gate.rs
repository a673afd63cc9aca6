//! The worker port's door: with `--worker-auth token`, an upgrade request must present a
//! token (`Authorization: Bearer <token>`, or `?token=<token>` on the URL, URL-decoded) whose
//! SHA-256 is a live token of the registry or of this node's tokens file. The gateway asks
//! during the HTTP upgrade, so a refused client gets 401 and nothing of it reaches the registry.
//!
//! From a loopback peer, the local token of one of this node's managed workers
//! (`auth::local`) is accepted too, and admits the connection as that worker alone.
//!
//! The presented token is used exactly as sent (no trimming); hashes are compared in constant
//! time. Refusals are counted, not logged one by one: a loop of wrong tokens costs a hash
//! each and one log line per interval.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio_tungstenite::tungstenite::http::Request;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::grant::Grant;
use super::local::LocalTokens;
use super::tokens::sha256_hex;
use crate::ids::NodeId;
use crate::registry::{Registry, WorkerToken};

/// How often refused connections are reported (one line with a count).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Whether the worker port asks for a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WorkerAuth {
    /// Anyone who reaches the port may connect (as in iii).
    #[default]
    Off,
    /// Only holders of a worker token.
    Token,
}

/// Why an upgrade request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer header and no `token` query parameter.
    Missing,
    /// A token that matches no live token.
    Wrong,
}

/// Admission for the worker port, shared by every connection of a node.
#[derive(Debug)]
pub struct WorkerGate {
    mode: WorkerAuth,
    /// The tokens file read at start; an entry whose name the registry revoked is refused.
    file_tokens: Vec<WorkerToken>,
    /// The local tokens of this node's managed workers (accepted from loopback only).
    local: Arc<LocalTokens>,
    /// Requests without a token since the last report.
    missing: AtomicU64,
    /// Requests with a wrong (or revoked) token since the last report.
    wrong: AtomicU64,
}

impl WorkerGate {
    /// The gate of a node started with `mode` and the checked entries of its tokens file.
    pub fn new(mode: WorkerAuth, file_tokens: Vec<WorkerToken>) -> Self {
        Self {
            mode,
            file_tokens,
            local: Arc::default(),
            missing: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
        }
    }

    /// The tokens of this node's tokens file.
    pub fn file_tokens(&self) -> &[WorkerToken] {
        &self.file_tokens
    }

    /// Whether the worker port asks for a token (and managed workers need a local one).
    pub fn mode(&self) -> WorkerAuth {
        self.mode
    }

    /// The local tokens this gate accepts from loopback, for the supervisor that hands them
    /// to this node's managed workers.
    pub fn local_tokens(&self) -> Arc<LocalTokens> {
        self.local.clone()
    }

    /// Decides an upgrade request from `peer`: the grant of the token it presents, or why not.
    pub fn admit<B>(
        &self,
        request: &Request<B>,
        peer: IpAddr,
        registry: &Registry,
    ) -> Result<Arc<Grant>, Refusal> {
        if self.mode == WorkerAuth::Off {
            return Ok(Grant::unrestricted());
        }
        // A local token counts from loopback only; from elsewhere it is just a wrong token.
        let local = |token: &str| match peer.to_canonical().is_loopback() {
            true => self.local.name_of(token).map(Grant::managed),
            false => None,
        };
        let verdict = match presented_token(request) {
            None => Err(Refusal::Missing),
            Some(token) => match local(&token) {
                Some(grant) => return Ok(grant),
                None => self
                    .find(&sha256_hex(&token), registry)
                    .map(Grant::of)
                    .ok_or(Refusal::Wrong),
            },
        };
        match verdict {
            Err(Refusal::Missing) => self.missing.fetch_add(1, Ordering::Relaxed),
            Err(Refusal::Wrong) => self.wrong.fetch_add(1, Ordering::Relaxed),
            Ok(_) => 0,
        };
        verdict
    }

    /// The live token with this hash. Every candidate is compared, in constant time, so the
    /// time taken says nothing about how close a guess was.
    fn find(&self, hash: &str, registry: &Registry) -> Option<WorkerToken> {
        let mut found = None;
        let file = self
            .file_tokens
            .iter()
            .filter(|t| !registry.is_token_revoked(&t.name));
        for token in registry.worker_tokens().chain(file) {
            let same: bool = token.sha256.as_bytes().ct_eq(hash.as_bytes()).into();
            if same && found.is_none() {
                found = Some(token.clone());
            }
        }
        found
    }

    /// Logs refused connections once per interval, with their count, until `stop`.
    pub async fn report_refusals(self: Arc<Self>, node: NodeId, stop: CancellationToken) {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let missing = self.missing.swap(0, Ordering::Relaxed);
            let wrong = self.wrong.swap(0, Ordering::Relaxed);
            let refused = missing + wrong;
            if refused > 0 {
                warn!(
                    node,
                    refused,
                    missing,
                    wrong,
                    interval_s = REPORT_EVERY.as_secs(),
                    "worker connections refused: missing or wrong worker token"
                );
            }
        }
    }
}

/// The token a request presents: the `Authorization: Bearer` header, else the URL's `token`
/// query parameter. Taken exactly as sent.
fn presented_token<B>(request: &Request<B>) -> Option<String> {
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case("bearer ")
                .then(|| token.to_string())
        });
    bearer.or_else(|| {
        let query = request.uri().query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Command;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn token(name: &str, secret: &str) -> WorkerToken {
        WorkerToken {
            name: name.into(),
            sha256: sha256_hex(secret),
            namespaces: vec![],
            register: true,
            call: vec![],
        }
    }

    #[test]
    fn the_token_comes_from_a_bearer_header_or_the_query_exactly_as_sent() {
        let got = |uri, headers: &[(&str, &str)]| presented_token(&request(uri, headers));
        assert_eq!(
            got("/", &[("Authorization", "Bearer abc")]),
            Some("abc".into())
        );
        assert_eq!(
            got("/", &[("authorization", "bearer abc")]),
            Some("abc".into())
        );
        assert_eq!(
            got("/", &[("Authorization", "Bearer  abc")]),
            Some(" abc".into())
        );
        assert_eq!(got("/", &[("Authorization", "abc")]), None);
        assert_eq!(got("/", &[("X-Token", "abc")]), None);
        assert_eq!(got("/?token=a%2Bb%20", &[]), Some("a+b ".into()));
        assert_eq!(got("/otel?x=1&token=abc", &[]), Some("abc".into()));
        assert_eq!(got("/", &[]), None);
    }

    #[test]
    fn registry_and_file_tokens_admit_and_a_revoked_name_blocks_both() {
        let mut registry = Registry::default();
        registry.apply(&Command::TokenCreated(token("cli", "s1")));
        let gate = WorkerGate::new(WorkerAuth::Token, vec![token("file", "s2")]);
        let with = |secret: &str| request(&format!("/?token={secret}"), &[]);
        let name = |r: Result<Arc<Grant>, Refusal>| r.map(|g| g.token_name().map(String::from));
        assert_eq!(
            name(gate.admit(&with("s1"), REMOTE, &registry)),
            Ok(Some("cli".into()))
        );
        assert_eq!(
            name(gate.admit(&with("s2"), REMOTE, &registry)),
            Ok(Some("file".into()))
        );
        assert_eq!(
            name(gate.admit(&with("s3"), REMOTE, &registry)),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            name(gate.admit(&request("/", &[]), REMOTE, &registry)),
            Err(Refusal::Missing)
        );
        registry.apply(&Command::TokenRevoked {
            name: "file".into(),
        });
        registry.apply(&Command::TokenRevoked { name: "cli".into() });
        assert_eq!(
            name(gate.admit(&with("s1"), REMOTE, &registry)),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            name(gate.admit(&with("s2"), REMOTE, &registry)),
            Err(Refusal::Wrong)
        );
        assert_eq!(gate.wrong.load(Ordering::Relaxed), 3);
        assert_eq!(gate.missing.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn with_auth_off_everyone_is_let_in_unrestricted() {
        let gate = WorkerGate::new(WorkerAuth::Off, vec![]);
        let grant = gate
            .admit(&request("/", &[]), REMOTE, &Registry::default())
            .unwrap();
        assert_eq!(grant.token_name(), None);
    }

    #[test]
    fn a_local_token_admits_its_managed_worker_from_loopback_only() {
        let registry = Registry::default();
        let gate = WorkerGate::new(WorkerAuth::Token, vec![]);
        let token = gate.local_tokens().issue("resizer").unwrap();
        let with = |secret: &str| request(&format!("/?token={secret}"), &[]);
        let managed = |peer: IpAddr| {
            gate.admit(&with(token.secret()), peer, &registry)
                .map(|g| g.managed_name().map(String::from))
        };
        let resizer = Ok(Some("resizer".to_string()));
        assert_eq!(managed(IpAddr::V4(Ipv4Addr::LOCALHOST)), resizer);
        assert_eq!(managed(IpAddr::V6(Ipv6Addr::LOCALHOST)), resizer);
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
        assert_eq!(managed(IpAddr::V6(mapped)), resizer);
        assert_eq!(managed(REMOTE), Err(Refusal::Wrong));
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            gate.admit(&with("guess"), loopback, &registry).err(),
            Some(Refusal::Wrong)
        );
        let old = token.secret().to_string();
        drop(token);
        assert_eq!(
            gate.admit(&with(&old), loopback, &registry).err(),
            Some(Refusal::Wrong),
            "a token is forgotten with its process"
        );
    }
}
