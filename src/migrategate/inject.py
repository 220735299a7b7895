"""inject: add the ``migrategate wait`` gate to workloads of a chart you don't own.

A Helm post-renderer (Helm 3 ``--post-renderer``; Helm 4 through the ``postrenderer/v1``
plugin in ``plugins/migrategate-inject``), a kustomize/Argo CD step, or a plain filter: it
reads manifests on stdin and writes them on stdout. For every Deployment, StatefulSet or
DaemonSet whose name matches one of the ``--workload`` patterns (also as an item of a ``kind:
List``) it prepends an initContainer ``migrategate-wait`` that

- runs ``python -m migrategate wait`` in the image of the workload's FIRST container, with
  that container's ``imagePullPolicy``, ``env``, ``envFrom`` (so an app's ``DB_*`` settings
  reach it) and ``securityContext`` (a chart that sets ``runAsUser`` on the container, not the
  pod, would otherwise start the gate as the image's USER);
- mounts migrategate's source from the ConfigMap that the migrategate chart's release created
  (``--code-configmap``; one item per file, the package tree rebuilt) and a ``/tmp`` emptyDir.

Documents that are not selected are written back exactly as they came (the text, not a
re-serialisation); a selected document is re-serialised with its leading comments kept.
A workload that already runs migrategate (the migrategate chart's ``migrategate-upgrade``
or ``migrategate-wait`` initContainer, or an earlier inject) is left unchanged and named on
stderr. Running it twice gives the same output as running it once. A pattern that matches nothing is
an error (exit 2), so a renamed release cannot silently lose its gate; so is a selected
workload the gate cannot be added to (a null container, an env that is not a list, ...). A
document PyYAML cannot read is written back unchanged and named on stderr.

PyYAML is needed (``pip install PyYAML`` where helm runs); the rest of migrategate does not
use it, and app images don't need it: ``inject`` runs where ``helm`` runs.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .errors import ConfigError

GATE = "migrategate-wait"
CODE_VOLUME = "migrategate-code"
TMP_VOLUME = "migrategate-tmp"
KINDS = ("Deployment", "StatefulSet", "DaemonSet")
#: The migrategate chart's code ConfigMap for a release named "migrategate".
DEFAULT_CODE_CONFIGMAP = "migrategate-code"

_SEPARATOR = re.compile(r"^---(?:[ \t].*)?$")
#: Nesting deeper than this is not built: a Kubernetes object is far shallower (a pod spec is
#: about 12 levels), and PyYAML's composer and dumper recurse per level. A deeper document
#: is still read down to here (its kind and name), written back unchanged if it is not
#: selected, refused if it is.
MAX_DEPTH = 100
#: Flow collections (``[[[...]]]``) deeper than this make the document unreadable: PyYAML's
#: scanner keeps a possible key per flow level and rechecks them all on every token, so
#: 5,000 levels would take a minute; libyaml stops at 1,000.
MAX_FLOW_DEPTH = 200
#: Aliases may stand for this many nodes in a document, or ALIAS_RATIO times the nodes it
#: really has if that is more (a chart that reuses an env list through an anchor is far
#: below both); beyond, the document is refused, as Go's yaml.v3 and libyaml-based loaders
#: do: "a: &a [x,x,...]  b: &b [*a,*a,...]" grows tenfold a line, and the gate is written
#: without aliases, so it would be expanded into the output (or, through "<<" merge keys,
#: already while loading).
ALIAS_FLOOR = 100_000
ALIAS_RATIO = 10


@dataclass
class InjectOptions:
    workloads: Sequence[str]
    code_configmap: str = DEFAULT_CODE_CONFIGMAP
    preset: Optional[str] = None
    timeout: Optional[str] = None
    interval: Optional[str] = None
    allow_ahead: bool = False
    env: Sequence[Tuple[str, str]] = ()
    python: str = "python"
    mount_path: str = "/opt/migrategate"
    python_path: Sequence[str] = ()
    source_files: Optional[Sequence[str]] = None  # package-relative paths; default: ours
    #: the gate's resources (None: GATE_RESOURCES)
    resources: Optional[Dict[str, Any]] = None
    patterns: List["re.Pattern[str]"] = field(default_factory=list, init=False)
    #: each pattern's alternatives ('dify-(api|beat)' -> 'dify-(?:api)', 'dify-(?:beat)'):
    #: every one must match a workload, or a mistyped name leaves a workload ungated
    alternatives: Dict[str, List["re.Pattern[str]"]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not self.workloads:
            raise ConfigError("inject needs at least one --workload REGEX",
                              "e.g. --workload 'dify-(api|worker|beat)'")
        for text in self.workloads:
            try:
                self.patterns.append(re.compile(text))
            except re.error as exc:
                raise ConfigError(f"--workload {text!r} is not a valid regular expression: "
                                  f"{exc}") from None
            variants = alternatives(text)
            if variants is None:
                raise ConfigError(
                    f"--workload {text!r} has more than {MAX_ALTERNATIVES} alternatives; "
                    "each must match a workload, and so many can't be checked",
                    "give one --workload per workload (repeatable)")
            try:
                self.alternatives[text] = [re.compile(v) for v in variants]
            except re.error:  # e.g. a backreference to a group the expansion un-named
                self.alternatives[text] = [self.patterns[-1]]
        self._check_wait_options()

    def _check_wait_options(self) -> None:
        """What the gate will pass to ``wait`` is parsed here, as ``wait`` parses it, so a
        typo fails the render (exit 2, naming the flag), not every pod's initContainer."""
        from .presets import load_preset
        from .settings import OPTIONS, _parse

        if self.timeout is not None:
            _parse(OPTIONS["timeout"], self.timeout, "--timeout")
        if self.interval is not None:
            interval = _parse(OPTIONS["interval"], self.interval, "--interval")
            if interval < 0.1:  # settings.resolve's rule
                raise ConfigError(f"--interval must be at least 0.1 s, got {interval:g}",
                                  "a poll costs the database a transaction; 1-2 s is plenty")
        if self.preset is not None:
            try:
                load_preset(self.preset)
            except ConfigError as exc:
                raise ConfigError(f"--preset: {exc.message}", exc.hint) from None


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            "migrategate inject needs PyYAML, which is not installed in this Python",
            "pip install PyYAML for the Python that runs inject (the Helm plugin: python3, "
            "or MIGRATEGATE_PYTHON) where helm runs; app images don't need it") from None
    return yaml


