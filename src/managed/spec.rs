//! spec: what an operator asks for when they add a managed worker. Replicated in the registry
//! as it is, so it holds only what the operator said (never node-local facts such as pids).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The longest worker name; names become file names under the node's data directory.
pub const MAX_NAME_LEN: usize = 128;

/// One managed worker as the operator described it (`quorum worker add`, or a `workers:`
/// entry in the node's config file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The worker's name: `III_WORKER_NAME` of its process and the name its connection
    /// announces, unique in the cluster.
    pub name: String,
    /// The directory the worker runs in; it must exist at the same path on every node.
    #[serde(default)]
    pub dir: Option<String>,
    /// The text of `iii.worker.yaml` the CLI read in `dir`, so every node plans from the same
    /// manifest.
    #[serde(default)]
    pub manifest: Option<String>,
    /// A start command given on the command line; overrides the manifest's `scripts.start`.
    #[serde(default)]
    pub command: Option<String>,
    /// When the process is started again after it exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Labels a node must carry (all of them) to run this worker.
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
}

/// When a managed worker's process is started again after it exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit, clean or not.
    #[default]
    Always,
    /// After an exit with a non-zero status, a signal, or a failed readiness wait.
    OnFailure,
    /// Never: the process runs once.
    Never,
}

impl RestartPolicy {
    /// Whether an exit (`clean` when the status was 0) leads to a new start.
    pub fn restarts_after(self, clean: bool) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !clean,
            RestartPolicy::Never => false,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A restart policy that is not `always`, `on-failure` or `never`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("restart policy must be always, on-failure or never, got `{0}`")]
pub struct BadRestartPolicy(pub String);

impl FromStr for RestartPolicy {
    type Err = BadRestartPolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(RestartPolicy::Always),
            "on-failure" | "on_failure" => Ok(RestartPolicy::OnFailure),
            "never" => Ok(RestartPolicy::Never),
            _ => Err(BadRestartPolicy(text.chars().take(64).collect())),
        }
    }
}

/// A worker name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    #[error("a managed worker needs a name")]
    Empty,
    #[error("a managed worker's name is at most {MAX_NAME_LEN} bytes, got {0}")]
    TooLong(usize),
    #[error("a managed worker's name may hold only letters, digits, `-`, `_` and `.` (and is not `.` or `..`), got `{0}`")]
    Characters(String),
}

/// Checks a worker name: one path segment of ASCII letters, digits, `-`, `_` and `.`, since
/// the name names files on every node and travels in `III_WORKER_NAME`.
pub fn check_name(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BadName::TooLong(name.len()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(allowed) || name == "." || name == ".." {
        let shown = name.chars().filter(|c| !c.is_control()).take(64).collect();
        return Err(BadName::Characters(shown));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_and_print_as_the_cli_spells_them() {
        for (text, policy) in [
            ("always", RestartPolicy::Always),
            ("on-failure", RestartPolicy::OnFailure),
            ("never", RestartPolicy::Never),
            ("On-Failure", RestartPolicy::OnFailure),
        ] {
            assert_eq!(text.parse::<RestartPolicy>().unwrap(), policy);
        }
        assert_eq!(RestartPolicy::OnFailure.to_string(), "on-failure");
        assert!("sometimes".parse::<RestartPolicy>().is_err());
        assert_eq!(
            serde_json::to_string(&RestartPolicy::OnFailure).unwrap(),
            "\"on-failure\""
        );
    }

    #[test]
    fn the_restart_policy_decides_after_clean_and_failed_exits() {
        assert!(RestartPolicy::Always.restarts_after(true));
        assert!(RestartPolicy::OnFailure.restarts_after(false));
        assert!(!RestartPolicy::OnFailure.restarts_after(true));
        assert!(!RestartPolicy::Never.restarts_after(false));
    }

    #[test]
    fn names_are_one_safe_path_segment() {
        assert!(check_name("image-resizer_2.py").is_ok());
        assert_eq!(check_name(""), Err(BadName::Empty));
        assert!(matches!(
            check_name(&"a".repeat(129)),
            Err(BadName::TooLong(129))
        ));
        for bad in ["..", ".", "a/b", "a b", "x\u{202e}y", "n\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_spec_round_trips_and_defaults_what_is_left_out() {
        let spec: WorkerSpec = serde_json::from_str(r#"{"name":"w"}"#).unwrap();
        assert_eq!(spec.restart, RestartPolicy::Always);
        assert!(spec.node_labels.is_empty() && spec.dir.is_none());
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<WorkerSpec>(&text).unwrap(), spec);
    }
}
