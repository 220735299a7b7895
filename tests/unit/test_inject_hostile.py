"""inject on hostile or odd input: never exit 1, never a secret on stderr, never output that is
not YAML, never a matching workload silently left without its gate."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest
import yaml

from migrategate.errors import ConfigError
from migrategate.inject import InjectOptions, inject

APP = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n"
       "    spec:\n      containers:\n      - name: app\n        image: 'img:1'\n")
OPTIONS = InjectOptions(workloads=["app"])


def _cli(*args: str, stdin: Any) -> subprocess.CompletedProcess:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    run = subprocess.run([sys.executable, "-m", "migrategate", "inject", *args], input=data,
                         capture_output=True, timeout=120)
    run.stdout = run.stdout.decode("utf-8", "replace")
    run.stderr = run.stderr.decode("utf-8", "replace")
    assert run.returncode != 1, run.stderr  # exit 1 is a migrategate bug, never bad input
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
    return run


def _docs(text: str) -> List[Any]:
    return list(yaml.safe_load_all(text))


def _pod(doc: Dict[str, Any]) -> Dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def _inits(doc: Dict[str, Any]) -> List[str]:
    return [c["name"] for c in _pod(doc).get("initContainers") or []]


# 1. --env never echoes a value


@pytest.mark.parametrize("item", ["DB PASSWORD=s3cret", "=s3cret", "1DB=s3cret", "s3cret value"])
def test_a_malformed_env_names_the_name_never_the_value(item):
    run = _cli("--workload", "app", "--env", item, stdin=APP)
    assert run.returncode == 2 and run.stdout == ""
    assert "s3cret" not in run.stderr
    assert "--env" in run.stderr and "NAME=VALUE" in run.stderr
    if item.startswith("DB PASSWORD"):
        assert "'DB PASSWORD'" in run.stderr


# 2. kind: List


def test_a_deployment_inside_a_list_is_gated():
    item = "".join("  " + line + "\n" for line in APP.splitlines())
    other = "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: app}\n  data: {a: b}\n"
    text = "apiVersion: v1\nkind: List\nitems:\n" + other + "-" + item[1:]
    out = _docs(inject(text, OPTIONS))
    assert len(out) == 1 and out[0]["kind"] == "List"
    config_map, deployment = out[0]["items"]
    assert config_map == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
                          "data": {"a": "b"}}
    assert _inits(deployment) == ["migrategate-wait"]
    assert inject(inject(text, OPTIONS), OPTIONS) == inject(text, OPTIONS)


def test_a_list_without_a_match_is_written_back_unchanged_and_names_what_it_holds():
    text = ("---\nkind: List\nitems:\n- kind: Deployment\n  metadata: {name: other}\n"
            "  spec: {template: {spec: {containers: [{name: a, image: i}]}}}\n---\n" + APP)
    out = inject(text, OPTIONS)
    assert out.startswith(text[:text.index(APP)])
    with pytest.raises(ConfigError, match=r"found: Deployment/other \(in a List\)"):
        inject(text, InjectOptions(workloads=["nomatch"]))


# 3. the output is always YAML


FLOW_APP = ("--- {apiVersion: apps/v1, kind: Deployment, metadata: {name: app}, "
            "spec: {template: {spec: {containers: [{name: a, image: 'i:1'}]}}}}\n")


@pytest.mark.parametrize("text", [
    FLOW_APP,
    "--- {a: 1}\n" + FLOW_APP,
    APP + FLOW_APP + "--- {a: 1}\n",
    "--- !!map\n" + APP,
    "--- # Source: x.yaml\n" + APP,
    "--- {a: 1}\n---\n" + APP + "--- [1, 2]\n--- 'x'\n",
])
def test_the_output_parses_back_as_yaml(text):
    out = inject(text, OPTIONS)
    parsed = [d for d in _docs(out) if isinstance(d, dict) and d.get("kind") == "Deployment"]
    assert parsed and all(_inits(d) == ["migrategate-wait"] for d in parsed)
    assert len(_docs(out)) == len(_docs(text))


# 4. input that is not UTF-8


def test_a_byte_that_is_not_utf8_is_reported_as_such():
    run = _cli("--workload", "app", stdin=APP.encode() + b"  annotation: caf\xe9\n")
    assert run.returncode == 2 and run.stdout == ""
    assert "UTF-8" in run.stderr and "line 11" in run.stderr
    assert "no Deployment" not in run.stderr


def test_text_with_undecoded_bytes_is_refused_by_the_library_too():
    with pytest.raises(ConfigError, match="UTF-8"):
        inject(APP + "  x: caf\udce9\n", OPTIONS)


def test_utf8_text_is_written_as_utf8_whatever_the_locale():
    run = subprocess.run([sys.executable, "-m", "migrategate", "inject", "--workload", "app"],
                         input=(APP + "  note: 'café ☕'\n").encode(), capture_output=True,
                         timeout=120, env={"LC_ALL": "C", "PYTHONIOENCODING": "ascii",
                                           "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "café ☕" in run.stdout.decode("utf-8")


# 5. malformed workloads and very deep documents


@pytest.mark.parametrize("extra, where", [
    ("        env: [null]\n", "containers[0].env[0]"),
    ("        env: [PLAIN]\n", "containers[0].env[0]"),
    ("        env: {A: b}\n", "containers[0].env"),
    ("        env: [{name: PYTHONPATH, value: [a]}]\n", "PYTHONPATH"),
    ("      - null\n", "containers[1]"),
    ("      - just-a-string\n", "containers[1]"),
    ("      initContainers: [null]\n", "initContainers[0]"),
    ("      initContainers: [abc]\n", "initContainers[0]"),
    ("      initContainers: abc\n", "initContainers"),
    ("      volumes: [abc]\n", "volumes[0]"),
])
def test_a_malformed_selected_workload_is_exit_2_with_a_reason(extra, where):
    run = _cli("--workload", "app", stdin=APP + extra)
    assert run.returncode == 2 and run.stdout == ""
    assert "Deployment/app" in run.stderr and where in run.stderr


@pytest.mark.parametrize("text, where", [
    (APP.replace("      - name: app\n        image: 'img:1'\n", "      - null\n"),
     "containers[0]"),
    (APP.replace("      containers:\n      - name: app\n        image: 'img:1'\n",
                 "      containers: []\n"), "containers"),
    (APP.replace("        image: 'img:1'\n", ""), "image"),
    (APP.replace("  template:\n    spec:\n", "  template:\n    spex:\n"), "spec.template.spec"),
])
def test_a_selected_workload_without_a_usable_first_container_is_exit_2(text, where):
    run = _cli("--workload", "app", stdin=text)
    assert run.returncode == 2 and "Deployment/app" in run.stderr and where in run.stderr
    assert "matched no workload" not in run.stderr


def test_a_malformed_workload_that_is_not_selected_passes_through():
    text = APP.replace("  name: app\n", "  name: other\n", 1) + "        env: [null]\n---\n" + APP
    out = inject(text, OPTIONS)
    assert out.startswith(text[:text.index("---\n")])


@pytest.mark.parametrize("deep", [
    "a: " + "[" * 5000 + "]" * 5000 + "\n",
    "a:\n" + "".join("  " * i + "-\n" for i in range(1000)),
    "a: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
])
def test_a_very_deep_untouched_document_passes_through(deep):
    text = "---\nkind: ConfigMap\n" + deep + "---\n" + APP
    started = time.monotonic()
    run = _cli("--workload", "app", stdin=text)
    assert time.monotonic() - started < 20
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("---\nkind: ConfigMap\n" + deep + "---\n")
    assert _inits(_docs(run.stdout.split(deep, 1)[1])[-1]) == ["migrategate-wait"]


def test_a_very_deep_selected_workload_is_refused_naming_it():
    text = APP + "  extra:\n" + "".join("  " * i + "  -\n" for i in range(300))
    run = _cli("--workload", "app", stdin=text)
    assert run.returncode == 2 and run.stdout == ""
    assert "Deployment/app in document 1 (line 1)" in run.stderr and "deeper" in run.stderr


def test_a_selected_workload_too_deep_to_read_is_not_silently_left_ungated():
    text = APP + "  extra: " + "[" * 5000 + "]" * 5000 + "\n"
    started = time.monotonic()
    run = _cli("--workload", "app", stdin=text)
    assert time.monotonic() - started < 20
    assert run.returncode == 2 and run.stdout == ""
    assert "document 1" in run.stderr and "nest deeper" in run.stderr


def test_a_self_referencing_selected_workload_is_refused():
    run = _cli("--workload", "app", stdin=APP + "  loop: &l [*l]\n")
    assert run.returncode == 2 and "Deployment/app" in run.stderr


@pytest.mark.parametrize("extra", ["  when: 2020-13-45\n", "  big: " + "9" * 5000 + "\n"])
def test_values_python_cannot_build_do_not_crash(extra):
    run = _cli("--workload", "app", stdin=APP + extra)
    assert run.returncode in (0, 2), run.stderr
    if run.returncode == 0:
        assert _inits(_docs(run.stdout)[0]) == ["migrategate-wait"]


def test_an_unreadable_document_is_passed_through_and_said_so():
    bad = "---\nkind: ConfigMap\ndata: {a: [}\n"
    run = _cli("--workload", "app", stdin=bad + "---\n" + APP)
    assert run.returncode == 0 and run.stdout.startswith(bad)
    assert "document 1" in run.stderr and "unchanged" in run.stderr


# 6. alias bombs


def _bomb(levels: int, fan: int = 10) -> str:
    lines = ["  l0: &l0 [" + ", ".join(["lol"] * fan) + "]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["selected", "untouched"])
def test_an_alias_bomb_is_refused_not_expanded(where):
    bomb = "bomb:\n" + _bomb(7)
    assert len(bomb) < 1024
    text = (APP + bomb) if where == "selected" else ("---\nkind: ConfigMap\n" + bomb + "---\n"
                                                     + APP)
    started = time.monotonic()
    run = _cli("--workload", "app", stdin=text)
    assert time.monotonic() - started < 30
    assert run.returncode == 2 and run.stdout == "" and "alias" in run.stderr
    assert "document" in run.stderr


def test_a_merge_key_bomb_is_refused():
    lines = ["  m0: &m0 {a: 1, b: 2}"]
    for i in range(1, 9):
        lines.append(f"  m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 10) + "]}")
    run = _cli("--workload", "app", stdin="---\nkind: ConfigMap\nx:\n" + "\n".join(lines)
               + "\n---\n" + APP)
    assert run.returncode == 2 and "alias" in run.stderr


def test_ordinary_anchors_still_work():
    text = (APP.replace("      - name: app\n", "      - name: app\n        env: &env\n"
                        "        - {name: A, value: b}\n        - {name: C, value: d}\n")
            + "      - name: side\n        image: 'img:1'\n        env: *env\n")
    deployment = _docs(inject(text, OPTIONS))[0]
    gate = _pod(deployment)["initContainers"][0]
    assert [e["name"] for e in gate["env"]][:2] == ["A", "C"]
    assert _pod(deployment)["containers"][1]["env"][0] == {"name": "A", "value": "b"}


# 7. wait options are checked when rendering


@pytest.mark.parametrize("args, flag", [
    (["--timeout", "abc"], "--timeout"),
    (["--timeout", "-5"], "--timeout"),
    (["--interval", "-1"], "--interval"),
    (["--interval", "0"], "--interval"),
    (["--interval", "nan"], "--interval"),
    (["--preset", "nosuch"], "--preset"),
])
def test_bad_wait_options_are_refused_at_render_time(args, flag):
    run = _cli("--workload", "app", *args, stdin=APP)
    assert run.returncode == 2 and run.stdout == "" and flag in run.stderr


def test_bad_wait_options_are_refused_by_the_library():
    with pytest.raises(ConfigError, match="--timeout"):
        InjectOptions(workloads=["app"], timeout="abc")
    with pytest.raises(ConfigError) as err:
        InjectOptions(workloads=["app"], preset="nosuch")
    assert "--preset" in err.value.one_line() and "known presets: dify" in err.value.one_line()
    options = InjectOptions(workloads=["app"], timeout="900", interval="0.5", preset="dify")
    gate = _pod(_docs(inject(APP, options))[0])["initContainers"][0]
    assert gate["args"] == ["wait", "--timeout", "900", "--interval", "0.5"]


# 8. a workload that already runs migrategate


UPGRADE = APP + ("      initContainers:\n      - name: migrategate-upgrade\n"
                 "        image: 'img:1'\n        command: [python, -m, migrategate]\n"
                 "        args: [upgrade, --lock-timeout, '300']\n")


def test_a_workload_with_migrategates_own_upgrade_is_left_alone_and_said_so():
    other = APP.replace("  name: app\n", "  name: worker\n", 1)
    text = "---\n" + UPGRADE + "---\n" + other
    run = _cli("--workload", ".*", stdin=text)
    assert run.returncode == 0, run.stderr
    upgraded, worker = _docs(run.stdout)
    assert _inits(upgraded) == ["migrategate-upgrade"]
    assert run.stdout.startswith("---\n" + UPGRADE)
    assert _inits(worker) == ["migrategate-wait"]
    assert "Deployment/app" in run.stderr and "migrategate-upgrade" in run.stderr


def test_a_pattern_that_only_finds_an_already_gated_workload_is_not_an_error():
    run = _cli("--workload", "app", stdin=UPGRADE)
    assert run.returncode == 0 and run.stdout == UPGRADE


@pytest.mark.parametrize("container", [
    "      - name: migrate\n        image: x\n        command: [migrategate]\n",
    "      - name: m\n        image: x\n        command: [/usr/local/bin/migrategate, upgrade]\n",
    "      - name: m\n        image: x\n        command: [python3]\n"
    "        args: [-m, migrategate, upgrade]\n",
])
def test_migrategate_is_recognised_by_its_command_too(container):
    text = APP + "      initContainers:\n" + container
    assert inject(text, OPTIONS) == text
