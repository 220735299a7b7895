"""Loading the revision graph: read statically where possible, else through Alembic's loader.

Alembic's loader executes every revision module (app code), so it only ever runs
in a child process (graphchild.py), never in the process that decides the exit code.

``verify``, ``status``, ``wait`` and a no-op ``upgrade`` only need revision ids
and edges. For the usual layout these are read from the files with ``ast``
(revfile.py) without importing Alembic, the revision files or the app. Any
file that is not plain literals at module level, and any layout only Alembic
can resolve, goes through Alembic's public loader (``walk_revisions()``), so
the answer is always the history Alembic would build.

Where the migrations are is location.py; the graph and its meaning is graph.py.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from .errors import ConfigError
from .graph import Graph, Revision
from .location import Location, locate, make_config, script_directory, version_dirs
from .revfile import list_sources, read_revision
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = ["Graph", "Location", "Revision", "graph_from_script", "load_graph", "locate",
           "make_config"]


def load_graph(settings: Settings, config: Optional["Config"] = None,
               static: bool = True) -> Graph:
    """The revision graph; static parse first, Alembic's loader (in a child) when needed.

    For the usual layout the static path does not even import Alembic (a
    tenth of a second or more saved on every ``wait``/``verify``/no-op ``upgrade``).
    """
    if static and config is None:
        loc = locate(settings)
        if loc.versions is not None:
            revisions = _read_all(loc.versions, recursive=False)
            if revisions is not None:
                return Graph(revisions, source="static")
    script = script_directory(config or make_config(settings, with_url=False))
    if static and not script.sourceless:
        # recursive_version_locations arrived in Alembic 1.10
        recursive = bool(getattr(script, "recursive_version_locations", False))
        revisions = _read_all(version_dirs(script), recursive)
        if revisions is not None:
            return Graph(revisions, source="static")
    from .graphchild import load_in_child

    return load_in_child(settings)  # Alembic's loader imports app code: never here


def _read_all(directories: List[str], recursive: bool) -> Optional[List[Revision]]:
    """Every revision file's literals in Alembic's load order, or None if one needs Alembic."""
    revisions: List[Revision] = []
    seen = set()
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for path in list_sources(directory, recursive):
            real = os.path.realpath(path)
            if real in seen:  # Alembic skips a file reached twice (with a warning)
                continue
            seen.add(real)
            rev = read_revision(path)
            if rev is None:
                return None
            revisions.append(rev)
    return revisions


def graph_from_script(script: "ScriptDirectory") -> Graph:
    """Alembic's loader (executes every revision module): the authoritative fallback.

    Runs app code: call it only in a child process (graphchild.py)."""
    from alembic.util import CommandError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scripts = list(script.walk_revisions())
            heads = list(script.get_heads())
    except CommandError as exc:
        raise ConfigError(f"the revision scripts are inconsistent: {exc}",
                          "fix down_revision/depends_on; nothing was applied") from None
    except KeyError as exc:  # Alembic's map has no entry for a named down_revision/depends_on
        missing = [str(w.message) for w in caught if "is not present" in str(w.message)]
        raise ConfigError(
            f"a revision names {exc} as down_revision or depends_on, which does not exist"
            + (f" ({missing[0]})" if missing else ""),
            "restore the missing revision file or fix down_revision/depends_on",
        ) from None
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
    rmap = script.revision_map
    revisions = [
        Revision(
            sc.revision, _ids(sc.down_revision),
            # dependencies resolved to ids (labels included) by Alembic's own lookup
            tuple(_resolved(rmap, d) for d in _ids(sc.dependencies)),
            # the labels as written in this file (Alembic's own set also holds inherited ones)
            _ids(getattr(sc.module, "branch_labels", None)), sc.doc or "", str(sc.path),
        )
        for sc in reversed(scripts)
    ]
    return Graph(revisions, source="alembic", revision_map=rmap, heads=heads)


def _resolved(rmap: Any, name: str) -> str:
    """A dependency as a revision id: Alembic's own lookup (ids and branch labels)."""
    return str(rmap.get_revision(name).revision)


def _ids(value: Any) -> Tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)
