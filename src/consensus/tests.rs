//! Tests of the consensus module: openraft's storage conformance suite run against the sled
//! stores, and single-node end-to-end runs (writes, restart from log, restart from snapshot,
//! `Applied` ordering). No sleeps: everything waits on openraft metrics or channels with
//! deadlines.

use std::path::Path;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::StorageError;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::log_store::SledLogStore;
use super::sled_io::io_err;
use super::state_machine::SledStateMachine;
use super::Applied;
use super::Bootstrap;
use super::Consensus;
use super::ConsensusConfig;
use super::ConsensusError;
use super::TypeConfig;
use crate::cluster::identity::ClusterId;
use crate::config::SnapshotPolicy;
use crate::ids::WorkerId;
use crate::registry::Command;
use crate::registry::Registry;
use crate::registry::{Event, Outcome};
use crate::rpc::client::PeerClients;

/// A command whose outcome names a number: a worker connect with that id.
fn add(n: u64) -> Command {
    Command::WorkerConnected {
        worker: WorkerId(uuid::Uuid::from_u128(n as u128)),
        node: 1,
        token_hash: format!("item-{n}"),
        at_ms: n,
        ip_address: None,
    }
}

/// The number a command from `add` carried.
fn value(outcome: &Outcome) -> u64 {
    match outcome.events.first() {
        Some(Event::WorkerLifecycle { worker, .. }) => worker.0.as_u128() as u64,
        other => panic!("unexpected outcome {other:?}"),
    }
}

const DEADLINE: Duration = Duration::from_secs(10);

/// Opens a fresh sled db in a new temp dir for each conformance case; the dir is the guard.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, SledLogStore, SledStateMachine, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, SledLogStore, SledStateMachine), StorageError<u64>> {
        let dir =
            tempfile::tempdir().map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        let db = sled::open(dir.path().join("raft"))
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        let log_store = SledLogStore::open(&db).await?;
        let state_machine =
            SledStateMachine::open(&db, Arc::new(RwLock::new(Registry::default())), None).await?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_conformance_suite() {
    // `test_all` builds its own runtimes, so this is a plain (non-async) test.
    Suite::test_all(SledStoreBuilder).expect("sled stores pass openraft's storage suite");
}

fn config(dir: &Path) -> ConsensusConfig {
    ConsensusConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        advertise: "127.0.0.1:7001".to_string(),
        bootstrap: Bootstrap::Initialize,
        peers: PeerClients::default(),
        identity: None,
        cluster_id: ClusterId::default(),
        snapshots: SnapshotPolicy::default(),
        cache_bytes: 64 << 20,
        catching_up: false,
    }
}

fn snapshot_of(consensus: &Consensus) -> Registry {
    consensus.registry().read().expect("registry lock").clone()
}

