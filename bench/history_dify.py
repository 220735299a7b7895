"""Real Dify: what migrategate's history table costs, and that it records every revision.

    /path/to/python3.12 bench/history_dify.py DIFY_API_DIR [--reps 3] [--out docs]

DIFY_API_DIR and the Python as for bench/dify_real.py (Dify's api/ tree, an interpreter that
can ``import models`` there). On a throwaway PostgreSQL and MariaDB (tests/servers.py), each
repetition on fresh empty databases, alternating which goes first:
``migrategate upgrade --preset dify`` with the history (the default) and with
``--no-history``. After the first run with history, ``migrategate history --json`` must list
one ``applied`` row for every revision of the chain. Prints the medians and the ratio
with/without history per backend (target <= 1.03x) and writes ``<out>/history_dify.json``.
Wall clock of the whole command; not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "scripts")]

import dify_acceptance as acc  # noqa: E402  (scripts/dify_acceptance.py)
import servers  # noqa: E402  (tests/servers.py)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("api", help="a Dify api/ directory (DIFY_API_DIR)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    api = Path(args.api).resolve()
    revisions = len(list((api / "migrations" / "versions").glob("*.py")))
    load = os.getloadavg()
    base = servers.session_dir()
    out: Dict[str, Any] = {}
    failed: List[str] = []
    for kind, start in (("postgresql", servers.start_postgres),
                        ("mariadb", servers.start_mariadb)):
        server = start(base / kind)
        try:
            out[kind] = run(kind, server, api, args.reps, revisions, failed)
        finally:
            server.stop()
    result = {"measures": "migrategate upgrade --preset dify, empty -> head, with the history "
                          "table vs --no-history; see bench/history_dify.py",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "revisions": revisions, "reps": args.reps, "load_average_at_start": list(load),
              "load_average_at_end": list(os.getloadavg()), "backends": out,
              "failures": failed}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "history_dify.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{revisions} revisions, median of {args.reps}, load average at start "
          f"{' '.join(f'{x:.2f}' for x in load)}")
    for kind, r in out.items():
        if "ratio" in r:
            print(f"{kind}: history rows {r['history_rows']}/{revisions} applied; with history "
                  f"{r['median']['history']:.2f} s, without {r['median']['no_history']:.2f} s "
                  f"= {r['ratio']:.3f}x")
    for f in failed:
        print(f"FAILED: {f}")
    return 1 if failed else 0


def run(kind: str, server: "servers.Server", api: Path, reps: int, revisions: int,
        failed: List[str]) -> Dict[str, Any]:
    times: Dict[str, List[float]] = {"history": [], "no_history": []}
    rows = None
    for rep in range(reps):
        order = ["history", "no_history"] if rep % 2 == 0 else ["no_history", "history"]
        for mode in order:
            url = servers.create_database(server, "difyhist")
            env = acc.dify_env(url, api)
            extra = ["--no-history"] if mode == "no_history" else []
            seconds, code, report = acc.timed(api, env, "upgrade", *extra)
            if code != 0:
                failed.append(f"{kind} {mode}: exit {code}: {report.get('message')}")
                return {}
            times[mode].append(seconds)
            print(f"{kind:10} rep {rep + 1} {mode:10} {seconds:6.2f} s", flush=True)
            if mode == "history" and rows is None:
                _, hcode, history = acc.timed(api, env, "history")
                listed = history.get("history") or []
                rows = sum(1 for r in listed if r.get("outcome") == "applied")
                if hcode != 0 or rows != revisions:
                    failed.append(f"{kind}: history exit {hcode}, {rows} applied rows of "
                                  f"{revisions}")
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"runs": times, "median": med, "ratio": med["history"] / med["no_history"],
            "history_rows": rows}


if __name__ == "__main__":
    sys.exit(main())
