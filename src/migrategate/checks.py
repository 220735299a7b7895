"""Verification: the only thing that makes an exit code 0.

"No exception" is not success: Dify's incident exited 0 with no tables. We
check what an operator would check by hand: the version table exists, it
holds exactly the target revisions, and the key tables are there.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError
from .pending import Plan, make_plan, read_current
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
    current = read_current(conn, version_table, version_table_schema)
    plan = make_plan(graph, current, target_spec, allow_ahead=allow_ahead)
    results = [version_table_check(current, version_table, version_table_schema),
               target_check(plan, graph)]
    results += table_checks(conn, expect_tables)
    return results, plan


def version_table_check(current: Optional[Tuple[str, ...]], version_table: str,
                        schema: Optional[str] = None) -> CheckResult:
    qualified = f"{schema}.{version_table}" if schema else version_table
    if current is None:
        return CheckResult("version-table", False,
                           f"table {qualified} does not exist: no migration has run")
    if not current:
        return CheckResult("version-table", False,
                           f"table {qualified} exists but is empty (no revision stamped)")
    return CheckResult("version-table", True, f"{qualified} holds {', '.join(current)}")


def target_check(plan: Plan, graph: Graph) -> CheckResult:
    if plan.unknown:
        return CheckResult(
            "at-target", True,
            f"database is at {', '.join(plan.unknown)}, newer than these scripts' heads "
            f"({', '.join(graph.heads)}); accepted because of --allow-ahead")
    if plan.pending:
        names = ", ".join(r.id for r in plan.pending[:5])
        more = f" and {len(plan.pending) - 5} more" if len(plan.pending) > 5 else ""
        return CheckResult(
            "at-target", False,
            f"{len(plan.pending)} revision(s) pending before {', '.join(plan.target)}: "
            f"{names}{more}")
    if set(plan.current) != set(plan.expected):
        return CheckResult("at-target", False,
                           f"database is at {', '.join(plan.current) or 'nothing'}, expected "
                           f"{', '.join(plan.expected)} for target {', '.join(plan.target)}")
    return CheckResult("at-target", True, f"at {', '.join(plan.target)}")


_PART = re.compile(r'"((?:[^"]|"")*)"|([^."]+)')


def split_table_name(spec: str) -> Tuple[Optional[str], str]:
    """``table``, ``schema.table``, or either part in double quotes (SQL's own quoting,
    ``""`` for a quote): ``"my.schema"."a.b"`` names table ``a.b`` in schema ``my.schema``."""
    parts: List[str] = []
    pos = 0
    while True:
        m = _PART.match(spec, pos)
        if m is None:
            break
        parts.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2))
        pos = m.end()
        if pos == len(spec) or spec[pos] != ".":
            break
        pos += 1
    if pos != len(spec) or not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigError(f"--expect-table {spec!r} is not a table name",
                          'write TABLE or SCHEMA.TABLE; quote a part that holds a dot: '
                          '"my.schema"."a.b"')
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def table_checks(conn: "Connection", expect_tables: Sequence[str]) -> List[CheckResult]:
    """One check per expected table; ``schema.table`` looks in that schema (quote a part
    that holds a dot, as in SQL: ``"my.schema"."a.b"``)."""
    from sqlalchemy import inspect

    if not expect_tables:
        return []
    insp = inspect(conn)
    cache: Dict[Optional[str], set] = {}
    results = []
    for table in expect_tables:
        key, name = split_table_name(table)
        if key not in cache:
            cache[key] = set(insp.get_table_names(schema=key))
        ok = name in cache[key]
        results.append(CheckResult(
            f"table:{table}", ok, "exists" if ok else f"table {table} is missing"))
    return results


def failed(results: Sequence[CheckResult]) -> List[CheckResult]:
    return [r for r in results if not r.ok]
