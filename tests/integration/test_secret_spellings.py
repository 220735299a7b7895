"""No spelling of a password reaches any output, and stdout stays one JSON document.

Generated passwords (quotes, backslashes, non-ASCII, URL-reserved characters, spaces,
1 to 64 characters) go through a revision that fails with the password in its SQL
(literally, twice — once where PostgreSQL's error context cuts it short — and as a
bound parameter), on PostgreSQL and MariaDB, by every route (URL, password file,
environment, Dify preset), with and without ``--json`` and ``--debug``.

The spellings looked for are computed by the test (:func:`printed_forms`), not taken
from migrategate's redactor. A spelling of four or more characters must not appear at
all, nor cut short next to "..." (three or more characters of it); a shorter one must
not appear as a token of its own (migrategate masks short secrets only there: masking
every "e" would destroy the output). Whitespace-only passwords are not generated.
"""

from __future__ import annotations

import json
import re
from typing import Pattern, Set
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import servers
from factory import Rev, chain, migrategate, write_project

REPORT_KEYS = {"command", "outcome", "exit_code", "meaning", "message", "database",
               "from_revisions", "to_revisions", "heads", "applied", "pending", "checks",
               "failed_revision", "lock", "seconds"}

ALPHABET = st.sampled_from(list("abcXYZ019 '\"\\%@:/?#&=+ü密-_.;$"))
PASSWORDS = st.text(ALPHABET, min_size=1, max_size=64)


def _sql_literal(password: str, backend: str) -> str:
    text = password.replace("'", "''")
    if backend == "mariadb":
        text = text.replace("\\", "\\\\")
    return f"'{text}'"


def _failing_revision(password: str, backend: str) -> Rev:
    lit = _sql_literal(password, backend)
    padding = ", ".join(f"{k} AS pad_{k}" for k in range(12))
    sql = f"SELECT {lit} AS a, {padding}, {lit} AS b, :p AS c FROM nowhere_table"
    return Rev("boom", "r001", f"op.execute(sa.text({sql!r}).bindparams(p=PW))",
               "fails with the password in its SQL", header=f"PW = {password!r}")


