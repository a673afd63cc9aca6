//! Cross-language smoke test: the published npm `iii-sdk` 0.22.x against a real quorum
//! node, next to a real Rust SDK worker.
//!
//! The SDK is installed once with npm into `target/sdk-envs/node`, from
//! `tests/node/package.json` (guarded by a `OnceLock` inside this binary and by an
//! atomic `mkdir` lock across processes). `tests/node/smoke.mjs` loads it from there.
//! Without `node`/`npm` or without the package registry the test prints
//! `SKIPPED: <reason>` and passes, unless `CI=true`, where it fails with the reason.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{call, unique_name, wait_function, worker, Node};
use iii_sdk::{Error, IIIClient, RegisterFunction};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The minor version the protocol notes describe; package.json pins `0.22.x`.
const SDK_VERSION_PREFIX: &str = "0.22.";
/// The oldest Node.js the SDK's code runs on: it calls the global `crypto.randomUUID()`
/// without importing it, and that global exists by default only from Node 19 on.
const MIN_NODE_MAJOR: u32 = 20;
/// How long the script may take to connect, register and print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the script's own calls may take, in all.
const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a single call from the Rust side may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the script may take to shut down once its stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bounds for the one-time set-up.
const NPM_TIMEOUT: Duration = Duration::from_secs(600);
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------
// Skipping

/// Reports a missing prerequisite: a `SKIPPED:` line locally, a failure in CI.
fn unavailable(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and the Node SDK environment is unavailable: {reason}");
    }
    // One clear line first; any detail (a tool's output) after it.
    let (head, detail) = reason.split_once('\n').unwrap_or((reason, ""));
    println!("SKIPPED: {head}");
    if !detail.is_empty() {
        println!("{detail}");
    }
}

// ---------------------------------------------------------------------------
// One-time environment set-up

fn tests_node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("node")
}

fn envs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("sdk-envs")
}

fn node_env_dir() -> PathBuf {
    envs_dir().join("node")
}

/// The file whose content says the environment is complete, and for what.
fn ready_marker() -> PathBuf {
    node_env_dir().join(".quorum-sdk-ready")
}

fn installed_sdk_version() -> Option<String> {
    let text = fs::read_to_string(
        node_env_dir()
            .join("node_modules")
            .join("iii-sdk")
            .join("package.json"),
    )
    .ok()?;
    let manifest: Value = serde_json::from_str(&text).ok()?;
    manifest["version"].as_str().map(str::to_string)
}

/// Ready when the environment was installed from the current package.json.
fn env_is_ready(wanted: &str) -> bool {
    fs::read_to_string(ready_marker()).is_ok_and(|m| m == wanted)
        && installed_sdk_version().is_some_and(|v| v.starts_with(SDK_VERSION_PREFIX))
}

/// The environment directory, installing it first if needed. Cached for this process.
fn node_env() -> Result<PathBuf, String> {
    static ENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ENV.get_or_init(prepare_node_env).clone()
}

