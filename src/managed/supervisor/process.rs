//! process: starts one script as a child process that cannot outlive the node.
//!
//! Each script runs under a small `sh` guard as the leader of a new process group:
//! - the leader has `PR_SET_PDEATHSIG` = SIGKILL, so it dies with the node;
//! - the guard leaves a watcher in the group reading a pipe whose only write end the
//!   supervisor holds; when that end closes (the node died, or the supervisor is done with
//!   the process) the watcher SIGKILLs the whole group, grandchildren included;
//! - then the guard `exec`s `sh -c <script>`, so the leader's exit status is the script's.
//!
//! The leader is a shell, and a shell that runs more than one command (`cd x && python
//! main.py`; some shells never exec even a single one) dies of a graceful stop's SIGTERM at
//! once, while the worker it started still shuts down: a stop waits for the group's other
//! members too (`group_has_workers`), within the same grace, before it SIGKILLs the group.
//!
//! PDEATHSIG fires when the *thread* that forked the child ends, so every child is forked
//! from one long-lived spawner thread, never from a runtime thread that may come and go.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The guard: a group-wide watcher on fd 3, then the script itself as the group leader.
/// The watcher ignores the SIGTERM of a graceful stop so it still guards the grace period.
const GUARD: &str = "( trap '' TERM INT HUP QUIT; read _ <&3; kill -9 0 ) </dev/null >/dev/null 2>&1 &\nexec 3<&-\nexec /bin/sh -c \"$1\"";

/// The fd number the watcher reads its lifeline from.
const LIFELINE_FD: i32 = 3;

/// Forks children from one dedicated thread (see the module note on PDEATHSIG).
#[derive(Clone)]
pub(super) struct Spawner {
    requests: mpsc::Sender<SpawnRequest>,
}

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

impl Spawner {
    /// Starts the spawner thread; it ends when the last `Spawner` clone is dropped.
    pub(super) fn start(runtime: tokio::runtime::Handle) -> io::Result<Spawner> {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("quorum-managed-spawner".into())
            .spawn(move || {
                // Children register with the runtime's process reaper.
                let _runtime = runtime.enter();
                while let Ok(mut request) = incoming.recv() {
                    let _ = request.reply.send(request.command.spawn());
                }
            })?;
        Ok(Spawner { requests })
    }

    async fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("the process spawner thread has ended");
        self.requests
            .send(SpawnRequest { command, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// A started script: the child (leader of its own group) and the lifeline that keeps its
/// group alive. Dropping the lifeline SIGKILLs whatever is left of the group.
pub(super) struct Started {
    pub child: Child,
    pub group: i32,
    pub lifeline: OwnedFd,
}

/// Starts `script` with `sh -c` in `dir` with `env` on top of the node's environment
/// (minus its `QUORUM_*` settings), stdin empty, stdout and stderr piped.
pub(super) async fn start(
    spawner: &Spawner,
    script: &str,
    dir: &Path,
    env: &[(String, String)],
) -> io::Result<Started> {
    let (watch_end, lifeline) = pipe()?;
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(GUARD)
        .arg("quorum-managed")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("QUORUM_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let parent = std::process::id();
    let watch_fd = watch_end.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid, dup2, fcntl); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The node may have died between fork and prctl: then no signal would come.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if watch_fd == LIFELINE_FD {
                if libc::fcntl(LIFELINE_FD, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(watch_fd, LIFELINE_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = spawner.spawn(command).await.map_err(|error| {
        if error.kind() == io::ErrorKind::NotFound {
            // A directory checked a moment ago is there: what is missing is the shell.
            io::Error::new(
                error.kind(),
                format!("/bin/sh is needed to run managed workers and was not found ({error})"),
            )
        } else {
            error
        }
    })?;
    drop(watch_end);
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| io::Error::other("the child has no pid"))?;
    Ok(Started {
        child,
        group,
        lifeline,
    })
}

/// Sends `signal` to every process of a group. A group already gone is not an error.
pub(super) fn kill_group(group: i32, signal: libc::c_int) {
    if group > 1 {
        // SAFETY: kill has no memory-safety preconditions; a negative pid names a group.
        unsafe {
            libc::kill(-group, signal);
        }
    }
}

/// The pipe a lifeline writes to, as `/proc` names it (`pipe:[INODE]`): the watcher is the
/// process that has its read end as fd 3.
pub(super) fn lifeline_pipe(lifeline: &OwnedFd) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", lifeline.as_raw_fd())).ok()
}

/// Whether a process of `group` besides its watcher still runs (read from `/proc`; a zombie
/// runs nothing). The watcher is the member whose fd 3 is `pipe` ([`lifeline_pipe`]).
/// Without a readable `/proc` (or no `pipe`) it answers false: the stop then ends with the
/// leader, as it would without this check.
pub(super) fn group_has_workers(group: i32, pipe: Option<&Path>) -> bool {
    let Some(pipe) = pipe else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After `(comm) `: state, ppid, pgrp.
            let mut fields = stat
                .rsplit_once(") ")
                .map_or("", |(_, rest)| rest)
                .split(' ');
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
            if state == Some("Z") || pgrp != Some(group) {
                return false;
            }
            let fd3 = std::fs::read_link(format!("/proc/{pid}/fd/{LIFELINE_FD}")).ok();
            fd3.as_deref() != Some(pipe)
        })
}

/// Reaps members of `group` that became this process's children (when the node runs as
/// PID 1 in a container, orphans of a worker's group are reparented to it, and nobody else
/// would reap them). Returns true once none is left to reap. Only call it after the group's
/// leader has been waited for: it must never take a status tokio waits for.
pub(super) fn reap_group(group: i32) -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG on a process group writes only into `status`.
        match unsafe { libc::waitpid(-group, &mut status, libc::WNOHANG) } {
            0 => return false,
            pid if pid > 0 => continue,
            _ => return true,
        }
    }
}

/// How a process ended, as `status` shows it: `exit 3`, `signal 9`.
pub(super) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "ended".into(),
    }
}

/// A pipe whose ends close on exec: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just opened and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
