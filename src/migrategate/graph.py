"""The revision graph, with Alembic's meaning of heads, labels, ``depends_on`` and targets.

Two views of one history:

- a plain-Python view (this module, no Alembic import) answers what the
  read-only commands and a no-op upgrade ask: the heads, "is the database at
  the target?", what is pending. Importing Alembic costs 0.1–0.4 s, more than
  a whole no-op run, so this view mirrors exactly the parts of Alembic's
  ``RevisionMap`` it needs — ancestors through ``down_revision`` and
  ``depends_on`` (ids or branch labels), versioned heads, "real" heads — and
  the test suite checks it against ``RevisionMap`` on random histories;
- Alembic's own ``RevisionMap``, built from the same revision data (or taken
  from Alembic's loader), resolves every target spelling Alembic accepts
  (prefixes, labels, ``label@head``, ``rev+N``, ``+N`` ...) and orders the
  revisions to apply with the very call ``alembic upgrade`` makes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .errors import AmbiguousTarget, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from alembic.script.revision import RevisionMap

# Alembic's grammar for relative targets (alembic/script/revision.py, unchanged since 1.7).
_RELATIVE = re.compile(r"(?:(.+?)@)?(\w+)?((?:\+|-)\d+)")
_ILLEGAL_IN_ID = ("@", "-", "+")  # what every Alembic >= 1.7 refuses in a revision id
#: names Alembic gives a meaning of its own in every target and command (its
#: RevisionMap asserts on a revision called so)
_RESERVED_IDS = ("base", "head", "heads")


@dataclass(frozen=True)
class Revision:
    id: str
    down: Tuple[str, ...]
    depends_on: Tuple[str, ...] = ()  # as written: revision ids or branch labels
    branch_labels: Tuple[str, ...] = ()  # as written in this file (not inherited)
    message: str = ""
    path: str = ""


class Graph:
    """One revision history. Validated on construction; raises ConfigError if broken."""

    def __init__(self, revisions: Sequence[Revision], source: str = "static",
                 revision_map: "Optional[RevisionMap]" = None,
                 heads: Optional[Sequence[str]] = None) -> None:
        self.source = source  # "static" (read with ast) or "alembic" (modules executed)
        self.revisions: Dict[str, Revision] = {}
        for rev in revisions:
            _add(self.revisions, rev)
        self._map = revision_map
        #: upgrade_order's answers: the plan is made before the lock and again under it
        self._orders: Dict[Tuple[str, Tuple[str, ...]], List[str]] = {}
        self._pinned: Dict[str, Tuple[str, ...]] = {}
        self._labels = self._label_index()
        # down revisions plus resolved dependencies: what must be applied first
        self.requires: Dict[str, Tuple[str, ...]] = {
            r.id: r.down + tuple(self._dependency(r, d) for d in r.depends_on)
            for r in self.revisions.values()
        }
        self._validate()
        children: Dict[str, int] = {}
        for r in self.revisions.values():
            for d in r.down:
                children[d] = children.get(d, 0) + 1
        self._is_chain = (
            all(len(r.down) <= 1 and not r.depends_on and not r.branch_labels
                for r in self.revisions.values())
            and all(n == 1 for n in children.values())
            and sum(1 for r in self.revisions.values() if not r.down) <= 1)
        versioned_children = {d for r in self.revisions.values() for d in r.down}
        any_children = {p for ps in self.requires.values() for p in ps}
        #: Alembic's ``heads``: no revision names it as down_revision ('alembic heads')
        self.heads: Tuple[str, ...] = tuple(heads) if heads is not None else tuple(
            r for r in self.revisions if r not in versioned_children)
        #: what ``heads`` means as a target: not needed by any revision at all
        self.real_heads: Tuple[str, ...] = tuple(
            r for r in self.revisions if r not in any_children)

    def __contains__(self, rev: str) -> bool:
        return rev in self.revisions

    # ------------------------------------------------------------ plain-Python view

    def ancestors(self, revs: Iterable[str]) -> Set[str]:
        """``revs`` and everything they stand on (down revisions and dependencies)."""
        seen: Set[str] = set()
        stack = [r for r in revs if r in self.revisions]
        while stack:
            rev = stack.pop()
            if rev not in seen:
                seen.add(rev)
                stack.extend(p for p in self.requires[rev] if p not in seen)
        return seen

    def tips(self, revs: Set[str]) -> Tuple[str, ...]:
        """The members of ``revs`` nothing else in ``revs`` stands on, in file order.

        For the set of applied revisions this is what Alembic keeps in the
        version table: an upgrade step replaces the rows of the revisions it
        stands on (down revisions and dependencies) with its own.
        """
        below = {p for r in revs for p in self.requires[r]}
        return tuple(r for r in self.revisions if r in revs and r not in below)

    def resolve(self, spec: Optional[str], current: Sequence[str] = ()) -> Tuple[str, ...]:
        """The revisions an upgrade to ``spec`` goes to, as Alembic resolves them.

        ``current`` is what the database holds (for ``+N``). A relative target
        is resolved once per graph, against the database as first seen: a
        runner that waited for the lock must not walk further than asked.
        """
        if spec in (None, "", "head"):
            if len(self.heads) > 1:
                raise AmbiguousTarget(
                    f"the scripts have {len(self.heads)} heads ({', '.join(self.heads)}) "
                    + ("and no target was given" if not spec else "so 'head' is ambiguous"),
                    "merge them ('alembic merge heads'), or pass --to heads, "
                    "--to LABEL@head or --to REV",
                )
            return self.heads
        assert spec is not None
        if spec == "heads":
            return self.real_heads
        if spec in self.revisions:
            return (spec,)
        if spec in self._pinned:
            return self._pinned[spec]
        target = self._resolve_with_alembic(spec, tuple(current))
        overlapping = [t for t in target if set(target) & (self.ancestors([t]) - {t})]
        if overlapping:
            raise ConfigError(
                f"target {spec!r} names {', '.join(target)}, and {', '.join(overlapping)} "
                "already includes another of them; Alembic refuses such a target",
                "name one revision per branch, e.g. LABEL@head",
            )
        if _RELATIVE.match(spec):
            self._pinned[spec] = target
        return target

    def destination(self, spec: Optional[str], target: Tuple[str, ...]) -> str:
        """The target as Alembic's upgrade should be given it: absolute, same revisions."""
        if len(target) == 1:
            return target[0]
        if spec in (None, "", "head"):
            return "head"
        return str(spec)  # 'heads' or 'LABEL@heads': absolute already

    # ------------------------------------------------------------ Alembic's view

    def revision_map(self) -> "RevisionMap":
        """Alembic's RevisionMap of this history (built once; imports Alembic)."""
        if self._map is None:
            from alembic.script.revision import Revision as AlembicRevision
            from alembic.script.revision import RevisionMap

            revisions = [AlembicRevision(r.id, r.down or None, r.depends_on or None,
                                         r.branch_labels or None)
                         for r in self.revisions.values()]
            self._map = RevisionMap(lambda: iter(revisions))
        return self._map

    def upgrade_order(self, destination: str, current: Sequence[str]) -> List[str]:
        """The revisions ``alembic upgrade <destination>`` applies from ``current``, in order.

        The same ``RevisionMap.iterate_revisions`` call Alembic's upgrade makes
        (``ScriptDirectory._upgrade_revs``), reversed into application order.
        """
        key = (destination, tuple(current))
        if key in self._orders:
            return list(self._orders[key])
        segment = self._chain_segment(destination, tuple(current))
        if segment is not None:
            self._orders[key] = segment
            return list(segment)
        from alembic.script.revision import RevisionError

        try:
            revs = self.revision_map().iterate_revisions(destination, tuple(current),
                                                         implicit_base=True)
            self._orders[key] = [r.revision for r in reversed(list(revs))]
            return list(self._orders[key])
        except RevisionError as exc:
            raise ConfigError(f"Alembic cannot plan an upgrade to {destination!r} from "
                              f"{', '.join(current) or 'an empty database'}: {exc}",
                              "nothing was applied; check --to and 'alembic heads'") from None

    def _chain_segment(self, destination: str, current: Tuple[str, ...]) -> Optional[List[str]]:
        """A plain chain (one base, one head, one down revision each, no dependencies or
        branch labels) from one revision (or none) up to a revision id: the only order
        there is, without importing Alembic (a seventh of a second in every runner that
        has work, measured). Anything else — or a destination not above ``current`` — is
        Alembic's to answer (None)."""
        if not self._is_chain or destination not in self.revisions or len(current) > 1:
            return None
        stop = current[0] if current else None
        segment: List[str] = []
        rev: Optional[str] = destination
        while rev is not None and rev != stop:
            segment.append(rev)
            down = self.revisions[rev].down
            rev = down[0] if down else None
        if rev != stop:
            return None  # current is not below the destination: Alembic says what it means
        return segment[::-1]

    def _resolve_with_alembic(self, spec: str, current: Tuple[str, ...]) -> Tuple[str, ...]:
        from alembic.script.revision import MultipleHeads, ResolutionError, RevisionError

        rmap: Any = self.revision_map()
        try:
            if _RELATIVE.match(spec):
                # upgrade's own parser (private: listed in docs/alembic-internals.md)
                found = rmap._parse_upgrade_target(current, spec, True)  # noqa: SLF001
            else:
                found = rmap.get_revisions(spec)
        except MultipleHeads as exc:
            raise AmbiguousTarget(f"target {spec!r} is ambiguous: {exc}",
                                  "pass --to heads, --to LABEL@head or a revision id") from None
        except ResolutionError as exc:
            if "Multiple revisions start" in str(exc):
                raise AmbiguousTarget(f"target {spec!r} matches several revisions: {exc}",
                                      "give more characters of the revision id") from None
            raise ConfigError(f"target revision {spec!r} does not exist in the scripts "
                              f"(Alembic: {exc})",
                              "check --to against 'migrategate status' (revision ids, unique "
                              "prefixes, branch labels, LABEL@head, REV+N)") from None
        except RevisionError as exc:
            raise ConfigError(f"target {spec!r} cannot be resolved: {exc}",
                              "check --to against 'migrategate status'") from None
        if any(r is None for r in found) and _RELATIVE.match(spec):
            raise ConfigError(f"target {spec!r} walks past the end of its branch",
                              "name a revision that exists, or 'heads'")
        target = tuple(r.revision for r in found if r is not None)
        if not target:
            raise ConfigError(f"target {spec!r} is the empty base: nothing to upgrade to",
                              "migrategate never downgrades; name a revision, 'head' or 'heads'")
        return target

    # ------------------------------------------------------------ construction

    def _label_index(self) -> Dict[str, str]:
        labels: Dict[str, str] = {}
        for rev in self.revisions.values():
            for label in rev.branch_labels:
                other = labels.get(label) or (label if label in self.revisions else None)
                if other is not None:
                    raise ConfigError(
                        f"branch label {label!r} of revision {rev.id} is already used by "
                        f"revision {other}",
                        "give each branch label to one revision only (Alembic refuses too)",
                    )
                labels[label] = rev.id
        return labels

    def _dependency(self, rev: Revision, name: str) -> str:
        if name in self.revisions:
            return name
        if name in self._labels:
            return self._labels[name]
        raise ConfigError(
            f"revision {rev.id} ({rev.path}) has depends_on {name!r}, which is neither a "
            "revision id nor a branch label",
            "restore the missing revision or fix depends_on",
        )

    def _validate(self) -> None:
        if not self.revisions:
            raise ConfigError("the migrations directory has no revisions",
                              "check --migrations points at the right folder "
                              "(versions/ is empty)")
        for rev in self.revisions.values():
            if rev.id in _RESERVED_IDS:
                raise ConfigError(f"revision id {rev.id!r} ({rev.path}) is reserved: Alembic "
                                  f"reads {', '.join(map(repr, _RESERVED_IDS))} as targets, "
                                  "never as a revision", "rename the revision (and the "
                                  "down_revision of its children)")
            bad = [c for c in _ILLEGAL_IN_ID if c in rev.id]
            if bad:
                raise ConfigError(f"revision id {rev.id!r} ({rev.path}) contains "
                                  f"{' '.join(bad)}, which Alembic does not allow in ids",
                                  "rename the revision")
            for parent in rev.down:
                if parent not in self.revisions:
                    raise ConfigError(
                        f"revision {rev.id} ({rev.path}) names down_revision "
                        f"{parent!r}, which does not exist",
                        "restore the missing revision file or fix down_revision",
                    )
        self._check_acyclic()

    def _check_acyclic(self) -> None:
        indegree = {r: 0 for r in self.revisions}
        children: Dict[str, List[str]] = {}
        for rev, parents in self.requires.items():
            for p in set(parents):
                indegree[rev] += 1
                children.setdefault(p, []).append(rev)
        ready = [r for r, n in indegree.items() if n == 0]
        done = 0
        while ready:
            rev = ready.pop()
            done += 1
            for child in children.get(rev, ()):
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if done != len(self.revisions):
            stuck = sorted(r for r, n in indegree.items() if n > 0)
            raise ConfigError(f"the revision graph has a cycle through {', '.join(stuck[:5])}",
                              "fix down_revision/depends_on so the history is a DAG")


def _add(revisions: Dict[str, Revision], rev: Revision) -> None:
    other = revisions.get(rev.id)
    if other is not None:
        raise ConfigError(
            f"duplicate revision id {rev.id!r} in {other.path} and {rev.path}",
            "give each revision file a unique 'revision'; nothing was applied",
        )
    revisions[rev.id] = rev
