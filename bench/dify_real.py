"""Real Dify: migrategate --preset dify next to `flask db upgrade`, timed (not a test).

    /path/to/python3.12 bench/dify_real.py DIFY_API_DIR [--reps 3] [--out docs]

DIFY_API_DIR is a Dify ``api/`` tree; the Python must be able to ``import models`` there
(Dify's own dependencies, Python >= 3.12; see docs/dify.md and scripts/dify-acceptance.sh)
plus SQLAlchemy, Alembic, Flask-Migrate and psycopg2. migrategate runs from this checkout's
src/. On a throwaway PostgreSQL (``--backend mariadb``: MariaDB) (tests/servers.py), each
repetition, on fresh databases and alternating which tool goes first:

- empty -> head and then no-op with ``migrategate upgrade --preset dify --app-root DIR``
  (Dify's own DB_* variables);
- the same two with plain ``flask db upgrade`` through a minimal Flask-Migrate app over
  Dify's migrations (scripts/dify_acceptance.py's MINIMAL_APP, no Dify app factory).

Prints the medians and their ratios and writes ``<out>/dify_real.json``
(``dify_real_mariadb.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "scripts")]

import dify_acceptance as acc  # noqa: E402  (scripts/dify_acceptance.py)
import servers  # noqa: E402  (tests/servers.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("api", help="a Dify api/ directory (DIFY_API_DIR)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--backend", choices=("postgresql", "mariadb"), default="postgresql")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    api = Path(args.api).resolve()
    if not (api / "migrations" / "env.py").exists():
        print(f"error: {api} has no migrations/env.py; pass a Dify api/ directory",
              file=sys.stderr)
        return 2
    revisions = len(list((api / "migrations" / "versions").glob("*.py")))
    times: Dict[str, List[float]] = {k: [] for k in
                                     ("mg_empty", "mg_noop", "flask_empty", "flask_noop")}
    base = servers.session_dir()
    pg = (servers.start_postgres(base / "pg") if args.backend == "postgresql"
          else servers.start_mariadb(base / "mariadb"))
    try:
        with tempfile.TemporaryDirectory(prefix="dify-bench-") as tmp:
            app_file = Path(tmp) / "dify_minimal_app.py"
            app_file.write_text(acc.MINIMAL_APP)
            for rep in range(args.reps):
                order = ["mg", "flask"] if rep % 2 == 0 else ["flask", "mg"]
                for tool in order:
                    url = servers.create_database(pg, "dify")
                    for step, want in (("empty", revisions), ("noop", 0)):
                        if tool == "mg":
                            seconds, code, report = acc.timed(api, acc.dify_env(url, api),
                                                              "upgrade")
                            applied = len(report.get("applied") or [])
                            if code != 0 or applied != want:
                                raise SystemExit(f"migrategate {step}: exit {code}, "
                                                 f"{applied} applied, {report}")
                        else:
                            seconds, code = acc.flask_upgrade(api, url, app_file)
                            if code != 0:
                                raise SystemExit(f"flask db upgrade {step}: exit {code}")
                        times[f"{tool}_{step}"].append(seconds)
                        print(f"rep {rep + 1} {tool:5} {step:5} {seconds:6.2f} s", flush=True)
    finally:
        pg.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"api": str(api), "revisions": revisions, "reps": args.reps, "runs": times,
              "backend": args.backend, "median": med, "machine": machine_facts()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "dify_real.json" if args.backend == "postgresql" else f"dify_real_{args.backend}.json"
    (out / name).write_text(json.dumps(result, indent=1))
    print(f"Dify ({revisions} revisions, {args.backend}), median of {args.reps}: empty -> head "
          f"{med['mg_empty']:.2f} s migrategate --preset dify vs {med['flask_empty']:.2f} s "
          f"flask db upgrade = {med['mg_empty'] / med['flask_empty']:.2f}x; no-op "
          f"{med['mg_noop']:.2f} s vs {med['flask_noop']:.2f} s = "
          f"{med['mg_noop'] / med['flask_noop']:.2f}x")
    return 0


def machine_facts() -> Dict[str, object]:
    import os
    import platform

    import alembic
    import sqlalchemy

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__, "alembic": alembic.__version__,
            "load_average": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
