"""migrategate's own history: one row per revision attempt, written by the parent.

Alembic keeps one thing, the current head. This table keeps what an operator asks after an
incident: which runner applied what, when, how long it took, how each attempt ended, and the
checksum of the file it applied (so an edit after the fact shows). Rows are written by the
process whose exit code Kubernetes reads, on its own connection, after the run is concluded
from the database itself (``commands._conclude``): the child, which runs app code, never
writes here, so a revision can't forge its own record.

Reads are cheap on purpose: :func:`integrity` is one ``SELECT`` of (revision, checksum) over
the rows that say a revision is in the database, and ``wait`` runs it once, after the schema
is verified, never per poll.

The DDL is SQLAlchemy Core (``CREATE TABLE`` with ``checkfirst``), so it is the same table on
PostgreSQL, MySQL/MariaDB and SQLite. Times are UTC, stored without a time zone.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from .errors import MigrategateError
    from .graph import Graph
    from .pending import Plan
    from .protocol import RunFacts

#: outcomes of one attempt (``outcome`` column)
APPLIED = "applied"
FAILED = "failed"
FAILED_AT_COMMIT = "failed-at-commit"
LOCK_LOST = "lock-lost"
INTERRUPTED = "interrupted"
#: ran in the same transaction as a revision that failed (--single-transaction): undone
ROLLED_BACK = "rolled-back"
#: in the database before the history table existed (adoption): no times are known
PRESENT = "present-before-history"
#: the outcomes that say "this revision is in the database"
IN_DATABASE = (APPLIED, PRESENT)

#: a TEXT column holds 65535 bytes on MySQL: statements beyond this are cut (and said so)
_TEXT_LIMIT = 60000


def table(name: str, schema: Optional[str] = None) -> "Table":
    """The history table: the same on every database (SQLAlchemy Core types)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    when = (sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
            .with_variant(mysql.DATETIME(fsp=6), "mariadb"))
    return sa.Table(
        name, sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("revision", sa.String(255), nullable=False),
        sa.Column("checksum", sa.String(64)),
        sa.Column("started_at", when),
        sa.Column("finished_at", when),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("committed_statements", sa.Text),
        sa.Column("detail", sa.Text),
        sa.Column("runner", sa.String(255)),
        sa.Column("image", sa.String(512)),
        sa.Column("migrategate_version", sa.String(64)),
        schema=schema,
    )


