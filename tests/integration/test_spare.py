"""The migration process started ahead (spare.py) and the per-revision fence's token lock,
on real PostgreSQL and MariaDB: started before the runner connects, it runs no app code
until the job arrives under the lock, is gone when it is not needed or its runner dies, and
a revision whose runner's lock session ended before its COMMIT is rolled back by the fence.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid
from pathlib import Path
from typing import List

import pytest

from factory import (Rev, args_for, chain, execute, hold_lock, migrategate, scalar, spawn,
                     tables, versions, wait_until, write_project)

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql", "mariadb"])
def url(request):
    return request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}
                                   [request.param])


def _workers(tag: str) -> List[int]:
    """Live migration processes started by a runner whose environment carries ``tag``."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if b"migrategate.worker" in cmd and f"SPARE_TAG={tag}".encode() in env \
                and state != "Z":
            found.append(int(pid))
    return found


def _marked_project(tmp_path: Path, revisions) -> Path:
    """env.py that leaves a file behind when it runs: app code, as far as we are concerned."""
    mig = write_project(tmp_path, revisions)
    env_py = mig / "env.py"
    marker = tmp_path / "env-py-ran"
    env_py.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                      + env_py.read_text())
    return mig


def test_a_no_op_upgrade_runs_no_app_code_and_leaves_no_process(url, tmp_path):
    mig = _marked_project(tmp_path, chain(2))
    assert migrategate("upgrade", *args_for(url, mig)).code == 0
    marker = tmp_path / "env-py-ran"
    assert marker.exists()
    marker.unlink()
    tag = uuid.uuid4().hex

    again = migrategate("upgrade", *args_for(url, mig), env={"SPARE_TAG": tag})

    assert again.code == 0, again.output
    assert not marker.exists(), "the spare ran env.py without a job"
    assert _workers(tag) == []


def test_env_py_runs_only_once_the_lock_is_taken(url, tmp_path):
    mig = _marked_project(tmp_path, chain(2))
    tag = uuid.uuid4().hex
    with hold_lock(url):
        runner = spawn("upgrade", *args_for(url, mig), env={"SPARE_TAG": tag})
        lines: List[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(runner.stderr.readline, "")),
                                  daemon=True)
        reader.start()
        try:
            wait_until(lambda: _workers(tag), what="the migration process, started ahead")
            wait_until(lambda: any("waiting for" in line for line in lines),
                       what="the runner to wait for the lock")
            assert not (tmp_path / "env-py-ran").exists(), "app code ran before the lock"
            assert versions(url) == []
        except BaseException:
            runner.kill()
            raise
    assert runner.wait(timeout=120) == 0, "".join(lines)
    reader.join(timeout=10)
    assert (tmp_path / "env-py-ran").exists() and versions(url) == ["r002"]
    assert _workers(tag) == []


def test_a_runner_killed_while_it_waits_takes_its_spare_with_it(url, tmp_path):
    mig = _marked_project(tmp_path, chain(1))
    tag = uuid.uuid4().hex
    with hold_lock(url):
        runner = spawn("upgrade", *args_for(url, mig), env={"SPARE_TAG": tag})
        wait_until(lambda: _workers(tag), what="the migration process, started ahead")
        os.kill(runner.pid, signal.SIGKILL)
        runner.communicate(timeout=30)
        wait_until(lambda: not _workers(tag), timeout=10,
                   what="the spare to die with its runner (PR_SET_PDEATHSIG)")
    assert not (tmp_path / "env-py-ran").exists() and versions(url) == []


def test_the_fence_rolls_back_a_revision_whose_lock_session_ended_before_commit(
        pg_url, tmp_path):
    """The runner's lock session is terminated while a revision runs, and the revision
    returns at once: its COMMIT comes long before the runner's once-a-second lock check,
    so the fence inside its transaction is what stops it (the token lock is free)."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    slow = Rev("late", "r001", f'''
op.create_table("late_t", sa.Column("id", sa.Integer))
pathlib.Path({str(ready)!r}).touch()
for _ in range(6000):
    if pathlib.Path({str(go)!r}).exists():
        break
    time.sleep(0.005)
''', header="import pathlib, time")
    mig = write_project(tmp_path, chain(1) + [slow])
    runner = spawn("upgrade", *args_for(pg_url, mig), "--json")
    wait_until(ready.exists, timeout=60, what="the revision to start")
    lock_pid = scalar(pg_url, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND "
                              "mode = 'ExclusiveLock' AND granted AND objsubid = 1 AND pid IN "
                              "(SELECT pid FROM pg_stat_activity WHERE application_name LIKE "
                              "'migrategate:%') ORDER BY pid LIMIT 1")
    execute(pg_url, f"SELECT pg_terminate_backend({lock_pid})")
    go.touch()
    out, err = runner.communicate(timeout=60)

    assert runner.returncode == 11, err
    assert "no longer held by the runner's session" in err
    assert "late_t" not in tables(pg_url)
    assert versions(pg_url) == ["r001"]


def test_mariadb_lock_wait_names_the_holder_with_the_spare_waiting(mariadb_url, tmp_path):
    """The spare changes nothing in how a runner waits: --lock-timeout still ends the wait
    with exit 5, and the spare goes with it."""
    mig = _marked_project(tmp_path, chain(1))
    tag = uuid.uuid4().hex
    with hold_lock(mariadb_url):
        run = migrategate("upgrade", *args_for(mariadb_url, mig, "--lock-timeout", "1"),
                          env={"SPARE_TAG": tag})
    assert run.code == 5, run.output
    assert not (tmp_path / "env-py-ran").exists()
    assert _workers(tag) == []
