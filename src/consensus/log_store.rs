//! The durable Raft log, kept in sled.
//!
//! Owns two trees of one sled database: `raft_log` (entries keyed by the big-endian `u64` log
//! index, so sled's byte order is log order; values are JSON-encoded `openraft::Entry`s) and
//! `raft_meta` (the vote, the last committed log id and the last purged log id, JSON-encoded).
//!
//! Invariants:
//! - the reported last log id is never below `last_purged`; purging records `last_purged` before
//!   deleting entries (sled persists operations in order), so a crash mid-purge can only leave
//!   stale entries at or below `last_purged`, which openraft never reads and the next purge drops;
//! - a vote and appended entries are durable (sled `flush`) before `save_vote` returns or the
//!   [`LogFlushed`] callback fires; `committed` is persisted lazily (losing it only means more
//!   entries are re-applied after a restart);
//! - appends and truncations are single sled batches, hence atomic;
//! - every sled call runs in `tokio::task::spawn_blocking` (via `sled_io::blocking`);
//!   `flush_async` is never used.
//! - the bytes of every durable append are reported to the size trigger of snapshots
//!   ([`super::size_trigger::LogBytes`]), once, after the flush.

// openraft's storage traits fix the error type to `StorageError`, which is large; boxing it
// internally only to unbox it at every trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;

use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::LogState;
use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::Vote;

use super::size_trigger::LogBytes;
use super::sled_io::blocking;
use super::sled_io::io_err;
use super::sled_io::StorageLease;
use super::TypeConfig;

type Entry = openraft::Entry<TypeConfig>;
type LogId = openraft::LogId<u64>;

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// Raft log storage (openraft storage-v2 [`RaftLogStorage`]) backed by sled.
///
/// Cloning is cheap and yields another handle to the same trees; openraft uses clones as
/// log readers for replication.
#[derive(Debug, Clone)]
pub struct SledLogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
    /// Keeps [`super::Consensus::shutdown`] waiting until this handle is dropped.
    _lease: Option<StorageLease>,
    /// Told the size of every append, for the size trigger of snapshots.
    log_bytes: Option<LogBytes>,
}

impl SledLogStore {
    /// Opens (creating if absent) the log trees in `db`.
    pub async fn open(db: &sled::Db) -> Result<Self, StorageError<u64>> {
        let db = db.clone();
        blocking(ErrorSubject::Store, ErrorVerb::Read, move || {
            let log = db
                .open_tree(LOG_TREE)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            let meta = db
                .open_tree(META_TREE)
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, &e))?;
            Ok(SledLogStore {
                db,
                log,
                meta,
                _lease: None,
                log_bytes: None,
            })
        })
        .await
    }

    pub(crate) fn with_lease(mut self, lease: StorageLease) -> Self {
        self._lease = Some(lease);
        self
    }

    /// Reports the bytes of every append to `log_bytes` (the size trigger of snapshots).
    pub(crate) fn counting_into(mut self, log_bytes: LogBytes) -> Self {
        self.log_bytes = Some(log_bytes);
        self
    }

    async fn read_meta<T>(
        &self,
        key: &'static [u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError<u64>>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let meta = self.meta.clone();
        blocking(subject.clone(), ErrorVerb::Read, move || {
            let Some(bytes) = meta
                .get(key)
                .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?
            else {
                return Ok(None);
            };
            let value =
                serde_json::from_slice(&bytes).map_err(|e| io_err(subject, ErrorVerb::Read, &e))?;
            Ok(Some(value))
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        let start = map_bound(range.start_bound());
        let end = map_bound(range.end_bound());
        let log = self.log.clone();
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            let mut entries = Vec::new();
            for item in log.range::<[u8; 8], _>((start, end)) {
                let (_key, value) =
                    item.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
                let entry: Entry = serde_json::from_slice(&value)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
                entries.push(entry);
            }
            Ok(entries)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged: Option<LogId> =
            self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs).await?;
        let log = self.log.clone();
        let last_in_log = blocking(ErrorSubject::Logs, ErrorVerb::Read, move || {
            let Some((_key, value)) = log
                .last()
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?
            else {
                return Ok(None);
            };
            let entry: Entry = serde_json::from_slice(&value)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            Ok(Some(entry.log_id))
        })
        .await?;
        Ok(LogState {
            // `max` also hides entries a crash left behind in the middle of a purge.
            last_log_id: last_in_log.max(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes = serde_json::to_vec(vote)
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        let (db, meta) = (self.db.clone(), self.meta.clone());
        blocking(ErrorSubject::Vote, ErrorVerb::Write, move || {
            meta.insert(KEY_VOTE, bytes)
                .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
            db.flush()
                .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.read_meta(KEY_VOTE, ErrorSubject::Vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<u64>> {
        let bytes = serde_json::to_vec(&committed)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        let meta = self.meta.clone();
        // Not flushed: sled's periodic flush and shutdown persist it; losing it is safe.
        blocking(ErrorSubject::Store, ErrorVerb::Write, move || {
            meta.insert(KEY_COMMITTED, bytes)
                .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, &e))?;
            Ok(())
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<u64>> {
        // Stored as `Option<LogId>`, so a missing key and a stored `None` both mean "none".
        let stored: Option<Option<LogId>> =
            self.read_meta(KEY_COMMITTED, ErrorSubject::Store).await?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        let mut appended = 0u64;
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
            appended += bytes.len() as u64;
            batch.insert(&entry.log_id.index.to_be_bytes(), bytes);
        }
        let (db, log) = (self.db.clone(), self.log.clone());
        let res = blocking(ErrorSubject::Logs, ErrorVerb::Write, move || {
            log.apply_batch(batch)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
            db.flush()
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
            Ok(())
        })
        .await;
        if let (Ok(()), Some(log_bytes)) = (&res, &self.log_bytes) {
            log_bytes.appended(appended);
        }
        // Only now is the data durable (or known not to be).
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        let (db, log) = (self.db.clone(), self.log.clone());
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            remove_range(&log, log_id.index.to_be_bytes()..)?;
            db.flush()
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<u64>> {
        let current: Option<LogId> = self.read_meta(KEY_LAST_PURGED, ErrorSubject::Logs).await?;
        if current.is_some_and(|c| c >= log_id) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&log_id)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        let (db, log, meta) = (self.db.clone(), self.log.clone(), self.meta.clone());
        blocking(ErrorSubject::Logs, ErrorVerb::Delete, move || {
            // Record the purge point first: a crash after it but before the deletion only leaves
            // stale entries below `last_purged`, which are never read.
            meta.insert(KEY_LAST_PURGED, bytes)
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
            remove_range(&log, ..=log_id.index.to_be_bytes())?;
            db.flush()
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
            Ok(())
        })
        .await
    }
}

/// Deletes every entry whose key falls in `range`, as one sled batch.
fn remove_range<R: RangeBounds<[u8; 8]>>(
    log: &sled::Tree,
    range: R,
) -> Result<(), StorageError<u64>> {
    let mut batch = sled::Batch::default();
    for key in log.range(range).keys() {
        let key = key.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        batch.remove(key);
    }
    log.apply_batch(batch)
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
}

fn map_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(i.to_be_bytes()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
