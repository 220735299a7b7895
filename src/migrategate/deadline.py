"""Client-side deadlines for migrategate's own database round trips.

A connection that stops answering without closing (a hung proxy, a frozen
network path: the peer's kernel still acknowledges, so TCP keepalives never
fire) leaves a driver blocked in ``recv`` for good. Server-side timeouts can't
help: the server never sees the statement, or its answer never arrives.

So every round trip on a control connection (the lock session, planning,
verifying, ``status``, ``wait``) is armed with a deadline. One watchdog thread
per process sleeps until the earliest one; when a deadline passes before the
round trip ended, it shuts down that connection's socket, which makes the
blocked driver call fail at once, and the caller raises :class:`Stalled`
(exit 3, an :class:`UnreachableError`). Arming is a lock, a set insertion and,
rarely, a notify: no thread per statement.

Migration statements (env.py's connection, in the child process) are armed
only with ``--statement-timeout`` (:func:`bound_migration`): without it a
``CREATE INDEX`` may rightly take hours.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator, Optional, Set

from .errors import UnreachableError

#: The longest a single round trip of ours may take, whatever --connect-timeout says.
CONTROL_CAP = 30.0
#: The shortest deadline ever armed (a nearly spent ``wait`` still gets one real try).
FLOOR = 1.0


def control_seconds(connect_timeout: float) -> float:
    """The deadline of one control round trip: ``--connect-timeout``, within 2–30 s."""
    return min(max(float(connect_timeout), 2.0), CONTROL_CAP)


class Stalled(UnreachableError):
    """No answer within the deadline: the connection stalled (its socket was shut down)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"no answer from the database within {_seconds(seconds)} s (the connection "
            "stalled)",
            "a proxy or network path that stopped forwarding, or a server too busy to "
            "answer; the connection was closed on our side")
        self.seconds = seconds


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


class Arm:
    """One armed round trip on one DBAPI connection."""

    __slots__ = ("dbapi", "at", "seconds", "fired")

    def __init__(self, dbapi: Any, seconds: float) -> None:
        self.dbapi = dbapi
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.fired = False


def shut_down(dbapi: Any) -> bool:
    """Shut the socket of a DBAPI connection down (both ways), without closing its fd.

    The driver owns the descriptor; ``shutdown`` on a duplicate acts on the same
    socket, so the blocked ``recv``/``poll`` returns at once and the driver reports
    a lost connection. psycopg2/psycopg 3 expose ``fileno()``; PyMySQL its ``_sock``.
    False when the driver shows no socket (then nothing is bounded: pg8000 and
    mysqlclient rely on their own timeouts).
    """
    if getattr(dbapi, "closed", False):  # psycopg2 (an int), psycopg 3 (a bool)
        return False
    sock = getattr(dbapi, "_sock", None)
    if isinstance(sock, socket.socket):
        sock.shutdown(socket.SHUT_RDWR)
        return True
    fileno = getattr(dbapi, "fileno", None)
    if fileno is None:
        return False
    fd = fileno()
    if not isinstance(fd, int) or fd < 0:
        return False
    dup = socket.socket(fileno=os.dup(fd))
    try:
        dup.shutdown(socket.SHUT_RDWR)
    finally:
        dup.close()
    return True


