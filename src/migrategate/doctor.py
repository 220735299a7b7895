"""doctor: the one command to run when "the tables aren't there".

Each check prints ✓/✗, one line of what it found and, when it fails, what to
do. It runs every check it can instead of stopping at the first failure,
because the useful answer is usually the combination (e.g. "no tables" plus
"a Redis db_upgrade_lock with no TTL" is Dify's original incident).

Exit code: a database doctor could not check ends it with that error's own code
(unreachable 3, authentication 4, missing database 2, missing privilege 12); when
the database could be checked, any failed finding is 7; Redis findings never count.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, List, Mapping, Optional

from .checks import CheckResult
from .errors import (
    AuthError,
    ConfigError,
    Interrupted,
    MigrategateError,
    UnreachableError,
    VerificationFailed,
)
from .log import Writer, default_writer
from .report import Result
from .settings import OPTIONS, Settings
from .redact import register_secret
from .urls import mask_redis_url, url_secrets

SHOWN_SETTINGS = ("database_url", "migrations", "config", "preset", "app_root", "lock_name",
                  "expect_tables", "redis_url", "version_table")


def doctor(settings: Optional[Settings], writer: Writer = default_writer,
           config_error: Optional[ConfigError] = None,
           env: Optional[Mapping[str, str]] = None) -> Result:
    import os
    import time

    started = time.monotonic()
    env = os.environ if env is None else env
    result = Result("doctor", outcome="ok")
    checks: List[CheckResult] = []
    result.checks = checks

    if settings is None or config_error is not None:
        checks.append(_bad("config", config_error.message if config_error else "no settings",
                           config_error.hint if config_error else "see --help"))
        return _finish(result, started, ConfigError)
    result.database = settings.masked_url
    checks.append(CheckResult("config", True, _describe_sources(settings)))
    if settings.url is None:
        checks.append(_bad("database", "no database URL resolved",
                           "set --database-url / MIGRATEGATE_DATABASE_URL, or --preset dify "
                           "with DB_HOST, DB_PORT, DB_USERNAME, DB_PASSWORD, DB_DATABASE"))
        return _finish(result, started, ConfigError)

    graph = _check_scripts(settings, checks)
    worst: Optional[type] = None
    conn_ok = _check_database(settings, graph, checks, writer)
    if conn_ok is not None:
        worst = conn_ok
    _check_redis_lock(settings, env, checks)
    return _finish(result, started, worst or VerificationFailed)


def _bad(name: str, detail: str, hint: Optional[str]) -> CheckResult:
    return CheckResult(name, False, f"{detail} — {hint}" if hint else detail)


def _describe_sources(settings: Settings) -> str:
    parts = []
    for name in SHOWN_SETTINGS:
        source = settings.sources.get(name)
        if not source:
            continue
        if name == "database_url":
            value: Any = settings.masked_url
        else:
            value = getattr(settings, name, None)
            if name == "redis_url" and value:
                value = mask_redis_url(str(value))
        if isinstance(value, tuple):
            value = ",".join(value)
        parts.append(f"{OPTIONS[name].name}={value} ({source})")
    return "; ".join(parts) or "defaults only"


def _check_scripts(settings: Settings, checks: List[CheckResult]) -> Any:
    from .runtime import app_paths
    from .scripts import load_graph

    try:
        with app_paths(settings):
            graph = load_graph(settings)
    except ConfigError as exc:
        checks.append(_bad("migrations", exc.message, exc.hint))
        return None
    checks.append(CheckResult(
        "migrations", True,
        f"{len(graph.revisions)} revisions, head(s) {', '.join(graph.heads)} "
        f"(read {'without importing them' if graph.source == 'static' else 'via Alembic'})"))
    return graph


def _check_database(settings: Settings, graph: Any, checks: List[CheckResult],
                    writer: Writer) -> Optional[type]:
    from sqlalchemy.exc import DBAPIError

    from .checks import version_table_check
    from .commands import database_error
    from .connect import connect, make_engine
    from .lock import lock_for
    from .pending import read_current

    from .dialect import dialect_for

    absent = dialect_for(settings.dialect).absent(settings)
    if absent is not None:  # opening it would create it
        checks.append(_bad("database", f"{absent}: no migration has run there (or the path "
                           "is mistyped)", "run 'migrategate upgrade' first, or fix the path; "
                           "doctor never creates a database"))
        return VerificationFailed
    quick = dataclasses.replace(settings, connect_timeout=min(settings.connect_timeout, 10.0))
    engine = make_engine(quick)
    try:
        try:
            conn = connect(quick, engine, Writer(quiet=True))
        except (UnreachableError, AuthError) as exc:
            hint = ("check DB_PASSWORD / the password Secret" if isinstance(exc, AuthError)
                    else "check DB_HOST/DB_PORT, the Service and NetworkPolicy")
            checks.append(_bad("database", exc.message, hint))
            return type(exc)
        with conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            checks.append(CheckResult("database", True,
                                      f"{settings.masked_url} reachable, credentials valid"))
            current = read_current(conn, settings.version_table, settings.version_table_schema)
            elsewhere = _version_tables_elsewhere(conn, settings) if current is None else []
            check = version_table_check(current, settings.version_table,
                                        settings.version_table_schema)
            if check.ok:
                checks.append(check)
            elif elsewhere:
                # migrated, with the version table somewhere else: nothing to drop or re-run
                checks.append(_bad(check.name, f"{check.detail.split(':')[0]}, but "
                                   + "; ".join(f"{where} holds {', '.join(revs) or 'nothing'}"
                                               for where, revs, _ in elsewhere),
                                   "point migrategate at it: " + " or ".join(
                                       flags for _, _, flags in elsewhere)))
            else:
                checks.append(_bad(check.name, check.detail,
                                   "run 'migrategate upgrade' (if a migration 'succeeded', it "
                                   "was skipped or its errors were swallowed)"))
            if graph is not None and not elsewhere:
                _check_pending(graph, current, checks)
            _check_tables(conn, settings, checks)
            lock = lock_for(conn, settings.lock_name)
            holder = lock.holder()
            if holder:
                checks.append(_bad("migration-lock", f'"{lock.name}" is held by {holder}',
                                   "a migration is running now; watch it with 'migrategate "
                                   "status' (the lock frees itself when that session ends)"))
            else:
                checks.append(CheckResult("migration-lock", True, f'"{lock.name}" is free'))
            _check_schema_ahead(conn, None if elsewhere else graph, current, checks)
            if graph is not None and not elsewhere:
                _check_history(settings, conn, graph, current, checks, writer)
    except Interrupted:
        raise  # a signal ends doctor like any command, not as a failed check
    except (MigrategateError, DBAPIError) as exc:
        # doctor's exit code is that of a database it could not check (missing: 2,
        # privilege: 12, ...); its other findings are verification failures (7)
        typed = exc if isinstance(exc, MigrategateError) else database_error(exc)
        checks.append(_bad("database", typed.message, typed.hint))
        return type(typed)
    finally:
        engine.dispose()
    return None


def _check_pending(graph: Any, current: Any, checks: List[CheckResult]) -> None:
    from .checks import target_check
    from .errors import UnknownRevision
    from .pending import make_plan

    try:
        plan = make_plan(graph, current, "heads")
    except UnknownRevision as exc:
        checks.append(_bad("pending", exc.message, exc.hint))
        return
    if plan.pending:
        first = ", ".join(f"{r.id} ({r.message})" if r.message else r.id
                          for r in plan.pending[:3])
        more = f" and {len(plan.pending) - 3} more" if len(plan.pending) > 3 else ""
        checks.append(_bad("pending", f"{len(plan.pending)} revision(s) not applied: "
                           f"{first}{more}", "run 'migrategate upgrade'"))
        return
    # the same verdict as verify's: at the target means exactly the expected rows
    at = target_check(plan, graph)
    if at.ok:
        checks.append(CheckResult("pending", True, f"none: at {', '.join(plan.target)}"))
    else:
        checks.append(_bad("pending", at.detail, "the version table holds rows Alembic "
                           "would not have written (a manual stamp or INSERT?): compare it "
                           "with 'migrategate status' and fix the rows; 'migrategate verify' "
                           "fails until then"))


#: schemas that never hold an app's version table
_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast", "mysql",
                   "performance_schema", "sys"}


def _version_tables_elsewhere(conn: Any, settings: Settings) -> List[Any]:
    """Alembic version tables in other schemas or under another name: (where, rows, flags).

    Before doctor says "no migration has run" (and later advises dropping what a
    revision created), it rules out that the database is migrated and only the
    version table is not where migrategate was told to look."""
    from sqlalchemy import column, inspect, select
    from sqlalchemy import table as table_

    insp = inspect(conn)
    found = []
    others = [s for s in insp.get_schema_names()
              if s not in _SYSTEM_SCHEMAS and s != insp.default_schema_name]
    for schema in [None] + others:
        for name in insp.get_table_names(schema=schema):
            if "version" not in name.lower():
                continue
            if (name, schema) == (settings.version_table, settings.version_table_schema):
                continue
            if "version_num" not in {c["name"] for c in insp.get_columns(name, schema=schema)}:
                continue
            rows = conn.execute(select(table_(name, column("version_num"),
                                              schema=schema).c.version_num)).fetchall()
            flags = " ".join(filter(None, (
                f"--version-table-schema {schema}" if schema else "",
                f"--version-table {name}" if name != settings.version_table else "")))
            found.append((f"{schema}.{name}" if schema else name,
                          sorted(str(r[0]) for r in rows), flags))
    return found


def _check_tables(conn: Any, settings: Settings, checks: List[CheckResult]) -> None:
    """The same table checks as ``verify`` (schema-qualified names included), summarised."""
    from .checks import table_checks

    results = table_checks(conn, settings.expect_tables)
    if not results:
        return
    missing = [r.name.split(":", 1)[1] for r in results if not r.ok]
    if missing:
        checks.append(_bad("key-tables", f"missing: {', '.join(missing)}",
                           "run 'migrategate upgrade'"))
    else:
        checks.append(CheckResult("key-tables", True,
                                  f"present: {', '.join(settings.expect_tables)}"))


def _check_schema_ahead(conn: Any, graph: Any, current: Any, checks: List[CheckResult]) -> None:
    """Spot a half-applied revision: objects the next pending revision creates already exist.

    Happens after a failure on MySQL (DDL is not transactional) or in a revision
    that commits part-way (autocommit blocks); a plain re-run then fails with
    "already exists". Read from the revision's source, never executed; PostgreSQL
    INVALID indexes (an interrupted ``CREATE INDEX CONCURRENTLY``) are read from
    the catalog.
    """
    from .errors import UnknownRevision
    from .pending import make_plan
    from .schemaobjects import existing_objects, invalid_indexes, planned_objects

    invalid = invalid_indexes(conn)
    if invalid:
        checks.append(_bad(
            "invalid-indexes", f"INVALID index(es) {', '.join(invalid)}: an interrupted or "
            "failed CREATE INDEX CONCURRENTLY left them; PostgreSQL maintains but never uses "
            "them, and a re-run of their revision fails with 'already exists'",
            "DROP INDEX CONCURRENTLY each of them (an invalid index holds no data: nothing is "
            "lost), then re-run 'migrategate upgrade'"))
    if graph is None:
        return
    try:
        plan = make_plan(graph, current, "heads")
    except UnknownRevision:
        return
    if not plan.pending:
        return
    nxt = plan.pending[0]
    found = existing_objects(conn, planned_objects(nxt.path))
    if found:
        checks.append(_bad(
            "half-applied", f"the next pending revision {nxt.id} creates {', '.join(found)}, "
            "which already exist: it was partly applied before (non-transactional DDL or an "
            "autocommit block), so a plain re-run will fail with 'already exists'",
            f"compare the schema with {nxt.id}. Either drop what it created and re-run (this "
            "loses any data written into those objects since), or, only if every statement of "
            f"{nxt.id} has run, 'alembic stamp {nxt.id}' (stamping skips its remaining "
            "statements — data changes among them would never run)"))


def _check_history(settings: Settings, conn: Any, graph: Any, current: Any,
                   checks: List[CheckResult], writer: Writer) -> None:
    """What migrategate's history says of the revisions the database holds (advisory: a
    changed file or a revision applied by something else is worth knowing, not a broken
    schema)."""
    from .commands import integrity

    if settings.no_history:
        return
    found = integrity(settings, conn, graph, current, Writer(quiet=True, err=io.StringIO()),
                      Result("doctor"))  # its findings are this check, not warnings
    if found is None:
        checks.append(_bad("history", f"could not read the history table "
                           f"{settings.history_table}", "grant the user SELECT on it"))
    elif not found.table_exists:
        checks.append(CheckResult("history", True, f"no history table "
                                  f"{settings.history_table} yet (created by the first "
                                  "'migrategate upgrade' that applies a revision)"))
    elif found.drift or found.foreign:
        hints = []
        if found.drift:
            hints.append("deploy the revision files that were applied, or review the change: "
                         "an edited revision never runs again on this database")
        if found.foreign:
            hints.append("find who ran Alembic outside migrategate (an app's own upgrade on "
                         "start, a manual 'alembic upgrade' or 'stamp'); 'migrategate "
                         "history' shows what migrategate did")
        checks.append(_bad("history", "; ".join(found.warnings()), "; ".join(hints)))
    else:
        checks.append(CheckResult("history", True, "every applied revision is in the history, "
                                  "and its file is the one applied"))


#: Findings that never decide doctor's exit code: they are about Redis, which migrategate does
#: not use; only Dify's old ``flask upgrade-db`` path does; and what the history says (an
#: edited revision file, a revision applied by something else: the schema may be fine).
ADVISORY = ("redis", "history")


def _check_redis_lock(settings: Settings, env: Mapping[str, str],
                      checks: List[CheckResult]) -> None:
    """Dify's ``db_upgrade_lock`` (under ``REDIS_KEY_PREFIX:`` when Dify prefixes its keys).

    A Redis we cannot reach, or a Sentinel/Cluster set-up we do not follow, is reported as a
    finding of its own (✗ redis: not checked) that does not change the exit code: the database
    checks above stand on their own.
    """
    from .presets import dify
    from .redisprobe import RedisError, inspect_key

    url = settings.redis_url
    if settings.preset == "dify":
        topology = dify.redis_topology(env)
        if topology and url is None:
            checks.append(_bad(
                "redis", f"not checked: Dify's Redis is a {topology} "
                f"(REDIS_USE_{'SENTINEL' if topology == 'sentinel' else 'CLUSTERS'}=true), "
                "which doctor does not follow",
                f"look for the key yourself (redis-cli EXISTS {dify.redis_lock_key(env)} on the "
                "master), or give --redis-url redis://HOST:PORT/DB of the master"))
            return
        url = url or dify.redis_url(env)
        for secret in url_secrets(url or ""):
            register_secret(secret)  # Dify's REDIS_PASSWORD, not seen by resolve()
    if not url:
        return
    key = dify.redis_lock_key(env)
    where = mask_redis_url(url)
    try:
        state = inspect_key(url, key)
    except RedisError as exc:
        checks.append(_bad("redis", f"not checked: could not inspect {where}: {exc}",
                           "check REDIS_* settings / --redis-url; the database checks do not "
                           "depend on Redis (only Dify's old 'flask upgrade-db' does)"))
        return
    except ConfigError as exc:
        checks.append(_bad("redis", f"not checked: {exc.message}", exc.hint))
        return
    if not state.exists:
        checks.append(CheckResult("redis-lock", True, f"no '{key}' key in {where}"))
        return
    ttl = "no expiry" if state.ttl is None else f"expires in {state.ttl} s"
    checks.append(_bad(
        "redis-lock", f"'{key}' exists in {where} ({ttl}): while it exists Dify's "
        "'flask upgrade-db' prints 'Database migration skipped' and exits 0 without migrating",
        f"delete it once no migration runs (redis-cli DEL {key}) and migrate with "
        "'migrategate upgrade --preset dify', which does not use Redis"))


def _finish(result: Result, started: float, failure: type) -> Result:
    import time

    result.seconds = time.monotonic() - started
    bad = [c for c in result.checks if not c.ok and c.name not in ADVISORY]
    advisory = [c for c in result.checks if not c.ok and c.name in ADVISORY]
    if not bad:
        result.message = f"all {len(result.checks)} checks passed"
        if advisory:
            result.message = (f"{len(result.checks) - len(advisory)} of {len(result.checks)} "
                              "checks passed; findings that do not affect the exit code: "
                              + "; ".join(c.name for c in advisory))
        return result
    exc = failure(f"{len(bad)} of {len(result.checks)} checks failed: "
                  + "; ".join(c.name for c in bad),
                  "each ✗ line says what to do")
    result.outcome, result.exit_code, result.message = exc.outcome, exc.exit_code, exc.one_line()
    exc.result = result  # type: ignore[attr-defined]
    raise exc

