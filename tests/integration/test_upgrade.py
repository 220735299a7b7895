"""upgrade/verify/status/wait against real PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import sqlalchemy as sa

from factory import (Rev, add_revision, applied_rows, args_for, bare_url, chain, hold_lock,
                     logged_chain, migrategate, spawn, table_rev, tables, versions, wait_until,
                     write_project)


def test_upgrade_fresh_database_applies_every_revision_and_verifies(db_url, tmp_path):
    mig = write_project(tmp_path, chain(3))

    run = migrategate("upgrade", *args_for(db_url, mig, "--expect-table", "t3"))

    assert run.code == 0, run.output
    assert {"t1", "t2", "t3", "alembic_version"} <= set(tables(db_url))
    assert versions(db_url) == ["r003"]
    for k, rev in enumerate(["r001", "r002", "r003"], 1):
        assert f"[{k}/3] {rev}  create t{k}" in run.stderr
    assert "✓ table:t3: exists" in run.stdout
    assert "verified:" in run.stdout


def test_second_upgrade_is_a_verified_noop(db_url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    assert migrategate("upgrade", *args_for(db_url, mig)).code == 0

    run = migrategate("upgrade", *args_for(db_url, mig, "--json"))

    assert run.code == 0, run.output
    report = json.loads(run.stdout)
    assert report["outcome"] == "up-to-date"
    assert report["applied"] == []
    assert all(c["ok"] for c in report["checks"])
    assert "up to date at r002" in run.stderr


def test_json_report_lists_applied_revisions_with_durations(db_url, tmp_path):
    mig = write_project(tmp_path, chain(2))

    run = migrategate("upgrade", *args_for(db_url, mig, "--json"))

    report = json.loads(run.stdout)
    assert report["exit_code"] == 0 and report["outcome"] == "verified"
    assert report["from_revisions"] == [] and report["to_revisions"] == ["r002"]
    assert [a["revision"] for a in report["applied"]] == ["r001", "r002"]
    assert all(a["seconds"] >= 0 for a in report["applied"])
    assert report["seconds"] > 0


def test_verify_fails_on_empty_database_and_passes_after_upgrade(db_url, tmp_path):
    mig = write_project(tmp_path, chain(2))

    before = migrategate("verify", *args_for(db_url, mig))
    assert before.code == 7, before.output
    assert "✗ version-table" in before.stdout

    assert migrategate("upgrade", *args_for(db_url, mig)).code == 0
    after = migrategate("verify", *args_for(db_url, mig, "--expect-table", "t1"))
    assert after.code == 0, after.output
    missing = migrategate("verify", *args_for(db_url, mig, "--expect-table", "nope"))
    assert missing.code == 7
    assert "table nope is missing" in missing.output


def test_broken_revision_exits_6_names_it_and_keeps_earlier_ones(db_url, tmp_path):
    revs = chain(2) + [Rev("r003", "r002", """
        op.create_table("half", sa.Column("id", sa.Integer, primary_key=True))
        op.execute("SELECT * FROM table_that_does_not_exist")
    """, "the broken one")]
    mig = write_project(tmp_path, revs)

    run = migrategate("upgrade", *args_for(db_url, mig, "--json"))

    assert run.code == 6, run.output
    report = json.loads(run.stdout)
    assert report["failed_revision"] == "r003"
    assert [a["revision"] for a in report["applied"]] == ["r001", "r002"]
    assert "revision r003 (the broken one) failed" in run.stderr
    assert versions(db_url) == ["r002"]
    if db_url.startswith("postgresql"):
        # transactional DDL: nothing of the failed revision is left behind
        assert "half" not in tables(db_url)
        assert "rolled back, nothing of it is applied" in run.stderr
    else:  # each DDL statement commits at once: what completed is named, and stays
        assert "statement(s) of it completed" in run.stderr
        assert "CREATE TABLE half" in run.stderr and "half-applied" in run.stderr
        assert "nothing of it is applied" not in run.stderr
        assert "half" in tables(db_url)


def test_status_shows_current_heads_pending_and_lock(db_url, tmp_path):
    mig = write_project(tmp_path, chain(3))
    assert migrategate("upgrade", *args_for(db_url, mig, "--to", "r001")).code == 0

    run = migrategate("status", *args_for(db_url, mig, "--json"))

    assert run.code == 0, run.output
    report = json.loads(run.stdout)
    assert report["from_revisions"] == ["r001"]
    assert report["heads"] == ["r003"]
    assert [p["revision"] for p in report["pending"]] == ["r002", "r003"]
    assert report["pending"][0]["message"] == "create t2"
    assert report["lock"]["held"] is False
    human = migrategate("status", *args_for(db_url, mig))
    assert "pending:  2" in human.stdout and "r003  create t3" in human.stdout


def test_database_at_unknown_revision_exits_8(db_url, tmp_path):
    mig = write_project(tmp_path, chain(3))
    assert migrategate("upgrade", *args_for(db_url, mig)).code == 0
    older = write_project(tmp_path / "old", chain(2))

    run = migrategate("upgrade", *args_for(db_url, older))

    assert run.code == 8, run.output
    assert "r003" in run.stderr and "never downgrades" in run.stderr
    assert migrategate("verify", *args_for(db_url, older)).code == 8
    ahead = migrategate("verify", *args_for(db_url, older, "--allow-ahead"))
    assert ahead.code == 0, ahead.output
    rollback = migrategate("upgrade", *args_for(db_url, older, "--allow-ahead", "--json"))
    assert rollback.code == 0, rollback.output
    assert json.loads(rollback.stdout)["outcome"] == "ahead"
    assert versions(db_url) == ["r003"]  # nothing re-applied, nothing downgraded


def test_multiple_heads_without_target_exit_9(db_url, tmp_path):
    mig = write_project(tmp_path, [table_rev("a", None, "ta"), table_rev("b1", "a", "tb1"),
                                   table_rev("b2", "a", "tb2")])

    run = migrategate("upgrade", *args_for(db_url, mig))

    assert run.code == 9, run.output
    assert "2 heads" in run.stderr
    assert "ta" not in tables(db_url)
    both = migrategate("upgrade", *args_for(db_url, mig, "--to", "heads"))
    assert both.code == 0, both.output
    assert versions(db_url) == ["b1", "b2"]


def test_branch_and_merge_apply_in_dependency_order(db_url, tmp_path):
    mig = write_project(tmp_path, [
        table_rev("a", None, "ta"), table_rev("b1", "a", "tb1"), table_rev("b2", "a", "tb2"),
        Rev("m", ("b1", "b2"), "pass", "merge"), table_rev("c", "m", "tc"),
    ])

    run = migrategate("upgrade", *args_for(db_url, mig))

    assert run.code == 0, run.output
    assert versions(db_url) == ["c"]
    assert "[5/5] c" in run.stderr


def test_wait_times_out_with_exit_10_then_passes_after_upgrade(db_url, tmp_path):
    mig = write_project(tmp_path, chain(1))

    run = migrategate("wait", *args_for(db_url, mig, "--timeout", "1", "--interval", "0.2"))
    assert run.code == 10, run.output
    assert "schema not ready" in run.stderr

    assert migrategate("upgrade", *args_for(db_url, mig)).code == 0
    ok = migrategate("wait", *args_for(db_url, mig, "--timeout", "5"))
    assert ok.code == 0, ok.output


def test_wait_blocks_until_a_concurrent_upgrade_finishes(pg_url, tmp_path):
    revs = [Rev("slow", None, 'op.execute("SELECT pg_sleep(2)")\n'
                              'op.create_table("done", sa.Column("id", sa.Integer))', "slow")]
    mig = write_project(tmp_path, revs)
    waiter = spawn("wait", *args_for(pg_url, mig, "--timeout", "60", "--interval", "0.2"))
    assert waiter.stderr is not None
    wait_until(lambda: "waiting for schema" in waiter.stderr.readline(),
               what="the gate to find the schema not ready")
    assert waiter.poll() is None

    up = migrategate("upgrade", *args_for(pg_url, mig))
    out, err = waiter.communicate(timeout=30)

    assert up.code == 0, up.output
    assert waiter.returncode == 0, err
    assert "at slow after" in out  # it polled until the upgrade's revision was there


def test_lock_held_by_another_session_exits_5_naming_the_holder(db_url, tmp_path):
    mig = write_project(tmp_path, chain(1))
    expected = {"postgresql": "app=stuck-holder", "mysql": "connection",
                "sqlite": f"pid {os.getpid()} on stuck-holder"}[sa.engine.make_url(
                    db_url).get_backend_name()]
    with hold_lock(db_url, "stuck-holder"):
        run = migrategate("upgrade", *args_for(db_url, mig, "--lock-timeout", "1"))

        assert run.code == 5, run.output
        assert expected in run.stderr
        assert "t1" not in tables(db_url)
        status = migrategate("status", *args_for(db_url, mig, "--json"))
        assert json.loads(status.stdout)["lock"]["held"] is True
    after = migrategate("upgrade", *args_for(db_url, mig, "--lock-timeout", "5"))
    assert after.code == 0, after.output


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_wrong_password_exits_4_fast_and_never_prints_it(kind, request, tmp_path):
    url = request.getfixturevalue("pg_url" if kind == "postgresql" else "mariadb_url")
    secret = "Wr0ng-S3cret%pass"
    bad = sa.engine.make_url(url).set(password=secret).render_as_string(hide_password=False)
    mig = write_project(tmp_path, chain(1))
    start = time.monotonic()

    run = migrategate("upgrade", *args_for(bad, mig, "--json"))

    assert run.code == 4, run.output
    assert time.monotonic() - start < 15
    assert "authentication failed" in run.stderr
    assert secret not in run.output
    assert "Wr0ng-S3cret%25pass" not in run.output
    assert json.loads(run.stdout)["outcome"] == "auth-failed"


def test_password_file_supplies_the_password(pg_url, tmp_path):
    url = sa.engine.make_url(pg_url)
    pw = tmp_path / "pw"
    pw.write_text(url.password + "\n")
    bare = bare_url(pg_url)
    mig = write_project(tmp_path, chain(1))

    run = migrategate("upgrade", "--password-file", str(pw), *args_for(bare, mig))

    assert run.code == 0, run.output
    assert url.password not in run.output


def test_nothing_listening_exits_3_after_connect_timeout(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    mig = write_project(tmp_path, chain(1))
    start = time.monotonic()

    run = migrategate("upgrade", *args_for(f"postgresql://u:p@127.0.0.1:{port}/db", mig,
                                           "--connect-timeout", "2"))

    assert run.code == 3, run.output
    assert time.monotonic() - start >= 2
    assert "unreachable after" in run.stderr
    # the driver's reason for the last attempt (the hint names --connect-timeout on every
    # failure, so "connect" alone would prove nothing)
    assert "connection refused" in run.stderr.lower(), run.stderr


def test_sixteen_runners_at_once_apply_each_revision_exactly_once(pg_url, tmp_path):
    mig = write_project(tmp_path, logged_chain(7))

    runners = [spawn("upgrade", *args_for(pg_url, mig)) for _ in range(16)]
    results = [(p.wait(timeout=120), p.communicate()) for p in runners]

    assert all(code == 0 for code, _ in results), [err for _, (_, err) in results]
    assert applied_rows(pg_url) == sorted(["log"] + [f"s{k}" for k in range(1, 8)])
    assert versions(pg_url) == ["s7"]


def test_added_revision_is_applied_on_next_run(db_url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    assert migrategate("upgrade", *args_for(db_url, mig)).code == 0
    add_revision(mig, table_rev("r003", "r002", "t3"))

    run = migrategate("upgrade", *args_for(db_url, mig))

    assert run.code == 0, run.output
    assert "[1/1] r003" in run.stderr
    assert versions(db_url) == ["r003"]


def test_single_transaction_commits_everything_or_nothing(pg_url, tmp_path):
    revs = chain(2) + [Rev("r003", "r002", 'op.execute("SELECT * FROM nowhere")', "broken")]
    mig = write_project(tmp_path, revs)

    run = migrategate("upgrade", *args_for(pg_url, mig, "--single-transaction"))

    assert run.code == 6, run.output
    assert versions(pg_url) == []  # r001 and r002 were rolled back with r003
    assert "t1" not in tables(pg_url)
    assert "2 more uncommitted revision(s) rolled back too" in run.stderr


def test_waiting_runner_stops_waiting_when_another_reaches_the_target(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1))
    with hold_lock(pg_url):
        waiter = spawn("upgrade", *args_for(pg_url, mig, "--lock-timeout", "60", "--json"))
        assert waiter.stderr is not None
        wait_until(lambda: 'waiting for lock "migrategate"' in waiter.stderr.readline(),
                   what="the runner to queue for the lock")
        # the lock holder "migrates": the schema and version reach the target; it keeps the
        # lock (this is another session of it)
        engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t1 (id integer primary key, name varchar(50))"))
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num varchar(32) "
                                 "PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES ('r001')"))
        engine.dispose()

        out, err = waiter.communicate(timeout=30)

    assert waiter.returncode == 0, err
    report = json.loads(out)
    assert report["lock"]["taken"] is False
    assert report["outcome"] == "up-to-date"
    assert "another runner brought the database to the target" in err


def test_up_to_date_database_is_verified_without_taking_the_lock(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1))
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0
    with hold_lock(pg_url):  # a stuck holder does not block a no-op
        run = migrategate("upgrade", *args_for(pg_url, mig, "--lock-timeout", "1", "--json"))
    assert run.code == 0, run.output
    assert json.loads(run.stdout)["lock"]["taken"] is False


def test_a_long_revision_logs_that_it_is_still_running(pg_url, tmp_path):
    mig = write_project(tmp_path, [Rev("slow", None, 'op.execute("SELECT pg_sleep(2.5)")',
                                       "slow one")])

    run = migrategate("upgrade", *args_for(pg_url, mig, "--heartbeat", "1"))

    assert run.code == 0, run.output
    assert re.search(r"\[1/1\] slow still running \(\ds\)", run.stderr), run.stderr
    assert "[1/1] slow  slow one" in run.stderr
