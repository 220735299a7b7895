"""Secrets never reach any output: every spelling of them, and nothing else, is masked.

A password shows up in far more spellings than the one typed: URL-quoted (both
ways), the way SQLAlchemy renders it in a URL, with ``%`` doubled (pyformat SQL
in driver errors, configparser), JSON-escaped, as an SQL literal (``'`` doubled),
each of those inside a Python string literal of either quote (``repr`` of
``--debug`` parameters; a ``--debug`` traceback quoting a revision's source line whose
SQL literal holds it), cut short by PostgreSQL's ``LINE 1: …`` error context, and, if
it spans lines, a line at a time. Each is registered once and masked wherever it
appears.

Redaction works on values, not on rendered documents: :func:`redact_value`
walks a report's dict and masks its string values before ``json.dumps`` — keys
and structure are never touched, so a password like ``null`` or ``e`` cannot
break the JSON. A secret shorter than four characters is masked only as a whole
token (masking every "e" would destroy the output without hiding anything), and a
whitespace-only one not at all.

The work is linear in the lengths of the secrets and of the text: a 2 KB secret
(an RDS IAM token, a JWT) costs what its length says. Whole spellings are masked
by plain string replacement; a spelling cut short next to ``...`` is found with
the KMP prefix function (the longest end of the text before ``...`` that begins
the spelling, and the longest start of the text after it that ends the spelling),
never with a regex alternation of every prefix.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Dict, Iterator, List, Optional, Pattern, Set, Tuple
from urllib.parse import quote, quote_plus

MASK = "***"
#: Shorter secrets are masked only where they stand alone as a token.
SHORT = 4
#: A cut-off spelling (``'p@ss:...``) this long or longer is masked too.
MIN_FRAGMENT = 3

_lock = threading.Lock()
_known: Set[str] = set()
#: every spelling, longest first (a secret containing another is masked whole); replaced,
#: never changed in place, so a redact() running meanwhile reads a consistent tuple
_ordered: Tuple[str, ...] = ()
#: the whole-token regex of each short spelling (a few characters: small)
_short: Dict[str, Pattern[str]] = {}
#: KMP prefix functions of each spelling and of its reverse, made when first needed
_tables: Dict[str, Tuple[List[int], List[int]]] = {}

DOTS = "..."


def spellings(value: str) -> Set[str]:
    """Every way ``value`` can be printed by a driver, SQLAlchemy, JSON, repr or SQL."""
    forms = {value, quote(value, safe=""), quote_plus(value), _sqlalchemy_rendered(value),
             value.replace("'", "''")}
    forms |= {f.replace("%", "%%") for f in forms}
    # inside a Python string literal, either delimiter: repr, and a --debug traceback
    # quoting the source line of a revision whose SQL literal holds the secret
    forms |= {_python_literal(f, mark) for f in list(forms) for mark in "'\""}
    forms |= {repr(value.encode("utf-8"))[2:-1], json.dumps(value)[1:-1],
              json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {json.dumps(f, ensure_ascii=ascii)[1:-1]  # a spelling inside a JSON string
              for f in list(forms) for ascii in (True, False)}
    # A secret spanning lines is shown a line at a time too: PostgreSQL's "LINE 2: ..."
    # context, output read line by line. Each of its lines is a spelling of its own.
    forms |= {line for f in list(forms) for line in f.splitlines() if line != f}
    return {f for f in forms if f.strip()}


def _python_literal(value: str, mark: str) -> str:
    """The inside of a Python string literal delimited by ``mark``; ``repr`` escapes
    character by character, only its choice of delimiter depends on the whole string."""
    return "".join("\\" + c if c == mark else repr(c)[1:-1] for c in value)


def _sqlalchemy_rendered(value: str) -> str:
    try:
        from sqlalchemy.engine import URL
    except ImportError:  # pragma: no cover - a core dependency
        return value
    rendered = URL.create("x", "u", value, "h").render_as_string(hide_password=False)
    return rendered[len("x://u:"):-len("@h")]


def register_secret(value: Optional[str]) -> None:
    """Remember a secret so that no output ever shows any spelling of it.

    Costs the length of its spellings; what was registered before is not redone.
    """
    global _ordered
    if not value or not value.strip():
        return  # whitespace only: masking every space would destroy the output, hide nothing
    forms = spellings(value)
    with _lock:
        new = [f for f in forms if f not in _known]
        if not new:
            return
        _known.update(new)
        for form in new:
            if len(form) < SHORT:
                _short[form] = re.compile(rf"(?<![\w]){re.escape(form)}(?![\w])")
        _ordered = tuple(sorted(_ordered + tuple(new), key=len, reverse=True))


def redact(text: str) -> str:
    """Every spelling's occurrences are found in the text as given and masked at once: a
    mask is never searched again (a secret with a line that is just ``*`` would otherwise
    turn ``***`` into nine stars), and overlapping spellings become one mask."""
    ordered = _ordered
    spans: List[Tuple[int, int]] = []
    for spelling in ordered:
        if len(spelling) < SHORT:
            spans.extend(m.span() for m in _short[spelling].finditer(text))
            continue
        at = text.find(spelling)
        while at != -1:
            spans.append((at, at + len(spelling)))
            at = text.find(spelling, at + len(spelling))
    text = _masked(text, spans) if spans else text
    if DOTS in text and ordered:
        text = _mask_fragments(text, ordered)
    return text


def _masked(text: str, spans: List[Tuple[int, int]]) -> str:
    """``text`` with each span (merged where they overlap or touch) replaced by MASK."""
    merged: List[List[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: List[str] = []
    done = 0
    for start, end in merged:
        out += [text[done:start], MASK]
        done = end
    out.append(text[done:])
    return "".join(out)


def _mask_fragments(text: str, ordered: Tuple[str, ...]) -> str:
    """PostgreSQL's error context cuts long lines with ``...``: a prefix of a spelling
    right before it, or a suffix right after it, is the secret too."""
    backwards = text[::-1]
    n = len(text)
    spans: List[Tuple[int, int]] = []
    for spelling in ordered:
        if len(spelling) < SHORT:
            continue  # masked only as a whole token
        forward, reverse = _tables_of(spelling)
        spans.extend(_before_dots(text, spelling, forward))
        # a suffix after "..." is a prefix of the reversed spelling before the reversed dots
        spans.extend((n - end, n - start)
                     for start, end in _before_dots(backwards, spelling[::-1], reverse))
    return _masked(text, spans) if spans else text


def _before_dots(text: str, spelling: str, table: List[int]) -> Iterator[Tuple[int, int]]:
    """(start, end) of the longest proper prefix of ``spelling``, at least MIN_FRAGMENT
    long, that ends right before each ``...`` in ``text``.

    One KMP pass: the matcher's state at a position is the length of the longest end
    of the text so far that begins ``spelling``. Only the ``len(spelling)`` characters
    before each ``...`` can matter, so the rest of the text is skipped, and no
    character is read twice.
    """
    m = len(spelling)
    pos = 0  # text[:pos] has been read
    k = 0  # the state after reading text[:pos]
    j = text.find(DOTS)
    while j != -1:
        if j - pos > m:  # nothing further back than m characters can begin a fragment
            pos, k = j - m, 0
        while pos < j:
            c = text[pos]
            while k and spelling[k] != c:
                k = table[k - 1]
            if spelling[k] == c:
                k += 1
                if k == m:  # the whole spelling (left by an overlap): go on as KMP does
                    k = table[k - 1]
            pos += 1
        if k >= MIN_FRAGMENT:
            yield j - k, j
        j = text.find(DOTS, j + 1)


def _tables_of(spelling: str) -> Tuple[List[int], List[int]]:
    tables = _tables.get(spelling)
    if tables is None:
        tables = _tables[spelling] = (_prefix_function(spelling),
                                      _prefix_function(spelling[::-1]))
    return tables


def _prefix_function(s: str) -> List[int]:
    """``table[i]``: the length of the longest proper prefix of ``s[:i+1]`` that is also
    its suffix (Knuth-Morris-Pratt)."""
    table = [0] * len(s)
    k = 0
    for i in range(1, len(s)):
        while k and s[i] != s[k]:
            k = table[k - 1]
        if s[i] == s[k]:
            k += 1
        table[i] = k
    return table


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
    global _ordered
    with _lock:
        _known.clear()
        _ordered = ()
        _short.clear()
        _tables.clear()
