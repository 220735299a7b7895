"""migrategate: Alembic migrations whose exit code tells the truth.

Library use mirrors the CLI: each function takes the same options as keyword
arguments (``database_url=``, ``migrations=``, ``target=``, ``expect_tables=``,
…), returns a :class:`~migrategate.report.Result` when the database is
verified, and otherwise raises a :class:`~migrategate.errors.MigrategateError`
subclass whose ``exit_code`` is the CLI's. Environment variables
(``MIGRATEGATE_*``) apply unless ``env={}`` is passed.

Imports are lazy so that ``import migrategate`` stays cheap.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from ._version import __version__ as __version__
from .errors import (  # noqa: F401  (re-exported)
    EXIT_CODES,
    AmbiguousTarget,
    AuthError,
    ConfigError,
    DatabaseError,
    Interrupted,
    LockLost,
    LockTimeout,
    PermissionDenied,
    MigrategateError,
    MigrationFailed,
    UnknownRevision,
    UnreachableError,
    VerificationFailed,
    WaitTimeout,
)


def _run(command: str, env: Optional[Mapping[str, str]], options: Any) -> Any:
    from . import commands
    from .settings import register_secrets, resolve

    from .settings import OPTIONS

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:  # a typo must not fall back to $DATABASE_URL and migrate another database
        raise TypeError(f"migrategate.{command}() got unknown option(s): {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(OPTIONS))}")
    settings = resolve(options, env)
    register_secrets(settings)
    if command == "doctor":
        from .doctor import doctor as run_doctor

        return run_doctor(settings)
    return getattr(commands, command)(settings)


def upgrade(env: Optional[Mapping[str, str]] = None, **options: Any) -> Any:
    """Lock, apply pending revisions, verify; see the module docstring for options."""
    return _run("upgrade", env, options)


def verify(env: Optional[Mapping[str, str]] = None, **options: Any) -> Any:
    return _run("verify", env, options)


def wait(env: Optional[Mapping[str, str]] = None, **options: Any) -> Any:
    return _run("wait", env, options)


def status(env: Optional[Mapping[str, str]] = None, **options: Any) -> Any:
    return _run("status", env, options)


def doctor(env: Optional[Mapping[str, str]] = None, **options: Any) -> Any:
    return _run("doctor", env, options)
