//! Data channels with every SDK, across the cluster: a Rust worker creates a channel and
//! passes one end's ref inside a call's payload to a Python or Node handler, which the SDK
//! turns into a live reader or writer by itself; the other end is the Rust SDK's. The
//! creator and the two ends sit on three different nodes, or connect through haproxy in
//! front of the three nodes. Every stream is compared whole: bytes, sha256, frame
//! boundaries, and text messages interleaved with the data in order and kind.
//!
//! The Python (`tests/python/channels.py`) and Node (`tests/node/channels.mjs`) workers run
//! in the environments `tests/python_sdk.rs` and `tests/node_sdk.rs` set up; without them
//! (or without haproxy) a test prints `SKIPPED: <reason>` and passes, except under CI.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::channel_ends::{
    assert_same_stream, binary_plan, interleaved_plan, new_channel, python_channel_worker,
    read_all, write_plan, MIB,
};
use common::haproxy::{self, Haproxy};
use common::script::{Script, READY_TIMEOUT};
use common::sdk_env::{env_or_skip, EnvCell};
use common::sdks::{prepare_node_env, prepare_python_env, tests_node_dir};
use common::{http, unique_name, wait_function, worker, Cluster, Node, NodeOptions};
use iii_sdk::channel::{ChannelReader, ChannelWriter};
use iii_sdk::protocol::TriggerRequest;
use iii_sdk::IIIClient;
use serde_json::{json, Value};

static PYTHON_ENV: EnvCell = EnvCell::new();
static NODE_ENV: EnvCell = EnvCell::new();

/// How long one streaming call may take, 100 MiB through two SDKs included.
const STREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// One foreign SDK's worker script and the functions it serves.
struct Sdk {
    lang: &'static str,
    consume: &'static str,
    produce: &'static str,
    /// The interpreter (Python) or the environment directory (Node).
    env: PathBuf,
}

impl Sdk {
    async fn python() -> Option<Sdk> {
        let python = env_or_skip("Python", &PYTHON_ENV, prepare_python_env).await?;
        Some(Sdk {
            lang: "python",
            consume: "py::chan::consume",
            produce: "py::chan::produce",
            env: python,
        })
    }

    async fn node() -> Option<Sdk> {
        let dir = env_or_skip("Node", &NODE_ENV, prepare_node_env).await?;
        Some(Sdk {
            lang: "node",
            consume: "node::chan::consume",
            produce: "node::chan::produce",
            env: dir,
        })
    }

    /// Starts the script as a worker connected to `url`; returns once it serves both
    /// functions.
    async fn start(&self, url: &str) -> Script {
        let name = unique_name(&format!("{}-chan", self.lang));
        let mut script = match self.lang {
            "python" => return python_channel_worker(&self.env, url, &name).await,
            _ => {
                let path = tests_node_dir().join("channels.mjs");
                let env: [(&str, &dyn AsRef<OsStr>); 3] = [
                    ("III_SDK_ENV", &self.env),
                    ("III_URL", &url),
                    ("NODE_WORKER_NAME", &name),
                ];
                Script::spawn("channels.mjs", "node", &[&path], &env)
            }
        };
        script.expect("READY", READY_TIMEOUT).await;
        script
    }
}

