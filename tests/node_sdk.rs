//! Cross-language smoke test: the published npm `iii-sdk` 0.22.x against a real quorum
//! node, next to a real Rust SDK worker.
//!
//! The SDK is installed once with npm into `target/sdk-envs/node`, from
//! `tests/node/package.json` (guarded by a `OnceLock` inside this binary and by an
//! atomic `mkdir` lock across processes). `tests/node/smoke.mjs` loads it from there.
//! Without `node`/`npm` or without the package registry the test prints
//! `SKIPPED: <reason>` and passes, unless `CI=true`, where it fails with the reason.

mod common;

use common::script::{
    call_bounded, check_echo, check_owner, check_result, check_row, worker_row, RoundTrip, Script,
    READY_TIMEOUT, RESULT_TIMEOUT,
};
use common::sdk_env::{env_or_skip, EnvCell};
use common::sdks::{prepare_node_env, tests_node_dir, SDK_VERSION_PREFIX};
use common::{unique_name, worker_token_args, Node, NodeOptions};
use serde_json::json;

/// The environment directory once set up, or why not; prepared once per process.
static NODE_ENV: EnvCell = EnvCell::new();

// ---------------------------------------------------------------------------
// Test

/// Node calls Rust (sync and void), itself, the discovery list and an unknown id;
/// Rust calls Node and sees it in the worker list; the Node worker's function goes
/// away when it disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_worker_interoperates_with_rust_worker() {
    let Some(env_dir) = env_or_skip("Node", &NODE_ENV, prepare_node_env).await else {
        return;
    };
    let mut rt = RoundTrip::start("node-worker").await;
    let (rust, token) = (&rt.rust, rt.token.as_str());
    let mut env = rt.env("NODE_WORKER_NAME");
    env.insert(0, ("III_SDK_ENV", &env_dir));
    let mut script = Script::spawn(
        "smoke.mjs",
        "node",
        &[&tests_node_dir().join("smoke.mjs")],
        &env,
    );
    let ready = script.expect("READY", READY_TIMEOUT).await;
    let sdk_version = ready["sdk_version"].as_str().unwrap_or("").to_string();
    assert!(sdk_version.starts_with(SDK_VERSION_PREFIX), "{ready}");

    // Rust → Node, through the engine.
    check_echo(rust, "node::echo", "node-iii-sdk", token).await;
    let echoed = call_bounded(rust, "node::echo", json!(["a", 1, null]))
        .await
        .expect("node::echo of an array");
    assert_eq!(echoed["echo"], json!(["a", 1, null]), "{echoed}");

    // The Node worker as the engine lists it.
    let row = worker_row(rust, &rt.worker_name).await;
    check_row(&row, "node", &sdk_version, "node::echo");

    // What the Node side saw.
    let result = script.expect("RESULT", RESULT_TIMEOUT).await;
    check_result(&result, "node", "node-iii-sdk", token, &mut rt.sink).await;
    check_owner(&result, "node", "rust::greet", &rt.rust_name);
    check_owner(&result, "node", "node::echo", &rt.worker_name);

    let missing_id = format!("node::missing_{}", rt.token);
    rt.check_errors(
        &result,
        json!({
            "code": "function_not_found",
            // Node's InvocationError puts the code in front of the engine's message.
            "message": format!("function_not_found: Function {missing_id} not found in namespace default."),
            "function_id": missing_id,
            "is_invocation_error": true,
        }),
        "greet_refused: told to fail",
    );

    // A clean shutdown, after which the engine drops the Node worker's function.
    rt.end(&mut script, "node::echo", "node").await;
}

/// With `--worker-auth token`, the Node SDK presents a token through its `headers` option,
/// connects and calls; without a token it never gets a connection, so its call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_connects_with_a_token_header_and_not_without() {
    let Some(env_dir) = env_or_skip("Node", &NODE_ENV, prepare_node_env).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let options = NodeOptions {
        args: worker_token_args(dir.path(), "node-token"),
        ..NodeOptions::default()
    };
    let node = Node::start_in(&dir.path().join("node"), options);
    let script = tests_node_dir().join("token_worker.mjs");
    for (token, connects) in [(Some("node-token"), true), (None, false)] {
        let name = unique_name("node-token");
        let mut env: Vec<(&str, &dyn AsRef<std::ffi::OsStr>)> = vec![
            ("III_SDK_ENV", &env_dir),
            ("III_URL", &node.url),
            ("NODE_WORKER_NAME", &name),
        ];
        if let Some(token) = &token {
            env.push(("WORKER_TOKEN", token));
        }
        let mut worker = Script::spawn("token_worker.mjs", "node", &[&script], &env);
        let result = worker.expect("RESULT", RESULT_TIMEOUT).await;
        assert_eq!(result["ok"], connects, "token {token:?}: {result}");
        drop(worker);
    }
}
