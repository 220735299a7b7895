"""Session settings of the migration connection: the fence under env.py's own settings, and
PgBouncer's refusal of libpq options."""

from __future__ import annotations

import contextlib
import time

import pytest
import sqlalchemy as sa

from factory import args_for, chain, migrategate, versions, write_project

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


def _execute(url, *statements):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_env_py_with_its_own_time_zone_is_not_a_lost_lock(pg_url, tmp_path, reliability):
    """The fence compares the lock session's backend_start from env.py's session: as text it
    would be rendered in two different time zones and never match (a false exit 11)."""
    name = sa.engine.make_url(pg_url).database
    _execute(pg_url, f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'")
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
