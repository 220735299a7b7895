"""The migration process, started before it is known to be needed (``upgrade``).

Kept apart from :mod:`migrategate.supervise` on purpose: the CLI imports this module before
it has resolved the settings, and nothing here imports SQLAlchemy (that import alone is a
third of a second the child should spend in parallel, not after).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from .settings import Settings


class Spare:
    """The migration process, started before anyone knows it is needed.

    Interpreter start-up and importing SQLAlchemy, Alembic and the driver are most of what
    the child costs (bench/measure.py). Started as ``upgrade`` begins (by the CLI before it
    even resolves the settings: :func:`early_spare`), the child does that while this process
    resolves, connects, plans and takes the lock. It then reads a first line naming the
    driver (imported at once), and waits for its job; with nothing to apply it is discarded
    (end of its stdin, then SIGKILL). It runs no app code before the job, which is sent only
    under the lock; nothing it is given before that is a secret (the password travels in
    the job).
    """

    def __init__(self) -> None:
        self.read_fd, write_fd = os.pipe()
        self.hinted = False
        try:
            self.proc: Optional["subprocess.Popen[bytes]"] = subprocess.Popen(
                [sys.executable, "-m", "migrategate.worker", str(write_fd), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(write_fd,), start_new_session=True, env=_child_env())
        except BaseException:
            os.close(self.read_fd)
            raise
        finally:
            os.close(write_fd)

    def hint(self, settings: "Settings") -> None:
        """The first line of its stdin: the URL's driver name (``postgresql+psycopg2``), so
        it imports the DBAPI module while we connect."""
        if self.hinted or self.proc is None or self.proc.stdin is None:
            return
        self.hinted = True
        driver = settings.url.drivername if settings.url is not None else ""
        try:
            self.proc.stdin.write(driver.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died at start: the run sees its exit status

    def take(self) -> "Tuple[subprocess.Popen[bytes], int]":
        """The process and its events fd, for the supervisor (once)."""
        assert self.proc is not None, "a spare is taken once"
        proc, self.proc = self.proc, None
        return proc, self.read_fd

    def discard(self) -> None:
        """Not needed (or the run ended before it was): it goes, with what it holds."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        os.close(self.read_fd)

    def __enter__(self) -> "Spare":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()


#: the spare the CLI started for this process's upgrade, until upgrade takes it
_early: Optional[Spare] = None


@contextlib.contextmanager
def early_spare() -> Iterator[None]:
    """Start the migration process now (the CLI, for ``upgrade``, before anything else);
    whatever upgrade did not take is discarded at the end."""
    global _early
    _early = Spare()
    try:
        yield
    finally:
        spare, _early = _early, None
        if spare is not None:
            spare.discard()


def spare_for(settings: "Settings") -> Spare:
    """The CLI's early spare if there is one, else a new one; told the driver."""
    global _early
    spare, _early = _early, None
    spare = spare or Spare()
    spare.hint(settings)
    return spare


def _child_env() -> Dict[str, str]:
    """The migration process's environment: ours, with this package first on its path."""
    import migrategate

    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(migrategate.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", ""))
                                        if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


