"""Session settings of the migration connection: the fence under env.py's own settings, and
``--pg-lock-timeout`` through a session-pooling PgBouncer (``--allow-proxy``)."""

from __future__ import annotations

import contextlib
import time

import pytest
import sqlalchemy as sa

from factory import (Rev, add_revision, args_for, chain, execute, hold_table, migrategate,
                     versions, write_project)

pytestmark = pytest.mark.slow

#: env.py as many apps write it: the session time zone pinned in connect_args
ENV_UTC = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                            prefix="sqlalchemy.", poolclass=pool.NullPool,
                            connect_args={"options": "-c timezone=UTC"})
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


def test_env_py_with_its_own_time_zone_is_not_a_lost_lock(pg_url, tmp_path, reliability):
    """The fence compares the lock session's backend_start from env.py's session: as text it
    would be rendered in two different time zones and never match (a false exit 11)."""
    name = sa.engine.make_url(pg_url).database
    execute(pg_url, f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'")
    mig = write_project(tmp_path, chain(2))
    (mig / "env.py").write_text(ENV_UTC)

    run = migrategate("upgrade", *args_for(pg_url, mig))

    assert run.code == 0, run.output
    assert "lock was lost" not in run.stderr
    assert versions(pg_url) == ["r002"]
    reliability("env.py pins timezone=UTC in connect_args on a database whose default is "
                "America/New_York", 1, "exit 0, both revisions applied; no false 'lock lost'")


@contextlib.contextmanager
def _bouncer(server, root, ignore_startup_parameters):
    """A session-pooling PgBouncer in front of ``server``; yields how to re-point a URL at it."""
    import servers

    bouncer = servers.start_pgbouncer(root / f"bouncer-{time.time_ns()}", server, "session",
                                      ignore_startup_parameters)
    try:
        yield lambda url: sa.engine.make_url(url).set(port=bouncer.port).render_as_string(
            hide_password=False)
    finally:
        bouncer.stop()


#: a revision that records the settings its own session runs under
RECORD_SETTINGS = Rev("seen", "r001", 'op.execute("CREATE TABLE seen AS SELECT '
                      "current_setting('lock_timeout') AS lock_timeout, "
                      "current_setting('statement_timeout') AS statement_timeout\")",
                      "record the session settings")


def _seen(url):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text("SELECT lock_timeout, statement_timeout "
                                              "FROM seen")).one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("ignored", [None, "options"], ids=["default-config",
                                                            "ignores-options"])
def test_session_pgbouncer_keeps_the_lock_and_statement_timeouts(
        postgres_server, server_root, pg_url, tmp_path, reliability, ignored):
    """libpq ``options`` are refused by PgBouncer's default configuration (it used to read as
    exit 4, a wrong password) and silently dropped with ``ignore_startup_parameters =
    options`` (--pg-lock-timeout not in force): through a proxy they are SET instead."""
    mig = write_project(tmp_path, chain(1))
    add_revision(mig, RECORD_SETTINGS)
    with _bouncer(postgres_server, server_root, ignored) as via:
        run = migrategate("upgrade", *args_for(via(pg_url), mig, "--allow-proxy",
                                               "--pg-lock-timeout", "1",
                                               "--statement-timeout", "60"))

    assert run.code == 0, run.output
    assert "a proxy is in between" in run.stderr
    assert _seen(pg_url) == ("1s", "1min")
    reliability(f"upgrade --allow-proxy --pg-lock-timeout 1 --statement-timeout 60 through "
                f"PgBouncer pool_mode=session, ignore_startup_parameters="
                f"{ignored or '(default)'}", 1,
                "exit 0; the migration session ran with lock_timeout 1s and "
                "statement_timeout 1min")


def test_blocked_alter_through_session_pgbouncer_times_out(
        postgres_server, server_root, pg_url, tmp_path, reliability):
    """With the options dropped by the proxy the ALTER queued behind the reader (and the app
    behind the ALTER) until the reader ended; now it gives up after --pg-lock-timeout."""
    mig = write_project(tmp_path, chain(1))
    with _bouncer(postgres_server, server_root, "options") as via:
        url = via(pg_url)
        assert migrategate("upgrade", *args_for(url, mig, "--allow-proxy")).code == 0
        add_revision(mig, Rev("alter", "r001",
                              'op.add_column("t1", sa.Column("x", sa.Integer))', "add x"))
        release, blocker, _ = hold_table(pg_url)
        started = time.monotonic()
        try:
            run = migrategate("upgrade", *args_for(url, mig, "--allow-proxy",
                                                   "--pg-lock-timeout", "1"), timeout=40)
        finally:
            took = time.monotonic() - started
            release.set()
            blocker.join()

    assert run.code == 6, run.output
    assert "SQLSTATE 55P03" in run.stderr
    assert versions(pg_url) == ["r001"]
    reliability("ALTER blocked by an application transaction, through PgBouncer "
                "pool_mode=session ignoring options, --allow-proxy --pg-lock-timeout 1", 1,
                f"exit 6 [SQLSTATE 55P03] after {took:.1f} s instead of queueing")


def test_pgbouncer_refusing_options_is_a_configuration_error(
        postgres_server, server_root, pg_url, tmp_path, reliability):
    """PgBouncer's "unsupported startup parameter" arrives without SQLSTATE: it is the
    proxy's configuration, not a wrong password (exit 4)."""
    mig = write_project(tmp_path, chain(1))
    with _bouncer(postgres_server, server_root, None) as via:
        url = sa.engine.make_url(via(pg_url)).update_query_dict(
            {"options": "-c timezone=UTC"}).render_as_string(hide_password=False)
        run = migrategate("upgrade", *args_for(url, mig, "--allow-proxy"))

    assert run.code == 2, run.output
    assert "unsupported startup parameter" in run.stderr
    assert "ignore_startup_parameters" in run.stderr
    assert versions(pg_url) == []
    reliability("URL with options=-c timezone=UTC through PgBouncer with its default "
                "ignore_startup_parameters", 1,
                "exit 2 naming PgBouncer's ignore_startup_parameters, not exit 4")
