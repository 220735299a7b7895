"""``migrategate plan`` on real PostgreSQL 15 and MariaDB 10.11: each kind of risky change is
named with its lock, its algorithm and the live size of the table it touches; squawk's
findings are squawk's own; nothing is written; ``upgrade --refuse`` refuses before the lock.

The history: ``seed`` creates ``accounts`` and ``messages`` (seeded with known row counts),
then one revision per risky kind, then a data migration that reads the database (which
offline mode can't render).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from factory import Rev, args_for, execute, migrategate, scalar, versions, write_project
from factory import tables as tables_of

MESSAGES, ACCOUNTS = 5000, 120

BASE = Rev("seed", None, '''
op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("name", sa.String(50)))
op.create_table("messages", sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("account_id", sa.Integer), sa.Column("body", sa.String(50)),
                sa.Column("old", sa.Text))
op.create_index("ix_messages_account", "messages", ["account_id"])
''', "accounts and messages")

RISKY = [
    Rev("notnull", "seed", 'op.add_column("messages", sa.Column("n", sa.Integer, '
                           'nullable=False))', "NOT NULL without default"),
    Rev("index", "notnull", 'op.create_index("ix_messages_body", "messages", ["body"])',
        "non-concurrent index"),
    Rev("retype", "index", 'op.alter_column("messages", "account_id", type_=sa.BigInteger, '
                           'existing_type=sa.Integer)', "type change"),
    Rev("volatile", "retype", '''
if op.get_context().dialect.name == "postgresql":
    op.add_column("messages", sa.Column("token", sa.String(36),
                                        server_default=sa.text("gen_random_uuid()::text")))
else:
    op.add_column("messages", sa.Column("token", sa.String(36), server_default="t"))
''', "volatile default"),
    Rev("fk", "volatile", 'op.create_foreign_key("fk_messages_account", "messages", "accounts", '
                          '["account_id"], ["id"])', "foreign key"),
    Rev("rename", "fk", 'op.alter_column("messages", "old", new_column_name="legacy", '
                        'existing_type=sa.Text)', "rename"),
    Rev("dropcol", "rename", 'op.drop_column("messages", "legacy")', "drop column"),
]
READS = Rev("reads", "dropcol", '''
count = op.get_bind().execute(sa.text("SELECT count(*) FROM accounts")).scalar()
op.execute(f"UPDATE accounts SET name = 'n{count}'")
''', "data migration that reads")


def _seeded(tmp_path, url, revisions):
    mig = write_project(tmp_path, [BASE, *revisions], offline=True)
    assert migrategate("upgrade", *args_for(url, mig, "--to", "seed")).code == 0
    execute(url, f"INSERT INTO accounts (id, name) SELECT g, 'a' FROM "
                 f"({_series(url, ACCOUNTS)}) s",
            f"INSERT INTO messages (id, account_id, body) SELECT g, 1 + g % {ACCOUNTS}, 'm' "
            f"FROM ({_series(url, MESSAGES)}) s",
            "ANALYZE accounts" if url.startswith("postgresql") else "ANALYZE TABLE accounts",
            "ANALYZE messages" if url.startswith("postgresql") else "ANALYZE TABLE messages")
    return mig


def _series(url, n):
    if url.startswith("postgresql"):
        return f"SELECT generate_series(1, {n}) AS g"
    return f"SELECT seq AS g FROM seq_1_to_{n}"  # MariaDB's sequence engine


def _plan(url, mig, *more):
    run = migrategate("plan", "--json", *args_for(url, mig, *more))
    assert run.code == 0, run.output
    return json.loads(run.stdout), run


def _statements(doc, revision):
    rev = next(r for r in doc["plan"]["revisions"] if r["revision"] == revision)
    return [s for s in rev["statements"]]


def _rules(statement, source=None):
    return {f["rule"] for f in statement["findings"] if source in (None, f["source"])}


def _messages_size(statement):
    return next(t for t in statement["tables"] if t["name"] == "messages")


# ------------------------------------------------------------------ PostgreSQL

def test_pg_plan_names_each_risk_with_its_lock_and_the_live_size(tmp_path, pg_url):
    mig = _seeded(tmp_path, pg_url, RISKY + [READS])
    doc, _ = _plan(pg_url, mig)
    plan = doc["plan"]
    assert [r["revision"] for r in plan["revisions"]] == [r.id for r in RISKY] + ["reads"]
    assert plan["current"] == ["seed"]

    (add,) = _statements(doc, "notnull")
    assert "not-null-without-default" in _rules(add)
    assert (add["lock"], add["estimate"]) == ("ACCESS EXCLUSIVE", "instant")
    size = _messages_size(add)
    assert size["exists"] and size["rows"] == MESSAGES and size["bytes"] > 0

    (index,) = _statements(doc, "index")
    assert (index["lock"], index["blocks"]) == ("SHARE", "writes")
    assert index["estimate"] == "scales with table size"
    assert "non-concurrent-index" in _rules(index)

    (retype,) = _statements(doc, "retype")
    assert (retype["lock"], retype["blocks"]) == ("ACCESS EXCLUSIVE", "reads and writes")
    assert "type-change" in _rules(retype)

    (volatile,) = _statements(doc, "volatile")
    assert "volatile-default" in _rules(volatile)
    assert volatile["estimate"] == "scales with table size"

    (fk,) = _statements(doc, "fk")
    assert fk["lock"] == "SHARE ROW EXCLUSIVE"
    assert "foreign-key-validates" in _rules(fk)
    assert {t["name"]: t["rows"] for t in fk["tables"]} == {"messages": MESSAGES,
                                                           "accounts": ACCOUNTS}

    (rename,) = _statements(doc, "rename")
    assert "renames" in _rules(rename)
    (drop,) = _statements(doc, "dropcol")
    assert "drops-column" in _rules(drop)

    reads = next(r for r in plan["revisions"] if r["revision"] == "reads")
    assert not reads["planned"]
    assert "reads" in reads["not_planned"] and "AttributeError" in reads["not_planned"]


def test_pg_squawk_findings_are_squawks_own(tmp_path, pg_url):
    """The findings plan attributes to squawk are exactly what squawk says about the same
    SQL given to it directly (with the rules plan leaves out named)."""
    from migrategate import squawk

    mig = _seeded(tmp_path, pg_url, RISKY)
    doc, _ = _plan(pg_url, mig)
    assert doc["plan"]["squawk"].startswith("used")
    ours = sorted(f["rule"] for r in doc["plan"]["revisions"] for s in r["statements"]
                  for f in s["findings"] if f["source"] == "squawk")
    sql = "\n\n".join(s["sql"] + ";" for r in doc["plan"]["revisions"]
                      for s in r["statements"])
    args = [squawk.binary(), "--reporter", "json", "--assume-in-transaction",
            "--pg-version", "15"]
    for rule in squawk.STYLE_RULES + squawk.TIMEOUT_RULES:
        args += ["--exclude", rule]
    direct = json.loads(subprocess.run(args, input=sql, capture_output=True, text=True,
                                       check=False).stdout)
    assert ours == sorted(f["rule_name"] for f in direct)
    assert {"adding-required-field", "require-concurrent-index-creation",
            "changing-column-type"} <= set(ours)


def test_pg_plan_never_writes(tmp_path, pg_url, postgres_server):
    """Every statement the planning session sends is in the server's statement log, and
    none of them writes: the session is read-only and the SQL comes from offline mode."""
    mig = _seeded(tmp_path, pg_url, RISKY + [READS])
    database = pg_url.rsplit("/", 1)[-1]
    execute(postgres_server.url(), f'ALTER DATABASE "{database}" SET log_statement = \'all\'')
    before = versions(pg_url), postgres_server.log.stat().st_size
    _plan(pg_url, mig)
    log = postgres_server.log.read_bytes()[before[1]:].decode("utf-8", "replace")
    statements = [line.split("statement: ", 1)[1].strip() for line in log.splitlines()
                  if "statement: " in line]
    assert statements, "log_statement=all logged nothing: the check would prove nothing"
    writes = [s for s in statements
              if s.split()[0].upper() not in ("SELECT", "SHOW", "SET", "BEGIN", "COMMIT",
                                              "ROLLBACK", "WITH")]
    assert writes == []
    assert versions(pg_url) == before[0] == ["seed"]
    assert scalar(pg_url, "SELECT count(*) FROM messages") == MESSAGES


def test_pg_plan_session_refuses_writes(tmp_path, pg_url):
    from sqlalchemy import create_engine, text

    from migrategate.dialect import dialect_for

    engine = create_engine(pg_url)
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        dialect_for("postgresql").read_only(conn)
        with pytest.raises(Exception, match="read-only transaction"):
            conn.execute(text("CREATE TABLE nope (id int)"))
    engine.dispose()


def test_plan_never_prints_the_password(tmp_path, pg_url):
    mig = _seeded(tmp_path, pg_url, RISKY)
    password = pg_url.split(":")[2].split("@")[0]
    for flags in ((), ("--json",), ("--markdown",)):
        run = migrategate("plan", *flags, *args_for(pg_url, mig))
        assert run.code == 0, run.output
        assert password not in run.output
        assert "type-change" in run.stdout


def test_markdown_form_is_one_table_per_revision(tmp_path, pg_url):
    mig = _seeded(tmp_path, pg_url, RISKY[:2])
    run = migrategate("plan", "--markdown", *args_for(pg_url, mig))
    assert run.code == 0, run.output
    assert run.stdout.startswith("### migrategate plan: 2 revision(s) on postgresql 15")
    assert run.stdout.count("| # | statement | lock (blocks) | work | tables | findings |") == 2
    assert "**risky** `non-concurrent-index`" in run.stdout


def test_new_tables_make_findings_moot(tmp_path, pg_url):
    """On an empty database every table is created by the plan: a rewrite of a table that
    doesn't exist yet is no risk, so nothing is risky and --refuse risky lets it through."""
    mig = write_project(tmp_path, [BASE, *RISKY], offline=True)
    doc, _ = _plan(pg_url, mig)
    (retype,) = _statements(doc, "retype")
    assert _messages_size(retype)["created_by_plan"]
    levels = {f["rule"]: f["level"] for f in retype["findings"]}
    assert levels["type-change"] == "info"
    assert doc["plan"]["findings"]["risky"] == 0
    run = migrategate("upgrade", *args_for(pg_url, mig, "--refuse", "risky"))
    assert run.code == 0, run.output
    assert versions(pg_url) == ["dropcol"]


