//! A foreign-language test script as a child process speaking a line protocol: it
//! prints `TAG {json}` lines on stdout, shuts down when its stdin closes and prints
//! `DONE {json}` on the way out. Its stderr goes to a temp file shown on failure; the
//! process is killed by PID when the handle drops, whatever happened.
//!
//! Also the Rust side of the round trip the SDK scripts share: a Rust peer they
//! call, bounded calls into them, and the checks on what every script reports alike.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use iii_sdk::{Error, IIIClient, RegisterFunction};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{call, unique_name, wait_function, worker, Node};

/// How long a script may take to connect, register and print `READY`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a script's own calls may take, in all, before it prints `RESULT`.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the script may take to shut down once its stdin is closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A running script process, so tests read its tagged output with deadlines and
/// never leave it behind.
pub struct Script {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: tempfile::NamedTempFile,
}

impl Script {
    /// Starts `program args…` with `env` added, stdin piped; `name` (such as
    /// `worker.py`) is how messages refer to it.
    pub fn spawn(
        name: &str,
        program: impl AsRef<OsStr>,
        args: &[&dyn AsRef<OsStr>],
        env: &[(&str, &dyn AsRef<OsStr>)],
    ) -> Script {
        let stderr = tempfile::NamedTempFile::new().expect("stderr file");
        let mut command = Command::new(program);
        for arg in args {
            command.arg(arg);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().expect("stderr handle"));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e:?}"));
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
            name: name.to_string(),
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The script's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the script wrote to stderr so far, for failure messages.
    pub fn stderr_text(&self) -> String {
        let mut text = String::new();
        let _ = self
            .stderr
            .reopen()
            .and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// The JSON after the next `TAG ` line, so a test can wait for one step of the
    /// script; other stdout lines (an SDK's own messages) are shown and skipped.
    pub async fn expect(&mut self, tag: &str, timeout: Duration) -> Value {
        let name = &self.name;
        let prefix = format!("{tag} ");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(&prefix) {
                        return serde_json::from_str(rest)
                            .unwrap_or_else(|e| panic!("{tag} line is not JSON ({e}): {line}"));
                    }
                    println!("{name} stdout: {line}");
                }
                Ok(None) => panic!(
                    "{name} ended before printing {tag}; stderr:\n{}",
                    self.stderr_text()
                ),
                Err(_) => panic!(
                    "{name} printed no {tag} within {timeout:?}; stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }

    /// Closes stdin (the script's signal to shut down) and waits for `DONE` and the
    /// exit, so a test can check the script shut down cleanly; also returns what `DONE` said.
    pub async fn finish(&mut self) -> (ExitStatus, Value) {
        drop(self.stdin.take());
        let done = self.expect("DONE", EXIT_TIMEOUT).await;
        // stdout closes when the process exits.
        let deadline = tokio::time::Instant::now() + EXIT_TIMEOUT;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {}
        let name = &self.name;
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("wait {name}: {e:?}"));
        (status, done)
    }

    /// Finishes the script and asserts it exited successfully, showing its stderr
    /// otherwise; returns what its `DONE` line said.
    pub async fn finish_cleanly(&mut self) -> Value {
        let (status, done) = self.finish().await;
        assert!(
            status.success(),
            "{} exited with {status}; stderr:\n{}",
            self.name,
            self.stderr_text()
        );
        done
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The Rust side of the round trip

/// How long a single call from the Rust side may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The Rust peer every round-trip script calls: a Rust SDK worker serving `rust::greet` (sync; fails on `{"fail":true}`) and
/// `rust::sink` (reports every input on the returned channel).
pub async fn rust_peer(url: &str, name: &str) -> (IIIClient, mpsc::UnboundedReceiver<Value>) {
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

/// A call from the Rust side that fails the test instead of hanging.
pub async fn call_bounded(
    client: &IIIClient,
    function_id: &str,
    payload: Value,
) -> Result<Value, Error> {
    tokio::time::timeout(CALL_TIMEOUT, call(client, function_id, payload))
        .await
        .unwrap_or_else(|_| panic!("{function_id} did not answer within {CALL_TIMEOUT:?}"))
}

/// What a round-trip test sets up before its script starts: a node, the Rust peer,
/// the script worker's name and the run's token, so each test only adds its SDK.
pub struct RoundTrip {
    /// When set-up began, for the timing line at the end.
    pub started: Instant,
    /// The Rust peer's client, which the script calls and the test calls through.
    pub rust: IIIClient,
    /// The Rust peer's worker name, as the script's discovery list should show it.
    pub rust_name: String,
    /// Every input of `rust::sink`, to see the script's void call arrive.
    pub sink: mpsc::UnboundedReceiver<Value>,
    /// The name the script's worker registers under.
    pub worker_name: String,
    /// A value unique to this run, so echoes cannot come from elsewhere.
    pub token: String,
    /// The node under test; last, so it outlives the clients when dropped.
    pub node: Node,
}

impl RoundTrip {
    /// Starts a node and the Rust peer, and names the script's worker after `prefix`.
    pub async fn start(prefix: &str) -> RoundTrip {
        let started = Instant::now();
        let node = Node::start();
        let rust_name = unique_name("rust-peer");
        let (rust, sink) = rust_peer(&node.url, &rust_name).await;
        RoundTrip {
            started,
            rust,
            rust_name,
            sink,
            worker_name: unique_name(prefix),
            token: uuid::Uuid::new_v4().simple().to_string(),
            node,
        }
    }

    /// The environment every round-trip script reads, with its worker name under
    /// `name_var`.
    pub fn env<'a>(&'a self, name_var: &'a str) -> Vec<(&'a str, &'a dyn AsRef<OsStr>)> {
        vec![
            ("III_URL", &self.node.url),
            (name_var, &self.worker_name),
            ("RUST_GREET", &"rust::greet"),
            ("RUST_SINK", &"rust::sink"),
            ("RUN_TOKEN", &self.token),
        ]
    }

    /// Checks the script's `missing` report (its call of an unknown id) against
    /// `missing` and its view of the Rust peer's refusal against `refusal`.
    pub fn check_errors(&self, result: &Value, missing: Value, refusal: &str) {
        assert_eq!(result["missing"], missing, "{result}");
        assert_eq!(
            result["rust_error"],
            json!({"code": "greet_refused", "message": refusal}),
            "{result}"
        );
    }

    /// Shuts the script down cleanly, then waits for the engine to drop its `echo_id`.
    pub async fn end(&self, script: &mut Script, echo_id: &str, lang: &str) {
        script.finish_cleanly().await;
        wait_function(&self.rust, echo_id, false).await;
        println!("{lang} round trip took {:?}", self.started.elapsed());
    }
}

/// The `engine::workers::list` row of the worker called `name`, to check how the
/// engine sees a script's worker.
pub async fn worker_row(client: &IIIClient, name: &str) -> Value {
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

/// Calls the script's `echo_id` from Rust with `{"text": token, "n": 7}` and checks
/// the echo and the script's `marker`, the first thing every round trip proves.
pub async fn check_echo(rust: &IIIClient, echo_id: &str, marker: &str, token: &str) {
    let echoed = call_bounded(rust, echo_id, json!({"text": token, "n": 7}))
        .await
        .unwrap_or_else(|e| panic!("{echo_id} from Rust: {e:?}"));
    assert_eq!(echoed["marker"], marker, "{echoed}");
    assert_eq!(echoed["echo"]["text"], json!(token), "{echoed}");
    assert_eq!(echoed["echo"]["n"], 7, "{echoed}");
}

/// Checks the worker-list fields every SDK fills alike: runtime, version, the
/// default namespace and the script's `echo_id` among its functions.
pub fn check_row(row: &Value, runtime: &str, version: &str, echo_id: &str) {
    assert_eq!(row["runtime"], runtime, "{row}");
    assert_eq!(row["version"], version, "{row}");
    assert_eq!(row["namespace"], "default", "{row}");
    assert!(
        row["functions"]
            .as_array()
            .is_some_and(|f| f.contains(&json!(echo_id))),
        "{row}"
    );
}

/// Checks the parts of a round-trip `RESULT` every SDK reports alike: no exception,
/// the sync and void calls into the Rust peer (the void one seen on `sink`) and the
/// self call through the engine. `lang` is how the script names itself.
pub async fn check_result(
    result: &Value,
    lang: &str,
    marker: &str,
    token: &str,
    sink: &mut mpsc::UnboundedReceiver<Value>,
) {
    println!("{lang} results: {result}");
    assert!(
        result.get("exception").is_none(),
        "{lang} failed: {result:#}"
    );
    assert_eq!(
        result["greet"],
        json!({"greeting": format!("hello {lang}"), "token": token, "by": "rust"}),
        "{result}"
    );
    assert_eq!(result["void_returned"], Value::Null, "{result}");
    let sunk = tokio::time::timeout(CALL_TIMEOUT, sink.recv())
        .await
        .expect("the void call reached rust::sink in time")
        .expect("sink open");
    assert_eq!(sunk["from"], lang, "{sunk}");
    assert_eq!(sunk["token"], json!(token), "{sunk}");
    assert_eq!(result["self_call"]["marker"], marker, "{result}");
    assert_eq!(
        result["self_call"]["echo"]["self"],
        json!(token),
        "{result}"
    );
}

/// Checks that the script's discovery list in `result` shows `function_id` owned by
/// `worker_name` in the default namespace.
pub fn check_owner(result: &Value, lang: &str, function_id: &str, worker_name: &str) {
    let row = result["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .find(|row| row["function_id"] == json!(function_id))
        .unwrap_or_else(|| panic!("{function_id} missing from {lang}'s list: {result}"));
    assert_eq!(
        row,
        &json!({"function_id": function_id, "namespace": "default", "worker_name": worker_name})
    );
}
