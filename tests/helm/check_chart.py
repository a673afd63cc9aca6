"""Checks the quorum Helm chart without a Kubernetes cluster or the helm binary.

Run by `tests/helm_chart.rs` inside a venv holding helm-python-sdk (Helm's Go SDK through
a C library: lint and render) and kubernetes-validate (the API servers' JSON schemas):

    python check_chart.py CHART_DIR

1. lints the chart (strict) for a few sets of values;
2. renders it for each set and validates every object, strictly (unknown fields are
   errors), against the oldest Kubernetes the chart supports and the newest schemas
   kubernetes-validate bundles;
3. asserts what a working quorum cluster depends on (see `check_invariants`);
4. when a `helm` binary is on PATH, also runs `helm lint` and `helm template`.

Prints one line per step and exits non-zero on the first failure.
"""

import shutil
import subprocess
import sys

import helm_python as helm
import kubernetes_validate
import yaml

from verdict import check, fail

RELEASE = "quorum"
NAMESPACE = "iii"
# The chart's kubeVersion floor, and the newest Kubernetes the schemas cover.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
# Custom resources the API server schemas cannot know; checked by hand below.
CRD_KINDS = {"ServiceMonitor"}

SINGLE = "single node, hard anti-affinity, ServiceMonitor"
# name -> (values, expected replicas, persistence on?)
CASES = {
    "defaults": ({}, 3, True),
    "replicas=5": ({"replicas": 5}, 5, True),
    "persistence off": ({"persistence": {"enabled": False}}, 3, False),
    # Every optional block filled in, so a wrong indentation shows up in validation.
    "all options": (
        {
            "imagePullSecrets": [{"name": "regcred"}],
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
            "persistence": {"storageClass": "fast", "size": "5Gi"},
            "extraArgs": ["--max-pending-calls=5000"],
            "extraEnv": [{"name": "RUST_LOG", "value": "debug"}],
            "podAnnotations": {"example.com/note": "x"},
            "podLabels": {"team": "iii"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "iii", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
            "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}},
            "probes": {"startup": {"enabled": False}},
            "podDisruptionBudget": {"minAvailable": 2},
        },
        3,
        True,
    ),
    SINGLE: (
        {"replicas": 1, "podAntiAffinity": "hard", "serviceMonitor": {"enabled": True}},
        1,
        True,
    ),
}


def lint(chart, name, values):
    report = helm.lint(chart, values, strict=True, namespace=NAMESPACE)
    # Severity 1 is informational (e.g. "icon is recommended"); 2 warning, 3 error.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    check(not report["errors"] and not problems, f"lint ({name}): {report}")
    print(f"ok: lint ({name}): {len(report['messages'])} informational message(s)")


def render(chart, values):
    """Rendered objects by kind (a list each), and the NOTES text."""
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects, notes = {}, ""
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for obj in yaml.safe_load_all(text):
            if obj:
                objects.setdefault(obj["kind"], []).append(obj)
    return objects, notes


def validate(name, objects):
    count = 0
    for kind, items in objects.items():
        if kind in CRD_KINDS:
            continue
        for obj in items:
            for version in KUBE_VERSIONS:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    fail(f"{name}: {kind}/{obj['metadata']['name']} against {version}: {where}: {e.message}")
                except kubernetes_validate.SchemaNotFoundError as e:
                    fail(f"{name}: {e.message}")
            count += 1
    print(f"ok: validate ({name}): {count} object(s), strict, Kubernetes {' and '.join(KUBE_VERSIONS)}")


def one(objects, kind, predicate=lambda o: True):
    found = [o for o in objects.get(kind, []) if predicate(o)]
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0]


