"""Checks deploy/compose against the bootstrap rule, without Docker:

    python check_compose.py COMPOSE_DIR

- nodes quorum-1..3 have node ids 1..3, their own data volume, and advertise their
  service name on the cluster port;
- all three get the same --join list: the advertised addresses in node order, so exactly
  quorum-1 (the first entry) may found the cluster;
- the load balancer publishes the worker port and balances the three nodes' worker ports,
  health checked on /readyz at the HTTP port;
- Docker waits longer than the drain grace before killing a node;
- secure by default: a one-shot `certs` service (the image's `certs-init` stage) makes the
  certificates before any node starts; every node listens for peers beyond loopback only
  with `--certs-dir` pointing into the read-only certificates volume, never sees the CA
  key, and its health check presents its own certificate;
- init-certs.sh itself, run with the real `quorum` binary (`QUORUM_BIN`) on temporary
  directories: a directory per node with ca.crt, node.crt (valid for the node's service
  name) and node.key, the admin's client certificate, no CA key outside the CA directory,
  and nothing changed by a second run.

When `docker compose` is available it also runs `docker compose config`.
"""

import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from verdict import check, fail

NODES = ["quorum-1", "quorum-2", "quorum-3"]


def flag(command, name):
    """The value after `--name` in a command list, or None."""
    if f"--{name}" in command:
        return command[command.index(f"--{name}") + 1]
    return None


def seconds(duration):
    match = re.fullmatch(r"(\d+)s", str(duration))
    check(match, f"duration {duration!r} is not in seconds")
    return int(match.group(1))


def check_nodes(services):
    advertised, joins, volumes = [], set(), set()
    for number, name in enumerate(NODES, start=1):
        node = services.get(name) or fail(f"no service {name}")
        command = node["command"]
        check(command[0] == "serve", f"{name}: command {command}")
        check(flag(command, "node-id") == str(number), f"{name}: --node-id")
        check(flag(command, "data-dir") == "/data", f"{name}: --data-dir")
        check(flag(command, "advertise") == f"{name}:50051", f"{name}: --advertise")
        advertised.append(flag(command, "advertise"))
        joins.add(node["environment"]["QUORUM_JOIN"])
        mounts = [v for v in node["volumes"] if v.endswith(":/data")]
        check(len(mounts) == 1, f"{name}: one /data volume")
        volumes.add(mounts[0])
        drain_s = int(node["environment"]["QUORUM_DRAIN_GRACE_MS"]) / 1000
        check(seconds(node["stop_grace_period"]) > drain_s, f"{name}: stop_grace_period <= drain grace")
    check(len(joins) == 1, f"the nodes' join lists differ: {joins}")
    check(joins.pop() == ",".join(advertised), "the join list is not the advertised addresses in node order")
    check(len(volumes) == len(NODES), f"nodes share a data volume: {volumes}")
    print("ok: three nodes, one shared ordered join list, a volume each")


def check_certs_service(services, dockerfile):
    certs = services.get("certs") or fail("no certs service")
    build = certs.get("build", {})
    check(build.get("target") == "certs-init", f"certs: build target {build}")
    check(build.get("dockerfile") == "deploy/docker/Dockerfile", f"certs: dockerfile {build}")
    # The base is a build argument whose default is the distroless debug image.
    check(
        re.search(r"^ARG CERTS_INIT_IMAGE=gcr.io/distroless/cc-debian12:debug-nonroot$", dockerfile, re.M)
        and re.search(r"^FROM \$\{CERTS_INIT_IMAGE\} AS certs-init$", dockerfile, re.M),
        "Dockerfile: no certs-init stage on the distroless debug base",
    )
    check("init-certs.sh" in dockerfile, "Dockerfile: certs-init does not run init-certs.sh")
    check(certs.get("restart") == "no", f"certs: restart {certs.get('restart')}")
    check(certs["environment"].get("QUORUM_NODES", "").split() == NODES, f"certs: QUORUM_NODES {certs['environment']}")
    check(sorted(certs["volumes"]) == ["quorum-ca:/ca", "quorum-certs:/certs"], f"certs: volumes {certs['volumes']}")
    for name in NODES:
        node = services[name]
        command = node["command"]
        depends = node.get("depends_on", {})
        check(
            depends.get("certs", {}).get("condition") == "service_completed_successfully",
            f"{name}: does not wait for the certs service: {depends}",
        )
        listen = node["environment"].get("QUORUM_CLUSTER_LISTEN") or flag(command, "cluster-listen")
        check(listen == "0.0.0.0:50051", f"{name}: cluster listen {listen}")
        check("--insecure" not in command, f"{name}: runs --insecure")
        check(flag(command, "certs-dir") == f"/certs/{name}", f"{name}: --certs-dir {flag(command, 'certs-dir')}")
        check("quorum-certs:/certs:ro" in node["volumes"], f"{name}: certificates not mounted read-only")
        check(not any(v.startswith("quorum-ca:") for v in node["volumes"]), f"{name}: mounts the CA key")
        test = node.get("healthcheck", {}).get("test", [])
        check(test[:4] == ["CMD", "/usr/local/bin/quorum", "cluster", "status"], f"{name}: health check {test}")
        check(
            flag(test, "certs-dir") == f"/certs/{name}" and flag(test, "client") == "node",
            f"{name}: health check without its certificate: {test}",
        )
    print("ok: a certs init service; every node waits for it and serves mTLS from its own certs")


