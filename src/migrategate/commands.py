"""The commands: plain functions over Settings that return a Result or raise a typed error.

Data flows one way: settings → connect → lock → plan → apply → checks → result.
Every error raised here carries ``.result`` (what was done before it), so the
CLI can still print a full JSON report and a termination message.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional

from .checks import CheckResult, failed, run_checks
from .connect import connect, make_engine
from .errors import (
    AuthError,
    ConfigError,
    MigrategateError,
    MigrationFailed,
    UnknownRevision,
    VerificationFailed,
    WaitTimeout,
)
from .lock import acquire, lock_for
from .log import Writer, default_writer
from .plan import Plan, make_plan, read_current
from .report import Result
from .runtime import app_paths, migration_environment
from .scripts import Graph, load_graph, make_config
from .settings import Settings
from .signals import SignalGuard

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


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
            with contextlib.suppress(Exception):  # closing a dead connection may raise
                conn.close()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _reporting(result: Result, started: float) -> Iterator[Result]:
    try:
        yield result
    except MigrategateError as exc:
        result.outcome = exc.outcome
        result.exit_code = exc.exit_code
        result.message = exc.one_line()
        result.seconds = time.monotonic() - started
        if isinstance(exc, MigrationFailed):
            result.failed_revision = exc.revision
        exc.result = result  # type: ignore[attr-defined]
        raise
    result.seconds = time.monotonic() - started


def _graph(settings: Settings) -> Graph:
    with app_paths(settings):
        return load_graph(settings)


# --------------------------------------------------------------------------- upgrade

def upgrade(settings: Settings, writer: Writer = default_writer) -> Result:
    """Lock, plan, apply, verify. Returns only when the database is verified at the target.

    A database already at the target is verified without taking the lock, and a
    runner waiting for the lock stops waiting once another runner has brought the
    database to the target: a fleet of replicas then verifies in parallel instead
    of queueing for the lock one by one.
    """
    started = time.monotonic()
    _require_url(settings)
    result = Result("upgrade", database=settings.masked_url)
    with _reporting(result, started), SignalGuard() as guard:
        graph = _graph(settings)
        result.heads = list(graph.heads)
        with _session(settings, writer) as conn:
            lock = lock_for(conn, settings.lock_name)
            result.lock = {"name": lock.name, "kind": lock.kind, "taken": False}
            plan = _plan(settings, conn, graph)
            if plan.up_to_date:
                _report_plan(plan, graph, writer, result)
            else:
                waited = acquire(lock, settings.lock_timeout, writer,
                                 done=lambda: _plan(settings, conn, graph).up_to_date)
                if waited is None:
                    writer.info("another runner brought the database to the target meanwhile")
                    plan = _plan(settings, conn, graph)
                    _report_plan(plan, graph, writer, result)
                else:
                    result.lock.update(taken=True, waited_seconds=round(waited, 3))
                    try:
                        warning = lock.check_session()
                        if warning:
                            writer.warn(warning)
                            result.extra["warnings"] = [warning]
                        # re-read under the lock: whoever held it may have done the work
                        plan = _plan(settings, conn, graph)
                        _report_plan(plan, graph, writer, result)
                        _apply(settings, writer, guard, plan, result)
                    finally:
                        with contextlib.suppress(Exception):  # the session ending frees it
                            lock.release()
            _verify_after(settings, conn, graph, plan, result)
    return result


def _plan(settings: Settings, conn: "Connection", graph: Graph) -> Plan:
    current = read_current(conn, settings.version_table, settings.version_table_schema)
    return make_plan(graph, current, settings.target, allow_ahead=settings.allow_ahead)


def _report_plan(plan: Plan, graph: Graph, writer: Writer, result: Result) -> None:
    if plan.unknown:
        writer.warn(f"the database is at {', '.join(plan.unknown)}, newer than these scripts "
                    f"(heads {', '.join(graph.heads)}); --allow-ahead: nothing to apply")
    _fill_plan(result, plan)
    if plan.pending:
        writer.info(
            f"{len(plan.pending)} revision(s) to apply: "
            f"{', '.join(plan.current) or '(empty database)'} -> {', '.join(plan.target)}"
        )
    else:
        writer.info(f"database is up to date at {', '.join(plan.target)}")


def _apply(settings: Settings, writer: Writer, guard: SignalGuard, plan: Plan,
           result: Result) -> None:
    if not plan.pending:
        return
    from .apply import run_upgrade

    config = make_config(settings)
    with migration_environment(settings, config):
        run_upgrade(config, plan, settings, writer, guard, into=result.applied)


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
    result.message = (
        f"{result.database} at {', '.join(plan.target)}"
        f" ({len(result.applied)} revision(s) applied)"
    )


# --------------------------------------------------------------------------- verify

def verify(settings: Settings, writer: Writer = default_writer) -> Result:
    started = time.monotonic()
    _require_url(settings)
    result = Result("verify", database=settings.masked_url)
    with _reporting(result, started):
        graph = _graph(settings)
        result.heads = list(graph.heads)
        with _session(settings, writer) as conn:
            checks, plan = _checks(conn, graph, settings)
        _fill(result, checks, plan)
        bad = failed(checks)
        if bad:
            raise VerificationFailed(
                "; ".join(c.detail for c in bad),
                "run 'migrategate upgrade' (or check the migration Job's logs)",
            )
        result.message = f"{result.database} at {', '.join(result.to_revisions)}"
    return result


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
    """Block until verify passes: one connection, cheap polls, a log line at a bounded rate."""
    started = clock()
    _require_url(settings)
    result = Result("wait", database=settings.masked_url)
    deadline = started + settings.timeout
    with _reporting(result, started), SignalGuard():
        from sqlalchemy.exc import SQLAlchemyError

        from .connect import describe

        graph = _graph(settings)
        result.heads = list(graph.heads)
        engine = make_engine(settings)
        conn: Optional["Connection"] = None
        last_state: Optional[str] = None
        last_logged = -1e9
        polls = 0
        try:
            while True:
                state = ""
                try:
                    if conn is None:
                        remaining = max(deadline - clock(), 1.0)
                        conn = connect(_with_timeout(settings, remaining), engine, writer)
                        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    polls += 1
                    checks, plan = _checks(conn, graph, settings)
                    _fill(result, checks, plan)
                    bad = failed(checks)
                    if not bad:
                        result.message = (f"{result.database} at "
                                          f"{', '.join(result.to_revisions)} after {polls} poll(s)")
                        result.extra["polls"] = polls
                        return result
                    state = "; ".join(c.detail for c in bad)
                except (AuthError, UnknownRevision, ConfigError):
                    raise  # waiting won't fix these
                except MigrategateError as exc:  # unreachable: keep waiting until the deadline
                    state = exc.one_line()
                    _drop(conn)
                    conn = None
                except (SQLAlchemyError, OSError) as exc:  # connection lost: reconnect
                    state = f"database error: {describe(exc)}"
                    _drop(conn)
                    conn = None
                now = clock()
                if now >= deadline:
                    raise WaitTimeout(
                        f"schema not ready after {now - started:.0f}s: {state}",
                        "check the migration Job (kubectl logs) or run 'migrategate status'",
                    )
                if state != last_state or now - last_logged >= 30:
                    writer.info(f"waiting for schema: {state}")
                    last_state, last_logged = state, now
                sleep(min(settings.interval, max(deadline - now, 0.0)))
        finally:
            _drop(conn)
            engine.dispose()


def _drop(conn: Optional["Connection"]) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):  # already broken
            conn.close()


def _with_timeout(settings: Settings, seconds: float) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, seconds))


# --------------------------------------------------------------------------- status

def status(settings: Settings, writer: Writer = default_writer) -> Result:
    started = time.monotonic()
    _require_url(settings)
    result = Result("status", database=settings.masked_url, outcome="ok")
    with _reporting(result, started):
        graph = _graph(settings)
        result.heads = list(graph.heads)
        with _session(settings, writer) as conn:
            current = read_current(conn, settings.version_table, settings.version_table_schema)
            plan = make_plan(graph, current, "heads", allow_ahead=True)
            lock = lock_for(conn, settings.lock_name)
            holder = lock.holder()
        _fill_plan(result, plan)
        result.extra["version_table_exists"] = current is not None
        result.extra["unknown_revisions"] = list(plan.unknown)
        result.lock = {"name": lock.name, "kind": lock.kind, "held": holder is not None,
                       "holder": holder}
        result.message = (f"{len(plan.pending)} pending" if plan.pending else "up to date")
    return result
