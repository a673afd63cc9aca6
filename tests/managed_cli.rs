//! `quorum worker` against real nodes: specs added, listed and removed through a member that
//! is not the leader, bad manifests refused before anything is committed, one spec per name,
//! a worker's output read through a node that does not run it (and followed), the `workers:`
//! list of a node's config (held back while a member runs an older binary), and the operator
//! certificate on a cluster with certificates.
//! The workers are tiny `sh` loops: none of these behaviours needs an SDK.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::processes::alive;
use common::{cli_text, wait_for, worker_cli, Cluster, Node, NodeOptions, CLUSTER_TIMEOUT};

/// A worker that prints a numbered line twice a second, forever.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo line-$i; sleep 0.5; done";

/// `quorum worker ARGS --address ADDRESS`: what it printed, else its error text.
fn worker_cli_text(address: &str, args: &[&str]) -> Result<String, String> {
    cli_text(&[], "worker", &[], address, args)
}

/// The names `quorum worker list` shows through `address`.
fn names(address: &str) -> Vec<String> {
    let listed = worker_cli(&[], address, &["list"]).expect("worker list");
    listed["workers"]
        .as_array()
        .expect("workers array")
        .iter()
        .map(|w| w["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The node a managed worker is placed on, once it is.
fn placed_on(cluster: &Cluster, via: usize, name: &str) -> u64 {
    let address = cluster.node(via).cluster.clone();
    wait_for(
        &format!("'{name}' is placed"),
        || cluster.logs(),
        || {
            worker_cli(&[], &address, &["status", name])
                .ok()
                .and_then(|s| s["node"].as_u64())
        },
    )
}

/// A worker directory holding `manifest` as its iii.worker.yaml.
fn worker_dir(root: &Path, name: &str, manifest: &str) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("worker dir");
    std::fs::write(dir.join("iii.worker.yaml"), manifest).expect("manifest");
    dir.display().to_string()
}

#[test]
fn specs_are_added_listed_and_removed_through_a_follower() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = cluster.node(cluster.a_follower(leader)).cluster.clone();
    let added = worker_cli(
        &[],
        &follower,
        &[
            "add",
            "--name",
            "sleeper",
            "--command",
            "sleep 1000",
            "--restart",
            "on-failure",
            "--node-label",
            "tier=any",
        ],
    )
    .expect("add through a follower");
    assert_eq!(added["name"], "sleeper");
    // Every member's replica has it, with the fields given.
    for i in cluster.live() {
        let address = cluster.node(i).cluster.clone();
        wait_for(
            &format!("node {} lists 'sleeper'", i + 1),
            || cluster.logs(),
            || {
                names(&address)
                    .contains(&"sleeper".to_string())
                    .then_some(())
            },
        );
    }
    let status = worker_cli(&[], &follower, &["status", "sleeper"]).expect("status");
    assert_eq!(status["command"], "sleep 1000");
    assert_eq!(status["restart"], "on-failure");
    assert_eq!(status["node_labels"]["tier"], "any");
    let text = worker_cli_text(&follower, &["list"]);
    assert!(
        text.as_ref().is_ok_and(|t| t.contains("sleeper")),
        "{text:?}"
    );

    worker_cli(&[], &follower, &["remove", "sleeper"]).expect("remove through a follower");
    for i in cluster.live() {
        let address = cluster.node(i).cluster.clone();
        wait_for(
            &format!("node {} no longer lists 'sleeper'", i + 1),
            || cluster.logs(),
            || names(&address).is_empty().then_some(()),
        );
    }
    let again = worker_cli(&[], &follower, &["remove", "sleeper"]);
    assert!(again.is_err(), "a second remove of one name succeeded");
    let unknown = worker_cli(&[], &follower, &["status", "sleeper"]).unwrap_err();
    assert!(unknown.contains("sleeper"), "{unknown}");
}

#[test]
fn a_bad_manifest_is_refused_and_nothing_is_committed() {
    let node = Node::start();
    let root = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "broken",
            worker_dir(root.path(), "broken", "name: [unclosed\n"),
        ),
        (
            "no-start",
            worker_dir(
                root.path(),
                "no-start",
                "name: no-start\nruntime:\n  kind: cobol\n",
            ),
        ),
        ("missing", root.path().join("missing").display().to_string()),
        ("empty", {
            let dir = root.path().join("empty");
            std::fs::create_dir_all(&dir).expect("empty dir");
            dir.display().to_string()
        }),
    ];
    for (case, dir) in &cases {
        let stderr = worker_cli_text(&node.cluster, &["add", dir])
            .expect_err(&format!("{case}: add succeeded"));
        assert!(
            stderr.starts_with("quorum: ") && stderr.len() > "quorum: ".len() + 10,
            "{case}: no clear message: {stderr}"
        );
        if *case != "missing" {
            assert!(stderr.contains("iii.worker.yaml"), "{case}: {stderr}");
        }
    }
    let no_start = worker_cli_text(&node.cluster, &["add", &cases[1].1]).unwrap_err();
    assert!(no_start.contains("start"), "{no_start}");
    assert!(names(&node.cluster).is_empty(), "something was committed");
    // A good manifest in the same place is accepted, so the refusals were about the manifests.
    let good = worker_dir(
        root.path(),
        "good",
        "name: good\nscripts:\n  start: sleep 1000\n",
    );
    worker_cli(&[], &node.cluster, &["add", &good]).expect("a good manifest is added");
    assert_eq!(names(&node.cluster), vec!["good".to_string()]);
}

