"""--lock-retries: an ALTER that can't get its lock steps back instead of stalling the app."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from factory import Rev, args_for, chain, migrategate, spawn, write_project

pytestmark = pytest.mark.slow


def _hold_table(url, release, started):
    """An application transaction holding ACCESS SHARE on t1 until ``release`` is set."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                              connect_args={"application_name": "report-query"})
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM t1"))
        started.set()
        release.wait(60)
        conn.rollback()
    engine.dispose()


def _blocked(url):
    """Start a blocker; returns (release event, thread)."""
    release, held = threading.Event(), threading.Event()
    thread = threading.Thread(target=_hold_table, args=(url, release, held))
    thread.start()
    assert held.wait(30)
    return release, thread


def _run_until(args, line_wanted, release):
    """Run the CLI; release the blocker once stderr shows ``line_wanted`` (or it exits)."""
    proc = spawn(*args)
    err = []
    for line in proc.stderr:
        err.append(line)
        if line_wanted in line:
            release.set()
    out = proc.stdout.read()
    proc.wait(timeout=60)
    release.set()
    return proc.returncode, out, "".join(err)


def _columns(url, table):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [c["name"] for c in sa.inspect(conn).get_columns(table)]
    finally:
        engine.dispose()


def _rows(url, sql):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).fetchall()
    finally:
        engine.dispose()


def _project(tmp_path, pg_url, body):
    mig = write_project(tmp_path, chain(1) + [
        Rev("log", "r001", 'op.create_table("events", sa.Column("what", sa.String(40)))',
            "events"),
        Rev("alter", "log", body, "alter t1")])
    assert migrategate("upgrade", *args_for(pg_url, mig), "--to", "log").code == 0
    return mig


def test_blocked_alter_is_retried_until_the_blocker_ends_and_applied_once(pg_url, tmp_path):
    body = ("op.execute(\"INSERT INTO events VALUES ('before the alter')\")\n"
            'op.add_column("t1", sa.Column("x", sa.Integer))')
    mig = _project(tmp_path, pg_url, body)
    release, blocker = _blocked(pg_url)

    # the blocker lets go once the second attempt has timed out too
    code, out, err = _run_until(["upgrade", *args_for(pg_url, mig), "--pg-lock-timeout", "0.1",
                                 "--lock-retries", "60"], "(attempt 2/61)", release)
    blocker.join()

    assert code == 0, err
    assert "x" in _columns(pg_url, "t1")
    # each failed attempt was rolled back whole: the insert before the ALTER ran once
    assert _rows(pg_url, "SELECT what FROM events") == [("before the alter",)]
    assert "alter waiting for a lock on t1 held by pid" in err
    assert "report-query" in err and "(attempt 1/61)" in err


def test_spent_attempts_exit_6_naming_the_blocking_session(pg_url, tmp_path):
    mig = _project(tmp_path, pg_url, 'op.add_column("t1", sa.Column("x", sa.Integer))')
    release, blocker = _blocked(pg_url)

    code, out, err = _run_until(["upgrade", *args_for(pg_url, mig), "--pg-lock-timeout", "0.1",
                                 "--lock-retries", "2"], "never", release)
    blocker.join()

    assert code == 6, err
    assert "(attempt 2/3)" in err
    assert "every lock-retry attempt timed out waiting for a lock on t1 held by pid" in err
    assert "report-query" in err
    assert "x" not in _columns(pg_url, "t1")


def test_a_revision_that_committed_part_way_is_not_retried(pg_url, tmp_path):
    body = ("with op.get_context().autocommit_block():\n"
            '    op.execute("CREATE INDEX CONCURRENTLY ix_events ON events (what)")\n'
            'op.add_column("t1", sa.Column("x", sa.Integer))')
    mig = _project(tmp_path, pg_url, body)
    release, blocker = _blocked(pg_url)

    code, out, err = _run_until(["upgrade", *args_for(pg_url, mig), "--pg-lock-timeout", "0.1",
                                 "--lock-retries", "20"], "never", release)
    blocker.join()

    assert code == 6, err
    assert "attempt" not in err  # committed statements can't be rolled back: no retry
    assert "committed outside its transaction" in err


def test_lock_retries_are_refused_where_ddl_is_not_transactional(mariadb_url, tmp_path):
    run = migrategate("upgrade", *args_for(mariadb_url, write_project(tmp_path, chain(1))),
                      "--lock-retries", "3")

    assert run.code == 2 and "PostgreSQL only" in run.stderr


def test_statement_timeout_stops_a_runaway_statement(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1) + [Rev("slow", "r001",
                                                  'op.execute("SELECT pg_sleep(30)")', "slow")])

    run = migrategate("upgrade", *args_for(pg_url, mig), "--statement-timeout", "1",
                      timeout=60)

    assert run.code == 6, run.output
    assert "[SQLSTATE 57014]" in run.stderr  # query_canceled by statement_timeout



