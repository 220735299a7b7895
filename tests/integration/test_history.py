"""migrategate's history table: one row per revision attempt, written by the parent, on real
PostgreSQL and MariaDB; checksum drift and revisions applied by something else, as the
read-only commands report them; adoption of an existing database; a history that can't be
written never fails a run.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import signal
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import sqlalchemy as sa

from factory import (Rev, add_revision, args_for, chain, execute, migrategate, scalar, spawn,
                     tables, versions, wait_until, write_project)

pytestmark = pytest.mark.slow

BACKENDS = ["postgresql", "mariadb"]
RUNNER = {"HOSTNAME": "api-migrate-7c9f", "MIGRATEGATE_IMAGE": "registry.example/app:1.4.2"}


@pytest.fixture(params=BACKENDS)
def url(request):
    return request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}
                                   [request.param])


def _pg(url: str) -> bool:
    return url.startswith("postgresql")


def _rows(url: str, table: str = "migrategate_history") -> List[Dict[str, Any]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return []
            return [dict(r._mapping) for r in conn.execute(sa.text(
                f"SELECT * FROM {table} ORDER BY id"))]
    finally:
        engine.dispose()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _file(mig: Path, rev: str) -> Path:
    return next((mig / "versions").glob(f"*_{rev}.py"))


def _alembic_upgrade(mig: Path, url: str, target: str = "head") -> None:
    """Plain Alembic, as an app's own 'flask db upgrade' or an operator would run it."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(mig))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, target)


def _sleep(url: str, seconds: int) -> str:
    return f"SELECT pg_sleep({seconds})" if _pg(url) else f"SELECT SLEEP({seconds})"


# ---------------------------------------------------------------- what a run records

def test_an_applied_run_records_each_revision_with_checksum_times_and_runner(url, tmp_path):
    mig = write_project(tmp_path, chain(3))
    before = time.time()

    run = migrategate("upgrade", *args_for(url, mig), env=RUNNER)

    assert run.code == 0, run.output
    rows = _rows(url)
    assert [(r["revision"], r["outcome"], r["exit_code"]) for r in rows] == [
        ("r001", "applied", 0), ("r002", "applied", 0), ("r003", "applied", 0)]
    assert len({r["run_id"] for r in rows}) == 1
    for r in rows:
        assert r["checksum"] == _sha(_file(mig, r["revision"]))
        assert r["runner"] == "api-migrate-7c9f"
        assert r["image"] == "registry.example/app:1.4.2"
        assert r["migrategate_version"]
        assert r["committed_statements"] is None
        # UTC without a time zone: read as UTC, within the run's wall-clock window
        started = calendar.timegm(r["started_at"].timetuple())
        assert before - 2 <= started <= time.time() + 1
        assert r["started_at"] <= r["finished_at"]
        assert r["duration_seconds"] >= 0
    # a no-op run takes no lock and writes nothing
    assert migrategate("upgrade", *args_for(url, mig)).code == 0
    assert len(_rows(url)) == 3


