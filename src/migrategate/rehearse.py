"""A rehearsal: the pending revisions run for real on a scratch database, always rolled back.

Offline mode can't see into a revision that reads the database. ``plan --rehearse-on
URL`` runs env.py in a child, twice. First the scratch database is brought to the
target's current revision, committed: the pending revisions then meet the schema they
will meet on the target, and no lock the setup took masks one they take (locks last
until the end of a transaction). Then the pending revisions run on a connection we put
into one transaction first, so Alembic treats it as external and never commits; any
COMMIT (the connection's, a revision's own) is refused before it reaches the server.
The statements of an autocommit block (``CREATE INDEX CONCURRENTLY``) are recorded but
not run: they would commit, and can't run inside a transaction; the rest goes on. After
each statement the locks the session holds are read from ``pg_locks``: what is new is
what the statement took. That transaction is always rolled back, and the parent checks
the scratch database is at the target's current revision afterwards, not one step
further.

PostgreSQL only: MySQL/MariaDB commit each DDL statement, so nothing there could be
rolled back. Never the target: the parent refuses a scratch database that is the
target (same server and database) or one past the target's revision.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Set, Tuple

from . import childproc
from .errors import ConfigError, MigrategateError
from .log import Writer
from .offline import Rendered, RenderedStatement, rendered_from
from .pending import Plan, read_current
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection, URL

    from .graph import Graph

#: How long the rehearsal may take (the whole chain from the base runs).
REHEARSE_SECONDS = 1800.0

_LOCKS = ("SELECT n.nspname || '.' || c.relname, l.mode FROM pg_locks l "
          "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
          "WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted "
          "AND c.relkind IN ('r', 'p', 'm') "
          "AND n.nspname NOT IN ('pg_catalog', 'information_schema')")


def scratch_url(settings: Settings) -> "URL":
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    assert settings.rehearse_on
    if settings.dialect != "postgresql":
        raise ConfigError(
            f"--rehearse-on needs PostgreSQL; this database is {settings.dialect}",
            "MySQL/MariaDB commit each DDL statement: a rehearsal could not be rolled back")
    try:
        url = make_url(settings.rehearse_on)
    except ArgumentError:
        raise ConfigError("--rehearse-on is not a database URL",
                          "give a PostgreSQL URL of an empty scratch database") from None
    if url.get_backend_name() != "postgresql":
        raise ConfigError(f"--rehearse-on is a {url.get_backend_name()} URL",
                          "rehearse on PostgreSQL, like the target")
    return url


def _identity(conn: "Connection") -> Tuple[Any, ...]:
    from sqlalchemy import text

    return tuple(conn.execute(text(
        "SELECT current_database(), inet_server_port(), pg_postmaster_start_time()")).one())


def rehearse_in_child(settings: Settings, target: "Connection", graph: "Graph", plan: Plan,
                      writer: Writer) -> Dict[str, Rendered]:
    """Each pending revision's statements and locks, from a rolled-back run on the scratch
    database; refuses a scratch database that is the target or holds a version table."""
    import dataclasses

    from .commands import _session

    url = scratch_url(settings)
    scratch = dataclasses.replace(settings, url=url)
    with _session(scratch, writer) as conn:
        if _identity(conn) == _identity(target):
            raise ConfigError("--rehearse-on names the target database itself",
                              "give an empty scratch database (CREATE DATABASE …); a "
                              "rehearsal never runs on the target")
        there = read_current(conn, settings.version_table, settings.version_table_schema)
    if there and not set(there) <= graph.ancestors(plan.current):
        raise ConfigError(
            f"the rehearsal database is at {', '.join(there)}, which is not on the way to "
            f"the target's {', '.join(plan.current) or '(empty)'}",
            "give an empty scratch database (or one an earlier rehearsal of this target "
            "left behind)")
    job = {"migrations": settings.migrations, "config": settings.config,
           "app_root": settings.app_root, "flask_app": settings.flask_app,
           "version_table": settings.version_table,
           "version_table_schema": settings.version_table_schema,
           "current": list(plan.current), "scratch_current": list(there or ()),
           "destination": plan.destination, "pending": [r.id for r in plan.pending]}
    private = {"url": url.render_as_string(hide_password=False)}
    code, result = childproc.run("migrategate.rehearse", job, REHEARSE_SECONDS, writer,
                                 private=private)
    with _session(scratch, writer) as conn:
        after = read_current(conn, settings.version_table, settings.version_table_schema)
    if (after or ()) != tuple(sorted(plan.current)) and (after or there):
        raise MigrategateError(
            f"the scratch database is at {', '.join(after or ()) or '(no version table)'} "
            f"after the rehearsal, not at the target's {', '.join(plan.current) or '(empty)'}:"
            " something committed in spite of the rehearsal's transaction, or the setup "
            "failed", "drop the scratch database; plan without --rehearse-on")
    return rendered_from(childproc.reported(
        code, result, "the rehearsal process",
        "env.py or a revision ends the process, or hangs?",
        "nothing was changed on the target; the scratch database was rolled back"),
        "rehearsal")


# ------------------------------------------------------------------ the child

class _Done(Exception):
    """Raised after the last step: env.py unwinds, its connection closes, all rolls back."""


class _CommitRefused(Exception):
    pass


def _rehearse(job: Dict[str, Any], url: str) -> Dict[str, Any]:
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    from .apply import ends_transaction
    from .location import make_config, script_directory
    from .offline import version_statement
    from .runtime import migration_environment, version_table_options

    settings = Settings(url=make_url(url), migrations=job["migrations"], config=job["config"],
                        app_root=job["app_root"], flask_app=job["flask_app"],
                        version_table=job["version_table"],
                        version_table_schema=job["version_table_schema"])
    config = make_config(settings)
    script = script_directory(config)
    pending: Set[str] = set(job["pending"])
    revisions: List[Rendered] = []
    current: List[Optional[Rendered]] = [None]
    held: Set[Tuple[str, str]] = set()
    is_version = version_statement(settings.version_table)
    attached: List[Any] = []
    in_block = [False]

    @contextlib.contextmanager
    def autocommit_block() -> Iterator[None]:
        """Alembic's would COMMIT: its statements are recorded, not run (see before)."""
        in_block[0] = True
        try:
            yield
        finally:
            in_block[0] = False

    def steps(rev: Any, context: Any) -> Any:
        for step in script._upgrade_revs(job["destination"], rev):  # noqa: SLF001
            rid = step.revision.revision
            current[0] = Rendered(rid, source="rehearsal") if rid in pending else None
            if current[0] is not None:
                revisions.append(current[0])
            yield step
        current[0] = None
        raise _Done()

    def refuse(*_: Any) -> None:
        raise _CommitRefused()

    skipping: List[str] = []  # inside an autocommit block: the statement not run

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> Any:
        if in_block[0]:
            skipping.append(statement)
            return "SELECT 1", parameters
        if ends_transaction(statement):
            raise _CommitRefused()
        return statement, parameters

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if skipping:
            original = skipping.pop()
            if current[0] is not None:
                current[0].statements.append(RenderedStatement(
                    original.strip().rstrip(";"), False, False,
                    note="not run in the rehearsal: an autocommit block commits"))
            return
        raw = cursor.connection.cursor()
        try:
            raw.execute(_LOCKS)
            now = {(str(r[0]), str(r[1])) for r in raw.fetchall()}
        finally:
            raw.close()
        taken = sorted(now - held)
        held.update(now)
        rendered = current[0]
        if rendered is not None:
            rendered.statements.append(RenderedStatement(
                statement.strip().rstrip(";"), True, bool(is_version.match(statement)),
                [f"{mode} on {name}" for name, mode in taken]))

    if job["current"] and sorted(job["scratch_current"]) != sorted(job["current"]):
        _set_up(config, script, settings, job["current"])
    env = EnvironmentContext(config, script, fn=steps, as_sql=False, starting_rev=None,
                             destination_rev=job["destination"], tag=None)
    configure_as_written = env.configure

    def configure(connection: Any = None, **kw: Any) -> None:
        if connection is None:
            raise ConfigError("env.py configured no connection in online mode",
                              "a rehearsal runs env.py's online branch")
        kw["transaction_per_migration"] = False
        kw.update(version_table_options(settings))
        if not connection.in_transaction():
            connection.begin()  # ours: Alembic then treats it as external, never commits
        event.listen(connection, "commit", refuse)
        event.listen(connection, "before_cursor_execute", before, retval=True)
        event.listen(connection, "after_cursor_execute", after)
        attached.append(connection)
        configure_as_written(connection=connection, **kw)
        # op.get_context() is this instance: its autocommit blocks become ours
        env.get_context().autocommit_block = autocommit_block  # type: ignore[method-assign]

    env.configure = configure  # type: ignore[method-assign,assignment]
    try:
        with migration_environment(settings, config), env:
            script.run_env()
    except _Done:
        pass
    except _CommitRefused:
        _blame(revisions, current[0], "it commits (its own COMMIT, or an autocommit block "
                                      "such as CREATE INDEX CONCURRENTLY): a rehearsal never "
                                      "commits, so it stops here")
    except BaseException as exc:  # noqa: BLE001 - app code: the revision's reason
        what = (f"called sys.exit({exc.code})" if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {exc}")
        _blame(revisions, current[0], f"failed in the rehearsal: {what}")
    finally:
        for conn in attached:  # env.py may have left it open: roll back, never commit
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - closing a connection that already failed
                pass
    return {"revisions": [{"revision": r.revision, "error": r.error,
                           "statements": [s.__dict__ for s in r.statements]}
                          for r in revisions]}


def _set_up(config: Any, script: Any, settings: Settings, current: List[str]) -> None:
    """The scratch database to the target's current revision, committed, by env.py."""
    from alembic.runtime.environment import EnvironmentContext

    from .runtime import migration_environment, version_table_options

    destination = current[0] if len(current) == 1 else tuple(current)

    def steps(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(destination, rev)  # noqa: SLF001 - as command.upgrade

    env = EnvironmentContext(config, script, fn=steps, as_sql=False, starting_rev=None,
                             destination_rev=destination, tag=None)
    configure_as_written = env.configure

    def configure(**kw: Any) -> None:
        kw["transaction_per_migration"] = False  # all of it or nothing
        kw.update(version_table_options(settings))
        configure_as_written(**kw)

    env.configure = configure  # type: ignore[method-assign,assignment]
    try:
        with migration_environment(settings, config), env:
            script.run_env()
    except BaseException as exc:  # noqa: BLE001 - app code: reported with the rehearsal
        what = (f"called sys.exit({exc.code})" if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {exc}")
        raise ConfigError(f"bringing the scratch database to the target's revision failed: "
                          f"{what}", "nothing was changed on the target") from None


def _blame(revisions: List[Rendered], running: Optional[Rendered], why: str) -> None:
    if running is None:
        running = Rendered("(before the pending revisions)", source="rehearsal")
        revisions.append(running)
    running.error = why


def main() -> None:
    import json

    result_path, job = sys.argv[1], json.loads(sys.argv[2])
    url = childproc.read_private(sys.argv[3])["url"]
    from .redact import register_secret
    from .urls import url_secrets

    for secret in url_secrets(url):
        register_secret(secret)
    try:
        result = _rehearse(job, url)
    except BaseException as exc:  # noqa: BLE001 - env.py is app code: reported, exit 2
        result = childproc.error_result(exc, "the rehearsal {what}",
                                        "nothing was changed on the target")
    childproc.write_result(result_path, result)


if __name__ == "__main__":
    main()
