"""The static revision reader agrees with Alembic and rejects broken histories clearly."""

from __future__ import annotations

import pytest

from factory import Rev, chain, table_rev, write_project
from migrategate.errors import AmbiguousTarget, ConfigError, UnknownRevision
from migrategate.plan import make_plan
from migrategate.scripts import load_graph, make_config
from migrategate.settings import Settings


def _graph(mig, static=True):
    return load_graph(Settings(migrations=str(mig)), static=static)


def test_static_graph_equals_alembics(tmp_path):
    mig = write_project(tmp_path, [
        table_rev("a", None, "ta"), table_rev("b1", "a", "tb1"), table_rev("b2", "a", "tb2"),
        Rev("m", ("b1", "b2"), "pass", "merge them"), table_rev("c", "m", "tc"),
    ])
    static, loaded = _graph(mig), _graph(mig, static=False)
    assert static.source == "static" and loaded.source == "alembic"
    assert static.heads == loaded.heads == ("c",)
    for rid, rev in static.revisions.items():
        other = loaded.revisions[rid]
        assert (rev.down, rev.message) == (other.down, other.message)


def test_computed_revision_id_falls_back_to_alembic(tmp_path):
    mig = write_project(tmp_path, [Rev("x", None, header="REV = 'x'",
                                       raw='revision = "".join(["x"])\ndown_revision = None\n'
                                           'def upgrade():\n    pass\n')])
    g = _graph(mig)
    assert g.source == "alembic" and g.heads == ("x",)


def test_pending_is_ordered_parents_first(tmp_path):
    g = _graph(write_project(tmp_path, chain(4)))
    plan = make_plan(g, ("r001",), None)
    assert [r.id for r in plan.pending] == ["r002", "r003", "r004"]
    assert make_plan(g, ("r004",), None).up_to_date


@pytest.mark.parametrize("revs,needle", [
    ([], "no revisions"),
    ([table_rev("a", None, "t"), table_rev("a", None, "u")], "duplicate revision id 'a'"),
    ([table_rev("a", "ghost", "t")], "'ghost', which does not exist"),
    ([Rev("a", raw="revision = 'a'\ndown_revision = None\nx = (\n")], "syntax error"),
    ([Rev("a", None), Rev("b", "c"), Rev("c", "b")], "cycle"),
])
def test_broken_histories_are_config_errors(tmp_path, revs, needle):
    mig = write_project(tmp_path, revs)
    with pytest.raises(ConfigError) as err:
        _graph(mig)
    assert needle in err.value.one_line()


def test_missing_directory_and_missing_env_py_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        make_config(Settings(migrations=str(tmp_path / "nope")))
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError, match="no env.py"):
        make_config(Settings(migrations=str(tmp_path / "m")))


def test_targets_resolve_by_id_prefix_and_reject_unknown(tmp_path):
    g = _graph(write_project(tmp_path, [table_rev("abc123", None, "t"),
                                         table_rev("abd456", "abc123", "u")]))
    assert g.resolve("abd") == ("abd456",)
    with pytest.raises(AmbiguousTarget):
        g.resolve("ab")
    with pytest.raises(ConfigError, match="does not exist"):
        g.resolve("zzz")


def test_unknown_database_revision_is_refused_unless_allowed(tmp_path):
    g = _graph(write_project(tmp_path, chain(2)))
    with pytest.raises(UnknownRevision) as err:
        make_plan(g, ("future",), None)
    assert err.value.exit_code == 8
    assert make_plan(g, ("future",), "heads", allow_ahead=True).unknown == ("future",)
