//! Node loss and partitions: leases purge a lost node's workers from the registry, and a node
//! cut off from the majority fences itself, then rejoins on heal.
//!
//! Partitions run twice: with Linux network namespaces (root only; skipped otherwise, except
//! under `CI=true` as root), and with fault-injecting relays on the gRPC links (no root).

mod common;

use common::netns::NetnsLab;
use common::raw::RawClient;
use common::relay::{Faults, Relay};
use common::{
    call, function_ids, members, unique_name, wait_function, worker, Cluster, NodeOptions,
    CLUSTER_TIMEOUT,
};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_workers_leave_the_registry_after_its_lease() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let victim = cluster.a_follower(leader);
    let mut raw = RawClient::connect(&cluster.node(victim).url).await;
    raw.announce(&unique_name("doomed"), None).await;
    raw.send(json!({"type":"registerfunction","id":"doomed::fn"}))
        .await;
    let survivor = Cluster::index_of(leader);
    let observer = worker(&cluster.node(survivor).url, &unique_name("observer"), None).await;
    wait_function(&observer, "doomed::fn", true).await;
    let killed = Instant::now();
    cluster.kill(victim);
    wait_function(&observer, "doomed::fn", false).await;
    println!("purged {:?} after SIGKILL", killed.elapsed());
    assert!(
        killed.elapsed() >= Duration::from_secs(4),
        "purged only after the lease"
    );
    let rows = call(&observer, "engine::workers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(rows["workers"].as_array().unwrap().len(), 1, "{rows}");
}

/// What a partition scenario needs from the network it runs on.
trait PartitionNet {
    /// The worker WebSocket URL of node `i`, reachable from the test.
    fn url(&self, i: usize) -> String;
    /// `quorum cluster status` of node `i`.
    fn status(&self, i: usize) -> Option<Value>;
    /// Cuts node `i` off from the others, both ways.
    fn cut(&self, i: usize);
    /// Ends node `i`'s partition.
    fn heal(&self, i: usize);
    /// Every node's log tail, for failure messages.
    fn logs(&self) -> String;
}

