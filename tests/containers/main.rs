//! The deployment files run for real (issue 13): the image built from
//! `deploy/docker/Dockerfile` over the binary cargo built for the tests, on base images made
//! from Debian packages (`deploy/docker/local-images.sh`, no registry needed); the Helm
//! chart's rendered StatefulSet run as Docker containers exactly as it describes its pods;
//! and `deploy/compose/docker-compose.yml` brought up as shipped.
//!
//! Needs root, a Docker daemon and mmdebstrap (`.ci/run` installs them and starts `dockerd`);
//! without them every test says `SKIPPED: <reason>` and passes, except under `CI=true`. Each
//! test removes the containers, networks and volumes it made (all labelled with its run),
//! also when it fails. Only ephemeral 127.0.0.1 ports are published.
//!
//! The tests run one at a time: they share two CPU cores with the containers they start, and
//! a timing one test measures must not include another's load.

// The serial guard is held across the awaits of a whole test on purpose: that is its job.
#![allow(clippy::await_holding_lock)]

#[path = "../common/mod.rs"]
mod common;

mod balancer;
mod chart;
mod docker;
mod images;
mod pods;

mod chart_pods;
mod compose;
mod managed;
mod partition;
mod rolling;
mod traffic;

use std::sync::{Mutex, MutexGuard};

use iii_sdk::{Error, IIIClient, RegisterFunction};
use serde_json::{json, Value};

pub use common::rng::Rng;

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for the whole of one container test.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Docker with the images built, or `None` after a `SKIPPED` line saying what is missing.
pub fn docker_with_images() -> Option<&'static docker::Docker> {
    let docker = docker::docker_or_skip()?;
    images::images_or_skip(docker)?;
    Some(docker)
}

/// [`docker_with_images`] and the chart rendered with `values`.
pub fn prerequisites(values: Value) -> Option<(&'static docker::Docker, chart::Chart)> {
    let docker = docker_with_images()?;
    let chart = chart::Chart::render_or_skip(values)?;
    Some((docker, chart))
}

/// A real Rust SDK worker (connected through `url`) serving `containers::w{i}`, an echo
/// that says who answered.
pub async fn echo_worker(url: &str, i: usize) -> IIIClient {
    let name = common::unique_name(&format!("containers{i}"));
    let client = common::worker(url, &name, None).await;
    client.register_function(
        format!("containers::w{i}"),
        RegisterFunction::new_async(move |input: Value| async move {
            Ok::<Value, Error>(json!({ "n": input["n"], "by": i }))
        }),
    );
    client
}
