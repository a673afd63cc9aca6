//! The managed-worker supervisor with real child processes (`sh -c` scripts in temp dirs, no
//! quorum node): restarts and their backoff, readiness, install once per key, bounded logs,
//! stopping, `kill_all`, and children that cannot outlive the process that supervises them.
//! Timings come from the supervisor's own status events.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::processes::{alive, group_members, wait_until};
use quorum::managed::supervisor::{BackoffPolicy, Ensured};
use quorum::managed::{
    LaunchPlan, ProcessState, ProcessStatus, RestartPolicy, StatusChange, Supervisor,
    SupervisorSettings,
};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

const LOG_BYTES: usize = 64 * 1024;

fn settings(dir: &Path) -> SupervisorSettings {
    SupervisorSettings {
        data_dir: dir.join("data"),
        worker_url: "ws://127.0.0.1:9".into(),
        local_tokens: None,
        log_bytes_per_worker: LOG_BYTES,
        ready_timeout: Duration::from_secs(30),
        install_timeout: Duration::from_secs(30),
        stop_grace: Duration::from_secs(2),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(800),
            reset_after: Duration::from_secs(60),
        },
    }
}

fn plan(name: &str, dir: &Path, start: &str) -> LaunchPlan {
    LaunchPlan {
        name: name.into(),
        dir: dir.to_path_buf(),
        install: None,
        install_key: "v1".into(),
        start: start.into(),
        env: Vec::new(),
        config: None,
        restart: RestartPolicy::Always,
        restart_requests: 0,
    }
}

/// The next status of `name` that satisfies `check`, or a panic after `deadline`.
async fn until(
    events: &mut broadcast::Receiver<StatusChange>,
    name: &str,
    deadline: Duration,
    mut check: impl FnMut(&ProcessStatus) -> bool,
) -> ProcessStatus {
    let outcome = tokio::time::timeout(deadline, async {
        loop {
            match events.recv().await {
                Ok(change) if change.name == name && check(&change.status) => return change.status,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the supervisor's events ended"),
            }
        }
    })
    .await;
    outcome.unwrap_or_else(|_| panic!("{name}: no matching status within {deadline:?}"))
}

async fn read_pid(path: PathBuf) -> i32 {
    let mut pid = None;
    wait_until(
        &format!("{}", path.display()),
        Duration::from_secs(20),
        || {
            pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            pid.is_some()
        },
    )
    .await;
    pid.unwrap_or_default()
}

#[tokio::test]
async fn a_crashing_worker_restarts_with_doubling_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(settings(dir.path())).unwrap();
    let mut events = supervisor.subscribe();
    assert_eq!(
        supervisor
            .ensure(plan("crasher", dir.path(), "exit 3"))
            .unwrap(),
        Ensured::Started
    );
    let mut starts = Vec::new();
    let mut delays = Vec::new();
    let (mut last_pid, mut backing_off) = (None, false);
    while starts.len() < 6 {
        let status = until(&mut events, "crasher", Duration::from_secs(10), |_| true).await;
        if status.pid.is_some() && status.pid != last_pid && status.state == ProcessState::Starting
        {
            last_pid = status.pid;
            starts.push(Instant::now());
        }
        let entering = status.state == ProcessState::BackingOff && !backing_off;
        backing_off = status.state == ProcessState::BackingOff;
        if entering {
            assert_eq!(status.last_exit.as_deref(), Some("exit 3"));
            assert_eq!(status.restarts as usize, delays.len() + 1);
            delays.push(status.retry_in_ms.unwrap());
        }
    }
    assert_eq!(delays[..5], [100, 200, 400, 800, 800]);
    for (i, pair) in starts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let delay = Duration::from_millis(delays[i]);
        assert!(
            gap + Duration::from_millis(20) >= delay,
            "start {i} came {gap:?} after the previous one, before its backoff of {delay:?}"
        );
    }
    assert!(supervisor.stop("crasher").await);
    assert_eq!(supervisor.status("crasher"), None);
}