/// Everything already queued on the channel, without waiting.
fn drain(rx: &mut mpsc::UnboundedReceiver<Applied>) -> Vec<Applied> {
    let mut events = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(event) => events.push(event),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return events,
        }
    }
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Applied>) -> Applied {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("Applied event before the deadline")
        .expect("Applied channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_registry_from_log_and_from_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");

    // --- first run: bootstrap and write.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let node = Consensus::start(config(dir.path()), tx)
        .await
        .expect("first start");
    assert_eq!(node.node_id(), 1);
    for i in 1..=100u64 {
        let outcome = node.write(add(i)).await.expect("write");
        assert_eq!(value(&outcome), i);
    }
    let before = snapshot_of(&node);
    assert_eq!(before.workers().count(), 100);
    assert_eq!(drain(&mut rx).len(), 100);
    node.shutdown().await.expect("first shutdown");
    node.shutdown().await.expect("shutdown is idempotent");
    drop(node);

    // --- second run: the registry is rebuilt by replaying the log.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let node = Consensus::start(config(dir.path()), tx)
        .await
        .expect("restart from log");
    assert_eq!(snapshot_of(&node), before);
    let replayed = drain(&mut rx);
    assert_eq!(
        replayed
            .iter()
            .map(|a| value(&a.outcome))
            .collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>(),
        "replay re-emits Applied for every normal entry"
    );

    // Snapshot everything, then purge the whole log so the next start must use the snapshot.
    let applied = node
        .raft()
        .metrics()
        .borrow()
        .last_applied
        .expect("something applied");
    node.raft()
        .trigger()
        .snapshot()
        .await
        .expect("trigger snapshot");
    node.raft()
        .wait(Some(DEADLINE))
        .snapshot(applied, "snapshot built")
        .await
        .expect("snapshot");
    node.raft()
        .trigger()
        .purge_log(applied.index)
        .await
        .expect("trigger purge");
    node.raft()
        .wait(Some(DEADLINE))
        .purged(Some(applied), "log purged")
        .await
        .expect("purge");
    node.shutdown().await.expect("second shutdown");
    drop(node);

    // --- third run: the registry comes from the persisted snapshot, nothing is replayed.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let node = Consensus::start(config(dir.path()), tx)
        .await
        .expect("restart from snapshot");
    assert_eq!(snapshot_of(&node), before);
    assert!(
        drain(&mut rx).is_empty(),
        "entries covered by the snapshot are not re-applied"
    );
    let metrics = node.raft().metrics().borrow().clone();
    assert_eq!(metrics.snapshot, Some(applied));
    assert_eq!(metrics.purged, Some(applied));

    let outcome = node.write(add(101)).await.expect("write");
    assert_eq!(value(&outcome), 101);
    assert_eq!(value(&recv(&mut rx).await.outcome), 101);
    node.shutdown().await.expect("third shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_events_arrive_in_log_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let node = Consensus::start(config(dir.path()), tx)
        .await
        .expect("start");

    // Sequential writes: each write's event arrives, matching its outcome.
    let mut last_index = 0;
    for i in 1..=20u64 {
        let outcome = node.write(add(i)).await.expect("write");
        let event = recv(&mut rx).await;
        assert_eq!(value(&event.outcome), value(&outcome));
        assert!(event.log_index > last_index, "log indexes increase");
        last_index = event.log_index;
        // The event is sent only after the registry was updated.
        assert!(snapshot_of(&node).workers().count() as u64 >= value(&event.outcome));
    }

    // Concurrent writes: events still come in log order, one per write.
    let writers: Vec<_> = (0..50)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { node.write(add(21 + i)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(value(&writer.await.expect("writer task").expect("write")));
    }
    outcomes.sort_unstable();
    assert_eq!(outcomes, (21..=70).collect::<Vec<_>>());
    let mut seen = Vec::new();
    for _ in 21..=70u64 {
        let event = recv(&mut rx).await;
        seen.push(value(&event.outcome));
        assert!(event.log_index > last_index, "applied in log order");
        last_index = event.log_index;
    }
    seen.sort_unstable();
    assert_eq!(seen, (21..=70).collect::<Vec<_>>());

    node.shutdown().await.expect("shutdown");
    // The state machine (the only sender) is gone after shutdown.
    assert!(rx.recv().await.is_none());
    assert!(matches!(
        node.write(add(999)).await,
        Err(ConsensusError::Fatal(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_locked_while_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = mpsc::unbounded_channel();
    let node = Consensus::start(config(dir.path()), tx)
        .await
        .expect("start");
    let (tx2, _rx2) = mpsc::unbounded_channel();
    let second = Consensus::start(config(dir.path()), tx2).await;
    assert!(
        matches!(second, Err(ConsensusError::Open { .. })),
        "got {second:?}"
    );
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_never_initializes_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut cfg = config(dir.path());
    cfg.bootstrap = Bootstrap::Join;
    let node = Consensus::start(cfg, tx).await.expect("start");
    assert!(!node.raft().is_initialized().await.expect("raft running"));
    assert!(matches!(
        node.write(add(1)).await,
        Err(ConsensusError::ForwardToLeader {
            leader_id: None,
            ..
        })
    ));
    node.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_trigger_snapshots_and_purges_a_log_of_big_entries_long_before_the_entry_trigger()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.snapshots = SnapshotPolicy {
        after_entries: 1_000_000,
        after_log_bytes: 64 * 1024,
        keep_entries: 0,
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    let node = Consensus::start(cfg, tx).await.expect("start");
    // 100 entries of about 4 KiB: 400 KiB of log, six times the size trigger, and far from
    // the million entries of the entry trigger.
    for i in 0..100u64 {
        let mut cmd = add(i);
        if let Command::WorkerConnected { token_hash, .. } = &mut cmd {
            *token_hash = "h".repeat(4096);
        }
        node.write(cmd).await.expect("write");
    }
    node.raft()
        .wait(Some(DEADLINE))
        .metrics(
            |m| m.snapshot.is_some() && m.purged.is_some(),
            "a snapshot taken and the log purged behind it",
        )
        .await
        .expect("the size trigger compacted the log");
    node.shutdown().await.expect("shutdown");
}
