"""Truth under faults, part 2: a lost lock, hostile app code, commit-time failures and
database errors each end with their own exit code and an honest account of what committed.

Every scenario runs the real CLI against the suite's real PostgreSQL / MariaDB.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa

from factory import (Rev, SilentListener, args_for, chain, hold_lock, migrategate, scalar,
                     spawn, tables, versions, wait_until, write_project)

pytestmark = pytest.mark.slow


def _engine(url):
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _execute(url, *statements):
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            return [conn.execute(sa.text(s)).fetchall() if s.lstrip().upper().startswith(
                ("SELECT", "SHOW")) else conn.execute(sa.text(s)) and None for s in statements]
    finally:
        engine.dispose()


def _balance_revisions(slow_sql):
    """A table with balances, then a revision that multiplies them by 100 after a slow step:
    applied twice, the balance shows it (5 -> 50000)."""
    return [
        Rev("acct", None, 'op.create_table("acct", sa.Column("id", sa.Integer), '
                          'sa.Column("bal", sa.Integer))\n'
                          "op.execute(\"INSERT INTO acct VALUES (1, 5)\")", "accounts"),
        Rev("x100", "acct", f'op.execute("{slow_sql}")\n'
                            'op.execute("UPDATE acct SET bal = bal * 100")', "cents"),
    ]


# ---------------------------------------------------------------- the lock survives idle timers

def _two_runners(url, mig):
    procs = [spawn("upgrade", *args_for(url, mig)) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, o[1]) for p, o in zip(procs, outs)]


def test_pg_idle_session_timeout_does_not_free_the_lock(pg_url, tmp_path):
    database = sa.engine.make_url(pg_url).database
    _execute(pg_url, f"ALTER DATABASE {database} SET idle_session_timeout = '1s'")
    mig = write_project(tmp_path, _balance_revisions("SELECT pg_sleep(3)"))

    results = _two_runners(pg_url, mig)

    assert [code for code, _ in results] == [0, 0], results
    assert scalar(pg_url, "SELECT bal FROM acct") == 500  # multiplied exactly once
    assert versions(pg_url) == ["x100"]


def test_mariadb_wait_timeout_does_not_free_the_lock(mariadb_url, tmp_path):
    mig = write_project(tmp_path, _balance_revisions("SELECT SLEEP(4)"))
    before = scalar(mariadb_url, "SELECT @@GLOBAL.wait_timeout")
    _execute(mariadb_url, "SET GLOBAL wait_timeout = 2")
    try:
        results = _two_runners(mariadb_url, mig)
    finally:
        _execute(mariadb_url, f"SET GLOBAL wait_timeout = {int(before)}")

    assert [code for code, _ in results] == [0, 0], results
    assert scalar(mariadb_url, "SELECT bal FROM acct") == 500
    assert versions(mariadb_url) == ["x100"]


# ---------------------------------------------------------------- a lost lock stops the run

def _pg_lock_holder(url):
    from migrategate.lock import pg_lock_key

    key = pg_lock_key("migrategate") & 0xFFFFFFFFFFFFFFFF
    rows = _execute(url, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                         f"AND classid::bigint = {key >> 32} "
                         f"AND objid::bigint = {key & 0xFFFFFFFF}")[0]
    return rows[0][0] if rows else None


def _mysql_lock_holder(url):
    database = sa.engine.make_url(url).database
    return scalar(url, f"SELECT IS_USED_LOCK('migrategate:{database}')")


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_lock_killed_mid_revision_exits_11_and_commits_nothing_more(backend, request, tmp_path):
    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[backend])
    sleep = "SELECT pg_sleep(30)" if backend == "postgresql" else "SELECT SLEEP(30)"
    mig = write_project(tmp_path, _balance_revisions(sleep))
    runner = spawn("upgrade", *args_for(url, mig), "--json")
    holder = _pg_lock_holder if backend == "postgresql" else _mysql_lock_holder
    session = wait_until(lambda: holder(url), what="the runner's lock")
    wait_until(lambda: "acct" in tables(url) and versions(url) == ["acct"],
              what="the first revision to commit")

    # a DBA (or an idle timer, or a proxy) ends the lock session while x100 runs
    _execute(url, f"SELECT pg_terminate_backend({session})" if backend == "postgresql"
             else f"KILL {session}")
    out, err = runner.communicate(timeout=60)

    assert runner.returncode == 11, err
    report = json.loads(out)
    assert report["outcome"] == "lock-lost"
    assert report["failed_revision"] == "x100"
    assert [a["revision"] for a in report["applied"]] == ["acct"]
    assert "lock was lost during revision x100" in err
    assert versions(url) == ["acct"]
    assert scalar(url, "SELECT bal FROM acct") == 5  # the UPDATE never ran
    # and nothing of the stopped run keeps executing on the server
    if backend == "postgresql":
        assert scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                            "'%pg_sleep(30)%' AND pid <> pg_backend_pid()") == 0
    else:
        assert scalar(url, "SELECT count(*) FROM information_schema.PROCESSLIST WHERE "
                            "INFO = 'SELECT SLEEP(30)'") == 0


# ---------------------------------------------------------------- dead runner, live statement

def test_mariadb_rerun_waits_for_a_killed_runners_alter_still_running(mariadb_url, tmp_path):
    """kill -9 mid ALTER ... ALGORITHM=COPY: MariaDB runs the dead client's ALTER to its end.
    The next runner waits for it instead of running the same ALTER alongside it, then
    resumes the revision with that ALTER counted as committed."""
    rows = "INSERT INTO big (v) SELECT seq FROM seq_1_to_1500000"
    revs = [Rev("big", None, 'op.create_table("big", sa.Column("id", sa.Integer, '
                             'primary_key=True, autoincrement=True), sa.Column("v", sa.Integer))\n'
                             f'op.execute("{rows}")', "big table"),
            Rev("wide", "big", 'op.execute("ALTER TABLE big ADD COLUMN w INT DEFAULT 7, '
                               'ALGORITHM=COPY")', "widen")]
    mig = write_project(tmp_path, revs)
    first = spawn("upgrade", *args_for(mariadb_url, mig))
    wait_until(lambda: scalar(mariadb_url, "SELECT count(*) FROM information_schema.PROCESSLIST "
                                           "WHERE INFO LIKE 'ALTER TABLE big%'"),
              what="the ALTER to start")
    first.kill()  # SIGKILL: no cleanup of any kind
    first.wait()

    second = migrategate("upgrade", *args_for(mariadb_url, mig), timeout=120)

    assert "waiting for an earlier runner's statement to finish" in second.stderr
    assert "ALTER TABLE big" in second.stderr  # names what it waits for
    # the orphaned ALTER committed its DDL but not the version row; the journal says the
    # revision had started, so the re-run resumes it: its ALTER, run again, gets "duplicate
    # column" from the server, which is taken as "it had committed" (test_resume.py)
    assert second.code == 0, second.output
    assert "stopped in wide with none of its statements recorded as committed" in second.output
    assert "had committed before run" in second.output
    assert "Duplicate column name 'w'" in second.output
    assert versions(mariadb_url) == ["wide"]
    assert scalar(mariadb_url, "SELECT count(*) FROM big WHERE w = 7") == 1500000


# ---------------------------------------------------------------- another migrator

def test_a_migrator_that_is_not_migrategate_racing_us_is_named(pg_url, tmp_path):
    revs = chain(1) + [Rev("r002", "r001", 'op.execute("SELECT pg_sleep(3)")\n'
                                           'op.create_table("t2", sa.Column("id", sa.Integer))',
                           "slow")]
    mig = write_project(tmp_path, revs)
    runner = spawn("upgrade", *args_for(pg_url, mig))
    wait_until(lambda: versions(pg_url) == ["r001"], what="r001")
    # e.g. Dify's own 'flask upgrade-db' left enabled: it moves alembic_version itself,
    # and its session is still connected when the runner finds out
    engine = _engine(pg_url)
    with engine.connect() as other:
        other.execute(sa.text("SET application_name = 'flask-upgrade-db'"))
        other.execute(sa.text("UPDATE alembic_version SET version_num = 'r002'"))
        other.commit()
        pid = other.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        other.commit()
        out, err = runner.communicate(timeout=60)
    engine.dispose()

    assert runner.returncode == 6, err
    assert "another migrator is running" in err
    assert "alembic_version now holds r002" in err
    sessions = err.split("other sessions: ", 1)[-1].splitlines()[0]
    assert f"pid {pid} (flask-upgrade-db)" in sessions, err
    assert "fix env.py" not in err


# ---------------------------------------------------------------- hostile app code

ENV_PRELUDE = "import os, sys\n"


def _hostile_env(tmp_path, code_before_migrating):
    mig = write_project(tmp_path, chain(2))
    env_py = mig / "env.py"
    env_py.write_text(ENV_PRELUDE + code_before_migrating + "\n" + env_py.read_text())
    return mig


@pytest.mark.parametrize("exit_call, named", [
    ("os._exit(0)", "exited with status 0 without finishing"),
    ("sys.exit(0)", "called sys.exit(0)"),
])
def test_env_py_exiting_0_cannot_fake_success(exit_call, named, pg_url, tmp_path):
    mig = _hostile_env(tmp_path, exit_call)

    run = migrategate("upgrade", *args_for(pg_url, mig))

    assert run.code == 6, run.output
    assert named in run.stderr
    assert versions(pg_url) == []


def test_a_segfaulting_revision_is_named(pg_url, tmp_path):
    revs = chain(1) + [Rev("boom", "r001", "import ctypes\nctypes.string_at(0)", "segfault")]
    mig = write_project(tmp_path, revs)

    run = migrategate("upgrade", *args_for(pg_url, mig), "--json")

    assert run.code == 6, run.output
    assert "killed by SIGSEGV during revision boom" in run.stderr
    report = json.loads(run.stdout)
    assert report["failed_revision"] == "boom"
    assert [a["revision"] for a in report["applied"]] == ["r001"]
    assert versions(pg_url) == ["r001"]


def test_a_revision_leaving_a_non_daemon_thread_does_not_hang_the_run(pg_url, tmp_path):
    body = ("import threading, time\n"
            "threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()\n"
            'op.create_table("t2", sa.Column("id", sa.Integer))')
    mig = write_project(tmp_path, chain(1) + [Rev("r002", "r001", body, "thread")])

    run = migrategate("upgrade", *args_for(pg_url, mig), timeout=60)

    assert run.code == 0, run.output
    assert versions(pg_url) == ["r002"]


def test_print_in_env_py_goes_to_stderr_and_json_stays_one_document(pg_url, tmp_path):
    mig = _hostile_env(tmp_path, 'print("hello from env.py")\nprint("{not json")')

    run = migrategate("upgrade", *args_for(pg_url, mig), "--json")

    assert run.code == 0, run.output
    report = json.loads(run.stdout)  # the whole of stdout is the report
    assert report["outcome"] == "verified"
    assert "hello from env.py" in run.stderr


# ---------------------------------------------------------------- what committed, and only that

def test_failure_at_commit_names_the_revision_and_lists_only_what_committed(pg_url, tmp_path):
    deferred = (
        'op.execute("CREATE TABLE parent (id int PRIMARY KEY)")\n'
        'op.execute("CREATE TABLE child (pid int REFERENCES parent (id) '
        'DEFERRABLE INITIALLY DEFERRED)")\n'
        'op.execute("INSERT INTO child VALUES (42)")')  # fails only at COMMIT
    mig = write_project(tmp_path, chain(2) + [Rev("fk", "r002", deferred, "deferred fk")])

    run = migrategate("upgrade", *args_for(pg_url, mig), "--json")

    assert run.code == 6, run.output
    report = json.loads(run.stdout)
    assert report["failed_revision"] == "fk"
    assert [a["revision"] for a in report["applied"]] == ["r001", "r002"]
    assert "revision fk (deferred fk) failed at COMMIT [SQLSTATE 23503]" in run.stderr
    assert "nothing was applied" not in run.stderr
    assert versions(pg_url) == ["r002"]
    assert "child" not in tables(pg_url)


def test_autocommit_block_failure_says_what_committed_outside_the_transaction(pg_url,
                                                                              tmp_path):
    body = ('op.add_column("t1", sa.Column("email", sa.String(50)))\n'
            "with op.get_context().autocommit_block():\n"
            '    op.execute("CREATE INDEX CONCURRENTLY ix_t1_email ON t1 (email)")\n'
            'op.execute("SELECT * FROM no_such_table")')
    mig = write_project(tmp_path, chain(1) + [Rev("conc", "r001", body, "concurrent index")])

    run = migrategate("upgrade", *args_for(pg_url, mig))

    assert run.code == 6, run.output
    assert "committed outside its transaction" in run.stderr
    assert "CREATE INDEX CONCURRENTLY ix_t1_email ON t1 (email)" in run.stderr
    assert "half-applied" in run.stderr
    assert "nothing of it is applied" not in run.stderr
    assert versions(pg_url) == ["r001"]


# ---------------------------------------------------------------- database errors, by code

def test_missing_database_fails_at_once_with_a_clear_error(postgres_server, mariadb_server,
                                                           tmp_path):
    mig = write_project(tmp_path, chain(1))
    for server in (postgres_server, mariadb_server):
        url = server.url("no_such_database")

        run = migrategate("upgrade", *args_for(url, mig), "--connect-timeout", "60")

        assert run.code == 2, run.output
        assert "database 'no_such_database' does not exist" in run.stderr
        assert "waiting for database" not in run.stderr  # not retried as "unreachable"


def test_missing_privilege_is_its_own_outcome(pg_url, mariadb_url, tmp_path):
    pg = sa.engine.make_url(pg_url)
    _execute(pg_url, "CREATE ROLE reader LOGIN PASSWORD 'reader-pw'",
             f"GRANT CONNECT ON DATABASE {pg.database} TO reader",
             "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    my = sa.engine.make_url(mariadb_url)
    _execute(mariadb_url, "CREATE USER IF NOT EXISTS 'reader'@'%' IDENTIFIED BY 'reader-pw'",
             f"GRANT SELECT ON {my.database}.* TO 'reader'@'%'")
    mig = write_project(tmp_path, chain(1))
    for url in (pg.set(username="reader", password="reader-pw"),
                my.set(username="reader", password="reader-pw")):
        run = migrategate("upgrade", *args_for(url.render_as_string(hide_password=False), mig))

        assert run.code == 12, run.output
        assert "permission denied" in run.stderr, run.stderr
        assert "migrategate bug" not in run.output


def test_classification_uses_the_sqlstate_not_the_english_text(pg_url, tmp_path):
    """A real server error with SQLSTATE 42501 and a German message: still 'permission'."""
    raise_ = ("op.execute(\"DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '42501', "
              "MESSAGE = 'Keine Berechtigung für Tabelle konto'; END $$\")")
    mig = write_project(tmp_path, chain(1) + [Rev("de", "r001", raise_, "localised")])

    run = migrategate("upgrade", *args_for(pg_url, mig))

    assert run.code == 12, run.output
    assert "[SQLSTATE 42501]" in run.stderr


def test_connect_errors_without_sqlstate_are_never_unreachable_when_the_server_answered():
    """libpq drops the SQLSTATE of connect-time errors; a localised FATAL from the server is
    a refusal (exit 4, not retried), while libpq's own network texts stay unreachable."""
    import psycopg2
    import pymysql

    from migrategate import dberrors

    german = psycopg2.OperationalError(
        'connection to server at "db" (127.0.0.1), port 5432 failed: SCHWERWIEGEND:  '
        "Passwort-Authentifizierung für Benutzer »app« fehlgeschlagen\n")
    refused = psycopg2.OperationalError(
        'connection to server at "db" (127.0.0.1), port 5432 failed: Connection refused\n')
    assert dberrors.category(german) == dberrors.REFUSED
    assert dberrors.category(refused) == dberrors.UNREACHABLE
    assert dberrors.category(pymysql.err.OperationalError(1045, "Zugriff verweigert")) \
        == dberrors.AUTH
    assert dberrors.category(pymysql.err.OperationalError(1049, "Unbekannte Datenbank")) \
        == dberrors.MISSING_DATABASE