#[tokio::test]
async fn a_worker_exiting_at_once_in_a_loop_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(settings(dir.path())).unwrap();
    let mut events = supervisor.subscribe();
    supervisor
        .ensure(plan("looper", dir.path(), "exit 0"))
        .unwrap();
    // Every start after the first waits out the backoff the supervisor reports first:
    // 100 ms doubling to 800 ms. Counted from its events, not against a clock.
    let (mut starts, mut last_pid, mut waits) = (0, None, Vec::new());
    while waits.len() < 6 {
        let change = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the looper keeps going")
            .expect("events");
        if change.status.pid.is_some() && change.status.pid != last_pid {
            last_pid = change.status.pid;
            starts += 1;
            assert_eq!(starts, waits.len() + 1, "a start without a wait before it");
        }
        if change.status.state == ProcessState::BackingOff {
            waits.push(change.status.retry_in_ms.expect("a backoff says its wait"));
        }
    }
    let status = supervisor.status("looper").unwrap();
    assert_eq!(waits, [100, 200, 400, 800, 800, 800], "{status:?}");
    assert_eq!(status.last_exit.as_deref(), Some("exit 0"));
    supervisor.stop("looper").await;
}

#[tokio::test]
async fn ready_means_registered_and_a_worker_never_ready_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let ready_timeout = Duration::from_millis(800);
    let supervisor = Supervisor::new(SupervisorSettings {
        ready_timeout,
        ..settings(dir.path())
    })
    .unwrap();
    let mut events = supervisor.subscribe();

    // A connection announcing it appears (the caller says so): it is ready and stays.
    supervisor
        .ensure(plan("announced", dir.path(), "exec sleep 60"))
        .unwrap();
    let running = until(&mut events, "announced", Duration::from_secs(5), |s| {
        s.pid.is_some()
    })
    .await;
    assert!(supervisor.mark_ready("announced"));
    until(&mut events, "announced", Duration::from_secs(5), |s| {
        s.state == ProcessState::Ready
    })
    .await;

    // One that never registers fails after the ready timeout and is restarted.
    supervisor
        .ensure(plan("silent", dir.path(), "exec sleep 60"))
        .unwrap();
    let failed = until(&mut events, "silent", Duration::from_secs(10), |s| {
        s.state == ProcessState::BackingOff
    })
    .await;
    assert!(
        failed.last_error.as_deref().unwrap().contains("not ready"),
        "{failed:?}"
    );
    assert_eq!(failed.restarts, 1);

    // Meanwhile (more than a ready timeout) the announced one ran on, untouched.
    let status = supervisor.status("announced").unwrap();
    assert_eq!(status.state, ProcessState::Ready);
    assert_eq!((status.pid, status.restarts), (running.pid, 0));

    // Its connection goes away and does not come back: failed after the ready timeout.
    supervisor.mark_unready("announced");
    until(&mut events, "announced", Duration::from_secs(5), |s| {
        s.state == ProcessState::Starting
    })
    .await;
    let failed = until(&mut events, "announced", Duration::from_secs(5), |s| {
        s.state == ProcessState::BackingOff
    })
    .await;
    assert!(failed.last_error.unwrap().contains("not ready"));
    assert!(!supervisor.mark_ready("nobody"));
    supervisor.stop("silent").await;
    supervisor.stop("announced").await;
}

