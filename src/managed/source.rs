//! Where a managed worker's spec comes from, for `quorum worker add` and the `workers:` list of
//! the node's config: a directory holding `iii.worker.yaml` (read here, bounded), or a name and
//! a command. Both paths check the result with [`launch_plan`], so a manifest that does not
//! parse or names no start command is refused before anything is sent or committed.
//!
//! Reads files with blocking I/O: call it before a runtime runs, or on its blocking pool.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::manifest::{launch_plan, Manifest, ManifestError, MANIFEST_FILE, MAX_MANIFEST_BYTES};
use super::spec::{RestartPolicy, WorkerSpec};

/// What an operator asks for, before the manifest is read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecSource {
    /// A directory holding `iii.worker.yaml`, the same path on every node.
    pub path: Option<PathBuf>,
    /// The worker's name; with `path`, overrides the manifest's `name`.
    pub name: Option<String>,
    /// The start command; with `path`, overrides the manifest's start command.
    pub command: Option<String>,
    pub restart: RestartPolicy,
    pub node_labels: BTreeMap<String, String>,
}

/// A checked spec and the manifest's warnings (fields quorum does not honour).
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedSpec {
    pub spec: WorkerSpec,
    pub warnings: Vec<String>,
}

/// Why a spec cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("no {MANIFEST_FILE} in {0}")]
    NoManifest(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not UTF-8")]
    NotText { path: PathBuf },
    #[error("give a directory holding {MANIFEST_FILE}, or both a name and a command")]
    Incomplete,
    #[error("{0} names no worker: give its `name` there, or a name of your own")]
    NoName(String),
    #[error("{place}: {source}")]
    Manifest {
        place: String,
        source: ManifestError,
    },
}

/// Reads the manifest (when there is a directory), fills the spec and checks it.
pub fn check(source: SpecSource) -> Result<CheckedSpec, SourceError> {
    let (dir, manifest) = match &source.path {
        Some(path) => {
            let (dir, text) = read_manifest(path)?;
            (Some(dir), Some(text))
        }
        None if source.name.is_some() && source.command.is_some() => (None, None),
        None => return Err(SourceError::Incomplete),
    };
    let place = match &dir {
        Some(dir) => dir.join(MANIFEST_FILE).display().to_string(),
        None => "the worker".to_string(),
    };
    let manifest_error = |source| SourceError::Manifest {
        place: place.clone(),
        source,
    };
    let name = match (source.name, &manifest) {
        (Some(name), _) => name,
        (None, Some(text)) => Manifest::parse(text)
            .map_err(manifest_error)?
            .0
            .name
            .ok_or_else(|| SourceError::NoName(place.clone()))?,
        (None, None) => return Err(SourceError::Incomplete),
    };
    let spec = WorkerSpec {
        name,
        dir: dir.map(|d| d.display().to_string()),
        manifest,
        command: source.command,
        restart: source.restart,
        node_labels: source.node_labels,
    };
    let planned = launch_plan(&spec).map_err(manifest_error)?;
    Ok(CheckedSpec {
        spec,
        warnings: planned.warnings,
    })
}

/// The absolute directory and the manifest text in it, read up to [`MAX_MANIFEST_BYTES`].
fn read_manifest(path: &Path) -> Result<(PathBuf, String), SourceError> {
    let read_error = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Absolute but not canonical: a symlink on this machine (a shared volume mounted through
    // one, say) stays as typed, since the path must mean the same on every node.
    let dir = std::path::absolute(path).map_err(read_error)?;
    if !std::fs::metadata(&dir).map_err(read_error)?.is_dir() {
        return Err(SourceError::NotADirectory(dir));
    }
    let file = dir.join(MANIFEST_FILE);
    let opened = match std::fs::File::open(&file) {
        Ok(opened) => opened,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceError::NoManifest(dir))
        }
        Err(source) => return Err(SourceError::Read { path: file, source }),
    };
    let mut bytes = Vec::new();
    opened
        .take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| SourceError::Read {
            path: file.clone(),
            source,
        })?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(SourceError::TooLarge { path: file });
    }
    let text = String::from_utf8(bytes).map_err(|_| SourceError::NotText { path: file })?;
    Ok((dir, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_reached_through_a_symlink_keeps_the_path_as_given() {
        let root = tempfile::tempdir().expect("temp dir");
        let real = root.path().join("real");
        std::fs::create_dir(&real).expect("dir");
        std::fs::write(
            real.join(MANIFEST_FILE),
            "name: resizer\nscripts:\n  start: node index.js\n",
        )
        .expect("manifest");
        let linked = root.path().join("shared");
        std::os::unix::fs::symlink(&real, &linked).expect("symlink");
        let checked = check(SpecSource {
            path: Some(linked.clone()),
            ..SpecSource::default()
        })
        .expect("a valid manifest");
        assert_eq!(checked.spec.dir, Some(linked.display().to_string()));
    }
}
