"""What a revision creates (read from its source) and which of it already exists.

``doctor`` uses this to spot a half-applied revision. The revision file is read
with ``ast`` and never executed: literal ``op.create_table``, ``op.add_column``,
``op.create_index`` and constraint calls, the same calls on a
``batch_alter_table`` ``batch_op``, and ``CREATE [UNIQUE] INDEX`` / ``ALTER TABLE
… ADD COLUMN`` in literal ``op.execute`` strings. Objects are named once each.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection

_CONSTRAINTS = ("create_unique_constraint", "create_foreign_key", "create_check_constraint",
                "create_primary_key")
_SQL_INDEX = re.compile(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?"
                        r"(?:IF\s+NOT\s+EXISTS\s+)?[`\"]?(\w+)[`\"]?\s+ON\s+[`\"]?(\w+)",
                        re.IGNORECASE)
_SQL_COLUMN = re.compile(r"ALTER\s+TABLE\s+[`\"]?(\w+)[`\"]?\s+ADD\s+(?:COLUMN\s+)?"
                         r"(?:IF\s+NOT\s+EXISTS\s+)?[`\"]?(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class Planned:
    kind: str  # table | column | index | constraint
    table: str
    name: str

    def __str__(self) -> str:
        return f"table {self.table}" if self.kind == "table" else \
            f"{self.kind} {self.table}.{self.name}"


def planned_objects(path: str) -> List[Planned]:
    try:
        with open(path, "rb") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError):
        return []
    upgrade = next((n for n in tree.body
                    if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None)
    if upgrade is None:
        return []
    batches = _batch_tables(upgrade)
    found: List[Planned] = []
    for node in ast.walk(upgrade):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        args = [_literal(a) for a in node.args]
        if owner in batches:  # batch_op.add_column(Column("c")) on the with's table
            named_first = node.func.attr in ("create_index",) + _CONSTRAINTS
            args = (args[:1] + [batches[owner]] + args[1:]) if named_first \
                else [batches[owner]] + args
        found.extend(_from_call(node.func.attr, args, node))
    return list(dict.fromkeys(found))


def _batch_tables(fn: ast.AST) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for node in ast.walk(fn):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                call = item.context_expr
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "batch_alter_table" and call.args
                        and isinstance(_literal(call.args[0]), str)
                        and isinstance(item.optional_vars, ast.Name)):
                    out[item.optional_vars.id] = _literal(call.args[0])
    return out


def _from_call(attr: str, args: List[Any], node: ast.Call) -> List[Planned]:
    if attr == "create_table" and args and isinstance(args[0], str):
        return [Planned("table", args[0], args[0])]
    if attr == "add_column" and len(args) >= 2 and isinstance(args[0], str):
        col = node.args[-1]
        if isinstance(col, ast.Call) and col.args and isinstance(_literal(col.args[0]), str):
            return [Planned("column", args[0], _literal(col.args[0]))]
    if attr == "create_index" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        return [Planned("index", args[1], args[0])]
    if attr in _CONSTRAINTS and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        return [Planned("constraint", args[1], args[0])]
    if attr == "execute" and args and isinstance(args[0], str):
        sql = args[0]
        return ([Planned("index", t, n) for n, t in _SQL_INDEX.findall(sql)]
                + [Planned("column", t, c) for t, c in _SQL_COLUMN.findall(sql)
                   if c.upper() not in ("CONSTRAINT", "INDEX", "KEY", "PRIMARY", "UNIQUE",
                                        "FOREIGN", "CHECK")])
    return []


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
            and node.func.attr == "text" and node.args:  # sa.text("...")
        return _literal(node.args[0])
    return node


def existing_objects(conn: "Connection", planned: List[Planned]) -> List[str]:
    """Each planned object that is already in the database, in words, once."""
    from sqlalchemy import inspect

    insp = inspect(conn)
    tables = set(insp.get_table_names())
    names: Dict[str, Set[str]] = {}

    def of(kind: str, table: str) -> Set[str]:
        key = f"{kind}:{table}"
        if key not in names:
            if kind == "column":
                names[key] = {c["name"] for c in insp.get_columns(table)}
            elif kind == "index":
                names[key] = {str(i["name"]) for i in insp.get_indexes(table) if i["name"]} | {
                    str(u["name"]) for u in insp.get_unique_constraints(table) if u.get("name")}
            else:
                names[key] = _constraint_names(insp, table)
        return names[key]

    found = []
    for obj in planned:
        if obj.kind == "table":
            hit = obj.table in tables
        else:
            hit = obj.table in tables and obj.name in of(obj.kind, obj.table)
        if hit:
            found.append(str(obj))
    return list(dict.fromkeys(found))


def _constraint_names(insp: Any, table: str) -> Set[str]:
    out: Set[str] = set()
    for getter in ("get_unique_constraints", "get_foreign_keys", "get_check_constraints"):
        try:
            out |= {c["name"] for c in getattr(insp, getter)(table) if c.get("name")}
        except NotImplementedError:
            continue
    pk: Optional[Dict[str, Any]] = insp.get_pk_constraint(table)
    if pk and pk.get("name"):
        out.add(pk["name"])
    return out


def invalid_indexes(conn: "Connection") -> List[str]:
    """PostgreSQL indexes left INVALID by a failed or interrupted CONCURRENTLY build."""
    from .dialect import of

    return of(conn).invalid_indexes(conn)
