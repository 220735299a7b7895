"""Dify: the preset, Flask-Migrate directories without the app, doctor, and the incident."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from factory import cli_env, migrategate, tables, versions

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "difylike"
KEY_TABLES = {"accounts", "tenants", "tenant_account_joins", "apps", "app_model_configs",
              "datasets"}  # the preset's key tables; the fixture creates them all


def dify_env(url, **extra):
    """Dify's own DB_* variables for the database at ``url``."""
    u = sa.engine.make_url(url)
    env = {
        "DB_TYPE": "postgresql" if u.get_backend_name() == "postgresql" else "mysql",
        "DB_HOST": u.host, "DB_PORT": str(u.port), "DB_USERNAME": u.username,
        "DB_PASSWORD": u.password, "DB_DATABASE": u.database,
    }
    env.update(extra)
    return env


def dify(*args, env, **kw):
    """migrategate with the Dify preset pointed at the fixture app instead of /app/api."""
    return migrategate(*args, "--preset", "dify", "--migrations", str(FIXTURE / "migrations"),
                       "--app-root", str(FIXTURE), env=env, **kw)


@pytest.fixture(params=["postgresql", "mariadb"])
def dify_db(request):
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url")


def test_preset_migrates_the_dify_like_app_without_booting_it(dify_db, tmp_path):
    marker = tmp_path / "factory-called"
    env = dify_env(dify_db, DIFYLIKE_FACTORY_MARKER=str(marker))

    first = dify("upgrade", env=env)
    second = dify("upgrade", "--json", env=env)

    assert first.code == 0, first.output
    assert KEY_TABLES <= set(tables(dify_db))
    assert second.code == 0 and json.loads(second.stdout)["outcome"] == "up-to-date"
    assert not marker.exists(), "the app factory must not be called"
    assert len(versions(dify_db)) == 1


def test_read_only_commands_never_import_the_app_models(pg_url, tmp_path):
    marker = tmp_path / "models-imported"
    env = dify_env(pg_url)
    assert dify("upgrade", env=env).code == 0
    env["DIFYLIKE_IMPORT_MARKER"] = str(marker)

    for cmd in ("verify", "status", "wait", "upgrade", "doctor"):
        run = dify(cmd, env=env)
        assert run.code == 0, (cmd, run.output)
        assert not marker.exists(), f"{cmd} imported the app's models package"


def test_missing_dify_variables_are_all_named_at_once(tmp_path):
    run = migrategate("upgrade", "--preset", "dify", env={"DB_HOST": "db"})
    assert run.code == 2
    for name in ("DB_USERNAME", "DB_PASSWORD", "DB_DATABASE"):
        assert name in run.stderr


def test_real_app_factory_is_used_with_flask_app(pg_url, tmp_path):
    marker = tmp_path / "factory-called"
    env = dify_env(pg_url, DIFYLIKE_FACTORY_MARKER=str(marker),
                   DIFYLIKE_DATABASE_URL=pg_url)

    run = dify("upgrade", "--flask-app", "app_factory:create_app", env=env)

    assert run.code == 0, run.output
    assert marker.exists()


def _skipping_upgrade_db(url, redis_url):
    """Dify's old `flask upgrade-db`, as modelled by the fixture."""
    env = cli_env({"DIFYLIKE_DATABASE_URL": url, "DIFYLIKE_REDIS_URL": redis_url})
    return subprocess.run([sys.executable, str(FIXTURE / "skipping_upgrade_db.py")],
                          capture_output=True, text=True, env=env, cwd=str(FIXTURE), timeout=120)


def test_the_incident_then_migrategate_fixes_it(pg_url, redis_server):
    import redis

    r = redis.Redis(host=redis_server.host, port=redis_server.port)
    r.set("db_upgrade_lock", "stale-holder")  # a holder that never released it, no TTL
    env = dify_env(pg_url, REDIS_HOST=redis_server.host, REDIS_PORT=str(redis_server.port))

    # 1. the incident: exit 0, "skipped", and no tables
    old = _skipping_upgrade_db(pg_url, redis_server.redis_url)
    assert old.returncode == 0
    assert "Database migration skipped" in old.stdout + old.stderr
    assert not KEY_TABLES & set(tables(pg_url))

    # 2. doctor explains it: the stale Redis key, no version table, missing tables
    doc = dify("doctor", "--json", env=env)
    assert doc.code != 0
    report = json.loads(doc.stdout)
    failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}
    assert "db_upgrade_lock" in failed["redis-lock"] and "no expiry" in failed["redis-lock"]
    assert "does not exist" in failed["version-table"]
    assert "pending" in failed and "key-tables" in failed

    # 3. migrategate migrates regardless of Redis, and verifies
    up = dify("upgrade", env=env)
    assert up.code == 0, up.output
    assert KEY_TABLES <= set(tables(pg_url))

    # 4. doctor is green once the stale key is gone
    r.delete("db_upgrade_lock")
    assert dify("doctor", env=env).code == 0


