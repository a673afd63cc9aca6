//! Starting as a Kubernetes StatefulSet does: three pods with identical arguments (only
//! `POD_NAME` differs), started in a random order, each advertising a DNS name. As root the
//! names are real (temporary `/etc/hosts` lines mapping them to 127.0.0.1, removed on drop);
//! otherwise the addresses fall back to `127.0.0.1:PORT` literals. Checks that one cluster
//! forms, that a wiped founder (pod 0) rejoins the same cluster, and that a pod whose DNS name
//! disappears (a scale-down) is removed from the membership. The pods share one node
//! certificate valid for all their names, as the chart's generated Secret gives them.

mod common;

use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::certs::Certs;
use common::rng::Rng;
use common::{
    call, cluster_cli_as, free_port, members, unique_name, wait_function, worker, Node,
    NodeOptions, CLUSTER_TIMEOUT,
};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};

const HOSTS: &str = "/etc/hosts";
const PODS: usize = 3;

/// Temporary `/etc/hosts` lines, each tagged with a marker unique to this guard; every line
/// still present is removed on drop, also when the test fails.
struct HostsGuard {
    marker: String,
}

impl HostsGuard {
    /// A guard when this process may edit the hosts file (root), else `None`; also `None`
    /// with `QUORUM_TEST_NO_HOSTS` set, to exercise the fallback.
    fn new() -> Option<HostsGuard> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let writable = std::env::var_os("QUORUM_TEST_NO_HOSTS").is_none()
            && unsafe { libc::geteuid() } == 0
            && std::fs::OpenOptions::new().append(true).open(HOSTS).is_ok();
        writable.then(|| HostsGuard {
            marker: format!(
                "qtest-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        })
    }

    /// Rewrites the hosts file under an exclusive lock (other tests may edit it too).
    fn edit(&self, change: impl FnOnce(&str) -> String) {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(HOSTS)
            .expect("open hosts file");
        unsafe {
            libc::flock(file.as_raw_fd(), libc::LOCK_EX);
        }
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read hosts file");
        let changed = change(&text);
        file.rewind().expect("rewind hosts file");
        file.set_len(0).expect("truncate hosts file");
        file.write_all(changed.as_bytes())
            .expect("write hosts file");
        // Closing the file releases the lock.
    }

    /// Maps `name` to 127.0.0.1.
    fn map(&self, name: &str) {
        let line = format!("127.0.0.1 {name} # {}\n", self.marker);
        self.edit(|text| {
            let mut text = text.to_string();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text + &line
        });
    }

    /// Removes the mapping of `name` (its DNS record disappears).
    fn unmap(&self, name: &str) {
        let tag = format!(" {name} # {}", self.marker);
        self.edit(|text| keep_lines(text, |line| !line.ends_with(&tag)));
    }

    /// A host name unique to this guard for pod `pod`.
    fn name(&self, pod: &str) -> String {
        format!("{pod}.{}", self.marker)
    }
}

impl Drop for HostsGuard {
    fn drop(&mut self) {
        let tag = format!("# {}", self.marker);
        self.edit(|text| keep_lines(text, |line| !line.ends_with(&tag)));
    }
}

fn keep_lines(text: &str, keep: impl Fn(&str) -> bool) -> String {
    text.lines()
        .filter(|line| keep(line))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Three pods started the StatefulSet way; each process is killed by PID on drop.
struct StatefulSet {
    pods: Vec<Option<Node>>,
    /// The address each pod advertises (and the `--join` list, in pod order).
    advertise: Vec<String>,
    /// The host name of each pod when the hosts file is used.
    names: Vec<Option<String>>,
    ports: Vec<u16>,
    /// `--remove-departed-after-ms`, as the chart sets it unless a test needs it sooner.
    departed_after_ms: u64,
    extra: Vec<String>,
    root: tempfile::TempDir,
    hosts: Option<HostsGuard>,
    /// The CA, and the one node certificate every pod mounts, as the chart's Secret gives it.
    certs: Certs,
    pod_certs: PathBuf,
}

impl StatefulSet {
    /// Chooses ports and names for `PODS` pods; `extra` is appended to every pod's arguments.
    fn new(departed_after_ms: u64, extra: &[&str]) -> StatefulSet {
        let hosts = HostsGuard::new();
        let ports: Vec<u16> = (0..PODS).map(|_| free_port()).collect();
        let mut advertise = Vec::new();
        let mut names = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            match &hosts {
                Some(hosts) => {
                    let name = hosts.name(&pod_name(i));
                    hosts.map(&name);
                    advertise.push(format!("{name}:{port}"));
                    names.push(Some(name));
                }
                None => {
                    advertise.push(format!("127.0.0.1:{port}"));
                    names.push(None);
                }
            }
        }
        if hosts.is_none() {
            println!(
                "hosts file not editable (not root, or QUORUM_TEST_NO_HOSTS): pods advertise \
                 127.0.0.1:PORT literals, not DNS names"
            );
        }
        let root = tempfile::tempdir().expect("temp dir");
        let certs = Certs::new();
        let pod_certs = root.path().join("pod-certs");
        let mut create = vec!["create-node", "127.0.0.1", "localhost"];
        create.extend(names.iter().flatten().map(String::as_str));
        certs.signed_dir(&pod_certs, &create);
        StatefulSet {
            pods: (0..PODS).map(|_| None).collect(),
            advertise,
            names,
            ports,
            departed_after_ms,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            root,
            hosts,
            certs,
            pod_certs,
        }
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(pod_name(i))
    }

    /// The options of pod `i`: the same template for every pod, filled with its `POD_NAME`
    /// (ports differ only because every pod shares one loopback address here).
    fn options(&self, i: usize) -> NodeOptions {
        let pod = pod_name(i);
        let mut args = vec![
            "--advertise".to_string(),
            self.advertise[i].clone(),
            "--node-id-from-pod-name".to_string(),
            pod.clone(),
            "--join".to_string(),
            self.advertise.join(","),
            "--remove-departed-after-ms".to_string(),
            self.departed_after_ms.to_string(),
            "--certs-dir".to_string(),
            self.pod_certs.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        NodeOptions {
            cluster_listen: Some(format!("127.0.0.1:{}", self.ports[i])),
            args,
            env: vec![("POD_NAME".to_string(), pod)],
            ..NodeOptions::default()
        }
    }

    /// Starts every pod in a random order with small random delays, then waits until each
    /// is ready (a pod becomes ready only once it is a member).
    fn start_all(&mut self, rng: &mut Rng) {
        let mut order: Vec<usize> = (0..PODS).collect();
        rng.shuffle(&mut order);
        println!(
            "start order: {:?}",
            order.iter().map(|i| pod_name(*i)).collect::<Vec<_>>()
        );
        let mut starting = Vec::new();
        for i in order {
            let dir = self.data_dir(i);
            std::fs::create_dir_all(&dir).expect("pod data dir");
            starting.push((i, Node::spawn_in(&dir, self.options(i))));
            // Part of the scenario (pods start at different moments), not a synchronisation.
            std::thread::sleep(Duration::from_millis(rng.below(400) as u64));
        }
        for (i, pod) in starting {
            let node = pod.ready();
            self.pods[i] = Some(node);
        }
    }

    fn node(&self, i: usize) -> &Node {
        self.pods[i].as_ref().expect("pod is running")
    }

    fn status(&self, i: usize) -> Option<Value> {
        cluster_cli_as(
            &[],
            &self.certs.admin_args(),
            &self.node(i).cluster,
            &["status"],
        )
        .ok()
    }

    /// Polls until `check` holds, or panics with every pod's log.
    fn wait_until(&self, what: &str, mut check: impl FnMut(&StatefulSet) -> bool) {
        let deadline = std::time::Instant::now() + CLUSTER_TIMEOUT;
        while !check(self) {
            if std::time::Instant::now() > deadline {
                panic!("timed out waiting until {what}; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The cluster id every running pod reports, once they all agree on it, on one leader and
    /// on the voters `expected`.
    fn wait_formed(&self, expected: &[u64]) -> String {
        let mut agreed = String::new();
        self.wait_until("the running pods form one cluster", |set| {
            let statuses: Option<Vec<Value>> = (0..PODS)
                .filter(|i| set.pods[*i].is_some())
                .map(|i| set.status(i))
                .collect();
            let Some(statuses) = statuses else {
                return false;
            };
            let first = &statuses[0];
            let id = first["cluster_id"].as_str().unwrap_or("").to_string();
            let leader = first["leader_id"].as_u64();
            let formed = !id.is_empty()
                && leader.is_some()
                && statuses.iter().all(|s| {
                    let voters = members(s);
                    s["cluster_id"] == id.as_str()
                        && s["leader_id"].as_u64() == leader
                        && voters.iter().map(|m| m.0).collect::<Vec<_>>() == expected
                        && voters.iter().all(|m| m.1 != "learner")
                });
            if formed {
                agreed = id;
            }
            formed
        });
        agreed
    }

    fn logs(&self) -> String {
        (0..PODS)
            .map(|i| {
                let log = std::fs::read_to_string(self.data_dir(i).with_extension("log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", pod_name(i), tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn pod_name(i: usize) -> String {
    format!("quorum-{i}")
}

fn echo() -> RegisterFunction {
    RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_started_in_any_order_form_one_cluster_and_a_wiped_founder_rejoins_it() {
    let mut rng = Rng::from_env_or_clock();
    let mut set = StatefulSet::new(60_000, &[]);
    tokio::task::block_in_place(|| set.start_all(&mut rng));
    let cluster_id = tokio::task::block_in_place(|| set.wait_formed(&[1, 2, 3]));
    for i in 0..PODS {
        assert_eq!(
            set.node(i).node_id,
            i as u64 + 1,
            "pod {i} id from its name"
        );
    }

    let owner = worker(&set.node(1).url, &unique_name("owner"), None).await;
    owner.register_function("statefulset::echo", echo());
    // Committed before the kill: a registration forwarded at the very moment the leader dies
    // is another matter (see the forwarder).
    wait_function(&owner, "statefulset::echo", true).await;

    // The hardest case: pod 0, the designated founder, loses its volume.
    if let Some(mut pod) = set.pods[0].take() {
        pod.kill();
    }
    std::fs::remove_dir_all(set.data_dir(0)).expect("wipe pod 0's volume");
    let options = set.options(0);
    let restarted = tokio::task::block_in_place(|| Node::start_in(&set.data_dir(0), options));
    set.pods[0] = Some(restarted);
    let rejoined = tokio::task::block_in_place(|| set.wait_formed(&[1, 2, 3]));
    assert_eq!(
        rejoined, cluster_id,
        "the wiped founder rejoined, not refounded"
    );
    assert_eq!(set.node(0).node_id, 1);

    let caller = worker(&set.node(0).url, &unique_name("caller"), None).await;
    wait_function(&caller, "statefulset::echo", true).await;
    let answer = call(&caller, "statefulset::echo", json!({"from": "quorum-0"}))
        .await
        .expect("call through the rejoined founder");
    assert_eq!(answer["from"], "quorum-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_name_stops_resolving_is_removed_from_the_cluster() {
    let mut rng = Rng::from_env_or_clock();
    let mut set = StatefulSet::new(
        1_000,
        &["--fence-after-ms", "1000", "--purge-after-ms", "2000"],
    );
    if set.hosts.is_none() {
        println!("SKIPPED: needs root to give pods DNS names that can disappear");
        return;
    }
    tokio::task::block_in_place(|| set.start_all(&mut rng));
    let cluster_id = tokio::task::block_in_place(|| set.wait_formed(&[1, 2, 3]));

    // Scale down: pod 2 is deleted, and its DNS record with it.
    if let Some(mut pod) = set.pods[2].take() {
        pod.kill();
    }
    if let (Some(hosts), Some(name)) = (&set.hosts, &set.names[2]) {
        hosts.unmap(name);
    }
    let remaining = tokio::task::block_in_place(|| set.wait_formed(&[1, 2]));
    assert_eq!(remaining, cluster_id);
    assert!(
        set.logs().contains("departed voter removed"),
        "the leader logged the removal:\n{}",
        set.logs()
    );
}
