//! The pinned foreign-language SDK environments (PyPI `iii-sdk` 0.25.0 in a venv, npm
//! `iii-sdk` 0.22.x from `tests/node/package.json`), shared by every test binary that runs
//! an SDK script. Each binary keeps its own `EnvCell` so it prepares them once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::sdk_env::{
    env_dir, install_locked, python_venv, read_marker, run_bounded, tool_version, write_marker,
};

// ---------------------------------------------------------------------------
// Python

pub const SDK_REQUIREMENT: &str = "iii-sdk==0.25.0";
pub const SDK_VERSION: &str = "0.25.0";

/// The venv's python, installing the SDK first if needed.
pub fn prepare_python_env() -> Result<PathBuf, String> {
    python_venv(
        "python",
        &[SDK_REQUIREMENT],
        "import iii, importlib.metadata as m; print(m.version('iii-sdk'))",
        |installed| {
            if installed == SDK_VERSION {
                Ok(())
            } else {
                Err(format!(
                    "pip installed iii-sdk {installed}, wanted {SDK_VERSION}"
                ))
            }
        },
    )
}

// ---------------------------------------------------------------------------
// Helm (the chart rendered without a cluster or the helm binary)

/// Pinned so a new release of either cannot change what the chart tests check unnoticed.
pub const HELM_REQUIREMENTS: [&str; 2] = ["helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0"];

/// The venv's python with helm-python-sdk (Helm's Go SDK behind a C library) and
/// kubernetes-validate, installing them first if needed.
pub fn prepare_helm_env() -> Result<PathBuf, String> {
    // The SDK loads its native library on import: prove it does on this platform.
    python_venv(
        "helm",
        &HELM_REQUIREMENTS,
        "import helm_python, kubernetes_validate, yaml; print(helm_python.helm_sdk_version())",
        |_| Ok(()),
    )
}

// ---------------------------------------------------------------------------
// Node

/// The minor version the protocol notes describe; package.json pins `0.22.x`.
pub const SDK_VERSION_PREFIX: &str = "0.22.";
/// The oldest Node.js the SDK's code runs on: it calls the global `crypto.randomUUID()`
/// without importing it, and that global exists by default only from Node 19 on.
pub const MIN_NODE_MAJOR: u32 = 20;
/// Bounds for the one-time set-up.
pub const NPM_TIMEOUT: Duration = Duration::from_secs(600);

pub fn tests_node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("node")
}

fn installed_sdk_version() -> Option<String> {
    let text = fs::read_to_string(
        env_dir("node")
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
    read_marker("node").is_some_and(|m| m == wanted)
        && installed_sdk_version().is_some_and(|v| v.starts_with(SDK_VERSION_PREFIX))
}

/// The environment directory, installing it first if needed.
pub fn prepare_node_env() -> Result<PathBuf, String> {
    let version = tool_version("node")?;
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
        return Ok(env_dir("node"));
    }
    run_bounded(
        Command::new("npm").arg("--version"),
        Duration::from_secs(60),
        None,
    )
    .map_err(|e| format!("npm is not usable: {e}"))?;
    install_locked(
        "node",
        || env_is_ready(&package_json),
        |dir, log| {
            fs::create_dir_all(dir).map_err(|e| format!("create {dir:?}: {e}"))?;
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
                    .current_dir(dir),
                NPM_TIMEOUT,
                Some(log),
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
            write_marker("node", &package_json)
        },
    )?;
    Ok(env_dir("node"))
}
