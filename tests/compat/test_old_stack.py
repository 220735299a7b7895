"""The oldest stack we promise: Python 3.9, SQLAlchemy 1.4, Alembic 1.7.

App images are often older than ours, so the CLI runs here under a separate interpreter
with those versions installed (cached under .cache/), and migrategate installed into it from
a wheel of this tree — the old pip installs what we publish.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from factory import (REPO, Rev, args_for, chain, cli_env, hold_table, versions,
                     write_project)
from parity import FIXED, check_case

OLD = ["SQLAlchemy>=1.4,<1.5", "alembic>=1.7,<1.8", "psycopg2-binary", "PyMySQL"]


def _python39() -> str:
    """A working Python 3.9 (pyenv shims may exist but not run); without one the tests
    fail and say how to get it — they never run on another Python instead."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    candidates.append(shutil.which("python3.9") or "")
    tried = []
    for candidate in filter(None, candidates):
        proc = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2])"],
                              capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip() == "(3, 9)":
            return candidate
        tried.append(f"{candidate}: {(proc.stdout + proc.stderr).strip()[-200:]}")
    pytest.fail("no working Python 3.9 for the oldest supported stack "
                f"(tried: {'; '.join(tried) or 'none found'}); install one: "
                "'pyenv install 3.9' (~/.pyenv/versions/3.9*) or python3.9 on PATH")


@pytest.fixture(scope="session")
def old_python(tmp_path_factory):
    base = _python39()
    venv = REPO / ".cache" / "compat-py3.9-sa14"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *OLD], check=True)
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--disable-pip-version-check", "-w", str(wheels), str(REPO)], check=True)
    (wheel,) = wheels.glob("migrategate-*.whl")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                    "--disable-pip-version-check", str(wheel)], check=True)
    return str(python)


def old(python, *args, **env):
    proc = subprocess.run([python, "-m", "migrategate", *args], capture_output=True, text=True,
                          env=cli_env(env), timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_the_stack_is_really_old(old_python):
    out = subprocess.run([old_python, "-c", "import sys, sqlalchemy, alembic; "
                          "print('%d.%d' % sys.version_info[:2], sqlalchemy.__version__, "
                          "alembic.__version__)"],
                         capture_output=True, text=True, check=True).stdout
    python, sqlalchemy, alembic = out.split()
    assert python == "3.9" and sqlalchemy.startswith("1.4.") and alembic.startswith("1.7."), out


def test_migrategate_is_the_installed_wheel_not_the_source_tree(old_python):
    out = subprocess.run([old_python, "-c", "import migrategate; print(migrategate.__file__)"],
                         capture_output=True, text=True, check=True, env=cli_env()).stdout
    assert "site-packages" in out and str(REPO / "src") not in out


@pytest.mark.parametrize("kind", ["postgresql", "mariadb", "sqlite"])
def test_commands_work_on_sqlalchemy_14_and_alembic_17(old_python, kind, request, tmp_path):
    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url",
                                   "sqlite": "sqlite_url"}[kind])
    mig = write_project(tmp_path, chain(3))

    code, out, err = old(old_python, "upgrade", *args_for(url, mig, "--json"))
    assert code == 0, err
    assert [a["revision"] for a in json.loads(out)["applied"]] == ["r001", "r002", "r003"]
    for cmd in ("verify", "status", "wait", "upgrade"):
        assert old(old_python, cmd, *args_for(url, mig))[0] == 0, cmd
    assert versions(url) == ["r003"]


COMPUTED_ID = '''"""computed id: the static reader cannot know it, Alembic's loader runs"""
import sqlalchemy as sa
from alembic import op

revision = "".join(["r00", "2"])
down_revision = "r001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("t2", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    pass
'''


def test_alembics_own_loader_works_on_alembic_17(old_python, sqlite_url, tmp_path):
    """A revision id that is not a literal sends the graph through Alembic's loader (the
    private RevisionMap._revision_map, docs/alembic-internals.md) on the old stack too."""
    mig = write_project(tmp_path, chain(1) + [Rev("r002", raw=COMPUTED_ID)])
    code, out, err = old(old_python, "upgrade", *args_for(sqlite_url, mig, "--json"))
    assert code == 0, err
    assert [a["revision"] for a in json.loads(out)["applied"]] == ["r001", "r002"]
    assert versions(sqlite_url) == ["r002"]


