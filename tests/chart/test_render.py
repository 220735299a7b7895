"""The chart rendered by a real helm v4: lint, every mode, the schema, Kubernetes' schemas."""

from __future__ import annotations

import base64
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml

from chartlib import (
    BASE_VALUES,
    CHART,
    DIFY_VALUES,
    LINT_VALUES,
    ROOT,
    Helm,
    by_kind,
    merge,
    one,
    values,
)

SRC = ROOT / "src" / "migrategate"
PASSWORD = "s3cr3t-Pa55word"


from migrategate.inject import NOT_SHIPPED as OPERATOR_SIDE  # noqa: E402


def source_files() -> Dict[str, str]:
    return {p.relative_to(SRC).as_posix(): p.read_text()
            for p in sorted(SRC.rglob("*.py"))
            if "__pycache__" not in p.parts and p.relative_to(SRC).as_posix() not in OPERATOR_SIDE}


def shipped_source(cm: Dict[str, Any]) -> Dict[str, str]:
    """The code ConfigMap's files, decoded: key -> text (base64 in binaryData)."""
    assert not cm.get("data"), "the source is in binaryData (no '---' text lines)"
    return {k: base64.b64decode(v).decode() for k, v in cm["binaryData"].items()}


def pod_spec(obj: Dict[str, Any]) -> Dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def containers(obj: Dict[str, Any]) -> List[Dict[str, Any]]:
    spec = pod_spec(obj)
    return (spec.get("initContainers") or []) + spec["containers"]


