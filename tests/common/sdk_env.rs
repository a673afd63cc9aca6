//! One-time installation of a foreign-language SDK environment under
//! `target/sdk-envs/<name>`: cached once per test binary by the caller, serialised
//! across processes by an atomic `mkdir` lock, completed by a ready marker. A missing
//! prerequisite skips the test locally and fails it when `CI=true`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a process waits for another one's set-up of the same environment.
const LOCK_TIMEOUT: Duration = Duration::from_secs(900);
/// Bounds for the steps of a Python environment's set-up.
const VENV_TIMEOUT: Duration = Duration::from_secs(120);
const PIP_TIMEOUT: Duration = Duration::from_secs(600);
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reports a missing prerequisite for the `what` SDK: a `SKIPPED:` line locally, a
/// failure in CI, so that CI can never pass without running the test.
pub fn unavailable(what: &str, reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and the {what} SDK environment is unavailable: {reason}");
    }
    // One clear line first; any detail (a tool's output) after it.
    let (head, detail) = reason.split_once('\n').unwrap_or((reason, ""));
    println!("SKIPPED: {head}");
    if !detail.is_empty() {
        println!("{detail}");
    }
}

/// The outcome of one environment's set-up, kept so a test binary prepares it once.
pub type EnvCell = OnceLock<Result<PathBuf, String>>;

/// Runs the blocking `prepare` off the async runtime, once per binary through `cell`;
/// its path, or `None` after reporting the reason through [`unavailable`], so a test
/// can return early.
pub async fn env_or_skip(
    what: &'static str,
    cell: &'static EnvCell,
    prepare: fn() -> Result<PathBuf, String>,
) -> Option<PathBuf> {
    match tokio::task::spawn_blocking(move || cell.get_or_init(prepare).clone())
        .await
        .expect("set-up task")
    {
        Ok(path) => Some(path),
        Err(reason) => {
            unavailable(what, &reason);
            None
        }
    }
}

/// The shared parent of all SDK environments, kept under `target/` so `cargo clean`
/// removes them.
pub fn envs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("sdk-envs")
}

/// The directory of the environment called `name`.
pub fn env_dir(name: &str) -> PathBuf {
    envs_dir().join(name)
}

/// The content of `name`'s ready marker, which is written last and so says the
/// environment is complete, and for what.
pub fn read_marker(name: &str) -> Option<String> {
    fs::read_to_string(marker_path(name)).ok()
}

/// Records that `name`'s environment is complete for `content`.
pub fn write_marker(name: &str, content: &str) -> Result<(), String> {
    fs::write(marker_path(name), content).map_err(|e| format!("write marker: {e}"))
}

fn marker_path(name: &str) -> PathBuf {
    env_dir(name).join(".quorum-sdk-ready")
}

/// Rebuilds environment `name` from scratch with `install(dir, log)`, holding the
/// cross-process lock, unless `is_ready` says another process finished it meanwhile.
pub fn install_locked(
    name: &str,
    is_ready: impl Fn() -> bool,
    install: impl FnOnce(&Path, &Path) -> Result<(), String>,
) -> Result<(), String> {
    fs::create_dir_all(envs_dir()).map_err(|e| format!("create {:?}: {e}", envs_dir()))?;
    let _lock = DirLock::acquire(&envs_dir().join(format!("{name}.lock")), LOCK_TIMEOUT)?;
    // Another process may have finished the set-up while we waited for the lock.
    if is_ready() {
        return Ok(());
    }
    let log = envs_dir().join(format!("{name}-setup.log"));
    let _ = fs::remove_file(&log);
    let dir = env_dir(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("remove stale {dir:?}: {e}"))?;
    }
    install(&dir, &log)
}

