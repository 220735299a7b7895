"""The statement rules ``plan`` uses, one case each: lock, what it blocks, the work and, on
MySQL/MariaDB, the online-DDL algorithm for the server's version. The integration tests
(tests/integration/test_plan.py) check the same rules on SQL Alembic renders for real."""

from __future__ import annotations

import pytest

from migrategate.planner import DeployPlan, PlannedRevision, PlannedStatement, refused
from migrategate.sqlrisk import Server, assess, bare

PG15 = Server("postgresql", (15, 4))
PG10 = Server("postgresql", (10, 23))


@pytest.mark.parametrize("sql, lock, estimate, rule", [
    ("ALTER TABLE messages ADD COLUMN n INTEGER", "ACCESS EXCLUSIVE", "instant", None),
    ("ALTER TABLE messages ADD COLUMN n INTEGER NOT NULL", "ACCESS EXCLUSIVE", "instant",
     "not-null-without-default"),
    ("ALTER TABLE messages ADD COLUMN n INTEGER DEFAULT 0 NOT NULL", "ACCESS EXCLUSIVE",
     "instant", None),
    ("ALTER TABLE messages ADD COLUMN created TIMESTAMP DEFAULT now()", "ACCESS EXCLUSIVE",
     "instant", None),  # now() is stable, not volatile: PostgreSQL 11+ stores it once
    ("ALTER TABLE messages ADD COLUMN t UUID DEFAULT gen_random_uuid()", "ACCESS EXCLUSIVE",
     "scales with table size", "volatile-default"),
    ("ALTER TABLE messages ADD COLUMN k BIGSERIAL", "ACCESS EXCLUSIVE",
     "scales with table size", "volatile-default"),
    ("CREATE INDEX ix ON messages (body)", "SHARE", "scales with table size",
     "non-concurrent-index"),
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON public.messages (body)",
     "SHARE UPDATE EXCLUSIVE", "scales with table size", "concurrent-index"),
    ("ALTER TABLE messages ALTER COLUMN body TYPE TEXT", "ACCESS EXCLUSIVE",
     "scales with table size", "type-change"),
    ("ALTER TABLE messages ALTER COLUMN body SET NOT NULL", "ACCESS EXCLUSIVE", "scans",
     "set-not-null"),
    ("ALTER TABLE messages ALTER COLUMN body DROP NOT NULL", "ACCESS EXCLUSIVE", "instant",
     None),
    ("ALTER TABLE messages ADD CONSTRAINT fk FOREIGN KEY(a) REFERENCES accounts (id)",
     "SHARE ROW EXCLUSIVE", "scans", "foreign-key-validates"),
    ("ALTER TABLE messages ADD CONSTRAINT fk FOREIGN KEY(a) REFERENCES accounts (id) NOT VALID",
     "SHARE ROW EXCLUSIVE", "instant", None),
    ("ALTER TABLE messages VALIDATE CONSTRAINT fk", "SHARE UPDATE EXCLUSIVE", "scans", None),
    ("ALTER TABLE messages ADD CONSTRAINT c CHECK (n > 0)", "ACCESS EXCLUSIVE", "scans",
     "check-validates"),
    ("ALTER TABLE messages ADD CONSTRAINT u UNIQUE (body)", "ACCESS EXCLUSIVE",
     "scales with table size", "constraint-builds-index"),
    ("ALTER TABLE messages ADD CONSTRAINT u UNIQUE USING INDEX ix", "ACCESS EXCLUSIVE",
     "instant", None),
    ("ALTER TABLE messages DROP COLUMN body", "ACCESS EXCLUSIVE", "instant", "drops-column"),
    ('ALTER TABLE messages RENAME "old" TO legacy', "ACCESS EXCLUSIVE", "instant", "renames"),
    ("ALTER TABLE messages SET TABLESPACE fast", "ACCESS EXCLUSIVE", "scales with table size",
     "rewrites-table"),
    ("DROP TABLE messages", "ACCESS EXCLUSIVE", "instant", "drops-table"),
    ("DROP INDEX CONCURRENTLY ix", "SHARE UPDATE EXCLUSIVE", "instant", None),
    ("UPDATE messages SET n = 0", "ROW EXCLUSIVE", "scales with table size", "data-migration"),
    ("UPDATE messages SET n = 0 WHERE n IS NULL", "ROW EXCLUSIVE",
     "unknown (data migration)", "data-migration"),
    ("INSERT INTO accounts (id) VALUES (1)", "ROW EXCLUSIVE", "instant", None),
    ("CREATE TYPE mood AS ENUM ('a', 'b')", "catalog only", "instant", None),
])
def test_postgresql(sql, lock, estimate, rule):
    a = assess(sql, PG15)
    assert (a.lock, a.estimate) == (lock, estimate)
    rules = [f.rule for f in a.findings]
    assert (rule in rules) if rule else rules == []


