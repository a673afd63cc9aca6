//! Cross-language compatibility: the published PyPI `iii-sdk` 0.25.0 against a real
//! quorum node, next to a real Rust SDK worker.
//!
//! The SDK is installed once into a virtual environment at `target/sdk-envs/python`
//! (guarded by a `OnceLock` inside this binary and by an atomic `mkdir` lock across
//! processes). `tests/python/worker.py` runs in that environment. Without `python3`
//! (and its `venv` module) or without the package registry the tests print
//! `SKIPPED: <reason>` and pass, unless `CI=true`, where they fail with the reason.

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

const SDK_REQUIREMENT: &str = "iii-sdk==0.25.0";
const SDK_VERSION: &str = "0.25.0";
/// How long the script may take to connect, register and print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the script's own calls may take, in all.
const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a single call from the Rust side may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the script may take to shut down once its stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bounds for the one-time set-up.
const VENV_TIMEOUT: Duration = Duration::from_secs(120);
const PIP_TIMEOUT: Duration = Duration::from_secs(600);
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------
// Skipping

/// Reports a missing prerequisite: a `SKIPPED:` line locally, a failure in CI.
fn unavailable(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and the Python SDK environment is unavailable: {reason}");
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

fn envs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("sdk-envs")
}

fn venv_dir() -> PathBuf {
    envs_dir().join("python")
}

fn venv_python() -> PathBuf {
    venv_dir().join("bin").join("python")
}

/// The file whose content says the environment is complete, and for what.
fn ready_marker() -> PathBuf {
    venv_dir().join(".quorum-sdk-ready")
}

fn env_is_ready() -> bool {
    venv_python().exists()
        && fs::read_to_string(ready_marker()).is_ok_and(|m| m.trim() == SDK_REQUIREMENT)
}

/// The venv's python, installing it first if needed. Cached for this process.
fn python_env() -> Result<PathBuf, String> {
    static ENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ENV.get_or_init(prepare_python_env).clone()
}

fn prepare_python_env() -> Result<PathBuf, String> {
    let version = run_bounded(
        Command::new("python3").arg("--version"),
        Duration::from_secs(30),
        None,
    )
    .map_err(|e| format!("python3 is not usable: {e}"))?;
    if env_is_ready() {
        return Ok(venv_python());
    }
    fs::create_dir_all(envs_dir()).map_err(|e| format!("create {:?}: {e}", envs_dir()))?;
    let _lock = DirLock::acquire(&envs_dir().join("python.lock"), LOCK_TIMEOUT)?;
    // Another process may have finished the set-up while we waited for the lock.
    if env_is_ready() {
        return Ok(venv_python());
    }
    let log = envs_dir().join("python-setup.log");
    let _ = fs::remove_file(&log);
    let dir = venv_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("remove stale {dir:?}: {e}"))?;
    }
    println!(
        "setting up {dir:?} with {} ({SDK_REQUIREMENT})",
        version.trim()
    );
    run_bounded(
        Command::new("python3").arg("-m").arg("venv").arg(&dir),
        VENV_TIMEOUT,
        Some(&log),
    )
    .map_err(|e| format!("`python3 -m venv` failed (is python3-venv installed?): {e}"))?;
    run_bounded(
        Command::new(venv_python())
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .arg(SDK_REQUIREMENT),
        PIP_TIMEOUT,
        Some(&log),
    )
    .map_err(|e| format!("`pip install {SDK_REQUIREMENT}` failed: {e}"))?;
    let installed = run_bounded(
        Command::new(venv_python()).args([
            "-c",
            "import iii, importlib.metadata as m; print(m.version('iii-sdk'))",
        ]),
        Duration::from_secs(60),
        None,
    )
    .map_err(|e| format!("the installed iii-sdk does not import: {e}"))?;
    // The version is the last line printed (anything before it is a warning).
    let installed = installed
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("");
    if installed.trim() != SDK_VERSION {
        return Err(format!(
            "pip installed iii-sdk {}, wanted {SDK_VERSION}",
            installed.trim()
        ));
    }
    fs::write(ready_marker(), SDK_REQUIREMENT).map_err(|e| format!("write marker: {e}"))?;
    Ok(venv_python())
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

