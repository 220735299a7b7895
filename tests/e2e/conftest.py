"""Fixtures of the real-cluster tier: the cluster, images, a database, helm against it.

The tier never skips itself: if anything needed cannot be built or started, the session
fails with the reason (``pytest.fail``), so CI cannot pass without having run it.
Run it with ``bash scripts/e2e.sh`` (see tests/e2e/README.md).
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2elib import (  # noqa: E402  (also puts tests/ and tests/e2e on sys.path)
    APP,
    BROKEN_C003,
    HERE,
    MIGRATIONS,
    SHOP,
    HelmCLI,
    Kube,
)

import cluster as cluster_mod  # noqa: E402
import helmtool  # noqa: E402
import provision  # noqa: E402
import servers  # noqa: E402


# --------------------------------------------------------------------------- the cluster

@pytest.fixture(scope="session")
def cluster() -> Iterator[cluster_mod.Cluster]:
    cluster_mod.install_teardown_handlers()
    started = time.monotonic()
    try:
        paths = provision.ensure_all()
    except provision.ProvisionError as exc:
        pytest.fail(f"e2e: cannot build the cluster's parts: {exc}", pytrace=False)
    built = time.monotonic()
    try:
        c = cluster_mod.Cluster.start(paths)
    except cluster_mod.ClusterError as exc:
        pytest.fail(f"e2e: the cluster did not start: {exc}", pytrace=False)
    print(f"\n[e2e] provisioned in {built - started:.0f}s, cluster up in "
          f"{time.monotonic() - built:.0f}s ({c.run})", file=sys.stderr)
    try:
        yield c
    finally:
        c.stop()
        left = c.leftovers()
        assert not left, f"e2e teardown left processes or mounts behind: {left}"


@pytest.fixture(scope="session")
def images(cluster: cluster_mod.Cluster, tmp_path_factory: pytest.TempPathFactory
           ) -> Dict[str, str]:
    """The "application" images: the fixture migrations at /app/migrations.

    app:1 and app:2 hold the same migrations (a new tag, nothing to apply); app:broken a
    c003 that fails half-way; shop:1 is the Dify-like image whose USER is a name.
    """
    broken = tmp_path_factory.mktemp("broken") / "migrations"
    shutil.copytree(MIGRATIONS, broken, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "versions" / "c003_invoices.py").unlink()
    shutil.copy2(BROKEN_C003, broken / "versions" / "c003_broken.py")
    out = {
        "app1": cluster.build_image(f"{APP}:1", {"/app/migrations": MIGRATIONS}),
        "app2": cluster.build_image(f"{APP}:2", {"/app/migrations": MIGRATIONS}),
        "broken": cluster.build_image(f"{APP}:broken", {"/app/migrations": broken}),
        "shop": cluster.build_image(f"{SHOP}:1", {"/app/migrations": MIGRATIONS}, user="app"),
    }
    return out


@pytest.fixture(scope="session")
def postgres(cluster: cluster_mod.Cluster) -> Iterator[servers.Server]:
    base = servers.session_dir()
    server = servers.start_postgres(base / "pg")
    postmaster = server.proc.pid  # runuser; the postmaster is its child
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        cluster_mod.register_helper(int(child), str(base))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- kube + helm

@pytest.fixture(scope="session")
def kube(cluster: cluster_mod.Cluster) -> Kube:
    return Kube(cluster)


@pytest.fixture(scope="session")
def helm(cluster: cluster_mod.Cluster, tmp_path_factory: pytest.TempPathFactory) -> HelmCLI:
    try:
        binary = helmtool.ensure_helm()
    except helmtool.HelmUnavailable as exc:
        pytest.fail(f"e2e: no helm binary: {exc}", pytrace=False)
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "hostnet").mkdir()
    (plugins / "hostnet" / "plugin.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v1", "type": "postrenderer/v1", "name": "hostnet", "version": "0.1.0",
        "runtime": "subprocess",
        "runtimeConfig": {"platformCommand": [
            {"command": sys.executable, "args": [str(HERE / "hostnet.py")]}]}}))
    return HelmCLI(binary, cluster, plugins, tmp_path_factory.mktemp("helm"))


_ns_counter = 0


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> str:
    global _ns_counter
    _ns_counter += 1
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return kube.create_namespace(f"{name}-{_ns_counter}")


@pytest.fixture
def database(postgres: servers.Server) -> Dict[str, str]:
    """A fresh database: its URL without the password (for the chart) and the password."""
    url = servers.create_database(postgres, "e2e")
    name = url.rsplit("/", 1)[1]
    return {"url": f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/{name}",
            "password": postgres.password, "full": url}


