//! Plumbing shared by the sled-backed storage components.
//!
//! Owns three things: running blocking sled work off the async runtime ([`blocking`]), turning
//! sled/serde errors into openraft's [`StorageError`] ([`io_err`]), and the [`StorageLease`] that
//! lets [`super::Consensus::shutdown`] know when every storage handle (and so every reference to
//! the sled database) has been dropped.
//!
//! Invariant: storage code never calls sled from async context directly; everything goes through
//! [`blocking`], and `flush_async` is never used (it can deadlock).

// openraft's storage traits fix the error type to `StorageError`, which is large; boxing it
// internally only to unbox it at every trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

use openraft::ErrorSubject;
use openraft::ErrorVerb;
use openraft::StorageError;
use openraft::StorageIOError;
use tokio::sync::mpsc;

/// Wraps an error from sled, serde or tokio into openraft's storage error.
pub(crate) fn io_err<E: std::error::Error + 'static>(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: &E,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, e).into()
}

/// Runs blocking sled work on tokio's blocking pool; a panicked or cancelled task becomes a
/// storage error with the given subject and verb.
pub(crate) async fn blocking<T, F>(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    f: F,
) -> Result<T, StorageError<u64>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageError<u64>> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(res) => res,
        Err(join_err) => Err(io_err(subject, verb, &join_err)),
    }
}

/// A token held by every storage component handed to openraft. It is never used to send; the
/// paired [`StorageReleased`] resolves once all clones are dropped, i.e. once openraft's core and
/// state-machine tasks (and any snapshot build) have let go of the sled database.
#[derive(Debug, Clone)]
pub(crate) struct StorageLease(#[allow(dead_code)] mpsc::Sender<()>);

/// The receiving side of [`StorageLease`].
#[derive(Debug)]
pub(crate) struct StorageReleased(mpsc::Receiver<()>);

impl StorageReleased {
    /// Resolves when every [`StorageLease`] clone has been dropped.
    pub(crate) async fn wait(&mut self) {
        while self.0.recv().await.is_some() {}
    }
}

/// Creates a lease and the handle that observes its release.
pub(crate) fn storage_lease() -> (StorageLease, StorageReleased) {
    let (tx, rx) = mpsc::channel(1);
    (StorageLease(tx), StorageReleased(rx))
}
