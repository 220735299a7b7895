"""``migrategate plan``: what a deploy will do to this database, before it runs.

For the pending revisions of *this* database, in apply order: each statement as
Alembic's offline mode renders it (in a child: offline.py), the lock it takes and
what that blocks, the work (instant, scans, scales with the table) and on MySQL/MariaDB
the online-DDL algorithm (sqlrisk.py), the live size of every table it touches (the
catalog, read on a read-only session), squawk's findings on PostgreSQL, and whether
the options the Job runs with (--pg-lock-timeout, --lock-retries, --statement-timeout)
bound the statement's lock wait.

Findings are output, not errors: ``plan`` exits 0 when it could plan. ``upgrade
--refuse`` turns them into a policy, checked before the lock is taken.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from .errors import ConfigError
from .graph import Graph
from .log import Writer
from .pending import Plan
from .settings import Settings
from .urls import MYSQL
from .sqlrisk import INFO, LEVELS, RISKY, WARNING, Assessment, Finding, Server, assess, bare

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


@dataclass
class TableSize:
    name: str
    exists: bool
    rows: Optional[int] = None
    bytes: Optional[int] = None
    created_by_plan: bool = False

    def describe(self) -> str:
        if self.created_by_plan:
            return f"{self.name} (created by this plan)"
        if not self.exists:
            return f"{self.name} (not in the database)"
        rows = "rows unknown" if self.rows is None else f"{_count(self.rows)} rows"
        size = "" if self.bytes is None else f", {_bytes(self.bytes)}"
        return f"{self.name} ({rows}{size})"

    @property
    def empty(self) -> bool:
        return self.created_by_plan or (self.exists and self.rows == 0)


@dataclass
class PlannedStatement:
    sql: str
    assessment: Assessment
    in_transaction: bool
    tables: List[TableSize] = field(default_factory=list)
    lock_wait: str = ""
    #: the locks a rehearsal saw it take (pg_locks); empty when planned offline
    locks_taken: List[str] = field(default_factory=list)
    note: str = ""  # e.g. a rehearsal did not run it (an autocommit block)

    def to_dict(self) -> Dict[str, Any]:
        a = self.assessment
        return {"sql": self.sql, "kind": a.kind, "lock": a.lock, "blocks": a.blocks,
                "estimate": a.estimate, "algorithm": a.algorithm,
                "in_transaction": self.in_transaction, "lock_wait": self.lock_wait,
                "locks_taken": self.locks_taken, "note": self.note,
                "tables": [dataclasses.asdict(t) for t in self.tables],
                "findings": [f.to_dict() for f in a.findings]}


@dataclass
class PlannedRevision:
    revision: str
    message: str
    statements: List[PlannedStatement] = field(default_factory=list)
    #: why offline mode could not render (all of) it; None: it did
    not_planned: Optional[str] = None
    source: str = "offline"  # or "rehearsal"

    def to_dict(self) -> Dict[str, Any]:
        return {"revision": self.revision, "message": self.message, "source": self.source,
                "planned": self.not_planned is None, "not_planned": self.not_planned,
                "statements": [s.to_dict() for s in self.statements]}


@dataclass
class DeployPlan:
    server: Server
    current: Tuple[str, ...]
    target: Tuple[str, ...]
    revisions: List[PlannedRevision]
    squawk: str  # what was used, or why not

    def findings(self) -> Iterator[Tuple[PlannedRevision, Optional[PlannedStatement],
                                         Finding]]:
        for rev in self.revisions:
            if rev.not_planned is not None:
                yield rev, None, Finding("not-planned", RISKY,
                                         f"could not be planned: {rev.not_planned}")
            for st in rev.statements:
                for f in st.assessment.findings:
                    yield rev, st, f

    def counts(self) -> Dict[str, int]:
        out = {level: 0 for level in LEVELS}
        for _, _, f in self.findings():
            out[f.level] += 1
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"server": {"kind": self.server.kind,
                           "version": ".".join(str(p) for p in self.server.version)},
                "current": list(self.current), "target": list(self.target),
                "squawk": self.squawk, "findings": self.counts(),
                "revisions": [r.to_dict() for r in self.revisions]}


# ------------------------------------------------------------------ building it

def build(settings: Settings, conn: Optional["Connection"], graph: Graph, plan: Plan,
          writer: Writer) -> DeployPlan:
    """The deploy plan of ``plan``'s pending revisions (``conn``: None for a database
    that doesn't exist yet, whose sizes are all "created by this plan")."""
    from . import offline
    from .dialect import dialect_for

    dialect = dialect_for(settings.dialect)
    server = dialect.plan_server(conn) if conn is not None else Server(settings.dialect)
    if not plan.pending:
        rendered: Dict[str, offline.Rendered] = {}
    elif settings.rehearse_on:
        from .rehearse import rehearse_in_child

        if conn is None:
            raise ConfigError("--rehearse-on needs the target database to exist",
                              "plan it offline (without --rehearse-on)")
        rendered = rehearse_in_child(settings, conn, graph, plan, writer)
    else:
        rendered = offline.render_in_child(settings, plan, writer)
    # where rendering stopped before a revision (env.py failed, an earlier revision failed)
    stopped = next((r.error for k, r in rendered.items()
                    if r.error and k not in {p.id for p in plan.pending}), None)
    revisions: List[PlannedRevision] = []
    created: Set[str] = set()
    sizes: Dict[str, TableSize] = {}
    indexes: Dict[str, str] = {}  # index -> table, for the plan's own CREATE INDEX
    columns: Dict[Tuple[str, str], Tuple[str, bool]] = {}
    read: Set[str] = set()  # tables whose columns were read (once each)
    for rev in plan.pending:
        r = rendered.get(rev.id)
        planned = PlannedRevision(rev.id, rev.message)
        if r is None:
            how = "the rehearsal" if settings.rehearse_on else "the rendering"
            planned.not_planned = stopped or f"{how} stopped before it"
        else:
            planned.not_planned = r.error
            planned.source = r.source
            for st in r.own:
                if conn is not None:  # MySQL's MODIFY/CHANGE need them (Dialect.columns)
                    columns.update(_columns_for(dialect, conn, st.sql, read))
                a = assess(st.sql, server, columns)
                _index_table(a, dialect, conn, indexes)
                planned.statements.append(PlannedStatement(
                    st.sql, a, st.in_transaction,
                    [_size(dialect, conn, t, created, sizes) for t in a.tables],
                    locks_taken=list(st.locks), note=st.note))
                created.update(bare(t).lower() for t in a.creates)
                if a.renamed_to and a.index:
                    indexes[bare(a.renamed_to).lower()] = a.tables[0] if a.tables else ""
                elif a.renamed_to and a.tables:
                    _renamed(a.tables[0], a.renamed_to, created, sizes)
        revisions.append(planned)
    squawk = _squawk(server, revisions)
    for each in revisions:
        for statement in each.statements:
            _moot(statement)
            statement.lock_wait = lock_wait(statement, settings)
    return DeployPlan(server, plan.current, plan.target, revisions, squawk)


