//! Node loss: leases purge a lost node's workers from the registry.

mod common;

use common::raw::RawClient;
use common::{call, unique_name, wait_function, worker, Cluster};
use serde_json::json;
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
