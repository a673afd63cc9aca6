//! Several real quorum processes on 127.0.0.1 forming one Raft cluster: forming, registering
//! through a follower, restarting (with and without data), losing the leader, losing a
//! minority, and shrinking membership. Every wait polls `quorum cluster status` or the SDK's
//! view with a deadline. Calls between workers on different nodes are not covered here (the
//! invocation stream is built separately).

mod common;

use std::time::{Duration, Instant};

use common::{
    cluster_cli, function_ids, members, unique_name, wait_function, worker, Cluster, NodeOptions,
    CLUSTER_TIMEOUT,
};
use iii_sdk::{Error, RegisterFunction};
use serde_json::{json, Value};

fn echo() -> RegisterFunction {
    RegisterFunction::new_async(|input: Value| async move { Ok::<Value, Error>(input) })
}

/// Node ids and roles as seen from node `i`.
fn view(cluster: &Cluster, i: usize) -> (Option<u64>, Vec<(u64, String)>) {
    let status = cluster.status(i).expect("status answers");
    (status["leader_id"].as_u64(), members(&status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_one_cluster_seen_alike_from_every_member() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let first = view(&cluster, 0);
    assert_eq!(first.0, Some(leader));
    assert_eq!(
        first.1.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let cluster_id = cluster.status(0).unwrap()["cluster_id"].clone();
    assert!(cluster_id.as_str().is_some_and(|id| !id.is_empty()));
    for i in 1..3 {
        assert_eq!(view(&cluster, i), first, "node {} disagrees", i + 1);
        assert_eq!(cluster.status(i).unwrap()["cluster_id"], cluster_id);
    }
    let leaders: Vec<_> = first.1.iter().filter(|m| m.1 == "leader").collect();
    assert_eq!(leaders, vec![&(leader, "leader".to_string())]);
    let status = cluster.status(Cluster::index_of(leader)).unwrap();
    assert_eq!(status["state"], "leader");
    assert!(status["term"].as_u64().unwrap() >= 1);
    assert!(status["last_applied"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_through_a_follower_is_visible_on_every_node() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = cluster.a_follower(leader);
    let owner = worker(&cluster.node(follower).url, &unique_name("owner"), None).await;
    owner.register_function("svc::echo", echo());
    for i in 0..3 {
        let observer = worker(&cluster.node(i).url, &unique_name("observer"), None).await;
        wait_function(&observer, "svc::echo", true).await;
    }
    // Every member counts the owner's worker on the follower that holds its socket.
    let follower_id = cluster.node(follower).node_id;
    cluster.wait_until("the follower's worker is counted everywhere", |c| {
        (0..3).all(|i| {
            c.status(i).is_some_and(|s| {
                s["members"].as_array().is_some_and(|rows| {
                    rows.iter()
                        .any(|m| m["node_id"] == follower_id && m["workers"].as_u64() >= Some(2))
                })
            })
        })
    });
    // Discovery on another node lists the follower's workers (live facts come from there).
    let elsewhere = worker(
        &cluster.node(Cluster::index_of(leader)).url,
        &unique_name("lister"),
        None,
    )
    .await;
    let listed = common::call(&elsewhere, "engine::workers::list", json!({}))
        .await
        .expect("workers::list");
    let rows = listed["workers"].as_array().expect("workers");
    assert!(rows.len() >= 5, "{listed}");
    let status = cluster.status(follower).unwrap();
    assert_eq!(status["local_workers"], 2, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_with_join_rejoins_the_same_cluster() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let before = cluster.status(0).unwrap();
    let term = before["term"].as_u64().unwrap();
    let wiped = cluster.a_follower(leader);
    let seed = cluster.node(Cluster::index_of(leader)).cluster.clone();
    cluster.kill(wiped);
    std::fs::remove_dir_all(cluster.data_dir(wiped)).expect("wipe data dir");
    // New ports (as for a rescheduled pod), empty data, the same node id.
    cluster.restart(wiped, &["--join", &seed], NodeOptions::default());
    cluster.wait_until(
        "the wiped node follows the same leader with all data",
        |c| {
            let (Some(mine), Some(theirs)) = (c.status(wiped), c.status(Cluster::index_of(leader)))
            else {
                return false;
            };
            mine["leader_id"].as_u64() == Some(leader)
                && mine["cluster_id"] == before["cluster_id"]
                && mine["term"].as_u64() >= Some(term)
                && members(&mine) == members(&theirs)
                && mine["last_applied"].as_u64() >= Some(3)
                && mine["state"] == "follower"
        },
    );
    let status = cluster.status(wiped).unwrap();
    assert_eq!(members(&status).len(), 3, "{status}");
    let moved = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == cluster.node(wiped).node_id)
        .unwrap()["address"]
        .clone();
    assert_eq!(moved, json!(cluster.node(wiped).cluster), "address updated");
    // It serves: a registration through it commits cluster-wide.
    let owner = worker(&cluster.node(wiped).url, &unique_name("owner"), None).await;
    owner.register_function("svc::after_wipe", echo());
    let observer = worker(&cluster.node(0).url, &unique_name("observer"), None).await;
    wait_function(&observer, "svc::after_wipe", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_its_data_rejoins_without_cluster_flags() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = cluster.a_follower(leader);
    let options = NodeOptions {
        listen: Some(cluster.node(follower).listen.clone()),
        cluster_listen: Some(cluster.node(follower).cluster.clone()),
        ..Default::default()
    };
    cluster.kill(follower);
    // Only its data directory (and the ports it had): no --join, no --node-id.
    cluster.restart_bare(follower, options);
    let id = cluster.node(follower).node_id;
    assert_eq!(
        id,
        follower as u64 + 1,
        "the id comes from the data directory"
    );
    let leader = cluster.wait_for_leader();
    let status = cluster.status(follower).unwrap();
    assert_eq!(members(&status).len(), 3, "{status}");
    let owner = worker(&cluster.node(follower).url, &unique_name("owner"), None).await;
    owner.register_function("svc::after_restart", echo());
    let observer = worker(
        &cluster.node(Cluster::index_of(leader)).url,
        &unique_name("observer"),
        None,
    )
    .await;
    wait_function(&observer, "svc::after_restart", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_elects_another_and_follower_registrations_still_commit() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let survivors: Vec<usize> = cluster
        .live()
        .into_iter()
        .filter(|i| *i != Cluster::index_of(leader))
        .collect();
    let owner = worker(&cluster.node(survivors[0]).url, &unique_name("owner"), None).await;
    let observer = worker(
        &cluster.node(survivors[1]).url,
        &unique_name("observer"),
        None,
    )
    .await;

    cluster.kill(Cluster::index_of(leader));
    let killed_at = Instant::now();
    // Registered at once, while the survivors have not noticed yet: the node retries it.
    owner.register_function("svc::during_election", echo());
    let new_leader = cluster.wait_for_leader();
    let elected_after = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    assert!(
        elected_after < Duration::from_secs(5),
        "election took {elected_after:?}"
    );
    wait_function(&observer, "svc::during_election", true).await;
    let term = cluster.status(survivors[0]).unwrap()["term"]
        .as_u64()
        .unwrap();
    assert!(term >= 2, "a new term began: {term}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_losing_two() {
    let mut cluster = Cluster::start(5);
    let leader = cluster.wait_for_leader();
    // Lose the leader and one follower.
    let follower = cluster.a_follower(leader);
    cluster.kill(Cluster::index_of(leader));
    cluster.kill(follower);
    let new_leader = cluster.wait_for_leader();
    assert!(cluster.nodes[Cluster::index_of(new_leader)].is_some());
    let live = cluster.live();
    assert_eq!(live.len(), 3);
    let owner = worker(&cluster.node(live[0]).url, &unique_name("owner"), None).await;
    owner.register_function("svc::three_of_five", echo());
    for i in &live[1..] {
        let observer = worker(&cluster.node(*i).url, &unique_name("observer"), None).await;
        wait_function(&observer, "svc::three_of_five", true).await;
    }
    // The dead stay members until removed: five members, three answering.
    assert_eq!(members(&cluster.status(live[0]).unwrap()).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_and_leave_shrink_membership_but_never_below_a_quorum() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let follower = cluster.a_follower(leader);
    let follower_id = cluster.node(follower).node_id;
    let other = cluster
        .live()
        .into_iter()
        .find(|i| *i != follower && *i != Cluster::index_of(leader))
        .unwrap();
    // The follower's worker leaves the registry with its node.
    let owner = worker(&cluster.node(follower).url, &unique_name("owner"), None).await;
    owner.register_function("svc::on_removed_node", echo());
    let observer = worker(&cluster.node(other).url, &unique_name("observer"), None).await;
    wait_function(&observer, "svc::on_removed_node", true).await;

    // Removing a live follower, asked of another member.
    let reply = cluster_cli(
        &cluster.node(other).cluster,
        &["remove", &follower_id.to_string()],
    )
    .expect("remove succeeds");
    assert_eq!(members(&reply).len(), 2, "{reply}");
    cluster.wait_until("every member sees two members", |c| {
        [Cluster::index_of(leader), other]
            .iter()
            .all(|i| c.status(*i).is_some_and(|s| members(&s).len() == 2))
    });
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    while cluster.nodes[follower].as_mut().unwrap().is_running() {
        assert!(Instant::now() < deadline, "the removed node did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_function(&observer, "svc::on_removed_node", false).await;
    assert!(!function_ids(&observer)
        .await
        .contains(&"svc::on_removed_node".to_string()));

    // Removing a node that is not a member is refused.
    let refused =
        cluster_cli(&cluster.node(other).cluster, &["remove", "999"]).expect_err("unknown node");
    assert!(refused.contains("not a member"), "{refused}");
    // The leader itself leaves: it steps down, the other node finishes the removal alone.
    let leader_index = Cluster::index_of(leader);
    let left =
        cluster_cli(&cluster.node(leader_index).cluster, &["leave"]).expect("leave succeeds");
    assert_eq!(members(&left).len(), 1, "{left}");
    let other_id = cluster.node(other).node_id;
    cluster.wait_until("the remaining node leads itself", |c| {
        c.status(other).is_some_and(|s| {
            s["leader_id"].as_u64() == Some(other_id)
                && members(&s) == vec![(other_id, "leader".to_string())]
        })
    });
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    while cluster.nodes[leader_index].as_mut().unwrap().is_running() {
        assert!(Instant::now() < deadline, "the node that left did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last voter cannot leave.
    let refused = cluster_cli(&cluster.node(other).cluster, &["leave"])
        .expect_err("the last voter cannot leave");
    assert!(refused.contains("only voter"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_keep_working_while_nodes_join_and_leave() {
    let mut cluster = Cluster::start(3);
    let url = cluster.node(0).url.clone();
    let callee = worker(&url, &unique_name("callee"), None).await;
    callee.register_function("svc::echo", echo());
    let caller = worker(&url, &unique_name("caller"), None).await;
    wait_function(&caller, "svc::echo", true).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut done = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = common::call(&caller, "svc::echo", json!({ "n": done })).await;
                assert_eq!(answer.expect("call succeeds")["n"], json!(done));
                done += 1;
            }
            done
        }
    });
    // A fourth node joins, then node 3 (maybe the leader) is removed, while the calls run.
    tokio::task::block_in_place(|| {
        cluster.add(&[]);
        cluster.wait_until("four voters", |c| {
            c.status(0).is_some_and(|s| {
                let m = members(&s);
                m.len() == 4 && m.iter().all(|(_, role)| role != "learner")
            })
        });
        let reply = cluster_cli(&cluster.node(0).cluster, &["remove", "3"]).expect("remove node 3");
        assert_eq!(members(&reply).len(), 3, "{reply}");
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = calls.await.expect("no call failed");
    assert!(done > 0, "calls ran during the changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_would_lose_quorum_is_refused() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader();
    let dead = cluster.a_follower(leader);
    let dead_id = cluster.node(dead).node_id;
    cluster.kill(dead);
    let live_follower = cluster
        .live()
        .into_iter()
        .find(|i| *i != Cluster::index_of(leader))
        .unwrap();
    let leader_addr = cluster.node(Cluster::index_of(leader)).cluster.clone();
    let refused = cluster_cli(
        &leader_addr,
        &["remove", &(live_follower as u64 + 1).to_string()],
    )
    .expect_err("removing a live follower while another is dead loses the quorum");
    assert!(refused.contains("not a majority"), "{refused}");
    // Removing the dead one is fine, and the cluster keeps its two live voters.
    let reply = cluster_cli(&leader_addr, &["remove", &dead_id.to_string()])
        .expect("removing the dead node");
    assert_eq!(members(&reply).len(), 2, "{reply}");
}
