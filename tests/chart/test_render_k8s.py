"""What a real cluster, GitOps tools and parent charts need from the rendered chart.

Each test pins one defect found on a real Kubernetes or in the anchors' charts: Helm 4.1
post-renderers, the cluster's version, YAML typing of the image tag, duplicate label
keys, per-container users, `helm test`, sidecars, globals, the Job-name hash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from chartlib import CHART, PARENT_FIXTURE, ROOT, Helm, by_kind, merge, one, values

PUBLIC = CHART / "templates" / "_public.tpl"
INTERNAL = CHART / "templates" / "_internal.tpl"


def pod_spec(obj: Dict[str, Any]) -> Dict[str, Any]:
    return obj["spec"]["template"]["spec"] if obj["kind"] == "Job" else obj["spec"]


def job_container(docs: List[Dict[str, Any]]) -> Dict[str, Any]:
    return pod_spec(one(docs, "Job"))["containers"][0]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that fails on a repeated mapping key (PyYAML keeps the last one)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dupes = {k for k in keys if keys.count(k) > 1}
    if dupes:
        raise AssertionError(f"duplicate keys {sorted(dupes)} at line {node.start_mark.line + 1}")
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_strict(text: str) -> List[Dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader) if d]


# ------------------------------------------------------------------ Helm 4.1 post-renderers

@pytest.fixture(scope="module")
def identity_post_renderer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Helm 4 post-renderer plugin that returns its input unchanged (`cat`)."""
    plugins = tmp_path_factory.mktemp("helm-plugins")
    (plugins / "identity").mkdir()
    (plugins / "identity" / "plugin.yaml").write_text(
        "apiVersion: v1\ntype: postrenderer/v1\nname: identity\nversion: 0.1.0\n"
        "runtime: subprocess\nruntimeConfig:\n  platformCommand:\n    - command: cat\n")
    return plugins


