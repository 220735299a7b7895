"""migrategate's own line writer, and the redactor every output passes through.

Not the ``logging`` module on purpose: Alembic env.py files call
``logging.config.fileConfig()``, which disables every logger that existed
before it, and progress/outcome lines must survive that. Every line, on any
stream, goes through :func:`migrategate.redact.redact` so a secret can't leak
even when a driver puts it into an exception message.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO

from .redact import MASK, redact, register_secret

__all__ = ["MASK", "Writer", "default_writer", "redact", "register_secret", "timestamp"]

_lock = threading.Lock()


def timestamp(when: Optional[float] = None) -> str:
    t = time.gmtime(time.time() if when is None else when)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", t)


class Writer:
    """Timestamped, redacted progress lines to stderr; results to stdout.

    ``quiet`` drops progress lines (``--json`` keeps them, on stderr, since
    stdout then carries exactly one JSON document). ``json_lines`` (``--log-format
    json``) writes each stderr line as one JSON object (time, level, message) for log
    pipelines; the message is redacted before it is encoded.
    """

    def __init__(self, err: Optional[TextIO] = None, out: Optional[TextIO] = None,
                 quiet: bool = False, json_lines: bool = False) -> None:
        self._err = err
        self._out = out
        self.quiet = quiet
        self.json_lines = json_lines

    @property
    def err(self) -> TextIO:
        return self._err or sys.stderr

    @property
    def out(self) -> TextIO:
        return self._out or sys.stdout

    def info(self, message: str) -> None:
        if not self.quiet:
            self._log("info", message)

    def warn(self, message: str) -> None:
        self._log("warning", message)

    def error(self, message: str) -> None:
        self._log("error", message)

    def _log(self, level: str, message: str) -> None:
        if self.json_lines:
            import json

            line = json.dumps({"time": timestamp(), "level": level, "message": redact(message)},
                              ensure_ascii=False)
            self._write(self.err, line, raw=True)
        else:
            prefix = "" if level == "info" else f"{level}: "
            self._write(self.err, f"{timestamp()} {prefix}{message}")

    def result(self, text: str, raw: bool = False) -> None:
        """``raw``: already redacted value by value (a JSON document must stay valid)."""
        self._write(self.out, text, raw)

    def _write(self, stream: TextIO, text: str, raw: bool = False) -> None:
        line = text if raw else redact(text)
        with _lock:
            stream.write(line + "\n")
            stream.flush()


#: The writer used where none is passed (library calls, ``SignalGuard.cancel_all``); the
#: CLI makes its own Writer per run and passes it to the command, this one stays as it is.
default_writer = Writer()
