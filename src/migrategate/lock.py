"""The migration lock: one database-native lock per dialect behind one interface.

All three die with their holder (session advisory lock, ``GET_LOCK``, an
``flock`` on a file), so a killed runner never leaves a stale lock — the
failure mode of Dify's Redis ``db_upgrade_lock``. We poll with ``try`` calls
instead of blocking: waiting inside a transaction would deadlock
``CREATE INDEX CONCURRENTLY``, and polling lets us log who holds the lock.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from .errors import ConfigError, LockTimeout
from .log import Writer, default_writer, timestamp
from .retry import Backoff

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


class MigrationLock:
    """Interface. ``conn`` is an AUTOCOMMIT connection used for nothing else."""

    kind = "abstract"

    def __init__(self, conn: "Connection", name: str) -> None:
        self.conn = conn
        self.name = name

    def try_acquire(self) -> bool:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def holder(self) -> Optional[str]:
        """Who holds it right now, in words, or None when it is free."""
        raise NotImplementedError

    def check_session(self) -> Optional[str]:
        """After acquiring: raise if the lock can't protect us; return a warning or None."""
        return None

    def keep_alive(self) -> None:
        """Make the lock session immune to the server's idle timers (it idles while we migrate)."""

    def still_held(self) -> bool:
        """Ask the server whether this session still holds the lock (the heartbeat)."""
        return True

    def fence(self) -> Dict[str, Any]:
        """What the migration process needs to check, from its own session, that we hold it."""
        return {"kind": "none"}

    def worker_busy(self) -> Optional[str]:
        """A previous runner's migration session still executing a statement, in words.

        The migration session of every runner holds a second lock named after
        this one. A runner killed with ``kill -9`` loses its lock at once, but the
        server keeps executing its last statement (MySQL runs an ALTER to the end)
        and that session keeps the second lock until it finishes.
        """
        return None


def pg_lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock(bigint)``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PostgresLock(MigrationLock):
    kind = "postgresql advisory lock"

    def __init__(self, conn: "Connection", name: str) -> None:
        super().__init__(conn, name)
        self.key = pg_lock_key(name)
        self.worker_key = pg_lock_key(name + ":worker")
        self.token: Optional[int] = None  # the fence's (see fence())

    def keep_alive(self) -> None:
        from sqlalchemy import text

        from .connect import server_version

        self.conn.execute(text("SET idle_in_transaction_session_timeout = 0"))
        if server_version(self.conn) >= 140000:
            self.conn.execute(text("SET idle_session_timeout = 0"))

    def _session(self) -> Any:
        from sqlalchemy import text

        return self.conn.execute(text(
            f"SELECT pg_backend_pid() AS pid, {_started_us('backend_start')} AS started "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()")).first()

    def still_held(self) -> bool:
        from sqlalchemy import text

        return bool(self.conn.execute(text(PG_HELD_BY_ME), key_halves(self.key)).scalar())

    def fence(self) -> Dict[str, Any]:
        """What the migration session checks: besides the lock, this session takes an
        advisory lock on a random per-run token. While this session lives it holds both
        (only the session itself, or its end, releases a session lock), so "someone holds
        the token" is "the lock is still ours" — one lock-manager call per revision for the
        fence (pg_try_advisory_xact_lock_shared), where reading pg_locks joined with
        pg_stat_activity cost a millisecond or more each (bench/measure.py)."""
        import secrets

        from sqlalchemy import text

        row = self._session()
        self.token = secrets.randbits(63)
        self.conn.execute(text("SELECT pg_advisory_lock(:t)"), {"t": self.token})
        return {"kind": "postgresql", "key": self.key, "worker_key": self.worker_key,
                "pid": int(row.pid), "started": int(row.started), "token": self.token}

    def worker_busy(self) -> Optional[str]:
        return _pg_holder(self.conn, self.worker_key, with_query=True)

    def try_acquire(self) -> bool:
        from sqlalchemy import text

        return bool(self.conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                      {"k": self.key}).scalar())

    def release(self) -> None:
        from sqlalchemy import text

        if self.token is not None:
            self.conn.execute(text("SELECT pg_advisory_unlock(:t)"), {"t": self.token})
            self.token = None
        self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})

    def check_session(self) -> Optional[str]:
        """Session advisory locks need a session: a transaction-pooling proxy breaks them.

        PgBouncer in ``pool_mode=transaction`` hands each statement to whichever
        server connection is free, so the lock may sit on a backend that is not
        ours. If pg_locks shows it on another backend, that is certain; a server
        port that differs from the one we dialled only suggests a proxy.
        """
        from sqlalchemy import text

        row = self.conn.execute(text(
            "SELECT inet_server_port() AS port, EXISTS (SELECT 1 FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid::bigint = :hi AND objid::bigint = :lo "
            "AND pid = pg_backend_pid()) AS ours"),
            key_halves(self.key)).first()
        if row is not None and not row.ours:
            raise ConfigError(
                "the migration lock is not held by this database session: a "
                "transaction-pooling proxy (PgBouncer pool_mode=transaction?) sits between "
                "migrategate and PostgreSQL, so the lock cannot keep runners apart",
                "connect migrategate straight to PostgreSQL, or through a session-mode pool",
            )
        dialled = self.conn.engine.url.port or 5432
        if row is not None and row.port is not None and int(row.port) != int(dialled):
            return (f"connected to port {dialled} but PostgreSQL listens on {row.port}: a "
                    "proxy is in between; if it pools in transaction mode (PgBouncer "
                    "pool_mode=transaction) the advisory lock does not protect this migration")
        return None

    def holder(self) -> Optional[str]:
        return _pg_holder(self.conn, self.key)


