"""Upgrade a Dify database that has data: an older Dify release's schema, seeded, to a newer one.

Acceptance run on real Dify api trees (opt-in, not part of the test suite). Usage:

    /path/to/python3.12 scripts/dify_upgrade_acceptance.py OLD_API NEW_API
        [--old-commit SHA] [--new-commit SHA] [--backends postgresql,mariadb]
        [--scale 1.0] [--reps 1] [--no-live] [--out docs]

OLD_API and NEW_API are Dify ``api/`` trees (e.g. ``git archive`` of two release commits);
the Python must be able to ``import models`` in both (Dify's dependencies, Python >= 3.12, plus
SQLAlchemy, Alembic, Flask-Migrate, psycopg2 and PyMySQL; see docs/dify.md). migrategate runs
from this checkout's src/. On a throwaway PostgreSQL and a throwaway MariaDB (tests/servers.py),
with Dify's own DB_* variables (scripts/dify_acceptance.py: dify_env, timed, MINIMAL_APP):

1. a database is brought to the OLD release's head with
   ``migrategate upgrade --preset dify --app-root OLD_API``;
2. it is seeded through SQL, deterministically (fixed random seed, ids chosen here), with
   accounts, tenants, tenant_account_joins, apps, conversations and messages (2,000 / 200 /
   2,000 / 1,000 / 5,000 / 50,000 rows at --scale 1; columns the old release fills with a
   DEFAULT are left to it), and the row count and a SHA-256 of the sorted primary keys of each
   table are recorded;
3. the same database is re-created identically (same seed; the counts and checksums are
   checked equal) for each upgrade: one copy goes to the NEW release with
   ``migrategate upgrade --preset dify --app-root NEW_API``, another with ``flask db upgrade``
   through the minimal Flask-Migrate app (no Dify app factory); both timed as the wall clock
   of the whole command (order alternates between repetitions);
4. after migrategate: exit 0, ``migrategate verify --preset dify`` exit 0, and every seeded
   row still there (same counts, same PK checksums); the flask copy is checked the same way;
5. live client (skip with --no-live): on a third copy, the same migrategate upgrade with
   ``--lock-retries 5 --pg-lock-timeout 0.5`` (PostgreSQL) or ``--lock-retries 5
   --mysql-lock-wait-timeout 1`` (MariaDB) while a thread inserts a row into ``messages``
   every ~3 ms on its own autocommit connection; reports its inserts, errors, longest gap
   between two successful inserts and slowest insert, and checks that every seeded and every
   inserted row is there afterwards.

Writes ``<out>/dify_upgrade.json`` (commits, versions, heads, counts, checksums, durations,
ratios migrategate / flask, live-client figures, load average at start and end, date) and
prints a summary. Exits 1 if a migrategate step or a check failed.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "scripts")]

import dify_acceptance as acc  # noqa: E402  (scripts/dify_acceptance.py)
import servers  # noqa: E402  (tests/servers.py)

TABLES = ("accounts", "tenants", "tenant_account_joins", "apps", "conversations", "messages")
BASE_COUNTS = {"accounts": 2000, "tenants": 200, "apps": 1000, "conversations": 5000,
               "messages": 50000}
SEED = 20251126
LIVE_INTERVAL = 0.003


# ---------------------------------------------------------------- connections and SQL


def dbapi_connect(url: str):
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        import psycopg2

        conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                                dbname=u.database)
    else:
        import pymysql

        conn = pymysql.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                               database=u.database, charset="utf8mb4")
    return conn


def bulk_insert(conn, table: str, cols: Sequence[str], rows: List[Tuple]) -> None:
    cur = conn.cursor()
    collist = ", ".join(cols)
    if conn.__class__.__module__.startswith("psycopg2"):
        from psycopg2.extras import execute_values

        execute_values(cur, f"INSERT INTO {table} ({collist}) VALUES %s", rows, page_size=1000)
    else:
        marks = ", ".join(["%s"] * len(cols))
        for i in range(0, len(rows), 1000):  # PyMySQL rewrites this into multi-row INSERTs
            cur.executemany(f"INSERT INTO {table} ({collist}) VALUES ({marks})",
                            rows[i:i + 1000])
    cur.close()


def seed(url: str, scale: float) -> Dict[str, int]:
    """Deterministic, realistic-looking rows; returns rows inserted per table."""
    rnd = random.Random(SEED)

    def uid() -> str:
        return str(uuid.UUID(int=rnd.getrandbits(128), version=4))

    def ts(days_back: int) -> datetime.datetime:
        return (datetime.datetime(2025, 11, 20, 12, 0, 0)
                - datetime.timedelta(days=rnd.randint(0, days_back), seconds=rnd.randint(0, 86399)))

    n = {k: max(1, int(v * scale)) for k, v in BASE_COUNTS.items()}
    langs = ["en-US", "zh-Hans", "ja-JP", "de-DE", "fr-FR", "pt-BR"]
    first = ["Ada", "Lin", "Sam", "Noor", "Kenji", "Maria", "Olu", "Priya", "Jon", "Mei"]
    last = ["Lovelace", "Chen", "Okafor", "Suzuki", "Garcia", "Iyer", "Berg", "Haddad"]

    tenants = [(uid(), f"{rnd.choice(last)}'s Workspace {i}",
                "-----BEGIN PUBLIC KEY-----\n" + hashlib.sha256(f"t{i}".encode()).hexdigest()
                * 6 + "\n-----END PUBLIC KEY-----",
                rnd.choice(["sandbox", "professional", "team"]))
               for i in range(n["tenants"])]
    accounts = []
    for i in range(n["accounts"]):
        name = f"{rnd.choice(first)} {rnd.choice(last)}"
        login = ts(120)
        accounts.append((uid(), name, f"user{i:05d}@example.{rnd.choice(['com', 'org', 'io'])}",
                         hashlib.sha256(f"pw{i}".encode()).hexdigest(),
                         hashlib.md5(f"salt{i}".encode()).hexdigest(),
                         rnd.choice(langs), rnd.choice(["light", "dark"]),
                         rnd.choice(["UTC", "Asia/Shanghai", "Europe/Berlin", "America/New_York"]),
                         login, f"10.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}",
                         login - datetime.timedelta(days=rnd.randint(0, 300))))
    joins = []
    members: Dict[int, List[str]] = {}
    for i, a in enumerate(accounts):
        t = i % len(tenants)
        owner = members.setdefault(t, [])
        role = "owner" if not owner else rnd.choice(["admin", "editor", "normal", "normal"])
        joins.append((uid(), tenants[t][0], a[0], role, owner[0] if owner else None, True))
        owner.append(a[0])
    modes = ["chat", "completion", "advanced-chat", "agent-chat", "workflow"]
    apps = []
    for i in range(n["apps"]):
        t = i % len(tenants)
        creator = rnd.choice(members.get(t) or [accounts[0][0]])
        apps.append((uid(), tenants[t][0], f"Assistant {i}", rnd.choice(modes), "🤖",
                     "#FFEAD5", rnd.random() < 0.8, rnd.random() < 0.5,
                     f"Answers questions about product area {i % 37}.", creator, creator,
                     "emoji"))
    convs = []
    for i in range(n["conversations"]):
        app = apps[i % len(apps)]
        acct = rnd.choice(members.get(i % len(tenants)) or [accounts[0][0]])
        convs.append((uid(), app[0], app[3], f"Conversation {i}", json.dumps({"topic": i % 11}),
                      "normal", rnd.choice(["console", "api"]), acct,
                      rnd.choice(["web-app", "service-api", "explore", "debugger"]),
                      rnd.randint(0, 40), "openai", rnd.choice(["gpt-4o", "gpt-4o-mini"])))
    msgs = []
    for i in range(n["messages"]):
        conv = convs[i % len(convs)]
        q = f"How do I configure feature {i % 97} for team {i % 13}?"
        mt, at = rnd.randint(10, 900), rnd.randint(20, 1500)
        up = decimal.Decimal("0.0025")
        msgs.append((uid(), conv[1], conv[0], json.dumps({"lang": "en"}), q,
                     json.dumps([{"role": "user", "text": q}]), mt, up,
                     f"Open Settings > Feature {i % 97} and enable it for team {i % 13}.",
                     at, decimal.Decimal("0.0100"), round(rnd.uniform(0.2, 9.0), 3),
                     decimal.Decimal(mt) * up / 1000 + decimal.Decimal(at) * decimal.Decimal(
                         "0.0100") / 1000, "USD", conv[6], conv[7], conv[8], conv[11],
                     conv[10], conv[2]))
    conn = dbapi_connect(url)
    try:
        bulk_insert(conn, "tenants", ["id", "name", "encrypt_public_key", "plan"], tenants)
        bulk_insert(conn, "accounts", ["id", "name", "email", "password", "password_salt",
                                       "interface_language", "interface_theme", "timezone",
                                       "last_login_at", "last_login_ip", "initialized_at"],
                    accounts)
        bulk_insert(conn, "tenant_account_joins", ["id", "tenant_id", "account_id", "role",
                                                   "invited_by", '"current"' if
                                                   conn.__class__.__module__.startswith(
                                                       "psycopg2") else "`current`"], joins)
        bulk_insert(conn, "apps", ["id", "tenant_id", "name", "mode", "icon",
                                   "icon_background", "enable_site", "enable_api",
                                   "description", "created_by", "updated_by", "icon_type"], apps)
        bulk_insert(conn, "conversations", ["id", "app_id", "mode", "name", "inputs", "status",
                                            "from_source", "from_account_id", "invoke_from",
                                            "dialogue_count", "model_provider", "model_id"],
                    convs)
        bulk_insert(conn, "messages", ["id", "app_id", "conversation_id", "inputs", "query",
                                       "message", "message_tokens", "message_unit_price",
                                       "answer", "answer_tokens", "answer_unit_price",
                                       "provider_response_latency", "total_price", "currency",
                                       "from_source", "from_account_id", "invoke_from",
                                       "model_id", "model_provider", "app_mode"], msgs)
        conn.commit()
    finally:
        conn.close()
    return {"accounts": len(accounts), "tenants": len(tenants),
            "tenant_account_joins": len(joins), "apps": len(apps),
            "conversations": len(convs), "messages": len(msgs)}


def table_ids(url: str, table: str) -> List[str]:
    conn = dbapi_connect(url)
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT id FROM {table}")
        return sorted(str(r[0]).lower() for r in cur.fetchall())
    finally:
        conn.close()


def snapshot(url: str) -> Dict[str, Dict[str, Any]]:
    out = {}
    for t in TABLES:
        ids = table_ids(url, t)
        out[t] = {"rows": len(ids),
                  "pk_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    return out


def head(url: str) -> Optional[str]:
    conn = dbapi_connect(url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT version_num FROM alembic_version")
        rows = cur.fetchall()
        return ",".join(sorted(r[0] for r in rows)) if rows else None
    finally:
        conn.close()


# ---------------------------------------------------------------- live client


class LiveClient(threading.Thread):
    """Inserts one message every LIVE_INTERVAL seconds on its own autocommit connection."""

    def __init__(self, url: str, app_id: str, conversation_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.app_id, self.conversation_id = url, app_id, conversation_id
        self.stop_event = threading.Event()
        self.inserted: List[str] = []
        self.done_at: List[float] = []
        self.latencies: List[float] = []
        self.errors: List[str] = []

    def run(self) -> None:
        conn = dbapi_connect(self.url)
        conn.autocommit(True) if callable(getattr(conn, "autocommit", None)) else \
            setattr(conn, "autocommit", True)
        cur = conn.cursor()
        sql = ("INSERT INTO messages (id, app_id, conversation_id, inputs, query, message, "
               "message_unit_price, answer, answer_unit_price, currency, from_source) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
        n = 0
        while not self.stop_event.is_set():
            n += 1
            mid = str(uuid.uuid4())
            started = time.monotonic()
            try:
                cur.execute(sql, (mid, self.app_id, self.conversation_id, "{}",
                                  f"live question {n}", '[{"role": "user"}]', "0.0025",
                                  f"live answer {n}", "0.0100", "USD", "api"))
                end = time.monotonic()
                self.inserted.append(mid)
                self.done_at.append(end)
                self.latencies.append(end - started)
            except Exception as exc:  # keep going, as an app would
                self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                try:
                    conn.rollback()
                except Exception:
                    pass
            time.sleep(LIVE_INTERVAL)
        conn.close()

    def figures(self, window: Tuple[float, float]) -> Dict[str, Any]:
        lo, hi = window
        gaps = [b - a for a, b in zip(self.done_at, self.done_at[1:]) if b >= lo and a <= hi]
        before = [b - a for a, b in zip(self.done_at, self.done_at[1:]) if b < lo]
        inside = [d for d in self.done_at if lo <= d <= hi]
        return {"inserts_total": len(self.inserted), "inserts_during_migrategate": len(inside),
                "errors": len(self.errors), "first_errors": self.errors[:3],
                "longest_stall_seconds": max(gaps) if gaps else None,
                "longest_stall_before_migrategate_seconds": max(before) if before else None,
                "slowest_insert_seconds": max(self.latencies) if self.latencies else None,
                "median_insert_seconds": statistics.median(self.latencies)
                if self.latencies else None}


# ---------------------------------------------------------------- the run


def run_backend(kind: str, server: "servers.Server", old: Path, new: Path, app_file: Path,
                scale: float, reps: int, live: bool, failed: List[str]) -> Dict[str, Any]:
    res: Dict[str, Any] = {}

    def fail(msg: str) -> None:
        failed.append(f"{kind}: {msg}")
        print(f"  FAIL {kind}: {msg}", flush=True)

    def make_old(prefix: str) -> Tuple[str, Dict[str, Any]]:
        url = servers.create_database(server, prefix)
        seconds, code, report = acc.timed(old, acc.dify_env(url, old), "upgrade")
        if code != 0:
            raise RuntimeError(f"old release's migrations failed (exit {code}): "
                               f"{report.get('outcome')} {report.get('message')}")
        started = time.monotonic()
        inserted = seed(url, scale)
        seed_s = time.monotonic() - started
        snap = snapshot(url)
        for t, n in inserted.items():
            if snap[t]["rows"] != n:
                raise RuntimeError(f"seeded {n} rows into {t}, {snap[t]['rows']} there")
        print(f"  {kind:10} {prefix:12} old head {head(url)} in {seconds:.2f} s, seeded in "
              f"{seed_s:.2f} s", flush=True)
        return url, {"old_migrate_seconds": seconds, "seed_seconds": seed_s, "snapshot": snap}

    def check_rows(label: str, url: str, want: Dict[str, Dict[str, Any]]) -> bool:
        got = snapshot(url)
        bad = [t for t in TABLES if got[t] != want[t]]
        if bad:
            fail(f"{label}: rows changed in {bad}: "
                 + "; ".join(f"{t} {want[t]['rows']} -> {got[t]['rows']}" for t in bad))
        return not bad

    ref_url, ref = make_old("difyref")
    res["old_head"] = head(ref_url)
    res["old_migrate_seconds"] = ref["old_migrate_seconds"]
    res["seed_seconds"] = ref["seed_seconds"]
    res["seeded"] = ref["snapshot"]
    runs: Dict[str, List[float]] = {"migrategate": [], "flask": []}
    res["runs"] = []
    for rep in range(reps):
        order = ["migrategate", "flask"] if rep % 2 == 0 else ["flask", "migrategate"]
        for tool in order:
            url, copy = make_old("mg" if tool == "migrategate" else "fl")
            if copy["snapshot"] != ref["snapshot"]:
                fail(f"re-created copy for {tool} differs from the reference")
            if tool == "migrategate":
                env = acc.dify_env(url, new)
                seconds, code, report = acc.timed(new, env, "upgrade")
                applied = len(report.get("applied") or [])
                vsec, vcode, vreport = acc.timed(new, env, "verify")
                entry = {"rep": rep + 1, "tool": tool, "seconds": seconds, "exit": code,
                         "outcome": report.get("outcome"), "applied": applied,
                         "message": report.get("message"), "verify_exit": vcode,
                         "verify_outcome": vreport.get("outcome"), "verify_seconds": vsec,
                         "head_after": head(url)}
                if code != 0:
                    fail(f"migrategate upgrade --preset dify --app-root {new}: exit {code}, "
                         f"{report.get('outcome')}: {report.get('message')}")
                if vcode != 0:
                    fail(f"migrategate verify --preset dify: exit {vcode}, "
                         f"{vreport.get('outcome')}: {vreport.get('message')}")
            else:
                seconds, code = acc.flask_upgrade(new, url, app_file)
                entry = {"rep": rep + 1, "tool": tool, "seconds": seconds, "exit": code,
                         "head_after": head(url)}
                if code != 0:
                    fail(f"flask db upgrade (minimal app, {new}): exit {code}")
            entry["rows_intact"] = check_rows(f"after {tool}", url, ref["snapshot"])
            runs[tool].append(seconds)
            res["runs"].append(entry)
            print(f"  {kind:10} rep {rep + 1} {tool:12} {seconds:7.2f} s  exit {code}  "
                  f"head {entry['head_after']}  rows intact: {entry['rows_intact']}", flush=True)
    res["new_head"] = res["runs"][0]["head_after"]
    res["median_seconds"] = {k: statistics.median(v) for k, v in runs.items() if v}
    if len(res["median_seconds"]) == 2:
        res["ratio_migrategate_over_flask"] = (res["median_seconds"]["migrategate"]
                                               / res["median_seconds"]["flask"])
    if live:
        res["live"] = live_run(kind, make_old, new, ref["snapshot"], fail)
    return res


def live_run(kind: str, make_old, new: Path, seeded: Dict[str, Dict[str, Any]],
             fail) -> Dict[str, Any]:
    url, _ = make_old("live")
    conn = dbapi_connect(url)
    cur = conn.cursor()
    cur.execute("SELECT app_id, id FROM conversations ORDER BY id LIMIT 1")
    app_id, conv_id = (str(x) for x in cur.fetchone())
    conn.close()
    flags = (["--lock-retries", "5", "--pg-lock-timeout", "0.5"] if kind == "postgresql"
             else ["--lock-retries", "5", "--mysql-lock-wait-timeout", "1"])
    client = LiveClient(url, app_id, conv_id)
    client.start()
    time.sleep(1.0)
    started = time.monotonic()
    proc = acc.migrategate(new, acc.dify_env(url, new), "upgrade", *flags)
    stdout, stderr = proc.communicate(timeout=1800)
    ended = time.monotonic()
    seconds, code = ended - started, proc.returncode
    try:
        report = json.loads(stdout)
    except ValueError:
        report = {"outcome": "no-json", "message": stderr.strip().splitlines()[-1:]}
    retry_lines = [ln.strip() for ln in stderr.splitlines()
                   if re.search(r"waiting for .*\(attempt \d+/\d+\)", ln)]
    time.sleep(1.0)
    client.stop_event.set()
    client.join(timeout=60)
    vsec, vcode, vreport = acc.timed(new, acc.dify_env(url, new), "verify")
    ids = {t: table_ids(url, t) for t in TABLES}
    missing_client = len(set(client.inserted) - set(ids["messages"]))
    seeded_ok = all(
        t == "messages" or {"rows": len(ids[t]),
                            "pk_sha256": hashlib.sha256("\n".join(ids[t]).encode()).hexdigest()}
        == seeded[t] for t in TABLES)
    ref_messages = sorted(set(ids["messages"]) - set(client.inserted))
    seeded_ok = seeded_ok and hashlib.sha256(
        "\n".join(ref_messages).encode()).hexdigest() == seeded["messages"]["pk_sha256"]
    want_msgs = seeded["messages"]["rows"] + len(client.inserted)
    out = {"flags": flags, "seconds": seconds, "exit": code, "outcome": report.get("outcome"),
           "message": report.get("message"), "applied": len(report.get("applied") or []),
           "lock_retry_lines": retry_lines,
           "verify_exit": vcode, "verify_outcome": vreport.get("outcome"),
           "head_after": head(url), "client": client.figures((started, ended)),
           "messages_after": len(ids["messages"]), "messages_expected": want_msgs,
           "client_rows_missing": missing_client, "seeded_rows_intact": seeded_ok}
    print(f"  {kind:10} live         {seconds:7.2f} s  exit {code} {report.get('outcome')}; "
          f"client {out['client']}", flush=True)
    if code != 0:
        fail(f"migrategate upgrade {' '.join(flags)} under a live client: exit {code}, "
             f"{report.get('outcome')}: {report.get('message')}")
    if vcode != 0:
        fail(f"verify after the live run: exit {vcode} {vreport.get('message')}")
    if missing_client or not seeded_ok or len(ids["messages"]) != want_msgs:
        fail(f"live run rows: {missing_client} client rows missing, seeded intact {seeded_ok}, "
             f"messages {len(ids['messages'])} vs {want_msgs} expected")
    return out


def version_of(api: Path) -> Optional[str]:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (api / "pyproject.toml").read_text(), re.M)
    return m.group(1) if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old_api")
    ap.add_argument("new_api")
    ap.add_argument("--old-commit")
    ap.add_argument("--new-commit")
    ap.add_argument("--backends", default="postgresql,mariadb")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-live", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    old, new = Path(args.old_api).resolve(), Path(args.new_api).resolve()
    for api in (old, new):
        if not (api / "migrations" / "env.py").exists():
            print(f"error: {api} is not a Dify api/ directory", file=sys.stderr)
            return 2
    load_start = os.getloadavg()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    starters = {"postgresql": servers.start_postgres, "mariadb": servers.start_mariadb}
    results: Dict[str, Any] = {}
    failed: List[str] = []
    base = servers.session_dir()
    with tempfile.TemporaryDirectory(prefix="dify-upgrade-") as tmp:
        app_file = Path(tmp) / "dify_minimal_app.py"
        app_file.write_text(acc.MINIMAL_APP)
        for kind in args.backends.split(","):
            server = starters[kind](base / kind)
            try:
                results[kind] = run_backend(kind, server, old, new, app_file, args.scale,
                                            args.reps, not args.no_live, failed)
            except Exception as exc:
                failed.append(f"{kind}: {type(exc).__name__}: {exc}")
                results[kind] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  FAIL {kind}: {exc}", flush=True)
            finally:
                server.stop()
    shutil.rmtree(base, ignore_errors=True)
    import alembic
    import sqlalchemy

    result = {
        "measures": "an old Dify release's schema seeded with rows, upgraded to a newer release "
                    "by migrategate upgrade --preset dify vs flask db upgrade (minimal "
                    "Flask-Migrate app); whole-command wall clock; rows checked by count and "
                    "SHA-256 of sorted primary keys; see scripts/dify_upgrade_acceptance.py",
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "date": date,
        "old": {"api": str(old), "version": version_of(old), "commit": args.old_commit,
                "revisions": len(list((old / "migrations" / "versions").glob("*.py")))},
        "new": {"api": str(new), "version": version_of(new), "commit": args.new_commit,
                "revisions": len(list((new / "migrations" / "versions").glob("*.py")))},
        "scale": args.scale, "reps": args.reps, "seed": SEED,
        "python": sys.version.split()[0], "sqlalchemy": sqlalchemy.__version__,
        "alembic": alembic.__version__, "cpus": os.cpu_count(),
        "load_average_at_start": list(load_start), "load_average_at_end": list(os.getloadavg()),
        "backends": results, "failures": failed}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dify_upgrade.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print()
    print(f"Dify {result['old']['version']} -> {result['new']['version']}; load average "
          f"{' '.join(f'{x:.2f}' for x in load_start)} -> "
          f"{' '.join(f'{x:.2f}' for x in result['load_average_at_end'])} on {os.cpu_count()} CPUs")
    for kind, r in results.items():
        if "median_seconds" in r:
            m = r["median_seconds"]
            print(f"{kind}: migrategate {m.get('migrategate', float('nan')):.2f} s, flask "
                  f"{m.get('flask', float('nan')):.2f} s, ratio "
                  f"{r.get('ratio_migrategate_over_flask', float('nan')):.2f}")
    for f in failed:
        print(f"FAILED: {f}")
    print(f"wrote {out / 'dify_upgrade.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