class Watchdog:
    """The single thread that enforces every armed deadline of this process."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._armed: Set[Arm] = set()
        self._wake_at = math.inf
        self._thread: Optional[threading.Thread] = None
        self._pid = 0

    def arm(self, dbapi: Any, seconds: float) -> Arm:
        arm = Arm(dbapi, seconds)
        with self._cond:
            if self._thread is None or self._pid != os.getpid():  # first use, or forked
                self._pid = os.getpid()
                self._armed = set()
                self._wake_at = math.inf
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="migrategate-deadline")
                self._thread.start()
            self._armed.add(arm)
            if arm.at < self._wake_at:
                self._wake_at = arm.at
                self._cond.notify()
        return arm

    def disarm(self, arm: Arm) -> None:
        """The round trip ended (the watchdog wakes once more at its time, finds nothing)."""
        with self._cond:
            self._armed.discard(arm)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for arm in [a for a in self._armed if a.at <= now]:
                    # under the lock: a caller that disarms waits, so it can't close
                    # the connection (and free its descriptor) while we shut it down
                    self._armed.discard(arm)
                    try:
                        arm.fired = shut_down(arm.dbapi)
                    except OSError:  # the socket went away meanwhile: nothing to stop
                        arm.fired = False
                self._wake_at = min((a.at for a in self._armed), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf
                                else max(self._wake_at - now, 0.0))


WATCHDOG = Watchdog()
_local = threading.local()


def arm(dbapi: Any, seconds: float) -> None:
    """Arm a deadline for the round trip this thread is about to make on ``dbapi``.

    A thread makes one round trip at a time: an arm still pending in this thread
    (its call failed in a way no event reported) is replaced.
    """
    previous = getattr(_local, "arm", None)
    if previous is not None:
        WATCHDOG.disarm(previous)
    cap = getattr(_local, "cap", None)
    _local.arm = WATCHDOG.arm(dbapi, seconds if cap is None else min(seconds, cap))


@contextlib.contextmanager
def capped(seconds: float) -> Iterator[None]:
    """Round trips this thread makes inside the block get at most ``seconds`` (the lock
    heartbeat: a stalled lock session must be noticed long before the 30 s cap)."""
    before = getattr(_local, "cap", None)
    _local.cap = seconds if before is None else min(before, seconds)
    try:
        yield
    finally:
        _local.cap = before


def disarm() -> Optional[Arm]:
    """End this thread's pending deadline; returns it (``fired`` says whether it fired)."""
    arm_ = getattr(_local, "arm", None)
    if arm_ is not None:
        _local.arm = None
        WATCHDOG.disarm(arm_)
    return arm_


def install(engine: Any, statement: Callable[[], float],
            connecting: Callable[[], float]) -> None:
    """Bound every round trip on ``engine``'s connections.

    ``statement()`` and ``connecting()`` give the seconds for the next statement
    and for what runs right after a connection is opened (the dialect's
    initialisation queries, its ``on_connect`` setup), asked anew each time.
    A stall is raised as :class:`Stalled` in place of the driver's error.
    """
    from sqlalchemy import event

    def before_execute(conn: Any, cursor: Any, statement_: Any, parameters: Any,
                       context: Any, executemany: bool) -> None:
        arm(conn.connection.dbapi_connection, statement())

    def after_execute(conn: Any, cursor: Any, statement_: Any, parameters: Any,
                      context: Any, executemany: bool) -> None:
        disarm()

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        arm(dbapi_connection, connecting())

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        disarm()

    def on_error(context: Any) -> None:
        pending = disarm()
        if pending is not None and pending.fired:
            raise Stalled(pending.seconds)

    # insert=True: ahead of the dialect's own listeners (initialize, on_connect)
    event.listen(engine, "first_connect", on_connect, insert=True)
    event.listen(engine, "connect", on_connect, insert=True)
    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "before_cursor_execute", before_execute)
    event.listen(engine, "after_cursor_execute", after_execute)
    event.listen(engine, "handle_error", on_error)


def bound_migration(connection: Any, seconds: Callable[[], Optional[float]]) -> None:
    """Bound env.py's statements (in the migration process) where ``seconds()`` says so.

    Only with ``--statement-timeout``: the server ends a statement after it, and a
    statement whose answer still hasn't arrived some seconds later never will (the
    path froze). ``seconds()`` is None where no bound applies (autocommit blocks,
    whose ``CREATE INDEX CONCURRENTLY`` may rightly take hours)."""
    from sqlalchemy import event

    def before_execute(conn: Any, cursor: Any, statement_: Any, parameters: Any,
                       context: Any, executemany: bool) -> None:
        limit = seconds()
        if limit is not None:
            arm(conn.connection.dbapi_connection, limit)

    def after_execute(conn: Any, cursor: Any, statement_: Any, parameters: Any,
                      context: Any, executemany: bool) -> None:
        disarm()

    def on_error(context: Any) -> None:
        pending = disarm()
        if pending is not None and pending.fired:
            raise Stalled(pending.seconds)

    event.listen(connection, "before_cursor_execute", before_execute)
    event.listen(connection, "after_cursor_execute", after_execute)
    event.listen(connection.engine, "handle_error", on_error)


def bounded(limit: float, remaining: Optional[Callable[[], float]]) -> Callable[[], float]:
    """``limit`` seconds, or what is left of ``remaining()`` if less (never below FLOOR)."""
    if remaining is None:
        return lambda: limit
    return lambda: max(min(limit, remaining()), FLOOR)
