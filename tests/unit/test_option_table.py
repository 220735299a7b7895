"""One option table (settings.OPTIONS): the CLI, the environment, the library and the chart's
values.schema.json accept and refuse the same values, and the README documents each option.

The chart's value -> option mapping is read from the templates themselves (which value
becomes which flag or MIGRATEGATE_* variable), so a new chart value that maps to an option
is held to the option's bounds without editing this file.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple

import jsonschema
import pytest

import migrategate
from migrategate import cli
from migrategate.errors import ConfigError
from migrategate.registry import COMMANDS
from migrategate.report import Result
from migrategate.settings import DB_COMMANDS, OPTIONS, Option, Settings, resolve

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "migrategate"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
NUMERIC = [o for o in OPTIONS.values() if o.kind in ("seconds", "count")]


# ------------------------------------------------------------------ the table itself

def test_every_setting_is_an_option_with_the_same_default():
    not_options = {"url", "sources", "secrets", "behind_proxy", "resume_failed"}
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert set(fields) - not_options == set(OPTIONS) - {"database_url", "password_file",
                                                        "password"}
    for name in set(fields) - not_options:
        default = fields[name].default
        if OPTIONS[name].default is None and OPTIONS[name].shown_default:
            continue  # computed at run time (application_name)
        assert default == OPTIONS[name].default, name


@pytest.mark.parametrize("opt", NUMERIC, ids=lambda o: o.name)
def test_numeric_options_have_bounds_and_a_default_inside_them(opt):
    assert opt.minimum is not None, "a number without a lower bound"
    if opt.default is not None:
        assert opt.minimum <= opt.default <= (opt.maximum or opt.default)


def test_the_tables_commands_are_the_registrys():
    assert DB_COMMANDS == tuple(COMMANDS)


def test_dialect_options_name_their_databases():
    for opt in OPTIONS.values():
        assert bool(opt.dialects) == bool(opt.dialect_label), opt.name
        assert set(opt.commands) <= set(COMMANDS), opt.name


# ------------------------------------------------------------------ flags and keywords

def _subparsers() -> Dict[str, Any]:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_flags_are_the_commands_options(command):
    parser = _subparsers()[command]
    actions = {a.option_strings[0]: a for a in parser._actions
               if a.option_strings and a.dest not in ("help", "debug")}
    options = {o.flag_name: o for o in COMMANDS[command].options if o.flag is not None}
    assert set(actions) == set(options)
    for flag, opt in options.items():
        action = actions[flag]
        assert action.dest == opt.name
        if opt.kind == "bool":
            assert action.nargs == 0 and action.const is True and action.default is None
        else:
            assert action.metavar == opt.metavar, flag
        if opt.kind == "list":
            assert type(action).__name__ == "_AppendAction", flag


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_library_keywords_are_the_commands_options(command):
    params = inspect.signature(getattr(migrategate, command)).parameters
    assert all(p.kind is p.KEYWORD_ONLY and p.default is None for p in params.values())
    assert set(params) - {"env"} == {o.name for o in COMMANDS[command].options if o.library}


# ------------------------------------------------------------------ the chart's values

_VAR = re.compile(r"\$(\w+) := \.values\.([\w.]+)")
_FLAG = re.compile(r'"(--[a-z-]+)"\s+\(toString\s+(?:\(\w+\s+)?([$.\w]+)\)')
_SWITCH = re.compile(r'if ([$.\w]+) -\}\}\s*\{\{- \$args = append \$args "(--[a-z-]+)"')
_ENV_WITH = re.compile(r"with \$v\.([\w.]+) \}\}\s*- name: (MIGRATEGATE_\w+)")
_ENV_VALUE = re.compile(r"- name: (MIGRATEGATE_\w+)\s*value: \{\{ toString \$v\.([\w.]+)")


def _path(expr: str, variables: Dict[str, str]) -> str:
    """``$u.pgLockTimeout`` / ``.values.gate.allowAhead`` -> ``upgrade.pgLockTimeout``."""
    if expr.startswith(".values."):
        return expr[len(".values."):]
    var, _, rest = expr[1:].partition(".")
    return f"{variables[var]}.{rest}" if variables.get(var) else rest


def chart_options() -> Dict[str, Option]:
    """values path -> option, as the templates turn values into flags and environment."""
    by_flag = {o.flag_name: o for o in OPTIONS.values()}
    by_env = {e: o for o in OPTIONS.values() for e in o.envs}
    found: Dict[str, Option] = {}
    for tpl in sorted((CHART / "templates").glob("*.tpl")):
        text = tpl.read_text()
        variables = {k: v for k, v in _VAR.findall(text)}
        variables["v"] = ""  # $v := .values
        for flag, expr in _FLAG.findall(text):
            found[_path(expr, variables)] = by_flag[flag]
        for expr, flag in _SWITCH.findall(text):
            found[_path(expr, variables)] = by_flag[flag]
        for path, env in _ENV_WITH.findall(text):
            found[path] = by_env[env]
        for env, path in _ENV_VALUE.findall(text):
            found[path] = by_env[env]
    return found


def _subschema(path: str) -> Dict[str, Any]:
    node = SCHEMA
    for key in path.split("."):
        node = node["properties"][key]
    return node


def test_the_templates_map_the_values_we_know_of():
    mapped = {path: o.name for path, o in chart_options().items()}
    assert mapped.items() >= {
        "upgrade.lockTimeout": "lock_timeout", "upgrade.pgLockTimeout": "pg_lock_timeout",
        "upgrade.mysqlLockWaitTimeout": "mysql_lock_wait_timeout",
        "upgrade.lockRetries": "lock_retries", "upgrade.statementTimeout": "statement_timeout",
        "gate.timeout": "timeout", "gate.interval": "interval",
        "gate.allowAhead": "allow_ahead", "connectTimeout": "connect_timeout",
        "migrations.directory": "migrations", "migrations.expectTables": "expect_tables",
        "lockName": "lock_name", "preset": "preset",
    }.items()


_TYPES = {"str": "string", "seconds": "number", "count": "integer", "bool": "boolean",
          "list": "array"}


@pytest.mark.parametrize("path", sorted(chart_options()))
def test_chart_value_has_its_options_type(path):
    opt = chart_options()[path]
    schema = dict(_subschema(path))
    if "$ref" in schema:
        schema = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    assert _TYPES[opt.kind] in types, (path, opt.name, types)


def probes(opt: Option) -> List[Any]:
    lo, hi = opt.minimum or 0, opt.maximum
    values = {-1, 0, 1e-05, 0.0005, 0.001, 0.05, 0.1, 0.5, 1, 1.5, 2, 60, 1000, 1001,
              2147483, 2147484, 31536000, 31536001, lo, lo / 2, lo - 1}
    if hi is not None:
        values |= {hi, hi + 0.5, hi + 1}
    return sorted(values)


def _in_bounds(opt: Option, value: Any) -> bool:
    if opt.kind == "count" and float(value) != int(value):
        return False
    return opt.minimum <= value <= (opt.maximum if opt.maximum is not None else value)


def _text(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@pytest.fixture()
def no_database(monkeypatch):
    """Every command resolves its settings and then returns at once: only the options
    are on trial here, never a database."""
    for name, command in COMMANDS.items():
        def run(settings, writer, env, debug, name=name):
            return Result(name, outcome="ok", exit_code=0, message="options accepted")
        monkeypatch.setitem(COMMANDS, name, dataclasses.replace(command, run=run))


def _cli(command: str, argv: List[str], env: Dict[str, str]) -> bool:
    code = cli.run([command, *argv, "--termination-log", ""], env)
    assert code in (0, 2)
    return code == 0


def _library(command: str, opt: Option, value: Any) -> bool:
    typed = int(value) if opt.kind == "count" and float(value).is_integer() else value
    try:
        getattr(migrategate, command)(**{opt.name: typed}, env={})
    except ConfigError:
        return False
    return True


def _schema_accepts(path: str, value: Any) -> bool:
    doc: Dict[str, Any] = {}
    node = doc
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = int(value) if float(value).is_integer() else value
    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError:
        return False
    return True


def _cases() -> List[Tuple[Option, Any]]:
    return [(o, v) for o in NUMERIC for v in probes(o)]


@pytest.mark.parametrize("opt,value", _cases(),
                         ids=[f"{o.name}={_text(v)}" for o, v in _cases()])
def test_flag_env_library_and_chart_accept_the_same_values(opt, value, no_database, capsys):
    command = opt.commands[0]
    expected = _in_bounds(opt, value)
    text = _text(value)

    assert _cli(command, [opt.flag_name, text], {}) is expected, "flag"
    for var in opt.envs:
        assert _cli(command, [], {var: text}) is expected, var
    assert _library(command, opt, value) is expected, "library"
    for path, mapped in chart_options().items():
        if mapped is opt:
            assert _schema_accepts(path, value) is expected, f"chart {path}"


@pytest.mark.parametrize("opt", NUMERIC, ids=lambda o: o.name)
def test_a_value_out_of_bounds_says_the_bounds_whatever_its_source(opt):
    below = opt.minimum / 2 if 0 < opt.minimum < 1 else opt.minimum - 1
    messages = []
    for flags, env in (({opt.name: _text(below)}, {}), ({}, {opt.envs[0]: _text(below)})):
        with pytest.raises(ConfigError) as err:
            resolve(flags, env)
        messages.append(err.value.one_line())
    assert all(f"must be at least {opt.minimum:g}" in m or "must be from" in m
               for m in messages), messages
    assert messages[0].replace(f"--{opt.name.replace('_', '-')}", "X") \
        == messages[1].replace(f"env {opt.envs[0]}", "X")


# ------------------------------------------------------------------ the README

def _readme_rows() -> List[List[str]]:
    text = (ROOT / "README.md").read_text()
    start = text.index("| option | env | default |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def _row(opt: Option) -> List[str]:
    rows = _readme_rows()
    if opt.flag is None:
        found = [r for r in rows if r[0].startswith("(env only)") and opt.envs[0] in r[1]]
    else:
        found = [r for r in rows if re.match(rf"`{re.escape(opt.flag_name)}[ `]", r[0])]
    assert len(found) == 1, f"README options table: no single row for {opt.flag_name}"
    return found[0]


@pytest.mark.parametrize("opt", list(OPTIONS.values()), ids=lambda o: o.name)
def test_the_readme_documents_each_option(opt):
    flag_cell, env_cell, default_cell = _row(opt)
    for var in opt.envs:
        assert f"`{var}`" in env_cell, var
    shown = ("—", "none") if opt.default_text == "none" else (opt.default_text,)
    cell = default_cell.replace("`", "")
    assert any(re.match(rf"{re.escape(d)}(?![\w.])", cell) for d in shown), (shown, cell)
    if set(opt.commands) != set(COMMANDS):
        assert f"({', '.join(opt.commands)}" in flag_cell, flag_cell
    if opt.dialect_label:
        assert opt.dialect_label in flag_cell, flag_cell
    if opt.metavar and opt.flag is not None:
        assert f"`{opt.flag_name} {opt.metavar}`" in flag_cell, flag_cell


def test_the_readme_documents_no_option_that_is_not_there():
    flags = {o.flag_name for o in OPTIONS.values()}
    for row in _readme_rows():
        documented = re.match(r"`(--[a-z0-9-]+)", row[0])
        assert documented is None or documented.group(1) in flags, row[0]


def test_cli_help_names_the_tables_defaults():
    """Where a flag's help gives a default, it is the table's."""
    for opt in OPTIONS.values():
        for command in opt.commands:
            text = opt.help_for(command) or ""
            said = re.search(r"default:? ([^;),]+)", text)
            if said and opt.kind in ("seconds", "count", "str") and opt.default is not None:
                assert said.group(1).split()[0] == opt.default_text, (opt.name, said.group(1))