def test_upgrade_refuse_risky_applies_nothing_and_takes_no_lock(tmp_path, pg_url):
    mig = _seeded(tmp_path, pg_url, RISKY)
    run = migrategate("upgrade", "--json", *args_for(pg_url, mig, "--refuse", "risky"))
    assert run.code == 2, run.output
    doc = json.loads(run.stdout)
    assert "--refuse risky refuses" in doc["message"]
    assert doc["lock"]["taken"] is False
    assert "refused: risky not-null-without-default (notnull" in run.stderr
    assert versions(pg_url) == ["seed"]


def test_upgrade_refuse_by_rule_passes_a_plan_without_it(tmp_path, pg_url):
    mig = _seeded(tmp_path, pg_url, [Rev("index", "seed", RISKY[1].upgrade)])
    run = migrategate("upgrade", *args_for(pg_url, mig, "--refuse", "drops-column,renames",
                                           "--show-plan"))
    assert run.code == 0, run.output
    assert "risky non-concurrent-index" in run.stderr  # --show-plan logged the plan
    assert versions(pg_url) == ["index"]


def test_renamed_tables_and_dropped_indexes_keep_their_table(tmp_path, pg_url):
    """A table renamed by the plan is still the table it was (new on an empty database,
    sized on a seeded one); DROP INDEX names no table: the catalog (or the plan) has it."""
    later = [Rev("move", "seed", 'op.rename_table("messages", "notes")'),
             Rev("ix", "move", 'op.create_index("ix_notes_body", "notes", ["body"])'),
             Rev("unix", "ix", 'op.drop_index("ix_messages_account", table_name="notes")')]
    fresh = write_project(tmp_path / "fresh", [BASE, *later], offline=True)
    doc, _ = _plan(pg_url, fresh)
    (ix,) = _statements(doc, "ix")
    assert ix["tables"][0]["name"] == "notes" and ix["tables"][0]["created_by_plan"]
    assert {f["level"] for f in ix["findings"]} == {"info"}
    mig = _seeded(tmp_path / "seeded", pg_url, later)
    doc, _ = _plan(pg_url, mig)
    (ix,) = _statements(doc, "ix")
    assert (ix["tables"][0]["name"], ix["tables"][0]["rows"]) == ("notes", MESSAGES)
    assert "non-concurrent-index" in _rules(ix)
    (unix,) = _statements(doc, "unix")
    assert unix["tables"][0]["rows"] == MESSAGES  # found through pg_index: messages


