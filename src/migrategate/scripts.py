"""The revision graph, read from the version files without executing them where possible.

Apps like Dify ``import models`` in every revision file, which costs seconds.
``verify``, ``status``, ``wait`` and a no-op ``upgrade`` only need revision ids
and edges, which are plain literals at module top level in practice; we read
those with ``ast``. Anything we can't read literally falls back to Alembic's
own loader, so the answer is always the same graph Alembic would build.
"""

from __future__ import annotations

import ast
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .errors import AmbiguousTarget, ConfigError
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config
    from alembic.script import ScriptDirectory

_SOURCE_FILE = re.compile(r"^(?!\.#|__init__)(.*\.py)$")  # Alembic's own rule
_FIELDS = ("revision", "down_revision", "depends_on", "branch_labels")


@dataclass(frozen=True)
class Revision:
    id: str
    down: Tuple[str, ...]
    depends_on: Tuple[str, ...] = ()
    branch_labels: Tuple[str, ...] = ()
    message: str = ""
    path: str = ""

    @property
    def parents(self) -> Tuple[str, ...]:
        return self.down + self.depends_on


@dataclass
class Graph:
    revisions: Dict[str, Revision]
    source: str = "static"  # "static" (ast) or "alembic" (modules executed)
    heads: Tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        has_child: Set[str] = set()
        for rev in self.revisions.values():
            has_child.update(rev.down)
        self.heads = tuple(sorted(r for r in self.revisions if r not in has_child))

    def __contains__(self, rev: str) -> bool:
        return rev in self.revisions

    def ancestors(self, revs: Iterable[str]) -> Set[str]:
        """``revs`` and everything they stand on (down revisions and dependencies)."""
        seen: Set[str] = set()
        stack = [r for r in revs if r in self.revisions]
        while stack:
            rev = stack.pop()
            if rev in seen:
                continue
            seen.add(rev)
            stack.extend(p for p in self.revisions[rev].parents if p not in seen)
        return seen

    def ordered(self, revs: Set[str]) -> List[Revision]:
        """Parents before children (Kahn), ties broken by id for a stable order."""
        import heapq

        remaining = set(revs)
        indegree: Dict[str, int] = {}
        children: Dict[str, List[str]] = {}
        for rev in remaining:
            parents = {p for p in self.revisions[rev].parents if p in remaining}
            indegree[rev] = len(parents)
            for p in parents:
                children.setdefault(p, []).append(rev)
        ready = [r for r, n in indegree.items() if n == 0]
        heapq.heapify(ready)
        out: List[Revision] = []
        while ready:
            rev = heapq.heappop(ready)
            out.append(self.revisions[rev])
            for child in children.get(rev, ()):
                indegree[child] -= 1
                if indegree[child] == 0:
                    heapq.heappush(ready, child)
        if len(out) != len(remaining):
            stuck = sorted(r for r, n in indegree.items() if n > 0)
            raise ConfigError(f"the revision graph has a cycle through {', '.join(stuck[:5])}",
                              "fix down_revision so the history is a DAG")
        return out

    def resolve(self, spec: Optional[str]) -> Tuple[str, ...]:
        """A target spec (None, 'head', 'heads', an id, a unique prefix, a branch label)."""
        if spec in (None, "", "head"):
            if len(self.heads) > 1:
                raise AmbiguousTarget(
                    f"the scripts have {len(self.heads)} heads ({', '.join(self.heads)}) "
                    "and no target was given",
                    "merge them ('alembic merge heads'), or pass --to heads or --to REV",
                )
            return self.heads
        if spec == "heads":
            return self.heads
        if spec in self.revisions:
            return (spec,)
        assert spec is not None
        label_hits = [r.id for r in self.revisions.values() if spec in r.branch_labels]
        if label_hits:
            # a branch label means that branch's head
            tips = [h for h in self.heads if self.ancestors([h]) & set(label_hits)]
            if len(tips) == 1:
                return (tips[0],)
        prefixed = [r for r in self.revisions if r.startswith(spec)]
        if len(prefixed) == 1:
            return (prefixed[0],)
        if len(prefixed) > 1:
            raise AmbiguousTarget(
                f"target {spec!r} matches several revisions: {', '.join(sorted(prefixed))}",
                "give more characters of the revision id",
            )
        raise ConfigError(f"target revision {spec!r} does not exist in the scripts",
                          "check --to against 'migrategate status'")


# ---------------------------------------------------------------- alembic config

@dataclass
class Location:
    """Where the migrations are, found without importing Alembic."""

    directory: str  # the script location (a directory, or an Alembic "package:path")
    ini: Optional[str]  # the config file Alembic should read, if any
    versions: Optional[List[str]]  # version dirs to read statically; None: ask Alembic


