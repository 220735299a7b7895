"""What a database error means, decided by SQLSTATE and driver error numbers.

English message text is not evidence: a server with a localised ``lc_messages``
says "Passwort-Authentifizierung fehlgeschlagen", and a classifier that greps for
"password authentication failed" then calls a wrong password "unreachable" and
retries it for a minute. So every decision here is made on the code the server
sent (PostgreSQL SQLSTATE, MySQL/MariaDB error numbers, client error numbers).

One gap remains and is handled explicitly: psycopg2 and psycopg 3 drop the
SQLSTATE of errors the server sends *while connecting* (libpq reports only the
text). For those we read libpq's own, unlocalised framing: a client-side network
failure ("Connection refused", "timeout expired", …) is unreachable; an error the
server sent ("FATAL:  …") whose kind we cannot tell is reported as "the server
refused the connection" — not retried as if the network were down.
"""

from __future__ import annotations

import re
from typing import Optional

AUTH = "auth"
MISSING_DATABASE = "missing-database"
PRIVILEGE = "privilege"
UNREACHABLE = "unreachable"
REFUSED = "refused"  # the server answered with an error we can't classify further
LOCK_TIMEOUT = "lock-timeout"
CANCELED = "canceled"
DUPLICATE = "duplicate-object"
CONFIG = "config"
STARTUP_PARAMETER = "startup-parameter"  # a proxy (PgBouncer) refused a libpq parameter
OTHER = "other"

#: Refusals that no retry and no wait can fix: each ends any command at once with its own
#: typed error (connect.refused_as), on connecting or on any later statement of ours.
REFUSALS = frozenset({AUTH, MISSING_DATABASE, PRIVILEGE, CONFIG, REFUSED, STARTUP_PARAMETER})

_PG_EXACT = {
    "28P01": AUTH,  # invalid_password
    "28000": AUTH,  # invalid_authorization_specification (pg_hba, unknown role)
    "3D000": MISSING_DATABASE,  # invalid_catalog_name
    "42501": PRIVILEGE,  # insufficient_privilege
    "55P03": LOCK_TIMEOUT,  # lock_not_available
    "57014": CANCELED,  # query_canceled
    "57P01": UNREACHABLE,  # admin_shutdown
    "57P02": UNREACHABLE,  # crash_shutdown
    "57P03": UNREACHABLE,  # cannot_connect_now (starting up)
    "53300": UNREACHABLE,  # too_many_connections: retry like a server not yet up
    "42P07": DUPLICATE,  # duplicate_table
    "42701": DUPLICATE,  # duplicate_column
    "42710": DUPLICATE,  # duplicate_object
    "42P06": DUPLICATE,  # duplicate_schema
    "42723": DUPLICATE,  # duplicate_function
}

_MYSQL = {
    1045: AUTH, 1698: AUTH, 1251: AUTH, 1862: AUTH,  # access denied / plugin / expired
    1044: PRIVILEGE, 1142: PRIVILEGE, 1143: PRIVILEGE, 1227: PRIVILEGE, 1370: PRIVILEGE,
    1049: MISSING_DATABASE,
    1040: UNREACHABLE, 1053: UNREACHABLE, 1927: UNREACHABLE, 4031: UNREACHABLE,
    2002: UNREACHABLE, 2003: UNREACHABLE, 2005: UNREACHABLE, 2006: UNREACHABLE,
    2013: UNREACHABLE, 2055: UNREACHABLE,
    1205: LOCK_TIMEOUT, 1317: CANCELED, 3024: CANCELED, 1969: CANCELED,
    1050: DUPLICATE, 1060: DUPLICATE, 1061: DUPLICATE, 1826: DUPLICATE,
}

#: SQLite's primary result codes: CANTOPEN (a missing directory, a read-only file),
#: NOTADB (a file that is not a database), BUSY/LOCKED (a writer holds it: wait, or retry)
_SQLITE = {14: CONFIG, 26: CONFIG, 5: UNREACHABLE, 6: UNREACHABLE}
_SQLITE_TEXT = (("unable to open database file", CONFIG), ("file is not a database", CONFIG),
                ("database is locked", UNREACHABLE))

