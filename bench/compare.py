"""One chain size, migrategate (from any interpreter: another checkout's venv) next to Alembic.

    .venv/bin/python bench/compare.py [--revisions 200] [--reps 7] [--python PY]

The quick side-by-side used while changing the runner: on a throwaway PostgreSQL
(tests/servers.py) and bench/measure.py's synthetic chain, ``--reps`` rounds on fresh
databases, alternating the order each round, of ``alembic upgrade head``, ``migrategate
upgrade`` and ``migrategate upgrade --single-transaction``. migrategate runs as ``PY -m
migrategate`` (default: this interpreter), so an older commit installed in its own venv can
be measured beside this one: ``git worktree add /tmp/old REV && python3 -m venv /tmp/venv-old
&& /tmp/venv-old/bin/pip install /tmp/old`` then ``--python /tmp/venv-old/bin/python``.
Prints the medians, the two ratios and the load average. Wall clock; not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

import measure  # noqa: E402
import servers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--revisions", type=int, default=200)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter migrategate runs under (its own venv)")
    args = ap.parse_args()
    root = servers.session_dir()
    pg = servers.start_postgres(root / "pg")
    times: Dict[str, List[float]] = {"alembic": [], "migrategate": [], "single": []}
    try:
        mig = measure.write_chain(root, args.revisions)
        for rep in range(args.reps):
            order = list(times) if rep % 2 == 0 else list(times)[::-1]
            for key in order:
                url = servers.create_database(pg)
                if key == "alembic":
                    argv = [sys.executable, "-m", "alembic", "-c",
                            str(measure.alembic_ini(root, mig, url)), "upgrade", "head"]
                else:
                    argv = [args.python, "-m", "migrategate", "upgrade", "--database-url", url,
                            "--migrations", str(mig)] + (
                                ["--single-transaction"] if key == "single" else [])
                start = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True)
                times[key].append(time.perf_counter() - start)
                if proc.returncode != 0:
                    raise SystemExit(f"{key}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    finally:
        pg.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.revisions} revisions, median of {args.reps}: alembic {med['alembic']:.3f} s, "
          f"migrategate {med['migrategate']:.3f} s ({med['migrategate'] / med['alembic']:.2f}x),"
          f" --single-transaction {med['single']:.3f} s "
          f"({med['single'] / med['alembic']:.2f}x); load average "
          f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
