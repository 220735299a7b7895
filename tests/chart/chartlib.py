"""Helpers of the Helm chart tests: paths, a helm wrapper, manifest lookups."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tests/, for helmtool
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "migrategate"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PARENT_FIXTURE = FIXTURES / "parent"
DIFY_VALUES = ROOT / "examples" / "dify" / "values.yaml"
LINT_VALUES = CHART / "ci" / "default-values.yaml"

# Minimal values a real install of the chart needs (the ci/ file holds the same).
BASE_VALUES: Dict[str, Any] = yaml.safe_load(LINT_VALUES.read_text())


class HelmError(AssertionError):
    def __init__(self, args: Sequence[str], proc: subprocess.CompletedProcess):
        self.stderr = _quiet(proc.stderr)
        self.stdout = proc.stdout
        super().__init__(f"helm {' '.join(args)} exited {proc.returncode}:\n{self.stderr}")


def _quiet(stderr: str) -> str:
    """helm v4 logs an INFO line per followed symlink; keep the rest."""
    return "\n".join(line for line in stderr.splitlines()
                     if "found symbolic link in path" not in line)


class Helm:
    def __init__(self, binary: Path, tmp: Path):
        self.binary = binary
        self.tmp = tmp
        self._n = 0

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            raise HelmError(args, proc)
        return proc

    def _values_file(self, values: Dict[str, Any]) -> str:
        self._n += 1
        path = self.tmp / f"values-{self._n}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return str(path)

    def template_args(self, chart: Path, values: Optional[Dict[str, Any]] = None,
                      files: Sequence[Path] = (), release: str = "shop",
                      namespace: str = "apps", extra: Sequence[str] = ()) -> List[str]:
        args = ["template", release, str(chart), "--namespace", namespace]
        for f in files:
            args += ["-f", str(f)]
        if values is not None:
            args += ["-f", self._values_file(values)]
        return args + list(extra)

    def template(self, chart: Path = CHART, values: Optional[Dict[str, Any]] = None,
                 **kw: Any) -> List[Dict[str, Any]]:
        out = self.run(*self.template_args(chart, values, **kw)).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    def template_error(self, chart: Path = CHART, values: Optional[Dict[str, Any]] = None,
                       **kw: Any) -> str:
        proc = self.run(*self.template_args(chart, values, **kw), check=False)
        assert proc.returncode != 0, f"helm template accepted the values:\n{proc.stdout[:2000]}"
        return _quiet(proc.stderr)


def by_kind(docs: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: List[Dict[str, Any]], kind: str) -> Dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """Deep merge like Helm's values coalescing (dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def values(**over: Any) -> Dict[str, Any]:
    return merge(BASE_VALUES, over)