#[tokio::test]
async fn install_runs_once_per_key_and_a_failing_install_blocks_no_other_worker() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(settings(dir.path())).unwrap();
    let mut events = supervisor.subscribe();
    let broken = LaunchPlan {
        install: Some("echo cannot-fetch-deps >&2; exit 7".into()),
        ..plan("broken", dir.path(), "exec sleep 60")
    };
    supervisor.ensure(broken).unwrap();
    let failed = until(&mut events, "broken", Duration::from_secs(10), |s| {
        s.state == ProcessState::BackingOff
    })
    .await;
    assert_eq!(failed.last_error.as_deref(), Some("install failed: exit 7"));

    let good = LaunchPlan {
        install: Some("echo ran >> installs.txt".into()),
        ..plan("good", dir.path(), "exec sleep 60")
    };
    supervisor.ensure(good.clone()).unwrap();
    until(&mut events, "good", Duration::from_secs(10), |s| {
        s.state == ProcessState::Starting && s.pid.is_some()
    })
    .await;
    // The broken one keeps retrying with backoff meanwhile, and says why.
    let retried = until(&mut events, "broken", Duration::from_secs(10), |s| {
        s.state == ProcessState::BackingOff && s.retry_in_ms > failed.retry_in_ms
    })
    .await;
    assert_eq!(retried.restarts, 0, "install retries are not restarts");
    let status = supervisor.status("broken").unwrap();
    assert_eq!(status.last_error.as_deref(), Some("install failed: exit 7"));
    let log = String::from_utf8(supervisor.logs("broken").unwrap().0).unwrap();
    assert!(log.contains("cannot-fetch-deps"), "{log}");

    let installs = || {
        std::fs::read_to_string(dir.path().join("installs.txt"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(installs(), 1);
    // The same key again (a restart of the worker): no second install.
    assert!(supervisor.stop("good").await);
    supervisor.ensure(good.clone()).unwrap();
    until(&mut events, "good", Duration::from_secs(10), |s| {
        s.state == ProcessState::Starting && s.pid.is_some()
    })
    .await;
    assert_eq!(installs(), 1);
    // A new version: installed again, and the old process is replaced.
    let old_pid = supervisor.status("good").unwrap().pid;
    let upgraded = LaunchPlan {
        install_key: "v2".into(),
        ..good
    };
    assert_eq!(supervisor.ensure(upgraded).unwrap(), Ensured::Replaced);
    let running = until(&mut events, "good", Duration::from_secs(10), |s| {
        s.state == ProcessState::Starting && s.pid.is_some() && s.pid != old_pid
    })
    .await;
    assert_eq!(installs(), 2);
    assert!(!alive(old_pid.unwrap()));
    assert!(alive(running.pid.unwrap()));
    supervisor.stop("good").await;
    supervisor.stop("broken").await;
}

#[tokio::test]
async fn an_install_that_overruns_is_killed_with_its_group_and_retried_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(SupervisorSettings {
        install_timeout: Duration::from_millis(700),
        ..settings(dir.path())
    })
    .unwrap();
    let mut events = supervisor.subscribe();
    // Each install run leaves a child of its own in its group and hangs on it.
    let hung = LaunchPlan {
        install: Some("echo $$ >> installs.txt; sleep 300 & echo $! >> children.txt; wait".into()),
        ..plan(
            "hung",
            dir.path(),
            "echo started > started.txt; exec sleep 60",
        )
    };
    supervisor.ensure(hung).unwrap();
    let failed = until(&mut events, "hung", Duration::from_secs(10), |s| {
        s.state == ProcessState::BackingOff
    })
    .await;
    assert_eq!(
        failed.last_error.as_deref(),
        Some("install failed: still running after 700ms; killed")
    );
    assert_eq!(failed.restarts, 0, "install retries are not restarts");
    // Retried with backoff, and overrunning again.
    until(&mut events, "hung", Duration::from_secs(10), |s| {
        s.state == ProcessState::Installing
    })
    .await;
    let again = until(&mut events, "hung", Duration::from_secs(10), |s| {
        s.state == ProcessState::BackingOff
    })
    .await;
    assert!(again.retry_in_ms > failed.retry_in_ms, "{again:?}");
    let installs = pids_in(&dir.path().join("installs.txt"));
    assert!(installs.len() >= 2, "{installs:?}");
    // The two overrun installs' whole groups are gone: each shell and the child it left.
    let children = pids_in(&dir.path().join("children.txt"));
    assert!(children.len() >= 2, "{children:?}");
    for pid in installs[..2].iter().chain(&children[..2]) {
        wait_until(
            &format!("install process {pid} is gone"),
            Duration::from_secs(5),
            || !alive(*pid),
        )
        .await;
    }
    assert!(
        !dir.path().join("started.txt").exists(),
        "never started without its install"
    );
    let log = String::from_utf8(supervisor.logs("hung").unwrap().0).unwrap();
    assert!(log.contains("install overran its time"), "{log}");
    supervisor.stop("hung").await;
}

#[tokio::test]
async fn the_same_plan_is_left_alone_and_env_reaches_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(settings(dir.path())).unwrap();
    let mut events = supervisor.subscribe();
    let worker = LaunchPlan {
        env: vec![("GREETING".into(), "hello".into())],
        config: Some(serde_json::json!({"bucket": "images"})),
        ..plan(
            "env-echo",
            dir.path(),
            "echo \"$III_URL $III_WORKER_NAME $GREETING $BUCKET ${QUORUM_SECRET_SETTING:-unset}\"; cat \"$III_CONFIG\"; exec sleep 60",
        )
    };
    assert_eq!(supervisor.ensure(worker.clone()).unwrap(), Ensured::Started);
    let running = until(&mut events, "env-echo", Duration::from_secs(10), |s| {
        s.pid.is_some()
    })
    .await;
    assert_eq!(supervisor.ensure(worker).unwrap(), Ensured::Unchanged);
    let (_, mut follow) = supervisor.logs("env-echo").unwrap();
    let mut log = String::from_utf8(supervisor.logs("env-echo").unwrap().0).unwrap();
    while !log.contains("bucket: images") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), follow.recv())
            .await
            .expect("the worker printed its environment")
            .unwrap();
        log.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        log.contains("ws://127.0.0.1:9 env-echo hello images unset"),
        "{log}"
    );
    assert_eq!(supervisor.status("env-echo").unwrap().pid, running.pid);
    supervisor.stop("env-echo").await;
}

