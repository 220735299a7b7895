"""Presets: how a known application lays out its database settings and migrations.

A preset supplies *defaults* (flags and ``MIGRATEGATE_*`` env still win), each
labelled with where it came from so ``doctor`` can show it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import ConfigError

KNOWN = ("dify",)


def load_preset(name: str) -> Any:
    """The preset module; it exposes ``defaults(env, given) -> {setting: (value, source)}``,
    where ``given`` holds what flags and ``MIGRATEGATE_*`` env already set (a preset adapts
    to it: e.g. no database URL of its own when one was given, migrations under
    ``--app-root``)."""
    if name not in KNOWN:
        raise ConfigError(f"unknown preset {name!r}", f"known presets: {', '.join(KNOWN)}")
    return importlib.import_module(f"{__name__}.{name}")
