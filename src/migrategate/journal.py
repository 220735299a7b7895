"""What of a revision committed on MySQL/MariaDB, statement by statement, and resuming it.

MySQL and MariaDB commit every DDL statement at once: a revision that stops half-way (a
failure, a SIGTERM, ``kill -9`` of the runner) leaves its first statements applied, and a
plain re-run fails on "duplicate column". The history row says how the attempt ended, but
it is written by the parent after the run, so a runner killed outright leaves no row at all.

The journal is the record that survives that: one row per write statement of a revision,
written by migrategate's code in the migration process on the migration's own connection,
so that it commits *with* what it describes:

- a DML statement's row is inserted in the same transaction as the statement: both commit
  (at the next DDL's implicit commit or the revision's COMMIT) or neither does;
- a DDL statement (and a statement of an autocommit block) commits itself; its row is
  inserted and committed right after it returns. Between the two there is one round trip in
  which the runner can die with the statement committed and its row not. So after an
  attempt that did not end on its own (killed, interrupted, the lock lost), exactly one
  statement's fate is unknown: the first one after the journal's rows, and only when it is
  DDL. A resume runs it again and takes the server's "it is already there" answer (1050
  table exists, 1060 duplicate column, 1061 duplicate key name, 1091 can't drop, …) as
  "it had committed"; nothing else is guessed.

Resuming (``upgrade`` after a runner died, ``repair --yes`` after a failure) re-runs the
revision's ``upgrade()`` and skips, by position, the statements the journal holds, each
matched by a digest of its normalised SQL and parameters; the first difference stops the
revision before it changes anything (exit 2, naming the statement). Skipped statements are
copied into the new attempt's rows first, so the newest attempt always holds everything of
the revision that is in the database.

App code runs in the same process and could write this table too; it can write
``alembic_version`` as well. What the journal decides is only which statements a resume
skips; whether the run succeeded is still read back from the version table by the parent.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

#: MySQL/MariaDB errors that say a DDL statement's effect is already there (or, for a
#: DROP/RENAME, already gone): the answer a statement that had committed gets when it runs
#: again. 1050 table exists, 1051 unknown table, 1054 unknown column, 1060 duplicate column,
#: 1061 duplicate key name, 1091 can't drop (doesn't exist), 1146 no such table, 1826
#: duplicate foreign key name, 1359 trigger exists, 1360 no such trigger, 1304 routine
#: exists, 1305 no such routine, 4092 (MariaDB) unknown sequence, 1068 multiple primary keys
ALREADY_APPLIED = frozenset({1050, 1051, 1054, 1060, 1061, 1068, 1091, 1146, 1304, 1305,
                             1359, 1360, 1826, 4092})

#: the row written as a revision starts, in its transaction: committed by the implicit
#: commit that runs before its first DDL statement, so it says "that statement may have run"
#: even when no statement's row committed (a runner killed during its first ALTER)
BEGIN = "begin"
_TEXT = 2000  # characters of a statement kept for people (the digest decides, not this)
_SPACE = re.compile(r"\s+")


def name_for(history_table: str) -> str:
    """The journal's name: the history table's, with ``_journal`` (64 characters at most)."""
    return (history_table + "_journal")[:64]


def table(name: str, schema: Optional[str] = None) -> "Table":
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    return sa.Table(
        name, sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False, index=True),
        sa.Column("revision", sa.String(255), nullable=False, index=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("statement", sa.Text),
        sa.Column("runner", sa.String(255)),
        sa.Column("recorded_at", sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql")
                  .with_variant(mysql.DATETIME(fsp=6), "mariadb")),
        schema=schema,
    )


def digest(statement: str, parameters: Any) -> str:
    """The statement as sent (whitespace and a trailing ``;`` don't count) and its
    parameters: two spellings of the same statement match, a different value doesn't."""
    text = _SPACE.sub(" ", statement).strip().rstrip(";").strip()
    params = json.dumps(parameters, default=repr, sort_keys=True) if parameters else ""
    return hashlib.sha256(f"{text}\x00{params}".encode("utf-8", "replace")).hexdigest()


def shown(statement: str) -> str:
    return redact(_SPACE.sub(" ", statement).strip())[:_TEXT]


# --------------------------------------------------------------------------- the child

class Writer:
    """Appends the running attempt's rows, on the migration connection's DBAPI cursor
    (through SQLAlchemy a statement would autobegin, and fire our own statement hooks)."""

    def __init__(self, info: Dict[str, Any]) -> None:
        self.run_id: str = info["run_id"]
        self.runner: str = info.get("runner") or ""
        self.sql = info["insert"]  # built by the parent for this server (quoting, %s)

    def rows(self, dbapi: Any, rows: Sequence[Tuple[str, int, str, str, str]],
             commit: bool) -> None:
        """(revision, position, digest, kind, statement) rows; ``commit``: now, on their
        own (after a statement that committed itself), else with the open transaction."""
        from datetime import datetime, timezone

        now = datetime.now(timezone.utc).replace(tzinfo=None)
        cursor = dbapi.cursor()
        try:
            cursor.executemany(self.sql, [(self.run_id, rev, pos, dig, kind, text,
                                           self.runner, now)
                                          for rev, pos, dig, kind, text in rows])
        finally:
            cursor.close()
        if commit:
            dbapi.commit()


def insert_sql(conn: "Connection", name: str, schema: Optional[str]) -> str:
    """The INSERT the child runs, quoted for this server, with the DBAPI's ``%s``."""
    t = table(name, schema)
    target = conn.dialect.identifier_preparer.format_table(t)
    quote = conn.dialect.identifier_preparer.quote
    columns = ("run_id", "revision", "position", "digest", "kind", "statement", "runner",
               "recorded_at")
    return (f"INSERT INTO {target} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))})")


class Mismatch(Exception):
    """The revision's statements differ from what its earlier attempt committed."""


@dataclass
class Skips:
    """The child's side of a resume: the statements of ``revision`` to skip, in order."""

    revision: str
    digests: List[str]
    kinds: List[str]
    texts: List[str]
    #: the attempt did not end on its own: the first statement after these may have
    #: committed without its row (see the module's docstring)
    maybe_applied: bool
    from_run: str

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Skips":
        return cls(d["revision"], list(d["digests"]), list(d["kinds"]), list(d["texts"]),
                   bool(d["maybe_applied"]), d["from_run"])


# --------------------------------------------------------------------------- the parent

@dataclass
class Attempt:
    """The newest attempt of a pending revision that left statements committed."""

    run_id: str
    revision: str
    statements: List[Dict[str, Any]] = field(default_factory=list)
    outcome: Optional[str] = None  # its history row's; None: the runner died before it
    runner: Optional[str] = None

    #: a newer attempt that committed nothing did not end on its own (see newest_attempt)
    unsure: bool = False

    @property
    def maybe_applied(self) -> bool:
        """Did it (or a newer attempt that committed nothing) stop without knowing whether
        its next statement committed? Not after a failure: that statement raised."""
        from . import historytable as history

        return self.unsure or self.outcome not in (history.FAILED, history.FAILED_AT_COMMIT)

    def skips(self) -> Dict[str, Any]:
        return {"revision": self.revision,
                "digests": [s["digest"] for s in self.statements],
                "kinds": [s["kind"] for s in self.statements],
                "texts": [s["statement"] or "" for s in self.statements],
                "maybe_applied": self.maybe_applied, "from_run": self.run_id}


def ensure(conn: "Connection", name: str, schema: Optional[str]) -> None:
    table(name, schema).create(conn, checkfirst=True)


def newest_attempt(conn: "Connection", name: str, schema: Optional[str],
                   history_name: str, pending: Sequence[str]) -> Optional[Attempt]:
    """The attempt whose journal holds what of a pending revision is in the database: the
    newest one that committed a statement of it, with its history outcome (None when no
    history row says how it ended: its runner died). An attempt that committed nothing
    changed nothing, but when one like that newer than it (or alone) did not end on its
    own, its first statement may have committed unrecorded: the result is then
    ``maybe_applied``."""
    from . import historytable as history

    if not pending or not history.exists(conn, name, schema):
        return None
    from sqlalchemy import func, select

    j = table(name, schema)
    runs = conn.execute(select(j.c.run_id, j.c.revision, func.max(j.c.id).label("last"))
                        .where(j.c.revision.in_(pending))
                        .group_by(j.c.run_id, j.c.revision).order_by(func.max(j.c.id).desc())
                        ).all()
    outcomes: Dict[Tuple[str, str], Optional[str]] = {}
    if runs and history.exists(conn, history_name, schema):
        h = history.table(history_name, schema)
        for run_id, revision, outcome in conn.execute(
                select(h.c.run_id, h.c.revision, h.c.outcome)
                .where(h.c.revision.in_(pending)).order_by(h.c.id)):
            outcomes[(str(run_id), str(revision))] = str(outcome)
    newer_unsure = False
    chosen: Optional[Attempt] = None
    for run_id, revision, _ in runs:
        attempt = _attempt(conn, j, str(run_id), str(revision))
        attempt.outcome = outcomes.get((attempt.run_id, attempt.revision))
        if chosen is None:
            chosen = attempt  # the newest: what is reported when none committed anything
        elif attempt.revision != chosen.revision:
            break  # another pending revision's older attempts: not this one's story
        if attempt.statements:
            attempt.unsure = newer_unsure
            return attempt
        newer_unsure = newer_unsure or attempt.maybe_applied
    return chosen


def _attempt(conn: "Connection", j: "Table", run_id: str, revision: str) -> Attempt:
    from sqlalchemy import select

    rows = conn.execute(select(j).where(j.c.run_id == run_id, j.c.revision == revision)
                        .order_by(j.c.position, j.c.id)).all()
    attempt = Attempt(run_id, revision)
    seen = set()
    for r in rows:
        m = r._mapping
        attempt.runner = attempt.runner or m["runner"]
        if m["kind"] == BEGIN or m["position"] in seen:  # a position twice: once
            continue
        seen.add(m["position"])
        attempt.statements.append(dict(m))
    return attempt


def committed(conn: "Connection", name: str, schema: Optional[str],
              run_id: str) -> Dict[str, List[str]]:
    """Per revision, the statements the journal says this run committed (read back)."""
    from sqlalchemy import select

    j = table(name, schema)
    out: Dict[str, List[str]] = {}
    for rev, text in conn.execute(select(j.c.revision, j.c.statement)
                                  .where(j.c.run_id == run_id, j.c.kind != BEGIN)
                                  .order_by(j.c.id)):
        out.setdefault(str(rev), []).append(str(text or ""))
    return out
