//! `wss://` on the worker port (`--tls-cert`/`--tls-key`): each real SDK connects given the
//! test's CA and registers a function that is then called through the node; plain `ws://`,
//! a stalled handshake and garbage on the TLS port are dropped while the node keeps serving.
//!
//! Every test makes its own CA and a server certificate for `127.0.0.1`/`localhost` with
//! `rcgen`. Clients in this process that only speak `ws://` (the in-process Rust peer of the
//! round trips, the raw client) reach the node through [`TlsRelay`], which dials the node
//! over TLS and verifies its certificate against that CA. The Rust SDK's own `wss://` runs in
//! a child process (this binary again, running [`rust_sdk_over_wss_child`]), because the
//! `SSL_CERT_FILE` it reads is process-wide.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::script::{
    call_bounded, check_echo, check_result, rust_peer, RoundTrip, Script, READY_TIMEOUT,
    RESULT_TIMEOUT,
};
use common::sdk_env::{env_or_skip, run_bounded, EnvCell};
use common::sdks::{prepare_node_env, prepare_python_env, tests_node_dir};
use common::worker_pki::{Pki, TlsRelay};
use common::{unique_name, wait_function, worker, Node, NodeOptions};
use futures_util::{SinkExt, StreamExt};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The gateway's `HANDSHAKE_TIMEOUT`: the TLS handshake and the upgrade together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The child's environment variable carrying the node's `wss://` URL.
const CHILD_URL: &str = "QUORUM_TEST_WSS_URL";

static PYTHON_ENV: EnvCell = EnvCell::new();
static NODE_ENV: EnvCell = EnvCell::new();

// ---------------------------------------------------------------------------
// Certificates, the node and the relay

/// A node whose worker port serves `wss://` with `pki`'s certificate; its `url` is the
/// `wss://` one. Its data lives in `pki`'s directory, which outlives it.
fn tls_node(pki: &Pki) -> Node {
    let options = NodeOptions {
        args: pki.tls_args(),
        ..NodeOptions::default()
    };
    let mut node = Node::start_in(&pki.dir.path().join("node"), options);
    node.url = format!("wss://{}", node.listen);
    node
}

/// A round trip whose script connects to the node with `wss://` while the Rust peer goes
/// through the relay.
async fn wss_round_trip(prefix: &str, pki: &Pki) -> (RoundTrip, TlsRelay) {
    let started = Instant::now();
    let node = tls_node(pki);
    let relay = TlsRelay::start(pki, &node).await;
    let rust_name = unique_name("rust-peer");
    let (rust, sink) = rust_peer(&relay.url, &rust_name).await;
    let rt = RoundTrip {
        started,
        rust,
        rust_name,
        sink,
        worker_name: unique_name(prefix),
        token: uuid::Uuid::new_v4().simple().to_string(),
        node,
    };
    (rt, relay)
}

/// Whether the node closes `stream` (end of file or a reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A TLS alert before the close.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A raw worker through the relay gets its greeting: the node still serves `wss://`.
async fn assert_serving(relay: &TlsRelay) {
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        common::raw::RawClient::connect(&relay.url),
    )
    .await
    .expect("a worker connects over TLS in time");
    assert!(!client.worker_id.is_empty());
}

// ---------------------------------------------------------------------------
// The SDKs

/// The Rust SDK (which reads `SSL_CERT_FILE`) connects with `wss://`, registers a function,
/// and a Rust peer calls it through the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_worker_serves_calls_over_wss() {
    let pki = Pki::new();
    let node = tls_node(&pki);
    let relay = TlsRelay::start(&pki, &node).await;
    let exe = std::env::current_exe().expect("this test binary");
    let ca = pki.ca();
    let mut child = Script::spawn(
        "rust wss worker",
        exe,
        &[
            &"rust_sdk_over_wss_child",
            &"--exact",
            &"--ignored",
            &"--nocapture",
            &"--test-threads=1",
        ],
        &[("SSL_CERT_FILE", &ca), (CHILD_URL, &node.url)],
    );
    let ready = child.expect("READY", READY_TIMEOUT).await;
    let function_id = ready["function_id"]
        .as_str()
        .expect("function_id")
        .to_string();

    let caller = worker(&relay.url, &unique_name("rust-caller"), None).await;
    wait_function(&caller, &function_id, true).await;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let echoed = call_bounded(&caller, &function_id, json!({ "token": token }))
        .await
        .expect("the wss worker answers");
    assert_eq!(echoed["over"], "wss", "{echoed}");
    assert_eq!(echoed["echo"]["token"], json!(token), "{echoed}");

    child.finish_cleanly().await;
    wait_function(&caller, &function_id, false).await;
}

