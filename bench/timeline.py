"""Where the time of one ``migrategate upgrade`` goes, next to ``alembic upgrade head``.

    .venv/bin/python bench/timeline.py [--revisions 200]

Runs each once on a fresh database of a throwaway PostgreSQL (tests/servers.py, the chain
of bench/measure.py) under ``strace -f --seccomp-bpf`` tracing only execve, connect, write
and exit_group (the traced calls are few, so the timing is close to an untraced run's), and
prints, from the trace: when the runner started the migration process, when the runner
connected, when it printed the plan (the lock is taken right after), when the migration
process connected (env.py: its job arrived), when it exited, and when the runner exited —
each as seconds from the start, and Alembic's start → connect → exit beside them.
Needs strace (Debian: apt-get install strace). One run each: a picture, not a figure.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

import measure  # noqa: E402
import servers  # noqa: E402

PY = sys.executable
_LINE = re.compile(r"^(\d+) (\d+\.\d+) (.*)$")


def trace(argv: List[str], out: Path) -> List[Tuple[int, float, str]]:
    subprocess.run(["strace", "-f", "--seccomp-bpf", "-ttt", "-s", "200", "-e",
                    "trace=execve,connect,write,exit_group", "-o", str(out), *argv],
                   capture_output=True, check=True)
    events = []
    for line in out.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m:
            events.append((int(m.group(1)), float(m.group(2)), m.group(3)))
    return events


def at(events: List[Tuple[int, float, str]], pid: Optional[int], needle: str,
       not_pid: Optional[int] = None) -> Optional[float]:
    """When process ``pid`` (any, for None; not ``not_pid``) first made a traced call
    containing ``needle`` (a thread counts as its own pid in strace)."""
    for p, t, text in events:
        if (pid is None or p == pid) and p != not_pid and needle in text:
            return t
    return None


def child_pid(events: List[Tuple[int, float, str]]) -> Optional[int]:
    for p, _, text in events:
        if text.startswith("execve(") and "migrategate.worker" in text:
            return p
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--revisions", type=int, default=200)
    args = ap.parse_args()
    if shutil.which("strace") is None:
        print("error: strace is not installed (apt-get install strace)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="mg-timeline-"))
    os.chmod(root, 0o755)
    pg = servers.start_postgres(root / "pg")
    try:
        mig = measure.write_chain(root, args.revisions)
        url = servers.create_database(pg)
        mg = trace([PY, "-m", "migrategate", "upgrade", "--database-url", url,
                    "--migrations", str(mig)], root / "mg.strace")
        url = servers.create_database(pg)
        ini = measure.alembic_ini(root, mig, url)
        al = trace([PY, "-m", "alembic", "-c", str(ini), "upgrade", "head"], root / "al.strace")
    finally:
        pg.stop()
    runner, t0 = mg[0][0], mg[0][1]
    child = child_pid(mg)
    points: Dict[str, Optional[float]] = {
        "migration process started": at(mg, child, "execve(") if child else None,
        "runner connected": at(mg, None, "connect(", not_pid=child),  # its connect thread
        "runner holds the lock (plan printed)": at(mg, runner, "revision(s) to apply"),
        "migration process connected (env.py)": at(mg, child, "connect(") if child else None,
        "migration process exited": at(mg, child, "exit_group") if child else None,
        "runner exited": at(mg, runner, "exit_group"),
    }
    print(f"migrategate upgrade, {args.revisions} revisions (seconds from its start):")
    for what, when in points.items():
        print(f"  {what:<40} {'-' if when is None else f'{when - t0:6.3f}'}")
    a0 = al[0][1]
    print("alembic upgrade head:")
    for what, needle in (("connected", "connect("), ("exited", "exit_group")):
        when = at(al, None, needle)
        print(f"  {what:<40} {'-' if when is None else f'{when - a0:6.3f}'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