def flag(args, name):
    """The value of `--name=value` in args, or None."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    check(len(values) <= 1, f"--{name} given {len(values)} times")
    return values[0] if values else None


def check_invariants(name, objects, notes, replicas, persistence):
    sts = one(objects, "StatefulSet")
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports == {"worker": 49134, "cluster": 50051, "http": 49180}, f"{name}: ports {ports}")
    check(spec["replicas"] == replicas, f"{name}: replicas {spec['replicas']}")
    # Ordinal 0 waits for every other pod before founding: pods must start together.
    check(spec["podManagementPolicy"] == "Parallel", f"{name}: podManagementPolicy")

    headless = one(objects, "Service", lambda s: s["spec"].get("clusterIP") == "None")
    check(spec["serviceName"] == headless["metadata"]["name"], f"{name}: serviceName")
    check(headless["spec"].get("publishNotReadyAddresses") is True, f"{name}: headless publishNotReadyAddresses")
    check(any(p["port"] == 50051 for p in headless["spec"]["ports"]), f"{name}: headless cluster port")
    client = one(objects, "Service", lambda s: s["spec"].get("clusterIP") != "None")
    check({p["port"] for p in client["spec"]["ports"]} == {49134, 49180}, f"{name}: client Service ports")
    check(client["spec"]["selector"] == spec["selector"]["matchLabels"], f"{name}: client Service selector")

    # Probes: ready on /readyz, alive on /healthz, both on the HTTP port.
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path, f"{name}: {probe} path {get}")
        check(ports.get(get.get("port"), get.get("port")) == 49180, f"{name}: {probe} port {get}")

    # The bootstrap arguments: every pod the same ordinal join list, itself included.
    args = container["args"]
    check(args[0] == "serve", f"{name}: args {args}")
    fullname, domain = sts["metadata"]["name"], f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    want_join = [f"{fullname}-{i}.{domain}:50051" for i in range(replicas)]
    check(flag(args, "join") == ",".join(want_join), f"{name}: --join {flag(args, 'join')}")
    check(flag(args, "advertise") == f"$(POD_NAME).{domain}:50051", f"{name}: --advertise")
    check(flag(args, "node-id-from-pod-name") == "$(POD_NAME)", f"{name}: --node-id-from-pod-name")
    check(flag(args, "data-dir") == "/data", f"{name}: --data-dir")
    check(flag(args, "http-listen") == "0.0.0.0:49180", f"{name}: --http-listen")
    check(flag(args, "remove-departed-after-ms") == "60000", f"{name}: --remove-departed-after-ms")
    pod_name = [e for e in container["env"] if e["name"] == "POD_NAME"]
    check(
        pod_name and pod_name[0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name",
        f"{name}: POD_NAME env from metadata.name",
    )
    drain_s = int(flag(args, "drain-grace-ms")) / 1000
    check(pod["terminationGracePeriodSeconds"] > drain_s, f"{name}: terminationGracePeriodSeconds <= drain grace")

    # Non-root, read-only root, no privileges.
    check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    check(pod["securityContext"].get("runAsUser") == 65532, f"{name}: runAsUser")
    ctx = container["securityContext"]
    check(ctx.get("readOnlyRootFilesystem") is True, f"{name}: readOnlyRootFilesystem")
    check(ctx.get("allowPrivilegeEscalation") is False, f"{name}: allowPrivilegeEscalation")
    check(ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: capabilities")

    # /data: a claim per pod with persistence, an emptyDir without.
    claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if persistence:
        check(claims == ["data"] and "data" not in volumes, f"{name}: claims {claims}")
    else:
        check(not claims and "emptyDir" in volumes.get("data", {}), f"{name}: no claim, data emptyDir")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    check(mounts.get("/data") == "data", f"{name}: /data mount")

    # A disruption budget that keeps a Raft majority (none for a single node: it could
    # never be evicted).
    pdbs = objects.get("PodDisruptionBudget", [])
    if replicas > 1:
        check(len(pdbs) == 1 and pdbs[0]["spec"].get("minAvailable") == replicas // 2 + 1, f"{name}: PDB {pdbs}")
    else:
        check(not pdbs, f"{name}: PDB for a single node")

    check(f"III_URL=ws://{client['metadata']['name']}.{NAMESPACE}.svc:49134" in notes, f"{name}: NOTES III_URL")
    print(f"ok: invariants ({name})")


def check_specific(objects):
    """What only the SINGLE case switches on."""
    affinity = one(objects, "StatefulSet")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    check("requiredDuringSchedulingIgnoredDuringExecution" in affinity, "hard anti-affinity")
    monitor = one(objects, "ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    check(endpoint["port"] == "http" and endpoint["path"] == "/metrics", f"ServiceMonitor {endpoint}")
    print("ok: hard anti-affinity and ServiceMonitor")


def check_refusals(chart):
    """Values the nodes would reject must not render."""
    bad = {
        "purge too close to fence": {"cluster": {"fenceAfterMs": 2500, "purgeAfterMs": 3000}},
        "unknown anti-affinity": {"podAntiAffinity": "sometimes"},
    }
    for name, values in bad.items():
        try:
            render(chart, values)
        except helm.HelmError:
            continue
        fail(f"rendered despite {name}")
    print(f"ok: refused {len(bad)} invalid value set(s)")


def helm_cli(chart):
    """The real helm binary, when there is one; not installed by the tests."""
    binary = shutil.which("helm")
    if not binary:
        print("note: no helm binary on PATH; helm lint/template not run")
        return
    for command in (["lint", "--strict", chart], ["template", RELEASE, chart, "--namespace", NAMESPACE]):
        result = subprocess.run([binary, *command], capture_output=True, text=True)
        check(result.returncode == 0, f"helm {command[0]}: {result.stdout}{result.stderr}")
    print("ok: helm lint and helm template")


def main():
    chart = sys.argv[1]
    print(f"helm SDK {helm.helm_sdk_version()}, kubernetes-validate {kubernetes_validate.__version__}")
    rendered = {}
    for name, (values, replicas, persistence) in CASES.items():
        lint(chart, name, values)
        objects, notes = render(chart, values)
        validate(name, objects)
        check_invariants(name, objects, notes, replicas, persistence)
        rendered[name] = objects
    check_specific(rendered[SINGLE])
    check_refusals(chart)
    helm_cli(chart)
    print("chart checks passed")


if __name__ == "__main__":
    main()