#[test]
fn a_second_spec_under_one_name_is_refused_and_the_same_spec_is_no_change() {
    let node = Node::start();
    let add = |command: &str| {
        worker_cli(
            &[],
            &node.cluster,
            &["add", "--name", "twin", "--command", command],
        )
    };
    add("sleep 1000").expect("first spec");
    add("sleep 1000").expect("the same spec again");
    let refused = add("sleep 2000").expect_err("another spec under the same name");
    assert!(refused.contains("twin"), "{refused}");
    let status = worker_cli(&[], &node.cluster, &["status", "twin"]).expect("status");
    assert_eq!(
        status["command"], "sleep 1000",
        "the first spec was replaced"
    );
}

/// The numbers of the `line-N` lines in `text`.
fn line_numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("line-"))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `quorum worker logs NAME --follow` through `address`, its stdout read line by line.
struct Follower {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(address: &str, name: &str) -> Follower {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
            .args(["worker", "logs", name, "--follow", "--address", address])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start quorum worker logs --follow");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The first `line-N` it prints with N above `after`.
    fn line_after(&self, after: u64) -> Option<u64> {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(n) = line_numbers(&line).first().filter(|n| **n > after) {
                return Some(*n);
            }
        }
        None
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_come_through_a_node_that_does_not_run_the_worker_and_follow_new_lines() {
    let cluster = Cluster::start(2);
    let address = cluster.node(0).cluster.clone();
    worker_cli(
        &[],
        &address,
        &["add", "--name", "counter", "--command", COUNTER],
    )
    .expect("add the counter");
    let runs_on = placed_on(&cluster, 0, "counter");
    let elsewhere = cluster
        .live()
        .into_iter()
        .find(|i| (*i as u64) + 1 != runs_on)
        .expect("a node that does not run it");
    let through = cluster.node(elsewhere).cluster.clone();
    let tail = wait_for(
        "the tail shows the worker's output",
        || cluster.logs(),
        || {
            let stdout = worker_cli_text(&through, &["logs", "counter"]).ok()?;
            let numbers = line_numbers(&stdout);
            (numbers.len() >= 2).then_some(numbers)
        },
    );
    let last = *tail.last().expect("a line");
    let follower = Follower::start(&through, "counter");
    let newer = follower.line_after(last);
    assert!(
        newer.is_some(),
        "--follow showed no line after line-{last}; logs:\n{}",
        cluster.logs()
    );
}

#[test]
fn the_config_workers_list_starts_a_worker() {
    let root = tempfile::tempdir().expect("temp dir");
    let config = root.path().join("quorum.yaml");
    std::fs::write(
        &config,
        format!(
            "workers:\n  - name: from-config\n    command: \"{COUNTER}\"\n    restart: always\n"
        ),
    )
    .expect("config file");
    let options = NodeOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..NodeOptions::default()
    };
    let node = Node::start_in(&root.path().join("node"), options);
    let status = wait_for(
        "the config's worker is listed",
        || node.log(),
        || worker_cli(&[], &node.cluster, &["status", "from-config"]).ok(),
    );
    assert_eq!(status["restart"], "always");
    wait_for(
        "the config's worker prints",
        || node.log(),
        || {
            let stdout = worker_cli_text(&node.cluster, &["logs", "from-config"]).ok()?;
            (!line_numbers(&stdout).is_empty()).then_some(())
        },
    );
}

/// A `workers:` entry whose process writes its pid to `pids/NAME` and then `marker` to its
/// log, and sleeps; it runs only on a node labelled `role=runner`.
fn pid_writing_entry(pids: &Path, name: &str, marker: &str) -> String {
    format!(
        "  - name: {name}\n    command: \"echo $$ > {pid}; echo {marker}; exec sleep 1000\"\n    node_labels:\n      role: runner\n",
        pid = pids.join(name).display()
    )
}

/// The pid the worker `name` wrote last, once it runs.
fn running_pid(cluster: &Cluster, pids: &Path, name: &str) -> u64 {
    wait_for(
        &format!("'{name}' runs"),
        || cluster.logs(),
        || {
            let pid = std::fs::read_to_string(pids.join(name)).ok()?;
            let pid: u64 = pid.trim().parse().ok()?;
            alive(pid).then_some(pid)
        },
    )
}

#[test]
fn restarted_with_an_edited_workers_list_a_node_removes_and_replaces_the_config_s_workers() {
    let root = tempfile::tempdir().expect("temp dir");
    let pids = root.path().join("pids");
    std::fs::create_dir(&pids).expect("pid dir");
    let config = root.path().join("quorum.yaml");
    let write_config = |entries: &[String]| {
        std::fs::write(&config, format!("workers:\n{}", entries.concat())).expect("config file")
    };
    write_config(&[
        pid_writing_entry(&pids, "changed", "version-one"),
        pid_writing_entry(&pids, "removed", "version-one"),
    ]);
    let config_args = || NodeOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..NodeOptions::default()
    };
    // Node 3 carries the config; node 2 alone may run the workers, so they outlive node 3's
    // restart and only the registry can stop them. Nodes 1 and 2 keep a majority meanwhile.
    let mut cluster = Cluster::start_with(3, |i| match i {
        2 => config_args(),
        1 => NodeOptions {
            // Never restarted for not registering (these workers never do) during the test.
            args: [
                "--node-label",
                "role=runner",
                "--managed-ready-timeout-secs",
                "600",
            ]
            .map(String::from)
            .to_vec(),
            ..NodeOptions::default()
        },
        _ => NodeOptions::default(),
    });
    let old_changed = running_pid(&cluster, &pids, "changed");
    let removed = running_pid(&cluster, &pids, "removed");
    let status = cluster
        .worker_cli(1, &["status", "changed"])
        .expect("status");
    assert_eq!(status["origin"], "config");
    // A worker an operator added by hand, which no config may touch.
    cluster
        .worker_cli(1, &["add", "--name", "by-hand", "--command", "sleep 1000"])
        .expect("add by hand");

