//! The chart's pods as Docker containers, run exactly as the rendered StatefulSet says:
//! same args and env (`POD_NAME` from the pod's name), the same user, group and fsGroup,
//! read-only root filesystem, dropped capabilities, no privilege escalation, the Secrets
//! mounted read-only with their modes, a scratch `/tmp`, and the data on a named volume
//! per pod (the PersistentVolumeClaim). The image's own HEALTHCHECK is off, as Kubernetes
//! ignores it: the rendered probes are polled instead.
//!
//! Two networks stand in for the pod network: on `peers` each container answers to the DNS
//! name the headless Service would give it (`quorum-N.<headless>.<namespace>.svc.cluster.local`,
//! a network alias), and on `clients` the load balancer and the host reach it (published
//! on ephemeral 127.0.0.1 ports). Cutting a container off `peers` partitions the cluster
//! while its workers still reach it, as a partition between nodes would.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::chart::{Chart, Probe, Source};
use super::common::{http, members};
use super::docker::{Docker, Scope};
use super::images::QUORUM;

/// Where the image keeps the binary (for `docker exec`).
const BINARY: &str = "/usr/local/bin/quorum";

/// The chart's pods of one test run.
pub struct Pods {
    pub chart: Chart,
    scope: Scope,
    /// The headless Service's network: pods find each other here by DNS name.
    pub peers: String,
    /// The client Service's network: the load balancer and the host reach pods here.
    pub clients: String,
    /// The rendered Secrets as files, one directory per Secret.
    secrets: tempfile::TempDir,
}

impl Pods {
    /// Networks, Secret files and one data volume per pod; no container yet.
    pub fn new(docker: &'static Docker, test: &str, chart: Chart) -> Pods {
        let scope = Scope::new(docker, test);
        let peers = scope.network("peers");
        let clients = scope.network("clients");
        let secrets = tempfile::tempdir().expect("temp dir");
        let pods = Pods {
            chart,
            scope,
            peers,
            clients,
            secrets,
        };
        pods.write_secrets();
        for i in 0..pods.chart.replicas() {
            pods.scope.volume(&pods.volume_suffix(i));
        }
        pods
    }

    pub fn docker(&self) -> &'static Docker {
        self.scope.docker()
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The container of pod `i`.
    pub fn container(&self, i: usize) -> String {
        self.scope.name(&self.chart.pod_name(i))
    }

    fn volume_suffix(&self, i: usize) -> String {
        format!("data-{}", self.chart.pod_name(i))
    }

