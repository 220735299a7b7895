"""Helpers of the real-cluster tier: API reads, helm against the cluster, chart values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
ROOT = TESTS.parent
# MIGRATEGATE_E2E_CHART: a mutated copy of the chart (tests/e2e/mutations.py)
CHART = Path(os.environ.get("MIGRATEGATE_E2E_CHART") or ROOT / "charts" / "migrategate")
MIGRATIONS = TESTS / "chart" / "fixtures" / "migrations"
BROKEN_C003 = TESTS / "chart" / "fixtures" / "c003_broken.py"

for _path in (HERE, TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import cluster as cluster_mod  # noqa: E402
from factory import wait_until  # noqa: E402

APP = "migrategate-e2e/app"
SHOP = "migrategate-e2e/shop"


class Kube:
    """The few API reads and writes the scenarios need (no client library)."""

    def __init__(self, c: cluster_mod.Cluster):
        self.c = c

    def create_namespace(self, name: str) -> str:
        status, body = self.c.request("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        assert status in (201, 409), body
        # the ServiceAccount admission needs the default account (made by a controller)
        self.until(lambda: self.c.request(
            "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200,
            30, f"default service account in {name}")
        return name

    def list(self, ns: str, resource: str, selector: str = "") -> List[Dict[str, Any]]:
        group = "/apis/batch/v1" if resource == "jobs" else (
            "/apis/apps/v1" if resource in ("deployments", "replicasets") else "/api/v1")
        query = f"?labelSelector={selector}" if selector else ""
        return self.c.get(f"{group}/namespaces/{ns}/{resource}{query}")["items"]

    def get(self, ns: str, resource: str, name: str) -> Optional[Dict[str, Any]]:
        group = "/apis/batch/v1" if resource == "jobs" else (
            "/apis/apps/v1" if resource == "deployments" else "/api/v1")
        status, body = self.c.request("GET", f"{group}/namespaces/{ns}/{resource}/{name}")
        return body if status == 200 else None

    def delete_collection(self, ns: str, resource: str, selector: str) -> None:
        group = "/apis/batch/v1" if resource == "jobs" else "/api/v1"
        status, body = self.c.request(
            "DELETE", f"{group}/namespaces/{ns}/{resource}?labelSelector={selector}",
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        assert status == 200, body

    def until(self, check: Callable[[], Any], timeout: float, what: str,
              explain: Callable[[], str] = lambda: "") -> Any:
        return wait_until(check, timeout, what, interval=0.5, explain=explain)

    def job_pods(self, ns: str, job: str) -> List[Dict[str, Any]]:
        return self.list(ns, "pods", f"job-name={job}")

    def job_condition(self, job: Dict[str, Any]) -> Optional[str]:
        for cond in (job.get("status") or {}).get("conditions") or []:
            if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                return cond["type"]
        return None

    def wait_job(self, ns: str, name: str, timeout: float = 120) -> Dict[str, Any]:
        def done() -> Optional[Dict[str, Any]]:
            job = self.get(ns, "jobs", name)
            return job if job and self.job_condition(job) else None
        return self.until(done, timeout, f"job {ns}/{name} to finish",
                          lambda: self.describe(ns))

    def terminated(self, pod: Dict[str, Any], container: str = "") -> Dict[str, Any]:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        statuses += (pod.get("status") or {}).get("initContainerStatuses") or []
        for st in statuses:
            if not container or st["name"] == container:
                term = st.get("state", {}).get("terminated")
                if term:
                    return term
        return {}

    def container_output(self, pod: Dict[str, Any], container: str) -> str:
        """`docker logs` of a pod's container (kubectl logs cannot reach a loopback node)."""
        ids = [st.get("containerID", "") for st in
               (pod["status"].get("containerStatuses") or [])
               + (pod["status"].get("initContainerStatuses") or []) if st["name"] == container]
        if not ids or not ids[0]:
            return "(no container)"
        cid = ids[0].split("://", 1)[1]
        proc = self.c.docker("logs", cid, check=False)
        return (proc.stdout + proc.stderr).decode(errors="replace")

    def inspect(self, pod: Dict[str, Any], container: str) -> Dict[str, Any]:
        """The runtime's view of a container (docker inspect): user, read-only root..."""
        for st in (pod["status"].get("containerStatuses") or []) + \
                (pod["status"].get("initContainerStatuses") or []):
            if st["name"] == container and st.get("containerID"):
                cid = st["containerID"].split("://", 1)[1]
                return json.loads(self.c.docker("inspect", cid).stdout)[0]
        raise AssertionError(f"no container {container} in {pod['metadata']['name']}")

    def describe(self, ns: str) -> str:
        lines = []
        for job in self.list(ns, "jobs"):
            lines.append(f"job {job['metadata']['name']}: {job.get('status')}")
        for pod in self.list(ns, "pods"):
            lines.append(f"pod {pod['metadata']['name']}: {pod.get('status', {}).get('phase')} "
                         f"{pod.get('status', {}).get('containerStatuses')} "
                         f"{pod.get('status', {}).get('initContainerStatuses')}")
        for ev in self.list(ns, "events")[-15:]:
            lines.append(f"event {ev.get('reason')}: {ev.get('message')}")
        return "\n".join(lines)


class HelmCLI:
    """helm v4 against the e2e cluster, every render through the hostNetwork post-renderer."""

    def __init__(self, binary: Path, c: cluster_mod.Cluster, plugins: Path, work: Path):
        self.binary = binary
        self.env = dict(os.environ, KUBECONFIG=str(c.kubeconfig), HELM_PLUGINS=str(plugins),
                        HELM_CACHE_HOME=str(work / "cache"),
                        HELM_CONFIG_HOME=str(work / "config"),
                        HELM_DATA_HOME=str(work / "data"))
        self.work = work
        self._n = 0

    def values_file(self, values: Dict[str, Any]) -> str:
        self._n += 1
        path = self.work / f"values-{self._n}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return str(path)

    def run(self, *args: str, check: bool = True, timeout: float = 300,
            env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        post = ["--post-renderer", "hostnet"] if args and args[0] in (
            "install", "upgrade", "template") else []
        proc = subprocess.run([str(self.binary), *args, *post], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def install(self, release: str, ns: str, values: Dict[str, Any], *extra: str,
                chart: Path = CHART, check: bool = True,
                env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        return self.run("upgrade", "--install", release, str(chart), "-n", ns,
                        "-f", self.values_file(values), *extra, check=check, env=env)


def chart_values(db: Dict[str, str], image: str, **over: Any) -> Dict[str, Any]:
    repo, tag = image.rsplit(":", 1)
    values: Dict[str, Any] = {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "code": {"python": "python3"},
        "migrations": {"directory": "/app/migrations"},
        "database": {"url": db["url"], "password": db["password"]},
        "connectTimeout": 20,
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values
