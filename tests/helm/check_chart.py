"""Checks the quorum Helm chart without a Kubernetes cluster or the helm binary.

Run by `tests/helm_chart.rs` inside a venv holding helm-python-sdk (Helm's Go SDK through
a C library: lint and render) and kubernetes-validate (the API servers' JSON schemas):

    python check_chart.py CHART_DIR

1. lints the chart (strict) for a few sets of values;
2. renders it for each set and validates every object, strictly (unknown fields are
   errors), against the oldest Kubernetes the chart supports and the newest schemas
   kubernetes-validate bundles;
3. asserts what a working quorum cluster depends on (see `check_invariants`) and that it is
   secure by default (see `check_security`): every pod gets `--certs-dir` on a read-only
   Secret with ca.crt, node.crt and node.key whose node certificate really verifies, with
   the CA, for every name a pod is dialled by (an in-memory TLS handshake), and worker auth
   `token` with a generated bootstrap token whose SHA-256 is in the mounted tokens file;
4. renders a copy of the chart whose `lookup` reads a stub, to show that an upgrade keeps
   the generated CA, certificates and token, and re-issues only what is missing;
5. when a `helm` binary is on PATH, also runs `helm lint` and `helm template`.

Prints one line per step and exits non-zero on the first failure.
"""

import base64
import hashlib
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

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
    "tls and worker auth off": ({"tls": {"enabled": False}, "workerAuth": {"mode": "off"}}, 3, True),
    "existing Secrets": (
        {"tls": {"existingSecret": "my-certs"}, "workerAuth": {"existingSecret": "my-tokens"}},
        3,
        True,
    ),
}
# The Secrets the chart generates, by the suffix of their names.
TLS_SECRETS = ("-ca", "-node-tls", "-client-admin")
TOKEN_SECRETS = ("-worker-token", "-worker-tokens")
TOKENS_FILE = "/etc/quorum/worker-tokens/tokens.yaml"


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


def secret_mount(name, pod, container, path):
    """The Secret volume mounted read-only at `path`."""
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    check(len(mounts) == 1 and mounts[0].get("readOnly") is True, f"{name}: {path} not mounted read-only once")
    volume = {v["name"]: v for v in pod["volumes"]}.get(mounts[0]["name"], {})
    return volume.get("secret") or fail(f"{name}: {path} is not a Secret volume: {volume}")


def generated(objects, suffixes):
    return {s["metadata"]["name"]: s for s in objects.get("Secret", []) if s["metadata"]["name"].endswith(suffixes)}


def pem(secret, key):
    return base64.b64decode(secret["data"][key]).decode()


def handshake(ca, server, hostname, client=None):
    """An in-memory TLS handshake: `server` (cert, key) presented for `hostname` and verified
    against `ca`, `client` (cert, key) too when given. Returns (server's, client's) peer
    certificates as ssl reports them; a failed verification raises ssl.SSLError."""
    with tempfile.TemporaryDirectory() as tmp:
        def file(name, text):
            path = Path(tmp) / name
            path.write_text(text)
            return str(path)

        ca_file = file("ca.crt", ca)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(file("s.crt", server[0]), file("s.key", server[1]))
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.load_verify_locations(ca_file)
        if client:
            server_ctx.verify_mode = ssl.CERT_REQUIRED
            server_ctx.load_verify_locations(ca_file)
            client_ctx.load_cert_chain(file("c.crt", client[0]), file("c.key", client[1]))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_side = server_ctx.wrap_bio(to_server, to_client, server_side=True)
    c_side = client_ctx.wrap_bio(to_client, to_server, server_hostname=hostname)
    done = {"server": False, "client": False}
    for _ in range(10):
        for side, tls in (("client", c_side), ("server", s_side)):
            if not done[side]:
                try:
                    tls.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return c_side.getpeercert(), s_side.getpeercert()
    fail(f"TLS handshake for {hostname} did not finish")


def common_name(cert):
    return dict(field for rdn in cert["subject"] for field in rdn).get("commonName")


