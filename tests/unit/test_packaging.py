"""The package as a user installs it: scripts/test.sh installs this tree as a wheel (not
editable), and every test imports that installed copy — so these pin what the wheel carries."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import migrategate
from factory import cli_env

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src" / "migrategate"
INSTALLED = Path(migrategate.__file__).resolve().parent
FILES = importlib.metadata.files("migrategate") or []


def test_tests_import_the_installed_package_not_src() -> None:
    assert INSTALLED != SOURCE.resolve(), \
        "migrategate is imported from src/ (editable install?): run bash scripts/test.sh"
    assert INSTALLED.parent.name == "site-packages", INSTALLED


def test_every_source_module_is_in_the_wheel() -> None:
    shipped = {f.as_posix() for f in FILES if f.parts[0] == "migrategate" and f.suffix == ".py"}
    source = {f"migrategate/{p.relative_to(SOURCE).as_posix()}" for p in SOURCE.rglob("*.py")
              if "__pycache__" not in p.parts}
    assert shipped == source


def test_the_package_is_typed() -> None:
    assert "migrategate/py.typed" in {f.as_posix() for f in FILES}
    assert (INSTALLED / "py.typed").is_file()


def test_the_licence_is_in_the_metadata() -> None:
    assert importlib.metadata.metadata("migrategate")["License-Expression"] == "MIT"
    (licence,) = [f for f in FILES if f.name == "LICENSE"]
    assert licence.read_text() == (REPO / "LICENSE").read_text()


def test_console_script_is_declared_and_installed() -> None:
    dist = importlib.metadata.distribution("migrategate")
    scripts = [(ep.name, ep.value) for ep in dist.entry_points if ep.group == "console_scripts"]
    assert scripts == [("migrategate", "migrategate.cli:main")]
    script = Path(sys.executable).parent / "migrategate"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True,
                          env=cli_env(), timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, f"migrategate {migrategate.__version__}")


def test_console_script_runs_the_quickstart(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "migrategate"
    proc = subprocess.run(
        [str(script), "upgrade", "--migrations", str(REPO / "examples/quickstart/migrations"),
         "--database-url", f"sqlite:///{tmp_path / 'quickstart.db'}", "--expect-table",
         "accounts"],
        capture_output=True, text=True, env=cli_env(), cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
