"""The plain-Python view of the graph equals Alembic's RevisionMap on random histories.

The read-only commands and a no-op upgrade decide "at the target or not" without
importing Alembic (graph.py); this pins that their answer is the one Alembic's
RevisionMap gives: the same heads, the same "heads" target, the same revisions pending.
"""

from __future__ import annotations

from typing import List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from migrategate.graph import Graph, Revision


@st.composite
def histories(draw) -> List[Revision]:
    n = draw(st.integers(min_value=1, max_value=12))
    revs: List[Revision] = []
    labels: List[Tuple[str, str]] = []
    for k in range(n):
        rid = f"r{k:03d}"
        earlier = [r.id for r in revs]
        if not earlier or draw(st.integers(0, 5)) == 0:
            down: Tuple[str, ...] = ()
        else:
            down = tuple(draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=2,
                                       unique=True)))
        depends: Tuple[str, ...] = ()
        if earlier and draw(st.integers(0, 3)) == 0:
            dep = draw(st.sampled_from(earlier))
            by_label = [lb for lb, r in labels if r == dep]
            depends = (by_label[0],) if by_label and draw(st.booleans()) else (dep,)
        mine = (f"lb{k}",) if draw(st.integers(0, 3)) == 0 else ()
        labels.extend((lb, rid) for lb in mine)
        revs.append(Revision(rid, down, depends, mine))
    return revs


def _alembic_map(revs: List[Revision]):
    from alembic.script.revision import Revision as AlembicRevision
    from alembic.script.revision import RevisionMap

    objs = [AlembicRevision(r.id, r.down or None, r.depends_on or None, r.branch_labels or None)
            for r in revs]
    return RevisionMap(lambda: iter(objs))


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(histories(), st.data())
def test_heads_and_pending_sets_equal_revision_maps(revs, data):
    graph = Graph(revs)
    rmap = _alembic_map(revs)
    assert graph.heads == rmap.heads
    assert graph.real_heads == tuple(r.revision for r in rmap.get_revisions("heads"))

    # a database state Alembic could have written: the tips of an applied set
    applied = graph.ancestors(data.draw(st.lists(st.sampled_from(list(graph.revisions)),
                                                 max_size=3)))
    current = graph.tips(applied)
    target = data.draw(st.sampled_from(["heads"] + list(graph.revisions)))
    mine = graph.ancestors(graph.resolve(target, current)) - graph.ancestors(current)
    theirs = {r.revision for r in rmap.iterate_revisions(target, current, implicit_base=True)}
    assert mine == theirs