def locate(settings: Settings) -> Location:
    if settings.config:
        if not os.path.isfile(settings.config):
            raise ConfigError(f"alembic config {settings.config} does not exist",
                              "pass --config PATH/alembic.ini or --migrations DIR")
        ini: Optional[str] = settings.config
        options = _ini_options(settings.config)
        location = (options or {}).get("script_location")
        if options is not None and not location:
            raise ConfigError(f"{settings.config} has no script_location",
                              "add 'script_location = migrations' under [alembic]")
        directory = location or ""
        if location and ":" not in location and not os.path.isabs(location) \
                and not os.path.isdir(location):
            # Alembic resolves relative locations against the cwd; accept ini-relative too.
            beside = os.path.join(os.path.dirname(os.path.abspath(settings.config)), location)
            if os.path.isdir(beside):
                directory = beside
    else:
        directory = settings.migrations or _default_migrations_dir()
        # Flask-Migrate keeps alembic.ini inside the migrations directory.
        candidate = os.path.join(directory, "alembic.ini")
        ini = candidate if os.path.isfile(candidate) else None
        options = _ini_options(ini) if ini else {}
    package_resource = ":" in directory and not os.path.isdir(directory)
    if directory and not package_resource:
        if not os.path.isdir(directory):
            raise ConfigError(f"migrations directory {directory} does not exist",
                              "pass --migrations DIR (the folder with env.py and versions/)")
        if not os.path.isfile(os.path.join(directory, "env.py")):
            raise ConfigError(f"{directory} has no env.py, so it is not an Alembic "
                              "migrations directory",
                              "point --migrations at the folder that holds env.py")
    versions: Optional[List[str]] = None
    if options is not None and directory and not package_resource \
            and not any(options.get(k) for k in ("version_locations", "sourceless",
                                                  "recursive_version_locations")):
        versions = [os.path.join(directory, "versions")]
    return Location(directory, ini, versions)


def _ini_options(path: str) -> Optional[Dict[str, str]]:
    """The [alembic] section as Alembic would read it, or None if it can't be read simply."""
    import configparser

    parser = configparser.ConfigParser(
        defaults={"here": os.path.dirname(os.path.abspath(path))})
    try:
        parser.read(path, encoding="utf-8")
        if not parser.has_section("alembic"):
            return {}
        return {k: v for k, v in parser.items("alembic") if k != "here"}
    except (configparser.Error, UnicodeDecodeError):
        return None


def make_config(settings: Settings, with_url: bool = True,
                location: Optional[Location] = None) -> "Config":
    """An Alembic Config for the migrations directory or ini file, with our URL set."""
    from alembic.config import Config

    loc = location or locate(settings)
    config = Config(loc.ini) if loc.ini else Config()
    if loc.directory:
        config.set_main_option("script_location", loc.directory)
    if with_url and settings.url is not None:
        # configparser interpolates '%': a password with '%' must be doubled.
        url = settings.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["migrategate"] = True
    return config


def _default_migrations_dir() -> str:
    for candidate in ("migrations", "alembic"):
        if os.path.isfile(os.path.join(candidate, "env.py")):
            return candidate
    raise ConfigError("no migrations given and none found in the current directory",
                      "pass --migrations DIR or --config alembic.ini")


# ---------------------------------------------------------------- loading

def load_graph(settings: Settings, config: Optional["Config"] = None,
               static: bool = True) -> Graph:
    """The revision graph; static parse first, Alembic's loader when the files need it.

    The static path does not even import Alembic (a tenth of a second saved on
    every ``wait``/``verify``/no-op ``upgrade``).
    """
    graph: Optional[Graph] = None
    if static and config is None:
        loc = locate(settings)
        if loc.versions is not None:
            graph = _static_graph(loc.versions)
    if graph is None:
        script = _script_directory(config or make_config(settings, with_url=False))
        if static and config is not None and not getattr(script, "sourceless", False):
            graph = _static_graph(_version_dirs(script),
                                  bool(getattr(script, "recursive_version_locations", False)))
        if graph is None:
            graph = graph_from_script(script)
    _validate(graph)
    return graph


def _script_directory(config: "Config") -> "ScriptDirectory":
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise ConfigError(f"cannot open the migrations: {exc}") from None


def _version_dirs(script: "ScriptDirectory") -> List[str]:
    locations = getattr(script, "_version_locations", None)
    if locations is None:  # pragma: no cover - very old Alembic
        locations = [os.path.join(script.dir, "versions")]
    return [str(p) for p in locations if os.path.isdir(str(p))]


def _static_graph(directories: List[str], recursive: bool = False) -> Optional[Graph]:
    revisions: Dict[str, Revision] = {}
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for path in _list_sources(directory, recursive):
            rev = _parse_revision_file(path)
            if rev is None:
                return None
            _add(revisions, rev)
    return Graph(revisions, source="static")


def _list_sources(directory: str, recursive: bool) -> List[str]:
    out: List[str] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__") if recursive else []
        out.extend(os.path.join(root, f) for f in sorted(files) if _SOURCE_FILE.match(f))
    return out


