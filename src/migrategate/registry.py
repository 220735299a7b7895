"""The database commands, once: the CLI (cli.py) and the library (``__init__``) run them here.

Each command names its help line, what it runs, what an interruption leaves behind and
what it does with a configuration error (``doctor`` reports it as its first check; the
others raise it). Which options each command takes is the option table's business
(``settings.OPTIONS``, ``Option.commands``). Imports stay lazy: ``--help`` and ``import
migrategate`` must not pay for SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .log import Writer
    from .report import Result
    from .settings import Option, Settings

Env = Optional[Mapping[str, str]]


def _upgrade(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    from . import commands

    return commands.upgrade(settings, writer, debug=debug)


def _verify(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    from . import commands

    return commands.verify(settings, writer)


def _wait(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    from . import commands

    return commands.wait(settings, writer)


def _status(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    from . import commands

    return commands.status(settings, writer)


def _plan(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    from . import commands

    return commands.plan(settings, writer)


def _repair(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    from . import commands

    return commands.repair(settings, writer)


def _history(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    from . import commands

    return commands.history_(settings, writer)


def _doctor_function() -> Callable[..., "Result"]:
    """``migrategate.doctor.doctor``, imported on first use without letting the submodule
    replace the package's public ``migrategate.doctor()`` function (importing a submodule
    sets the package attribute of its name). Not imported eagerly: it costs every process,
    each ``wait`` gate included, tens of milliseconds."""
    import sys

    package = sys.modules[__package__ or "migrategate"]
    public = getattr(package, "doctor", None)
    from .doctor import doctor

    if callable(public) and public is not doctor:
        package.doctor = public  # type: ignore[attr-defined]
    return doctor


def _doctor(settings: "Settings", writer: "Writer", env: Env, debug: bool) -> "Result":
    return _doctor_function()(settings, writer, env=env)


def _doctor_config_error(exc: ConfigError, writer: "Writer", env: Env) -> None:
    _doctor_function()(None, writer, config_error=exc, env=env)  # the config check, then raises


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Callable[["Settings", "Writer", Env, bool], "Result"]
    #: what an interrupted run tells the operator to do
    interrupted_hint: str = ""
    #: called with a configuration error before it is raised (doctor reports it as a check)
    on_config_error: Optional[Callable[[ConfigError, "Writer", Env], None]] = None

    @property
    def options(self) -> List["Option"]:
        from .settings import OPTIONS

        return [o for o in OPTIONS.values() if self.name in o.commands]


COMMANDS: Dict[str, Command] = {
    c.name: c
    for c in (
        Command("upgrade", "lock, apply pending revisions, verify", _upgrade,
                interrupted_hint="re-run to continue"),
        Command("verify", "check the database is at the scripts' head(s); no changes", _verify),
        Command("wait", "block until verify passes (for an app pod's initContainer)", _wait),
        Command("status", "current revision, heads, pending revisions, who holds the lock",
                _status),
        Command("doctor", "explain why the schema is not there: each check with what to do",
                _doctor, on_config_error=_doctor_config_error),
        Command("plan", "what the pending revisions will do to this database: statements, "
                "locks, table sizes, findings; changes nothing", _plan),
        Command("history", "migrategate's history of revision attempts, newest first: who "
                "ran what, when, how it ended; changes nothing", _history),
        Command("repair", "PostgreSQL: drop the INVALID indexes a failed CREATE INDEX "
                "CONCURRENTLY of the next pending revision left; shows what it will do, "
                "acts only with --yes", _repair,
                interrupted_hint="re-run 'migrategate repair' to see what is left"),
    )
}


def execute(name: str, given: Mapping[str, Any], env: Env = None,
            writer: Optional["Writer"] = None, debug: bool = False) -> "Result":
    """Resolve ``given`` (flags or keywords; None = not given) with ``env`` and run ``name``.

    The one way a command runs, from the CLI and from the library alike: secrets are
    registered before anything can print them, a configuration error goes through the
    command's ``on_config_error``, and an option the command doesn't take is a TypeError.
    """
    from .log import default_writer
    from .redact import register_secret
    from .settings import register_secrets, resolve

    command = COMMANDS[name]
    writer = default_writer if writer is None else writer
    taken = {o.name for o in command.options}
    unknown = sorted(k for k, v in given.items() if k not in taken and v is not None)
    if unknown:
        raise TypeError(f"{name} takes no option {', '.join(unknown)}")
    try:
        settings = resolve(given, env)
    except ConfigError as exc:
        for secret in exc.secrets:  # e.g. each part of a refused URL's password
            register_secret(secret)
        if command.on_config_error is not None:
            command.on_config_error(exc, writer, env)
        raise
    register_secrets(settings)
    return command.run(settings, writer, env, debug)


__all__: List[str] = ["COMMANDS", "Command", "execute"]
