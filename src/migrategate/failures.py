"""How a migration run ended, as a typed error: decided from facts, not guesses.

The facts (:class:`~migrategate.protocol.RunFacts`) are what the migration
process observed (which revision had started, which ran to its end, which
statements completed where a rollback can't undo them, whether a revision ended
its own transaction, the exception's class and SQLSTATE / error number), how that
process ended, whether the supervising process still held the lock — and what
the version table holds afterwards, read back from the database. What a message
says is committed comes from that read-back; what it says a failed revision
left comes from the database's rules (:mod:`migrategate.dialect`) and the
statements the driver saw complete. English message text decides nothing here.
"""

from __future__ import annotations

import signal
from typing import List, Optional

from . import dberrors
from .dialect import Dialect
from .errors import (
    ConfigError,
    Interrupted,
    LockLost,
    MigrategateError,
    MigrationFailed,
    PermissionDenied,
)
from .protocol import FailureRecord, RunFacts


def outcome(facts: RunFacts, dialect: Dialect, other_migrator: Optional[str] = None
            ) -> Optional[MigrategateError]:
    """None when the child finished cleanly; otherwise the error to raise."""
    error = facts.error
    if facts.lost is not None or (error is not None and error.lock_lost):
        return _lock_lost(facts, dialect)
    if facts.signalled is not None:
        return _interrupted(facts, dialect)
    if other_migrator and error is not None:
        return MigrationFailed(
            f"another migrator is running: {other_migrator}",
            f"alembic_version moved under this runner{_during(facts)}; stop the other "
            "migrator (e.g. the app's own 'flask upgrade-db' / MIGRATION_ENABLED) and re-run",
            revision=facts.current)
    if error is not None:
        result = _from_record(error, facts, dialect)
        result.child_traceback = error.traceback  # type: ignore[attr-defined]
        return result
    if not facts.finished:
        return _abnormal_end(facts, dialect)
    return None


def committed_in_database(facts: RunFacts) -> Optional[List[str]]:
    """The run's revisions the version table holds (read back), or None if unknown."""
    return None if facts.read_back is None else list(facts.read_back)


def _during(facts: RunFacts) -> str:
    return f" during revision {facts.current}" if facts.current else ""


def _committed(facts: RunFacts) -> str:
    done = committed_in_database(facts)
    if done is None:
        return (f"whether the revisions before it committed could not be read back "
                f"({facts.read_back_error or 'no connection'}): run 'migrategate status'")
    return f"{len(done)} revision(s) committed (read back from the database)"


def left_by(facts: RunFacts, revision: Optional[str], dialect: Dialect,
            abrupt: bool = False) -> str:
    """What of ``revision`` stays in the database after it failed or was stopped."""
    if revision is None:
        return "no revision was running"
    account = _account(facts, revision, dialect, abrupt)
    if facts.left_in_db and revision == facts.current:
        account += f" (read back, in the database now: {', '.join(facts.left_in_db)})"
    return account


def _account(facts: RunFacts, revision: str, dialect: Dialect, abrupt: bool) -> str:
    done = committed_in_database(facts)
    if done is not None and revision in done:
        return ("it committed before the run stopped (alembic_version holds it, read back "
                "from the database)")
    stays = facts.committed_statements(revision)
    if stays:
        why = ("committed outside its transaction" if dialect.transactional_ddl else
               f"completed, and {dialect.label} commits each DDL statement (and what ran "
               "before it) at once")
        return (f"{len(stays)} statement(s) of it {why} and stay applied: "
                f"{'; '.join(stays)} — the revision is half-applied, run 'migrategate doctor'")
    ended = facts.ended.get(revision)
    if ended:
        return (f"it ended its own transaction ({ended}), so what it ran before that stays "
                "applied: the revision is half-applied, run 'migrategate doctor'")
    if dialect.transactional_ddl:
        return "its transaction was rolled back, nothing of it is applied"
    if abrupt:
        return (f"no statement of it had completed; {dialect.label} DDL is not transactional "
                "and a statement still running when it stopped may complete on the server — "
                "run 'migrategate doctor'")
    return "no statement of it had completed before the one that failed: nothing of it is applied"


def _lock_lost(facts: RunFacts, dialect: Dialect) -> MigrategateError:
    reason = facts.lost or (facts.error.message if facts.error else "")
    return _naming(facts.current, LockLost(
        f"the migration lock was lost{_during(facts)}: {reason}",
        f"the run stopped: {_committed(facts)}; the running revision was stopped "
        f"({left_by(facts, facts.current, dialect, abrupt=True)}); find what cut the lock "
        "session (idle_session_timeout, wait_timeout, a proxy, a DBA), then re-run"))


def _interrupted(facts: RunFacts, dialect: Dialect) -> MigrategateError:
    signum = int(facts.signalled or signal.SIGTERM)
    if facts.current is None:
        hint = f"{_committed(facts)}; the lock is released — re-run"
    else:
        hint = (f"{left_by(facts, facts.current, dialect, abrupt=True)}; {_committed(facts)}; "
                "re-run to continue")
    return _naming(facts.current, Interrupted(
        signum, f"interrupted by {signal.Signals(signum).name}{_during(facts)}", hint))