def split_documents(text: str) -> List[str]:
    """Split a YAML stream on document markers (a line that is ``---`` or ``--- ...``),
    keeping every character: ``"".join(split_documents(t)) == t``. Each piece after the
    first starts with its marker line."""
    pieces: List[str] = []
    current: List[str] = []
    for line in text.splitlines(keepends=True):
        if _SEPARATOR.match(line.rstrip("\r\n")) and current:
            pieces.append("".join(current))
            current = []
        current.append(line)
    if current:
        pieces.append("".join(current))
    return pieces


#: the post-renderer itself runs where helm runs, never in a pod: the chart's code
#: ConfigMap leaves it out (templates/_internal.tpl, migrategate.internal.sourceFiles)
NOT_SHIPPED = ("inject.py",)


def source_files() -> List[str]:
    """migrategate's own .py files a pod runs, package-relative ("presets/dify.py"),
    sorted: the chart ships the same files (files/migrategate is a symlink to the
    package), all but :data:`NOT_SHIPPED`."""
    root = os.path.dirname(os.path.abspath(__file__))
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in files:
            path = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            if name.endswith(".py") and path not in NOT_SHIPPED:
                out.append(path)
    return sorted(out)


def decode(data: bytes) -> str:
    """stdin's bytes as text: Kubernetes manifests are UTF-8, and a byte that is not is
    reported where it is (read with the locale's codec, it would make the document
    unreadable and so silently not gated)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the input is not UTF-8: byte 0x{data[exc.start]:02x} at "
                          f"{_position(data[:exc.start].decode('utf-8', 'replace'))} cannot "
                          "be decoded; nothing was written",
                          "Kubernetes manifests are UTF-8: re-encode the file or template "
                          "(e.g. iconv -f latin1 -t utf-8)") from None


def _position(before: str) -> str:
    line = before.count("\n") + 1
    return f"line {line}, column {len(before) - (before.rfind(chr(10)) + 1) + 1}"


def _check_text(text: str) -> None:
    """Text decoded with errors="surrogateescape" (or built by hand) carries lone
    surrogates where bytes were not UTF-8: refused like the bytes themselves."""
    bad = re.search("[\ud800-\udfff]", text)
    if bad:
        raise ConfigError(f"the input is not UTF-8: an undecodable byte (U+{ord(bad.group()):04X}"
                          f") at {_position(text[:bad.start()])}; nothing was written",
                          "Kubernetes manifests are UTF-8: re-encode the file or template")


def inject(text: str, options: InjectOptions,
           warn: Optional[Callable[[str], None]] = None) -> str:
    """The manifests with the gate added. ``warn`` hears what was left alone and why (a
    document that could not be read); the CLI passes stderr."""
    yaml = _yaml()
    _check_text(text)
    matched = {p.pattern: 0 for p in options.patterns}
    seen: List[str] = []
    names: List[str] = []  # the workloads' metadata.name, to check each alternative
    unreadable: List[str] = []
    out: List[str] = []
    line = 1
    for number, piece in enumerate(split_documents(text), 1):
        where = _where(number, line, piece)
        loaded = _load(yaml, piece, line, where)
        line += piece.count("\n")
        if loaded.error is not None:
            unreadable.append(where)
            if warn is not None:
                warn(f"{where} is not YAML that inject can read ({loaded.error}); written back "
                     "unchanged, without looking for workloads in it")
            out.append(piece)
            continue
        changed: List[str] = []
        for workload, target, label in _workloads(loaded.doc):
            seen.append(label)
            names.append(target)
            hits = [p for p in options.patterns if p.fullmatch(target)]
            if not hits:
                continue
            for p in hits:
                matched[p.pattern] += 1
            _check_workload(workload, f"{label} in {where}")
            theirs = _migrategate_container(workload["spec"]["template"]["spec"])
            if theirs is not None:
                if warn is not None:
                    warn(f"{label} in {where} already runs migrategate ({theirs}), so it "
                         "is gated already; left unchanged (a wait gate in front of "
                         "migrategate's own upgrade would wait for an upgrade it keeps from "
                         "starting)")
                continue
            _add_gate(workload, options)
            changed.append(label)
        if not changed:
            out.append(piece)
            continue
        if loaded.truncated:
            raise ConfigError(f"{changed[0]} in {where} nests deeper than {MAX_DEPTH} levels; "
                              "inject cannot rewrite a document that deep",
                              "no Kubernetes object needs that: check what renders it")
        if loaded.cyclic:
            raise ConfigError(f"{changed[0]} in {where} contains itself through a YAML alias "
                              "(an &anchor used inside its own value); it has no YAML or JSON "
                              "form Kubernetes can read", "check what renders it")
        out.append(_dump(yaml, piece, loaded.doc))
    missing = [pattern for pattern, n in matched.items() if n == 0]
    if not missing:
        unmatched = [f"{alt.pattern!r} (of {pattern!r})"
                     for pattern, alts in options.alternatives.items() if len(alts) > 1
                     for alt in alts if not any(alt.fullmatch(name) for name in names)]
        if unmatched:
            raise ConfigError(
                f"--workload alternative {', '.join(unmatched)} matched no workload in the "
                f"input (found: {', '.join(seen)}): a workload you meant to gate would start "
                "ungated; nothing was written",
                "fix the name (each alternative of a pattern must match), or give one "
                "--workload per workload")
    if missing:
        found = ", ".join(seen) or "no Deployment, StatefulSet or DaemonSet at all"
        if unreadable:
            found += f"; not readable, so not looked into: {', '.join(unreadable)}"
        raise ConfigError(
            f"--workload {', '.join(repr(m) for m in missing)} matched no workload in the "
            f"input (found: {found}); nothing was written",
            "patterns match the whole metadata.name (e.g. --workload dify-api --workload "
            "dify-worker, or '.*-api'); check the release name")
    return "".join(out)


MAX_ALTERNATIVES = 64

#: the gate's resources unless --resources says otherwise: requests == limits, so an app
#: whose containers are Guaranteed stays Guaranteed and a quota on limits admits the pod;
#: the chart's gate.resources default is the same (a test holds them together)
GATE_RESOURCES: Dict[str, Dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "192Mi"},
    "limits": {"cpu": "250m", "memory": "192Mi"},
}


def alternatives(pattern: str) -> Optional[List[str]]:
    """The pattern's alternatives, each a regex of its own: every top-level ``|`` and every
    ``|`` of a group that is not repeated, a lookaround or a character class is expanded
    ('dify-(api|worker)' -> 'dify-(?:api)', 'dify-(?:worker)'). None when there would be
    more than :data:`MAX_ALTERNATIVES`. What can't be expanded stays as written (a
    repeated group '(a|b)+' is one alternative)."""
    variants = _expand(pattern)
    return None if variants is None or len(variants) > MAX_ALTERNATIVES else variants


def _expand(text: str) -> Optional[List[str]]:
    branches = _split_top(text, "|")
    out: List[str] = []
    for branch in branches:
        expanded = _expand_sequence(branch)
        if expanded is None:
            return None
        out.extend(expanded)
        if len(out) > MAX_ALTERNATIVES:
            return None
    return out


def _expand_sequence(text: str) -> Optional[List[str]]:
    """A branch without top-level ``|``: its groups expanded, the rest kept."""
    variants = [""]
    k = 0
    while k < len(text):
        ch = text[k]
        if ch == "\\":
            piece, k = text[k:k + 2], k + 2
            variants = [v + piece for v in variants]
            continue
        if ch == "[":
            end = _class_end(text, k)
            piece, k = text[k:end], end
            variants = [v + piece for v in variants]
            continue
        if ch != "(":
            variants = [v + ch for v in variants]
            k += 1
            continue
        end = _group_end(text, k)
        group = text[k:end]
        quantified = end < len(text) and text[end] in "*+?{"
        head = re.match(r"\((\?(:|P<\w+>|<\w+>))?", group)
        assert head is not None
        if quantified or group.startswith(("(?=", "(?!", "(?<=", "(?<!")) or (
                group.startswith("(?") and not head.group(1)):
            variants = [v + group for v in variants]  # kept whole
            k = end
            continue
        inner = _expand(group[len(head.group(0)):-1])
        if inner is None:
            return None
        variants = [v + "(?:" + alt + ")" for v in variants for alt in inner]
        if len(variants) > MAX_ALTERNATIVES:
            return None
        k = end
    return variants


def _class_end(text: str, start: int) -> int:
    k = start + 1
    if k < len(text) and text[k] == "^":
        k += 1
    if k < len(text) and text[k] == "]":
        k += 1
    while k < len(text) and text[k] != "]":
        k += 2 if text[k] == "\\" else 1
    return min(k + 1, len(text))


def _structure(text: str, start: int = 0) -> Iterator[Tuple[int, str, int]]:
    """(position, character, nesting depth after it) of each ``(``, ``)`` and ``|`` that is
    syntax: escapes and character classes are stepped over."""
    depth, k = 0, start
    while k < len(text):
        ch = text[k]
        if ch == "\\":
            k += 2
            continue
        if ch == "[":
            k = _class_end(text, k)
            continue
        if ch in "()|":
            depth += {"(": 1, ")": -1}.get(ch, 0)
            yield k, ch, depth
        k += 1


def _group_end(text: str, start: int) -> int:
    for k, ch, depth in _structure(text, start):
        if ch == ")" and depth == 0:
            return k + 1
    return len(text)


def _split_top(text: str, sep: str) -> List[str]:
    parts, begin = [], 0
    for k, ch, depth in _structure(text):
        if ch == sep and depth == 0:
            parts.append(text[begin:k])
            begin = k + 1
    parts.append(text[begin:])
    return parts


def parse_resources(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """``--resources`` JSON: a mapping of requests/limits to quantities, checked here so a
    typo fails the render, not the API server's admission of every pod."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--resources is not JSON: {exc}",
                          'e.g. --resources \'{"requests": {"cpu": "100m"}}\'') from None
    if not isinstance(value, dict) or not set(value) <= {"requests", "limits"} or not all(
            isinstance(v, dict) and all(isinstance(q, (str, int, float)) for q in v.values())
            for v in value.values()):
        raise ConfigError("--resources must be a mapping of 'requests' and/or 'limits' to "
                          "quantities", 'e.g. {"limits": {"memory": "256Mi"}}')
    return value