def _columns_for(dialect: Any, conn: "Connection", sql: str, read: Set[str]
                 ) -> Dict[Tuple[str, str], Tuple[str, bool]]:
    import re

    m = re.match(r"\s*ALTER TABLE\s+(\S+)\s+.*\b(MODIFY|CHANGE)\b", sql,
                 re.IGNORECASE | re.DOTALL)
    if m is None or bare(m.group(1)).lower() in read:
        return {}
    read.add(bare(m.group(1)).lower())
    return dialect.columns(conn, m.group(1))


def _index_table(a: Assessment, dialect: Any, conn: Optional["Connection"],
                 indexes: Dict[str, str]) -> None:
    """CREATE INDEX records its table; DROP INDEX (PostgreSQL names no table) finds it in
    the plan, else in the catalog."""
    if a.index is None:
        return
    key = bare(a.index).lower()
    if a.tables:
        indexes[key] = a.tables[0]
    elif indexes.get(key):
        a.tables = [indexes[key]]
    elif conn is not None:
        table = dialect.index_table(conn, a.index)
        if table:
            a.tables = [table]


def _renamed(old: str, new: str, created: Set[str], sizes: Dict[str, TableSize]) -> None:
    """After a table rename the new name is the old table: created by the plan, or the
    existing table with its size."""
    old_key, new_key = bare(old).lower(), bare(new).lower()
    if old_key in created:
        created.add(new_key)
    elif old_key in sizes:
        was = sizes[old_key]
        sizes[new_key] = TableSize(bare(new), was.exists, was.rows, was.bytes)


