"""migrategate next to what it replaces, on the same machine, in the same run.

    .venv/bin/python bench/measure.py [--quick] [--out docs]

Starts a throwaway PostgreSQL (tests/servers.py), generates Alembic chains of 50, 200
and 800 revisions (tables, indexes, column adds, data inserts), and measures — each as
the median of several runs, and as a ratio to the baseline measured in the same run:

1. empty → head: ``migrategate upgrade`` (with its verification) vs ``alembic upgrade head``
2. no-op on an up-to-date database: the same two, plus ``migrategate verify`` and one
   ``wait`` poll (in-process, after start-up) and the connections ``wait`` holds
3. 16 and 64 concurrent runners on an empty database: wall time vs one runner (median of
   ``--concurrency-reps`` runs, default 3)
4. peak RSS of each process (``wait4`` rusage of that child alone)
5. the floor: restoring a schema-and-data dump of the migrated database
6. a Dify-shaped Flask-Migrate app whose ``models`` import takes 2 s: no-op
   ``flask db upgrade`` vs no-op ``migrategate upgrade``

Prints a table and where the empty -> head time goes (a least-squares fit over the chain
sizes, see ``breakdown``) and writes ``<out>/benchmarks.json`` and ``<out>/benchmarks.png``.
``--breakdown FILE`` prints that fit from an earlier run's JSON without measuring.
Not part of the test suite: wall-clock numbers belong here, not in assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import servers  # noqa: E402

DIFYLIKE = ROOT / "tests" / "fixtures" / "difylike"
PY = sys.executable


# ----------------------------------------------------------------------------- chains

def write_chain(root: Path, n: int) -> Path:
    """n revisions cycling through create table+index, add column, insert rows."""
    mig = root / f"chain{n}" / "migrations"
    versions = mig / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (mig / "env.py").write_text(ENV_PY)
    for k in range(1, n + 1):
        down = repr(f"b{k - 1:04d}") if k > 1 else "None"
        t = f"t{(k - 1) // 3 * 3 + 1}"
        kind = (k - 1) % 3
        if kind == 0:
            body = (f'op.create_table("{t}", sa.Column("id", sa.Integer, primary_key=True), '
                    f'sa.Column("name", sa.String(50)))\n'
                    f'    op.create_index("ix_{t}_name", "{t}", ["name"])')
        elif kind == 1:
            body = f'op.add_column("{t}", sa.Column("extra_{k}", sa.Integer, nullable=True))'
        else:
            body = (f'op.execute("INSERT INTO {t} (name) SELECT \'row\' || g '
                    f'FROM generate_series(1, 20) g")')
        (versions / f"b{k:04d}.py").write_text(
            f'"""step {k}\n\nRevision ID: b{k:04d}\n"""\n'
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f'revision = "b{k:04d}"\ndown_revision = {down}\n'
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n    {body}\n\n\ndef downgrade():\n    pass\n")
    return mig


ENV_PY = '''from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                            prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
'''


# ----------------------------------------------------------------------------- running

def run(argv: Sequence[str], env: Optional[Dict[str, str]] = None,
        cwd: Optional[Path] = None) -> Tuple[float, int]:
    """(seconds, peak RSS in KiB) of one child process; fails loudly on a non-zero exit."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    full_env.update(env or {})
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=full_env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.stderr.close() if proc.stderr else None
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{argv[:4]} exited {code}:\n{err[-2000:]}")
    return elapsed, usage.ru_maxrss


def alembic_ini(root: Path, mig: Path, url: str) -> Path:
    ini = root / f"alembic-{abs(hash(url))}.ini"
    ini.write_text(f"[alembic]\nscript_location = {mig}\nsqlalchemy.url = "
                   f"{url.replace('%', '%%')}\n")
    return ini


def mg(*args: str) -> List[str]:
    return [PY, "-m", "migrategate", *args, "--termination-log", ""]


def median(xs: List[float]) -> float:
    return statistics.median(xs)


# ----------------------------------------------------------------------------- measures

