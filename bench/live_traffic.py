"""An upgrade under live traffic: what the application's clients feel while the runner runs.

    .venv/bin/python bench/live_traffic.py [--reps 3] [--out docs]
    .venv/bin/python bench/live_traffic.py --backend mariadb [--reps 3] [--out docs]

Starts a throwaway PostgreSQL (tests/servers.py) and, for each repetition and each runner
(``alembic upgrade head`` and ``migrategate upgrade --pg-lock-timeout 0.05 --lock-retries 40``,
alternating which goes first), on a fresh database:

1. a table ``accounts`` (1000 rows) made by revision ``l001``, applied beforehand with Alembic;
2. ``CLIENTS`` threads, each on its own connection, doing single-row UPDATEs and SELECTs on
   ``accounts`` with a 5 ms pause between requests, for the whole run, recording the start and
   latency of every request;
3. one long transaction (``application_name=report-query``): ``BEGIN; SELECT id FROM accounts
   LIMIT 1``, then ``BLOCKER_SECONDS`` of nothing, then ``COMMIT`` — it holds ACCESS SHARE on
   ``accounts`` all that time, as a report query or a stuck worker would;
4. half a second into the blocker, the runner applies revision ``l002``:
   ``op.add_column("accounts", ...)``, which needs ACCESS EXCLUSIVE on ``accounts``.

Per run it reports, over the requests that overlapped the runner's lifetime: the clients'
longest stall (slowest request), p99 latency, whether the migration completed (exit 0 and the
column exists), and how long after the blocker's COMMIT the runner exited.

Then empty -> head on bench/measure.py's synthetic chains with the retry flags and nothing
blocking, against plain ``migrategate upgrade``, interleaved: wall-time and CPU-time ratios
of medians, and the statements the server executed for each (``log_statement``).

Writes ``<out>/live_traffic.json`` and ``<out>/live_traffic.png``. Not part of the test
suite: wall-clock numbers belong here, not in assertions.

``--backend mariadb`` runs the same scenario on a throwaway MariaDB (tests/servers.py), with
PyMySQL connections (one per client thread): ``alembic upgrade head`` against ``migrategate
upgrade --mysql-lock-wait-timeout 1 --lock-retries 40``. There the blocker's ``BEGIN; SELECT
id FROM accounts LIMIT 1`` holds a shared metadata lock on ``accounts`` until its COMMIT; the
ADD COLUMN waits for the exclusive metadata lock, and every later query on the table queues
behind it. No chain overhead part on MariaDB. Writes ``<out>/live_traffic_mariadb.json`` and
``<out>/live_traffic_mariadb.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "bench")]

import measure  # noqa: E402  (bench/measure.py: the synthetic chains, machine facts)
import servers  # noqa: E402  (tests/servers.py)

PY = sys.executable
CLIENTS = 4
ROWS = 1000
THINK_SECONDS = 0.005
BLOCKER_SECONDS = 6.0
WARMUP_SECONDS = 1.0
RUNNER_DELAY = 0.5          # runner starts this long after the blocker took its lock
TAIL_SECONDS = 1.0
RUNNER_TIMEOUT = 60.0
# First attempt's lock_timeout and the number of retries. migrategate's schedule
# (apply.lock_timeout_for) doubles the lock timeout per attempt up to 4x the first, so a
# client can queue behind the waiting ALTER for at most 4 x 0.05 = 0.2 s per attempt: under
# the 0.3 s target with room for the client's own round trip. The pauses between attempts
# (apply.pause_before) grow 0.1 s -> 1 s, jittered; 40 retries outlast a blocker of about
# 40 s before the runner gives up (exit 6). See docs/benchmarks.md.
PG_LOCK_TIMEOUT = "0.05"
LOCK_RETRIES = "40"
# MySQL/MariaDB: lock_wait_timeout is whole seconds, at least 1; the same schedule applies
# (1 s, then 2 s, then 4 s per attempt).
MYSQL_LOCK_WAIT_TIMEOUT = "1"
BACKEND = "postgresql"      # or "mariadb" (--backend)

REV1 = '''"""accounts

