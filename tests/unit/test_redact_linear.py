"""Redaction costs work linear in the secret's and the text's length (measured, not timed).

A 1-2 KB password (an RDS IAM token, a JWT) once made ``upgrade`` take 13-51 s: every
prefix and suffix of every spelling went into one regex alternation (quadratic source),
recompiled on every registration. Here the work is counted: the source length of every
regex compiled, and the Python lines the redactor executes.
"""

from __future__ import annotations

import random
import re
import string
import sys

import pytest

from migrategate import redact

#: Every compiled pattern's source, summed, may be at most this many times the secret.
PATTERN_FACTOR = 8


@pytest.fixture(autouse=True)
def _fresh():
    redact.clear()
    yield
    redact.clear()


@pytest.fixture
def compiled(monkeypatch):
    """Sources of the regexes compiled meanwhile; a quadratic one fails at once (compiling
    it would take minutes)."""
    sources = []
    real = re.compile

    def compile_(pattern, flags=0):
        sources.append(pattern)
        assert len(pattern) < 50_000, f"a {len(pattern)}-character regex was compiled"
        return real(pattern, flags)

    monkeypatch.setattr(re, "compile", compile_)
    return sources


def _password(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_.~+/=") for _ in range(n))


def _text(secret: str, size: int, seed: int) -> str:
    """``size`` characters of log with the secret whole, and cut off by PostgreSQL's
    error context on both sides of a ``...``."""
    rng = random.Random(seed)
    filler = "".join(rng.choice(string.ascii_lowercase + " \n") for _ in range(size))
    cut = len(secret) // 3
    middle = (f" password={secret} ; LINE 1: SELECT '{secret[:cut]}... AS pad ..."
              f"{secret[-cut:]}' AS b FROM nowhere ")
    half = (size - len(middle)) // 2
    return filler[:half] + middle + filler[half:size - len(middle)]


def _lines_executed(fn) -> int:
    """How many lines of redact.py ``fn`` executes (a deterministic count of work)."""
    count = 0
    own = redact.__file__

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == own else None

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_no_regex_grows_with_the_square_of_the_secret(compiled):
    secret = _password(2000, seed=1)
    text = _text(secret, 50_000, seed=2)

    redact.register_secret(secret)
    out = redact.redact(text)

    assert sum(len(s) for s in compiled) <= PATTERN_FACTOR * len(secret)
    assert secret[:20] not in out and secret[-20:] not in out  # whole and both fragments
    assert out.count(redact.MASK) == 3


def test_registering_and_redacting_work_scales_linearly(compiled):
    def work(n: int) -> int:
        redact.clear()
        secret = _password(n, seed=n)
        text = _text(secret, 25 * n, seed=n + 1)

        def run() -> None:
            redact.register_secret(secret)
            assert secret[:20] not in redact.redact(text)

        return _lines_executed(run)

    small, large = work(2000), work(4000)

    assert large <= 2.3 * small, (small, large)  # quadratic work would be 4x


def test_a_later_registration_does_not_redo_the_earlier_ones(compiled):
    def registering_short() -> int:
        return _lines_executed(lambda: redact.register_secret(_password(10, seed=4)))

    alone = registering_short()
    redact.clear()
    redact.register_secret(_password(2000, seed=3))

    assert registering_short() <= alone + 20  # no work per character of the long secret


def test_a_fragment_at_the_edge_of_the_text_and_overlapping_dots_are_masked():
    redact.register_secret("abcdefgh")
    assert redact.redact("abcde...") == "***..."
    assert redact.redact("...fgh") == "...***"
    assert redact.redact("xabc....defgh") == "x***....***"
    assert redact.redact("ab...gh") == "ab...gh"  # shorter than MIN_FRAGMENT: left
    assert redact.redact("zzzabcdefgzz...") == "zzzabcdefgzz..."  # not right before '...'
