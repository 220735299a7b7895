"""What the migration process tells its parent, and the facts the parent folds it into.

The child (``migrategate.worker``) runs app code; the parent decides the exit
code. Everything that crosses between them is one of the small records below,
written as one JSON line each on the events pipe and decoded here, in one place.
:class:`RunFacts` is the one reducer: it owns what the parent believes about the
run, and :mod:`migrategate.failures` decides the outcome from it.

Events are facts the child observed, never conclusions: "revision r started",
"its upgrade() ran to its end", "COMMIT returned", "this statement completed on
a database whose DDL is not transactional", "the revision ended its own
transaction". Which revisions are really committed is read back from the
database afterwards (:func:`migrategate.commands` ``_conclude``); the events only
say what was running and what the driver saw.

Threads: events are folded by the supervisor's main loop only. The heartbeat
thread reads ``current``/``started`` (single attribute reads) and writes ``lost``
once; the signal watcher writes ``signalled`` once. Those are the only writes
from other threads, each a single assignment of an immutable value.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple, Type, Union


@dataclass(frozen=True)
class Ready:
    """env.py's connection is known; ``session`` is how to end it on the server."""

    session: Optional[Dict[str, Any]]


@dataclass(frozen=True)
class Started:
    """Alembic is about to run ``revision``'s step (its transaction may begin now)."""

    revision: str


@dataclass(frozen=True)
class Ran:
    """``revision``'s upgrade() returned; its COMMIT (if any) has not returned yet."""

    revision: str
    seconds: float


@dataclass(frozen=True)
class Committed:
    """The connection left its transaction after these revisions ran (COMMIT returned)."""

    revisions: Tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    """A statement of ``revision`` completed where it is not undone by a rollback: inside
    an autocommit block, or on a database whose DDL commits at once (MySQL, SQLite)."""

    revision: Optional[str]
    statement: str
    #: "autocommit" (inside an autocommit block: committed), "ddl" (committed itself and
    #: every statement before it), "dml" (undone if the revision fails before a commit)
    kind: str = "dml"


@dataclass(frozen=True)
class Ended:
    """``revision`` ended its own transaction (a COMMIT/ROLLBACK of its own, or the driver's
    ``commit()``): what it ran before may be committed, and it must never be retried."""

    revision: Optional[str]
    statement: str


@dataclass(frozen=True)
class Retry:
    revision: Optional[str]
    attempt: int
    attempts: int
    blocker: str


@dataclass(frozen=True)
class NotRetried:
    """Why a lock timeout was not (or no more) retried: committed | not-ddl | ended | spent."""

    revision: Optional[str]
    why: str
    statement: str


@dataclass(frozen=True)
class FailureRecord:
    """An exception from env.py or a revision, as plain facts (no live objects)."""

    cls: str
    message: str
    category: str
    code: Optional[str] = None
    sqlstate: Optional[str] = None
    lock_lost: bool = False
    signal: Optional[int] = None
    traceback: str = ""
    where: Optional[str] = None
    database_error: bool = False
    #: a migrategate error raised in the child: (exit_code, outcome, hint)
    typed: Optional[Tuple[int, str, Optional[str]]] = None


@dataclass(frozen=True)
class Failed:
    record: FailureRecord


@dataclass(frozen=True)
class Finished:
    """env.py returned normally."""


Event = Union[Ready, Started, Ran, Committed, Statement, Ended, Retry, NotRetried, Failed,
              Finished]
_KINDS: Dict[str, Type[Any]] = {c.__name__: c for c in (
    Ready, Started, Ran, Committed, Statement, Ended, Retry, NotRetried, Failed, Finished)}


def encode(event: Event) -> str:
    """One line of JSON (no newline inside: json.dumps escapes them)."""
    if isinstance(event, Failed):  # the one nested record
        body = asdict(event)
    else:  # flat: a shallow copy, not asdict's deep walk (three events per revision)
        body = dict(vars(event))
    body["event"] = type(event).__name__
    return json.dumps(body)


