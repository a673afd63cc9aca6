//! Cross-language compatibility: the published PyPI `iii-sdk` 0.25.0 against a real
//! quorum node, next to a real Rust SDK worker.
//!
//! The SDK is installed once into a virtual environment at `target/sdk-envs/python`
//! (guarded by a `OnceLock` inside this binary and by an atomic `mkdir` lock across
//! processes). `tests/python/worker.py` runs in that environment. Without `python3`
//! (and its `venv` module) or without the package registry the tests print
//! `SKIPPED: <reason>` and pass, unless `CI=true`, where they fail with the reason.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::script::{
    call_bounded, check_echo, check_owner, check_result, check_row, worker_row, RoundTrip, Script,
    READY_TIMEOUT, RESULT_TIMEOUT,
};
use common::sdk_env::{env_or_skip, EnvCell};
use common::sdks::{prepare_python_env, SDK_VERSION};
use common::{unique_name, wait_function, worker, worker_token_args, Node, NodeOptions};
use iii_sdk::Error;
use serde_json::json;

/// The venv's python once set up, or why not; prepared once per process.
static PYTHON_ENV: EnvCell = EnvCell::new();

// ---------------------------------------------------------------------------
// The Rust side

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
    env_or_skip("Python", &PYTHON_ENV, prepare_python_env).await
}

/// Starts `tests/python/worker.py` in `mode` with the venv's `python`.
fn spawn_worker(python: &Path, mode: &str, env: &[(&str, &dyn AsRef<OsStr>)]) -> Script {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/worker.py");
    let mut full_env: Vec<(&str, &dyn AsRef<OsStr>)> = vec![("PYTHONUNBUFFERED", &"1")];
    full_env.extend_from_slice(env);
    Script::spawn("worker.py", python, &[&script, &mode], &full_env)
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
    let mut rt = RoundTrip::start("py-worker").await;
    let (rust, token) = (&rt.rust, rt.token.as_str());
    let mut script = spawn_worker(&python, "roundtrip", &rt.env("PY_WORKER_NAME"));
    let ready = script.expect("READY", READY_TIMEOUT).await;
    let py_worker_id = ready["worker_id"].as_str().expect("worker_id").to_string();
    assert!(uuid::Uuid::parse_str(&py_worker_id).is_ok(), "{ready}");

    // Rust → Python, through the engine.
    check_echo(rust, "py::echo", "python-iii-sdk", token).await;

    // The Python worker as the engine lists it.
    wait_function(rust, "py::echo", true).await;
    let row = worker_row(rust, &rt.worker_name).await;
    assert_eq!(row["id"], json!(py_worker_id), "{row}");
    check_row(&row, "python", SDK_VERSION, "py::echo");
    assert!(
        ["available", "busy", "connected"].contains(&row["status"].as_str().unwrap_or("")),
        "{row}"
    );

    // What the Python side saw.
    let result = script.expect("RESULT", RESULT_TIMEOUT).await;
    check_result(&result, "python", "python-iii-sdk", token, &mut rt.sink).await;
    check_owner(&result, "python", "rust::greet", &rt.rust_name);
    check_owner(&result, "python", "rust::sink", &rt.rust_name);
    check_owner(&result, "python", "py::echo", &rt.worker_name);

    let missing_id = format!("py::missing_{}", rt.token);
    rt.check_errors(
        &result,
        json!({
            "code": "function_not_found",
            "message": format!("Function {missing_id} not found in namespace default."),
            "function_id": missing_id,
        }),
        "told to fail",
    );

    // A clean shutdown, after which the engine drops the Python worker's function.
    rt.end(&mut script, "py::echo", "python").await;
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
    let mut script = spawn_worker(
        &python,
        "serve",
        &[("III_URL", &node.url), ("PY_WORKER_NAME", &py_name)],
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

    script.finish_cleanly().await;
    wait_function(&rust, "py::echo", false).await;
    println!("python handler checks took {:?}", started.elapsed());
}

/// With `--worker-auth token`, the Python SDK presents `III_TOKEN` as a bearer token, connects
/// and calls; without a token it never gets a connection, so its call fails.
#[tokio::test]
async fn python_sdk_connects_with_iii_token_and_not_without() {
    let Some(python) = python_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let options = NodeOptions {
        args: worker_token_args(dir.path(), "python-token"),
        ..NodeOptions::default()
    };
    let node = Node::start_in(&dir.path().join("node"), options);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/token_worker.py");
    for (token, connects) in [(Some("python-token"), true), (None, false)] {
        let name = unique_name("py-token");
        let mut env: Vec<(&str, &dyn AsRef<OsStr>)> = vec![
            ("PYTHONUNBUFFERED", &"1"),
            ("III_URL", &node.url),
            ("PY_WORKER_NAME", &name),
        ];
        if let Some(token) = &token {
            env.push(("III_TOKEN", token));
        }
        let mut worker = Script::spawn("token_worker.py", &python, &[&script], &env);
        let result = worker.expect("RESULT", RESULT_TIMEOUT).await;
        assert_eq!(result["ok"], connects, "token {token:?}: {result}");
        drop(worker);
    }
}
