"""Session fixtures: real throwaway servers, started on first use, each test its own database."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Dict

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # servers, factory, helmtool; never src/: see below

import servers  # noqa: E402

RESULTS = HERE.parent / ".cache" / "reliability.json"
SOURCE = HERE.parent / "src" / "migrategate"


def _tree(root: Path) -> Dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def pytest_configure(config):
    """The tests import the installed package (scripts/test.sh installs it, not editable,
    so packaging is exercised). Refuse to run against an install older than src/."""
    import migrategate

    installed = Path(migrategate.__file__).resolve().parent
    if installed == SOURCE.resolve():
        return  # an editable install is the source itself; test_packaging says why not
    theirs, ours = _tree(installed), _tree(SOURCE)
    stale = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    if stale:
        raise pytest.UsageError(
            f"the installed migrategate ({installed}) is not src/migrategate: "
            f"{', '.join(stale[:5])}{' …' if len(stale) > 5 else ''} differ; the tests would "
            "check old code — run bash scripts/test.sh, which reinstalls it")


@pytest.fixture(scope="session")
def server_root():
    root = servers.session_dir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _server(request, root, kind, start):
    server = start(root / kind)
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def postgres_server(request, server_root):
    return _server(request, server_root, "postgres", servers.start_postgres)


@pytest.fixture(scope="session")
def mariadb_server(request, server_root):
    return _server(request, server_root, "mariadb", servers.start_mariadb)


@pytest.fixture(scope="session")
def redis_server(request, server_root):
    return _server(request, server_root, "redis", servers.start_redis)


@pytest.fixture
def pg_url(postgres_server):
    return servers.create_database(postgres_server)


@pytest.fixture
def new_pg_url(postgres_server):
    """A factory of fresh PostgreSQL databases (for tests that need several)."""
    return lambda: servers.create_database(postgres_server)


@pytest.fixture
def mariadb_url(mariadb_server):
    return servers.create_database(mariadb_server)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def db_url(request):
    name = {"postgresql": "pg_url", "mariadb": "mariadb_url", "sqlite": "sqlite_url"}
    return request.getfixturevalue(name[request.param])


@pytest.fixture
def late_postgres(request, server_root):
    """(url, start): a PostgreSQL whose port is known now but which starts only on start()."""
    port = servers.free_port()
    base = server_root / f"late-{port}"
    starter = servers.init_postgres(base)
    started = []

    def start():
        started.append(starter(port))

    request.addfinalizer(lambda: [s.stop() for s in started])
    from sqlalchemy.engine import URL

    url = URL.create("postgresql+psycopg2", "postgres", servers.PG_PASSWORD, "127.0.0.1", port,
                     "postgres").render_as_string(hide_password=False)
    return url, start


_trials = []


@pytest.fixture
def reliability(request):
    """Record a fault scenario's trials and outcome for docs/reliability.md."""

    def record(scenario, trials, outcome):
        _trials.append({"test": request.node.name, "scenario": scenario, "trials": trials,
                        "outcome": outcome})

    return record


def pytest_sessionfinish(session, exitstatus):
    if _trials:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(_trials, indent=2))
