"""The revision graph agrees with Alembic and rejects broken histories clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from factory import REPO, Rev, chain, cli_env, table_rev, write_project
from migrategate.errors import AmbiguousTarget, ConfigError, UnknownRevision
from migrategate.pending import make_plan
from migrategate.revfile import read_revision
from migrategate.scripts import load_graph, make_config
from migrategate.settings import Settings


def _graph(mig, static=True, app_root=None):
    return load_graph(Settings(migrations=str(mig), app_root=app_root), static=static)


def _labelled(rev_id, down, labels=None, depends=None, body="pass"):
    return Rev(rev_id, raw=f'"""{rev_id}"""\nrevision = {rev_id!r}\ndown_revision = {down!r}\n'
                           f"branch_labels = {labels!r}\ndepends_on = {depends!r}\n\n\n"
                           f"def upgrade():\n    {body}\n")


# A history with everything the graph has to get right: two roots, a branch label on
# each, a merge, depends_on by id and by label.
RICH = [
    _labelled("a0001", None, ("core",)), _labelled("b0001", "a0001"),
    _labelled("b0002", "a0001"), _labelled("m0001", ("b0001", "b0002")),
    _labelled("x0001", None, ("billing",)), _labelled("x0002", "x0001", None, "core"),
    _labelled("c0001", "m0001", None, "x0001"),
]


def _alembic_heads(mig: Path):
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(mig))
    return tuple(script.get_heads()), tuple(r.revision for r in script.get_revisions("heads"))


FIXTURES = {
    "quickstart": REPO / "examples" / "quickstart" / "migrations",
    "chart": REPO / "tests" / "chart" / "fixtures" / "migrations",
    "difylike": REPO / "tests" / "fixtures" / "difylike" / "migrations",
}


@pytest.mark.parametrize("name", sorted(FIXTURES) + ["rich", "merge", "chain"])
def test_static_heads_equal_alembics_on_every_fixture(name, tmp_path, monkeypatch):
    app_root = None
    if name in FIXTURES:
        mig = FIXTURES[name]
        app_root = str(mig.parent)  # difylike revisions import models
        monkeypatch.syspath_prepend(app_root)  # for _alembic_heads, in this process
    else:
        mig = write_project(tmp_path, {"rich": RICH, "chain": chain(4), "merge": [
            table_rev("a", None, "ta"), table_rev("b1", "a", "tb1"),
            table_rev("b2", "a", "tb2"), Rev("m", ("b1", "b2"), "pass", "merge them")]}[name])
    static = _graph(mig)
    assert static.source == "static"
    assert (static.heads, static.real_heads) == _alembic_heads(mig)
    loaded = _graph(mig, static=False, app_root=app_root)
    assert loaded.source == "alembic" and loaded.heads == static.heads
    assert set(loaded.revisions) == set(static.revisions)
    for rid, rev in static.revisions.items():
        other = loaded.revisions[rid]
        assert (rev.down, rev.message) == (other.down, other.message)
        assert static.requires[rid] == loaded.requires[rid]


def test_branch_labels_on_alembics_loader_path_are_not_duplicates(tmp_path):
    g = _graph(write_project(tmp_path, RICH), static=False)
    assert g.source == "alembic" and set(g.revisions) == {r.id for r in RICH}
    assert g.requires["x0002"] == ("x0001", "a0001")  # depends_on 'core' is a0001


def test_depends_on_a_branch_label_is_resolved_statically(tmp_path):
    g = _graph(write_project(tmp_path, RICH))
    assert g.requires["x0002"] == ("x0001", "a0001")
    assert g.heads == ("x0002", "c0001") and g.real_heads == ("x0002", "c0001")


@pytest.mark.parametrize("ident", [
    "if True:\n    down_revision = 'a'\nelse:\n    down_revision = None\n",
    "try:\n    down_revision = 'a'\nexcept ImportError:\n    down_revision = None\n",
    "down_revision = None\nif True:\n    down_revision = 'a'\n",
    "revision2, down_revision = 'x', 'a'\n",
    "from somewhere import down_revision\n",
    "down_revision = 'a'\ndown_revision += ''\n",
    "down_revision = 'a'\ndef upgrade():\n    pass\nif True:\n    down_revision = 'a'\n",
])
def test_identifiers_not_plain_at_module_level_need_alembic(tmp_path, ident):
    path = tmp_path / "b.py"
    path.write_text(f"revision = 'b'\n{ident}\n\ndef upgrade():\n    pass\n")
    assert read_revision(str(path)) is None


def test_conditional_down_revision_is_read_by_alembic_not_as_a_second_root(tmp_path):
    mig = write_project(tmp_path, [table_rev("a", None, "ta"), Rev("b", raw=(
        "revision = 'b'\nif True:\n    down_revision = 'a'\nelse:\n    down_revision = None\n"
        "def upgrade():\n    pass\n"))])
    g = _graph(mig)
    assert g.source == "alembic" and g.heads == ("b",) and g.revisions["b"].down == ("a",)


def test_function_locals_named_like_identifiers_stay_static(tmp_path):
    path = tmp_path / "b.py"
    path.write_text("revision = 'b'\ndown_revision = 'a'\n\ndef upgrade():\n"
                    "    revision = 1\n    down_revision = 2\n")
    rev = read_revision(str(path))
    assert rev is not None and (rev.id, rev.down) == ("b", ("a",))


def test_read_only_paths_do_not_import_alembic(tmp_path):
    mig = write_project(tmp_path, RICH)
    code = ("import sys\nfrom migrategate.scripts import load_graph\n"
            "from migrategate.pending import make_plan\nfrom migrategate.settings import Settings\n"
            f"g = load_graph(Settings(migrations={str(mig)!r}))\n"
            "assert make_plan(g, ('c0001', 'x0002'), 'heads').up_to_date\n"
            "assert make_plan(g, ('c0001', 'x0002'), None if len(g.heads) == 1 else 'heads')"
            ".up_to_date\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=cli_env(), check=True).stdout
    assert out.strip() == "[]"


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
                                         table_rev("abd456", "abc123", "u"),
                                         table_rev("abd457", "abd456", "v")]))
    assert g.resolve("abc1") == ("abc123",)
    with pytest.raises(AmbiguousTarget):
        g.resolve("abd4")
    with pytest.raises(ConfigError, match="does not exist"):
        g.resolve("zzz")


@pytest.mark.parametrize("spec,current,target", [
    ("core", (), ("a0001",)),  # a bare label: the labelled revision, as in Alembic
    ("core@head", (), ("c0001",)),
    ("billing@head", (), ("x0002",)),
    ("b0001+1", (), ("m0001",)),
    ("+1", ("x0001",), ("x0002",)),
    ("heads", (), ("x0002", "c0001")),
])
def test_targets_use_alembics_grammar(tmp_path, spec, current, target):
    g = _graph(write_project(tmp_path, RICH))
    assert g.resolve(spec, current) == target


def test_a_relative_target_is_resolved_once(tmp_path):
    """A runner that waited for the lock must not walk further than it was asked."""
    g = _graph(write_project(tmp_path, chain(4)))
    first = make_plan(g, ("r001",), "+1")
    assert first.target == ("r002",) and [r.id for r in first.pending] == ["r002"]
    assert make_plan(g, ("r002",), "+1").up_to_date


def test_a_target_on_a_sibling_branch_is_upgraded_to_not_refused(tmp_path):
    g = _graph(write_project(tmp_path, [table_rev("a", None, "ta"), table_rev("b", "a", "tb"),
                                        table_rev("c", "a", "tc")]))
    plan = make_plan(g, ("b",), "c")
    assert [r.id for r in plan.pending] == ["c"] and plan.expected == ("b", "c")
    assert plan.destination == "c"
    with pytest.raises(ConfigError, match="past the target"):
        make_plan(g, ("b",), "a")


def test_heads_with_depends_on_expects_alembics_version_rows(tmp_path):
    g = _graph(write_project(tmp_path, RICH))
    plan = make_plan(g, None, "heads")
    assert plan.destination == "heads" and plan.expected == ("x0002", "c0001")
    assert [r.id for r in plan.pending][-1] in ("x0002", "c0001")
    assert len(plan.pending) == len(RICH)


def test_unknown_database_revision_is_refused_unless_allowed(tmp_path):
    g = _graph(write_project(tmp_path, chain(2)))
    with pytest.raises(UnknownRevision) as err:
        make_plan(g, ("future",), None)
    assert err.value.exit_code == 8
    assert make_plan(g, ("future",), "heads", allow_ahead=True).unknown == ("future",)


@pytest.mark.parametrize("conditional", [False, True], ids=["static", "alembic-loader"])
def test_version_locations_are_read_where_alembic_reads_them(tmp_path, conditional):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from factory import render

    mig = write_project(tmp_path, RICH[:4])
    extra = tmp_path / "billing_versions"
    extra.mkdir()
    for i, rev in enumerate(RICH[4:]):
        (extra / f"{i}_{rev.id}.py").write_text(render(rev))
    if conditional:
        (extra / "9_z.py").write_text("revision = 'z0001'\nif True:\n    down_revision = 'c0001'\n"
                                      "def upgrade():\n    pass\n")
    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {mig}\npath_separator = space\n"
                   f"version_locations = {mig}/versions %(here)s/billing_versions\n")
    g = load_graph(Settings(config=str(ini)))
    assert g.source == ("alembic" if conditional else "static")
    script = ScriptDirectory.from_config(Config(str(ini)))
    assert g.heads == tuple(script.get_heads())
    assert set(g.revisions) == {r.revision for r in script.walk_revisions()}