def _template_with_post_renderer(helm: Helm, plugins: Path, args: List[str]) -> str:
    import subprocess
    env = dict(os.environ, HELM_PLUGINS=str(plugins))
    proc = subprocess.run([str(helm.binary), *args, "--post-renderer", "identity"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_helm_41_post_renderer_can_render_the_chart(helm: Helm,
                                                    identity_post_renderer: Path) -> None:
    """helm/helm#31941: Helm 4.1 split '---' runs inside rendered text (the source's rulers)."""
    version = helm.run("version", "--short").stdout
    assert version.startswith("v4.1."), f"this test pins Helm 4.1's splitter; helm is {version}"
    for over in ({}, {"job": {"hook": {"enabled": True}}}):
        args = helm.template_args(CHART, values(**over))
        plain = [d for d in yaml.safe_load_all(helm.run(*args).stdout) if d]
        rendered = _template_with_post_renderer(helm, identity_post_renderer, args)
        post = [d for d in yaml.safe_load_all(rendered) if d]
        key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
        assert sorted(post, key=key) == sorted(plain, key=key)


def test_no_rendered_line_looks_like_a_document_separator(helm: Helm) -> None:
    out = helm.run(*helm.template_args(CHART, values())).stdout
    for line in out.splitlines():
        assert line == "---" or "---" not in line, line[:120]


def test_parent_chart_renders_through_a_post_renderer(helm: Helm, parent_chart: Path,
                                                      identity_post_renderer: Path) -> None:
    args = helm.template_args(parent_chart)
    out = _template_with_post_renderer(helm, identity_post_renderer, args)
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert {"Deployment", "Job", "ConfigMap"} <= kinds


# --------------------------------------------------------------------------- cluster version

@pytest.mark.parametrize("kube, expected", [("1.20.2", False), ("1.25.16", False),
                                            ("1.26.0", True), ("1.33.1", True)])
def test_pod_failure_policy_only_where_the_cluster_has_it(helm: Helm, kube: str,
                                                          expected: bool) -> None:
    docs = helm.template(values=values(), extra=["--kube-version", kube])
    assert ("podFailurePolicy" in one(docs, "Job")["spec"]) is expected


def test_job_without_pod_failure_policy_is_valid_for_kubernetes_1_20(helm: Helm) -> None:
    """The Job a 1.20 cluster gets has no field it would reject (unknown fields fail it)."""
    spec = one(helm.template(values=values(), extra=["--kube-version", "1.20.2"]), "Job")["spec"]
    assert set(spec) <= {"backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                         "template"}


# --------------------------------------------------------------------------- image tag

def test_image_tag_as_a_yaml_number_is_refused(helm: Helm, tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump(values()).replace("tag: 1.0.0", "tag: 1.10"))
    assert "tag: 1.10" in path.read_text()
    proc = helm.run("template", "shop", str(CHART), "-f", str(path), check=False)
    assert proc.returncode != 0, "a float tag would render as :1.1"
    assert "at '/image/tag': got number, want string" in proc.stderr


def test_image_tag_as_a_string_keeps_its_digits(helm: Helm) -> None:
    docs = helm.template(values=values(), extra=["--set-string", "image.tag=1.10"])
    assert job_container(docs)["image"] == "ghcr.io/example/app:1.10"


# --------------------------------------------------------------------------- labels

def test_common_and_pod_labels_merge_without_duplicate_keys(helm: Helm) -> None:
    vals = values(
        commonLabels={"app.kubernetes.io/part-of": "dify", "team": "data",
                      "app.kubernetes.io/name": "not-this"},
        podLabels={"app.kubernetes.io/component": "schema", "team": "db"})
    out = helm.run(*helm.template_args(CHART, vals)).stdout
    docs = load_strict(out)  # fails on any repeated key
    job = one(docs, "Job")
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "dify"
    assert labels["app.kubernetes.io/name"] == "migrategate", "selector labels stay the chart's"
    assert labels["team"] == "data"
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/component"] == "schema"
    assert pod_labels["team"] == "db", "podLabels win over commonLabels on the pod"
    assert pod_labels["app.kubernetes.io/instance"] == "shop"
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "dify"


def test_common_annotations_on_every_resource(helm: Helm) -> None:
    vals = values(commonAnnotations={"owner": "platform", "helm.sh/hook-weight": "99"},
                  job={"hook": {"enabled": True}, "annotations": {"owner": "db-team"}})
    docs = load_strict(helm.run(*helm.template_args(CHART, vals)).stdout)
    assert {d["kind"] for d in docs} == {"ConfigMap", "Secret", "Job", "Pod"}
    for doc in docs:
        ann = doc["metadata"]["annotations"]
        assert "owner" in ann
        assert ann["helm.sh/hook-weight"] != "99" or doc["kind"] == "Pod"
    assert one(docs, "Job")["metadata"]["annotations"]["owner"] == "db-team"
    assert one(docs, "ConfigMap")["metadata"]["annotations"]["owner"] == "platform"


# --------------------------------------------------------------------------- security contexts

def test_gate_security_context_and_resources_apply_to_the_init_containers(
        helm: Helm, parent_chart: Path) -> None:
    gate = {"securityContext": {"runAsUser": 1001}, "resources": {"limits": {"memory": "128Mi"}}}
    docs = helm.template(chart=parent_chart, values={"migrategate": {
        "gate": gate, "resources": {"limits": {"memory": "512Mi"}},
        "job": {"securityContext": {"runAsUser": 2002}}}})
    deployment = one(docs, "Deployment")
    (wait,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert wait["securityContext"]["runAsUser"] == 1001
    assert wait["securityContext"]["readOnlyRootFilesystem"] is True, "merged, not replaced"
    assert wait["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert wait["resources"] == {"limits": {"memory": "128Mi"}}
    migrate = job_container(docs)
    assert migrate["securityContext"]["runAsUser"] == 2002
    assert migrate["resources"] == {"limits": {"memory": "512Mi"}}


def test_the_gate_has_guaranteed_shaped_resources_by_default(helm: Helm,
                                                             parent_chart: Path) -> None:
    """requests == limits: a Guaranteed app stays Guaranteed, a limits quota admits it; the
    same default as `migrategate inject` gives (one value, held by this test)."""
    from migrategate.inject import GATE_RESOURCES

    (wait,) = one(helm.template(chart=parent_chart), "Deployment")["spec"]["template"][
        "spec"]["initContainers"]
    assert wait["resources"]["requests"] == wait["resources"]["limits"]
    assert set(wait["resources"]["limits"]) == {"cpu", "memory"}
    assert wait["resources"] == GATE_RESOURCES


def test_gate_falls_back_to_the_shared_settings(helm: Helm, parent_chart: Path) -> None:
    docs = helm.template(chart=parent_chart, values={"migrategate": {
        "resources": {"requests": {"cpu": "50m"}}}})
    (wait,) = one(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert "runAsUser" not in wait["securityContext"], "the pod's user by default"
    assert wait["resources"] == {"requests": {"cpu": "50m"}}


def test_openshift_can_remove_the_fixed_ids(helm: Helm, tmp_path: Path) -> None:
    path = tmp_path / "openshift.yaml"
    path.write_text("podSecurityContext:\n  runAsUser: null\n  runAsGroup: null\n"
                    "  fsGroup: null\n")
    docs = helm.template(values=values(), files=[path])
    psc = pod_spec(one(docs, "Job"))["securityContext"]
    assert psc == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


# --------------------------------------------------------------------------- helm test

def test_helm_test_pod_verifies_with_the_jobs_settings(helm: Helm) -> None:
    vals = values(database={"passwordAs": "file"}, serviceAccountName="mig",
                  gate={"allowAhead": True}, job={"extraInitContainers": [
                      {"name": "proxy", "image": "proxy:1", "restartPolicy": "Always"}]})
    docs = helm.template(values=vals)
    pod = one(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
    job_pod = pod_spec(one(docs, "Job"))
    spec = pod["spec"]
    (verify,) = spec["containers"]
    (migrate,) = job_pod["containers"]
    assert verify["args"] == ["verify", "--allow-ahead"]
    for key in ("image", "command", "env", "volumeMounts", "securityContext"):
        assert verify[key] == migrate[key], key
    for key in ("securityContext", "volumes", "serviceAccountName", "initContainers",
                "restartPolicy", "automountServiceAccountToken"):
        assert spec[key] == job_pod[key], key


def test_helm_test_pod_can_be_turned_off(helm: Helm) -> None:
    assert not by_kind(helm.template(values=values(tests={"enabled": False})), "Pod")


# --------------------------------------------------------------------------- Job pod extras

def test_extra_containers_topology_and_tpl(helm: Helm) -> None:
    vals = values(job={
        "extraInitContainers": [{"name": "proxy", "image": "proxy:1", "restartPolicy": "Always",
                                 "args": ["--name={{ .Release.Name }}-db"]}],
        "extraContainers": [{"name": "log", "image": "busybox:1"}]},
        topologySpreadConstraints=[{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {
                "matchLabels": {"app.kubernetes.io/instance": "{{ .Release.Name }}"}}}])
    spec = pod_spec(one(helm.template(values=vals), "Job"))
    assert spec["initContainers"][0]["args"] == ["--name=shop-db"]
    assert [c["name"] for c in spec["containers"]] == ["migrate", "log"]
    tsc = spec["topologySpreadConstraints"][0]
    assert tsc["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "shop"


def test_notes_warn_about_a_sidecar_that_keeps_running(helm: Helm) -> None:
    out = helm.run("install", "shop", str(CHART), "--dry-run=client", "-f",
                   helm._values_file(values(job={"extraContainers": [
                       {"name": "proxy", "image": "proxy:1"}]}))).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "completes only when EVERY container of its pod has exited" in notes
    assert "restartPolicy: Always" in notes


# --------------------------------------------------------------------------- globals

def test_global_image_registry_and_pull_secrets(helm: Helm, parent_chart: Path) -> None:
    vals = values(image={"registry": "registry.example.com"}, imagePullSecrets=[{"name": "a"}],
                  **{"global": {"imagePullSecrets": ["b", {"name": "a"}]}})
    spec = pod_spec(one(helm.template(values=vals), "Job"))
    assert spec["containers"][0]["image"] == "registry.example.com/ghcr.io/example/app:1.0.0"
    assert spec["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]
    vals["global"]["imageRegistry"] = "mirror.example.com"
    spec = pod_spec(one(helm.template(values=vals), "Job"))
    assert spec["containers"][0]["image"].startswith("mirror.example.com/ghcr.io/")
    # a parent's globals reach the subchart's Job; the parent's own image stays as it is
    docs = helm.template(chart=parent_chart, values={"global": {"imageRegistry": "m.example"}})
    assert job_container(docs)["image"] == "m.example/ghcr.io/example/shop:2.0.0"
    (wait,) = one(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert wait["image"] == "ghcr.io/example/shop:2.0.0"


# --------------------------------------------------------------------------- the Job's name

def _job_name(helm: Helm, vals: Dict[str, Any], **kw: Any) -> str:
    return one(helm.template(values=vals, **kw), "Job")["metadata"]["name"]


def test_job_name_ignores_values_the_job_does_not_use(helm: Helm) -> None:
    base = values()
    first = _job_name(helm, base)
    for over in ({"gate": {"timeout": 30, "interval": 5, "securityContext": {"runAsUser": 7},
                           "resources": {"limits": {"cpu": "1"}}}},
                 {"global": {"anything": "x"}},
                 {"commonAnnotations": {"a": "b"}},
                 {"job": {"annotations": {"argocd.argoproj.io/sync-wave": "-1"}}},
                 {"tests": {"enabled": False}}):
        assert _job_name(helm, merge(base, over)) == first, over
    for over in ({"gate": {"allowAhead": True}},  # passed to upgrade
                 {"global": {"imageRegistry": "m.example"}},  # changes the Job's image
                 {"commonLabels": {"team": "x"}},  # the pod template's labels are immutable
                 {"job": {"securityContext": {"runAsUser": 7}}}):
        assert _job_name(helm, merge(base, over)) != first, over


def test_job_name_depends_on_the_cluster_version_through_the_spec(helm: Helm) -> None:
    old = _job_name(helm, values(), extra=["--kube-version", "1.20.2"])
    new = _job_name(helm, values(), extra=["--kube-version", "1.30.0"])
    assert old != new, "a different spec (podFailurePolicy) is a different Job"


def test_name_suffix_override_is_a_template(helm: Helm) -> None:
    vals = values(job={"nameSuffixOverride": "r{{ .Release.Revision }}"})
    assert _job_name(helm, vals) == "shop-migrategate-migrate-r1"
    err = helm.template_error(values=values(job={"nameSuffixOverride": "{{ .Release.Name }}_X"}))
    assert 'job.nameSuffixOverride rendered to "shop_X"' in err


# --------------------------------------------------------------------------- helper API

def _defines(path: Path) -> List[str]:
    return re.findall(r'define "([^"]+)"', path.read_text())


def test_helpers_are_split_into_public_and_internal() -> None:
    assert not (CHART / "templates" / "_helpers.tpl").exists()
    public, internal = _defines(PUBLIC), _defines(INTERNAL)
    assert public and internal
    assert all(not n.startswith("migrategate.internal.") for n in public)
    assert all(n.startswith("migrategate.internal.") for n in internal)
    readme = (CHART / "README.md").read_text()
    undocumented = [n for n in public if f"`{n}`" not in readme]
    assert not undocumented, f"public helpers missing from the README: {undocumented}"
    text = PUBLIC.read_text()
    for name in public:  # each public helper has a comment right before its define
        assert re.search(r'\*/\}\}\s*\{\{-? define "' + re.escape(name) + '"', text), name


def test_parent_fixture_and_docs_use_only_public_helpers() -> None:
    public = set(_defines(PUBLIC))
    for path in [*PARENT_FIXTURE.rglob("*.yaml"), CHART / "README.md", ROOT / "README.md",
                 *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.yaml")]:
        for name in re.findall(r'include "(migrategate\.[^"]+)"', path.read_text()):
            assert name in public, f"{path} includes the internal helper {name}"


def test_lock_retries_and_statement_timeout_reach_the_job(helm: Helm) -> None:
    over = {"upgrade": {"pgLockTimeout": 0.05, "lockRetries": 200, "statementTimeout": 1800}}
    args = job_container(helm.template(values=values(**over)))["args"]
    assert args[args.index("--lock-retries") + 1] == "200"
    assert args[args.index("--statement-timeout") + 1] == "1800"
    assert args[args.index("--pg-lock-timeout") + 1] == "0.05"
    assert "--mysql-lock-wait-timeout" not in args


def test_the_job_fails_at_once_on_exactly_the_codes_a_retry_cannot_fix(helm: Helm) -> None:
    """One source of truth with the CLI: errors.RETRY_CANNOT_FIX."""
    from migrategate.errors import EXIT_CODES, RETRY_CANNOT_FIX

    job = one(helm.template(values=values()), "Job")
    rule = next(r for r in job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob")
    assert rule["onExitCodes"]["values"] == sorted(RETRY_CANNOT_FIX)
    assert rule["onExitCodes"]["containerName"] == "migrate"
    assert set(RETRY_CANNOT_FIX) <= set(EXIT_CODES) and not {3, 5, 11} & set(RETRY_CANNOT_FIX)


def test_log_format_json_reaches_every_migrategate_container(helm: Helm) -> None:
    def env_of(container):
        return {e["name"]: e.get("value") for e in container.get("env", [])}

    assert "MIGRATEGATE_LOG_FORMAT" not in env_of(job_container(helm.template(values=values())))
    docs = helm.template(values=values(logFormat="json"))
    assert env_of(job_container(docs))["MIGRATEGATE_LOG_FORMAT"] == "json"
    assert env_of(one(docs, "Pod")["spec"]["containers"][0])["MIGRATEGATE_LOG_FORMAT"] == "json"
    out = helm.template_error(values=values(logFormat="yaml"))
    assert "/logFormat" in out


def test_the_plan_step_and_policy_reach_the_job(helm: Helm) -> None:
    args = job_container(helm.template(values=values()))["args"]
    assert "--show-plan" not in args and "--refuse" not in args
    over = {"upgrade": {"showPlan": True, "refuse": "risky,drops-column"}}
    args = job_container(helm.template(values=values(**over)))["args"]
    assert "--show-plan" in args
    assert args[args.index("--refuse") + 1] == "risky,drops-column"


@pytest.mark.parametrize("refuse", ["info", "risky,info", "risky;rm -rf", " risky"])
def test_a_refuse_policy_the_cli_would_refuse_fails_at_render_time(helm: Helm, refuse) -> None:
    out = helm.template_error(values=values(upgrade={"refuse": refuse}))
    assert "/upgrade/refuse" in out


def test_the_mysql_lock_wait_timeout_reaches_the_job(helm: Helm) -> None:
    over = {"upgrade": {"mysqlLockWaitTimeout": 2, "lockRetries": 30}}
    args = job_container(helm.template(values=values(**over)))["args"]
    assert args[args.index("--mysql-lock-wait-timeout") + 1] == "2"
    assert args[args.index("--lock-retries") + 1] == "30"
    assert "--pg-lock-timeout" not in args


# --------------------------------------------------------------------------- Argo CD / Flux

def test_argocd_plain_job_wave_goes_on_what_the_job_mounts(helm: Helm) -> None:
    """Argo CD waits for a wave's resources to be healthy before the next wave: the Job's
    ConfigMap and Secret must be in its wave, not the default 0 after it."""
    docs = helm.template(values=values(job={"annotations": {
        "argocd.argoproj.io/sync-wave": "-1"}}))
    for kind in ("Job", "ConfigMap", "Secret"):
        ann = one(docs, kind)["metadata"]["annotations"]
        assert ann["argocd.argoproj.io/sync-wave"] == "-1", kind
        assert not any(k.startswith("helm.sh/hook") for k in ann), (kind, ann)
    plain = helm.template(values=values())
    assert "annotations" not in one(plain, "ConfigMap")["metadata"]


def test_argocd_hook_mode_is_helm_hooks_argo_maps(helm: Helm) -> None:
    """pre-install,pre-upgrade -> PreSync; before-hook-creation -> BeforeHookCreation (which
    deletes a failed Job's logs at the next sync, argo-cd#11872: documented)."""
    docs = helm.template(values=values(job={"hook": {"enabled": True}}))
    job = one(docs, "Job")["metadata"]["annotations"]
    assert job["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert not any(k.startswith("argocd.argoproj.io/") for k in job)
    for kind in ("ConfigMap", "Secret"):
        ann = one(docs, kind)["metadata"]["annotations"]
        assert int(ann["helm.sh/hook-weight"]) < int(job["helm.sh/hook-weight"]), kind
    readme = (CHART / "README.md").read_text()
    assert "argo-cd#11872" in readme and "BeforeHookCreation" in readme


def test_an_argocd_hook_on_the_job_alone_is_refused(helm: Helm) -> None:
    out = helm.template_error(values=values(job={"annotations": {
        "argocd.argoproj.io/hook": "PreSync"}}))
    assert "use job.hook.enabled: true" in out.replace("Use", "use")


def test_events_need_a_service_account_and_mount_its_token_only_then(helm: Helm) -> None:
    job = one(helm.template(values=values()), "Job")
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "MIGRATEGATE_K8S_EVENT" not in {e["name"] for e in job_container(
        helm.template(values=values()))["env"]}
    out = helm.template_error(values=values(job={"events": {"enabled": True}}))
    assert "job.events.enabled needs serviceAccountName" in out
    docs = helm.template(values=values(job={"events": {"enabled": True}},
                                       serviceAccountName="migrator"))
    spec = one(docs, "Job")["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is True
    env = {e["name"]: e for e in job_container(docs)["env"]}
    assert env["MIGRATEGATE_K8S_EVENT"]["value"] == "1"
    assert env["MIGRATEGATE_JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['job-name']"


def _env(container: Dict[str, Any]) -> Dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_history_settings_and_the_image_reach_every_container(helm: Helm) -> None:
    """The history's settings are env (upgrade, the gate and the test pod read the same
    table); the image reference goes into each attempt's row."""
    env = _env(job_container(helm.template(values=values())))
    assert not {"MIGRATEGATE_NO_HISTORY", "MIGRATEGATE_HISTORY_TABLE",
                "MIGRATEGATE_STRICT_CHECKSUMS", "MIGRATEGATE_NO_RESUME",
                "MIGRATEGATE_HISTORY_READER"} & set(env)
    assert env["MIGRATEGATE_IMAGE"] == "ghcr.io/example/app:1.0.0"
    over = {"history": {"enabled": False, "table": "deploy_log", "strictChecksums": True,
                        "resume": False, "reader": "dify_app"}}
    env = _env(job_container(helm.template(values=values(**over))))
    assert (env["MIGRATEGATE_NO_HISTORY"], env["MIGRATEGATE_HISTORY_TABLE"],
            env["MIGRATEGATE_STRICT_CHECKSUMS"], env["MIGRATEGATE_NO_RESUME"],
            env["MIGRATEGATE_HISTORY_READER"]) == ("1", "deploy_log", "1", "1", "dify_app")
    from migrategate.settings import resolve

    settings = resolve({}, {k: v for k, v in env.items() if v is not None})
    assert (settings.no_history, settings.history_table, settings.strict_checksums,
            settings.no_resume, settings.history_reader) == (
                True, "deploy_log", True, True, "dify_app")


@pytest.mark.parametrize("table", ["drop table x", "a" * 57, "1st"])
def test_a_history_table_name_that_is_not_an_identifier_fails_at_render_time(
        helm: Helm, table: str) -> None:
    assert "/history/table" in helm.template_error(values=values(history={"table": table}))
