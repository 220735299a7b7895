"""One version: src/migrategate/_version.py, and everything that shows a version agrees."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import yaml

import migrategate
from migrategate import _version

REPO = Path(__file__).resolve().parents[2]
VERSION = _version.__version__


def test_the_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION


def test_package_attribute_is_the_version() -> None:
    assert migrategate.__version__ == VERSION


def test_installed_metadata_is_the_version() -> None:
    assert importlib.metadata.version("migrategate") == VERSION


def test_cli_prints_the_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "migrategate", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"migrategate {VERSION}"


def test_chart_version_and_app_version_are_the_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "migrategate" / "Chart.yaml").read_text())
    # The chart ships this package's source: one release number for both.
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION), \
        "bump Chart.yaml version and appVersion together with src/migrategate/_version.py"


def test_the_version_is_written_once() -> None:
    written = [p.relative_to(REPO).as_posix()
               for p in sorted((REPO / "src").rglob("*.py"))
               if re.search(r"^__version__\s*=", p.read_text(), re.M)]
    assert written == ["src/migrategate/_version.py"]
    tables = re.split(r"^\[", (REPO / "pyproject.toml").read_text(), flags=re.M)
    project = next(t for t in tables if t.startswith("project]"))
    dynamic = next(t for t in tables if t.startswith("tool.setuptools.dynamic]"))
    assert not re.search(r"^version\s*=", project, re.M), "pyproject reads the version"
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert 'version = {attr = "migrategate._version.__version__"}' in dynamic


def test_the_changelog_has_the_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(VERSION)} — \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M), \
        f"CHANGELOG.md needs a '## {VERSION} — YYYY-MM-DD' section"
