"""The Dify preset builds the URL Dify itself would use, from Dify's own variables."""

from __future__ import annotations

import pytest

from migrategate.errors import ConfigError
from migrategate.presets import dify
from migrategate.settings import resolve

ENV = {"DB_HOST": "db", "DB_USERNAME": "dify", "DB_PASSWORD": "p@ss:w/rd%", "DB_DATABASE": "app"}


def test_postgresql_url_with_dify_defaults_and_session_time_zone():
    s = resolve({"preset": "dify"}, ENV)
    u = s.url
    assert (u.get_backend_name(), u.host, u.port, u.username, u.password, u.database) == \
        ("postgresql", "db", 5432, "dify", "p@ss:w/rd%", "app")
    assert u.query["options"] == "-c timezone=UTC"
    assert s.migrations == "/app/api/migrations" and s.app_root == "/app/api"
    assert {"accounts", "tenants", "apps"} <= set(s.expect_tables)
    assert s.sources["database_url"] == "preset dify (DB_* env)"


def test_extras_charset_and_time_zone_override_are_merged():
    env = dict(ENV, DB_EXTRAS="keepalives_idle=60&options=-c search_path=dify",
               DB_CHARSET="utf8", DB_SESSION_TIMEZONE_OVERRIDE="")
    u = resolve({"preset": "dify"}, env).url
    assert u.query["keepalives_idle"] == "60"
    assert u.query["options"] == "-c search_path=dify"
    assert u.query["client_encoding"] == "utf8"


def test_extras_options_and_time_zone_are_joined_as_dify_passes_them():
    env = dict(ENV, DB_EXTRAS="options=-c search_path=dify",
               DB_SESSION_TIMEZONE_OVERRIDE="Asia/Tokyo")
    assert resolve({"preset": "dify"}, env).url.query["options"] == \
        "-c search_path=dify -c timezone=Asia/Tokyo"


def test_mysql_uses_pymysql_as_dify_does_and_needs_its_port():
    with pytest.raises(ConfigError, match="DB_PORT"):
        resolve({"preset": "dify"}, dict(ENV, DB_TYPE="mysql"))
    u = resolve({"preset": "dify"}, dict(ENV, DB_TYPE="mysql", DB_PORT="3306")).url
    assert (u.drivername, u.port) == ("mysql+pymysql", 3306)
    assert "options" not in u.query  # the session time zone is a PostgreSQL-only setting


@pytest.mark.parametrize("db_type", ["oceanbase", "seekdb"])
def test_untested_mysql_compatibles_are_refused_with_the_reason(db_type):
    """Dify accepts them; migrategate can't run such a server here to test its GET_LOCK."""
    with pytest.raises(ConfigError) as err:
        resolve({"preset": "dify"}, dict(ENV, DB_TYPE=db_type, DB_PORT="2881"))
    assert f"not tested on {db_type}" in err.value.message and "GET_LOCK" in err.value.message


def test_the_legacy_scheme_variable_without_db_type_is_ambiguous_and_refused():
    """Dify >= 1.10 ignores SQLALCHEMY_DATABASE_URI_SCHEME (PostgreSQL by DB_TYPE's default);
    older Dify uses it: the preset must not pick MySQL where the api uses PostgreSQL."""
    with pytest.raises(ConfigError) as err:
        resolve({"preset": "dify"}, dict(ENV, SQLALCHEMY_DATABASE_URI_SCHEME="mysql+pymysql",
                                         DB_PORT="3306"))
    assert "Dify 1.10 and later ignore that variable" in err.value.message
    assert "set DB_TYPE" in err.value.hint
    u = resolve({"preset": "dify"}, dict(ENV, SQLALCHEMY_DATABASE_URI_SCHEME="mysql+pymysql",
                                         DB_TYPE="mysql", DB_PORT="3306")).url
    assert u.drivername == "mysql+pymysql"
    assert resolve({"preset": "dify"}, dict(
        ENV, SQLALCHEMY_DATABASE_URI_SCHEME="postgresql")).url.get_backend_name() == "postgresql"


@pytest.mark.parametrize("port, expected", [(" 5432", 5432), ("5433 ", 5433), ("05432", 5432)])
def test_a_port_difys_settings_accept_is_accepted(port, expected):
    assert resolve({"preset": "dify"}, dict(ENV, DB_PORT=port)).url.port == expected


@pytest.mark.parametrize("port", ["abc", "0", "70000", "54 32"])
def test_a_port_dify_refuses_is_refused(port):
    with pytest.raises(ConfigError, match="not a port number"):
        resolve({"preset": "dify"}, dict(ENV, DB_PORT=port))


def test_settings_in_the_app_roots_env_file_are_read_as_dify_reads_them(tmp_path):
    (tmp_path / ".env").write_text(
        "# Dify's api/.env\nDB_HOST=from-file\nexport DB_PORT='5544'\n"
        'DB_PASSWORD="file secret"  \nDB_DATABASE=app # a comment\n')
    env = {"DB_USERNAME": "dify", "DB_DATABASE": "from-env", "MIGRATEGATE_APP_ROOT": str(tmp_path)}
    with pytest.raises(ConfigError, match="contains a space"):  # Dify's own URL fails too
        resolve({"preset": "dify"}, env)
    (tmp_path / ".env").write_text("DB_HOST=from-file\nexport DB_PORT='5544'\n"
                                   'DB_PASSWORD="file-secret"\n')
    s = resolve({"preset": "dify"}, env)
    u = s.url
    assert (u.host, u.port, u.password, u.database) == ("from-file", 5544, "file-secret",
                                                        "from-env")  # the environment wins
    assert s.sources["database_url"] == f"preset dify (DB_* env and {tmp_path}/.env)"
    assert "file-secret" in s.secrets