fn prepare_node_env() -> Result<PathBuf, String> {
    let version = run_bounded(
        Command::new("node").arg("--version"),
        Duration::from_secs(30),
        None,
    )
    .map_err(|e| format!("node is not usable: {e}"))?;
    let major = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| format!("cannot read the node version from {version:?}"))?;
    if major < MIN_NODE_MAJOR {
        return Err(format!(
            "node {} is too old: the iii-sdk needs {MIN_NODE_MAJOR} or newer",
            version.trim()
        ));
    }
    let package_json = fs::read_to_string(tests_node_dir().join("package.json"))
        .map_err(|e| format!("read tests/node/package.json: {e}"))?;
    if env_is_ready(&package_json) {
        return Ok(node_env_dir());
    }
    run_bounded(
        Command::new("npm").arg("--version"),
        Duration::from_secs(60),
        None,
    )
    .map_err(|e| format!("npm is not usable: {e}"))?;
    fs::create_dir_all(envs_dir()).map_err(|e| format!("create {:?}: {e}", envs_dir()))?;
    let _lock = DirLock::acquire(&envs_dir().join("node.lock"), LOCK_TIMEOUT)?;
    // Another process may have finished the set-up while we waited for the lock.
    if env_is_ready(&package_json) {
        return Ok(node_env_dir());
    }
    let log = envs_dir().join("node-setup.log");
    let _ = fs::remove_file(&log);
    let dir = node_env_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("remove stale {dir:?}: {e}"))?;
    }
    fs::create_dir_all(&dir).map_err(|e| format!("create {dir:?}: {e}"))?;
    fs::write(dir.join("package.json"), &package_json)
        .map_err(|e| format!("write package.json: {e}"))?;
    println!("setting up {dir:?} with node {}", version.trim());
    run_bounded(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .current_dir(&dir),
        NPM_TIMEOUT,
        Some(&log),
    )
    .map_err(|e| format!("`npm install` of tests/node/package.json failed: {e}"))?;
    match installed_sdk_version() {
        Some(v) if v.starts_with(SDK_VERSION_PREFIX) => {}
        other => {
            return Err(format!(
                "npm installed iii-sdk {other:?}, wanted {SDK_VERSION_PREFIX}x"
            ))
        }
    }
    fs::write(ready_marker(), &package_json).map_err(|e| format!("write marker: {e}"))?;
    Ok(dir)
}

/// Runs a command to completion within `timeout` (killed by PID past it). Its output
/// goes to `log` when given (and the log's tail is returned on failure), otherwise it
/// is captured; returns stdout.
fn run_bounded(
    command: &mut Command,
    timeout: Duration,
    log: Option<&Path>,
) -> Result<String, String> {
    let shown = format!("{command:?}");
    let tmp = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    let (out_path, append) = match log {
        Some(path) => (path.to_path_buf(), true),
        None => (tmp.path().to_path_buf(), false),
    };
    let out = fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .open(&out_path)
        .map_err(|e| format!("open {out_path:?}: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("dup log: {e}"))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let status = wait_bounded(child, timeout).map_err(|e| format!("{shown}: {e}"))?;
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    if status.success() {
        Ok(text)
    } else {
        let tail: String = {
            let chars: Vec<char> = text.chars().collect();
            chars[chars.len().saturating_sub(3000)..].iter().collect()
        };
        Err(format!("{shown} exited with {status}; output:\n{tail}"))
    }
}

/// Waits for a child on a helper thread; kills it by PID if it outlives `timeout`.
fn wait_bounded(mut child: Child, timeout: Duration) -> Result<ExitStatus, String> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => status.map_err(|e| format!("wait: {e}")),
        Err(_) => {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            let _ = rx.recv_timeout(Duration::from_secs(10));
            Err(format!("timed out after {timeout:?} and was killed"))
        }
    }
}

/// A lock held as a directory: `mkdir` is atomic, so exactly one process creates it.
/// It records its owner's PID; a lock whose owner is gone is taken over.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path, timeout: Duration) -> Result<DirLock, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match fs::create_dir(path) {
                Ok(()) => {
                    let _ = fs::write(path.join("pid"), std::process::id().to_string());
                    return Ok(DirLock(path.to_path_buf()));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if lock_is_stale(path) {
                        let _ = fs::remove_dir_all(path);
                        continue;
                    }
                }
                Err(e) => return Err(format!("create lock {path:?}: {e}")),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for lock {path:?}"
                ));
            }
            // Another process holds the lock and gives no signal when it lets go.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Stale: its owner PID is gone, or it has had no owner for a minute.
fn lock_is_stale(path: &Path) -> bool {
    match fs::read_to_string(path.join("pid")) {
        Ok(pid) => match pid.trim().parse::<u32>() {
            Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        },
        Err(_) => fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60)),
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The script process

/// A running `smoke.mjs`: killed by PID on drop, whatever happened.
struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: tempfile::NamedTempFile,
}