def test_history_lists_the_table_newest_first_and_as_json(url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    assert migrategate("upgrade", *args_for(url, mig), env=RUNNER).code == 0
    add_revision(mig, Rev("r003", "r002", 'op.execute("SELECT * FROM no_such_table")', "bad"))
    assert migrategate("upgrade", *args_for(url, mig)).code == 6

    text = migrategate("history", *args_for(url, mig))
    listed = migrategate("history", *args_for(url, mig), "--json")

    assert text.code == 0, text.output
    lines = [ln for ln in text.stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert [ln.split()[1] for ln in lines] == ["r003", "r002", "r001"]
    assert "failed" in lines[0] and "applied" in lines[1]
    assert "api-migrate-7c9f (registry.example/app:1.4.2)" in lines[1]
    report = json.loads(listed.stdout)
    assert [(r["revision"], r["outcome"], r["exit_code"]) for r in report["history"]] == [
        ("r003", "failed", 6), ("r002", "applied", 0), ("r001", "applied", 0)]
    assert report["history"][0]["started_at"].endswith("Z")


def test_a_failed_revision_is_recorded_with_what_it_had_committed(url, tmp_path):
    broken = Rev("half", "r001", 'op.create_table("half_t", sa.Column("id", sa.Integer))\n'
                                 'op.add_column("no_such_table", sa.Column("x", sa.Integer))',
                 "half applied")
    mig = write_project(tmp_path, chain(1) + [broken])

    run = migrategate("upgrade", *args_for(url, mig))

    assert run.code == 6, run.output
    rows = _rows(url)
    assert [(r["revision"], r["outcome"], r["exit_code"]) for r in rows] == [
        ("r001", "applied", 6), ("half", "failed", 6)]
    failed = rows[1]
    assert failed["started_at"] is not None and failed["finished_at"] is not None
    assert "revision half (half applied) failed" in failed["detail"]
    if _pg(url):  # transactional DDL: nothing of it stays
        assert failed["committed_statements"] is None
    else:  # MariaDB committed the CREATE TABLE: the row keeps it
        statements = json.loads(failed["committed_statements"])
        assert len(statements) == 1 and "CREATE TABLE half_t" in statements[0]


def test_a_failure_at_commit_is_recorded_as_such(pg_url, tmp_path):
    deferred = (
        'op.execute("CREATE TABLE parent (id int PRIMARY KEY)")\n'
        'op.execute("CREATE TABLE child (pid int REFERENCES parent (id) '
        'DEFERRABLE INITIALLY DEFERRED)")\n'
        'op.execute("INSERT INTO child VALUES (42)")')  # fails only at COMMIT
    mig = write_project(tmp_path, chain(1) + [Rev("fk", "r001", deferred, "deferred fk")])

    run = migrategate("upgrade", *args_for(pg_url, mig))

    assert run.code == 6, run.output
    assert [(r["revision"], r["outcome"]) for r in _rows(pg_url)] == [
        ("r001", "applied"), ("fk", "failed-at-commit")]


def _lock_holder(url: str):
    if _pg(url):
        return scalar(url, "SELECT pid FROM pg_stat_activity WHERE application_name LIKE "
                           "'migrategate:%' AND pid <> pg_backend_pid() AND pid IN (SELECT pid "
                           "FROM pg_locks WHERE locktype = 'advisory' AND granted)")
    database = sa.engine.make_url(url).database
    return scalar(url, f"SELECT IS_USED_LOCK('migrategate:{database}')")


def test_a_lost_lock_is_recorded_on_a_new_connection(url, tmp_path):
    mig = write_project(tmp_path, [
        Rev("acct", None, 'op.create_table("acct", sa.Column("id", sa.Integer))', "accounts"),
        Rev("slow", "acct", f'op.execute("{_sleep(url, 30)}")', "slow")])
    runner = spawn("upgrade", *args_for(url, mig))
    session = wait_until(lambda: _lock_holder(url), what="the runner's lock")
    wait_until(lambda: versions(url) == ["acct"], what="the first revision to commit")

    execute(url, f"SELECT pg_terminate_backend({session})" if _pg(url) else f"KILL {session}")
    _, err = runner.communicate(timeout=60)

    assert runner.returncode == 11, err
    assert [(r["revision"], r["outcome"], r["exit_code"]) for r in _rows(url)] == [
        ("acct", "applied", 11), ("slow", "lock-lost", 11)]
    assert "could not write" not in err


def test_an_interrupted_revision_is_recorded(url, tmp_path):
    started = tmp_path / "slow-started"
    body = (f'open({str(started)!r}, "w").close()\n' f'op.execute("{_sleep(url, 30)}")')
    mig = write_project(tmp_path, chain(1) + [Rev("slow", "r001", body, "slow")])
    proc = spawn("upgrade", *args_for(url, mig))
    wait_until(lambda: started.exists() or proc.poll() is not None, 60,
               what="the revision to start")
    time.sleep(0.5)  # into the sleeping statement
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)

    assert proc.returncode == 143, err
    rows = _rows(url)
    assert [(r["revision"], r["outcome"], r["exit_code"]) for r in rows] == [
        ("r001", "applied", 143), ("slow", "interrupted", 143)]
    assert rows[1]["duration_seconds"] >= 0.5


# ---------------------------------------------------------------- integrity

def test_an_edited_applied_revision_is_a_warning_and_exit_7_when_strict(url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    assert migrategate("upgrade", *args_for(url, mig)).code == 0
    path = _file(mig, "r001")
    # line endings alone are not an edit
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    clean = migrategate("verify", *args_for(url, mig, "--strict-checksums"))
    assert clean.code == 0, clean.output
    assert "changed since" not in clean.stderr

    path.write_text(path.read_text() + "\n# patched by a fork\n")

    warned = migrategate("verify", *args_for(url, mig))
    strict = migrategate("verify", *args_for(url, mig, "--strict-checksums"))
    waited = migrategate("wait", *args_for(url, mig, "--strict-checksums", "--timeout", "5"))
    status = migrategate("status", *args_for(url, mig, "--json"))

    assert warned.code == 0, warned.output
    assert "warning: the file of applied revision(s) changed since they were applied: r001" \
        in warned.stderr
    assert strict.code == 7, strict.output
    assert "r001" in strict.stderr and "--strict-checksums" in strict.stderr
    assert waited.code == 7, waited.output
    drift = json.loads(status.stdout)["integrity"]["checksum_drift"]
    assert [d["revision"] for d in drift] == ["r001"]
    assert drift[0]["now"] == _sha(path)


def test_revisions_applied_by_plain_alembic_are_named(url, tmp_path):
    mig = write_project(tmp_path, chain(1))
    assert migrategate("upgrade", *args_for(url, mig)).code == 0
    add_revision(mig, chain(3)[1])
    add_revision(mig, chain(3)[2])
    _alembic_upgrade(mig, url)
    assert versions(url) == ["r003"]

    verify = migrategate("verify", *args_for(url, mig))
    doctor = migrategate("doctor", *args_for(url, mig))
    status = migrategate("status", *args_for(url, mig, "--json"))

    assert verify.code == 0, verify.output
    assert ("did not apply (no history row: alembic upgrade, flask db upgrade or stamp?): "
            "r002, r003") in verify.stderr
    assert doctor.code == 0, doctor.output  # advisory: the schema is at head
    assert "✗ history:" in doctor.stdout and "r002, r003" in doctor.stdout
    assert json.loads(status.stdout)["integrity"]["not_in_history"] == ["r002", "r003"]


def test_first_upgrade_adopts_an_existing_database_without_inventing_times(url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    _alembic_upgrade(mig, url)
    add_revision(mig, chain(3)[2])

    run = migrategate("upgrade", *args_for(url, mig))

    assert run.code == 0, run.output
    assert "2 revision(s) already in the database recorded as present before history" \
        in run.stderr
    rows = _rows(url)
    assert [(r["revision"], r["outcome"]) for r in rows] == [
        ("r001", "present-before-history"), ("r002", "present-before-history"),
        ("r003", "applied")]
    for r in rows[:2]:
        assert r["started_at"] is None and r["finished_at"] is None
        assert r["duration_seconds"] is None and r["exit_code"] is None
    assert rows[2]["started_at"] is not None
    verify = migrategate("verify", *args_for(url, mig))
    assert verify.code == 0 and "warning" not in verify.stderr, verify.output


def test_no_history_writes_nothing(url, tmp_path):
    mig = write_project(tmp_path, chain(2))

    run = migrategate("upgrade", *args_for(url, mig, "--no-history"))

    assert run.code == 0, run.output
    assert "migrategate_history" not in tables(url)
    listed = migrategate("history", *args_for(url, mig, "--json"))
    assert listed.code == 0 and json.loads(listed.stdout)["history"] == []


def test_history_table_name_is_configurable(url, tmp_path):
    mig = write_project(tmp_path, chain(1))

    run = migrategate("upgrade", *args_for(url, mig),
                      env={"MIGRATEGATE_HISTORY_TABLE": "deploy_log"})

    assert run.code == 0, run.output
    assert "migrategate_history" not in tables(url)
    assert [r["revision"] for r in _rows(url, "deploy_log")] == ["r001"]
    listed = migrategate("history", *args_for(url, mig, "--history-table", "deploy_log",
                                              "--json"))
    assert [r["revision"] for r in json.loads(listed.stdout)["history"]] == ["r001"]


def _refuse_inserts(url: str) -> None:
    """The history table made read-only: every INSERT fails on the server."""
    if _pg(url):
        execute(url, "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'history is read-only'; END $$",
                "CREATE TRIGGER read_only BEFORE INSERT ON migrategate_history "
                "FOR EACH ROW EXECUTE FUNCTION refuse()")
    else:
        execute(url, "CREATE TRIGGER read_only BEFORE INSERT ON migrategate_history "
                     "FOR EACH ROW SIGNAL SQLSTATE '45000' "
                     "SET MESSAGE_TEXT = 'history is read-only'")


def test_a_history_that_cannot_be_written_only_warns(url, tmp_path):
    mig = write_project(tmp_path, chain(1))
    assert migrategate("upgrade", *args_for(url, mig)).code == 0
    _refuse_inserts(url)
    add_revision(mig, chain(2)[1])

    run = migrategate("upgrade", *args_for(url, mig, "--json"))

    assert run.code == 0, run.output
    assert versions(url) == ["r002"]
    assert "warning: could not write to the history table migrategate_history" in run.stderr
    assert "history is read-only" in run.stderr
    report = json.loads(run.stdout)
    assert report["outcome"] == "verified"
    assert any("could not write to the history table" in w for w in report["warnings"])
    assert [r["revision"] for r in _rows(url)] == ["r001"]


# ---------------------------------------------------------------- the app's role may read it

def test_history_reader_can_read_the_history_and_nothing_breaks_on_a_hostile_name(url,
                                                                                tmp_path):
    mig = write_project(tmp_path, chain(1))
    if _pg(url):
        execute(url, "DROP ROLE IF EXISTS app_reader", "CREATE ROLE app_reader NOLOGIN")
        reader = "app_reader"
    else:
        execute(url, "DROP USER IF EXISTS 'app_reader'@'%'",
                "CREATE USER 'app_reader'@'%' IDENTIFIED BY 'x'")
        reader = "app_reader@%"
    run = migrategate("upgrade", *args_for(url, mig, "--history-reader", reader))
    assert run.code == 0, run.output
    assert "could not" not in run.output
    if _pg(url):
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text("SET ROLE app_reader"))
            assert conn.execute(sa.text("SELECT count(*) FROM migrategate_history")).scalar() == 1
            with pytest.raises(sa.exc.ProgrammingError):  # SELECT only, on that table only
                conn.execute(sa.text("SELECT count(*) FROM alembic_version"))
        engine.dispose()
    else:
        grants = " ".join(str(r[0]) for r in _grants(url, "SHOW GRANTS FOR 'app_reader'@'%'"))
        assert "GRANT SELECT ON `" in grants and "`migrategate_history`" in grants
        assert "`migrategate_history_journal`" in grants

    add_revision(mig, Rev("r002", "r001", 'op.create_table("t2", sa.Column("id", sa.Integer))'))
    hostile = 'nobody"; DROP TABLE migrategate_history; --' if _pg(url) else \
        "nobody`; DROP TABLE migrategate_history; --@%"
    run = migrategate("upgrade", *args_for(url, mig, "--history-reader", hostile))
    assert run.code == 0, run.output
    assert "warning: could not grant" in run.stderr
    assert "check that the role or account exists" in run.stderr
    assert len(_rows(url)) == 2, "the name was quoted, not run: the table and its rows stay"


def _grants(url: str, query: str) -> List[Any]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query)))
    finally:
        engine.dispose()
