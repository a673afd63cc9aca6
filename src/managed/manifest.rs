//! manifest: reads `iii.worker.yaml` and turns a `WorkerSpec` into the `LaunchPlan` a node's
//! supervisor runs. Pure: no I/O, no clock; the CLI read the file, this only reads its text.
//!
//! Honoured: `name`, `runtime.kind`/`language`/`entry`/`package_manager`, `scripts.install`,
//! `scripts.start` (inferred from the runtime kind when absent), `env`, `config`. What only
//! makes sense for iii's sandboxes (`runtime.base_image`, `image`, `scripts.setup`,
//! `dependencies`, `resources`) and keys nobody knows come back as warnings, never silently.

use serde_yaml::{Mapping, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

use super::spec::{check_name, BadName, WorkerSpec};
use super::supervisor::LaunchPlan;

/// The file a worker directory carries at its root.
pub const MANIFEST_FILE: &str = "iii.worker.yaml";
/// The largest manifest accepted; a real one is a few hundred bytes, and the text travels in
/// the replicated spec.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// Environment variables quorum sets itself; a manifest's values for them are ignored.
pub const RESERVED_ENV: [&str; 3] = ["III_URL", "III_ENGINE_URL", "III_WORKER_NAME"];

/// A plan and what the operator should hear about the manifest that made it.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub plan: LaunchPlan,
    /// Fields that were ignored, and why; shown by `quorum worker add` and logged by the node.
    pub warnings: Vec<String>,
}

/// Why a spec cannot be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    #[error("{MANIFEST_FILE} is {bytes} bytes; at most {max} are accepted")]
    TooLarge { bytes: usize, max: usize },
    #[error("{MANIFEST_FILE} does not parse as YAML: {0}")]
    Yaml(String),
    #[error("{MANIFEST_FILE} must be a mapping of `key: value` fields at its top level")]
    NotAMapping,
    #[error("{MANIFEST_FILE}: `{field}` {problem}")]
    Field { field: String, problem: String },
    #[error("worker `{name}` has no start command: {why}")]
    NoStart { name: String, why: String },
    #[error("{0}")]
    Name(#[from] BadName),
    #[error("the worker directory must be an absolute path (the same on every node), got `{0}`")]
    RelativeDir(String),
}

/// The manifest's fields that quorum honours, read from its YAML text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    pub name: Option<String>,
    pub runtime: Runtime,
    /// `scripts.install`; `Some("")` opts out of an inferred install.
    pub install: Option<String>,
    pub start: Option<String>,
    /// `env`, in the manifest's order.
    pub env: Vec<(String, String)>,
    /// `config`, handed to the worker as iii hands a worker's config to a host process.
    pub config: Option<serde_json::Value>,
}

/// `runtime:` (and the legacy top-level `language`/`entry`), used to infer scripts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Runtime {
    pub kind: Option<String>,
    pub entry: Option<String>,
    pub package_manager: Option<String>,
}

impl Manifest {
    /// Parses manifest text; returns the manifest and a warning per ignored field.
    pub fn parse(text: &str) -> Result<(Manifest, Vec<String>), ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                bytes: text.len(),
                max: MAX_MANIFEST_BYTES,
            });
        }
        let doc: Value =
            serde_yaml::from_str(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
        let top = match &doc {
            Value::Mapping(map) => map,
            Value::Null => &Mapping::new(),
            _ => return Err(ManifestError::NotAMapping),
        };
        let mut warnings = Vec::new();
        let mut manifest = Manifest::default();
        let mut legacy = Runtime::default();
        for (key, value) in top {
            let key = key_text(key, "")?;
            match key.as_str() {
                "name" => manifest.name = string(value, "name")?,
                "runtime" => manifest.runtime = runtime(value, &mut warnings)?,
                "scripts" => scripts(value, &mut manifest, &mut warnings)?,
                "env" => manifest.env = env(value, &mut warnings)?,
                "config" => manifest.config = config(value)?,
                "language" => legacy.kind = string(value, "language")?,
                "entry" => legacy.entry = string(value, "entry")?,
                // Registry publishing metadata: meaningful to iii's release tooling only.
                "description" | "iii" | "deploy" | "manifest" | "tags" | "version" => {}
                "dependencies" => warnings.push(
                    "`dependencies` is not supported: quorum does not install other workers; add each as its own managed worker".into(),
                ),
                "resources" => warnings.push(
                    "`resources` is not supported: a managed worker is a process on the node, with the node's CPU and memory".into(),
                ),
                "image" => warnings.push(
                    "`image` is not supported: quorum runs a process from the worker's directory, not an OCI image".into(),
                ),
                other => warnings.push(format!("unknown field `{}` is ignored", shown(other))),
            }
        }
        let runtime = &mut manifest.runtime;
        runtime.kind = runtime.kind.take().or(legacy.kind);
        runtime.entry = runtime.entry.take().or(legacy.entry);
        if let Some(name) = &manifest.name {
            check_name(name)?;
        }
        Ok((manifest, warnings))
    }
}