def _naming(revision: Optional[str], error: MigrategateError) -> MigrategateError:
    error.revision = revision  # type: ignore[attr-defined]
    return error


def _abnormal_end(facts: RunFacts, dialect: Dialect) -> MigrategateError:
    code = facts.returncode
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code} without finishing (app code called os._exit?)"
    return MigrationFailed(
        f"the migration process {how}{_during(facts)}",
        f"{left_by(facts, facts.current, dialect, abrupt=True)}; {_committed(facts)}; nothing "
        "is verified — fix the code that ends the process (env.py, a revision or the models "
        "it imports)",
        revision=facts.current)


def _why_not_retried(why: str, statement: str, dialect: Dialect) -> str:
    if why == "committed":
        return (f"'{statement}' of this revision had already committed ({dialect.label} "
                "commits each DDL statement, and what ran before it, at once), so running the "
                "revision again would repeat it. Find the blocker in SHOW PROCESSLIST, end it, "
                "run 'migrategate doctor' and re-run")
    if why == "not-ddl":
        return (f"'{statement}' is not DDL: a row-lock timeout is not retried. Find the "
                "blocker in SHOW PROCESSLIST and re-run")
    return ("the revision ended its own transaction (COMMIT) before the statement that timed "
            "out, so what it did before stays applied and running it again would repeat it. "
            "Run 'migrategate doctor', then re-run")


def _from_record(record: FailureRecord, facts: RunFacts, dialect: Dialect) -> MigrategateError:
    reason = record.message
    code = f" [{record.code}]" if record.code else ""
    where = f" ({record.where})" if record.where else ""
    revision = facts.current
    kind = record.category
    if record.typed:
        exit_code, outcome_, hint = record.typed
        err = MigrategateError(reason, hint)
        err.exit_code, err.outcome = exit_code, outcome_
        return err
    if record.cls == "SystemExit":
        return MigrationFailed(
            f"app code called sys.exit({reason}){_during(facts)}{where}",
            f"migrations must not exit the process; {left_by(facts, revision, dialect)}",
            revision=revision)
    if revision is not None:
        return _revision_failed(record, facts, dialect, revision, code, where)
    # nothing was running: env.py, loading the scripts, or connecting failed
    nothing = "nothing was applied" if committed_in_database(facts) == [] else _committed(facts)
    if record.cls in ("SyntaxError", "IndentationError", "TabError"):
        return ConfigError(f"a migration file has a syntax error{where}: {reason}",
                           f"fix the file; {nothing}")
    if record.cls in ("ImportError", "ModuleNotFoundError"):
        return ConfigError(
            f"loading the migrations failed{where}: {record.cls}: {reason}",
            f"fix the import or put the app's source root on the path (--app-root DIR); "
            f"{nothing}")
    if record.database_error:
        if kind in (dberrors.AUTH, dberrors.REFUSED, dberrors.PRIVILEGE, dberrors.UNREACHABLE,
                    dberrors.MISSING_DATABASE, dberrors.CONFIG, dberrors.STARTUP_PARAMETER):
            from .connect import refused_as

            error = refused_as(kind, reason, record.code, "the database env.py uses", None)
            assert isinstance(error, MigrategateError)
            return error
        return MigrationFailed(f"the database failed before the first revision{code}: "
                               f"{reason}{where}", f"{nothing}; check the version table and "
                               "the migration user's rights")
    if record.cls == "CommandError":
        return ConfigError(f"alembic refused: {reason}", nothing)
    return ConfigError(
        f"env.py failed before any revision ran{where}: {record.cls}: {reason}",
        "fix env.py or the settings it reads (run with --debug for the traceback); "
        f"{nothing}")


def _revision_failed(record: FailureRecord, facts: RunFacts, dialect: Dialect, revision: str,
                     code: str, where: str) -> MigrategateError:
    kind = record.category
    message = facts.messages.get(revision)
    label = f"revision {revision}" + (f" ({message})" if message else "")
    at = " at COMMIT" if revision in facts.ran else ""
    left = left_by(facts, revision, dialect)
    why_not, not_retried_at = facts.not_retried or ("", "")
    if why_not == "spent" and not facts.committed_statements(revision):
        left = ("it had changed nothing when its DDL statement timed out: nothing of it "
                "is applied")
    if kind == dberrors.PRIVILEGE:
        return PermissionDenied(f"{label} failed{at}{code}: {record.message}",
                                f"grant the migration user the privilege it needs; {left}",
                                revision=revision)
    done = committed_in_database(facts)
    undone = sorted(facts.ran - set(done or ()) - {revision}) if done is not None else []
    if undone and dialect.transactional_ddl:
        left += f"; {len(undone)} more uncommitted revision(s) rolled back too"
    hint = f"{left}; {_committed(facts)}. Fix the revision and re-run"
    if kind == dberrors.LOCK_TIMEOUT and facts.blocker:
        hint = (f"every lock-retry attempt timed out waiting for {facts.blocker}; end that "
                "session or retry at a quieter time. " + hint)
    elif kind == dberrors.LOCK_TIMEOUT and why_not not in ("", "spent"):
        hint = f"not retried: {_why_not_retried(why_not, not_retried_at, dialect)}. " + hint
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
    return MigrationFailed(f"{label} failed{at}{code}: {record.message}{where}", hint,
                           revision=revision)
