"""Faults: kill -9, cut connections, signals, stuck holders, non-transactional DDL, lock waits.

Each scenario records its trials in ``reliability`` (see conftest) so the run
can be summarised in docs/reliability.md.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time

import pytest
import sqlalchemy as sa

from factory import (Rev, add_revision, applied_rows, args_for, chain, hold_lock, logged_chain,
                     migrategate, spawn, tables, versions, wait_until, write_project)

pytestmark = pytest.mark.slow


def _engine(url, **kw):
    return sa.create_engine(url, poolclass=sa.pool.NullPool, **kw)


def _long_chain(n=24):
    """Revisions with tables, indexes, column adds and inserts, each taking a little time."""
    revs = []
    for k in range(1, n + 1):
        down = f"c{k - 1:03d}" if k > 1 else None
        body = (f'op.create_table("c{k}", sa.Column("id", sa.Integer, primary_key=True), '
                f'sa.Column("v", sa.String(20)))\n'
                f'op.create_index("ix_c{k}_v", "c{k}", ["v"])\n'
                f'op.add_column("c{k}", sa.Column("extra", sa.Integer))\n'
                f'op.execute("INSERT INTO c{k} (v) VALUES (\'x\')")\n'
                'op.execute("SELECT pg_sleep(0.03)")')
        revs.append(Rev(f"c{k:03d}", down, body, f"chain {k}"))
    return revs


def _schema(url):
    """A comparable picture of the schema: tables, columns, indexes, row counts, versions."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            out = {}
            for t in sorted(insp.get_table_names()):
                if t == "migrategate_history":  # a killed run's attempts are rows of their own
                    continue
                cols = [(c["name"], str(c["type"])) for c in insp.get_columns(t)]
                idx = sorted(i["name"] for i in insp.get_indexes(t))
                rows = conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar()
                out[t] = (cols, idx, rows)
            return out
    finally:
        engine.dispose()


def _advisory_locks(url):
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")).scalar()
    finally:
        engine.dispose()


def test_kill_9_anywhere_then_rerun_converges_to_the_clean_schema(pg_url, new_pg_url, tmp_path,
                                                                   reliability):
    mig = write_project(tmp_path, _long_chain())
    clean = new_pg_url()
    assert migrategate("upgrade", *args_for(clean, mig)).code == 0
    expected = _schema(clean)
    rng = random.Random(20261124)
    outcomes = []
    for trial in range(20):
        url = new_pg_url()
        # the kill point, by progress rather than by the clock: after the runner logged k
        # committed revisions (k = 0: its plan, under the lock), then 0-50 ms further in
        k = rng.randrange(23)
        marker = f"[{k}/24]" if k else "revision(s) to apply"
        proc = spawn("upgrade", *args_for(url, mig))
        assert proc.stderr is not None
        for line in proc.stderr:  # ends at EOF at the latest (a hang bound: the run's end)
            if marker in line:
                break
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, (trial, proc.communicate())
        rerun = migrategate("upgrade", *args_for(url, mig, "--lock-timeout", "60"))
        assert rerun.code == 0, (trial, rerun.output)
        assert _schema(url) == expected, trial
        assert versions(url) == ["c024"]
        assert _advisory_locks(url) == 0
        again = rerun.stderr.count("] c0")
        assert again <= 24 - k, (trial, k, rerun.stderr)  # what was logged had committed
        outcomes.append(again)
    reliability("kill -9 after k (seeded, 0-22) revisions of a 24-revision chain, then re-run",
                20, f"all re-runs exit 0 with the clean schema; revisions re-applied per trial: "
                f"{min(outcomes)}–{max(outcomes)}, never more than 24 - k")


def _backend_pid(url, app_prefix="migrategate:", wait_for="pg_sleep"):
    engine = _engine(url, isolation_level="AUTOCOMMIT")  # pg_stat_activity is per-transaction
    try:
        with engine.connect() as conn:
            for _ in range(600):
                pid = conn.execute(sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name LIKE :p "
                    "AND query LIKE :q AND state = 'active' AND pid <> pg_backend_pid()"),
                    {"p": app_prefix + "%", "q": f"%{wait_for}%"}).scalar()
                if pid:
                    return pid
                time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("the migration never reached its slow statement")


def test_connection_cut_mid_migration_never_exits_0_and_leaves_nothing(pg_url, tmp_path,
                                                                        reliability):
    revs = chain(1) + [Rev("cut", "r001", 'op.create_table("cut_half", sa.Column("id", '
                                          'sa.Integer))\nop.execute("SELECT pg_sleep(30)")')]
    mig = write_project(tmp_path, revs)
    proc = spawn("upgrade", *args_for(pg_url, mig))
    pid = _backend_pid(pg_url)
    engine = _engine(pg_url)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    engine.dispose()
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 6, err
    assert "revision cut" in err and "connection to the database was lost" in err
    assert "cut_half" not in tables(pg_url)
    assert versions(pg_url) == ["r001"]
    fixed = write_project(tmp_path / "fixed", chain(1) + [Rev("cut", "r001", "pass")])
    assert migrategate("upgrade", *args_for(pg_url, fixed)).code == 0
    reliability("pg_terminate_backend on the migration connection", 1,
                f"exit {proc.returncode}, interrupted revision absent, re-run exit 0")


