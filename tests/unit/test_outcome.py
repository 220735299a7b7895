"""The child->parent protocol, the reducer and the outcome decision, without a server.

The facts are built the way the supervisor builds them (encoded, decoded, folded), and the
database's answer is a Dialect: these pin the rules; the real servers pin the promises
(tests/integration/test_boundary.py).
"""

from __future__ import annotations

import signal

import pytest

from migrategate import protocol as p
from migrategate.dialect import Dialect, dialect_for
from migrategate.errors import Interrupted, LockLost, MigrationFailed
from migrategate.failures import outcome

class _Fake(Dialect):
    def __init__(self, label, transactional_ddl):
        super().__init__(label.lower())
        self.label, self.transactional_ddl = label, transactional_ddl


TRANSACTIONAL = _Fake("FakePG", transactional_ddl=True)
AUTOCOMMITTING = _Fake("FakeMy", transactional_ddl=False)


def facts(*events, read_back=("a",)):
    f = p.RunFacts(("a", "b", "c"), {"a": "first", "b": "second", "c": "third"})
    for event in events:
        f.fold(p.decode(p.encode(event)), 0.0)  # exactly what crosses the pipe
    f.read_back = read_back
    return f


def failed(message="boom", category="other", **kw):
    return p.Failed(p.FailureRecord(cls="ProgrammingError", message=message,
                                    category=category, database_error=True, **kw))


A_COMMITTED = (p.Started("a"), p.Ran("a", 0.1), p.Committed(("a",)))


def test_every_event_survives_the_pipe():
    events = [p.Ready({"pid": 7}), p.Started("a"), p.Ran("a", 1.5), p.Committed(("a", "b")),
              p.Statement("b", "CREATE TABLE t (id int)", kind="ddl"), p.Ended("b", "COMMIT"),
              p.Retry("b", 1, 4, "pid 9"), p.NotRetried("b", "ended", "ALTER TABLE t"),
              failed(typed=(2, "config-error", "fix it"), code="SQLSTATE 42P01"), p.Finished()]
    for event in events:
        assert p.decode(p.encode(event)) == event


@pytest.mark.parametrize("line", ["", "hello", "{}", '{"event": "Nope"}', '{"event": "Ran"}',
                                  "[1, 2]", '{"event": "Committed", "revisions": 3}'])
def test_a_line_that_is_not_an_event_is_ignored(line):
    assert p.decode(line) is None


def test_a_clean_run_decides_nothing():
    assert outcome(facts(*A_COMMITTED, p.Finished()), TRANSACTIONAL) is None


def test_a_failed_revision_on_transactional_ddl_is_rolled_back_whole():
    error = outcome(facts(*A_COMMITTED, p.Started("b"), failed()), TRANSACTIONAL)

    assert isinstance(error, MigrationFailed) and error.exit_code == 6
    assert error.revision == "b"
    assert "revision b (second) failed" in error.message
    assert "its transaction was rolled back, nothing of it is applied" in error.hint
    assert "1 revision(s) committed (read back from the database)" in error.hint


def test_where_ddl_commits_itself_the_completed_statements_are_named():
    error = outcome(facts(*A_COMMITTED, p.Started("b"),
                          p.Statement("b", "CREATE TABLE t", kind="ddl"),
                          p.Statement("b", "INSERT INTO t VALUES (1)", kind="dml"),
                          failed()), AUTOCOMMITTING)

    assert "1 statement(s) of it completed, and FakeMy commits each DDL statement" in error.hint
    assert "CREATE TABLE t" in error.hint and "half-applied" in error.hint
    assert "INSERT" not in error.hint  # after the last DDL: rolled back with the failure


def test_where_ddl_commits_itself_and_nothing_completed_nothing_is_applied():
    error = outcome(facts(*A_COMMITTED, p.Started("b"), failed()), AUTOCOMMITTING)

    assert "no statement of it had completed before the one that failed" in error.hint


def test_an_autocommit_block_stays_even_on_transactional_ddl():
    error = outcome(facts(*A_COMMITTED, p.Started("b"),
                          p.Statement("b", "CREATE INDEX CONCURRENTLY i", kind="autocommit"),
                          failed()), TRANSACTIONAL)

    assert "committed outside its transaction" in error.hint
    assert "nothing of it is applied" not in error.hint


def test_a_revision_that_ended_its_own_transaction_is_half_applied():
    error = outcome(facts(*A_COMMITTED, p.Started("b"), p.Ended("b", "COMMIT"), failed()),
                    TRANSACTIONAL)

    assert "it ended its own transaction (COMMIT)" in error.hint
    assert "nothing of it is applied" not in error.hint


