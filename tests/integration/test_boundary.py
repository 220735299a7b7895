"""Truth, part 3: nothing of the app runs in the parent, no pipe app code can hold decides the
end of a run, and what a report says committed is read back from the database.

Each scenario is hostile app code (a revision file or env.py) against the real CLI and the
suite's real PostgreSQL / MariaDB.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import sqlalchemy as sa

from factory import (Rev, args_for, chain, migrategate, scalar, spawn, tables, versions,
                     wait_until, write_project)

pytestmark = pytest.mark.slow

#: A revision id the static reader can't read: the whole history goes through Alembic's
#: loader, which imports every revision module.
COMPUTED = 'revision = "r00" + "2"'


def _computed(header: str, upgrade: str = "pass") -> Rev:
    return Rev("r002", "r001", upgrade, raw=(
        '"""computed"""\nimport sqlalchemy as sa\nfrom alembic import op\n'
        f"{header}\n{COMPUTED}\ndown_revision = 'r001'\nbranch_labels = None\n"
        "depends_on = None\n\n\ndef upgrade():\n"
        f"    {upgrade}\n\n\ndef downgrade():\n    pass\n"))


# ---------------------------------------------------------------- 1. no app code in the parent

@pytest.mark.parametrize("exit_call", ["import os; os._exit(0)", "import sys; sys.exit(0)"])
@pytest.mark.parametrize("command", ["upgrade", "wait", "verify", "status"])
def test_a_revision_that_exits_0_at_import_never_gives_exit_0(exit_call, command, pg_url,
                                                              tmp_path):
    mig = write_project(tmp_path, chain(1) + [_computed(exit_call)])
    more = ("--timeout", "5") if command == "wait" else ()

    run = migrategate(command, *args_for(pg_url, mig), *more, timeout=60)

    assert run.code == 2, run.output
    assert "revision file" in run.stderr and "loading" in run.stderr
    assert tables(pg_url) == []  # and nothing was migrated


def test_print_at_import_leaves_json_one_document(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1) + [_computed('print("hello from a revision")')])

    run = migrategate("upgrade", *args_for(pg_url, mig), "--json", timeout=60)

    assert run.code == 0, run.output
    assert json.loads(run.stdout)["exit_code"] == 0
    assert "| hello from a revision" in run.stderr


def test_a_thread_started_at_import_does_not_keep_verify_alive(pg_url, tmp_path):
    header = "import threading, time; threading.Thread(target=time.sleep, args=(600,)).start()"
    mig = write_project(tmp_path, chain(1) + [_computed(header)])
    assert migrategate("upgrade", *args_for(pg_url, mig), timeout=60).code == 0

    run = migrategate("verify", *args_for(pg_url, mig), timeout=60)  # a hang fails here

    assert run.code == 0, run.output


# ---------------------------------------------------------------- 2. plumbing app code can hold

def test_a_background_program_started_by_a_revision_does_not_hold_the_run(pg_url, tmp_path):
    mig = write_project(tmp_path, [Rev("r001", None, 'import os\nos.system("sleep 600 &")\n'
                                       'op.create_table("t1", sa.Column("id", sa.Integer))')])

    run = migrategate("upgrade", *args_for(pg_url, mig), timeout=60)  # a hang fails here

    assert run.code == 0, run.output
    assert versions(pg_url) == ["r001"]
    leftover = subprocess.run(["pgrep", "-f", "^sleep 600$"], capture_output=True, text=True)
    assert leftover.stdout == "", "what the revision left running is ended with the run"


def test_sigterm_ends_a_run_whose_revision_started_a_program_holding_its_output(pg_url,
                                                                               tmp_path):
    body = ('import subprocess, time\nsubprocess.Popen(["sleep", "600"], close_fds=False)\n'
            'print("started", flush=True)\nop.execute("SELECT pg_sleep(60)")')
    mig = write_project(tmp_path, [Rev("r001", None, body)])
    runner = spawn("upgrade", *args_for(pg_url, mig))
    lines = []
    wait_until(lambda: _read_line(runner, lines, "| started"), what="the revision to start")

    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=30)

    assert runner.returncode == 143, err
    assert versions(pg_url) == []


def _read_line(proc, lines, wanted):
    line = proc.stderr.readline()
    lines.append(line)
    return wanted in line


def test_a_revision_reading_stdin_fails_at_once_like_under_alembic(pg_url, tmp_path):
    mig = write_project(tmp_path, [Rev("r001", None, 'input("continue? ")')])

    run = migrategate("upgrade", *args_for(pg_url, mig), timeout=60)  # a hang fails here

    assert run.code == 6, run.output
    assert "EOF" in run.stderr


def test_a_revision_using_a_forked_multiprocessing_pool_works(pg_url, tmp_path):
    body = ('import multiprocessing\n'
            'with multiprocessing.get_context("fork").Pool(2) as pool:\n'
            '    assert pool.map(abs, [-1, -2]) == [1, 2]\n'
            'op.create_table("t1", sa.Column("id", sa.Integer))')
    mig = write_project(tmp_path, [Rev("r001", None, body)])

    run = migrategate("upgrade", *args_for(pg_url, mig), timeout=60)  # a deadlock fails here

    assert run.code == 0, run.output
    assert "t1" in tables(pg_url)


# ---------------------------------------------------------------- 3. read back what committed

def test_a_revision_that_committed_itself_then_failed_is_never_called_rolled_back(pg_url,
                                                                                tmp_path):
    body = ('op.create_table("kept", sa.Column("id", sa.Integer))\n'
            'op.execute("INSERT INTO kept VALUES (1)")\n'
            'op.execute("COMMIT")\n'
            'op.execute("SELECT 1/0")')
    mig = write_project(tmp_path, chain(1) + [Rev("r002", "r001", body)])

    run = migrategate("upgrade", *args_for(pg_url, mig), "--json", timeout=60)

    assert run.code == 6, run.output
    assert "nothing of it is applied" not in run.stderr
    assert "ended its own transaction (COMMIT)" in run.stderr
    assert "half-applied" in run.stderr
    assert scalar(pg_url, "SELECT count(*) FROM kept") == 1
    assert [a["revision"] for a in json.loads(run.stdout)["applied"]] == ["r001"]


def test_a_revision_that_swallowed_sigterm_and_committed_is_reported_committed(pg_url,
                                                                             tmp_path):
    body = ('print("sleeping", flush=True)\n'
            'try:\n    with op.get_bind().begin_nested():\n'
            '        op.execute("SELECT pg_sleep(60)")\n'
            'except Exception:\n    pass  # swallows the cancelled statement and the signal\n'
            'op.create_table("after_signal", sa.Column("id", sa.Integer))')
    revs = [Rev("r001", None, body), Rev("r002", "r001", 'op.create_table("never")')]
    mig = write_project(tmp_path, revs)
    runner = spawn("upgrade", *args_for(pg_url, mig), "--json")
    lines = []
    wait_until(lambda: _read_line(runner, lines, "| sleeping"), what="the revision to sleep")

    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=60)

    assert runner.returncode == 143, err
    assert versions(pg_url) == ["r001"]  # the revision did commit, after the signal
    report = json.loads(out)
    assert [a["revision"] for a in report["applied"]] == ["r001"]
    assert "1 revision(s) committed (read back from the database)" in err
    assert "nothing of it is applied" not in err
    assert "never" not in tables(pg_url)


def _mysql_lock_holder(url):
    database = sa.engine.make_url(url).database
    return scalar(url, f"SELECT IS_USED_LOCK('migrategate:{database}')")


def test_mariadb_lock_lost_after_a_ddl_names_what_stays_in_mysql_words(mariadb_url, tmp_path):
    body = ('op.create_table("half_t", sa.Column("id", sa.Integer))\n'
            'op.execute("SELECT SLEEP(60)")')
    mig = write_project(tmp_path, [Rev("r001", None, body)])
    runner = spawn("upgrade", *args_for(mariadb_url, mig))
    session = wait_until(lambda: _mysql_lock_holder(mariadb_url), what="the runner's lock")
    wait_until(lambda: "half_t" in tables(mariadb_url), what="the first DDL")

    engine = sa.create_engine(mariadb_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.execute(sa.text(f"KILL {int(session)}"))
    engine.dispose()
    _, err = runner.communicate(timeout=60)

    assert runner.returncode == 11, err
    assert "nothing of it is applied" not in err
    assert "MySQL/MariaDB commits each DDL statement" in err
    assert "CREATE TABLE half_t" in err
    assert "(read back, in the database now: table half_t)" in err
    assert "half_t" in tables(mariadb_url)


@pytest.mark.parametrize("backend", ["postgresql", "mariadb", "sqlite"])
def test_a_killed_migration_process_is_reported_in_its_databases_words(backend, request,
                                                                       tmp_path):
    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url",
                                   "sqlite": "sqlite_url"}[backend])
    body = ('op.create_table("half_t", sa.Column("id", sa.Integer))\n'
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    mig = write_project(tmp_path, chain(1) + [Rev("r002", "r001", body)])

    run = migrategate("upgrade", *args_for(url, mig), timeout=60)

    assert run.code == 6, run.output
    assert "killed by SIGKILL during revision r002" in run.stderr
    assert "1 revision(s) committed (read back from the database)" in run.stderr
    if backend == "postgresql":
        assert "its transaction was rolled back, nothing of it is applied" in run.stderr
        assert "half_t" not in tables(url)
    else:
        assert "nothing of it is applied" not in run.stderr
        assert "CREATE TABLE half_t" in run.stderr and "half-applied" in run.stderr
        assert "(read back, in the database now: table half_t)" in run.stderr
        assert "half_t" in tables(url)


def test_a_failure_in_alembic_init_layout_names_the_revision_file(pg_url, tmp_path):
    # `alembic init alembic` keeps revisions under alembic/versions/: a path containing
    # "/alembic/" is the app's own file, not Alembic's
    mig = write_project(tmp_path, [Rev("r001", None, 'raise RuntimeError("broken on purpose")')])
    layout = mig.rename(tmp_path / "alembic")

    run = migrategate("upgrade", *args_for(pg_url, layout), timeout=60)

    assert run.code == 6, run.output
    assert f"({layout / 'versions' / '0000_r001.py'}, line 16)" in run.stderr
