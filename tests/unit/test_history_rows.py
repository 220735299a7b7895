"""The history's rules without a server: which attempt gets which outcome, what a row carries,
the checksum's normalisation and the adoption order. The real servers pin the promises
(tests/integration/test_history.py)."""

from __future__ import annotations

import hashlib
import json
import signal

from migrategate import protocol as p
from migrategate.errors import Interrupted, LockLost, MigrationFailed
from migrategate.graph import Graph, Revision
from migrategate.historytable import (APPLIED, FAILED, FAILED_AT_COMMIT, INTERRUPTED,
                                      LOCK_LOST, PRESENT, ROLLED_BACK, Recorder, checksum,
                                      topological)
from migrategate.pending import make_plan


def _graph(tmp_path):
    revs = []
    for rev, down in (("a", ()), ("b", ("a",)), ("c", ("b",))):
        path = tmp_path / f"{rev}.py"
        path.write_text(f"revision = {rev!r}\n")
        revs.append(Revision(rev, down, path=str(path)))
    return Graph(revs)


def _recorder(tmp_path, current=None):
    graph = _graph(tmp_path)
    return Recorder("migrategate_history", None, graph, make_plan(graph, current, "heads"))


def _facts(*events, read_back=("a",)):
    f = p.RunFacts(("a", "b", "c"), {})
    for k, event in enumerate(events):
        f.fold(p.decode(p.encode(event)), 0.0, wall=1000.0 + k)
    f.read_back = read_back
    f.exited_at = 2000.0
    return f


def _outcomes(rows):
    return [(r["revision"], r["outcome"], r["exit_code"]) for r in rows]


def test_applied_revisions_have_their_commit_time_and_the_runs_exit_code(tmp_path):
    facts = _facts(p.Started("a"), p.Ran("a", 0.5), p.Committed(("a",)),
                   p.Started("b"), p.Ran("b", 0.2), p.Committed(("b",)),
                   read_back=("a", "b"))
    rows = _recorder(tmp_path).rows(facts, None)
    assert _outcomes(rows) == [("a", APPLIED, 0), ("b", APPLIED, 0)]  # c never started
    assert rows[0]["duration_seconds"] == 2.0  # started at 1000, COMMIT seen at 1002
    assert rows[0]["started_at"].isoformat() == "1970-01-01T00:16:40"  # UTC
    assert rows[0]["committed_statements"] is None and rows[0]["detail"] is None


def test_the_stopped_revision_gets_the_runs_outcome(tmp_path):
    started = (p.Started("a"), p.Committed(("a",)), p.Started("b"))
    cases = [
        (MigrationFailed("revision b failed", revision="b"), started, FAILED),
        (MigrationFailed("revision b failed at COMMIT"), started + (p.Ran("b", 0.1),),
         FAILED_AT_COMMIT),
        (LockLost("the migration lock was lost"), started, LOCK_LOST),
        (Interrupted(signal.SIGTERM), started, INTERRUPTED),
    ]
    for error, events, expected in cases:
        rows = _recorder(tmp_path).rows(_facts(*events), error)
        assert _outcomes(rows) == [("a", APPLIED, error.exit_code),
                                   ("b", expected, error.exit_code)], expected
        assert rows[1]["finished_at"].isoformat() == "1970-01-01T00:33:20"  # exited_at
        assert rows[1]["detail"] == error.one_line()


def test_what_the_read_back_denies_is_not_applied(tmp_path):
    """a ran to its end in the same transaction as b (--single-transaction) and the version
    table doesn't hold it: rolled back with b, never 'applied'."""
    facts = _facts(p.Started("a"), p.Ran("a", 0.1), p.Started("b"), read_back=())
    rows = _recorder(tmp_path).rows(facts, MigrationFailed("b failed", revision="b"))
    assert _outcomes(rows) == [("a", ROLLED_BACK, 6), ("b", FAILED, 6)]


def test_a_failed_revision_keeps_what_it_had_committed(tmp_path):
    facts = _facts(p.Started("a"), p.Statement("a", "CREATE TABLE half_t (id INT)", "ddl"),
                   p.Statement("a", "INSERT INTO half_t VALUES (1)", "dml"), read_back=())
    rows = _recorder(tmp_path).rows(facts, MigrationFailed("a failed", revision="a"))
    assert json.loads(rows[0]["committed_statements"]) == ["CREATE TABLE half_t (id INT)"]


def test_checksum_ignores_line_endings_only(tmp_path):
    unix, dos, edited = (tmp_path / n for n in ("unix.py", "dos.py", "edited.py"))
    unix.write_bytes(b"x = 1\ny = 2\n")
    dos.write_bytes(b"x = 1\r\ny = 2\r\n")
    edited.write_bytes(b"x = 1\ny = 3\n")
    expected = hashlib.sha256(b"x = 1\ny = 2\n").hexdigest()
    assert checksum(str(unix)) == checksum(str(dos)) == expected
    assert checksum(str(edited)) != checksum(str(unix))
    assert checksum(str(tmp_path / "missing.py")) is None


def test_adoption_order_puts_each_revision_after_what_it_needs():
    revs = [Revision("m", ("b1", "b2")), Revision("b2", ("a",)), Revision("b1", ("a",)),
            Revision("a", ())]
    order = topological(Graph(revs), {"a", "b1", "b2", "m"})
    assert order.index("a") < order.index("b1") < order.index("m")
    assert order.index("b2") < order.index("m") and sorted(order) == ["a", "b1", "b2", "m"]


def test_adopted_rows_have_no_times(tmp_path):
    recorder = _recorder(tmp_path, current=("b",))
    row = recorder._row("a", PRESENT)
    assert (row["started_at"], row["finished_at"], row["duration_seconds"], row["exit_code"]) \
        == (None, None, None, None)
    assert row["checksum"] == checksum(str(tmp_path / "a.py"))