Revision ID: l001
"""
import sqlalchemy as sa
from alembic import op

revision = "l001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("accounts", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("balance", sa.Integer, nullable=False, server_default="0"))
    op.execute("{insert}")


def downgrade():
    op.drop_table("accounts")
'''

REV2 = '''"""accounts.note: an ALTER on a table the application is using

Revision ID: l002
"""
import sqlalchemy as sa
from alembic import op

revision = "l002"
down_revision = "l001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("accounts", sa.Column("note", sa.Text, nullable=True))


def downgrade():
    op.drop_column("accounts", "note")
'''


# ----------------------------------------------------------------------------- project

INSERT_ROWS = {
    "postgresql": "INSERT INTO accounts (id) SELECT g FROM generate_series(1, {rows}) g",
    "mariadb": "INSERT INTO accounts (id) SELECT seq FROM seq_1_to_{rows}",  # Sequence engine
}


def write_project(root: Path) -> Path:
    mig = root / "live" / "migrations"
    (mig / "versions").mkdir(parents=True, exist_ok=True)
    (mig / "env.py").write_text(measure.ENV_PY)
    (mig / "versions" / "l001.py").write_text(
        REV1.replace("{insert}", INSERT_ROWS[BACKEND]).replace("{rows}", str(ROWS)))
    (mig / "versions" / "l002.py").write_text(REV2)
    return mig


def supports_lock_retries() -> bool:
    out = subprocess.run([PY, "-m", "migrategate", "upgrade", "--help"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src"))).stdout
    return "--lock-retries" in out


def runner_flags(retries: bool) -> List[str]:
    timeout = (["--mysql-lock-wait-timeout", MYSQL_LOCK_WAIT_TIMEOUT] if BACKEND == "mariadb"
               else ["--pg-lock-timeout", PG_LOCK_TIMEOUT])
    return timeout + (["--lock-retries", LOCK_RETRIES] if retries else [])


def runner_label(kind: str, retries: bool) -> str:
    if kind == "alembic":
        return "alembic upgrade head"
    return " ".join(["migrategate upgrade", *runner_flags(retries)])


def runner_argv(kind: str, mig: Path, ini: Path, url: str, retries: bool) -> List[str]:
    if kind == "alembic":
        return [PY, "-m", "alembic", "-c", str(ini), "upgrade", "head"]
    return measure.mg("upgrade", "--database-url", url, "--migrations", str(mig),
                      *runner_flags(retries))


def connect(url: str, application_name: str):
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "mysql":  # PyMySQL; not autocommit: a SELECT opens a transaction
        import pymysql

        return pymysql.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                               database=u.database, program_name=application_name,
                               autocommit=False)
    import psycopg2

    return psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                            dbname=u.database, application_name=application_name)


# ----------------------------------------------------------------------------- one run

class Clients:
    """CLIENTS threads of short single-row requests; every request's (start, latency)."""

    def __init__(self, url: str, t0: float) -> None:
        self.url, self.t0 = url, t0
        self.stop = threading.Event()
        self.samples: List[Tuple[float, float, str]] = []
        self.errors: List[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(CLIENTS)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def _run(self, i: int) -> None:
        rnd = random.Random(i)
        conn = connect(self.url, f"client-{i}")
        if BACKEND == "mariadb":
            conn.autocommit(True)
        else:
            conn.autocommit = True
        cur = conn.cursor()
        local: List[Tuple[float, float, str]] = []
        try:
            n = 0
            while not self.stop.is_set():
                key = rnd.randint(1, ROWS)
                kind = "update" if n % 2 == 0 else "select"
                start = time.perf_counter()
                if kind == "update":
                    cur.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s",
                                (key,))
                else:
                    cur.execute("SELECT balance FROM accounts WHERE id = %s", (key,))
                    cur.fetchone()
                local.append((start - self.t0, time.perf_counter() - start, kind))
                n += 1
                time.sleep(THINK_SECONDS)
        except driver_errors() as exc:  # recorded and reported with the results
            self.errors.append(f"client-{i}: {type(exc).__name__}: {exc}")
        finally:
            conn.close()
            with self._lock:
                self.samples.extend(local)