def decode(line: str) -> Optional[Event]:
    """The event on this line, or None for anything that is not one of ours."""
    try:
        body = json.loads(line)
        kind = _KINDS[body.pop("event")]
        if kind is Failed:
            record = body["record"]
            if record.get("typed") is not None:
                record["typed"] = tuple(record["typed"])
            return Failed(FailureRecord(**record))
        if kind is Committed:
            return Committed(tuple(body["revisions"]))
        event: Event = kind(**body)
        return event
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not ours: nothing app code writes can change the outcome anyway


@dataclass
class RunFacts:
    """What the parent knows about one run of the migration process."""

    pending: Tuple[str, ...]
    messages: Dict[str, str]
    session: Optional[Dict[str, Any]] = None
    current: Optional[str] = None  # started and not yet committed
    started: float = 0.0  # monotonic time ``current`` started (for "still running")
    ran: Set[str] = field(default_factory=set)  # ran to its end: a failure now is at COMMIT
    seconds: Dict[str, float] = field(default_factory=dict)
    committed: List[str] = field(default_factory=list)  # as the child saw COMMIT return
    #: per revision, its statements that completed where a rollback may not undo them
    statements: Dict[str, List[Tuple[str, str]]] = field(default_factory=dict)
    ended: Dict[str, str] = field(default_factory=dict)  # rev -> statement that ended it
    blocker: Optional[str] = None  # the last session a lock retry waited for
    not_retried: Optional[Tuple[str, str]] = None
    error: Optional[FailureRecord] = None
    finished: bool = False
    returncode: Optional[int] = None
    lost: Optional[str] = None  # why the lock is gone (the lock watch)
    signalled: Optional[int] = None
    #: the run's revisions the version table holds afterwards, read back from the
    #: database by the parent (None: it could not be read back)
    read_back: Optional[Tuple[str, ...]] = None
    read_back_error: Optional[str] = None
    #: objects the stopped revision's file creates that are in the database afterwards
    left_in_db: List[str] = field(default_factory=list)
    #: wall-clock times (time.time()) for the history: each revision's first start, when
    #: its COMMIT was seen to return, and when the migration process exited
    began_at: Dict[str, float] = field(default_factory=dict)
    done_at: Dict[str, float] = field(default_factory=dict)
    exited_at: Optional[float] = None

    @property
    def total(self) -> int:
        return len(self.pending)

    def fold(self, event: Event, now: float, wall: Optional[float] = None) -> None:
        wall = time.time() if wall is None else wall
        if isinstance(event, Ready):
            self.session = event.session
        elif isinstance(event, Started):
            self.current, self.started = event.revision, now
            self.began_at.setdefault(event.revision, wall)
            self.not_retried = None  # a fact about one revision only
        elif isinstance(event, Ran):
            self.ran.add(event.revision)
            self.seconds[event.revision] = event.seconds
        elif isinstance(event, Committed):
            self.committed.extend(r for r in event.revisions if r not in self.committed)
            for rev in event.revisions:
                self.done_at.setdefault(rev, wall)
            self.current = None
        elif isinstance(event, Statement):
            self.statements.setdefault(event.revision or "", []).append(
                (event.kind, event.statement))
        elif isinstance(event, Ended):
            self.ended.setdefault(event.revision or "", event.statement)
        elif isinstance(event, Retry):
            self.blocker = event.blocker or self.blocker
        elif isinstance(event, NotRetried):
            self.not_retried = (event.why, event.statement)
        elif isinstance(event, Failed):
            self.error = event.record
        elif isinstance(event, Finished):
            self.finished = True

    def committed_statements(self, revision: Optional[str]) -> List[str]:
        """What of ``revision`` stays applied although the revision failed: its autocommit
        statements, and on a database whose DDL commits at once, everything up to and
        including its last statement that committed itself."""
        done = self.statements.get(revision or "", [])
        last = max((i for i, (kind, _) in enumerate(done) if kind == "ddl"), default=-1)
        return [s for i, (kind, s) in enumerate(done) if kind == "autocommit" or i <= last]
