"""The SQL a deploy will run, rendered by Alembic's offline mode in a child process.

``plan`` must know each pending revision's statements without running them and
without app code in the parent: ``python -m migrategate.offline RESULT JOB`` runs
env.py with ``as_sql=True`` (Alembic's ``upgrade --sql``) on our own step generator,
so each statement is attributed to the revision that emitted it. It is given the
URL without its password (offline mode needs the dialect, not a connection) and an
environment without secrets.

A revision that reads the database (a SELECT whose result it uses, ``inspect(bind)``)
cannot be rendered offline: it fails here with its reason, the others go on, and the
plan says which revisions it could not see into.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import childproc
from .log import Writer
from .pending import Plan
from .settings import Settings

#: How long rendering the pending revisions (env.py, revision files, models) may take.
RENDER_SECONDS = 300.0


@dataclass
class RenderedStatement:
    sql: str
    #: inside the revision's transaction (False: an autocommit block, or a backend
    #: without transactional DDL where each statement commits itself)
    in_transaction: bool = True
    #: Alembic's own bookkeeping (the version table), not the revision's
    version_table: bool = False
    #: the locks it took, read from pg_locks (a rehearsal only)
    locks: List[str] = field(default_factory=list)
    #: why a rehearsal shows it without having run it
    note: str = ""


@dataclass
class Rendered:
    revision: str
    statements: List[RenderedStatement] = field(default_factory=list)
    #: why offline mode (or the rehearsal) could not render all of it (None: it could)
    error: Optional[str] = None
    #: "offline" (Alembic's --sql) or "rehearsal" (run and rolled back: rehearse.py)
    source: str = "offline"

    @property
    def own(self) -> List[RenderedStatement]:
        return [s for s in self.statements if not s.version_table]


def render_in_child(settings: Settings, plan: Plan, writer: Writer) -> Dict[str, Rendered]:
    """Each pending revision's statements, by revision id (no password leaves us)."""
    from sqlalchemy.engine import URL

    u = settings.url
    assert u is not None
    # URL.set(password=None) would keep it (None means "unchanged"): build it anew
    without = URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
    job = {"url": without.render_as_string(hide_password=False),
           "migrations": settings.migrations, "config": settings.config,
           "app_root": settings.app_root, "flask_app": settings.flask_app,
           "version_table": settings.version_table,
           "version_table_schema": settings.version_table_schema,
           "current": [r for r in plan.current if r not in plan.unknown],
           "destination": plan.destination}
    code, result = childproc.run("migrategate.offline", job, RENDER_SECONDS, writer)
    return rendered_from(childproc.reported(
        code, result, "the process rendering the pending revisions' SQL",
        "env.py or a revision file ends the process, or hangs?",
        "run 'alembic upgrade --sql' in the image to see where; nothing was changed"),
        "offline")


def rendered_from(result: Dict[str, Any], source: str) -> Dict[str, Rendered]:
    """A rendering child's result, by revision id."""
    return {r["revision"]: Rendered(r["revision"],
                                    [RenderedStatement(**s) for s in r["statements"]],
                                    r.get("error"), source=source)
            for r in result["revisions"]}


# ------------------------------------------------------------------ the child

def version_statement(table: str) -> "re.Pattern[str]":
    """Alembic's statements on the version table (not the revision's own)."""
    return re.compile(
        r"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM|CREATE\s+TABLE)\s+"
        r"([`\"\[]?\w+[`\"\]]?\.)?[`\"\[]?" + re.escape(table) + r"[`\"\]]?[\s(]",
        re.IGNORECASE)


def _comment_only(chunk: str) -> bool:
    return all(line.strip().startswith("--") for line in chunk.splitlines() if line.strip())


