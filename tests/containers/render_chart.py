"""Renders the quorum Helm chart as an install would, for the container tests.

Run by `tests/containers/chart.rs` in the helm venv (helm-python-sdk, as tests/helm_chart.rs):

    python render_chart.py CHART_DIR RELEASE NAMESPACE [VALUES_JSON]

Prints one JSON object: the rendered StatefulSet as it is, and every rendered Secret with its
data decoded (the generated CA and node certificate, the worker tokens file and the bootstrap
token). The test reads command, args, env, ports, probes, security contexts and mounts from
the StatefulSet; nothing about the pods is decided here.
"""

import base64
import json
import sys

import helm_python as helm
import yaml


def main():
    chart, release, namespace = sys.argv[1:4]
    values = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    with helm.Chart.load(chart) as loaded:
        manifests = loaded.render(values, name=release, namespace=namespace, is_install=True)
    statefulset, secrets = None, {}
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            if obj["kind"] == "StatefulSet":
                statefulset = obj
            elif obj["kind"] == "Secret":
                data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
                data.update(obj.get("stringData") or {})
                secrets[obj["metadata"]["name"]] = data
    if statefulset is None:
        sys.exit("the chart rendered no StatefulSet")
    json.dump({"statefulset": statefulset, "secrets": secrets}, sys.stdout)


if __name__ == "__main__":
    main()
