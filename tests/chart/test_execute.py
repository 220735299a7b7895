"""Execution tests: the rendered Job and initContainers, run as a pod would run them.

``helm template`` renders the chart; ``podsim.Pod`` materialises the ConfigMap (the
migrategate source), the Secret, the env and the mounts of one rendered pod under a
temporary root and runs the container's exact command (this venv's Python in place of
the image's) against a real throwaway PostgreSQL (the ``pg_url`` fixture). The "image"
holds tests/chart/fixtures/migrations at the path the values name. What podsim does not
simulate (users, read-only root, the Job controller...) is in its docstring; tests/e2e
runs the chart on a real cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from chartlib import DIFY_VALUES, FIXTURES, Helm, by_kind, merge, one, values
from factory import wait_until
from podsim import Outcome, Pod, pod_spec_of

MIGRATIONS = FIXTURES / "migrations"
IN_POD = "/app/migrations"
TABLES = {"customers", "orders", "invoices"}


# --------------------------------------------------------------------------- helpers

def split_url(pg_url: str) -> Dict[str, Any]:
    """The fixture's URL as an operator would configure it: a URL without the password
    (plain postgresql://, the driver is the image's business) and the password apart."""
    url = make_url(pg_url)
    plain = sa.engine.URL.create("postgresql", username=url.username, host=url.host,
                                 port=url.port, database=url.database)
    return {"url": plain.render_as_string(hide_password=False),
            "password": url.password or ""}


def db_values(pg_url: str, **over: Any) -> Dict[str, Any]:
    base = merge(values(), {
        "database": split_url(pg_url),
        "migrations": {"directory": IN_POD},
        "connectTimeout": 10,
        "gate": {"interval": 0.3, "timeout": 60},
    })
    return merge(base, over)


def parent_values(pg_url: str, **over: Any) -> Dict[str, Any]:
    mg = {"database": split_url(pg_url), "connectTimeout": 10,
          "gate": {"interval": 0.3, "timeout": 60}}
    return merge({"migrategate": mg}, over)


def make_pod(docs: List[Dict[str, Any]], obj: Dict[str, Any], tmp_path: Path,
             name: str = "pod-0", migrations: Path = MIGRATIONS, at: str = IN_POD,
             extra_objects: List[Dict[str, Any]] = ()) -> Pod:
    return Pod(objects=list(docs) + list(extra_objects), spec=pod_spec_of(obj),
               workdir=tmp_path / name, name=name, namespace="apps",
               image_files={at: migrations}, image_python="python")


def engine(pg_url: str) -> sa.engine.Engine:
    return sa.create_engine(pg_url, poolclass=sa.pool.NullPool)


def tables(pg_url: str) -> set:
    eng = engine(pg_url)
    try:
        return set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def revision(pg_url: str) -> Optional[str]:
    eng = engine(pg_url)
    try:
        with eng.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            return ",".join(sorted(r[0] for r in rows)) or None
    finally:
        eng.dispose()


def fail_job_codes(job: Dict[str, Any]) -> List[int]:
    rules = job["spec"]["podFailurePolicy"]["rules"]
    return next(r["onExitCodes"]["values"] for r in rules if r["action"] == "FailJob")


def assert_verified(out: Outcome, command: str = "upgrade") -> None:
    assert out.exit_code == 0, out
    assert out.termination_message.startswith(f"migrategate {command}: exit 0"), out


# --------------------------------------------------------------------------- the Job
# The fresh Job, its rerun, a failing revision (exit 6), an unreachable database (exit 3)
# and the password file run on a real cluster in tests/e2e/test_chart_on_cluster.py.

def test_wrong_password_fails_fast(helm: Helm, pg_url: str, tmp_path: Path) -> None:
    # tests/servers.py starts PostgreSQL with scram-sha-256 over TCP and a password
    assert split_url(pg_url)["password"], "the test server must check passwords"
    docs = helm.template(values=db_values(pg_url, database={"password": "not-the-password"}))
    job = one(docs, "Job")
    out = make_pod(docs, job, tmp_path).run("migrate")
    assert out.exit_code == 4, out
    assert out.exit_code in fail_job_codes(job)
    assert "not-the-password" not in out.logs + out.termination_message


def test_existing_secret_holding_the_whole_url(helm: Helm, pg_url: str,
                                               tmp_path: Path) -> None:
    app_secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "shop-db", "namespace": "apps"},
                  "stringData": {"dsn": pg_url}}
    vals = db_values(pg_url)
    vals["database"] = {"existingSecret": "shop-db",
                        "secretKeys": {"url": "dsn", "password": ""}}
    docs = helm.template(values=vals)
    assert not by_kind(docs, "Secret")
    out = make_pod(docs, one(docs, "Job"), tmp_path, extra_objects=[app_secret]).run("migrate")
    assert_verified(out)


def test_image_mode_runs_the_images_migrategate(helm: Helm, pg_url: str,
                                                tmp_path: Path) -> None:
    # scripts/test.sh installs the package, console script included, into this venv
    docs = helm.template(values=db_values(pg_url, code={"source": "image",
                                                         "command": ["migrategate"]}))
    assert not by_kind(docs, "ConfigMap")
    assert_verified(make_pod(docs, one(docs, "Job"), tmp_path).run("migrate"))


# --------------------------------------------------------------------------- initContainers