def _running(url, sql):
    """Whether another session is executing ``sql`` now (read outside a transaction:
    pg_stat_activity is a per-transaction snapshot)."""
    engine = _engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if url.startswith("postgresql"):
                query = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                         "AND query = :q AND pid <> pg_backend_pid()")
            else:
                query = ("SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO = :q "
                         "AND ID <> CONNECTION_ID()")
            return conn.execute(sa.text(query), {"q": sql}).scalar() > 0
    finally:
        engine.dispose()


def _line_with(text, line):
    return line if text in line else None


def test_sigterm_during_long_revision_rolls_back_and_exits_143(db_url, tmp_path, reliability):
    sleep_sql = {"postgresql": "SELECT pg_sleep(30)", "mysql": "SELECT SLEEP(30)",
                 "sqlite": None}[db_url.split(":")[0].split("+")[0]]
    started = tmp_path / "slow-started"  # the revision says when it is really running
    mark = f'open({str(started)!r}, "w").close()\n'
    if sleep_sql is None:
        body = ('op.create_table("slow_half", sa.Column("id", sa.Integer))\n' + mark +
                'import time\nfor _ in range(300): time.sleep(0.1)')
    else:
        body = ('op.create_table("slow_half", sa.Column("id", sa.Integer))\n' + mark +
                f'op.execute("{sleep_sql}")')
    mig = write_project(tmp_path, chain(1) + [Rev("slow", "r001", body, "slow")])
    proc = spawn("upgrade", *args_for(db_url, mig))
    wait_until(lambda: started.exists() or proc.poll() is not None, 60,
               what="the revision to start")
    assert proc.poll() is None, proc.communicate()
    if sleep_sql is not None:  # from the marker into the sleeping statement, on the server
        wait_until(lambda: _running(db_url, sleep_sql), what=f"{sleep_sql} to run")
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent

    assert proc.returncode == 143, err
    assert took < 5, took
    assert "interrupted by SIGTERM during revision slow" in err
    assert versions(db_url) == ["r001"]
    if db_url.startswith("postgresql"):
        assert "slow_half" not in tables(db_url)
        assert "its transaction was rolled back, nothing of it is applied" in err
    else:  # the DDL that completed before the signal is named, and stays
        assert "CREATE TABLE slow_half" in err and "half-applied" in err
        assert "slow_half" in tables(db_url)
    # the lock was released: an immediate re-run does not wait for it
    again = migrategate("status", *args_for(db_url, mig, "--json"))
    assert json.loads(again.stdout)["lock"]["held"] is False
    kept = ("revision rolled back" if db_url.startswith("postgresql") else
            "its DDL before the signal stays and the message says so; alembic_version unchanged")
    reliability(f"SIGTERM during a 30 s revision ({db_url.split(':')[0]})", 1,
                f"exit 143 after {took:.2f} s, {kept}, lock free")


def test_stuck_holder_blocks_until_timeout_and_runner_proceeds_when_it_dies(pg_url, tmp_path,
                                                                             reliability):
    mig = write_project(tmp_path, chain(2))
    with hold_lock(pg_url, "stuck-job-7c9f"):
        timed_out = migrategate("upgrade", *args_for(pg_url, mig, "--lock-timeout", "1"))
        assert timed_out.code == 5
        assert "stuck-job-7c9f" in timed_out.stderr

        waiting = spawn("upgrade", *args_for(pg_url, mig, "--lock-timeout", "60"))
        assert waiting.stderr is not None
        wait_until(lambda: 'waiting for lock "migrategate"' in waiting.stderr.readline(),
                   what="the runner to queue for the lock")
        assert waiting.poll() is None
        assert versions(pg_url) == []
    # the holder dies: its session lock goes with it
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert versions(pg_url) == ["r002"]
    reliability("stuck lock holder", 2, "exit 5 naming the holder at --lock-timeout; a waiting "
                "runner proceeds and exits 0 once the holder's session ends")


def test_mariadb_failure_after_first_ddl_names_revision_and_left_objects(mariadb_url, tmp_path,
                                                                          reliability):
    broken = Rev("half", "r001", 'op.create_table("half_t", sa.Column("id", sa.Integer))\n'
                                 'op.add_column("no_such_table", sa.Column("x", sa.Integer))',
                 "half applied")
    mig = write_project(tmp_path, chain(1) + [broken])

    run = migrategate("upgrade", *args_for(mariadb_url, mig))

    assert run.code == 6, run.output
    assert "revision half (half applied) failed" in run.stderr
    assert "MySQL/MariaDB commits each DDL statement" in run.stderr
    assert "CREATE TABLE half_t" in run.stderr and "half-applied" in run.stderr
    assert "half_t" in tables(mariadb_url)  # MySQL committed the first DDL
    assert versions(mariadb_url) == ["r001"]
    doc = migrategate("doctor", *args_for(mariadb_url, mig))
    assert doc.code == 7, doc.output  # its findings are verification failures
    assert "half-applied" in doc.stdout and "table half_t" in doc.stdout
    # the documented fix: make the revision idempotent (or drop what it left), re-run
    fixed = Rev("half", "r001", 'op.add_column("half_t", sa.Column("x", sa.Integer))', "fixed")
    (mig / "versions" / "0001_half.py").unlink()
    add_revision(mig, fixed)
    assert migrategate("upgrade", *args_for(mariadb_url, mig)).code == 0
    reliability("MariaDB revision failing after its first DDL", 1,
                "exit 6 naming the revision and the non-transactional DDL; doctor reports the "
                "half-applied table; fixed revision re-run exits 0")


