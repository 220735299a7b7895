"""What one migration statement does to a live table: the lock, what it blocks, the work.

Pure functions of the statement's text, the backend and its version: ``plan`` joins
them with the live sizes of the tables (the catalog) and, on PostgreSQL, with squawk's
findings (a maintained linter; its rules are not copied here). These rules are what a
linter can't know or doesn't cover: the lock each statement takes and what that
blocks, whether the work scales with the table (rewrite, scan, index build) and, on
MySQL/MariaDB, the online-DDL algorithm the server will choose for its version.

They read SQL as Alembic renders it (one statement or an ``op.execute`` string); what
they don't recognise is reported as "unknown", never guessed. Sources: PostgreSQL's
"Explicit Locking" and ``ALTER TABLE`` pages; MySQL 8.0's "Online DDL Operations";
MariaDB's "InnoDB Online DDL Operations with ALGORITHM=INSTANT/INPLACE".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# estimate classes: not a fake number of seconds
INSTANT = "instant"
SCALES = "scales with table size"
SCANS = "scans"
DATA = "unknown (data migration)"
UNKNOWN = "unknown"

RISKY, WARNING, INFO = "risky", "warning", "info"
LEVELS = (INFO, WARNING, RISKY)

#: PostgreSQL table locks, weakest first, and what each blocks for other sessions
PG_LOCKS: Tuple[Tuple[str, str], ...] = (
    ("ACCESS SHARE", "nothing"),
    ("ROW SHARE", "nothing"),
    ("ROW EXCLUSIVE", "nothing (only the rows it changes)"),
    ("SHARE UPDATE EXCLUSIVE", "other schema changes and VACUUM (not reads or writes)"),
    ("SHARE", "writes"),
    ("SHARE ROW EXCLUSIVE", "writes"),
    ("EXCLUSIVE", "writes"),
    ("ACCESS EXCLUSIVE", "reads and writes"),
)
_PG_RANK = {name: k for k, (name, _) in enumerate(PG_LOCKS)}
_PG_BLOCKS = dict(PG_LOCKS)


@dataclass
class Finding:
    rule: str
    level: str  # risky | warning | info
    message: str
    source: str = "migrategate"
    #: the finding is about work that scales with the table (moot on an empty/new table)
    scales: bool = False

    def to_dict(self) -> Dict[str, object]:
        return {"rule": self.rule, "level": self.level, "message": self.message,
                "source": self.source}


@dataclass
class Assessment:
    kind: str
    tables: List[str] = field(default_factory=list)  # existing tables it touches, as written
    creates: List[str] = field(default_factory=list)  # tables it creates
    lock: str = "none"
    blocks: str = "nothing"
    estimate: str = UNKNOWN
    algorithm: Optional[str] = None  # MySQL/MariaDB online DDL: INSTANT | INPLACE | COPY
    findings: List[Finding] = field(default_factory=list)
    #: a table rename's new name (the old one is ``tables[0]``)
    renamed_to: Optional[str] = None
    #: the index a CREATE INDEX / DROP INDEX names (its table may only be known by the plan)
    index: Optional[str] = None

    def worse(self, other: "Assessment", pg: bool) -> None:
        """Fold another action of the same statement into this one."""
        if pg and _PG_RANK.get(other.lock, -1) > _PG_RANK.get(self.lock, -1):
            self.lock, self.blocks = other.lock, other.blocks
        order = (INSTANT, SCANS, SCALES, DATA, UNKNOWN)
        if order.index(other.estimate) > order.index(self.estimate):
            self.estimate = other.estimate
        algos = (None, "INSTANT", "INPLACE", "COPY")
        if algos.index(other.algorithm) > algos.index(self.algorithm):
            self.algorithm = other.algorithm
            if not pg:
                self.blocks = other.blocks
        for t in other.tables:
            if t not in self.tables:
                self.tables.append(t)
        self.findings.extend(other.findings)
        self.renamed_to = other.renamed_to or self.renamed_to


Version = Tuple[int, ...]


@dataclass(frozen=True)
class Server:
    """The backend a statement is judged for: ``postgresql``, ``mysql``, ``mariadb`` or
    ``sqlite``, and its version (empty: unknown, newest rules assumed)."""

    kind: str
    version: Version = ()

    def at_least(self, *wanted: int) -> bool:
        return not self.version or tuple(self.version[:len(wanted)]) >= wanted


#: current MySQL/MariaDB column definitions, for MODIFY/CHANGE: (table, column) -> type
Columns = Dict[Tuple[str, str], Tuple[str, bool]]

_IDENT = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$]+)'
_NAME = rf"({_IDENT}(?:\s*\.\s*{_IDENT})?)"
_WS = re.compile(r"\s+")
_QUOTED = re.compile(r"'(?:[^']|'')*'")


def bare(name: str) -> str:
    """A table name without its quotes (``"public"."Messages"`` -> ``public.Messages``)."""
    return ".".join(p.strip('"`[]').replace('""', '"') for p in re.findall(_IDENT, name))


def assess(sql: str, server: Server, columns: Optional[Columns] = None) -> Assessment:
    """The lock, blocking, work and findings of one statement on ``server``."""
    text = _WS.sub(" ", sql.strip().rstrip(";")).strip()
    upper = _QUOTED.sub("''", text).upper()
    if server.kind == "postgresql":
        return _postgresql(text, upper, server)
    if server.kind in ("mysql", "mariadb"):
        return _mysql(text, upper, server, columns or {})
    return _generic(text, upper)


# ------------------------------------------------------------------ shared

def _m(pattern: str, text: str) -> Optional[re.Match[str]]:
    return re.match(pattern, text, re.IGNORECASE)


def _data(text: str, upper: str, lock: str, blocks: str) -> Optional[Assessment]:
    """INSERT / UPDATE / DELETE / SELECT: row locks; work we can't size from the text."""
    m = _m(rf"(?:WITH .*? )?(INSERT INTO|UPDATE|DELETE FROM) (?:ONLY )?{_NAME}", text)
    if m:
        verb = m.group(1).upper()
        a = Assessment(verb.split()[0].lower(), [m.group(2)], lock=lock, blocks=blocks)
        if verb == "INSERT INTO" and " SELECT " not in upper:
            a.estimate = INSTANT
        elif verb != "INSERT INTO" and " WHERE " not in upper:
            a.estimate = SCALES
            a.findings.append(Finding(
                "data-migration", WARNING,
                f"{verb.split()[0]} of every row in one transaction: its row locks block "
                "concurrent writes to those rows until it commits", scales=True))
        else:
            a.estimate = DATA
            a.findings.append(Finding("data-migration", INFO,
                                      "changes data: how long depends on the rows it matches"))
        return a
    if upper.startswith(("SELECT", "WITH", "SHOW", "SET ", "EXPLAIN")):
        return Assessment("read or session setting", estimate=INSTANT)
    return None


