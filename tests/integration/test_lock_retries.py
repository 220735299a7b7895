"""--lock-retries: an ALTER that can't get its lock steps back instead of stalling the app."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from factory import Rev, args_for, chain, hold_table, migrategate, spawn, write_project

pytestmark = pytest.mark.slow


def _upgrade_while_blocked(url, mig, *flags, release_on="never"):
    """``upgrade`` while a blocker reads t1; the blocker lets go once stderr shows
    ``release_on`` (or the run ends). Returns (exit code, stderr, the blocker's session id)."""
    release, blocker, session = hold_table(url)
    try:
        code, _, err = _run_until(["upgrade", *args_for(url, mig), *flags], release_on, release)
    finally:
        release.set()
        blocker.join()
    return code, err, session


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


def _project(tmp_path, url, body, at="log"):
    """r001 (t1) -> log (events) -> alter (``body``); the database upgraded to ``at``."""
    mig = write_project(tmp_path, chain(1) + [
        Rev("log", "r001", 'op.create_table("events", sa.Column("what", sa.String(40)))',
            "events"),
        Rev("alter", "log", body, "alter t1")])
    assert migrategate("upgrade", *args_for(url, mig), "--to", at).code == 0
    return mig


STATEMENT_LOG_ENV = """
import os
from alembic import context
from sqlalchemy import engine_from_config, event, pool

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                            prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection, open(os.environ["STATEMENT_LOG"], "a") as log:
    @event.listens_for(connection, "before_cursor_execute")
    def record(conn, cursor, statement, *args):
        log.write(" ".join(statement.split()) + "\\n")

    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""


def test_blocked_alter_is_retried_until_the_blocker_ends_and_applied_once(pg_url, tmp_path):
    body = ("op.execute(\"INSERT INTO events VALUES ('before the alter')\")\n"
            'op.add_column("t1", sa.Column("x", sa.Integer))')
    mig = _project(tmp_path, pg_url, body)

    # the blocker lets go once the second attempt has timed out too
    code, err, _ = _upgrade_while_blocked(pg_url, mig, "--pg-lock-timeout", "0.1",
                                          "--lock-retries", "60", release_on="(attempt 2/61)")

    assert code == 0, err
    assert "x" in _columns(pg_url, "t1")
    # each failed attempt was rolled back whole: the insert before the ALTER ran once
    assert _rows(pg_url, "SELECT what FROM events") == [("before the alter",)]
    assert "alter waiting for a lock on t1 held by pid" in err
    assert "report-query" in err and "(attempt 1/61)" in err


def test_spent_attempts_exit_6_naming_the_blocking_session(pg_url, tmp_path):
    mig = _project(tmp_path, pg_url, 'op.add_column("t1", sa.Column("x", sa.Integer))')

    code, err, _ = _upgrade_while_blocked(pg_url, mig, "--pg-lock-timeout", "0.1",
                                          "--lock-retries", "2")

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

    code, err, _ = _upgrade_while_blocked(pg_url, mig, "--pg-lock-timeout", "0.1",
                                          "--lock-retries", "20")

    assert code == 6, err
    assert "attempt" not in err  # committed statements can't be rolled back: no retry
    assert "committed outside its transaction" in err


def test_a_blocked_revision_after_the_first_is_retried_as_its_whole_transaction(
        pg_url, tmp_path):
    # the run starts at r001, so "alter" is the run's second revision: its transaction began
    # with it, and an attempt is undone by rolling that transaction back (no SAVEPOINT)
    body = ("op.execute(\"INSERT INTO events VALUES ('before the alter')\")\n"
            'op.add_column("t1", sa.Column("x", sa.Integer))')
    mig = _project(tmp_path, pg_url, body, at="r001")

    code, err, pid = _upgrade_while_blocked(pg_url, mig, "--pg-lock-timeout", "0.1",
                                            "--lock-retries", "60", release_on="(attempt 2/61)")

    assert code == 0, err
    assert "x" in _columns(pg_url, "t1")
    assert _rows(pg_url, "SELECT what FROM events") == [("before the alter",)]
    assert _rows(pg_url, "SELECT version_num FROM alembic_version") == [("alter",)]
    assert f"alter waiting for a lock on t1 held by pid {pid} (report-query" in err


@pytest.mark.parametrize("commit", [
    'op.execute("COMMIT")',
    # the DBAPI connection's own commit() fires no SQLAlchemy event; the driver's
    # transaction status before the next statement gives it away
    "op.get_bind().connection.commit()",
    # a commit inside a multi-statement string: neither SQLAlchemy nor the driver's status
    # shows it (AND CHAIN opens the next transaction at once)
    'op.execute("SELECT 1; COMMIT AND CHAIN")',
    'op.execute("SELECT 1; COMMIT; BEGIN")',
], ids=["COMMIT statement", "driver commit", "COMMIT AND CHAIN after a statement",
        "COMMIT; BEGIN after a statement"])
def test_a_revision_that_ended_its_own_transaction_is_not_retried(commit, pg_url, tmp_path):
    body = ("op.execute(\"INSERT INTO events VALUES ('before the commit')\")\n"
            f"{commit}\n"
            'op.add_column("t1", sa.Column("x", sa.Integer))')
    mig = _project(tmp_path, pg_url, body, at="r001")

    code, err, _ = _upgrade_while_blocked(pg_url, mig, "--pg-lock-timeout", "0.1",
                                          "--lock-retries", "20")

    assert code == 6, err
    assert "attempt" not in err
    assert "not retried: the revision ended its own transaction (COMMIT)" in err
    assert "half-applied" in err
    # the commit made the insert permanent: a retry would have inserted it twice
    assert _rows(pg_url, "SELECT what FROM events") == [("before the commit",)]


def test_with_single_transaction_a_blocked_revision_is_retried_to_a_savepoint(
        pg_url, tmp_path):
    # one transaction for the whole run: rolling it back would undo "log" too
    body = ("op.execute(\"INSERT INTO events VALUES ('before the alter')\")\n"
            'op.add_column("t1", sa.Column("x", sa.Integer))')
    mig = _project(tmp_path, pg_url, body, at="r001")

    code, err, _ = _upgrade_while_blocked(pg_url, mig, "--single-transaction",
                                          "--pg-lock-timeout", "0.1", "--lock-retries", "60",
                                          release_on="(attempt 2/61)")

    assert code == 0, err
    assert "x" in _columns(pg_url, "t1")
    assert _rows(pg_url, "SELECT what FROM events") == [("before the alter",)]
    assert _rows(pg_url, "SELECT version_num FROM alembic_version") == [("alter",)]


def test_a_revision_that_is_not_blocked_costs_no_statement_for_being_retryable(
        pg_url, tmp_path):
    mig = write_project(tmp_path, chain(4))
    (mig / "env.py").write_text(STATEMENT_LOG_ENV)
    log = tmp_path / "statements.log"

    run = migrategate("upgrade", *args_for(pg_url, mig), "--lock-retries", "5",
                      env={"STATEMENT_LOG": str(log)})

    assert run.code == 0, run.output
    statements = log.read_text().splitlines()
    # only the run's first revision shares its transaction with the version table's
    # creation, so only it runs after a SAVEPOINT; no SET LOCAL: the session has the timeout
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1
    assert not [s for s in statements if "lock_timeout" in s]


def test_without_a_pg_lock_timeout_retries_start_at_one_second(pg_url, tmp_path):
    mig = _project(tmp_path, pg_url, 'op.add_column("t1", sa.Column("x", sa.Integer))')

    code, err, _ = _upgrade_while_blocked(pg_url, mig, "--lock-retries", "1")

    assert code == 6, err  # two attempts (1 s, 2 s) timed out: the session had a timeout
    assert "(attempt 1/2)" in err and "x" not in _columns(pg_url, "t1")


# ---------------------------------------------------------------- MySQL / MariaDB

def test_mysql_a_blocked_alter_is_retried_until_the_blocker_ends(mariadb_url, tmp_path):
    mig = _project(tmp_path, mariadb_url, 'op.add_column("t1", sa.Column("x", sa.Integer))')

    # lock_wait_timeout 1 s each attempt; the blocker lets go after the second attempt
    code, err, connection_id = _upgrade_while_blocked(mariadb_url, mig, "--lock-retries", "10",
                                                      release_on="(attempt 2/11)")

    assert code == 0, err
    assert "x" in _columns(mariadb_url, "t1")
    assert "alter waiting for a lock on t1 held by one of the sessions with an open " \
           f"transaction: connection {connection_id} " in err


def test_mysql_a_revision_that_already_changed_something_is_not_retried(
        mariadb_url, tmp_path):
    body = ("op.execute(\"INSERT INTO events VALUES ('before the alter')\")\n"
            'op.add_column("t1", sa.Column("x", sa.Integer))')
    mig = _project(tmp_path, mariadb_url, body)

    code, err, _ = _upgrade_while_blocked(mariadb_url, mig, "--mysql-lock-wait-timeout", "1",
                                          "--lock-retries", "10")

    assert code == 6, err
    assert "attempt" not in err
    assert "not retried: 'INSERT INTO events VALUES ('before the alter')' of this revision " \
           "had already committed" in err
    # why: the ALTER's implicit commit made the INSERT permanent before it waited
    assert _rows(mariadb_url, "SELECT what FROM events") == [("before the alter",)]
    assert "x" not in _columns(mariadb_url, "t1")


def test_mysql_a_dml_statement_that_timed_out_is_not_retried(mariadb_url, tmp_path):
    mig = _project(tmp_path, mariadb_url,
                   "op.execute(\"INSERT INTO t1 (id, name) VALUES (1, 'row')\")")
    engine = sa.create_engine(mariadb_url, poolclass=sa.pool.NullPool)
    with engine.connect() as blocker:  # an exclusive metadata lock: the INSERT waits on it
        blocker.execute(sa.text("LOCK TABLES t1 WRITE"))
        run = migrategate("upgrade", *args_for(mariadb_url, mig), "--lock-retries", "5")
        blocker.execute(sa.text("UNLOCK TABLES"))
    engine.dispose()

    assert run.code == 6, run.output
    assert "[MySQL error 1205]" in run.stderr
    assert "attempt" not in run.stderr
    assert "not retried: 'INSERT INTO t1 (id, name) VALUES (1, 'row')' is not DDL" in run.stderr
    assert _rows(mariadb_url, "SELECT count(*) FROM t1") == [(0,)]


def test_mysql_spent_attempts_exit_6_naming_the_blocking_session(mariadb_url, tmp_path):
    mig = _project(tmp_path, mariadb_url, 'op.add_column("t1", sa.Column("x", sa.Integer))')

    code, err, connection_id = _upgrade_while_blocked(mariadb_url, mig,
                                                      "--mysql-lock-wait-timeout", "1",
                                                      "--lock-retries", "1")

    assert code == 6, err
    assert "[MySQL error 1205]" in err
    assert "it had changed nothing when its DDL statement timed out: nothing of it is " \
           "applied" in err
    assert f"every lock-retry attempt timed out waiting for a lock on t1 held by one of the " \
           f"sessions with an open transaction: connection {connection_id} " in err


@pytest.mark.parametrize("url, flags, message", [
    ("sqlite:///{tmp}/x.db", ["--lock-retries", "3"],
     "--lock-retries (flag --lock-retries) works on PostgreSQL and MySQL/MariaDB only"),
    ("postgresql://u@127.0.0.1:1/x", ["--mysql-lock-wait-timeout", "2"],
     "--mysql-lock-wait-timeout (flag --mysql-lock-wait-timeout) works on MySQL/MariaDB only"),
    ("mysql+pymysql://u@127.0.0.1:1/x", ["--pg-lock-timeout", "2"],
     "--pg-lock-timeout (flag --pg-lock-timeout) works on PostgreSQL only"),
    ("mysql+pymysql://u@127.0.0.1:1/x", ["--statement-timeout", "2"],
     "--statement-timeout (flag --statement-timeout) works on PostgreSQL only"),
])
def test_an_option_the_database_would_ignore_is_refused(url, flags, message, tmp_path):
    run = migrategate("upgrade", *args_for(url.format(tmp=tmp_path),
                                           write_project(tmp_path, chain(1))), *flags)

    assert run.code == 2, run.output
    assert message in run.stderr


def test_statement_timeout_stops_a_runaway_statement(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1) + [Rev("slow", "r001",
                                                  'op.execute("SELECT pg_sleep(30)")', "slow")])

    run = migrategate("upgrade", *args_for(pg_url, mig), "--statement-timeout", "1",
                      timeout=60)

    assert run.code == 6, run.output
    assert "[SQLSTATE 57014]" in run.stderr  # query_canceled by statement_timeout



