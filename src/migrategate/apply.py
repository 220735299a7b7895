"""Run the plan through Alembic's own machinery, with per-revision progress.

We don't edit the user's env.py. Instead, Alembic's ``context`` proxy sends
env.py's ``context.configure(...)`` to a wrapper of ours, which adds a progress
callback, defaults ``transaction_per_migration=True``
(one transaction per revision, like Flyway: a failure loses only that
revision), and learns env.py's connection so a signal can cancel its statement.

A revision is reported "applied" only when its transaction has committed:
``on_version_apply`` fires *before* the commit, so we hold the line until the
connection's ``commit`` event.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from .connect import classify, describe, make_engine
from .errors import (
    AuthError,
    ConfigError,
    Interrupted,
    MigrategateError,
    MigrationFailed,
    UnreachableError,
)
from .log import Writer
from .plan import Plan
from .settings import Settings
from .signals import SignalGuard

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config
    from sqlalchemy.engine import Connection


@dataclass
class Applied:
    revision: str
    message: str
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


# Alembic runs DDL outside transactions on these (MySQL commits DDL implicitly; pysqlite
# never issues BEGIN before DDL), so a failed revision may leave objects behind.
NON_TRANSACTIONAL_DDL = ("mysql", "mariadb", "sqlite")


class _Progress:
    def __init__(self, plan: Plan, settings: Settings, writer: Writer, guard: SignalGuard):
        self.settings = settings
        self.total = len(plan.pending)
        self.messages = {r.id: r.message for r in plan.pending}
        self.writer = writer
        self.guard = guard
        self.applied: List[Applied] = []
        self.uncommitted: List[Applied] = []
        self.current: Optional[str] = None
        self.started = 0.0
        self.configured = False
        self.ran = False
        self._cleanups: List[Any] = []

    def heartbeat(self, stop: "threading.Event") -> None:
        """A line while a long revision runs, so a quiet log never looks like a hang."""
        interval = self.settings.heartbeat
        if not interval:
            return
        while not stop.wait(interval):
            rev, started = self.current, self.started
            if rev is not None and time.monotonic() - started >= interval:
                k = len(self.applied) + len(self.uncommitted) + 1
                self.writer.info(f"[{k}/{self.total}] {rev} still running "
                                 f"({time.monotonic() - started:.0f}s)")

    # -- called from Alembic
    def step_started(self, rev: str) -> None:
        self.ran = True
        self.current = rev
        self.started = time.monotonic()

    def step_done(self, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        rev = step.up_revision_id if step.is_upgrade else step.down_revision_ids[0]
        doc = getattr(getattr(step, "up_revision", None), "doc", "") or ""
        self.uncommitted.append(Applied(rev, self.messages.get(rev, doc),
                                        time.monotonic() - self.started))
        self.current = None

    def committed(self, *args: Any) -> None:
        self.flush()

    def flush(self) -> None:
        while self.uncommitted:
            a = self.uncommitted.pop(0)
            self.applied.append(a)
            k = len(self.applied)
            msg = f"  {a.message}" if a.message else ""
            self.writer.info(f"[{k}/{self.total}] {a.revision}{msg}  ({a.seconds:.1f}s)")

    # -- env.py's connection
    def attach(self, connection: "Connection") -> None:
        from sqlalchemy import event

        self.configured = True
        event.listen(connection, "commit", self.committed)
        self._cleanups.append(lambda: event.remove(connection, "commit", self.committed))
        cancel = _canceller(connection, self.settings)
        if cancel is not None:
            self.guard.add_canceller(cancel)
            self._cleanups.append(lambda: self.guard.remove_canceller(cancel))

    def detach(self) -> None:
        for fn in self._cleanups:
            with contextlib.suppress(Exception):  # connection may be gone already
                fn()
        self._cleanups.clear()


def _dbapi_connection(connection: "Connection") -> Any:
    fairy = connection.connection
    return getattr(fairy, "dbapi_connection", None) or getattr(fairy, "connection", None)


def _canceller(connection: "Connection", settings: Settings) -> Optional[Any]:
    """How to stop env.py's running statement from another thread."""
    dbapi = _dbapi_connection(connection)
    backend = connection.engine.url.get_backend_name()
    if backend == "postgresql" and hasattr(dbapi, "cancel"):
        return dbapi.cancel
    if backend in NON_TRANSACTIONAL_DDL and hasattr(dbapi, "thread_id"):
        thread_id = int(dbapi.thread_id())

        def kill_query() -> None:
            engine = make_engine(settings)
            try:
                with engine.connect() as c:
                    c.exec_driver_sql(f"KILL QUERY {thread_id}")
            finally:
                engine.dispose()

        return kill_query
    return None


