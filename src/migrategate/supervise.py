"""The parent side of a migration: hold the lock, run the child, watch both, decide.

The process whose exit status Kubernetes reads never runs app code. It holds
the lock session (kept alive and checked every second), starts
``migrategate.worker`` with the plan, reads its events, forwards its output to
stderr (redacted; Alembic's own INFO lines only with ``--debug``), forwards
SIGTERM/SIGINT to it, and — whatever the child did or claimed — the caller
verifies the database afterwards.

If the lock is lost while the child migrates, the child's session is ended on
the server (its transaction rolls back) and the child is killed: nothing more
is applied, and the run ends with :class:`LockLost`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from .lock import MigrationLock
from .log import Writer
from .plan import Plan
from .report import Applied
from .settings import Settings, settings_to_dict
from .signals import SignalGuard

#: How often the lock session is asked whether it still holds the lock.
HEARTBEAT_SECONDS = 1.0
#: How long a signalled child gets to roll back before its session is ended for it.
GRACE_SECONDS = 20.0


class Run:
    """What the child reported, as facts for :mod:`migrategate.failures`."""

    def __init__(self, plan: Plan) -> None:
        self.total = len(plan.pending)
        self.messages = {r.id: r.message for r in plan.pending}
        self.applied: List[Applied] = []
        self.current: Optional[str] = None
        self.ran: Set[str] = set()  # ran to its end; a failure now is a failure at COMMIT
        self.started = 0.0
        self.session: Optional[Dict[str, Any]] = None
        self.partial: Dict[str, List[str]] = {}
        self.error: Optional[Dict[str, Any]] = None
        self.finished = False
        self.returncode: Optional[int] = None
        self.lost: Optional[str] = None
        self.signalled: Optional[int] = None
        self.blocker: Optional[str] = None  # the last session a lock retry waited for
        #: why a lock timeout was not (or no more) retried:
        #: ("committed" | "not-ddl" | "ended" | "spent", statement)
        self.not_retried: Optional[Tuple[str, str]] = None


class Supervisor:
    def __init__(self, settings: Settings, plan: Plan, lock: MigrationLock, writer: Writer,
                 guard: SignalGuard, applied: List[Applied], debug: bool = False,
                 server_version: int = 0) -> None:
        self.settings = settings
        self.plan = plan
        self.lock = lock
        self.writer = writer
        self.guard = guard
        self.debug = debug
        self.server_version = server_version
        self.run = Run(plan)
        self.run.applied = applied
        self.proc: Optional[subprocess.Popen] = None
        self._stop = threading.Event()
        self._killed = threading.Event()

    # ------------------------------------------------------------------ start

    def execute(self) -> Run:
        read_fd, write_fd = os.pipe()
        job = {"settings": settings_to_dict(self.settings), "plan": self.plan.to_dict(),
               "fence": self.lock.fence(), "server_version": self.server_version}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "migrategate.worker", str(write_fd), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                pass_fds=(write_fd,), start_new_session=True, env=self._child_env())
        finally:
            os.close(write_fd)
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(job) + "\n").encode())
        self.proc.stdin.flush()
        threads = [threading.Thread(target=self._pump_output, daemon=True,
                                    name="migrategate-child-output"),
                   threading.Thread(target=self._heartbeat, daemon=True,
                                    name="migrategate-heartbeat")]
        for t in threads:
            t.start()
        self.guard.raising = False
        self.guard.add_canceller(self._forward_signal)
        try:
            with os.fdopen(read_fd, encoding="utf-8", errors="replace") as events:
                for line in events:
                    self._event(line)
            self._reap()
        finally:
            self.guard.remove_canceller(self._forward_signal)
            self.guard.raising = True
            self._stop.set()
            for t in threads:
                t.join(timeout=5)
            self.proc.stdin.close()
        if self.run.signalled is None and self.guard.received is not None:
            self.run.signalled = self.guard.received
        return self.run

    def _child_env(self) -> Dict[str, str]:
        import migrategate

        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(migrategate.__file__)))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        if self.settings.dialect == "postgresql":
            from .connect import session_options

            env["PGAPPNAME"] = self.settings.application_name
            options = session_options(self.settings, self.server_version)
            if options:  # for env.py files that build their own URL (libpq reads this)
                env["PGOPTIONS"] = " ".join(filter(None, (env.get("PGOPTIONS"), options)))
        return env

    def _reap(self) -> None:
        assert self.proc is not None
        try:
            self.run.returncode = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # it said everything it had to say (or closed the pipe) but won't exit:
            # a non-daemon thread of app code, say
            self.proc.kill()
            self.run.returncode = self.proc.wait()

    # ------------------------------------------------------------------ events

    def _event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return  # not ours: nothing app code writes can change the outcome anyway
        run = self.run
        kind = event.get("event")
        if kind == "ready":
            run.session = event.get("session")
        elif kind == "started":
            run.current = event["revision"]
            run.started = time.monotonic()
            run.not_retried = None  # a fact about one revision only
        elif kind == "ran":
            run.ran.add(event["revision"])
        elif kind == "committed":
            for item in event["revisions"]:
                self._committed(Applied(item["revision"], item.get("message", ""),
                                        float(item.get("seconds", 0.0))))
            run.current = None
        elif kind == "autocommit":
            rev = event.get("revision") or "?"
            run.partial.setdefault(rev, []).append(event.get("statement", ""))
            self.writer.info(f"{rev}: committed outside its transaction: "
                             f"{event.get('statement', '')}")
        elif kind == "retry":
            run.blocker = event.get("blocker") or run.blocker
            self.writer.info(f"[{len(run.applied) + 1}/{run.total}] {event.get('revision')} "
                             f"waiting for {run.blocker} (attempt {event.get('attempt')}/"
                             f"{event.get('attempts')})")
        elif kind == "not_retried":
            run.not_retried = (event.get("why", ""), event.get("statement", ""))
        elif kind == "failed":
            run.error = event.get("error")
        elif kind == "finished":
            run.finished = True

    def _committed(self, applied: Applied) -> None:
        run = self.run
        if any(a.revision == applied.revision for a in run.applied):
            return
        run.applied.append(applied)
        message = applied.message or run.messages.get(applied.revision, "")
        msg = f"  {message}" if message else ""
        self.writer.info(f"[{len(run.applied)}/{run.total}] {applied.revision}{msg}  "
                         f"({applied.seconds:.1f}s)")

    def _pump_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not self.debug and _alembic_chatter(line):
                continue
            self.writer.info(f"| {line}")

    # ------------------------------------------------------------------ watching

    def _heartbeat(self) -> None:
        """Keep the lock session busy, notice a lost lock, and say a slow revision still runs."""
        last_beat = time.monotonic()
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                held = self.lock.still_held()
                reason = None if held else "the server no longer lists the lock as ours"
            except Exception as exc:  # noqa: BLE001 - any failure of the lock session loses it
                from .dberrors import describe

                reason = f"the lock session failed: {describe(exc)}"
            if reason is not None:
                self.run.lost = reason
                self.writer.error(f"migration lock lost: {reason}; stopping the migration")
                self._hard_stop()
                return
            run = self.run
            interval = self.settings.heartbeat
            now = time.monotonic()
            if (interval and run.current is not None and now - run.started >= interval
                    and now - last_beat >= interval):
                last_beat = now
                k = len(run.applied) + 1
                self.writer.info(f"[{k}/{run.total}] {run.current} still running "
                                 f"({now - run.started:.0f}s)")

    def _forward_signal(self) -> None:
        """Called from the signal watcher thread: pass the signal on, then enforce a grace."""
        proc = self.proc
        signum = self.guard.received or signal.SIGTERM
        self.run.signalled = signum
        if proc is None or proc.poll() is not None:
            return
        if self._killed.is_set():
            return
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            return

        def enforce() -> None:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self.writer.warn(f"the migration process did not stop within "
                                     f"{GRACE_SECONDS:.0f}s; ending its database session")
                    self._hard_stop()

        threading.Thread(target=enforce, daemon=True, name="migrategate-grace").start()

    def _hard_stop(self) -> None:
        """End the child's database session on the server (rolls it back), then the child."""
        self._killed.set()
        session = self.run.session
        if session:
            try:
                self._end_session(session)
            except Exception as exc:  # noqa: BLE001 - reported; the kill below still happens
                from .dberrors import describe

                self.writer.warn(f"could not end the migration session on the server: "
                                 f"{describe(exc)}")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def _end_session(self, session: Dict[str, Any]) -> None:
        from sqlalchemy import text

        from .connect import make_engine

        engine = make_engine(self.settings)
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                if "pid" in session:
                    conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": session["pid"]})
                elif "connection_id" in session:
                    conn.exec_driver_sql(f"KILL {int(session['connection_id'])}")
        finally:
            engine.dispose()


def _alembic_chatter(line: str) -> bool:
    """Alembic's INFO lines duplicate our progress lines (one per revision is enough)."""
    return line.startswith("INFO  [alembic.")

