//! A rolling restart of the chart's pods, as `kubectl rollout restart` does it: one pod at
//! a time gets SIGTERM (`docker stop` with the chart's grace period), comes back, and must
//! pass its readiness probe before the next one goes, while workers call each other
//! through the load balancer. No call may fail.

use std::time::Instant;

use serde_json::json;

use super::balancer::Balancer;
use super::pods::Pods;
use super::traffic::Traffic;
use super::{prerequisites, serial};

/// How many workers call each other.
const WORKERS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chart_pods_rolling_restart_behind_the_balancer_fails_no_call() {
    let _serial = serial();
    let Some((docker, chart)) = prerequisites(json!({})) else {
        return;
    };
    let pods = Pods::new(docker, "rolling", chart);
    for i in 0..pods.chart.replicas() {
        pods.create_and_start(i);
    }
    for i in 0..pods.chart.replicas() {
        pods.wait_ready(i).await;
    }
    let cluster_id = pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await;
    let balancer = Balancer::start(&pods).await;
    let traffic = Traffic::start(&balancer.url(pods.chart.worker_token()), WORKERS).await;
    traffic.flows(50).await;

    // The StatefulSet controller replaces pods from the highest ordinal down, each once the
    // one before is ready again.
    let began = Instant::now();
    for i in (0..pods.chart.replicas()).rev() {
        let stopping = Instant::now();
        let code = pods.stop(i);
        assert_eq!(code, 0, "{} drained and exited 0", pods.chart.pod_name(i));
        let stopped = stopping.elapsed();
        pods.start(i);
        pods.wait_ready(i).await;
        assert_eq!(pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await, cluster_id);
        traffic.flows(50).await;
        let (ok, failed) = traffic.counts();
        println!(
            "rolling restart: {} stopped in {stopped:?}, ready again; {ok} calls answered, {failed} failed so far",
            pods.chart.pod_name(i)
        );
    }
    let took = began.elapsed();
    let (ok, failed) = traffic.stop().await;
    println!(
        "measure: rolling restart of 3 pods in {took:?}: {ok} calls answered, {failed} failed"
    );
    if failed > 0 {
        eprintln!("{}", pods.notable_logs());
    }
    assert_eq!(failed, 0, "a rolling restart fails no call");
    drop(balancer);
}