def test_upgrade_init_containers_of_many_replicas(helm: Helm, parent_chart: Path,
                                                  pg_url: str, tmp_path: Path) -> None:
    docs = helm.template(chart=parent_chart, values=parent_values(pg_url, **{
        "schemaGate": "upgrade",
        "migrategate": {"job": {"enabled": False},
                        "extraEnv": [{"name": "FIXTURE_MIGRATION_SLEEP", "value": "2"}]}}))
    assert not by_kind(docs, "Job")
    deploy = one(docs, "Deployment")
    replicas = deploy["spec"]["replicas"]
    assert replicas == 3
    pods = [make_pod(docs, deploy, tmp_path, name=f"shop-{i}") for i in range(replicas)]
    running = [p.start("migrategate-upgrade") for p in pods]
    outcomes = [r.wait(120) for r in running]
    for out in outcomes:
        assert_verified(out)
    assert revision(pg_url) == "c003"
    assert TABLES <= tables(pg_url)


def test_wait_gate_blocks_until_a_concurrent_upgrade_finishes(
        helm: Helm, parent_chart: Path, pg_url: str, tmp_path: Path) -> None:
    docs = helm.template(chart=parent_chart, values=parent_values(pg_url, migrategate={
        "extraEnv": [{"name": "FIXTURE_MIGRATION_SLEEP", "value": "3"}]}))
    deploy, job = one(docs, "Deployment"), one(docs, "Job")
    gate = make_pod(docs, deploy, tmp_path, name="shop-0").start("migrategate-wait")
    wait_until(lambda: "waiting for schema" in gate.logs() or not gate.running(), 60,
               what="the gate to poll the empty database")
    assert gate.running(), f"the gate let a pod start on an empty database:\n{gate.logs()}"

    upgrade = make_pod(docs, job, tmp_path, name="migrate").start("migrate")
    # c002 committed, c003 (which sleeps 3 s) runs: the upgrade is under way
    wait_until(lambda: "[2/3] c002" in upgrade.logs() or not upgrade.running(), 60,
               what="the upgrade to reach c003", explain=upgrade.logs)
    assert upgrade.running(), upgrade.logs()
    assert gate.running(), "the gate opened before the upgrade finished"
    assert revision(pg_url) == "c002"  # still unfinished after the gate was seen waiting

    up = upgrade.wait(60)
    assert_verified(up)
    out = gate.wait(30)
    assert_verified(out, "wait")
    assert revision(pg_url) == "c003"


def test_wait_gate_times_out(helm: Helm, parent_chart: Path, pg_url: str,
                             tmp_path: Path) -> None:
    docs = helm.template(chart=parent_chart, values=parent_values(pg_url, migrategate={
        "gate": {"timeout": 2}}))
    out = make_pod(docs, one(docs, "Deployment"), tmp_path).run("migrategate-wait", timeout=60)
    assert out.exit_code == 10, out


@pytest.mark.parametrize("allow_ahead, expected", [(False, 8), (True, 0)])
def test_wait_gate_after_a_rollback(helm: Helm, parent_chart: Path, pg_url: str,
                                    tmp_path: Path, allow_ahead: bool, expected: int) -> None:
    docs = helm.template(chart=parent_chart, values=parent_values(pg_url))
    assert_verified(make_pod(docs, one(docs, "Job"), tmp_path, name="new").run("migrate"))
    older = tmp_path / "older-image-migrations"
    shutil.copytree(MIGRATIONS, older, ignore=shutil.ignore_patterns("__pycache__"))
    (older / "versions" / "c003_invoices.py").unlink()  # the older image knows c001, c002

    docs = helm.template(chart=parent_chart, values=parent_values(pg_url, migrategate={
        "gate": {"allowAhead": allow_ahead}}))
    out = make_pod(docs, one(docs, "Deployment"), tmp_path, name="old",
                   migrations=older).run("migrategate-wait", timeout=60)
    assert out.exit_code == expected, out
    job = make_pod(docs, one(docs, "Job"), tmp_path, name="old-job",
                   migrations=older).run("migrate", timeout=60)
    assert job.exit_code == expected, job
    assert revision(pg_url) == "c003"


# --------------------------------------------------------------------------- Dify example
# With Dify's real api/ tree (not shipped): scripts/dify-acceptance.sh, outside the suite.

def _dify_api_settings(pg_url: str) -> List[Dict[str, Any]]:
    """The Dify release's api ConfigMap and Secret (where examples/dify/values.yaml reads its
    DB_* settings from), pointing at the test server instead of cluster DNS."""
    url = make_url(pg_url)
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dify-api"},
         "data": {"DB_TYPE": "postgresql", "DB_HOST": url.host, "DB_PORT": str(url.port),
                  "DB_DATABASE": url.database}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dify-api"},
         "stringData": {"DB_USERNAME": url.username, "DB_PASSWORD": url.password or ""}},
    ]


def test_dify_example_runs(helm: Helm, pg_url: str, tmp_path: Path) -> None:
    """examples/dify/values.yaml as written, in a stand-in Dify api image: Dify's DB_*
    variables from the api's ConfigMap and Secret, migrations at /app/api/migrations,
    preset dify."""
    # the stand-in migrations create customers/orders/invoices, not Dify's key tables
    docs = helm.template(files=[DIFY_VALUES],
                         values={"migrations": {"expectTables": sorted(TABLES)}})
    job = one(docs, "Job")
    pod = make_pod(docs, job, tmp_path, at="/app/api/migrations",
                   extra_objects=_dify_api_settings(pg_url))
    out = pod.run("migrate")
    assert_verified(out)
    assert revision(pg_url) == "c003"


def test_dify_values_file_is_plain_yaml() -> None:
    data = yaml.safe_load(DIFY_VALUES.read_text())
    assert data["preset"] == "dify"
