//! A partition between the chart's pods: one pod is cut off the peers network (`docker
//! network disconnect`) while its SDK workers still reach it through the load balancer.
//! It must fence (readiness fails, its workers' sockets close), the majority must purge
//! its workers, the workers must come back through the balancer to the majority, and after
//! `docker network connect` the pod must rejoin with no stale entries: every pod then
//! reports the same workers per node, and each node's count is the sockets it holds.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::balancer::Balancer;
use super::pods::Pods;
use super::traffic::Traffic;
use super::{prerequisites, serial};

const WORKERS: usize = 3;

/// The workers each member holds, as pod `i` sees the registry (node id, count).
fn workers_by_node(status: &Value) -> Vec<(u64, u64)> {
    let mut rows: Vec<(u64, u64)> = status["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    (
                        m["node_id"].as_u64().unwrap_or(0),
                        m["workers"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    rows.sort();
    rows
}

fn local_workers(pods: &Pods, i: usize) -> Option<u64> {
    pods.status(i).and_then(|s| s["local_workers"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_pod_fences_is_purged_and_rejoins_with_no_stale_entries() {
    let _serial = serial();
    let Some((docker, chart)) = prerequisites(json!({})) else {
        return;
    };
    let pods = Pods::new(docker, "partition", chart);
    for i in 0..3 {
        pods.create_and_start(i);
    }
    for i in 0..3 {
        pods.wait_ready(i).await;
    }
    let cluster_id = pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await;
    let balancer = Balancer::start(&pods).await;
    let traffic = Traffic::start(&balancer.url(pods.chart.worker_token()), WORKERS).await;
    traffic.flows(50).await;

    // The victim: a follower that holds SDK workers.
    let leader = pods.wait_for_leader(&[0, 1, 2]).await;
    let victim = (0..3)
        .filter(|i| *i as u64 + 1 != leader)
        .max_by_key(|i| local_workers(&pods, *i).unwrap_or(0))
        .expect("a follower");
    let held = local_workers(&pods, victim).unwrap_or(0);
    assert!(
        held > 0,
        "the balancer spread the workers; none on a follower"
    );
    let majority: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let readiness = pods.chart.probe("readinessProbe").expect("readiness probe");
    let fence_after = Duration::from_millis(
        pods.chart
            .flag(&pods.chart.pod_name(0), "fence-after-ms")
            .expect("--fence-after-ms")
            .parse()
            .expect("a number"),
    );

    let cut = Instant::now();
    pods.disconnect(victim);
    pods.wait_until("the cut-off pod fences", Duration::from_secs(20), |p| {
        local_workers(p, victim) == Some(0)
    })
    .await;
    let fenced = cut.elapsed();
    assert!(
        fenced >= fence_after,
        "fenced only after the lease: {fenced:?}"
    );
    assert_ne!(
        pods.probe(victim, &readiness).await,
        Some(200),
        "a fenced pod is not ready"
    );

    // The majority purges the cut-off node's workers; the workers come back through the
    // balancer on majority pods and are all listed again.
    let victim_node = victim as u64 + 1;
    pods.wait_until(
        "the majority purged the cut-off pod",
        Duration::from_secs(30),
        |p| {
            majority.iter().all(|i| {
                p.status(*i).is_some_and(|s| {
                    workers_by_node(&s)
                        .iter()
                        .all(|(node, n)| *node != victim_node || *n == 0)
                })
            })
        },
    )
    .await;
    let purged = cut.elapsed();
    pods.wait_until(
        "the majority holds every worker",
        Duration::from_secs(30),
        |p| {
            majority.iter().all(|i| {
                p.status(*i).is_some_and(|s| {
                    workers_by_node(&s).iter().map(|(_, n)| n).sum::<u64>() == WORKERS as u64
                })
            })
        },
    )
    .await;
    let back = cut.elapsed();
    // The SDK reconnects 2 s after its socket closes, and the balancer needs a second to see
    // the fenced pod unready: the workers must not wait for the fenced node to give up
    // recording their disconnect (15 s without a leader) before their sockets end.
    assert!(
        back < fenced + Duration::from_secs(8),
        "workers came back {back:?} after the cut, fenced at {fenced:?}"
    );
    traffic.flows(50).await;
    println!(
        "measure: partition: {} fenced {fenced:?}, purged {purged:?}, its {held} worker(s) back through the balancer {back:?} after the cut",
        pods.chart.pod_name(victim)
    );

    let healed = Instant::now();
    pods.connect(victim);
    pods.wait_ready(victim).await;
    assert_eq!(pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await, cluster_id);
    // No stale entries: every pod sees the same workers per node, and each node's count is
    // the sockets it really holds.
    pods.wait_until(
        "every pod agrees on the live workers",
        Duration::from_secs(20),
        |p| {
            let statuses: Option<Vec<Value>> = (0..3).map(|i| p.status(i)).collect();
            let Some(statuses) = statuses else {
                return false;
            };
            let view = workers_by_node(&statuses[0]);
            statuses.iter().all(|s| workers_by_node(s) == view)
                && view.iter().map(|(_, n)| n).sum::<u64>() == WORKERS as u64
                && statuses.iter().all(|s| {
                    view.iter().any(|(node, n)| {
                        s["node_id"].as_u64() == Some(*node)
                            && s["local_workers"].as_u64() == Some(*n)
                    })
                })
        },
    )
    .await;
    traffic.flows(50).await;
    let (ok, failed) = traffic.stop().await;
    println!(
        "measure: partition: healed and rejoined {:?} after the reconnect; {ok} calls answered, {failed} failed (to or from the cut-off pod's workers until they were back)",
        healed.elapsed()
    );
    drop(balancer);
}