    let seed = cluster.node(0).cluster.clone();
    cluster.kill(2);
    write_config(&[pid_writing_entry(&pids, "changed", "version-two")]);
    cluster.restart(2, &["--join", &seed], config_args());

    let address = cluster.node(1).cluster.clone();
    wait_for(
        "'removed' is no longer listed",
        || cluster.logs(),
        || (!names(&address).contains(&"removed".to_string())).then_some(()),
    );
    wait_for(
        "the removed worker's process is gone",
        || cluster.logs(),
        || (!alive(removed)).then_some(()),
    );
    wait_for(
        "'changed' runs the new command",
        || cluster.logs(),
        || {
            let log = worker_cli_text(&address, &["logs", "changed"]).ok()?;
            log.contains("version-two").then_some(())
        },
    );
    let new_changed = running_pid(&cluster, &pids, "changed");
    assert_ne!(
        new_changed, old_changed,
        "the changed worker was not restarted"
    );
    assert!(!alive(old_changed), "the old copy of 'changed' still runs");
    let status = cluster
        .worker_cli(1, &["status", "changed"])
        .expect("status");
    assert!(
        status["command"]
            .as_str()
            .is_some_and(|c| c.contains("version-two")),
        "{status}"
    );
    assert_eq!(
        names(&address),
        ["by-hand".to_string(), "changed".to_string()],
        "the worker added by hand is gone"
    );
}

/// What a node logs when the leader held its config's writes back.
const HELD_BACK_LOG: &str =
    "the config's managed workers are held back until every node is upgraded";