def test_autocommit_block_is_still_tracked_on_alembic_17(old_python, pg_url, tmp_path):
    """migrategate wraps MigrationContext.autocommit_block (docs/alembic-internals.md) to
    report what a failed revision committed outside its transaction."""
    body = ("with op.get_context().autocommit_block():\n"
            '    op.execute("CREATE INDEX CONCURRENTLY ix_t1_name ON t1 (name)")\n'
            'op.execute("SELECT * FROM no_such_table")')
    mig = write_project(tmp_path, chain(1) + [Rev("conc", "r001", body, "concurrent index")])
    code, out, err = old(old_python, "upgrade", *args_for(pg_url, mig))
    assert code == 6, err
    assert "committed outside its transaction" in err
    assert "CREATE INDEX CONCURRENTLY ix_t1_name ON t1 (name)" in err
    assert versions(pg_url) == ["r001"]


def test_lock_retries_rerun_the_revision_on_alembic_17(old_python, pg_url, tmp_path):
    """--lock-retries replaces each RevisionStep.migration_fn (docs/alembic-internals.md)."""
    mig = write_project(tmp_path, chain(1) + [
        Rev("alter", "r001", 'op.add_column("t1", sa.Column("x", sa.Integer))', "alter t1")])
    assert old(old_python, "upgrade", *args_for(pg_url, mig), "--to", "r001")[0] == 0
    release, blocker, _ = hold_table(pg_url)
    try:
        proc = subprocess.Popen([old_python, "-m", "migrategate", "upgrade",
                                 *args_for(pg_url, mig), "--pg-lock-timeout", "0.1",
                                 "--lock-retries", "60"], stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True, env=cli_env())
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # the blocker stays until the first retry is announced
            lines.append(line)
            if "(attempt 1/61)" in line:
                break
        release.set()
        lines.append(proc.stderr.read())
        code = proc.wait(timeout=120)
    finally:
        release.set()
        blocker.join()
    err = "".join(lines)
    assert code == 0, err
    assert "(attempt 1/61)" in err
    assert versions(pg_url) == ["alter"]


def test_broken_revision_and_wrong_password_keep_their_codes(old_python, pg_url, tmp_path):
    import sqlalchemy as sa

    mig = write_project(tmp_path, chain(1) + [Rev("bad", "r001", 'op.execute("SELECT nope")')])
    assert old(old_python, "upgrade", *args_for(pg_url, mig))[0] == 6
    wrong = sa.engine.make_url(pg_url).set(password="wrong-pw-123").render_as_string(
        hide_password=False)
    code, out, err = old(old_python, "upgrade", *args_for(wrong, mig))
    assert code == 4 and "wrong-pw-123" not in out + err


def _rev(rev_id, down, labels=None, depends=None, conditional=False):
    ident = (f"if True:\n    down_revision = {down!r}\nelse:\n    down_revision = None\n"
             if conditional else f"down_revision = {down!r}\n")
    return Rev(rev_id, raw=f"revision = {rev_id!r}\n{ident}branch_labels = {labels!r}\n"
                           f"depends_on = {depends!r}\n\n\ndef upgrade():\n    pass\n")


@pytest.mark.parametrize("conditional", [False, True], ids=["static", "alembic-loader"])
def test_alembic_17_resolves_labels_relative_targets_and_depends_on(old_python, sqlite_url,
                                                                     tmp_path, conditional):
    """RevisionMap as Alembic 1.7 has it: label, LABEL@head, +1 and depends_on by label."""
    mig = write_project(tmp_path, [
        _rev("a0001", None, ("core",)), _rev("b0001", "a0001", conditional=conditional),
        _rev("x0001", None, ("billing",)), _rev("x0002", "x0001", None, "core"),
        _rev("c0001", "b0001"),
    ])
    steps = [("core", ["a0001"]), ("+1", ["b0001"]), ("billing@head", ["b0001", "x0002"]),
             ("heads", ["c0001", "x0002"])]
    for target, rows in steps:
        code, out, err = old(old_python, "upgrade", *args_for(sqlite_url, mig, "--to", target))
        assert code == 0, (target, err)
        assert versions(sqlite_url) == rows, target


_ALEMBIC_UPGRADE = """
import sys
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
config = Config()
config.set_main_option("script_location", sys.argv[1])
config.set_main_option("sqlalchemy.url", sys.argv[2])
try:
    command.upgrade(config, sys.argv[3])
except (CommandError, AssertionError) as exc:
    print("refused:", exc)
"""


@pytest.mark.parametrize("name", sorted(FIXED))
def test_issue_11_histories_match_alembic_17(old_python, name):
    """The fixed parity cases with Alembic 1.7 on both sides."""
    def alembic_upgrade(mig, url, target):
        proc = subprocess.run([old_python, "-c", _ALEMBIC_UPGRADE, str(mig), url, target],
                              capture_output=True, text=True, env=cli_env(), timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip() or None

    def migrategate_upgrade(mig, url, target):
        code, out, err = old(old_python, "upgrade", *args_for(url, mig, "--to", target))
        return code, out + err

    check_case(FIXED[name], alembic_upgrade, migrategate_upgrade)
