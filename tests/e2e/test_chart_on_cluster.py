"""The chart installed by a real helm on a real Kubernetes 1.20, asserted from the API.

Every scenario gets its own namespace and database. Outcomes are read where an operator
reads them: Job conditions, pod phases, container exit codes and termination messages;
the runtime's own view (docker inspect) for the user and the read-only root.
"""

from __future__ import annotations

import json
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


def assert_hardened(pod: Dict[str, Any], container: str, info: Dict[str, Any]) -> None:
    """What the pod really runs with: from the API's pod (as admitted) and the runtime."""
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    (c,) = [c for c in spec["containers"] + spec.get("initContainers", [])
            if c["name"] == container]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert int(info["Config"]["User"].split(":")[0]) != 0
    options = host["SecurityOpt"] or []
    assert any(o.startswith("no-new-privileges") for o in options), options
    assert not any(o == "seccomp=unconfined" or o == "seccomp:unconfined" for o in options), \
        f"the runtime ran it without a seccomp profile: {options}"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert not any("serviceaccount" in d for d in mounts), sorted(mounts)
    assert "/tmp" in mounts and mounts["/tmp"]["RW"], "a writable /tmp under the read-only root"


def message_from_file(term: Dict[str, Any], command: str) -> None:
    """The termination message is migrategate's one line, not the log fallback
    (FallbackToLogsOnError shows the log's last lines when the file is empty)."""
    assert term["message"].startswith(f"migrategate {command}: exit {term['exitCode']} ("), term
    assert not re.search(r"^\d{4}-\d\d-\d\dT", term["message"], re.M), term


def _seconds(start: str, end: str) -> float:
    import datetime

    def parse(stamp: str) -> datetime.datetime:
        return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")

    return (parse(end) - parse(start)).total_seconds()


def only_pod(kube: Kube, ns: str, job: str) -> Dict[str, Any]:
    pods = kube.job_pods(ns, job)
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


# --------------------------------------------------------------------------- Job mode