def test_postgresql_before_11_rewrites_for_any_default():
    a = assess("ALTER TABLE messages ADD COLUMN n INTEGER DEFAULT 0", PG10)
    assert a.estimate == "scales with table size"
    assert [f.rule for f in a.findings] == ["volatile-default"]
    assert assess("ALTER TABLE messages ADD COLUMN n INTEGER DEFAULT 0", PG15).findings == []


def test_several_actions_take_the_strongest_lock_and_the_worst_work():
    a = assess("ALTER TABLE messages ADD COLUMN n INTEGER, ALTER COLUMN body TYPE TEXT, "
               "ADD CONSTRAINT fk FOREIGN KEY (n) REFERENCES accounts (id)", PG15)
    assert (a.lock, a.blocks) == ("ACCESS EXCLUSIVE", "reads and writes")
    assert a.estimate == "scales with table size"
    assert a.tables == ["messages", "accounts"]
    assert {"type-change", "foreign-key-validates"} <= {f.rule for f in a.findings}


def test_quoted_and_qualified_names():
    a = assess('ALTER TABLE "app"."Messages" ADD COLUMN n INTEGER', PG15)
    assert a.tables == ['"app"."Messages"']
    assert bare(a.tables[0]) == "app.Messages"
    create = assess('CREATE TABLE "t,1" (id INTEGER REFERENCES accounts (id))', PG15)
    assert create.creates == ['"t,1"'] and create.tables == ["accounts"]
    assert create.lock == "SHARE ROW EXCLUSIVE"


def test_renames_and_indexes_name_what_the_plan_tracks():
    a = assess("ALTER TABLE messages RENAME TO notes", PG15)
    assert (a.tables, a.renamed_to, [f.rule for f in a.findings]) == (
        ["messages"], "notes", ["renames"])
    assert assess("ALTER TABLE messages RENAME COLUMN a TO b", PG15).renamed_to is None
    assert assess("RENAME TABLE messages TO notes", MYSQL8030).renamed_to == "notes"
    assert assess("ALTER TABLE messages RENAME TO notes", MYSQL8030).renamed_to == "notes"
    drop = assess("DROP INDEX IF EXISTS ix_body", PG15)
    assert (drop.index, drop.tables) == ("ix_body", [])  # the planner finds its table
    assert assess("CREATE INDEX ix_body ON messages (body)", PG15).index == "ix_body"
    rename = assess("ALTER INDEX ix_body RENAME TO ix_text", PG15)
    assert (rename.index, rename.renamed_to, rename.lock) == (
        "ix_body", "ix_text", "SHARE UPDATE EXCLUSIVE")


def test_a_string_literal_does_not_change_the_verdict():
    a = assess("UPDATE messages SET body = ' WHERE ' ", PG15)
    assert a.estimate == "scales with table size"


def test_unknown_statements_are_said_unknown():
    a = assess("VACUUM FULL messages", PG15)
    assert (a.lock, a.estimate) == ("unknown", "unknown")


MYSQL8030 = Server("mysql", (8, 0, 30))
MYSQL8011 = Server("mysql", (8, 0, 11))
MYSQL8020 = Server("mysql", (8, 0, 20))
MARIADB1011 = Server("mariadb", (10, 11, 6))
MARIADB102 = Server("mariadb", (10, 2, 44))


@pytest.mark.parametrize("sql, server, algorithm", [
    ("ALTER TABLE messages ADD COLUMN n INTEGER", MYSQL8030, "INSTANT"),
    ("ALTER TABLE messages ADD COLUMN n INTEGER AFTER id", MYSQL8030, "INSTANT"),
    ("ALTER TABLE messages ADD COLUMN n INTEGER AFTER id", MYSQL8020, "INPLACE"),
    ("ALTER TABLE messages ADD COLUMN n INTEGER", MYSQL8020, "INSTANT"),
    ("ALTER TABLE messages ADD COLUMN n INTEGER", MYSQL8011, "INPLACE"),
    ("ALTER TABLE messages ADD COLUMN n INTEGER", MARIADB1011, "INSTANT"),
    ("ALTER TABLE messages ADD COLUMN n INTEGER", MARIADB102, "INPLACE"),
    ("ALTER TABLE messages DROP COLUMN n", MYSQL8030, "INSTANT"),
    ("ALTER TABLE messages DROP COLUMN n", MYSQL8020, "INPLACE"),
    ("CREATE INDEX ix ON messages (body)", MARIADB1011, "INPLACE"),
    ("CREATE FULLTEXT INDEX ix ON messages (body)", MARIADB1011, "INPLACE"),
    ("ALTER TABLE messages ADD CONSTRAINT fk FOREIGN KEY(a) REFERENCES accounts (id)",
     MARIADB1011, "COPY"),
    ("ALTER TABLE messages DROP FOREIGN KEY fk", MARIADB1011, "INPLACE"),
    ("ALTER TABLE messages ALTER COLUMN n SET DEFAULT 0", MYSQL8030, "INSTANT"),
    ("ALTER TABLE messages CONVERT TO CHARACTER SET utf8mb4", MYSQL8030, "COPY"),
])
def test_mysql_algorithm_by_version(sql, server, algorithm):
    assert assess(sql, server).algorithm == algorithm


