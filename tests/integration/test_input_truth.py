"""Unusual but legal input gets the truthful exit code, and secrets stay unprinted.

Long passwords (RDS IAM tokens, JWTs), passwords with a newline, a quote, an unquoted
``@`` or a NUL byte, revision ids Alembic reserves, and signals while connecting: each is
run through the real CLI against a real PostgreSQL.
"""

from __future__ import annotations

import random
import string

import sqlalchemy as sa

from factory import Rev, bare_url, chain, migrategate, write_project


def _role(pg_url: str, password: str) -> str:
    """The database's owner becomes a fresh role whose password is ``password``; returns
    the URL without the password."""
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    dbname = sa.engine.make_url(pg_url).database
    role = f"r_{dbname}"[:60]
    literal = password.replace("'", "''")
    conn = engine.raw_connection()  # no bind-parameter parsing: the password is verbatim
    try:
        cursor = conn.cursor()
        cursor.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{literal}'")
        cursor.execute(f'ALTER DATABASE "{dbname}" OWNER TO "{role}"')
        cursor.execute(f'ALTER SCHEMA public OWNER TO "{role}"')
        conn.commit()
    finally:
        conn.close()
        engine.dispose()
    return bare_url(sa.engine.make_url(pg_url).set(username=role)
                    .render_as_string(hide_password=False))


def _pieces(secret: str, size: int = 24):
    """Every ``size``-character piece of the secret: none may appear anywhere."""
    return {secret[k:k + size] for k in range(0, max(len(secret) - size, 0) + 1)}


# --------------------------------------------------------------------------- long passwords

def test_a_1500_character_password_verifies_and_no_piece_of_it_is_printed(pg_url, tmp_path):
    rng = random.Random(1500)
    password = "".join(rng.choice(string.ascii_letters + string.digits + "-_.~+/=%@'")
                       for _ in range(1500))
    bare = _role(pg_url, password)
    mig = write_project(tmp_path, chain(2))
    env = {"MIGRATEGATE_DATABASE_URL": bare, "MIGRATEGATE_DATABASE_PASSWORD": password}
    term = tmp_path / "termination-log"

    up = migrategate("upgrade", "--migrations", str(mig), env=env)
    ve = migrategate("verify", "--json", "--debug", "--migrations", str(mig),
                     "--termination-log", str(term), env=env)

    assert (up.code, ve.code) == (0, 0), up.output + ve.output
    assert '"exit_code": 0' in ve.stdout
    for text in (up.output, ve.output, term.read_text()):
        leaked = [p for p in _pieces(password) if p in text]
        assert not leaked, leaked[:3]


# --------------------------------------------------------------------------- a newline, a quote

def test_debug_never_splits_a_password_with_a_newline_and_a_quote(pg_url, tmp_path):
    password = "Zq9-it's-first-half\nZq9-second-half"
    bare = _role(pg_url, password)
    sql = f"SELECT '{password.replace(chr(39), chr(39) * 2)}' AS a FROM nowhere_table"
    mig = write_project(tmp_path, chain(1) + [
        Rev("boom", "r001", f"op.execute(sa.text({sql!r}))", "fails quoting the password")])
    env = {"MIGRATEGATE_DATABASE_URL": bare, "MIGRATEGATE_DATABASE_PASSWORD": password}

    run = migrategate("upgrade", "--debug", "--migrations", str(mig), env=env)

    assert run.code == 6, run.output
    assert "Traceback" in run.stderr  # --debug did print the tracebacks
    for piece in ("first-half", "second-half", "it''s"):
        assert piece not in run.output, run.output[-3000:]
    # redacted before the traceback was split into lines: one mask, on one line
    assert "[SQL: SELECT '***' AS a FROM nowhere_table]" in run.stderr, run.stderr[-3000:]