def checksum(path: str) -> Optional[str]:
    """sha256 of the file's bytes with line endings normalised to ``\\n`` (a checkout on
    Windows or with ``core.autocrlf`` is the same file); None when it can't be read."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return hashlib.sha256(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).hexdigest()


@dataclass(frozen=True)
class Runner:
    """Who ran it: the pod (or host) name, the image when the deployment says it, ours."""

    host: str
    image: Optional[str]
    version: str

    @classmethod
    def here(cls) -> "Runner":
        from ._version import __version__

        host = os.environ.get("HOSTNAME") or socket.gethostname()
        return cls(host[:255], (os.environ.get("MIGRATEGATE_IMAGE") or None), __version__)


def _utc(t: Optional[float]) -> Optional[datetime]:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)


def _epoch(when: Optional[datetime]) -> Optional[float]:
    return None if when is None else when.replace(tzinfo=timezone.utc).timestamp()


def exists(conn: "Connection", name: str, schema: Optional[str]) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(conn).has_table(name, schema=schema))


def topological(graph: "Graph", revs: Iterable[str]) -> List[str]:
    """``revs`` in an order Alembic could have applied them (each after what it needs)."""
    wanted = set(revs)
    done: List[str] = []
    seen: set = set()

    def visit(rev: str) -> None:
        stack = [(rev, False)]
        while stack:
            node, expanded = stack.pop()
            if node in seen:
                continue
            if expanded:
                seen.add(node)
                done.append(node)
                continue
            stack.append((node, True))
            stack.extend((p, False) for p in reversed(graph.requires[node])
                         if p in wanted and p not in seen)

    for rev in graph.revisions:
        if rev in wanted:
            visit(rev)
    return done


# --------------------------------------------------------------------------- writing

@dataclass
class Recorder:
    """The rows of one upgrade run: opened under the lock before the migration process
    starts (creating the table, and adopting what the database already holds), written
    once the run is concluded."""

    name: str
    schema: Optional[str]
    graph: "Graph"
    plan: "Plan"
    runner: Runner = field(default_factory=Runner.here)
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: the revisions adopted when this run created the table
    adopted: Tuple[str, ...] = ()
    #: MySQL/MariaDB: the statement journal's name (journal.py); None elsewhere
    journal: Optional[str] = None
    #: (revision, statements skipped, run resumed) when this run resumes an attempt
    resumed: Optional[Tuple[str, int, str]] = None
    #: attempts of runners that died before writing their rows, recorded by this run
    recovered: List[Tuple[str, str, str]] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    def open(self, conn: "Connection") -> None:
        """Create the table if it is not there; when this creates it, record what the
        database already holds as present before history (with no times: none are known).
        Called under the lock, so two runners never both adopt."""
        if self.journal is not None:
            from . import journal

            journal.ensure(conn, self.journal, self.schema)
        if exists(conn, self.name, self.schema):
            self._recover(conn)
            return
        t = table(self.name, self.schema)
        t.create(conn, checkfirst=True)
        present = topological(self.graph, self.graph.ancestors(self.plan.current))
        if present:
            conn.execute(t.insert(), [self._row(rev, PRESENT, detail="in the database "
                                                "when the history table was created")
                                      for rev in present])
        self.adopted = tuple(present)

    def grant(self, conn: "Connection", reader: str) -> List[str]:
        """GRANT SELECT on the history (and the journal) to ``reader``: a role on
        PostgreSQL, an account (``user`` or ``user@host``, host ``%`` by default) on
        MySQL/MariaDB. Names are quoted (``Dialect.grantee``), never pasted. Returns the
        statements run."""
        from sqlalchemy import text

        from .dialect import of as dialect_of

        prep = conn.dialect.identifier_preparer
        grantee = dialect_of(conn).grantee(reader)
        names = [self.name] + ([self.journal] if self.journal else [])
        done = []
        for name in names:
            target = prep.format_table(table(name, self.schema))
            statement = f"GRANT SELECT ON {target} TO {grantee}"
            conn.execute(text(statement))
            done.append(statement)
        return done

    def _recover(self, conn: "Connection") -> None:
        """Rows for attempts whose runner died before writing any (``kill -9``, a lost
        node): their journal says what of each revision committed. A revision the database
        now holds is recorded applied; the one it doesn't, interrupted (a resume then picks
        it up). Under the lock, so no live runner's attempt is taken for a dead one."""
        if self.journal is None:
            return
        from sqlalchemy import func, select

        from . import journal

        j, h = journal.table(self.journal, self.schema), table(self.name, self.schema)
        found = conn.execute(
            select(j.c.run_id, j.c.revision, func.min(j.c.recorded_at),
                   func.max(j.c.recorded_at), func.max(j.c.runner))
            .where(j.c.run_id.not_in(select(h.c.run_id).distinct()))
            .group_by(j.c.run_id, j.c.revision).order_by(func.min(j.c.id))).all()
        if not found:
            return
        in_db = self.graph.ancestors(self.plan.current)
        rows = []
        for run_id, revision, first, last, runner in found:
            run_id, revision = str(run_id), str(revision)
            began, ended = _epoch(first), _epoch(last)
            statements: List[str] = []
            if revision in in_db:
                outcome = APPLIED
            else:
                outcome = INTERRUPTED
                statements = journal.committed(conn, self.journal, self.schema,
                                               run_id).get(revision, [])
            self.recovered.append((run_id, revision, outcome))
            rows.append({**self._row(
                revision, outcome, began, ended if outcome == APPLIED else None,
                None, None, statements,
                f"the runner ({runner or 'unknown'}) was gone before it recorded this attempt "
                f"(killed, or its node lost); recorded from the journal by run {self.run_id}"),
                "run_id": run_id, "runner": runner, "image": None,
                "migrategate_version": None})
        conn.execute(h.insert(), rows)

    def rows(self, facts: "RunFacts", error: Optional["MigrategateError"],
             now: Optional[float] = None,
             journaled: Optional[Dict[str, List[str]]] = None) -> List[Dict[str, Any]]:
        """One row per revision of the run that started or that the database holds."""
        from .errors import Interrupted, LockLost

        exit_code = 0 if error is None else error.exit_code
        in_db = set(facts.read_back if facts.read_back is not None else facts.committed)
        end = facts.exited_at or now or time.time()
        rows = []
        for rev in self.plan.pending:
            began = facts.began_at.get(rev.id)
            if rev.id in in_db:
                outcome = APPLIED
                finished = facts.done_at.get(rev.id)
            elif began is None:
                continue  # never started: no attempt
            else:
                finished = end
                if rev.id != facts.current:
                    outcome = ROLLED_BACK
                elif isinstance(error, LockLost):
                    outcome = LOCK_LOST
                elif isinstance(error, Interrupted):
                    outcome = INTERRUPTED
                elif rev.id in facts.ran:
                    outcome = FAILED_AT_COMMIT
                else:
                    outcome = FAILED
            duration = (finished - began) if began is not None and finished is not None \
                else facts.seconds.get(rev.id)
            statements: Sequence[str] = []
            if outcome != APPLIED:  # read back from the journal where there is one
                statements = (journaled.get(rev.id, []) if journaled is not None
                              else facts.committed_statements(rev.id))
            detail = error.one_line() if error is not None and outcome != APPLIED else None
            if self.resumed is not None and self.resumed[0] == rev.id:
                detail = (f"resumed run {self.resumed[2]}'s attempt: its {self.resumed[1]} "
                          "committed statement(s) skipped" + (f"; {detail}" if detail else ""))
            rows.append(self._row(
                rev.id, outcome, began, finished, duration, exit_code, statements, detail))
        return rows

    def write(self, conn: "Connection", facts: "RunFacts",
              error: Optional["MigrategateError"]) -> int:
        journaled = None
        if self.journal is not None:
            from . import journal

            journaled = journal.committed(conn, self.journal, self.schema, self.run_id)
        rows = self.rows(facts, error, journaled=journaled)
        if rows:
            conn.execute(table(self.name, self.schema).insert(), rows)
        return len(rows)

    def _row(self, revision: str, outcome: str, began: Optional[float] = None,
             finished: Optional[float] = None, duration: Optional[float] = None,
             exit_code: Optional[int] = None, statements: Sequence[str] = (),
             detail: Optional[str] = None) -> Dict[str, Any]:
        rev = self.graph.revisions.get(revision)
        text = redact(json.dumps(list(statements))) if statements else None
        if text is not None and len(text) > _TEXT_LIMIT:
            text = json.dumps([f"(cut: {len(statements)} statements, "
                               f"{len(text)} characters)"])
        return {
            "run_id": self.run_id, "revision": revision,
            "checksum": checksum(rev.path) if rev is not None and rev.path else None,
            "started_at": _utc(began), "finished_at": _utc(finished),
            "duration_seconds": None if duration is None else round(duration, 6),
            "outcome": outcome, "exit_code": exit_code, "committed_statements": text,
            "detail": redact(detail)[:_TEXT_LIMIT] if detail else None,
            "runner": self.runner.host, "image": self.runner.image,
            "migrategate_version": self.runner.version,
        }


