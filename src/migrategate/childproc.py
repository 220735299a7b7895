"""One bounded child process for app code that only reads: loading a history, rendering SQL.

Revision files and the models they import are app code, and nothing of the app runs
in the process whose exit status Kubernetes reads. These children get the null device
as stdin, write their output to a file the parent forwards (redacted) and their result
as a JSON file; the parent waits only for the process to exit (never for a pipe a
grandchild could hold), at most ``seconds``, then kills its whole process group.
The migration itself has its own, richer supervisor (``supervise.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import ConfigError, MigrategateError
from .log import Writer

#: environment variables that may carry a password: a child that only reads app code
#: gets none of them (they are not needed to load or render a history)
SECRET_ENV = ("MIGRATEGATE_DATABASE_URL", "DATABASE_URL", "MIGRATEGATE_DATABASE_PASSWORD",
              "MIGRATEGATE_DATABASE_PASSWORD_FILE", "DB_PASSWORD", "MIGRATEGATE_REHEARSE_ON")


def run(module: str, job: Mapping[str, Any], seconds: float, writer: Writer,
        private: Optional[Mapping[str, Any]] = None
        ) -> Tuple[Optional[int], Optional[Dict[str, Any]]]:
    """Run ``python -m module RESULT JOB [PRIVATE]``; (exit status or None on timeout,
    result or None).

    ``job`` goes on the command line: it must hold no secret (``ps`` shows it). What must
    stay secret (a URL with its password) goes in ``private``: a file only we can read,
    whose path is the third argument (:func:`read_private` reads and removes it).
    """
    with tempfile.TemporaryDirectory(prefix="migrategate-child-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        output_path = os.path.join(tmp, "output")
        extra = []
        if private is not None:
            path = os.path.join(tmp, "private.json")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(private, fh)
            extra = [path]
        with open(output_path, "wb") as output:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, result_path, json.dumps(job), *extra],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, env=child_env())
            try:
                code: Optional[int] = proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                _end_group(proc)
        _forward(output_path, writer)
        try:
            with open(result_path, encoding="utf-8") as fh:
                return code, json.load(fh)
        except (OSError, ValueError):
            return code, None


def read_private(path: str) -> Dict[str, Any]:
    """The child's secrets, read before any app code runs, and the file removed."""
    with open(path, encoding="utf-8") as fh:
        data: Dict[str, Any] = json.load(fh)
    os.unlink(path)
    return data


def reported(code: Optional[int], result: Optional[Dict[str, Any]], what: str, why: str,
             hint: str) -> Dict[str, Any]:
    """The child's result, or its error raised as the typed error it reported; a child that
    left no result ("{what} was killed by SIGKILL before it finished ({why})") is a
    ConfigError."""
    if result is None:
        raise ConfigError(f"{what} {how_it_ended(code)} before it finished ({why})", hint)
    error = result.get("error")
    if error:
        err = MigrategateError(error["message"], error.get("hint"))
        err.exit_code, err.outcome = int(error["exit_code"]), error["outcome"]
        raise err
    return result


def error_result(exc: BaseException, message: str, hint: str) -> Dict[str, Any]:
    """The child's report of an error: a MigrategateError as it is; anything else app code
    raised (SystemExit included) as a configuration error, ``message`` with ``{what}``."""
    if isinstance(exc, MigrategateError):
        return {"error": {"exit_code": exc.exit_code, "outcome": exc.outcome,
                          "message": exc.message, "hint": exc.hint}}
    what = (f"called sys.exit({exc.code})" if isinstance(exc, SystemExit)
            else f"raised {type(exc).__name__}: {exc}")
    return {"error": {"exit_code": 2, "outcome": "config-error",
                      "message": message.format(what=what), "hint": hint}}


def how_it_ended(code: Optional[int]) -> str:
    if code is None:
        return "did not finish in time"
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def write_result(result_path: str, result: Mapping[str, Any]) -> None:
    """The child's last act: the result file, then ``os._exit`` (a thread app code
    started must not keep the child alive)."""
    with open(result_path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(result_path + ".tmp", result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def child_env() -> Dict[str, str]:
    import migrategate

    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(migrategate.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", ""))
                                        if p)
    return env


def _end_group(proc: "subprocess.Popen[bytes]") -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing of it is left


def _forward(path: str, writer: Writer) -> None:
    with open(path, "rb") as fh:
        text = fh.read(1 << 20).decode("utf-8", errors="replace")
    for line in text.splitlines():
        writer.info(f"| {line}")
