"""Differential: `migrategate upgrade --to T` does what `alembic upgrade T` does.

Each example writes a random history (branches, second roots, merges, branch labels,
depends_on by id and by label, down_revision assigned inside if/else or try/except),
brings two SQLite files to the same random starting point with Alembic, then runs
Alembic's own `command.upgrade(config, T)` on one and migrategate's CLI on the other.
Both must succeed with the same version rows and tables, or both must refuse.

One difference is deliberate and asserted exactly: a database *past* the target (it
holds a revision built on a target revision) is a no-op for Alembic and a refusal
(exit 2, "past the target") for migrategate, which never reports a target it is not at.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from factory import ENV_PY, tables, versions

EXAMPLES = int(os.environ.get("MIGRATEGATE_PARITY_EXAMPLES", "25"))  # per target kind


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


def _ancestors(revs: Dict[str, RevSpec], labels: Dict[str, str], rid: str) -> Set[str]:
    seen: Set[str] = set()
    todo = [rid]
    while todo:
        r = todo.pop()
        if r in seen:
            continue
        seen.add(r)
        todo.extend(revs[r].down)
        todo.extend(labels.get(d, d) for d in revs[r].depends)
    return seen


KINDS = ["heads", "label", "label@head", "rev+1", "+1", "head", "revision id"]


@st.composite
def cases(draw, kind: str) -> Case:
    n = draw(st.integers(min_value=3, max_value=9))
    revs: Dict[str, RevSpec] = {}
    labels: Dict[str, str] = {}
    for k in range(n):
        rid = f"rev{k:02d}"
        earlier = list(revs)
        heads = [r for r in earlier if not any(r in s.down for s in revs.values())]
        shape = "root" if k == 0 else draw(st.sampled_from(
            ["child", "child", "child", "child", "root", "merge", "merge"]))
        # merge two heads neither of which stands on the other (merging a revision with
        # one that depends on it makes Alembic itself fail half-way: not a parity question)
        pairs = [(a, b) for a in heads for b in heads if a < b
                 and a not in _ancestors(revs, labels, b) and b not in _ancestors(revs, labels, a)]
        if shape == "merge" and pairs:
            down: Tuple[str, ...] = draw(st.sampled_from(pairs))
        elif shape == "root":
            down = ()
        else:
            down = (draw(st.sampled_from(earlier)),)
        below: Set[str] = set()
        for d in down:
            below |= _ancestors(revs, labels, d)
        depends: Tuple[str, ...] = ()
        # a dependency that itself stands on one of the down revisions also breaks
        # Alembic half-way (KeyError in its version-table bookkeeping): not generated
        others = [r for r in earlier if r not in below
                  and not set(down) & _ancestors(revs, labels, r)]
        if others and draw(st.integers(0, 3)) == 0:
            dep = draw(st.sampled_from(others))
            by_label = [lb for lb, r in labels.items() if r == dep]
            depends = (by_label[0],) if by_label and draw(st.booleans()) else (dep,)
        mine = (f"lb{k}",) if draw(st.integers(0, 3)) == 0 else ()
        for lb in mine:
            labels[lb] = rid
        conditional = draw(st.sampled_from([0] * 15 + [1, 2, 3]))
        revs[rid] = RevSpec(rid, down, mine, depends, conditional)
    ids = list(revs)
    if not labels:  # every history has a label to aim at
        rid = draw(st.sampled_from(ids))
        labels["lbx"] = rid
        revs[rid].labels = ("lbx",)
    start = draw(st.lists(st.sampled_from(ids), max_size=2))
    label = draw(st.sampled_from(sorted(labels)))
    target = {"heads": "heads", "label": label, "label@head": f"{label}@head",
              "rev+1": f"{draw(st.sampled_from(ids))}+1", "head": "head", "+1": "+1",
              "revision id": draw(st.sampled_from(ids))}[kind]
    return Case(list(revs.values()), start, target)


def _render(rev: RevSpec) -> str:
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


def _project(root: Path, revs: Sequence[RevSpec]) -> Path:
    mig = root / "migrations"
    (mig / "versions").mkdir(parents=True)
    (mig / "env.py").write_text(ENV_PY.replace("{extra}", ""))
    for i, rev in enumerate(revs):
        (mig / "versions" / f"{i:02d}_{rev.id}.py").write_text(_render(rev))
    return mig


def _alembic_upgrade(mig: Path, url: str, target: str) -> Optional[str]:
    """None on success, else Alembic's refusal."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(mig))
    config.set_main_option("sqlalchemy.url", url)
    try:
        command.upgrade(config, target)
    except CommandError as exc:
        return str(exc)
    except AssertionError as exc:  # Alembic's own refusal of e.g. 'HEAD+1' (walks to None)
        return f"AssertionError in Alembic {exc}"
    return None


