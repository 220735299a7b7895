"""``migrategate repair``: get out of a half-applied revision without ``stamp`` by hand.

Only for the next pending revision, and only for what can be undone without losing
anything. On PostgreSQL a revision's DDL is rolled back with it, except an index built
``CONCURRENTLY`` in an autocommit block: a failed or interrupted build leaves the index
INVALID (PostgreSQL maintains it but never uses it), and the re-run fails with "already
exists". ``repair`` drops exactly those INVALID indexes whose names the revision's file
creates — an invalid index holds no data — with ``DROP INDEX CONCURRENTLY``, under the
migration lock, after showing what it will do; nothing without ``--yes``. Everything else
(an INVALID index the revision doesn't create, tables or columns a MySQL/MariaDB revision
left) is refused by name: a person decides (docs/history.md says how).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Optional

from .errors import ConfigError
from .graph import Graph
from .log import Writer
from .pending import Plan
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


@dataclass
class RepairPlan:
    revision: Optional[str]
    drop: List[str] = field(default_factory=list)  # schema.index, INVALID, created by it
    #: what repair will not touch, each with why (a person decides)
    left: List[str] = field(default_factory=list)

    @property
    def statements(self) -> List[str]:
        return [f"DROP INDEX CONCURRENTLY IF EXISTS {_quoted(name)}" for name in self.drop]


def _quoted(qualified: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in qualified.split(".", 1))


def plan_repair(conn: "Connection", graph: Graph, plan: Plan, dialect_name: str) -> RepairPlan:
    from .schemaobjects import existing_objects, invalid_indexes, planned_objects

    if dialect_name != "postgresql":
        raise ConfigError(
            f"repair works on PostgreSQL only so far; on {dialect_name} a half-applied "
            "revision's committed statements would have to be resumed, which migrategate "
            "does not do yet",
            "run 'migrategate doctor' (it names what the revision left), then drop those "
            "objects and re-run, or 'alembic stamp' if every statement of it has run")
    nxt = plan.pending[0] if plan.pending else None
    invalid = invalid_indexes(conn)
    result = RepairPlan(nxt.id if nxt else None)
    planned = planned_objects(nxt.path) if nxt is not None else []
    ours = {p.name for p in planned if p.kind == "index"}
    for name in invalid:
        if name.split(".", 1)[-1] in ours:
            result.drop.append(name)
        else:
            result.left.append(f"INVALID index {name}: not created by "
                               f"{nxt.id if nxt else 'a pending revision'}; "
                               "drop it by hand if it is yours to drop")
    if nxt is not None:
        others = [o for o in existing_objects(conn, planned)
                  if not any(o.endswith("." + d.split(".", 1)[-1]) for d in result.drop)]
        for found in others:
            result.left.append(f"{found} exists although {nxt.id} is pending: a person must "
                               "decide whether to drop it (its data goes with it) or stamp")
    return result


def run_repair(conn: "Connection", repair: RepairPlan, writer: Writer) -> List[str]:
    """Drop each index; returns what was dropped, read back from the catalog."""
    from sqlalchemy import text

    from .schemaobjects import invalid_indexes

    for statement in repair.statements:
        writer.info(f"repair: {statement}")
        conn.execute(text(statement))
    still = set(invalid_indexes(conn))
    return [name for name in repair.drop if name not in still]


__all__ = ["RepairPlan", "plan_repair", "run_repair"]


def describe(repair: RepairPlan, settings: Settings) -> List[str]:
    lines = [f"next pending revision: {repair.revision or '(none: the database is at target)'}"]
    lines += [f"would run: {s}" for s in repair.statements] or ["nothing to drop"]
    lines += [f"left alone: {why}" for why in repair.left]
    return lines