def _where(number: int, line: int, piece: str) -> str:
    """"document 3 (line 58, dify/templates/api.yaml)": Helm's ``# Source:`` when there is one."""
    source = re.search(r"^#\s*Source:\s*(\S.*?)\s*$", piece, re.MULTILINE)
    return f"document {number} (line {line}{', ' + source.group(1) if source else ''})"


@dataclass
class _Loaded:
    doc: Any = None
    #: why the document could not be read; never a snippet of it (it may hold a secret)
    error: Optional[str] = None
    truncated: bool = False  # nested deeper than MAX_DEPTH: the deep part was not built
    cyclic: bool = False  # an alias inside its own anchor's value


class _TooManyAliases(Exception):
    """Raised by the loader; _load names the document (a ConfigError, exit 2)."""


def _load(yaml: Any, piece: str, line: int, where: str) -> _Loaded:
    loader = _loader_class(yaml)(piece)
    try:
        doc = loader.get_single_data()
    except _TooManyAliases as exc:
        raise ConfigError(f"{where} uses YAML aliases that stand for more than {exc} nodes "
                          f"(over {ALIAS_RATIO} times what it holds): an alias bomb, refused",
                          "write the values out, or reuse fewer anchors") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {line + mark.line}, column {mark.column + 1}" if mark else ""
        return _Loaded(error=f"{exc.problem or exc.context or type(exc).__name__}{at}")
    except yaml.reader.ReaderError as exc:
        return _Loaded(error=f"character #x{exc.character:04x}, which YAML does not allow")
    except yaml.YAMLError as exc:
        return _Loaded(error=type(exc).__name__)
    except (ValueError, OverflowError) as exc:  # e.g. an integer of 5,000 digits
        return _Loaded(error=f"a value Python cannot build: {type(exc).__name__}")
    finally:
        loader.dispose()
    return _Loaded(doc, truncated=loader.mg_truncated, cyclic=loader.mg_cyclic)


