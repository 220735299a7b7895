"""Adopting migrategate on the community Dify chart, end to end against real PostgreSQL:
examples/dify/values.yaml's Job takes Dify's settings from the api's own ConfigMap/Secret, and
the gate `migrategate inject` adds to the api Deployment keeps it out until that Job is done.

The "image" is tests/fixtures/difylike (a Dify-shaped api tree: migrations/ and models/)
mounted at /app/api; podsim runs each container's exact command with this venv's Python.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from chartlib import DIFY_VALUES, ROOT, Helm, one
from podsim import Outcome, Pod, pod_spec_of

DIFYLIKE = ROOT / "tests" / "fixtures" / "difylike"
RENDERED = ROOT / "tests" / "fixtures" / "difychart" / "rendered.yaml"
KEY_TABLES = {"accounts", "tenants", "tenant_account_joins", "apps", "app_model_configs",
              "datasets"}


def api_settings(pg_url: str) -> List[Dict[str, Any]]:
    """The Dify release's api ConfigMap and Secret, pointing at the test server."""
    u = make_url(pg_url)
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dify-api"},
         "data": {"MODE": "api", "MIGRATION_ENABLED": "false", "DB_TYPE": "postgresql",
                  "DB_HOST": u.host, "DB_PORT": str(u.port), "DB_DATABASE": u.database}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dify-api"},
         "stringData": {"DB_USERNAME": u.username, "DB_PASSWORD": u.password or "",
                        "SECRET_KEY": "not-for-migrations"}},
    ]


def pod(objects: List[Dict[str, Any]], obj: Dict[str, Any], tmp_path: Path, name: str) -> Pod:
    return Pod(objects=objects, spec=pod_spec_of(obj), workdir=tmp_path / name, name=name,
               namespace="dify", image_files={"/app/api": DIFYLIKE}, image_python="python")


def tables(pg_url: str) -> set:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def verified(out: Outcome, command: str) -> bool:
    return out.exit_code == 0 and out.termination_message.startswith(
        f"migrategate {command}: exit 0")


@pytest.fixture
def migrategate_release(helm: Helm) -> List[Dict[str, Any]]:
    return helm.template(files=[DIFY_VALUES], release="migrategate", namespace="dify")


def test_example_job_reads_the_api_configmap_and_only_the_db_keys_of_its_secret(
        migrategate_release: List[Dict[str, Any]], pg_url: str, tmp_path: Path) -> None:
    job = one(migrategate_release, "Job")
    container = pod_spec_of(job)["containers"][0]
    secret_keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]
                   if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_keys == {"DB_USERNAME", "DB_PASSWORD"}
    assert container["envFrom"] == [{"configMapRef": {"name": "dify-api"}}]
    assert container["securityContext"]["runAsUser"] == 1001

    out = pod(migrategate_release + api_settings(pg_url), job, tmp_path, "job").run(
        "migrate", timeout=120)

    assert verified(out, "upgrade"), out
    assert KEY_TABLES <= tables(pg_url)


def test_injected_gate_keeps_the_api_out_until_the_job_has_migrated(
        migrategate_release: List[Dict[str, Any]], pg_url: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "migrategate", "inject", "--workload", "dify-(api|worker|beat)",
         "--preset", "dify", "--timeout", "3", "--interval", "0.5",
         # podsim re-roots paths it sees in env/args only; in a pod the preset's default is it
         "--env", "MIGRATEGATE_APP_ROOT=/app/api"],
        input=RENDERED.read_text(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    dify = [d for d in yaml.safe_load_all(proc.stdout) if d]
    api = next(d for d in dify if d["kind"] == "Deployment" and d["metadata"]["name"] ==
               "dify-api")
    for volume in pod_spec_of(api)["volumes"]:  # podsim has no PVCs; the gate mounts none
        if volume.pop("persistentVolumeClaim", None) is not None:
            volume["emptyDir"] = {}
    objects = migrategate_release + api_settings(pg_url) + [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dify-sandbox"},
         "stringData": {"API_KEY": "sandbox"}}]

    before = pod(objects, api, tmp_path, "api-0").run("migrategate-wait", timeout=60)
    assert before.exit_code == 10, before  # the schema is not there: the api stays out

    job = pod(objects, one(migrategate_release, "Job"), tmp_path, "job").run("migrate")
    assert verified(job, "upgrade"), job

    after = pod(objects, copy.deepcopy(api), tmp_path, "api-1").run("migrategate-wait",
                                                                    timeout=60)
    assert verified(after, "wait"), after
