//! Managed workers across a cluster: real quorum nodes place, start, restart and move real
//! Python and Node SDK workers started from the manifests in `tests/managed/`, driven through
//! `quorum worker`, also on nodes with `--worker-auth token` and worker TLS. Every test
//! prints the timings it measured (docs/managed-workers.md).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// `quorum worker ARGS --address <node i> --json`.
fn worker_cli(cluster: &Cluster, i: usize, args: &[&str]) -> Result<Value, String> {
    cli_json(
        &[],
        "worker",
        &cluster.credentials(),
        &cluster.node(i).cluster,
        args,
    )
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

/// Waits until `name::echo` answers through `observer`; returns the answer.
async fn wait_echo(observer: &IIIClient, name: &str, deadline: Duration) -> Value {
    let function = format!("{name}::echo");
    eventually(&format!("{function} answers"), deadline, || async {
        call(observer, &function, json!({"ping": 1})).await.ok()
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

fn pid_alive(pid: u64) -> bool {
    // A zombie is dead for our purpose: it runs no code and holds no socket.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The pids of the Python processes running a managed worker named `name` (read from
/// `/proc`: its `III_WORKER_NAME` and an interpreter as the program).
fn python_copies(name: &str) -> Vec<u64> {
    let wanted = format!("III_WORKER_NAME={name}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
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
                && pid_alive(*pid)
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
    worker_cli(
        &cluster,
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
        let command = format!("python {}", dir.join("worker.py").display());
        worker_cli(&cluster, 1, &["add", "--name", name, "--command", &command]).expect("add");
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
    worker_cli(
        &cluster,
        0,
        &["add", project("python-echo").to_str().unwrap()],
    )
    .expect("add");
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, "python-echo", START).await;
    let crashed = Instant::now();
    assert!(
        call(&observer, "python-echo::crash", json!({}))
            .await
            .is_err(),
        "the call that kills the process fails"
    );
    let again = eventually("a new process answers", START, || async {
        call(&observer, "python-echo::echo", json!({}))
            .await
            .ok()
            .filter(|a| a["pid"] != first["pid"])
    })
    .await;
    println!("callable again {:?} after the crash", crashed.elapsed());
    assert!(!pid_alive(first["pid"].as_u64().unwrap()));
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
    worker_cli(
        &cluster,
        0,
        &["add", project("python-echo").to_str().unwrap()],
    )
    .expect("add");
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, "python-echo", START).await;
    worker_cli(&cluster, 1, &["restart", "python-echo"]).expect("worker restart");
    let again = eventually("a new process answers", START, || async {
        call(&observer, "python-echo::echo", json!({}))
            .await
            .ok()
            .filter(|a| a["pid"] != first["pid"])
    })
    .await;
    assert!(
        !pid_alive(first["pid"].as_u64().unwrap()),
        "the old process is gone"
    );
    assert_eq!(again["url"], first["url"], "restarted on the same node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_its_node_moves_the_worker_to_a_survivor_and_never_shows_two_copies() {
    let Some(python) = python().await else { return };
    let mut cluster = python_cluster(&python);
    let command = format!(
        "python {}",
        project("python-echo").join("worker.py").display()
    );
    worker_cli(
        &cluster,
        0,
        &["add", "--name", "mover", "--command", &command],
    )
    .expect("add");
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, "mover", START).await;
    let holder = node_of_url(&cluster, first["url"].as_str().unwrap());
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
        !pid_alive(first["pid"].as_u64().unwrap()),
        "the old copy died with its node"
    );
    for _ in 0..20 {
        let rows = rows_named(&observer, "mover").await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_spec_stops_the_worker_everywhere() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    worker_cli(
        &cluster,
        1,
        &["add", project("python-echo").to_str().unwrap()],
    )
    .expect("add");
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    let answer = wait_echo(&observer, "python-echo", START).await;
    let pid = answer["pid"].as_u64().unwrap();
    assert!(pid_alive(pid));
    worker_cli(&cluster, 2, &["remove", "python-echo"]).expect("remove");
    eventually("the process is gone", Duration::from_secs(20), || async {
        (!pid_alive(pid)).then_some(())
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
    let err = worker_cli(&cluster, 0, &["remove", "python-echo"]).unwrap_err();
    assert!(err.contains("no managed worker named"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_specs_with_one_name_and_a_label_no_node_has_are_refused_or_reported() {
    let Some(python) = python().await else { return };
    let cluster = python_cluster(&python);
    worker_cli(
        &cluster,
        0,
        &["add", "--name", "twin", "--command", "sleep 600"],
    )
    .expect("add");
    // The same spec again is fine (idempotent); another under the same name is refused.
    worker_cli(
        &cluster,
        1,
        &["add", "--name", "twin", "--command", "sleep 600"],
    )
    .expect("the same spec again");
    let err = worker_cli(
        &cluster,
        1,
        &["add", "--name", "twin", "--command", "sleep 601"],
    )
    .unwrap_err();
    assert!(
        err.contains("already exists with a different spec"),
        "{err}"
    );

    worker_cli(
        &cluster,
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
        worker_cli(&cluster, 2, &["status", "nowhere"])
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
    worker_cli(
        &cluster,
        0,
        &["add", project("node-echo").to_str().unwrap()],
    )
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
    let command = format!(
        "python {}",
        project("python-echo").join("worker.py").display()
    );
    worker_cli(
        &cluster,
        0,
        &["add", "--name", "rolling", "--command", &command],
    )
    .expect("add");
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    let first = wait_echo(&observer, "rolling", START).await;
    let holder = node_of_url(&cluster, first["url"].as_str().unwrap());
    let caller_node = cluster.live().into_iter().find(|i| *i != holder).unwrap();
    let caller = worker(&cluster.node(caller_node).url, &unique_name("caller"), None).await;

    // Two callers in a loop for the whole drain, each call taking 50 ms in the worker.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let caller = caller.clone();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut urls) =
                (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match call(&caller, "rolling::slow", json!({"ms": 50})).await {
                    Ok(answer) => {
                        ok += 1;
                        urls.insert(answer["url"].as_str().unwrap_or("").to_string());
                    }
                    Err(err) => failed.push(err.to_string()),
                }
            }
            (ok, failed, urls)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    assert!(!pid_alive(first["pid"].as_u64().unwrap()));
    assert_eq!(rows_named(&caller, "rolling").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_kills_its_copy_before_a_survivor_starts_one() {
    use common::netns::{self, NetnsLab};
    let Some(python) = python().await else { return };
    if let Some(reason) = netns::unavailable() {
        println!("SKIPPED: {reason}");
        return;
    }
    let mut lab = match NetnsLab::create(3) {
        Ok(lab) => lab,
        Err(reason) => {
            println!("SKIPPED: cannot make network namespaces: {reason}");
            return;
        }
    };
    lab.start(0, &[]);
    let seed = lab.cluster_addr(0);
    lab.start(1, &["--join", &seed]);
    lab.start(2, &["--join", &seed]);
    let worker_cli = |i: usize, args: &[&str]| {
        cli_json(
            &lab.wrapper(i),
            "worker",
            &lab.admin_args(),
            &lab.cluster_addr(i),
            args,
        )
    };
    // The nodes' PATH is the test's: name the venv's python outright.
    let command = format!(
        "{} {}",
        python.display(),
        project("python-echo").join("worker.py").display()
    );
    eventually("the worker is added", Duration::from_secs(30), || async {
        worker_cli(0, &["add", "--name", "islander", "--command", &command]).ok()
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

    let cut = Instant::now();
    lab.cut(holder);
    // Sample the Python processes that run the worker every 50 ms (the engine's list would
    // wait on the cut-off node), until a second process exists: by then the first must be gone.
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

    // Healed, the old node does not start its copy again: the worker is placed elsewhere.
    // Healed, still never two copies (processes, not the engine's list: a list may wait on
    // the node that rejoins), and the worker is callable again.
    lab.heal(holder);
    for _ in 0..60 {
        let running = python_copies("islander");
        assert!(running.len() <= 1, "two copies after the heal: {running:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_echo(&observer, "islander", START).await;
    assert!(python_copies("islander").len() <= 1);
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
    worker_cli(
        &cluster,
        0,
        &["add", project("python-echo").to_str().unwrap()],
    )
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

    let status = worker_cli(&cluster, 0, &["status", "python-echo"]).expect("status");
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
    worker_cli(
        &cluster,
        0,
        &["add", project("node-echo").to_str().unwrap()],
    )
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
        worker_cli(&cluster, 0, &["add", "--name", name, "--command", &command]).expect("add");
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
    worker_cli(
        &cluster,
        0,
        &["add", project("python-echo").to_str().unwrap()],
    )
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
