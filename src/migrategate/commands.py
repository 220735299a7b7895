"""The commands: plain functions over Settings that return a Result or raise a typed error.

Data flows one way: settings → connect → lock → plan → apply → checks → result.
Every error raised here carries ``.result`` (what was done before it), so the
CLI can still print a full JSON report and a termination message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import dberrors, failures, historytable as history, journal
from .checks import CheckResult, failed, run_checks
from .connect import blocking, connect, make_engine, server_version
from .dialect import Dialect, dialect_for
from .errors import (
    ConfigError,
    DatabaseError,
    Interrupted,
    MigrategateError,
    UnreachableError,
    VerificationFailed,
    WaitTimeout,
)
from .lock import MigrationLock, acquire, lock_for, wait_for_orphans
from .log import Writer, default_writer
from .pending import Plan, make_plan, read_current
from .retry import Backoff
from .report import Applied, Result
from .runtime import app_paths
from .scripts import Graph, load_graph
from .settings import OPTIONS, Settings
from .urls import MYSQL
from .signals import NOTHING_CHANGED, SignalGuard
from .protocol import RunFacts
from .supervise import Spare, Supervisor, spare_for

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


def _absent(settings: Settings) -> Optional[str]:
    """Why the database can't be opened without creating it (a SQLite path that doesn't
    exist yet), in words; None when it can. Read-only commands never create what they read:
    such a database has had no migration (or the path is mistyped)."""
    why = dialect_for(settings.dialect).absent(settings)
    return None if why is None else (f"{why}: no migration has run there (or the path is "
                                     "mistyped); read-only commands never create a database")


def _require_database(settings: Settings) -> None:
    _require_url(settings)
    why = _absent(settings)
    if why is not None:
        raise VerificationFailed(why, "run 'migrategate upgrade' first, or fix the path")


def _require_url(settings: Settings) -> None:
    if settings.url is None:
        raise ConfigError(
            "no database URL",
            "set --database-url, MIGRATEGATE_DATABASE_URL or DATABASE_URL "
            "(or --preset dify with Dify's DB_* variables)",
        )


@contextlib.contextmanager
def _session(settings: Settings, writer: Writer) -> Iterator["Connection"]:
    """One AUTOCOMMIT connection: never idle in a transaction (that blocks CONCURRENTLY)."""
    engine = make_engine(settings)
    try:
        conn = connect(settings, engine, writer)
        try:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")
        finally:
            with contextlib.suppress(SQLAlchemyError, OSError):  # closing a dead one may raise
                conn.close()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _reporting(result: Result, started: float) -> Iterator[Result]:
    """Every command's work runs in here: a DBAPI error that reaches it becomes its typed
    error (never an internal error, exit 1), and the result records how the command ended."""
    try:
        with _database_errors():
            yield result
    except MigrategateError as exc:
        result.outcome = exc.outcome
        result.exit_code = exc.exit_code
        result.message = exc.one_line()
        result.seconds = time.monotonic() - started
        result.failed_revision = getattr(exc, "revision", None)
        exc.result = result  # type: ignore[attr-defined]
        raise
    result.seconds = time.monotonic() - started


def _graph(settings: Settings) -> Graph:
    with app_paths(settings):
        return load_graph(settings)


# --------------------------------------------------------------------------- upgrade

#: options that mean something on one kind of database only, and the kinds
_DIALECT_OPTIONS = tuple((o.name, o.dialects, o.dialect_label)
                         for o in OPTIONS.values() if o.dialects)  # the option table's


def _dialect_options(settings: Settings) -> None:
    """An option the database would silently ignore is a configuration error."""
    for name, dialects, label in _DIALECT_OPTIONS:
        if getattr(settings, name) and settings.dialect not in dialects:
            flag = OPTIONS[name].flag_name
            raise ConfigError(f"{flag} ({settings.sources.get(name, 'given')}) works on {label} "
                              f"only; this database is {settings.dialect}",
                              "remove it for this database")


def upgrade(settings: Settings, writer: Writer = default_writer, debug: bool = False) -> Result:
    """Lock, plan, apply, verify. Returns only when the database is verified at the target.

    A database already at the target is verified without the lock (and without
    starting a migration process), and a runner waiting for the lock stops
    waiting once another runner has brought the database to the target.
    """
    started = time.monotonic()
    _require_url(settings)
    _dialect_options(settings)
    result = Result("upgrade", database=settings.masked_url)
    with _reporting(result, started), SignalGuard() as guard, _database_errors(), \
            spare_for(settings) as spare:  # its imports overlap connecting, planning, locking
        graph = _graph(settings)
        result.heads = list(graph.heads)
        with _session(settings, writer) as conn:
            lock = lock_for(conn, settings.lock_name)
            result.lock = {"name": lock.name, "kind": lock.kind, "taken": False}
            plan = _plan(settings, conn, graph)
            if not plan.up_to_date and (settings.refuse or settings.show_plan):
                _plan_first(settings, conn, graph, plan, writer, result)
            verified = False
            if not plan.up_to_date:
                plan, verified = _migrate(settings, writer, guard, conn, graph, lock, result,
                                          debug, spare)
            else:
                _report_plan(plan, graph, writer, result)
            if not verified:
                _verify_after(settings, conn, graph, plan, result)
    return result


def _plan_first(settings: Settings, conn: "Connection", graph: Graph, plan: Plan,
                writer: Writer, result: Result) -> None:
    """--show-plan and --refuse: the deploy plan, before the lock is taken."""
    from . import planner

    policy = planner.check_policy(settings.refuse) if settings.refuse else None
    deploy = planner.build(settings, conn, graph, plan, writer)
    result.extra["plan"] = deploy.to_dict()
    if settings.show_plan:
        planner.render_text(deploy, writer.info, settings.masked_url)
    matches = planner.refused(deploy, policy) if policy else []
    for line in matches:
        writer.error(f"refused: {line}")
    if matches:
        raise ConfigError(
            f"the plan has {len(matches)} finding(s) that --refuse {policy} refuses "
            f"(first: {matches[0]})",
            "nothing was applied and the lock was not taken; change the revisions, or run "
            "'migrategate plan' to see each finding and deploy with a policy that allows it")


def _migrate(settings: Settings, writer: Writer, guard: SignalGuard, conn: "Connection",
             graph: Graph, lock: MigrationLock, result: Result, debug: bool,
             spare: Optional[Spare] = None) -> Tuple[Plan, bool]:
    """Under the lock: re-plan, run the migration process, reconcile with the database,
    verify, and record the run in the history. Returns the plan and whether it verified
    (a run that applied something is verified here, before its history rows are written,
    so that their exit code is the run's)."""
    lock.keep_alive()  # the session idles between polls and while the child migrates
    acquired = acquire(lock, settings.lock_timeout, writer,
                       done=lambda: _plan(settings, conn, graph).up_to_date)
    if not acquired.taken:
        writer.info("another runner brought the database to the target meanwhile")
        plan = _plan(settings, conn, graph)
        _report_plan(plan, graph, writer, result)
        return plan, False
    assert result.lock is not None
    result.lock.update(taken=True, waited_seconds=round(acquired.waited, 3))
    run = None
    try:
        proxy = lock.check_session()
        if proxy and not settings.allow_proxy:
            raise ConfigError(proxy, "connect migrategate to PostgreSQL directly; if the "
                              "proxy pools per session (or is a plain TCP proxy), pass "
                              "--allow-proxy")
        if proxy:
            writer.warn(proxy)
            result.extra["warnings"] = [proxy]
            settings = dataclasses.replace(settings, behind_proxy=True)  # for the child
        wait_for_orphans(lock, settings.lock_timeout, writer)
        plan = _plan(settings, conn, graph)  # whoever held the lock may have done the work
        _report_plan(plan, graph, writer, result)
        if not plan.pending:
            return plan, False
        recorder = _open_history(settings, conn, graph, plan, writer, result)
        journal_info, resume = _resume(settings, conn, recorder, plan, writer, result)
        run = Supervisor(settings, plan, lock, writer, guard, result.applied, debug,
                         server_version(conn), journal_info, resume, spare).execute()
        try:
            _conclude(settings, conn, graph, plan, run, result.applied, writer)
            _verify_after(settings, conn, graph, plan, result)
        except MigrategateError as exc:
            _write_history(settings, conn, recorder, run, exc, writer, result)
            raise
        except DBAPIError as exc:
            error = database_error(exc)
            _write_history(settings, conn, recorder, run, error, writer, result)
            raise error from None
        _write_history(settings, conn, recorder, run, None, writer, result)
        return plan, True
    finally:
        if run is None or run.lost is None:
            with contextlib.suppress(SQLAlchemyError, OSError):  # its session ending frees it
                lock.release()


def _history_failed(settings: Settings, what: str, exc: BaseException, writer: Writer,
                    result: Result,
                    hint: str = "grant the migration user CREATE and INSERT on it, or pass "
                                "--no-history") -> None:
    """A history that can't be written never fails a run: a warning with its reason."""
    reason = exc.one_line() if isinstance(exc, MigrategateError) else dberrors.describe(exc)
    line = (f"could not {what} the history table {settings.history_table}: {reason}; the "
            f"run's outcome does not depend on it ({hint})")
    writer.warn(line)
    result.extra.setdefault("warnings", []).append(line)


def _open_history(settings: Settings, conn: "Connection", graph: Graph, plan: Plan,
                  writer: Writer, result: Result) -> Optional[history.Recorder]:
    """Under the lock, before the migration process starts: the history table exists
    (created, and the database's revisions adopted, on the first run); None with a warning
    when it can't be, or with --no-history."""
    if settings.no_history:
        return None
    recorder = history.Recorder(settings.history_table, settings.version_table_schema,
                                graph, plan)
    if settings.dialect in MYSQL:  # DDL commits at once: what committed, statement by statement
        recorder.journal = journal.name_for(settings.history_table)
    try:
        recorder.open(conn)
    except (SQLAlchemyError, OSError) as exc:
        _history_failed(settings, "create", exc, writer, result)
        return None
    if recorder.adopted:
        writer.info(f"history table {recorder.qualified} created; {len(recorder.adopted)} "
                    "revision(s) already in the database recorded as present before history")
    if settings.history_reader:
        try:
            recorder.grant(conn, settings.history_reader)
        except (SQLAlchemyError, OSError) as exc:
            _history_failed(settings, f"grant {settings.history_reader} SELECT on", exc,
                            writer, result, "check that the role or account exists and that "
                            "the migration user may grant on its own tables")
    for run_id, revision, outcome in recorder.recovered:
        writer.warn(f"run {run_id} ended without recording {revision} (its runner was killed "
                    f"or lost): recorded now as {outcome}, from its journal")
    return recorder


def _resume(settings: Settings, conn: "Connection", recorder: Optional[history.Recorder],
            plan: Plan, writer: Writer, result: Result
            ) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """MySQL/MariaDB: the journal the migration process writes, and what it resumes —
    a pending revision whose newest attempt left statements committed and did not end on
    its own (killed, interrupted, the lock lost); a failed one only for ``repair --yes``."""
    if recorder is None or recorder.journal is None:
        return None, None
    info = {"run_id": recorder.run_id, "runner": recorder.runner.host,
            "insert": journal.insert_sql(conn, recorder.journal, settings.version_table_schema)}
    attempt = journal.newest_attempt(conn, recorder.journal, settings.version_table_schema,
                                     settings.history_table, [r.id for r in plan.pending])
    if attempt is None or not (attempt.statements or attempt.maybe_applied):
        return info, None
    n, rev = len(attempt.statements), attempt.revision
    what = (f"run {attempt.run_id} ({attempt.outcome or 'runner gone'}, on "
            f"{attempt.runner or 'an unknown runner'}) " + (
                f"left {n} statement(s) of {rev} committed" if n else
                f"stopped in {rev} with none of its statements recorded as committed"))
    if not (attempt.maybe_applied or settings.resume_failed):
        writer.warn(f"{what}; it failed, so it is not resumed: 'migrategate repair' shows "
                    "what resuming it would skip, and does it with --yes")
        return info, None
    if settings.no_resume:
        writer.warn(f"{what}; --no-resume: {rev} runs from its first statement")
        return info, None
    writer.info(f"{what}: resuming it, {n} committed statement(s) skipped (each matched by "
                "position and SQL)" + ("; the one after them may have committed as its runner "
                                       "died: it is checked" if attempt.maybe_applied else ""))
    recorder.resumed = (rev, n, attempt.run_id)
    result.extra["resumed"] = {"revision": rev, "from_run": attempt.run_id, "skipped": n}
    return info, attempt.skips()


def _write_history(settings: Settings, conn: "Connection",
                   recorder: Optional[history.Recorder], facts: RunFacts,
                   error: Optional[MigrategateError], writer: Writer, result: Result) -> None:
    """The run's rows, on the lock session (or, when the lock was lost with its session,
    on a new connection: rows are only appended, and say what the database holds)."""
    if recorder is None:
        return
    try:
        if facts.lost is None:
            written = recorder.write(conn, facts, error)
        else:
            with _session(_with_timeout(settings, min(settings.connect_timeout, 10.0)),
                          writer) as fresh:
                written = recorder.write(fresh, facts, error)
    except Interrupted:
        raise
    except (SQLAlchemyError, OSError, MigrategateError) as exc:
        _history_failed(settings, "write to", exc, writer, result)
        return
    result.extra["history"] = {"table": recorder.qualified, "run_id": recorder.run_id,
                               "rows": written, "adopted": list(recorder.adopted)}


def _conclude(settings: Settings, conn: "Connection", graph: Graph, plan: Plan,
              facts: RunFacts, applied: List[Applied], writer: Writer) -> None:
    """Read back what committed from the database itself, then raise how the run ended."""
    dialect = dialect_for(settings.dialect)
    after = _read_back(settings, conn, graph, facts, dialect, writer)
    other = None
    if after is not None:
        # ours: what the database held before, and what our child ran to its end (its
        # COMMIT may have returned without the child living to say so)
        ours = graph.ancestors(set(plan.current) | set(facts.committed) | facts.ran)
        in_db = graph.ancestors(after)
        facts.read_back = tuple(r.id for r in plan.pending if r.id in in_db and r.id in ours)
        _reconcile(plan, facts, applied, writer)
        moved = sorted(r for r in after if r not in ours)
        if facts.error is not None and moved and facts.lost is None:
            other = _other_migrator(conn, moved)
    error = failures.outcome(facts, dialect, other)
    if error is not None:
        raise error


def _read_back(settings: Settings, conn: "Connection", graph: Graph, facts: RunFacts,
               dialect: Dialect, writer: Writer) -> Optional[Tuple[str, ...]]:
    """The version table after the run, on the lock session or, when that is gone, on a
    new connection; None (and why) when the database can't be read. Where a stopped
    revision may have left objects (DDL that commits itself, its own COMMIT, an
    autocommit block), which of the objects its file creates are there now."""
    try:
        if facts.lost is None:
            return _read_state(settings, conn, graph, facts, dialect)
        with _session(_with_timeout(settings, min(settings.connect_timeout, 10.0)),
                      writer) as fresh:
            return _read_state(settings, fresh, graph, facts, dialect)
    except (SQLAlchemyError, OSError, MigrategateError) as exc:
        facts.read_back_error = (exc.one_line() if isinstance(exc, MigrategateError)
                                 else dberrors.describe(exc))
        writer.warn(f"could not read back what committed: {facts.read_back_error}")
        return None


def _read_state(settings: Settings, conn: "Connection", graph: Graph, facts: RunFacts,
                dialect: Dialect) -> Tuple[str, ...]:
    after = read_current(conn, settings.version_table, settings.version_table_schema) or ()
    stopped = facts.current
    if (stopped is not None and stopped in graph and stopped not in graph.ancestors(after)
            and (not dialect.transactional_ddl or facts.committed_statements(stopped)
                 or stopped in facts.ended)):
        from .schemaobjects import existing_objects, planned_objects

        facts.left_in_db = existing_objects(conn, planned_objects(graph.revisions[stopped].path))
    return after


def _reconcile(plan: Plan, facts: RunFacts, applied: List[Applied], writer: Writer) -> None:
    """The result lists what the database holds, in apply order, whatever the events said."""
    assert facts.read_back is not None
    reported = {a.revision: a for a in applied}
    in_db = set(facts.read_back)
    applied[:] = [reported.get(r.id) or Applied(r.id, r.message, facts.seconds.get(r.id, 0.0))
                  for r in plan.pending if r.id in in_db]
    for k, a in enumerate(applied, 1):
        if a.revision not in reported:
            writer.info(f"[{k}/{len(plan.pending)}] {a.revision}  {a.message}  "
                        "(committed; read back from the database)")
    for rev in sorted(set(reported) - in_db):
        writer.warn(f"{rev} was reported committed by the migration process, but "
                    "alembic_version does not hold it: something else changed the version "
                    "table; run 'migrategate status'")


def _other_migrator(conn: "Connection", moved: List[str]) -> str:
    from .dialect import of

    sessions = of(conn).other_sessions(conn)
    return (f"alembic_version now holds {', '.join(moved)}, which this runner did not write"
            + (f"; other sessions: {sessions}" if sessions else ""))


@contextlib.contextmanager
def _database_errors() -> Iterator[None]:
    """A database error outside any revision gets a database exit code, never 1."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as exc:
        raise database_error(exc) from None


def database_error(exc: BaseException) -> MigrategateError:
    """The typed error for a database error on a statement of migrategate's own.

    A refusal no wait can fix (privilege, authentication, missing database) is the
    same typed error as on connecting; a lost connection is unreachable (3); anything
    else is a database error (3).
    """
    from .connect import refused

    kind = dberrors.category(exc)
    reason = dberrors.describe(exc)
    code = dberrors.code_of(exc)
    tag = f" [{code}]" if code else ""
    if kind in dberrors.REFUSALS:
        typed = refused(exc, "the database", None)
        assert isinstance(typed, MigrategateError)
        return typed
    if kind == dberrors.UNREACHABLE:
        return UnreachableError(f"lost the database connection{tag}: {reason}",
                                "nothing was applied by this step; check the server and re-run")
    return DatabaseError(f"the database failed a statement of migrategate's{tag}: {reason}",
                         "check the server's log and the user's rights; re-run")


def _plan(settings: Settings, conn: "Connection", graph: Graph) -> Plan:
    current = read_current(conn, settings.version_table, settings.version_table_schema)
    return make_plan(graph, current, settings.target, allow_ahead=settings.allow_ahead)


def _report_plan(plan: Plan, graph: Graph, writer: Writer, result: Result) -> None:
    _fill_plan(result, plan)
    if plan.unknown:
        writer.warn(f"the database is at {', '.join(plan.unknown)}, newer than these scripts "
                    f"(heads {', '.join(graph.heads)}); --allow-ahead: nothing to apply")
    elif plan.pending:
        writer.info(
            f"{len(plan.pending)} revision(s) to apply: "
            f"{', '.join(plan.current) or '(empty database)'} -> {', '.join(plan.target)}"
        )
    else:
        writer.info(f"database is up to date at {', '.join(plan.target)}")


def _verify_after(settings: Settings, conn: "Connection", graph: Graph, plan: Plan,
                  result: Result) -> None:
    checks, _ = run_checks(conn, graph, settings.target, settings.expect_tables,
                           settings.version_table, settings.version_table_schema,
                           allow_ahead=settings.allow_ahead)
    result.checks = checks
    bad = failed(checks)
    if bad:
        raise VerificationFailed(
            "verification after upgrade failed: " + "; ".join(c.detail for c in bad),
            "env.py may not run migrations online, or an expected table is not created by "
            "these migrations; run 'migrategate status'",
        )
    result.outcome = "ahead" if plan.unknown else (
        "verified" if result.applied else "up-to-date")
    if plan.unknown:
        result.message = (f"{result.database} at {', '.join(plan.current)}, ahead of these "
                          f"scripts' heads {', '.join(plan.target)} (accepted: --allow-ahead)")
    else:
        result.message = (f"{result.database} at {', '.join(plan.target)}"
                          f" ({len(result.applied)} revision(s) applied)")


# --------------------------------------------------------------------------- verify

def verify(settings: Settings, writer: Writer = default_writer) -> Result:
    started = time.monotonic()
    _require_url(settings)
    result = Result("verify", database=settings.masked_url)
    with _reporting(result, started):
        graph = _graph(settings)
        result.heads = list(graph.heads)
        absent = _absent(settings)
        if absent is not None:  # the version-table check fails, without creating the file
            checks, plan = [CheckResult("version-table", False, absent)], None
        else:
            with _session(settings, writer) as conn:
                checks, plan = _checks(conn, graph, settings)
                if plan is not None and not failed(checks):
                    checks += _integrity_checks(settings, conn, graph, plan.current, writer,
                                                result)
        _fill(result, checks, plan)
        bad = failed(checks)
        if bad:
            raise VerificationFailed(
                "; ".join(c.detail for c in bad),
                "run 'migrategate upgrade' (or check the migration Job's logs)",
            )
        result.message = f"{result.database} at {', '.join(result.to_revisions)}"
    return result


def _integrity_checks(settings: Settings, conn: "Connection", graph: Graph,
                      current: Tuple[str, ...], writer: Writer,
                      result: Result) -> List[CheckResult]:
    """What the history says of the revisions the database holds: a file changed since it
    was applied, revisions something else applied. Warnings, never a failure, except
    checksum drift with --strict-checksums (a failed check: exit 7). One read of the
    history table; a history that can't be read is a warning too."""
    found = integrity(settings, conn, graph, current, writer, result)
    if found is None or not settings.strict_checksums:
        return []
    if found.drift:
        return [CheckResult("checksums", False, found.drift_line() + " (--strict-checksums)")]
    return [CheckResult("checksums", True, "every applied revision's file is the one applied"
                        if found.table_exists else "no history table: nothing to compare")]


def integrity(settings: Settings, conn: "Connection", graph: Graph,
              current: Optional[Tuple[str, ...]], writer: Writer,
              result: Result) -> Optional[history.Integrity]:
    """The history's findings, each warned about (checksum drift only when it is not made
    an error by --strict-checksums) and kept in the result; None with --no-history or when
    the history can't be read (a warning)."""
    if settings.no_history:
        return None
    try:
        found = history.integrity(conn, graph, current, settings.history_table,
                                  settings.version_table_schema)
    except SQLAlchemyError as exc:
        line = (f"could not read the history table {settings.history_table}: "
                f"{dberrors.describe(exc)}; checksums and history not checked")
        writer.warn(line)
        result.extra.setdefault("warnings", []).append(line)
        return None
    result.extra["integrity"] = found.to_dict()
    lines = ([found.drift_line()] if found.drift and not settings.strict_checksums else []) + (
        [found.foreign_line()] if found.foreign else [])
    for line in lines:
        writer.warn(line)
        result.extra.setdefault("warnings", []).append(line)
    return found


def _checks(conn: "Connection", graph: Graph, settings: Settings):  # type: ignore[no-untyped-def]
    return run_checks(conn, graph, settings.target or "heads", settings.expect_tables,
                      settings.version_table, settings.version_table_schema,
                      allow_ahead=settings.allow_ahead)


def _fill(result: Result, checks: List[CheckResult], plan) -> None:  # type: ignore[no-untyped-def]
    result.checks = checks
    if plan is not None:
        _fill_plan(result, plan)


def _fill_plan(result: Result, plan: Plan) -> None:
    result.from_revisions = list(plan.current)
    result.to_revisions = list(plan.target)
    result.pending = [{"revision": r.id, "message": r.message} for r in plan.pending]


# --------------------------------------------------------------------------- wait

def wait(settings: Settings, writer: Writer = default_writer,
         sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> Result:
    """Block until verify passes: one connection, cheap polls, a log line at a bounded rate.

    Unreachable and lost connections are waited out; a wrong password, a missing
    privilege or database, an unknown revision or a configuration error end the
    wait at once (on connecting or on a poll: ``dberrors.REFUSALS``), and so does
    a signal (each poll runs so that SIGTERM is handled within a fraction of a
    second, even while a driver blocks in connect).
    """
    started = clock()
    _require_url(settings)
    result = Result("wait", database=settings.masked_url)
    with _reporting(result, started), SignalGuard(hint=NOTHING_CHANGED):
        from sqlalchemy.exc import SQLAlchemyError

        graph = _graph(settings)
        result.heads = list(graph.heads)
        backoff = Backoff(settings.timeout, first=settings.interval, cap=settings.interval,
                          factor=1.0, log_every=30, sleep=sleep, clock=clock)
        # a stalled connection is waited out like an unreachable server, never past --timeout
        engine = make_engine(settings, remaining=lambda: backoff.remaining)
        conn: Optional["Connection"] = None
        try:
            while True:
                try:
                    absent = _absent(settings)
                    if absent is not None:  # not created yet: wait for it, never create it
                        raise UnreachableError(absent)
                    if conn is None:
                        conn = connect(_with_timeout(settings, max(backoff.remaining, 1.0)),
                                       engine, writer, announce=backoff.attempts == 0)
                        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    checks, plan = blocking(engine, functools.partial(_checks, conn, graph,
                                                                      settings))
                    if plan is not None and not failed(checks):  # once, at the end
                        checks += blocking(engine, functools.partial(
                            _integrity_checks, settings, conn, graph, plan.current, writer,
                            result))
                    _fill(result, checks, plan)
                    bad = failed(checks)
                    if any(c.name == "checksums" for c in bad):  # waiting can't fix a file
                        raise VerificationFailed(
                            "; ".join(c.detail for c in bad),
                            "deploy the revision files that were applied, or drop "
                            "--strict-checksums once the change is understood")
                    if not bad:
                        polls = backoff.attempts + 1
                        result.message = (f"{result.database} at "
                                          f"{', '.join(result.to_revisions)} after {polls} poll(s)")
                        result.extra["polls"] = polls
                        return result
                    state = "; ".join(c.detail for c in bad)
                except UnreachableError as exc:  # not up yet: keep waiting until the deadline
                    state = exc.one_line()
                    _drop(conn)
                    conn = None
                except (SQLAlchemyError, OSError) as exc:  # connection lost: reconnect
                    if dberrors.category(exc) in dberrors.REFUSALS:  # waiting can't fix it
                        raise database_error(exc) from None
                    state = f"database error: {dberrors.describe(exc)}"
                    _drop(conn)
                    conn = None
                if backoff.expired:
                    raise WaitTimeout(
                        f"schema not ready after {backoff.waited:.0f}s: {state}",
                        "check the migration Job (kubectl logs) or run 'migrategate status'",
                    )
                if backoff.should_log(state):
                    writer.info(f"waiting for schema: {state}")
                backoff.pause()
        finally:
            _drop(conn)
            engine.dispose()


def _drop(conn: Optional["Connection"]) -> None:
    """Close a connection that may already be broken."""
    if conn is not None:
        with contextlib.suppress(SQLAlchemyError, OSError):  # already broken: close may raise
            conn.close()


def _with_timeout(settings: Settings, seconds: float) -> Settings:
    return dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, seconds))


