"""A database error is never exit 1, on any command.

Every command (verify, status, doctor, wait, upgrade) is run through the real CLI on
PostgreSQL and MariaDB as a user without privileges on the version table, against a
missing database, with a wrong password and against a silent TCP listener; each ends
with the code of what happened and says so on its one error line. ``wait`` ends at once
for what waiting cannot fix (a privilege, a password, a missing database): its 20 s
timeout used up would be exit 10, so the exact code asserts that too.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from factory import SilentListener, args_for, chain, execute, migrategate, write_project

pytestmark = pytest.mark.slow

COMMANDS = ("verify", "status", "doctor", "wait", "upgrade")
PASSWORD = "np-Pass-9"


def _as(url, user, password, database=None):
    u = sa.engine.make_url(url)
    return u.set(username=user, password=password,
                 database=database or u.database).render_as_string(hide_password=False)


def _version_table(url):
    """An existing alembic_version at r001, created by the suite's admin user."""
    execute(url, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
             "INSERT INTO alembic_version VALUES ('r001')")


def _pg_no_select(url):
    role = f"mg_np_{uuid.uuid4().hex[:8]}"
    database = sa.engine.make_url(url).database
    _version_table(url)
    execute(url, f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'",
             f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    return _as(url, role, PASSWORD)


def _mariadb_user(url, *grants):
    user = f"mg_np_{uuid.uuid4().hex[:8]}"
    _version_table(url)
    execute(url, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'",
             *(g.format(user=f"'{user}'@'%'") for g in grants))
    return _as(url, user, PASSWORD)


def _mariadb_usage_only(url):
    return _mariadb_user(url)  # USAGE: may log in, may not use the database


def _mariadb_other_table(url):
    database = sa.engine.make_url(url).database
    execute(url, "CREATE TABLE other (id INT)")
    return _mariadb_user(url, f"GRANT SELECT ON `{database}`.other TO {{user}}")


#: scenario -> (backend fixture, how its URL is made, exit code, key phrase)
SCENARIOS = {
    "pg-no-select": ("pg_url", _pg_no_select, 12, "permission denied"),
    "mariadb-usage-only": ("mariadb_url", _mariadb_usage_only, 12, "permission denied"),
    "mariadb-select-on-other-table": ("mariadb_url", _mariadb_other_table, 12,
                                      "permission denied"),
    "pg-missing-database": ("pg_url", lambda url: _as(
        url, sa.engine.make_url(url).username, sa.engine.make_url(url).password,
        f"missing_{uuid.uuid4().hex[:8]}"), 2, "does not exist"),
    "mariadb-missing-database": ("mariadb_url", lambda url: _as(
        url, sa.engine.make_url(url).username, sa.engine.make_url(url).password,
        f"missing_{uuid.uuid4().hex[:8]}"), 2, "does not exist"),
    "pg-wrong-password": ("pg_url", lambda url: _as(
        url, sa.engine.make_url(url).username, "wrong-password"), 4, "authentication failed"),
    "mariadb-wrong-password": ("mariadb_url", lambda url: _as(
        url, sa.engine.make_url(url).username, "wrong-password"), 4, "authentication failed"),
    "pg-silent-listener": ("postgresql+psycopg2", None, 3, "unreachable"),
    "mariadb-silent-listener": ("mysql+pymysql", None, 3, "unreachable"),
}
#: what the version table's privilege error names, besides "permission denied"
NAMES = {"pg-no-select": "alembic_version", "mariadb-select-on-other-table": "alembic_version",
         "mariadb-usage-only": "access denied"}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_database_error_is_its_own_exit_code_on_every_command(scenario, command, request,
                                                                  tmp_path):
    backend, make_url, code, phrase = SCENARIOS[scenario]
    mig = write_project(tmp_path, chain(1))
    listener = None
    if make_url is None:
        listener = SilentListener()
        url = f"{backend}://u:p@127.0.0.1:{listener.port}/db"
        extra = ["--connect-timeout", "3"]
    else:
        url = make_url(request.getfixturevalue(backend))
        extra = ["--connect-timeout", "10"]
    if command == "wait":
        # unreachable is waited out (5 s, then exit 10); nothing else may use up 20 s
        extra += ["--timeout", "5" if listener else "20"]
        code = 10 if listener else code
    try:
        run = migrategate(command, *args_for(url, mig), *extra, timeout=90)
    finally:
        if listener:
            listener.close()

    assert "internal error" not in run.output, run.output
    assert "Traceback" not in run.output, run.output
    assert run.code == code, run.output
    errors = [line for line in run.stderr.splitlines() if " error: " in line]
    assert len(errors) == 1, run.output
    if command == "doctor":
        # doctor's exit code is that of the database check that failed; the ✗ line says why
        failed = [line for line in run.stdout.splitlines() if line.startswith("✗ database:")]
        assert len(failed) == 1 and phrase in failed[0].lower(), run.output
        detail = failed[0].lower()
    else:
        detail = errors[0].lower()
        assert phrase in detail, run.output
    if command == "wait" and listener:
        assert "schema not ready after" in detail, run.output  # 5 s plus the last attempt
    if scenario in NAMES:
        assert NAMES[scenario] in detail, run.output