_LOADER: Any = None


def _loader_class(yaml: Any) -> Any:
    """PyYAML's safe loader, with three limits kept while composing:

    - nesting deeper than MAX_DEPTH is skipped, event by event (no recursion), and stands as
      null; ``truncated`` says so; flow nesting deeper than MAX_FLOW_DEPTH is an error;
    - an alias that points into its own, still open, anchor sets ``cyclic``;
    - the nodes aliases stand for (counted expanded) are bounded: ALIAS_FLOOR, ALIAS_RATIO;
    - timestamps stay strings, as Kubernetes reads them (``2020-13-45`` is not a date).
    """
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    events = yaml.events

    class Loader(yaml.SafeLoader):
        # attributes are mg_*: PyYAML's mixins share one namespace (Scanner has "done")
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self.mg_depth = 0
            #: id of each node composed in full -> its size with aliases expanded
            self.mg_sizes: Dict[int, int] = {}
            self.mg_nodes = 0  # nodes composed
            self.mg_aliased = 0  # nodes that aliases stand for
            self.mg_truncated = False
            self.mg_cyclic = False

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(events.AliasEvent):
                node = self.anchors.get(self.peek_event().anchor)
                if node is not None:
                    size = self.mg_sizes.get(id(node))
                    if size is None:  # its anchor is still open: the alias is inside it
                        self.mg_cyclic = True
                    self.mg_aliased += size or 1
                    if self.mg_aliased > max(ALIAS_FLOOR, ALIAS_RATIO * self.mg_nodes):
                        raise _TooManyAliases(max(ALIAS_FLOOR, ALIAS_RATIO * self.mg_nodes))
                return super().compose_node(parent, index)
            if self.mg_depth >= MAX_DEPTH:
                self.mg_truncated = True
                return self.mg_skip()
            self.mg_depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self.mg_depth -= 1
            sizes = self.mg_sizes
            size = 1
            if isinstance(node, yaml.SequenceNode):
                size += sum(sizes.get(id(item), 1) for item in node.value)
            elif isinstance(node, yaml.MappingNode):
                size += sum(sizes.get(id(k), 1) + sizes.get(id(v), 1) for k, v in node.value)
            sizes[id(node)] = size
            self.mg_nodes += 1
            return node

        def fetch_flow_collection_start(self, token_class: Any) -> None:
            if self.flow_level >= MAX_FLOW_DEPTH:
                mark = self.get_mark()
                raise yaml.scanner.ScannerError(
                    None, None, f"flow collections nest deeper than {MAX_FLOW_DEPTH} levels",
                    mark)
            super().fetch_flow_collection_start(token_class)

        def mg_skip(self) -> Any:
            first = self.peek_event()
            node = yaml.ScalarNode("tag:yaml.org,2002:null", "", first.start_mark,
                                   first.end_mark)
            self.mg_sizes[id(node)] = 1
            level = 0
            while True:
                event = self.get_event()
                if not isinstance(event, events.AliasEvent) and \
                        getattr(event, "anchor", None) is not None:
                    self.anchors[event.anchor] = node
                if isinstance(event, (events.SequenceStartEvent, events.MappingStartEvent)):
                    level += 1
                elif isinstance(event, (events.SequenceEndEvent, events.MappingEndEvent)):
                    level -= 1
                if level == 0:
                    return node

    Loader.add_constructor("tag:yaml.org,2002:timestamp",
                           yaml.constructor.SafeConstructor.construct_yaml_str)
    _LOADER = Loader
    return Loader


