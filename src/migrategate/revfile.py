"""Reading a revision file's identifiers without executing it.

Apps like Dify ``import models`` in every revision file, which costs seconds.
The identifiers (``revision``, ``down_revision``, ``depends_on``,
``branch_labels``) are plain literals at module level in practice; we read them
with ``ast``. A file that binds one of them any other way — inside ``if``/``try``,
computed, imported, unpacked — is reported as unreadable (None), and the caller
falls back to Alembic's loader for the whole history.
"""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import ConfigError
from .graph import Revision

FIELDS = ("revision", "down_revision", "depends_on", "branch_labels")
_SOURCE_FILE = re.compile(r"^(?!\.#|__init__)(.*\.py)$")  # Alembic's own rule
_FIRST_DEF = re.compile(rb"^(?:async\s+def|def|class)\s", re.MULTILINE)
_FIELD_WORD = re.compile(rb"\b(?:revision|down_revision|depends_on|branch_labels)\b")


def list_sources(directory: str, recursive: bool) -> List[str]:
    """Revision files in the order Alembic loads them (sorted names, os.walk's dir order)."""
    out: List[str] = []
    for root, _dirs, files in os.walk(directory):
        if os.path.basename(root).endswith("__pycache__"):
            continue
        out.extend(os.path.join(root, f) for f in sorted(files) if _SOURCE_FILE.match(f))
        if not recursive:
            break
    return out


def read_revision(path: str) -> Optional[Revision]:
    """The revision's literals, or None when the file computes or conditions them.

    Only the module head (everything before the first top-level def/class) is
    parsed when nothing after it mentions an identifier: that is where Alembic's
    template puts them, and parsing a few lines instead of the whole file is
    what makes this cheaper than importing.
    """
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read revision file {path}: {exc.strerror}") from None
    cut = _FIRST_DEF.search(source)
    if cut is not None and not _FIELD_WORD.search(source, cut.start()):
        try:
            rev = _from_tree(ast.parse(source[:cut.start()], filename=path), path)
        except SyntaxError:
            rev = None
        if rev is not None:
            return rev
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise ConfigError(
            f"revision file {path} has a syntax error at line {exc.lineno}: {exc.msg}",
            "fix the file; nothing was applied",
        ) from None
    return _from_tree(tree, path)


def _from_tree(tree: ast.Module, path: str) -> Optional[Revision]:
    found: Dict[str, object] = {}
    for node in tree.body:
        simple = _simple_assignment(node)
        if simple is not None:
            names, value = simple
            if not set(names) & set(FIELDS):
                continue
            try:
                literal = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return None  # computed: let Alembic decide
            for name in names:
                found[name] = literal
        elif _binds_field(node):
            return None  # conditional, imported, unpacked ...: let Alembic decide
    revision = found.get("revision")
    if not isinstance(revision, str):
        return None  # legacy (id from the file name) or computed
    try:
        down = _tuple(found.get("down_revision"))
        depends = _tuple(found.get("depends_on"))
        labels = _tuple(found.get("branch_labels"))
    except TypeError:
        return None
    doc = ast.get_docstring(tree, clean=False) or ""
    return Revision(revision, down, depends, labels,
                    re.split("\n\n", doc.strip())[0] if doc else "", path)


def _simple_assignment(node: ast.stmt) -> Optional[Tuple[Sequence[str], ast.expr]]:
    """``a = b = value`` / ``a: T = value`` at module level with plain names, else None."""
    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
        return [t.id for t in node.targets if isinstance(t, ast.Name)], node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
            and node.value is not None:
        return [node.target.id], node.value
    return None


def _binds_field(node: ast.AST) -> bool:
    """Does this module-level statement bind an identifier in any other way?"""
    stack: List[ast.AST] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if n.name in FIELDS:
                return True
            continue  # their bodies bind local names
        if isinstance(n, ast.Lambda):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)) \
                and n.id in FIELDS:
            return True
        if isinstance(n, (ast.Import, ast.ImportFrom)) and any(
                (a.asname or a.name.split(".")[0]) in FIELDS for a in n.names):
            return True
        if isinstance(n, ast.ExceptHandler) and n.name in FIELDS:
            return True
        stack.extend(ast.iter_child_nodes(n))
    return False


def _tuple(value: object) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(value)