class _Collector:
    """Alembic's output buffer in offline mode: one ``write`` per statement or comment."""

    def __init__(self, version_table: str) -> None:
        self.revisions: List[Rendered] = []
        self.in_transaction = False
        self._version = version_statement(version_table)

    def begin(self, revision: str) -> None:
        self.revisions.append(Rendered(revision))

    def fail(self, exc: BaseException) -> None:
        what = (f"called sys.exit({exc.code})" if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {exc}")
        where = _revision_frame(exc)
        self.revisions[-1].error = (
            f"{what}{where} — offline mode renders SQL without a database, so a revision "
            "that reads it (uses a query's result, inspects the schema) can't be seen into")

    def write(self, text: str) -> int:
        chunk = text.strip()
        if not chunk or _comment_only(chunk):  # Alembic's '-- Running upgrade a -> b'
            return len(text)
        upper = chunk.rstrip(";").strip().upper()
        if upper in ("BEGIN", "START TRANSACTION", "BEGIN TRANSACTION"):
            self.in_transaction = True
            return len(text)
        if upper in ("COMMIT", "END"):
            self.in_transaction = False
            return len(text)
        if not self.revisions:  # before the first revision: nothing of ours
            return len(text)
        sql = chunk[:-1].rstrip() if chunk.endswith(";") else chunk
        self.revisions[-1].statements.append(RenderedStatement(
            sql, self.in_transaction, bool(self._version.match(sql))))
        return len(text)

    def flush(self) -> None:
        pass


def _revision_frame(exc: BaseException) -> str:
    """Where in the app's code it failed (apply.app_frame: by installed location, not by a
    path that merely contains 'versions')."""
    from .apply import app_frame

    f = app_frame(exc)
    return "" if f is None else f" at {os.path.basename(f.filename)}:{f.lineno}"


def _render(job: Dict[str, Any]) -> Dict[str, Any]:
    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy.engine import make_url

    from .location import make_config, script_directory
    from .runtime import migration_environment, version_table_options

    settings = Settings(url=make_url(job["url"]), migrations=job["migrations"],
                        config=job["config"], app_root=job["app_root"],
                        flask_app=job["flask_app"], version_table=job["version_table"],
                        version_table_schema=job["version_table_schema"])
    config = make_config(settings)
    script = script_directory(config)
    collector = _Collector(settings.version_table)
    destination = job["destination"]

    def guarded(migration_fn: Any) -> Any:
        def run(**kw: Any) -> None:
            try:
                migration_fn(**kw)
            except BaseException as exc:  # noqa: BLE001 - app code: recorded, the others go on
                collector.fail(exc)
        return run

    def steps(rev: Any, context: Any) -> Any:
        for step in script._upgrade_revs(destination, rev):  # noqa: SLF001 - as command.upgrade
            collector.begin(step.revision.revision)
            step.migration_fn = guarded(step.migration_fn)
            yield step

    env = EnvironmentContext(config, script, fn=steps, as_sql=True,
                             starting_rev=job["current"] or None, destination_rev=destination,
                             tag=None)
    configure_as_written = env.configure

    def configure(**kw: Any) -> None:
        kw["output_buffer"] = collector
        kw.setdefault("transaction_per_migration", True)
        kw.update(version_table_options(settings))
        if not any(kw.get(k) is not None for k in ("connection", "url", "dialect_name")):
            kw["url"] = settings.url
        configure_as_written(**kw)

    env.configure = configure  # type: ignore[method-assign,assignment]
    with migration_environment(settings, config), env:
        script.run_env()
    return {"revisions": [{"revision": r.revision, "error": r.error,
                           "statements": [s.__dict__ for s in r.statements]}
                          for r in collector.revisions]}


def main() -> None:
    result_path, job = sys.argv[1], __import__("json").loads(sys.argv[2])
    try:
        result = _render(job)
    except BaseException as exc:  # noqa: BLE001 - env.py is app code: reported, exit 2
        result = childproc.error_result(
            exc, "env.py {what} in offline mode (Alembic's --sql)",
            "env.py needs its offline branch (run_migrations_offline in Alembic's template) "
            "for plan; nothing was changed")
    childproc.write_result(result_path, result)


if __name__ == "__main__":
    main()
