"""Does the real-cluster tier notice what a careless change to the chart would break?

    sudo .venv/bin/python tests/e2e/mutations.py [NAME ...]

For each mutation below, a copy of the chart with that one change is installed by the
tier's own tests (``MIGRATEGATE_E2E_CHART``), running only the tests named for it; the
mutation is *caught* when they fail. Prints one line a mutation and exits 1 when one
survives. Not part of the suite (about a minute a mutation, each starting its own
cluster): run it after changing the tier or the chart's hardening; the last run is in
tests/e2e/README.md.

The podFailurePolicy's FailJob codes are not here: a 1.20 cluster has no such field, so
the main suite's render test holds them to ``errors.RETRY_CANNOT_FIX``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHART = ROOT / "charts" / "migrategate"


class Mutation(NamedTuple):
    name: str
    path: str  # in the chart
    old: str
    new: str
    tests: str  # pytest -k


MUTATIONS: List[Mutation] = [
    Mutation("runAsNonRoot removed from the Job's pod", "values.yaml",
             "podSecurityContext:\n  runAsNonRoot: true\n", "podSecurityContext:\n",
             "fresh_database"),
    Mutation("no FallbackToLogsOnError", "templates/_internal.tpl",
             "terminationMessagePolicy: FallbackToLogsOnError", "terminationMessagePolicy: File",
             "fresh_database"),
    Mutation("no seccomp profile", "values.yaml",
             "  fsGroup: 65532\n  seccompProfile:\n    type: RuntimeDefault\n",
             "  fsGroup: 65532\n", "fresh_database"),
    Mutation("the service-account token mounted", "values.yaml",
             "automountServiceAccountToken: false", "automountServiceAccountToken: true",
             "fresh_database"),
    Mutation("the gate always passes --allow-ahead", "templates/_internal.tpl",
             '{{- $args := list "wait" "--timeout" (toString $g.timeout) "--interval" '
             '(toString $g.interval) -}}',
             '{{- $args := list "wait" "--allow-ahead" "--timeout" (toString $g.timeout) '
             '"--interval" (toString $g.interval) -}}', "ahead_of"),
    Mutation("the gate's --timeout 1", "templates/_internal.tpl",
             '{{- $args := list "wait" "--timeout" (toString $g.timeout)',
             '{{- $args := list "wait" "--timeout" "1"', "gate_holds"),
    Mutation("the /tmp emptyDir removed", "templates/_public.tpl",
             "- name: migrategate-tmp\n  mountPath: /tmp\n", "", "fresh_database"),
]


def mutated_chart(m: Mutation, into: Path) -> Path:
    chart = into / "migrategate"
    shutil.copytree(CHART, chart, symlinks=False)  # files/migrategate: the real source
    target = chart / m.path
    text = target.read_text()
    if m.old not in text:
        raise SystemExit(f"mutation {m.name!r}: {m.path} no longer holds {m.old!r}; update it")
    target.write_text(text.replace(m.old, m.new, 1))
    return chart


def main(names: List[str]) -> int:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    survived = 0
    for m in chosen:
        with tempfile.TemporaryDirectory(prefix="mg-mutant-") as tmp:
            chart = mutated_chart(m, Path(tmp))
            env = dict(os.environ, MIGRATEGATE_E2E_CHART=str(chart), MIGRATEGATE_INSTALLED="1")
            proc = subprocess.run(["bash", str(ROOT / "scripts" / "e2e.sh"), "-q", "-x",
                                   "-k", m.tests], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        caught = proc.returncode == 1  # 1: tests failed (2+: the tier could not run)
        if proc.returncode not in (0, 1):
            print(f"ERROR    {m.name}: the tier did not run (exit {proc.returncode}): {last}")
            survived += 1
            continue
        survived += 0 if caught else 1
        print(f"{'caught  ' if caught else 'SURVIVED'} {m.name}: {last}", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
