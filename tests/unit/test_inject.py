"""inject: the wait gate added to a community chart's api, worker and beat, nothing else touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from migrategate.errors import ConfigError
from migrategate.inject import InjectOptions, inject, source_files, split_documents

RENDERED = (Path(__file__).resolve().parents[1] / "fixtures" / "difychart" / "rendered.yaml")
TEXT = RENDERED.read_text()
DIFY = InjectOptions(workloads=["dify-(api|worker|beat)"], preset="dify")


def docs(text: str) -> Dict[str, Dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(text) if d}


def pod(doc: Dict[str, Any]) -> Dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def gate_of(doc: Dict[str, Any]) -> Dict[str, Any]:
    first = pod(doc)["initContainers"][0]
    assert first["name"] == "migrategate-wait"
    return first


def env_of(container: Dict[str, Any]) -> Dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_api_worker_and_beat_get_a_gate_in_their_own_image_and_user():
    out = docs(inject(TEXT, DIFY))

    for name in ("dify-api", "dify-worker", "dify-beat"):
        deployment = out[f"Deployment/{name}"]
        app = pod(deployment)["containers"][0]
        gate = gate_of(deployment)
        assert gate["image"] == app["image"] == "langgenius/dify-api:1.16.1"
        assert gate["imagePullPolicy"] == app["imagePullPolicy"]
        assert gate.get("securityContext") == app.get("securityContext")
        assert gate["envFrom"] == app["envFrom"]  # Dify's DB_* come from its ConfigMap/Secret
        assert gate["command"] == ["python", "-m", "migrategate"] and gate["args"] == ["wait"]
        assert env_of(gate)["MIGRATEGATE_PRESET"] == "dify"
    assert gate_of(out["Deployment/dify-api"])["securityContext"] == {"runAsUser": 1001}
    assert gate_of(out["Deployment/dify-beat"])["imagePullPolicy"] == "Always"
    assert "initContainers" not in pod(out["Deployment/dify-web"])


def test_the_gate_keeps_the_app_env_and_puts_migrategate_first_on_pythonpath():
    out = docs(inject(TEXT, DIFY))
    api = env_of(gate_of(out["Deployment/dify-api"]))
    worker = env_of(gate_of(out["Deployment/dify-worker"]))

    assert api["LOG_LEVEL"] == "INFO"
    assert api["CODE_EXECUTION_API_KEY"] == {"secretKeyRef": {"name": "dify-sandbox",
                                                              "key": "API_KEY"}}
    assert api["PYTHONPATH"] == "/opt/migrategate"
    assert worker["PYTHONPATH"] == "/opt/migrategate:/app/api/extra"
    names = [e["name"] for e in gate_of(out["Deployment/dify-worker"])["env"]]
    assert len(names) == len(set(names))


def test_code_volume_rebuilds_the_package_from_the_migrategate_release_configmap():
    options = InjectOptions(workloads=["dify-api"], code_configmap="mg-migrategate-code")
    api = docs(inject(TEXT, options))["Deployment/dify-api"]

    volumes = {v["name"]: v for v in pod(api)["volumes"]}
    assert set(volumes) == {"app-data", "migrategate-tmp", "migrategate-code"}
    cm = volumes["migrategate-code"]["configMap"]
    assert cm["name"] == "mg-migrategate-code"
    items = {i["path"]: i["key"] for i in cm["items"]}
    assert items["presets/dify.py"] == "presets.dify.py"
    assert set(items) == set(source_files()) and "cli.py" in items
    assert "inject.py" not in items  # the post-renderer never runs in a pod; not shipped
    mounts = {m["name"]: m["mountPath"] for m in gate_of(api)["volumeMounts"]}
    assert mounts == {"migrategate-tmp": "/tmp", "migrategate-code": "/opt/migrategate/migrategate"}


def test_a_workload_with_an_empty_volumes_key_gets_its_volumes():
    beat = docs(inject(TEXT, DIFY))["Deployment/dify-beat"]
    assert [v["name"] for v in pod(beat)["volumes"]] == ["migrategate-tmp", "migrategate-code"]


def test_wait_settings_and_extra_env_reach_the_gate():
    options = InjectOptions(workloads=["dify-api"], timeout="900", interval="5",
                            allow_ahead=True, env=[("MIGRATEGATE_LOCK_NAME", "dify")],
                            python="/app/api/.venv/bin/python", mount_path="/mg/")
    gate = gate_of(docs(inject(TEXT, options))["Deployment/dify-api"])
    assert gate["args"] == ["wait", "--timeout", "900", "--interval", "5", "--allow-ahead"]
    assert gate["command"][0] == "/app/api/.venv/bin/python"
    assert env_of(gate)["MIGRATEGATE_LOCK_NAME"] == "dify"
    assert env_of(gate)["PYTHONPATH"] == "/mg/"
    assert {m["mountPath"] for m in gate["volumeMounts"]} == {"/tmp", "/mg/migrategate"}


def test_every_other_document_is_written_back_byte_for_byte():
    out = split_documents(inject(TEXT, DIFY))
    before = split_documents(TEXT)
    assert len(out) == len(before)
    changed = [i for i, (a, b) in enumerate(zip(before, out)) if a != b]
    assert [yaml.safe_load(before[i])["metadata"]["name"] for i in changed] == \
        ["dify-api", "dify-worker", "dify-beat"]
    for i in changed:  # Helm's "# Source:" line stays with its document
        assert out[i].splitlines()[:2] == before[i].splitlines()[:2]


def test_a_changed_document_means_the_same_apart_from_the_gate():
    before, after = docs(TEXT), docs(inject(TEXT, DIFY))
    for name in ("dify-api", "dify-worker", "dify-beat"):
        changed = after[f"Deployment/{name}"]
        spec = pod(changed)
        spec.pop("initContainers")
        spec["volumes"] = [v for v in spec["volumes"] if not v["name"].startswith("migrategate-")]
        original = before[f"Deployment/{name}"]
        if pod(original).get("volumes") is None:
            pod(original)["volumes"] = []
        assert changed == original


def test_running_twice_adds_one_gate_and_changes_nothing_more():
    once = inject(TEXT, DIFY)
    twice = inject(once, DIFY)
    assert twice == once
    for name in ("dify-api", "dify-worker", "dify-beat"):
        spec = pod(docs(twice)[f"Deployment/{name}"])
        assert [c["name"] for c in spec["initContainers"]] == ["migrategate-wait"]
        assert [v["name"] for v in spec["volumes"]].count("migrategate-code") == 1


def test_existing_init_containers_run_after_the_gate():
    text = TEXT.replace("      serviceAccountName: default\n      enableServiceLinks: false\n",
                        "      serviceAccountName: default\n      enableServiceLinks: false\n"
                        "      initContainers:\n        - name: fix-perms\n"
                        "          image: busybox\n", 1)
    api = docs(inject(text, DIFY))["Deployment/dify-api"]
    assert [c["name"] for c in pod(api)["initContainers"]] == ["migrategate-wait", "fix-perms"]


def test_separator_lookalikes_inside_values_survive():
    cm = docs(inject(TEXT, DIFY))["ConfigMap/dify-proxy"]
    assert "--- upgrade\n---\n" in cm["data"]["notes.txt"]


def test_split_documents_keeps_every_character():
    for text in (TEXT, "", "a: 1\n", "---\na: 1\n--- !!map\nb: 2\n---", "x: |\n  --- y\n"):
        assert "".join(split_documents(text)) == text
    assert len(split_documents("a: 1\n---\nb: 2\n--- # c\nc: 3\n")) == 3
    assert len(split_documents("a: |\n  ---\n  --- x\n---x: 1\n")) == 1


def test_a_pattern_that_matches_nothing_fails_and_names_what_was_there():
    with pytest.raises(ConfigError) as err:
        inject(TEXT, InjectOptions(workloads=["dify-api", "dify-apis"]))
    message = err.value.one_line()
    assert "'dify-apis' matched no workload" in message
    assert "Deployment/dify-api, Deployment/dify-worker" in message
    assert "whole metadata.name" in message


def test_each_alternative_of_a_pattern_must_match_a_workload():
    """douban's beat is dify-worker-beat: 'dify-(api|worker|beat)' gated api and worker and
    silently left the beat ungated. Each alternative is checked, as a --workload would be."""
    renamed = TEXT.replace("name: dify-beat", "name: dify-worker-beat")
    with pytest.raises(ConfigError) as err:
        inject(renamed, DIFY)
    message = err.value.one_line()
    assert "alternative 'dify-(?:beat)' (of 'dify-(api|worker|beat)') matched no workload" \
        in message
    assert "dify-worker-beat" in message  # what was there
    out = docs(inject(renamed, InjectOptions(workloads=["dify-(api|worker|worker-beat)"])))
    assert gate_of(out["Deployment/dify-worker-beat"])


@pytest.mark.parametrize("pattern, expanded", [
    ("dify-(api|worker|beat)", ["dify-(?:api)", "dify-(?:worker)", "dify-(?:beat)"]),
    ("a|b", ["a", "b"]),
    ("(?:x|y)-(1|2)", ["(?:x)-(?:1)", "(?:x)-(?:2)", "(?:y)-(?:1)", "(?:y)-(?:2)"]),
    ("(?P<n>p|q)z", ["(?:p)z", "(?:q)z"]),
    ("(a|b)+", ["(a|b)+"]),  # a repeated group is one alternative
    ("(?=a|b)c", ["(?=a|b)c"]),  # so is a lookahead
    ("x[|(]y", ["x[|(]y"]),  # and a character class
    (r"a\|b", [r"a\|b"]),
    (".*-api", [".*-api"]),
])
def test_alternatives(pattern, expanded):
    from migrategate.inject import alternatives

    assert alternatives(pattern) == expanded


def test_too_many_alternatives_are_refused():
    with pytest.raises(ConfigError, match="more than 64 alternatives"):
        InjectOptions(workloads=["(a|b)(c|d)(e|f)(g|h)(i|j)(k|l)(m|n)"])


def test_a_backreference_keeps_its_pattern_whole():
    options = InjectOptions(workloads=["(a|b)-\\1"])
    assert [p.pattern for p in options.alternatives["(a|b)-\\1"]] == ["(a|b)-\\1"]


def test_patterns_match_whole_names():
    with pytest.raises(ConfigError, match="'dify' matched no workload"):
        inject(TEXT, InjectOptions(workloads=["dify"]))


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="at least one --workload"):
        InjectOptions(workloads=[])
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        InjectOptions(workloads=["dify-("])


def test_without_pyyaml_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigError) as err:
        inject(TEXT, DIFY)
    assert "PyYAML" in err.value.message and "pip install PyYAML" in err.value.hint


def test_statefulsets_and_daemonsets_are_workloads_too():
    text = ("---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec:\n"
            "  template:\n    spec:\n      containers: [{name: a, image: 'i:1'}]\n"
            "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n"
            "  template:\n    spec:\n      containers: [{name: a, image: 'i:1'}]\n")
    out = docs(inject(text, InjectOptions(workloads=["s", "d"])))
    assert gate_of(out["StatefulSet/s"])["image"] == gate_of(out["DaemonSet/d"])["image"] == "i:1"


def test_injected_manifests_are_valid_kubernetes():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    out: List[Dict[str, Any]] = [d for d in docs(inject(TEXT, DIFY)).values()
                                 if d["kind"] == "Deployment"]  # the proxy ConfigMap is odd
    for doc in out:
        kubernetes_validate.validate(doc, "1.29.0", strict=True)


def _cli(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrategate", "inject", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_cli_is_a_filter_from_stdin_to_stdout():
    run = _cli("--workload", "dify-(api|worker|beat)", "--preset", "dify", stdin=TEXT)
    assert run.returncode == 0, run.stderr
    assert run.stdout == inject(TEXT, DIFY) and run.stderr == ""


def test_cli_writes_nothing_on_stdout_when_nothing_matched():
    run = _cli("--workload", "dify-apis", stdin=TEXT)
    assert run.returncode == 2 and run.stdout == ""
    assert "error: --workload 'dify-apis' matched no workload" in run.stderr


def test_cli_refuses_env_that_is_not_name_value():
    run = _cli("--workload", "dify-api", "--env", "NOVALUE", stdin=TEXT)
    assert run.returncode == 2 and "--env 'NOVALUE' is not NAME=VALUE" in run.stderr


def test_env_given_on_the_command_line_wins_and_names_stay_unique():
    options = InjectOptions(workloads=["dify-worker"], preset="dify",
                            env=[("PYTHONPATH", "/custom"), ("LOG_LEVEL", "DEBUG")])
    gate = gate_of(docs(inject(TEXT, options))["Deployment/dify-worker"])
    names = [e["name"] for e in gate["env"]]
    assert len(names) == len(set(names))
    assert env_of(gate)["PYTHONPATH"] == "/custom" and env_of(gate)["LOG_LEVEL"] == "DEBUG"


def test_odd_documents_are_passed_through_not_crashed_on():
    odd = ("---\nkind: Deployment\nmetadata: just-a-string\n"
           "---\nkind: Deployment\nmetadata: {name: x}\nspec: [1, 2]\n"
           "---\nkind: Deployment\nmetadata: {name: y}\nspec: {template: {spec: "
           "{containers: [42]}}}\n---\n: : not yaml [\n")
    text = odd + TEXT
    out = inject(text, DIFY)
    assert out.startswith(odd)


def test_the_gate_gets_guaranteed_shaped_resources_by_default():
    """Without resources an app with requests = limits drops from Guaranteed to Burstable,
    and a namespace whose ResourceQuota counts limits (no LimitRange) refuses the pod."""
    from migrategate.inject import GATE_RESOURCES

    gate = gate_of(docs(inject(TEXT, DIFY))["Deployment/dify-api"])
    assert gate["resources"] == GATE_RESOURCES
    assert gate["resources"]["requests"] == gate["resources"]["limits"]
    own = InjectOptions(workloads=["dify-api"], resources={"limits": {"memory": "1Gi"}})
    assert gate_of(docs(inject(TEXT, own))["Deployment/dify-api"])["resources"] == {
        "limits": {"memory": "1Gi"}}


@pytest.mark.parametrize("text, message", [
    ("{", "--resources is not JSON"),
    ('{"limit": {}}', "mapping of 'requests' and/or 'limits'"),
    ('{"limits": {"cpu": [1]}}', "mapping of 'requests' and/or 'limits'"),
])
def test_bad_resources_are_refused_at_render_time(text, message):
    from migrategate.inject import parse_resources

    with pytest.raises(ConfigError, match=message):
        parse_resources(text)