/// Not a test on its own: the Rust SDK side of `rust_sdk_worker_serves_calls_over_wss`, run
/// in a child process with `SSL_CERT_FILE` set for it alone. Prints `READY` once its function
/// is registered, serves until its stdin ends, then prints `DONE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by rust_sdk_worker_serves_calls_over_wss in a child process"]
async fn rust_sdk_over_wss_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    assert!(url.starts_with("wss://"), "{url}");
    let client = worker(&url, &unique_name("rust-wss"), None).await;
    let function_id = format!("rust_wss::echo_{}", uuid::Uuid::new_v4().simple());
    client.register_function(
        function_id.as_str(),
        RegisterFunction::new_async(|input: Value| async move {
            Ok::<Value, Error>(json!({ "echo": input, "over": "wss" }))
        }),
    );
    wait_function(&client, &function_id, true).await;
    // A line of its own: the test harness may have printed the test's name without a newline.
    println!("\nREADY {}", json!({ "function_id": function_id }));
    tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
    })
    .await
    .expect("stdin reader");
    client.shutdown_async().await;
    println!("\nDONE {{}}");
}

/// The Python SDK (which reads `SSL_CERT_FILE`) connects with `wss://localhost`, registers
/// `py::echo` and calls the Rust peer; the Rust peer calls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_round_trip_over_wss() {
    let Some(python) = env_or_skip("Python", &PYTHON_ENV, prepare_python_env).await else {
        return;
    };
    let pki = Pki::new();
    let (mut rt, _relay) = wss_round_trip("py-wss", &pki).await;
    // The DNS name of the certificate this time; the other SDKs use its IP address.
    let url = rt.node.url.replace("127.0.0.1", "localhost");
    let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/worker.py");
    let ca = pki.ca();
    let mut env = rt.env("PY_WORKER_NAME");
    env.retain(|(k, _)| *k != "III_URL");
    env.extend_from_slice(&[
        ("III_URL", &url as &dyn AsRef<OsStr>),
        ("SSL_CERT_FILE", &ca),
        ("PYTHONUNBUFFERED", &"1"),
    ]);
    let mut script = Script::spawn("worker.py", python, &[&script_path, &"roundtrip"], &env);
    script.expect("READY", READY_TIMEOUT).await;
    check_echo(&rt.rust, "py::echo", "python-iii-sdk", &rt.token).await;
    let result = script.expect("RESULT", RESULT_TIMEOUT).await;
    check_result(&result, "python", "python-iii-sdk", &rt.token, &mut rt.sink).await;
    rt.end(&mut script, "py::echo", "python over wss").await;
}

/// The Node SDK (which reads `NODE_EXTRA_CA_CERTS`) connects with `wss://`, registers
/// `node::echo` and calls the Rust peer; the Rust peer calls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_round_trip_over_wss() {
    let Some(env_dir) = env_or_skip("Node", &NODE_ENV, prepare_node_env).await else {
        return;
    };
    let pki = Pki::new();
    let (mut rt, _relay) = wss_round_trip("node-wss", &pki).await;
    let ca = pki.ca();
    let mut env = rt.env("NODE_WORKER_NAME");
    env.extend_from_slice(&[
        ("III_SDK_ENV", &env_dir as &dyn AsRef<OsStr>),
        ("NODE_EXTRA_CA_CERTS", &ca),
    ]);
    let mut script = Script::spawn(
        "smoke.mjs",
        "node",
        &[&tests_node_dir().join("smoke.mjs")],
        &env,
    );
    script.expect("READY", READY_TIMEOUT).await;
    check_echo(&rt.rust, "node::echo", "node-iii-sdk", &rt.token).await;
    let result = script.expect("RESULT", RESULT_TIMEOUT).await;
    check_result(&result, "node", "node-iii-sdk", &rt.token, &mut rt.sink).await;
    rt.end(&mut script, "node::echo", "node over wss").await;
}

// ---------------------------------------------------------------------------
// The port

