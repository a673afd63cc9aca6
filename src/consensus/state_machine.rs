//! The replicated state machine: applies committed entries to the shared [`Registry`] and
//! builds, stores and installs snapshots of it.
//!
//! The registry itself lives in memory behind an `Arc<std::sync::RwLock<_>>` shared with
//! [`super::Consensus::registry`]; only snapshots are persisted, in the sled tree `sm_snapshot`
//! (key `meta`: JSON [`SnapshotMeta`]; key `data`: JSON of {registry, last_applied,
//! last_membership}). On start-up the persisted snapshot is loaded and openraft re-applies the
//! committed log entries after it.
//!
//! Invariants:
//! - the registry lock is never held across an `.await`;
//! - `last_applied`/`last_membership` always describe exactly the registry contents;
//! - an [`Applied`] event is sent for each normal entry, in log order, after the registry was
//!   updated (this includes entries re-applied from the log after a restart);
//! - the stored snapshot only ever moves forward (a stale build never overwrites a newer one),
//!   and its meta and data are replaced atomically.

// openraft's storage traits fix the error type to `StorageError`, which is large; boxing it
// internally only to unbox it at every trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;
use std::sync::RwLock;

use crate::consensus::Member;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::RaftSnapshotBuilder;
use openraft::Snapshot;
use openraft::SnapshotMeta;
use openraft::StorageError;
use openraft::StoredMembership;
use serde::Deserialize;
use serde::Serialize;
use sled::transaction::ConflictableTransactionError;
use sled::transaction::TransactionError;
use tokio::sync::mpsc::UnboundedSender;

use super::sled_io::blocking;
use super::sled_io::io_err;
use super::sled_io::StorageLease;
use super::Applied;
use super::TypeConfig;
use crate::registry::Outcome;
use crate::registry::Registry;

type Entry = openraft::Entry<TypeConfig>;
type LogId = openraft::LogId<u64>;
type Meta = SnapshotMeta<u64, Member>;

const SNAPSHOT_TREE: &str = "sm_snapshot";
const KEY_META: &[u8] = b"meta";
const KEY_DATA: &[u8] = b"data";

/// What a snapshot's data bytes contain (JSON-encoded).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotPayload {
    registry: Registry,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, Member>,
}

/// Returned when the registry lock was poisoned by a panic inside `Registry::apply`; the
/// registry may be half-updated, so openraft must stop.
#[derive(Debug, thiserror::Error)]
#[error("registry lock poisoned")]
struct RegistryPoisoned;

/// The openraft state machine (storage-v2 [`RaftStateMachine`]) over the shared registry.
#[derive(Debug)]
pub struct SledStateMachine {
    registry: Arc<RwLock<Registry>>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, Member>,
    snapshots: SnapshotTree,
    applied_tx: Option<UnboundedSender<Applied>>,
    /// Keeps [`super::Consensus::shutdown`] waiting until this state machine is dropped.
    _lease: Option<StorageLease>,
}

impl SledStateMachine {
    /// Opens the snapshot tree in `db` and, if a snapshot was persisted, loads it into
    /// `registry` (replacing its contents) so `applied_state` reflects it.
    ///
    /// `applied_tx` receives an [`Applied`] event per applied normal entry; `None` disables
    /// events (used by the storage conformance tests).
    pub async fn open(
        db: &sled::Db,
        registry: Arc<RwLock<Registry>>,
        applied_tx: Option<UnboundedSender<Applied>>,
    ) -> Result<Self, StorageError<u64>> {
        let snapshots = SnapshotTree::open(db).await?;
        let mut sm = SledStateMachine {
            registry,
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshots,
            applied_tx,
            _lease: None,
        };
        if let Some((meta, data)) = sm.snapshots.load().await? {
            let payload = decode_payload(&meta, data).await?;
            sm.set_state(&meta, payload.registry)?;
        }
        Ok(sm)
    }

    pub(crate) fn with_lease(mut self, lease: StorageLease) -> Self {
        self._lease = Some(lease);
        self
    }

    /// Replaces the whole state with a snapshot's.
    fn set_state(&mut self, meta: &Meta, registry: Registry) -> Result<(), StorageError<u64>> {
        let mut guard = self.registry.write().map_err(|_| {
            io_err(
                ErrorSubject::StateMachine,
                ErrorVerb::Write,
                &RegistryPoisoned,
            )
        })?;
        *guard = registry;
        drop(guard);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for SledStateMachine {
    type SnapshotBuilder = SledSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, Member>), StorageError<u64>> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut outcomes = Vec::new();
        let mut events = Vec::new();
        {
            let mut registry = self.registry.write().map_err(|_| {
                io_err(
                    ErrorSubject::StateMachine,
                    ErrorVerb::Write,
                    &RegistryPoisoned,
                )
            })?;
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                let outcome = match entry.payload {
                    EntryPayload::Blank => Outcome::default(),
                    EntryPayload::Normal(cmd) => {
                        let outcome = registry.apply(&cmd);
                        events.push(Applied {
                            log_index: entry.log_id.index,
                            outcome: outcome.clone(),
                        });
                        outcome
                    }
                    EntryPayload::Membership(membership) => {
                        self.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Outcome::default()
                    }
                };
                outcomes.push(outcome);
            }
        } // registry lock released before anyone is notified

