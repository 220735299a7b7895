"""Engines and connections: retry while the server is not up, fail at once on bad credentials.

In Kubernetes the database often starts after the migration pod, so
"unreachable" is retried with backoff until ``--connect-timeout``. A wrong
password never fixes itself, so it fails fast with its own exit code.
"""

from __future__ import annotations

import random
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from .errors import AuthError, ConfigError, UnreachableError
from .log import Writer, default_writer
from .settings import Settings, mask_url

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection, Engine

_AUTH_PATTERNS = re.compile(
    r"password authentication failed|authentication failed|no password supplied|"
    r"password is required|role \S+ does not exist|no pg_hba\.conf entry|"
    r"access denied for user|pg_hba\.conf rejects",
    re.IGNORECASE,
)
_MYSQL_AUTH_ERRNOS = {1044, 1045, 1698, 1251}


def engine_options(settings: Settings) -> Dict[str, Any]:
    """connect_args that name the runner and bound each connection attempt."""
    assert settings.url is not None
    backend = settings.url.get_backend_name()
    driver = settings.url.get_driver_name()
    per_attempt = int(min(max(settings.connect_timeout, 2), 10))
    args: Dict[str, Any] = {}
    if backend == "postgresql":
        if driver in ("psycopg2", "psycopg"):
            args["application_name"] = settings.application_name
            args["connect_timeout"] = per_attempt
        elif driver == "pg8000":
            args["application_name"] = settings.application_name
            args["timeout"] = per_attempt
    elif backend in ("mysql", "mariadb"):
        if driver in ("pymysql", "mysqldb"):
            args["connect_timeout"] = per_attempt
            if driver == "pymysql":
                args["program_name"] = settings.application_name
    return args


def make_engine(settings: Settings) -> "Engine":
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    assert settings.url is not None
    return create_engine(settings.url, poolclass=NullPool, connect_args=engine_options(settings))


def classify(exc: BaseException) -> str:
    """'auth', 'config' or 'unreachable' for an error raised while connecting."""
    orig = getattr(exc, "orig", None) or exc
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_AUTH_ERRNOS:
        return "auth"
    text = str(orig)
    if _AUTH_PATTERNS.search(text):
        return "auth"
    if "unable to open database file" in text:
        return "config"
    return "unreachable"


def describe(exc: BaseException) -> str:
    """The driver's message on one line, without SQLAlchemy's boilerplate."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    return text or type(orig).__name__


def connect(
    settings: Settings,
    engine: Optional["Engine"] = None,
    writer: Writer = default_writer,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> "Connection":
    """A live connection, retrying with backoff + jitter until ``connect_timeout``."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    engine = engine or make_engine(settings)
    assert settings.url is not None
    where = mask_url(settings.url)
    start = clock()
    deadline = start + settings.connect_timeout
    delay = 0.25
    attempts = 0
    last_logged = -1e9
    while True:
        attempts += 1
        try:
            return engine.connect()
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            kind = classify(exc)
            reason = describe(exc)
            if kind == "auth":
                raise AuthError(
                    f"authentication failed for {where}: {reason}",
                    "check the user and the password Secret; the password was not printed",
                ) from None
            if kind == "config":
                raise ConfigError(f"cannot open {where}: {reason}",
                                  "check the path and that its directory exists") from None
            now = clock()
            if now >= deadline:
                raise UnreachableError(
                    f"database {where} unreachable after {now - start:.0f}s "
                    f"({attempts} attempts): {reason}",
                    "check host, port and that the server is up; raise --connect-timeout "
                    "if it starts slowly",
                ) from None
            if now - last_logged >= 10:
                writer.info(f"waiting for database {where}: {reason}")
                last_logged = now
            sleep(min(delay * (0.5 + random.random()), max(deadline - now, 0)))
            delay = min(delay * 2, 5.0)
