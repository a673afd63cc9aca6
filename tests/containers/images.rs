//! The images the tests run, made once per test binary with no registry: the stand-in base
//! images from Debian packages (`deploy/docker/local-images.sh`), then the repository's
//! Dockerfile packing the `quorum` binary cargo built for these tests (`--target runtime`,
//! the compose file's `certs-init`, and `--target managed-runtime` for managed workers).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::common::sdk_env::run_bounded;
use super::docker::{skip, Docker};

/// Making the base images fetches Debian packages (the managed base, with python3 and
/// node, takes most of it: about 10 minutes once on the project machine); building packs
/// one binary.
const BASES_TIMEOUT: Duration = Duration::from_secs(1200);
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// The stand-ins `local-images.sh` makes.
pub const RUNTIME_BASE: &str = "quorum-local/cc:nonroot";
pub const CERTS_INIT_BASE: &str = "quorum-local/cc:debug-nonroot";
pub const HAPROXY: &str = "quorum-local/haproxy:bookworm";
pub const MANAGED_BASE: &str = "quorum-local/managed:bookworm";

/// The tags of the images built from this checkout.
pub const QUORUM: &str = "quorum-test:runtime";
pub const CERTS_INIT: &str = "quorum-test:certs-init";
pub const MANAGED: &str = "quorum-test:managed";

/// Proof the images exist.
pub struct Images;

/// Why there are no images: this machine cannot make the base images (skipped), or the
/// repository's Dockerfile does not build (always a failure).
enum Failure {
    Unavailable(String),
    Broken(String),
}

static IMAGES: OnceLock<Result<Images, Failure>> = OnceLock::new();

/// The images, or `None` after saying why the base images cannot be made here (a failure
/// under `CI=true`). A Dockerfile that does not build fails the test.
pub fn images_or_skip(docker: &Docker) -> Option<&'static Images> {
    let made = IMAGES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        run_bounded(
            Command::new(root.join("deploy/docker/local-images.sh"))
                .env("DOCKER", docker.program()),
            BASES_TIMEOUT,
            None,
        )
        .map_err(|e| {
            Failure::Unavailable(format!(
                "cannot make the local base images (needs root, mmdebstrap, a Debian mirror): {e}"
            ))
        })?;
        build_all(docker).map_err(Failure::Broken)
    });
    match made {
        Ok(images) => Some(images),
        Err(Failure::Unavailable(reason)) => {
            skip(reason);
            None
        }
        Err(Failure::Broken(reason)) => panic!("{reason}"),
    }
}

fn build_all(docker: &Docker) -> Result<Images, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // A build context of the files the two targets copy: the test binary (a hard link where
    // possible, so nothing is copied) and the compose file's certificate script.
    let context = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let binary = Path::new(env!("CARGO_BIN_EXE_quorum"));
    let packed = context.path().join("quorum");
    if std::fs::hard_link(binary, &packed).is_err() {
        std::fs::copy(binary, &packed).map_err(|e| format!("copy {binary:?}: {e}"))?;
    }
    let script = context.path().join("deploy/compose/init-certs.sh");
    std::fs::create_dir_all(script.parent().expect("script has a parent"))
        .map_err(|e| format!("context dir: {e}"))?;
    std::fs::copy(root.join("deploy/compose/init-certs.sh"), &script)
        .map_err(|e| format!("copy init-certs.sh: {e}"))?;

    let started = Instant::now();
    build(
        docker,
        context.path(),
        QUORUM,
        &[
            "--target=runtime",
            &format!("--build-arg=RUNTIME_IMAGE={RUNTIME_BASE}"),
            "--build-arg=QUORUM_BINARY=quorum",
        ],
    )?;
    let build_seconds = started.elapsed().as_secs_f64();
    build(
        docker,
        context.path(),
        CERTS_INIT,
        &[
            "--target=certs-init",
            &format!("--build-arg=CERTS_INIT_IMAGE={CERTS_INIT_BASE}"),
            "--build-arg=CERTS_INIT_BINARY_FROM=packed",
            "--build-arg=QUORUM_BINARY=quorum",
        ],
    )?;
    build(
        docker,
        context.path(),
        MANAGED,
        &[
            "--target=managed-runtime",
            &format!("--build-arg=MANAGED_IMAGE={MANAGED_BASE}"),
            "--build-arg=QUORUM_BINARY=quorum",
        ],
    )?;
    println!("images: {QUORUM} packed in {build_seconds:.1} s");
    Ok(Images)
}

/// `docker build` of the repository's Dockerfile in `context`, tagged `tag`; the image the
/// tag named before is removed (unless something still uses it), so runs do not pile up.
fn build(docker: &Docker, context: &Path, tag: &str, args: &[&str]) -> Result<(), String> {
    let previous = docker
        .run(&["image", "inspect", "--format", "{{.Id}}", tag])
        .ok();
    let dockerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/docker/Dockerfile");
    run_bounded(
        docker
            .command()
            .arg("build")
            .arg("--quiet")
            .arg("-f")
            .arg(&dockerfile)
            .args(args)
            .arg("-t")
            .arg(tag)
            .arg(context),
        BUILD_TIMEOUT,
        None,
    )
    .map_err(|e| format!("docker build {tag} failed: {e}"))?;
    let now = docker
        .run(&["image", "inspect", "--format", "{{.Id}}", tag])
        .ok();
    if let Some(old) = previous.filter(|old| Some(old) != now.as_ref()) {
        let _ = docker.run(&["rmi", old.trim()]);
    }
    Ok(())
}
