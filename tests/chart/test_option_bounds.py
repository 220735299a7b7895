"""What `helm install` accepts, the pod's migrategate accepts: the schema's bounds are the
option table's (settings.OPTIONS), and each value at a bound renders into a flag or an
environment variable the CLI parses to the same number. A value the CLI refuses is refused
by helm already, not by a pod exiting 2 after `helm install` said yes.

tests/unit/test_option_table.py checks every probe value against the schema alone; this
file renders the edges with a real helm (numbers pass through Go's float64 formatting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from chartlib import Helm, one, values

from migrategate import cli
from migrategate.settings import OPTIONS, resolve

LOW = {"connectTimeout": 0,
       "upgrade": {"lockTimeout": 0, "pgLockTimeout": 0.001, "statementTimeout": 0.001,
                   "lockRetries": 1, "mysqlLockWaitTimeout": 1}}


def _max(name: str) -> int:
    return int(OPTIONS[name].maximum or 0)


HIGH = {"connectTimeout": 31536000,
        "upgrade": {"lockTimeout": 31536000, "pgLockTimeout": _max("pg_lock_timeout"),
                    "statementTimeout": _max("statement_timeout"),
                    "lockRetries": _max("lock_retries"),
                    "mysqlLockWaitTimeout": _max("mysql_lock_wait_timeout")}}
GATE_LOW = {"interval": OPTIONS["interval"].minimum, "timeout": 0}
GATE_HIGH = {"interval": 1e7, "timeout": 31536000}


def _settings(container: Dict[str, Any]) -> Any:
    """The container's args and plain env, as migrategate resolves them in the pod."""
    env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    args = cli.build_parser().parse_args(container["args"])
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}
    return resolve(flags, env)  # raises ConfigError: the pod would exit 2


@pytest.mark.parametrize("over", [LOW, HIGH], ids=["low", "high"])
def test_upgrade_values_at_the_bounds_reach_the_cli_unchanged(helm: Helm, over) -> None:
    job = one(helm.template(values=values(**over)), "Job")
    (container,) = [c for c in job["spec"]["template"]["spec"]["containers"]
                    if c["name"] == "migrate"]

    settings = _settings(container)

    up = over["upgrade"]
    assert settings.connect_timeout == over["connectTimeout"]
    assert (settings.lock_timeout, settings.pg_lock_timeout, settings.statement_timeout,
            settings.lock_retries, settings.mysql_lock_wait_timeout) == (
        up["lockTimeout"], up["pgLockTimeout"], up["statementTimeout"], up["lockRetries"],
        up["mysqlLockWaitTimeout"])


@pytest.mark.parametrize("gate", [GATE_LOW, GATE_HIGH], ids=["low", "high"])
def test_gate_values_at_the_bounds_reach_the_cli_unchanged(helm: Helm, parent_chart: Path,
                                                           gate) -> None:
    docs = helm.template(chart=parent_chart, values={"migrategate": {"gate": gate}})
    (wait,) = one(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]

    settings = _settings(wait)

    assert (settings.interval, settings.timeout) == (gate["interval"], gate["timeout"])


REFUSED: List[Tuple[Dict[str, Any], str]] = [
    ({"upgrade": {"pgLockTimeout": 0}}, "/upgrade/pgLockTimeout"),
    ({"upgrade": {"pgLockTimeout": 0.0005}}, "/upgrade/pgLockTimeout"),
    ({"upgrade": {"statementTimeout": 0}}, "/upgrade/statementTimeout"),
    ({"upgrade": {"mysqlLockWaitTimeout": 0}}, "/upgrade/mysqlLockWaitTimeout"),
    ({"upgrade": {"mysqlLockWaitTimeout": 31536001}}, "/upgrade/mysqlLockWaitTimeout"),
    ({"upgrade": {"lockRetries": 1001}}, "/upgrade/lockRetries"),
    ({"upgrade": {"lockTimeout": -1}}, "/upgrade/lockTimeout"),
    ({"gate": {"interval": 0.05}}, "/gate/interval"),
    ({"gate": {"interval": 0}}, "/gate/interval"),
]


@pytest.mark.parametrize("over,where", REFUSED, ids=[w for _, w in REFUSED])
def test_helm_refuses_what_the_cli_refuses(helm: Helm, over, where) -> None:
    assert where in helm.template_error(values=values(**over))
