"""Resuming a half-applied revision on real MariaDB 10.11, where every DDL statement commits
at once: the journal says which statements of the revision committed; ``repair --yes``
resumes a failed one after them, ``upgrade`` resumes one whose runner was killed, a
revision that changed since is refused before it changes anything, and ``kill -9`` of the
runner at a random point of a chain converges in 20 of 20 trials with nothing applied twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import sqlalchemy as sa

import servers
from factory import Rev, args_for, execute, migrategate, scalar, spawn, tables, versions, \
    wait_until, write_project

pytestmark = pytest.mark.slow

SEED = Rev("seed", None, '''
op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True))
op.create_table("counters", sa.Column("n", sa.Integer, nullable=False))
op.execute("INSERT INTO counters (n) VALUES (0)")
''')

#: five write statements: DDL, DML, DDL, then (after an optional pause) DDL and DML. The
#: third fails while there is no table ``gate``; the counter shows a DML statement applied
#: twice (it must end at 11).
HEADER = "import os, pathlib, time"
FIVE = Rev("five", "seed", '''
op.add_column("accounts", sa.Column("a", sa.Integer))
op.execute("UPDATE counters SET n = n + 1")
op.execute("ALTER TABLE gate ADD COLUMN g INT")
pause = os.environ.get("PAUSE_FILE")
if pause:
    pathlib.Path(pause).write_text("paused")
    time.sleep(120)
op.add_column("accounts", sa.Column("b", sa.Integer))
op.execute("UPDATE counters SET n = n + 10")
''', header=HEADER)


def _journal(url: str) -> List[Dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("migrategate_history_journal"):
                return []
            return [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT * FROM migrategate_history_journal ORDER BY id"))]
    finally:
        engine.dispose()


def _history(url: str, rev: str) -> List[Dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT * FROM migrategate_history WHERE revision = :r ORDER BY id"), {"r": rev})]
    finally:
        engine.dispose()


def _columns(url: str, table: str) -> List[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(c["name"] for c in sa.inspect(conn).get_columns(table))
    finally:
        engine.dispose()


def _killed_in_the_pause(url: str, mig: Path, tmp_path: Path) -> None:
    """Run upgrade until FIVE pauses after its third statement, then kill -9 the runner."""
    flag = tmp_path / "paused"
    proc = spawn("upgrade", *args_for(url, mig), env={"PAUSE_FILE": str(flag)})
    try:
        wait_until(flag.exists, timeout=60, what="the revision to reach its pause")
    finally:
        proc.kill()  # SIGKILL: the runner writes nothing more
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    wait_until(lambda: scalar(url, "SELECT count(*) FROM information_schema.PROCESSLIST "
                                   "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()") == 0,
               timeout=30, what="the dead runner's sessions to end")


# ---------------------------------------------------------------- a failed revision

def test_a_failure_in_the_third_of_five_statements_is_resumed_by_repair(tmp_path, mariadb_url):
    url = mariadb_url
    mig = write_project(tmp_path, [SEED, FIVE])
    failed = migrategate("upgrade", *args_for(url, mig))
    assert failed.code != 0 and "gate" in failed.output, failed.output
    assert versions(url) == ["seed"]
    assert _columns(url, "accounts") == ["a", "id"]
    # committed by the implicit commit MySQL runs before the failing ALTER
    assert scalar(url, "SELECT n FROM counters") == 1
    row = _history(url, "five")[-1]
    assert row["outcome"] == "failed"
    assert json.loads(row["committed_statements"]) == [
        "ALTER TABLE accounts ADD COLUMN a INTEGER", "UPDATE counters SET n = n + 1"], \
        "read back from the journal"

    again = migrategate("upgrade", *args_for(url, mig))
    assert again.code != 0
    assert "it failed, so it is not resumed: 'migrategate repair'" in again.output
    assert "Duplicate column name 'a'" in again.output  # a plain re-run: the trap

    execute(url, "CREATE TABLE gate (id INT)")  # the cause, fixed
    shown = migrategate("repair", "--json", *args_for(url, mig))
    assert shown.code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["outcome"] == "dry-run"
    assert doc["repair"]["revision"] == "five" and doc["repair"]["outcome"] == "failed"
    assert len(doc["repair"]["skip"]) == 2
    assert versions(url) == ["seed"] and "g" not in _columns(url, "gate"), "nothing without --yes"

    done = migrategate("repair", "--yes", *args_for(url, mig))
    assert done.code == 0, done.output
    assert versions(url) == ["five"]
    assert "g" in _columns(url, "gate") and _columns(url, "accounts") == ["a", "b", "id"]
    assert scalar(url, "SELECT n FROM counters") == 11, "each UPDATE ran once"
    last = _history(url, "five")[-1]
    assert last["outcome"] == "applied"
    assert "resumed run" in last["detail"] and "2 committed statement(s) skipped" in last["detail"]


def test_a_revision_changed_since_its_attempt_is_refused_before_it_changes_anything(
        tmp_path, mariadb_url):
    url = mariadb_url
    mig = write_project(tmp_path, [SEED, FIVE])
    assert migrategate("upgrade", *args_for(url, mig)).code != 0
    execute(url, "CREATE TABLE gate (id INT)")
    path = next((mig / "versions").glob("*_five.py"))
    path.write_text(path.read_text().replace('sa.Column("a"', 'sa.Column("c"'))

    refused = migrategate("repair", "--yes", *args_for(url, mig))
    assert refused.code == 2, refused.output
    assert "write statement #1 is now 'ALTER TABLE accounts ADD COLUMN c INTEGER'" in \
        refused.output
    assert "'ALTER TABLE accounts ADD COLUMN a INTEGER' there" in refused.output
    assert _columns(url, "accounts") == ["a", "id"] and "g" not in _columns(url, "gate")
    assert scalar(url, "SELECT n FROM counters") == 1
    assert versions(url) == ["seed"]


def test_upgrade_resumes_a_revision_whose_runner_was_killed(tmp_path, mariadb_url):
    url = mariadb_url
    execute(url, "CREATE TABLE gate (id INT)")
    mig = write_project(tmp_path, [SEED, FIVE])
    _killed_in_the_pause(url, mig, tmp_path)
    assert versions(url) == ["seed"] and scalar(url, "SELECT n FROM counters") == 1
    assert not _history(url, "five"), "a runner killed outright writes no history row"
    assert [(r["position"], r["kind"]) for r in _journal(url) if r["revision"] == "five"] == [
        (-1, "begin"), (0, "ddl"), (1, "dml"), (2, "ddl")]

    rerun = migrategate("upgrade", *args_for(url, mig))
    assert rerun.code == 0, rerun.output
    assert "ended without recording five (its runner was killed or lost): recorded now as " \
           "interrupted" in rerun.output
    assert "resuming it, 3 committed statement(s) skipped" in rerun.output
    assert versions(url) == ["five"]
    assert scalar(url, "SELECT n FROM counters") == 11
    dead, resumed = _history(url, "five")
    assert dead["outcome"] == "interrupted" and "was gone before it recorded" in dead["detail"]
    assert len(json.loads(dead["committed_statements"])) == 3
    assert resumed["outcome"] == "applied" and dead["run_id"] in resumed["detail"]
    assert migrategate("verify", *args_for(url, mig)).code == 0


def test_the_statement_whose_journal_row_was_lost_is_checked_not_repeated(tmp_path,
                                                                          mariadb_url):
    """Simulates a runner killed after ALTER TABLE gate committed and before its journal row
    did (a window of one round trip) by deleting that row after a kill: what it does not
    simulate is the server still running the ALTER when the resume starts (the resume's
    ALTER then waits for it on the metadata lock, and gets the same answer)."""
    url = mariadb_url
    execute(url, "CREATE TABLE gate (id INT)")
    mig = write_project(tmp_path, [SEED, FIVE])
    _killed_in_the_pause(url, mig, tmp_path)
    execute(url, "DELETE FROM migrategate_history_journal WHERE revision = 'five' "
                 "AND position = 2")

    rerun = migrategate("upgrade", *args_for(url, mig))
    assert rerun.code == 0, rerun.output
    assert "resuming it, 2 committed statement(s) skipped" in rerun.output
    assert "ALTER TABLE gate ADD COLUMN g INT had committed before run" in rerun.output
    assert "Duplicate column name 'g'" in rerun.output  # the server's own answer, quoted
    assert scalar(url, "SELECT n FROM counters") == 11 and versions(url) == ["five"]


def test_no_resume_runs_the_revision_from_its_first_statement(tmp_path, mariadb_url):
    url = mariadb_url
    execute(url, "CREATE TABLE gate (id INT)")
    mig = write_project(tmp_path, [SEED, FIVE])
    _killed_in_the_pause(url, mig, tmp_path)
    plain = migrategate("upgrade", "--no-resume", *args_for(url, mig))
    assert plain.code != 0
    assert "--no-resume: five runs from its first statement" in plain.output
    assert "Duplicate column name 'a'" in plain.output
    assert scalar(url, "SELECT n FROM counters") == 1


def test_postgresql_keeps_no_journal(tmp_path, pg_url):
    """Its DDL is transactional: a revision is all there or not at all."""
    mig = write_project(tmp_path, [SEED])
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0
    assert "migrategate_history_journal" not in tables(pg_url)


# ---------------------------------------------------------------- kill -9, 20 times

#: four revisions of five write statements each (DDL and DML mixed); a pause after each
#: statement spreads the run over ~2 s, so a kill lands inside statements, between them
#: and between revisions
def _slow(rev: str, down: str, k: int) -> Rev:
    return Rev(rev, down, f'''
op.create_table("t{k}", sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("v", sa.Integer))
time.sleep(0.1)
op.execute("INSERT INTO t{k} (id, v) VALUES (1, 1), (2, 2)")
op.execute("UPDATE counters SET n = n + {10 ** (k - 1)}")
time.sleep(0.1)
op.add_column("accounts", sa.Column("c{k}", sa.Integer))
op.execute("SELECT SLEEP(0.1)")
op.create_index("ix_t{k}_v", "t{k}", ["v"])
time.sleep(0.1)
''', header="import time")


CHAIN = [SEED] + [_slow(f"s{k}", "seed" if k == 1 else f"s{k - 1}", k) for k in range(1, 5)]


def _snapshot(url: str) -> Tuple[Any, ...]:
    """The schema (tables, columns, indexes) and every row the chain writes."""
    ours = "TABLE_SCHEMA = DATABASE() AND TABLE_NAME NOT LIKE 'migrategate%'"
    cols = scalar_rows(url, "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM "
                            f"information_schema.COLUMNS WHERE {ours} ORDER BY 1, 2")
    idx = scalar_rows(url, "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, SEQ_IN_INDEX FROM "
                           f"information_schema.STATISTICS WHERE {ours} ORDER BY 1, 2, 4")
    data = [scalar_rows(url, f"SELECT * FROM t{k} ORDER BY id") for k in range(1, 5)]
    return (cols, idx, data, scalar(url, "SELECT n FROM counters"), versions(url))


def scalar_rows(url: str, query: str) -> List[Tuple[Any, ...]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def test_kill_9_at_a_random_point_converges_20_of_20(tmp_path, mariadb_server):
    mig = write_project(tmp_path, CHAIN)
    reference = servers.create_database(mariadb_server)
    started = time.monotonic()
    clean = migrategate("upgrade", *args_for(reference, mig))
    whole = time.monotonic() - started
    assert clean.code == 0, clean.output
    expected = _snapshot(reference)
    assert expected[3] == 1111

    rng = random.Random(int(os.environ.get("MIGRATEGATE_KILL_SEED", "20261207")))
    resumed = converged = 0
    for trial in range(20):
        url = servers.create_database(mariadb_server)
        proc = spawn("upgrade", *args_for(url, mig))
        time.sleep(rng.uniform(0.2, whole))
        proc.kill()
        proc.communicate(timeout=30)
        rerun = migrategate("upgrade", *args_for(url, mig))
        assert rerun.code == 0, f"trial {trial}: {rerun.output}"
        resumed += "resuming it" in rerun.output
        got = _snapshot(url)
        assert got == expected, f"trial {trial}: {got} != {expected}\n{rerun.output}"
        converged += 1
    assert converged == 20
    print(f"kill -9 trials: 20 of 20 converged, {resumed} resumed a half-applied revision")
    assert resumed >= 5, "the kills must land inside revisions, or this proves nothing"