def measure_chain(pg, root: Path, n: int, reps: int) -> Dict[str, float]:
    mig = write_chain(root, n)
    out: Dict[str, List[float]] = {}

    def add(key: str, value: float) -> None:
        out.setdefault(key, []).append(value)

    for _ in range(reps):
        # alternate who goes first so neither always gets the warmer cache
        u_mg, u_al, u_st = (servers.create_database(pg) for _ in range(3))
        ini = alembic_ini(root, mig, u_al)
        pairs = [("mg_empty", mg("upgrade", "--database-url", u_mg, "--migrations", str(mig))),
                 ("al_empty", [PY, "-m", "alembic", "-c", str(ini), "upgrade", "head"]),
                 ("mg_single_empty", mg("upgrade", "--single-transaction", "--database-url",
                                        u_st, "--migrations", str(mig)))]
        for key, argv in (pairs if len(out.get("mg_empty", [])) % 2 == 0 else pairs[::-1]):
            t, rss = run(argv)
            add(key, t)
            add(key + "_rss", rss)
        for key, argv in (("mg_noop", mg("upgrade", "--database-url", u_mg, "--migrations",
                                         str(mig))),
                          ("al_noop", [PY, "-m", "alembic", "-c", str(ini), "upgrade", "head"]),
                          ("mg_verify", mg("verify", "--database-url", u_mg, "--migrations",
                                           str(mig)))):
            t, rss = run(argv)
            add(key, t)
            add(key + "_rss", rss)
        add("floor", restore_floor(pg, u_mg))
    result = {k: median(v) for k, v in out.items()}
    result["wait_poll_ms"], result["wait_connections"] = wait_poll(u_mg, mig)
    return result