_FIRST_DEF = re.compile(rb"^(?:async\s+def|def|class)\s", re.MULTILINE)
_FIELD_LINE = re.compile(rb"^(?:revision|down_revision|depends_on|branch_labels)\s*[:=]",
                         re.MULTILINE)


def _parse_revision_file(path: str) -> Optional[Revision]:
    """The revision's literals, or None when the file computes them (fallback).

    Only the module head (everything before the first top-level def/class) is
    parsed: that is where Alembic's template puts the identifiers, and parsing
    a few lines instead of the whole file is what makes this cheaper than
    importing. If an identifier is assigned after the first def, the whole
    file is parsed instead.
    """
    try:
        with open(path, "rb") as fh:
            source = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read revision file {path}: {exc.strerror}") from None
    cut = _FIRST_DEF.search(source)
    head = source
    if cut is not None and not _FIELD_LINE.search(source, cut.start()):
        head = source[:cut.start()]
    try:
        tree = ast.parse(head, filename=path)
    except SyntaxError as exc:
        if head is not source:
            return _parse_source(source, path)
        raise _syntax_error(path, exc) from None
    rev = _revision_from_tree(tree, path)
    if rev is None and head is not source:
        return _parse_source(source, path)
    return rev


def _parse_source(source: bytes, path: str) -> Optional[Revision]:
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise _syntax_error(path, exc) from None
    return _revision_from_tree(tree, path)


def _syntax_error(path: str, exc: SyntaxError) -> ConfigError:
    return ConfigError(
        f"revision file {path} has a syntax error at line {exc.lineno}: {exc.msg}",
        "fix the file; nothing was applied",
    )


def _revision_from_tree(tree: ast.Module, path: str) -> Optional[Revision]:
    found: Dict[str, object] = {}
    for node in tree.body:
        targets: Sequence[ast.expr] = ()
        value: Optional[ast.expr] = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = (node.target,), node.value
        for target in targets:
            if isinstance(target, ast.Name) and target.id in _FIELDS:
                try:
                    found[target.id] = ast.literal_eval(value)  # type: ignore[arg-type]
                except ValueError:
                    return None
    if "revision" not in found or not isinstance(found["revision"], str):
        return None  # legacy or computed: let Alembic decide
    try:
        down = _tuple(found.get("down_revision"))
        depends = _tuple(found.get("depends_on"))
        labels = _tuple(found.get("branch_labels"))
    except TypeError:
        return None
    doc = ast.get_docstring(tree, clean=False) or ""
    return Revision(str(found["revision"]), down, depends, labels,
                    re.split("\n\n", doc.strip())[0] if doc else "", path)


def _tuple(value: object) -> Tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(value)


def graph_from_script(script: "ScriptDirectory") -> Graph:
    """Alembic's loader (executes every revision module): the authoritative fallback."""
    from alembic.util import CommandError

    revisions: Dict[str, Revision] = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scripts = list(script.revision_map._revision_map.values())  # noqa: SLF001
    except CommandError as exc:
        raise ConfigError(f"the revision scripts are inconsistent: {exc}") from None
    except SyntaxError as exc:
        raise ConfigError(f"revision file {exc.filename} has a syntax error at line "
                          f"{exc.lineno}: {exc.msg}") from None
    except ImportError as exc:
        raise ConfigError(
            f"a revision file failed to import: {exc}",
            "put the app's source root on the path (--app-root DIR) or install what it needs",
        ) from None
    for w in caught:
        if "present more than once" in str(w.message):
            raise ConfigError(f"duplicate revision id: {w.message}",
                              "give each revision file a unique 'revision'")
    sc: Any
    for sc in scripts:
        if sc is None:
            continue
        _add(revisions, Revision(
            sc.revision, _tuple(sc.down_revision), _tuple(sc.dependencies),
            tuple(sc.branch_labels or ()), sc.doc, str(sc.path),
        ))
    return Graph(revisions, source="alembic")


def _add(revisions: Dict[str, Revision], rev: Revision) -> None:
    other = revisions.get(rev.id)
    if other is not None:
        raise ConfigError(
            f"duplicate revision id {rev.id!r} in {other.path} and {rev.path}",
            "give each revision file a unique 'revision'; nothing was applied",
        )
    revisions[rev.id] = rev


def _validate(graph: Graph) -> None:
    if not graph.revisions:
        raise ConfigError("the migrations directory has no revisions",
                          "check --migrations points at the right folder (versions/ is empty)")
    for rev in graph.revisions.values():
        for parent in rev.parents:
            if parent not in graph.revisions:
                raise ConfigError(
                    f"revision {rev.id} ({rev.path}) names down_revision/depends_on "
                    f"{parent!r}, which does not exist",
                    "restore the missing revision file or fix down_revision",
                )
    graph.ordered(set(graph.revisions))  # raises on a cycle
