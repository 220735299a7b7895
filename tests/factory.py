"""Write small Alembic projects for tests: a plain env.py and revisions from source snippets."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

ENV_PY = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_online():
    engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None{extra})
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
'''

#: Alembic's own template shape: offline mode (``--sql``, ``migrategate plan``) and online
ENV_PY_BOTH = '''
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=None,
                      literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Rev:
    id: str
    down: Union[None, str, Tuple[str, ...]] = None
    upgrade: str = "pass"
    message: str = ""
    header: str = ""  # extra module-level source (imports, computed ids ...)
    raw: Optional[str] = None  # the whole file, verbatim (for broken files)


def table_rev(rev_id: str, down: Union[None, str, Tuple[str, ...]], table: str) -> Rev:
    return Rev(rev_id, down, f'op.create_table("{table}", sa.Column("id", sa.Integer, '
                             f'primary_key=True), sa.Column("name", sa.String(50)))',
               f"create {table}")


def chain(n: int, prefix: str = "r") -> List[Rev]:
    """n revisions, each creating table t<k>."""
    revs: List[Rev] = []
    for k in range(1, n + 1):
        down = f"{prefix}{k - 1:03d}" if k > 1 else None
        revs.append(table_rev(f"{prefix}{k:03d}", down, f"t{k}"))
    return revs


def logged_chain(n: int) -> List[Rev]:
    """A table ``applied`` plus n revisions that each record themselves in it once applied,
    so a test can count how often each revision really ran."""
    revs = [Rev("log", None, 'op.create_table("applied", sa.Column("rev", sa.String(20)))\n'
                             "op.execute(\"INSERT INTO applied VALUES ('log')\")", "log table")]
    for k in range(1, n + 1):
        down = "log" if k == 1 else f"s{k - 1}"
        revs.append(Rev(f"s{k}", down, f'op.create_table("s{k}", sa.Column("id", sa.Integer))\n'
                                       f"op.execute(\"INSERT INTO applied VALUES ('s{k}')\")"))
    return revs


def applied_rows(url: str) -> List[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.text("SELECT rev FROM applied")))
    finally:
        engine.dispose()


def write_project(root: Path, revisions: Sequence[Rev], env_extra: str = "",
                  offline: bool = False) -> Path:
    """``root/migrations`` with env.py and versions/; returns the migrations dir.
    ``offline``: env.py has Alembic's offline branch too (what ``plan`` renders with)."""
    mig = root / "migrations"
    (mig / "versions").mkdir(parents=True, exist_ok=True)
    (mig / "env.py").write_text(ENV_PY_BOTH if offline else ENV_PY.replace("{extra}", env_extra))
    for i, rev in enumerate(revisions):
        (mig / "versions" / f"{i:04d}_{rev.id}.py").write_text(render(rev))
    return mig


def add_revision(mig: Path, rev: Rev, name: Optional[str] = None) -> None:
    (mig / "versions" / (name or f"9999_{rev.id}.py")).write_text(render(rev))