        if let Some(tx) = &self.applied_tx {
            for event in events {
                // The receiver going away must not stop replication.
                let _ = tx.send(event);
            }
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Capture a consistent copy now: openraft calls this between applies, and builds the
        // snapshot later in another task while applying continues.
        let registry = match self.registry.read() {
            Ok(guard) => Ok(guard.clone()),
            Err(_) => Err(io_err(
                ErrorSubject::StateMachine,
                ErrorVerb::Read,
                &RegistryPoisoned,
            )),
        };
        SledSnapshotBuilder {
            payload: registry.map(|registry| SnapshotPayload {
                registry,
                last_applied: self.last_applied,
                last_membership: self.last_membership.clone(),
            }),
            snapshots: self.snapshots.clone(),
            _lease: self._lease.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let payload = decode_payload(meta, data.clone()).await?;
        // Persist first: if we crash after this, start-up loads the snapshot; the other order
        // could expose state that a restart would lose.
        self.snapshots.store(meta.clone(), data).await?;
        self.set_state(meta, payload.registry)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self.snapshots.load().await?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot of the state captured when openraft asked for the builder, and persists
/// it as the current snapshot.
#[derive(Debug)]
pub struct SledSnapshotBuilder {
    /// The captured state, or the error met while capturing it (reported by `build_snapshot`).
    payload: Result<SnapshotPayload, StorageError<u64>>,
    snapshots: SnapshotTree,
    _lease: Option<StorageLease>,
}

impl RaftSnapshotBuilder<TypeConfig> for SledSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let payload = self.payload.clone()?;
        let meta = Meta {
            last_log_id: payload.last_applied,
            last_membership: payload.last_membership.clone(),
            snapshot_id: snapshot_id(payload.last_applied),
        };
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = blocking(subject.clone(), ErrorVerb::Write, move || {
            serde_json::to_vec(&payload).map_err(|e| io_err(subject, ErrorVerb::Write, &e))
        })
        .await?;
        self.snapshots.store(meta.clone(), data.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// The sled tree holding the current snapshot (meta + data).
#[derive(Debug, Clone)]
struct SnapshotTree {
    db: sled::Db,
    tree: sled::Tree,
}

impl SnapshotTree {
    async fn open(db: &sled::Db) -> Result<Self, StorageError<u64>> {
        let db = db.clone();
        blocking(ErrorSubject::Snapshot(None), ErrorVerb::Read, move || {
            let tree = db
                .open_tree(SNAPSHOT_TREE)
                .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e))?;
            Ok(SnapshotTree { db, tree })
        })
        .await
    }

    /// Reads the current snapshot, if any.
    async fn load(&self) -> Result<Option<(Meta, Vec<u8>)>, StorageError<u64>> {
        let tree = self.tree.clone();
        blocking(ErrorSubject::Snapshot(None), ErrorVerb::Read, move || {
            let read_err = |e: &dyn ToStorageError| {
                e.to_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read)
            };
            // Meta and data are written in one transaction, so read them in one too.
            let (meta, data) = tree
                .transaction(|tx| Ok((tx.get(KEY_META)?, tx.get(KEY_DATA)?)))
                .map_err(|e: TransactionError<sled::Error>| read_err(&e))?;
            let (Some(meta), Some(data)) = (meta, data) else {
                return Ok(None);
            };
            let meta: Meta = serde_json::from_slice(&meta).map_err(|e| read_err(&e))?;
            Ok(Some((meta, data.to_vec())))
        })
        .await
    }

    /// Makes `meta`/`data` the current snapshot unless the stored one is newer, then flushes.
    async fn store(&self, meta: Meta, data: Vec<u8>) -> Result<(), StorageError<u64>> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let (db, tree) = (self.db.clone(), self.tree.clone());
        blocking(subject.clone(), ErrorVerb::Write, move || {
            let write_err =
                |e: &dyn ToStorageError| e.to_storage(subject.clone(), ErrorVerb::Write);
            let meta_bytes = serde_json::to_vec(&meta).map_err(|e| write_err(&e))?;
            tree.transaction(|tx| {
                if let Some(current) = tx.get(KEY_META)? {
                    let current: Meta = serde_json::from_slice(&current)
                        .map_err(ConflictableTransactionError::Abort)?;
                    if current.last_log_id > meta.last_log_id {
                        return Ok(());
                    }
                }
                tx.insert(KEY_META, meta_bytes.as_slice())?;
                tx.insert(KEY_DATA, data.as_slice())?;
                Ok(())
            })
            .map_err(|e: TransactionError<serde_json::Error>| write_err(&e))?;
            db.flush().map_err(|e| write_err(&e))?;
            Ok(())
        })
        .await
    }
}

/// Lets one closure map the several concrete error types met in a snapshot operation.
trait ToStorageError {
    fn to_storage(&self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError<u64>;
}

impl<E: std::error::Error + 'static> ToStorageError for E {
    fn to_storage(&self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError<u64> {
        io_err(subject, verb, self)
    }
}

/// Decodes snapshot data off the async runtime.
async fn decode_payload(meta: &Meta, data: Vec<u8>) -> Result<SnapshotPayload, StorageError<u64>> {
    let subject = ErrorSubject::Snapshot(Some(meta.signature()));
    blocking(subject.clone(), ErrorVerb::Read, move || {
        serde_json::from_slice(&data).map_err(|e| io_err(subject, ErrorVerb::Read, &e))
    })
    .await
}

/// A snapshot id unique per build: the last included log id plus a wall-clock stamp.
fn snapshot_id(last_applied: Option<LogId>) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    match last_applied {
        Some(log_id) => format!("{}-{}-{stamp}", log_id.leader_id, log_id.index),
        None => format!("none-{stamp}"),
    }
}