/// Set (to a directory) for the helper process of the gigabytes test.
const CHATTY_DIR: &str = "MANAGED_TEST_CHATTY_HOST_DIR";

/// The gigabytes test runs its supervisor in a process of its own, so the memory it measures
/// is the supervisor's alone and not that of the other tests running beside it.
#[tokio::test]
async fn a_worker_printing_gigabytes_keeps_its_log_and_the_node_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let host = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "chatty_host", "--ignored", "--nocapture"])
        .env(CHATTY_DIR, dir.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), host)
        .await
        .expect("the host process finished within 180 s")
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    println!("{said}");
    assert!(
        output.status.success(),
        "host failed: {said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("2 GiB of output in"), "{said}");
}

/// Helper process of the gigabytes test: supervises a worker that prints 2 GiB, checks the
/// kept tail and its own peak memory, and exits.
#[test]
#[ignore = "helper process of a_worker_printing_gigabytes_keeps_its_log_and_the_node_bounded"]
fn chatty_host() {
    let Some(dir) = std::env::var_os(CHATTY_DIR).map(PathBuf::from) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let supervisor = Supervisor::new(settings(&dir)).unwrap();
        let rss_before = proc_status_bytes("VmRSS:");
        let started = Instant::now();
        supervisor
            .ensure(plan(
                "chatty",
                &dir,
                "head -c 2147483648 /dev/zero; echo; echo \"all-$((1 + 1))-printed\"; exec sleep 60",
            ))
            .unwrap();
        let (_, mut follow) = supervisor.logs("chatty").unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(120), follow.recv()).await {
                Ok(Ok(chunk)) if chunk.windows(13).any(|w| w == b"all-2-printed") => break,
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                other => panic!("the log stream ended: {other:?}"),
            }
        }
        let elapsed = started.elapsed();
        let (tail, _) = supervisor.logs("chatty").unwrap();
        assert!(tail.len() <= LOG_BYTES, "{} bytes kept", tail.len());
        // The marker is computed by the shell, so the supervisor's own note of the command
        // line cannot match it.
        assert!(tail.ends_with(b"all-2-printed\n"));
        let growth = proc_status_bytes("VmHWM:").saturating_sub(rss_before);
        println!(
            "2 GiB of output in {elapsed:?}; peak RSS grew by {} KiB",
            growth / 1024
        );
        assert!(growth < 64 << 20, "peak RSS grew by {growth} bytes");
        supervisor.stop("chatty").await;
    });
}