def _workloads(doc: Any) -> List[Tuple[Dict[str, Any], str, str]]:
    """(workload, its name, how to call it) for the document, or for each item of a ``kind:
    List`` (or ``DeploymentList`` ...: what ``kubectl get -o yaml`` writes), so a workload
    inside a list is gated like any other."""
    name = _workload_name(doc)
    if name is not None:
        return [(doc, name, f"{doc['kind']}/{name}")]
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if not (isinstance(kind, str) and kind.endswith("List")
            and isinstance(doc.get("items"), list)):
        return []
    found = []
    for item in doc["items"]:
        name = _workload_name(item)
        if name is not None:
            found.append((item, name, f"{item['kind']}/{name} (in a {kind})"))
    return found


def _workload_name(doc: Any) -> Optional[str]:
    """The name of a Deployment/StatefulSet/DaemonSet; whether it can be gated is checked
    once it is selected (_check_workload), so a broken one is refused, not skipped."""
    if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
        return None
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _check_workload(workload: Dict[str, Any], label: str) -> None:
    """Refuse (exit 2, with the path) a selected workload whose pod spec the gate cannot be
    built from or added to. Only the kind of a bad value is named, never the value."""
    def refuse(path: str, problem: str) -> None:
        raise ConfigError(f"{label}: {path} {problem}, so inject cannot add its gate",
                          "fix the template that renders it (Kubernetes would refuse it "
                          "too), or leave it out of --workload")

    spec = workload.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    where = "spec.template.spec"
    if not isinstance(pod, dict):
        return refuse(where, f"is {_kind_of(pod)}, not a pod spec")
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        return refuse(f"{where}.containers", f"is {_kind_of(containers)}, not a list of "
                      "containers")
    for key in ("containers", "initContainers", "volumes"):
        bad = _not_mappings(f"{where}.{key}", pod.get(key))
        if bad:
            return refuse(*bad)
    app = containers[0]
    where += ".containers[0]"
    if not isinstance(app.get("image"), str) or not app["image"].strip():
        return refuse(f"{where}.image", "is missing (the gate runs in the first container's "
                      "image)")
    for key in ("env", "envFrom"):
        bad = _not_mappings(f"{where}.{key}", app.get(key))
        if bad:
            return refuse(*bad)
    for i, item in enumerate(app.get("env") or ()):
        if not isinstance(item.get("name"), str):
            return refuse(f"{where}.env[{i}].name", f"is {_kind_of(item.get('name'))}, "
                          "not a string")
        if item["name"] == "PYTHONPATH" and \
                not isinstance(item.get("value"), (str, type(None))):
            return refuse(f"{where}.env[{i}] (PYTHONPATH).value",
                          f"is {_kind_of(item['value'])}, not a string")
    for key in ("securityContext",):
        if app.get(key) is not None and not isinstance(app[key], dict):
            return refuse(f"{where}.{key}", f"is {_kind_of(app[key])}, not a mapping")
    return None