def test_mysql_connect_timeout_holds_against_a_silent_listener(tmp_path):
    listener = SilentListener()
    mig = write_project(tmp_path, chain(1))
    try:
        url = f"mysql+pymysql://u:p@127.0.0.1:{listener.port}/db"
        started = time.monotonic()

        run = migrategate("upgrade", *args_for(url, mig), "--connect-timeout", "3", timeout=60)

        assert run.code == 3, run.output
        assert time.monotonic() - started < 30  # bounded by the timeout, not by the OS
    finally:
        listener.close()


@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "mysql+pymysql"])
def test_sigterm_ends_wait_at_once_while_the_server_is_silent(scheme, tmp_path):
    listener = SilentListener()
    mig = write_project(tmp_path, chain(1))
    try:
        proc = spawn("wait", *args_for(f"{scheme}://u:p@127.0.0.1:{listener.port}/db", mig),
                     "--timeout", "120")
        # inside the driver's blocking read now: PostgreSQL's client speaks first (its
        # startup packet) and then waits; MySQL's waits for the server's greeting at once
        wait_until(lambda: listener.conns and (scheme.startswith("mysql")
                                               or listener.heard_from()),
                   what="the driver to wait for the server's reply")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("wait ignored SIGTERM while the driver was connecting") \
                from None
        assert proc.returncode == 143, proc.stderr.read()
    finally:
        listener.close()