def san(path):
    """The subjectAltName entries of a PEM certificate, as (type, value) pairs."""
    return set(ssl._ssl._test_decode_cert(str(path)).get("subjectAltName", ()))


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_init_script(script):
    binary = os.environ.get("QUORUM_BIN")
    if not binary:
        print("note: QUORUM_BIN not set; init-certs.sh not run")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = dict(
            os.environ,
            QUORUM=binary,
            CA_DIR=str(root / "ca"),
            CERTS_DIR=str(root / "certs"),
            QUORUM_NODES=" ".join(NODES),
        )
        for run in ("first", "second"):
            result = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=120)
            check(result.returncode == 0, f"init-certs.sh ({run} run): {result.stdout}{result.stderr}")
            if run == "first":
                before = snapshot(root)
        check(snapshot(root) == before, "init-certs.sh changed existing certificates on its second run")
        certs = root / "certs"
        check(sorted(p.name for p in (root / "ca").iterdir()) == ["ca.crt", "ca.key"], "CA directory")
        check(not list(certs.rglob("ca.key")), "the CA key reached the certificates volume")
        for name in NODES:
            files = sorted(p.name for p in (certs / name).iterdir())
            check(files == ["ca.crt", "node.crt", "node.key"], f"{name}: files {files}")
            names = san(certs / name / "node.crt")
            check(("DNS", name) in names, f"{name}: node.crt not valid for its service name: {names}")
            check((certs / name / "node.key").stat().st_mode & 0o077 == 0, f"{name}: node.key readable by others")
            check((certs / name / "ca.crt").read_bytes() == (root / "ca" / "ca.crt").read_bytes(), f"{name}: ca.crt")
        files = sorted(p.name for p in (certs / "admin").iterdir())
        check(files == ["ca.crt", "client.admin.crt", "client.admin.key"], f"admin: files {files}")
    print("ok: init-certs.sh makes the CA, a certificate per node and the admin's, once")


def check_balancer(services, haproxy_cfg):
    lb = services.get("lb") or fail("no lb service")
    check("${QUORUM_LB_PUBLISH:-49134}:49134" in lb["ports"], f"lb ports {lb['ports']}")
    check("./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"], "lb mounts haproxy.cfg")
    lines = [line.split("#")[0].strip() for line in haproxy_cfg.splitlines()]
    check("mode tcp" in lines, "haproxy: mode tcp")
    check("http-check send meth GET uri /readyz" in lines, "haproxy: /readyz check")
    check("http-check expect status 200" in lines, "haproxy: expects 200")
    default_server = next((line for line in lines if line.startswith("default-server")), "")
    check("check port 49180" in default_server, f"haproxy: checks the HTTP port: {default_server}")
    servers = [line.split()[1:3] for line in lines if line.startswith("server ")]
    check(servers == [[n, f"{n}:49134"] for n in NODES], f"haproxy servers {servers}")
    print("ok: HAProxy balances the worker port over the three nodes, checked on /readyz")


def docker_compose_config(path):
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        print("note: no `docker compose`; `docker compose config` not run")
        return
    result = subprocess.run([docker, "compose", "-f", str(path), "config", "--quiet"], capture_output=True, text=True)
    check(result.returncode == 0, f"docker compose config: {result.stderr}")
    print("ok: docker compose config")


def main():
    directory = Path(sys.argv[1])
    compose_file = directory / "docker-compose.yml"
    # safe_load resolves the x-quorum anchor and its `<<` merges as Compose does.
    services = yaml.safe_load(compose_file.read_text())["services"]
    check_nodes(services)
    check_balancer(services, (directory / "haproxy.cfg").read_text())
    dockerfile = (directory / ".." / "docker" / "Dockerfile").read_text()
    check_certs_service(services, dockerfile)
    check_init_script(directory / "init-certs.sh")
    docker_compose_config(compose_file)
    print("compose checks passed")


if __name__ == "__main__":
    main()