def _migrategate_container(pod: Dict[str, Any]) -> Optional[str]:
    """Which container of the pod runs migrategate, if one does: the migrategate chart's
    helpers (``migrategate-upgrade``, ``migrategate-wait``; _public.tpl), an earlier run of
    inject, or a container whose command is ``migrategate`` or ``python -m migrategate``.
    Such a workload is skipped: a wait gate put before ``migrategate-upgrade`` waits for the
    upgrade that the gate keeps from starting (the pod never starts), and one before a wait
    is a second wait."""
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            name = container.get("name")
            command = container.get("command")
            command = command if isinstance(command, list) else []
            args = container.get("args")
            tokens = [str(t) for t in command + (args if isinstance(args, list) else [])]
            runs = (isinstance(name, str) and name.startswith("migrategate")) or (
                bool(command) and str(command[0]).rsplit("/", 1)[-1] == "migrategate") or any(
                a == "-m" and (b == "migrategate" or b.startswith("migrategate."))
                for a, b in zip(tokens, tokens[1:]))
            if runs:
                return f"{key[:-1]} {name!r}" if isinstance(name, str) else key[:-1]
    return None


def _not_mappings(where: str, items: Any) -> Optional[Tuple[str, str]]:
    """(where, what is wrong) when ``items`` is present but not a list of mappings."""
    if items is None:
        return None
    if not isinstance(items, list):
        return where, f"is {_kind_of(items)}, not a list"
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            return f"{where}[{i}]", f"is {_kind_of(item)}, not a mapping"
    return None


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _dump(yaml: Any, original: str, doc: Any) -> str:
    """The marker line and leading comments (e.g. Helm's ``# Source:``) of the original,
    then the changed document. A marker line that carries the start of the document itself
    (``--- {a: 1}``, ``--- !!map``, ``--- |``) is written as a bare ``---``: the document
    follows in full."""
    head: List[str] = []
    for line in original.splitlines(keepends=True):
        stripped = line.strip()
        if _SEPARATOR.match(line.rstrip("\r\n")) and not head:
            rest = stripped[3:].strip()
            if rest and not rest.startswith("#"):
                head.append("---\n")
                break
            head.append(line if line.endswith("\n") else line + "\n")
        elif stripped.startswith("#") or not stripped:
            head.append(line if line.endswith("\n") else line + "\n")
        else:
            break

    class NoAliases(yaml.SafeDumper):  # the gate copies the app's env: no &id001 anchors
        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump(doc, Dumper=NoAliases, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 16)
    return "".join(head) + body