/// Turns an operator's spec into what the supervisor runs: the manifest's scripts (or the
/// spec's command), env and config, in the spec's directory.
pub fn launch_plan(spec: &WorkerSpec) -> Result<Planned, ManifestError> {
    check_name(&spec.name)?;
    let (manifest, mut warnings) = match &spec.manifest {
        Some(text) => Manifest::parse(text)?,
        None => (Manifest::default(), Vec::new()),
    };
    if let Some(named) = manifest.name.as_deref().filter(|n| *n != spec.name) {
        warnings.push(format!(
            "the manifest names the worker `{named}`; it runs as `{}`",
            spec.name
        ));
    }
    let dir = match spec.dir.as_deref() {
        Some(dir) if !dir.starts_with('/') => {
            return Err(ManifestError::RelativeDir(shown(dir)));
        }
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::new(),
    };
    let inferred = infer_scripts(&manifest.runtime);
    let start = match (&spec.command, &manifest.start) {
        (Some(command), _) => nonempty(command),
        (None, Some(start)) => nonempty(start),
        (None, None) => inferred.as_ref().map(|s| s.start.clone()),
    };
    let Some(start) = start else {
        return Err(ManifestError::NoStart {
            name: spec.name.clone(),
            why: no_start_reason(spec, &manifest),
        });
    };
    check_command("start command", &start)?;
    let install = match &manifest.install {
        Some(install) => nonempty(install),
        // An inferred install goes with an inferred start only; an explicit start says the
        // operator knows how the worker runs.
        None if spec.command.is_none() && manifest.start.is_none() => {
            inferred.and_then(|s| s.install)
        }
        None => None,
    };
    if let Some(install) = &install {
        check_command("scripts.install", install)?;
    }
    let install_key = install_key(spec, install.as_deref());
    Ok(Planned {
        plan: LaunchPlan {
            name: spec.name.clone(),
            dir,
            install,
            install_key,
            start,
            env: manifest.env,
            config: manifest.config,
            restart: spec.restart,
            restart_requests: 0,
        },
        warnings,
    })
}

/// Scripts inferred from `runtime.kind` for a process on the node, as iii infers them for a
/// host process; the runtime itself (node, python3, cargo) must already be on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Inferred {
    install: Option<String>,
    start: String,
}

fn infer_scripts(runtime: &Runtime) -> Option<Inferred> {
    let kind = runtime.kind.as_deref()?.to_ascii_lowercase();
    let entry = runtime
        .entry
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let package_manager = runtime
        .package_manager
        .as_deref()
        .unwrap_or("npm")
        .to_ascii_lowercase();
    let with = |install: &str, start: String| Inferred {
        install: Some(install.to_string()),
        start,
    };
    match kind.as_str() {
        "typescript" | "javascript" | "node" => {
            let entry = entry?;
            Some(match (kind.as_str(), package_manager.as_str()) {
                (_, "bun") => with("bun install", format!("bun {entry}")),
                (_, "pnpm") if kind == "typescript" => {
                    with("pnpm install", format!("pnpm exec tsx {entry}"))
                }
                (_, "yarn") if kind == "typescript" => {
                    with("yarn install", format!("yarn exec tsx {entry}"))
                }
                ("typescript", _) => with("npm install", format!("npx tsx {entry}")),
                (_, manager) => with(&format!("{manager} install"), format!("node {entry}")),
            })
        }
        "bun" => Some(with("bun install", format!("bun {}", entry?))),
        "python" => Some(with(
            "python3 -m venv .venv && .venv/bin/pip install -e .",
            format!(".venv/bin/python -m {}", entry?),
        )),
        "rust" => Some(with("cargo build --release", "cargo run --release".into())),
        _ => None,
    }
}