def test_remote_settings_are_named_not_guessed():
    env = {"REMOTE_SETTINGS_SOURCE_NAME": "apollo"}
    with pytest.raises(ConfigError) as err:
        resolve({"preset": "dify"}, env)
    assert "from apollo (REMOTE_SETTINGS_SOURCE_NAME)" in err.value.message
    assert "DB_*" in err.value.hint


def test_mysql_extras_reach_the_driver_unchanged():
    env = dict(ENV, DB_TYPE="mysql", DB_PORT="3306", DB_EXTRAS="charset=utf8mb4")
    assert dict(resolve({"preset": "dify"}, env).url.query) == {"charset": "utf8mb4"}


def test_charset_on_mysql_is_refused_because_difys_own_url_fails_there():
    env = dict(ENV, DB_TYPE="mysql", DB_PORT="3306", DB_CHARSET="utf8mb4")
    with pytest.raises(ConfigError) as err:
        resolve({"preset": "dify"}, env)
    assert "client_encoding" in err.value.message and "DB_EXTRAS" in err.value.hint


@pytest.mark.parametrize("db_type", ["Postgresql", "postgres", "mariadb"])
def test_db_type_is_matched_exactly_as_difys_config_does(db_type):
    with pytest.raises(ConfigError, match="DB_TYPE"):
        resolve({"preset": "dify"}, dict(ENV, DB_TYPE=db_type))


@pytest.mark.parametrize("password", ["", "p@ss:w/rd%+&?#", "ünïcode"])
def test_url_equals_the_one_difys_config_builds(password):
    """Dify's SQLALCHEMY_DATABASE_URI, restated from api/configs/middleware/__init__.py."""
    from urllib.parse import quote_plus

    import sqlalchemy as sa

    env = dict(ENV, DB_PASSWORD=password, DB_EXTRAS="keepalives=1", DB_CHARSET="utf8",
               DB_SESSION_TIMEZONE_OVERRIDE="")
    difys = (f"postgresql://{quote_plus(env['DB_USERNAME'])}:{quote_plus(password)}@db:5432/app"
             "?keepalives=1&client_encoding=utf8")
    ours = resolve({"preset": "dify"}, env).url
    theirs = sa.engine.make_url(difys)
    assert (ours.username, ours.password, ours.host, ours.port, ours.database,
            dict(ours.query)) == (theirs.username, theirs.password, theirs.host, theirs.port,
                                  theirs.database, dict(theirs.query))


def test_an_empty_db_password_is_a_set_password():
    s = resolve({"preset": "dify"}, dict(ENV, DB_PASSWORD=""))
    assert s.url.password == "" and s.url.username == "dify"


def test_a_space_in_the_password_is_refused_because_dify_would_send_plus_signs():
    with pytest.raises(ConfigError, match="space"):
        resolve({"preset": "dify"}, dict(ENV, DB_PASSWORD="two words"))


def test_app_root_implies_its_migrations_directory():
    s = resolve({"preset": "dify", "app_root": "/src/dify/api"}, ENV)
    assert s.migrations == "/src/dify/api/migrations"
    s = resolve({"preset": "dify"}, dict(ENV, MIGRATEGATE_APP_ROOT="/opt/api"))
    assert (s.app_root, s.migrations) == ("/opt/api", "/opt/api/migrations")
    s = resolve({"preset": "dify", "app_root": "/opt/api", "migrations": "/m"}, ENV)
    assert s.migrations == "/m"


def test_every_missing_variable_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        resolve({"preset": "dify"}, {"DB_HOST": "db"})
    assert all(v in err.value.message for v in ("DB_USERNAME", "DB_DATABASE", "DB_PASSWORD"))
    assert "DB_HOST" not in err.value.message


def test_password_file_replaces_db_password(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    env = {k: v for k, v in ENV.items() if k != "DB_PASSWORD"}
    s = resolve({"preset": "dify", "password_file": str(pw)}, env)
    assert s.url.password == "from-file"


def test_an_explicit_url_wins_over_db_variables():
    s = resolve({"preset": "dify", "database_url": "postgresql://x@elsewhere/db"}, {})
    assert s.url.host == "elsewhere"


def test_redis_url_from_dify_variables():
    assert dify.redis_url({}) is None
    assert dify.redis_url({"REDIS_HOST": "r", "REDIS_PASSWORD": "s3", "REDIS_DB": "2",
                           "REDIS_USE_SSL": "true"}) == "rediss://:s3@r:6379/2"


def test_redis_lock_key_follows_difys_key_prefix():
    assert dify.redis_lock_key({}) == "db_upgrade_lock"
    assert dify.redis_lock_key({"REDIS_KEY_PREFIX": " acme "}) == "acme:db_upgrade_lock"
    assert dify.redis_lock_key({"REDIS_KEY_PREFIX": "  "}) == "db_upgrade_lock"


def test_sentinel_and_cluster_redis_get_no_plain_url():
    env = dict(ENV, REDIS_HOST="r", REDIS_USE_SENTINEL="true")
    assert dify.redis_topology(env) == "sentinel"
    assert resolve({"preset": "dify"}, env).redis_url is None
    assert dify.redis_topology({"REDIS_USE_CLUSTERS": "1"}) == "cluster"
    assert dify.redis_topology({"REDIS_USE_SENTINEL": "false"}) is None