def _size(dialect: Any, conn: Optional["Connection"], name: str, created: Set[str],
          sizes: Dict[str, TableSize]) -> TableSize:
    key = bare(name).lower()
    if key in created:
        return TableSize(bare(name), exists=False, created_by_plan=True)
    if key not in sizes:
        if conn is None:
            sizes[key] = TableSize(bare(name), exists=False)
        else:
            exists, rows, size = dialect.table_size(conn, name)
            sizes[key] = TableSize(bare(name), exists, rows, size)
    return sizes[key]


def _moot(st: PlannedStatement) -> None:
    """A finding about a table this plan creates is moot (no pod uses it, it holds no
    rows); on a table that is empty now, so is one about work that scales with it: a
    rewrite of nothing is no risk to refuse a deploy for."""
    if not st.tables:
        return
    new = all(t.created_by_plan for t in st.tables)
    if not new and not all(t.empty for t in st.tables):
        return
    why = "the table is created by this plan" if new else "the table is empty now"
    for f in st.assessment.findings:
        if f.level != INFO and (new or f.scales):
            f.level = INFO
            f.message += f" (moot: {why})"


def lock_wait(st: PlannedStatement, settings: Settings) -> str:
    """Whether the options bound how long the statement can queue for its lock, during
    which every later query on the table queues behind it."""
    a = st.assessment
    if a.blocks in ("nothing", "unknown") or a.lock in ("none", "catalog only"):
        return ""
    if settings.dialect not in ("postgresql",) + MYSQL:
        return ""  # no lock queue these options govern (SQLite: the file's write lock)
    timeout = settings.first_lock_timeout
    if timeout is None:
        return ("unbounded: while it waits for its lock, later queries on the table wait "
                "behind it (--pg-lock-timeout S or --lock-retries N bound it)"
                if settings.dialect == "postgresql" else
                "unbounded: while it waits for its metadata lock, later queries on the table "
                "wait behind it (--mysql-lock-wait-timeout S or --lock-retries N bound it)")
    text = f"at most {timeout:g} s"
    if not settings.lock_retries:
        return text
    if settings.dialect != "postgresql":
        return (text + f", then the revision is retried (up to {settings.lock_retries} "
                "times) if it changed nothing before this statement")
    if st.in_transaction:
        return text + f", then the revision is retried (up to {settings.lock_retries} times)"
    return text + ", not retried (it runs in an autocommit block)"


def _squawk(server: Server, revisions: List[PlannedRevision]) -> str:
    """squawk's findings joined to the statements (PostgreSQL only)."""
    if server.kind != "postgresql":
        return "not used (squawk lints PostgreSQL)"
    from . import squawk

    every = [st for rev in revisions for st in rev.statements]
    if not every:
        return "nothing to lint"
    if squawk.binary() is None:
        return "not installed (pip install squawk-cli adds its findings)"
    version = ".".join(str(p) for p in server.version[:2])
    total = 0
    # squawk is told which statements run inside the revision's transaction and which in
    # an autocommit block (CREATE INDEX CONCURRENTLY must not be flagged as in one)
    for inside in (True, False):
        statements = [st for st in every if st.in_transaction is inside]
        if not statements:
            continue
        try:
            found = squawk.lint([st.sql for st in statements], version,
                                in_transaction=inside) or {}
        except (RuntimeError, OSError) as exc:
            return f"failed: {exc}"
        for index, findings in found.items():
            statements[index].assessment.findings.extend(findings)
            total += len(findings)
    return f"used ({total} findings)"


# ------------------------------------------------------------------ policy

def refused(deploy: DeployPlan, policy: str) -> List[str]:
    """The findings ``--refuse`` names: a level (``risky``, ``warning``) refuses every
    finding at it or above; rule names refuse those rules above ``info`` (a moot finding
    never refuses)."""
    wanted = [p.strip() for p in policy.split(",") if p.strip()]
    levels = [w for w in wanted if w in LEVELS]
    rules = {w for w in wanted if w not in LEVELS}
    floor = min((LEVELS.index(w) for w in levels), default=len(LEVELS))
    out = []
    for rev, st, f in deploy.findings():
        rank = LEVELS.index(f.level)
        if rank >= floor or (f.rule in rules and rank > 0):
            where = f"{rev.revision}" + (f": {_short(st.sql)}" if st else "")
            out.append(f"{f.level} {f.rule} ({where}): {f.message}")
    return out