fn no_start_reason(spec: &WorkerSpec, manifest: &Manifest) -> String {
    if spec.manifest.is_none() {
        return "give --command, or a directory with an iii.worker.yaml".into();
    }
    match (&manifest.runtime.kind, &manifest.runtime.entry) {
        (None, _) => "the manifest has no `scripts.start` and no `runtime.kind` to infer one from".into(),
        (Some(kind), None) if kind != "rust" => format!(
            "the manifest has no `scripts.start`, and `runtime.kind: {}` needs `runtime.entry` to infer one",
            shown(kind)
        ),
        (Some(kind), _) => format!(
            "the manifest has no `scripts.start`, and quorum cannot infer one for `runtime.kind: {}` (typescript, javascript, node, bun, python, rust)",
            shown(kind)
        ),
    }
}

/// Changes whenever what an install would produce may change: the directory, the install
/// command or anything in the manifest (edit it, e.g. a `version:` field, to re-run install).
fn install_key(spec: &WorkerSpec, install: Option<&str>) -> String {
    let mut hash = Sha256::new();
    for part in [
        spec.dir.as_deref().unwrap_or(""),
        install.unwrap_or(""),
        spec.manifest.as_deref().unwrap_or(""),
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn runtime(value: &Value, warnings: &mut Vec<String>) -> Result<Runtime, ManifestError> {
    let mut runtime = Runtime::default();
    for (key, value) in section(value, "runtime")? {
        let key = key_text(key, "runtime.")?;
        let field = format!("runtime.{key}");
        match key.as_str() {
            "kind" | "language" => {
                let kind = string(value, &field)?;
                runtime.kind = runtime.kind.or(kind);
            }
            "entry" => runtime.entry = string(value, &field)?,
            "package_manager" => runtime.package_manager = string(value, &field)?,
            "base_image" => warnings.push(
                "`runtime.base_image` is not supported: quorum runs the worker as a process on the node, with the node's own runtimes".into(),
            ),
            other => warnings.push(format!(
                "unknown field `runtime.{}` is ignored",
                shown(other)
            )),
        }
    }
    Ok(runtime)
}

fn scripts(
    value: &Value,
    manifest: &mut Manifest,
    warnings: &mut Vec<String>,
) -> Result<(), ManifestError> {
    for (key, value) in section(value, "scripts")? {
        let key = key_text(key, "scripts.")?;
        let field = format!("scripts.{key}");
        match key.as_str() {
            "install" => manifest.install = command(value, &field)?,
            "start" => manifest.start = command(value, &field)?,
            "setup" => warnings.push(
                "`scripts.setup` is not run: it provisions an iii sandbox; on a quorum node the runtimes must already be installed".into(),
            ),
            other => warnings.push(format!(
                "unknown field `scripts.{}` is ignored",
                shown(other)
            )),
        }
    }
    Ok(())
}

fn env(value: &Value, warnings: &mut Vec<String>) -> Result<Vec<(String, String)>, ManifestError> {
    let mut pairs = Vec::new();
    for (key, value) in section(value, "env")? {
        let key = key_text(key, "env.")?;
        let field = format!("env.{}", shown(&key));
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ManifestError::Field {
                field,
                problem: "is not a valid variable name (letters, digits and `_`, not starting with a digit)".into(),
            });
        }
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Bool(_) | Value::Number(_) => {
                return Err(ManifestError::Field {
                    field,
                    problem: format!("must be a string: quote it (`{}: \"...\"`)", shown(&key)),
                })
            }
            _ => {
                return Err(ManifestError::Field {
                    field,
                    problem: "must be a string".into(),
                })
            }
        };
        if text.contains('\0') {
            return Err(ManifestError::Field {
                field,
                problem: "must not contain a NUL character".into(),
            });
        }
        if RESERVED_ENV.contains(&key.as_str()) {
            warnings.push(format!(
                "`env.{key}` is ignored: quorum sets it for the worker"
            ));
            continue;
        }
        pairs.push((key, text));
    }
    Ok(pairs)
}

