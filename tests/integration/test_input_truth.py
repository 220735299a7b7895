"""Unusual but legal input gets the truthful exit code, and secrets stay unprinted.

Long passwords (RDS IAM tokens, JWTs), passwords with a newline, a quote, an unquoted
``@`` or a NUL byte, revision ids Alembic reserves, and signals while connecting: each is
run through the real CLI against a real PostgreSQL.
"""

from __future__ import annotations

import json
import random
import signal
import string
import subprocess
import threading

import pytest
import sqlalchemy as sa

from factory import (Rev, SilentListener, args_for, bare_url, chain, migrategate, spawn,
                     table_rev, wait_until, write_project)


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


# --------------------------------------------------------------------------- '@' and NUL

def _one_error(run) -> str:
    assert "Traceback" not in run.output
    errors = [line for line in run.stderr.splitlines() if " error: " in line]
    assert len(errors) == 1, run.stderr
    return errors[0]


@pytest.mark.parametrize("password", ["Zq9first@Zq9second", "Zq9first@Zq9/second@Zq9third"])
def test_an_unquoted_at_in_the_url_password_is_refused_and_no_part_of_it_printed(
        postgres_server, tmp_path, password):
    url = (f"postgresql://{postgres_server.user}:{password}@{postgres_server.host}:"
           f"{postgres_server.port}/postgres")
    mig = write_project(tmp_path, chain(1))
    term = tmp_path / "termination-log"
    for command in ("verify", "status", "upgrade"):
        run = migrategate(command, "--json", "--connect-timeout", "2", "--termination-log",
                          str(term), *args_for(url, mig))

        assert run.code == 2, run.output
        assert "%40" in _one_error(run)
        assert json.loads(run.stdout)["exit_code"] == 2
        for text in (run.output, term.read_text()):
            assert "Zq9" not in text, text


def test_a_nul_byte_in_the_password_is_a_config_error_that_does_not_print_it(pg_url,
                                                                             tmp_path):
    mig = write_project(tmp_path, chain(1))
    pwfile = tmp_path / "pw"
    pwfile.write_bytes(b"Zq9nul\x00Zq9secret\n")
    quoted = sa.engine.make_url(pg_url).set(password="x")  # replaced below, verbatim %00
    inline = quoted.render_as_string(hide_password=False).replace(":x@", ":Zq9nul%00Zq9secret@")

    from_file = migrategate("verify", "--password-file", str(pwfile),
                            *args_for(bare_url(pg_url), mig))
    from_url = migrategate("verify", *args_for(inline, mig))

    for run in (from_file, from_url):
        assert run.code == 2, run.output
        assert "NUL" in _one_error(run)
        assert "Zq9" not in run.output


# --------------------------------------------------------------------------- reserved ids

_COMPUTED_HEAD = Rev("computed", raw='revision = "".join(["he", "ad"])  # read by Alembic\n'
                                     'down_revision = "r001"\n\n\ndef upgrade():\n    pass\n')


@pytest.mark.parametrize("rev", [table_rev("base", "r001", "t2"), table_rev("head", "r001", "t2"),
                                 table_rev("heads", "r001", "t2"), _COMPUTED_HEAD],
                         ids=["base", "head", "heads", "head-via-alembic-loader"])
def test_a_revision_id_alembic_reserves_is_a_config_error_naming_its_file(pg_url, tmp_path,
                                                                          rev):
    mig = write_project(tmp_path, [table_rev("r001", None, "t1"), rev])
    for command in ("verify", "status", "upgrade"):
        run = migrategate(command, *args_for(pg_url, mig))

        assert run.code == 2, run.output
        line = _one_error(run)
        assert f"0001_{rev.id}.py" in line and "is reserved" in line, line


# --------------------------------------------------------------------------- signals

@pytest.mark.parametrize("command,sig", [("verify", signal.SIGTERM), ("status", signal.SIGTERM),
                                         ("verify", signal.SIGINT), ("doctor", signal.SIGTERM)])
def test_a_signal_while_connecting_is_its_exit_code_and_one_json_document(tmp_path, command,
                                                                          sig):
    listener = SilentListener()
    mig = write_project(tmp_path, chain(1))
    term = tmp_path / "termination-log"
    url = f"postgresql+psycopg2://u:p@127.0.0.1:{listener.port}/db"
    proc = spawn(command, "--json", "--connect-timeout", "30", "--termination-log", str(term),
                 *args_for(url, mig))
    err: list = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        # doctor probes the database quietly: the listener sees its connection
        wait_until(lambda: listener.conns and (command == "doctor" or any(
            "connecting to" in line for line in err)), what="the connection attempt",
            explain=lambda: "".join(err))
        proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"{command} ignored {sig.name} while connecting") from None
        reader.join(5)

        assert proc.returncode == 128 + sig, "".join(err)
        report = json.loads(out)  # exactly one document
        assert (report["exit_code"], report["outcome"]) == (128 + sig, "interrupted")
        assert f"interrupted by {sig.name}" in term.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
