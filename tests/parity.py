"""Shared by the Alembic parity tests: revision histories as data, rendered as Alembic files.

Used by tests/integration/test_alembic_parity.py (current stack, in-process) and
tests/compat/test_old_stack.py (Alembic 1.7, in subprocesses).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from factory import ENV_PY, tables, versions

AlembicRun = Callable[[Path, str, str], Optional[str]]  # None on success, else the refusal
MigrategateRun = Callable[[Path, str, str], Tuple[int, str]]  # exit code, output


@dataclass
class RevSpec:
    id: str
    down: Tuple[str, ...]
    labels: Tuple[str, ...] = ()
    depends: Tuple[str, ...] = ()  # as written: ids or labels
    conditional: int = 0  # 0 plain; 1 if/else; 2 try/except; 3 default then if


@dataclass
class Case:
    revs: List[RevSpec]
    start: List[str]  # revisions Alembic upgrades both databases to first, in turn
    target: str


def render(rev: RevSpec) -> str:
    down = rev.down[0] if len(rev.down) == 1 else (rev.down or None)
    if rev.conditional == 1:
        ident = f"if True:\n    down_revision = {down!r}\nelse:\n    down_revision = 'nowhere'\n"
    elif rev.conditional == 2:
        ident = (f"try:\n    import sqlalchemy\n    down_revision = {down!r}\n"
                 "except ImportError:\n    down_revision = 'nowhere'\n")
    elif rev.conditional == 3:
        ident = f"down_revision = 'nowhere'\nif len('x') == 1:\n    down_revision = {down!r}\n"
    else:
        ident = f"down_revision = {down!r}\n"
    labels = rev.labels or None
    depends = (rev.depends[0] if len(rev.depends) == 1 else rev.depends) or None
    return (
        f'"""create t_{rev.id}"""\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f"revision = {rev.id!r}\n{ident}branch_labels = {labels!r}\n"
        f"depends_on = {depends!r}\n\n\n"
        "def upgrade():\n"
        f"    op.create_table('t_{rev.id}', sa.Column('id', sa.Integer, primary_key=True))\n"
        "\n\ndef downgrade():\n    pass\n"
    )


def project(root: Path, revs: Sequence[RevSpec]) -> Path:
    mig = root / "migrations"
    (mig / "versions").mkdir(parents=True)
    (mig / "env.py").write_text(ENV_PY.replace("{extra}", ""))
    for i, rev in enumerate(revs):
        (mig / "versions" / f"{i:02d}_{rev.id}.py").write_text(render(rev))
    return mig


def state(url: str) -> Tuple[List[str], List[str]]:
    """The version table and the app's tables (migrategate's own history table is not
    Alembic's to create: docs/history.md)."""
    return versions(url), [t for t in tables(url) if t != "migrategate_history"]


def check_case(case: Case, alembic_upgrade: AlembicRun,
               migrategate_upgrade: MigrategateRun) -> str:
    """Run both, assert the same outcome; returns which outcome it was."""
    root = Path(tempfile.mkdtemp(prefix="parity-"))
    try:
        mig = project(root, case.revs)
        start_db = root / "start.db"
        start_url = f"sqlite:///{start_db}"
        for rev in case.start:
            assert alembic_upgrade(mig, start_url, rev) is None
        start_db.touch()  # an empty file is an empty SQLite database
        a_url, m_url = f"sqlite:///{root / 'alembic.db'}", f"sqlite:///{root / 'mg.db'}"
        shutil.copy(start_db, root / "alembic.db")
        shutil.copy(start_db, root / "mg.db")
        before = state(start_url)

        refused = alembic_upgrade(mig, a_url, case.target)
        code, output = migrategate_upgrade(mig, m_url, case.target)

        where = f"target {case.target!r} from {before[0]}; alembic: {refused}; mg: {output}"
        if code == 2 and "past the target" in output:
            assert refused is None and state(a_url) == before, where
            return "past the target: alembic no-op, migrategate refuses"
        if refused is None:
            assert code == 0, where
            assert state(m_url) == state(a_url), where
            return "both applied" if state(a_url) != before else "both no-op"
        assert code in (2, 9), where
        assert state(m_url) == before, where
        return "both refuse"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# Each defect from issue 11, pinned as a fixed example.
def fixed(revs, target, start=()):
    return Case([RevSpec(*r) for r in revs], list(start), target)


FIXED = {
    "label on a merge history": fixed(
        [("a0000", ()), ("b0000", ("a0000",), ("blue",)), ("c0000", ("a0000",)),
         ("d0000", ("b0000",)), ("e0000", ("c0000",), (), (), 1)], "heads"),
    "depends_on names a branch label": fixed(
        [("a0000", (), ("base",)), ("b0000", ("a0000",)), ("x0000", (), ("other",)),
         ("y0000", ("x0000",), (), ("base",))], "heads"),
    "down_revision inside if/else": fixed(
        [("a0000", ()), ("b0000", ("a0000",), (), (), 1), ("c0000", ("b0000",), (), (), 2)],
        "head"),
    "a bare label is the labelled revision": fixed(
        [("a0000", ()), ("b0000", ("a0000",), ("feat",)), ("c0000", ("b0000",)),
         ("d0000", ("c0000",))], "feat"),
    "label@head": fixed(
        [("a0000", ()), ("b0000", ("a0000",), ("feat",)), ("c0000", ("b0000",)),
         ("d0000", ("a0000",))], "feat@head"),
    "rev+1": fixed([("a0000", ()), ("b0000", ("a0000",)), ("c0000", ("b0000",))],
                    "a0000+1"),
    "+1 from the database": fixed([("a0000", ()), ("b0000", ("a0000",)),
                                    ("c0000", ("b0000",))], "+1", ["a0000"]),
    "target on a sibling branch": fixed(
        [("a0000", ()), ("b0000", ("a0000",)), ("c0000", ("a0000",))], "c0000", ["b0000"]),
    "heads where one root is only depended on": fixed(
        [("a0000", ()), ("b0000", (), ("lb",), ("a0000",)), ("c0000", ("b0000",))], "heads"),
    "heads with merges and depends_on": fixed(
        [("a0000", ()), ("b0000", ("a0000",)), ("c0000", ("a0000",)),
         ("m0000", ("b0000", "c0000")), ("x0000", ()), ("y0000", ("x0000",), (), ("m0000",)),
         ("z0000", ("m0000",), (), ("x0000",))], "heads"),
}