#[test]
fn a_config_removal_waits_while_a_member_runs_an_older_binary_and_commits_once_it_is_upgraded() {
    let root = tempfile::tempdir().expect("temp dir");
    let config = root.path().join("quorum.yaml");
    let write_config = |names: &[&str]| {
        let entries: String = names
            .iter()
            .map(|name| format!("  - name: {name}\n    command: \"sleep 1000\"\n"))
            .collect();
        std::fs::write(&config, format!("workers:\n{entries}")).expect("config file")
    };
    write_config(&["kept", "removed"]);
    let config_args = || NodeOptions {
        args: vec!["--config".into(), config.display().to_string()],
        ..NodeOptions::default()
    };
    // Node 3 carries the config; nodes 1 and 2 keep a majority while it restarts.
    let mut cluster = Cluster::start_with(3, |i| match i {
        2 => config_args(),
        _ => NodeOptions::default(),
    });
    let address = cluster.node(0).cluster.clone();
    wait_for(
        "both config workers are listed",
        || cluster.logs(),
        || (names(&address) == ["kept", "removed"]).then_some(()),
    );

    // Node 2 plays a binary from before command levels, which cannot apply what removing a
    // config's worker writes.
    let seed = cluster.node(0).cluster.clone();
    cluster.kill(1);
    let older = NodeOptions {
        env: vec![("QUORUM_TEST_ANNOUNCE_COMMAND_LEVEL".into(), "0".into())],
        ..NodeOptions::default()
    };
    cluster.restart(1, &["--join", &seed], older);
    wait_for(
        "node 2 announces command level 0",
        || cluster.logs(),
        || (cluster.status(1)?["command_level"] == 0).then_some(()),
    );
    wait_for(
        "the leader knows node 2's level",
        || cluster.logs(),
        || {
            let logs = cluster.logs();
            logs.contains("member 2 reports command level 0")
                .then_some(())
        },
    );
    cluster.kill(2);
    write_config(&["kept"]);
    cluster.restart(2, &["--join", &seed], config_args());
    wait_for(
        "node 3's config writes are held back for node 2's level",
        || cluster.logs(),
        || {
            let log = cluster.node(2).log();
            let held = log.lines().any(|line| {
                line.contains(HELD_BACK_LOG)
                    && line.contains("node 2 understands registry commands up to level 0")
            });
            held.then_some(())
        },
    );
    assert_eq!(
        names(&address),
        ["kept", "removed"],
        "a write node 2 cannot apply was committed"
    );

    // Node 2 upgraded: the config's next attempt (5 s, then 10 s, 20 s... later) commits.
    cluster.kill(1);
    cluster.restart(1, &["--join", &seed], NodeOptions::default());
    let deadline = Instant::now() + std::time::Duration::from_secs(90);
    while names(&address) != ["kept"] {
        assert!(
            Instant::now() < deadline,
            "the removal did not commit after the upgrade; logs:\n{}",
            cluster.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn two_config_entries_with_one_name_stop_the_node_with_a_config_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let config = root.path().join("quorum.yaml");
    std::fs::write(
        &config,
        "workers:\n  - name: a\n    command: sleep 1\n  - name: a\n    command: sleep 2\n",
    )
    .expect("config file");
    let output = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["serve", "--config", &config.display().to_string()])
        .arg("--data-dir")
        .arg(root.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .expect("run quorum serve");
    assert_eq!(output.status.code(), Some(2), "not a config error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'a'"), "{stderr}");
}

#[test]
fn with_certificates_the_operator_certificate_is_required() {
    let cluster = Cluster::start_secure_with(1, |_| NodeOptions::default());
    let address = cluster.node(0).cluster.clone();
    let add = ["add", "--name", "guarded", "--command", "sleep 1000"];
    let without = worker_cli(&[], &address, &add);
    assert!(without.is_err(), "added without a certificate");
    assert!(
        worker_cli(&[], &address, &["list"]).is_err(),
        "listed without a certificate"
    );
    let admin = cluster.credentials();
    assert!(
        worker_cli(&admin, &address, &["list"]).expect("list as admin")["workers"]
            .as_array()
            .is_some_and(|w| w.is_empty()),
        "something was added without a certificate"
    );
    worker_cli(&admin, &address, &add).expect("add as admin");
    assert!(worker_cli(&[], &address, &["remove", "guarded"]).is_err());
    worker_cli(&admin, &address, &["remove", "guarded"]).expect("remove as admin");
}