def env_of(container: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def job_name(helm: Helm, vals: Dict[str, Any], **kw: Any) -> str:
    return one(helm.template(values=vals, **kw), "Job")["metadata"]["name"]


# --------------------------------------------------------------------------- helm itself

def test_helm_is_a_real_v4(helm: Helm) -> None:
    out = helm.run("version", "--short").stdout
    assert out.startswith("v4."), out


def test_lint_strict(helm: Helm) -> None:
    out = helm.run("lint", "--strict", str(CHART), "-f", str(LINT_VALUES)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_lint_strict_dify_example(helm: Helm) -> None:
    out = helm.run("lint", "--strict", str(CHART), "-f", str(DIFY_VALUES)).stdout
    assert "0 chart(s) failed" in out


def test_lint_parent_chart(helm: Helm, parent_chart: Path) -> None:
    out = helm.run("lint", "--strict", "--with-subcharts", str(parent_chart)).stdout
    assert "0 chart(s) failed" in out


# --------------------------------------------------------------------------- the source

def test_configmap_ships_the_real_source(helm: Helm) -> None:
    docs = helm.template(values=values())
    cm = one(docs, "ConfigMap")
    job = one(docs, "Job")
    vol = next(v for v in pod_spec(job)["volumes"] if v["name"] == "migrategate-code")
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    # the volume's items rebuild the package tree from the flat keys
    shipped = shipped_source(cm)
    tree = {item["path"]: shipped[item["key"]] for item in vol["configMap"]["items"]}
    assert tree == source_files()
    assert set(shipped) == {i["key"] for i in vol["configMap"]["items"]}
    assert "presets/__init__.py" in tree and "__main__.py" in tree
    # the API server refuses a ConfigMap over 1 MiB; 768 KiB keeps a quarter of it free
    # (675 KiB with issue 22's journal and issue 25's spare: code.source=image is the way
    # out when the source outgrows it)
    size = len(json.dumps(cm).encode())
    assert size < 768 * 1024, f"ConfigMap is {size} bytes; the API limit is 1 MiB"


def test_the_release_record_stays_far_under_its_limit(helm: Helm) -> None:
    """Helm keeps each release (the chart's files, the rendered manifest) gzipped and
    base64-encoded in one Secret, which the API server caps at 1 MiB: the source ships
    twice in it (the chart's files/, the ConfigMap). Estimated the way Helm builds it."""
    import gzip

    manifest = json.dumps(helm.template(values=values())).encode()
    paths = [p for p in sorted(CHART.rglob("*")) if p.is_file()]  # files/ is a symlink
    chart = b"".join(p.read_bytes() for p in paths) + "".join(
        source_files().values()).encode() + (SRC / "inject.py").read_bytes()
    record = json.dumps({"manifest": manifest.decode(),
                         "files": base64.b64encode(chart).decode()}).encode()
    size = len(base64.b64encode(gzip.compress(record)))
    assert size < 768 * 1024, f"the release record would be {size} bytes of 1 MiB"


def test_chart_source_is_a_symlink_to_src() -> None:
    link = CHART / "files" / "migrategate"
    assert link.is_symlink(), "one copy of the source in git: files/migrategate -> src"
    assert link.resolve() == SRC.resolve()


def test_packaged_chart_carries_the_source(helm: Helm, packaged_chart: Path) -> None:
    with tarfile.open(packaged_chart) as tar:
        names = tar.getnames()
        packaged = {n.split("files/migrategate/", 1)[1]: tar.extractfile(n).read().decode()
                    for n in names if "/files/migrategate/" in n}
    # real files, no .pyc, no py.typed; the post-renderer too (not shipped to pods)
    assert packaged == {**source_files(), **{n: (SRC / n).read_text() for n in OPERATOR_SIDE}}
    assert not any("/ci/" in n for n in names)
    docs = helm.template(chart=packaged_chart, values=values())
    assert shipped_source(one(docs, "ConfigMap"))["cli.py"] == (SRC / "cli.py").read_text()


# --------------------------------------------------------------------------- Job mode

def test_default_is_a_plain_job(helm: Helm) -> None:
    docs = helm.template(values=values())
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Job", "Pod", "Secret"]
    assert one(docs, "Pod")["metadata"]["annotations"]["helm.sh/hook"] == "test"
    job = one(docs, "Job")
    annotations = job["metadata"].get("annotations") or {}
    assert not any(k.startswith("helm.sh/hook") for k in annotations)
    for d in docs:
        if d["kind"] == "Pod":
            continue  # the `helm test` pod, a test hook by nature
        annotations = d["metadata"].get("annotations") or {}
        assert not any(k.startswith("helm.sh/hook") for k in annotations)
    spec = job["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["activeDeadlineSeconds"] >= 6 * 3600, "long migrations must not be killed"
    assert "ttlSecondsAfterFinished" not in spec, "a TTL would delete failed Jobs and their logs"
    pod = pod_spec(job)
    assert pod["restartPolicy"] == "Never"  # each failed attempt leaves its pod and log
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "migrategate"]
    assert c["args"][0] == "upgrade"
    assert c["image"] == "ghcr.io/example/app:1.0.0"
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "migrategate"
    assert labels["app.kubernetes.io/instance"] == "shop"
    assert labels["app.kubernetes.io/component"] == "migrate"
    assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_pod_failure_policy_fails_fast_on_unfixable_exit_codes(helm: Helm) -> None:
    job = one(helm.template(values=values(job={"podFailurePolicy": {
        "failJobOnExitCodes": [9, 2, 6, 10]}})), "Job")
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["onExitCodes"] == {"containerName": "migrate", "operator": "In",
                                       "values": [2, 6, 9, 10]}  # sorted, as the API demands
    off = one(helm.template(values=values(job={"podFailurePolicy": {"enabled": False}})), "Job")
    assert "podFailurePolicy" not in off["spec"]


def test_ttl_and_deadline_are_settable(helm: Helm) -> None:
    spec = one(helm.template(values=values(job={
        "ttlSecondsAfterFinished": 604800, "activeDeadlineSeconds": None, "backoffLimit": 0})),
        "Job")["spec"]
    assert spec["ttlSecondsAfterFinished"] == 604800
    assert "activeDeadlineSeconds" not in spec
    assert spec["backoffLimit"] == 0


def test_job_name_is_a_hash_of_the_render(helm: Helm) -> None:
    base = values()
    first = job_name(helm, base)
    assert re.fullmatch(r"shop-migrategate-migrate-[0-9a-f]{8}", first)
    assert job_name(helm, base) == first, "an unchanged render must give the same Job"
    assert job_name(helm, merge(base, {"image": {"tag": "1.0.1"}})) != first
    assert job_name(helm, merge(base, {"upgrade": {"lockTimeout": 30}})) != first
    assert job_name(helm, merge(base, {"job": {"nameSuffixOverride": "rerun-2"}})) \
        == "shop-migrategate-migrate-rerun-2"
    long = job_name(helm, base, release="a-very-long-release-name-for-a-very-long-app-x")
    assert len(long) <= 63 and re.search(r"-migrate-[0-9a-f]{8}$", long)


def test_job_name_changes_with_chart_version_and_source(helm: Helm, tmp_path: Path) -> None:
    base = values()
    first = job_name(helm, base)
    copy = tmp_path / "migrategate"
    shutil.copytree(CHART, copy, symlinks=False)  # dereferences files/migrategate
    assert job_name(helm, base, chart=copy) == first
    chart_yaml = copy / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace("version: 0.1.0", "version: 0.1.1"))
    bumped = job_name(helm, base, chart=copy)
    assert bumped != first
    cli = copy / "files" / "migrategate" / "cli.py"
    cli.write_text(cli.read_text() + "\n# changed\n")
    assert job_name(helm, base, chart=copy) not in (first, bumped)


def test_hook_mode(helm: Helm) -> None:
    docs = helm.template(values=values(job={"hook": {"enabled": True, "weight": 5}}))
    job = one(docs, "Job")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert ann["helm.sh/hook-weight"] == "5"
    # never hook-succeeded / hook-failed: a failed Job and its logs stay until the next run
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation"
    # Helm 4 (HIP-0019) prints a failing hook's log itself
    assert ann["helm.sh/hook-output-log-policy"] == "hook-failed"
    assert job["metadata"]["name"] == "shop-migrategate-migrate"
    # pre-install hooks run before ordinary resources exist: ours become earlier hooks
    for kind in ("ConfigMap", "Secret"):
        a = one(docs, kind)["metadata"]["annotations"]
        assert a["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(a["helm.sh/hook-weight"]) < 5
        assert a["helm.sh/hook-delete-policy"] == "before-hook-creation"


def test_job_disabled_renders_only_what_init_containers_need(helm: Helm) -> None:
    docs = helm.template(values=values(job={"enabled": False}))
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Pod", "Secret"]


def test_image_mode(helm: Helm) -> None:
    docs = helm.template(values=values(code={"source": "image",
                                              "command": ["/venv/bin/migrategate"]}))
    assert not by_kind(docs, "ConfigMap")
    (c,) = pod_spec(one(docs, "Job"))["containers"]
    assert c["command"] == ["/venv/bin/migrategate"]
    assert "PYTHONPATH" not in env_of(c)
    assert {m["name"] for m in c["volumeMounts"]} == {"migrategate-tmp"}


def test_python_command_and_pythonpath_are_values(helm: Helm) -> None:
    job = one(helm.template(values=values(code={
        "python": "/app/.venv/bin/python", "mountPath": "/mg",
        "extraPythonPath": ["/app/src"]})), "Job")
    (c,) = pod_spec(job)["containers"]
    assert c["command"] == ["/app/.venv/bin/python", "-m", "migrategate"]
    assert env_of(c)["PYTHONPATH"]["value"] == "/mg:/app/src"
    assert {"name": "migrategate-code", "mountPath": "/mg/migrategate", "readOnly": True} \
        in c["volumeMounts"]


def test_settings_reach_the_container(helm: Helm) -> None:
    job = one(helm.template(values=values(
        migrations={"directory": "/app/m", "appRoot": "/app", "target": "c002",
                    "expectTables": ["customers", "public.orders"], "versionTable": "av"},
        preset="dify", connectTimeout=42, lockName="shop-lock",
        upgrade={"lockTimeout": 77, "pgLockTimeout": 5, "extraArgs": ["--json"]},
        extraEnv=[{"name": "FOO", "value": "bar"}],
        extraEnvFrom=[{"configMapRef": {"name": "app-env"}}],
        resources={"requests": {"cpu": "50m", "memory": "128Mi"}},
        nodeSelector={"pool": "jobs"}, tolerations=[{"key": "k", "operator": "Exists"}],
        imagePullSecrets=[{"name": "regcred"}], priorityClassName="low",
    )), "Job")
    (c,) = pod_spec(job)["containers"]
    env = {k: v.get("value") for k, v in env_of(c).items()}
    assert env["MIGRATEGATE_MIGRATIONS"] == "/app/m"
    assert env["MIGRATEGATE_APP_ROOT"] == "/app"
    assert env["MIGRATEGATE_TARGET"] == "c002"
    assert env["MIGRATEGATE_EXPECT_TABLES"] == "customers,public.orders"
    assert env["MIGRATEGATE_VERSION_TABLE"] == "av"
    assert env["MIGRATEGATE_PRESET"] == "dify"
    assert env["MIGRATEGATE_CONNECT_TIMEOUT"] == "42"
    assert env["MIGRATEGATE_LOCK_NAME"] == "shop-lock"
    assert env["FOO"] == "bar"
    assert c["args"] == ["upgrade", "--lock-timeout", "77", "--pg-lock-timeout", "5", "--json"]
    assert c["envFrom"] == [{"configMapRef": {"name": "app-env"}}]
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}}
    spec = pod_spec(job)
    assert spec["nodeSelector"] == {"pool": "jobs"}
    assert spec["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["priorityClassName"] == "low"


def test_image_digest_wins(helm: Helm) -> None:
    digest = "sha256:" + "a" * 64
    job = one(helm.template(values=values(image={"digest": digest})), "Job")
    assert pod_spec(job)["containers"][0]["image"] == f"ghcr.io/example/app@{digest}"


# --------------------------------------------------------------------------- security

def test_security_context(helm: Helm) -> None:
    job = one(helm.template(values=values()), "Job")
    spec = pod_spec(job)
    assert spec["automountServiceAccountToken"] is False
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = env_of(c)
    assert env["MIGRATEGATE_TERMINATION_LOG"]["value"] == c["terminationMessagePath"]
    assert env["PYTHONDONTWRITEBYTECODE"]["value"] == "1"
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    vol = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in vol


def _walk_strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_strings(v)
    elif isinstance(obj, str):
        yield obj


@pytest.mark.parametrize("mode", ["env", "file"])
def test_password_is_only_a_secret_reference(helm: Helm, mode: str) -> None:
    docs = helm.template(values=values(database={"password": PASSWORD, "passwordAs": mode}))
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["password"]).decode() == PASSWORD
    job = one(docs, "Job")
    assert not any(PASSWORD in s for s in _walk_strings(job))
    assert not any(base64.b64encode(PASSWORD.encode()).decode() in s for s in _walk_strings(job))
    (c,) = pod_spec(job)["containers"]
    env = env_of(c)
    name = secret["metadata"]["name"]
    if mode == "env":
        assert env["MIGRATEGATE_DATABASE_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": name, "key": "password"}}
    else:
        assert env["MIGRATEGATE_DATABASE_PASSWORD_FILE"]["value"] == \
            "/etc/migrategate/database/password"
        vol = next(v for v in pod_spec(job)["volumes"] if v["name"] == "migrategate-database")
        assert vol["secret"]["secretName"] == name
        assert vol["secret"]["defaultMode"] == 0o440
        assert "MIGRATEGATE_DATABASE_PASSWORD" not in env