def test_plan_options_say_whether_lock_waits_are_bounded(tmp_path, pg_url):
    mig = _seeded(tmp_path, pg_url, [Rev("index", "seed", RISKY[1].upgrade)])
    doc, _ = _plan(pg_url, mig)
    (index,) = _statements(doc, "index")
    assert index["lock_wait"].startswith("unbounded")
    doc, _ = _plan(pg_url, mig, "--lock-retries", "3")
    (index,) = _statements(doc, "index")
    assert index["lock_wait"] == "at most 1 s, then the revision is retried (up to 3 times)"


def test_plan_of_an_up_to_date_database(tmp_path, pg_url):
    mig = write_project(tmp_path, [BASE], offline=True)
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0
    run = migrategate("plan", *args_for(pg_url, mig))
    assert run.code == 0, run.output
    assert "nothing to apply" in run.stdout


# ------------------------------------------------------------------ MariaDB

def test_mariadb_plan_names_the_online_ddl_algorithm(tmp_path, mariadb_url):
    mig = _seeded(tmp_path, mariadb_url, RISKY)
    doc, _ = _plan(mariadb_url, mig)
    assert doc["plan"]["server"]["kind"] == "mariadb"
    assert doc["plan"]["squawk"].startswith("not used")

    def only(rev):
        (st,) = _statements(doc, rev)
        return st

    assert only("notnull")["algorithm"] == "INSTANT"
    assert only("index")["algorithm"] == "INPLACE"
    assert only("index")["estimate"] == "scales with table size"
    assert only("retype")["algorithm"] == "COPY"
    assert "type-change" in _rules(only("retype"))
    assert only("volatile")["algorithm"] == "INSTANT"
    assert only("fk")["algorithm"] == "COPY"
    assert only("rename")["algorithm"] == "INSTANT"
    assert "renames" in _rules(only("rename"))
    assert only("dropcol")["algorithm"] == "INSTANT"
    for rev in ("notnull", "retype", "fk"):
        assert only(rev)["lock"].startswith("metadata lock")
    # InnoDB's TABLE_ROWS is an estimate from sampled pages (docstring of the catalog)
    rows = _messages_size(only("index"))["rows"]
    assert 0.8 * MESSAGES <= rows <= 1.2 * MESSAGES
    assert versions(mariadb_url) == ["seed"]