def test_a_signal_after_the_revision_committed_says_it_committed():
    # COMMIT returned, the child was interrupted before it could say so: the database says
    signalled = facts(p.Started("a"), p.Ran("a", 0.1), failed(), read_back=("a",))
    signalled.signalled = int(signal.SIGTERM)

    error = outcome(signalled, TRANSACTIONAL)

    assert isinstance(error, Interrupted) and error.exit_code == 143
    assert "it committed before the run stopped" in error.hint
    assert "nothing of it is applied" not in error.hint


def test_when_the_database_could_not_be_read_back_nothing_is_claimed():
    lost = facts(*A_COMMITTED, p.Started("b"), read_back=None)
    lost.lost, lost.read_back_error = "the lock session failed", "no answer within 10 s"

    error = outcome(lost, TRANSACTIONAL)

    assert isinstance(error, LockLost) and error.exit_code == 11
    assert "could not be read back (no answer within 10 s)" in error.hint
    assert "revision(s) committed (read back" not in error.hint


def test_a_killed_child_on_autocommitting_ddl_warns_a_running_statement_may_complete():
    killed = facts(*A_COMMITTED, p.Started("b"))
    killed.returncode = -int(signal.SIGKILL)

    error = outcome(killed, AUTOCOMMITTING)

    assert "killed by SIGKILL during revision b" in error.message
    assert "may complete on the server" in error.hint


def test_a_child_that_exits_0_without_finishing_is_a_failure():
    quiet = facts(*A_COMMITTED)
    quiet.returncode = 0

    error = outcome(quiet, TRANSACTIONAL)

    assert isinstance(error, MigrationFailed)
    assert "exited with status 0 without finishing" in error.message


@pytest.mark.parametrize("backend, transactional", [
    ("postgresql", True), ("mysql", False), ("mariadb", False), ("sqlite", False)])
def test_each_database_says_whether_its_ddl_is_transactional(backend, transactional):
    assert dialect_for(backend).transactional_ddl is transactional


# ---------------------------------------------------------------- the retry rule

def decide(kind="lock-timeout", attempt=1, retries=3, transactional=True, committed_outside=False,
           ended=False, first_write="", statement="ALTER TABLE t ADD COLUMN x int"):
    from migrategate.apply import retry_decision

    return retry_decision(kind, attempt, retries, transactional=transactional,
                          committed_outside=committed_outside, ended=ended,
                          first_write=first_write, statement=statement)


@pytest.mark.parametrize("transactional", [True, False])
def test_only_a_lock_timeout_is_retried(transactional):
    assert decide(transactional=transactional)[0] is True
    assert decide(kind="other", transactional=transactional) == (False, "", "")
    assert decide(kind="canceled", transactional=transactional) == (False, "", "")


@pytest.mark.parametrize("transactional", [True, False])
def test_never_after_anything_of_the_revision_may_have_committed(transactional):
    assert decide(transactional=transactional, committed_outside=True) == (False, "", "")
    assert decide(transactional=transactional, ended=True) == (False, "ended", "")


def test_where_ddl_is_transactional_any_statement_is_retried_whole():
    assert decide(statement="UPDATE t SET x = 1", first_write="INSERT INTO t") == \
        (True, "", "")


def test_where_ddl_commits_itself_a_write_before_it_stops_the_retry():
    assert decide(transactional=False, first_write="INSERT INTO t VALUES (1)") == \
        (False, "committed", "INSERT INTO t VALUES (1)")


def test_where_ddl_commits_itself_a_timed_out_row_lock_is_not_retried():
    assert decide(transactional=False, statement="UPDATE t SET x = 1") == \
        (False, "not-ddl", "UPDATE t SET x = 1")


def test_spent_attempts_say_nothing_changed_only_where_that_is_true():
    assert decide(attempt=4, retries=3, transactional=False) == (False, "spent", "")
    assert decide(attempt=4, retries=3, transactional=False, first_write="INSERT") == \
        (False, "", "")
    assert decide(attempt=4, retries=3, transactional=True) == (False, "", "")


def test_the_lock_timeout_escalates_on_postgresql_only():
    """MySQL/MariaDB queue every later query behind an ALTER waiting for its metadata lock:
    each attempt waits the first timeout again (clients stalled 2-4 s with 1, 2, 4 s)."""
    from migrategate.apply import lock_timeout_for

    assert [lock_timeout_for(a, 0.05) for a in (1, 2, 3, 4, 5)] == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert [lock_timeout_for(a, 1.0, escalate=False) for a in (1, 2, 3, 9)] == [1.0] * 4
