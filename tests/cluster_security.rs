//! The cluster port of a secure cluster (`--certs-dir`) refuses whoever was not let in:
//! every attack an outsider made on a plaintext cluster, replayed without a certificate, with
//! a valid certificate that belongs to no member, and with one member's certificate claiming
//! another's id. Nothing is accepted, no member leaves, and calls between members go on.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::certs::{cert, Certs};
use common::cluster_rpc::{self, heartbeat, pb, raft_request, vote_request};
use common::relay::{Faults, Relay};
use common::{
    call, cluster_cli_as, members, unique_name, wait_for, wait_function, worker, Cluster, Node,
    NodeOptions,
};
use iii_sdk::RegisterFunction;
use serde_json::{json, Value};
use tonic::Code;

/// Status through the admin certificate: (term, leader, cluster id, member ids).
fn observed(cluster: &Cluster, i: usize) -> (u64, u64, String, Vec<u64>) {
    let status = cluster.status(i).expect("admin status");
    (
        status["term"].as_u64().unwrap_or(0),
        status["leader_id"].as_u64().unwrap_or(0),
        status["cluster_id"].as_str().unwrap_or("").to_string(),
        members(&status).into_iter().map(|m| m.0).collect(),
    )
}

/// Asserts a raw RPC was refused for who sent it: the node answered "permission denied" or
/// "unauthenticated", or the connection itself was refused (a transport error: no TLS, no
/// certificate, a foreign certificate). An answer about the request's content (malformed,
/// not found) would mean it got past the door, and fails the test.
fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) {
    match result {
        Ok(answer) => panic!("{what} was accepted: {answer:?}"),
        Err(status) => assert!(
            matches!(
                status.code(),
                Code::PermissionDenied | Code::Unauthenticated
            ) || std::error::Error::source(&status).is_some(),
            "{what}: unexpected refusal {status:?}"
        ),
    }
}

