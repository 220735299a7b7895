"""Settings resolution: flags beat env beat defaults; bad input is a clear ConfigError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from migrategate import cli, log
from migrategate.errors import ConfigError
from migrategate.settings import OPTIONS, register_secrets, resolve
from migrategate.urls import build_url

URL = "postgresql://app@db.example:5432/app"


def test_flag_beats_migrategate_env_beats_database_url():
    env = {"MIGRATEGATE_DATABASE_URL": "postgresql://env@h/db", "DATABASE_URL": "mysql://x@h/db"}
    s = resolve({"database_url": URL}, env)
    assert s.url.username == "app" and s.sources["database_url"] == "flag --database-url"
    s = resolve({}, env)
    assert s.url.username == "env" and s.sources["database_url"] == "env MIGRATEGATE_DATABASE_URL"
    s = resolve({}, {"DATABASE_URL": "postgresql://plain@h/db"})
    assert s.url.username == "plain" and s.sources["database_url"] == "env DATABASE_URL"


def test_defaults_are_documented_values():
    s = resolve({"database_url": URL}, {})
    assert (s.connect_timeout, s.lock_timeout, s.lock_name) == (60.0, 300.0, "migrategate")
    assert s.application_name.startswith("migrategate:")


def test_postgresql_scheme_gets_an_installed_driver():
    assert resolve({"database_url": URL}, {}).url.drivername == "postgresql+psycopg2"
    assert build_url("postgres://u@h/db").drivername == "postgresql+psycopg2"
    assert build_url("mysql://u@h/db").drivername == "mysql+pymysql"


def test_password_file_is_read_and_trailing_newline_dropped(tmp_path):
    f = tmp_path / "pw"
    f.write_text("s3cret-from-file\n")
    s = resolve({"database_url": URL, "password_file": str(f)}, {})
    assert s.url.password == "s3cret-from-file"
    assert "s3cret-from-file" not in s.masked_url


#: where the command line refuses a combination before resolution sees it (argparse)
CLI_WORDING = {"both --migrations and --config":
               "argument --config: not allowed with argument --migrations"}


@pytest.mark.parametrize("flags,env,needle", [
    ({"database_url": "not a url"}, {}, "malformed"),
    ({"database_url": "nosuchdb://u@h/d"}, {}, "unknown database or driver"),
    ({"database_url": "postgresql+nosuchdriver://u@h/d"}, {}, "unknown database or driver"),
    ({"database_url": "sqlite://"}, {}, "in-memory"),
    ({"database_url": URL, "password_file": "/nonexistent/pw"}, {},
     "cannot read the password file"),
    ({"database_url": "postgresql://u:inline@h/d"}, {"MIGRATEGATE_DATABASE_PASSWORD": "x"},
     "already contains a password"),
    ({"database_url": URL, "connect_timeout": "soon"}, {}, "number of seconds"),
    ({"database_url": URL}, {"MIGRATEGATE_LOCK_TIMEOUT": "-1"}, "at least 0 s"),
    ({"database_url": URL}, {"MIGRATEGATE_ALLOW_AHEAD": "maybe"}, "true or false"),
    ({"database_url": URL, "migrations": "a", "config": "b"}, {}, "both --migrations and --config"),
    ({"database_url": URL, "preset": "nosuch"}, {}, "unknown preset"),
])
def test_bad_configuration_is_a_config_error(flags, env, needle, capsys):
    with pytest.raises(ConfigError) as err:
        resolve(flags, env)
    assert needle in err.value.one_line()
    # what an operator sees: the same settings given to the CLI end with exit 2 and that
    # message on one error line (resolution fails before any database is dialled)
    argv = ["upgrade"]
    for name, value in flags.items():
        argv += [OPTIONS[name].flag_name, value]
    assert cli.run(argv, env=env) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if " error: " in line]
    assert len(errors) == 1 and CLI_WORDING.get(needle, needle) in errors[0], errors


def test_empty_password_file_is_refused(tmp_path):
    f = tmp_path / "pw"
    f.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        resolve({"database_url": URL, "password_file": str(f)}, {})


def test_expect_tables_from_env_is_a_comma_list():
    s = resolve({"database_url": URL}, {"MIGRATEGATE_EXPECT_TABLES": "accounts, apps,,"})
    assert s.expect_tables == ("accounts", "apps")


_pw = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
              min_size=4, max_size=40).filter(lambda p: p.strip() == p and "\n" not in p)


@hsettings(max_examples=150, deadline=None)
@given(password=_pw)
def test_any_password_is_masked_in_the_rendered_url_and_redacted(password):
    from urllib.parse import quote

    from migrategate import redact

    redact.clear()  # each example its own secret
    settings = resolve({"database_url": f"postgresql://user:{quote(password, safe='')}@h:5432/db"},
                       {})
    register_secrets(settings)  # the explicit step the CLI and the library API take
    url = settings.url
    assert url.password == password
    assert url.render_as_string(hide_password=True).endswith("://user:***@h:5432/db")
    assert log.redact(f"boom {password} boom") == "boom *** boom"


@hsettings(max_examples=100, deadline=None)
@given(raw=st.text(max_size=60))
def test_arbitrary_url_text_never_crashes_resolution(raw):
    try:
        s = resolve({"database_url": raw}, {})
    except ConfigError as exc:  # refused, saying why
        assert exc.message.strip()
    else:  # accepted: a URL with a database backend came out of it, or none was given
        assert (s.url is not None and bool(s.url.get_backend_name())) == bool(raw)


@hsettings(max_examples=100, deadline=None)
@given(value=st.text(max_size=12))
def test_seconds_options_parse_or_refuse_cleanly(value):
    try:
        s = resolve({"database_url": URL, "lock_timeout": value}, {})
    except ConfigError as exc:
        assert "lock-timeout" in exc.message
    else:
        assert s.lock_timeout >= 0


@pytest.mark.parametrize("raw,parts", [
    ("postgresql://u:Zq9first@Zq9second@h/db", ["Zq9first@Zq9second", "Zq9first", "Zq9second"]),
    ("postgresql://u:Zq9first@Zq9/second@h:5432/db",
     ["Zq9first@Zq9/second", "Zq9first", "Zq9/second"]),
])
def test_every_part_of_a_password_with_an_unquoted_at_is_a_secret(raw, parts):
    from migrategate.urls import url_secrets

    assert set(parts) <= set(url_secrets(raw))


def test_an_unquoted_at_in_the_password_is_refused_without_any_part_of_it():
    with pytest.raises(ConfigError) as err:
        resolve({"database_url": "postgresql://u:Zq9first@Zq9second@h/db"}, {})
    assert "%40" in err.value.one_line() and "Zq9" not in err.value.one_line()
    # an '@' in the user name (Azure's user@server) stays allowed
    assert resolve({"database_url": "postgresql://me@srv:pw@h/db"}, {}).url.host == "h"


@pytest.mark.parametrize("flags,env", [
    ({"database_url": URL}, {"MIGRATEGATE_DATABASE_PASSWORD": "Zq9\x00secret"}),
    ({"database_url": "postgresql://u:Zq9%00secret@h/db"}, {}),
    ({"database_url": "postgresql://u:Zq9\x00secret@h/db"}, {}),
])
def test_a_nul_byte_in_the_password_is_a_config_error(flags, env):
    with pytest.raises(ConfigError) as err:
        resolve(flags, env)
    assert "NUL" in err.value.one_line() and "Zq9" not in err.value.one_line()