#[tokio::test]
async fn a_stop_sends_sigterm_first_and_sigkill_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(700);
    let supervisor = Supervisor::new(SupervisorSettings {
        stop_grace: grace,
        ..settings(dir.path())
    })
    .unwrap();
    let mut events = supervisor.subscribe();
    supervisor
        .ensure(plan(
            "polite",
            dir.path(),
            // Short children only: one caught by the SIGTERM between its fork and its exec
            // (it still runs the shell's handler then, and survives) ends within the grace.
            "trap 'echo got-term; exit 0' TERM; echo up; while :; do sleep 0.05; done",
        ))
        .unwrap();
    supervisor
        .ensure(plan(
            "stubborn",
            dir.path(),
            "trap '' TERM; echo up; exec sleep 300",
        ))
        .unwrap();
    for name in ["polite", "stubborn"] {
        let (_, mut follow) = supervisor.logs(name).unwrap();
        let mut log = String::from_utf8(supervisor.logs(name).unwrap().0).unwrap();
        while !log.contains("up\n") {
            let chunk = follow.recv().await.unwrap();
            log.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    let (_, mut polite_log) = supervisor.logs("polite").unwrap();
    assert!(supervisor.stop("polite").await);
    let stopped = until(&mut events, "polite", Duration::from_secs(1), |s| {
        s.state == ProcessState::Stopped
    })
    .await;
    assert_eq!(stopped.last_exit.as_deref(), Some("exit 0"));
    let mut said = Vec::new();
    while let Ok(chunk) = polite_log.try_recv() {
        said.extend_from_slice(&chunk);
    }
    let said = String::from_utf8_lossy(&said);
    assert!(said.contains("got-term"), "{said}");
    assert!(
        !said.contains("SIGKILL"),
        "a polite worker needs no SIGKILL: {said}"
    );

    let asked = Instant::now();
    assert!(supervisor.stop("stubborn").await);
    assert!(asked.elapsed() >= grace);
    let stopped = until(&mut events, "stubborn", Duration::from_secs(1), |s| {
        s.state == ProcessState::Stopped
    })
    .await;
    assert_eq!(stopped.last_exit.as_deref(), Some("signal 9"));
    assert!(supervisor.names().is_empty());
    assert!(!supervisor.stop("stubborn").await);
}

/// A start command the shell cannot `exec` (two commands; this node's `sh` may not exec even
/// one): the shell dies of the stop's SIGTERM at once, and the worker it started must still
/// get its grace to shut down cleanly, the stop returning once it has.
#[tokio::test]
async fn a_stop_gives_the_grace_to_a_worker_its_shell_did_not_exec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("worker.sh"),
        "trap 'echo got-term; sleep 0.3; echo cleaned-up; exit 0' TERM\n\
         echo $$ > worker.pid\necho up\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    let grace = Duration::from_secs(10);
    let supervisor = Supervisor::new(SupervisorSettings {
        stop_grace: grace,
        ..settings(dir.path())
    })
    .unwrap();
    supervisor
        .ensure(plan("wrapped", dir.path(), "cd . && sh worker.sh"))
        .unwrap();
    let (_, mut follow) = supervisor.logs("wrapped").unwrap();
    let mut said = String::from_utf8(supervisor.logs("wrapped").unwrap().0).unwrap();
    while !said.contains("up\n") {
        said.push_str(&String::from_utf8_lossy(&follow.recv().await.unwrap()));
    }
    let worker = read_pid(dir.path().join("worker.pid")).await;

    let asked = Instant::now();
    assert!(supervisor.stop("wrapped").await);
    let took = asked.elapsed();
    assert!(
        !alive(worker),
        "the stop returns once the worker itself is gone"
    );
    // The log's pump may still be behind the stop: follow it until the worker's last line.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !said.contains("cleaned-up") {
            match follow.recv().await {
                Ok(chunk) => said.push_str(&String::from_utf8_lossy(&chunk)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    })
    .await;
    let whole = said;
    assert!(whole.contains("got-term"), "{whole}");
    assert!(
        whole.contains("cleaned-up"),
        "the worker finished its shutdown: {whole}"
    );
    assert!(
        !whole.contains("SIGKILL"),
        "no SIGKILL within the grace: {whole}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < grace,
        "the stop waited for the worker's own 0.3 s shutdown, not the grace: {took:?}"
    );
    println!("a worker its shell did not exec stopped cleanly in {took:?}");
}