/// Polls `check` every 100 ms until it holds, or panics with the nodes' logs after `deadline`.
async fn until(
    net: &impl PartitionNet,
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> bool,
) {
    let end = Instant::now() + deadline;
    // Checks run blocking commands; the runtime moves other tasks (the relays) off this thread.
    while !tokio::task::block_in_place(&mut check) {
        if Instant::now() > end {
            panic!("timed out waiting until {what}; logs:\n{}", net.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leader node `i` sees, when it sees all `n` nodes as voters under one.
fn settled_leader(net: &impl PartitionNet, i: usize, n: usize) -> Option<u64> {
    let status = net.status(i)?;
    let members = members(&status);
    let ids: Vec<u64> = members.iter().map(|m| m.0).collect();
    (ids == (1..=n as u64).collect::<Vec<_>>() && members.iter().all(|m| m.1 != "learner"))
        .then(|| status["leader_id"].as_u64())
        .flatten()
}

/// The leader all three nodes agree on.
async fn agreed_leader(net: &impl PartitionNet) -> u64 {
    let mut leader = 0;
    until(
        net,
        "all three nodes agree on one leader",
        CLUSTER_TIMEOUT,
        || {
            let seen: Vec<Option<u64>> = (0..3).map(|i| settled_leader(net, i, 3)).collect();
            match seen[0] {
                Some(first) if seen.iter().all(|s| *s == Some(first)) => {
                    leader = first;
                    true
                }
                _ => false,
            }
        },
    )
    .await;
    leader
}

/// The function ids a raw client's node lists.
async fn raw_function_ids(raw: &mut RawClient) -> Vec<String> {
    let listed = raw
        .call("engine::functions::list", json!({"include_internal": true}))
        .await;
    listed["result"]["functions"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["function_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A follower cut off from the majority fences itself (closes its worker with 1001, refuses
/// new ones with 1013), the majority purges its workers, and after the heal it serves again
/// with no stale entries anywhere.
async fn partition_scenario(net: &impl PartitionNet, label: &str) {
    let fence_after = Duration::from_millis(2_500);
    let purge_after = Duration::from_millis(5_000);
    let leader = Cluster::index_of(agreed_leader(net).await);
    let victim = (0..3).find(|i| *i != leader).unwrap();

    let mut doomed = RawClient::connect(&net.url(victim)).await;
    doomed.announce(&unique_name("cut-off"), None).await;
    doomed
        .send(json!({"type":"registerfunction","id":"cutoff::fn"}))
        .await;
    let observer = worker(&net.url(leader), &unique_name("observer"), None).await;
    wait_function(&observer, "cutoff::fn", true).await;

    let cut = Instant::now();
    net.cut(victim);
    let code = doomed.closed_within(Duration::from_secs(15)).await;
    let fenced = cut.elapsed();
    println!("[{label}] fenced: worker closed {fenced:?} after the cut (code {code:?})");
    assert_eq!(
        code,
        Some(1001),
        "a fenced node closes its workers as going away"
    );
    assert!(
        fenced >= fence_after,
        "closed only after the fence lease: {fenced:?}"
    );
    assert!(
        function_ids(&observer)
            .await
            .iter()
            .any(|id| id == "cutoff::fn"),
        "the majority still lists the worker when the cut-off node fences"
    );
    match RawClient::connect_or_refusal(&net.url(victim)).await {
        Err(code) => assert_eq!(code, Some(1013), "a fenced node refuses workers: try again"),
        Ok(_) => panic!("a fenced node accepted a worker"),
    }

    wait_function(&observer, "cutoff::fn", false).await;
    let purged = cut.elapsed();
    println!("[{label}] purged: majority dropped the function {purged:?} after the cut");
    // The lease runs from the leader's last answered probe, which can precede the cut by
    // one probe round (200 ms apart, 500 ms deadline).
    assert!(
        purged + Duration::from_millis(700) >= purge_after,
        "purged only after the purge lease: {purged:?}"
    );
    assert!(purged > fenced, "fenced before purged");
    let rows = call(&observer, "engine::workers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(rows["workers"].as_array().unwrap().len(), 1, "{rows}");

    let healed = Instant::now();
    net.heal(victim);
    let end = Instant::now() + CLUSTER_TIMEOUT;
    let mut back = loop {
        if let Ok(raw) = RawClient::connect_or_refusal(&net.url(victim)).await {
            break raw;
        }
        if Instant::now() > end {
            panic!(
                "the healed node still refuses workers; logs:\n{}",
                net.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "[{label}] healed: serving workers again {:?} after the heal",
        healed.elapsed()
    );
    back.announce(&unique_name("back"), None).await;
    back.send(json!({"type":"registerfunction","id":"back::fn"}))
        .await;
    wait_function(&observer, "back::fn", true).await;
    until(
        net,
        "the healed node is a voter under the common leader",
        CLUSTER_TIMEOUT,
        || settled_leader(net, victim, 3) == settled_leader(net, leader, 3),
    )
    .await;
    println!("[{label}] rejoined {:?} after the heal", healed.elapsed());

    let majority = function_ids(&observer).await;
    assert!(
        !majority.iter().any(|id| id == "cutoff::fn"),
        "{majority:?}"
    );
    let on_victim = raw_function_ids(&mut back).await;
    assert!(on_victim.iter().any(|id| id == "back::fn"), "{on_victim:?}");
    assert!(
        !on_victim.iter().any(|id| id == "cutoff::fn"),
        "stale on the healed node: {on_victim:?}"
    );
    let rows = call(&observer, "engine::workers::list", json!({}))
        .await
        .unwrap();
    assert_eq!(
        rows["workers"].as_array().unwrap().len(),
        2,
        "observer and the new worker: {rows}"
    );
    let listed = back.call("engine::workers::list", json!({})).await;
    assert_eq!(
        listed["result"]["workers"].as_array().unwrap().len(),
        2,
        "the healed node agrees: {listed}"
    );
}

impl PartitionNet for NetnsLab {
    fn url(&self, i: usize) -> String {
        self.node(i).url.clone()
    }
    fn status(&self, i: usize) -> Option<Value> {
        NetnsLab::status(self, i)
    }
    fn cut(&self, i: usize) {
        NetnsLab::cut(self, i)
    }
    fn heal(&self, i: usize) {
        NetnsLab::heal(self, i)
    }
    fn logs(&self) -> String {
        NetnsLab::logs(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_by_netns_fences_is_purged_and_rejoins() {
    let Some(mut lab) = NetnsLab::create_or_skip(3) else {
        return;
    };
    lab.start(0, &[]);
    let pid = lab.node(0).pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("node process");
    assert_eq!(
        exe.file_name(),
        std::path::Path::new(env!("CARGO_BIN_EXE_quorum")).file_name(),
        "`ip netns exec` execs quorum, so the PID the test kills is quorum's"
    );
    let seed = lab.cluster_addr(0);
    lab.start(1, &["--join", &seed]);
    lab.start(2, &["--join", &seed]);
    partition_scenario(&lab, "netns").await;
}

/// Three nodes, each on its own loopback IP behind a fault-injecting relay.
struct RelayNet {
    cluster: Cluster,
    faults: Faults,
    ips: Vec<IpAddr>,
    relays: Vec<Relay>,
}

impl PartitionNet for RelayNet {
    fn url(&self, i: usize) -> String {
        self.cluster.node(i).url.clone()
    }
    fn status(&self, i: usize) -> Option<Value> {
        self.cluster.status(i)
    }
    fn cut(&self, i: usize) {
        self.faults.cut(self.ips[i]);
    }
    fn heal(&self, i: usize) {
        self.faults.heal(self.ips[i]);
    }
    fn logs(&self) -> String {
        self.cluster.logs()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_by_relays_fences_is_purged_and_rejoins() {
    let faults = Faults::default();
    let mut cluster = Cluster::empty();
    let mut ips = Vec::new();
    let mut relays: Vec<Relay> = Vec::new();
    for i in 0..3u8 {
        let ip: IpAddr = [127, 0, 0, 11 + i].into();
        // The port is chosen before the node starts, so the relay (which the node advertises)
        // can forward to it from the first connection on.
        let port = common::free_port_on(ip);
        let target = SocketAddr::new(ip, port);
        let relay = Relay::start([127, 0, 0, 21 + i].into(), target, &faults).await;
        let mut args = vec!["--advertise".to_string(), relay.addr.to_string()];
        if i > 0 {
            args.extend(["--join".to_string(), relays[0].addr.to_string()]);
        }
        let options = NodeOptions {
            cluster_listen: Some(target.to_string()),
            args,
            ..NodeOptions::default()
        };
        tokio::task::block_in_place(|| cluster.spawn_node(options));
        ips.push(ip);
        relays.push(relay);
    }
    let net = RelayNet {
        cluster,
        faults,
        ips,
        relays,
    };
    agreed_leader(&net).await;
    for (i, relay) in net.relays.iter().enumerate() {
        let sources = relay.sources();
        assert!(
            !sources.is_empty()
                && sources
                    .iter()
                    .all(|s| net.ips.contains(s) && *s != net.ips[i]),
            "nodes dial peers from their own cluster IP; relay {i} saw {sources:?}"
        );
    }
    partition_scenario(&net, "relay").await;
}