def _split_actions(body: str) -> List[str]:
    """ALTER TABLE's comma-separated actions (commas inside parentheses/quotes stay)."""
    out, depth, start, quote = [], 0, 0, ""
    for k, ch in enumerate(body):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(body[start:k].strip())
            start = k + 1
    out.append(body[start:].strip())
    return [a for a in out if a]


def _referenced(text: str) -> List[str]:
    return re.findall(rf"\bREFERENCES {_NAME}", text, re.IGNORECASE)


# ------------------------------------------------------------------ PostgreSQL

_VOLATILE = re.compile(r"\b(RANDOM|CLOCK_TIMESTAMP|TIMEOFDAY|GEN_RANDOM_UUID|UUID_GENERATE_V\d\w*|"
                       r"UUIDV[47]|NEXTVAL|TXID_CURRENT)\s*\(")


def _drops(what: str) -> Finding:
    if what == "a column":
        return Finding("drops-column", WARNING,
                       "drops a column: pods still running the previous image must not read "
                       "it (deploy the code that stops using it first)")
    return Finding("drops-table", WARNING,
                   "drops a table: the running app's code must no longer use it")


def _renames(what: str) -> Finding:
    return Finding("renames", WARNING, f"renames {what}: queries of pods still running the "
                   "previous image fail until they are replaced")


def _pg(lock: str, **kw: object) -> Assessment:
    return Assessment(lock=lock, blocks=_PG_BLOCKS[lock], **kw)  # type: ignore[arg-type]