COLUMNS = {("messages", "n"): ("int(11)", True), ("messages", "body"): ("varchar(20)", True),
           ("messages", "title"): ("varchar(100)", True)}


@pytest.mark.parametrize("sql, algorithm, estimate, rule", [
    ("ALTER TABLE messages MODIFY n BIGINT NULL", "COPY", "scales with table size",
     "type-change"),
    ("ALTER TABLE messages MODIFY n INTEGER(11) NOT NULL", "INPLACE",
     "scales with table size", "inplace-rebuild"),  # INTEGER(11) is int(11): nullability only
    ("ALTER TABLE messages MODIFY n INT NULL", "INSTANT", "instant", None),
    ("ALTER TABLE messages MODIFY n INT(11) NOT NULL", "INPLACE", "scales with table size",
     "inplace-rebuild"),
    ("ALTER TABLE messages MODIFY body VARCHAR(60) NULL", "INPLACE", "instant", None),
    ("ALTER TABLE messages MODIFY body VARCHAR(100) NULL", "COPY", "scales with table size",
     "type-change"),  # 80 -> 400 bytes: the length prefix grows to 2 bytes
    ("ALTER TABLE messages MODIFY title VARCHAR(200) NULL", "INPLACE", "instant", None),
    ("ALTER TABLE messages CHANGE n count INT(11) NULL", "INSTANT", "instant", "renames"),
    ("ALTER TABLE messages MODIFY nope INT NULL", "COPY", "scales with table size",
     "column-unknown"),
])
def test_mysql_modify_compares_with_the_column_as_it_is(sql, algorithm, estimate, rule):
    a = assess(sql, MARIADB1011, COLUMNS)
    assert (a.algorithm, a.estimate) == (algorithm, estimate)
    rules = [f.rule for f in a.findings]
    assert (rule in rules) if rule else rules == []


def test_mysql_copy_blocks_writes_and_instant_blocks_nothing():
    copy = assess("ALTER TABLE messages MODIFY n BIGINT NULL", MYSQL8030, COLUMNS)
    assert copy.blocks.startswith("writes")
    instant = assess("ALTER TABLE messages ADD COLUMN x INTEGER", MYSQL8030)
    assert instant.blocks == "nothing once the metadata lock is granted"
    assert instant.lock.startswith("metadata lock")


def _deploy(*findings_by_statement):
    revision = PlannedRevision("r1", "m")
    for sql in findings_by_statement:
        revision.statements.append(PlannedStatement(sql, assess(sql, PG15), True))
    return DeployPlan(PG15, (), ("r1",), [revision], "not used")


def test_refuse_by_level_and_by_rule():
    deploy = _deploy("CREATE INDEX ix ON messages (body)",
                     "ALTER TABLE messages DROP COLUMN legacy")
    assert [line.split(" (")[0] for line in refused(deploy, "risky")] == [
        "risky non-concurrent-index"]
    assert len(refused(deploy, "warning")) == 2
    assert [line.split(" (")[0] for line in refused(deploy, "drops-column")] == [
        "warning drops-column"]
    assert refused(deploy, "renames") == []


def test_a_revision_that_could_not_be_planned_is_refused_as_risky():
    deploy = _deploy()
    deploy.revisions[0].not_planned = "AttributeError"
    assert [line.split(" (")[0] for line in refused(deploy, "risky")] == ["risky not-planned"]


def test_a_moot_finding_is_moot_for_its_own_statement_only():
    """planner._moot changes the finding of the statement on a new table; the same kind of
    finding on an existing table's statement stays risky (findings are never shared)."""
    from migrategate.planner import TableSize, _moot

    sql = "ALTER TABLE messages ADD CONSTRAINT fk FOREIGN KEY(a) REFERENCES accounts (id)"
    new = PlannedStatement(sql, assess(sql, MARIADB1011), True,
                           [TableSize("messages", False, created_by_plan=True)])
    old = PlannedStatement(sql, assess(sql, MARIADB1011), True,
                           [TableSize("messages", True, 5000, 1 << 20)])
    _moot(new)
    _moot(old)
    assert {f.rule: f.level for f in new.assessment.findings}["copy-algorithm"] == "info"
    assert {f.rule: f.level for f in old.assessment.findings}["copy-algorithm"] == "risky"
