"""Every flag does what it says, and stdout with --json is one document in every outcome."""

from __future__ import annotations

import json


import pytest
import sqlalchemy as sa

from factory import Rev, args_for, chain, migrategate, table_rev, tables, write_project

FLASK_ENV_PY = '''
from alembic import context
from flask import current_app

config = context.config


def run_migrations_online():
    engine = current_app.extensions["migrate"].db.engine
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None,
                          **current_app.extensions["migrate"].configure_args)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
'''


def _versions(url, table):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {table}"))]
    finally:
        engine.dispose()


def test_two_apps_share_a_database_with_their_own_version_tables(pg_url, tmp_path):
    shop = write_project(tmp_path / "shop", [table_rev("s1", None, "orders")])
    blog = write_project(tmp_path / "blog", [table_rev("b1", None, "posts")])

    first = migrategate("upgrade", *args_for(pg_url, shop, "--version-table", "shop_version"))
    second = migrategate("upgrade", *args_for(pg_url, blog, "--version-table", "blog_version"))
    again = migrategate("upgrade", *args_for(pg_url, shop, "--version-table", "shop_version",
                                             "--json"))

    assert (first.code, second.code, again.code) == (0, 0, 0), second.output
    assert _versions(pg_url, "shop_version") == ["s1"]
    assert _versions(pg_url, "blog_version") == ["b1"]
    assert "alembic_version" not in tables(pg_url)
    assert json.loads(again.stdout)["outcome"] == "up-to-date"


def test_pg_lock_timeout_holds_with_the_dify_preset_options(postgres_server, pg_url, tmp_path):
    """The preset puts libpq options (the session time zone) into the URL; --pg-lock-timeout
    must still reach the migration session (libpq ignores PGOPTIONS then)."""
    url = sa.engine.make_url(pg_url)
    mig = write_project(tmp_path, chain(1) + [Rev("alter", "r001",
                                                  'op.add_column("t1", sa.Column("x", '
                                                  'sa.Integer))', "alter t1")])
    assert migrategate("upgrade", *args_for(pg_url, mig), "--to", "r001").code == 0
    blocker = sa.create_engine(pg_url, poolclass=sa.pool.NullPool).connect()
    blocker.execute(sa.text("SELECT * FROM t1"))  # ACCESS SHARE held in an open transaction
    dify_env = {"DB_HOST": url.host, "DB_PORT": str(url.port), "DB_USERNAME": url.username,
                "DB_PASSWORD": url.password, "DB_DATABASE": url.database}
    try:
        run = migrategate("upgrade", "--preset", "dify", "--migrations", str(mig),
                          "--pg-lock-timeout", "1", env=dify_env, timeout=60)
    finally:
        blocker.close()

    assert run.code == 6, run.output
    assert "lock timeout" in run.stderr and "[SQLSTATE 55P03]" in run.stderr


def test_single_transaction_holds_for_flask_migrate_directories(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(2) + [Rev("r003", "r002", 'op.execute("SELECT * FROM '
                                                                  'nowhere")', "broken")])
    (mig / "env.py").write_text(FLASK_ENV_PY)

    run = migrategate("upgrade", *args_for(pg_url, mig, "--single-transaction"))

    assert run.code == 6, run.output
    assert "t1" not in tables(pg_url)  # r001 and r002 were rolled back with r003


def test_wait_refuses_an_interval_that_would_busy_poll(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1))

    run = migrategate("wait", *args_for(pg_url, mig), "--interval", "0")

    assert run.code == 2
    assert "at least 0.1 s" in run.stderr


def test_pg_lock_timeout_zero_is_refused_not_silently_unlimited(pg_url, tmp_path):
    run = migrategate("upgrade", *args_for(pg_url, write_project(tmp_path, chain(1))),
                      "--pg-lock-timeout", "0")

    assert run.code == 2 and "no lock timeout" in run.stderr


def test_library_api_refuses_unknown_options():
    import migrategate

    with pytest.raises(TypeError, match="database_uri"):
        migrategate.upgrade(database_uri="sqlite:///x.db")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        migrategate.verify(lock_timeout=5)  # type: ignore[call-arg]  # not a verify option


def test_library_api_upgrades_and_raises_typed_errors(tmp_path):
    import migrategate

    url = f"sqlite:///{tmp_path / 'lib.db'}"
    mig = write_project(tmp_path, chain(2))

    result = migrategate.upgrade(database_url=url, migrations=str(mig), expect_tables=["t2"],
                                 env={})

    assert result.outcome == "verified"
    assert [a.revision for a in result.applied] == ["r001", "r002"]
    with pytest.raises(migrategate.VerificationFailed) as info:
        migrategate.verify(database_url=url, migrations=str(mig), expect_tables=["nope"], env={})
    assert info.value.exit_code == 7


@pytest.mark.parametrize("argv", [["upgrade", "--json", "--no-such-flag"],
                                  ["--json", "frobnicate"],
                                  ["wait", "--json", "--timeout"]])
def test_usage_errors_still_print_one_json_document(argv):
    run = migrategate(*argv)

    assert run.code == 2
    report = json.loads(run.stdout)
    assert report["outcome"] == "usage-error" and report["exit_code"] == 2


def test_status_json_does_not_claim_verification(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(2))

    report = json.loads(migrategate("status", *args_for(pg_url, mig), "--json").stdout)

    assert report["pending"] and "verified" not in report["meaning"]


def test_allow_ahead_says_the_database_is_ahead_not_up_to_date(pg_url, tmp_path):
    newer = write_project(tmp_path / "new", chain(3))
    older = write_project(tmp_path / "old", chain(2))
    assert migrategate("upgrade", *args_for(pg_url, newer)).code == 0

    run = migrategate("upgrade", *args_for(pg_url, older, "--allow-ahead"))

    assert run.code == 0, run.output
    assert "up to date" not in run.stderr
    assert "ahead of these scripts' heads r002" in run.stdout


def test_alembic_info_lines_appear_only_with_debug(pg_url, new_pg_url, tmp_path):
    mig = write_project(tmp_path, chain(3), env_extra="")
    env_py = mig / "env.py"
    env_py.write_text("import logging\nlogging.basicConfig(level=logging.INFO, "
                      "format='%(levelname)-5.5s [%(name)s] %(message)s')\n" + env_py.read_text())

    quiet = migrategate("upgrade", *args_for(pg_url, mig))
    loud = migrategate("upgrade", "--debug", *args_for(new_pg_url(), mig))

    assert quiet.code == loud.code == 0
    assert "[alembic." not in quiet.stderr  # one line per revision, ours
    assert quiet.stderr.count("[1/3]") == 1
    assert "INFO  [alembic.runtime.migration] Running upgrade" in loud.stderr



