"""What a kind of database promises, asked in one place instead of comparing names.

The first rule that needs it everywhere: whether a failed revision's DDL is
undone by rolling back its transaction. PostgreSQL: yes. MySQL/MariaDB commit
each DDL statement at once; pysqlite issues no BEGIN before DDL. A message about
what a failed revision left behind must come from this answer (and from what
the database reads back), never from PostgreSQL's wording used for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from .urls import MYSQL


@dataclass(frozen=True)
class Dialect:
    name: str  # SQLAlchemy's backend name
    label: str  # for messages
    transactional_ddl: bool


_KNOWN = {
    "postgresql": Dialect("postgresql", "PostgreSQL", True),
    "sqlite": Dialect("sqlite", "SQLite", False),
}


def dialect_for(backend: str) -> Dialect:
    if backend in MYSQL:
        return Dialect(backend, "MySQL/MariaDB", False)
    return _KNOWN.get(backend) or Dialect(backend, backend, False)