def driver_errors() -> Tuple[type, ...]:
    if BACKEND == "mariadb":
        import pymysql

        return (pymysql.Error,)
    import psycopg2

    return (psycopg2.Error,)


def blocker(url: str, t0: float, marks: Dict[str, float]) -> None:
    conn = connect(url, "report-query")
    cur = conn.cursor()
    if BACKEND == "mariadb":  # the SELECT below then holds a shared metadata lock
        cur.execute("BEGIN")
    cur.execute("SELECT id FROM accounts LIMIT 1")  # opens the transaction: ACCESS SHARE
    cur.fetchone()
    marks["blocker_start"] = time.perf_counter() - t0
    time.sleep(BLOCKER_SECONDS)
    conn.commit()
    marks["blocker_end"] = time.perf_counter() - t0
    conn.close()


def has_column(url: str) -> bool:
    conn = connect(url, "bench-check")
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM information_schema.columns WHERE "
                    "table_name = 'accounts' AND column_name = 'note'"
                    + (" AND table_schema = DATABASE()" if BACKEND == "mariadb" else ""))
        return cur.fetchone()[0] == 1
    finally:
        conn.close()


def one_run(pg, root: Path, mig: Path, kind: str, retries: bool) -> Dict:
    url = servers.create_database(pg, "live")
    ini = measure.alembic_ini(root, mig, url)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run([PY, "-m", "alembic", "-c", str(ini), "upgrade", "l001"], env=env,
                   check=True, capture_output=True)
    argv = runner_argv(kind, mig, ini, url, retries)
    t0 = time.perf_counter()
    clients = Clients(url, t0)
    clients.start()
    time.sleep(WARMUP_SECONDS)
    marks: Dict[str, float] = {}
    block = threading.Thread(target=blocker, args=(url, t0, marks), daemon=True)
    block.start()
    while "blocker_start" not in marks and block.is_alive():
        time.sleep(0.005)
    time.sleep(RUNNER_DELAY)
    runner_start = time.perf_counter() - t0
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=RUNNER_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    runner_end = time.perf_counter() - t0
    block.join(timeout=BLOCKER_SECONDS + 30)
    time.sleep(TAIL_SECONDS)
    clients.join()
    samples = sorted(clients.samples)
    during = [lat for s, lat, _ in samples if s < runner_end and s + lat > runner_start]
    before = [lat for s, lat, _ in samples if s + lat < marks["blocker_start"]]
    retry_lines = [ln for ln in err.splitlines() if re.search(r"waiting for a lock", ln)]
    return {
        "runner": kind, "label": runner_label(kind, retries),
        "exit": proc.returncode, "column_added": has_column(url),
        "completed": proc.returncode == 0 and has_column(url),
        "runner_start": runner_start, "runner_end": runner_end,
        "blocker_start": marks["blocker_start"], "blocker_end": marks.get("blocker_end"),
        "exited_after_blocker_end": runner_end - marks["blocker_end"],
        "requests_during": len(during),
        "longest_stall": max(during) if during else None,
        "p99_during": quantile(during, 0.99),
        "p50_during": quantile(during, 0.50),
        "p99_before": quantile(before, 0.99),
        "retry_log_lines": len(retry_lines),
        "retry_log_sample": retry_lines[:2] + retry_lines[-1:] if retry_lines else [],
        "stderr_tail": err.strip().splitlines()[-3:],
        "client_errors": clients.errors,
        "samples": [[round(s, 4), round(lat, 5)] for s, lat, _ in samples],
    }


def quantile(xs: List[float], q: float) -> Optional[float]:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ----------------------------------------------------------------------------- overhead

