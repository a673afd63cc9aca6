//! Helpers shared by the benchmarks: processes killed by PID on drop, SDK clients,
//! the callee role, and reading a node's ready line.
#![allow(dead_code)]

use iii_sdk::protocol::{Dispatch, TriggerRequest};
use iii_sdk::runtime::WorkerMetadata;
use iii_sdk::{register_worker, Error, IIIClient, InitOptions, RegisterFunction};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The environment variable that selects a helper role when a bench re-executes itself.
pub const ROLE: &str = "QUORUM_BENCH_ROLE";

/// Kills a child process by PID when dropped. A node's log, when it has one, is printed
/// if the bench is failing, so a failure shows what the node said.
pub struct Guard(pub Child, Option<tempfile::TempPath>);

impl Guard {
    /// A guard for a child whose log is not kept.
    pub fn new(child: Child) -> Self {
        Guard(child, None)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let (true, Some(log)) = (std::thread::panicking(), &self.1) {
            print_tail(log);
        }
    }
}

/// Lines of a failing node's log printed.
const LOG_TAIL_LINES: usize = 200;

fn print_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    eprintln!("--- last {} lines of {} ---", tail.len(), log.display());
    for line in tail {
        eprintln!("{line}");
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`;
/// `None` where there is no procfs. Lets a report say which process a phase was bound by.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a constant of the running system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|n| *n > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// An SDK client with a fixed name.
pub fn client(url: &str, name: &str) -> IIIClient {
    register_worker(
        url,
        InitOptions {
            metadata: Some(WorkerMetadata {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

/// The callee role: serves `bench::echo` until killed.
pub async fn callee(url: String) {
    let worker = client(&url, "bench-callee");
    worker.register_function(
        "bench::echo",
        RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) }),
    );
    worker
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("callee registered");
    println!("READY");
    std::future::pending::<()>().await;
}

/// One call of `bench::echo` through the engine.
pub async fn call(worker: &IIIClient) -> Result<Value, Error> {
    worker
        .trigger(TriggerRequest::new("bench::echo", json!({"n": 1})).dispatch(Dispatch::Remote))
        .await
}

/// Starts a one-node cluster on OS-chosen ports; returns it and its worker URL.
pub fn start_node(dir: &std::path::Path) -> (Guard, String) {
    let (guard, ready) = start_node_with(dir, "127.0.0.1:0", &[]);
    let url = format!("ws://{}", ready["listen"].as_str().expect("listen"));
    (guard, url)
}

/// Starts a node on `dir` with its worker listener on `listen` and extra `args`;
/// returns it with its parsed ready line. Its log goes to a temporary file, printed if
/// the bench fails.
pub fn start_node_with(dir: &Path, listen: &str, args: &[&str]) -> (Guard, Value) {
    let (log, log_path) = tempfile::NamedTempFile::new()
        .expect("node log file")
        .into_parts();
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args([
            "serve",
            "--listen",
            listen,
            "--cluster-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir)
        .args(args)
        .env("QUORUM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start quorum");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let guard = Guard(child, Some(log_path));
    let ready: Value = serde_json::from_str(line.trim()).expect("ready JSON");
    (guard, ready)
}

/// Re-executes this bench in `role`, returning the first line it prints.
pub fn start_role(role: &str, url: &str) -> (Guard, String) {
    let mut child = Command::new(std::env::current_exe().expect("bench path"))
        .env(ROLE, role)
        .env("III_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start callee");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("role ready");
    (Guard::new(child), line.trim().to_string())
}