def _account(server: "servers.Server", password: str) -> sa.engine.URL:
    """A fresh database owned by a fresh user whose password is ``password``."""
    url = sa.engine.make_url(servers.create_database(server, prefix="s"))
    user = f"u_{url.database}"[:30]
    statements = []
    if server.kind == "postgresql":
        pw = password.replace("'", "''")
        statements += [f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{pw}'",
                       f'ALTER DATABASE "{url.database}" OWNER TO "{user}"',
                       f'GRANT ALL ON DATABASE "{url.database}" TO "{user}"']
    else:
        pw = password.replace("\\", "\\\\").replace("'", "''")
        statements += [f"CREATE USER '{user}'@'%' IDENTIFIED BY '{pw}'",
                       f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"]
    _raw(server.url(), statements)
    if server.kind == "postgresql":  # the new owner needs the public schema too
        _raw(url, [f'ALTER SCHEMA public OWNER TO "{user}"'])
    return url.set(username=user, password=password)


def _raw(url, statements):
    """Through the DBAPI cursor without parameters: a '%' in a password stays a '%'."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        for statement in statements:
            cursor.execute(statement)
        conn.commit()
    finally:
        conn.close()
        engine.dispose()


def _route(route: str, url: sa.engine.URL, backend: str, tmp) -> tuple:
    """(extra args, extra env) that give migrategate the URL and password by ``route``."""
    bare = sa.engine.URL.create(url.drivername, url.username, None, url.host, url.port,
                                url.database).render_as_string(hide_password=False)
    if route == "url":
        return ["--database-url", url.render_as_string(hide_password=False)], {}
    if route == "file":
        path = tmp / "password"
        path.write_text(url.password + "\n", encoding="utf-8")
        return ["--database-url", bare, "--password-file", str(path)], {}
    if route == "env":
        return [], {"MIGRATEGATE_DATABASE_URL": bare,
                    "MIGRATEGATE_DATABASE_PASSWORD": url.password}
    return ["--preset", "dify"], {
        "DB_TYPE": "postgresql" if backend == "postgresql" else "mysql",
        "DB_HOST": url.host, "DB_PORT": str(url.port), "DB_USERNAME": url.username,
        "DB_PASSWORD": url.password, "DB_DATABASE": url.database}


def _py_escape(text: str, mark: str) -> str:
    """The inside of a Python string literal delimited by ``mark`` (repr, tracebacks of
    the revision's source), for this test's alphabet (no control characters)."""
    return text.replace("\\", "\\\\").replace(mark, "\\" + mark)


def printed_forms(password: str, backend: str, url: sa.engine.URL) -> Set[str]:
    """Every way this test's runs can print ``password``, computed here and not by
    migrategate: as typed; URL-quoted both ways; as SQLAlchemy renders the URL the run
    used; as the SQL literal of the failing revision (and as the driver escapes the
    bound parameter); each of those with ``%`` doubled (SQLAlchemy's pyformat SQL in
    errors); each inside a Python literal (repr, ``--debug`` tracebacks) and a JSON
    string (``--json``, both ``ensure_ascii`` ways), and a JSON string of a repr."""
    rendered = url.render_as_string(hide_password=False)
    head = f"{url.drivername}://{url.username}:"
    assert rendered.startswith(head)
    typed = {password, quote(password, safe=""), quote_plus(password),
             rendered[len(head):rendered.rindex("@")], _sql_literal(password, backend)[1:-1]}
    if backend == "mariadb":
        from pymysql.converters import escape_string

        typed.add(escape_string(password))
    typed |= {t.replace("%", "%%") for t in typed}
    quoted = set(typed)
    for t in typed:
        quoted |= {repr(t)[1:-1], _py_escape(t, "'"), _py_escape(t, '"'),
                   repr(t.encode("utf-8"))[2:-1]}
    printed = set(quoted)
    for q in quoted:
        printed |= {json.dumps(q)[1:-1], json.dumps(q, ensure_ascii=False)[1:-1]}
    return printed


def _token(form: str) -> Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(form)}(?!\w)")


@pytest.fixture(scope="module")
def servers_by_kind(postgres_server, mariadb_server):
    return {"postgresql": postgres_server, "mariadb": mariadb_server}


@settings(max_examples=24, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(password=PASSWORDS, backend=st.sampled_from(["postgresql", "mariadb"]),
       route=st.sampled_from(["url", "file", "env", "dify"]),
       as_json=st.booleans(), debug=st.booleans())
@example(password='0\'"', backend="postgresql", route="url", as_json=False, debug=True)
@example(password="e", backend="postgresql", route="url", as_json=True, debug=False)
@example(password="null", backend="mariadb", route="env", as_json=True, debug=True)
@example(password="p@ss:w/rd%41?#&=+ \u00fc", backend="postgresql", route="url",
         as_json=True, debug=True)
@example(password='Qx"y\\z' * 10, backend="postgresql", route="file", as_json=True,
         debug=True)
@example(password="blue sky/42", backend="mariadb", route="url", as_json=False, debug=True)
def test_no_spelling_of_the_password_appears_and_stdout_parses(
        servers_by_kind, tmp_path_factory, password, backend, route, as_json, debug):
    assume(password.strip())  # a whitespace-only password is not masked (nothing to hide)
    # PyMySQL sends passwords as latin-1 while the server hashed the UTF-8 text it was
    # given: a non-ASCII MariaDB password can't log in through it (see the next test)
    assume(backend != "mariadb" or password.isascii())
    tmp = tmp_path_factory.mktemp("secret")
    url = _account(servers_by_kind[backend], password)
    mig = write_project(tmp, chain(1) + [_failing_revision(password, backend)])
    args, env = _route(route, url, backend, tmp)
    term = tmp / "termination-log"
    flags = (["--json"] if as_json else []) + (["--debug"] if debug else [])

    run = migrategate("upgrade", *flags, "--migrations", str(mig), "--termination-log",
                      str(term), *args, env=env)

    refused_by_preset = route == "dify" and " " in password  # Dify's own URL can't carry it
    assert run.code == (2 if refused_by_preset else 6), run.output
    if as_json:
        report = json.loads(run.stdout)  # exactly one document
        # a run that started the migration process also reports its history rows
        assert set(report) == REPORT_KEYS | ({"history"} if run.code == 6 else set())
    texts = [run.stdout, run.stderr, term.read_text(encoding="utf-8") if term.exists() else ""]
    forms = printed_forms(password, backend, url)
    for text in texts:
        for form in forms:
            if len(form) < 4:  # a short spelling is masked where it stands alone as a token
                assert not _token(form).search(text), (form, text[-3000:])
                continue
            assert form not in text, (form, text[-3000:])
            for k in range(3, len(form)):  # PostgreSQL's error context cuts lines with "..."
                assert form[:k] + "..." not in text, (form[:k], text[-3000:])
                assert "..." + form[-k:] not in text, (form[-k:], text[-3000:])


def test_a_password_pymysql_cannot_encode_is_a_clear_configuration_error(mariadb_server,
                                                                         tmp_path):
    url = sa.engine.make_url(mariadb_server.url()).set(password="pass\u5bc6word")
    mig = write_project(tmp_path, chain(1))

    run = migrategate("upgrade", "--database-url", url.render_as_string(hide_password=False),
                      "--migrations", str(mig))

    assert run.code == 2, run.output
    assert "PyMySQL sends passwords as latin-1" in run.stderr
    assert "\u5bc6" not in run.output and "pass" not in run.output.replace("password", "")
