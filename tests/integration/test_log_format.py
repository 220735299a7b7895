"""``--log-format json``: every stderr line is one JSON object (time, level, message) with
the same redaction, from the flag and from ``MIGRATEGATE_LOG_FORMAT``; stdout is untouched."""

from __future__ import annotations

import json

from factory import args_for, chain, migrategate, write_project


def _lines(stderr):
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert lines, "no log line at all: the check would prove nothing"
    for line in lines:
        assert set(line) == {"time", "level", "message"}
        assert line["time"].endswith("Z") and line["level"] in ("info", "warning", "error")
    return lines


def test_an_upgrade_logs_one_json_object_a_line(tmp_path, pg_url):
    mig = write_project(tmp_path, chain(3))
    run = migrategate("upgrade", "--log-format", "json", "--json", *args_for(pg_url, mig))
    assert run.code == 0, run.output
    lines = _lines(run.stderr)
    assert any("[3/3] r003" in line["message"] for line in lines)
    assert json.loads(run.stdout)["exit_code"] == 0  # the report is still one document


def test_a_failure_is_an_error_object_and_the_password_is_masked(tmp_path, pg_url):
    mig = write_project(tmp_path, chain(1))
    wrong = pg_url.replace("pg-test-secret", 'wr"ong\\pass')
    run = migrategate("verify", *args_for(wrong, mig), env={"MIGRATEGATE_LOG_FORMAT": "json"})
    assert run.code == 4, run.output
    errors = [line for line in _lines(run.stderr) if line["level"] == "error"]
    assert errors and "authentication" in errors[0]["message"]
    assert 'wr"ong' not in run.output and "ong\\\\pass" not in run.output


def test_an_unknown_log_format_is_refused(tmp_path, sqlite_url):
    mig = write_project(tmp_path, chain(1))
    run = migrategate("verify", *args_for(sqlite_url, mig),
                      env={"MIGRATEGATE_LOG_FORMAT": "yaml"})
    assert run.code == 2, run.output
    assert "must be one of text, json, got 'yaml'" in run.stderr
