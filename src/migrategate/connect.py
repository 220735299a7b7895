"""Engines and connections: retry while the server is not up, fail at once on bad credentials.

In Kubernetes the database often starts after the migration pod, so
"unreachable" is retried with backoff until ``--connect-timeout``. A wrong
password never fixes itself, so it fails fast with its own exit code.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from . import dberrors, deadline
from .dberrors import describe
from .errors import AuthError, ConfigError, PermissionDenied, UnreachableError
from .log import Writer, default_writer
from .retry import Backoff, interruptible
from .settings import Settings
from .dialect import PostgreSQL, dialect_for
from .dialect import of as dialect_of
from .urls import mask_url

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection, Engine

#: PyMySQL's socket timeout on a control connection: a backstop for the round trips no
#: deadline is armed for (SET AUTOCOMMIT, ROLLBACK on close), later than any deadline.
BACKSTOP_SECONDS = 5


def per_attempt(settings: Settings) -> int:
    return int(min(max(settings.connect_timeout, 2), 10))


def engine_options(settings: Settings, control: bool = True) -> Dict[str, Any]:
    """connect_args that name the runner, bound each attempt and keep idle sessions alive
    (per database: :meth:`migrategate.dialect.Dialect.connect_args`).

    ``control`` connections (ours: lock, plan, verify) also bound the MySQL
    handshake read; a migration connection must not, or a long ALTER would
    time out on the client while the server keeps running it.
    """
    assert settings.url is not None
    return dialect_for(settings.dialect).connect_args(settings, per_attempt(settings), control)


def apply_session_settings(connection: "Connection", settings: Settings) -> None:
    """Behind a proxy: SET the session settings on env.py's connection and check they hold.

    Raw DBAPI cursor, as in :meth:`migrategate.fence.Fence.attach`: through
    SQLAlchemy the statements would autobegin a transaction Alembic then treats
    as env.py's own. The driver still opens one (psycopg2 is not in autocommit),
    and a SET rolled back with it would be undone — with the first revision's
    transaction, say, rolled back by a lock retry. So when SQLAlchemy has no
    transaction open, the SETs are committed, and read back in a transaction of
    their own: a proxy that hands the next transaction to another server
    session (transaction pooling) shows here as a setting not in force, and is
    refused (exit 2) instead of migrating without ``--pg-lock-timeout``.
    """
    if not settings.behind_proxy:
        return
    from .fence import dbapi_connection

    major = (connection.dialect.server_version_info or (0,))[0]  # all it decides is 14+
    wanted = PostgreSQL().session_settings(settings, int(major) * 10000)
    if not wanted:
        return
    dbapi = dbapi_connection(connection)
    ours = not connection.in_transaction()
    cursor = dbapi.cursor()
    try:
        for name, value in wanted.items():
            cursor.execute(f"SET {name} = {int(value)}")
        if ours:
            dbapi.commit()
        names = ", ".join(f"'{name}'" for name in wanted)
        cursor.execute(f"SELECT name, setting FROM pg_settings WHERE name IN ({names})")
        in_force = {str(name): str(value) for name, value in cursor.fetchall()}
        if ours:
            dbapi.commit()
    finally:
        cursor.close()
    wrong = [f"{name} is {in_force.get(name, 'unset')} ms, not {value}"
             for name, value in wanted.items() if in_force.get(name) != str(value)]
    if wrong:
        raise ConfigError(
            "the proxy between migrategate and PostgreSQL does not keep session settings: "
            f"after SET on the migration connection, {'; '.join(wrong)}",
            "pool per session (PgBouncer pool_mode=session) or connect to PostgreSQL "
            "directly: without them --pg-lock-timeout and --statement-timeout are not in "
            "force; nothing was applied")


def server_version(conn: "Connection") -> int:
    """The server's version number where a rule depends on it (PostgreSQL), else 0."""
    return dialect_of(conn).server_version(conn)