# --------------------------------------------------------------------------- reading

def read(conn: "Connection", name: str, schema: Optional[str],
         limit: Optional[int] = None) -> Optional[List[Dict[str, Any]]]:
    """Every row, newest first; None when there is no history table."""
    if not exists(conn, name, schema):
        return None
    t = table(name, schema)
    query = t.select().order_by(t.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


@dataclass
class Integrity:
    """What the history says about the revisions the database holds."""

    #: no history table: nothing can be said (no run with history yet, or --no-history)
    table_exists: bool
    #: (revision, checksum recorded, checksum of the file now)
    drift: List[Tuple[str, str, str]] = field(default_factory=list)
    #: revisions the database holds that no history row says were applied
    foreign: List[str] = field(default_factory=list)

    def drift_line(self) -> str:
        return ("the file of applied revision(s) changed since they were applied: "
                + "; ".join(f"{rev} (applied {then[:12]}, now {now[:12]})"
                            for rev, then, now in self.drift))

    def foreign_line(self) -> str:
        return ("the database holds revision(s) that migrategate did not apply (no history "
                f"row: alembic upgrade, flask db upgrade or stamp?): {', '.join(self.foreign)}")

    def warnings(self) -> List[str]:
        return ([self.drift_line()] if self.drift else []) + (
            [self.foreign_line()] if self.foreign else [])

    def to_dict(self) -> Dict[str, Any]:
        return {"table_exists": self.table_exists,
                "checksum_drift": [{"revision": r, "applied": a, "now": n}
                                   for r, a, n in self.drift],
                "not_in_history": list(self.foreign)}


def integrity(conn: "Connection", graph: "Graph", current: Optional[Sequence[str]],
              name: str, schema: Optional[str]) -> Integrity:
    """Checksum drift and foreign movement, from one read of the history table."""
    if not exists(conn, name, schema):
        return Integrity(table_exists=False)
    if not current:
        return Integrity(table_exists=True)
    from sqlalchemy import select

    t = table(name, schema)
    recorded: Dict[str, Optional[str]] = {}
    query = (select(t.c.revision, t.c.checksum).where(t.c.outcome.in_(IN_DATABASE))
             .order_by(t.c.id))
    for revision, sha in conn.execute(query):
        recorded[str(revision)] = sha  # the latest row of each revision wins
    applied = topological(graph, graph.ancestors(current))
    result = Integrity(table_exists=True)
    for rev in applied:
        if rev not in recorded:
            result.foreign.append(rev)
            continue
        then = recorded[rev]
        now = checksum(graph.revisions[rev].path) if graph.revisions[rev].path else None
        if then and now and then != now:
            result.drift.append((rev, then, now))
    return result


def render(rows: Sequence[Dict[str, Any]], out: Any) -> None:
    """The table for a person: newest first, one line per attempt, then what failed left."""
    if not rows:
        out("no history rows")
        return
    out(f"{'id':>5}  {'revision':<14} {'outcome':<22} {'started (UTC)':<19}  "
        f"{'seconds':>8}  {'exit':>4}  runner")
    for r in rows:
        started = r["started_at"].strftime("%Y-%m-%d %H:%M:%S") if r["started_at"] else "—"
        seconds = f"{r['duration_seconds']:.3f}" if r["duration_seconds"] is not None else "—"
        code = "—" if r["exit_code"] is None else str(r["exit_code"])
        image = f" ({r['image']})" if r["image"] else ""
        out(f"{r['id']:>5}  {r['revision']:<14} {r['outcome']:<22} {started:<19}  "
            f"{seconds:>8}  {code:>4}  {r['runner'] or '—'}{image}")
        if r["committed_statements"]:
            for statement in json.loads(r["committed_statements"]):
                out(f"{'':>7}committed before it stopped: {statement}")
        if r["detail"] and r["outcome"] != PRESENT:
            out(f"{'':>7}{r['detail']}")


def to_json(row: Dict[str, Any]) -> Dict[str, Any]:
    d = dict(row)
    for key in ("started_at", "finished_at"):
        if d[key] is not None:
            d[key] = d[key].isoformat() + "Z"
    if d["committed_statements"]:
        d["committed_statements"] = json.loads(d["committed_statements"])
    return d