def run_timed(argv: Sequence[str]) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + system) of one run; exit 0 or raise."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[3:5]} exited {os.waitstatus_to_exitcode(status)}:\n"
                           f"{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def chain_overhead(pg, root: Path, sizes: Sequence[Tuple[int, int]],
                   retries: bool) -> Dict[str, Dict]:
    """empty -> head with the retry flags vs plain, interleaved in pairs.

    Reports the ratio of the medians, the median of the per-pair ratios (each pair ran
    back to back, so it saw about the same machine load) and the ratio of the runner's
    median CPU time, which the load of other processes disturbs much less than wall time.
    """
    out: Dict[str, Dict] = {}
    flags = runner_flags(retries)
    for n, reps in sizes:
        mig = measure.write_chain(root, n)
        wall: Dict[str, List[float]] = {"plain": [], "retries": []}
        cpu: Dict[str, List[float]] = {"plain": [], "retries": []}
        for rep in range(reps):
            order = [("plain", []), ("retries", flags)]
            for key, extra in (order if rep % 2 == 0 else order[::-1]):
                url = servers.create_database(pg)
                argv = measure.mg("upgrade", "--database-url", url, "--migrations", str(mig),
                                  *extra)
                w, c = run_timed(argv)
                wall[key].append(w)
                cpu[key].append(c)
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        pairs = statistics.median(r / p for p, r in zip(wall["plain"], wall["retries"]))
        out[str(n)] = {"plain": med["plain"], "retries": med["retries"],
                       "ratio": med["retries"] / med["plain"], "pair_ratio_median": pairs,
                       "cpu_plain": med_cpu["plain"], "cpu_retries": med_cpu["retries"],
                       "cpu_ratio": med_cpu["retries"] / med_cpu["plain"],
                       "wall_runs": wall, "cpu_runs": cpu, "flags": flags, "reps": reps}
        print(f"  {n} revisions, median of {reps} interleaved: wall plain {med['plain']:.3f} s,"
              f" {' '.join(flags)} {med['retries']:.3f} s = {med['retries'] / med['plain']:.3f}×"
              f" (median pair ratio {pairs:.3f}×); runner CPU {med_cpu['plain']:.3f} s vs "
              f"{med_cpu['retries']:.3f} s = {med_cpu['retries'] / med_cpu['plain']:.3f}×",
              flush=True)
    return out


def statement_counts(pg, root: Path, n: int, retries: bool) -> Dict[str, int]:
    """Statements the server executed for empty -> head, plain vs with the retry flags.

    ``log_statement = all`` on each database (set before the runner connects); the lines the
    server log gained during the run are that run's statements (nothing else runs then).
    """
    mig = measure.write_chain(root, n)
    admin = connect(pg.url(), "bench-admin")
    admin.autocommit = True
    counts: Dict[str, int] = {}
    for key, extra in (("plain", []), ("retries", runner_flags(retries))):
        url = servers.create_database(pg, "stmts")
        from sqlalchemy.engine import make_url

        admin.cursor().execute(f'ALTER DATABASE "{make_url(url).database}" '
                               "SET log_statement = 'all'")
        before = pg.log.read_text(errors="replace").count("statement: ")
        run_timed(measure.mg("upgrade", "--database-url", url, "--migrations", str(mig),
                             *extra))
        time.sleep(0.5)  # the logging collector is asynchronous to the client
        counts[key] = pg.log.read_text(errors="replace").count("statement: ") - before
    admin.close()
    counts["revisions"] = n
    print(f"  statements for {n} revisions: plain {counts['plain']}, with "
          f"{' '.join(runner_flags(retries))} {counts['retries']} "
          f"(+{(counts['retries'] - counts['plain']) / n:.1f} per revision)", flush=True)
    return counts


# ----------------------------------------------------------------------------- report