def _postgresql(text: str, upper: str, server: Server) -> Assessment:
    m = _m(rf"ALTER TABLE (?:IF EXISTS )?(?:ONLY )?{_NAME}\s*(.*)$", text)
    if m:
        table = m.group(1)
        body = m.group(2)
        result: Optional[Assessment] = None
        for action in _split_actions(body):
            a = _pg_action(action, action.upper(), table, server)
            if result is None:
                result = a
            else:
                result.worse(a, pg=True)
        assert result is not None
        if table not in result.tables:
            result.tables.insert(0, table)
        result.kind = "alter table"
        return result
    m = _m(rf"CREATE (UNIQUE )?INDEX (CONCURRENTLY )?(?:IF NOT EXISTS )?(?:({_IDENT}) )?ON "
           rf"(?:ONLY )?{_NAME}", text)
    if m:
        index = m.group(3)
        if m.group(2):
            return _pg("SHARE UPDATE EXCLUSIVE", kind="create index concurrently",
                       tables=[m.group(4)], index=index, estimate=SCALES, findings=[Finding(
                           "concurrent-index", INFO,
                           "builds the index without blocking reads or writes (two table "
                           "scans); if it fails it leaves an INVALID index to drop")])
        return _pg("SHARE", kind="create index", tables=[m.group(4)], index=index,
                   estimate=SCALES,
                   findings=[Finding("non-concurrent-index", RISKY,
                                     "builds the index while blocking writes to the table "
                                     "for as long as the build takes; use CREATE INDEX "
                                     "CONCURRENTLY (postgresql_concurrently=True in an "
                                     "autocommit block)", scales=True)])
    m = _m(rf"CREATE (?:UNLOGGED |TEMP |TEMPORARY )?TABLE (?:IF NOT EXISTS )?{_NAME}", text)
    if m:
        refs = _referenced(text)
        if " AS SELECT " in upper or re.search(r"\)\s*AS\s", upper):
            return _pg("SHARE", kind="create table as", creates=[m.group(1)], estimate=DATA)
        return Assessment("create table", refs, [m.group(1)],
                          lock="SHARE ROW EXCLUSIVE" if refs else "none",
                          blocks=("writes to the referenced tables (briefly)" if refs
                                  else "nothing"), estimate=INSTANT)
    m = _m(r"DROP TABLE (?:IF EXISTS )?(.*?)(?: CASCADE| RESTRICT)?$", text)
    if m:
        names = [n.strip() for n in m.group(1).split(",")]
        return _pg("ACCESS EXCLUSIVE", kind="drop table", tables=names, estimate=INSTANT,
                   findings=[_drops("a table")])
    m = _m(rf"TRUNCATE (?:TABLE )?(?:ONLY )?{_NAME}", text)
    if m:
        return _pg("ACCESS EXCLUSIVE", kind="truncate", tables=[m.group(1)], estimate=INSTANT,
                   findings=[Finding("truncates", WARNING, "deletes every row of the table")])
    m = _m(rf"DROP INDEX (CONCURRENTLY )?(?:IF EXISTS )?{_NAME}", text)
    if m:  # its table: from the plan or the catalog (planner.py)
        if m.group(1):
            return _pg("SHARE UPDATE EXCLUSIVE", kind="drop index concurrently",
                       index=m.group(2), estimate=INSTANT)
        return _pg("ACCESS EXCLUSIVE", kind="drop index", index=m.group(2), estimate=INSTANT)
    m = _m(rf"ALTER INDEX (?:IF EXISTS )?{_NAME} RENAME TO ({_IDENT})", text)
    if m:  # PostgreSQL 12+: SHARE UPDATE EXCLUSIVE; its table from the plan or the catalog
        return _pg("SHARE UPDATE EXCLUSIVE" if server.at_least(12) else "ACCESS EXCLUSIVE",
                   kind="rename index", index=m.group(1), renamed_to=m.group(2),
                   estimate=INSTANT)
    data = _data(text, upper, "ROW EXCLUSIVE", _PG_BLOCKS["ROW EXCLUSIVE"])
    if data is not None:
        return data
    if _m(r"(CREATE|ALTER|DROP|COMMENT ON|GRANT|REVOKE)\b", text):
        word = " ".join(upper.split()[:2]).lower()
        if _m(r"CREATE (OR REPLACE )?TRIGGER", text):
            return _pg("SHARE ROW EXCLUSIVE", kind="create trigger", estimate=INSTANT)
        return Assessment(word, lock="catalog only", blocks="nothing", estimate=INSTANT)
    return Assessment(upper.split()[0].lower() if upper else "empty", lock="unknown",
                      blocks="unknown")