def _migrategate_upgrade(mig: Path, url: str, target: str) -> Tuple[int, str]:
    from migrategate.cli import run

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = run(["upgrade", "--database-url", url, "--migrations", str(mig),
                    "--to", target], env={})
    return code, err.getvalue() + out.getvalue()


def _state(url: str) -> Tuple[List[str], List[str]]:
    return versions(url), tables(url)


def check_case(case: Case) -> str:
    """Run both, assert the same outcome; returns which outcome it was."""
    root = Path(tempfile.mkdtemp(prefix="parity-"))
    try:
        mig = _project(root, case.revs)
        start_db = root / "start.db"
        start_url = f"sqlite:///{start_db}"
        for rev in case.start:
            assert _alembic_upgrade(mig, start_url, rev) is None
        if not start_db.exists():
            import sqlalchemy as sa

            sa.create_engine(start_url).dispose()
            start_db.touch()
        a_url, m_url = f"sqlite:///{root / 'alembic.db'}", f"sqlite:///{root / 'mg.db'}"
        shutil.copy(start_db, root / "alembic.db")
        shutil.copy(start_db, root / "mg.db")
        before = _state(start_url)

        refused = _alembic_upgrade(mig, a_url, case.target)
        code, output = _migrategate_upgrade(mig, m_url, case.target)

        where = f"target {case.target!r} from {before[0]}; alembic: {refused}; mg: {output}"
        if code == 2 and "past the target" in output:
            assert refused is None and _state(a_url) == before, where
            return "past the target: alembic no-op, migrategate refuses"
        if refused is None:
            assert code == 0, where
            assert _state(m_url) == _state(a_url), where
            return "both applied" if _state(a_url) != before else "both no-op"
        assert code in (2, 9), where
        assert _state(m_url) == before, where
        return "both refuse"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_upgrade_matches_alembic_on_random_histories(kind, data):
    case = data.draw(cases(kind))
    event(check_case(case))
    event(f"source: {'alembic loader' if any(r.conditional for r in case.revs) else 'static'}")


# Each defect from issue 11, pinned as a fixed example of the same check.
def _fixed(revs, target, start=()):
    return Case([RevSpec(*r) for r in revs], list(start), target)


FIXED = {
    "label on a merge history": _fixed(
        [("a0000", ()), ("b0000", ("a0000",), ("blue",)), ("c0000", ("a0000",)),
         ("d0000", ("b0000",)), ("e0000", ("c0000",), (), (), 1)], "heads"),
    "depends_on names a branch label": _fixed(
        [("a0000", (), ("base",)), ("b0000", ("a0000",)), ("x0000", (), ("other",)),
         ("y0000", ("x0000",), (), ("base",))], "heads"),
    "down_revision inside if/else": _fixed(
        [("a0000", ()), ("b0000", ("a0000",), (), (), 1), ("c0000", ("b0000",), (), (), 2)],
        "head"),
    "a bare label is the labelled revision": _fixed(
        [("a0000", ()), ("b0000", ("a0000",), ("feat",)), ("c0000", ("b0000",)),
         ("d0000", ("c0000",))], "feat"),
    "label@head": _fixed(
        [("a0000", ()), ("b0000", ("a0000",), ("feat",)), ("c0000", ("b0000",)),
         ("d0000", ("a0000",))], "feat@head"),
    "rev+1": _fixed([("a0000", ()), ("b0000", ("a0000",)), ("c0000", ("b0000",))],
                    "a0000+1"),
    "+1 from the database": _fixed([("a0000", ()), ("b0000", ("a0000",)),
                                    ("c0000", ("b0000",))], "+1", ["a0000"]),
    "target on a sibling branch": _fixed(
        [("a0000", ()), ("b0000", ("a0000",)), ("c0000", ("a0000",))], "c0000", ["b0000"]),
    "heads where one root is only depended on": _fixed(
        [("a0000", ()), ("b0000", (), ("lb",), ("a0000",)), ("c0000", ("b0000",))], "heads"),
    "heads with merges and depends_on": _fixed(
        [("a0000", ()), ("b0000", ("a0000",)), ("c0000", ("a0000",)),
         ("m0000", ("b0000", "c0000")), ("x0000", ()), ("y0000", ("x0000",), (), ("m0000",)),
         ("z0000", ("m0000",), (), ("x0000",))], "heads"),
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_issue_11_histories_match_alembic(name):
    check_case(FIXED[name])
