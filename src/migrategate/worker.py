"""The supervised migration process: ``python -m migrategate.worker EVENTS_FD``.

env.py, the revisions and the app's models are arbitrary code. They run here,
in a child of the process whose exit status Kubernetes reads, so nothing they
do can decide that status: ``os._exit(0)``, ``sys.exit(0)``, a segfault, a
non-daemon thread, ``print()`` or a replaced signal handler only end or
disturb this process. The parent holds the lock, reads our events, and
verifies the database itself afterwards.

Input: one JSON line on stdin (settings with the password, the plan, the
fence). Output: JSON lines on the events fd. stdout and stderr go to the
parent, which forwards them (redacted) to its stderr. When the parent dies,
so do we (PR_SET_PDEATHSIG, and EOF on stdin as a second signal).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Dict, Optional


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):  # not Linux: the stdin watchdog still covers it
        pass
    if os.getppid() != parent:
        os._exit(70)

    def watchdog() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(70)  # the parent is gone: never migrate without its lock

    threading.Thread(target=watchdog, name="migrategate-parent-watch", daemon=True).start()


def main() -> None:
    events_fd = int(sys.argv[1])
    parent = int(sys.argv[2])
    stream = os.fdopen(events_fd, "w", buffering=1, encoding="utf-8")
    lock = threading.Lock()

    def sink(event: Dict[str, Any]) -> None:
        with lock:
            stream.write(json.dumps(event) + "\n")
            stream.flush()

    job = json.loads(sys.stdin.buffer.readline())
    _die_with_parent(parent)
    code = run(job, sink)
    stream.flush()
    # os._exit: a non-daemon thread started by a revision must not keep us alive
    os._exit(code)


def run(job: Dict[str, Any], sink: Any) -> int:
    from .apply import failure_record, run_upgrade
    from .fence import Fence
    from .plan import Plan
    from .runtime import migration_environment
    from .scripts import make_config
    from .settings import register_secrets, settings_from_dict
    from .signals import SignalGuard

    from .connect import with_session_options

    settings = with_session_options(settings_from_dict(job["settings"]),
                                    int(job.get("server_version") or 0))
    register_secrets(settings)
    plan = Plan.from_dict(job["plan"])
    fence = Fence(job["fence"])
    guard = SignalGuard()
    current: Optional[str] = None

    def tracking(event: Dict[str, Any]) -> None:
        nonlocal current
        if event["event"] == "started":
            current = event["revision"]
        elif event["event"] == "committed":
            current = None
        sink(event)

    with guard:
        try:
            config = make_config(settings)
            with migration_environment(settings, config):
                run_upgrade(config, plan, settings, tracking, guard, fence)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
            sink({"event": "failed", "error": failure_record(exc, current, guard.received)})
            return 1
    sink({"event": "finished"})
    return 0


if __name__ == "__main__":
    main()