/// Every attack of the issue, by a client holding `client`'s credentials.
async fn replay_attacks(
    what: &str,
    mut client: cluster_rpc::ClusterClient<tonic::transport::Channel>,
    cluster_id: &str,
) {
    let label = |rpc: &str| format!("{rpc} by {what}");
    assert_refused(
        &label("LiveFacts"),
        client.live_facts(pb::LiveFactsRequest {}).await,
    );
    assert_refused(
        &label("a forged AppendEntries from an unknown leader"),
        client
            .append_entries(raft_request(heartbeat(99_999, 99_999), cluster_id))
            .await,
    );
    assert_refused(
        &label("a forged AppendEntries from member 1"),
        client
            .append_entries(raft_request(heartbeat(1, 99_999), cluster_id))
            .await,
    );
    for term in 99_990..100_000 {
        assert_refused(
            &label("a forged vote request"),
            client
                .vote(raft_request(vote_request(3, term), cluster_id))
                .await,
        );
    }
    for command in [
        json!({"NodePurged": {"node": 3}}),
        json!({"NodeRestarted": {"node": 3}}),
    ] {
        assert_refused(
            &label("a registry write"),
            client
                .write(pb::WriteRequest {
                    command_json: command.to_string().into_bytes(),
                })
                .await,
        );
    }
    let mut stream = tonic::Request::new(futures_util::stream::pending::<pb::InvocationFrame>());
    stream
        .metadata_mut()
        .insert("x-quorum-node", "3".parse().expect("header"));
    assert_refused(
        &label("an invocation stream claiming node 3"),
        client.invocations(stream).await.map(|_| ()),
    );
    assert_refused(
        &label("remove"),
        client.remove(pb::RemoveRequest { node_id: 3 }).await,
    );
    assert_refused(&label("leave"), client.leave(pb::LeaveRequest {}).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_and_impostors_are_refused_and_members_keep_calling() {
    let cluster = Cluster::start_secure_with(3, |_| NodeOptions::default());
    let certs = cluster.certs.as_ref().expect("secure cluster");
    let callee = worker(&cluster.node(1).url, &unique_name("callee"), None).await;
    callee.register_function(
        "secure::echo",
        RegisterFunction::new_async(
            |input: Value| async move { Ok::<Value, iii_sdk::Error>(input) },
        ),
    );
    let caller = worker(&cluster.node(2).url, &unique_name("caller"), None).await;
    wait_function(&caller, "secure::echo", true).await;
    assert_eq!(
        call(&caller, "secure::echo", json!({"n": 1}))
            .await
            .unwrap()["n"],
        1
    );
    let (term, leader, cluster_id, ids) = observed(&cluster, 1);
    assert_eq!(ids, vec![1, 2, 3]);
    let target = cluster.node(1).cluster.clone();

    // No certificate at all: plaintext, and TLS without a client certificate.
    replay_attacks(
        "a plaintext client",
        cluster_rpc::plaintext(&target),
        &cluster_id,
    )
    .await;
    assert_refused(
        "Status in plaintext",
        cluster_rpc::plaintext(&target)
            .status(pb::StatusRequest {})
            .await,
    );
    let anonymous = cluster_rpc::tls(&target, &certs.ca_dir(), None);
    replay_attacks(
        "a TLS client without a certificate",
        anonymous.clone(),
        &cluster_id,
    )
    .await;
    assert_refused(
        "Status without a certificate",
        anonymous.clone().status(pb::StatusRequest {}).await,
    );

    // A valid node certificate that belongs to no member.
    let intruder = certs.node_dir("intruder");
    replay_attacks(
        "a non-member's node certificate",
        cluster_rpc::as_node(&target, &intruder),
        &cluster_id,
    )
    .await;

    // Member 3's own certificate, claiming to be another node.
    let member3 = certs.node_dir("3");
    let mut impostor = cluster_rpc::as_node(&target, &member3);
    assert_refused(
        "member 3's certificate sending heartbeats as leader 1",
        impostor
            .append_entries(raft_request(heartbeat(1, term + 50), &cluster_id))
            .await,
    );
    assert_refused(
        "member 3's certificate asking for votes as node 1",
        impostor
            .vote(raft_request(vote_request(1, term + 50), &cluster_id))
            .await,
    );
    let mut stream = tonic::Request::new(futures_util::stream::pending::<pb::InvocationFrame>());
    stream
        .metadata_mut()
        .insert("x-quorum-node", "1".parse().expect("header"));
    assert_refused(
        "member 3's certificate opening node 1's invocation stream",
        impostor.invocations(stream).await.map(|_| ()),
    );

    // An operator certificate operates, but never speaks as a member.
    let admin = cluster_rpc::tls(
        &target,
        &certs.ca_dir(),
        Some((&certs.ca_dir(), "client.admin.crt", "client.admin.key")),
    );
    assert_refused(
        "a heartbeat with the admin certificate",
        admin
            .clone()
            .append_entries(raft_request(heartbeat(1, term), &cluster_id))
            .await,
    );
    assert_refused(
        "a registry write with the admin certificate",
        admin
            .clone()
            .write(pb::WriteRequest {
                command_json: json!({"NodePurged": {"node": 3}}).to_string().into_bytes(),
            })
            .await,
    );

    // A second process with a valid certificate claiming member 3's id is never admitted.
    let takeover_dir = tempfile::tempdir().unwrap();
    let takeover = Node::spawn_in(
        takeover_dir.path(),
        NodeOptions {
            args: [
                "--node-id",
                "3",
                "--join",
                &cluster.node(0).cluster,
                "--certs-dir",
                intruder.to_str().unwrap(),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect(),
            ..NodeOptions::default()
        },
    );
    let refused = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(takeover_dir.path().with_extension("log")).unwrap();
        if log.contains("belongs to a member with another certificate") {
            break;
        }
        assert!(
            Instant::now() < refused,
            "the takeover was not refused:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(takeover);

    // Nothing changed: same leader, same term, all three members, calls still answered.
    let (term_after, leader_after, _, ids_after) = observed(&cluster, 1);
    assert_eq!(ids_after, vec![1, 2, 3], "{}", cluster.logs());
    assert_eq!(
        (term_after, leader_after),
        (term, leader),
        "{}",
        cluster.logs()
    );
    for n in 0..20 {
        assert_eq!(
            call(&caller, "secure::echo", json!({"n": n}))
                .await
                .unwrap()["n"],
            n
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_need_the_admin_certificate() {
    let cluster = Cluster::start_secure_with(3, |_| NodeOptions::default());
    let certs = cluster.certs.as_ref().expect("secure cluster");
    let address = cluster.node(0).cluster.clone();
    let without = common::cluster_cli(&address, &["remove", "3"]);
    assert!(without.is_err(), "removed without a certificate");
    let other_ca = Certs::new();
    let foreign = common::cluster_cli_as(&[], &other_ca.admin_args(), &address, &["remove", "3"]);
    assert!(foreign.is_err(), "removed with another CA's certificate");
    let member = common::cluster_cli_as(
        &[],
        &[
            "--certs-dir".into(),
            certs.node_dir("intruder").display().to_string(),
            "--client".into(),
            "node".into(),
        ],
        &address,
        &["remove", "3"],
    );
    assert!(
        member.is_err(),
        "removed with a non-member's node certificate"
    );
    assert_eq!(
        members(&cluster.status(0).unwrap())
            .into_iter()
            .map(|m| m.0)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let removed = cluster
        .cli(0, &["remove", "3"])
        .expect("admin removes node 3");
    let ids: Vec<u64> = members(&removed).into_iter().map(|m| m.0).collect();
    assert_eq!(ids, vec![1, 2]);
    // A node's own certificate may read the status (a container's health check).
    let status = common::cluster_cli_as(
        &[],
        &[
            "--certs-dir".into(),
            certs.node_dir("1").display().to_string(),
            "--client".into(),
            "node".into(),
        ],
        &address,
        &["status"],
    )
    .expect("status with a node certificate");
    assert_eq!(status["node_id"], 1);
}

/// Makes the log long before other nodes join: a worker on `url` registers `count`
/// functions, each committed before the next (one log entry each at least), then leaves.
async fn register_early_functions(url: &str, count: u64) {
    let owner = worker(url, &unique_name("owner"), None).await;
    for i in 0..count {
        let id = format!("early::f{i}");
        owner.register_function(
            &id,
            RegisterFunction::new_async(|input: Value| async move {
                Ok::<Value, iii_sdk::Error>(input)
            }),
        );
        wait_function(&owner, &id, true).await;
    }
}

/// A node that rejoins with a wiped log learns the membership from it 8 entries at a time, so
/// for a while its log shows a membership without the members that joined later. Here the
/// cluster's log is long before nodes 2 and 3 join, and one of them leads when node 1 comes
/// back wiped: the leader's certificate must still be let in (it was refused for good, and the
/// node never became ready, when only the log's membership counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_catches_up_from_a_leader_its_early_log_does_not_name() {
    let mut cluster = Cluster::empty_secure();
    cluster.spawn_node(NodeOptions::default());
    register_early_functions(&cluster.node(0).url, 12).await;
    cluster.add(&[]);
    cluster.add(&[]);
    cluster.wait_until("three voters", |c| {
        c.status(0)
            .is_some_and(|s| members(&s).iter().filter(|m| m.1 != "learner").count() == 3)
    });
    let last_index = cluster.status(0).unwrap()["last_log_index"]
        .as_u64()
        .unwrap();
    assert!(
        last_index > 16,
        "the log is long before the others joined: {last_index}"
    );

    cluster.kill(0);
    std::fs::remove_dir_all(cluster.data_dir(0)).expect("wipe node 1");
    let leader = cluster.wait_for_leader();
    assert_ne!(leader, 1);
    let seed = cluster.node(Cluster::index_of(leader)).cluster.clone();
    // Ready means it joined and committed its restart, which needs the leader's entries.
    cluster.restart(0, &["--join", &seed], NodeOptions::default());
    cluster.wait_until("the wiped node caught up with the leader", |c| {
        let (Some(mine), Some(theirs)) = (c.status(0), c.status(Cluster::index_of(leader))) else {
            return false;
        };
        mine["leader_id"] == theirs["leader_id"]
            && members(&mine) == members(&theirs)
            && mine["last_applied"].as_u64() >= Some(last_index)
    });
    // The admission it kept on disk for a restart during the catch-up is removed once its
    // log holds that membership.
    cluster.wait_until("the wiped node forgot its admission", |c| {
        c.node(0)
            .log()
            .contains("caught up with the admitted membership; admission forgotten")
    });
    assert!(!cluster.data_dir(0).join("admitted_members.json").exists());
    // It serves: a registration through it commits cluster-wide.
    let owner = worker(&cluster.node(0).url, &unique_name("owner"), None).await;
    owner.register_function(
        "late::echo",
        RegisterFunction::new_async(
            |input: Value| async move { Ok::<Value, iii_sdk::Error>(input) },
        ),
    );
    let leader_url = &cluster.node(Cluster::index_of(leader)).url;
    let observer = worker(leader_url, &unique_name("observer"), None).await;
    wait_function(&observer, "late::echo", true).await;
}

/// A secure cluster of `n` nodes behind relays (node `i` on `127.0.0.{71+i}`, its relay on
/// `127.0.0.{81+i}`), grown one node at a time by the caller: returns the cluster, the relays'
/// faults, the node IPs and each node's options (kept for restarts). Nothing is started.
async fn relayed_secure(n: u8) -> (Cluster, Faults, Vec<IpAddr>, Vec<Relay>, Vec<NodeOptions>) {
    let faults = Faults::default();
    let mut cluster = Cluster::empty_secure();
    cluster.cert_hosts = (0..n)
        .flat_map(|i| [format!("127.0.0.{}", 71 + i), format!("127.0.0.{}", 81 + i)])
        .collect();
    let (mut ips, mut relays, mut options) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let ip: IpAddr = [127, 0, 0, 71 + i].into();
        let target = SocketAddr::new(ip, common::free_port_on(ip));
        let relay = Relay::start([127, 0, 0, 81 + i].into(), target, &faults).await;
        options.push(NodeOptions {
            cluster_listen: Some(target.to_string()),
            args: vec!["--advertise".to_string(), relay.addr.to_string()],
            ..NodeOptions::default()
        });
        ips.push(ip);
        relays.push(relay);
    }
    (cluster, faults, ips, relays, options)
}

/// Registrations node 1 commits alone before the others join: the catch-up takes about one
/// round of 8 entries per 8 of them.
const EARLY_ENTRIES: u64 = 150;

/// The delay a slowed relay puts before each chunk: a round trip stays under the 100 ms
/// openraft gives an AppendEntries, so the catch-up goes on, slowly.
const SLOW_CHUNK: Duration = Duration::from_millis(30);

/// What a node logs when it starts on an admission a catch-up before its restart kept.
const ADMISSION_KEPT: &str = "admission kept from a catch-up before a restart";

/// What openraft logs when a node becomes leader.
const BECAME_LEADER: &str = "become leader";

/// How often node `i`'s log (all its runs) holds `text`.
fn log_count(cluster: &Cluster, i: usize, text: &str) -> usize {
    std::fs::read_to_string(cluster.data_dir(i).with_extension("log"))
        .unwrap_or_default()
        .matches(text)
        .count()
}

/// The last log index in a status answer.
fn last_log_index(status: &Value) -> u64 {
    status["last_log_index"].as_u64().unwrap_or(0)
}

/// Gap 3 of issue 14: a node that comes back wiped catches up from the leader as a learner,
/// which takes milliseconds; here a relay slows that catch-up down and then holds it, the node
/// is SIGKILLed with part of the log written, restarted on what it had (its admission kept on
/// disk), and released. It must catch up (the registry state written before it was wiped
/// reaches it), let go of its admission, and the cluster must keep committing writes, through
/// it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_killed_during_its_stuck_catch_up_restarts_and_catches_up() {
    let (mut cluster, faults, ips, relays, options) = relayed_secure(3).await;
    let wiped = 0;
    tokio::task::block_in_place(|| cluster.spawn_node(options[0].clone()));
    // A long log before the others join (each registration committed before the next), so
    // the catch-up takes many rounds of 8 entries and its early part names node 1 alone.
    register_early_functions(&cluster.node(0).url, EARLY_ENTRIES).await;
    for later in &options[1..] {
        let mut joining = later.clone();
        joining
            .args
            .extend(["--join".to_string(), relays[0].addr.to_string()]);
        tokio::task::block_in_place(|| cluster.spawn_node(joining));
    }
    tokio::task::block_in_place(|| {
        cluster.wait_until("three voters", |c| {
            c.status(0)
                .is_some_and(|s| members(&s).iter().filter(|m| m.1 != "learner").count() == 3)
        })
    });
    // Registry state the wiped node must learn: a function held by a worker on node 2.
    let keeper = worker(&cluster.node(1).url, &unique_name("keeper"), None).await;
    keeper.register_function(
        "kept::echo",
        RegisterFunction::new_async(
            |input: Value| async move { Ok::<Value, iii_sdk::Error>(input) },
        ),
    );
    wait_function(&keeper, "kept::echo", true).await;

    tokio::task::block_in_place(|| cluster.kill(wiped));
    std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("wipe node 1");
    let leader = tokio::task::block_in_place(|| cluster.wait_for_leader());
    assert_ne!(leader, 1);
    let leader_index = Cluster::index_of(leader);
    let target = cluster
        .status(leader_index)
        .map_or(0, |s| last_log_index(&s));
    assert!(target > EARLY_ENTRIES, "the log is long: {target}");
    let rejoin_args = ["--join".to_string(), relays[leader_index].addr.to_string()];
    let rejoin: Vec<&str> = rejoin_args.iter().map(String::as_str).collect();
    let address = options[wiped]
        .cluster_listen
        .clone()
        .expect("fixed cluster port");
    let credentials = cluster.credentials();
    let status_of_wiped = || cluster_cli_as(&[], &credentials, &address, &["status"]).ok();

    // Slowed, the catch-up takes seconds: held as soon as part of the log is in.
    faults.slow(ips[wiped], SLOW_CHUNK);
    let catching_up = tokio::task::block_in_place(|| {
        cluster.restart_starting(wiped, &rejoin, options[wiped].clone())
    });
    // Asked back to back (one status is one CLI run): the catch-up lasts about a second.
    let asked_since = Instant::now();
    let partial = tokio::task::block_in_place(|| loop {
        let index = status_of_wiped().map_or(0, |s| last_log_index(&s));
        if index > 0 {
            break index;
        }
        assert!(
            asked_since.elapsed() < common::CLUSTER_TIMEOUT,
            "the wiped node never got part of the log; logs:\n{}",
            cluster.logs()
        );
    });
    faults.hold(ips[wiped]);
    let held_at = status_of_wiped().map_or(partial, |s| last_log_index(&s));
    assert!(
        held_at < target,
        "held in the middle of the catch-up: {held_at} of {target}"
    );
    assert!(
        cluster
            .data_dir(wiped)
            .join("admitted_members.json")
            .exists(),
        "admitted, and its admission kept on disk for a restart during the catch-up"
    );
    let first_pid = catching_up.pid();
    tokio::task::block_in_place(|| catching_up.kill());
    assert!(!common::processes::alive(u64::from(first_pid)));
    println!("wiped node killed with {held_at} of {target} entries");

    // Restarted on what it had written, still held: it reads its admission back.
    let kept_before = log_count(&cluster, wiped, ADMISSION_KEPT);
    let led_before = log_count(&cluster, wiped, BECAME_LEADER);
    let restarted = tokio::task::block_in_place(|| {
        cluster.restart_starting(wiped, &rejoin, options[wiped].clone())
    });
    tokio::task::block_in_place(|| {
        wait_for(
            "the restarted node reads its admission back",
            || restarted.log(),
            || (log_count(&cluster, wiped, ADMISSION_KEPT) > kept_before).then_some(()),
        )
    });
    let released = Instant::now();
    faults.heal(ips[wiped]);
    let node = tokio::task::block_in_place(|| restarted.ready());
    cluster.nodes[wiped] = Some(node);
    tokio::task::block_in_place(|| {
        cluster.wait_until("the wiped node caught up with the leader", |c| {
            let (Some(mine), Some(theirs)) = (c.status(wiped), c.status(leader_index)) else {
                return false;
            };
            mine["leader_id"] == theirs["leader_id"]
                && members(&mine) == members(&theirs)
                && mine["last_applied"].as_u64() >= Some(target)
        });
        cluster.wait_until("the wiped node forgot its admission", |c| {
            c.node(wiped)
                .log()
                .contains("caught up with the admitted membership; admission forgotten")
        });
    });
    println!("caught up {:?} after the release", released.elapsed());
    // Its partial log ends at the membership it founded alone: elected from that, it led a
    // cluster of one (and served, and its conflicting entries crashed its Raft core when the
    // real leader came back).
    assert_eq!(
        log_count(&cluster, wiped, BECAME_LEADER),
        led_before,
        "the restarted node elected itself from its partial log"
    );
    assert!(!cluster
        .data_dir(wiped)
        .join("admitted_members.json")
        .exists());

    // It sees the state written before it was wiped, and writes commit, through it too.
    let observer = worker(&cluster.node(wiped).url, &unique_name("observer"), None).await;
    wait_function(&observer, "kept::echo", true).await;
    let answer = call(&observer, "kept::echo", json!({"after": "catch-up"}))
        .await
        .expect("a call through the caught-up node");
    assert_eq!(answer["after"], "catch-up", "{answer}");
    let late = worker(&cluster.node(wiped).url, &unique_name("late"), None).await;
    late.register_function(
        "late::echo",
        RegisterFunction::new_async(
            |input: Value| async move { Ok::<Value, iii_sdk::Error>(input) },
        ),
    );
    wait_function(&keeper, "late::echo", true).await;
}

/// A secure single node on its own temp dir, with its certificates.
fn secure_node() -> (Node, Certs, tempfile::TempDir) {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let node_dir = certs.node_dir("1");
    let node = Node::start_in(
        dir.path(),
        NodeOptions {
            args: vec!["--certs-dir".into(), node_dir.display().to_string()],
            ..NodeOptions::default()
        },
    );
    (node, certs, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_peers_are_dropped_and_the_node_keeps_serving() {
    let (node, certs, _dir) = secure_node();
    let address = node.cluster.clone();

    // A handshake that never completes is dropped after the handshake deadline.
    let mut silent = TcpStream::connect(&address).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the silent peer got {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a silent handshake was held for {:?}",
        started.elapsed()
    );

    // Garbage where a TLS ClientHello belongs.
    let mut garbage = TcpStream::connect(&address).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
        .unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("200"),
        "garbage got an answer"
    );

    // A certificate signed by another CA.
    let other = Certs::new();
    let foreign = other.node_dir("1");
    assert_refused(
        "status with another CA's node certificate",
        cluster_rpc::tls(
            &address,
            &certs.ca_dir(),
            Some((&foreign, "node.crt", "node.key")),
        )
        .status(pb::StatusRequest {})
        .await,
    );

    // An expired certificate signed by the right CA.
    let expired = tempfile::tempdir().unwrap();
    make_expired_client(&certs, expired.path());
    assert_refused(
        "status with an expired certificate",
        cluster_rpc::tls(
            &address,
            &certs.ca_dir(),
            Some((expired.path(), "client.crt", "client.key")),
        )
        .status(pb::StatusRequest {})
        .await,
    );

    // The node still answers its own members and operators.
    let mut admin = cluster_rpc::tls(
        &address,
        &certs.ca_dir(),
        Some((&certs.ca_dir(), "client.admin.crt", "client.admin.key")),
    );
    let status = admin
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.node_id, node.node_id);
}

/// Writes `client.crt`/`client.key` into `dir`: an operator certificate of `certs`'s CA that
/// expired yesterday.
fn make_expired_client(certs: &Certs, dir: &std::path::Path) {
    let ca_cert = std::fs::read_to_string(certs.ca_dir().join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.ca_dir().join("ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client.admin");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("client.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
}

#[test]
fn a_plaintext_cluster_port_off_loopback_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--cluster-listen", "0.0.0.0:0", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--certs-dir") && err.contains("--insecure"),
        "{err}"
    );
    // `quorum cert` refuses to replace a CA.
    let certs = Certs::new();
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["cert", "create-ca", "--certs-dir"])
        .arg(certs.ca_dir())
        .output()
        .unwrap();
    assert!(!again.status.success());
    cert(&[
        "create-client",
        "--certs-dir",
        certs.ca_dir().to_str().unwrap(),
        "ops",
    ]);
    assert!(certs.ca_dir().join("client.ops.crt").exists());
}