def check_policy(policy: str) -> str:
    """``--refuse`` as given, or a configuration error naming what it accepts."""
    wanted = [p.strip() for p in policy.split(",") if p.strip()]
    if not wanted:
        raise ConfigError("--refuse is empty", "give a level (risky, warning) or rule names")
    if INFO in wanted:
        raise ConfigError("--refuse info would refuse every plan with a note in it",
                          "use risky or warning, or name rules")
    return ",".join(wanted)


# ------------------------------------------------------------------ output

def render_text(deploy: DeployPlan, out: Callable[[str], None], database: str) -> None:
    """Line by line to ``out`` (stdout for ``plan``; the log for ``upgrade --show-plan``)."""
    counts = deploy.counts()
    n = len(deploy.revisions)
    version = ".".join(str(p) for p in deploy.server.version) or "version unknown"
    out(f"plan: {n} revision(s) to apply to {database} ({deploy.server.kind} {version}), "
        f"{', '.join(deploy.current) or '(empty database)'} -> {', '.join(deploy.target)}")
    if not n:
        out("nothing to apply")
        return
    out(f"findings: {counts[RISKY]} risky, {counts[WARNING]} warning, {counts[INFO]} info; "
        f"squawk: {deploy.squawk}")
    for k, rev in enumerate(deploy.revisions, 1):
        out("")
        source = " (rehearsed)" if rev.source == "rehearsal" else ""
        out(f"[{k}/{n}] {rev.revision}  {rev.message}{source}")
        if rev.not_planned is not None:
            out(f"  ! not planned: {rev.not_planned}")
        if not rev.statements and rev.not_planned is None:
            out("  (no statements)")
        for j, st in enumerate(rev.statements, 1):
            a = st.assessment
            out(f"  {j}. {_short(st.sql, 160)}")
            algo = f" · ALGORITHM={a.algorithm}" if a.algorithm else ""
            where = ("" if st.in_transaction or deploy.server.kind != "postgresql"
                     else " · outside the revision's transaction (autocommit block)")
            out(f"     lock: {a.lock} (blocks {a.blocks}) · {a.estimate}{algo}{where}")
            if st.tables:
                out(f"     tables: {', '.join(t.describe() for t in st.tables)}")
            if st.locks_taken:
                out(f"     took (rehearsal): {', '.join(st.locks_taken)}")
            if st.note:
                out(f"     note: {st.note}")
            if st.lock_wait:
                out(f"     lock wait: {st.lock_wait}")
            for f in a.findings:
                mark = {"risky": "!", "warning": "~", "info": "·"}[f.level]
                src = "" if f.source == "migrategate" else f" [{f.source}]"
                out(f"     {mark} {f.level} {f.rule}{src}: {f.message}")


def render_markdown(deploy: DeployPlan, out: Callable[[str], None], database: str) -> None:
    """For a pull-request comment or a CI job summary."""
    counts = deploy.counts()
    version = ".".join(str(p) for p in deploy.server.version) or "version unknown"
    out(f"### migrategate plan: {len(deploy.revisions)} revision(s) on {deploy.server.kind} "
        f"{version}")
    out("")
    out(f"`{', '.join(deploy.current) or '(empty database)'}` → "
        f"`{', '.join(deploy.target)}` · **{counts[RISKY]} risky**, {counts[WARNING]} "
        f"warning, {counts[INFO]} info · squawk: {deploy.squawk}")
    for rev in deploy.revisions:
        out("")
        out(f"#### `{rev.revision}` {_md(rev.message)}")
        if rev.not_planned is not None:
            out(f"> **not planned:** {_md(rev.not_planned)}")
        if not rev.statements:
            continue
        out("")
        out("| # | statement | lock (blocks) | work | tables | findings |")
        out("|---|---|---|---|---|---|")
        for j, st in enumerate(rev.statements, 1):
            a = st.assessment
            work = a.estimate + (f", {a.algorithm}" if a.algorithm else "")
            findings = "<br>".join(f"**{f.level}** `{f.rule}`" for f in a.findings) or "—"
            tables = "<br>".join(_md(t.describe()) for t in st.tables) or "—"
            out(f"| {j} | `{_md(_short(st.sql, 120))}` | {a.lock} ({a.blocks}) | {work} | "
                f"{tables} | {findings} |")


def _short(sql: str, width: int = 100) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= width else one[:width - 1] + "…"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _count(n: int) -> str:
    for unit, size in (("G", 10 ** 9), ("M", 10 ** 6), ("k", 10 ** 3)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return str(n)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"