# libpq's client-side texts (never localised by the server) for "could not reach it".
_LIBPQ_NETWORK = re.compile(
    r"Connection refused|timeout expired|could not translate host name|No route to host|"
    r"Network is unreachable|server closed the connection unexpectedly|"
    r"could not connect to server|Connection reset by peer|could not receive data|"
    r"could not send data|no connection to the server|SSL SYSCALL error|"
    r"Name or service not known|Temporary failure in name resolution|"
    r"terminating connection|connection already closed|the connection is closed",
    re.IGNORECASE,
)
# libpq's English texts, used only to refine a connect error that lost its SQLSTATE.
_LIBPQ_ENGLISH = (
    (re.compile(r"password authentication failed|no password supplied|"
                r"role \S+ does not exist|no pg_hba\.conf entry|pg_hba\.conf rejects|"
                r"authentication failed", re.I), AUTH),
    (re.compile(r"database \S+ does not exist", re.I), MISSING_DATABASE),
    (re.compile(r"permission denied for database", re.I), PRIVILEGE),
    (re.compile(r"the database system is (starting up|shutting down|in recovery mode)|"
                r"too many clients", re.I), UNREACHABLE),
)
# PgBouncer's own (never localised) refusal of a startup parameter it doesn't forward,
# "unsupported startup parameter: options"; its SQLSTATE (08P01) is lost like the others'.
_PGBOUNCER_PARAMETER = re.compile(r"unsupported startup parameter", re.I)
# libpq frames a server-sent error as "<SEVERITY>:  <text>" (two spaces), localised or not.
_SERVER_SENT = re.compile(r"(^|\s|:)\w+:  \S", re.UNICODE)


def original(exc: BaseException) -> BaseException:
    """The DBAPI exception inside SQLAlchemy's wrapper (or ``exc`` itself)."""
    return getattr(exc, "orig", None) or exc


def sqlstate(exc: BaseException) -> Optional[str]:
    """PostgreSQL's SQLSTATE (MySQL drivers' generic ones are ignored: errno is precise)."""
    orig = original(exc)
    if mysql_errno(orig) is not None:
        return None
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return str(code) if code else None


def mysql_errno(exc: BaseException) -> Optional[int]:
    orig = original(exc)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and type(orig).__module__.split(".")[0] in (
            "pymysql", "MySQLdb", "mysql", "mariadb", "_mysql_exceptions"):
        return args[0]
    return None


def code_of(exc: BaseException) -> Optional[str]:
    """The code as an operator would search for it: ``SQLSTATE 42501`` / ``MySQL 1142``."""
    state = sqlstate(exc)
    if state:
        return f"SQLSTATE {state}"
    errno = mysql_errno(exc)
    return f"MySQL error {errno}" if errno is not None else None


def category(exc: BaseException) -> str:
    """One of the module constants; OTHER when the code means none of them."""
    state = sqlstate(exc)
    if state:
        if state in _PG_EXACT:
            return _PG_EXACT[state]
        if state.startswith("08"):  # connection_exception class
            return UNREACHABLE
        return OTHER
    errno = mysql_errno(exc)
    if errno is not None:
        return _MYSQL.get(errno, OTHER)
    sqlite_code = getattr(original(exc), "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(sqlite_code, int):
        return _SQLITE.get(sqlite_code & 0xFF, OTHER)  # the primary code of an extended one
    return _without_code(exc)


def _without_code(exc: BaseException) -> str:
    orig = original(exc)
    if isinstance(orig, (ConnectionError, TimeoutError)):
        return UNREACHABLE
    text = str(orig)
    for sqlite_text, kind in _SQLITE_TEXT:  # sqlite3 has no error codes before Python 3.11;
        if sqlite_text in text:  # SQLite's own messages are compiled in, never localised
            return kind
    if _LIBPQ_NETWORK.search(text):
        return UNREACHABLE
    if isinstance(orig, OSError):
        return UNREACHABLE
    module = type(orig).__module__.split(".")[0]
    if module in ("psycopg2", "psycopg") and type(orig).__name__ == "OperationalError":
        # libpq dropped the SQLSTATE; a server-sent error is not a network problem
        if _PGBOUNCER_PARAMETER.search(text):
            return STARTUP_PARAMETER
        for pattern, kind in _LIBPQ_ENGLISH:
            if pattern.search(text):
                return kind
        return REFUSED if _SERVER_SENT.search(text) else UNREACHABLE
    return OTHER


def describe(exc: BaseException) -> str:
    """The driver's message on one line, without SQLAlchemy's boilerplate."""
    orig = original(exc)
    text = " ".join(str(orig).split())
    return text or type(orig).__name__


def is_database_error(exc: BaseException) -> bool:
    """A DBAPI error (wrapped or not): never an internal error of ours."""
    try:
        from sqlalchemy.exc import DBAPIError
    except ImportError:  # pragma: no cover - SQLAlchemy is a core dependency
        DBAPIError = ()  # type: ignore[assignment,misc]
    if isinstance(exc, DBAPIError):
        return True
    orig = original(exc)
    return sqlstate(orig) is not None or mysql_errno(orig) is not None or any(
        c.__name__ in ("DatabaseError", "InterfaceError", "OperationalError")
        for c in type(orig).__mro__)
