"""Checks deploy/compose against the bootstrap rule, without Docker:

    python check_compose.py COMPOSE_DIR

- nodes quorum-1..3 have node ids 1..3, their own data volume, and advertise their
  service name on the cluster port;
- all three get the same --join list: the advertised addresses in node order, so exactly
  quorum-1 (the first entry) may found the cluster;
- the load balancer publishes the worker port and balances the three nodes' worker ports,
  health checked on /readyz at the HTTP port;
- Docker waits longer than the drain grace before killing a node.

When `docker compose` is available it also runs `docker compose config`.
"""

import re
import shutil
import subprocess
import sys
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


def check_balancer(services, haproxy_cfg):
    lb = services.get("lb") or fail("no lb service")
    check("49134:49134" in lb["ports"], f"lb ports {lb['ports']}")
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
    docker_compose_config(compose_file)
    print("compose checks passed")


if __name__ == "__main__":
    main()
