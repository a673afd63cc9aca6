//! The deployment files, checked without a Kubernetes cluster, Docker or the helm binary.
//!
//! `tests/helm/check_chart.py` lints and renders `deploy/helm/quorum` with
//! helm-python-sdk (Helm's Go SDK behind a C library), validates every rendered object
//! against the Kubernetes API schemas with kubernetes-validate, and asserts what a quorum
//! cluster relies on (the shared ordinal `--join` list, the headless Service publishing
//! not-ready pods, a quorum-keeping disruption budget, probes, a non-root read-only pod).
//! `tests/helm/check_compose.py` holds the compose file and the HAProxy config to the
//! same bootstrap rule.
//!
//! Both run in a venv at `target/sdk-envs/helm`, set up once like the Python SDK's. Without
//! `python3` (and its `venv` module) or without the package registry the tests print
//! `SKIPPED: <reason>` and pass, unless `CI=true`, where they fail with the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::sdk_env::{run_bounded, unavailable, EnvCell};
use common::sdks::prepare_helm_env;

/// Rendering and validating a handful of value sets takes seconds; this bounds a hang.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// Prepared once for both tests of this binary.
static ENV: EnvCell = EnvCell::new();

fn python_or_skip() -> Option<PathBuf> {
    match ENV.get_or_init(prepare_helm_env).clone() {
        Ok(python) => Some(python),
        Err(reason) => {
            unavailable("helm-python-sdk", &reason);
            None
        }
    }
}

/// Runs `tests/helm/<script>` on `target` (relative to the repository) and prints its
/// report; a failed check fails the test with the script's output.
fn run_check(python: &Path, script: &str, target: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let result = run_bounded(
        Command::new(python)
            .arg(root.join("tests/helm").join(script))
            .arg(root.join(target))
            .env("PYTHONUNBUFFERED", "1")
            // check_compose.py runs init-certs.sh with the real binary.
            .env("QUORUM_BIN", env!("CARGO_BIN_EXE_quorum")),
        CHECK_TIMEOUT,
        None,
    );
    match result {
        Ok(report) => println!("{report}"),
        Err(failure) => panic!("{script} failed:\n{failure}"),
    }
}

#[test]
fn helm_chart_lints_renders_and_validates() {
    let Some(python) = python_or_skip() else {
        return;
    };
    run_check(&python, "check_chart.py", "deploy/helm/quorum");
}

#[test]
fn compose_cluster_follows_the_bootstrap_rule() {
    let Some(python) = python_or_skip() else {
        return;
    };
    run_check(&python, "check_compose.py", "deploy/compose");
}