def test_upgrade_needs_no_redis_at_all(pg_url):
    env = dify_env(pg_url, REDIS_HOST="127.0.0.1", REDIS_PORT="1")  # nothing listens there
    assert dify("upgrade", env=env).code == 0


def test_an_empty_db_password_logs_in_as_dify_would(mariadb_url):
    """DB_PASSWORD="" is Dify's default (trust set-ups, sidecar proxies): a set value."""
    u = sa.engine.make_url(mariadb_url)
    engine = sa.create_engine(mariadb_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE USER IF NOT EXISTS 'nopw'@'%' IDENTIFIED BY ''"))
        conn.execute(sa.text(f"GRANT ALL ON `{u.database}`.* TO 'nopw'@'%'"))
    engine.dispose()
    env = dify_env(mariadb_url, DB_USERNAME="nopw", DB_PASSWORD="")

    run = dify("upgrade", env=env)

    assert run.code == 0, run.output
    assert KEY_TABLES <= set(tables(mariadb_url))


def test_app_root_alone_finds_its_migrations(pg_url):
    run = migrategate("upgrade", "--preset", "dify", "--app-root", str(FIXTURE),
                      env=dify_env(pg_url))
    assert run.code == 0, run.output
    assert KEY_TABLES <= set(tables(pg_url))


def test_doctor_finds_the_lock_under_difys_key_prefix(pg_url, redis_server):
    import redis

    r = redis.Redis(host=redis_server.host, port=redis_server.port)
    r.set("acme:db_upgrade_lock", "stale-holder")
    try:
        env = dify_env(pg_url, REDIS_HOST=redis_server.host, REDIS_PORT=str(redis_server.port),
                       REDIS_KEY_PREFIX="acme")
        assert dify("upgrade", env=env).code == 0
        doc = dify("doctor", "--json", env=env)
    finally:
        r.delete("acme:db_upgrade_lock")

    failed = {c["name"]: c["detail"] for c in json.loads(doc.stdout)["checks"] if not c["ok"]}
    assert list(failed) == ["redis-lock"], doc.output
    assert "'acme:db_upgrade_lock' exists" in failed["redis-lock"]
    assert doc.code == 7


def test_an_unreachable_redis_is_its_own_finding_not_a_failed_database(pg_url):
    env = dify_env(pg_url, REDIS_HOST="127.0.0.1", REDIS_PORT="1")  # nothing listens there
    assert dify("upgrade", env=env).code == 0

    doc = dify("doctor", "--json", env=env)

    report = json.loads(doc.stdout)
    failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}
    assert list(failed) == ["redis"], doc.output
    assert failed["redis"].startswith("not checked: could not inspect redis://127.0.0.1:1/0")
    assert doc.code == 0 and report["outcome"] == "ok"
    assert "do not affect the exit code: redis" in report["message"]


def test_sentinel_redis_is_said_to_be_not_checked(pg_url):
    env = dify_env(pg_url, REDIS_HOST="127.0.0.1", REDIS_USE_SENTINEL="true",
                   REDIS_SENTINELS="127.0.0.1:1", REDIS_KEY_PREFIX="acme")
    assert dify("upgrade", env=env).code == 0

    doc = dify("doctor", env=env)

    assert doc.code == 0, doc.output
    assert "✗ redis: not checked: Dify's Redis is a sentinel" in doc.stdout
    assert "redis-cli EXISTS acme:db_upgrade_lock" in doc.stdout


BROKEN_IMPORT = '''"""broken"""
from alembic import op
import models.does_not_exist  # noqa

revision = "zz01broken"
down_revision = "f0a1b2c3d4e5"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT 1")


def downgrade():
    pass
'''


def test_a_revision_that_fails_to_import_names_its_file_and_line(pg_url, tmp_path):
    """Nothing ran, so it is a configuration error (2), named in one line without --debug."""
    import shutil

    migrations = tmp_path / "migrations"
    shutil.copytree(FIXTURE / "migrations", migrations)
    (migrations / "versions" / "zz01_broken.py").write_text(BROKEN_IMPORT)
    env = dify_env(pg_url)

    run = migrategate("upgrade", "--preset", "dify", "--migrations", str(migrations),
                      "--app-root", str(FIXTURE), env=env)

    assert run.code == 2, run.output
    assert "Traceback" not in run.stderr
    assert "zz01_broken.py, line 3" in run.stderr, run.stderr
    assert "models.does_not_exist" in run.stderr
