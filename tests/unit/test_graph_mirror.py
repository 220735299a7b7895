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


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=15), data=st.data())
def test_a_plain_chain_is_ordered_without_alembic_as_alembic_orders_it(n, data):
    """upgrade_order's chain shortcut (no Alembic import) against Alembic's
    iterate_revisions, for every start and destination of a chain — and a destination
    below the start is left to Alembic (which refuses it)."""
    revs = [Revision(f"c{k:03d}", (f"c{k - 1:03d}",) if k else ()) for k in range(n)]
    chain, alembic = Graph(revs), Graph(revs)
    assert chain._is_chain
    alembic._is_chain = False  # the same question, answered by Alembic's RevisionMap
    start = data.draw(st.sampled_from([None] + [r.id for r in revs]))
    dest = data.draw(st.sampled_from([r.id for r in revs]))
    current = (start,) if start else ()
    below = start is not None and dest in chain.ancestors([start]) and dest != start
    if below:
        assert chain._chain_segment(dest, current) is None
        return
    assert chain._chain_segment(dest, current) is not None
    assert chain.upgrade_order(dest, current) == alembic.upgrade_order(dest, current)


def test_branches_merges_dependencies_and_labels_are_not_a_chain():
    base = Revision("a", ())
    assert not Graph([base, Revision("b", ("a",)), Revision("c", ("a",))])._is_chain
    assert not Graph([base, Revision("b", ("a",), ("a",))])._is_chain
    assert not Graph([base, Revision("b", ("a",), (), ("lbl",))])._is_chain
    assert not Graph([base, Revision("z", ())])._is_chain