def summarize(runs: List[Dict]) -> Dict[str, Dict]:
    out: Dict[str, Dict] = {}
    for kind in ("alembic", "migrategate"):
        rs = [r for r in runs if r["runner"] == kind]
        done = [r for r in rs if r["completed"]]
        out[kind] = {
            "runs": len(rs), "completed": len(done),
            "longest_stall_median": statistics.median(r["longest_stall"] for r in rs),
            "longest_stall_max": max(r["longest_stall"] for r in rs),
            "p99_median": statistics.median(r["p99_during"] for r in rs),
            "p99_before_median": statistics.median(r["p99_before"] for r in rs),
            "exited_after_blocker_end_median":
                statistics.median(r["exited_after_blocker_end"] for r in done) if done else None,
            "retry_log_lines_median": statistics.median(r["retry_log_lines"] for r in rs),
        }
    return out


def table(summary: Dict[str, Dict], runs: List[Dict]) -> str:
    lines = ["| runner | completed | clients' longest stall (median / worst run) | "
             "p99 while it ran (median) | p99 before the blocker | exited after the "
             "blocker ended (median) | retry lines (median) |",
             "|---|---|---|---|---|---|---|"]
    for kind, s in summary.items():
        after = s["exited_after_blocker_end_median"]
        lines.append(
            f"| `{next(r['label'] for r in runs if r['runner'] == kind)}` | "
            f"{s['completed']}/{s['runs']} | "
            f"{s['longest_stall_median']:.2f} s / {s['longest_stall_max']:.2f} s | "
            f"{s['p99_median'] * 1000:.0f} ms | {s['p99_before_median'] * 1000:.1f} ms | "
            f"{'—' if after is None else f'{after:.2f} s'} | {s['retry_log_lines_median']:.0f} |")
    return "\n".join(lines)


