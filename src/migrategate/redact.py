"""Secrets never reach any output: every spelling of them, and nothing else, is masked.

A password shows up in far more spellings than the one typed: URL-quoted (both
ways), the way SQLAlchemy renders it in a URL, with ``%`` doubled (pyformat SQL
in driver errors, configparser), JSON-escaped, ``repr``-escaped (``--debug``
parameters), and cut short by PostgreSQL's ``LINE 1: …`` error context. Each is
registered once and masked wherever it appears.

Redaction works on values, not on rendered documents: :func:`redact_value`
walks a report's dict and masks its string values before ``json.dumps`` — keys
and structure are never touched, so a password like ``null`` or ``e`` cannot
break the JSON. A secret shorter than four characters is masked only as a whole
token (masking every "e" would destroy the output without hiding anything), and a
whitespace-only one not at all.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, List, Optional, Pattern, Set
from urllib.parse import quote, quote_plus

MASK = "***"
#: Shorter secrets are masked only where they stand alone as a token.
SHORT = 4
#: A cut-off spelling (``'p@ss:...``) this long or longer is masked too.
MIN_FRAGMENT = 3

_lock = threading.Lock()
_spellings: List[str] = []
_patterns: List[Pattern[str]] = []


def spellings(value: str) -> Set[str]:
    """Every way ``value`` can be printed by a driver, SQLAlchemy, JSON or repr."""
    forms = {value, quote(value, safe=""), quote_plus(value), _sqlalchemy_rendered(value)}
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
              repr(value)[1:-1], repr(value.encode("utf-8"))[2:-1]}
    forms |= {f.replace("%", "%%") for f in forms}
    forms |= {json.dumps(f)[1:-1] for f in list(forms)}  # a spelling inside a JSON string
    return {f for f in forms if f}


def _sqlalchemy_rendered(value: str) -> str:
    try:
        from sqlalchemy.engine import URL
    except ImportError:  # pragma: no cover - a core dependency
        return value
    rendered = URL.create("x", "u", value, "h").render_as_string(hide_password=False)
    return rendered[len("x://u:"):-len("@h")]


def register_secret(value: Optional[str]) -> None:
    """Remember a secret so that no output ever shows any spelling of it."""
    if not value or not value.strip():
        return  # whitespace only: masking every space would destroy the output, hide nothing
    with _lock:
        for form in spellings(value):
            if form not in _spellings:
                _spellings.append(form)
        _spellings.sort(key=len, reverse=True)  # a secret containing another: masked whole
        _patterns[:] = [_pattern(s) for s in _spellings]


def _pattern(spelling: str) -> Pattern[str]:
    whole = re.escape(spelling)
    if len(spelling) < SHORT:
        return re.compile(rf"(?<![\w]){whole}(?![\w])")
    # PostgreSQL's error context cuts long lines with "...": a prefix before it or a
    # suffix after it is the secret too
    prefixes = [re.escape(spelling[:k]) for k in range(len(spelling) - 1, MIN_FRAGMENT - 1, -1)]
    suffixes = [re.escape(spelling[-k:]) for k in range(len(spelling) - 1, MIN_FRAGMENT - 1, -1)]
    parts = [whole]
    if prefixes:
        parts.append(rf"(?:{'|'.join(prefixes)})(?=\.\.\.)")
        parts.append(rf"(?<=\.\.\.)(?:{'|'.join(suffixes)})")
    return re.compile("|".join(parts))


def redact(text: str) -> str:
    for pattern in _patterns:
        text = pattern.sub(MASK, text)
    return text


def redact_value(value: Any) -> Any:
    """A copy of ``value`` with every string value redacted; dict keys are left alone."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


def clear() -> None:
    """Forget every secret (tests that run several configurations in one process)."""
    with _lock:
        _spellings.clear()
        _patterns.clear()