impl Script {
    fn spawn(env_dir: &Path, env: &[(&str, &str)]) -> Script {
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        let mut command = Command::new("node");
        command
            .arg(tests_node_dir().join("smoke.mjs"))
            .env("III_SDK_ENV", env_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("stderr handle"));
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start smoke.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Script {
            child,
            stdin,
            lines,
            stderr,
        }
    }

    fn stderr_text(&self) -> String {
        let mut text = String::new();
        let _ = self
            .stderr
            .reopen()
            .and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// The JSON after the next `TAG ` line; other stdout lines (the SDK's own
    /// `[OTel]`/`[iii]` messages go there) are shown and skipped.
    async fn expect(&mut self, tag: &str, timeout: Duration) -> Value {
        let prefix = format!("{tag} ");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(&prefix) {
                        return serde_json::from_str(rest)
                            .unwrap_or_else(|e| panic!("{tag} line is not JSON ({e}): {line}"));
                    }
                    println!("smoke.mjs stdout: {line}");
                }
                Ok(None) => panic!(
                    "smoke.mjs ended before printing {tag}; stderr:\n{}",
                    self.stderr_text()
                ),
                Err(_) => panic!(
                    "smoke.mjs printed no {tag} within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }

    /// Closes stdin (the script's signal to shut down) and waits for a clean exit.
    async fn finish(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        self.expect("DONE", EXIT_TIMEOUT).await;
        // stdout closes when the process exits.
        let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {}
        self.child.wait().expect("wait smoke.mjs")
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The Rust side

/// A Rust SDK worker serving `rust::greet` (sync; fails on `{"fail":true}`) and
/// `rust::sink` (reports every input on the returned channel).
async fn rust_peer(url: &str, name: &str) -> (IIIClient, mpsc::UnboundedReceiver<Value>) {
    let client = worker(url, name, None).await;
    client.register_function(
        "rust::greet",
        RegisterFunction::new_async(|input: Value| async move {
            if input["fail"] == json!(true) {
                return Err(Error::Remote {
                    code: "greet_refused".into(),
                    message: "told to fail".into(),
                    stacktrace: None,
                });
            }
            let name = input["name"].as_str().unwrap_or("?").to_string();
            Ok::<Value, Error>(json!({
                "greeting": format!("hello {name}"),
                "token": input["token"],
                "by": "rust",
            }))
        }),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    client.register_function(
        "rust::sink",
        RegisterFunction::new_async(move |input: Value| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(input);
                Ok::<Value, Error>(Value::Null)
            }
        }),
    );
    wait_function(&client, "rust::greet", true).await;
    wait_function(&client, "rust::sink", true).await;
    (client, rx)
}

async fn call_bounded(
    client: &IIIClient,
    function_id: &str,
    payload: Value,
) -> Result<Value, Error> {
    tokio::time::timeout(CALL_TIMEOUT, call(client, function_id, payload))
        .await
        .unwrap_or_else(|_| panic!("{function_id} did not answer within {CALL_TIMEOUT:?}"))
}

// ---------------------------------------------------------------------------
// Test

/// Node calls Rust (sync and void), itself, the discovery list and an unknown id;
/// Rust calls Node and sees it in the worker list; the Node worker's function goes
/// away when it disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_worker_interoperates_with_rust_worker() {
    let env_dir = match tokio::task::spawn_blocking(node_env)
        .await
        .expect("set-up task")
    {
        Ok(dir) => dir,
        Err(reason) => {
            unavailable(&reason);
            return;
        }
    };
    let started = Instant::now();
    let node = Node::start();
    let rust_name = unique_name("rust-peer");
    let (rust, mut sink) = rust_peer(&node.url, &rust_name).await;

    let node_name = unique_name("node-worker");
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut script = Script::spawn(
        &env_dir,
        &[
            ("III_URL", node.url.as_str()),
            ("NODE_WORKER_NAME", node_name.as_str()),
            ("RUST_GREET", "rust::greet"),
            ("RUST_SINK", "rust::sink"),
            ("RUN_TOKEN", token.as_str()),
        ],
    );
    let ready = script.expect("READY", READY_TIMEOUT).await;
    let sdk_version = ready["sdk_version"].as_str().unwrap_or("").to_string();
    assert!(sdk_version.starts_with(SDK_VERSION_PREFIX), "{ready}");

    // Rust → Node, through the engine.
    let echoed = call_bounded(&rust, "node::echo", json!({"text": token, "n": 7}))
        .await
        .expect("node::echo from Rust");
    assert_eq!(echoed["marker"], "node-iii-sdk", "{echoed}");
    assert_eq!(echoed["echo"]["text"], json!(token), "{echoed}");
    assert_eq!(echoed["echo"]["n"], 7, "{echoed}");
    let echoed = call_bounded(&rust, "node::echo", json!(["a", 1, null]))
        .await
        .expect("node::echo of an array");
    assert_eq!(echoed["echo"], json!(["a", 1, null]), "{echoed}");

    // The Node worker as the engine lists it.
    let listed = call_bounded(&rust, "engine::workers::list", json!({}))
        .await
        .expect("engine::workers::list");
    let row = listed["workers"]
        .as_array()
        .expect("workers array")
        .iter()
        .find(|row| row["name"] == json!(node_name))
        .cloned()
        .unwrap_or_else(|| panic!("no worker named {node_name} in {listed}"));
    assert_eq!(row["runtime"], "node", "{row}");
    assert_eq!(row["version"], json!(sdk_version), "{row}");
    assert_eq!(row["namespace"], "default", "{row}");
    assert!(
        row["functions"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("node::echo"))),
        "{row}"
    );

    // What the Node side saw.
    let result = script.expect("RESULT", RESULT_TIMEOUT).await;
    println!("node results: {result}");
    assert!(result.get("exception").is_none(), "node failed: {result:#}");
    assert_eq!(
        result["greet"],
        json!({"greeting": "hello node", "token": token, "by": "rust"}),
        "{result}"
    );
    assert_eq!(result["void_returned"], Value::Null, "{result}");
    let sunk = tokio::time::timeout(CALL_TIMEOUT, sink.recv())
        .await
        .expect("the void call reached rust::sink in time")
        .expect("sink open");
    assert_eq!(sunk["from"], "node", "{sunk}");
    assert_eq!(sunk["token"], json!(token), "{sunk}");
    assert_eq!(result["self_call"]["marker"], "node-iii-sdk", "{result}");
    assert_eq!(
        result["self_call"]["echo"]["self"],
        json!(token),
        "{result}"
    );

    let functions = result["functions"].as_array().expect("functions");
    let owner = |id: &str| {
        functions
            .iter()
            .find(|row| row["function_id"] == json!(id))
            .unwrap_or_else(|| panic!("{id} missing from node's list: {result}"))
            .clone()
    };
    assert_eq!(
        owner("rust::greet"),
        json!({"function_id": "rust::greet", "namespace": "default", "worker_name": rust_name})
    );
    assert_eq!(
        owner("node::echo"),
        json!({"function_id": "node::echo", "namespace": "default", "worker_name": node_name})
    );

    let missing_id = format!("node::missing_{token}");
    assert_eq!(
        result["missing"],
        json!({
            "code": "function_not_found",
            // Node's InvocationError puts the code in front of the engine's message.
            "message": format!("function_not_found: Function {missing_id} not found in namespace default."),
            "function_id": missing_id,
            "is_invocation_error": true,
        }),
        "{result}"
    );
    assert_eq!(
        result["rust_error"],
        json!({"code": "greet_refused", "message": "greet_refused: told to fail"}),
        "{result}"
    );

    // A clean shutdown, after which the engine drops the Node worker's function.
    let status = script.finish().await;
    assert!(
        status.success(),
        "smoke.mjs exited with {status}; stderr:\n{}",
        script.stderr_text()
    );
    wait_function(&rust, "node::echo", false).await;
    println!("node round trip took {:?}", started.elapsed());
}