/// Calls `function_id` through the engine with a timeout long enough for a stream.
async fn call_streaming(client: &IIIClient, function_id: &str, payload: Value) -> Value {
    let request = TriggerRequest {
        timeout_ms: Some(STREAM_TIMEOUT.as_millis() as u64),
        ..TriggerRequest::new(function_id, payload)
    };
    tokio::time::timeout(
        STREAM_TIMEOUT + Duration::from_secs(5),
        client.trigger(request),
    )
    .await
    .unwrap_or_else(|_| panic!("{function_id} did not answer in {STREAM_TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("{function_id} failed: {e:?}"))
}

/// A channel made by `creator` (so it lives on the creator's node).
/// The handler of `sdk` reads `plan` that the Rust SDK writes through `writer_url`: the
/// handler gets only the reader's ref, inside its input.
async fn handler_reads(creator: &IIIClient, sdk: &Sdk, writer_url: &str, plan: Value) {
    let channel = new_channel(creator).await;
    let writer = ChannelWriter::new(writer_url, &channel.writer_ref);
    let payload = json!({ "reader": channel.reader_ref, "note": "the ref travels as plain JSON" });
    let (written, read) = tokio::join!(
        async { write_plan(&writer, &plan).await.expect("Rust writer") },
        call_streaming(creator, sdk.consume, payload),
    );
    println!("{} read: {read}", sdk.lang);
    assert_same_stream(&format!("Rust → {}", sdk.lang), &written, &read);
    assert_eq!(
        read["close_code"], 1000,
        "a complete stream ends with 1000: {read}"
    );
    if sdk.lang == "node" {
        // The SDK's own stream and callbacks saw the same as its socket.
        assert_eq!(read["sdk_bytes"], written["bytes"], "{read}");
        assert_eq!(read["error"], Value::Null, "{read}");
        let texts: Vec<Value> = plan_texts(&plan);
        assert_eq!(read["sdk_texts"], json!(texts), "{read}");
    }
}

/// The handler of `sdk` writes `plan` that the Rust SDK reads through `reader_url`: the
/// handler gets only the writer's ref, inside its input.
async fn handler_writes(creator: &IIIClient, sdk: &Sdk, reader_url: &str, plan: Value) {
    let channel = new_channel(creator).await;
    let reader = ChannelReader::new(reader_url, &channel.reader_ref);
    let payload = json!({ "writer": channel.writer_ref, "plan": plan });
    let (read, written) = tokio::join!(
        async { read_all(&reader).await.expect("Rust reader") },
        call_streaming(creator, sdk.produce, payload),
    );
    println!("{} wrote: {written}", sdk.lang);
    assert_same_stream(&format!("{} → Rust", sdk.lang), &written, &read);
    // The Node writer's close code is not checked: its `Writable` destroys itself once
    // finished, and the SDK's destroy terminates the socket right after sending its
    // Close, so it never waits for the engine's answer and always sees 1006.
}

fn plan_texts(plan: &Value) -> Vec<Value> {
    plan.as_array()
        .expect("plan")
        .iter()
        .filter_map(|step| step.get("text").cloned())
        .collect()
}

/// Creator on node 1 (the channel's home), the Rust end on node 2, the handler's worker
/// (and so its end) on node 3: both directions, text interleaved with data.
async fn across_three_nodes(sdk: Sdk) {
    let started = Instant::now();
    let cluster = Cluster::start(3);
    let creator = worker(&cluster.node(0).url, &unique_name("creator"), None).await;
    let mut script = sdk.start(&cluster.node(2).url).await;
    wait_function(&creator, sdk.consume, true).await;
    wait_function(&creator, sdk.produce, true).await;

    handler_reads(&creator, &sdk, &cluster.node(1).url, interleaved_plan()).await;
    handler_writes(&creator, &sdk, &cluster.node(1).url, interleaved_plan()).await;

    script.finish_cleanly().await;
    println!(
        "{} across three nodes took {:?}",
        sdk.lang,
        started.elapsed()
    );
}

/// Everyone connects through haproxy (round robin) in front of the three nodes, so where
/// each end lands is the balancer's choice; the Rust ends use the balancer's URL too.
async fn through_haproxy(sdk: Sdk, binary: PathBuf) {
    let started = Instant::now();
    let (cluster, ports) = Cluster::start_on_fixed_ports(3, &[]);
    let balancer = Haproxy::start(&binary, &ports);
    // Connected in this order, round robin puts the script on node 1, the creator (the
    // channel's home) on node 2 and the two ends on nodes 3 and 1, unless an SDK opens a
    // connection of its own; the test asserts that every stream arrives whole and that
    // channel frames crossed nodes.
    let mut script = sdk.start(&balancer.url).await;
    let creator = worker(&balancer.url, &unique_name("creator"), None).await;
    wait_function(&creator, sdk.consume, true).await;
    wait_function(&creator, sdk.produce, true).await;

    handler_reads(&creator, &sdk, &balancer.url, interleaved_plan()).await;
    handler_writes(&creator, &sdk, &balancer.url, interleaved_plan()).await;
    handler_reads(&creator, &sdk, &balancer.url, binary_plan(8 * MIB)).await;
    let crossed = cross_node_bytes(&cluster).await;
    assert!(
        crossed > 0,
        "behind the balancer no channel frame crossed nodes: the test proved nothing"
    );

    script.finish_cleanly().await;
    drop(cluster);
    println!("{} through haproxy took {:?}", sdk.lang, started.elapsed());
}

/// Channel bytes the nodes sent to other nodes, from their `/metrics`.
async fn cross_node_bytes(cluster: &Cluster) -> u64 {
    const SAMPLE: &str = "quorum_channel_bytes_total{hop=\"cross_node\"} ";
    let mut total = 0;
    for i in cluster.live() {
        let (_, body) = http::get(&cluster.node(i).http, "/metrics")
            .await
            .expect("scrape /metrics");
        total += body
            .lines()
            .find_map(|line| line.strip_prefix(SAMPLE))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    total
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handlers_read_and_write_interleaved_streams_across_three_nodes() {
    let Some(sdk) = Sdk::python().await else {
        return;
    };
    across_three_nodes(sdk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_handlers_read_and_write_interleaved_streams_across_three_nodes() {
    let Some(sdk) = Sdk::node().await else {
        return;
    };
    across_three_nodes(sdk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handlers_stream_through_haproxy_in_front_of_three_nodes() {
    let Some(binary) = haproxy::find_or_skip() else {
        return;
    };
    let Some(sdk) = Sdk::python().await else {
        return;
    };
    through_haproxy(sdk, binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_handlers_stream_through_haproxy_in_front_of_three_nodes() {
    let Some(binary) = haproxy::find_or_skip() else {
        return;
    };
    let Some(sdk) = Sdk::node().await else {
        return;
    };
    through_haproxy(sdk, binary).await;
}

/// Under `--worker-auth token`, with the token in the engine URL's query as the docs tell
/// Node users (and as managed workers get it): the Node SDK's channel sockets, whose URL it
/// builds by appending to that text, still stream both ways. The Rust ends connect with no
/// token at all: a channel's access key is its credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_handlers_stream_under_worker_tokens_given_in_the_url() {
    let Some(sdk) = Sdk::node().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let token = "node-channel-token";
    let node = Node::start_in(
        &dir.path().join("node"),
        NodeOptions {
            args: common::worker_token_args(dir.path(), token),
            ..Default::default()
        },
    );
    let with_token = format!("{}/?token={token}", node.url);
    let creator = worker(&with_token, &unique_name("creator"), None).await;
    let mut script = sdk.start(&with_token).await;
    wait_function(&creator, sdk.consume, true).await;
    handler_reads(&creator, &sdk, &node.url, interleaved_plan()).await;
    handler_writes(&creator, &sdk, &node.url, interleaved_plan()).await;
    script.finish_cleanly().await;
}

/// 100 MiB from a Node handler's writer to a Python handler's reader, both given only a
/// ref by a Rust creator; creator, writer and reader on three different nodes. The
/// sha256 each SDK computed on its side must match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_stream_from_node_to_python_across_nodes_keeps_its_sha256() {
    let Some(python) = Sdk::python().await else {
        return;
    };
    let Some(node) = Sdk::node().await else {
        return;
    };
    let started = Instant::now();
    let cluster = Cluster::start(3);
    let creator = worker(&cluster.node(0).url, &unique_name("creator"), None).await;
    let mut writer_script = node.start(&cluster.node(1).url).await;
    let mut reader_script = python.start(&cluster.node(2).url).await;
    wait_function(&creator, node.produce, true).await;
    wait_function(&creator, python.consume, true).await;

    let channel = new_channel(&creator).await;
    let stream_started = Instant::now();
    let (written, read) = tokio::join!(
        call_streaming(
            &creator,
            node.produce,
            json!({ "writer": channel.writer_ref, "plan": binary_plan(100 * MIB) }),
        ),
        call_streaming(
            &creator,
            python.consume,
            json!({ "reader": channel.reader_ref })
        ),
    );
    let elapsed = stream_started.elapsed();
    assert_eq!(written["bytes"], 100 * MIB, "{written}");
    assert_same_stream("Node → Python, 100 MiB", &written, &read);
    assert_eq!(read["close_code"], 1000, "{read}");
    println!(
        "100 MiB Node → Python across nodes in {elapsed:?} ({:.1} MB/s); test took {:?}",
        100.0 * MIB as f64 / 1e6 / elapsed.as_secs_f64(),
        started.elapsed()
    );
    writer_script.finish_cleanly().await;
    reader_script.finish_cleanly().await;
}