fn config(value: &Value) -> Result<Option<serde_json::Value>, ManifestError> {
    if value.is_null() {
        return Ok(None);
    }
    serde_yaml::from_value(value.clone())
        .map(Some)
        .map_err(|e| ManifestError::Field {
            field: "config".into(),
            problem: format!("cannot be handed to the worker: {e}"),
        })
}

fn section<'a>(value: &'a Value, field: &str) -> Result<&'a Mapping, ManifestError> {
    static EMPTY: std::sync::OnceLock<Mapping> = std::sync::OnceLock::new();
    match value {
        Value::Mapping(map) => Ok(map),
        Value::Null => Ok(EMPTY.get_or_init(Mapping::new)),
        _ => Err(ManifestError::Field {
            field: field.into(),
            problem: "must be a mapping of indented `key: value` fields".into(),
        }),
    }
}

fn key_text(key: &Value, prefix: &str) -> Result<String, ManifestError> {
    key.as_str()
        .map(str::to_string)
        .ok_or_else(|| ManifestError::Field {
            field: format!("{prefix}{}", describe(key)),
            problem: "must be a string key".into(),
        })
}

fn string(value: &Value, field: &str) -> Result<Option<String>, ManifestError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        other => Err(ManifestError::Field {
            field: field.into(),
            problem: format!("must be a string, got {}", describe(other)),
        }),
    }
}

fn command(value: &Value, field: &str) -> Result<Option<String>, ManifestError> {
    if value.is_sequence() {
        return Err(ManifestError::Field {
            field: field.into(),
            problem: "must be one command string (chain steps with `&&`), got a list".into(),
        });
    }
    string(value, field)
}

fn check_command(field: &str, command: &str) -> Result<(), ManifestError> {
    if command.contains('\0') {
        return Err(ManifestError::Field {
            field: field.into(),
            problem: "must not contain a NUL character".into(),
        });
    }
    Ok(())
}

