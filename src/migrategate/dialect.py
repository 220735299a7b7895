"""One object per kind of database, chosen once from the URL: what it promises and how.

Everything that differs between PostgreSQL, MySQL/MariaDB and SQLite lives
here, asked of a :class:`Dialect` instead of comparing backend names around the
code: whether a failed revision's DDL is undone by its rollback, the migration
lock, the connect arguments and session settings, how the migration session is
prepared, which completed statement committed itself, who holds a lock on a
table, which other sessions are connected, how to end a session, what a failed
index build leaves. A message about what a failed revision left comes from these
answers (and from what the database reads back), never from PostgreSQL's
wording used for every backend.

Nothing here imports SQLAlchemy, Alembic or the rest of migrategate at import
time (``wait`` and ``--help`` stay cheap); each method imports what it needs.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .urls import MYSQL

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection, Engine

    from .lock import MigrationLock
    from .settings import Settings
    from .sqlrisk import Server

#: TCP keepalives on libpq connections (an idle lock session behind NAT stays known).
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
             "keepalives_count": 3}


class Dialect:
    """The answers for a database migrategate has no special knowledge of."""

    name = "other"
    label = "this database"
    #: a failed revision's DDL is undone by rolling back its transaction
    transactional_ddl = False
    #: connections cross a network (a stall is possible; signals need a helper thread)
    network = True

    def __init__(self, name: str = "") -> None:
        if name:
            self.name = self.label = name

    def __repr__(self) -> str:
        return f"<Dialect {self.name}>"

    # ------------------------------------------------------------ connections

    def connect_args(self, settings: "Settings", attempt: int, control: bool) -> Dict[str, Any]:
        """Driver arguments that name the runner, bound each attempt, keep sessions alive."""
        return {}

    def tune_engine(self, engine: "Engine", read_timeout: float) -> None:
        """Per-driver settings applied to every new control connection."""

    def server_version(self, conn: "Connection") -> int:
        """The server's version as a number where a rule depends on it; else 0."""
        return 0

    # ------------------------------------------------------------ the migration session

    def session_settings(self, settings: "Settings", server_version: int) -> Dict[str, int]:
        """The migration session's settings (name -> milliseconds)."""
        return {}

    def migration_settings(self, settings: "Settings", server_version: int) -> "Settings":
        """Settings whose URL carries the session settings, where the driver takes them."""
        return settings

    def child_env(self, settings: "Settings", server_version: int) -> Dict[str, str]:
        """Environment for the migration process (for env.py files that build their URL)."""
        return {}

    def prepare_migration(self, connection: "Connection", settings: "Settings",
                          set_wait_timeout: Callable[[float], None],
                          in_autocommit: Callable[[], bool]) -> None:
        """env.py's connection, before Alembic uses it: session settings and deadlines."""

    def commits_itself(self, dbapi: Any, statement: str) -> bool:
        """Did this completed statement commit itself and everything before it?"""
        return False

    # ------------------------------------------------------------ other sessions

    def absent(self, settings: "Settings") -> Optional[str]:
        """Why a read-only command must not open this database (it would create it)."""
        return None

    def lock(self, conn: "Connection", name: str) -> "MigrationLock":
        from .errors import ConfigError

        raise ConfigError(f"no migration lock for {self.name!r} databases",
                          "supported: postgresql, mysql/mariadb, sqlite")

    def holders(self, connection: "Connection", table: str) -> Optional[str]:
        """Who holds a lock on ``table``, in words ("" when nobody holds one now; None
        when this database can't tell)."""
        return None

    def other_sessions(self, conn: "Connection") -> str:
        """Other client sessions on this database that are not migrategate, in words."""
        return ""

    def end_session(self, conn: "Connection", session: Dict[str, Any]) -> None:
        """End another session on the server (its transaction rolls back)."""

    def invalid_indexes(self, conn: "Connection") -> List[str]:
        """Indexes a failed or interrupted build left unusable."""
        return []

    # ------------------------------------------------------------ plan (read only)

    def read_only(self, conn: "Connection") -> None:
        """Make the session refuse writes: ``plan`` reads the catalog and nothing else."""

    def grantee(self, name: str) -> str:
        """``name`` as the grantee of a GRANT, quoted by us (a role). Not the SQLAlchemy
        preparer's quoting: for a format-paramstyle driver it doubles '%' (MySQL's host
        '%'), and text() doubles it once more."""
        return '"' + name.replace('"', '""') + '"'

    def plan_server(self, conn: "Connection") -> "Server":
        """The backend and version the plan's rules are judged for (sqlrisk.Server)."""
        from .sqlrisk import Server

        return Server(self.name, _version_tuple(conn))

    def table_size(self, conn: "Connection", name: str) -> Tuple[bool, Optional[int],
                                                                 Optional[int]]:
        """(exists, estimated rows, bytes with indexes) from the catalog; None: unknown."""
        from sqlalchemy import inspect

        from .sqlrisk import bare

        schema, _, table = bare(name).rpartition(".")
        return bool(inspect(conn).has_table(table, schema=schema or None)), None, None

    def columns(self, conn: "Connection", name: str) -> Dict[Tuple[str, str], Tuple[str, bool]]:
        """Current column types where a rule needs them (MySQL's MODIFY/CHANGE)."""
        return {}

    def index_table(self, conn: "Connection", index: str) -> Optional[str]:
        """The table an existing index belongs to (PostgreSQL's DROP INDEX names no table)."""
        return None


