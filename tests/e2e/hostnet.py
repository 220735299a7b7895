"""Helm post-renderer of the e2e tier: every pod gets ``hostNetwork: true`` (machine quirk 2).

This machine has no pod network (no bridge, and the tests never create one): pods share
the node's network namespace and reach the test databases on 127.0.0.1. Reads the
rendered manifests on stdin, writes them to stdout. Helm 4 runs it as a
``postrenderer/v1`` plugin (see ``conftest.py``).

With ``E2E_INJECT`` (a JSON list of arguments) the manifests first go through the real
``migrategate inject`` post-renderer with those arguments, as an operator's would.
"""

import json
import os
import subprocess
import sys

import yaml


def pod_specs(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        yield spec
    elif kind in ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        yield spec["template"]["spec"]


def main() -> None:
    text = sys.stdin.read()
    inject = os.environ.get("E2E_INJECT")
    if inject:
        proc = subprocess.run([sys.executable, "-m", "migrategate", "inject",
                               *json.loads(inject)], input=text, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            sys.exit(proc.returncode)
        sys.stderr.write(proc.stderr)
        text = proc.stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        for spec in pod_specs(doc):
            spec["hostNetwork"] = True
            spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


if __name__ == "__main__":
    main()
