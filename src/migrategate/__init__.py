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

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence

from ._version import __version__ as __version__
if TYPE_CHECKING:  # pragma: no cover
    from .report import Result

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


Seconds = Optional[float]
Text = Optional[str]
Tables = Optional[Sequence[str]]


def _run(command: str, given: Dict[str, Any]) -> "Result":
    from .registry import execute

    env = given.pop("env")
    return execute(command, given, env)


# Keyword-only and typed: a misspelt option is a TypeError, never a silent fall-back to
# $DATABASE_URL. None means "not given": the environment (unless env={}), a preset or the
# default applies, as for the CLI. Each signature is the command's options in the option
# table (settings.OPTIONS, Option.commands; tests/unit/test_option_table.py holds them to it).

def upgrade(*, database_url: Text = None, password_file: Text = None, password: Text = None,
            migrations: Text = None, config: Text = None, preset: Text = None,
            app_root: Text = None, flask_app: Text = None, target: Text = None,
            expect_tables: Tables = None, connect_timeout: Seconds = None,
            lock_timeout: Seconds = None, pg_lock_timeout: Seconds = None,
            mysql_lock_wait_timeout: Optional[int] = None,
            lock_retries: Optional[int] = None, statement_timeout: Seconds = None,
            single_transaction: Optional[bool] = None, allow_ahead: Optional[bool] = None,
            allow_proxy: Optional[bool] = None, heartbeat: Seconds = None,
            refuse: Text = None, show_plan: Optional[bool] = None,
            version_table: Text = None, version_table_schema: Text = None,
            lock_name: Text = None, application_name: Text = None,
            history_table: Text = None, no_history: Optional[bool] = None,
            history_reader: Text = None, no_resume: Optional[bool] = None,
            env: Optional[Mapping[str, str]] = None) -> "Result":
    """Lock, apply pending revisions, verify; returns only when verified at the target."""
    return _run("upgrade", dict(locals()))


def verify(*, database_url: Text = None, password_file: Text = None, password: Text = None,
           migrations: Text = None, config: Text = None, preset: Text = None,
           app_root: Text = None, flask_app: Text = None, target: Text = None,
           expect_tables: Tables = None, connect_timeout: Seconds = None,
           allow_ahead: Optional[bool] = None, version_table: Text = None,
           version_table_schema: Text = None, lock_name: Text = None,
           application_name: Text = None, history_table: Text = None,
           no_history: Optional[bool] = None, strict_checksums: Optional[bool] = None,
           env: Optional[Mapping[str, str]] = None) -> "Result":
    """The database is at the scripts' head(s) (or ``target``) and the tables exist."""
    return _run("verify", dict(locals()))


def wait(*, database_url: Text = None, password_file: Text = None, password: Text = None,
         migrations: Text = None, config: Text = None, preset: Text = None,
         app_root: Text = None, flask_app: Text = None, target: Text = None,
         expect_tables: Tables = None, connect_timeout: Seconds = None,
         timeout: Seconds = None, interval: Seconds = None,
         allow_ahead: Optional[bool] = None, version_table: Text = None,
         version_table_schema: Text = None, lock_name: Text = None,
         application_name: Text = None, history_table: Text = None,
         no_history: Optional[bool] = None, strict_checksums: Optional[bool] = None,
         env: Optional[Mapping[str, str]] = None) -> "Result":
    """Block until verify passes (or raise WaitTimeout)."""
    return _run("wait", dict(locals()))


def status(*, database_url: Text = None, password_file: Text = None, password: Text = None,
           migrations: Text = None, config: Text = None, preset: Text = None,
           app_root: Text = None, flask_app: Text = None, connect_timeout: Seconds = None,
           lock_name: Text = None, version_table: Text = None,
           version_table_schema: Text = None, application_name: Text = None,
           history_table: Text = None, no_history: Optional[bool] = None,
           env: Optional[Mapping[str, str]] = None) -> "Result":
    """Current revision(s), heads, pending revisions and who holds the lock."""
    return _run("status", dict(locals()))


def doctor(*, database_url: Text = None, password_file: Text = None, password: Text = None,
           migrations: Text = None, config: Text = None, preset: Text = None,
           app_root: Text = None, flask_app: Text = None, expect_tables: Tables = None,
           redis_url: Text = None, connect_timeout: Seconds = None, lock_name: Text = None,
           version_table: Text = None, version_table_schema: Text = None,
           application_name: Text = None, history_table: Text = None,
           no_history: Optional[bool] = None,
           env: Optional[Mapping[str, str]] = None) -> "Result":
    """Explain, check by check, why the schema is not there."""
    return _run("doctor", dict(locals()))


def plan(*, database_url: Text = None, password_file: Text = None, password: Text = None,
         migrations: Text = None, config: Text = None, preset: Text = None,
         app_root: Text = None, flask_app: Text = None, target: Text = None,
         connect_timeout: Seconds = None, pg_lock_timeout: Seconds = None,
         mysql_lock_wait_timeout: Optional[int] = None, lock_retries: Optional[int] = None,
         statement_timeout: Seconds = None, rehearse_on: Text = None,
         version_table: Text = None, version_table_schema: Text = None,
         lock_name: Text = None, application_name: Text = None,
         env: Optional[Mapping[str, str]] = None) -> "Result":
    """What the pending revisions will do to this database (``result.extra["plan"]``);
    changes nothing. The lock options say what ``upgrade`` would run them with."""
    return _run("plan", dict(locals()))


def history(*, database_url: Text = None, password_file: Text = None, password: Text = None,
            migrations: Text = None, config: Text = None, preset: Text = None,
            app_root: Text = None, flask_app: Text = None, connect_timeout: Seconds = None,
            history_table: Text = None, version_table: Text = None,
            version_table_schema: Text = None, lock_name: Text = None,
            application_name: Text = None,
            env: Optional[Mapping[str, str]] = None) -> "Result":
    """migrategate's history of revision attempts, newest first (``result.extra["history"]``:
    one dict per row); changes nothing."""
    return _run("history", dict(locals()))


def repair(*, database_url: Text = None, password_file: Text = None, password: Text = None,
           migrations: Text = None, config: Text = None, preset: Text = None,
           app_root: Text = None, flask_app: Text = None, connect_timeout: Seconds = None,
           lock_timeout: Seconds = None, yes: Optional[bool] = None,
           version_table: Text = None, version_table_schema: Text = None,
           lock_name: Text = None, application_name: Text = None,
           history_table: Text = None,
           env: Optional[Mapping[str, str]] = None) -> "Result":
    """Get out of a half-applied next pending revision: drop the INVALID indexes its failed
    CONCURRENTLY build left (PostgreSQL), or resume it after the statements its attempt
    committed (MySQL/MariaDB, from the journal); without ``yes=True`` only says what it would
    do (``result.extra["repair"]``)."""
    return _run("repair", dict(locals()))
