//! The managed image (`--target managed-runtime`, on the Debian stand-in with python3 and
//! node) runs managed workers from their manifests, as docs/deploy.md says it does: a
//! Python SDK worker named in the node's `workers:` config, and a Node SDK worker added
//! with `quorum worker add` inside the container. The SDKs are the test's own pinned ones
//! (PyPI and npm `iii-sdk`), mounted read-only into the container, so the container needs
//! no registry. A real Rust SDK client on the host calls each worker's function through the
//! container's published worker port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use iii_sdk::{IIIClient, InitOptions};
use serde_json::{json, Value};

use super::common::sdk_env::{env_or_skip, EnvCell};
use super::common::sdks::{prepare_node_env, prepare_python_env};
use super::common::{call, eventually};
use super::docker::{Docker, Scope};
use super::images::MANAGED;
use super::{docker_with_images, serial};

static PYTHON: EnvCell = EnvCell::new();
static NODE: EnvCell = EnvCell::new();

/// From the container's start to a managed worker's function answering: the node starts,
/// elects itself, places the worker and the runtime loads its SDK.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Where the test's directories appear inside the container.
const WORKERS_MOUNT: &str = "/workers";
const SDK_MOUNT: &str = "/sdk";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_image_runs_a_python_sdk_worker_from_its_config() {
    let _serial = serial();
    let Some(docker) = docker_with_images() else {
        return;
    };
    let Some(python) = env_or_skip("Python", &PYTHON, prepare_python_env).await else {
        return;
    };
    let site_packages = site_packages(&python);
    let scope = Scope::new(docker, "managed-py");
    let guard = Cleanup(&scope);

    let workers = WorkerDirs::new();
    let dir = workers.worker(
        "python-echo",
        "python-echo/worker.py",
        &format!(
            "name: python-echo\nruntime:\n  kind: python\n  entry: worker.py\nscripts:\n  start: exec python3 worker.py\nenv:\n  PYTHONPATH: {SDK_MOUNT}/python\n  ECHO_MARKER: python-in-image\n"
        ),
    );
    workers.config(&format!("workers:\n  - path: {WORKERS_MOUNT}/{dir}\n"));

    let container = run_node(
        &scope,
        &workers,
        &site_packages,
        "python",
        &["--config", &format!("{WORKERS_MOUNT}/quorum.yaml")],
    );
    let client = client_of(docker, &container).await;
    let answer = answered(&client, "python-echo::echo", docker, &container).await;
    assert_eq!(answer["marker"], "python-in-image", "{answer}");
    assert_eq!(answer["echo"]["n"], 1, "{answer}");
    assert_managed_row(&client, "python-echo").await;
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_image_runs_a_node_sdk_worker_added_through_its_cli() {
    let _serial = serial();
    let Some(docker) = docker_with_images() else {
        return;
    };
    let Some(node_env) = env_or_skip("Node", &NODE, prepare_node_env).await else {
        return;
    };
    let scope = Scope::new(docker, "managed-node");
    let guard = Cleanup(&scope);

    // Debian bookworm's Node.js is 18, where the global `crypto` the SDK uses is still
    // behind a flag.
    let workers = WorkerDirs::new();
    let dir = workers.worker(
        "node-echo",
        "node-echo/worker.mjs",
        &format!(
            "name: node-echo\nruntime:\n  kind: node\n  entry: worker.mjs\nscripts:\n  start: exec node --experimental-global-webcrypto worker.mjs\nenv:\n  III_SDK_ENV: {SDK_MOUNT}/node\n  ECHO_MARKER: node-in-image\n"
        ),
    );

    let container = run_node(&scope, &workers, &node_env, "node", &[]);
    let client = client_of(docker, &container).await;
    // The CLI in the image, against its own node: the path is the container's.
    let added = eventually("`quorum worker add` in the container", READY_WITHIN, || {
        let result = docker.run(&[
            "exec",
            &container,
            "quorum",
            "worker",
            "add",
            "--json",
            &format!("{WORKERS_MOUNT}/{dir}"),
        ]);
        async move { result.ok() }
    })
    .await;
    let added: Value = serde_json::from_str(added.trim()).expect("`worker add --json` output");
    assert_eq!(added["name"], "node-echo", "worker add printed: {added}");

    let answer = answered(&client, "node-echo::echo", docker, &container).await;
    assert_eq!(answer["marker"], "node-in-image", "{answer}");
    assert_eq!(answer["echo"]["n"], 1, "{answer}");
    assert_managed_row(&client, "node-echo").await;
    drop(guard);
}

/// Removes the run's containers when the test ends, also when it fails.
struct Cleanup<'a>(&'a Scope);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.0.clean();
    }
}

