"""The supervised migration process: ``python -m migrategate.worker EVENTS_FD PARENT_PID``.

env.py, the revisions and the app's models are arbitrary code. They run here,
in a child of the process whose exit status Kubernetes reads, so nothing they
do can decide that status: ``os._exit(0)``, ``sys.exit(0)``, a segfault, a
non-daemon thread, ``print()`` or a replaced signal handler only end or
disturb this process. The parent holds the lock, reads our events, and
verifies the database itself afterwards.

The parent starts us early (supervise.Spare), before it has connected: we import what
every run needs, then read a first line naming the driver (imported then), then the job.
Input: the job (settings with the password, the plan, the fence, environment for libpq)
as JSON on stdin, read to its end before any app code runs (end of stdin before it: not
needed, exit at once); stdin is then the null device,
so a revision that calls ``input()`` fails at once, as under ``alembic upgrade``.
Output: :mod:`migrategate.protocol` events on the events fd, which is made
non-inheritable again at once, so no program a revision starts holds it.
stdout and stderr go to the parent, which forwards them (redacted).

When the parent dies, so do we: PR_SET_PDEATHSIG, and a watchdog that polls
``getppid()``. It takes no lock app code could need (a thread reading stdin holds
the stdin buffer's lock, which every ``multiprocessing`` worker forked from
here needs at start: they would deadlock).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

from .protocol import Committed, Event, Failed, Finished, encode

#: How often the watchdog looks whether the parent is still there.
PARENT_POLL_SECONDS = 0.5


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):  # not Linux: the watchdog still covers it
        pass
    if os.getppid() != parent:
        os._exit(70)

    def watchdog() -> None:
        event = threading.Event()
        while not event.wait(PARENT_POLL_SECONDS):
            if os.getppid() != parent:
                os._exit(70)  # the parent is gone: never migrate without its lock

    threading.Thread(target=watchdog, name="migrategate-parent-watch", daemon=True).start()


def _stdin_to_null() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def main() -> None:
    events_fd = int(sys.argv[1])
    parent = int(sys.argv[2])
    os.set_inheritable(events_fd, False)  # pass_fds made it inheritable: undo that first
    stream = os.fdopen(events_fd, "w", encoding="utf-8")
    lock = threading.Lock()

    def sink(event: Event) -> None:
        """Each event at once, except Committed: the next revision's Started follows it
        at once and carries it (one write a revision fewer). Lost with a process killed
        between the two, it is only the progress line: what committed is read back."""
        with lock:
            stream.write(encode(event) + "\n")
            if not isinstance(event, Committed):
                stream.flush()

    _die_with_parent(parent)
    _warm()
    driver = sys.stdin.buffer.readline()
    if not driver:  # started ahead, and not needed
        os._exit(0)
    _warm_driver(driver.decode().strip())
    job = sys.stdin.buffer.read()
    _stdin_to_null()
    if not job:  # started ahead, and not needed (the database was at its target)
        os._exit(0)
    import json

    work = json.loads(job)
    os.environ.update(work.get("env") or {})  # libpq reads PGOPTIONS/PGAPPNAME at connect
    code = run(work, sink)
    stream.flush()
    # os._exit: a non-daemon thread started by a revision must not keep us alive
    os._exit(code)


def _warm() -> None:
    """What every run imports, before the job arrives: the parent starts this process
    first thing, so these imports overlap its own work (settings, connecting, planning,
    the lock) instead of following it. Only libraries and migrategate: no app code runs
    before the job (env.py, the revisions and the models come after it, under the lock)."""
    import alembic.operations  # noqa: F401 - op's implementations
    import alembic.runtime.environment  # noqa: F401
    import alembic.script  # noqa: F401

    from . import apply, fence, pending, runtime, scripts, settings, signals  # noqa: F401


def _warm_driver(drivername: str) -> None:
    """The dialect and its DBAPI module (psycopg2, pymysql, …), named by the parent."""
    if not drivername:
        return
    from sqlalchemy.engine import URL
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect: Any = URL.create(drivername).get_dialect()
        (getattr(dialect, "import_dbapi", None) or dialect.dbapi)()  # 2.x / 1.4
    except (ImportError, NoSuchModuleError, ArgumentError):
        pass  # not installed (or not a driver): the run reports it, from env.py's own try


def run(job: Any, sink: Callable[[Event], None]) -> int:
    from .apply import failure_record, run_upgrade
    from .dialect import dialect_for
    from .fence import make_fence
    from .pending import Plan
    from .runtime import migration_environment
    from .scripts import make_config
    from .settings import register_secrets, settings_from_dict
    from .signals import SignalGuard

    given = settings_from_dict(job["settings"])
    settings = dialect_for(given.dialect).migration_settings(
        given, int(job.get("server_version") or 0))
    register_secrets(settings)
    plan = Plan.from_dict(job["plan"])
    fence = make_fence(job["fence"])
    guard = SignalGuard()
    with guard:
        try:
            config = make_config(settings)
            with migration_environment(settings, config):
                run_upgrade(config, plan, settings, sink, guard, fence, job.get("journal"),
                            job.get("resume"))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
            sink(Failed(failure_record(exc, guard.received)))
            return 1
    sink(Finished())
    return 0


if __name__ == "__main__":
    main()
