"""One error family; each class carries the exit code the CLI returns for it.

The exit code is part of the public contract (README, Helm chart, operators'
alerting). Each class names its code in ``exit_code``, except that
:class:`Interrupted` sets it per instance (128 + the signal number) and an error
rebuilt from the migration process's report (``failures.py``) keeps the code the
child's error had. :data:`EXIT_CODES` below repeats every code with its meaning
for ``--help`` and the reports' ``meaning``, and ``cli`` returns three codes of its
own outside this family (1 for an unexpected exception, 2 for argparse's usage
errors, 130 for a ``KeyboardInterrupt``). ``cli.run`` turns an error into its exit
code and ``cli.main`` into ``sys.exit``; library users catch the classes.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple


class MigrategateError(Exception):
    """Base class: ``message`` says what happened, ``hint`` what to do about it."""

    exit_code = 1
    outcome = "internal-error"

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The single line an operator sees at 2 a.m.: what, what it means, what to do."""
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class ConfigError(MigrategateError):
    """Usage or configuration error: nothing was touched."""

    exit_code = 2
    outcome = "config-error"
    #: secrets met before the error (settings.resolve): the caller registers them too
    secrets: Tuple[str, ...] = ()


class UnreachableError(MigrategateError):
    exit_code = 3
    outcome = "unreachable"


class DatabaseError(MigrategateError):
    """The server failed a statement of ours outside any revision (planning, verifying)."""

    exit_code = 3
    outcome = "database-error"


class AuthError(MigrategateError):
    exit_code = 4
    outcome = "auth-failed"


class LockTimeout(MigrategateError):
    exit_code = 5
    outcome = "lock-timeout"


class MigrationFailed(MigrategateError):
    exit_code = 6
    outcome = "migration-failed"

    def __init__(self, message: str, hint: Optional[str] = None, *, revision: Optional[str] = None):
        super().__init__(message, hint)
        self.revision = revision


class VerificationFailed(MigrategateError):
    exit_code = 7
    outcome = "verification-failed"


class UnknownRevision(MigrategateError):
    """The database carries a revision the scripts don't know: code older than schema."""

    exit_code = 8
    outcome = "unknown-revision"


class AmbiguousTarget(MigrategateError):
    exit_code = 9
    outcome = "ambiguous-target"


class WaitTimeout(MigrategateError):
    exit_code = 10
    outcome = "wait-timeout"


class LockLost(MigrategateError):
    """The migration lock vanished while this runner migrated (its session was cut).

    Another runner may take the lock and start the same revisions, so we stop at
    once: the running revision is cancelled (rolled back where DDL is
    transactional) and nothing more is applied.
    """

    exit_code = 11
    outcome = "lock-lost"


class PermissionDenied(MigrategateError):
    """The database user lacks a privilege a revision or migrategate needs."""

    exit_code = 12
    outcome = "permission-denied"

    def __init__(self, message: str, hint: Optional[str] = None, *, revision: Optional[str] = None):
        super().__init__(message, hint)
        self.revision = revision


class Interrupted(MigrategateError):
    """SIGINT/SIGTERM arrived: the running statement was cancelled and rolled back."""

    outcome = "interrupted"

    def __init__(self, signum: int, message: Optional[str] = None, hint: Optional[str] = None):
        import signal

        name = signal.Signals(signum).name
        super().__init__(
            message or f"interrupted by {name}",
            hint
            or "the running revision was rolled back and the lock released; re-run to continue",
        )
        self.signum = signum
        self.exit_code = 128 + signum


#: Every exit code -> what it means (the outcome names are on the classes): the
#: ``--help`` epilog and the ``meaning`` of JSON reports. Kept by hand in step with the
#: classes above and the README's table.
EXIT_CODES: Dict[int, str] = {
    0: "verified at target",
    1: "internal error (a bug: please report it with --debug output)",
    2: "usage or configuration error",
    3: "database unreachable (or failing outside any revision)",
    4: "authentication failed",
    5: "lock not acquired in time",
    6: "a migration failed",
    7: "verification failed",
    8: "database revision unknown to the scripts",
    9: "multiple heads / ambiguous target",
    10: "wait timed out",
    11: "migration lock lost while migrating (the run stopped; see the message for what was left)",
    12: "permission denied (the database user lacks a privilege)",
    130: "interrupted by SIGINT (transaction rolled back, lock released)",
    143: "interrupted by SIGTERM (transaction rolled back, lock released)",
}

#: exit codes of ``upgrade`` that running it again cannot fix: the chart's Job fails at
#: once on them (podFailurePolicy FailJob; values.yaml ``failJobOnExitCodes`` is held to
#: this by a test). Every other code may clear on a retry: 3 (the server comes back),
#: 5 (the other runner finishes), 11 (the next run continues), 1, 130/143 (the pod was
#: ended, e.g. evicted).
RETRY_CANNOT_FIX: Tuple[int, ...] = (2, 4, 6, 7, 8, 9, 12)