# ------------------------------------------------------------------ hostile app code

def test_app_code_that_ends_the_process_ends_only_the_child(tmp_path, pg_url):
    """The revisions are app code: os._exit(0) while rendering is a failed plan (exit 2,
    one JSON document), never an exit 0 with a plan that stops early."""
    mig = write_project(tmp_path, [BASE, Rev("bye", "seed", "import os\nos._exit(0)")],
                        offline=True)
    run = migrategate("plan", "--json", *args_for(pg_url, mig))
    assert run.code == 2, run.output
    doc = json.loads(run.stdout)
    assert "exited with status 0 before it finished" in doc["message"]


def test_app_code_that_prints_at_import_keeps_stdout_one_document(tmp_path, pg_url):
    mig = write_project(tmp_path, [BASE, Rev("loud", "seed", "pass",
                                             header="print('hello from import')")],
                        offline=True)
    run = migrategate("plan", "--json", *args_for(pg_url, mig))
    assert run.code == 0, run.output
    assert json.loads(run.stdout)["plan"]["revisions"][1]["revision"] == "loud"
    assert "| hello from import" in run.stderr


def test_a_sys_exit_in_a_revision_is_that_revisions_reason(tmp_path, pg_url):
    mig = write_project(tmp_path, [BASE, Rev("quits", "seed", "import sys\nsys.exit(0)")],
                        offline=True)
    doc, _ = _plan(pg_url, mig)
    quits = doc["plan"]["revisions"][1]
    assert not quits["planned"] and quits["not_planned"].startswith("called sys.exit(0)")


