"""A history only Alembic can read is read in a child process: revision files are app code.

Most histories are read statically (revfile.py). When one file computes its ids,
assigns them inside ``if``/``try``, or the directory is sourceless, the history
goes through Alembic's loader, which imports every revision module and the
models they import. That is app code, and nothing of the app runs in the process
whose exit status Kubernetes reads: a module-level ``sys.exit(0)`` there would
turn ``upgrade`` or ``wait`` into an exit 0 over an empty database.

So the loader runs in ``python -m migrategate.graphchild RESULT``: its stdin is
the null device, its output goes to a file the parent forwards (redacted), its
result is a JSON file, and the parent waits only for the process to exit (a
thread or a background program app code leaves behind can't hold the parent),
at most :data:`LOAD_SECONDS`. No password is given to it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

from . import childproc
from .errors import ConfigError
from .graph import Graph, Revision
from .log import Writer, default_writer
from .settings import Settings

#: How long loading the revision files (and the models they import) may take.
LOAD_SECONDS = 300.0


def load_in_child(settings: Settings, writer: Writer = default_writer) -> Graph:
    job = {"migrations": settings.migrations, "config": settings.config,
           "app_root": settings.app_root}
    code, result = childproc.run("migrategate.graphchild", job, LOAD_SECONDS, writer)
    if code is None:
        raise ConfigError(
            f"loading the revision files took longer than {LOAD_SECONDS:.0f} s (they "
            "import app code; something at import time waits)",
            "run 'alembic history' in the image to see what hangs; nothing was applied")
    return _graph(childproc.reported(
        code, result, "the process loading the revision files",
        "a revision file or a module it imports ends the process at import: "
        "sys.exit/os._exit?",
        "fix the revision file; nothing was applied"))


def _graph(result: Dict[str, Any]) -> Graph:
    revisions = [Revision(r["id"], tuple(r["down"]), tuple(r["depends_on"]),
                          tuple(r["branch_labels"]), r["message"], r["path"])
                 for r in result["revisions"]]
    return Graph(revisions, source="alembic", heads=result["heads"])


# ------------------------------------------------------------------ the child


def _load(job: Dict[str, Any]) -> Dict[str, Any]:
    from .location import make_config, script_directory
    from .runtime import app_paths
    from .scripts import graph_from_script

    settings = Settings(migrations=job["migrations"], config=job["config"],
                        app_root=job["app_root"])
    with app_paths(settings):
        graph = graph_from_script(script_directory(make_config(settings, with_url=False)))
    revisions: List[Dict[str, Any]] = [
        {"id": r.id, "down": list(r.down), "depends_on": list(r.depends_on),
         "branch_labels": list(r.branch_labels), "message": r.message, "path": r.path}
        for r in graph.revisions.values()]
    return {"revisions": revisions, "heads": list(graph.heads)}


def main() -> None:
    result_path, job = sys.argv[1], json.loads(sys.argv[2])
    try:
        result = _load(job)
    except BaseException as exc:  # noqa: BLE001 - app code at import: reported, exit 2
        result = childproc.error_result(
            exc, "a revision file (or a module it imports) {what} while the revision files "
                 "were loading", "fix the revision file (--debug shows its output); "
                                 "nothing was applied")
    childproc.write_result(result_path, result)


if __name__ == "__main__":
    main()
