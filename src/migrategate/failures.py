"""How a migration run ended, as a typed error: decided from facts, not guesses.

The facts are what the migration process reported (which revision had
started, which ran to its end, which committed, which statements committed
outside a revision's transaction, the exception's class and SQLSTATE / error
number), how that process ended, and whether the supervising process still
held the lock. English message text decides nothing here.
"""

from __future__ import annotations

import signal
from typing import Any, Dict, Optional

from . import dberrors
from .errors import (
    ConfigError,
    Interrupted,
    LockLost,
    MigrategateError,
    MigrationFailed,
    PermissionDenied,
)
from .supervise import Run
from .urls import MYSQL

# Alembic runs DDL outside transactions on these (MySQL commits DDL implicitly; pysqlite
# never issues BEGIN before DDL), so a failed revision may leave objects behind.
NON_TRANSACTIONAL_DDL = MYSQL + ("sqlite",)


def outcome(run: Run, backend: str, other_migrator: Optional[str] = None
            ) -> Optional[MigrategateError]:
    """None when the child finished cleanly; otherwise the error to raise."""
    if run.lost is not None or (run.error or {}).get("lock_lost"):
        return _lock_lost(run)
    if run.signalled is not None:
        return _interrupted(run, backend)
    if other_migrator and run.error is not None:
        return MigrationFailed(
            f"another migrator is running: {other_migrator}",
            f"alembic_version moved under this runner{_during(run)}; stop the other migrator "
            "(e.g. the app's own 'flask upgrade-db' / MIGRATION_ENABLED) and re-run",
            revision=run.current)
    if run.error is not None:
        error = _from_record(run.error, run, backend)
        error.child_traceback = run.error.get("traceback", "")  # type: ignore[attr-defined]
        return error
    if not run.finished:
        return _abnormal_end(run)
    return None


def _during(run: Run) -> str:
    return f" during revision {run.current}" if run.current else ""


def _committed(run: Run) -> str:
    return f"{len(run.applied)} revision(s) before it are committed"


def _lock_lost(run: Run) -> MigrategateError:
    reason = run.lost or (run.error or {}).get("message", "")
    return _naming(run.current, LockLost(
        f"the migration lock was lost{_during(run)}: {reason}",
        f"the run stopped: {len(run.applied)} revision(s) committed, the running revision "
        f"was stopped ({_left(run, run.current)}); find what cut the lock session "
        "(idle_session_timeout, wait_timeout, a proxy, a DBA), then re-run"))


def _left(run: Run, revision: Optional[str], backend: str = "postgresql") -> str:
    partial = run.partial.get(revision or "", [])
    if partial:
        return (f"{len(partial)} statement(s) of it were committed outside its transaction "
                f"and stay applied: {'; '.join(partial)} — the revision is half-applied, "
                "run 'migrategate doctor'")
    if backend in NON_TRANSACTIONAL_DDL:
        return (f"{backend} DDL is not transactional: tables, columns or indexes it created "
                "before it stopped may remain; run 'migrategate doctor'")
    return "its transaction was rolled back, nothing of it is applied"


def _interrupted(run: Run, backend: str) -> MigrategateError:
    signum = int(run.signalled or signal.SIGTERM)
    if run.current is None:
        hint = f"{len(run.applied)} revision(s) committed; the lock is released — re-run"
    else:
        hint = f"{_left(run, run.current, backend)}; {_committed(run)}; re-run to continue"
    return _naming(run.current, Interrupted(
        signum, f"interrupted by {signal.Signals(signum).name}{_during(run)}", hint))


def _naming(revision: Optional[str], error: MigrategateError) -> MigrategateError:
    error.revision = revision  # type: ignore[attr-defined]
    return error


def _abnormal_end(run: Run) -> MigrategateError:
    code = run.returncode
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code} without finishing (app code called os._exit?)"
    return MigrationFailed(
        f"the migration process {how}{_during(run)}",
        f"{_left(run, run.current) if run.current else 'no revision was running'}; "
        f"{len(run.applied)} revision(s) committed; nothing is verified — fix the code that "
        "ends the process (env.py, a revision or the models it imports)",
        revision=run.current)


def _why_not_retried(why: str, statement: str, backend: str) -> str:
    if why == "committed":
        return (f"'{statement}' of this revision had already committed ({backend} commits "
                "each DDL statement, and what ran before it, at once), so running the "
                "revision again would repeat it. Find the blocker in SHOW PROCESSLIST, end it, "
                "run 'migrategate doctor' and re-run")
    if why == "not-ddl":
        return (f"'{statement}' is not DDL: a row-lock timeout is not retried. Find the "
                "blocker in SHOW PROCESSLIST and re-run")
    return ("the revision ended its own transaction (COMMIT) before the statement that timed "
            "out, so what it did before stays applied and running it again would repeat it. "
            "Run 'migrategate doctor', then re-run")


