//! The chart's StatefulSet, rendered as `helm install` would (`render_chart.py` in the helm
//! venv the chart test uses), read as the kubelet would read it: the container's args with
//! `$(VAR)` expanded from its env, its ports, probes, security contexts and mounts, and the
//! Secrets the mounts name. Nothing about the pods is decided here: a change to the chart
//! changes what the tests run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::common::sdk_env::{run_bounded, unavailable, EnvCell};
use super::common::sdks::prepare_helm_env;

/// The release and namespace the tests install as; the pods' DNS names follow from them.
pub const RELEASE: &str = "quorum";
pub const NAMESPACE: &str = "iii";

const RENDER_TIMEOUT: Duration = Duration::from_secs(120);

static ENV: EnvCell = EnvCell::new();

/// One HTTP probe of the container, as rendered.
#[derive(Clone, Debug)]
pub struct Probe {
    pub path: String,
    /// The container port the probe's named port resolves to.
    pub port: u16,
    pub period: Duration,
    pub failure_threshold: u32,
}

impl Probe {
    /// How long the kubelet would let this probe fail before acting.
    pub fn patience(&self) -> Duration {
        self.period * self.failure_threshold
    }
}

/// Where a volume mount's contents come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// The pod's data: a PersistentVolumeClaim from the claim template (or an emptyDir).
    Data,
    /// An emptyDir scratch directory.
    Scratch,
    /// A Secret's keys as files (`items`: key, path) with `mode`.
    Secret {
        name: String,
        items: Vec<(String, String)>,
        mode: u32,
    },
}

/// One volume mount of the container.
#[derive(Clone, Debug)]
pub struct Mount {
    pub path: String,
    pub read_only: bool,
    pub source: Source,
}

/// The rendered chart: the StatefulSet and the Secrets.
pub struct Chart {
    statefulset: Value,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl Chart {
    /// Renders the chart with `values` (JSON, as `--set` would give them); `None` after
    /// saying why the helm SDK is unavailable (a failure under `CI=true`).
    pub fn render_or_skip(values: Value) -> Option<Chart> {
        let python = match ENV.get_or_init(prepare_helm_env).clone() {
            Ok(python) => python,
            Err(reason) => {
                unavailable("helm-python-sdk", &reason);
                return None;
            }
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = run_bounded(
            Command::new(python)
                .arg(root.join("tests/containers/render_chart.py"))
                .arg(root.join("deploy/helm/quorum"))
                .arg(RELEASE)
                .arg(NAMESPACE)
                .arg(values.to_string()),
            RENDER_TIMEOUT,
            None,
        )
        .unwrap_or_else(|e| panic!("rendering the chart failed: {e}"));
        let rendered: Value = serde_json::from_str(&out).expect("render_chart.py prints JSON");
        let secrets = rendered["secrets"]
            .as_object()
            .expect("secrets")
            .iter()
            .map(|(name, data)| {
                let data = data
                    .as_object()
                    .expect("secret data")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().expect("text").to_string()))
                    .collect();
                (name.clone(), data)
            })
            .collect();
        Some(Chart {
            statefulset: rendered["statefulset"].clone(),
            secrets,
        })
    }

    fn pod(&self) -> &Value {
        &self.statefulset["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod()["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "the pod has one container");
        &containers[0]
    }

    pub fn replicas(&self) -> usize {
        self.statefulset["spec"]["replicas"]
            .as_u64()
            .expect("replicas") as usize
    }

    /// The StatefulSet's pod name for ordinal `i` (`quorum-0`, ...).
    pub fn pod_name(&self, i: usize) -> String {
        let name = self.statefulset["metadata"]["name"].as_str().expect("name");
        format!("{name}-{i}")
    }

    /// `Parallel`: all pods start at once, in no particular order.
    pub fn pod_management_policy(&self) -> &str {
        self.statefulset["spec"]["podManagementPolicy"]
            .as_str()
            .unwrap_or("OrderedReady")
    }

