//! The Docker CLI as these tests use it: one client found once per binary, commands bounded
//! in time, published ports looked up with `docker port`, and a [`Scope`] that removes every
//! container, network and volume a test made (all carry its label), also when it fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::common::sdk_env::run_bounded;

/// Bounds a single CLI call; `docker stop` waits up to the chart's grace period inside it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The label every resource of a test run carries; its value names the run.
const LABEL: &str = "quorum-test";

/// A Docker client whose daemon answers.
pub struct Docker {
    program: PathBuf,
}

static DOCKER: OnceLock<Result<Docker, String>> = OnceLock::new();

/// The client, or `None` after saying `SKIPPED: <reason>` when Docker cannot run here;
/// under `CI=true` a missing Docker fails the test instead.
pub fn docker_or_skip() -> Option<&'static Docker> {
    match DOCKER.get_or_init(Docker::find) {
        Ok(docker) => Some(docker),
        Err(reason) => {
            skip(reason);
            None
        }
    }
}

/// Reports a missing prerequisite: a `SKIPPED:` line locally, a failure when `CI=true`.
pub fn skip(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and the container tests cannot run: {reason}");
    }
    println!("SKIPPED: {reason}");
}

impl Docker {
    /// As root: `QUORUM_TEST_DOCKER` if set, else Debian's client (`/usr/bin/docker`, which builds
    /// with the daemon's own BuildKit), else `docker` on PATH; it must reach a daemon.
    fn find() -> Result<Docker, String> {
        // The Secret files get the pod's fsGroup as owner, and the base images need root.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the container tests need root".into());
        }
        let program = std::env::var_os("QUORUM_TEST_DOCKER")
            .map(PathBuf::from)
            .or_else(|| {
                let debian = PathBuf::from("/usr/bin/docker");
                debian.is_file().then_some(debian)
            })
            .unwrap_or_else(|| PathBuf::from("docker"));
        let docker = Docker { program };
        docker
            .run(&["info", "--format", "{{.ServerVersion}}"])
            .map_err(|e| format!("no Docker daemon answers `docker info`: {e}"))?;
        Ok(docker)
    }

    /// The client's path, for scripts that call it themselves.
    pub fn program(&self) -> &PathBuf {
        &self.program
    }

    /// A command for this client with BuildKit on (the Dockerfile's cache mounts need it).
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.env("DOCKER_BUILDKIT", "1");
        command
    }

    /// Runs `docker ARGS`; its output, or why it failed. Inside a test's (multi-threaded)
    /// runtime the other tasks, SDK workers among them, move off this thread meanwhile.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        tokio::task::block_in_place(|| {
            run_bounded(self.command().args(args), COMMAND_TIMEOUT, None)
        })
    }

    /// Runs `docker ARGS`, failing the test if it fails; its trimmed output.
    pub fn ok(&self, args: &[&str]) -> String {
        match self.run(args) {
            Ok(out) => out.trim().to_string(),
            Err(e) => panic!("docker {}: {e}", args.join(" ")),
        }
    }

    /// The host address `container`'s `port`/tcp is published on (found with `docker port`,
    /// as it changes whenever the container starts again).
    pub fn host_port(&self, container: &str, port: u16) -> Option<SocketAddr> {
        let out = self
            .run(&["port", container, &format!("{port}/tcp")])
            .ok()?;
        out.lines().find_map(|line| line.trim().parse().ok())
    }

    /// `docker inspect --format FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
    }

    /// The last lines of a container's log, for failure messages.
    pub fn logs(&self, container: &str, lines: usize) -> String {
        let n = lines.to_string();
        self.run(&["logs", "--tail", &n, container])
            .unwrap_or_else(|e| e)
    }
}

/// The resources of one test run: names made unique per run, each created with the run's
/// label; dropping the scope removes all of them.
pub struct Scope {
    docker: &'static Docker,
    run: String,
}

impl Scope {
    /// A new run named after `test`.
    pub fn new(docker: &'static Docker, test: &str) -> Scope {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Scope {
            docker,
            run: format!("qt-{test}-{}", &id[..8]),
        }
    }

    pub fn docker(&self) -> &'static Docker {
        self.docker
    }

    /// A name unique to this run, e.g. `qt-pods-1a2b3c4d-quorum-0`.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.run)
    }

    /// `--label quorum-test=RUN`, for every `docker create/run/network create/volume create`.
    pub fn label(&self) -> [String; 2] {
        ["--label".into(), format!("{LABEL}={}", self.run)]
    }

    /// The run's name (compose uses it as the project name).
    pub fn run_name(&self) -> &str {
        &self.run
    }

    /// A labelled bridge network named `name(what)`.
    pub fn network(&self, what: &str) -> String {
        let name = self.name(what);
        let [flag, label] = self.label();
        self.docker.ok(&["network", "create", &flag, &label, &name]);
        name
    }

    /// A labelled named volume named `name(what)`.
    pub fn volume(&self, what: &str) -> String {
        let name = self.name(what);
        let [flag, label] = self.label();
        self.docker.ok(&["volume", "create", &flag, &label, &name]);
        name
    }

    /// Removes the run's containers (with their anonymous volumes), then its networks and
    /// volumes; what is already gone is fine.
    pub fn clean(&self) {
        let filter = format!("label={LABEL}={}", self.run);
        let listed = |args: &[&str]| -> Vec<String> {
            self.docker
                .run(args)
                .map(|out| out.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let containers = listed(&["ps", "-aq", "--filter", &filter]);
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            let _ = self.docker.run(&args);
        }
        let networks = listed(&["network", "ls", "-q", "--filter", &filter]);
        if !networks.is_empty() {
            let mut args = vec!["network", "rm"];
            args.extend(networks.iter().map(String::as_str));
            let _ = self.docker.run(&args);
        }
        let volumes = listed(&["volume", "ls", "-q", "--filter", &filter]);
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes.iter().map(String::as_str));
            let _ = self.docker.run(&args);
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.clean();
    }
}
