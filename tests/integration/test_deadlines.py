"""Deadlines: a control connection that stops answering without closing never hangs us.

A loopback proxy (tests/freezeproxy.py) stops forwarding while every socket stays
open — a hung proxy, a frozen network path: the client's kernel keeps getting
ACKs, so TCP keepalives never fire. Each scenario asserts a bound derived from
the documented options (--timeout, --connect-timeout), not a tight wall clock.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from factory import args_for, chain, migrategate, spawn, write_project
from freezeproxy import FreezeProxy

pytestmark = pytest.mark.slow

APP = "migrategate-deadline-test"  # fixed: the server echoes it, so the handshake size is too


def _settings(url, connect_timeout=60.0):
    from migrategate.settings import Settings

    return Settings(url=sa.engine.make_url(url), connect_timeout=connect_timeout,
                    application_name=APP)


def _per_attempt(connect_timeout):
    """The documented bound of one connection attempt (connect.per_attempt)."""
    return min(max(connect_timeout, 2), 10)


def _bytes_until_ready(url, after):
    """Bytes the server sends on one of our connections before it is ready (``after`` =
    "handshake": the driver's connect; "connected": also SQLAlchemy's initialisation
    queries and the switch to AUTOCOMMIT), measured through a proxy that never freezes."""
    from migrategate.connect import connect, engine_options, make_engine

    target = sa.engine.make_url(url)
    proxy = FreezeProxy(target.host, target.port)
    try:
        settings = _settings(proxy.url(url))
        if after == "handshake":
            engine = sa.create_engine(settings.url)
            cargs, cparams = engine.dialect.create_connect_args(engine.url)
            cparams.update(engine_options(settings))
            raw = engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
            time.sleep(0.2)
            count = proxy.server_bytes
            raw.close()
        else:
            engine = make_engine(settings)
            conn = connect(settings, engine).execution_options(isolation_level="AUTOCOMMIT")
            time.sleep(0.2)
            count = proxy.server_bytes
            conn.close()
        engine.dispose()
        return count
    finally:
        proxy.close()


def _proxy(url, **kw):
    target = sa.engine.make_url(url)
    return FreezeProxy(target.host, target.port, **kw)


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_wait_through_a_proxy_that_freezes_ends_at_its_timeout(backend, request, tmp_path,
                                                               reliability):
    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[backend])
    mig = write_project(tmp_path, chain(1))  # never applied: wait keeps polling
    proxy = _proxy(url)
    timeout = 5
    try:
        started = time.monotonic()
        proc = spawn("wait", *args_for(proxy.url(url), mig, "--timeout", str(timeout),
                                       "--interval", "0.5", "--application-name", APP))
        # let it connect and poll once, then freeze the path under its open connection
        deadline = time.monotonic() + 20
        while proxy.server_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        proxy.freeze()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"wait --timeout {timeout} still running after 60 s "
                                 "on a frozen connection") from None
        elapsed = time.monotonic() - started
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        proxy.close()

    assert proc.returncode == 10, stderr
    bound = timeout + 2 * _per_attempt(60)  # default --connect-timeout
    assert elapsed < bound, (elapsed, stderr)
    assert "no answer from the database within" in stderr, stderr
    reliability(f"{backend}: `wait --timeout 5` whose connection freezes (proxy) mid-wait", 1,
                f"exit 10 after {elapsed:.1f} s (bound asserted: < {bound} s)")


CASES = [("postgresql", "handshake"), ("postgresql", "connected"), ("mariadb", "connected")]


@pytest.mark.parametrize("command", ["verify", "status", "upgrade"])
@pytest.mark.parametrize("backend,after", CASES, ids=[f"{b}-{a}" for b, a in CASES])
def test_a_server_that_stalls_after_connecting_exits_3_within_connect_timeout(
        backend, after, command, request, tmp_path, reliability):
    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[backend])
    mig = write_project(tmp_path, chain(1))
    assert migrategate("upgrade", *args_for(url, mig)).code == 0  # straight, not proxied
    proxy = _proxy(url, freeze_after=_bytes_until_ready(url, after))
    connect_timeout = 3
    try:
        started = time.monotonic()
        run = migrategate(command, *args_for(proxy.url(url), mig, "--connect-timeout",
                                             str(connect_timeout), "--application-name", APP),
                          timeout=90)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()

    assert run.code == 3, run.output
    # connecting retries until --connect-timeout; the last attempt may take its own bound
    # twice (the driver's connect, then what runs right after it); 5 s for the interpreter
    bound = connect_timeout + 2 * _per_attempt(connect_timeout) + 5
    assert elapsed < bound, (elapsed, run.output)
    assert "no answer from the database within" in run.stderr, run.stderr
    reliability(f"{backend}: `{command} --connect-timeout 3` against a server that stalls "
                f"after the {after} step (proxy)", 1,
                f"exit 3 after {elapsed:.1f} s (bound asserted: < {bound} s)")


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_still_held_raises_when_the_lock_session_stalls(backend, request):
    from migrategate.connect import connect, make_engine
    from migrategate.errors import UnreachableError
    from migrategate.lock import lock_for

    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[backend])
    proxy = _proxy(url)
    connect_timeout = 3
    settings = _settings(proxy.url(url), connect_timeout)
    engine = make_engine(settings)
    try:
        conn = connect(settings, engine).execution_options(isolation_level="AUTOCOMMIT")
        lock = lock_for(conn, "deadline-test")
        assert lock.try_acquire()
        assert lock.still_held()
        proxy.freeze()
        box = {}

        def beat():
            try:
                box["held"] = lock.still_held()
            except Exception as exc:  # noqa: BLE001 - examined below
                box["error"] = exc

        thread = threading.Thread(target=beat, daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(30)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()  # also ends a still_held() that hangs (the test then fails below)
        engine.dispose()

    assert "held" not in box, "still_held() answered through a frozen connection"
    assert elapsed < 30, "still_held() hung on a frozen connection"
    assert isinstance(box.get("error"), UnreachableError), box
    assert "stalled" in str(box["error"])
    # a control round trip's documented deadline: --connect-timeout within 2-30 s
    assert elapsed < min(max(connect_timeout, 2), 30) + 3, elapsed


# ---------------------------------------------------------------- during a migration

#: env.py whose own engine dials $ENV_URL (so one of the two sessions can go through a proxy)
ENV_VIA = '''
import os
from alembic import context
from sqlalchemy import create_engine, pool

engine = create_engine(os.environ["ENV_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


def _sleeping_project(tmp_path, seconds):
    from factory import Rev

    mig = write_project(tmp_path, [Rev("r001", None, f'op.execute("SELECT pg_sleep({seconds})")'),
                                   Rev("r002", "r001", 'op.create_table("t2")')])
    (mig / "env.py").write_text(ENV_VIA)
    return mig


def _sleeping(url):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(%' "
                "AND pid <> pg_backend_pid()")).scalar()
    finally:
        engine.dispose()


def test_a_lock_session_that_stalls_mid_revision_is_a_lost_lock(pg_url, tmp_path):
    from factory import versions, wait_until

    mig = _sleeping_project(tmp_path, 60)
    proxy = _proxy(pg_url)  # migrategate's own sessions go through it; env.py's does not
    try:
        proc = spawn("upgrade", *args_for(proxy.url(pg_url), mig, "--allow-proxy",
                                          "--connect-timeout", "3"), env={"ENV_URL": pg_url})
        wait_until(lambda: _sleeping(pg_url), what="the revision to run", timeout=60)
        proxy.freeze()
        _, err = proc.communicate(timeout=120)  # it used to wait for the lock session forever
    finally:
        proxy.close()

    assert proc.returncode == 11, err
    assert "migration lock lost: the lock session failed: no answer from the database" in err
    assert "could not be read back" in err  # the only path to the database is frozen
    assert versions(pg_url) == []
    wait_until(lambda: not _sleeping(pg_url), what="the revision's session to be ended")


def test_with_statement_timeout_a_migration_statement_whose_answer_never_comes_fails(pg_url,
                                                                                   tmp_path):
    from factory import versions, wait_until

    mig = _sleeping_project(tmp_path, 8)
    proxy = _proxy(pg_url)  # env.py's session goes through it; migrategate's does not
    try:
        proc = spawn("upgrade", *args_for(pg_url, mig, "--statement-timeout", "2",
                                          "--connect-timeout", "3"),
                     env={"ENV_URL": proxy.url(pg_url)})
        wait_until(lambda: _sleeping(pg_url), what="the revision to run", timeout=60)
        proxy.freeze()  # the server's statement_timeout answer can no longer arrive
        _, err = proc.communicate(timeout=120)  # it used to wait for that answer forever
    finally:
        proxy.close()

    assert proc.returncode == 6, err
    assert "revision r001" in err
    assert "no answer from the database within 5.0 s (the connection stalled)" in err
    assert "the connection to the database was lost" in err
    assert versions(pg_url) == []
