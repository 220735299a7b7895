"""Throwaway PostgreSQL, MariaDB and Redis servers on free loopback ports.

Tests never use the machine's own services: each session starts its own, on
ports nobody else uses, with password auth so auth failures are real. Missing
server binaries are installed from Debian packages (a fresh machine works).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

PG_PASSWORD = "pg-test-secret"
MARIADB_PASSWORD = "mariadb-test-secret"

_apt_updated = False


#: apt-get runs one at a time across the suite and the Kubernetes build scripts/test.sh
#: starts beside it (tests/e2e/provision.py takes the same lock): dpkg allows one user
APT_LOCK = (["flock", "-w", "1800", "/tmp/migrategate-apt.lock"]
            if shutil.which("flock") else [])


def _apt_install(*packages: str) -> None:
    global _apt_updated
    if os.geteuid() != 0:
        raise RuntimeError(f"{' '.join(packages)} missing and not root: install them first")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        subprocess.run(APT_LOCK + ["apt-get", "update", "-qq"], check=True, env=env)
        _apt_updated = True
    subprocess.run(APT_LOCK + ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                               "--no-upgrade", *packages],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def pg_bindir() -> str:
    def find() -> Optional[str]:
        dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
        return dirs[-1] if dirs and os.path.exists(os.path.join(dirs[-1], "initdb")) else None

    found = find()
    if found is None:
        _apt_install("postgresql")
        found = find()
    assert found, "PostgreSQL binaries not found after install"
    return found


def _need(binary: str, *packages: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}")
                                    else None)
    if path is None:
        _apt_install(*packages)
        path = shutil.which(binary) or f"/usr/sbin/{binary}"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise RuntimeError(f"server on port {port} did not come up (exit {proc.poll()}):\n{tail}")


@dataclass
class Server:
    kind: str
    host: str
    port: int
    user: str
    password: str
    proc: subprocess.Popen
    log: Path
    base: Path
    admin_db: str = ""
    _stopped: bool = field(default=False, repr=False)

    def url(self, database: Optional[str] = None, password: Optional[str] = None) -> str:
        from sqlalchemy.engine import URL

        driver = {"postgresql": "postgresql+psycopg2", "mariadb": "mysql+pymysql"}[self.kind]
        return URL.create(driver, self.user, self.password if password is None else password,
                          self.host, self.port, database or self.admin_db) \
            .render_as_string(hide_password=False)

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _as_postgres() -> List[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


def init_postgres(base: Path) -> Callable[[int], Server]:
    """initdb now; the returned function starts the server on a given port (late starts)."""
    bindir = pg_bindir()
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    pwfile = base / "pw"
    pwfile.write_text(PG_PASSWORD)
    prefix = _as_postgres()
    if prefix:
        os.chmod(base, 0o777)
        shutil.chown(str(pwfile), "postgres")
    subprocess.run(prefix + [f"{bindir}/initdb", "-D", str(data), "-U", "postgres",
                             "--auth-host=scram-sha-256", "--auth-local=trust",
                             f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(port: int) -> Server:
        log = base / "postgres.log"
        logfh = open(log, "ab")
        proc = subprocess.Popen(
            prefix + [f"{bindir}/postgres", "-D", str(data), "-p", str(port),
                      "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={base}",
                      "-c", "fsync=off", "-c", "synchronous_commit=off",
                      "-c", "full_page_writes=off", "-c", "max_connections=300",
                      "-c", "shared_buffers=64MB"],
            stdout=logfh, stderr=subprocess.STDOUT)
        server = Server("postgresql", "127.0.0.1", port, "postgres", PG_PASSWORD, proc, log,
                        base, "postgres")
        _wait_port(port, proc, log)
        _wait_sql(server)
        return server

    return start


def start_postgres(base: Path) -> Server:
    return init_postgres(base)(free_port())


def _wait_sql(server: Server, timeout: float = 30) -> None:
    import sqlalchemy as sa

    deadline = time.monotonic() + timeout
    last: Optional[Exception] = None
    while time.monotonic() < deadline:
        engine = sa.create_engine(server.url(), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return
        except sa.exc.OperationalError as exc:  # starting up
            last = exc
            time.sleep(0.1)
        finally:
            engine.dispose()
    raise RuntimeError(f"{server.kind} on {server.port} never accepted SQL: {last}")


def start_mariadb(base: Path) -> Server:
    install_db = _need("mariadb-install-db", "mariadb-server-core", "mariadb-client-core")
    mariadbd = _need("mariadbd", "mariadb-server-core")
    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    subprocess.run([install_db, "--no-defaults", f"--datadir={data}", "--user=root",
                    "--auth-root-authentication-method=normal", "--skip-test-db"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = free_port()
    log = base / "mariadb.log"
    sock = base / "mysqld.sock"
    init = base / "init.sql"
    init.write_text(
        f"CREATE USER IF NOT EXISTS 'test'@'%' IDENTIFIED BY '{MARIADB_PASSWORD}';\n"
        "GRANT ALL PRIVILEGES ON *.* TO 'test'@'%' WITH GRANT OPTION;\n"
        f"CREATE USER IF NOT EXISTS 'test'@'localhost' IDENTIFIED BY '{MARIADB_PASSWORD}';\n"
        "GRANT ALL PRIVILEGES ON *.* TO 'test'@'localhost' WITH GRANT OPTION;\n"
        "FLUSH PRIVILEGES;\n")
    logfh = open(log, "ab")
    proc = subprocess.Popen(
        [mariadbd, "--no-defaults", "--user=root", f"--datadir={data}", f"--socket={sock}",
         f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
         f"--pid-file={base / 'mariadb.pid'}", f"--init-file={init}", "--max-connections=300",
         "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin", "--innodb-buffer-pool-size=64M"],
        stdout=logfh, stderr=subprocess.STDOUT)
    server = Server("mariadb", "127.0.0.1", port, "test", MARIADB_PASSWORD, proc, log, base,
                    "mysql")
    _wait_port(port, proc, log)
    _wait_sql(server)
    return server


def start_redis(base: Path) -> Server:
    redis = _need("redis-server", "redis-server")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = base / "redis.log"
    proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(base), "--logfile", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = Server("redis", "127.0.0.1", port, "", "", proc, log, base)
    _wait_port(port, proc, log)
    return server


def start_pgbouncer(base: Path, pg: Server, pool_mode: str = "transaction",
                    ignore_startup_parameters: Optional[str] = "extra_float_digits,options",
                    ) -> Server:
    """PgBouncer in front of ``pg`` (it refuses to run as root: run as postgres).

    ``ignore_startup_parameters=None`` leaves PgBouncer's default (none ignored: a
    client that sends libpq ``options`` is refused)."""
    binary = _need("pgbouncer", "pgbouncer")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (base / "userlist.txt").write_text(f'"{pg.user}" "{pg.password}"\n')
    ini = base / "pgbouncer.ini"
    log = base / "pgbouncer.log"
    ini.write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={pg.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {base}\n"
        f"auth_type = scram-sha-256\nauth_file = {base / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\ndefault_pool_size = 4\n"
        f"logfile = {log}\npidfile = {base / 'pgbouncer.pid'}\n"
        + (f"ignore_startup_parameters = {ignore_startup_parameters}\n"
           if ignore_startup_parameters is not None else ""))
    prefix = _as_postgres()
    if prefix:
        os.chmod(base, 0o777)
        for f in base.iterdir():
            shutil.chown(str(f), "postgres")
    proc = subprocess.Popen(prefix + [binary, str(ini)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    server = Server("postgresql", "127.0.0.1", port, pg.user, pg.password, proc, log, base,
                    "postgres")
    _wait_port(port, proc, log)
    return server


_counter = 0


def create_database(server: Server, prefix: str = "t") -> str:
    """A fresh, uniquely named database on ``server``; returns its URL."""
    import sqlalchemy as sa

    global _counter
    _counter += 1
    name = f"{prefix}_{os.getpid()}_{_counter}"
    engine = sa.create_engine(server.url(), poolclass=sa.pool.NullPool,
                              isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if server.kind == "postgresql":
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    finally:
        engine.dispose()
    return server.url(name)


def session_dir() -> Path:
    """World-traversable (the postgres user must reach it; /root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="migrategate-test-"))
    os.chmod(path, 0o755)
    return path