#[tokio::test]
async fn kill_all_kills_every_group_grandchildren_too_and_restarts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(settings(dir.path())).unwrap();
    let mut events = supervisor.subscribe();
    let family = plan(
        "family",
        dir.path(),
        "sleep 300 & echo $! > grandchild.pid; echo $$ > leader.pid; wait",
    );
    supervisor.ensure(family.clone()).unwrap();
    let leader = read_pid(dir.path().join("leader.pid")).await;
    let grandchild = read_pid(dir.path().join("grandchild.pid")).await;
    assert!(
        group_members(leader).len() >= 3,
        "leader, watcher, grandchild"
    );

    supervisor.kill_all();
    wait_until("the whole group is gone", Duration::from_secs(5), || {
        !alive(leader) && !alive(grandchild) && group_members(leader).is_empty()
    })
    .await;
    until(&mut events, "family", Duration::from_secs(5), |s| {
        s.state == ProcessState::Stopped
    })
    .await;
    // No restart: nothing starts within several backoff periods.
    let quiet = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            if let Ok(change) = events.recv().await {
                if change.name == "family" && change.status.pid.is_some() {
                    return change.status;
                }
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "restarted after kill_all: {quiet:?}");

    // Nothing starts until the node resumes the supervisor; then the next ensure does.
    assert!(
        supervisor.ensure(family.clone()).is_err(),
        "ensure while fenced"
    );
    supervisor.resume();
    std::fs::remove_file(dir.path().join("leader.pid")).unwrap();
    assert_eq!(supervisor.ensure(family).unwrap(), Ensured::Replaced);
    let again = read_pid(dir.path().join("leader.pid")).await;
    assert_ne!(again, leader);
    supervisor.stop("family").await;
    // The stop returns once the leader has exited; its group follows as the lifeline closes.
    wait_until("the new group is gone", Duration::from_secs(5), || {
        group_members(again).is_empty()
    })
    .await;
}

/// A worker that ignores SIGTERM and records each copy's pid in `pids`.
fn stubborn(name: &str, dir: &Path) -> LaunchPlan {
    plan(
        name,
        dir,
        "trap '' TERM; echo $$ >> pids; echo up; exec sleep 300",
    )
}

/// The pids the scripts wrote to `file`, one a line, in order.
fn pids_in(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// Starts a [`stubborn`] worker `name` as the first in `dir`, then stops it on a task of its
/// own; returns its pid once it is in its stop grace, and the task (true once it stopped).
async fn stopping_stubborn(
    supervisor: &Supervisor,
    events: &mut broadcast::Receiver<StatusChange>,
    name: &str,
    dir: &Path,
) -> (i32, tokio::task::JoinHandle<bool>) {
    supervisor.ensure(stubborn(name, dir)).unwrap();
    wait_until("the first copy runs", Duration::from_secs(20), || {
        pids_in(&dir.join("pids")).len() == 1
    })
    .await;
    let pid = pids_in(&dir.join("pids"))[0];
    let stopping = tokio::spawn({
        let supervisor = supervisor.clone();
        let name = name.to_string();
        async move { supervisor.stop(&name).await }
    });
    until(events, name, Duration::from_secs(5), |s| {
        s.state == ProcessState::Stopping
    })
    .await;
    (pid, stopping)
}

#[tokio::test]
async fn an_ensure_during_a_stops_grace_starts_only_once_the_old_copy_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(SupervisorSettings {
        stop_grace: Duration::from_secs(2),
        ..settings(dir.path())
    })
    .unwrap();
    let mut events = supervisor.subscribe();
    let (first, stopping) = stopping_stubborn(&supervisor, &mut events, "twice", dir.path()).await;
    assert!(supervisor.is_stopping("twice"));
    // `worker remove X && worker add X`: the same plan again, inside the grace.
    assert_eq!(
        supervisor.ensure(stubborn("twice", dir.path())).unwrap(),
        Ensured::Replaced
    );
    let second = until(&mut events, "twice", Duration::from_secs(20), |s| {
        s.pid.is_some_and(|pid| pid as i32 != first)
    })
    .await;
    assert!(!alive(first), "the new copy started while the old one ran");
    assert!(stopping.await.unwrap());
    assert_eq!(supervisor.names(), vec!["twice".to_string()]);
    let (log, _) = supervisor.logs("twice").unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("stop grace over: SIGKILL"),
        "the log of the stopped copy is kept"
    );
    supervisor.kill("twice").await;
    assert!(!alive(second.pid.unwrap()));
}

