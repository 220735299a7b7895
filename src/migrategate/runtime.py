"""The process environment migrations run in: the app's source root on sys.path,
and (for Flask-Migrate directories) a minimal Flask app context.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Dict, Iterator

from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config


@contextlib.contextmanager
def app_paths(settings: Settings) -> Iterator[None]:
    """``--app-root`` on sys.path while migrations load, so ``import models`` works."""
    root = settings.app_root
    if not root or root in sys.path:
        yield
        return
    sys.path.insert(0, root)
    try:
        yield
    finally:
        if root in sys.path:
            sys.path.remove(root)


def version_table_options(settings: Settings) -> Dict[str, str]:
    """What env.py's ``context.configure`` is given so Alembic uses our version table (the
    migration, offline rendering, and both rehearsal runs: one place)."""
    out: Dict[str, str] = {}
    if settings.version_table != "alembic_version":
        out["version_table"] = settings.version_table
    if settings.version_table_schema:
        out["version_table_schema"] = settings.version_table_schema
    return out


@contextlib.contextmanager
def migration_environment(settings: Settings, config: "Config") -> Iterator[None]:
    """Where env.py runs: app root on the path, and a Flask app context if env.py wants one."""
    from .flaskapp import flask_context

    with app_paths(settings), flask_context(settings, config):
        yield