def test_pg_lock_timeout_fails_fast_behind_an_application_lock(pg_url, tmp_path, reliability):
    mig = write_project(tmp_path, chain(1))
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0
    add_revision(mig, Rev("alter", "r001", 'op.add_column("t1", sa.Column("x", sa.Integer))',
                          "add x"))
    engine = _engine(pg_url)
    app = engine.connect()
    app.execute(sa.text("SELECT * FROM t1"))  # an open transaction holding ACCESS SHARE on t1
    started = time.monotonic()
    run = migrategate("upgrade", *args_for(pg_url, mig, "--pg-lock-timeout", "1"))
    took = time.monotonic() - started
    app.rollback()
    app.close()
    engine.dispose()

    assert run.code == 6, run.output
    assert took < 20
    assert "lock timeout" in run.stderr and "locked by another transaction" in run.stderr
    assert versions(pg_url) == ["r001"]
    reliability("ALTER blocked by an application transaction, --pg-lock-timeout 1", 1,
                f"exit 6 after {took:.1f} s with a lock-timeout explanation")


def test_database_that_starts_late_is_waited_for(late_postgres, tmp_path, reliability):
    url, start_server = late_postgres
    mig = write_project(tmp_path, chain(2))
    proc = spawn("upgrade", *args_for(url, mig, "--connect-timeout", "60"))
    assert proc.stderr is not None
    first = wait_until(lambda: _line_with("waiting for database", proc.stderr.readline()),
                       what="the runner to retry the absent server")
    start_server()
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "connection refused" in first.lower(), first  # the driver's reason is logged
    assert versions(url) == ["r002"]
    reliability("database starts after the runner logged 'waiting for database'", 1,
                "runner retries, then exit 0")


def test_32_runners_and_32_gates_on_one_postgres(pg_url, tmp_path, reliability):
    mig = write_project(tmp_path, logged_chain(10))
    peak = {"n": 0}
    stop = threading.Event()
    dbname = sa.engine.make_url(pg_url).database

    def sample():
        engine = _engine(pg_url)
        with engine.connect() as conn:
            while not stop.is_set():
                n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d "
                                         "AND pid <> pg_backend_pid()"), {"d": dbname}).scalar()
                peak["n"] = max(peak["n"], n)
                conn.rollback()
                time.sleep(0.02)
        engine.dispose()

    sampler = threading.Thread(target=sample)
    sampler.start()
    gates = [spawn("wait", *args_for(pg_url, mig, "--timeout", "120", "--interval", "0.5"))
             for _ in range(32)]
    runners = [spawn("upgrade", *args_for(pg_url, mig)) for _ in range(32)]
    codes = [p.wait(timeout=180) for p in runners + gates]
    stop.set()
    sampler.join()
    errs = [p.communicate()[1] for p in runners + gates]

    assert codes == [0] * 64, [e for c, e in zip(codes, errs) if c][:3]
    assert applied_rows(pg_url) == sorted(["log"] + [f"s{k}" for k in range(1, 11)])
    assert peak["n"] <= 32 + 32 + 1  # one per process, plus the one migrating child
    reliability("32 upgrade runners + 32 wait gates, one PostgreSQL", 64,
                f"all exit 0, each revision applied once, peak connections {peak['n']} "
                "(bound: one per process plus one migration connection)")


def test_transaction_pooling_proxy_is_called_out(postgres_server, pg_url, server_root, tmp_path,
                                                  reliability):
    import servers

    bouncer = servers.start_pgbouncer(server_root / f"bouncer-{time.time_ns()}",
                                      postgres_server)
    try:
        via = sa.engine.make_url(pg_url).set(port=bouncer.port).render_as_string(
            hide_password=False)
        mig = write_project(tmp_path, chain(2))

        run = migrategate("upgrade", *args_for(via, mig))

        assert run.code == 2, run.output  # refused: the session lock can't be trusted
        assert "pool_mode=transaction" in run.stderr
        assert f"PostgreSQL listens on {postgres_server.port}" in run.stderr
        assert "--allow-proxy" in run.stderr
        assert versions(pg_url) == []  # refused before anything ran
    finally:
        bouncer.stop()
    reliability("upgrade through PgBouncer (pool_mode=transaction)", 1,
                f"exit {run.code}: refused before migrating, the transaction-pooling risk to "
                "the advisory lock named, --allow-proxy suggested")