def test_losing_the_connection_while_waiting_for_the_lock_is_exit_3(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1))
    with hold_lock(pg_url):
        runner = spawn("upgrade", *args_for(pg_url, mig), "--lock-timeout", "60")
        assert runner.stderr is not None
        wait_until(lambda: 'waiting for lock "migrategate"' in runner.stderr.readline(),
                   what="the runner to queue for the lock")
        pids = _execute(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name "
                                "LIKE 'migrategate:%'")[0]
        assert pids, "the waiting runner has no session"
        _execute(pg_url, *[f"SELECT pg_terminate_backend({p})" for (p,) in pids])
        out, err = runner.communicate(timeout=60)

    assert runner.returncode == 3, err
    assert "migrategate bug" not in err
    assert versions(pg_url) == []


def test_no_database_error_is_reported_as_a_migrategate_bug(pg_url, tmp_path):
    """A statement of migrategate's own failing on the server is a database outcome."""
    mig = write_project(tmp_path, chain(1))
    _execute(pg_url, "CREATE TABLE alembic_version (oops int)")  # not Alembic's shape

    run = migrategate("upgrade", *args_for(pg_url, mig))

    assert run.code == 3, run.output  # a database failure, never "internal error"
    assert "[SQLSTATE 42703]" in run.stderr
    assert "migrategate bug" not in run.output


