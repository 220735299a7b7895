"""The chart installed by a real helm on a real Kubernetes 1.20, asserted from the API.

Every scenario gets its own namespace and database. Outcomes are read where an operator
reads them: Job conditions, pod phases, container exit codes and termination messages;
the runtime's own view (docker inspect) for the user and the read-only root.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, Dict

import pytest
import sqlalchemy as sa

import cluster as cluster_mod
from e2elib import CHART, HERE, HelmCLI, Kube, chart_values

SELECTOR = "app.kubernetes.io/name=migrategate,app.kubernetes.io/instance={}"


def revision(db: Dict[str, str]) -> Any:
    engine = sa.create_engine(db["full"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def only_job(kube: Kube, ns: str) -> Dict[str, Any]:
    jobs = kube.list(ns, "jobs")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    return jobs[0]


def only_pod(kube: Kube, ns: str, job: str) -> Dict[str, Any]:
    pods = kube.job_pods(ns, job)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


# --------------------------------------------------------------------------- Job mode

def test_job_migrates_a_fresh_database_as_non_root_with_a_read_only_root(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    out = helm.install("shop", namespace, chart_values(database, images["app1"]),
                       "--wait=watcher", "--wait-for-jobs", "--timeout", "3m")
    assert "podFailurePolicy" in out.stdout, "NOTES say what a 1.20 cluster lacks"
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"])
    assert kube.job_condition(job) == "Complete", kube.describe(namespace)
    assert "podFailurePolicy" not in job["spec"], "a 1.20 API server has no such field"
    pod = only_pod(kube, namespace, job["metadata"]["name"])
    term = kube.terminated(pod, "migrate")
    assert term["exitCode"] == 0
    assert "verified" in term["message"] and "3 revision(s) applied" in term["message"], term
    assert revision(database) == "c003"
    # what the runtime really ran: uid/gid 65532, read-only root, no capabilities
    info = kube.inspect(pod, "migrate")
    assert info["Config"]["User"] == "65532:65532", info["Config"]["User"]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert info["HostConfig"]["CapDrop"] == ["ALL"]
    assert any(o.startswith("no-new-privileges") for o in info["HostConfig"]["SecurityOpt"])
    log = kube.container_output(pod, "migrate")
    assert database["password"] not in log and database["password"] not in term["message"]


def test_upgrade_with_the_same_values_keeps_the_job_and_a_new_tag_verifies_only(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    values = chart_values(database, images["app1"])
    helm.install("shop", namespace, values, "--wait=watcher", "--wait-for-jobs")
    first = only_job(kube, namespace)
    helm.install("shop", namespace, values, "--wait=watcher", "--wait-for-jobs")
    again = only_job(kube, namespace)
    assert again["metadata"]["uid"] == first["metadata"]["uid"], "same render, same Job"
    assert len(kube.job_pods(namespace, first["metadata"]["name"])) == 1, "no new pod"

    helm.install("shop", namespace, chart_values(database, images["app2"]),
                 "--wait=watcher", "--wait-for-jobs")
    jobs = kube.until(lambda: [j for j in kube.list(namespace, "jobs")
                               if j["metadata"]["name"] != first["metadata"]["name"]],
                      60, "the new tag's Job")
    (new,) = jobs
    new = kube.wait_job(namespace, new["metadata"]["name"])
    assert kube.job_condition(new) == "Complete"
    term = kube.terminated(only_pod(kube, namespace, new["metadata"]["name"]), "migrate")
    assert term["exitCode"] == 0 and "0 revision(s) applied" in term["message"], term
    kube.until(lambda: kube.get(namespace, "jobs", first["metadata"]["name"]) is None, 60,
               "helm to delete the old Job (no longer in the release)")


def test_unreachable_database_exits_3_and_fails_the_install(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    from servers import free_port
    db = dict(database, url=re.sub(r":\d+/", f":{free_port()}/", database["url"]))
    values = chart_values(db, images["app1"], connectTimeout=3, job={"backoffLimit": 0})
    proc = helm.install("shop", namespace, values, "--wait=watcher", "--wait-for-jobs",
                        "--timeout", "90s", check=False)
    assert proc.returncode != 0, "helm install --wait-for-jobs must fail on a failed Job"
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"])
    assert kube.job_condition(job) == "Failed"
    term = kube.terminated(only_pod(kube, namespace, job["metadata"]["name"]), "migrate")
    assert term["exitCode"] == 3, term
    # the retry loop's own verdict (the hint names --connect-timeout on every failure, so
    # "connect" alone would prove nothing)
    assert "(unreachable)" in term["message"] and "unreachable after" in term["message"], term


def test_failing_revision_exits_6_and_the_chart_renders_for_the_clusters_version(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    values = chart_values(database, images["broken"], job={"backoffLimit": 1})
    proc = helm.install("shop", namespace, values, "--wait=watcher", "--wait-for-jobs",
                        "--timeout", "2m", check=False)
    assert proc.returncode != 0
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"], 180)
    assert kube.job_condition(job) == "Failed"
    # 1.20 has no podFailurePolicy: the chart leaves it out (the API would reject the Job)
    # and exit 6 is retried up to backoffLimit, each attempt failing the same way
    assert "podFailurePolicy" not in job["spec"]
    pods = kube.job_pods(namespace, job["metadata"]["name"])
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        term = kube.terminated(pod, "migrate")
        assert term["exitCode"] == 6, term
        assert "c003" in term["message"], term
    assert revision(database) == "c002", "c001 and c002 committed, c003 rolled back"


def test_password_as_a_mounted_file(helm: HelmCLI, kube: Kube, namespace: str,
                                    database: Dict[str, str], images: Dict[str, str]) -> None:
    values = chart_values(database, images["app1"], database={
        "url": database["url"], "password": database["password"], "passwordAs": "file"})
    helm.install("shop", namespace, values, "--wait=watcher", "--wait-for-jobs")
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"])
    assert kube.job_condition(job) == "Complete", kube.describe(namespace)
    pod = only_pod(kube, namespace, job["metadata"]["name"])
    env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert "MIGRATEGATE_DATABASE_PASSWORD_FILE" in env
    assert "MIGRATEGATE_DATABASE_PASSWORD" not in env
    assert revision(database) == "c003"


def test_helm_test_runs_verify_with_the_jobs_settings(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    helm.install("shop", namespace, chart_values(database, images["app1"]),
                 "--wait=watcher", "--wait-for-jobs")
    out = helm.run("test", "shop", "-n", namespace, "--timeout", "2m")
    assert "Succeeded" in out.stdout, out.stdout
    pod = kube.get(namespace, "pods", "shop-migrategate-verify")
    assert pod and pod["status"]["phase"] == "Succeeded"
    term = kube.terminated(pod, "verify")
    assert term["exitCode"] == 0 and "c003" in term["message"], term
    # a database behind the image: the test fails with verify's exit code
    engine = sa.create_engine(database["full"], poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'c002'"))
    engine.dispose()
    proc = helm.run("test", "shop", "-n", namespace, "--timeout", "2m", check=False)
    assert proc.returncode != 0
    pod = kube.get(namespace, "pods", "shop-migrategate-verify")
    assert pod["status"]["phase"] == "Failed"
    assert kube.terminated(pod, "verify")["exitCode"] == 7


def test_a_sidecar_that_keeps_running_keeps_the_job_unfinished(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    """Backs the README and NOTES: migrate exits 0, the sidecar runs on, the pod stays
    Running, and only activeDeadlineSeconds ends the Job (as Failed)."""
    sidecar = {"name": "proxy", "image": images["app1"], "imagePullPolicy": "Never",
               "command": ["python3", "-c", "import time; time.sleep(10**6)"]}
    values = chart_values(database, images["app1"], job={
        "extraContainers": [sidecar], "activeDeadlineSeconds": 25, "backoffLimit": 0})
    out = helm.install("shop", namespace, values)
    assert "completes only when EVERY container of its pod has exited" in out.stdout
    name = only_job(kube, namespace)["metadata"]["name"]

    def migrate_done() -> Any:
        pods = kube.job_pods(namespace, name)
        return pods[0] if pods and kube.terminated(pods[0], "migrate") else None

    pod = kube.until(migrate_done, 60, "migrate to exit", lambda: kube.describe(namespace))
    assert kube.terminated(pod, "migrate")["exitCode"] == 0
    assert revision(database) == "c003"
    assert pod["status"]["phase"] == "Running", "the sidecar keeps the pod running"
    assert not kube.job_condition(kube.get(namespace, "jobs", name))
    job = kube.wait_job(namespace, name, 90)
    assert kube.job_condition(job) == "Failed"
    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"][0]
    assert failed["reason"] == "DeadlineExceeded", failed


# --------------------------------------------------------------------------- hook mode

def test_hook_mode_install_upgrade_uninstall(helm: HelmCLI, kube: Kube, namespace: str,
                                             database: Dict[str, str],
                                             images: Dict[str, str]) -> None:
    values = chart_values(database, images["app1"], job={"hook": {"enabled": True}})
    out = helm.install("shop", namespace, values, "--timeout", "3m")
    assert "does not delete Helm hook resources" in out.stdout
    job = kube.get(namespace, "jobs", "shop-migrategate-migrate")
    assert job and kube.job_condition(job) == "Complete", "helm waits for a hook Job"
    first_uid = job["metadata"]["uid"]
    assert revision(database) == "c003"

    helm.install("shop", namespace, chart_values(database, images["app2"],
                                                 job={"hook": {"enabled": True}}))
    job = kube.get(namespace, "jobs", "shop-migrategate-migrate")
    assert job["metadata"]["uid"] != first_uid, "pre-upgrade hook: a new Job"
    assert kube.job_condition(job) == "Complete"
    term = kube.terminated(only_pod(kube, namespace, "shop-migrategate-migrate"), "migrate")
    assert "0 revision(s) applied" in term["message"], term

    helm.run("uninstall", "shop", "-n", namespace, "--wait", "--timeout", "2m")
    selector = SELECTOR.format("shop")
    # hook resources outlive the release, the password Secret among them (NOTES says so)
    assert kube.list(namespace, "secrets", selector), "the hook Secret is left behind"
    assert kube.list(namespace, "configmaps", selector)
    assert kube.list(namespace, "jobs", selector)
    for resource in ("pods", "jobs", "configmaps", "secrets"):  # NOTES' delete command
        kube.delete_collection(namespace, resource, selector)
    kube.until(lambda: not any(kube.list(namespace, r, selector)
                               for r in ("jobs", "configmaps", "secrets")),
               60, "the hook resources to go")


def test_plain_mode_uninstall_removes_the_password_secret(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    helm.install("shop", namespace, chart_values(database, images["app1"]),
                 "--wait=watcher", "--wait-for-jobs")
    helm.run("uninstall", "shop", "-n", namespace, "--wait", "--timeout", "2m")
    selector = SELECTOR.format("shop")
    assert not kube.list(namespace, "secrets", selector)
    assert not kube.list(namespace, "configmaps", selector)


# --------------------------------------------------------------------------- parent chart

@pytest.fixture(scope="module")
def shop_chart(helm: HelmCLI, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/e2e/charts/shop with this checkout's chart as its dependency."""
    work = tmp_path_factory.mktemp("shop") / "shop"
    shutil.copytree(HERE / "charts" / "shop", work)
    chart_yaml = work / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace(
        "file://REPLACED_BY_THE_TEST", f"file://{CHART}"))
    helm.run("dependency", "update", str(work))
    return work


