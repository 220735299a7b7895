"""The fence: the migration session checks, itself, that the runner still holds the lock.

The lock lives on the supervising process's own session. If that session is
cut (idle timeout, proxy, a DBA's ``pg_terminate_backend``) the lock is gone and
another runner may start the same revisions. So the migration session asks the
server before each revision starts and, on PostgreSQL, once more inside the
revision's transaction right before COMMIT: a lost lock then rolls the
revision back instead of committing it twice.

The migration session also takes a second, "worker" lock: a runner killed
mid-statement loses its main lock at once, but the server keeps executing its
last statement (MySQL runs an ALTER to the end) and that session keeps the
worker lock until it finishes — the next runner waits for it
(:func:`migrategate.lock.wait_for_orphans`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


class LockLostHere(Exception):
    """Raised inside a revision's transaction when the fence finds the lock gone."""


class Fence:
    """No fence (SQLite: the lock is a file lock held by the parent process itself)."""

    def __init__(self, info: Dict[str, Any]) -> None:
        self.info = info

    def attach(self, connection: "Connection") -> Optional[Dict[str, Any]]:
        """Take the worker lock on env.py's connection; return its session id.

        Raw DBAPI cursor on purpose: a statement through SQLAlchemy would
        autobegin a transaction, and Alembic would then take env.py's connection
        for an external transaction and never commit per revision.
        """
        return None

    def before_revision(self, connection: Optional["Connection"]) -> None:
        """Before a revision starts (outside its transaction)."""

    def before_commit(self, connection: Optional["Connection"]) -> None:
        """Inside the revision's transaction, right before COMMIT."""


class PostgresFence(Fence):
    """Checked inside each revision's transaction: a lost lock rolls the revision back."""

    def attach(self, connection: "Connection") -> Optional[Dict[str, Any]]:
        cursor = dbapi_connection(connection).cursor()
        try:
            cursor.execute("SELECT pg_backend_pid(), pg_try_advisory_lock(%s)",
                           (self.info["worker_key"],))
            pid, taken = cursor.fetchone()
            return {"pid": int(pid), "worker_lock": bool(taken)}
        finally:
            cursor.close()

    def before_commit(self, connection: Optional["Connection"]) -> None:
        """The runner's session holds the run's token lock exclusively while it lives: a
        shared try fails then. If it succeeds, that session is gone and the lock with it
        (a try inside the transaction: released by the rollback that follows)."""
        if connection is None:
            return
        cursor = dbapi_connection(connection).cursor()
        try:
            cursor.execute("SELECT pg_try_advisory_xact_lock_shared(%s)", (self.info["token"],))
            free = cursor.fetchone()[0]
        finally:
            cursor.close()
        if free:
            raise LockLostHere(
                f"the migration lock is no longer held by the runner's session "
                f"(pid {self.info['pid']}); this revision's transaction is rolled back")


class MySQLFence(Fence):
    """Checked before each revision and before its version row (DDL commits at once)."""

    def attach(self, connection: "Connection") -> Optional[Dict[str, Any]]:
        cursor = dbapi_connection(connection).cursor()
        try:
            cursor.execute("SELECT CONNECTION_ID(), GET_LOCK(%s, 0)", (self.info["worker_name"],))
            cid, taken = cursor.fetchone()
            return {"connection_id": int(cid), "worker_lock": taken == 1}
        finally:
            cursor.close()

    def before_revision(self, connection: Optional["Connection"]) -> None:
        if connection is not None:
            self._check(connection)

    def before_commit(self, connection: Optional["Connection"]) -> None:
        if connection is not None:
            self._check(connection)

    def _check(self, connection: "Connection") -> None:
        from sqlalchemy import text

        holder = connection.execute(text("SELECT IS_USED_LOCK(:n)"),
                                    {"n": self.info["name"]}).scalar()
        if holder != self.info["connection_id"]:
            raise LockLostHere(
                f"the migration lock is no longer held by the runner's session (connection "
                f"{self.info['connection_id']}; now {holder or 'nobody'})")


#: the fence for the ``kind`` the parent's lock reported (:meth:`MigrationLock.fence`)
_FENCES = {"postgresql": PostgresFence, "mysql": MySQLFence}


def make_fence(info: Dict[str, Any]) -> Fence:
    return _FENCES.get(info.get("kind", "none"), Fence)(info)


def dbapi_connection(connection: "Connection") -> Any:
    """The driver's own connection under a SQLAlchemy Connection (1.4 and 2.x spellings)."""
    fairy = connection.connection
    return getattr(fairy, "dbapi_connection", None) or getattr(fairy, "connection", None)
