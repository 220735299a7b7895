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
from pathlib import Path
from typing import Dict, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from parity import FIXED, Case, RevSpec, check_case

EXAMPLES = int(os.environ.get("MIGRATEGATE_PARITY_EXAMPLES", "25"))  # per target kind


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


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_upgrade_matches_alembic_on_random_histories(kind, data):
    case = data.draw(cases(kind))
    event(check_case(case, _alembic_upgrade, _migrategate_upgrade))
    event(f"source: {'alembic loader' if any(r.conditional for r in case.revs) else 'static'}")


@pytest.mark.parametrize("name", sorted(FIXED))
def test_issue_11_histories_match_alembic(name):
    check_case(FIXED[name], _alembic_upgrade, _migrategate_upgrade)
