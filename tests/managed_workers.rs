//! Managed workers across a cluster: real quorum nodes place, start, restart and move real
//! Python and Node SDK workers started from the manifests in `tests/managed/`, driven through
//! `quorum worker`, also on nodes with `--worker-auth token` and worker TLS. Every test
//! prints the timings it measured (docs/managed-workers.md).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::processes::{alive, all_pids};
use common::raw::RawClient;
use common::sdk_env::{env_or_skip, EnvCell};
use common::sdks::{prepare_node_env, prepare_python_env};
use common::worker_pki::{Pki, TlsRelay};
use common::{
    call, cli_json, cli_text, eventually, unique_name, worker, worker_token_args, Cluster,
    NodeOptions,
};
use iii_sdk::IIIClient;
use serde_json::{json, Value};

static PYTHON: EnvCell = EnvCell::new();
static NODE: EnvCell = EnvCell::new();

/// How long a managed worker may take from its spec to its first answer (placement, the
/// interpreter's start, the SDK's registration).
const START: Duration = Duration::from_secs(30);

fn project(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("managed")
        .join(name)
}

/// Node options that put the Python venv first on the PATH (the manifest runs `python`) and
/// tell Node workers where the npm SDK is, with `labels` as `--node-label` flags.
fn node_options(python: &Path, node_env: Option<&Path>, labels: &[&str]) -> NodeOptions {
    let bin = python.parent().expect("venv bin dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = vec![("PATH".to_string(), path)];
    if let Some(dir) = node_env {
        env.push(("III_SDK_ENV".into(), dir.display().to_string()));
    }
    let mut args = Vec::new();
    for label in labels {
        args.push("--node-label".to_string());
        args.push(label.to_string());
    }
    NodeOptions {
        args,
        env,
        ..NodeOptions::default()
    }
}

/// The `engine::workers::list` rows of connections that announced `name`.
async fn rows_named(observer: &IIIClient, name: &str) -> Vec<Value> {
    let Ok(listed) = call(observer, "engine::workers::list", json!({})).await else {
        return Vec::new();
    };
    listed["workers"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|row| row["name"] == name)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// What [`sample_list`] saw: how many lists answered, how many of them had no row of the
/// worker, the slowest answer, and the first list that showed two copies or failed.
#[derive(Debug, Default)]
struct ListSamples {
    answered: u32,
    without_a_row: u32,
    slowest: Duration,
    fault: Option<String>,
}

/// Lists workers through `observer` one call after another, on a task of its own, until
/// `stop` is set; each list must answer and hold at most one row named `name`.
fn sample_list(
    observer: IIIClient,
    name: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<ListSamples> {
    let name = name.to_string();
    tokio::spawn(async move {
        let mut seen = ListSamples::default();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let asked = Instant::now();
            let listed = call(&observer, "engine::workers::list", json!({})).await;
            seen.slowest = seen.slowest.max(asked.elapsed());
            let rows: Vec<Value> = match listed {
                Ok(listed) => listed["workers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|row| row["name"] == name.as_str())
                    .cloned()
                    .collect(),
                Err(err) => {
                    seen.fault = Some(format!("the list failed: {err}"));
                    break;
                }
            };
            seen.answered += 1;
            match rows.len() {
                0 => seen.without_a_row += 1,
                1 => {}
                _ => {
                    seen.fault = Some(format!("two copies listed at once: {rows:?}"));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

/// Waits until `name::echo` answers through `observer`; returns the answer.
async fn wait_echo(observer: &IIIClient, name: &str, deadline: Duration) -> Value {
    let function = format!("{name}::echo");
    eventually(&format!("{function} answers"), deadline, || async {
        call(observer, &function, json!({"ping": 1})).await.ok()
    })
    .await
}

/// The command that runs the Python echo worker of `tests/managed/python-echo` (whatever the
/// name it is added under).
fn echo_command() -> String {
    format!(
        "python {}",
        project("python-echo").join("worker.py").display()
    )
}

/// Adds the Python echo worker as `name` through node 0 and waits for its first answer;
/// returns that answer and the index of the node that runs it.
async fn add_echo(cluster: &Cluster, name: &str) -> (Value, usize) {
    cluster
        .worker_cli(0, &["add", "--name", name, "--command", &echo_command()])
        .expect("add");
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, name, START).await;
    let holder = node_of_url(cluster, first["url"].as_str().unwrap());
    (first, holder)
}

/// Adds `tests/managed/python-echo` from its manifest through node `via` and waits for its
/// first answer through an observer on node 0; returns the observer and the answer.
async fn add_python_echo(cluster: &Cluster, via: usize) -> (IIIClient, Value) {
    let dir = project("python-echo");
    cluster
        .worker_cli(via, &["add", dir.to_str().unwrap()])
        .expect("add");
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, "python-echo", START).await;
    (observer, first)
}

/// Waits until `python-echo` answers through `observer` from another process than the one
/// that gave `first`; returns that answer.
async fn a_new_process_answers(observer: &IIIClient, first: &Value) -> Value {
    eventually("a new process answers", START, || async {
        call(observer, "python-echo::echo", json!({}))
            .await
            .ok()
            .filter(|a| a["pid"] != first["pid"])
    })
    .await
}

/// The node index whose worker port `url` (from the worker's `III_URL`) is.
fn node_of_url(cluster: &Cluster, url: &str) -> usize {
    cluster
        .live()
        .into_iter()
        .find(|i| url.ends_with(&format!(":{}", port_of(&cluster.node(*i).listen))))
        .unwrap_or_else(|| panic!("no live node serves {url}"))
}

fn port_of(address: &str) -> &str {
    address.rsplit(':').next().unwrap_or(address)
}

/// The pids of the Python processes running a managed worker named `name` (read from
/// `/proc`: its `III_WORKER_NAME` and an interpreter as the program).
fn python_copies(name: &str) -> Vec<u64> {
    let wanted = format!("III_WORKER_NAME={name}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let program = String::from_utf8_lossy(program);
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            program
                .rsplit('/')
                .next()
                .is_some_and(|p| p.starts_with("python"))
                && environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes())
                && alive(pid)
        })
        .collect()
}

/// The network namespace process `pid` runs in.
fn netns_of(pid: u64) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

async fn python() -> Option<PathBuf> {
    env_or_skip("Python", &PYTHON, prepare_python_env).await
}

/// A 3-node cluster whose nodes run managed Python workers, node `i` labelled `zone=z<i+1>`.
fn python_cluster(python: &Path) -> Cluster {
    Cluster::start_with(3, |i| {
        node_options(python, None, &[&format!("zone=z{}", i + 1)])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_python_worker_is_placed_by_its_label_and_callable_through_any_node() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    let dir = project("python-echo");
    let added = Instant::now();
    cluster
        .worker_cli(
            0,
            &["add", dir.to_str().unwrap(), "--node-label", "zone=z2"],
        )
        .expect("worker add");
    let observer = worker(&cluster.node(2).url, &unique_name("observer"), None).await;
    let answer = wait_echo(&observer, "python-echo", START).await;
    println!(
        "placed and callable {:?} after `worker add`",
        added.elapsed()
    );
    assert_eq!(
        answer["marker"], "python-managed",
        "the manifest's env: {answer}"
    );
    assert_eq!(
        node_of_url(&cluster, answer["url"].as_str().unwrap()),
        1,
        "runs on the node labelled zone=z2, connected to its own port: {answer}"
    );
    let rows = rows_named(&observer, "python-echo").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["managed"], true, "{rows:?}");
    assert_eq!(rows[0]["node"], 2, "{rows:?}");
    assert_eq!(rows[0]["restarts"], 0, "{rows:?}");

    // Two more without labels spread over the nodes that run fewest.
    for name in ["spread-a", "spread-b"] {
        cluster
            .worker_cli(1, &["add", "--name", name, "--command", &echo_command()])
            .expect("add");
    }
    let mut nodes = Vec::new();
    for name in ["spread-a", "spread-b"] {
        let answer = wait_echo(&observer, name, START).await;
        nodes.push(node_of_url(&cluster, answer["url"].as_str().unwrap()));
    }
    nodes.sort();
    assert_eq!(nodes, [0, 2], "one on each node that ran none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_crashes_is_restarted_and_its_row_counts_the_restart() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    let (observer, first) = add_python_echo(&cluster, 0).await;
    let crashed = Instant::now();
    assert!(
        call(&observer, "python-echo::crash", json!({}))
            .await
            .is_err(),
        "the call that kills the process fails"
    );
    let again = a_new_process_answers(&observer, &first).await;
    println!("callable again {:?} after the crash", crashed.elapsed());
    assert!(!alive(first["pid"].as_u64().unwrap()));
    let row = eventually(
        "the row counts the restart",
        Duration::from_secs(10),
        || async {
            rows_named(&observer, "python-echo")
                .await
                .into_iter()
                .find(|row| row["restarts"].as_u64() >= Some(1))
        },
    )
    .await;
    assert_eq!(row["last_exit"], "exit 7", "{row}");
    assert_eq!(row["managed"], true);
    assert_eq!(again["url"], first["url"], "restarted on the same node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_restart_replaces_the_process_where_it_runs() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    let (observer, first) = add_python_echo(&cluster, 0).await;
    cluster
        .worker_cli(1, &["restart", "python-echo"])
        .expect("worker restart");
    let again = a_new_process_answers(&observer, &first).await;
    assert!(
        !alive(first["pid"].as_u64().unwrap()),
        "the old process is gone"
    );
    assert_eq!(again["url"], first["url"], "restarted on the same node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_its_node_moves_the_worker_to_a_survivor_and_never_shows_two_copies() {
    let Some(python) = python().await else { return };
    let mut cluster = python_cluster(&python);
    let (first, holder) = add_echo(&cluster, "mover").await;
    let watcher = cluster.live().into_iter().find(|i| *i != holder).unwrap();
    let observer = worker(&cluster.node(watcher).url, &unique_name("obs"), None).await;
    let killed = Instant::now();
    cluster.kill(holder);
    let mut samples = 0;
    let answer = loop {
        let rows = rows_named(&observer, "mover").await;
        samples += 1;
        assert!(rows.len() <= 1, "two copies listed at once: {rows:?}");
        if let Ok(answer) = call(&observer, "mover::echo", json!({})).await {
            if answer["url"] != first["url"] {
                break answer;
            }
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "not callable again in 60 s; logs:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = killed.elapsed();
    println!("callable through a survivor {took:?} after SIGKILL of node {} ({samples} samples, never two)", holder + 1);
    assert_ne!(
        node_of_url(&cluster, answer["url"].as_str().unwrap()),
        holder
    );
    assert!(
        !alive(first["pid"].as_u64().unwrap()),
        "the old copy died with its node"
    );
    for _ in 0..20 {
        let rows = rows_named(&observer, "mover").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_its_node_moves_the_worker_first_and_never_lists_two_managed_copies() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    let (first, holder) = add_echo(&cluster, "evictee").await;
    let survivor = cluster.live().into_iter().find(|i| *i != holder).unwrap();
    let observer = worker(&cluster.node(survivor).url, &unique_name("obs"), None).await;

    // `quorum cluster remove` through a survivor, while this test samples the engine's list
    // and the worker's processes until the command returns.
    let removed = Instant::now();
    let remove = {
        let (credentials, address) = (
            cluster.credentials(),
            cluster.node(survivor).cluster.clone(),
        );
        let id = cluster.node(holder).node_id.to_string();
        tokio::task::spawn_blocking(move || {
            cli_json(&[], "cluster", &credentials, &address, &["remove", &id])
        })
    };
    let (mut samples, mut most_processes) = (0, 0);
    while !remove.is_finished() {
        let managed: Vec<Value> = rows_named(&observer, "evictee")
            .await
            .into_iter()
            .filter(|row| row["managed"] == true)
            .collect();
        assert!(managed.len() <= 1, "two managed copies listed: {managed:?}");
        most_processes = most_processes.max(python_copies("evictee").len());
        samples += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = remove.await.unwrap();
    let took = removed.elapsed();
    assert!(
        reply.is_ok(),
        "remove: {reply:?}; logs:\n{}",
        cluster.logs()
    );

    // The move came first: callable through a survivor as soon as the removal returns.
    let answer = call(&observer, "evictee::echo", json!({}))
        .await
        .unwrap_or_else(|err| panic!("not callable right after the removal: {err}"));
    println!(
        "cluster remove of node {} took {took:?}; callable at once ({samples} samples, \
         at most {most_processes} processes during the hand-over, one managed row)",
        holder + 1
    );
    assert_ne!(answer["url"], first["url"], "runs on a survivor: {answer}");
    assert_ne!(
        node_of_url(&cluster, answer["url"].as_str().unwrap()),
        holder
    );
    eventually("the old copy is gone", Duration::from_secs(20), || async {
        (!alive(first["pid"].as_u64().unwrap())).then_some(())
    })
    .await;
    let rows = rows_named(&observer, "evictee").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["managed"], true, "{rows:?}");
    assert_eq!(python_copies("evictee").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_spec_stops_the_worker_everywhere() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    let (observer, answer) = add_python_echo(&cluster, 1).await;
    let pid = answer["pid"].as_u64().unwrap();
    assert!(alive(pid));
    cluster
        .worker_cli(2, &["remove", "python-echo"])
        .expect("remove");
    eventually("the process is gone", Duration::from_secs(20), || async {
        (!alive(pid)).then_some(())
    })
    .await;
    eventually("no row is left", Duration::from_secs(10), || async {
        rows_named(&observer, "python-echo")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(call(&observer, "python-echo::echo", json!({}))
        .await
        .is_err());
    let err = cluster
        .worker_cli(0, &["remove", "python-echo"])
        .unwrap_err();
    assert!(err.contains("no managed worker named"), "{err}");
}

/// A node config's `workers:` list holding one entry: the Python echo worker as `name`, on
/// the nodes labelled `zone=ZONE`.
fn echo_entry(name: &str, zone: &str) -> String {
    format!(
        "workers:\n  - name: {name}\n    command: \"{}\"\n    node_labels:\n      zone: {zone}\n",
        echo_command()
    )
}

/// Issue 14: a config entry whose labels change so that its worker must run on another node.
/// The new node starts its copy only once the old copy (stopped with its grace) has let go of
/// the name: never two copies, and the new one never meets the old one's name (a fatal error
/// for the SDK, and a restart with backoff that made such a move take a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_entry_relabelled_for_another_node_moves_there_after_the_old_copy_stops() {
    let Some(python) = python().await else { return };
    let name = "relabelled";
    let root = tempfile::tempdir().expect("temp dir");
    let config = root.path().join("quorum.yaml");
    std::fs::write(&config, echo_entry(name, "z1")).expect("config file");
    // Node i is labelled zone=z<i+1>; node 3 carries the config (and runs no copy of it).
    let options = |i: usize| {
        let mut options = node_options(&python, None, &[&format!("zone=z{}", i + 1)]);
        if i == 2 {
            options
                .args
                .extend(["--config".to_string(), config.display().to_string()]);
        }
        options
    };
    let mut cluster = Cluster::start_with(3, options);
    let observer = worker(&cluster.node(1).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, name, START).await;
    assert_eq!(
        node_of_url(&cluster, first["url"].as_str().unwrap()),
        0,
        "runs on the node labelled zone=z1: {first}"
    );
    let old_pid = first["pid"].as_u64().unwrap();

    // Sampled until the move is done: the copies registered (through node 2) and running.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = worker(&cluster.node(1).url, &unique_name("lister"), None).await;
    let listed = sample_list(lister, name, stop.clone());
    let processes = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut most, mut samples) = (0, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(python_copies(name).len());
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (most, samples)
        }
    });

    // Node 3 comes back with the entry relabelled for zone=z2 (node 2).
    let seed = cluster.node(0).cluster.clone();
    tokio::task::block_in_place(|| cluster.kill(2));
    std::fs::write(&config, echo_entry(name, "z2")).expect("config file");
    let relabelled = Instant::now();
    tokio::task::block_in_place(|| cluster.restart(2, &["--join", &seed], options(2)));
    let node_ready = relabelled.elapsed();
    let moved = eventually("callable on node 2", START, || async {
        call(&observer, &format!("{name}::echo"), json!({}))
            .await
            .ok()
            .filter(|answer| answer["pid"] != first["pid"])
    })
    .await;
    let took = relabelled.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let listed = listed.await.expect("list sampler");
    let (most_processes, process_samples) = processes.await.expect("process sampler");
    println!(
        "relabelled entry moved: callable on the new node {took:?} after node 3's restart began \
         ({:?} after it was ready); {} lists (slowest {:?}, {} without a row), at most \
         {most_processes} process in {process_samples} samples",
        took - node_ready,
        listed.answered,
        listed.slowest,
        listed.without_a_row
    );
    assert!(listed.fault.is_none(), "{:?}", listed.fault);
    assert!(
        most_processes <= 1,
        "two copies ran at once ({most_processes})"
    );
    assert_eq!(
        node_of_url(&cluster, moved["url"].as_str().unwrap()),
        1,
        "runs on the node labelled zone=z2: {moved}"
    );
    assert!(!alive(old_pid), "the old copy is gone");
    let status = cluster.worker_cli(1, &["status", name]).expect("status");
    assert_eq!(status["node"], 2, "{status}");
    assert_eq!(
        status["restarts"], 0,
        "the new copy started once, after the old one let go of the name: {status}"
    );
    assert!(
        !cluster.logs().contains("starting anyway"),
        "the old copy stopped within its grace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_specs_with_one_name_and_a_label_no_node_has_are_refused_or_reported() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    cluster
        .worker_cli(0, &["add", "--name", "twin", "--command", "sleep 600"])
        .expect("add");
    // The same spec again is fine (idempotent); another under the same name is refused.
    cluster
        .worker_cli(1, &["add", "--name", "twin", "--command", "sleep 600"])
        .expect("the same spec again");
    let err = cluster
        .worker_cli(1, &["add", "--name", "twin", "--command", "sleep 601"])
        .unwrap_err();
    assert!(
        err.contains("already exists with a different spec"),
        "{err}"
    );

    cluster
        .worker_cli(
            0,
            &[
                "add",
                "--name",
                "nowhere",
                "--command",
                "sleep 600",
                "--node-label",
                "zone=x",
            ],
        )
        .expect("add");
    let status = eventually("reported unplaceable", Duration::from_secs(15), || async {
        cluster
            .worker_cli(2, &["status", "nowhere"])
            .ok()
            .filter(|s| s.to_string().contains("no live node has label zone=x"))
    })
    .await;
    println!("status of an unplaceable worker: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_node_worker_runs_from_its_manifest() {
    let Some(python) = python().await else { return };
    let Some(node_env) = env_or_skip("Node", &NODE, prepare_node_env).await else {
        return;
    };
    let cluster = Cluster::start_with(2, |_| node_options(&python, Some(&node_env), &[]));
    cluster
        .worker_cli(0, &["add", project("node-echo").to_str().unwrap()])
        .expect("add");
    let observer = worker(&cluster.node(1).url, &unique_name("observer"), None).await;
    let answer = wait_echo(&observer, "node-echo", START).await;
    assert_eq!(answer["marker"], "node-managed", "{answer}");
    let rows = rows_named(&observer, "node-echo").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["managed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hands_the_worker_over_without_failing_a_call() {
    let Some(python) = python().await else { return };
    let mut cluster = python_cluster(&python);
    let (first, holder) = add_echo(&cluster, "rolling").await;
    let caller_node = cluster.live().into_iter().find(|i| *i != holder).unwrap();
    let caller = worker(&cluster.node(caller_node).url, &unique_name("caller"), None).await;

    // Two callers in a loop for the whole drain, each call taking 50 ms in the worker; every
    // answer is announced (with the URL of the copy that gave it) for the test to await.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (answered, mut answers) = tokio::sync::watch::channel(Vec::<String>::new());
    let answered = std::sync::Arc::new(answered);
    let mut loops = Vec::new();
    for _ in 0..2 {
        let caller = caller.clone();
        let stop = stop.clone();
        let answered = answered.clone();
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut urls) =
                (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match call(&caller, "rolling::slow", json!({"ms": 50})).await {
                    Ok(answer) => {
                        ok += 1;
                        let url = answer["url"].as_str().unwrap_or("").to_string();
                        urls.insert(url.clone());
                        answered.send_modify(|urls| urls.push(url));
                    }
                    Err(err) => failed.push(err.to_string()),
                }
            }
            (ok, failed, urls)
        }));
    }
    // Both loops are calling before the drain starts.
    tokio::time::timeout(START, answers.wait_for(|urls| urls.len() >= 4))
        .await
        .expect("the callers get answers before the drain")
        .expect("the callers run");
    let drained = Instant::now();
    let code = tokio::task::spawn_blocking(move || {
        let code = cluster.terminate(holder);
        (cluster, code)
    })
    .await
    .unwrap();
    let (cluster, code) = code;
    let took = drained.elapsed();
    assert_eq!(code, Some(0), "the drained node exits cleanly");
    let moved = wait_echo(&caller, "rolling", START).await;
    assert_ne!(moved["url"], first["url"], "the worker runs elsewhere now");
    // The looping callers, too, are answered by the new copy before they stop.
    let new_url = moved["url"].as_str().unwrap_or("").to_string();
    tokio::time::timeout(
        START,
        answers.wait_for(|urls| urls.iter().filter(|url| **url == new_url).count() >= 2),
    )
    .await
    .expect("the callers get answers from the new copy")
    .expect("the callers run");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    let mut failures = Vec::new();
    let mut urls = std::collections::BTreeSet::new();
    for handle in loops {
        let (ok, failed, seen) = handle.await.unwrap();
        total += ok;
        failures.extend(failed);
        urls.extend(seen);
    }
    println!(
        "drain of node {} took {took:?}; {total} calls answered by {urls:?} during it, {} failed",
        holder + 1,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed calls: {failures:?}; logs:\n{}",
        cluster.logs()
    );
    assert_eq!(urls.len(), 2, "both copies answered: {urls:?}");
    assert!(!alive(first["pid"].as_u64().unwrap()));
    assert_eq!(rows_named(&caller, "rolling").await.len(), 1);
}

/// While a member is cut off, `engine::workers::list` through the majority answers within
/// about a second: the cut-off member's live facts are given up after 500 ms. A connection
/// made just after the leader was cut off lists as promptly once the next leader is elected:
/// its registration's commit, forwarded to the cut-off leader, moves on to the new one
/// instead of waiting out the forward's 10 s (the list waits behind that registration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_list_answers_within_a_second_while_a_peer_is_cut_off() {
    use common::netns::NetnsLab;
    // Each list; from the cut to the first list of a connection made after it, which also
    // waits for an election.
    const PROMPT: Duration = Duration::from_millis(1_500);
    const PROMPT_AFTER_AN_ELECTION: Duration = Duration::from_secs(3);
    let Some(mut lab) = NetnsLab::create_or_skip(3) else {
        return;
    };
    lab.start_all();
    let leader = eventually("a leader", Duration::from_secs(30), || async {
        lab.status(0).and_then(|s| s["leader_id"].as_u64())
    })
    .await as usize
        - 1;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    // A worker on the node that will be cut off, so every list asks that node for live facts.
    let far = unique_name("far");
    let _far = worker(&lab.node(leader).url, &far, None).await;
    let before = worker(&lab.node(follower).url, &unique_name("before"), None).await;
    eventually(
        "the far worker is listed",
        Duration::from_secs(30),
        || async { (!rows_named(&before, &far).await.is_empty()).then_some(()) },
    )
    .await;

    lab.cut(leader);
    let cut = Instant::now();
    // A connection made now registers through a commit that first went to the cut-off leader.
    let after = worker(&lab.node(follower).url, &unique_name("after"), None).await;
    call(&after, "engine::workers::list", json!({}))
        .await
        .expect("the list answers");
    let first_list_after = cut.elapsed();
    let mut slowest = [Duration::ZERO; 2];
    let mut rounds = 0;
    // Past the purge of the cut-off node (5 s), so the list is sampled before and after it.
    while cut.elapsed() < Duration::from_secs(8) {
        for (i, client) in [&before, &after].into_iter().enumerate() {
            let asked = Instant::now();
            call(client, "engine::workers::list", json!({}))
                .await
                .expect("the list answers");
            slowest[i] = slowest[i].max(asked.elapsed());
        }
        rounds += 1;
    }
    println!(
        "leader (node {}) cut off: a connection made after the cut listed {first_list_after:?} after it; then {rounds} rounds of lists through node {}, slowest {:?} (registered before the cut), {:?} (connected after it)",
        leader + 1,
        follower + 1,
        slowest[0],
        slowest[1]
    );
    assert!(
        slowest[0] < PROMPT,
        "a list took {:?}; logs:\n{}",
        slowest[0],
        lab.logs()
    );
    assert!(
        slowest[1] < PROMPT,
        "a list took {:?}; logs:\n{}",
        slowest[1],
        lab.logs()
    );
    assert!(
        first_list_after < PROMPT_AFTER_AN_ELECTION,
        "a connection made after the cut first listed {first_list_after:?} after it; logs:\n{}",
        lab.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_kills_its_copy_before_a_survivor_starts_one() {
    use common::netns::NetnsLab;
    let Some(python) = python().await else { return };
    let Some(mut lab) = NetnsLab::create_or_skip(3) else {
        return;
    };
    lab.start_all();
    // The nodes' PATH is the test's: name the venv's python outright.
    let command = format!(
        "{} {}",
        python.display(),
        project("python-echo").join("worker.py").display()
    );
    eventually("the worker is added", Duration::from_secs(30), || async {
        lab.worker_cli(0, &["add", "--name", "islander", "--command", &command])
            .ok()
    })
    .await;
    let observer = worker(&lab.node(0).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, "islander", START).await;
    let old_pid = first["pid"].as_u64().unwrap();
    // Managed workers connect over their node's loopback: their network namespace, not their
    // URL, says which node runs them.
    let node_of =
        |pid: u64| (0..3).find(|i| netns_of(u64::from(lab.node(*i).pid())) == netns_of(pid));
    let holder = node_of(old_pid).expect("the holder is one of the nodes");
    let watcher = (0..3).find(|i| *i != holder).unwrap();
    let observer = worker(&lab.node(watcher).url, &unique_name("obs"), None).await;

    // The majority side's list is sampled all along, on a task of its own; the Python
    // processes that run the worker every 50 ms here, until a second process exists: by then
    // the first must be gone.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_list(observer.clone(), "islander", stop.clone());
    let cut = Instant::now();
    lab.cut(holder);
    let mut killed_at = None;
    let mut samples = 0;
    loop {
        let running = python_copies("islander");
        samples += 1;
        assert!(running.len() <= 1, "two copies run at once: {running:?}");
        if killed_at.is_none() && !running.contains(&old_pid) {
            killed_at = Some(cut.elapsed());
        }
        if running.iter().any(|pid| *pid != old_pid) {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "not moved in 60 s; logs:\n{}",
            lab.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = cut.elapsed();
    let answer = wait_echo(&observer, "islander", START).await;
    let moved = cut.elapsed();
    println!(
        "partition: the cut-off copy was killed {:?} after the cut, a survivor's copy was running {started:?} and answered {moved:?} after it ({samples} samples, never two)",
        killed_at.unwrap_or_default()
    );
    let new_pid = answer["pid"].as_u64().unwrap();
    assert_ne!(node_of(new_pid), Some(holder), "moved off the cut-off node");

    // Healed, still never two copies (sampled for 3 s), and the survivor's copy runs on: the
    // old node does not start its copy again, and no member is purged for a partition that
    // healed (the cut-off leader's stale purge of a healthy member once moved it).
    lab.heal(holder);
    for _ in 0..60 {
        let running = python_copies("islander");
        assert!(running.len() <= 1, "two copies after the heal: {running:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let healed = wait_echo(&observer, "islander", START).await;
    assert_eq!(
        (&healed["pid"], &healed["url"]),
        (&answer["pid"], &answer["url"]),
        "the survivor's copy still serves after the heal; logs:\n{}",
        lab.logs()
    );
    assert!(python_copies("islander").len() <= 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let listed = sampler.await.expect("the list sampler");
    println!(
        "engine::workers::list through node {}: {} answers, slowest {:?}, {} without a row (between the purge and the new copy's registration), never two",
        watcher + 1,
        listed.answered,
        listed.slowest,
        listed.without_a_row
    );
    assert_eq!(listed.fault, None, "{listed:?}");
    assert_eq!(rows_named(&observer, "islander").await.len(), 1);
}

// ---------------------------------------------------------------------------
// Worker auth and worker TLS: managed workers get in with their node's local token

/// The worker token the tests' callers hold (the tokens file's `bootstrap` entry).
const CALLER_TOKEN: &str = "managed-auth-caller-token";

/// One node with `--worker-auth token` (its tokens file in `dir`) and `extra` arguments,
/// running managed Python workers (and Node ones when `node_env` is given).
fn token_cluster(
    python: &Path,
    node_env: Option<&Path>,
    dir: &Path,
    extra: Vec<String>,
) -> Cluster {
    let mut options = node_options(python, node_env, &[]);
    options.args.extend(worker_token_args(dir, CALLER_TOKEN));
    options.args.extend(extra);
    Cluster::start_with(1, |_| options.clone())
}

/// `url` with the callers' worker token as `?token=`.
fn with_caller_token(url: &str) -> String {
    format!("{url}/?token={CALLER_TOKEN}")
}

/// The local token in a managed worker's `III_URL`, as its echo reports it.
fn local_token(answer: &Value) -> String {
    let url = answer["url"].as_str().expect("the worker's url");
    match url.split_once("/?token=") {
        Some((_, token)) => token.to_string(),
        None => panic!("no local token in {url}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_worker_auth_a_managed_worker_gets_in_and_its_token_stays_out_of_status_and_logs() {
    let Some(python) = python().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = token_cluster(&python, None, dir.path(), Vec::new());
    let added = Instant::now();
    cluster
        .worker_cli(0, &["add", project("python-echo").to_str().unwrap()])
        .expect("add");
    let url = with_caller_token(&cluster.node(0).url);
    let caller = worker(&url, &unique_name("caller"), None).await;
    let answer = wait_echo(&caller, "python-echo", START).await;
    println!(
        "callable {:?} after `worker add` under --worker-auth token",
        added.elapsed()
    );
    let token = local_token(&answer);
    assert_eq!(token.len(), 64, "{answer}");
    let rows = rows_named(&caller, "python-echo").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["managed"], true, "{rows:?}");
    assert_eq!(rows[0]["restarts"], 0, "ready at its first start: {rows:?}");

    let status = cluster
        .worker_cli(0, &["status", "python-echo"])
        .expect("status");
    assert!(!status.to_string().contains(&token), "{status}");
    let credentials = cluster.credentials();
    let address = &cluster.node(0).cluster;
    let logs = eventually(
        "the worker's own line is in its log",
        Duration::from_secs(10),
        || async {
            cli_text(
                &[],
                "worker",
                &credentials,
                address,
                &["logs", "python-echo"],
            )
            .ok()
            .filter(|logs| logs.contains("python-echo connecting to"))
        },
    )
    .await;
    assert!(!logs.contains(&token), "{logs}");
    assert!(logs.contains("/?token=<local-token>"), "{logs}");
    assert!(
        !cluster.logs().contains(&token),
        "the node's log shows the local token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_worker_auth_a_managed_node_worker_gets_in_and_the_url_its_sdk_prints_is_hidden() {
    let Some(python) = python().await else { return };
    let Some(node_env) = env_or_skip("Node", &NODE, prepare_node_env).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = token_cluster(&python, Some(&node_env), dir.path(), Vec::new());
    cluster
        .worker_cli(0, &["add", project("node-echo").to_str().unwrap()])
        .expect("add");
    let url = with_caller_token(&cluster.node(0).url);
    let caller = worker(&url, &unique_name("caller"), None).await;
    let answer = wait_echo(&caller, "node-echo", START).await;
    let token = local_token(&answer);
    let rows = rows_named(&caller, "node-echo").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["managed"], true, "{rows:?}");
    // The Node SDK's telemetry prints the engine URL it connected to, token and all.
    let credentials = cluster.credentials();
    let address = &cluster.node(0).cluster;
    let logs = eventually(
        "the SDK's telemetry line is in the log",
        Duration::from_secs(15),
        || async {
            cli_text(&[], "worker", &credentials, address, &["logs", "node-echo"])
                .ok()
                .filter(|logs| logs.contains("Connected to engine at"))
        },
    )
    .await;
    assert!(!logs.contains(&token), "{logs}");
    assert!(logs.contains("?token=<local-token>"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_token_admits_only_its_own_worker_name_and_a_wrong_one_gets_401() {
    let Some(python) = python().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = token_cluster(&python, None, dir.path(), Vec::new());
    let command = format!(
        "python {}",
        project("python-echo").join("worker.py").display()
    );
    for name in ["alpha", "beta"] {
        cluster
            .worker_cli(0, &["add", "--name", name, "--command", &command])
            .expect("add");
    }
    let url = cluster.node(0).url.clone();
    let caller = worker(&with_caller_token(&url), &unique_name("caller"), None).await;
    wait_echo(&caller, "alpha", START).await;
    let beta = wait_echo(&caller, "beta", START).await;

    // Beta's token, from loopback, gets a connection in, but not as alpha.
    let mut impostor = RawClient::connect(&format!("{url}/?token={}", local_token(&beta))).await;
    let announced = impostor
        .call(
            "engine::workers::register",
            json!({"runtime": "raw", "name": "alpha"}),
        )
        .await;
    assert_eq!(announced["error"]["code"], "FORBIDDEN", "{announced}");
    let message = announced["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("'beta'"), "{announced}");
    let rows = rows_named(&caller, "alpha").await;
    assert_eq!(rows.len(), 1, "only the real alpha: {rows:?}");
    call(&caller, "alpha::echo", json!({}))
        .await
        .expect("alpha still answers");

    // A token that is neither a local token nor a worker token: 401 before any WebSocket.
    let wrong = format!("{url}/?token={}", "0".repeat(64));
    match tokio_tungstenite::connect_async(wrong.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401)
        }
        Err(other) => panic!("neither an upgrade nor an HTTP refusal: {other}"),
        Ok(_) => panic!("a wrong local token got in"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_worker_tls_a_managed_worker_connects_over_loopback_and_a_token_holder_calls_it() {
    let Some(python) = python().await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new();
    let cluster = token_cluster(&python, None, dir.path(), pki.tls_args());
    let added = Instant::now();
    cluster
        .worker_cli(0, &["add", project("python-echo").to_str().unwrap()])
        .expect("add");
    let relay = TlsRelay::start(&pki, cluster.node(0)).await;
    let caller = worker(&with_caller_token(&relay.url), &unique_name("caller"), None).await;
    let answer = wait_echo(&caller, "python-echo", START).await;
    println!(
        "callable {:?} after `worker add` with worker TLS and --worker-auth token",
        added.elapsed()
    );
    let url = answer["url"].as_str().expect("url");
    assert!(
        url.starts_with("ws://127.0.0.1:"),
        "plain, on loopback: {url}"
    );
    let tls_port = format!(":{}/", port_of(&cluster.node(0).listen));
    assert!(
        !url.contains(&tls_port),
        "a listener of its own, not the TLS port: {url}"
    );
    assert_eq!(local_token(&answer).len(), 64, "{answer}");
    let rows = rows_named(&caller, "python-echo").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["managed"], true, "{rows:?}");
}