def test_existing_secret_with_configurable_keys(helm: Helm) -> None:
    vals = merge(values(), {"database": {"password": "", "url": "",
                                        "existingSecret": "shop-db",
                                        "secretKeys": {"password": "pw", "url": "dsn"},
                                        "passwordEnvName": "DB_PASSWORD"}})
    docs = helm.template(values=vals)
    assert not by_kind(docs, "Secret"), "an existing Secret is referenced, not created"
    env = env_of(pod_spec(one(docs, "Job"))["containers"][0])
    assert env["MIGRATEGATE_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "shop-db", "key": "dsn"}}
    assert env["DB_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": "shop-db", "key": "pw"}}


# --------------------------------------------------------------------------- rejected values

@pytest.mark.parametrize("bad, message", [
    ({"colour": "blue"}, "additional properties 'colour' not allowed"),
    ({"job": {"backofLimit": 3}}, "at '/job': additional properties 'backofLimit' not allowed"),
    ({"job": {"backoffLimit": "three"}}, "at '/job/backoffLimit': got string, want integer"),
    ({"job": {"backoffLimit": -1}}, "at '/job/backoffLimit'"),
    ({"gate": {"allowAhead": "yes"}}, "at '/gate/allowAhead': got string, want boolean"),
    ({"code": {"source": "pip"}}, "at '/code/source': value must be one of 'configMap', 'image'"),
    ({"database": {"passwordAs": "literal"}}, "at '/database/passwordAs'"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"preset": "rails"}, "at '/preset'"),
    ({"migrations": {"directory": "relative/path"}}, "at '/migrations/directory'"),
    ({"containerSecurityContext": {"readOnlyRootFS": True}},
     "at '/containerSecurityContext': additional properties 'readOnlyRootFS' not allowed"),
    ({"resources": {"limits": {"memory": "lots"}}}, "at '/resources/limits/memory'"),
    ({"job": {"hook": {"events": ["pre-delete"]}}}, "at '/job/hook/events/0'"),
    ({"extraEnv": [{"name": "A", "valu": "x"}]}, "at '/extraEnv/0'"),
])
def test_schema_rejects_bad_values(helm: Helm, bad: Dict[str, Any], message: str) -> None:
    err = helm.template_error(values=merge(values(), bad))
    assert "values don't meet the specifications of the schema" in err
    assert message in err, err