    /// The Secret volumes' files with the rendered items and mode, owned by root and the
    /// fsGroup, as the kubelet writes them.
    fn write_secrets(&self) {
        let (_, fs_group) = self.chart.user();
        std::fs::set_permissions(self.secrets.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod secrets dir");
        for mount in self.chart.mounts() {
            let Source::Secret { name, items, mode } = &mount.source else {
                continue;
            };
            let dir = self.secrets.path().join(name);
            std::fs::create_dir_all(&dir).expect("secret dir");
            for (key, path) in items {
                let file = dir.join(path);
                std::fs::write(&file, self.chart.secret(name, key)).expect("secret file");
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
                    .expect("chmod secret file");
                if let Some(gid) = fs_group {
                    std::os::unix::fs::chown(&file, Some(0), Some(gid as u32))
                        .expect("chown secret file (the container tests run as root)");
                }
            }
        }
    }

    /// Creates pod `i`'s container as the StatefulSet's template says, attaches it to the
    /// peers network under its DNS name, and starts it.
    pub fn create_and_start(&self, i: usize) {
        let docker = self.docker();
        let pod = self.chart.pod_name(i);
        let name = self.container(i);
        let (user, fs_group) = self.chart.user();
        let mut args: Vec<String> = vec!["create".into(), "--name".into(), name.clone()];
        args.extend(self.scope.label());
        args.extend(["--hostname".into(), pod.clone()]);
        args.extend(["--network".into(), self.clients.clone()]);
        args.extend(["--user".into(), user]);
        if let Some(gid) = fs_group {
            args.extend(["--group-add".into(), gid.to_string()]);
        }
        if self.chart.read_only_root() {
            args.push("--read-only".into());
        }
        for cap in self.chart.dropped_capabilities() {
            args.extend(["--cap-drop".into(), cap]);
        }
        if self.chart.no_privilege_escalation() {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        args.extend([
            "--stop-timeout".into(),
            self.chart.grace_seconds().to_string(),
        ]);
        // Kubernetes runs the rendered probes, never the image's HEALTHCHECK.
        args.push("--no-healthcheck".into());
        for (key, value) in self.chart.env(&pod) {
            args.extend(["-e".into(), format!("{key}={value}")]);
        }
        for mount in self.chart.mounts() {
            let ro = if mount.read_only { ":ro" } else { "" };
            match &mount.source {
                Source::Data => {
                    let volume = self.scope.name(&self.volume_suffix(i));
                    args.extend(["-v".into(), format!("{volume}:{}{ro}", mount.path)]);
                }
                Source::Scratch => {
                    args.extend(["--tmpfs".into(), format!("{}:rw,mode=1777", mount.path)]);
                }
                Source::Secret { name, .. } => {
                    let dir = self.secrets.path().join(name);
                    args.extend(["-v".into(), format!("{}:{}{ro}", dir.display(), mount.path)]);
                }
            }
        }
        for port in self.chart.ports() {
            args.extend(["-p".into(), format!("127.0.0.1::{port}")]);
        }
        let (command, container_args) = self.chart.command_and_args(&pod);
        if let Some(entrypoint) = command.first() {
            args.extend(["--entrypoint".into(), entrypoint.clone()]);
        }
        args.push(QUORUM.into());
        args.extend(command.into_iter().skip(1));
        args.extend(container_args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker.ok(&args);
        self.connect(i);
        docker.ok(&["start", &name]);
    }

    /// Attaches pod `i` to the peers network under its headless-Service DNS name.
    pub fn connect(&self, i: usize) {
        let alias = self.chart.dns_name(&self.chart.pod_name(i));
        self.docker().ok(&[
            "network",
            "connect",
            "--alias",
            &alias,
            &self.peers,
            &self.container(i),
        ]);
    }

    /// Cuts pod `i` off the peers network: its DNS name stops resolving and no peer reaches
    /// it, while clients still do.
    pub fn disconnect(&self, i: usize) {
        self.docker()
            .ok(&["network", "disconnect", &self.peers, &self.container(i)]);
    }

    /// SIGKILL, as a crash or a node loss.
    pub fn kill(&self, i: usize) {
        self.docker().ok(&["kill", &self.container(i)]);
    }

    /// SIGTERM and up to the chart's grace period before SIGKILL, as a pod deletion; the
    /// container's exit code.
    pub fn stop(&self, i: usize) -> i64 {
        let grace = self.chart.grace_seconds().to_string();
        self.docker()
            .ok(&["stop", "-t", &grace, &self.container(i)]);
        self.docker()
            .inspect(&self.container(i), "{{.State.ExitCode}}")
            .parse()
            .expect("exit code")
    }

    /// Starts pod `i`'s stopped container again (the same pod, the same volume).
    pub fn start(&self, i: usize) {
        self.docker().ok(&["start", &self.container(i)]);
    }

    /// Deletes pod `i`'s container (its DNS name goes with it); with `volume`, its data too
    /// (a new, empty volume takes the old one's name, as a new claim would).
    pub fn delete(&self, i: usize, volume: bool) {
        self.docker().ok(&["rm", "-f", &self.container(i)]);
        if volume {
            let name = self.scope.name(&self.volume_suffix(i));
            self.docker().ok(&["volume", "rm", &name]);
            self.scope.volume(&self.volume_suffix(i));
        }
    }

    /// The host address of pod `i`'s container port `port`.
    pub fn published(&self, i: usize, port: u16) -> Option<SocketAddr> {
        self.docker().host_port(&self.container(i), port)
    }

    /// The status code pod `i` answers `probe` with, if it answers.
    pub async fn probe(&self, i: usize, probe: &Probe) -> Option<u16> {
        let addr = self.published(i, probe.port)?;
        http::get(&addr.to_string(), &probe.path)
            .await
            .ok()
            .map(|(code, _)| code)
    }

    /// Waits until pod `i` passes its rendered readiness probe, within what its startup
    /// probe (or, without one, its readiness probe) allows; panics with its log otherwise.
    pub async fn wait_ready(&self, i: usize) {
        let readiness = self.chart.probe("readinessProbe").expect("readiness probe");
        let patience = self
            .chart
            .probe("startupProbe")
            .unwrap_or_else(|| readiness.clone())
            .patience();
        let deadline = Instant::now() + patience.min(Duration::from_secs(60));
        while self.probe(i, &readiness).await != Some(200) {
            if Instant::now() > deadline {
                panic!(
                    "pod {i} not ready after {patience:?}; log:\n{}",
                    self.docker().logs(&self.container(i), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `quorum cluster ARGS --json` run inside pod `i` against its own cluster port, with
    /// the pod's node certificate when the chart mounts one.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<Value, String> {
        let address = format!("127.0.0.1:{}", self.chart.port("cluster"));
        let mut all = vec!["exec".to_string(), self.container(i), BINARY.into()];
        all.extend(["cluster".into()]);
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--address".into(), address, "--json".into()]);
        if let Some(dir) = self.certs_dir() {
            all.extend(["--certs-dir".into(), dir, "--client".into(), "node".into()]);
        }
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = self.docker().run(&all)?;
        serde_json::from_str(&out).map_err(|e| format!("not JSON ({e}): {out}"))
    }

    /// The mount holding the node certificate, if the chart turns TLS on.
    fn certs_dir(&self) -> Option<String> {
        self.chart
            .mounts()
            .into_iter()
            .find_map(|m| match &m.source {
                Source::Secret { items, .. } if items.iter().any(|(_, p)| p == "node.crt") => {
                    Some(m.path.clone())
                }
                _ => None,
            })
    }

    /// `quorum cluster status` as pod `i` sees it.
    pub fn status(&self, i: usize) -> Option<Value> {
        self.cli(i, &["status"]).ok()
    }

    /// Every pod's log lines, over all its restarts, that are warnings or errors or speak of
    /// a drain or a stopped call: what a failed call during a rolling restart needs.
    pub fn notable_logs(&self) -> String {
        const NOTABLE: [&str; 5] = ["\"WARN\"", "\"ERROR\"", "drain", "stopped", "owed"];
        (0..self.chart.replicas())
            .map(|i| {
                let all = self.docker().logs(&self.container(i), 100_000);
                let lines: Vec<&str> = all
                    .lines()
                    .filter(|l| !l.contains("openraft"))
                    .filter(|l| NOTABLE.iter().any(|n| l.contains(n)))
                    .collect();
                format!("--- {} ---\n{}", self.chart.pod_name(i), lines.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every pod's last log lines, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.chart.replicas())
            .map(|i| {
                format!(
                    "--- {} ---\n{}",
                    self.chart.pod_name(i),
                    self.docker().logs(&self.container(i), 30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `check` until it holds, or panics with every pod's log after `deadline`.
    pub async fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&Pods) -> bool,
    ) {
        let until = Instant::now() + deadline;
        while !check(self) {
            if Instant::now() > until {
                panic!("timed out waiting until {what}; logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cluster id every pod of `running` reports, once they all agree on it, on one
    /// leader, and on the voters `voters` (node ids; pod `i` is node `i + 1`).
    pub async fn wait_formed(&self, running: &[usize], voters: &[u64]) -> String {
        let mut agreed = String::new();
        self.wait_until("the pods form one cluster", Duration::from_secs(60), |p| {
            let statuses: Option<Vec<Value>> = running.iter().map(|i| p.status(*i)).collect();
            let Some(statuses) = statuses else {
                return false;
            };
            let id = statuses[0]["cluster_id"].as_str().unwrap_or("").to_string();
            let leader = statuses[0]["leader_id"].as_u64();
            let formed = !id.is_empty()
                && leader.is_some()
                && statuses.iter().all(|s| {
                    let members = members(s);
                    s["cluster_id"] == id.as_str()
                        && s["leader_id"].as_u64() == leader
                        && members.iter().map(|m| m.0).collect::<Vec<_>>() == voters
                        && members.iter().all(|m| m.1 != "learner")
                });
            if formed {
                agreed = id;
            }
            formed
        })
        .await;
        agreed
    }

    /// The leader every pod in `pods` names, once they agree.
    pub async fn wait_for_leader(&self, pods: &[usize]) -> u64 {
        let mut leader = 0;
        self.wait_until(
            "the pods agree on one leader among themselves",
            Duration::from_secs(30),
            |p| {
                let seen: Vec<Option<u64>> = pods
                    .iter()
                    .map(|i| p.status(*i).and_then(|s| s["leader_id"].as_u64()))
                    .collect();
                // A leader among these pods: after a kill, the survivors may still name
                // the dead leader until their election timeout passes.
                let among = |id: u64| pods.iter().any(|i| (*i as u64) + 1 == id);
                match seen.first() {
                    Some(Some(first))
                        if among(*first) && seen.iter().all(|s| *s == Some(*first)) =>
                    {
                        leader = *first;
                        true
                    }
                    _ => false,
                }
            },
        )
        .await;
        leader
    }
}
