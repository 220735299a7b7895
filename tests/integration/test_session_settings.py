"""Session settings of the migration connection: the fence under env.py's own settings, and
``--pg-lock-timeout`` through a session-pooling PgBouncer (``--allow-proxy``)."""

from __future__ import annotations

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