def check_certificates(name, sts, headless, replicas, secrets):
    """The generated node and admin certificates verify with the generated CA."""
    fullname = sts["metadata"]["name"]
    ca = secrets[f"{fullname}-ca"]
    node = secrets[f"{fullname}-node-tls"]
    admin = secrets[f"{fullname}-client-admin"]
    check(sorted(ca["data"]) == ["ca.crt", "ca.key"], f"{name}: CA Secret keys {sorted(ca['data'])}")
    check(
        sorted(admin["data"]) == ["ca.crt", "client.admin.crt", "client.admin.key"],
        f"{name}: admin Secret keys {sorted(admin['data'])}",
    )
    ca_crt = pem(ca, "ca.crt")
    check(pem(node, "ca.crt") == ca_crt and pem(admin, "ca.crt") == ca_crt, f"{name}: ca.crt differs between Secrets")
    serving = (pem(node, "node.crt"), pem(node, "node.key"))
    domain = f"{headless}.{NAMESPACE}"
    last = replicas - 1
    hostnames = [
        f"{fullname}-0.{domain}.svc.cluster.local",
        f"{fullname}-{last}.{domain}.svc",
        f"{fullname}-{last}.{domain}",
        f"{fullname}-0.{headless}",
        "localhost",
        "127.0.0.1",
    ]
    for hostname in hostnames:
        try:
            server_cert, _ = handshake(ca_crt, serving, hostname)
        except ssl.SSLError as e:
            fail(f"{name}: node.crt does not verify for {hostname}: {e}")
        check(common_name(server_cert) == "node", f"{name}: node.crt subject {server_cert['subject']}")
    try:
        _, client_cert = handshake(ca_crt, serving, hostnames[0], (pem(admin, "client.admin.crt"), pem(admin, "client.admin.key")))
    except ssl.SSLError as e:
        fail(f"{name}: client.admin.crt is not accepted by a server trusting the CA: {e}")
    check(common_name(client_cert) == "client.admin", f"{name}: admin subject {client_cert['subject']}")
    try:
        handshake(ca_crt, serving, "elsewhere.example.com")
        fail(f"{name}: node.crt verifies for a name no pod has")
    except ssl.SSLError:
        pass


