"""SIGINT/SIGTERM: cancel the running statement, roll back, release the lock, exit 130/143.

A Python signal handler only runs between bytecodes, so while the main thread
sits in libpq waiting for a long ``ALTER TABLE`` it would never run. We also
register a wakeup fd: the C-level handler writes the signal number there at
once, and a watcher thread runs the registered cancellers. In the parent
(``supervise.py``) the canceller forwards the signal to the migration process
(and, if that has not ended after a grace period, ends its database session
on the server and kills it). In the migration process (``apply._watch_cancel``)
it is the DBAPI connection's ``cancel()`` where the driver has one (psycopg2,
psycopg): the statement then fails in the main thread, the transaction unwinds,
and the Python handler turns it into :class:`Interrupted`. A driver without
``cancel()`` (PyMySQL) reads the socket from Python, so the handler raises
there directly, interrupting the read.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable, List, Optional

from .errors import Interrupted

Canceller = Callable[[], None]

#: Interrupted's advice where no revision ran (upgrade's default: "rolled back ...")
NOTHING_CHANGED = "nothing was changed; re-run the command"


class SignalGuard:
    """Context manager; ``received`` is the first signal seen, or None."""

    def __init__(self, signals: tuple = (signal.SIGINT, signal.SIGTERM),
                 hint: Optional[str] = None) -> None:
        self.signals = signals
        #: what the Interrupted error tells to do (default: upgrade's "rolled back ...")
        self.hint = hint
        #: False while a supervisor waits on its child: the handler then only records
        #: the signal and the watcher's cancellers (which forward it) do the work.
        self.raising = True
        self.received: Optional[int] = None
        self._cancellers: List[Canceller] = []
        self._previous: dict = {}
        self._previous_fd: Optional[int] = None
        self._pipe: Optional[tuple] = None
        self._thread: Optional[threading.Thread] = None
        self._active = False
        self._raised = False

    def add_canceller(self, fn: Canceller) -> None:
        self._cancellers.append(fn)

    def remove_canceller(self, fn: Canceller) -> None:
        if fn in self._cancellers:
            self._cancellers.remove(fn)

    def cancel_all(self) -> None:
        """Cancel in-flight statements. A failed cancel is reported, not hidden: the
        statement then runs to its end and the signal takes effect right after."""
        from .log import default_writer

        for fn in list(self._cancellers):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - reported; exit code still 130/143
                default_writer.warn(f"could not cancel the running statement ({exc}); "
                                    "exiting once it finishes")

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals only reach the main thread; nothing to install
        self._active = True
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipe = (r, w)
        self._previous_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="migrategate-signals",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self._active:
            return
        signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        assert self._pipe is not None
        r, w = self._pipe
        os.close(w)  # the watcher sees EOF and ends
        if self._thread is not None:
            self._thread.join(timeout=2)
        os.close(r)
        self._active = False

    def _watch(self) -> None:
        assert self._pipe is not None
        r = self._pipe[0]
        while True:
            try:
                data = os.read(r, 16)
            except OSError:
                return
            if not data:
                return
            if any(b in self.signals for b in data):
                if self.received is None:
                    self.received = data[0]
                self.cancel_all()

    def _handle(self, signum: int, frame: Any) -> None:
        # Runs in the main thread between any two bytecodes, possibly while that
        # thread holds the writer's lock: so no logging and no cancelling here —
        # the watcher thread does those.
        if self.received is None:
            self.received = signum
        if self._raised or not self.raising:
            return  # a second signal while unwinding: let the cleanup finish
        self._raised = True
        raise Interrupted(self.received, hint=self.hint)

    def check(self) -> None:
        """Raise Interrupted if a signal arrived (call between steps)."""
        if self.received is not None:
            raise Interrupted(self.received, hint=self.hint)