/// Over TLS the port keeps its paths (`/`, `/otel`, 404 elsewhere) and still announces
/// TCP_NODELAY in the upgrade response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_port_serves_the_same_paths_and_capabilities() {
    let pki = Pki::new();
    let node = tls_node(&pki);
    let relay = TlsRelay::start(&pki, &node).await;

    let (mut ws, response) = tokio_tungstenite::connect_async(relay.url.as_str())
        .await
        .expect("upgrade on / over TLS");
    assert_eq!(
        response
            .headers()
            .get("x-iii-capabilities")
            .and_then(|v| v.to_str().ok()),
        Some("tcp-nodelay"),
        "{response:?}"
    );
    let hello = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("greeting in time")
        .expect("a frame")
        .expect("a good frame");
    let hello: Value = serde_json::from_str(hello.to_text().expect("text")).expect("JSON");
    assert_eq!(hello["type"], "workerregistered", "{hello}");

    let (mut otel, _) = tokio_tungstenite::connect_async(format!("{}/otel", relay.url))
        .await
        .expect("upgrade on /otel over TLS");
    otel.send(Message::Binary(b"OTLP{}".to_vec().into()))
        .await
        .expect("a telemetry frame");

    let refused = tokio_tungstenite::connect_async(format!("{}/nope", relay.url)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected a 404, got {other:?}"),
    }
}

/// A `ws://` client on the TLS port fails to connect, and the node keeps serving `wss://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ws_to_the_tls_port_fails_cleanly_and_the_node_keeps_serving() {
    let pki = Pki::new();
    let mut node = tls_node(&pki);
    let relay = TlsRelay::start(&pki, &node).await;
    let plain = format!("ws://{}", node.listen);
    for _ in 0..3 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(&plain),
        )
        .await
        .expect("the plaintext attempt ends quickly instead of hanging");
        assert!(
            attempt.is_err(),
            "a ws:// upgrade succeeded on the TLS port"
        );
    }
    assert_serving(&relay).await;
    assert!(node.is_running());
}

/// A client that starts a TLS handshake and never finishes it is dropped after the
/// handshake timeout, not before; meanwhile other clients connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_completes_is_dropped_after_the_timeout() {
    let pki = Pki::new();
    let node = tls_node(&pki);
    let relay = TlsRelay::start(&pki, &node).await;
    let mut stalled = TcpStream::connect(&node.listen).await.expect("connect");
    // A handshake record header announcing 512 bytes, then only a few of them.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .await
        .expect("partial ClientHello");
    let started = Instant::now();
    assert_serving(&relay).await;
    assert!(
        closed_within(&mut stalled, HANDSHAKE_TIMEOUT + Duration::from_secs(5)).await,
        "the stalled handshake was never dropped"
    );
    let waited = started.elapsed();
    assert!(
        waited >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "dropped after {waited:?}, before the handshake timeout"
    );
    assert_serving(&relay).await;
}

/// Garbage on the TLS port (random bytes, an HTTP request, a bogus TLS record) is refused
/// at once, and the node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_port_is_dropped_and_the_node_keeps_serving() {
    let pki = Pki::new();
    let mut node = tls_node(&pki);
    let relay = TlsRelay::start(&pki, &node).await;
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage: [&[u8]; 3] = [
        &random,
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
        // Application data before any handshake.
        &[0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
    ];
    for bytes in garbage {
        let mut stream = TcpStream::connect(&node.listen).await.expect("connect");
        // The node may close while we still write; that is the point.
        let _ = stream.write_all(bytes).await;
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)).await,
            "garbage kept its connection: {:?}",
            &bytes[..8]
        );
    }
    assert_serving(&relay).await;
    assert!(node.is_running());
}

/// The certificate flags come together and must name usable files; otherwise the node
/// refuses to start and says why.
#[test]
fn a_node_with_half_or_unusable_tls_flags_refuses_to_start() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (pki.cert(), pki.key());
    let missing = pki.dir.path().join("missing.crt");
    let cases: [(Vec<&Path>, &str); 3] = [
        (vec![&cert], "--tls-cert was given without --tls-key"),
        (vec![&missing, &key], "missing.crt"),
        (vec![&cert, &cert], "cannot read the worker TLS key"),
    ];
    for (flags, expected) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_quorum"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
            .args(["--http-listen", "127.0.0.1:0"]);
        for (flag, file) in ["--tls-cert", "--tls-key"].iter().zip(&flags) {
            command.arg(flag).arg(file);
        }
        let output = run_bounded(&mut command, Duration::from_secs(30), None)
            .expect_err("the node must not start");
        assert!(output.contains(expected), "{flags:?}: {output}");
    }
}
