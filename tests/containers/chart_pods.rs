//! What Kubernetes does to the chart's pods, done to containers run from the rendered
//! StatefulSet: a Parallel start in random order, SIGKILL and restart of any pod (pod 0
//! included, with and without its volume), and a scale-down and back up.

use std::time::{Duration, Instant};

use serde_json::json;

use super::pods::Pods;
use super::{prerequisites, serial, Rng};

/// The process's uid and gid as the kernel sees them (`/proc/PID/status`).
fn process_ids(pods: &Pods, i: usize) -> (String, String) {
    let pid = pods.docker().inspect(&pods.container(i), "{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("")
            .to_string()
    };
    (field("Uid:"), field("Gid:"))
}

/// Starts every pod in a random order (the chart asks for Parallel), as fast as Docker
/// creates them; the time from the first `docker create` to every readiness probe passing.
async fn start_all(pods: &Pods, rng: &mut Rng) -> Duration {
    assert_eq!(pods.chart.pod_management_policy(), "Parallel");
    let mut order: Vec<usize> = (0..pods.chart.replicas()).collect();
    rng.shuffle(&mut order);
    println!("start order: {order:?}");
    let started = Instant::now();
    for i in &order {
        pods.create_and_start(*i);
    }
    for i in &order {
        pods.wait_ready(*i).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chart_pods_started_in_any_order_form_one_cluster_as_the_chart_runs_them() {
    let _serial = serial();
    let Some((docker, chart)) = prerequisites(json!({})) else {
        return;
    };
    let pods = Pods::new(docker, "order", chart);
    let mut rng = Rng::from_env_or_clock();
    let ready = start_all(&pods, &mut rng).await;
    pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await;
    println!("measure: 3 fresh containers from docker create to all /readyz 200: {ready:?}");

    let liveness = pods.chart.probe("livenessProbe").expect("liveness probe");
    let startup = pods.chart.probe("startupProbe").expect("startup probe");
    let readiness = pods.chart.probe("readinessProbe").expect("readiness probe");
    assert_eq!(
        (liveness.path.as_str(), readiness.path.as_str()),
        ("/healthz", "/readyz")
    );
    let (user, _) = pods.chart.user();
    let (uid, gid) = user.split_once(':').expect("uid:gid");
    for i in 0..3 {
        for probe in [&liveness, &startup, &readiness] {
            assert_eq!(
                pods.probe(i, probe).await,
                Some(200),
                "pod {i} {}",
                probe.path
            );
        }
        let name = pods.container(i);
        assert_eq!(
            docker.inspect(&name, "{{.HostConfig.ReadonlyRootfs}}"),
            "true"
        );
        assert_eq!(docker.inspect(&name, "{{.Config.User}}"), user);
        assert_eq!(process_ids(&pods, i), (uid.to_string(), gid.to_string()));
        // The node wrote its data to the volume, as the non-root user.
        let volume = docker.inspect(
            &name,
            "{{range .Mounts}}{{if eq .Destination \"/data\"}}{{.Name}}{{end}}{{end}}",
        );
        assert!(
            volume.starts_with(pods.scope().run_name()),
            "data on the pod's named volume: {volume}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chart_pods_come_back_after_sigkill_with_and_without_their_volume() {
    let _serial = serial();
    let Some((docker, chart)) = prerequisites(json!({})) else {
        return;
    };
    let pods = Pods::new(docker, "sigkill", chart);
    let mut rng = Rng::from_env_or_clock();
    start_all(&pods, &mut rng).await;
    let cluster_id = pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await;

    // SIGKILL of the leader: the two others elect a new one.
    let leader = pods.wait_for_leader(&[0, 1, 2]).await;
    let killed = (leader - 1) as usize;
    let others: Vec<usize> = (0..3).filter(|i| *i != killed).collect();
    let cut = Instant::now();
    pods.kill(killed);
    let next = pods.wait_for_leader(&others).await;
    println!(
        "measure: leader failover after docker kill of {}: {:?}",
        pods.chart.pod_name(killed),
        cut.elapsed()
    );
    assert_ne!(next, leader, "a new leader");
    pods.start(killed);
    pods.wait_ready(killed).await;
    assert_eq!(pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await, cluster_id);

    // SIGKILL and restart of a random pod and of pod 0, each keeping its volume.
    for i in [rng.below(3), 0] {
        pods.kill(i);
        pods.start(i);
        pods.wait_ready(i).await;
        assert_eq!(
            pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await,
            cluster_id,
            "pod {i} restarted"
        );
    }

    // Pod 0, the founder, loses its volume: it must join the existing cluster, not found a
    // new one.
    pods.kill(0);
    pods.delete(0, true);
    pods.create_and_start(0);
    pods.wait_ready(0).await;
    assert_eq!(
        pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await,
        cluster_id,
        "a wiped pod 0 rejoins the same cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chart_pods_scale_down_removes_the_departed_member_and_scale_up_rejoins() {
    let _serial = serial();
    // The chart's departed-member removal, sooner than its default minute.
    let Some((docker, chart)) = prerequisites(json!({"cluster": {"removeDepartedAfterMs": 2000}}))
    else {
        return;
    };
    let pods = Pods::new(docker, "scale", chart);
    let mut rng = Rng::from_env_or_clock();
    start_all(&pods, &mut rng).await;
    let cluster_id = pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await;

    // Scale to two: the last pod and its claim are deleted (whenScaled: Delete), and its DNS
    // name with it. The leader removes the departed voter.
    let last = 2;
    pods.delete(last, true);
    assert_eq!(
        pods.wait_formed(&[0, 1], &[1, 2]).await,
        cluster_id,
        "the departed member is removed"
    );

    // Back to three: a fresh pod with an empty volume joins.
    pods.create_and_start(last);
    pods.wait_ready(last).await;
    assert_eq!(pods.wait_formed(&[0, 1, 2], &[1, 2, 3]).await, cluster_id);
}