def _from_record(record: Dict[str, Any], run: Run, backend: str) -> MigrategateError:
    typed = record.get("typed")
    reason = record["message"]
    code = f" [{record['code']}]" if record.get("code") else ""
    where = f" ({record['where']})" if record.get("where") else ""
    revision = record.get("revision")
    kind = record.get("category")
    if typed:
        err = MigrategateError(reason, typed.get("hint"))
        err.exit_code, err.outcome = typed["exit_code"], typed["outcome"]
        return err
    if record["class"] == "SystemExit":
        return MigrationFailed(
            f"app code called sys.exit({reason}){_during(run)}{where}",
            "migrations must not exit the process; "
            f"{_left(run, revision, backend) if revision else 'no revision was running'}",
            revision=revision)
    if revision is not None:
        label = f"revision {revision}" + (f" ({run.messages[revision]})"
                                          if run.messages.get(revision) else "")
        at = " at COMMIT" if revision in run.ran else ""
        left = _left(run, revision, backend)
        why_not, not_retried_at = run.not_retried or ("", "")
        if why_not == "ended":
            left = ("what it did before its own COMMIT stays applied: the revision is "
                    "half-applied, run 'migrategate doctor'")
        elif why_not == "spent":  # MySQL: only reads ran before the DDL that timed out
            left = ("it had changed nothing when its DDL statement timed out: nothing of it "
                    "is applied")
        if kind == dberrors.PRIVILEGE:
            return PermissionDenied(f"{label} failed{at}{code}: {reason}",
                                    f"grant the migration user the privilege it needs; {left}",
                                    revision=revision)
        committed = {a.revision for a in run.applied}
        undone = sorted(run.ran - committed - {revision})
        if undone and backend not in NON_TRANSACTIONAL_DDL:
            left += f"; {len(undone)} more uncommitted revision(s) rolled back too"
        hint = f"{left}; {_committed(run)}. Fix the revision and re-run"
        if kind == dberrors.LOCK_TIMEOUT and run.blocker:
            hint = (f"every lock-retry attempt timed out waiting for {run.blocker}; end that "
                    "session or retry at a quieter time. " + hint)
        elif kind == dberrors.LOCK_TIMEOUT and why_not not in ("", "spent"):
            hint = f"not retried: {_why_not_retried(why_not, not_retried_at, backend)}. " + hint
        elif kind == dberrors.LOCK_TIMEOUT:
            hint = ("a table it needs is locked by another transaction (lock timeout "
                    "reached); find the blocker in pg_stat_activity / SHOW PROCESSLIST, or "
                    "retry at a quieter time (or use --lock-retries). " + hint)
        elif kind == dberrors.UNREACHABLE:
            hint = f"the connection to the database was lost; {hint}"
        elif kind == dberrors.DUPLICATE:
            hint = ("an object it creates already exists: an earlier run left this revision "
                    "half-applied, or another migrator created it — run 'migrategate doctor'. "
                    + hint)
        return MigrationFailed(f"{label} failed{at}{code}: {reason}{where}", hint,
                               revision=revision)
    # nothing was running: env.py, loading the scripts, or connecting failed
    nothing = "nothing was applied"
    if record["class"] in ("SyntaxError", "IndentationError", "TabError"):
        return ConfigError(f"a migration file has a syntax error{where}: {reason}",
                           f"fix the file; {nothing}")
    if record["class"] in ("ImportError", "ModuleNotFoundError"):
        return ConfigError(
            f"loading the migrations failed{where}: {record['class']}: {reason}",
            f"fix the import or put the app's source root on the path (--app-root DIR); "
            f"{nothing}")
    if record.get("database_error"):
        if kind in (dberrors.AUTH, dberrors.REFUSED, dberrors.PRIVILEGE, dberrors.UNREACHABLE,
                    dberrors.MISSING_DATABASE, dberrors.CONFIG, dberrors.STARTUP_PARAMETER):
            from .connect import refused_as

            error = refused_as(kind, reason, record.get("code"), "the database env.py uses",
                               None)
            assert isinstance(error, MigrategateError)
            return error
        return MigrationFailed(f"the database failed before the first revision{code}: "
                               f"{reason}{where}", f"{nothing}; check the version table and "
                               "the migration user's rights")
    if record["class"] == "CommandError":
        return ConfigError(f"alembic refused: {reason}", nothing)
    return ConfigError(
        f"env.py failed before any revision ran{where}: {record['class']}: {reason}",
        "fix env.py or the settings it reads (run with --debug for the traceback); "
        f"{nothing}")