def _pg_action(action: str, up: str, table: str, server: Server) -> Assessment:
    if _m(r"ADD (CONSTRAINT \S+ )?FOREIGN KEY", up):
        refs = _referenced(action)
        if up.endswith("NOT VALID"):
            return _pg("SHARE ROW EXCLUSIVE", kind="", tables=refs, estimate=INSTANT)
        return _pg("SHARE ROW EXCLUSIVE", kind="", tables=refs, estimate=SCANS, findings=[
            Finding("foreign-key-validates", RISKY,
                    "checks every existing row while blocking writes to both tables; add it "
                    "NOT VALID, then VALIDATE CONSTRAINT in a later revision", scales=True)])
    if _m(r"ADD (CONSTRAINT \S+ )?CHECK", up):
        if up.endswith("NOT VALID"):
            return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT)
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=SCANS, findings=[
            Finding("check-validates", RISKY,
                    "checks every existing row while blocking reads and writes; add it NOT "
                    "VALID, then VALIDATE CONSTRAINT", scales=True)])
    if _m(r"ADD (CONSTRAINT \S+ )?(UNIQUE|PRIMARY KEY|EXCLUDE)", up):
        if " USING INDEX " in f" {up} ":
            return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT)
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=SCALES, findings=[
            Finding("constraint-builds-index", RISKY,
                    "builds its index while blocking reads and writes; build a unique index "
                    "CONCURRENTLY first, then ADD CONSTRAINT … USING INDEX", scales=True)])
    if up.startswith("VALIDATE CONSTRAINT"):
        return _pg("SHARE UPDATE EXCLUSIVE", kind="", estimate=SCANS)
    if _m(r"DROP CONSTRAINT", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT)
    if _m(r"ADD (COLUMN )?", up):
        return _pg_add_column(up, server)
    if _m(r"DROP (COLUMN )?", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT, findings=[
            _drops("a column")])
    if _m(r"ALTER (COLUMN )?\S+ (SET DATA )?TYPE ", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=SCALES, findings=[
            Finding("type-change", RISKY,
                    "changes a column's type: rewrites the table and its indexes while "
                    "blocking reads and writes (unless the change is binary-coercible, e.g. "
                    "widening a varchar)", scales=True)])
    if _m(r"ALTER (COLUMN )?\S+ SET NOT NULL", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=SCANS, findings=[
            Finding("set-not-null", RISKY,
                    "scans every row while blocking reads and writes (from PostgreSQL 12 "
                    "not when a valid CHECK (col IS NOT NULL) constraint exists)",
                    scales=True)])
    if _m(r"ALTER (COLUMN )?\S+ (DROP NOT NULL|SET DEFAULT|DROP DEFAULT|SET STORAGE)", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT)
    if _m(r"ALTER (COLUMN )?\S+ SET STATISTICS", up):
        return _pg("SHARE UPDATE EXCLUSIVE", kind="", estimate=INSTANT)
    m = _m(rf"RENAME TO ({_IDENT})$", action)
    if m:
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT, renamed_to=m.group(1),
                   findings=[_renames("a table")])
    if _m(r"RENAME ", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT,
                   findings=[_renames("a column")])
    if _m(r"SET (TABLESPACE|LOGGED|UNLOGGED|ACCESS METHOD)", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=SCALES, findings=[
            Finding("rewrites-table", RISKY, "rewrites the table while blocking reads and "
                    "writes", scales=True)])
    if _m(r"(ENABLE|DISABLE) TRIGGER", up):
        return _pg("SHARE ROW EXCLUSIVE", kind="", estimate=INSTANT)
    if _m(r"(OWNER TO|SET SCHEMA|SET \(|RESET \(|REPLICA IDENTITY|CLUSTER ON)", up):
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT)
    return _pg("ACCESS EXCLUSIVE", kind="", estimate=UNKNOWN)


