"""One way to wait: a deadline, back-off with jitter, log lines at a bounded rate.

Connecting, taking the lock and ``wait`` all poll until a deadline. Three
hand-written loops each got one detail wrong (one swallowed SIGTERM, one
busy-polled); this is the single helper they share. It never catches anything:
an interrupt raised by the signal handler passes straight through.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


class Backoff:
    """``pause()`` sleeps a jittered, growing delay, never past the deadline."""

    def __init__(self, timeout: float, first: float = 0.25, cap: float = 5.0,
                 factor: float = 2.0, log_every: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.sleep = sleep
        self.started = clock()
        self.deadline = self.started + timeout
        self.delay = first
        self.cap = cap
        self.factor = factor
        self.log_every = log_every
        self._logged_at: Optional[float] = None
        self._logged_state: Optional[str] = None
        self.attempts = 0

    @property
    def waited(self) -> float:
        return self.clock() - self.started

    @property
    def remaining(self) -> float:
        return max(self.deadline - self.clock(), 0.0)

    @property
    def expired(self) -> bool:
        return self.clock() >= self.deadline

    def should_log(self, state: str = "") -> bool:
        """True on the first call, when ``state`` changed, and then every ``log_every`` s."""
        now = self.clock()
        if (self._logged_at is None or state != self._logged_state
                or now - self._logged_at >= self.log_every):
            self._logged_at, self._logged_state = now, state
            return True
        return False

    def pause(self) -> None:
        self.attempts += 1
        jittered = self.delay * (0.5 + random.random()) if self.factor != 1.0 else self.delay
        self.sleep(min(jittered, self.remaining))
        self.delay = min(self.delay * self.factor, self.cap)


def interruptible(fn: Callable[[], T], poll: float = 0.1) -> T:
    """Run a blocking call (a driver's connect) so that a signal still ends us at once.

    A Python signal handler only runs between bytecodes: while libpq blocks in
    ``connect()`` for up to ``connect_timeout`` seconds, SIGTERM would wait. The
    call runs in a daemon thread; the main thread waits in short slices, so the
    handler runs and its exception propagates. An abandoned attempt dies with
    the process.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box: dict = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name="migrategate-blocking", daemon=True).start()
    while not done.wait(poll):
        pass
    if "error" in box:
        raise box["error"]
    return box["value"]
