//! Test harness: real quorum processes on 127.0.0.1 ports chosen by the OS, a temp
//! data directory each, real SDK workers, and helpers that wait on events with
//! deadlines. Every process a test starts is killed by PID when its handle drops,
//! even when the test fails.

#![allow(dead_code)]

pub mod raw;
pub mod script;
pub mod sdk_env;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use iii_sdk::runtime::WorkerMetadata;
use iii_sdk::{register_worker, IIIClient, InitOptions};
use serde_json::Value;

/// How long a node may take to print its ready line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One running quorum node process.
pub struct Node {
    child: Option<Child>,
    /// The worker WebSocket URL (`ws://127.0.0.1:PORT`).
    pub url: String,
    /// The `host:port` the worker listener is bound to.
    pub listen: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Extra arguments and environment for a node.
#[derive(Default, Clone)]
pub struct NodeOptions {
    pub listen: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Node {
    /// Starts a node with its own temp data directory and an OS-chosen port.
    pub fn start() -> Node {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut node = Node::start_in(&dir, NodeOptions::default());
        node._tmp = Some(tmp);
        node
    }

    /// Starts a node on a given data directory.
    pub fn start_in(dir: &Path, options: NodeOptions) -> Node {
        let listen = options
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("node log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_quorum"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(&listen)
            .arg("--cluster-listen")
            .arg("127.0.0.1:0")
            .args(&options.args)
            .env("QUORUM_LOG", "info,quorum=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (k, v) in &options.env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start quorum");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if !line.trim().is_empty() => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "quorum did not become ready ({other:?}); log:\n{}",
                    std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
                );
            }
        };
        let ready: Value = serde_json::from_str(line.trim()).expect("ready line is JSON");
        let listen = ready["listen"].as_str().expect("listen").to_string();
        Node {
            child: Some(child),
            url: format!("ws://{listen}"),
            listen,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A unique worker name, so two clients in one test process never share a lease.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A real Rust SDK worker with a unique name (and namespace if given), already
/// acknowledged by the engine.
pub async fn worker(url: &str, name: &str, namespace: Option<&str>) -> IIIClient {
    let metadata = WorkerMetadata {
        name: name.to_string(),
        namespace: namespace.map(str::to_string),
        ..WorkerMetadata::default()
    };
    let client = register_worker(
        url,
        InitOptions {
            metadata: Some(metadata),
            namespace: namespace.map(str::to_string),
            ..InitOptions::default()
        },
    );
    client
        .wait_until_registered(Duration::from_secs(10))
        .await
        .expect("worker registered");
    client
}

/// Calls a function through the engine (never in-process), returning the SDK result.
pub async fn call(
    client: &IIIClient,
    function_id: &str,
    payload: Value,
) -> Result<Value, iii_sdk::Error> {
    use iii_sdk::protocol::{Dispatch, TriggerRequest};
    client
        .trigger(TriggerRequest::new(function_id, payload).dispatch(Dispatch::Remote))
        .await
}

/// Polls `check` until it returns `Some`, or panics after `deadline`. Used where the
/// observable event is the engine's state (discovery lists), which has no push.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > until {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The ids of every function `engine::functions::list` shows (internal ones included).
pub async fn function_ids(client: &IIIClient) -> Vec<String> {
    let listed = call(
        client,
        "engine::functions::list",
        serde_json::json!({"include_internal": true}),
    )
    .await
    .expect("functions::list");
    listed["functions"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r["function_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `function_id` is (or is not) registered.
pub async fn wait_function(client: &IIIClient, function_id: &str, present: bool) {
    eventually(
        &format!("{function_id} present={present}"),
        Duration::from_secs(15),
        || async {
            (function_ids(client)
                .await
                .iter()
                .any(|id| id == function_id)
                == present)
                .then_some(())
        },
    )
    .await
}