# --------------------------------------------------------------------------- repair

def repair(settings: Settings, writer: Writer = default_writer) -> Result:
    """Drop what a failed CONCURRENTLY build of the next pending revision left (PostgreSQL),
    under the migration lock, only with --yes; anything else is named, not touched."""
    from . import indexrepair as repairing

    started = time.monotonic()
    _require_database(settings)
    result = Result("repair", database=settings.masked_url, outcome="repaired")
    with _reporting(result, started), SignalGuard():
        graph = _graph(settings)
        if settings.dialect in MYSQL:
            return _resume_repair(settings, graph, writer, result)
        with _session(settings, writer) as conn:
            plan = _plan(settings, conn, graph)
            todo = repairing.plan_repair(conn, graph, plan, settings.dialect)
            result.extra["repair"] = {"revision": todo.revision, "statements": todo.statements,
                                      "left": todo.left}
            for line in repairing.describe(todo, settings):
                writer.info(line)
            if not todo.drop:
                if todo.left:
                    raise ConfigError(f"nothing repair may do: {todo.left[0]}",
                                      "run 'migrategate doctor' for the whole picture")
                result.outcome, result.message = "nothing-to-repair", "nothing to repair"
                return result
            if not settings.yes:
                result.outcome = "dry-run"
                result.message = (f"would drop {len(todo.drop)} INVALID index(es) "
                                  f"{todo.revision} left: {', '.join(todo.drop)}; nothing was "
                                  "done (pass --yes to do it)")
                return result
            lock = lock_for(conn, settings.lock_name)
            acquire(lock, settings.lock_timeout, writer)
            try:
                dropped = repairing.run_repair(conn, todo, writer)
            finally:
                with contextlib.suppress(SQLAlchemyError, OSError):
                    lock.release()
            missed = [n for n in todo.drop if n not in dropped]
            if missed:
                raise DatabaseError(f"{', '.join(missed)} still INVALID after DROP INDEX",
                                    "check the server's log; nothing else was changed")
            result.extra["repair"]["dropped"] = dropped
            result.message = (f"dropped {', '.join(dropped)}; re-run 'migrategate upgrade' "
                              f"for {todo.revision}")
    return result


