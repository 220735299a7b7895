"""Real Dify: `migrategate plan` on an empty database next to `flask db upgrade --sql`, timed.

    /path/to/python3.12 bench/plan_dify.py DIFY_API_DIR [--reps 3] [--out docs]
                                          [--dify-commit SHA] [--backends postgresql,mariadb]

DIFY_API_DIR is a Dify ``api/`` tree; the Python must be able to ``import models`` there
(Dify's own dependencies, Python >= 3.12; see docs/dify.md and scripts/dify-acceptance.sh)
plus SQLAlchemy, Alembic, Flask-Migrate, psycopg2 and PyMySQL; squawk-cli in the same venv
adds squawk's findings on PostgreSQL (without it ``plan`` says so and uses its own rules only).
migrategate runs from this checkout's src/. On a throwaway PostgreSQL and a throwaway MariaDB
(tests/servers.py), each repetition, on a fresh EMPTY database each time and alternating which
tool goes first:

- ``migrategate plan --json --preset dify --app-root DIR`` (Dify's own DB_* variables): every
  one of Dify's revisions is pending; each is rendered with Alembic's offline mode in a child
  process and classified. From the first repetition's JSON it reports how many revisions were
  planned offline (``plan.revisions[*].planned``), the ones that were not with their reasons
  (``not_planned``), the findings by level (``plan.findings``, which counts each not-planned
  revision as one risky finding) and the most frequent rules;
- on PostgreSQL, the same with ``MIGRATEGATE_REHEARSE_ON`` an empty scratch database: the
  pending revisions run there in one transaction that is rolled back (``--rehearse-on``);
- ``flask db upgrade --sql`` (Alembic's own offline mode, the whole chain base -> head, SQL to
  stdout) through the minimal Flask-Migrate app of scripts/dify_acceptance.py (MINIMAL_APP, no
  Dify app factory), checked by counting its ``-- Running upgrade`` lines.

Wall-clock seconds of the whole command (interpreter start and Dify's imports included). Prints
the medians and the ratio plan / alembic-sql per backend, and writes ``<out>/plan_dify.json``
(revisions, planned, not_planned, findings by level, top rules, medians, ratio, the load
average at start, date, Dify commit). Not a test: exits 1 if a command fails.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "scripts")]

import dify_acceptance as acc  # noqa: E402  (scripts/dify_acceptance.py)
import servers  # noqa: E402  (tests/servers.py)

TOP_RULES = 10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("api", help="a Dify api/ directory (DIFY_API_DIR)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--dify-commit", default=None,
                    help="the Dify commit the api/ tree comes from (default: git rev-parse "
                         "in DIFY_API_DIR, if it is a checkout)")
    ap.add_argument("--backends", default="postgresql,mariadb")
    args = ap.parse_args()
    load_at_start = os.getloadavg()
    api = Path(args.api).resolve()
    if not (api / "migrations" / "env.py").exists():
        print(f"error: {api} has no migrations/env.py; pass a Dify api/ directory",
              file=sys.stderr)
        return 2
    revisions = len(list((api / "migrations" / "versions").glob("*.py")))
    starters = {"postgresql": servers.start_postgres, "mariadb": servers.start_mariadb}
    results: Dict[str, Dict[str, Any]] = {}
    failed: List[str] = []
    base = servers.session_dir()
    with tempfile.TemporaryDirectory(prefix="plan-dify-") as tmp:
        app_file = Path(tmp) / "dify_minimal_app.py"
        app_file.write_text(acc.MINIMAL_APP)
        for kind in args.backends.split(","):
            server = starters[kind](base / kind)
            try:
                results[kind] = run_backend(kind, server, api, app_file, args.reps,
                                            revisions, failed)
            finally:
                server.stop()
    shutil.rmtree(base, ignore_errors=True)
    result = {
        "measures": "migrategate plan --json --preset dify on an empty database (offline, and "
                    "on PostgreSQL with --rehearse-on an empty scratch database) vs flask db "
                    "upgrade --sql (Alembic offline mode, minimal Flask-Migrate app), whole "
                    "command wall clock; see bench/plan_dify.py",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dify_commit": args.dify_commit or _git_head(api),
        "api": str(api), "revisions": revisions, "reps": args.reps,
        "load_average_at_start": list(load_at_start),
        "load_average_at_end": list(os.getloadavg()),
        "machine": machine_facts(), "backends": results, "failures": failed}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan_dify.json").write_text(json.dumps(result, indent=1) + "\n")
    print()
    print(f"Dify {result['dify_commit'] or '(commit unknown)'}, {revisions} revisions, "
          f"median of {args.reps}; load average at start "
          f"{' '.join(f'{x:.2f}' for x in load_at_start)} on {os.cpu_count()} CPUs")
    for kind, r in results.items():
        print(summary(kind, r, revisions))
    for f in failed:
        print(f"FAILED: {f}")
    print(f"wrote {out / 'plan_dify.json'}")
    return 1 if failed else 0


def run_backend(kind: str, server: "servers.Server", api: Path, app_file: Path, reps: int,
                revisions: int, failed: List[str]) -> Dict[str, Any]:
    times: Dict[str, List[float]] = {"plan": [], "alembic_sql": []}
    tools = ["plan", "alembic_sql"]
    if kind == "postgresql":  # a rehearsal needs transactional DDL
        times["rehearse"] = []
        tools.append("rehearse")
    first: Optional[Dict[str, Any]] = None
    rehearsed: Optional[Dict[str, Any]] = None
    sql_revisions: Optional[int] = None
    for rep in range(reps):
        order = tools if rep % 2 == 0 else tools[::-1]
        for tool in order:
            url = servers.create_database(server, "difyplan")
            if tool == "rehearse":
                env = acc.dify_env(url, api)
                env["MIGRATEGATE_REHEARSE_ON"] = servers.create_database(server, "scratch")
                seconds, code, report = acc.timed(api, env, "plan")
                if code != 0 or "plan" not in report:
                    failed.append(f"{kind}: migrategate plan --rehearse-on exit {code}: "
                                  f"{report.get('outcome')} {report.get('message')}")
                    return {"rehearse_exit": code, "rehearse_report": report}
                rehearsed = rehearsed or report
            elif tool == "plan":
                seconds, code, report = acc.timed(api, acc.dify_env(url, api), "plan")
                if code != 0 or "plan" not in report:
                    failed.append(f"{kind}: migrategate plan exit {code}: "
                                  f"{report.get('outcome')} {report.get('message')}")
                    return {"plan_exit": code, "plan_report": report}
                first = first or report
            else:
                seconds, code, stdout = flask_sql(api, url, app_file)
                sql_revisions = stdout.count("-- Running upgrade")
                if code != 0:
                    failed.append(f"{kind}: flask db upgrade --sql exit {code} after "
                                  f"{sql_revisions} revisions")
                    return {"alembic_sql_exit": code, "alembic_sql_revisions": sql_revisions}
            times[tool].append(seconds)
            print(f"{kind:10} rep {rep + 1} {tool:11} {seconds:6.2f} s", flush=True)
    assert first is not None
    if sql_revisions != revisions:
        failed.append(f"{kind}: flask db upgrade --sql rendered {sql_revisions} of "
                      f"{revisions} revisions")
    plan = first["plan"]
    revs = plan["revisions"]
    rules = collections.Counter((f["level"], f["rule"], f["source"])
                                for r in revs for s in r["statements"] for f in s["findings"])
    med = {k: statistics.median(v) for k, v in times.items()}
    extra: Dict[str, Any] = {}
    if rehearsed is not None:
        rrevs = rehearsed["plan"]["revisions"]
        extra = {"rehearsed": sum(1 for r in rrevs if r["planned"]),
                 "rehearsal_not_planned": [{"revision": r["revision"],
                                            "reason": r["not_planned"]}
                                           for r in rrevs if not r["planned"]],
                 "rehearsal_statements_with_locks": sum(
                     1 for r in rrevs for st in r["statements"] if st["locks_taken"]),
                 "ratio_rehearse_over_alembic_sql": med["rehearse"] / med["alembic_sql"]}
    return {**extra,
        "server": plan["server"], "plan_exit": 0, "plan_outcome": first.get("outcome"),
        "plan_message": first.get("message"), "squawk": plan.get("squawk"),
        "pending": len(revs), "planned": sum(1 for r in revs if r["planned"]),
        "not_planned": [{"revision": r["revision"], "message": r["message"],
                         "reason": r["not_planned"]} for r in revs if not r["planned"]],
        "statements": sum(len(r["statements"]) for r in revs),
        "findings_by_level": plan["findings"],
        "top_rules": [{"level": lv, "rule": rule, "source": src, "count": n}
                      for (lv, rule, src), n in rules.most_common(TOP_RULES)],
        "rules_above_info": [{"level": lv, "rule": rule, "source": src, "count": n}
                             for (lv, rule, src), n in rules.most_common() if lv != "info"],
        "alembic_sql_revisions": sql_revisions,
        "runs": times, "median_seconds": med,
        "ratio_plan_over_alembic_sql": med["plan"] / med["alembic_sql"]}


def flask_sql(api: Path, url: str, app_file: Path) -> Tuple[float, int, str]:
    """``flask db upgrade --sql`` (offline mode; it connects to nothing) -> seconds, exit, SQL."""
    from migrategate.presets import dify

    env = acc.dify_env(url, api)
    env.update({"DIFY_API_DIR": str(api), "FLASK_APP": str(app_file),
                "DIFY_ACCEPTANCE_URL": dify.database_url(env)})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flask", "db", "upgrade", "--sql"], env=env,
                          capture_output=True, text=True, cwd=str(api), timeout=1800)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        # Dify's env.py logs the URL with its password in offline mode: mask it
        sys.stderr.write(re.sub(r"://([^:/@\s]+):[^@\s]*@", r"://\1:***@",
                                proc.stderr[-3000:]))
    return seconds, proc.returncode, proc.stdout


def summary(kind: str, r: Dict[str, Any], revisions: int) -> str:
    if "median_seconds" not in r:
        return f"{kind}: failed ({r})"
    lines = [f"{kind} {r['server']['version']}: planned {r['planned']}/{revisions} offline "
             f"({r['statements']} statements; squawk {r['squawk']})"]
    for n in r["not_planned"]:
        lines.append(f"  not planned {n['revision']} ({n['message']}): {n['reason']}")
    lv = r["findings_by_level"]
    lines.append(f"  findings: {lv.get('risky', 0)} risky, {lv.get('warning', 0)} warning, "
                 f"{lv.get('info', 0)} info")
    lines.append("  top rules: " + ", ".join(f"{t['rule']} ({t['source']}, {t['level']}) "
                                             f"{t['count']}" for t in r["top_rules"]))
    if r["rules_above_info"]:
        lines.append("  above info: " + ", ".join(
            f"{t['rule']} ({t['source']}, {t['level']}) {t['count']}"
            for t in r["rules_above_info"]))
    med = r["median_seconds"]
    lines.append(f"  median: plan {med['plan']:.2f} s vs flask db upgrade --sql "
                 f"{med['alembic_sql']:.2f} s ({r['alembic_sql_revisions']} revisions) = "
                 f"{r['ratio_plan_over_alembic_sql']:.2f}x")
    if "rehearsed" in r:
        lines.append(f"  rehearsal: {r['rehearsed']}/{revisions} planned "
                     f"({r['rehearsal_statements_with_locks']} statements with locks taken), "
                     f"{med['rehearse']:.2f} s = {r['ratio_rehearse_over_alembic_sql']:.2f}x "
                     "flask db upgrade --sql")
        for n in r["rehearsal_not_planned"]:
            lines.append(f"  not rehearsed {n['revision']}: {n['reason']}")
    return "\n".join(lines)


def _git_head(api: Path) -> Optional[str]:
    proc = subprocess.run(["git", "-C", str(api), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def machine_facts() -> Dict[str, object]:
    import platform

    import alembic
    import sqlalchemy

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "sqlalchemy": sqlalchemy.__version__, "alembic": alembic.__version__}


if __name__ == "__main__":
    sys.exit(main())