def _pg_add_column(up: str, server: Server) -> Assessment:
    body = re.sub(r"^ADD (COLUMN )?(IF NOT EXISTS )?", "", up)
    default = re.search(r"\bDEFAULT\b(.*)$", body)
    serial = re.match(r"\S+ (SMALL|BIG)?SERIAL\b", body)
    identity = " GENERATED " in f" {body} "
    volatile = bool(default and _VOLATILE.search(default.group(1))) or bool(serial) or identity
    if volatile or (default and not server.at_least(11)):
        why = ("a volatile default (evaluated per row)" if volatile
               else "a default before PostgreSQL 11")
        return _pg("ACCESS EXCLUSIVE", kind="", estimate=SCALES, findings=[
            Finding("volatile-default", RISKY,
                    f"adds a column with {why}: rewrites the table while blocking reads and "
                    "writes; add it without the default, then backfill in batches",
                    scales=True)])
    findings = []
    if " NOT NULL" in body and not default:
        findings.append(Finding(
            "not-null-without-default", RISKY,
            "adds a NOT NULL column without a default: fails on a table that has rows "
            "(add a default, or make it nullable and backfill)", scales=True))
    return _pg("ACCESS EXCLUSIVE", kind="", estimate=INSTANT, findings=findings)


# ------------------------------------------------------------------ MySQL / MariaDB

_MDL = "metadata lock, exclusive at its start and end"
_BLOCKS = {"INSTANT": "nothing once the metadata lock is granted",
           "INPLACE": "nothing (reads and writes go on) once the metadata lock is granted",
           "COPY": "writes (reads go on) for as long as the copy takes"}


def _my(algorithm: Optional[str], estimate: str, findings: Sequence[Finding] = (),
        tables: Sequence[str] = ()) -> Assessment:
    return Assessment("", list(tables), lock=_MDL if algorithm else "none",
                      blocks=_BLOCKS.get(algorithm or "", "nothing"), estimate=estimate,
                      algorithm=algorithm, findings=list(findings))


def _instant_add(server: Server, positioned: bool) -> bool:
    if server.kind == "mariadb":
        return server.at_least(10, 4) or (server.at_least(10, 3, 2) and not positioned)
    return server.at_least(8, 0, 29) or (server.at_least(8, 0, 12) and not positioned)


def _instant_drop(server: Server) -> bool:
    return server.at_least(10, 4) if server.kind == "mariadb" else server.at_least(8, 0, 29)


def _instant_rename(server: Server) -> bool:
    return server.at_least(10, 5) if server.kind == "mariadb" else server.at_least(8, 0, 28)


# Findings are made fresh for each statement: planner._moot changes a finding's level
# and message for the statement it belongs to, never for the others.

def _copy() -> Finding:
    return Finding("copy-algorithm", RISKY,
                   "the server copies the table (ALGORITHM=COPY): writes are blocked for as "
                   "long as the copy takes", scales=True)


def _rebuild() -> Finding:
    return Finding("inplace-rebuild", WARNING,
                   "the server rebuilds the table in place (ALGORITHM=INPLACE): reads and "
                   "writes go on, but it takes time and I/O in proportion to the table and "
                   "replicas apply it afterwards", scales=True)


def _mysql(text: str, upper: str, server: Server, columns: Columns) -> Assessment:
    m = _m(rf"ALTER TABLE {_NAME}\s*(.*)$", text)
    if m:
        table = m.group(1)
        result: Optional[Assessment] = None
        for action in _split_actions(m.group(2)):
            a = _my_action(action, action.upper(), bare(table), server, columns)
            if result is None:
                result = a
            else:
                result.worse(a, pg=False)
        assert result is not None
        result.tables.insert(0, table)
        result.kind = "alter table"
        return result
    m = _m(rf"CREATE (UNIQUE |FULLTEXT |SPATIAL )?INDEX ({_IDENT}) ON {_NAME}", text)
    if m:
        a = _my_index((m.group(1) or "").strip().upper())
        a.kind, a.tables, a.index = "create index", [m.group(3)], m.group(2)
        return a
    m = _m(rf"DROP INDEX {_IDENT} ON {_NAME}", text)
    if m:
        a = _my("INPLACE", INSTANT, tables=[m.group(1)])
        a.kind = "drop index"
        return a
    m = _m(rf"CREATE (?:TEMPORARY )?TABLE (?:IF NOT EXISTS )?{_NAME}", text)
    if m:
        return Assessment("create table", _referenced(text), [m.group(1)], estimate=INSTANT)
    m = _m(r"DROP TABLE (?:IF EXISTS )?(.*?)(?: CASCADE| RESTRICT)?$", text)
    if m:
        return Assessment("drop table", [n.strip() for n in m.group(1).split(",")], lock=_MDL,
                          blocks="nothing once the metadata lock is granted", estimate=INSTANT,
                          findings=[_drops("a table")])
    m = _m(rf"RENAME TABLE {_NAME} TO {_NAME}", text)
    if m:
        return Assessment("rename table", [m.group(1)], lock=_MDL, blocks=_BLOCKS["INSTANT"],
                          estimate=INSTANT, renamed_to=m.group(2),
                          findings=[_renames("a table")])
    data = _data(text, upper, "row locks", "nothing (only the rows it changes)")
    if data is not None:
        return data
    if _m(r"(CREATE|ALTER|DROP|GRANT|REVOKE)\b", text):
        return Assessment(" ".join(upper.split()[:2]).lower(), lock="catalog only",
                          estimate=INSTANT)
    return Assessment(upper.split()[0].lower() if upper else "empty", lock="unknown",
                      blocks="unknown")


