"""Acceptance run on a real Dify api tree (see scripts/dify-acceptance.sh; not part of the suite).

On throwaway PostgreSQL and MariaDB (the test suite's own servers, tests/servers.py), with
Dify's own DB_* variables and ``--preset dify --app-root DIR``:

  empty -> head, no-op, verify, doctor, 8 concurrent runners on another empty database;
  then the same empty -> head and no-op with ``flask db upgrade`` through a minimal
  Flask-Migrate app (no Dify app factory), for timing.

Prints one table; exits 1 if any migrategate step did not give the expected result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import servers  # noqa: E402  (tests/servers.py)

RUNNERS = 8
Row = Tuple[str, str, str, str, str]  # backend, step, tool, seconds, result

MINIMAL_APP = textwrap.dedent('''
    """Flask-Migrate over Dify's migrations without Dify's app factory (timing baseline)."""
    import os
    import sys

    from flask import Flask
    from flask_migrate import Migrate
    from flask_sqlalchemy import SQLAlchemy

    API = os.environ["DIFY_API_DIR"]
    sys.path.insert(0, API)
    app = Flask("dify_minimal")
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DIFY_ACCEPTANCE_URL"]
    db = SQLAlchemy(app)
    Migrate(app, db, directory=os.path.join(API, "migrations"))
''')


def dify_env(url: str, api: Path) -> Dict[str, str]:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "MIGRATEGATE_"))}
    env.update({
        "DB_TYPE": "postgresql" if u.get_backend_name() == "postgresql" else "mysql",
        "DB_HOST": u.host, "DB_PORT": str(u.port), "DB_USERNAME": u.username,
        "DB_PASSWORD": u.password or "", "DB_DATABASE": u.database,
        "PYTHONPATH": str(ROOT / "src"),
    })
    return env


def migrategate(api: Path, env: Dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "migrategate", *args, "--preset", "dify", "--app-root", str(api),
         "--json", "--termination-log", ""],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def timed(api: Path, env: Dict[str, str], *args: str) -> Tuple[float, int, Dict]:
    started = time.monotonic()
    proc = migrategate(api, env, *args)
    out, err = proc.communicate(timeout=1800)
    seconds = time.monotonic() - started
    try:
        report = json.loads(out)
    except ValueError:
        report = {"outcome": "no-json", "message": err.strip().splitlines()[-1:] or ""}
    return seconds, proc.returncode, report


def flask_upgrade(api: Path, url: str, app_file: Path) -> Tuple[float, int]:
    from migrategate.presets import dify

    env = dify_env(url, api)
    env.update({"DIFY_API_DIR": str(api), "FLASK_APP": str(app_file),
                # exactly the URL Dify's api would build from these DB_* variables
                "DIFY_ACCEPTANCE_URL": dify.database_url(env)})
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], env=env,
                          capture_output=True, text=True, cwd=str(api), timeout=1800)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
    return time.monotonic() - started, proc.returncode


def run_backend(kind: str, server: "servers.Server", api: Path, app_file: Path) -> List[Row]:
    rows: List[Row] = []

    def row(step: str, tool: str, seconds: float, result: str) -> None:
        rows.append((kind, step, tool, f"{seconds:.2f}", result))
        print(f"  {kind:10} {step:22} {tool:18} {seconds:7.2f}  {result}", flush=True)

    url = servers.create_database(server, "dify")
    env = dify_env(url, api)
    revisions = len(list((api / "migrations" / "versions").glob("*.py")))
    for step, args, want, applied_want in (
            ("empty -> head", ["upgrade"], "verified", revisions),
            ("no-op", ["upgrade"], "up-to-date", 0),
            ("verify", ["verify"], "verified", 0),
            ("doctor", ["doctor"], "ok", 0)):
        seconds, code, report = timed(api, env, *args)
        applied = len(report.get("applied") or [])
        detail = f" ({applied} revisions applied)" if applied else ""
        ok = code == 0 and report.get("outcome") == want and applied == applied_want
        row(step, "migrategate", seconds,
            f"{'ok' if ok else 'FAIL'}: exit {code}, {report.get('outcome')}{detail}"
            + ("" if ok else f" — {report.get('message')}"))

    url = servers.create_database(server, "dify8")
    env = dify_env(url, api)
    started = time.monotonic()
    procs = [migrategate(api, env, "upgrade", "--lock-timeout", "1800") for _ in range(RUNNERS)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        try:
            results.append((proc.returncode, json.loads(out)))
        except ValueError:
            results.append((proc.returncode, {}))
    seconds = time.monotonic() - started
    codes = sorted(code for code, _ in results)
    appliers = [r for _, r in results if r.get("applied")]
    ok = codes == [0] * RUNNERS and len(appliers) == 1
    row(f"{RUNNERS} concurrent runners", "migrategate", seconds,
        f"{'ok' if ok else 'FAIL'}: exits {codes}; {len(appliers)} runner applied the "
        f"revisions, {RUNNERS - len(appliers)} found them applied and verified")

    url = servers.create_database(server, "difyflask")
    for step in ("empty -> head", "no-op"):
        seconds, code = flask_upgrade(api, url, app_file)
        row(step, "flask db upgrade", seconds, f"exit {code}")
    return rows


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: dify-acceptance.sh DIFY_API_DIR", file=sys.stderr)
        return 2
    api = Path(sys.argv[1]).resolve()
    if not (api / "migrations" / "env.py").exists() or not (api / "models").is_dir():
        print(f"error: {api} is not a Dify api/ directory (no migrations/env.py or models/)",
              file=sys.stderr)
        return 2
    probe = subprocess.run([sys.executable, "-c", "import models"], cwd=str(api),
                           capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        print(f"error: this Python cannot import Dify's models ({last}); use a Python "
              f">= 3.12 with Dify's dependencies (see docs/dify.md)", file=sys.stderr)
        return 2
    rows: List[Row] = []
    base = servers.session_dir()
    started = []
    with tempfile.TemporaryDirectory(prefix="dify-acceptance-") as tmp:
        app_file = Path(tmp) / "dify_minimal_app.py"
        app_file.write_text(MINIMAL_APP)
        try:
            for kind, start in (("postgresql", servers.start_postgres),
                                ("mariadb", servers.start_mariadb)):
                server = start(base / kind)
                started.append(server)
                rows += run_backend(kind, server, api, app_file)
        finally:
            for server in started:
                server.stop()
            shutil.rmtree(base, ignore_errors=True)
    print()
    print("| backend | step | tool | seconds | result |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    failed = [r for r in rows if r[2] == "migrategate" and not r[4].startswith("ok")]
    failed += [r for r in rows if r[2] != "migrategate" and r[4] != "exit 0"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