@pytest.mark.parametrize("bad, message", [
    ({"database": {"url": "postgresql://app:hunter2@db/app"}},
     "database.url must not contain a password"),
    ({"database": {"existingSecret": "db", "password": "x"}},
     "database.password and database.existingSecret are both set"),
    ({"database": {"url": "", "password": ""}}, "no database settings"),
    ({"image": {"repository": ""}}, "image.repository is required"),
    ({"migrations": {"config": "/app/alembic.ini"}},
     "migrations.directory and migrations.config are both set"),
    ({"database": {"url": "", "secretKeys": {"url": "dsn"}}},
     "database.secretKeys.url needs database.existingSecret"),
])
def test_template_rejects_inconsistent_values(helm: Helm, bad: Dict[str, Any],
                                              message: str) -> None:
    err = helm.template_error(values=merge(values(), bad))
    assert message in err, err
    assert "hunter2" not in err


# --------------------------------------------------------------------------- Kubernetes schemas

MODES: List[Tuple[str, Dict[str, Any]]] = [
    ("job", {}),
    ("hook", {"job": {"hook": {"enabled": True}}}),
    ("password-file", {"database": {"passwordAs": "file"}}),
    ("image", {"code": {"source": "image"}}),
    ("ttl", {"job": {"ttlSecondsAfterFinished": 3600}}),
    ("existing-secret", {"database": {"password": "", "existingSecret": "db"}}),
]


