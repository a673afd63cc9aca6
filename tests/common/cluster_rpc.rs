//! A raw client of the cluster port, for tests that speak to a node as an outsider would:
//! the generated gRPC stubs, and channels in plaintext or TLS with any certificate.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The gRPC types and client generated from `proto/cluster.proto`.
#[allow(clippy::all, clippy::pedantic, dead_code)]
pub mod pb {
    tonic::include_proto!("quorum.cluster.v1");
}

pub use pb::cluster_client::ClusterClient;

/// How long a test's raw RPC may take before it counts as unanswered.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// A plaintext client of `addr`.
pub fn plaintext(addr: &str) -> ClusterClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .timeout(RPC_TIMEOUT);
    ClusterClient::new(endpoint.connect_lazy())
}

/// A TLS client of `addr` trusting `ca_dir/ca.crt` and presenting `cert`/`key` from
/// `cert_dir` (no client certificate when `cert` is `None`).
pub fn tls(
    addr: &str,
    ca_dir: &Path,
    identity: Option<(&Path, &str, &str)>,
) -> ClusterClient<Channel> {
    let ca = std::fs::read(ca_dir.join("ca.crt")).expect("ca.crt");
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((dir, cert, key)) = identity {
        let cert = std::fs::read(dir.join(cert)).expect("certificate");
        let key = std::fs::read(dir.join(key)).expect("key");
        config = config.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .expect("endpoint")
        .tls_config(config)
        .expect("tls config")
        .timeout(RPC_TIMEOUT);
    ClusterClient::new(endpoint.connect_lazy())
}

/// A TLS client presenting the node certificate in `dir` (`node.crt`/`node.key`).
pub fn as_node(addr: &str, dir: &Path) -> ClusterClient<Channel> {
    tls(addr, dir, Some((dir, "node.crt", "node.key")))
}

/// A Raft request carrying openraft's JSON `json` for cluster `cluster_id`.
pub fn raft_request(json: serde_json::Value, cluster_id: &str) -> pb::RaftRequest {
    pb::RaftRequest {
        json: json.to_string().into_bytes(),
        cluster_id: cluster_id.to_string(),
    }
}

/// An AppendEntries (an empty heartbeat) from `leader` at `term`.
pub fn heartbeat(leader: u64, term: u64) -> serde_json::Value {
    serde_json::json!({
        "vote": {"leader_id": {"term": term, "node_id": leader}, "committed": true},
        "prev_log_id": null,
        "entries": [],
        "leader_commit": null
    })
}

/// A vote request from candidate `candidate` at `term`.
pub fn vote_request(candidate: u64, term: u64) -> serde_json::Value {
    serde_json::json!({
        "vote": {"leader_id": {"term": term, "node_id": candidate}, "committed": false},
        "last_log_id": null
    })
}