def _shop_values(database: Dict[str, str], **gate: Any) -> Dict[str, Any]:
    return {"migrategate": {
        "database": {"url": database["url"], "password": database["password"]},
        "connectTimeout": 30, "gate": {"interval": 1, **gate}}}


def test_dify_like_parent_pods_start_only_after_the_job_verified(
        helm: HelmCLI, kube: Kube, namespace: str, images: Dict[str, str],
        shop_chart: Path) -> None:
    """The database comes up late: the Job waits for it, the app pods wait for the schema."""
    import servers
    base = servers.session_dir()  # traversable by the postgres user (pytest's tmp is not)
    start_late = servers.init_postgres(base / "late-pg")
    port = servers.free_port()
    database = {"url": f"postgresql://postgres@127.0.0.1:{port}/postgres",
                "password": servers.PG_PASSWORD}
    values = _shop_values(database, securityContext={"runAsUser": 1001})
    values["migrategate"]["connectTimeout"] = 120
    helm.install("shop", namespace, values, chart=shop_chart)

    def app_running() -> bool:
        return any((st.get("state") or {}).get("running")
                   for pod in kube.list(namespace, "pods", "app=shop-shop")
                   for st in pod["status"].get("containerStatuses") or [])

    kube.until(lambda: len(kube.list(namespace, "pods", "app=shop-shop")) == 2, 60,
               "the app pods to be created")
    time.sleep(8)
    assert not app_running(), "an app container started before the database existed"
    assert not kube.job_condition(only_job(kube, namespace))
    released = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    server = start_late(port)
    for child in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text(
            ).split():
        cluster_mod.register_helper(int(child), str(base))
    try:
        job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"])
        assert kube.job_condition(job) == "Complete", kube.describe(namespace)

        def ready_pods() -> Any:
            pods = kube.list(namespace, "pods", "app=shop-shop")
            ok = [p for p in pods if p["status"].get("phase") == "Running" and all(
                s.get("ready") for s in p["status"].get("containerStatuses") or [])]
            return ok if len(ok) == 2 else None

        pods = kube.until(ready_pods, 120, "2 app pods running",
                          lambda: kube.describe(namespace))
        for pod in pods:
            wait = kube.terminated(pod, "migrategate-wait")
            assert wait["exitCode"] == 0 and "c003" in wait["message"], wait
            app = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            assert app >= wait["finishedAt"] >= released, (app, wait["finishedAt"], released)
            info = kube.inspect(pod, "migrategate-wait")
            assert info["Config"]["User"].split(":")[0] == "1001"
            assert info["HostConfig"]["ReadonlyRootfs"] is True
        engine = sa.create_engine(servers.Server(
            "postgresql", "127.0.0.1", port, "postgres", servers.PG_PASSWORD, server.proc,
            server.log, server.base, "postgres").url(), poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")
                                ).scalar() == "c003"
        engine.dispose()
        helm.run("uninstall", "shop", "-n", namespace, "--wait", "--timeout", "2m")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_dify_like_gate_without_a_user_cannot_start(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str], shop_chart: Path) -> None:
    """Backs the README: image USER a name + runAsNonRoot + no runAsUser = refused."""
    helm.install("shop", namespace, _shop_values(database), chart=shop_chart)

    def refused() -> Any:
        for pod in kube.list(namespace, "pods", "app=shop-shop"):
            for st in pod["status"].get("initContainerStatuses") or []:
                waiting = st.get("state", {}).get("waiting") or {}
                if waiting.get("reason") == "CreateContainerConfigError":
                    return waiting
        return None

    waiting = kube.until(refused, 90, "CreateContainerConfigError",
                         lambda: kube.describe(namespace))
    assert "non-numeric user" in waiting["message"], waiting