def _resume_repair(settings: Settings, graph: Graph, writer: Writer, result: Result) -> Result:
    """MySQL/MariaDB: resume the next pending revision after the statements its newest
    attempt committed (the journal), as upgrade resumes a killed one; shown first, done
    only with --yes, by an upgrade to that revision (lock, fence, history, verification)."""
    with _session(settings, writer) as conn:
        plan = _plan(settings, conn, graph)
        pending = [r.id for r in plan.pending]
        attempt = journal.newest_attempt(
            conn, journal.name_for(settings.history_table), settings.version_table_schema,
            settings.history_table, pending[:1])
    if not pending:
        result.outcome, result.message = "nothing-to-repair", "nothing to repair"
        return result
    if attempt is None or not attempt.statements:
        raise ConfigError(
            f"nothing repair may do: the journal holds no committed statement of {pending[0]}, "
            "the next pending revision (no attempt of it committed any, or it ran without "
            "history)",
            "run 'migrategate doctor': if it names objects the revision creates, a person "
            "must decide whether to drop them or stamp")
    rev = attempt.revision
    skipped = [s["statement"] or "" for s in attempt.statements]
    result.extra["repair"] = {"revision": rev, "from_run": attempt.run_id,
                              "outcome": attempt.outcome, "skip": skipped}
    writer.info(f"next pending revision: {rev}; run {attempt.run_id} "
                f"({attempt.outcome or 'runner gone'}) committed {len(skipped)} statement(s):")
    for i, text in enumerate(skipped, 1):
        writer.info(f"  {i}. {text}")
    writer.info(f"repair resumes {rev}: its upgrade() runs again with these {len(skipped)} "
                "skipped, each matched by position and SQL (a difference stops it before it "
                "changes anything), then the rest of it")
    if not settings.yes:
        result.outcome = "dry-run"
        result.message = (f"would resume {rev} after {len(skipped)} committed statement(s); "
                          "nothing was done (pass --yes to do it)")
        return result
    done = upgrade(dataclasses.replace(settings, target=rev, resume_failed=True), writer)
    result.extra["upgrade"] = done.to_dict()
    result.message = (f"resumed {rev} after {len(skipped)} committed statement(s); it is "
                      "applied and verified; run 'migrategate upgrade' for the rest")
    return result