def restore_floor(pg, url: str) -> float:
    """Seconds to restore a schema-and-data dump of the migrated database into an empty one."""
    from sqlalchemy.engine import make_url

    bindir = servers.pg_bindir()
    src = make_url(url)
    dst = make_url(servers.create_database(pg))
    env = dict(os.environ, PGPASSWORD=pg.password)
    common = ["-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user]
    dump = subprocess.run([f"{bindir}/pg_dump", *common, "--no-owner", src.database],
                          env=env, capture_output=True, check=True).stdout
    start = time.perf_counter()
    subprocess.run([f"{bindir}/psql", *common, "-q", "-v", "ON_ERROR_STOP=1", "-d",
                    dst.database], input=dump, env=env, capture_output=True, check=True)
    return time.perf_counter() - start


def wait_poll(url: str, mig: Path) -> Tuple[float, int]:
    """One `wait` poll after start-up (ms, median of 30), and connections a waiting gate holds."""
    from migrategate.checks import run_checks
    from migrategate.commands import _session
    from migrategate.log import Writer
    from migrategate.scripts import load_graph
    from migrategate.settings import resolve

    settings = resolve({"database_url": url, "migrations": str(mig)}, {})
    graph = load_graph(settings)
    times = []
    with _session(settings, Writer(quiet=True)) as conn:
        for _ in range(30):
            start = time.perf_counter()
            results, _ = run_checks(conn, graph, "heads")
            times.append((time.perf_counter() - start) * 1000)
            assert all(r.ok for r in results)
    return median(times), gate_connections(url, mig)


def gate_connections(url: str, mig: Path) -> int:
    """Peak backends of a `wait` polling a database that is not ready (pg_stat_activity)."""
    import sqlalchemy as sa

    from migrategate.settings import resolve

    empty = servers.create_database(PG)
    name = "bench-gate"
    proc = subprocess.Popen(mg("wait", "--database-url", empty, "--migrations", str(mig),
                               "--timeout", "3", "--interval", "0.1", "--application-name",
                               name), env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    engine = sa.create_engine(resolve({"database_url": url}, {}).url, poolclass=sa.pool.NullPool,
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        while proc.poll() is None:
            n = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE "
                                     "application_name = :n"), {"n": name}).scalar()
            peak = max(peak, n)
            time.sleep(0.02)
    engine.dispose()
    return peak


def measure_concurrency(pg, root: Path, n: int, runners: int, reps: int) -> Dict:
    """Median over ``reps`` runs of each figure; every run's figures are kept too."""
    runs = [concurrency_once(pg, root, n, runners) for _ in range(reps)]
    out: Dict = {k: median([r[k] for r in runs]) for k in runs[0]}
    out["runs"] = runs
    return out


def concurrency_once(pg, root: Path, n: int, runners: int) -> Dict[str, float]:
    mig = write_chain(root, n)
    one = run(mg("upgrade", "--database-url", servers.create_database(pg), "--migrations",
                 str(mig)))[0]
    url = servers.create_database(pg)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    start = time.perf_counter()
    procs = [subprocess.Popen(mg("upgrade", "--database-url", url, "--migrations", str(mig),
                                 "--lock-timeout", "600"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(runners)]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    assert codes == [0] * runners, codes
    # the machine's floor for this many Python processes: the same fleet on a database
    # that is already at head (each still starts, connects, reads and verifies)
    start = time.perf_counter()
    procs = [subprocess.Popen(mg("upgrade", "--database-url", url, "--migrations", str(mig)),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(runners)]
    assert [p.wait() for p in procs] == [0] * runners
    floor = time.perf_counter() - start
    return {"one": one, "many": wall, "ratio": wall / one, "fleet_noop": floor,
            "ratio_to_one_plus_fleet_floor": wall / (one + floor)}


def measure_difylike(pg, root: Path, reps: int, slow: float = 2.0) -> Dict[str, float]:
    """No-op on a Dify-shaped app whose `import models` takes `slow` seconds."""
    url = servers.create_database(pg)
    flask_script = root / "flask_db_upgrade.py"
    flask_script.write_text(FLASK_DB_UPGRADE)
    env = {"DIFYLIKE_SLOW_IMPORT_SECONDS": str(slow), "DIFYLIKE_DATABASE_URL": url}
    mg_args = mg("upgrade", "--database-url", url, "--migrations", str(DIFYLIKE / "migrations"),
                 "--app-root", str(DIFYLIKE))
    first_mg = run(mg_args, env)[0]  # empty -> head
    res: Dict[str, List[float]] = {"mg_noop": [], "flask_noop": []}
    for _ in range(reps):
        res["flask_noop"].append(run([PY, str(flask_script)], env, cwd=DIFYLIKE)[0])
        res["mg_noop"].append(run(mg_args, env)[0])
    out = {k: median(v) for k, v in res.items()}
    out["mg_empty"] = first_mg
    return out


FLASK_DB_UPGRADE = '''"""Plain `flask db upgrade` on the Dify-shaped app, as Dify runs it."""
import os, sys
sys.path.insert(0, os.getcwd())
from flask import Flask
from flask_migrate import Migrate, upgrade
from flask_sqlalchemy import SQLAlchemy
app = Flask("bench")
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DIFYLIKE_DATABASE_URL"]
db = SQLAlchemy()
db.init_app(app)
Migrate(app, db, directory=os.path.join(os.getcwd(), "migrations"))
with app.app_context():
    upgrade()
'''


def startup() -> Dict[str, float]:
    reps = [run([PY, "-m", "migrategate", "--help"])[0] for _ in range(5)]
    imp = [run([PY, "-c", "import migrategate"])[0] for _ in range(5)]
    bare = [run([PY, "-c", "pass"])[0] for _ in range(5)]
    return {"help": median(reps), "import": median(imp), "python": median(bare)}


# ----------------------------------------------------------------------------- report

def fit(xs: List[float], ys: List[float]) -> Tuple[float, float]:
    """Least-squares line through (xs, ys): (slope, intercept)."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
             / sum((x - mx) ** 2 for x in xs))
    return slope, my - slope * mx


def breakdown(results: Dict) -> Dict[str, float]:
    """Where migrategate's extra empty -> head time goes, fitted over the chain sizes.

    - one transaction per revision: the slope of (default − ``--single-transaction``);
    - the rest, per revision (progress callback and line, commit tracking): the slope of
      (``--single-transaction`` − alembic);
    - the rest, once per run (lock connection, revision read before and under the lock,
      verification, static graph read): the intercept of that same line.
    Fits of medians, not a profile: the split between components inside each term is not
    measured here.
    """
    chains = results["chains"]
    ns = sorted(int(n) for n in chains)
    per_txn, _ = fit(ns, [chains[str(n)]["mg_empty"] - chains[str(n)]["mg_single_empty"]
                          for n in ns])
    per_rev, once = fit(ns, [chains[str(n)]["mg_single_empty"] - chains[str(n)]["al_empty"]
                             for n in ns])
    return {"per_revision_transaction_ms": per_txn * 1000,
            "per_revision_other_ms": per_rev * 1000, "once_per_run_ms": once * 1000,
            "chain_sizes": ns}


def breakdown_text(b: Dict[str, float]) -> str:
    return (f"where the extra empty -> head time goes (least-squares fit over "
            f"{', '.join(map(str, b['chain_sizes']))} revisions): one transaction per "
            f"revision {b['per_revision_transaction_ms']:.2f} ms/revision; other per-revision "
            f"work {b['per_revision_other_ms']:.2f} ms/revision; once per run "
            f"{b['once_per_run_ms']:.0f} ms")


def machine() -> Dict[str, str]:
    pg_version = subprocess.run([f"{servers.pg_bindir()}/postgres", "--version"],
                                capture_output=True, text=True).stdout.strip()
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = fh.readline().split(":")[1].strip()
    except OSError:
        pass
    import alembic
    import sqlalchemy

    return {"cpus": str(os.cpu_count()), "memory": mem, "python": platform.python_version(),
            "postgresql": pg_version, "sqlalchemy": sqlalchemy.__version__,
            "alembic": alembic.__version__, "platform": platform.platform(),
            "load_average_at_start": " / ".join(f"{x:.1f}" for x in os.getloadavg())}


def chart(results: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(int(n) for n in results["chains"])
    series = [("migrategate upgrade", "mg_empty", "o-"),
              ("migrategate --single-transaction", "mg_single_empty", "s--"),
              ("alembic upgrade head", "al_empty", "^-"),
              ("floor: restore a dump", "floor", "x:")]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, key, style in series:
        ax.plot(ns, [results["chains"][str(n)][key] for n in ns], style, label=label)
    ax.set_xlabel("revisions in the chain (empty database → head)")
    ax.set_ylabel("seconds (median)")
    ax.set_title("Applying a migration chain on PostgreSQL")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def table(results: Dict) -> str:
    lines = ["| revisions | migrategate empty→head | alembic | ratio | --single-transaction | "
             "ratio | floor (restore) | migrategate no-op | alembic no-op | ratio | verify | "
             "wait poll | RSS migrategate / alembic |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in sorted(results["chains"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| {n} | {r['mg_empty']:.2f} s | {r['al_empty']:.2f} s | "
            f"{r['mg_empty'] / r['al_empty']:.2f}× | {r['mg_single_empty']:.2f} s | "
            f"{r['mg_single_empty'] / r['al_empty']:.2f}× | {r['floor']:.2f} s | "
            f"{r['mg_noop']:.2f} s | {r['al_noop']:.2f} s | {r['mg_noop'] / r['al_noop']:.2f}× | "
            f"{r['mg_verify']:.2f} s | {r['wait_poll_ms']:.1f} ms, {r['wait_connections']} conn | "
            f"{r['mg_empty_rss'] / 1024:.0f} / {r['al_empty_rss'] / 1024:.0f} MiB "
            f"({r['mg_empty_rss'] / r['al_empty_rss']:.2f}×) |")
    return "\n".join(lines)


PG = None


def main() -> None:
    global PG
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="50 and 200 revisions, fewer runs")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="where the JSON and PNG go")
    ap.add_argument("--concurrency-reps", type=int, default=3,
                    help="runs of each concurrency measure; the table shows the median")
    ap.add_argument("--breakdown", metavar="JSON",
                    help="print where the time goes from an earlier run's JSON and exit")
    args = ap.parse_args()
    if args.breakdown:
        print(breakdown_text(breakdown(json.loads(Path(args.breakdown).read_text()))))
        return
    # 3 runs left single figures ±15 % apart on this shared 2-CPU machine: more at each size
    sizes = [(50, 3), (200, 3)] if args.quick else [(50, 9), (200, 7), (800, 3)]
    root = servers.session_dir()
    PG = servers.start_postgres(root / "pg")
    results: Dict = {"machine": machine(), "chains": {}, "concurrency": {}}
    try:
        for n, reps in sizes:
            print(f"chain of {n} revisions, {reps} runs ...", flush=True)
            results["chains"][str(n)] = measure_chain(PG, root, n, reps)
            results["chains"][str(n)]["load_average_after"] = os.getloadavg()[0]
        for runners in (16, 64):
            print(f"{runners} concurrent runners ...", flush=True)
            results["concurrency"][str(runners)] = measure_concurrency(
                PG, root, 200, runners, 1 if args.quick else args.concurrency_reps)
        print("Dify-shaped app (2 s models import) ...", flush=True)
        results["difylike"] = measure_difylike(PG, root, 3)
        results["startup"] = startup()
    finally:
        PG.stop()
    results["breakdown"] = breakdown(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(results, indent=2))
    chart(results, out / "benchmarks.png")
    print(table(results))
    print(breakdown_text(results["breakdown"]))
    for k, c in results["concurrency"].items():
        print(f"{k} runners on an empty database (200 revisions, median of "
              f"{len(c['runs'])}): {c['many']:.2f} s vs one "
              f"runner {c['one']:.2f} s = {c['ratio']:.2f}×; the same {k} processes on an "
              f"up-to-date database take {c['fleet_noop']:.2f} s, so the fleet costs "
              f"{c['ratio_to_one_plus_fleet_floor']:.2f}× (one runner + start-up floor)")
    d = results["difylike"]
    print(f"Dify-shaped app, no-op: migrategate {d['mg_noop']:.2f} s vs flask db upgrade "
          f"{d['flask_noop']:.2f} s = {d['mg_noop'] / d['flask_noop']:.2f}×")
    s = results["startup"]
    print(f"start-up: python {s['python'] * 1000:.0f} ms, import migrategate "
          f"{s['import'] * 1000:.0f} ms, migrategate --help {s['help'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
