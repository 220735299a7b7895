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
import functools
import re
import time
import traceback
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import deadline, journal
from .dberrors import (
    LOCK_TIMEOUT,
    UNREACHABLE,
    category,
    code_of,
    describe,
    is_database_error,
    mysql_errno,
    sqlstate,
)
from .dialect import DDL_WORDS, dialect_for, first_word as _first_word
from .dialect import of as dialect_of
from .errors import ConfigError, MigrategateError
from .fence import Fence, LockLostHere, dbapi_connection
from .pending import Plan
from .protocol import (
    Committed,
    Ended,
    Event,
    FailureRecord,
    NotRetried,
    Ran,
    Ready,
    Retry,
    Started,
    Statement,
)
from .settings import Settings
from .runtime import version_table_options
from .signals import SignalGuard

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config
    from sqlalchemy.engine import Connection

Sink = Callable[[Event], None]


class _Steps:
    """Tracks the running revision and turns Alembic's callbacks into events.

    The one place in the child that knows which revision runs: the parent learns
    it from :class:`~migrategate.protocol.Started` and reports failures against it.
    """

    def __init__(self, plan: Plan, sink: Sink, fence: Fence, settings: Settings) -> None:
        self.settings = settings
        self.dialect = dialect_for(settings.dialect)
        self.sink = sink
        self.last = plan.pending[-1].id if plan.pending else None  # the plan's last step
        self.fence = fence
        self.connection: Optional["Connection"] = None
        self.current: Optional[str] = None
        self.started = 0.0
        self.uncommitted: List[str] = []  # ran to their end, COMMIT not yet seen
        self.partial: List[str] = []  # statements committed by autocommit blocks
        self.last_statement = ""
        # which revision the connection's transaction began in, and how many statements
        # it has run: a transaction that began in this revision and ran nothing before
        # upgrade() can be rolled back whole instead of paying a SAVEPOINT per revision
        self.txn_revision: Optional[str] = None
        self.txn_statements = 0
        self.local_timeout = False  # a SET LOCAL lock_timeout is in force (PostgreSQL)
        self.wait_timeout: Optional[int] = None  # lock_wait_timeout set on the session (MySQL)
        self.first_write = ""  # MySQL: this revision's first statement that changed data
        self.ends = 0  # transactions ended on the connection (COMMIT/ROLLBACK, any spelling)
        self.ended_by_revision = False  # the running revision ended a transaction itself
        self.in_autocommit = False  # inside Alembic's autocommit_block(): the driver commits
        #: MySQL/MariaDB: the journal of what committed (journal.py), and a resume's skips
        self.journal: Optional[journal.Writer] = None
        self.skips: Optional[journal.Skips] = None
        self.position = 0  # write statements of the running revision so far (its journal's)
        self.probed = False  # a resume's first statement after its skips was checked

    def begin(self, rev: str) -> None:
        self.settle()
        self.fence.before_revision(self.connection)
        self.current = rev
        self.started = time.monotonic()
        self.partial = []
        self.first_write = ""
        self.ended_by_revision = False
        self.restart()
        if self.journal is not None and self.connection is not None:
            # in the revision's transaction, so the first DDL's implicit commit (which runs
            # before that DDL) commits it: "this revision's first statement may have run".
            # A resume also starts with what the old attempt committed: the newest attempt
            # always holds all of the revision that is in the database
            skips = self.skips if self.skips is not None and self.skips.revision == rev \
                else None
            self.journal.rows(dbapi_connection(self.connection), [(rev, -1, "", "begin", "")] + (
                [(rev, i, d, k, t) for i, (d, k, t) in
                 enumerate(zip(skips.digests, skips.kinds, skips.texts))] if skips else []),
                commit=False)
        self.sink(Started(rev))

    def restart(self) -> None:
        """The revision's upgrade() starts (again, after a lock retry): count from 0."""
        self.position, self.probed = 0, False

    def step_done(self, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        """Alembic's on_version_apply: inside the revision's transaction, before COMMIT."""
        rev = step.up_revision_id
        # the fence guards a COMMIT: in one transaction for all (--single-transaction, or
        # env.py's own) only the last step is followed by one; a round trip per revision
        # saved there (bench/measure.py)
        if getattr(ctx, "_transaction_per_migration", True) or rev == self.last:
            self.fence.before_commit(ctx.connection)
        skips = self.skips
        if skips is not None and skips.revision == rev and self.position < len(skips.digests):
            raise ConfigError(
                f"resuming {rev}: its upgrade() now runs {self.position} write statement(s) "
                f"before its end, where run {skips.from_run} committed {len(skips.digests)} "
                f"(the first not run again: {skips.texts[self.position][:200]}); the revision "
                "file changed since that attempt. Nothing more of it was run",
                _MISMATCH_HINT)
        self.uncommitted.append(rev)
        self.sink(Ran(rev, round(time.monotonic() - self.started, 3)))
        self.current = None  # what runs next (COMMIT, the version row) is no longer its code

    def settle(self) -> None:
        """Report the finished steps as committed once the connection left its transaction."""
        conn = self.connection
        if not self.uncommitted or conn is None or conn.in_transaction():
            return
        self.sink(Committed(tuple(self.uncommitted)))
        self.uncommitted = []

    def executing(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        """Every statement: remember it, and notice a transaction ended behind our back.

        Always on, not only with --lock-retries: a revision that ran its own COMMIT
        and then failed must never be reported as rolled back whole."""
        self.last_statement = statement
        self.txn_statements += 1
        if ends_transaction(statement):  # op.execute("COMMIT"), "…; COMMIT AND CHAIN"
            self._ended(statement)
        elif self.txn_statements > 1 and self.txn_revision == self.current and \
                self.current is not None and not self.in_autocommit and _driver_idle(conn):
            self._ended("the driver's own commit()")  # no SQLAlchemy event says so

    def executed(self, conn: Any, cursor: Any, statement: str, parameters: Any = None,
                 *args: Any) -> None:
        """Where DDL is not transactional: a completed write of the running revision."""
        if self.current is None or is_read(statement):
            return
        if self.in_autocommit:
            kind = "autocommit"  # reported by autocommitted(), before it ran
        else:
            if not self.first_write:
                self.first_write = _one_line(statement)
            kind = ("ddl" if self.dialect.commits_itself(dbapi_connection(conn), statement)
                    else "dml")  # "ddl": committed itself and all before it
            self.sink(Statement(self.current, _one_line(statement), kind=kind))
        if self.journal is not None:
            self._journal(conn, statement, parameters, kind)

    def _journal(self, conn: Any, statement: str, parameters: Any, kind: str) -> None:
        """The statement's journal row: in its transaction (DML: both commit or neither),
        or committed right after it (it committed itself)."""
        assert self.journal is not None and self.current is not None
        self.journal.rows(dbapi_connection(conn), [(
            self.current, self.position, journal.digest(statement, parameters), kind,
            journal.shown(statement))], commit=kind != "dml")
        self.position += 1

    def skip_committed(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                       context: Any, executemany: bool) -> Tuple[str, Any]:
        """Resuming: a statement the earlier attempt committed is not sent again (a no-op
        read runs instead); one that differs stops the revision before it changes anything;
        the first one after them, when that attempt did not end on its own and it is DDL,
        is run here and "already there" taken as "it had committed" (journal.py)."""
        skips = self.skips
        if skips is None or self.current != skips.revision or is_read(statement):
            return statement, parameters
        pos = self.position
        if pos < len(skips.digests):
            if journal.digest(statement, parameters) != skips.digests[pos]:
                raise ConfigError(
                    f"resuming {self.current}: its write statement #{pos + 1} is now "
                    f"{journal.shown(statement)[:200]!r}, but run {skips.from_run} committed "
                    f"{skips.texts[pos][:200]!r} there; the revision file changed since that "
                    "attempt. Nothing more of it was run", _MISMATCH_HINT)
            self.position += 1
            return _SKIPPED, ()
        if self.probed or not skips.maybe_applied:
            return statement, parameters
        self.probed = True
        dbapi = dbapi_connection(conn)
        if self.in_autocommit or not self.dialect.commits_itself(dbapi, statement):
            return statement, parameters  # a DML statement rolled back with its attempt
        errors = getattr(conn.dialect, "loaded_dbapi", None) or conn.dialect.dbapi
        probe = dbapi.cursor()
        try:
            probe.execute(statement, parameters)
        except errors.Error as exc:
            if mysql_errno(exc) not in journal.ALREADY_APPLIED:
                return statement, parameters  # it fails again, through SQLAlchemy, as itself
            self.sink(Statement(self.current, _one_line(statement), kind="ddl"))
            self._journal(conn, statement, parameters, "ddl")
            print(f"resuming {self.current}: {_one_line(statement)[:120]} had committed "
                  f"before run {skips.from_run} stopped (the server says: {describe(exc)})",
                  flush=True)
            return _SKIPPED, ()
        finally:
            probe.close()
        if not self.first_write:
            self.first_write = _one_line(statement)
        self.sink(Statement(self.current, _one_line(statement), kind="ddl"))
        self._journal(conn, statement, parameters, "ddl")
        return _SKIPPED, ()

    def transaction_began(self, conn: Any) -> None:
        self.txn_revision, self.txn_statements = self.current, 0

    def transaction_ended(self, conn: Any) -> None:
        self.txn_revision, self.local_timeout = None, False
        self.ends += 1

    def _ended(self, statement: str) -> None:
        self.ends += 1
        if self.current is not None:
            self.ended_by_revision = True
            self.sink(Ended(self.current, _one_line(statement)))

    def fresh_transaction(self) -> bool:
        """Did the connection's transaction begin in this revision, with nothing run yet?"""
        return (self.current is not None and self.txn_revision == self.current
                and self.txn_statements == 0)

    def retrying(self, attempt: int, attempts: int, statement: str) -> None:
        self.sink(Retry(self.current, attempt, attempts, _blocker(self.connection, statement)))

    def not_retried(self, why: str, statement: str) -> None:
        """Why a lock timeout was not retried, for the final message."""
        self.sink(NotRetried(self.current, why, _one_line(statement)))

    def autocommitted(self, statement: str) -> None:
        self.partial.append(_one_line(statement))
        self.sink(Statement(self.current, self.partial[-1], kind="autocommit"))


def run_upgrade(config: "Config", plan: Plan, settings: Settings, sink: Sink,
                guard: SignalGuard, fence: Fence, journal_info: Optional[Dict[str, Any]] = None,
                resume: Optional[Dict[str, Any]] = None) -> None:
    """Apply ``plan`` via env.py; every outcome becomes events on ``sink``.

    ``journal_info`` (MySQL/MariaDB, with history): record each write statement in the
    journal; ``resume``: skip what an earlier attempt of a revision committed."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config)
    steps = _Steps(plan, sink, fence, settings)
    if journal_info is not None:
        steps.journal = journal.Writer(journal_info)
        steps.skips = journal.Skips.from_dict(resume) if resume else None

    def upgrade_steps(rev: Any, context: Any) -> Iterator[Any]:
        for step in script._upgrade_revs(plan.destination, rev):  # noqa: SLF001 - as command.upgrade
            guard.check()
            steps.begin(step.revision.revision)
            if settings.lock_retries:
                step.migration_fn = _with_lock_retries(step.migration_fn, steps, settings,
                                                       context, guard)
            yield step
        steps.settle()

    env = EnvironmentContext(config, script, fn=upgrade_steps, as_sql=False,
                             starting_rev=None, destination_rev=plan.destination, tag=None)
    configure_as_written = env.configure

    def configure(connection: Any = None, **kw: Any) -> None:
        kw.setdefault("transaction_per_migration", not settings.single_transaction)
        if settings.single_transaction:
            kw["transaction_per_migration"] = False
        kw.update(version_table_options(settings))
        callbacks = kw.get("on_version_apply") or ()
        if callable(callbacks):
            callbacks = (callbacks,)
        kw["on_version_apply"] = tuple(callbacks) + (steps.step_done,)
        if connection is not None:
            from sqlalchemy import event

            steps.connection = connection
            # transaction ends are tracked on every run: a revision that committed part
            # of itself must be reported so, and never retried
            event.listen(connection, "before_cursor_execute", steps.executing)
            if steps.skips is not None:
                event.listen(connection, "before_cursor_execute", steps.skip_committed,
                             retval=True)
            event.listen(connection, "begin", steps.transaction_began)
            for ended in ("commit", "rollback"):
                event.listen(connection, ended, steps.transaction_ended)
            if not steps.dialect.transactional_ddl:
                event.listen(connection, "after_cursor_execute", steps.executed)
            steps.dialect.prepare_migration(
                connection, settings, lambda seconds: set_wait_timeout(connection, steps, seconds),
                lambda: steps.in_autocommit)
            sink(Ready(fence.attach(connection)))
            _watch_cancel(connection, guard)
        configure_as_written(connection=connection, **kw)

    # An instance attribute, not a subclass: alembic.context proxies the methods of
    # the exact EnvironmentContext class, and looks them up on the instance when called.
    env.configure = configure  # type: ignore[method-assign,assignment]
    with _autocommit_blocks(steps), env:
        script.run_env()
    steps.settle()
    if steps.uncommitted:  # env.py holds an outer transaction: committed when it returned
        sink(Committed(tuple(steps.uncommitted)))


SAVEPOINT = "migrategate_lock_retry"
#: what runs instead of a statement a resume skips (a read: not journaled, not a write)
_SKIPPED = "SELECT 1 /* migrategate: committed by an earlier attempt */"
_MISMATCH_HINT = ("restore the revision as it was when it ran, or put the database right by "
                  "hand ('migrategate history' lists what that attempt committed) and run "
                  "upgrade with --no-resume")
#: statements that change nothing a retry could repeat (MySQL: what may run before a
#: retried DDL statement); anything else, or anything we can't classify, counts as a write
_READS = ("SELECT", "SHOW", "SET", "DESCRIBE", "DESC", "EXPLAIN")
_END_WORD = r"(COMMIT|END|ABORT|ROLLBACK(?!\s+(WORK\s+|TRANSACTION\s+)?TO\b))\b"
_ENDS = re.compile(r"\s*" + _END_WORD, re.IGNORECASE)
#: a later statement of a multi-statement string that ends the transaction
#: ("INSERT …; COMMIT AND CHAIN", "INSERT …; COMMIT; BEGIN")
_ENDS_LATER = re.compile(r";\s*" + _END_WORD, re.IGNORECASE)
#: quoted text, where a COMMIT is not a statement (function bodies, string literals)
_QUOTED = re.compile(r"\$(\w*)\$.*?\$\1\$|'(?:[^']|'')*'", re.DOTALL)


def ends_transaction(statement: str) -> bool:
    """Does this statement (or a later one in the same string) end the transaction?

    Cheap on the hot path: the multi-statement check runs only when there is a
    ``;``. Errs towards "yes" (a revision is then not retried and is reported as
    possibly half-applied), never towards "no"."""
    if _ENDS.match(statement):
        return True
    if ";" not in statement:
        return False
    return bool(_ENDS_LATER.search(_QUOTED.sub("''", statement)))


def _driver_idle(conn: Any) -> bool:
    """psycopg 2 or 3 says no transaction is open (a C call, no round trip); False elsewhere.

    Inside a transaction that already ran a statement, this means the
    transaction ended behind SQLAlchemy's back."""
    dbapi = dbapi_connection(conn)
    status = getattr(dbapi, "get_transaction_status", None)
    if status is not None:  # psycopg2: TRANSACTION_STATUS_IDLE == 0
        return bool(status() == 0)
    info = getattr(dbapi, "info", None)
    state = getattr(info, "transaction_status", None)
    return state is not None and getattr(state, "name", "") == "IDLE"


def _one_line(statement: str) -> str:
    """A statement as one line of at most 200 characters, for messages."""
    return " ".join(statement.split())[:200]


def is_read(statement: str) -> bool:
    return _first_word(statement) in _READS


def lock_timeout_for(attempt: int, first: float, escalate: bool = True) -> float:
    """The documented schedule: on PostgreSQL the lock timeout doubles per attempt, up to
    4× the first. Not on MySQL/MariaDB (``escalate=False``): there every query on the table
    queues behind an ALTER that waits for its metadata lock, so each second it waits is a
    second of stall for the app, and timeouts are whole seconds — 1 s, 2 s, 4 s measured as
    clients stalling 2–4 s behind a long transaction (bench/live_traffic.py --backend
    mariadb); the retries and their pauses give the blocker its room instead."""
    return first * min(2 ** (attempt - 1), 4) if escalate else first


def pause_before(attempt: int) -> float:
    """Sleep before attempt ``attempt + 1``: 0.1 s doubling to 1 s, jittered ±50%.

    Capped at 1 s so the revision lands soon after the blocker lets go."""
    import random

    return min(0.1 * 2 ** (attempt - 1), 1.0) * (0.5 + random.random())


def set_wait_timeout(connection: Any, steps: _Steps, seconds: float) -> None:
    """MySQL's ``lock_wait_timeout`` (whole seconds, at least 1) for this session.

    On the DBAPI cursor: through SQLAlchemy it would autobegin a transaction
    (see :meth:`Fence.attach`), and a SET opens none on the server."""
    value = max(1, int(round(seconds)))
    if steps.wait_timeout != value:
        cursor = dbapi_connection(connection).cursor()
        try:
            cursor.execute(f"SET SESSION lock_wait_timeout = {value}")
        finally:
            cursor.close()
        steps.wait_timeout = value


def retry_decision(kind: str, attempt: int, retries: int, *, transactional: bool,
                   committed_outside: bool, ended: bool, first_write: str,
                   statement: str) -> Tuple[bool, str, str]:
    """Retry a revision whose statement failed with ``kind``? (retry, why not, statement).

    Never once anything of the revision may have committed: an autocommit block, its own
    transaction end, or — where DDL commits itself — a statement that changed something
    before the one that timed out. Where DDL commits itself, only a DDL statement that
    timed out on its metadata lock is retried (its implicit commit ran before it waited)."""
    if kind != LOCK_TIMEOUT or committed_outside:
        return False, "", ""
    if attempt > retries:
        if not transactional and not first_write and _first_word(statement) in DDL_WORDS:
            return False, "spent", ""  # and it had changed nothing: the message says so
        return False, "", ""
    if ended:  # the revision ended a transaction itself: part of it stays
        return False, "ended", ""
    if transactional:
        return True, "", ""
    if first_write:
        return False, "committed", first_write
    if _first_word(statement) not in DDL_WORDS:
        return False, "not-ddl", statement
    return True, "", ""


def _with_lock_retries(migration_fn: Callable[..., Any], steps: _Steps, settings: Settings,
                       context: Any, guard: SignalGuard) -> Callable[..., Any]:
    """Retry a revision whose statement waited too long for a table lock.

    PostgreSQL: the session's ``lock_timeout`` is the first attempt's; on
    SQLSTATE 55P03 the attempt is rolled back (its locks are released, nothing
    of it stays), and after a jittered pause the revision's ``upgrade()`` runs
    again under a longer ``SET LOCAL lock_timeout``. Application queries queue
    behind the ALTER only for one short timeout at a time. When the revision's
    transaction began with it (one transaction per revision, the default), the
    attempt is that whole transaction and a revision that is not blocked costs
    no statement at all; otherwise (the first revision, whose transaction also
    created the version table; --single-transaction; env.py's own outer
    transaction) each attempt runs after a ``SAVEPOINT``. Never after an
    autocommit block committed part of the revision.

    MySQL/MariaDB commit each DDL statement at once, so nothing can be rolled
    back: a DDL statement that timed out on ``lock_wait_timeout`` (error 1205,
    a metadata lock) is retried only while no earlier statement of the
    revision changed anything (reads and SETs only). Its implicit commit ran
    before it waited, so no transaction of ours is open and nothing is lost.
    A DML statement that timed out (an InnoDB row lock) is not retried.
    """
    retries = settings.lock_retries
    first = settings.first_lock_timeout or 1.0
    # where DDL commits itself nothing can be rolled back: only a DDL statement before
    # which the revision changed nothing is retried (MySQL/MariaDB)
    autocommitting = not steps.dialect.transactional_ddl

    def attempt_pg(attempt: int, conn: Any, fresh: bool) -> Callable[[], None]:
        """Start attempt ``attempt``; return how to undo it."""
        if attempt > 1 or steps.local_timeout:  # else the session's lock_timeout holds
            ms = int(lock_timeout_for(attempt, first) * 1000)
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
            steps.local_timeout = True
        if fresh:  # the transaction holds only this attempt: undo it whole
            return lambda: dbapi_connection(conn).rollback()
        # a plain SAVEPOINT, never released: COMMIT releases it
        conn.exec_driver_sql(f"SAVEPOINT {SAVEPOINT}")
        return lambda: conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")

    def retryable(exc: BaseException, attempt: int, ends: int) -> bool:
        retry, why, statement = retry_decision(
            category(exc), attempt, retries, transactional=not autocommitting,
            committed_outside=bool(steps.partial), ended=steps.ends != ends,
            first_write=steps.first_write, statement=steps.last_statement)
        if why:
            steps.not_retried(why, statement)
        return retry

    def run(**kw: Any) -> None:
        conn = context.connection
        fresh = steps.fresh_transaction()
        for attempt in range(1, retries + 2):
            if autocommitting:
                set_wait_timeout(conn, steps, lock_timeout_for(attempt, first, escalate=False))
                undo: Callable[[], Any] = lambda: None  # noqa: E731 - nothing to undo
            else:
                undo = attempt_pg(attempt, conn, fresh)
            ends = steps.ends
            steps.restart()
            try:
                migration_fn(**kw)
            except Exception as exc:
                if not retryable(exc, attempt, ends):
                    raise
                waited_for = steps.last_statement  # before the rollback replaces it
                undo()
                steps.txn_statements = 0  # the driver is idle now, and rightly so
                steps.retrying(attempt, retries + 1, waited_for)
                guard.check()
                time.sleep(pause_before(attempt))
                guard.check()
                continue
            return

    return run


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
            # --statement-timeout is refused where the database has no statement_timeout
            exempt = steps.settings is not None and steps.settings.statement_timeout
            if exempt:  # CREATE INDEX CONCURRENTLY may run for hours: not a stuck statement
                conn.exec_driver_sql("SET statement_timeout = 0")

            def before(c: Any, cursor: Any, statement: str, *a: Any) -> None:
                steps.autocommitted(statement)

            event.listen(conn, "before_cursor_execute", before)
            steps.in_autocommit = True
            try:
                yield
            finally:
                steps.in_autocommit = False
                event.remove(conn, "before_cursor_execute", before)
                if exempt:
                    assert steps.settings is not None and steps.settings.statement_timeout
                    ms = int(steps.settings.statement_timeout * 1000)
                    conn.exec_driver_sql(f"SET statement_timeout = {ms}")

    MigrationContext.autocommit_block = tracked  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        MigrationContext.autocommit_block = original  # type: ignore[method-assign]


_TABLE = re.compile(r"(?:ALTER|LOCK|TRUNCATE|DROP)\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?"
                    r"([\w.\"`]+)|\bON\s+(?:ONLY\s+)?([\w.\"`]+)|REFERENCES\s+([\w.\"`]+)",
                    re.IGNORECASE)


def _blocker(connection: Optional["Connection"], statement: str) -> str:
    """Who holds a lock on the table the timed-out statement wanted, in words.

    Best effort: the query runs after the attempt failed, and a user without the
    rights to see other sessions gets the table's name only."""
    names = [next(g for g in m.groups() if g) for m in _TABLE.finditer(statement or "")]
    table = names[0].replace('"', "").replace("`", "") if names else ""
    if connection is None or not table:
        return f"a lock on {table or 'a table'}"
    from sqlalchemy.exc import SQLAlchemyError

    try:
        who = dialect_of(connection).holders(connection, table)
    except SQLAlchemyError:  # naming the blocker is best effort; the retry goes on
        return f"a lock on {table}"
    if who is None:
        return f"a lock on {table}"
    return f"a lock on {table} held by {who or 'a session that has just let go'}"


def _watch_cancel(connection: "Connection", guard: SignalGuard) -> None:
    """A signal cancels env.py's running statement (from the watcher thread)."""
    dbapi = dbapi_connection(connection)
    if hasattr(dbapi, "cancel"):  # psycopg2 / psycopg
        guard.add_canceller(dbapi.cancel)


def failure_record(exc: BaseException, signum: Optional[int]) -> FailureRecord:
    """An exception from env.py or a revision, as plain facts for the supervising process.

    Which revision was running is the parent's fact (from the events), not repeated here."""
    typed = None
    kind = category(exc)
    if isinstance(exc, deadline.Stalled):  # env.py's connection froze: a lost connection
        kind = UNREACHABLE
    elif isinstance(exc, MigrategateError):
        typed = (exc.exit_code, exc.outcome, exc.hint)
    where = None
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}"
    elif not is_database_error(exc):
        frame = app_frame(exc)
        if frame is not None:
            where = f"{frame.filename}, line {frame.lineno}"
    return FailureRecord(
        cls=type(exc).__name__,
        message=exc.message if isinstance(exc, MigrategateError) else describe(exc),
        category=kind, code=code_of(exc), sqlstate=sqlstate(exc),
        lock_lost=isinstance(exc, LockLostHere), signal=signum,
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        where=where, database_error=is_database_error(exc) or kind == UNREACHABLE,
        typed=typed)


def app_frame(exc: BaseException) -> Optional[traceback.FrameSummary]:
    """The innermost frame of ``exc`` in the app's code (env.py, a revision, a model),
    not in Alembic, SQLAlchemy, migrategate or the standard library."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _ours(f.filename)]
    return frames[-1] if frames else None


@functools.lru_cache(maxsize=1)
def _library_dirs() -> Tuple[str, ...]:
    """Where Alembic, SQLAlchemy, migrategate and the standard library live: frames there
    are not the app's. By installed location, not by a path that merely contains
    '/alembic/' (the ``alembic init alembic`` layout keeps revisions under alembic/versions)."""
    import importlib
    import os

    dirs = []
    for name in ("alembic", "sqlalchemy", "migrategate", "importlib"):
        module = importlib.import_module(name)
        dirs.append(os.path.dirname(os.path.abspath(str(module.__file__))) + os.sep)
    dirs.append("<frozen ")
    return tuple(dirs)


def _ours(filename: str) -> bool:
    import os

    path = filename if filename.startswith("<") else os.path.abspath(filename)
    return path.startswith(_library_dirs())
