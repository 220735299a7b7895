"""The parent side of a migration: hold the lock, run the child, watch both.

The process whose exit status Kubernetes reads never runs app code. It holds
the lock session (kept alive and checked every second), starts
``migrategate.worker`` with the plan, folds its events
(:mod:`migrategate.protocol`), forwards its output to stderr (redacted;
Alembic's own INFO lines only with ``--debug``), forwards SIGTERM/SIGINT to it,
and — whatever the child did or claimed — the caller reads back what committed
and verifies the database afterwards.

The end of a run is the child's exit, never end-of-file on a pipe: a program a
revision starts in the background (``os.system("… &")``, a forked worker)
inherits the child's stdout and may keep it open for ever. Once the child has
exited, what is already in the pipes is read, and its process group (what app
code left running) is killed.

If the lock is lost while the child migrates, the child's session is ended on
the server (its transaction rolls back) and the child is killed: nothing more
is applied, and the run ends with :class:`LockLost`.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

from . import deadline
from .dialect import dialect_for
from .lock import MigrationLock
from .log import Writer
from .pending import Plan
from .protocol import Committed, Event, Ended, Retry, RunFacts, Statement, decode
from .report import Applied
from .settings import Settings, settings_to_dict
from .signals import SignalGuard
from .spare import Spare, spare_for

#: How often the lock session is asked whether it still holds the lock.
LOCK_CHECK_SECONDS = 1.0
#: The longest the lock session may take to answer the lock check: a session that stalls
#: (a frozen proxy or path) can't prove the lock is ours, so it counts as lost.
LOCK_CHECK_DEADLINE = 10.0
#: How long a signalled child gets to roll back before its session is ended for it.
GRACE_SECONDS = 20.0
#: How often the main loop looks at the child when its pipes are quiet.
POLL_SECONDS = 0.2
#: At most this many reads of what the child left in a pipe (64 KiB each) after it exited.
DRAIN_READS = 64


class Supervisor:
    def __init__(self, settings: Settings, plan: Plan, lock: MigrationLock, writer: Writer,
                 guard: SignalGuard, applied: List[Applied], debug: bool = False,
                 server_version: int = 0, journal: Optional[Dict[str, Any]] = None,
                 resume: Optional[Dict[str, Any]] = None, spare: Optional[Spare] = None
                 ) -> None:
        self.settings = settings
        self.journal, self.resume = journal, resume
        self.spare = spare
        self.plan = plan
        self.lock = lock
        self.writer = writer
        self.guard = guard
        self.debug = debug
        self.server_version = server_version
        self.facts = RunFacts(tuple(r.id for r in plan.pending),
                              {r.id: r.message for r in plan.pending})
        #: the result's list: progress lines count what the child saw commit
        self.applied = applied
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self._stop = threading.Event()
        self._killed = threading.Event()
        self._partial: Dict[int, bytes] = {}

    # ------------------------------------------------------------------ start

    def execute(self) -> RunFacts:
        job = {"settings": settings_to_dict(self.settings), "plan": self.plan.to_dict(),
               "fence": self.lock.fence(), "server_version": self.server_version,
               "journal": self.journal, "resume": self.resume,
               "env": dialect_for(self.settings.dialect).child_env(self.settings,
                                                                   self.server_version)}
        self.proc, read_fd = (self.spare or spare_for(self.settings)).take()
        self._send_job(json.dumps(job).encode())
        watcher = threading.Thread(target=self._watch_lock, daemon=True,
                                   name="migrategate-lock-watch")
        watcher.start()
        self.guard.raising = False
        self.guard.add_canceller(self._forward_signal)
        try:
            self._watch(read_fd)
        finally:
            self.guard.remove_canceller(self._forward_signal)
            self.guard.raising = True
            self._stop.set()
            watcher.join(timeout=5)
            os.close(read_fd)
            self._end_group()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if self.facts.signalled is None and self.guard.received is not None:
            self.facts.signalled = self.guard.received
        return self.facts

    def _send_job(self, job: bytes) -> None:
        """The job on the child's stdin, then EOF (the child reads it whole, then stdin is
        the null device). A child that died at start closes the pipe: its exit says why."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(job)
            self.proc.stdin.close()
        except OSError:
            pass  # the child is gone already; _watch sees its exit status

    # ------------------------------------------------------------------ the loop

    def _watch(self, events_fd: int) -> None:
        """Read events and output until the child exits; then what is already buffered."""
        assert self.proc is not None and self.proc.stdout is not None
        output_fd = self.proc.stdout.fileno()
        for fd in (events_fd, output_fd):
            os.set_blocking(fd, False)
        exited = _pidfd(self.proc.pid)  # readable once the child has exited (Linux)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(events_fd, selectors.EVENT_READ)
                sel.register(output_fd, selectors.EVENT_READ)
                if exited is not None:
                    sel.register(exited, selectors.EVENT_READ)
                while self.proc.poll() is None:
                    for key, _ in sel.select(POLL_SECONDS):
                        fd = int(key.fd)
                        if fd != exited and self._read(fd, events_fd) is False:
                            sel.unregister(fd)  # EOF: nothing more from this one
        finally:
            if exited is not None:
                os.close(exited)
        self.facts.returncode = self.proc.returncode
        self.facts.exited_at = time.time()
        self._end_group()  # no writer is left but one that escaped the group: bounded below
        for fd in (events_fd, output_fd):
            for _ in range(DRAIN_READS):
                if not self._read(fd, events_fd):
                    break
            self._flush(fd, events_fd)

    def _read(self, fd: int, events_fd: int) -> Optional[bool]:
        """Handle what can be read now: True if something was, False at EOF, None if
        nothing is there yet."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return None
        if not data:
            return False
        lines = (self._partial.pop(fd, b"") + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for raw in lines:
            self._line(raw, fd == events_fd)
        return True

    def _flush(self, fd: int, events_fd: int) -> None:
        rest = self._partial.pop(fd, b"")
        if rest:
            self._line(rest, fd == events_fd)

    def _line(self, raw: bytes, is_event: bool) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        if is_event:
            event = decode(line)
            if event is not None:
                self._event(event)
        elif self.debug or not _alembic_chatter(line):
            self.writer.info(f"| {line}")

    def _end_group(self) -> None:
        """Whatever app code left running in the child's session goes with it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.facts.returncode = self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # nothing of it is left

    # ------------------------------------------------------------------ events

    def _event(self, event: Event) -> None:
        facts = self.facts
        facts.fold(event, time.monotonic())
        if isinstance(event, Committed):
            for rev in event.revisions:
                self._committed(rev)
        elif isinstance(event, Statement) and event.kind == "autocommit":
            self.writer.info(f"{event.revision or '?'}: committed outside its transaction: "
                             f"{event.statement}")
        elif isinstance(event, Ended):
            self.writer.info(f"{event.revision}: the revision ended its own transaction "
                             f"({event.statement}); what ran before it is committed")
        elif isinstance(event, Retry):
            self.writer.info(f"[{len(self.applied) + 1}/{facts.total}] {event.revision} "
                             f"waiting for {facts.blocker} (attempt {event.attempt}/"
                             f"{event.attempts})")

    def _committed(self, revision: str) -> None:
        if any(a.revision == revision for a in self.applied):
            return
        applied = Applied(revision, self.facts.messages.get(revision, ""),
                          self.facts.seconds.get(revision, 0.0))
        self.applied.append(applied)
        msg = f"  {applied.message}" if applied.message else ""
        self.writer.info(f"[{len(self.applied)}/{self.facts.total}] {revision}{msg}  "
                         f"({applied.seconds:.1f}s)")

    # ------------------------------------------------------------------ watching

    def _watch_lock(self) -> None:
        """Check the lock every second (keeping its session busy), stop the run when it is
        lost, and print the "still running" line every --heartbeat seconds."""
        last_beat = time.monotonic()
        while not self._stop.wait(LOCK_CHECK_SECONDS):
            try:
                with deadline.capped(LOCK_CHECK_DEADLINE):
                    held = self.lock.still_held()
                reason = None if held else "the server no longer lists the lock as ours"
            except Exception as exc:  # noqa: BLE001 - any failure of the lock session loses it
                from .dberrors import describe

                reason = f"the lock session failed: {describe(exc)}"
            if reason is not None:
                self.facts.lost = reason
                self.writer.error(f"migration lock lost: {reason}; stopping the migration")
                self._hard_stop()
                return
            facts = self.facts
            interval = self.settings.heartbeat
            now = time.monotonic()
            current = facts.current
            if (interval and current is not None and now - facts.started >= interval
                    and now - last_beat >= interval):
                last_beat = now
                self.writer.info(f"[{len(self.applied) + 1}/{facts.total}] {current} "
                                 f"still running ({now - facts.started:.0f}s)")

    def _forward_signal(self) -> None:
        """Called from the signal watcher thread: pass the signal on, then enforce a grace."""
        proc = self.proc
        signum = self.guard.received or signal.SIGTERM
        self.facts.signalled = signum
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
        session = self.facts.session
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
        from .connect import make_engine

        engine = make_engine(self.settings)
        try:
            with engine.connect() as conn:
                dialect_for(self.settings.dialect).end_session(
                    conn.execution_options(isolation_level="AUTOCOMMIT"), session)
        finally:
            engine.dispose()


def _pidfd(pid: int) -> Optional[int]:
    """A descriptor that becomes readable when ``pid`` exits, where the OS has one."""
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,no-any-return]
    except (AttributeError, OSError):
        return None  # the loop's timeout notices the exit instead


def _alembic_chatter(line: str) -> bool:
    """Alembic's INFO lines duplicate our progress lines (one per revision is enough)."""
    return line.startswith("INFO  [alembic.")
