"""One output path, one command registry, each subcommand its own usage.

In-process runs of ``cli.run`` (argv and env given), without a database: every case here
ends in a usage or configuration error, before anything connects.
"""

from __future__ import annotations

import inspect
import json

import pytest

import migrategate
from migrategate import cli
from migrategate.errors import ConfigError

COMMANDS = ("doctor", "status", "upgrade", "verify", "wait")  # the database commands

BAD = ["--connect-timeout", "soon"]  # a configuration error of every database command


def _output(how: str, log) -> tuple:
    """(extra argv, env) asking for JSON and a termination log by flag or by environment."""
    if how == "flag":
        return ["--json", "--termination-log", str(log)], {}
    return [], {"MIGRATEGATE_JSON": "1", "MIGRATEGATE_TERMINATION_LOG": str(log)}


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_configuration_error_goes_the_one_output_path(command, how, tmp_path, capsys):
    log = tmp_path / "termination-log"
    argv, env = _output(how, log)

    code = cli.run([command, *BAD, *argv], env)

    assert code == 2
    report = json.loads(capsys.readouterr().out)  # one JSON document, whatever asked for it
    assert report["exit_code"] == 2 and report["command"] == command
    assert "--connect-timeout must be a number" in json.dumps(report)  # doctor: in its check
    assert log.read_text().startswith(f"migrategate {command}: exit 2 (config-error)")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_configuration_error_from_the_environment_goes_the_same_path(how, tmp_path, capsys):
    log = tmp_path / "termination-log"
    argv, env = _output(how, log)

    code = cli.run(["wait", *argv], {**env, "MIGRATEGATE_WAIT_INTERVAL": "0.05"})

    assert code == 2
    assert "MIGRATEGATE_WAIT_INTERVAL" in json.loads(capsys.readouterr().out)["message"]
    assert "at least 0.1 s" in log.read_text()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_usage_error_goes_the_same_path(how, tmp_path, capsys):
    log = tmp_path / "termination-log"
    argv, env = _output(how, log)

    code = cli.run(["verify", *argv, "--no-such-flag"], env)

    assert code == 2
    out = capsys.readouterr().out
    assert json.loads(out)["outcome"] == "usage-error"
    assert "unrecognized arguments: --no-such-flag" in log.read_text()


def test_text_output_and_no_log_stay_text_on_a_configuration_error(tmp_path, capsys):
    code = cli.run(["verify", *BAD, "--termination-log", ""], {"MIGRATEGATE_JSON": "0"})

    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--connect-timeout must be a number" in captured.err


def test_a_malformed_json_setting_is_reported_in_text(capsys):
    code = cli.run(["verify"], {"MIGRATEGATE_JSON": "maybe"})

    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "MIGRATEGATE_JSON must be true or false" in captured.err


# ------------------------------------------------------------------ one command registry

def test_the_cli_and_the_library_run_the_commands_of_one_registry():
    from migrategate.registry import COMMANDS

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS) | {"inject"}  # inject: a post-renderer
    assert cli.COMMANDS == tuple(COMMANDS)
    for name, command in COMMANDS.items():
        assert callable(getattr(migrategate, name)), name
        assert sub.choices[name].description == command.help


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_and_library_dispatch_to_the_same_function(command, monkeypatch, capsys):
    """Both go through registry.execute: the same settings reach the same command."""
    import importlib

    from migrategate.report import Result

    seen = []

    def fake(settings, *args, **kwargs):
        seen.append((settings.connect_timeout, settings.target))
        return Result(command, outcome="ok", exit_code=0, message="fake")

    module = importlib.import_module("migrategate.doctor" if command == "doctor"
                                     else "migrategate.commands")
    monkeypatch.setattr(module, command, fake)
    env = {"MIGRATEGATE_CONNECT_TIMEOUT": "7"}

    assert cli.run([command], env) == 0
    getattr(migrategate, command)(env=env)

    assert seen == [(7.0, None), (7.0, None)]


def test_doctor_reports_a_configuration_error_as_a_check_from_the_library_too(capsys):
    with pytest.raises(ConfigError) as lib:
        migrategate.doctor(env={"MIGRATEGATE_CONNECT_TIMEOUT": "soon"})
    code = cli.run(["doctor", "--json"], {"MIGRATEGATE_CONNECT_TIMEOUT": "soon"})
    report = json.loads(capsys.readouterr().out)

    assert code == lib.value.exit_code == 2
    assert [c.name for c in lib.value.result.checks] == [c["name"] for c in report["checks"]]
    assert report["checks"][0]["name"] == "config" and not report["checks"][0]["ok"]


def test_the_library_doctor_stays_callable():
    """Importing the doctor module once must not replace migrategate.doctor (the function)."""
    for _ in range(2):
        with pytest.raises(ConfigError):
            migrategate.doctor(env={})
    assert inspect.isfunction(migrategate.doctor)


# ------------------------------------------------------------------ a subcommand's usage

@pytest.mark.parametrize("command", list(COMMANDS) + ["inject"])
def test_a_misspelt_option_prints_the_subcommands_usage(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args([command, "--conect-timeout", "3"])

    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: migrategate {command} [-h]")
    assert f"migrategate {command}: error: unrecognized arguments: --conect-timeout 3" in err


def test_a_misspelt_option_through_run_says_which_subcommand(capsys):
    assert cli.run(["verify", "--conect-timeout", "3"], {}) == 2
    err = capsys.readouterr().err
    assert "usage: migrategate verify" in err and "migrategate verify: error:" in err


def test_a_k8s_event_that_cannot_be_posted_is_a_warning_not_an_exit_code(tmp_path):
    """--k8s-event outside a pod with a token: the outcome stands, one warning says why."""
    from migrategate.k8sevent import event_for, post
    from migrategate.report import Result

    result = Result("upgrade", outcome="migration-failed", exit_code=6,
                    message="c003 failed: boom", failed_revision="c003")
    assert "no service-account token" in post(result, {}, sa_dir=str(tmp_path))
    event = event_for(result, {"MIGRATEGATE_JOB_NAME": "shop-migrate-1", "HOSTNAME": "p"}, "ns")
    assert event["involvedObject"] == {"apiVersion": "batch/v1", "kind": "Job",
                                       "name": "shop-migrate-1", "namespace": "ns"}
    assert (event["reason"], event["type"]) == ("MigrationFailed", "Warning")
    assert event["message"] == "migrategate upgrade: exit 6 (migration-failed) revision c003: " \
                               "c003 failed: boom"