def _my_index(modifier: str) -> Assessment:
    if modifier in ("FULLTEXT", "SPATIAL"):
        return _my("INPLACE", SCALES, [Finding(
            "fulltext-index", RISKY, f"a {modifier} index blocks writes while it builds",
            scales=True)])
    a = _my("INPLACE", SCALES, [Finding(
        "index-build", INFO, "builds the index in place (ALGORITHM=INPLACE, LOCK=NONE): "
        "reads and writes go on", scales=True)])
    return a


def _my_action(action: str, up: str, table: str, server: Server, columns: Columns
               ) -> Assessment:
    if _m(r"ADD (CONSTRAINT \S+ )?FOREIGN KEY", up):
        return _my("COPY", SCALES, [_copy(), Finding(
            "foreign-key-copy", INFO, "with foreign_key_checks=1 (the default) MySQL adds "
            "a foreign key with ALGORITHM=COPY")], tables=_referenced(action))
    if _m(r"ADD (CONSTRAINT \S+ )?PRIMARY KEY", up):
        return _my("INPLACE", SCALES, [_rebuild()])
    if _m(r"ADD (CONSTRAINT \S+ )?(UNIQUE|INDEX|KEY|FULLTEXT|SPATIAL)\b", up):
        word = re.search(r"(FULLTEXT|SPATIAL)", up)
        return _my_index(word.group(1) if word else "")
    if _m(r"ADD (CONSTRAINT \S+ )?CHECK", up):
        return _my("COPY", SCALES, [_copy()])
    if _m(r"DROP (INDEX|KEY|FOREIGN KEY|CONSTRAINT|CHECK)\b", up):
        return _my("INPLACE", INSTANT)
    if _m(r"DROP PRIMARY KEY", up):
        return _my("COPY", SCALES, [_copy()])
    if _m(r"ADD (COLUMN )?", up):
        positioned = bool(re.search(r"\b(FIRST|AFTER \S+)$", up))
        generated = bool(re.search(r"\b(AUTO_INCREMENT|STORED)\b", up))
        if generated:
            return _my("COPY", SCALES, [_copy()])
        if _instant_add(server, positioned):
            return _my("INSTANT", INSTANT)
        return _my("INPLACE", SCALES, [_rebuild()])
    if _m(r"DROP (COLUMN )?", up):
        drop = _drops("a column")
        if _instant_drop(server):
            return _my("INSTANT", INSTANT, [drop])
        return _my("INPLACE", SCALES, [drop, _rebuild()])
    if _m(r"ALTER (COLUMN )?\S+ (SET|DROP) DEFAULT", up):
        return _my("INSTANT", INSTANT)
    m = _m(rf"RENAME (COLUMN )?({_IDENT}) TO ", action)
    if m and m.group(1):
        return _my_rename(server)
    m = _m(rf"RENAME (?:TO |AS )?({_NAME})$", action)
    if m:
        a = _my("INSTANT", INSTANT, [_renames("a table")])
        a.renamed_to = m.group(1)
        return a
    m = _m(rf"MODIFY (?:COLUMN )?({_IDENT})\s+(.*)$", action)
    if m:
        return _my_modify(bare(m.group(1)), None, m.group(2), table, server, columns)
    m = _m(rf"CHANGE (?:COLUMN )?({_IDENT}) ({_IDENT})\s+(.*)$", action)
    if m:
        return _my_modify(bare(m.group(1)), bare(m.group(2)), m.group(3), table, server,
                          columns)
    if _m(r"(CONVERT TO|ENGINE|FORCE|(DEFAULT )?CHARACTER SET)", up):
        return _my("COPY", SCALES, [_copy()])
    return _my("COPY", UNKNOWN, [Finding("unknown-alter", INFO,
                                         "an ALTER TABLE action these rules don't know; "
                                         "assumed ALGORITHM=COPY")])