# ---------------------------------------------------------------- doctor finds the half-applied

def test_doctor_lists_what_a_half_applied_revision_left_once_each(mariadb_url, tmp_path):
    body = ('with op.batch_alter_table("t1") as batch_op:\n'
            '    batch_op.add_column(sa.Column("email", sa.String(50)))\n'
            '    batch_op.create_index("ix_t1_email", ["email"])\n'
            'op.create_unique_constraint("uq_t1_name", "t1", ["name"])\n'
            'op.execute("SELECT * FROM no_such_table")')
    mig = write_project(tmp_path, chain(1) + [Rev("half", "r001", body, "batch")])
    assert migrategate("upgrade", *args_for(mariadb_url, mig)).code == 6

    run = migrategate("doctor", *args_for(mariadb_url, mig))

    assert run.code != 0
    line = next(x for x in run.output.splitlines() if "half-applied" in x)
    for obj in ("column t1.email", "index t1.ix_t1_email", "constraint t1.uq_t1_name"):
        assert line.count(obj) == 1, line
    assert "loses any data written into those objects" in run.output
    assert "data changes among them would never run" in run.output


def test_doctor_names_an_invalid_index_left_by_a_failed_concurrent_build(pg_url, tmp_path):
    body = ('op.execute("INSERT INTO t1 (id, name) VALUES (1, \'a\'), (2, \'a\')")\n'
            "with op.get_context().autocommit_block():\n"
            '    op.execute("CREATE UNIQUE INDEX CONCURRENTLY uq_name ON t1 (name)")')
    mig = write_project(tmp_path, chain(1) + [Rev("uniq", "r001", body, "unique names")])
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 6

    run = migrategate("doctor", *args_for(pg_url, mig))

    assert "INVALID index(es) public.uq_name" in run.output
    assert "nothing is lost" in run.output
