//! install: remembers which version of a worker has been installed on this node, so
//! `scripts.install` runs once per `install_key` and again only when the key changes.
//! The marker is written only after an install succeeded.

use std::io;
use std::path::{Path, PathBuf};

/// The marker file of one worker, under its own directory of the supervisor's data.
pub(super) fn marker_path(worker_data: &Path) -> PathBuf {
    worker_data.join("installed")
}

/// Whether the install for `key` has already succeeded here.
pub(super) async fn is_installed(marker: &Path, key: &str) -> bool {
    match tokio::fs::read_to_string(marker).await {
        Ok(text) => text.trim() == key,
        Err(_) => false,
    }
}

/// Records that the install for `key` succeeded (written aside, then renamed into place).
pub(super) async fn record_installed(marker: &Path, key: &str) -> io::Result<()> {
    let aside = marker.with_extension("new");
    tokio::fs::write(&aside, format!("{key}\n")).await?;
    tokio::fs::rename(&aside, marker).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_marker_holds_the_installed_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let marker = marker_path(dir.path());
        assert!(!is_installed(&marker, "v1").await);
        record_installed(&marker, "v1").await.unwrap();
        assert!(is_installed(&marker, "v1").await);
        assert!(!is_installed(&marker, "v2").await);
    }
}