#[tokio::test]
async fn kill_all_reaches_a_worker_in_its_stop_grace() {
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(SupervisorSettings {
        stop_grace: Duration::from_secs(600),
        ..settings(dir.path())
    })
    .unwrap();
    let mut events = supervisor.subscribe();
    let (pid, stopping) =
        stopping_stubborn(&supervisor, &mut events, "lingering", dir.path()).await;
    supervisor.kill_all();
    // The grace is 600 s: only kill_all can end it within the test.
    assert!(stopping.await.unwrap());
    assert!(!alive(pid));
    assert!(supervisor.names().is_empty());
}

#[tokio::test]
async fn orphans_of_a_stopped_worker_are_reaped_when_the_node_adopts_them() {
    // As PID 1 of a container, the node inherits every orphan. A subreaper inherits them
    // the same way, without being PID 1 (this affects the whole test process, harmlessly:
    // the other tests count a zombie as gone).
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes no pointers.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let dir = tempfile::tempdir().unwrap();
    let supervisor = Supervisor::new(settings(dir.path())).unwrap();
    supervisor
        .ensure(plan(
            "adopted",
            dir.path(),
            "sleep 300 & echo $! > grandchild.pid; echo $$ > leader.pid; wait",
        ))
        .unwrap();
    let leader = read_pid(dir.path().join("leader.pid")).await;
    read_pid(dir.path().join("grandchild.pid")).await;
    let members = group_members(leader);
    assert!(
        members.len() >= 3,
        "leader, watcher, grandchild: {members:?}"
    );
    assert!(supervisor.stop("adopted").await);
    wait_until(
        "every process of the group is reaped, not left a zombie",
        Duration::from_secs(5),
        || {
            members
                .iter()
                .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        },
    )
    .await;
}

/// Set for the helper process of `children_die_with_their_supervisor`: its temp dir.
const HOST_DIR: &str = "MANAGED_TEST_SUPERVISOR_HOST_DIR";

/// Not a test: the process `children_die_with_their_supervisor` starts (this same test
/// binary, running only this function) and SIGKILLs. It supervises one worker whose
/// script leaves a grandchild, and never returns.
#[test]
#[ignore = "helper process of children_die_with_their_supervisor"]
fn supervisor_host() {
    let Some(dir) = std::env::var_os(HOST_DIR).map(PathBuf::from) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let supervisor = Supervisor::new(settings(&dir)).unwrap();
        supervisor
            .ensure(plan(
                "orphan-candidate",
                &dir,
                "sleep 300 & echo $! > grandchild.pid; echo $$ > leader.pid; wait",
            ))
            .unwrap();
        std::future::pending::<()>().await;
    });
}

/// The helper process, killed by PID when the test ends however it ends.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn children_die_with_their_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "supervisor_host", "--ignored", "--nocapture"])
            .env(HOST_DIR, dir.path())
            .spawn()
            .unwrap(),
    );
    let leader = read_pid(dir.path().join("leader.pid")).await;
    let grandchild = read_pid(dir.path().join("grandchild.pid")).await;
    assert!(alive(leader) && alive(grandchild));

    // SIGKILL: the supervisor gets no chance to clean up.
    host.0.kill().unwrap();
    host.0.wait().unwrap();
    wait_until(
        "the worker and its grandchild die with the supervisor",
        Duration::from_secs(5),
        || !alive(leader) && !alive(grandchild) && group_members(leader).is_empty(),
    )
    .await;
}

/// A size field of this process's /proc status (`VmRSS:`, `VmHWM:`), in bytes.
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
