//! `deploy/compose/docker-compose.yml` brought up as shipped, with `docker-compose`: an
//! override file only swaps the image names for the locally built ones, and
//! `QUORUM_LB_PUBLISH=127.0.0.1:` publishes the balancer on a free loopback port. SDK
//! workers connect through the compose file's HAProxy; a node is killed and the calls go on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::sdk_env::run_bounded;
use super::docker::{skip, Docker, Scope};
use super::images::{CERTS_INIT, HAPROXY, QUORUM};
use super::traffic::Traffic;
use super::{docker_with_images, serial};

const NODES: [&str; 3] = ["quorum-1", "quorum-2", "quorum-3"];
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(180);

/// One compose project; `down -v` on drop, then whatever still carries its label.
struct Project {
    program: PathBuf,
    name: String,
    files: Vec<PathBuf>,
    docker: &'static Docker,
    _override: tempfile::TempDir,
}

impl Project {
    /// The shipped compose file plus an override naming the local images.
    fn new(program: PathBuf, scope: &Scope) -> Project {
        let dir = tempfile::tempdir().expect("temp dir");
        let override_file = dir.path().join("images.yml");
        let nodes: String = NODES
            .iter()
            .map(|n| format!("  {n}:\n    image: {QUORUM}\n"))
            .collect();
        std::fs::write(
            &override_file,
            format!("services:\n  certs:\n    image: {CERTS_INIT}\n{nodes}  lb:\n    image: {HAPROXY}\n"),
        )
        .expect("override file");
        let shipped =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/docker-compose.yml");
        Project {
            program,
            name: scope.run_name().to_string(),
            files: vec![shipped, override_file],
            docker: scope.docker(),
            _override: dir,
        }
    }

    fn compose(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(&self.program);
        command.arg("-p").arg(&self.name);
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command
            .args(args)
            .env("QUORUM_LB_PUBLISH", "127.0.0.1:")
            .env("DOCKER_HOST", docker_host());
        tokio::task::block_in_place(|| run_bounded(&mut command, COMPOSE_TIMEOUT, None))
    }

    fn ok(&self, args: &[&str]) -> String {
        self.compose(args)
            .unwrap_or_else(|e| panic!("docker-compose {}: {e}", args.join(" ")))
    }

    /// The container of `service`.
    fn container(&self, service: &str) -> String {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let service = format!("label=com.docker.compose.service={service}");
        self.docker
            .ok(&["ps", "-aq", "--filter", &project, "--filter", &service])
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no container for {service}"))
            .to_string()
    }

    fn health(&self, service: &str) -> String {
        self.docker.inspect(
            &self.container(service),
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
        )
    }

    /// `quorum cluster status` inside `service`, with its own node certificate.
    fn status(&self, service: &str) -> Option<Value> {
        let certs = format!("/certs/{service}");
        let out = self
            .docker
            .run(&[
                "exec",
                &self.container(service),
                "/usr/local/bin/quorum",
                "cluster",
                "status",
                "--address",
                "127.0.0.1:50051",
                "--certs-dir",
                &certs,
                "--client",
                "node",
                "--json",
            ])
            .ok()?;
        serde_json::from_str(&out).ok()
    }

    async fn wait_until(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut(&Project) -> bool,
    ) {
        let until = Instant::now() + deadline;
        while !check(self) {
            if Instant::now() > until {
                let logs = self
                    .compose(&["logs", "--tail", "30"])
                    .unwrap_or_else(|e| e);
                panic!("timed out waiting until {what}; logs:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
        let filter = format!("label=com.docker.compose.project={}", self.name);
        for (list, remove) in [
            (vec!["ps", "-aq"], vec!["rm", "-f", "-v"]),
            (vec!["network", "ls", "-q"], vec!["network", "rm"]),
            (vec!["volume", "ls", "-q"], vec!["volume", "rm", "-f"]),
        ] {
            let mut args = list;
            args.extend(["--filter", &filter]);
            let found = self.docker.run(&args).unwrap_or_default();
            let ids: Vec<&str> = found.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = remove;
                args.extend(ids);
                let _ = self.docker.run(&args);
            }
        }
    }
}

/// The daemon socket the docker CLI uses, for docker-compose (which has no contexts).
fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Debian's docker-compose (v1), or `QUORUM_TEST_COMPOSE`.
fn compose_program() -> Option<PathBuf> {
    let program = std::env::var_os("QUORUM_TEST_COMPOSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("docker-compose"));
    let works = Command::new(&program)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(program)
}

/// How many members a `cluster status` answer lists.
fn members(status: &Value) -> usize {
    status["members"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compose_cluster_serves_workers_through_haproxy_and_survives_a_killed_node() {
    let _serial = serial();
    let Some(docker) = docker_with_images() else {
        return;
    };
    let Some(program) = compose_program() else {
        skip("docker-compose is not installed (apt-get install docker-compose)");
        return;
    };
    let scope = Scope::new(docker, "compose");
    let project = Project::new(program, &scope);
    let started = Instant::now();
    project.ok(&["up", "-d", "--no-build"]);
    project
        .wait_until(
            "every node's health check passes",
            Duration::from_secs(90),
            |p| NODES.iter().all(|n| p.health(n) == "healthy"),
        )
        .await;
    println!(
        "compose: up and every node healthy in {:?}",
        started.elapsed()
    );
    project
        .wait_until("one cluster of three", Duration::from_secs(30), |p| {
            p.status("quorum-2")
                .is_some_and(|s| members(&s) == 3 && s["leader_id"].is_u64())
        })
        .await;

    let lb = project.container("lb");
    let addr = docker
        .host_port(&lb, 49134)
        .expect("the balancer's published port");
    let traffic = Traffic::start(&format!("ws://{addr}"), 3).await;
    traffic.flows(50).await;

    // A crash: no drain. The survivors keep a quorum, HAProxy cuts the dead node's sessions,
    // its workers reconnect to the others, and calls go on.
    let killed = Instant::now();
    project.ok(&["kill", "quorum-1"]);
    traffic.flows(200).await;
    let (ok, failed) = traffic.counts();
    println!(
        "compose: quorum-1 killed; 200 more calls answered {:?} later ({ok} answered, {failed} failed so far)",
        killed.elapsed()
    );
    project
        .wait_until(
            "the survivors agree on a leader",
            Duration::from_secs(30),
            |p| {
                p.status("quorum-2")
                    .is_some_and(|s| s["leader_id"].is_u64())
            },
        )
        .await;

    // Back from its volume: it rejoins.
    project.ok(&["start", "quorum-1"]);
    project
        .wait_until("quorum-1 rejoins", Duration::from_secs(60), |p| {
            p.status("quorum-1")
                .is_some_and(|s| members(&s) == 3 && s["leader_id"].is_u64())
        })
        .await;
    traffic.flows(50).await;
    let (ok, failed) = traffic.stop().await;
    println!("compose: quorum-1 back; {ok} calls answered, {failed} failed (calls in flight on the killed node)");
}
