"""Inside the migration process: run the plan through Alembic's own env.py.

This module runs in the supervised child (``migrategate.worker``), never in the
process whose exit code Kubernetes reads. We don't edit the user's env.py:
Alembic's ``context`` proxy sends env.py's ``context.configure(...)`` to a
wrapper of ours, which defaults ``transaction_per_migration=True`` (one
transaction per revision, like Flyway), adds the lock fence, and learns
env.py's connection.

What is reported as committed is what committed. Alembic runs each step inside
``with begin_transaction(): …`` and asks our step generator for the next step
only after that block exited, i.e. after COMMIT returned. So a step is reported
"committed" when the generator is resumed (or when the run ends) and the
connection is outside any transaction; a failure *at* COMMIT (a deferred
constraint, a serialization failure, a cut connection) leaves the revision
where it belongs: failed, not applied.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

from .dberrors import category, code_of, describe, is_database_error, sqlstate
from .errors import MigrategateError
from .fence import Fence, LockLostHere
from .plan import Plan
from .settings import Settings
from .signals import SignalGuard

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config
    from sqlalchemy.engine import Connection

Sink = Callable[[Dict[str, Any]], None]

# Alembic runs DDL outside transactions on these (MySQL commits DDL implicitly; pysqlite
# never issues BEGIN before DDL), so a failed revision may leave objects behind.
NON_TRANSACTIONAL_DDL = ("mysql", "mariadb", "sqlite")


class _Steps:
    """Tracks the running revision and turns Alembic's callbacks into events."""

    def __init__(self, plan: Plan, sink: Sink, fence: Fence) -> None:
        self.messages = {r.id: r.message for r in plan.pending}
        self.sink = sink
        self.fence = fence
        self.connection: Optional["Connection"] = None
        self.current: Optional[str] = None
        self.started = 0.0
        self.finished: List[Dict[str, Any]] = []  # ran, not yet known to be committed
        self.partial: List[str] = []  # statements committed by autocommit blocks

    def begin(self, rev: str) -> None:
        self.settle()
        self.fence.before_revision(self.connection)
        self.current = rev
        self.started = time.monotonic()
        self.partial = []
        self.sink({"event": "started", "revision": rev})

    def step_done(self, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        """Alembic's on_version_apply: inside the revision's transaction, before COMMIT."""
        self.fence.before_commit(ctx.connection)
        rev = step.up_revision_id
        self.finished.append({"revision": rev, "message": self.messages.get(rev, ""),
                              "seconds": round(time.monotonic() - self.started, 3)})
        self.sink({"event": "ran", "revision": rev})

    def settle(self) -> None:
        """Report the finished steps as committed once the connection left its transaction."""
        conn = self.connection
        if not self.finished or conn is None or conn.in_transaction():
            return
        self.sink({"event": "committed", "revisions": self.finished})
        self.finished = []
        self.current = None

    def autocommitted(self, statement: str) -> None:
        self.partial.append(" ".join(statement.split())[:200])
        self.sink({"event": "autocommit", "revision": self.current,
                   "statement": self.partial[-1]})


def run_upgrade(config: "Config", plan: Plan, settings: Settings, sink: Sink,
                guard: SignalGuard, fence: Fence) -> None:
    """Apply ``plan`` via env.py; every outcome becomes events on ``sink``."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config)
    steps = _Steps(plan, sink, fence)

    def upgrade_steps(rev: Any, context: Any) -> Iterator[Any]:
        for step in script._upgrade_revs(plan.destination, rev):  # noqa: SLF001 - as command.upgrade
            guard.check()
            steps.begin(step.revision.revision)
            yield step
        steps.settle()

    env = EnvironmentContext(config, script, fn=upgrade_steps, as_sql=False,
                             starting_rev=None, destination_rev=plan.destination, tag=None)
    configure_as_written = env.configure

    def configure(connection: Any = None, **kw: Any) -> None:
        kw.setdefault("transaction_per_migration", not settings.single_transaction)
        if settings.single_transaction:
            kw["transaction_per_migration"] = False
        if settings.version_table != "alembic_version":
            kw["version_table"] = settings.version_table
        if settings.version_table_schema:
            kw["version_table_schema"] = settings.version_table_schema
        callbacks = kw.get("on_version_apply") or ()
        if callable(callbacks):
            callbacks = (callbacks,)
        kw["on_version_apply"] = tuple(callbacks) + (steps.step_done,)
        if connection is not None:
            steps.connection = connection
            sink({"event": "ready", "session": fence.attach(connection)})
            _watch_cancel(connection, guard)
        configure_as_written(connection=connection, **kw)

    # An instance attribute, not a subclass: alembic.context proxies the methods of
    # the exact EnvironmentContext class, reading them off the instance on __enter__.
    env.configure = configure  # type: ignore[method-assign,assignment]
    with _autocommit_blocks(steps), env:
        script.run_env()
    steps.settle()
    if steps.finished:  # env.py holds an outer transaction: committed when it returned
        sink({"event": "committed", "revisions": steps.finished})


@contextlib.contextmanager
def _autocommit_blocks(steps: _Steps) -> Iterator[None]:
    """Report statements a revision commits outside its transaction (CONCURRENTLY)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import event

    original = MigrationContext.autocommit_block

    @contextlib.contextmanager
    def tracked(self: Any) -> Iterator[None]:
        with original(self):
            conn = self.connection

            def before(c: Any, cursor: Any, statement: str, *a: Any) -> None:
                steps.autocommitted(statement)

            event.listen(conn, "before_cursor_execute", before)
            try:
                yield
            finally:
                event.remove(conn, "before_cursor_execute", before)

    MigrationContext.autocommit_block = tracked  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        MigrationContext.autocommit_block = original  # type: ignore[method-assign]


def _watch_cancel(connection: "Connection", guard: SignalGuard) -> None:
    """A signal cancels env.py's running statement (from the watcher thread)."""
    dbapi = _dbapi_connection(connection)
    if hasattr(dbapi, "cancel"):  # psycopg2 / psycopg
        guard.add_canceller(dbapi.cancel)


def _dbapi_connection(connection: "Connection") -> Any:
    fairy = connection.connection
    return getattr(fairy, "dbapi_connection", None) or getattr(fairy, "connection", None)


def failure_record(exc: BaseException, steps_current: Optional[str],
                   signum: Optional[int]) -> Dict[str, Any]:
    """An exception from env.py or a revision, as plain facts for the supervising process."""
    record: Dict[str, Any] = {
        "class": type(exc).__name__,
        "message": describe(exc) if not isinstance(exc, MigrategateError) else exc.message,
        "category": category(exc),
        "code": code_of(exc),
        "sqlstate": sqlstate(exc),
        "revision": steps_current,
        "lock_lost": isinstance(exc, LockLostHere),
        "signal": signum,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    if isinstance(exc, MigrategateError):
        record["typed"] = {"exit_code": exc.exit_code, "outcome": exc.outcome,
                           "hint": exc.hint}
    if isinstance(exc, SyntaxError):
        record["where"] = f"{exc.filename}, line {exc.lineno}"
    elif exc.__traceback__ is not None and not is_database_error(exc):
        frames = traceback.extract_tb(exc.__traceback__)
        app = [f for f in frames if "/alembic/" not in f.filename
               and "/sqlalchemy/" not in f.filename and "/migrategate/" not in f.filename
               and "importlib" not in f.filename]
        if app:
            record["where"] = f"{app[-1].filename}, line {app[-1].lineno}"
    record["database_error"] = is_database_error(exc)
    return record