class PostgreSQL(Dialect):
    name = "postgresql"
    label = "PostgreSQL"
    transactional_ddl = True

    def connect_args(self, settings: "Settings", attempt: int, control: bool) -> Dict[str, Any]:
        assert settings.url is not None
        driver = settings.url.get_driver_name()
        if driver in ("psycopg2", "psycopg"):
            return {"application_name": settings.application_name,
                    "connect_timeout": attempt, **KEEPALIVE}
        if driver == "pg8000":
            return {"application_name": settings.application_name, "timeout": attempt}
        return {}

    def server_version(self, conn: "Connection") -> int:
        """server_version_num, asked once per connection."""
        from sqlalchemy import text

        if "migrategate_server_version" not in conn.info:
            conn.info["migrategate_server_version"] = int(
                conn.execute(text("SHOW server_version_num")).scalar() or 0)
        return int(conn.info["migrategate_server_version"])

    def session_settings(self, settings: "Settings", server_version: int) -> Dict[str, int]:
        """``client_connection_check_interval`` (14+) makes the server abort an orphaned
        statement soon after its client died; ``lock_timeout`` is ``--pg-lock-timeout`` (1 s
        by default with ``--lock-retries``: set once per session, so a revision that isn't
        blocked pays no statement for it); ``statement_timeout`` is ``--statement-timeout``."""
        wanted: Dict[str, int] = {}
        if server_version >= 140000:
            wanted["client_connection_check_interval"] = 2000
        if settings.first_lock_timeout is not None:
            wanted["lock_timeout"] = int(settings.first_lock_timeout * 1000)
        if settings.statement_timeout is not None:
            wanted["statement_timeout"] = int(settings.statement_timeout * 1000)
        return wanted

    def _options(self, settings: "Settings", server_version: int) -> str:
        """libpq ``-c`` options; none behind a proxy (PgBouncer refuses ``options`` by
        default, or drops it with ``ignore_startup_parameters``): SET there instead."""
        if settings.behind_proxy:
            return ""
        return " ".join(f"-c {name}={value}"
                        for name, value in self.session_settings(settings,
                                                                 server_version).items())

    def migration_settings(self, settings: "Settings", server_version: int) -> "Settings":
        """Merged into the URL's own ``options`` (libpq ignores ``PGOPTIONS`` when the
        connection string has ``options``, and the Dify preset always sets one)."""
        import dataclasses

        url = settings.url
        options = self._options(settings, server_version)
        if url is None or not options or url.get_driver_name() not in ("psycopg2", "psycopg"):
            return settings
        existing = url.query.get("options")
        if isinstance(existing, tuple):
            existing = " ".join(existing)
        merged = " ".join(filter(None, (existing, options)))
        return dataclasses.replace(settings, url=url.update_query_dict({"options": merged}))

    def child_env(self, settings: "Settings", server_version: int) -> Dict[str, str]:
        import os

        env = {"PGAPPNAME": settings.application_name}
        options = self._options(settings, server_version)
        if options:  # for env.py files that build their own URL (libpq reads this)
            env["PGOPTIONS"] = " ".join(filter(None, (os.environ.get("PGOPTIONS"), options)))
        return env

    def prepare_migration(self, connection: "Connection", settings: "Settings",
                          set_wait_timeout: Callable[[float], None],
                          in_autocommit: Callable[[], bool]) -> None:
        from . import deadline
        from .connect import apply_session_settings, per_attempt

        apply_session_settings(connection, settings)  # behind a proxy only
        if settings.statement_timeout is not None:
            bound = settings.statement_timeout + per_attempt(settings)
            deadline.bound_migration(connection, lambda: None if in_autocommit() else bound)

    def lock(self, conn: "Connection", name: str) -> "MigrationLock":
        from .lock import PostgresLock

        return PostgresLock(conn, name)

    def holders(self, connection: "Connection", table: str) -> str:
        from sqlalchemy import text

        rows = connection.execute(text(
            "SELECT DISTINCT a.pid, a.application_name, a.state, "
            "date_trunc('second', clock_timestamp() - a.xact_start) AS age "
            "FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.granted AND l.relation = to_regclass(:t) "
            "AND a.pid <> pg_backend_pid()"), {"t": table}).fetchall()
        return ", ".join(f"pid {r.pid} ({r.application_name or 'no application_name'}, "
                         f"{r.state}, transaction open {r.age})" for r in rows)

    def other_sessions(self, conn: "Connection") -> str:
        from sqlalchemy import text

        rows = conn.execute(text(
            "SELECT pid, application_name FROM pg_stat_activity WHERE datname = "
            "current_database() AND pid <> pg_backend_pid() AND application_name NOT LIKE "
            "'migrategate%' AND backend_type = 'client backend'")).fetchall()
        return ", ".join(f"pid {r.pid} ({r.application_name or 'no application_name'})"
                         for r in rows)

    def end_session(self, conn: "Connection", session: Dict[str, Any]) -> None:
        from sqlalchemy import text

        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": session["pid"]})

    def invalid_indexes(self, conn: "Connection") -> List[str]:
        from sqlalchemy import text

        rows = conn.execute(text(
            "SELECT n.nspname || '.' || c.relname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT i.indisvalid ORDER BY 1")).fetchall()
        return [r[0] for r in rows]


    def read_only(self, conn: "Connection") -> None:
        conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")

    def index_table(self, conn: "Connection", index: str) -> Optional[str]:
        from sqlalchemy import text

        found = conn.execute(text("SELECT i.indrelid::regclass::text FROM pg_index i "
                                  "WHERE i.indexrelid = to_regclass(:name)"),
                             {"name": index}).scalar()
        return None if found is None else str(found)

    def table_size(self, conn: "Connection", name: str) -> Tuple[bool, Optional[int],
                                                                 Optional[int]]:
        from sqlalchemy import text

        row = conn.execute(text(
            "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid), pg_relation_size(c.oid) "
            "FROM pg_class c WHERE c.oid = to_regclass(:name)"), {"name": name}).first()
        if row is None:
            return False, None, None
        rows = int(row[0]) if row[0] is not None and row[0] >= 0 else None  # -1: not analyzed
        if rows is None and row[2] == 0:
            rows = 0  # never analyzed, and no page: empty
        return True, rows, int(row[1])