# --------------------------------------------------------------------------- plan

def plan(settings: Settings, writer: Writer = default_writer) -> Result:
    """What the pending revisions will do to this database; reads, never writes (the
    session is read-only, the SQL comes from Alembic's offline mode in a child)."""
    from . import planner

    started = time.monotonic()
    _require_url(settings)
    _dialect_options(settings)
    result = Result("plan", database=settings.masked_url, outcome="planned")
    with _reporting(result, started):
        graph = _graph(settings)
        result.heads = list(graph.heads)
        if _absent(settings) is not None:  # never create it: everything is pending
            pending = make_plan(graph, None, settings.target)
            deploy = planner.build(settings, None, graph, pending, writer)
        else:
            with _session(settings, writer) as conn:
                dialect_for(settings.dialect).read_only(conn)
                pending = _plan(settings, conn, graph)
                deploy = planner.build(settings, conn, graph, pending, writer)
        _fill_plan(result, pending)
        result.extra["plan"] = deploy.to_dict()
        counts = deploy.counts()
        result.message = (f"{len(pending.pending)} revision(s) planned: {counts['risky']} "
                          f"risky, {counts['warning']} warning, {counts['info']} info"
                          if pending.pending else "nothing to apply")
        render = planner.render_markdown if settings.markdown else planner.render_text
        result.human = lambda w: render(deploy, w.result, settings.masked_url)
    return result


