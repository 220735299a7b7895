"""examples/dify/docker-compose.migrate.yaml: the one-shot migrate service and who waits for it."""

from __future__ import annotations

from pathlib import Path

import yaml

from migrategate.cli import build_parser

COMPOSE = Path(__file__).resolve().parents[2] / "examples" / "dify" / "docker-compose.migrate.yaml"
SERVICES = yaml.safe_load(COMPOSE.read_text())["services"]


def test_migrate_runs_in_the_api_service_image_and_env():
    migrate = SERVICES["migrate"]
    assert migrate["extends"] == {"file": "docker-compose.yaml", "service": "api"}
    assert "image" not in migrate  # the api's image, so always the api's tag
    assert migrate["restart"] == "no" and migrate["healthcheck"] == {"disable": True}


def test_migrate_command_is_a_valid_migrategate_upgrade_with_the_dify_preset():
    migrate = SERVICES["migrate"]
    assert migrate["entrypoint"] == ["python", "-m", "migrategate"]
    args = build_parser().parse_args(migrate["command"])
    assert (args.command, args.preset) == ("upgrade", "dify")


def test_migrategate_source_is_mounted_where_pythonpath_points():
    migrate = SERVICES["migrate"]
    (mount,) = migrate["volumes"]
    source, target, mode = mount.rsplit(":", 2)
    assert source.startswith("${MIGRATEGATE_SRC")
    assert (target, mode) == ("/opt/migrategate/migrategate", "ro")
    assert migrate["environment"]["PYTHONPATH"] == "/opt/migrategate"


def test_api_worker_and_beat_start_only_after_a_successful_migration():
    for name in ("api", "api_websocket", "worker", "worker_beat"):
        service = SERVICES[name]
        assert service["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert service["environment"]["MIGRATION_ENABLED"] == "false"
    assert SERVICES["migrate"]["environment"]["MIGRATION_ENABLED"] == "false"
    assert set(SERVICES) == {"migrate", "api", "api_websocket", "worker", "worker_beat"}