def test_the_rendering_child_never_sees_the_password(tmp_path, pg_url):
    seen = tmp_path / "seen.txt"
    spy = Rev("spy", "seed", f'''
import os
from alembic import context
with open({str(seen)!r}, "w") as fh:
    fh.write(repr(dict(os.environ)) + context.config.get_main_option("sqlalchemy.url"))
''')
    mig = write_project(tmp_path, [BASE, spy], offline=True)
    password = pg_url.split(":")[2].split("@")[0]
    run = migrategate("plan", *args_for(pg_url, mig),
                      env={"MIGRATEGATE_DATABASE_PASSWORD_FILE": "", "DB_PASSWORD": password})
    assert run.code == 0, run.output
    text = seen.read_text()
    assert "127.0.0.1" in text  # it did see the URL, without its password
    assert password not in text


# ------------------------------------------------------------------ rehearsal

def _rehearse(url, mig, scratch, *more):
    return migrategate("plan", "--json", *args_for(url, mig, *more),
                       env={"MIGRATEGATE_REHEARSE_ON": scratch})


def test_a_rehearsal_plans_what_offline_mode_cannot_and_records_the_locks(
        tmp_path, pg_url, new_pg_url):
    mig = _seeded(tmp_path, pg_url, RISKY + [READS])
    scratch = new_pg_url()
    run = _rehearse(pg_url, mig, scratch)
    assert run.code == 0, run.output
    revisions = {r["revision"]: r for r in json.loads(run.stdout)["plan"]["revisions"]}
    assert list(revisions) == [r.id for r in RISKY] + ["reads"]
    assert all(r["planned"] and r["source"] == "rehearsal" for r in revisions.values())
    reads = revisions["reads"]["statements"]
    assert [s["sql"].split()[0] for s in reads] == ["SELECT", "UPDATE"]
    # what each statement took beyond what the rehearsal's one transaction already held
    (notnull,) = revisions["notnull"]["statements"]
    assert notnull["locks_taken"] == ["AccessExclusiveLock on public.messages"]
    (index,) = revisions["index"]["statements"]
    assert index["locks_taken"] == ["ShareLock on public.messages"]
    (fk,) = revisions["fk"]["statements"]
    assert {"ShareRowExclusiveLock on public.accounts",
            "ShareRowExclusiveLock on public.messages"} <= set(fk["locks_taken"])
    # and the validation's row locks on the referenced rows, which offline rules don't see
    assert "RowShareLock on public.accounts" in fk["locks_taken"]
    (retype,) = revisions["retype"]["statements"]
    assert retype["locks_taken"] == []  # AccessExclusiveLock: held since notnull
    # sizes are the target's; the scratch database was brought to the target's revision
    # (committed) and the pending revisions were rolled back
    assert _messages_size(retype)["rows"] == MESSAGES
    assert versions(scratch) == ["seed"]
    assert "n" not in [c["name"] for c in __import__("sqlalchemy").inspect(
        __import__("sqlalchemy").create_engine(scratch)).get_columns("messages")]
    assert versions(pg_url) == ["seed"]
    password = scratch.split(":")[2].split("@")[0]
    assert password not in run.output


def test_a_rehearsal_never_commits_a_revision_that_commits(tmp_path, pg_url, new_pg_url):
    commits = Rev("commits", "seed", 'op.create_table("early", sa.Column("id", sa.Integer))\n'
                                     'op.execute("COMMIT")')
    after = Rev("after", "commits", 'op.create_table("later", sa.Column("id", sa.Integer))')
    mig = _seeded(tmp_path, pg_url, [commits, after])
    scratch = new_pg_url()
    run = _rehearse(pg_url, mig, scratch)
    assert run.code == 0, run.output
    revisions = {r["revision"]: r for r in json.loads(run.stdout)["plan"]["revisions"]}
    assert "it commits" in revisions["commits"]["not_planned"]
    assert "stopped before it" in revisions["after"]["not_planned"]
    assert versions(scratch) == ["seed"]
    assert sorted(tables_of(scratch)) == ["accounts", "alembic_version", "messages"]