def key_halves(key: int) -> Dict[str, int]:
    """A signed 64-bit advisory key as pg_locks shows it: two unsigned 32-bit halves."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}


_PG_LOCK_ROW = ("l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())")
PG_HELD_BY_ME = f"SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE {_PG_LOCK_ROW} " \
                "AND l.pid = pg_backend_pid())"


def _started_us(column: str) -> str:
    """A session's start as epoch microseconds: the same number in every session.

    As text (``backend_start::text``) it is rendered in the reading session's
    TimeZone and DateStyle, and env.py's connection may set its own
    (``options=-c timezone=UTC``): the fence would then never match."""
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


#: The fence a migration transaction runs before it commits: is the lock still
#: held by the runner's lock session (same pid, same backend start)?
def _pg_holder(conn: "Connection", key: int, with_query: bool = False) -> Optional[str]:
    from sqlalchemy import text

    row = conn.execute(text(
        "SELECT a.pid, a.application_name, host(a.client_addr) AS client, "
        "a.backend_start, a.state, left(a.query, 120) AS query "
        f"FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE {_PG_LOCK_ROW}"),
        key_halves(key)).first()
    if row is None:
        return None
    parts = []
    if row.application_name:
        parts.append(f"app={row.application_name}")
    if row.client:
        parts.append(f"client {row.client}")
    if row.backend_start is not None:
        parts.append(f"connected since {row.backend_start:%Y-%m-%d %H:%M:%S%z}")
    if row.state:
        parts.append(f"state {row.state}")
    if with_query and row.query:
        parts.append(f"running: {' '.join(row.query.split())}")
    return f"pid {row.pid}" + (f" ({', '.join(parts)})" if parts else "")


def _mysql_lock_name(name: str, database: str) -> str:
    """GET_LOCK names are server-wide (not per database) and at most 64 characters."""
    full = f"{name}:{database}"
    if len(full) > 64:
        full = f"{name[:20]}:{hashlib.sha256(full.encode()).hexdigest()[:40]}"
    return full


class MySQLLock(MigrationLock):
    kind = "mysql GET_LOCK"

    def __init__(self, conn: "Connection", name: str) -> None:
        database = conn.engine.url.database or ""
        super().__init__(conn, _mysql_lock_name(name, database))
        self.worker_name = _mysql_lock_name(name + ":worker", database)

    def keep_alive(self) -> None:
        from sqlalchemy import text

        # 31536000 s (a year) is the largest value MySQL and MariaDB accept
        self.conn.execute(text("SET SESSION wait_timeout = 31536000, "
                               "interactive_timeout = 31536000"))

    def still_held(self) -> bool:
        from sqlalchemy import text

        return bool(self.conn.execute(text("SELECT IS_USED_LOCK(:n) = CONNECTION_ID()"),
                                      {"n": self.name}).scalar())

    def fence(self) -> Dict[str, Any]:
        from sqlalchemy import text

        cid = int(self.conn.execute(text("SELECT CONNECTION_ID()")).scalar() or 0)
        return {"kind": "mysql", "name": self.name, "worker_name": self.worker_name,
                "connection_id": cid}

    def worker_busy(self) -> Optional[str]:
        return self._describe(self.worker_name, with_query=True)

    def try_acquire(self) -> bool:
        from sqlalchemy import text

        # 1 = acquired; 0 = held by someone else; NULL = error. Only 1 counts.
        return self.conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self.name}).scalar() == 1

    def release(self) -> None:
        from sqlalchemy import text

        self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})

    def holder(self) -> Optional[str]:
        return self._describe(self.name)

    def _describe(self, name: str, with_query: bool = False) -> Optional[str]:
        from sqlalchemy import text

        cid = self.conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
        if cid is None:
            return None
        row = self.conn.execute(
            text("SELECT USER, HOST, TIME, COMMAND, LEFT(INFO, 120) "
                 "FROM information_schema.PROCESSLIST WHERE ID = :i"),
            {"i": cid},
        ).first()
        if row is None:
            return f"connection {cid}"
        what = f"{row[0]}@{row[1]}, {row[3]} for {row[2]} s"
        if with_query and row[4]:
            what += f", running: {' '.join(str(row[4]).split())}"
        return f"connection {cid} ({what})"


class SQLiteFileLock(MigrationLock):
    """``flock`` on ``<database>.migrategate-lock``.

    Not ``BEGIN EXCLUSIVE`` on our connection: env.py opens its own connection
    to the same file and would then block on us forever.
    """

    kind = "sqlite file lock"

    def __init__(self, conn: "Connection", name: str) -> None:
        super().__init__(conn, name)
        database = conn.engine.url.database
        if not database:
            raise ConfigError("SQLite needs a database file to lock")
        self.path = os.path.abspath(database) + ".migrategate-lock"
        self._fd: Optional[int] = None

    def try_acquire(self) -> bool:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the SQLite lock file {self.path}: {exc.strerror or exc}",
                "the database's directory must be writable by this user (SQLite writes its "
                "journal there too)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {timestamp()}".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def holder(self) -> Optional[str]:
        import fcntl

        if self._fd is not None:
            return f"this process (pid {os.getpid()})"
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                who = os.read(fd, 200).decode(errors="replace").strip()
                return who or "another process"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


def lock_for(conn: "Connection", name: str) -> MigrationLock:
    """The lock of this connection's kind of database (:meth:`Dialect.lock`)."""
    from .dialect import of

    return of(conn).lock(conn, name)


