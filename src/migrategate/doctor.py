"""doctor: explain why the schema is not there (implemented with the Dify preset)."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def doctor(settings: Any, writer: Any = None) -> Any:
    raise ConfigError("doctor is not implemented yet")