def render(rev: Rev) -> str:
    if rev.raw is not None:
        return rev.raw
    body = textwrap.indent(textwrap.dedent(rev.upgrade).strip() or "pass", "    ")
    return (
        f'"""{rev.message or rev.id}\n\nRevision ID: {rev.id}\n"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n"
        f"{rev.header}\n\n"
        f"revision = {rev.id!r}\n"
        f"down_revision = {rev.down!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        f"def upgrade():\n{body}\n\n\n"
        "def downgrade():\n    pass\n"
    )


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment a CLI subprocess gets: no MIGRATEGATE_* / DATABASE_URL leaking in
    from the caller, and no PYTHONPATH, so it runs the package installed in this venv."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MIGRATEGATE_") and k not in ("DATABASE_URL", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def migrategate(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
                cwd: Optional[Path] = None) -> Run:
    """Run the real CLI in a subprocess, as an operator (or a Pod) would: this venv's
    interpreter with ``-m migrategate``, the installed package (the chart's command too)."""
    proc = subprocess.run(
        [sys.executable, "-m", "migrategate", *args], capture_output=True, text=True,
        env=cli_env(env), timeout=timeout, cwd=str(cwd) if cwd else None,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def spawn(*args: str, env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [sys.executable, "-m", "migrategate", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=cli_env(env),
    )


def args_for(url: str, mig: Path, *more: str) -> List[str]:
    return ["--database-url", url, "--migrations", str(mig), *more]


def tables(url: str) -> List[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def versions(url: str) -> List[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return []
            return sorted(r[0] for r in conn.execute(sa.text("SELECT version_num FROM "
                                                             "alembic_version")))
    finally:
        engine.dispose()


def bare_url(url: str) -> str:
    """The URL without its password (``URL.set(password=None)`` keeps it)."""
    import sqlalchemy as sa

    u = sa.engine.make_url(url)
    return sa.engine.URL.create(u.drivername, u.username, None, u.host, u.port, u.database,
                                u.query).render_as_string(hide_password=False)


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
               interval: float = 0.1, explain: Callable[[], str] = lambda: "") -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{explain()}")


def _hold_table(url: str, release: threading.Event, started: threading.Event,
                session: List[Any]) -> None:
    import sqlalchemy as sa

    mysql = url.startswith("mysql")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=(
        {"program_name": "report-query"} if mysql else {"application_name": "report-query"}))
    with engine.connect() as conn:
        session.append(conn.execute(sa.text(
            "SELECT CONNECTION_ID()" if mysql else "SELECT pg_backend_pid()")).scalar())
        conn.execute(sa.text("SELECT * FROM t1"))
        started.set()
        release.wait(60)
        conn.rollback()
    engine.dispose()


def hold_table(url: str) -> Tuple[threading.Event, threading.Thread, Any]:
    """An application transaction reading t1 (``report-query``) until the returned event is
    set: ACCESS SHARE on PostgreSQL, a shared metadata lock on MySQL/MariaDB. Returns
    (release event, its thread, its session id: pid or connection id)."""
    release, held, session = threading.Event(), threading.Event(), []  # type: ignore[var-annotated]
    thread = threading.Thread(target=_hold_table, args=(url, release, held, session))
    thread.start()
    assert held.wait(30), "the blocker never took its lock"
    return release, thread, session[0]


@contextmanager
def hold_lock(url: str, holder: str = "lock-holder", name: str = "migrategate") -> Iterator[Any]:
    """Another session holding migrategate's lock ``name`` until the block ends, when
    the session closes and the lock goes with it: the advisory lock on PostgreSQL
    (``application_name`` = ``holder``), ``GET_LOCK('<name>:<database>')`` on
    MySQL/MariaDB, the ``flock`` of ``<database>.migrategate-lock`` on SQLite (whatever
    ``name``; its text says ``pid <ours> on <holder>``). Yields the holding connection."""
    import sqlalchemy as sa

    backend = sa.engine.make_url(url).get_backend_name()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    conn = engine.connect()
    fd = None
    try:
        if backend == "postgresql":
            from migrategate.lock import pg_lock_key

            conn.execute(sa.text("SELECT set_config('application_name', :a, false)"),
                         {"a": holder})
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": pg_lock_key(name)})
        elif backend in ("mysql", "mariadb"):
            from migrategate.lock import _mysql_lock_name

            lock = _mysql_lock_name(name, sa.engine.make_url(url).database or "")
            got = conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": lock}).scalar()
            assert got == 1, f"GET_LOCK({lock!r}) returned {got!r}: already held"
        else:
            import fcntl

            path = os.path.abspath(str(sa.engine.make_url(url).database)) + ".migrategate-lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {holder}".encode())
        conn.commit()  # the lock is the session's: it outlives the transaction
        yield conn
    finally:
        if fd is not None:
            os.close(fd)
        conn.close()
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    """Run statements in autocommit (CREATE DATABASE/ROLE, GRANTs, schema set-up)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def scalar(url: str, statement: str) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(statement)).scalar()
    finally:
        engine.dispose()


class SilentListener:
    """Accepts TCP connections on a free loopback port and never says a word (a hung
    server, a black-holing proxy)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.conns: List[Any] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def heard_from(self) -> bool:
        """Whether a client has sent bytes that nobody will ever answer."""
        import select

        return any(select.select([c], [], [], 0)[0] for c in list(self.conns))

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()
