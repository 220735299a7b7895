"""Verification: the only thing that makes an exit code 0.

"No exception" is not success: Dify's incident exited 0 with no tables. We
check what an operator would check by hand: the version table exists, it
holds exactly the target revisions, and the key tables are there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from .plan import Plan, make_plan, read_current
from .graph import Graph

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def run_checks(conn: "Connection", graph: Graph, target_spec: Optional[str] = None,
               expect_tables: Sequence[str] = (), version_table: str = "alembic_version",
               version_table_schema: Optional[str] = None,
               allow_ahead: bool = False) -> Tuple[List[CheckResult], Optional[Plan]]:
    """All checks, each reported; the plan is returned for callers that log pending work."""
    from sqlalchemy import inspect

    results: List[CheckResult] = []
    current = read_current(conn, version_table, version_table_schema)
    qualified = f"{version_table_schema}.{version_table}" if version_table_schema else version_table
    if current is None:
        results.append(CheckResult("version-table", False,
                                   f"table {qualified} does not exist: no migration has run"))
    elif not current:
        results.append(CheckResult("version-table", False,
                                   f"table {qualified} exists but is empty (no revision stamped)"))
    else:
        results.append(CheckResult("version-table", True,
                                   f"{qualified} holds {', '.join(current)}"))

    plan = make_plan(graph, current, target_spec, allow_ahead=allow_ahead)
    if plan.unknown:
        results.append(CheckResult(
            "at-target", True,
            f"database is at {', '.join(plan.unknown)}, newer than these scripts' heads "
            f"({', '.join(graph.heads)}); accepted because of --allow-ahead"))
    elif plan.pending:
        names = ", ".join(r.id for r in plan.pending[:5])
        more = f" and {len(plan.pending) - 5} more" if len(plan.pending) > 5 else ""
        results.append(CheckResult(
            "at-target", False,
            f"{len(plan.pending)} revision(s) pending before {', '.join(plan.target)}: "
            f"{names}{more}"))
    elif set(plan.current) != set(plan.expected):
        results.append(CheckResult(
            "at-target", False,
            f"database is at {', '.join(plan.current) or 'nothing'}, "
            f"expected {', '.join(plan.expected)} for target {', '.join(plan.target)}"))
    else:
        results.append(CheckResult("at-target", True, f"at {', '.join(plan.target)}"))

    if expect_tables:
        insp = inspect(conn)
        cache: Dict[Optional[str], set] = {}
        for table in expect_tables:
            schema, _, name = table.rpartition(".")
            key = schema or None
            if key not in cache:
                cache[key] = set(insp.get_table_names(schema=key))
            ok = name in cache[key]
            results.append(CheckResult(
                f"table:{table}", ok, "exists" if ok else f"table {table} is missing"))
    return results, plan


def failed(results: Sequence[CheckResult]) -> List[CheckResult]:
    return [r for r in results if not r.ok]