/// A running `worker.py`: killed by PID on drop, whatever happened.
struct Script {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: tempfile::NamedTempFile,
}

impl Script {
    fn spawn(python: &Path, mode: &str, env: &[(&str, &str)]) -> Script {
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        let mut command = Command::new(python);
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/worker.py"))
            .arg(mode)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("stderr handle"));
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start worker.py");
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

    /// The JSON after the next `TAG ` line; other stdout lines are skipped.
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
                    println!("worker.py stdout: {line}");
                }
                Ok(None) => panic!(
                    "worker.py ended before printing {tag}; stderr:\n{}",
                    self.stderr_text()
                ),
                Err(_) => panic!(
                    "worker.py printed no {tag} within {timeout:?}; stderr:\n{}",
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
        self.child.wait().expect("wait worker.py")
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

/// The `engine::workers::list` row of the worker called `name`.
async fn worker_row(client: &IIIClient, name: &str) -> Value {
    let listed = call_bounded(client, "engine::workers::list", json!({}))
        .await
        .expect("engine::workers::list");
    listed["workers"]
        .as_array()
        .expect("workers array")
        .iter()
        .find(|row| row["name"] == json!(name))
        .cloned()
        .unwrap_or_else(|| panic!("no worker named {name} in {listed}"))
}

fn remote(err: Error) -> (String, String, Option<String>) {
    match err {
        Error::Remote {
            code,
            message,
            stacktrace,
        } => (code, message, stacktrace),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

async fn python_or_skip() -> Option<PathBuf> {
    match tokio::task::spawn_blocking(python_env)
        .await
        .expect("set-up task")
    {
        Ok(python) => Some(python),
        Err(reason) => {
            unavailable(&reason);
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Tests

/// Python calls Rust (sync and void), itself through the engine, the discovery list
/// and an unknown id; Rust calls Python and sees it in the worker list; the Python
/// worker's function goes away when it disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_worker_interoperates_with_rust_worker() {
    let Some(python) = python_or_skip().await else {
        return;
    };
    let started = Instant::now();
    let node = Node::start();
    let rust_name = unique_name("rust-peer");
    let (rust, mut sink) = rust_peer(&node.url, &rust_name).await;

    let py_name = unique_name("py-worker");
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut script = Script::spawn(
        &python,
        "roundtrip",
        &[
            ("III_URL", node.url.as_str()),
            ("PY_WORKER_NAME", py_name.as_str()),
            ("RUST_GREET", "rust::greet"),
            ("RUST_SINK", "rust::sink"),
            ("RUN_TOKEN", token.as_str()),
        ],
    );
    let ready = script.expect("READY", READY_TIMEOUT).await;
    let py_worker_id = ready["worker_id"].as_str().expect("worker_id").to_string();
    assert!(uuid::Uuid::parse_str(&py_worker_id).is_ok(), "{ready}");

    // Rust → Python, through the engine.
    let echoed = call_bounded(&rust, "py::echo", json!({"text": token, "n": 7}))
        .await
        .expect("py::echo from Rust");
    assert_eq!(echoed["marker"], "python-iii-sdk", "{echoed}");
    assert_eq!(echoed["echo"]["text"], json!(token), "{echoed}");
    assert_eq!(echoed["echo"]["n"], 7, "{echoed}");

    // The Python worker as the engine lists it.
    wait_function(&rust, "py::echo", true).await;
    let row = worker_row(&rust, &py_name).await;
    assert_eq!(row["id"], json!(py_worker_id), "{row}");
    assert_eq!(row["runtime"], "python", "{row}");
    assert_eq!(row["version"], SDK_VERSION, "{row}");
    assert_eq!(row["namespace"], "default", "{row}");
    assert!(
        ["available", "busy", "connected"].contains(&row["status"].as_str().unwrap_or("")),
        "{row}"
    );
    assert!(
        row["functions"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("py::echo"))),
        "{row}"
    );

    // What the Python side saw.
    let result = script.expect("RESULT", RESULT_TIMEOUT).await;
    println!("python results: {result}");
    assert!(
        result.get("exception").is_none(),
        "python failed: {result:#}"
    );

    assert_eq!(
        result["greet"],
        json!({"greeting": "hello python", "token": token, "by": "rust"}),
        "{result}"
    );
    assert_eq!(result["void_returned"], Value::Null, "{result}");
    let sunk = tokio::time::timeout(CALL_TIMEOUT, sink.recv())
        .await
        .expect("the void call reached rust::sink in time")
        .expect("sink open");
    assert_eq!(sunk["from"], "python", "{sunk}");
    assert_eq!(sunk["token"], json!(token), "{sunk}");

    assert_eq!(result["self_call"]["marker"], "python-iii-sdk", "{result}");
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
            .unwrap_or_else(|| panic!("{id} missing from python's list: {result}"))
            .clone()
    };
    assert_eq!(
        owner("rust::greet"),
        json!({"function_id": "rust::greet", "namespace": "default", "worker_name": rust_name})
    );
    assert_eq!(
        owner("rust::sink"),
        json!({"function_id": "rust::sink", "namespace": "default", "worker_name": rust_name})
    );
    assert_eq!(
        owner("py::echo"),
        json!({"function_id": "py::echo", "namespace": "default", "worker_name": py_name})
    );

    let missing_id = format!("py::missing_{token}");
    assert_eq!(
        result["missing"],
        json!({
            "code": "function_not_found",
            "message": format!("Function {missing_id} not found in namespace default."),
            "function_id": missing_id,
        }),
        "{result}"
    );
    assert_eq!(
        result["rust_error"],
        json!({"code": "greet_refused", "message": "told to fail"}),
        "{result}"
    );

    // A clean shutdown, after which the engine drops the Python worker's function.
    let status = script.finish().await;
    assert!(
        status.success(),
        "worker.py exited with {status}; stderr:\n{}",
        script.stderr_text()
    );
    wait_function(&rust, "py::echo", false).await;
    println!("python round trip took {:?}", started.elapsed());
}

/// A Python handler's exception reaches a Rust caller as `invocation_failed` with the
/// message and a stacktrace; payloads that are not objects cross unchanged; many
/// concurrent calls into one Python worker each get their own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_handler_errors_and_payloads_reach_rust_callers() {
    let Some(python) = python_or_skip().await else {
        return;
    };
    let started = Instant::now();
    let node = Node::start();
    let rust = worker(&node.url, &unique_name("rust-caller"), None).await;
    let py_name = unique_name("py-server");
    let mut script = Script::spawn(
        &python,
        "serve",
        &[
            ("III_URL", node.url.as_str()),
            ("PY_WORKER_NAME", py_name.as_str()),
        ],
    );
    script.expect("READY", READY_TIMEOUT).await;
    wait_function(&rust, "py::fail", true).await;

    let (code, message, stacktrace) = remote(
        call_bounded(&rust, "py::fail", json!({"what": "x"}))
            .await
            .expect_err("py::fail must fail"),
    );
    assert_eq!(code, "invocation_failed");
    assert_eq!(message, "python says no to 'x'");
    assert!(
        stacktrace
            .as_deref()
            .is_some_and(|s| s.contains("ValueError")),
        "{stacktrace:?}"
    );

    for payload in [json!([1, "two", null]), json!("plain"), json!(42)] {
        let echoed = call_bounded(&rust, "py::echo", payload.clone())
            .await
            .expect("py::echo");
        assert_eq!(echoed, json!({"echo": payload, "marker": "python-iii-sdk"}));
    }

    let calls = (0..16).map(|i| {
        let rust = &rust;
        async move { (i, call_bounded(rust, "py::echo", json!({"i": i})).await) }
    });
    for (i, answer) in futures_util::future::join_all(calls).await {
        let answer = answer.expect("concurrent py::echo");
        assert_eq!(answer["echo"]["i"], i, "{answer}");
    }

    let status = script.finish().await;
    assert!(
        status.success(),
        "worker.py exited with {status}; stderr:\n{}",
        script.stderr_text()
    );
    wait_function(&rust, "py::echo", false).await;
    println!("python handler checks took {:?}", started.elapsed());
}