def test_job_migrates_a_fresh_database_as_non_root_with_a_read_only_root(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    values = chart_values(database, images["app1"], upgrade={"showPlan": True})
    out = helm.install("shop", namespace, values,
                       "--wait=watcher", "--wait-for-jobs", "--timeout", "3m")
    assert "podFailurePolicy" in out.stdout, "NOTES say what a 1.20 cluster lacks"
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"])
    assert kube.job_condition(job) == "Complete", kube.describe(namespace)
    assert "podFailurePolicy" not in job["spec"], "a 1.20 API server has no such field"
    pod = only_pod(kube, namespace, job["metadata"]["name"])
    term = kube.terminated(pod, "migrate")
    assert term["exitCode"] == 0
    assert "verified" in term["message"] and "3 revision(s) applied" in term["message"], term
    message_from_file(term, "upgrade")
    assert revision(database) == "c003"
    # what the runtime really ran: uid/gid 65532, read-only root, no capabilities
    info = kube.inspect(pod, "migrate")
    assert info["Config"]["User"] == "65532:65532", info["Config"]["User"]
    assert_hardened(pod, "migrate", info)
    log = kube.container_output(pod, "migrate")
    assert database["password"] not in log and database["password"] not in term["message"]
    # upgrade.showPlan: the plan, in the Job's log, before the lock (its rendering child
    # writes to /tmp: the emptyDir under a read-only root)
    assert "plan: 3 revision(s) to apply" in log and "CREATE TABLE invoices" in log, log
    assert log.index("plan: 3 revision(s)") < log.index("[3/3] c003"), log


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
        message_from_file(term, "upgrade")
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
    deadline = 40
    values = chart_values(database, images["app1"], job={
        "extraContainers": [sidecar], "activeDeadlineSeconds": deadline, "backoffLimit": 0})
    out = helm.install("shop", namespace, values)
    assert "completes only when EVERY container of its pod has exited" in out.stdout
    name = only_job(kube, namespace)["metadata"]["name"]

    def migrate_done() -> Any:
        pods = kube.job_pods(namespace, name)
        return pods[0] if pods and kube.terminated(pods[0], "migrate") else None

    pod = kube.until(migrate_done, 60, "migrate to exit", lambda: kube.describe(namespace))
    assert kube.terminated(pod, "migrate")["exitCode"] == 0
    assert revision(database) == "c003"
    job = kube.wait_job(namespace, name, deadline + 60)
    # never Complete; Failed by the deadline and by nothing earlier: measured on the Job's
    # own clock (a condition, not a sleep: a slow start can't make this flaky)
    conditions = {c["type"]: c for c in job["status"]["conditions"] if c["status"] == "True"}
    assert set(conditions) == {"Failed"}, conditions
    assert conditions["Failed"]["reason"] == "DeadlineExceeded", conditions
    ran = _seconds(job["status"]["startTime"], conditions["Failed"]["lastTransitionTime"])
    assert ran >= deadline - 1, (ran, deadline)
    # the sidecar was still running when the deadline ended the pod
    sidecar_state = kube.terminated(only_pod(kube, namespace, name), "proxy")
    assert not sidecar_state or sidecar_state["exitCode"] != 0, sidecar_state


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


# --------------------------------------------------------------------------- under failure

def _app_pods(kube: Kube, ns: str) -> list:
    return kube.list(ns, "pods", "app=shop-shop")


def _gate_state(pod: Dict[str, Any]) -> Dict[str, Any]:
    """The gate's last finished run: its current state, else the one before a restart."""
    for st in pod["status"].get("initContainerStatuses") or []:
        if st["name"] == "migrategate-wait":
            return ((st.get("state") or {}).get("terminated")
                    or (st.get("lastState") or {}).get("terminated") or {})
    return {}


def _app_started(kube: Kube, ns: str) -> bool:
    return any((st.get("state") or {}).get("running")
               for pod in _app_pods(kube, ns)
               for st in pod["status"].get("containerStatuses") or [])


def _image(values: Dict[str, Any], image: str) -> None:
    repo, tag = image.rsplit(":", 1)
    values["image"] = {"repository": repo, "tag": tag, "pullPolicy": "Never"}
    values["migrategate"]["image"] = dict(values["image"])


def test_the_gate_holds_the_app_while_the_job_fails_and_says_why(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str], shop_chart: Path) -> None:
    """The schema is not coming (c003 fails, exit 6): app pods stay in Init, the gate ends
    with exit 10 after its own timeout (not sooner) and its termination message says why."""
    timeout = 12
    values = _shop_values(database, securityContext={"runAsUser": 1001}, timeout=timeout)
    _image(values, images["broken"])
    values["migrategate"]["job"] = {"backoffLimit": 0}
    helm.install("shop", namespace, values, chart=shop_chart)
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"], 120)
    assert kube.job_condition(job) == "Failed"
    term = kube.terminated(only_pod(kube, namespace, job["metadata"]["name"]), "migrate")
    assert term["exitCode"] == 6, term

    def timed_out() -> Any:
        found = [(p, _gate_state(p)) for p in _app_pods(kube, namespace)]
        return next(((p, g) for p, g in found if g.get("exitCode") == 10), None)

    pod, gate = kube.until(timed_out, 120, "a gate to time out", lambda: kube.describe(namespace))
    assert gate["message"].startswith("migrategate wait: exit 10 ("), gate
    assert "c003" in gate["message"], gate  # what it waited for
    assert _seconds(gate["startedAt"], gate["finishedAt"]) >= timeout - 1, gate
    assert pod["status"]["phase"] == "Pending" and not _app_started(kube, namespace)
    assert "migrategate-wait" in kube.describe(namespace)
    assert revision(database) == "c002"


def test_a_database_ahead_of_the_image_is_refused_unless_allowed(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str], shop_chart: Path) -> None:
    """A rollback to an older image: the database holds a revision the image lacks. The Job
    and the gates exit 8; with gate.allowAhead both pass and the app starts."""
    engine = sa.create_engine(database["full"], poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) "
                             "PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('d999')"))
    engine.dispose()
    values = _shop_values(database, securityContext={"runAsUser": 1001}, timeout=30)
    _image(values, images["shop"])
    values["migrategate"]["job"] = {"backoffLimit": 0}
    helm.install("shop", namespace, values, chart=shop_chart)
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"], 120)
    assert kube.job_condition(job) == "Failed"
    assert kube.terminated(only_pod(kube, namespace, job["metadata"]["name"]),
                           "migrate")["exitCode"] == 8
    pod, gate = kube.until(lambda: next(((p, _gate_state(p)) for p in _app_pods(kube, namespace)
                                         if _gate_state(p).get("exitCode") == 8), None),
                           90, "a gate to refuse the database", lambda: kube.describe(namespace))
    assert "d999" in gate["message"], gate
    assert not _app_started(kube, namespace)

    values["migrategate"]["gate"]["allowAhead"] = True
    helm.install("shop", namespace, values, chart=shop_chart)

    def running() -> Any:
        pods = [p for p in _app_pods(kube, namespace) if p["status"].get("phase") == "Running"]
        return pods if len(pods) == 2 else None

    for pod in kube.until(running, 120, "2 app pods running", lambda: kube.describe(namespace)):
        assert _gate_state(pod)["exitCode"] == 0
    assert revision(database) == "d999", "nothing was applied or downgraded"


