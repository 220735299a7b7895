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


@pytest.mark.parametrize("db_type", ["mysql", "oceanbase", "seekdb"])
def test_mysql_family_uses_mysql_and_needs_its_port(db_type):
    with pytest.raises(ConfigError, match="DB_PORT"):
        resolve({"preset": "dify"}, dict(ENV, DB_TYPE=db_type))
    u = resolve({"preset": "dify"}, dict(ENV, DB_TYPE=db_type, DB_PORT="3306")).url
    assert u.get_backend_name() == "mysql" and u.port == 3306


def test_every_missing_variable_is_named_at_once():
    with pytest.raises(ConfigError) as err:
        resolve({"preset": "dify"}, {"DB_HOST": "db"})
    assert all(v in err.value.message for v in ("DB_USERNAME", "DB_DATABASE", "DB_PASSWORD"))


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