def check_security(name, values, objects, notes, replicas):
    """Mutual TLS on the cluster port and worker tokens, unless turned off."""
    sts = one(objects, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    fullname = sts["metadata"]["name"]
    headless = sts["spec"]["serviceName"]
    check(flag(args, "cluster-listen") == "0.0.0.0:50051", f"{name}: --cluster-listen {flag(args, 'cluster-listen')}")

    tls = values.get("tls", {})
    tls_secrets = generated(objects, TLS_SECRETS)
    mounted = [m["mountPath"] for m in container["volumeMounts"]]
    if tls.get("enabled", True):
        check(flag(args, "certs-dir") == "/certs" and "--insecure" not in args, f"{name}: args {args}")
        secret = secret_mount(name, pod, container, "/certs")
        items = {(i["key"], i["path"]) for i in secret.get("items", [])}
        check(items == {(k, k) for k in ("ca.crt", "node.crt", "node.key")}, f"{name}: /certs items {items}")
        existing = tls.get("existingSecret")
        if existing:
            check(secret["secretName"] == existing, f"{name}: /certs from {secret['secretName']}")
            check(not tls_secrets, f"{name}: generated {sorted(tls_secrets)} despite tls.existingSecret")
        else:
            check(secret["secretName"] == f"{fullname}-node-tls", f"{name}: /certs from {secret['secretName']}")
            check(sorted(tls_secrets[secret["secretName"]]["data"]) == ["ca.crt", "node.crt", "node.key"], f"{name}: node Secret keys")
            check_certificates(name, sts, headless, replicas, tls_secrets)
            check(f"secret {fullname}-client-admin" in notes and "--certs-dir certs" in notes, f"{name}: NOTES admin certificate")
        check("--certs-dir /certs --client node" in notes, f"{name}: NOTES cluster status with certificates")
    else:
        check("--insecure" in args and flag(args, "certs-dir") is None, f"{name}: tls off but args {args}")
        check("/certs" not in mounted and not tls_secrets, f"{name}: tls off but certificates rendered")

    auth = values.get("workerAuth", {})
    mode = auth.get("mode", "token")
    token_secrets = generated(objects, TOKEN_SECRETS)
    check(flag(args, "worker-auth") == mode, f"{name}: --worker-auth {flag(args, 'worker-auth')}")
    if mode == "token":
        check(flag(args, "worker-tokens-file") == TOKENS_FILE, f"{name}: --worker-tokens-file")
        secret = secret_mount(name, pod, container, str(Path(TOKENS_FILE).parent))
        check([i["key"] for i in secret.get("items", [])] == ["tokens.yaml"], f"{name}: tokens items {secret}")
        existing = auth.get("existingSecret")
        if existing:
            check(secret["secretName"] == existing and not token_secrets, f"{name}: tokens from {secret['secretName']}")
        else:
            token_name = f"{fullname}-worker-token"
            check(sorted(token_secrets) == sorted([token_name, secret["secretName"]]), f"{name}: {sorted(token_secrets)}")
            token = base64.b64decode(token_secrets[token_name]["data"]["token"]).decode()
            check(len(token) >= 32, f"{name}: a bootstrap token of {len(token)} characters")
            tokens = yaml.safe_load(token_secrets[secret["secretName"]]["stringData"]["tokens.yaml"])["tokens"]
            check(len(tokens) == 1 and tokens[0]["name"] == "bootstrap", f"{name}: tokens {tokens}")
            check(tokens[0]["sha256"] == hashlib.sha256(token.encode()).hexdigest(), f"{name}: the hash is not the token's")
            check(token not in yaml.safe_dump(tokens), f"{name}: the tokens file holds the token itself")
            check(f"secret {token_name} -o jsonpath='{{.data.token}}'" in notes, f"{name}: NOTES token Secret")
    else:
        check(flag(args, "worker-tokens-file") is None and not token_secrets, f"{name}: worker auth off but tokens rendered")
        check("Worker auth is off" in notes, f"{name}: NOTES worker auth off")
    print(f"ok: security ({name}): cluster port {'mTLS' if tls.get('enabled', True) else 'insecure'}, worker auth {mode}")


def check_lookup_keeps(chart):
    """Renders a copy of the chart whose `lookup` reads `.Values.lookupStub` (name -> Secret):
    an upgrade (the first install's Secrets stubbed in) must render them unchanged, and a
    missing node Secret is re-issued under the kept CA."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "quorum"
        shutil.copytree(chart, copy)
        lookups = {"secrets-tls.yaml": 3, "secrets-worker-tokens.yaml": 1}
        for template, expected in lookups.items():
            path = copy / "templates" / template
            text, count = re.subn(
                r'lookup "v1" "Secret" \.Release\.Namespace (\$\w+)',
                r"(get (.Values.lookupStub | default dict) \1)",
                path.read_text(),
            )
            check(count == expected, f"{template}: {count} lookup(s) of its Secrets, expected {expected}")
            path.write_text(text)

        def secrets(values):
            objects, _ = render(str(copy), values)
            return {s["metadata"]["name"]: s for s in objects["Secret"]}

        first = secrets({})
        stub = {name: {"data": s["data"]} for name, s in first.items() if "data" in s}
        upgraded = secrets({"lookupStub": stub})
        check(upgraded == first, "an upgrade changed the generated Secrets")
        other = secrets({})
        check(other["quorum-ca"] != first["quorum-ca"], "two installs generated the same CA")
        check(other["quorum-worker-token"] != first["quorum-worker-token"], "two installs generated the same token")
        partial = {name: s for name, s in stub.items() if name != "quorum-node-tls"}
        reissued = secrets({"lookupStub": partial})
        check(reissued["quorum-ca"] == first["quorum-ca"], "a missing node Secret changed the CA")
        node = reissued["quorum-node-tls"]
        check(node["data"]["node.crt"] != first["quorum-node-tls"]["data"]["node.crt"], "node certificate not re-issued")
        try:
            handshake(pem(node, "ca.crt"), (pem(node, "node.crt"), pem(node, "node.key")), "localhost")
        except ssl.SSLError as e:
            fail(f"the re-issued node certificate does not verify with the kept CA: {e}")
    print("ok: lookup keeps the CA, certificates and token across upgrades; re-issues a missing one")


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
        "unknown worker auth mode": {"workerAuth": {"mode": "maybe"}},
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
        check_security(name, values, objects, notes, replicas)
        rendered[name] = objects
    check_specific(rendered[SINGLE])
    check_refusals(chart)
    check_lookup_keeps(chart)
    helm_cli(chart)
    print("chart checks passed")


if __name__ == "__main__":
    main()