/// A directory mounted at [`WORKERS_MOUNT`]: one worker directory per worker (its
/// manifest and the script from `tests/managed/`), and the node's config. Readable by the
/// image's user (65532), which is not the test's.
struct WorkerDirs {
    root: tempfile::TempDir,
}

impl WorkerDirs {
    fn new() -> WorkerDirs {
        let root = tempfile::tempdir().expect("temp dir");
        readable(root.path(), 0o755);
        WorkerDirs { root }
    }

    /// `name/` holding `iii.worker.yaml` and the script `tests/managed/<script>`; the
    /// directory's name under the mount.
    fn worker(&self, name: &str, script: &str, manifest: &str) -> String {
        let dir = self.root.path().join(name);
        std::fs::create_dir(&dir).expect("worker dir");
        readable(&dir, 0o755);
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/managed")
            .join(script);
        let file_name = source.file_name().expect("script name");
        std::fs::copy(&source, dir.join(file_name)).expect("copy the worker script");
        readable(&dir.join(file_name), 0o644);
        std::fs::write(dir.join("iii.worker.yaml"), manifest).expect("manifest");
        readable(&dir.join("iii.worker.yaml"), 0o644);
        name.to_string()
    }

    fn config(&self, text: &str) {
        let path = self.root.path().join("quorum.yaml");
        std::fs::write(&path, text).expect("config");
        readable(&path, 0o644);
    }

    fn path(&self) -> &Path {
        self.root.path()
    }
}

fn readable(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The venv's `site-packages` beside its `bin/python`.
fn site_packages(python: &Path) -> PathBuf {
    let lib = python
        .parent()
        .and_then(Path::parent)
        .expect("venv root")
        .join("lib");
    std::fs::read_dir(&lib)
        .expect("venv lib")
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("site-packages"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("no site-packages under {lib:?}"))
}

/// One node of the managed image with the worker directories and the SDK `sdk` mounted
/// read-only, its worker port published on loopback; the container's name.
fn run_node(
    scope: &Scope,
    workers: &WorkerDirs,
    sdk: &Path,
    sdk_name: &str,
    flags: &[&str],
) -> String {
    let name = scope.name("quorum");
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
    args.extend(scope.label());
    args.extend(["--publish".into(), "127.0.0.1::49134".into()]);
    args.push("--no-healthcheck".into());
    args.extend([
        "--volume".into(),
        format!("{}:{WORKERS_MOUNT}:ro", workers.path().display()),
        "--volume".into(),
        format!("{}:{SDK_MOUNT}/{sdk_name}:ro", sdk.display()),
        MANAGED.into(),
        "serve".into(),
        "--data-dir".into(),
        "/data".into(),
    ]);
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    scope.docker().ok(&args);
    name
}

/// A Rust SDK client connected to the container's published worker port, registered once
/// the node accepts workers (the SDK retries its connection until then).
async fn client_of(docker: &'static Docker, container: &str) -> IIIClient {
    let address = eventually("the worker port published", READY_WITHIN, || {
        let address = docker.host_port(container, 49134);
        async move { address }
    })
    .await;
    let client = iii_sdk::register_worker(&format!("ws://{address}"), InitOptions::default());
    if let Err(err) = client.wait_until_registered(READY_WITHIN).await {
        panic!(
            "no connection to the node ({err}); its log:\n{}",
            docker.logs(container, 60)
        );
    }
    client
}

/// The first answer of `function_id` to `{n: 1}`, polled until the managed worker serves
/// it; the container's log on failure.
async fn answered(
    client: &IIIClient,
    function_id: &str,
    docker: &Docker,
    container: &str,
) -> Value {
    let until = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        match call(client, function_id, json!({"n": 1})).await {
            Ok(answer) => return answer,
            Err(err) if tokio::time::Instant::now() > until => panic!(
                "{function_id} never answered ({err}); the node's log:\n{}",
                docker.logs(container, 60)
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The worker's `engine::workers::list` row says it is managed.
async fn assert_managed_row(client: &IIIClient, name: &str) {
    let listed = call(client, "engine::workers::list", json!({}))
        .await
        .expect("engine::workers::list");
    let rows: Vec<&Value> = listed["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["name"] == name)
        .collect();
    assert_eq!(rows.len(), 1, "one connection named {name}: {listed}");
    assert_eq!(rows[0]["managed"], true, "{listed}");
}
