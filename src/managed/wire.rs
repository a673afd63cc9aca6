//! Managed workers on the cluster port: the protobuf messages of the `quorum worker` RPCs,
//! to and from the spec and the registry's record. One place, so the CLI and the node read
//! the same fields the same way.

use super::spec::{RestartPolicy, WorkerSpec};
use crate::registry::ManagedWorker;
use crate::rpc::pb;

/// The request `quorum worker add` sends for `spec`.
pub fn add_request(spec: &WorkerSpec) -> pb::AddManagedWorkerRequest {
    pb::AddManagedWorkerRequest {
        name: spec.name.clone(),
        dir: spec.dir.clone().unwrap_or_default(),
        manifest: spec.manifest.clone().unwrap_or_default(),
        command: spec.command.clone().unwrap_or_default(),
        restart: restart_text(spec.restart).to_string(),
        node_labels: spec.node_labels.clone().into_iter().collect(),
    }
}

/// The spec an `AddManagedWorker` request describes (empty strings are absent fields).
pub fn spec_of(request: pb::AddManagedWorkerRequest) -> Result<WorkerSpec, String> {
    let restart = if request.restart.is_empty() {
        RestartPolicy::default()
    } else {
        request
            .restart
            .parse::<RestartPolicy>()
            .map_err(|e| e.to_string())?
    };
    let present = |text: String| (!text.is_empty()).then_some(text);
    Ok(WorkerSpec {
        name: request.name,
        dir: present(request.dir),
        manifest: present(request.manifest),
        command: present(request.command),
        restart,
        node_labels: request.node_labels.into_iter().collect(),
    })
}

/// How a restart policy is spelled on the command line and in the config.
pub fn restart_text(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Never => "never",
    }
}

/// What `list` and `status` show of one managed worker.
pub fn info_of(worker: &ManagedWorker) -> pb::ManagedWorkerInfo {
    let spec = &worker.spec;
    let status = &worker.status;
    pb::ManagedWorkerInfo {
        name: spec.name.clone(),
        dir: spec.dir.clone().unwrap_or_default(),
        command: spec.command.clone().unwrap_or_default(),
        restart: restart_text(spec.restart).to_string(),
        node_labels: spec.node_labels.clone().into_iter().collect(),
        version: worker.version,
        node: worker.placement.unwrap_or(0),
        state: status.state.clone(),
        ready: status.ready,
        restarts: status.restarts,
        last_exit: status.last_exit.clone().unwrap_or_default(),
        last_error: status.last_error.clone().unwrap_or_default(),
        unplaceable: status.unplaceable.clone().unwrap_or_default(),
        origin: worker.origin.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_spec_survives_the_wire() {
        let spec = WorkerSpec {
            name: "echo".into(),
            dir: Some("/srv/echo".into()),
            manifest: Some("name: echo\n".into()),
            command: None,
            restart: RestartPolicy::OnFailure,
            node_labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        };
        assert_eq!(spec_of(add_request(&spec)).unwrap(), spec);
    }

    #[test]
    fn an_unknown_restart_policy_is_refused() {
        let request = pb::AddManagedWorkerRequest {
            name: "echo".into(),
            command: "true".into(),
            restart: "sometimes".into(),
            ..Default::default()
        };
        assert!(spec_of(request).is_err());
    }
}