def test_a_pod_deleted_mid_revision_exits_143_rolls_back_and_the_next_pod_converges(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    """SIGTERM in a pod (a deleted pod, a drained node): within the grace period the
    statement is cancelled, c003 rolled back, exit 143; the Job's next pod converges."""
    values = chart_values(database, images["app1"], job={"backoffLimit": 2},
                          extraEnv=[{"name": "FIXTURE_MIGRATION_SLEEP", "value": "20"}])
    helm.install("shop", namespace, values)
    name = only_job(kube, namespace)["metadata"]["name"]
    engine = sa.create_engine(database["full"], poolclass=sa.pool.NullPool)

    def sleeping() -> set:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
            )).scalars())

    try:
        backends = kube.until(sleeping, 90, "c003 to be running",
                              lambda: kube.describe(namespace))

        def running_pod() -> Any:
            """The pod once the kubelet has published the migrate container's id: its
            status lags the container (the migration starts within a second now)."""
            (pod,) = kube.job_pods(namespace, name)
            ids = [st.get("containerID") for st in pod["status"].get("containerStatuses") or []
                   if st["name"] == "migrate"]
            return (pod, ids[0].split("://", 1)[1]) if ids and ids[0] else None

        pod, cid = kube.until(running_pod, 30, "the kubelet to report the migrate container")
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert grace == 30
        status, body = kube.c.request(
            "DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
        assert status == 200, body

        def exited() -> Any:
            state = json.loads(kube.c.docker("inspect", cid).stdout)[0]["State"]
            return None if state["Running"] else state

        state = kube.until(exited, grace + 10, "the migrate container to exit")
        assert state["ExitCode"] == 143, state
        assert not state["OOMKilled"]
        assert revision(database) == "c002", "c003 rolled back"
        # its statement was cancelled on the server (the Job's next pod may already sleep
        # in a backend of its own)
        assert not backends & sleeping(), "the deleted pod's statement still runs"
    finally:
        engine.dispose()
    job = kube.wait_job(namespace, name, 180)
    assert kube.job_condition(job) == "Complete", kube.describe(namespace)
    assert revision(database) == "c003"


# --------------------------------------------------------------------------- inject

def test_inject_gates_a_chart_you_dont_own_until_the_job_verified(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    """A third-party chart (no migrategate in it) through the real `migrategate inject`
    post-renderer, beside a migrategate release whose Job is slow: its pod is held until
    the Job verified, and the gate ran with what it copied from the app container (env,
    envFrom with the password, securityContext) and the volumes inject added."""
    mg = chart_values(database, images["app1"],
                      extraEnv=[{"name": "FIXTURE_MIGRATION_SLEEP", "value": "12"}])
    helm.install("mg", namespace, mg)
    job_name = only_job(kube, namespace)["metadata"]["name"]
    repo, tag = images["shop"].rsplit(":", 1)
    inject = ["--workload", "tp-web", "--code-configmap", "mg-migrategate-code",
              "--python", "python3", "--interval", "1", "--timeout", "120"]
    helm.install("tp", namespace, {"image": {"repository": repo, "tag": tag},
                                   "databaseUrl": database["url"],
                                   "databasePassword": database["password"]},
                 chart=HERE / "charts" / "thirdparty", env={"E2E_INJECT": json.dumps(inject)})
    (deploy,) = kube.list(namespace, "deployments")
    gate_spec = deploy["spec"]["template"]["spec"]["initContainers"][0]
    assert gate_spec["name"] == "migrategate-wait" and gate_spec["args"][0] == "wait"
    assert gate_spec["envFrom"] == [{"secretRef": {"name": "tp-db"}}]
    job = kube.wait_job(namespace, job_name, 120)
    assert kube.job_condition(job) == "Complete", kube.describe(namespace)
    completed = job["status"]["completionTime"]

    def running() -> Any:
        pods = [p for p in kube.list(namespace, "pods", "app=tp-web")
                if p["status"].get("phase") == "Running"]
        return pods[0] if pods else None

    pod = kube.until(running, 120, "the gated pod to run", lambda: kube.describe(namespace))
    gate = _gate_state(pod)
    assert gate["exitCode"] == 0 and "c003" in gate["message"], gate
    # held: it was waiting while the slow revision ran (the Job's completionTime comes
    # after its pod exited, so a gate may pass a second before it: c003 committed first)
    migrate = kube.terminated(only_pod(kube, namespace, job_name), "migrate")
    assert gate["startedAt"] <= migrate["finishedAt"] <= completed, (gate, migrate, completed)
    gate_log = kube.container_output(pod, "migrategate-wait")
    assert "waiting for schema" in gate_log, gate_log
    web = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert web >= gate["finishedAt"], (web, gate["finishedAt"])
    info = kube.inspect(pod, "migrategate-wait")
    assert info["Config"]["User"].split(":")[0] == "1001"  # the app's securityContext
    mounts = {m["Destination"] for m in info["Mounts"]}
    assert {"/tmp", "/opt/migrategate/migrategate"} <= mounts, mounts
    log = kube.container_output(pod, "migrategate-wait")
    assert database["password"] not in log


# --------------------------------------------------------------------------- Events

def test_an_opt_in_event_tells_kubectl_describe_job_the_outcome(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    """job.events with a ServiceAccount allowed to create events: an Event on the Job says
    Migrated, the revision and the exit code; no RBAC is needed without it."""
    for path, body in (
            (f"/api/v1/namespaces/{namespace}/serviceaccounts",
             {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "migrator"}}),
            (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": {"name": "events"},
              "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}]}),
            (f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
              "metadata": {"name": "events"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                          "name": "events"},
              "subjects": [{"kind": "ServiceAccount", "name": "migrator",
                            "namespace": namespace}]})):
        status, created = kube.c.request("POST", path, body)
        assert status == 201, created
    kube.until(lambda: any(s["metadata"]["name"].startswith("migrator-token")
                           for s in kube.list(namespace, "secrets")),
               30, "the ServiceAccount's token")
    # no pod network here: the API server is on the node's loopback (a pod would use the
    # kubernetes Service's address, KUBERNETES_SERVICE_HOST)
    values = chart_values(database, images["app1"], serviceAccountName="migrator",
                          job={"events": {"enabled": True}},
                          extraEnv=[{"name": "MIGRATEGATE_KUBE_API", "value": kube.c.api}])
    helm.install("shop", namespace, values, "--wait=watcher", "--wait-for-jobs")
    job = kube.wait_job(namespace, only_job(kube, namespace)["metadata"]["name"])
    assert kube.job_condition(job) == "Complete"
    pod = only_pod(kube, namespace, job["metadata"]["name"])
    assert pod["spec"]["automountServiceAccountToken"] is True  # asked for, only then
    log = kube.container_output(pod, "migrate")
    assert "Kubernetes Event" not in log, log  # no warning: it was posted

    def ours() -> Any:
        return [e for e in kube.list(namespace, "events")
                if e["involvedObject"].get("kind") == "Job"
                and e["involvedObject"]["name"] == job["metadata"]["name"]
                and e["source"].get("component") == "migrategate"]

    (event,) = kube.until(ours, 30, "migrategate's Event")
    assert (event["reason"], event["type"]) == ("Migrated", "Normal")
    assert event["message"].startswith("migrategate upgrade: exit 0 (verified) revision c003")
    assert database["password"] not in event["message"]


def test_the_jobs_deadline_ends_a_revision_with_143_and_a_rollback(
        helm: HelmCLI, kube: Kube, namespace: str, database: Dict[str, str],
        images: Dict[str, str]) -> None:
    """job.activeDeadlineSeconds passes while c003 runs: the Job controller deletes the pod
    (SIGTERM), migrategate cancels the statement and rolls c003 back, exit 143; the Job is
    Failed with DeadlineExceeded and the database stays at c002."""
    deadline = 20
    values = chart_values(database, images["app1"],
                          job={"backoffLimit": 0, "activeDeadlineSeconds": deadline},
                          extraEnv=[{"name": "FIXTURE_MIGRATION_SLEEP", "value": "120"}])
    helm.install("shop", namespace, values)
    name = only_job(kube, namespace)["metadata"]["name"]

    def migrating() -> Any:
        pods = kube.job_pods(namespace, name)
        ids = [st.get("containerID") for p in pods
               for st in (p["status"].get("containerStatuses") or [])
               if st["name"] == "migrate" and (st.get("state") or {}).get("running")]
        return ids[0].split("://", 1)[1] if ids and ids[0] else None

    cid = kube.until(migrating, 90, "the migrate container to run")

    def exited() -> Any:
        state = json.loads(kube.c.docker("inspect", cid).stdout)[0]["State"]
        return None if state["Running"] else state

    state = kube.until(exited, deadline + 60, "the deadline to end the container")
    assert state["ExitCode"] == 143, state
    job = kube.wait_job(namespace, name, 60)
    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["reason"] == "DeadlineExceeded", job["status"]
    assert revision(database) == "c002", "c003 rolled back"
