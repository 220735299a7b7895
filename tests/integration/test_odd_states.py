"""Read-only commands on odd files and states: they never mislead, never crash (exit 1),
never create a database, and doctor never advises dropping what another schema explains.
"""

from __future__ import annotations

import sqlite3

import pytest

from factory import args_for, chain, execute, migrategate, write_project

pytestmark = pytest.mark.slow

READ_ONLY = ("verify", "status", "doctor", "wait")


def _more(command):
    return ("--timeout", "3") if command == "wait" else ()


@pytest.mark.parametrize("command, code", [("verify", 7), ("status", 7), ("doctor", 7),
                                           ("wait", 10)])
def test_a_mistyped_sqlite_path_is_never_created(command, code, tmp_path):
    mig = write_project(tmp_path, chain(1))
    missing = tmp_path / "typo.db"

    run = migrategate(command, *args_for(f"sqlite:///{missing}", mig), *_more(command))

    assert run.code == code, run.output  # no migration has run there: not verified
    assert "does not exist" in run.output and "typo.db" in run.output
    assert "never create" in run.output
    assert not missing.exists()


@pytest.mark.parametrize("command", READ_ONLY + ("upgrade",))
def test_a_file_that_is_not_a_sqlite_database_is_a_configuration_error(command, tmp_path):
    mig = write_project(tmp_path, chain(1))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database file, it only has its name" * 100)

    run = migrategate(command, *args_for(f"sqlite:///{junk}", mig), *_more(command))

    assert run.code == 2, run.output
    assert "not a database" in run.output
    assert "internal error" not in run.output and "Traceback" not in run.output


@pytest.mark.parametrize("command", ("verify", "status"))
def test_a_sqlite_database_locked_by_a_writer_is_busy_not_a_bug(command, tmp_path):
    mig = write_project(tmp_path, chain(1))
    path = tmp_path / "app.db"
    assert migrategate("upgrade", *args_for(f"sqlite:///{path}", mig)).code == 0
    writer = sqlite3.connect(str(path), check_same_thread=False)
    writer.execute("BEGIN EXCLUSIVE")  # readers get SQLITE_BUSY until it ends
    try:
        run = migrategate(command, *args_for(f"sqlite:///{path}", mig))
    finally:
        writer.rollback()
        writer.close()

    assert run.code == 3, run.output
    assert "database is locked" in run.output
    assert "internal error" not in run.output


def test_doctor_finds_a_version_table_in_another_schema_and_advises_no_drop(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    execute(pg_url, "CREATE SCHEMA audit")
    assert migrategate("upgrade", *args_for(pg_url, mig, "--version-table-schema",
                                            "audit")).code == 0

    run = migrategate("doctor", *args_for(pg_url, mig))  # without --version-table-schema

    assert run.code == 7, run.output
    assert "audit.alembic_version" in run.stdout and "holds r002" in run.stdout
    assert "--version-table-schema audit" in run.stdout
    assert "no migration has run" not in run.stdout
    assert "drop" not in run.stdout.lower()


def test_doctor_and_verify_agree_on_a_version_table_with_two_rows(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(2))
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0
    execute(pg_url, "INSERT INTO alembic_version VALUES ('r001')")

    verify = migrategate("verify", *args_for(pg_url, mig))
    doctor = migrategate("doctor", *args_for(pg_url, mig))

    assert verify.code == 7, verify.output
    assert doctor.code == 7, doctor.output
    assert "expected r002" in doctor.stdout


def test_expect_table_names_a_dotted_table_when_quoted(pg_url, tmp_path):
    mig = write_project(tmp_path, chain(1))
    execute(pg_url, 'CREATE SCHEMA "my.schema"', 'CREATE TABLE "my.schema"."a.b" (id int)')
    assert migrategate("upgrade", *args_for(pg_url, mig)).code == 0

    found = migrategate("verify", *args_for(pg_url, mig, "--expect-table",
                                            '"my.schema"."a.b"'))
    missing = migrategate("verify", *args_for(pg_url, mig, "--expect-table",
                                              '"my.schema"."a.c"'))

    assert found.code == 0, found.output
    assert missing.code == 7, missing.output
    assert 'table "my.schema"."a.c" is missing' in missing.output