@dataclass(frozen=True)
class Acquisition:
    """How waiting for the lock ended (a timeout raises :class:`LockTimeout`)."""

    taken: bool  # False: another runner brought the database to the target meanwhile
    waited: float


def acquire(
    lock: MigrationLock,
    timeout: float,
    writer: Writer = default_writer,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    done: Optional[Callable[[], bool]] = None,
) -> Acquisition:
    """Poll ``try_acquire`` with backoff + jitter (25 ms → 1 s).

    ``done`` is asked between polls: when it turns true (another runner finished
    the work) we stop waiting, without the lock.
    """
    backoff = Backoff(timeout, first=0.025, cap=1.0, log_every=15, sleep=sleep, clock=clock)
    while True:
        if lock.try_acquire():
            return Acquisition(True, backoff.waited)
        if done is not None and done():
            return Acquisition(False, backoff.waited)
        if backoff.expired:
            who = lock.holder() or "a session that has just released it"
            raise LockTimeout(
                f'lock "{lock.name}" held by {who} for {backoff.waited:.0f} s; '
                "another migration is running or stuck",
                "see 'migrategate status'; the lock is freed when the holder's session ends, "
                "or raise --lock-timeout",
            )
        holder = lock.holder() if backoff.should_log() else None
        if holder:
            writer.info(f'waiting for lock "{lock.name}" held by {holder}')
        backoff.pause()


def wait_for_orphans(lock: MigrationLock, timeout: float, writer: Writer = default_writer,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> None:
    """Holding the lock, wait until no earlier runner's statement still runs on the server."""
    backoff = Backoff(timeout, first=0.1, cap=1.0, log_every=15, sleep=sleep, clock=clock)
    while True:
        busy = lock.worker_busy()
        if busy is None:
            return
        if backoff.expired:
            raise LockTimeout(
                f"an earlier runner's migration session is still executing a statement after "
                f"{backoff.waited:.0f} s: {busy}",
                "that runner died but the server is finishing its statement; wait for it or "
                "end it (pg_terminate_backend / KILL), check the schema, then re-run")
        if backoff.should_log():
            writer.info(f"waiting for an earlier runner's statement to finish: {busy}")
        backoff.pause()
