"""Helm post-renderer of the e2e tier: every pod gets ``hostNetwork: true`` (machine quirk 2).

This machine has no pod network (no bridge, and the tests never create one): pods share
the node's network namespace and reach the test databases on 127.0.0.1. Reads the
rendered manifests on stdin, writes them to stdout. Helm 4 runs it as a
``postrenderer/v1`` plugin (see ``conftest.py``).
"""

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
    docs = [d for d in yaml.safe_load_all(sys.stdin.read()) if d]
    for doc in docs:
        for spec in pod_specs(doc):
            spec["hostNetwork"] = True
            spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))


if __name__ == "__main__":
    main()