/// A Python virtual environment at `target/sdk-envs/<name>` with the pinned
/// `requirements` installed, set up once across processes; returns its python.
/// `probe` is Python code that must run in the new environment, and `accept` checks the
/// last line it printed (anything before that line is a warning).
pub fn python_venv(
    name: &str,
    requirements: &[&str],
    probe: &str,
    accept: impl Fn(&str) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let python = env_dir(name).join("bin").join("python");
    let marker = requirements.join(" ");
    let is_ready = || python.exists() && read_marker(name).is_some_and(|m| m.trim() == marker);
    let version = tool_version("python3")?;
    if is_ready() {
        return Ok(python);
    }
    install_locked(name, is_ready, |dir, log| {
        println!("setting up {dir:?} with {} ({marker})", version.trim());
        run_bounded(
            Command::new("python3").arg("-m").arg("venv").arg(dir),
            VENV_TIMEOUT,
            Some(log),
        )
        .map_err(|e| format!("`python3 -m venv` failed (is python3-venv installed?): {e}"))?;
        run_bounded(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                ])
                .args(requirements),
            PIP_TIMEOUT,
            Some(log),
        )
        .map_err(|e| format!("`pip install {marker}` failed: {e}"))?;
        let printed = run_bounded(
            Command::new(&python).arg("-c").arg(probe),
            PROBE_TIMEOUT,
            None,
        )
        .map_err(|e| format!("the installed packages do not import: {e}"))?;
        let last = printed
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("");
        accept(last.trim())?;
        write_marker(name, &marker)
    })?;
    Ok(python)
}

/// The output of `program --version`, proving the tool a set-up needs can run.
pub fn tool_version(program: &str) -> Result<String, String> {
    run_bounded(
        Command::new(program).arg("--version"),
        Duration::from_secs(30),
        None,
    )
    .map_err(|e| format!("{program} is not usable: {e}"))
}

/// Runs a set-up command to completion within `timeout` (killed by PID past it). Its
/// output goes to `log` when given (and the log's tail is returned on failure),
/// otherwise it is captured; returns stdout.
pub fn run_bounded(
    command: &mut Command,
    timeout: Duration,
    log: Option<&Path>,
) -> Result<String, String> {
    let shown = format!("{command:?}");
    let tmp = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    let (out_path, append) = match log {
        Some(path) => (path.to_path_buf(), true),
        None => (tmp.path().to_path_buf(), false),
    };
    let out = fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .open(&out_path)
        .map_err(|e| format!("open {out_path:?}: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("dup log: {e}"))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let status = wait_bounded(child, timeout).map_err(|e| format!("{shown}: {e}"))?;
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    if status.success() {
        Ok(text)
    } else {
        let tail: String = {
            let chars: Vec<char> = text.chars().collect();
            chars[chars.len().saturating_sub(3000)..].iter().collect()
        };
        Err(format!("{shown} exited with {status}; output:\n{tail}"))
    }
}

/// Waits for a child on a helper thread; kills it by PID if it outlives `timeout`.
fn wait_bounded(mut child: Child, timeout: Duration) -> Result<ExitStatus, String> {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => status.map_err(|e| format!("wait: {e}")),
        Err(_) => {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            let _ = rx.recv_timeout(Duration::from_secs(10));
            Err(format!("timed out after {timeout:?} and was killed"))
        }
    }
}

/// A lock held as a directory: `mkdir` is atomic, so exactly one process creates it.
/// It records its owner's PID; a lock whose owner is gone is taken over.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path, timeout: Duration) -> Result<DirLock, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match fs::create_dir(path) {
                Ok(()) => {
                    let _ = fs::write(path.join("pid"), std::process::id().to_string());
                    return Ok(DirLock(path.to_path_buf()));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    if lock_is_stale(path) {
                        let _ = fs::remove_dir_all(path);
                        continue;
                    }
                }
                Err(e) => return Err(format!("create lock {path:?}: {e}")),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for lock {path:?}"
                ));
            }
            // Another process holds the lock and gives no signal when it lets go.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Stale: its owner PID is gone, or it has had no owner for a minute.
fn lock_is_stale(path: &Path) -> bool {
    match fs::read_to_string(path.join("pid")) {
        Ok(pid) => match pid.trim().parse::<u32>() {
            Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => true,
        },
        Err(_) => fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60)),
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
