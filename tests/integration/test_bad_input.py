"""Bad input: one clear error line, the right exit code, never a traceback, never exit 0.
And secrets: a distinctive password appears in no output, report or termination message."""

from __future__ import annotations


import pytest
import sqlalchemy as sa

from factory import Rev, args_for, bare_url, chain, migrategate, table_rev, write_project

SECRET = "Zq9-distinctive-P@ss%word"


def _one_error(run):
    assert "Traceback" not in run.output
    errors = [line for line in run.stderr.splitlines() if " error: " in line]
    assert len(errors) == 1, run.stderr
    return errors[0]


def _project(tmp_path, kind):
    if kind == "syntax":
        return write_project(tmp_path, [Rev("a", raw="revision = 'a'\ndown_revision = None\n"
                                                     "def upgrade(:\n    pass\n")])
    if kind == "duplicate":
        return write_project(tmp_path, [table_rev("a", None, "t"), table_rev("a", None, "u")])
    if kind == "heads":
        return write_project(tmp_path, [table_rev("a", None, "t"), table_rev("b", "a", "u"),
                                        table_rev("c", "a", "v")])
    if kind == "ghost-parent":
        return write_project(tmp_path, [table_rev("a", "ghost", "t")])
    if kind == "empty":
        return write_project(tmp_path, [])
    if kind == "env-raises":
        mig = write_project(tmp_path, chain(1))
        (mig / "env.py").write_text("raise RuntimeError('env.py is broken on purpose')\n")
        return mig
    if kind == "import-error":
        return write_project(tmp_path, [Rev("a", None, header="import not_installed_module_xyz",
                                            raw="import not_installed_module_xyz\nrevision = "
                                                "''.join('a')\ndown_revision = None\n")])
    return write_project(tmp_path, chain(2))


CASES = [
    # (name, args builder, expected exit code, words in the error)
    ("malformed url", lambda url, mig, tmp: ["--database-url", "::nope::", "--migrations", mig],
     2, "malformed"),
    ("unknown scheme", lambda url, mig, tmp: ["--database-url", "oracle2://u@h/d",
                                              "--migrations", mig], 2, "unknown database"),
    ("driver not installed", lambda url, mig, tmp: ["--database-url", "postgresql+pg8000://u@h/d",
                                                    "--migrations", mig], 2, "not installed"),
    ("missing migrations dir", lambda url, mig, tmp: args_for(url, tmp / "nope"), 2,
     "does not exist"),
    ("empty migrations dir", "empty", 2, "no revisions"),
    ("env.py raises", "env-raises", 2, "env.py failed before any revision ran"),
    ("revision with syntax error", "syntax", 2, "syntax error"),
    ("revision import error", "import-error", 2, "failed to import"),
    ("duplicate revision ids", "duplicate", 2, "duplicate revision id"),
    ("multiple heads", "heads", 9, "heads"),
    ("missing down_revision", "ghost-parent", 2, "does not exist"),
    ("target does not exist", lambda url, mig, tmp: args_for(url, mig, "--to", "zzz"), 2,
     "target revision 'zzz' does not exist"),
    ("unreadable password file", lambda url, mig, tmp: args_for(
        bare_url(url), mig,
        "--password-file", str(tmp / "missing-pw")), 2, "cannot read the password file"),
    ("conflicting password sources", lambda url, mig, tmp: args_for(
        url, mig, "--password-file", str(tmp / "pw")), 2, "already contains a password"),
]


@pytest.mark.parametrize("name,spec,code,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_its_exit_code(pg_url, tmp_path, name, spec, code, words):
    (tmp_path / "pw").write_text("x")
    if callable(spec):
        mig = _project(tmp_path, "ok")
        argv = [str(a) for a in spec(pg_url, str(mig), tmp_path)]
    else:
        argv = args_for(pg_url, _project(tmp_path, spec))

    run = migrategate("upgrade", *argv)

    assert run.code == code, run.output
    assert words in _one_error(run)


def test_conflicting_flags_are_a_usage_error(tmp_path):
    run = migrategate("upgrade", "--migrations", "a", "--config", "b")
    assert run.code == 2
    assert "not allowed with argument" in run.stderr


def test_database_at_unknown_revision_is_8_with_one_line(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num varchar(32) primary key)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('from_the_future')"))
    engine.dispose()
    run = migrategate("upgrade", *args_for(pg_url, mig))
    assert run.code == 8
    assert "from_the_future" in _one_error(run)


# --------------------------------------------------------------------------- secrets

def _secret_url(url):
    return sa.engine.make_url(url).set(password=SECRET).render_as_string(hide_password=False)


@pytest.fixture
def secret_pg(postgres_server, pg_url):
    """A database whose owner's password is SECRET."""
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    dbname = sa.engine.make_url(pg_url).database
    role = f"r_{dbname}"[:60]
    escaped = SECRET.replace("'", "''")
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{escaped}'"))
        conn.execute(sa.text(f'GRANT ALL ON DATABASE "{dbname}" TO "{role}"'))
        conn.execute(sa.text(f'ALTER DATABASE "{dbname}" OWNER TO "{role}"'))
        conn.execute(sa.text(f'ALTER SCHEMA public OWNER TO "{role}"'))
    engine.dispose()
    return sa.engine.make_url(pg_url).set(username=role, password=SECRET) \
        .render_as_string(hide_password=False)


def test_secret_never_appears_in_any_output(secret_pg, tmp_path):
    good = write_project(tmp_path / "good", chain(2))
    broken = write_project(tmp_path / "broken", chain(2) + [
        Rev("boom", "r002", f"op.execute(\"SELECT '{SECRET}' FROM nowhere\")")])
    wrong = sa.engine.make_url(secret_pg).set(password=SECRET + "x").render_as_string(
        hide_password=False)
    pwfile = tmp_path / "pw"
    pwfile.write_text(SECRET + "\n")
    bare = bare_url(secret_pg)
    term = tmp_path / "termination-log"
    runs = []
    for debug in ([], ["--debug"]):
        for cmd in ("upgrade", "verify", "status", "wait", "doctor"):
            extra = ["--timeout", "1"] if cmd == "wait" else []
            for url, mig in ((secret_pg, good), (wrong, good), (secret_pg, broken)):
                for fmt in ([], ["--json"]):
                    runs.append(migrategate(cmd, *debug, *fmt, *extra, "--termination-log",
                                            str(term), *args_for(url, mig)))
                    runs.append(Run_term(term))
            runs.append(migrategate(cmd, *debug, "--password-file", str(pwfile),
                                    *args_for(bare, good)))
        env_run = migrategate("upgrade", *debug, "--migrations", str(good),
                              env={"MIGRATEGATE_DATABASE_URL": bare,
                                   "MIGRATEGATE_DATABASE_PASSWORD": SECRET})
        runs.append(env_run)
    codes = {r.code for r in runs if hasattr(r, "code")}
    assert 0 in codes and 4 in codes and 6 in codes
    quoted = sa.engine.url.quote(SECRET) if hasattr(sa.engine.url, "quote") else None
    for r in runs:
        text = r.output
        assert SECRET not in text, text[:2000]
        if quoted:
            assert quoted not in text
        assert "Zq9-distinctive" not in text


class Run_term:
    """The termination message file, checked like an output stream."""

    def __init__(self, path):
        self.output = path.read_text() if path.exists() else ""
