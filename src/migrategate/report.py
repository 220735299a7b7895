"""Results and how they are shown: human lines, one JSON document, the termination message."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .checks import CheckResult
from .errors import EXIT_CODES
from .log import Writer
from .redact import redact, redact_value

TERMINATION_LOG = "/dev/termination-log"


@dataclass
class Applied:
    """A revision whose transaction committed (reported only after COMMIT returned)."""

    revision: str
    message: str
    seconds: float

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class Result:
    """What a command did; errors carry one too (``exc.result``) so --json can report them."""

    command: str
    database: str = ""
    outcome: str = "verified"
    exit_code: int = 0
    message: str = ""
    from_revisions: List[str] = field(default_factory=list)
    to_revisions: List[str] = field(default_factory=list)
    heads: List[str] = field(default_factory=list)
    applied: List[Applied] = field(default_factory=list)
    pending: List[Dict[str, str]] = field(default_factory=list)
    checks: List[CheckResult] = field(default_factory=list)
    lock: Optional[Dict[str, Any]] = None
    failed_revision: Optional[str] = None
    seconds: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)
    #: how a command with a richer human form than checks prints it (``plan``)
    human: Optional[Callable[[Writer], None]] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "command": self.command,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "meaning": meaning(self.command, self.exit_code),
            "message": self.message,
            "database": self.database,
            "from_revisions": self.from_revisions,
            "to_revisions": self.to_revisions,
            "heads": self.heads,
            "applied": [a.to_dict() for a in self.applied],
            "pending": self.pending,
            "checks": [c.to_dict() for c in self.checks],
            "failed_revision": self.failed_revision,
            "lock": self.lock,
            "seconds": round(self.seconds, 3),
        }
        d.update(self.extra)
        return d


def meaning(command: str, exit_code: int) -> str:
    """The documented meaning of the exit code; a status report is not a verification."""
    if exit_code == 0 and command in ("status", "history"):
        return (f"{command} read (says nothing about whether the database is at its "
                "target)")
    if exit_code == 2 and command == "usage":
        return "usage error (the command line could not be parsed)"
    return EXIT_CODES.get(exit_code, "")


def render_json(result: Result, writer: Writer) -> None:
    """One JSON document; secrets are masked in the values before it is serialised."""
    document = json.dumps(redact_value(result.to_dict()), indent=2, sort_keys=False,
                          default=str)
    writer.result(document, raw=True)


def render_checks(result: Result, writer: Writer) -> None:
    for c in result.checks:
        writer.result(f"{'✓' if c.ok else '✗'} {c.name}: {c.detail}")


def render_human(result: Result, writer: Writer) -> None:
    if result.human is not None:
        result.human(writer)
        return
    if result.command == "status":
        render_status(result, writer)
        return
    render_checks(result, writer)
    if result.exit_code == 0:
        writer.result(f"{result.outcome}: {result.message}")


def render_status(result: Result, writer: Writer) -> None:
    writer.result(f"database: {result.database}")
    writer.result(f"current:  {', '.join(result.from_revisions) or '(none)'}")
    writer.result(f"heads:    {', '.join(result.heads)}")
    if result.pending:
        writer.result(f"pending:  {len(result.pending)}")
        for p in result.pending:
            writer.result(f"  {p['revision']}  {p['message']}")
    else:
        writer.result("pending:  none")
    unknown = result.extra.get("unknown_revisions")
    if unknown:
        writer.result(f"unknown:  {', '.join(unknown)} (database is ahead of these scripts)")
    found = result.extra.get("integrity")
    if found is not None and not found["table_exists"]:
        writer.result("history:  no history table yet")
    elif found is not None:
        drift = found["checksum_drift"]
        foreign = found["not_in_history"]
        writer.result("history:  " + ("; ".join(
            ([f"file changed since applied: {', '.join(d['revision'] for d in drift)}"]
             if drift else [])
            + ([f"not applied by migrategate: {', '.join(foreign)}"] if foreign else []))
            or "every applied revision recorded, files unchanged"))
    lock = result.lock or {}
    if lock.get("held"):
        writer.result(f"lock:     {lock.get('name')} held by {lock.get('holder')}")
    else:
        writer.result(f"lock:     {lock.get('name', '?')} free")


def termination_line(result: Result) -> str:
    return f"migrategate {result.command}: exit {result.exit_code} ({result.outcome}): " \
           f"{result.message}"


def write_termination_message(result: Result, path: Optional[str]) -> None:
    """Kubernetes shows this file in ``kubectl describe pod`` (Last State: Terminated)."""
    if path is None:
        if not (os.path.exists(TERMINATION_LOG) and os.access(TERMINATION_LOG, os.W_OK)):
            return
        path = TERMINATION_LOG
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(redact(termination_line(result))[:4000] + "\n")
    except OSError:
        # the outcome is already on stderr/stdout; a read-only path must not change the exit code
        return
