"""PostgreSQL findings from squawk, a maintained migration linter (optional extra).

``pip install squawk-cli`` (the ``squawk`` extra: ``pip install '.[squawk]'`` from a
checkout) brings its binary; without it ``plan`` says that squawk's findings are missing
and goes on with its own rules (sqlrisk.py), which cover the lock and the work, not
squawk's rule set. We give squawk the same statements ``plan`` shows, one per block, and
map its line numbers back.
Schema-style rules an operator can't act on at deploy time are left out by default
(``STYLE_RULES``); squawk's lock/statement-timeout rules are answered by migrategate's
options, so ``plan`` says whether they are covered instead of repeating them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from .sqlrisk import RISKY, WARNING, Finding

#: squawk rules about column types and naming style: right for new schema, not something
#: to act on while deploying (FIELD-NOTES: 721 of 859 findings on Dify's chain)
STYLE_RULES = ("prefer-text-field", "prefer-timestamp-tz", "prefer-bigint-over-int",
               "prefer-bigint-over-smallint", "prefer-identity", "prefer-robust-stmts",
               "ban-char-field", "transaction-nesting")
#: answered by --pg-lock-timeout/--lock-retries and --statement-timeout (see plan)
TIMEOUT_RULES = ("require-lock-timeout", "require-statement-timeout")
#: squawk rules whose subject is blocking a live table (the rest are warnings)
_RISKY_RULES = ("adding-field-with-default", "adding-not-nullable-field",
                "adding-required-field", "changing-column-type", "constraint-missing-not-valid",
                "disallowed-unique-constraint", "require-concurrent-index-creation",
                "adding-foreign-key-constraint", "adding-serial-primary-key-field",
                "ban-alter-domain-with-add-constraint")

#: risky whatever the table's size: they are about the app's writes, not the table's rows
_ABOUT_CALLERS = ("adding-required-field",)

SECONDS = 60.0


def binary() -> Optional[str]:
    """squawk beside this interpreter (a venv's bin/), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "squawk")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("squawk")


def lint(statements: Sequence[str], pg_version: str = "", squawk: Optional[str] = None,
         in_transaction: bool = True) -> Optional[Dict[int, List[Finding]]]:
    """Findings by statement index; None when squawk is not installed.

    Raises ``RuntimeError`` (with squawk's own words) when squawk runs but fails.
    """
    squawk = squawk or binary()
    if squawk is None:
        return None
    text, starts = _document(statements)
    args = [squawk, "--reporter", "json",
            "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction"]
    if pg_version:
        args += ["--pg-version", pg_version]
    for rule in STYLE_RULES + TIMEOUT_RULES:
        args += ["--exclude", rule]
    proc = subprocess.run(args, input=text, capture_output=True, text=True, timeout=SECONDS,
                          stdin=None)
    try:
        found = json.loads(proc.stdout or "[]")
    except ValueError:
        raise RuntimeError(f"squawk exited {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[:300]}") from None
    out: Dict[int, List[Finding]] = {}
    for item in found:
        index = _statement_at(starts, int(item.get("line", 0)))
        rule = str(item.get("rule_name", "squawk"))
        message = str(item.get("message", "")).strip()
        if item.get("help"):
            message += f" ({item['help']})"
        risky = rule in _RISKY_RULES
        out.setdefault(index, []).append(Finding(
            rule, RISKY if risky else WARNING, message, source="squawk",
            scales=risky and rule not in _ABOUT_CALLERS))
    return out


def _document(statements: Sequence[str]):  # type: ignore[no-untyped-def]
    parts, starts, line = [], [], 0
    for sql in statements:
        starts.append(line)
        block = sql.strip().rstrip(";") + ";"
        parts.append(block)
        line += block.count("\n") + 2  # the statement, then an empty line
    return "\n\n".join(parts) + "\n", starts


def _statement_at(starts: List[int], line: int) -> int:
    index = 0
    for k, start in enumerate(starts):
        if start <= line:
            index = k
    return index
