"""A rollout at once: R upgrade runners and G gates (``wait``) started together on an empty
database, what it costs in wall time and in server connections.

    .venv/bin/python bench/rollout.py [--runners 64] [--gates 200] [--revisions 200]

On a throwaway PostgreSQL (tests/servers.py, max_connections 300): every process started at
once — R ``migrategate upgrade`` and G ``migrategate wait --interval 2`` — on an empty
database, until all exit 0; a sampler counts the server's client backends
(``pg_stat_activity``) every 50 ms. Then the floor: the same R + G processes on a database
already at head (each still starts, connects, reads and verifies). Prints wall times, the
ratio to "one runner + that floor", the peak number of connections, and the load average;
writes ``<out>/rollout.json``. Wall clock; not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src"), str(ROOT / "bench")]

import measure  # noqa: E402  (bench/measure.py: the synthetic chain)
import servers  # noqa: E402

PY = sys.executable


def _sampler(url: str, stop: threading.Event, peak: List[int]) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                        "'client backend' AND pid <> pg_backend_pid()")
        while not stop.is_set():
            peak.append(int(conn.execute(query).scalar() or 0))
            stop.wait(0.05)
    engine.dispose()


def fleet(url: str, mig: Path, runners: int, gates: int) -> Dict[str, float]:
    """All at once; wall time until every process exited 0, and the peak connections."""
    common = ["--database-url", url, "--migrations", str(mig)]
    argvs = ([[PY, "-m", "migrategate", "upgrade", *common, "--lock-timeout", "900"]] * runners
             + [[PY, "-m", "migrategate", "wait", *common, "--timeout", "900",
                 "--interval", "2"]] * gates)
    stop, samples = threading.Event(), []  # type: ignore[var-annotated]
    sampler = threading.Thread(target=_sampler, args=(url, stop, samples), daemon=True)
    sampler.start()
    start = time.perf_counter()
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for a in argvs]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    assert codes == [0] * len(procs), sorted(set(codes))
    return {"wall": wall, "peak_connections": max(samples or [0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runners", type=int, default=64)
    ap.add_argument("--gates", type=int, default=200)
    ap.add_argument("--revisions", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    root = servers.session_dir() / f"rollout-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    pg = servers.start_postgres(root / "pg")
    mig = measure.write_chain(root, args.revisions)
    one_url = servers.create_database(pg)
    start = time.perf_counter()
    subprocess.run([PY, "-m", "migrategate", "upgrade", "--database-url", one_url,
                    "--migrations", str(mig)], check=True, capture_output=True)
    one = time.perf_counter() - start
    rollout = fleet(servers.create_database(pg), mig, args.runners, args.gates)
    floor = fleet(one_url, mig, args.runners, args.gates)  # already at head
    result = {
        "runners": args.runners, "gates": args.gates, "revisions": args.revisions,
        "one_runner": one, "rollout": rollout, "floor": floor,
        "ratio_to_one_plus_floor": rollout["wall"] / (one + floor["wall"]),
        "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(),
    }
    print(f"{args.runners} runners + {args.gates} gates on an empty database "
          f"({args.revisions} revisions): {rollout['wall']:.1f} s, peak "
          f"{rollout['peak_connections']} connections; the same processes on a database at "
          f"head {floor['wall']:.1f} s (peak {floor['peak_connections']}); one runner alone "
          f"{one:.2f} s; rollout / (one runner + floor) = "
          f"{result['ratio_to_one_plus_floor']:.2f}x; load average after "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    Path(args.out, "rollout.json").write_text(json.dumps(result, indent=2) + "\n")
    pg.proc.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
