//! env: the variables a managed worker starts with, as iii sets them for a host process:
//! the manifest's `env`, its `config` flattened into variables, and the ones quorum owns
//! (`III_URL`, `III_ENGINE_URL`, `III_WORKER_NAME`, `III_CONFIG`), which nothing overrides.

use serde_json::Value;
use std::path::Path;

use super::LaunchPlan;

/// The variables for `plan`'s processes; `config_file` is where its config was written.
pub(super) fn child_env(
    plan: &LaunchPlan,
    worker_url: &str,
    config_file: Option<&Path>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = plan.env.clone();
    if let Some(config) = &plan.config {
        flatten(config, "", &mut env);
    }
    let mut owned = vec![
        ("III_URL".to_string(), worker_url.to_string()),
        ("III_ENGINE_URL".to_string(), worker_url.to_string()),
        ("III_WORKER_NAME".to_string(), plan.name.clone()),
    ];
    if let Some(path) = config_file {
        owned.push(("III_CONFIG".into(), path.display().to_string()));
    }
    env.retain(|(key, value)| {
        !owned.iter().any(|(k, _)| k == key) && !value.contains('\0') && !key.is_empty()
    });
    env.extend(owned);
    env
}

/// `config` as variables: keys upper-cased, nested keys joined with `_`, strings as they are
/// and other values as JSON (`{db: {port: 5432}}` gives `DB_PORT=5432`). Characters a
/// variable name cannot hold become `_`.
fn flatten(value: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let key: String = key
                    .chars()
                    .map(|c| match c {
                        'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => c.to_ascii_uppercase(),
                        _ => '_',
                    })
                    .collect();
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}_{key}")
                };
                flatten(value, &name, out);
            }
        }
        _ if prefix.is_empty() => {}
        Value::String(text) => set(out, prefix, text.clone()),
        other => set(out, prefix, other.to_string()),
    }
}

fn set(out: &mut Vec<(String, String)>, key: &str, value: String) {
    out.retain(|(k, _)| k != key);
    out.push((key.to_string(), value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::spec::RestartPolicy;
    use std::path::PathBuf;

    fn plan(env: &[(&str, &str)], config: Option<Value>) -> LaunchPlan {
        LaunchPlan {
            name: "resizer".into(),
            dir: PathBuf::new(),
            install: None,
            install_key: String::new(),
            start: "true".into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config,
            restart: RestartPolicy::Always,
            restart_requests: 0,
        }
    }

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn quorum_owns_the_engine_url_and_the_name() {
        let env = child_env(
            &plan(&[("III_URL", "ws://elsewhere"), ("MODE", "fast")], None),
            "ws://127.0.0.1:4000",
            None,
        );
        assert_eq!(get(&env, "III_URL"), Some("ws://127.0.0.1:4000"));
        assert_eq!(get(&env, "III_ENGINE_URL"), Some("ws://127.0.0.1:4000"));
        assert_eq!(get(&env, "III_WORKER_NAME"), Some("resizer"));
        assert_eq!(get(&env, "MODE"), Some("fast"));
        assert_eq!(get(&env, "III_CONFIG"), None);
        assert_eq!(env.iter().filter(|(k, _)| k == "III_URL").count(), 1);
    }

    #[test]
    fn config_becomes_upper_case_variables_and_a_file() {
        let config = serde_json::json!({
            "bucket": "images",
            "db": {"port": 5432, "tls": true},
            "sizes": [1, 2],
            "odd-key": "x",
        });
        let env = child_env(
            &plan(&[("BUCKET", "from-env")], Some(config)),
            "ws://x",
            Some(Path::new("/d/config.yaml")),
        );
        assert_eq!(get(&env, "BUCKET"), Some("images"));
        assert_eq!(get(&env, "DB_PORT"), Some("5432"));
        assert_eq!(get(&env, "DB_TLS"), Some("true"));
        assert_eq!(get(&env, "SIZES"), Some("[1,2]"));
        assert_eq!(get(&env, "ODD_KEY"), Some("x"));
        assert_eq!(get(&env, "III_CONFIG"), Some("/d/config.yaml"));
    }
}