fn nonempty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A YAML value's kind, never its content (manifests are third-party text).
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// Third-party text made safe to echo: no control or bidi characters, bounded length.
fn shown(text: &str) -> String {
    let bidi = |c: char| matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
    text.chars()
        .filter(|c| !c.is_control() && !bidi(*c))
        .take(80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::spec::RestartPolicy;

    fn spec(manifest: &str) -> WorkerSpec {
        WorkerSpec {
            name: "resizer".into(),
            dir: Some("/srv/workers/resizer".into()),
            manifest: Some(manifest.into()),
            command: None,
            restart: RestartPolicy::OnFailure,
            node_labels: Default::default(),
        }
    }

    fn plan(manifest: &str) -> Planned {
        launch_plan(&spec(manifest)).unwrap()
    }

    fn error(manifest: &str) -> ManifestError {
        launch_plan(&spec(manifest)).unwrap_err()
    }

    #[test]
    fn explicit_scripts_env_and_config_are_honoured() {
        let planned = plan(
            "name: resizer\nscripts:\n  install: npm ci\n  start: node index.js\nenv:\n  MODE: fast\nconfig:\n  bucket: images\n  sizes: [64, 128]\n",
        );
        assert!(planned.warnings.is_empty(), "{:?}", planned.warnings);
        let plan = planned.plan;
        assert_eq!(plan.name, "resizer");
        assert_eq!(plan.dir, PathBuf::from("/srv/workers/resizer"));
        assert_eq!(plan.install.as_deref(), Some("npm ci"));
        assert_eq!(plan.start, "node index.js");
        assert_eq!(plan.env, vec![("MODE".to_string(), "fast".to_string())]);
        assert_eq!(
            plan.config,
            Some(serde_json::json!({"bucket": "images", "sizes": [64, 128]}))
        );
        assert_eq!(plan.restart, RestartPolicy::OnFailure);
    }

    #[test]
    fn the_start_command_is_inferred_from_the_runtime_kind() {
        let cases = [
            (
                "runtime:\n  kind: typescript\n  entry: src/index.ts\n",
                "npm install",
                "npx tsx src/index.ts",
            ),
            (
                "runtime:\n  kind: typescript\n  package_manager: bun\n  entry: src/index.ts\n",
                "bun install",
                "bun src/index.ts",
            ),
            (
                "runtime:\n  kind: javascript\n  entry: index.js\n",
                "npm install",
                "node index.js",
            ),
            (
                "runtime:\n  language: python\n  entry: worker.main\n",
                "python3 -m venv .venv && .venv/bin/pip install -e .",
                ".venv/bin/python -m worker.main",
            ),
            (
                "language: python\nentry: app\n",
                "python3 -m venv .venv && .venv/bin/pip install -e .",
                ".venv/bin/python -m app",
            ),
            (
                "runtime:\n  kind: rust\n",
                "cargo build --release",
                "cargo run --release",
            ),
        ];
        for (manifest, install, start) in cases {
            let plan = plan(manifest).plan;
            assert_eq!(plan.install.as_deref(), Some(install), "{manifest}");
            assert_eq!(plan.start, start, "{manifest}");
        }
    }

    #[test]
    fn an_explicit_start_or_command_means_no_inferred_install() {
        let plan =
            plan("runtime:\n  kind: python\n  entry: app\nscripts:\n  start: python3 app.py\n")
                .plan;
        assert_eq!(plan.start, "python3 app.py");
        assert_eq!(plan.install, None);
        let mut with_command =
            spec("runtime:\n  kind: python\n  entry: app\nscripts:\n  install: pip install .\n");
        with_command.command = Some("python3 -m app --fast".into());
        let plan = launch_plan(&with_command).unwrap().plan;
        assert_eq!(plan.start, "python3 -m app --fast");
        assert_eq!(plan.install.as_deref(), Some("pip install ."));
        let opted_out =
            self::plan("runtime:\n  kind: python\n  entry: app\nscripts:\n  install: \"\"\n").plan;
        assert_eq!(opted_out.install, None);
    }

    #[test]
    fn a_command_alone_needs_no_manifest_and_no_directory() {
        let spec = WorkerSpec {
            name: "echo".into(),
            dir: None,
            manifest: None,
            command: Some("python3 echo.py".into()),
            restart: RestartPolicy::Always,
            node_labels: Default::default(),
        };
        let planned = launch_plan(&spec).unwrap();
        assert_eq!(planned.plan.start, "python3 echo.py");
        assert_eq!(planned.plan.dir, PathBuf::new());
        assert!(planned.plan.install.is_none() && planned.warnings.is_empty());
    }

    #[test]
    fn a_manifest_that_does_not_parse_is_a_clear_error() {
        for bad in [
            "name: [unclosed",
            "scripts:\n  start: a\n  start: b\n",
            "\t- x: : y",
        ] {
            let err = error(bad);
            assert!(matches!(err, ManifestError::Yaml(_)), "{bad:?}: {err}");
            assert!(err.to_string().contains("iii.worker.yaml does not parse"));
        }
        assert_eq!(error("- a\n- b\n"), ManifestError::NotAMapping);
        let err = error("scripts:\n  start: [node, index.js]\n");
        assert!(
            err.to_string()
                .contains("`scripts.start` must be one command string"),
            "{err}"
        );
        let err = error("runtime: node\n");
        assert!(
            err.to_string().contains("`runtime` must be a mapping"),
            "{err}"
        );
        let err = error("scripts:\n  start: node x.js\nenv:\n  PORT: 8080\n");
        assert!(
            err.to_string()
                .contains("`env.PORT` must be a string: quote it"),
            "{err}"
        );
        let err = error("scripts:\n  start: node x.js\nenv:\n  BAD-NAME: x\n");
        assert!(
            err.to_string().contains("not a valid variable name"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_start_command_says_what_is_missing() {
        let err = error("name: resizer\nscripts:\n  install: npm ci\n");
        assert!(matches!(err, ManifestError::NoStart { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("no `scripts.start` and no `runtime.kind`"),
            "{err}"
        );
        let err = error("runtime:\n  kind: typescript\n");
        assert!(err.to_string().contains("needs `runtime.entry`"), "{err}");
        let err = error("runtime:\n  kind: cobol\n  entry: main\n");
        assert!(
            err.to_string()
                .contains("cannot infer one for `runtime.kind: cobol`"),
            "{err}"
        );
        let err = error("scripts:\n  start: \"  \"\n");
        assert!(matches!(err, ManifestError::NoStart { .. }), "{err}");
        let mut nothing = spec("");
        nothing.manifest = None;
        let err = launch_plan(&nothing).unwrap_err();
        assert!(err.to_string().contains("give --command"), "{err}");
    }

    #[test]
    fn unsupported_fields_warn_instead_of_being_ignored_silently() {
        let planned = plan(
            "name: resizer\ndescription: resizes\niii: v1\nruntime:\n  kind: typescript\n  entry: a.ts\n  base_image: oven/bun:1\nscripts:\n  setup: apt-get install -y vips\n  start: node a.js\ndependencies:\n  iii-state: ^0.19\nresources:\n  cpus: 2\nimage: ghcr.io/x/y\nenv:\n  III_URL: ws://elsewhere\nsurprise: 1\n",
        );
        let warnings = planned.warnings.join("\n");
        for expected in [
            "`runtime.base_image` is not supported",
            "`scripts.setup` is not run",
            "`dependencies` is not supported",
            "`resources` is not supported",
            "`image` is not supported",
            "`env.III_URL` is ignored",
            "unknown field `surprise`",
        ] {
            assert!(
                warnings.contains(expected),
                "{expected} missing from:\n{warnings}"
            );
        }
        assert_eq!(planned.warnings.len(), 7, "{warnings}");
        assert!(planned.plan.env.is_empty());
    }

    #[test]
    fn a_manifest_naming_another_worker_warns() {
        let planned = plan("name: other\nscripts:\n  start: x\n");
        assert_eq!(planned.plan.name, "resizer");
        assert!(planned.warnings[0].contains("names the worker `other`"));
        assert!(matches!(
            error("name: ../x\nscripts:\n  start: x\n"),
            ManifestError::Name(_)
        ));
    }

    #[test]
    fn the_manifest_size_is_bounded() {
        let huge = format!(
            "scripts:\n  start: x\ndescription: \"{}\"\n",
            "a".repeat(MAX_MANIFEST_BYTES)
        );
        assert!(matches!(error(&huge), ManifestError::TooLarge { .. }));
    }

    #[test]
    fn the_directory_must_be_absolute_and_the_name_safe() {
        let mut relative = spec("scripts:\n  start: x\n");
        relative.dir = Some("workers/resizer".into());
        assert!(matches!(
            launch_plan(&relative),
            Err(ManifestError::RelativeDir(_))
        ));
        let mut bad_name = spec("scripts:\n  start: x\n");
        bad_name.name = "a/b".into();
        assert!(matches!(
            launch_plan(&bad_name),
            Err(ManifestError::Name(_))
        ));
    }

    #[test]
    fn the_install_key_follows_the_manifest_and_the_directory() {
        let first = plan("scripts:\n  install: npm ci\n  start: node a.js\n")
            .plan
            .install_key;
        assert_eq!(
            first,
            plan("scripts:\n  install: npm ci\n  start: node a.js\n")
                .plan
                .install_key
        );
        let edited = plan("scripts:\n  install: npm ci\n  start: node a.js\nversion: 2\n")
            .plan
            .install_key;
        assert_ne!(first, edited);
        let mut moved = spec("scripts:\n  install: npm ci\n  start: node a.js\n");
        moved.dir = Some("/srv/other".into());
        assert_ne!(first, launch_plan(&moved).unwrap().plan.install_key);
    }
}