# --------------------------------------------------------------------------- status

def status(settings: Settings, writer: Writer = default_writer) -> Result:
    started = time.monotonic()
    _require_database(settings)
    result = Result("status", database=settings.masked_url, outcome="ok")
    with _reporting(result, started):
        graph = _graph(settings)
        result.heads = list(graph.heads)
        with _session(settings, writer) as conn:
            current = read_current(conn, settings.version_table, settings.version_table_schema)
            plan = make_plan(graph, current, "heads", allow_ahead=True)
            lock = lock_for(conn, settings.lock_name)
            holder = lock.holder()
            integrity(settings, conn, graph, current, writer, result)
        _fill_plan(result, plan)
        result.extra["version_table_exists"] = current is not None
        result.extra["unknown_revisions"] = list(plan.unknown)
        result.lock = {"name": lock.name, "kind": lock.kind, "held": holder is not None,
                       "holder": holder}
        result.message = (f"{len(plan.pending)} pending" if plan.pending else "up to date")
    return result


# --------------------------------------------------------------------------- history

def history_(settings: Settings, writer: Writer = default_writer) -> Result:
    """migrategate's history table, newest first; reads, never writes."""
    started = time.monotonic()
    _require_database(settings)
    result = Result("history", database=settings.masked_url, outcome="ok")
    with _reporting(result, started):
        with _session(settings, writer) as conn:
            rows = history.read(conn, settings.history_table, settings.version_table_schema)
        qualified = (f"{settings.version_table_schema}.{settings.history_table}"
                     if settings.version_table_schema else settings.history_table)
        result.extra["history_table"] = qualified
        result.extra["history"] = [history.to_json(r) for r in rows or []]
        result.message = (f"{len(rows)} row(s) in {qualified}" if rows is not None else
                          f"no history table {qualified}: no upgrade has applied anything "
                          "with history yet")
        shown = rows or []
        result.human = lambda w: (history.render(shown, w.result) if rows is not None
                                  else w.result(result.message))
    return result