@pytest.mark.parametrize("k8s", [f"1.{minor}.0" for minor in range(29, 38)])
def test_manifests_are_valid_kubernetes(helm: Helm, parent_chart: Path, k8s: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs: List[Dict[str, Any]] = []
    for _, over in MODES:
        docs += helm.template(values=merge(values(), over))
    docs += helm.template(values=yaml.safe_load(DIFY_VALUES.read_text()))
    docs += helm.template(chart=parent_chart)
    docs += helm.template(chart=parent_chart, values={"schemaGate": "upgrade",
                                                      "migrategate": {"job": {"enabled": False}}})
    assert {d["kind"] for d in docs} >= {"Job", "ConfigMap", "Secret", "Deployment"}
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, k8s, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - on failure
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {k8s}: {exc}")


def test_notes_tell_how_to_follow_the_job(helm: Helm) -> None:
    out = helm.run("install", "shop", str(CHART), "-n", "apps", "--dry-run=client",
                   "-f", str(LINT_VALUES)).stdout
    notes = out.split("NOTES:", 1)[1]
    name = re.search(r"shop-migrategate-migrate-[0-9a-f]{8}", notes).group(0)
    assert f"kubectl -n apps logs -f job/{name}" in notes
    assert f"kubectl -n apps describe job {name}" in notes


# --------------------------------------------------------------------------- parent chart

def test_parent_chart_wait_gate(helm: Helm, parent_chart: Path) -> None:
    docs = helm.template(chart=parent_chart)
    deploy = one(docs, "Deployment")
    job = one(docs, "Job")
    cm = one(docs, "ConfigMap")
    secret = one(docs, "Secret")
    (init,) = pod_spec(deploy)["initContainers"]
    assert init["name"] == "migrategate-wait"
    assert init["args"][:1] == ["wait"] and "--allow-ahead" not in init["args"]
    assert init["image"] == "ghcr.io/example/shop:2.0.0"  # the parent's own image
    assert pod_spec(job)["containers"][0]["image"] == init["image"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert "runAsUser" not in init["securityContext"]  # runs as the app pod's user
    env = env_of(init)
    assert env["MIGRATEGATE_DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] \
        == secret["metadata"]["name"]
    assert env["MIGRATEGATE_MIGRATIONS"]["value"] == "/app/migrations"
    volumes = {v["name"]: v for v in pod_spec(deploy)["volumes"]}
    assert volumes["migrategate-code"]["configMap"]["name"] == cm["metadata"]["name"]
    assert len(volumes["migrategate-code"]["configMap"]["items"]) == len(source_files())
    assert "tmp" in volumes and "migrategate-tmp" in volumes
    # the gate reads the database: no RBAC, no service account token
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    assert pod_spec(deploy)["automountServiceAccountToken"] is False


def test_parent_chart_helpers_use_the_values_they_are_given(helm: Helm,
                                                             parent_chart: Path) -> None:
    docs = helm.template(chart=parent_chart, values={
        "migrategate": {"gate": {"allowAhead": True, "timeout": 30}},
        # the parent's own top-level keys must not leak into the helpers
        "gate": {"allowAhead": False}, "code": {"python": "wrong"}})
    (init,) = pod_spec(one(docs, "Deployment"))["initContainers"]
    assert init["args"] == ["wait", "--timeout", "30", "--interval", "1", "--allow-ahead"]
    assert init["command"] == ["python", "-m", "migrategate"]


def test_parent_chart_upgrade_init_container(helm: Helm, parent_chart: Path) -> None:
    docs = helm.template(chart=parent_chart, values={
        "schemaGate": "upgrade", "migrategate": {"job": {"enabled": False}}})
    assert not by_kind(docs, "Job")
    (init,) = pod_spec(one(docs, "Deployment"))["initContainers"]
    assert init["name"] == "migrategate-upgrade"
    assert init["args"][0] == "upgrade"


def test_parent_chart_schema_applies_to_the_subchart(helm: Helm, parent_chart: Path) -> None:
    err = helm.template_error(chart=parent_chart, values={"migrategate": {"gate": {
        "allowAhead": "sometimes"}}})
    assert "at '/gate/allowAhead'" in err


# --------------------------------------------------------------------------- Dify and docs

def test_dify_example(helm: Helm) -> None:
    docs = helm.template(files=[DIFY_VALUES])
    assert not by_kind(docs, "Secret"), "Dify's password comes from the database's Secret"
    (c,) = pod_spec(one(docs, "Job"))["containers"]
    assert c["image"].startswith("langgenius/dify-api:")
    env = env_of(c)
    assert env["MIGRATEGATE_PRESET"]["value"] == "dify"
    assert env["MIGRATEGATE_MIGRATIONS"]["value"] == "/app/api/migrations"
    assert env["MIGRATEGATE_APP_ROOT"]["value"] == "/app/api"
    # the non-secret DB_* from the Dify api's ConfigMap, only the DB keys of its Secret
    assert c["envFrom"] == [{"configMapRef": {"name": "dify-api"}}]
    for name in ("DB_USERNAME", "DB_PASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "dify-api", "key": name}
    assert c["securityContext"]["runAsUser"] == 1001  # Dify's image USER is a name
    assert "MIGRATION_ENABLED" in DIFY_VALUES.read_text()
    # Dify's chart sets runAsUser per container: the wait gate needs its own (see tests/e2e)
    assert yaml.safe_load(DIFY_VALUES.read_text())["gate"]["securityContext"] == {
        "runAsUser": 1001}


def _leaves(obj: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [k for k in _leaves(defaults) if f"`{k}`" not in readme]
    assert not missing, f"values missing from the README table: {missing}"


def test_lint_values_are_the_test_base() -> None:
    assert BASE_VALUES["image"]["repository"]


def test_helmtool_caches_the_binary(helm_binary: Path) -> None:
    import helmtool

    assert helmtool.ensure_helm() == helm_binary  # second call: from the cache
    assert helmtool.ensure_kubectl().exists()


def test_parent_chart_with_an_aliased_dependency(helm: Helm, parent_chart: Path,
                                                 tmp_path: Path) -> None:
    chart = tmp_path / "shop"
    shutil.copytree(parent_chart, chart)
    chart_yaml = chart / "Chart.yaml"
    chart_yaml.write_text(chart_yaml.read_text().replace(
        "  - name: migrategate\n", "  - name: migrategate\n    alias: dbmig\n"))
    vals = chart / "values.yaml"
    vals.write_text(vals.read_text().replace("\nmigrategate:\n", "\ndbmig:\n"))
    deploy = chart / "templates" / "deployment.yaml"
    text = deploy.read_text()
    assert '"values" .Values.migrategate' in text
    deploy.write_text(text.replace('"values" .Values.migrategate', '"values" .Values.dbmig'))
    err = helm.template_error(chart=chart)  # the helpers look for .Subcharts.migrategate
    assert "no Python source" in err and "subchart" in err, err

    deploy.write_text(deploy.read_text().replace(
        '"image" $image', '"image" $image "subchart" "dbmig"'))
    docs = helm.template(chart=chart)
    volumes = {v["name"]: v for v in pod_spec(one(docs, "Deployment"))["volumes"]}
    assert volumes["migrategate-code"]["configMap"]["name"] == \
        one(docs, "ConfigMap")["metadata"]["name"]
    assert len(volumes["migrategate-code"]["configMap"]["items"]) == len(source_files())
