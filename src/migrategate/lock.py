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
import random
import socket
import time
from typing import TYPE_CHECKING, Callable, Optional

from .errors import ConfigError, LockTimeout
from .log import Writer, default_writer, timestamp

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


def pg_lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock(bigint)``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PostgresLock(MigrationLock):
    kind = "postgresql advisory lock"

    def __init__(self, conn: "Connection", name: str) -> None:
        super().__init__(conn, name)
        self.key = pg_lock_key(name)

    def try_acquire(self) -> bool:
        from sqlalchemy import text

        return bool(self.conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                      {"k": self.key}).scalar())

    def release(self) -> None:
        from sqlalchemy import text

        self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})

    def check_session(self) -> Optional[str]:
        """Session advisory locks need a session: a transaction-pooling proxy breaks them.

        PgBouncer in ``pool_mode=transaction`` hands each statement to whichever
        server connection is free, so the lock may sit on a backend that is not
        ours. If pg_locks shows it on another backend, that is certain; a server
        port that differs from the one we dialled only suggests a proxy.
        """
        from sqlalchemy import text

        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        row = self.conn.execute(text(
            "SELECT inet_server_port() AS port, EXISTS (SELECT 1 FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid::bigint = :hi AND objid::bigint = :lo "
            "AND pid = pg_backend_pid()) AS ours"),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).first()
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
                    "pool_mode=transaction) the advisory lock does not protect this migration "
                    "— connect directly or use a session-mode pool")
        return None

    def holder(self) -> Optional[str]:
        from sqlalchemy import text

        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        row = self.conn.execute(
            text(
                "SELECT a.pid, a.application_name, host(a.client_addr) AS client, "
                "a.backend_start, a.state "
                "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
                "AND l.database = (SELECT oid FROM pg_database "
                "WHERE datname = current_database())"
            ),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
        ).first()
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
        return f"pid {row.pid}" + (f" ({', '.join(parts)})" if parts else "")


class MySQLLock(MigrationLock):
    kind = "mysql GET_LOCK"

    def __init__(self, conn: "Connection", name: str) -> None:
        # GET_LOCK names are server-wide (not per database) and at most 64 characters.
        database = conn.engine.url.database or ""
        full = f"{name}:{database}"
        if len(full) > 64:
            full = f"{name[:20]}:{hashlib.sha256(full.encode()).hexdigest()[:40]}"
        super().__init__(conn, full)

    def try_acquire(self) -> bool:
        from sqlalchemy import text

        # 1 = acquired; 0 = held by someone else; NULL = error. Only 1 counts.
        return self.conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self.name}).scalar() == 1

    def release(self) -> None:
        from sqlalchemy import text

        self.conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})

    def holder(self) -> Optional[str]:
        from sqlalchemy import text

        cid = self.conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": self.name}).scalar()
        if cid is None:
            return None
        row = self.conn.execute(
            text("SELECT USER, HOST, TIME FROM information_schema.PROCESSLIST WHERE ID = :i"),
            {"i": cid},
        ).first()
        if row is None:
            return f"connection {cid}"
        return f"connection {cid} ({row[0]}@{row[1]}, connected {row[2]} s ago)"


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

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
    backend = conn.engine.url.get_backend_name()
    if backend == "postgresql":
        return PostgresLock(conn, name)
    if backend in ("mysql", "mariadb"):
        return MySQLLock(conn, name)
    if backend == "sqlite":
        return SQLiteFileLock(conn, name)
    raise ConfigError(f"no migration lock for {backend!r} databases",
                      "supported: postgresql, mysql/mariadb, sqlite")


def acquire(
    lock: MigrationLock,
    timeout: float,
    writer: Writer = default_writer,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    done: Optional[Callable[[], bool]] = None,
) -> Optional[float]:
    """Poll ``try_acquire`` with backoff + jitter (25 ms → 1 s); return seconds waited.

    ``done`` is asked between polls: when it turns true (another runner finished
    the work) we stop waiting and return None without the lock.
    """
    start = clock()
    delay = 0.025
    last_logged = -1e9
    while True:
        if lock.try_acquire():
            return clock() - start
        if done is not None and done():
            return None
        now = clock()
        waited = now - start
        if waited >= timeout:
            who = lock.holder() or "a session that has just released it"
            raise LockTimeout(
                f'lock "{lock.name}" held by {who} for {waited:.0f} s; '
                "another migration is running or stuck",
                "see 'migrategate status'; the lock is freed when the holder's session ends, "
                "or raise --lock-timeout",
            )
        if now - last_logged >= 15:
            holder = lock.holder()
            if holder:
                writer.info(f'waiting for lock "{lock.name}" held by {holder}')
            last_logged = now
        sleep(min(delay * (0.5 + random.random()), max(timeout - waited, 0.0)))
        delay = min(delay * 2, 1.0)