    /// The container's environment for pod `pod`: plain values, and `metadata.name` from the
    /// downward API.
    pub fn env(&self, pod: &str) -> Vec<(String, String)> {
        self.container()["env"]
            .as_array()
            .map(|vars| {
                vars.iter()
                    .map(|var| {
                        let name = var["name"].as_str().expect("env name").to_string();
                        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                            Some("metadata.name") => pod.to_string(),
                            Some(other) => panic!("no stand-in for fieldRef {other}"),
                            None => var["value"].as_str().unwrap_or("").to_string(),
                        };
                        (name, value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The container's `command` (empty: the image's entrypoint) and `args` for pod `pod`,
    /// with `$(VAR)` replaced from its env as the kubelet does.
    pub fn command_and_args(&self, pod: &str) -> (Vec<String>, Vec<String>) {
        let env = self.env(pod);
        let expand = |list: &Value| -> Vec<String> {
            list.as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|item| {
                            let mut text = item.as_str().expect("string arg").to_string();
                            for (name, value) in &env {
                                text = text.replace(&format!("$({name})"), value);
                            }
                            text
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let container = self.container();
        (expand(&container["command"]), expand(&container["args"]))
    }

    /// The value of `--name=value` in pod `pod`'s args.
    pub fn flag(&self, pod: &str, name: &str) -> Option<String> {
        let prefix = format!("--{name}=");
        self.command_and_args(pod)
            .1
            .iter()
            .find_map(|arg| arg.strip_prefix(&prefix).map(str::to_string))
    }

    /// The DNS name the headless Service gives pod `pod`: the host it advertises.
    pub fn dns_name(&self, pod: &str) -> String {
        let advertise = self.flag(pod, "advertise").expect("--advertise");
        let (host, _port) = advertise.rsplit_once(':').expect("host:port");
        host.to_string()
    }

    /// The container port named `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.container()["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}")) as u16
    }

    /// Every container port.
    pub fn ports(&self) -> Vec<u16> {
        self.container()["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| p["containerPort"].as_u64().expect("containerPort") as u16)
            .collect()
    }

    /// The `readinessProbe`, `livenessProbe` or `startupProbe`, if rendered.
    pub fn probe(&self, kind: &str) -> Option<Probe> {
        let probe = &self.container()[kind];
        let get = &probe["httpGet"];
        let path = get["path"].as_str()?.to_string();
        let port = match &get["port"] {
            Value::String(name) => self.port(name),
            other => other.as_u64().expect("probe port") as u16,
        };
        Some(Probe {
            path,
            port,
            period: Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10)),
            failure_threshold: probe["failureThreshold"].as_u64().unwrap_or(3) as u32,
        })
    }

    /// Seconds between SIGTERM and SIGKILL.
    pub fn grace_seconds(&self) -> u64 {
        self.pod()["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30)
    }

    /// `uid:gid` the container runs as, and the extra group (fsGroup) that owns its volumes.
    pub fn user(&self) -> (String, Option<u64>) {
        let pod = &self.pod()["securityContext"];
        let container = &self.container()["securityContext"];
        let pick = |key: &str| container[key].as_u64().or_else(|| pod[key].as_u64());
        let uid = pick("runAsUser").expect("the chart sets runAsUser");
        let gid = pick("runAsGroup").unwrap_or(uid);
        (format!("{uid}:{gid}"), pod["fsGroup"].as_u64())
    }

    pub fn read_only_root(&self) -> bool {
        self.container()["securityContext"]["readOnlyRootFilesystem"] == true
    }

    pub fn no_privilege_escalation(&self) -> bool {
        self.container()["securityContext"]["allowPrivilegeEscalation"] == false
    }

    /// Capabilities the container drops (`ALL`).
    pub fn dropped_capabilities(&self) -> Vec<String> {
        self.container()["securityContext"]["capabilities"]["drop"]
            .as_array()
            .map(|caps| {
                caps.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The container's mounts with where each comes from.
    pub fn mounts(&self) -> Vec<Mount> {
        let volumes: BTreeMap<&str, &Value> = self.pod()["volumes"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .map(|v| (v["name"].as_str().expect("volume name"), v))
                    .collect()
            })
            .unwrap_or_default();
        let claims: Vec<&str> = self.statefulset["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["metadata"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        self.container()["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .map(|mount| {
                let name = mount["name"].as_str().expect("mount name");
                let source = match volumes.get(name) {
                    _ if claims.contains(&name) || name == "data" => Source::Data,
                    Some(volume) if volume["emptyDir"].is_object() => Source::Scratch,
                    Some(volume) if volume["secret"].is_object() => {
                        let secret = &volume["secret"];
                        Source::Secret {
                            name: secret["secretName"].as_str().expect("secretName").into(),
                            items: secret["items"]
                                .as_array()
                                .expect("the chart lists a Secret's items")
                                .iter()
                                .map(|item| {
                                    (
                                        item["key"].as_str().expect("key").into(),
                                        item["path"].as_str().expect("path").into(),
                                    )
                                })
                                .collect(),
                            mode: secret["defaultMode"].as_u64().unwrap_or(0o644) as u32,
                        }
                    }
                    other => panic!("no stand-in for volume {name}: {other:?}"),
                };
                Mount {
                    path: mount["mountPath"].as_str().expect("mountPath").into(),
                    read_only: mount["readOnly"] == true,
                    source,
                }
            })
            .collect()
    }

    /// A rendered Secret's value.
    pub fn secret(&self, name: &str, key: &str) -> &str {
        self.secrets
            .get(name)
            .and_then(|data| data.get(key))
            .unwrap_or_else(|| panic!("the chart rendered no Secret {name} with {key}"))
    }

    /// The generated bootstrap worker token (`<fullname>-worker-token`, key `token`).
    pub fn worker_token(&self) -> &str {
        let name = self
            .secrets
            .keys()
            .find(|name| name.ends_with("-worker-token"))
            .expect("the chart generated a worker token");
        self.secret(name, "token")
    }
}
