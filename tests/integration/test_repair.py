"""``migrategate repair`` on real PostgreSQL 15 and MariaDB 10.11: the INVALID index a failed
CREATE INDEX CONCURRENTLY of the next pending revision left is dropped — shown first,
done only with --yes, under the migration lock — and nothing else is touched."""

from __future__ import annotations

import json

import pytest

from factory import Rev, args_for, execute, hold_lock, migrategate, scalar, versions, \
    write_project

SEED = Rev("seed", None, '''
op.create_table("users", sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("email", sa.String(50)))
op.execute("INSERT INTO users (id, email) VALUES (1, 'a'), (2, 'a'), (3, 'b')")
''')
UNIQUE = Rev("uniq", "seed", '''
with op.get_context().autocommit_block():
    op.create_index("ux_users_email", "users", ["email"], unique=True,
                    postgresql_concurrently=True)
''')


def _invalid(url):
    return scalar(url, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                       "WHERE NOT i.indisvalid AND c.relname = 'ux_users_email'")


def test_repair_drops_the_invalid_index_the_failed_revision_left(tmp_path, pg_url):
    mig = write_project(tmp_path, [SEED, UNIQUE])
    failed = migrategate("upgrade", *args_for(pg_url, mig))
    assert failed.code == 6, failed.output  # duplicate 'a': the concurrent build fails
    assert _invalid(pg_url) == 1 and versions(pg_url) == ["seed"]
    rerun = migrategate("upgrade", *args_for(pg_url, mig))
    assert rerun.code == 6 and "already exists" in rerun.output  # the trap repair is for

    shown = migrategate("repair", "--json", *args_for(pg_url, mig))
    assert shown.code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["outcome"] == "dry-run"
    assert doc["repair"]["statements"] == [
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."ux_users_email"']
    assert _invalid(pg_url) == 1, "nothing without --yes"

    done = migrategate("repair", "--yes", "--json", *args_for(pg_url, mig))
    assert done.code == 0, done.output
    assert json.loads(done.stdout)["repair"]["dropped"] == ["public.ux_users_email"]
    assert _invalid(pg_url) == 0
    execute(pg_url, "DELETE FROM users WHERE id = 2")  # the data fixed, the re-run converges
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0
    assert versions(pg_url) == ["uniq"]


def test_an_invalid_index_the_revision_does_not_create_is_left_alone(tmp_path, pg_url):
    mig = write_project(tmp_path, [SEED, UNIQUE])
    assert migrategate("upgrade", *args_for(pg_url, mig, "--to", "seed")).code == 0
    execute(pg_url, "DELETE FROM users WHERE id = 2")
    execute(pg_url, "INSERT INTO users VALUES (4, 'b')")
    with pytest.raises(Exception, match="could not create unique index"):
        # someone's own index, left INVALID by a failed concurrent build
        execute(pg_url, "CREATE UNIQUE INDEX CONCURRENTLY theirs ON users (email)")
    run = migrategate("repair", "--yes", *args_for(pg_url, mig))
    assert run.code == 2, run.output
    assert "INVALID index public.theirs: not created by uniq" in run.stderr
    assert scalar(pg_url, "SELECT count(*) FROM pg_class WHERE relname = 'theirs'") == 1


def test_repair_waits_for_the_migration_lock(tmp_path, pg_url):
    mig = write_project(tmp_path, [SEED, UNIQUE])
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 6
    with hold_lock(pg_url):
        run = migrategate("repair", "--yes", *args_for(pg_url, mig, "--lock-timeout", "1"))
    assert run.code == 5, run.output
    assert _invalid(pg_url) == 1, "nothing dropped without the lock"


def test_nothing_to_repair_on_a_database_at_its_target(tmp_path, pg_url):
    mig = write_project(tmp_path, [SEED])
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0
    run = migrategate("repair", "--json", *args_for(pg_url, mig))
    assert run.code == 0 and json.loads(run.stdout)["outcome"] == "nothing-to-repair"


def test_repair_on_mariadb_without_a_journal_names_what_to_do(tmp_path, mariadb_url):
    """MariaDB resumes from the journal (test_resume.py); with nothing journaled there is
    nothing repair may do, and a person decides."""
    mig = write_project(tmp_path, [SEED])
    run = migrategate("repair", "--yes", *args_for(mariadb_url, mig))
    assert run.code == 2, run.output
    assert "the journal holds no committed statement of seed" in run.stderr
    assert "migrategate doctor" in run.stderr