@contextlib.contextmanager
def _libpq_env(settings: Settings) -> Iterator[None]:
    """Name env.py's own connections and bound their lock waits (libpq reads these)."""
    saved = {k: os.environ.get(k) for k in ("PGAPPNAME", "PGOPTIONS")}
    try:
        if settings.dialect == "postgresql":
            os.environ["PGAPPNAME"] = settings.application_name
            if settings.pg_lock_timeout is not None:
                ms = int(settings.pg_lock_timeout * 1000)
                opts = (saved["PGOPTIONS"] or "") + f" -c lock_timeout={ms}"
                os.environ["PGOPTIONS"] = opts.strip()
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_upgrade(config: "Config", plan: Plan, settings: Settings, writer: Writer,
                guard: SignalGuard, into: Optional[List[Applied]] = None) -> List[Applied]:
    """Apply ``plan`` via env.py; returns the revisions committed, raises typed errors.

    ``into`` receives each revision as it commits, so a caller still knows what
    was applied when a later revision fails.
    """
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    destination = plan.destination
    script = ScriptDirectory.from_config(config)
    progress = _Progress(plan, settings, writer, guard)
    if into is not None:
        progress.applied = into

    def upgrade_steps(rev: Any, context: Any) -> Iterator[Any]:
        steps = script._upgrade_revs(destination, rev)  # noqa: SLF001 - what command.upgrade uses
        for step in steps:
            guard.check()
            progress.step_started(step.revision.revision)
            yield step

    env = EnvironmentContext(config, script, fn=upgrade_steps, as_sql=False,
                             starting_rev=None, destination_rev=destination, tag=None)
    configure_as_written = env.configure

    def configure(connection: Any = None, **kw: Any) -> None:
        kw.setdefault("transaction_per_migration", not settings.single_transaction)
        callbacks = kw.get("on_version_apply") or ()
        if callable(callbacks):
            callbacks = (callbacks,)
        kw["on_version_apply"] = tuple(callbacks) + (progress.step_done,)
        if connection is not None:
            progress.attach(connection)
        configure_as_written(connection=connection, **kw)

    # An instance attribute, not a subclass: alembic.context proxies the methods of
    # the exact EnvironmentContext class, reading them off the instance on __enter__.
    env.configure = configure  # type: ignore[method-assign,assignment]

    stop = threading.Event()
    beat = threading.Thread(target=progress.heartbeat, args=(stop,), daemon=True,
                            name="migrategate-heartbeat")
    beat.start()
    try:
        with _libpq_env(settings), env:
            script.run_env()
    except BaseException as exc:  # noqa: BLE001 - every path re-raises a typed error
        progress.detach()
        raise _translate(exc, progress, settings, guard) from _cause(exc)
    finally:
        stop.set()
        beat.join(timeout=1)
    progress.detach()
    progress.flush()
    return progress.applied


def _cause(exc: BaseException) -> Optional[BaseException]:
    return None if isinstance(exc, MigrategateError) else exc


def _translate(exc: BaseException, progress: _Progress, settings: Settings,
               guard: SignalGuard) -> BaseException:
    backend = settings.dialect
    failing = progress.current
    lost = [a.revision for a in progress.uncommitted]
    progress.uncommitted.clear()
    committed = len(progress.applied)
    transactional = backend not in NON_TRANSACTIONAL_DDL

    if guard.received is not None or isinstance(exc, (Interrupted, KeyboardInterrupt)):
        signum = guard.received or (exc.signum if isinstance(exc, Interrupted) else 2)
        where = f" during revision {failing}" if failing else ""
        if transactional:
            hint = (f"{'its transaction was rolled back; ' if failing else ''}"
                    f"{committed} revision(s) were committed before it; the lock is released "
                    "— re-run to continue")
        else:
            hint = (f"{backend} DDL is not transactional: statements of {failing} that ran "
                    "before the signal stay applied; check the schema before re-running"
                    if failing else "re-run to continue")
        return Interrupted(signum, f"interrupted by {_signame(signum)}{where}", hint)

    if isinstance(exc, MigrategateError):
        return exc
    if isinstance(exc, SystemExit):
        return MigrationFailed(f"env.py called sys.exit({exc.code})",
                               "migrations must not exit the process; nothing is verified")

    reason = describe(exc)
    if failing is not None:
        message = progress.messages.get(failing, "")
        label = f"revision {failing}" + (f" ({message})" if message else "")
        if transactional:
            rolled = "its transaction was rolled back, nothing of it is applied"
            if lost:
                rolled += f"; {len(lost)} more uncommitted revision(s) rolled back too"
            hint = (f"{rolled}; {committed} revision(s) before it are committed. "
                    "Fix the revision and re-run")
        else:
            hint = (f"{backend} DDL is not transactional: tables, columns or indexes that "
                    f"{failing} created before the error may remain; drop them or make the "
                    "revision idempotent, then re-run "
                    f"({committed} revision(s) before it are committed)")
        if _is_lock_timeout(exc):
            hint = ("a table it needs is locked by another transaction (lock_timeout "
                    "reached); find the blocker in pg_stat_activity, or retry at a quieter "
                    "time. " + hint)
        return MigrationFailed(f"{label} failed: {reason}", hint, revision=failing)

    # Nothing was running: the failure came from env.py, loading scripts or connecting.
    if isinstance(exc, SyntaxError):
        return ConfigError(
            f"revision file {exc.filename} has a syntax error at line {exc.lineno}: {exc.msg}",
            "fix the file; nothing was applied")
    if isinstance(exc, ImportError):
        return ConfigError(
            f"loading the migrations failed: {type(exc).__name__}: {reason}",
            "fix the file or put the app's source root on the path (--app-root DIR); "
            "nothing was applied")
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and getattr(exc, "connection_invalidated", False) is False \
            and not progress.configured:
        kind = classify(exc)
        if kind == "auth":
            return AuthError(f"env.py could not log in: {reason}",
                             "check the credentials env.py uses")
        return UnreachableError(f"env.py could not connect: {reason}",
                                "check the URL env.py uses")
    from alembic.util import CommandError

    if isinstance(exc, CommandError):
        return ConfigError(f"alembic refused: {reason}", "nothing was applied")
    return ConfigError(
        f"env.py failed before any revision ran: {type(exc).__name__}: {reason}",
        "fix env.py or the settings it reads (run with --debug for the traceback); "
        "nothing was applied")


def _is_lock_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    return code == "55P03" or "lock timeout" in str(orig or exc)


def _signame(signum: int) -> str:
    import signal

    return signal.Signals(signum).name
