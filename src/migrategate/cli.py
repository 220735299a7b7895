"""argparse → command → render. The only place that maps exceptions to exit codes.

Imports stay lazy: ``migrategate --help`` and a ``wait`` poll in an
initContainer should not pay for SQLAlchemy and Alembic before they need them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Dict, List, Mapping, Optional

from .errors import EXIT_CODES, MigrategateError

from ._version import __version__

from .registry import COMMANDS as REGISTRY

COMMANDS = tuple(REGISTRY)


def _exit_table() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """Remembers the usage error, so ``--json`` can still print its one document."""

    last_error = ""

    def error(self, message: str) -> Any:  # type: ignore[override]
        _Parser.last_error = message
        super().error(message)


class _CommandParser(_Parser):
    """A subcommand's parser: an argument it doesn't know is its usage error, with its usage
    (argparse would hand it up to the top-level parser, which prints the top-level usage)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error("unrecognized arguments: " + " ".join(extras))
        return parsed, extras


_GROUPS = {"database": "database and migrations (each also from MIGRATEGATE_<NAME>)",
           "output": "output"}


def _add_option(container: Any, opt: Any, command: str = "") -> None:
    """One option of the table (settings.OPTIONS) as an argparse argument."""
    kwargs: Dict[str, Any] = {"dest": opt.name, "help": opt.help_for(command)}
    if opt.kind == "bool":
        kwargs.update(action="store_true", default=None)
    else:
        kwargs["metavar"] = opt.metavar
        if opt.choices:
            kwargs["choices"] = opt.choices
        if opt.kind == "list":
            kwargs["action"] = "append"
    container.add_argument(opt.flag_name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The flags come from the option table: ``settings.OPTIONS`` (one row per option)."""
    from .settings import OPTIONS

    common = _CommandParser(add_help=False)
    groups = {key: common.add_argument_group(title) for key, title in _GROUPS.items()}
    mutex: Dict[str, Any] = {}
    for opt in OPTIONS.values():
        if not opt.group or opt.flag is None:
            continue
        container = groups[opt.group]
        if opt.mutex:
            if opt.mutex not in mutex:
                mutex[opt.mutex] = container.add_mutually_exclusive_group()
            container = mutex[opt.mutex]
        _add_option(container, opt)
    groups["output"].add_argument("--debug", action="store_true",
                                  help="show tracebacks (secrets masked)")

    parser = _Parser(
        prog="migrategate",
        description="Apply Alembic migrations under a database lock and exit 0 only when "
                    "the database is verified at the target.",
        epilog=_exit_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"migrategate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True

    for command in REGISTRY.values():
        p = sub.add_parser(command.name, parents=[common], help=command.help,
                           description=command.help, epilog=_exit_table(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for opt in command.options:
            if not opt.group and opt.flag is not None:
                _add_option(p, opt, command.name)
    _add_inject(sub)
    return parser


def _add_inject(sub: Any) -> None:
    """`inject`: a post-renderer (stdin -> stdout); no database settings, so no common flags."""
    inj = sub.add_parser(
        "inject", help="post-renderer: add the 'migrategate wait' gate to workloads (stdin -> "
                       "stdout)",
        description="Read Kubernetes manifests on stdin, prepend a migrategate-wait "
                    "initContainer to each Deployment/StatefulSet/DaemonSet whose name matches "
                    "a --workload pattern, write them on stdout. Needs PyYAML "
                    "(pip install PyYAML; see docs/dify.md).")
    inj.add_argument("--workload", dest="workloads", action="append", default=[],
                     metavar="REGEX", help="workload name pattern, matched against the whole "
                                           "name (repeatable; each must match something)")
    inj.add_argument("--code-configmap", metavar="NAME", default="migrategate-code",
                     help="ConfigMap with migrategate's source, created by the migrategate "
                          "chart (default: migrategate-code, release 'migrategate')")
    inj.add_argument("--preset", metavar="NAME", help="MIGRATEGATE_PRESET for the gate, e.g. dify")
    inj.add_argument("--timeout", metavar="S", help="wait --timeout (default: wait's 600)")
    inj.add_argument("--interval", metavar="S", help="wait --interval (default: wait's 2)")
    inj.add_argument("--allow-ahead", action="store_true", help="wait --allow-ahead")
    inj.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                     help="more env for the gate, e.g. MIGRATEGATE_MIGRATIONS=/app/api/migrations")
    inj.add_argument("--python", default="python", help="the image's Python (default python)")
    inj.add_argument("--mount-path", default="/opt/migrategate", metavar="DIR",
                     help="where the source is mounted and put on PYTHONPATH")
    inj.add_argument("--python-path", action="append", default=[], metavar="DIR",
                     help="more PYTHONPATH entries (repeat the image's own PYTHONPATH here)")
    inj.add_argument("--resources", metavar="JSON",
                     help="the gate's resources as JSON (default: requests = limits = "
                          "250m CPU, 192Mi memory; '{}' for none)")
    inj.add_argument("--debug", action="store_true", help="show tracebacks")


def _run_inject(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .inject import InjectOptions, decode, inject, parse_env, parse_resources
    from .log import Writer

    try:
        options = InjectOptions(
            workloads=args.workloads, code_configmap=args.code_configmap, preset=args.preset,
            timeout=args.timeout, interval=args.interval, allow_ahead=args.allow_ahead,
            env=parse_env(args.env), python=args.python, mount_path=args.mount_path,
            python_path=args.python_path, resources=parse_resources(args.resources))
        stdin = getattr(sys.stdin, "buffer", None)  # bytes: UTF-8 whatever the locale says
        output = inject(decode(stdin.read()) if stdin is not None else sys.stdin.read(),
                        options, warn=Writer().warn)
    except ConfigError as exc:
        Writer().error(exc.one_line())
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - mapped to exit 1, never swallowed
        writer = Writer()
        writer.error(f"internal error: {type(exc).__name__}: {exc}; this is a migrategate bug "
                     "— run with --debug and report the traceback")
        if args.debug:
            _traceback(writer)
        return 1
    stdout = getattr(sys.stdout, "buffer", None)
    if stdout is not None:
        sys.stdout.flush()
        stdout.write(output.encode("utf-8"))
        stdout.flush()
    else:
        sys.stdout.write(output)
        sys.stdout.flush()
    return 0


def run(argv: Optional[List[str]] = None, env: Optional[Mapping[str, str]] = None) -> int:
    """Run one command; returns the exit code (never raises except for argparse's exit)."""
    from .settings import output_settings

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage error (2) or --help/--version (0)
        code = exc.code if isinstance(exc.code, int) else 2
        if code:
            _usage_report(_Parser.last_error, output_settings(_output_flags(argv), env))
        return code
    if args.command == "inject":
        return _run_inject(args)
    flags: Dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}
    # Decided first, from flag or environment, and used for every outcome from here on
    # (a configuration error included): JSON or text, and the termination log.
    output = output_settings(flags, env)

    from .log import Writer
    from .signals import NOTHING_CHANGED, SignalGuard
    from .spare import early_spare

    # Every database command ends the same way on SIGINT/SIGTERM — 130/143, the one JSON
    # document, the termination message — wherever the signal lands (connecting, reading
    # the scripts, resolving settings). upgrade and wait add their own guard inside for
    # what they must cancel; this one covers the rest.
    guard = SignalGuard(hint=REGISTRY[args.command].interrupted_hint or NOTHING_CHANGED)
    guard.raising = False  # only recorded until _run's try is entered
    with guard, (early_spare() if args.command == "upgrade" else contextlib.nullcontext()):
        return _run(args, flags, env, Writer(json_lines=output.log_format == "json"), guard,
                    output)


def _run(args: argparse.Namespace, flags: Dict[str, Any], env: Optional[Mapping[str, str]],
         writer: Any, guard: Any, output: Any) -> int:
    from .registry import execute

    result = None
    try:
        try:
            guard.raising = True
            guard.check()  # a signal that came while the guard was being installed
            result = execute(args.command, flags, env, writer, args.debug)
            code = 0
        finally:
            guard.raising = False  # from here a signal is only recorded: the report is written
    except MigrategateError as exc:
        from .report import Result

        result = getattr(exc, "result", None) or Result(
            args.command, outcome=exc.outcome, exit_code=exc.exit_code, message=exc.one_line())
        writer.error(exc.one_line())
        if args.debug:
            _traceback(writer)
            for line in _redacted_lines(getattr(exc, "child_traceback", "") or ""):
                writer.error(f"(migration process) {line}")
        code = exc.exit_code
    except KeyboardInterrupt:
        writer.error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - mapped to exit 1, never swallowed
        from .report import Result

        message = (f"internal error: {type(exc).__name__}: {exc}; this is a migrategate bug "
                   "— run with --debug and report the traceback")
        writer.error(message)
        if args.debug:
            _traceback(writer)
        result = Result(args.command, outcome="internal-error", exit_code=1, message=message)
        code = 1

    _render(result, code, output, writer)
    return code


def _render(result: Any, code: int, output: Any, writer: Any) -> None:
    """The one output path of every outcome: stdout (JSON or text), the termination log."""
    from .report import render_checks, render_human, render_json, write_termination_message

    if output.json:
        render_json(result, writer)
    elif code == 0:
        render_human(result, writer)
    elif result.checks:
        render_checks(result, writer)
    write_termination_message(result, output.termination_log)
    if output.k8s_event:
        from .k8sevent import post

        why = post(result)
        if why:
            writer.warn(why)


def _output_flags(argv: Optional[List[str]]) -> Dict[str, Any]:
    """--json and --termination-log of a command line argparse refused (best effort: the
    words as written, without abbreviations)."""
    pre = _Quiet(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--json", action="store_true", default=None)
    pre.add_argument("--termination-log")
    words = sys.argv[1:] if argv is None else argv
    try:
        known, _ = pre.parse_known_args(words)
    except argparse.ArgumentError:  # e.g. --termination-log without its PATH
        return {"json": True if "--json" in words else None}
    return vars(known)


class _Quiet(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # type: ignore[override]
        raise argparse.ArgumentError(None, message)


def _usage_report(message: str, output: Any) -> None:
    """A usage error goes the same output path: stdout with --json is one JSON document in
    every outcome, and the termination log says it too."""
    from .log import Writer
    from .report import Result

    result = Result("usage", outcome="usage-error", exit_code=2,
                    message=f"usage error: {message}")
    if output.json:
        _render(result, 2, output, Writer(json_lines=output.log_format == "json"))
    else:  # argparse printed the usage and the error on stderr already
        from .report import write_termination_message

        write_termination_message(result, output.termination_log)


def _traceback(writer: Any) -> None:
    import traceback

    for line in _redacted_lines(traceback.format_exc()):
        writer.error(line)


def _redacted_lines(text: str) -> List[str]:
    """Redacted whole, then split: a secret containing a newline is masked as one."""
    from .redact import redact

    return redact(text).rstrip().splitlines()


def main(argv: Optional[List[str]] = None) -> None:
    """The console script: run, flush, and leave without tearing the interpreter down.

    Everything is written and every process and lock of ours is released by then
    (run returns only after its report); what is left is the interpreter freeing
    SQLAlchemy's and Alembic's objects one by one, 0.1–0.15 s measured after the last
    line of an upgrade (strace), paid by every Job and gate for nothing."""
    import os

    code = run(argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