def _add_gate(doc: Dict[str, Any], options: InjectOptions) -> None:
    pod = doc["spec"]["template"]["spec"]
    app = pod["containers"][0]
    # (a pod that already has a migrategate-wait was skipped: _migrategate_container)
    pod["initContainers"] = [_gate(app, options)] + list(pod.get("initContainers") or [])
    volumes = [v for v in (pod.get("volumes") or [])
               if v.get("name") not in (CODE_VOLUME, TMP_VOLUME)]
    pod["volumes"] = volumes + _volumes(options)


def _gate(app: Dict[str, Any], options: InjectOptions) -> Dict[str, Any]:
    args = ["wait"]
    if options.timeout is not None:
        args += ["--timeout", str(options.timeout)]
    if options.interval is not None:
        args += ["--interval", str(options.interval)]
    if options.allow_ahead:
        args.append("--allow-ahead")
    gate: Dict[str, Any] = {"name": GATE, "image": app.get("image")}
    if "imagePullPolicy" in app:
        gate["imagePullPolicy"] = app["imagePullPolicy"]
    gate["command"] = [options.python, "-m", "migrategate"]
    gate["args"] = args
    gate["env"] = _env(app.get("env") or [], options)
    if app.get("envFrom"):
        gate["envFrom"] = copy.deepcopy(app["envFrom"])
    gate["volumeMounts"] = [
        {"name": TMP_VOLUME, "mountPath": "/tmp"},
        {"name": CODE_VOLUME, "mountPath": f"{options.mount_path.rstrip('/')}/migrategate",
         "readOnly": True},
    ]
    if app.get("securityContext"):
        gate["securityContext"] = copy.deepcopy(app["securityContext"])
    gate["resources"] = copy.deepcopy(GATE_RESOURCES if options.resources is None
                                      else options.resources)
    gate["terminationMessagePath"] = "/dev/termination-log"
    gate["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return gate


def _env(app_env: List[Dict[str, Any]], options: InjectOptions) -> List[Dict[str, Any]]:
    """The app container's env, then ours (ours replace same-named entries; an app's literal
    PYTHONPATH is kept after migrategate's mount path; ``--env`` wins over everything)."""
    path = [options.mount_path, *options.python_path]
    app_path = next((e.get("value") for e in app_env if e.get("name") == "PYTHONPATH"), None)
    if app_path:
        path.append(app_path)
    ours: Dict[str, str] = {}
    if options.preset:
        ours["MIGRATEGATE_PRESET"] = options.preset
    ours.update({"MIGRATEGATE_TERMINATION_LOG": "/dev/termination-log",
                 "PYTHONPATH": ":".join(path), "PYTHONDONTWRITEBYTECODE": "1",
                 "PYTHONUNBUFFERED": "1"})
    ours.update(dict(options.env))
    kept = [copy.deepcopy(e) for e in app_env if e.get("name") not in ours]
    return kept + [{"name": name, "value": value} for name, value in ours.items()]


def _volumes(options: InjectOptions) -> List[Dict[str, Any]]:
    files = options.source_files if options.source_files is not None else source_files()
    return [
        {"name": TMP_VOLUME, "emptyDir": {}},
        {"name": CODE_VOLUME, "configMap": {
            "name": options.code_configmap,
            "defaultMode": 0o444,
            "items": [{"key": path.replace("/", "."), "path": path} for path in files],
        }},
    ]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def parse_env(items: Sequence[str]) -> List[Tuple[str, str]]:
    """``--env NAME=VALUE`` items. An error names the NAME only: the value may be a secret
    (and so may an item without "=" that is not a plain name: a value given by mistake)."""
    out = []
    for number, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if sep and _ENV_NAME.fullmatch(name):
            out.append((name, value))
            continue
        if not sep:
            shown = repr(item) if _ENV_NAME.fullmatch(item) else f"number {number}"
            problem = "has no '='"
        elif name:
            shown, problem = f"{name + '=...'!r}", f"has a name, {name!r}, that is not valid"
        else:
            shown, problem = f"number {number}", "has an empty name"
        raise ConfigError(f"--env {shown} is not NAME=VALUE: it {problem} (the value is not "
                          "shown)", "names are letters, digits, '_', '.', '-', not starting "
                          "with a digit; e.g. --env MIGRATEGATE_WAIT_TIMEOUT=900")
    return out