def _my_rename(server: Server) -> Assessment:
    rename = _renames("a column")
    return _my("INSTANT" if _instant_rename(server) else "INPLACE", INSTANT, [rename])


_VARCHAR = re.compile(r"^VARCHAR\((\d+)\)", re.IGNORECASE)
_INTS = re.compile(r"^(tiny|small|medium|big)?int(eger)?(\(\d+\))?(.*)$")


def _my_type(spelled: str) -> str:
    """One spelling per type: INTEGER(11) and int are the same column type (display
    widths mean nothing since MySQL 8.0.19), BOOLEAN is tinyint(1)."""
    t = spelled.lower().replace(" ", "")
    if t in ("bool", "boolean"):
        return "tinyint(1)"
    m = _INTS.match(t)
    if m and t != "tinyint(1)":
        return f"{m.group(1) or ''}int{m.group(4)}"
    return t


def _my_modify(column: str, new_name: Optional[str], definition: str, table: str,
               server: Server, columns: Columns) -> Assessment:
    new_type = _my_type(definition.split(" ")[0])
    nullable = " NOT NULL" not in f" {definition.upper()}"
    renamed = new_name is not None and new_name != column
    current = columns.get((table.split(".")[-1], column))
    if current is None:
        return _my("COPY", SCALES, [_copy(), Finding(
            "column-unknown", INFO, "the column's current definition could not be read: "
            "assumed a type change (COPY); only a nullability change would be INPLACE")])
    old_type, old_nullable = _my_type(current[0]), current[1]
    findings: List[Finding] = []
    if renamed:
        findings.extend(_my_rename(server).findings)
    if old_type == new_type:
        if old_nullable == nullable:
            a = _my_rename(server) if renamed else _my("INSTANT", INSTANT)
            return a
        return _my("INPLACE", SCALES, findings + [_rebuild()])
    old_v, new_v = _VARCHAR.match(old_type), _VARCHAR.match(new_type)
    if old_v and new_v and int(new_v.group(1)) >= int(old_v.group(1)) and old_nullable == nullable:
        # the length prefix is 1 byte up to 255 bytes (utf8mb4: 4 bytes a character)
        if (int(new_v.group(1)) * 4 <= 255) == (int(old_v.group(1)) * 4 <= 255):
            return _my("INPLACE", INSTANT, findings)
    return _my("COPY", SCALES, findings + [Finding(
        "type-change", RISKY, f"changes the column's type ({old_type} -> {new_type}): the "
        "server copies the table (ALGORITHM=COPY), blocking writes", scales=True)])


# ------------------------------------------------------------------ others (SQLite)

def _generic(text: str, upper: str) -> Assessment:
    lock, blocks = "database write lock", "writes to the whole database file"
    m = _m(rf"CREATE (UNIQUE )?INDEX (?:IF NOT EXISTS )?{_IDENT} ON {_NAME}", text)
    if m:
        return Assessment("create index", [m.group(2)], lock=lock, blocks=blocks,
                          estimate=SCALES)
    m = _m(rf"CREATE TABLE (?:IF NOT EXISTS )?{_NAME}", text)
    if m:
        return Assessment("create table", [], [m.group(1)], lock=lock, blocks=blocks,
                          estimate=INSTANT)
    m = _m(rf"(ALTER TABLE|DROP TABLE(?: IF EXISTS)?) {_NAME}", text)
    if m:
        return Assessment(m.group(1).lower(), [m.group(2)], lock=lock, blocks=blocks,
                          estimate=INSTANT)
    data = _data(text, upper, lock, blocks)
    if data is not None:
        return data
    return Assessment(upper.split()[0].lower() if upper else "empty", lock=lock,
                      blocks=blocks)


__all__ = ["Assessment", "Finding", "Server", "assess", "bare", "LEVELS"]