def test_a_rehearsal_shows_an_autocommit_block_without_running_it(tmp_path, pg_url, new_pg_url):
    """Dify's revisions build indexes CONCURRENTLY in autocommit blocks: shown, not run (it
    would commit), and the chain goes on."""
    concurrently = Rev("conc", "seed", '''
with op.get_context().autocommit_block():
    op.create_index("ix_body_c", "messages", ["body"], postgresql_concurrently=True)
op.add_column("messages", sa.Column("after", sa.Integer))
''')
    later = Rev("later", "conc", 'op.create_index("ix_after", "messages", ["after"])')
    mig = _seeded(tmp_path, pg_url, [concurrently, later])
    scratch = new_pg_url()
    run = _rehearse(pg_url, mig, scratch)
    assert run.code == 0, run.output
    revisions = {r["revision"]: r for r in json.loads(run.stdout)["plan"]["revisions"]}
    assert all(r["planned"] for r in revisions.values()), revisions
    index, add = revisions["conc"]["statements"]
    assert index["sql"].startswith("CREATE INDEX CONCURRENTLY ix_body_c")
    assert index["note"] == "not run in the rehearsal: an autocommit block commits"
    assert index["locks_taken"] == [] and not index["in_transaction"]
    assert add["locks_taken"] == ["AccessExclusiveLock on public.messages"]
    (after,) = revisions["later"]["statements"]
    assert after["locks_taken"] == ["ShareLock on public.messages"]
    assert versions(scratch) == ["seed"]
    assert scalar(scratch, "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_body_c'") == 0


@pytest.mark.parametrize("spelling", ["same", "localhost"])
def test_a_rehearsal_never_runs_on_the_target(tmp_path, pg_url, spelling):
    mig = _seeded(tmp_path, pg_url, RISKY[:1])
    target = pg_url if spelling == "same" else pg_url.replace("127.0.0.1", "localhost")
    run = _rehearse(pg_url, mig, target)
    assert run.code == 2, run.output
    assert "names the target database itself" in run.stderr
    assert versions(pg_url) == ["seed"]


def test_a_rehearsal_refuses_a_scratch_database_past_the_target(tmp_path, pg_url, new_pg_url):
    mig = _seeded(tmp_path, pg_url, RISKY[:1])
    other = new_pg_url()
    assert migrategate("upgrade", *args_for(other, mig)).code == 0  # at notnull, past seed
    run = _rehearse(pg_url, mig, other)
    assert run.code == 2, run.output
    assert "not on the way to the target's seed" in run.stderr


def test_a_rehearsal_is_refused_on_mariadb(tmp_path, mariadb_url):
    mig = _seeded(tmp_path, mariadb_url, RISKY[:1])
    run = _rehearse(mariadb_url, mig, mariadb_url)
    assert run.code == 2, run.output
    assert "could not be rolled back" in run.stderr


def test_plan_on_a_sqlite_file_that_does_not_exist_yet_creates_nothing(tmp_path):
    """The quickstart: everything pending, every table "created by this plan", no lock-wait
    advice that only PostgreSQL or MySQL options could follow, and no file created."""
    from factory import REPO

    db = tmp_path / "app.db"
    run = migrategate("plan", "--json", "--migrations",
                      str(REPO / "examples" / "quickstart" / "migrations"),
                      "--database-url", f"sqlite:///{db}")
    assert run.code == 0, run.output
    plan = json.loads(run.stdout)["plan"]
    assert [r["revision"] for r in plan["revisions"]] == ["0001", "0002", "0003"]
    statements = [s for r in plan["revisions"] for s in r["statements"]]
    assert all(s["lock_wait"] == "" for s in statements)
    assert all(t["created_by_plan"] for s in statements for t in s["tables"])
    assert not db.exists()