def chart(runs: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["alembic", "migrategate"]
    # the first repetition of each runner (the JSON holds every run's samples)
    picked = [next(r for r in runs if r["runner"] == k) for k in kinds]
    fig, axes = plt.subplots(2, 1, figsize=(8, 5.6), dpi=120, sharex=True, sharey=True)
    for ax, r in zip(axes, picked):
        b0 = r["blocker_start"]
        xs = [s - b0 for s, _ in r["samples"]]
        ys = [max(lat, 1e-4) for _, lat in r["samples"]]
        held = "shared metadata lock" if BACKEND == "mariadb" else "ACCESS SHARE"
        ax.axvspan(0, r["blocker_end"] - b0, color="tab:orange", alpha=0.18,
                   label=f"long transaction ({BLOCKER_SECONDS:.0f} s, {held})")
        ax.axvspan(r["runner_start"] - b0, r["runner_end"] - b0, ymin=0, ymax=0.04,
                   color="tab:blue", alpha=0.7, label="runner running")
        ax.scatter(xs, ys, s=3, color="black", label=f"client requests ({CLIENTS} clients)")
        ax.set_yscale("log")
        ax.set_ylabel("request latency (s)")
        outcome = "completed" if r["completed"] else f"exit {r['exit']}"
        ax.set_title(f"{r['label']} — longest stall {r['longest_stall']:.2f} s, {outcome}",
                     fontsize=10)
        target = 1.2 if BACKEND == "mariadb" else 0.3
        ax.axhline(target, color="tab:red", lw=0.8, ls="--", label=f"{target} s")
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].set_xlabel("seconds since the long transaction took its lock")
    server = " (MariaDB)" if BACKEND == "mariadb" else ""
    fig.suptitle("Single-row requests while an ADD COLUMN waits behind a long transaction"
                 + server, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def mariadb_version() -> str:
    return subprocess.run([servers._need("mariadbd", "mariadb-server-core"), "--version"],
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    global BACKEND, BLOCKER_SECONDS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", choices=("postgresql", "mariadb"), default="postgresql",
                    help="the server to measure on (default postgresql; mariadb: the traffic "
                         "runs only, no chain overhead)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per runner (default 3)")
    ap.add_argument("--chain-reps", type=int, default=15,
                    help="runs per chain size for the overhead ratio (default 15)")
    ap.add_argument("--skip-traffic", action="store_true",
                    help="only the overhead measures (statements, chains)")
    ap.add_argument("--blocker-seconds", type=float, default=BLOCKER_SECONDS,
                    help=f"how long the long transaction holds its lock "
                         f"(default {BLOCKER_SECONDS:.0f})")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="where the JSON and PNG go")
    ap.add_argument("--replot", action="store_true",
                    help="redraw <out>/live_traffic.png from <out>/live_traffic.json and exit")
    args = ap.parse_args()
    BACKEND = args.backend
    BLOCKER_SECONDS = args.blocker_seconds
    stem = "live_traffic" if BACKEND == "postgresql" else f"live_traffic_{BACKEND}"
    if args.replot:
        saved = json.loads((Path(args.out) / f"{stem}.json").read_text())
        chart(saved["runs"], Path(args.out) / f"{stem}.png")
        print(table(saved["summary"], saved["runs"]))
        return
    retries = supports_lock_retries()
    if not retries:
        print("note: this migrategate has no --lock-retries; measuring plain "
              "--pg-lock-timeout (which fails fast, exit 6)", flush=True)
    root = servers.session_dir()
    if BACKEND == "mariadb":
        pg = servers.start_mariadb(root / "mariadb")
    else:
        pg = servers.start_postgres(root / "pg")
    mig = write_project(root)
    runs: List[Dict] = []
    results: Dict = {"machine": measure.machine(), "load_before": os.getloadavg(),
                     "settings": {"clients": CLIENTS, "rows": ROWS, "think_s": THINK_SECONDS,
                                  "blocker_s": BLOCKER_SECONDS, "runner_delay_s": RUNNER_DELAY,
                                  "pg_lock_timeout": PG_LOCK_TIMEOUT,
                                  "lock_retries": LOCK_RETRIES if retries else None}}
    if BACKEND == "mariadb":
        results["machine"]["mariadb"] = mariadb_version()
        results["settings"].pop("pg_lock_timeout")
        results["settings"].update(backend="mariadb",
                                   mysql_lock_wait_timeout=MYSQL_LOCK_WAIT_TIMEOUT,
                                   runner_flags=runner_flags(retries))
    try:
        for rep in range(0 if args.skip_traffic else args.reps):
            order = ["alembic", "migrategate"] if rep % 2 == 0 else ["migrategate", "alembic"]
            for kind in order:
                r = one_run(pg, root, mig, kind, retries)
                runs.append(r)
                print(f"rep {rep + 1} {kind:12} exit {r['exit']} completed={r['completed']} "
                      f"longest stall {r['longest_stall']:.3f} s p99 {r['p99_during']:.3f} s "
                      f"exited {r['exited_after_blocker_end']:+.2f} s after the blocker "
                      f"ended, {r['retry_log_lines']} retry lines", flush=True)
                for e in r["client_errors"]:
                    print(f"  client error: {e}", flush=True)
        if BACKEND == "postgresql":
            print("empty -> head on the synthetic chains, nothing blocking:", flush=True)
            results["statements"] = statement_counts(pg, root, 50, retries)
            results["chain_overhead"] = chain_overhead(
                pg, root, [(200, args.chain_reps), (800, args.chain_reps)], retries)
    finally:
        pg.stop()
    results["load_after"] = os.getloadavg()
    if not runs:
        print("(--skip-traffic: nothing written)")
        return
    results["summary"] = summarize(runs)
    results["runs"] = runs
    keep = {id(next(r for r in runs if r["runner"] == k)) for k in ("alembic", "migrategate")}
    for r in runs:  # every request only for the runs the picture shows (size of the file)
        if id(r) not in keep:
            r["samples"] = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, separators=(",", ":")))
    try:
        chart(runs, out / f"{stem}.png")
    except ModuleNotFoundError as exc:  # matplotlib: pip install -e '.[bench]'
        print(f"no picture ({exc}); the JSON holds every figure", flush=True)
    print(table(results["summary"], runs))
    print(f"load average before / after: {results['load_before']} / {results['load_after']}")


if __name__ == "__main__":
    main()
