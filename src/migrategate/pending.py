"""What the database has vs what the scripts want: the Plan.

Read again under the lock: a runner that waited for another usually finds
nothing left to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from .errors import ConfigError, UnknownRevision
from .graph import Graph, Revision

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


@dataclass
class Plan:
    current: Tuple[str, ...]  # revisions in the version table (empty: none / no table)
    target: Tuple[str, ...]  # the revisions the upgrade goes to (resolved, absolute)
    pending: List[Revision]  # in the order Alembic applies them
    unknown: Tuple[str, ...] = ()  # database revisions the scripts don't know (allow_ahead)
    destination: str = "heads"  # the target as Alembic's upgrade is to be given it
    expected: Tuple[str, ...] = ()  # the version table's rows once pending is applied

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    def to_dict(self) -> Dict[str, Any]:
        return {"current": list(self.current), "target": list(self.target),
                "pending": [{"id": r.id, "message": r.message} for r in self.pending],
                "unknown": list(self.unknown), "destination": self.destination,
                "expected": list(self.expected)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Plan":
        """Enough of a plan for the migration process (ids and messages, not the graph)."""
        pending = [_Pending(p["id"], p["message"]) for p in d["pending"]]
        return cls(tuple(d["current"]), tuple(d["target"]), pending,  # type: ignore[arg-type]
                   unknown=tuple(d["unknown"]), destination=d["destination"],
                   expected=tuple(d["expected"]))


@dataclass
class _Pending:
    id: str
    message: str


def version_table_exists(conn: "Connection", table: str, schema: Optional[str]) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(conn).has_table(table, schema=schema))


def read_current(conn: "Connection", table: str = "alembic_version",
                 schema: Optional[str] = None) -> Optional[Tuple[str, ...]]:
    """Revisions in the version table, or None when there is no version table."""
    from sqlalchemy import column, select
    from sqlalchemy import table as table_

    if not version_table_exists(conn, table, schema):
        return None
    t = table_(table, column("version_num"), schema=schema)
    rows = conn.execute(select(t.c.version_num)).fetchall()
    return tuple(sorted(str(r[0]) for r in rows))


def make_plan(graph: Graph, current: Optional[Tuple[str, ...]], target_spec: Optional[str],
              allow_ahead: bool = False) -> Plan:
    """What ``alembic upgrade <target>`` would apply to this database, never a downgrade.

    The pending revisions (set and order) are those of Alembic's own upgrade
    call; a database past the target (it holds a revision built on a target
    revision) is refused rather than silently left alone.
    """
    current_revs = current or ()
    unknown = tuple(r for r in current_revs if r not in graph)
    if unknown and not allow_ahead:
        raise UnknownRevision(
            f"the database is at revision {', '.join(unknown)}, which these migration "
            f"scripts do not contain (their heads: {', '.join(graph.heads)})",
            "the database is ahead of this code (a rollback to an older image?) or was "
            "migrated from another branch; deploy the matching image — migrategate never "
            "downgrades",
        )
    known = tuple(r for r in current_revs if r in graph)
    target = graph.resolve(target_spec, known)
    destination = graph.destination(target_spec, target)
    done = graph.ancestors(known)
    wanted = graph.ancestors(target)
    beyond = sorted(r for r in known if r not in wanted
                    and graph.ancestors([r]) & set(target))
    if beyond and not allow_ahead:
        raise ConfigError(
            f"the database is at {', '.join(beyond)}, past the target "
            f"{', '.join(target)}",
            "migrategate never downgrades; use 'alembic downgrade' deliberately if you must",
        )
    expected = graph.tips(done | wanted)
    if unknown:
        # Ahead of these scripts (allow_ahead): we can't tell what the database has,
        # so nothing is pending from our side — never re-queue revisions.
        return Plan(tuple(current_revs), target, [], unknown=unknown, destination=destination,
                    expected=tuple(current_revs))
    pending = _pending(graph, wanted - done, destination, known)
    return Plan(tuple(current_revs), target, pending, unknown=unknown,
                destination=destination, expected=expected)


def _pending(graph: Graph, needed: Set[str], destination: str,
             known: Tuple[str, ...]) -> List[Revision]:
    if not needed:
        return []
    order = graph.upgrade_order(destination, known)
    if set(order) != needed:
        raise ConfigError(
            f"migrategate and Alembic disagree on what an upgrade to {destination} applies "
            f"(Alembic: {', '.join(order) or 'nothing'}; migrategate: "
            f"{', '.join(sorted(needed))})",
            "nothing was applied; please report this with the revision files' headers",
        )
    return [graph.revisions[r] for r in order]