#: MySQL statements that commit implicitly before they run
DDL_WORDS = ("CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE")


def first_word(statement: str) -> str:
    words = statement.lstrip(" \t\r\n(").split(None, 1)
    return words[0].upper() if words else ""


class MySQL(Dialect):
    label = "MySQL/MariaDB"

    def __init__(self, name: str = "mysql") -> None:
        self.name = name

    def connect_args(self, settings: "Settings", attempt: int, control: bool) -> Dict[str, Any]:
        assert settings.url is not None
        driver = settings.url.get_driver_name()
        args: Dict[str, Any] = {}
        if driver in ("pymysql", "mysqldb"):
            args["connect_timeout"] = attempt
        if driver == "pymysql":
            args["program_name"] = settings.application_name
            if control:
                # the handshake read: a listener that accepts and stays silent must not
                # hang us past --connect-timeout (reset after connecting); a migration
                # connection must not, or a long ALTER would time out on the client
                args["read_timeout"] = attempt
                args["write_timeout"] = attempt
        return args

    def tune_engine(self, engine: "Engine", read_timeout: float) -> None:
        from sqlalchemy import event

        def after_connect(dbapi_connection: Any, record: Any) -> None:
            """PyMySQL: the socket timeout after the handshake; TCP keepalives."""
            sock = getattr(dbapi_connection, "_sock", None)
            if hasattr(dbapi_connection, "_read_timeout"):
                dbapi_connection._read_timeout = read_timeout
                dbapi_connection._write_timeout = read_timeout
            if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET,
                                                                   socket.AF_INET6):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10),
                                    ("TCP_KEEPCNT", 3)):
                    if hasattr(socket, name):
                        sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)

        event.listen(engine, "connect", after_connect)

    def prepare_migration(self, connection: "Connection", settings: "Settings",
                          set_wait_timeout: Callable[[float], None],
                          in_autocommit: Callable[[], bool]) -> None:
        wait = settings.first_lock_timeout
        if wait is not None:
            set_wait_timeout(wait)

    def commits_itself(self, dbapi: Any, statement: str) -> bool:
        return first_word(statement) in DDL_WORDS

    def lock(self, conn: "Connection", name: str) -> "MigrationLock":
        from .lock import MySQLLock

        return MySQLLock(conn, name)

    def holders(self, connection: "Connection", table: str) -> str:
        """performance_schema's metadata locks where they are recorded (MySQL 8 by
        default); else the sessions with an open InnoDB transaction (MariaDB's default),
        which is where a long reader's metadata lock lives."""
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        table = table.split(".")[-1]
        try:
            rows = connection.execute(text(
                "SELECT DISTINCT t.PROCESSLIST_ID AS id, t.PROCESSLIST_USER AS user, "
                "t.PROCESSLIST_COMMAND AS command, t.PROCESSLIST_TIME AS seconds "
                "FROM performance_schema.metadata_locks m JOIN performance_schema.threads t "
                "ON t.THREAD_ID = m.OWNER_THREAD_ID WHERE m.OBJECT_TYPE = 'TABLE' "
                "AND m.OBJECT_SCHEMA = DATABASE() AND m.OBJECT_NAME = :t "
                "AND m.LOCK_STATUS = 'GRANTED' AND t.PROCESSLIST_ID <> CONNECTION_ID()"),
                {"t": table}).fetchall()
        except SQLAlchemyError:  # performance_schema off: the sessions below, then
            rows = []
        if rows:
            return ", ".join(f"connection {r.id} ({r.user}, {r.command}, {r.seconds} s)"
                             for r in rows)
        rows = connection.execute(text(
            "SELECT p.ID AS id, p.USER AS user, p.COMMAND AS command, "
            "TIMESTAMPDIFF(SECOND, x.trx_started, NOW()) AS age "
            "FROM information_schema.INNODB_TRX x JOIN information_schema.PROCESSLIST p "
            "ON p.ID = x.trx_mysql_thread_id WHERE p.ID <> CONNECTION_ID()")).fetchall()
        if not rows:
            return ""
        return "one of the sessions with an open transaction: " + ", ".join(
            f"connection {r.id} ({r.user}, {r.command}, transaction open {r.age} s)"
            for r in rows)

    def end_session(self, conn: "Connection", session: Dict[str, Any]) -> None:
        conn.exec_driver_sql(f"KILL {int(session['connection_id'])}")

    def read_only(self, conn: "Connection") -> None:
        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")

    def grantee(self, name: str) -> str:
        """An account, ``user`` or ``user@host`` (host ``%`` when not given)."""
        user, _, host = name.partition("@")
        return "@".join("`" + part.replace("`", "``") + "`" for part in (user, host or "%"))

    def plan_server(self, conn: "Connection") -> "Server":
        from .sqlrisk import Server

        mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
        return Server("mariadb" if mariadb else "mysql", _version_tuple(conn))

    def table_size(self, conn: "Connection", name: str) -> Tuple[bool, Optional[int],
                                                                 Optional[int]]:
        from sqlalchemy import text

        from .sqlrisk import bare

        schema, _, table = bare(name).rpartition(".")
        row = conn.execute(text(
            "SELECT TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"),
            {"schema": schema or None, "name": table}).first()
        if row is None:
            return False, None, None
        return True, (None if row[0] is None else int(row[0])), (
            None if row[1] is None else int(row[1]))

    def columns(self, conn: "Connection", name: str) -> Dict[Tuple[str, str], Tuple[str, bool]]:
        from sqlalchemy import text

        from .sqlrisk import bare

        schema, _, table = bare(name).rpartition(".")
        rows = conn.execute(text(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"),
            {"schema": schema or None, "name": table}).fetchall()
        return {(table, str(r[0])): (str(r[1]), r[2] == "YES") for r in rows}


class SQLite(Dialect):
    name = "sqlite"
    label = "SQLite"
    network = False  # a file: nothing stalls, and its objects belong to their thread

    def absent(self, settings: "Settings") -> Optional[str]:
        """Opening a SQLite path creates the file: a mistyped path in ``verify`` would
        leave an empty database behind (and report "no migration has run")."""
        import os

        assert settings.url is not None
        path = settings.url.database or ""
        if path.startswith("file:") or os.path.exists(path):
            return None
        return f"the SQLite database file {path} does not exist"

    def commits_itself(self, dbapi: Any, statement: str) -> bool:
        """pysqlite issues no BEGIN before DDL: outside a transaction, it is committed."""
        return not getattr(dbapi, "in_transaction", False)

    def lock(self, conn: "Connection", name: str) -> "MigrationLock":
        from .lock import SQLiteFileLock

        return SQLiteFileLock(conn, name)

    def read_only(self, conn: "Connection") -> None:
        conn.exec_driver_sql("PRAGMA query_only = ON")


def _version_tuple(conn: "Connection") -> Tuple[int, ...]:
    info = getattr(conn.dialect, "server_version_info", None) or ()
    return tuple(int(p) for p in info if isinstance(p, int))[:3]  # MariaDB: 10.11.19-0+deb12


def dialect_for(backend: str) -> Dialect:
    """The Dialect for a SQLAlchemy backend name (``url.get_backend_name()``)."""
    if backend in MYSQL:
        return MySQL(backend)
    known: Dict[str, Callable[[], Dialect]] = {"postgresql": PostgreSQL, "sqlite": SQLite}
    return known[backend]() if backend in known else Dialect(backend)


def of(engine_or_conn: Any) -> Dialect:
    """The Dialect of a SQLAlchemy Engine or Connection."""
    engine = getattr(engine_or_conn, "engine", engine_or_conn)
    return dialect_for(engine.url.get_backend_name())


def of_settings(settings: "Settings") -> Optional[Dialect]:
    return dialect_for(settings.dialect) if settings.url is not None else None