def make_engine(settings: Settings,
                remaining: Optional[Callable[[], float]] = None) -> "Engine":
    """An engine for control connections (ours: lock, plan, verify, status, wait).

    Every round trip on them has a client-side deadline (:mod:`migrategate.deadline`):
    a statement ``--connect-timeout`` (2–30 s), what runs right after connecting
    the per-attempt bound. ``remaining`` (``wait``) caps both, and each connection
    attempt, by the seconds the command has left.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    assert settings.url is not None
    engine = create_engine(settings.url, poolclass=NullPool,
                           connect_args=engine_options(settings))
    dialect = dialect_for(settings.dialect)
    if not dialect.network:
        return engine  # a file: nothing to stall
    statement = deadline.control_seconds(settings.connect_timeout)
    attempt = per_attempt(settings)
    deadline.install(engine, deadline.bounded(statement, remaining),
                     deadline.bounded(attempt, remaining))
    if remaining is not None:
        event.listen(engine, "do_connect", _capped_attempt(attempt, remaining))
    dialect.tune_engine(engine, statement + BACKSTOP_SECONDS)
    return engine


def _capped_attempt(attempt: int, remaining: Callable[[], float]) -> Callable[..., None]:
    """A connection attempt never outlasts the command (the drivers' floor is 2 s)."""
    import math

    def do_connect(dialect: Any, record: Any, cargs: Any, cparams: Dict[str, Any]) -> None:
        seconds = max(2, min(attempt, math.ceil(remaining())))
        for key in ("connect_timeout", "timeout", "read_timeout", "write_timeout"):
            if key in cparams:
                cparams[key] = seconds

    return do_connect


def connect(
    settings: Settings,
    engine: Optional["Engine"] = None,
    writer: Writer = default_writer,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    announce: bool = True,
) -> "Connection":
    """A live connection, retrying an unreachable server until ``connect_timeout``.

    Only "unreachable" is retried. A wrong password, a missing database or a
    missing privilege never fixes itself, so each fails at once with its own
    exit code, decided by the error code the server sent. ``announce``: log a
    "connecting to" line first (a silent server then shows where we are stuck).
    """
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    engine = engine or make_engine(settings)
    assert settings.url is not None
    where = mask_url(settings.url)
    if announce:
        writer.info(f"connecting to {where}")
    backoff = Backoff(settings.connect_timeout, first=0.25, cap=5.0, sleep=sleep, clock=clock)
    while True:
        try:
            return blocking(engine, engine.connect)
        except UnicodeError as exc:  # the message would quote a character of the password
            raise ConfigError(
                f"the {settings.url.get_driver_name()} driver cannot send these credentials "
                f"({getattr(exc, 'encoding', 'its encoding')}: {getattr(exc, 'reason', '')})",
                "PyMySQL sends passwords as latin-1: use an ASCII password, or the mysqldb "
                "driver (mysql+mysqldb://)") from None
        except (DBAPIError, SQLAlchemyError, OSError, deadline.Stalled) as exc:
            # Stalled: the server took the connection, then went silent (retried alike)
            if (not isinstance(exc, deadline.Stalled)
                    and dberrors.category(exc) != dberrors.UNREACHABLE):
                raise refused(exc, where, settings.url.database) from None
            reason = describe(exc)
            if backoff.expired:
                raise UnreachableError(
                    f"database {where} unreachable after {backoff.waited:.0f}s "
                    f"({backoff.attempts + 1} attempts): {reason}",
                    "check host, port and that the server is up; raise --connect-timeout "
                    "if it starts slowly",
                ) from None
            if backoff.should_log():
                writer.info(f"waiting for database {where}: {reason}")
            backoff.pause()


def blocking(engine: "Engine", fn: Callable[[], Any]) -> Any:
    """``fn`` made interruptible by signals, except on SQLite (its objects are
    bound to the thread that made them; nothing there blocks on a network)."""
    if not dialect_of(engine).network:
        return fn()
    return interruptible(fn)


def refused(exc: BaseException, where: str, database: Optional[str]) -> Exception:
    """The typed error for a connection the server turned down (not retried)."""
    return refused_as(dberrors.category(exc), describe(exc), dberrors.code_of(exc), where,
                      database)


def refused_as(kind: str, reason: str, code: Optional[str], where: str,
               database: Optional[str]) -> Exception:
    """The one mapping from a connection refusal's category to its typed error."""
    tag = f" [{code}]" if code else ""
    if kind == dberrors.UNREACHABLE:
        return UnreachableError(f"database {where} unreachable{tag}: {reason}",
                                "check host, port and that the server is up")
    if kind == dberrors.AUTH:
        return AuthError(f"authentication failed for {where}{tag}: {reason}",
                         "check the user and the password Secret; the password was not printed")
    if kind == dberrors.MISSING_DATABASE:
        name = repr(database) if database else "named in the URL"
        return ConfigError(f"database {name} does not exist on the server ({where}){tag}",
                           "create it, or fix the database name in the URL / DB_DATABASE")
    if kind == dberrors.PRIVILEGE:
        return PermissionDenied(f"permission denied on {where}{tag}: {reason}",
                                "grant the user what it needs: CONNECT on the database, CREATE "
                                "on its schema for migrations (MySQL: the privileges on it)")
    if kind == dberrors.STARTUP_PARAMETER:
        return ConfigError(
            f"a proxy in front of {where} refused the connection: {reason}",
            "PgBouncer forwards no libpq 'options' (e.g. -c timezone=... in the URL, "
            "connect_args or PGOPTIONS): remove them, or list 'options' in PgBouncer's "
            "ignore_startup_parameters (they are then dropped, not applied); migrategate's "
            "own session settings are SET instead behind a proxy (--allow-proxy)")
    if kind == dberrors.CONFIG:
        return ConfigError(f"cannot open {where}: {reason}",
                           "check the path and that its directory exists and is writable")
    return AuthError(f"the server refused the connection to {where}{tag}: {reason}",
                     "check the user, the password, the database name and the server's "
                     "access rules (pg_hba.conf); not retried")
