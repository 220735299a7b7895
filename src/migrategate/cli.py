"""argparse → command → render. The only place that maps exceptions to exit codes.

Imports stay lazy: ``migrategate --help`` and a ``wait`` poll in an
initContainer should not pay for SQLAlchemy and Alembic before they need them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Mapping, Optional

from .errors import EXIT_CODES, MigrategateError

from ._version import __version__

COMMANDS = ("upgrade", "verify", "wait", "status", "doctor")


def _exit_table() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """Remembers the usage error, so ``--json`` can still print its one document."""

    last_error = ""

    def error(self, message: str) -> Any:  # type: ignore[override]
        _Parser.last_error = message
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    g = common.add_argument_group("database and migrations (each also from MIGRATEGATE_<NAME>)")
    g.add_argument("--database-url", metavar="URL",
                   help="SQLAlchemy URL; else MIGRATEGATE_DATABASE_URL, else DATABASE_URL. "
                        "The password may be left out and given by --password-file")
    g.add_argument("--password-file", metavar="PATH",
                   help="file holding the password (a mounted Secret); or env "
                        "MIGRATEGATE_DATABASE_PASSWORD")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--migrations", metavar="DIR", help="Alembic script directory (with env.py)")
    src.add_argument("--config", metavar="INI", help="alembic.ini to read script_location from")
    g.add_argument("--preset", metavar="NAME", help="application preset: dify")
    g.add_argument("--app-root", metavar="DIR",
                   help="the app's source root, put on sys.path so revisions can import models")
    g.add_argument("--flask-app", metavar="MODULE:FACTORY",
                   help="use the real Flask app instead of a minimal one (Flask-Migrate dirs)")
    g.add_argument("--connect-timeout", metavar="S",
                   help="keep retrying an unreachable database this long (default 60)")
    g.add_argument("--version-table", metavar="NAME", help="default alembic_version")
    g.add_argument("--version-table-schema", metavar="SCHEMA")
    g.add_argument("--lock-name", metavar="NAME", help="default migrategate")
    g.add_argument("--application-name", metavar="NAME",
                   help="how this runner shows up in the database (default migrategate:HOST:PID)")
    o = common.add_argument_group("output")
    o.add_argument("--json", action="store_true", default=None,
                   help="print one JSON report on stdout (progress stays on stderr)")
    o.add_argument("--termination-log", metavar="PATH",
                   help="write the one-line outcome here (default /dev/termination-log if "
                        "writable); empty to disable")
    o.add_argument("--debug", action="store_true", help="show tracebacks (secrets masked)")

    parser = _Parser(
        prog="migrategate",
        description="Apply Alembic migrations under a database lock and exit 0 only when "
                    "the database is verified at the target.",
        epilog=_exit_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"migrategate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_,
                              epilog=_exit_table(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    def expect(p: argparse.ArgumentParser) -> None:
        p.add_argument("--expect-table", dest="expect_tables", action="append", metavar="T",
                       help="a table that must exist afterwards (repeatable; "
                            "schema.table allowed)")

    up = add("upgrade", "lock, apply pending revisions, verify")
    up.add_argument("--to", dest="target", metavar="REV",
                    help="target revision (default: the single head; 'heads' for all)")
    up.add_argument("--lock-timeout", metavar="S", help="wait this long for the lock (default 300)")
    up.add_argument("--pg-lock-timeout", metavar="S",
                    help="PostgreSQL lock_timeout for migration statements: fail fast instead "
                         "of queueing app traffic behind a blocked ALTER")
    up.add_argument("--mysql-lock-wait-timeout", metavar="S",
                    help="MySQL/MariaDB lock_wait_timeout (whole seconds) for migration "
                         "statements: a DDL statement waiting for a metadata lock fails after "
                         "S seconds instead of queueing app traffic behind it")
    up.add_argument("--lock-retries", metavar="N",
                    help="when a revision's statement hits its lock timeout, retry the "
                         "revision up to N times (timeout doubling up to 4x, jittered pauses; "
                         "default 0). PostgreSQL: the attempt is rolled back whole. "
                         "MySQL/MariaDB: only a DDL statement before which the revision "
                         "changed nothing")
    up.add_argument("--statement-timeout", metavar="S",
                    help="PostgreSQL statement_timeout for migration statements (a backstop; "
                         "not applied inside autocommit blocks)")
    up.add_argument("--heartbeat", metavar="S",
                    help="log a 'still running' line every S seconds while a revision runs "
                         "(default 30; 0 disables)")
    up.add_argument("--single-transaction", action="store_true", default=None,
                    help="all pending revisions in one transaction (Alembic's default) instead "
                         "of one per revision; faster on long chains of small revisions, but "
                         "progress lines appear only at the end and a failure undoes them all")
    up.add_argument("--allow-ahead", action="store_true", default=None,
                    help="exit 0 without migrating when the database is at a revision newer "
                         "than these scripts (a rollback to an older image)")
    up.add_argument("--allow-proxy", action="store_true", default=None,
                    help="PostgreSQL: go ahead when a proxy sits between migrategate and the "
                         "server (default: refuse, since a transaction-pooling proxy such as "
                         "PgBouncer pool_mode=transaction breaks the session lock); only for "
                         "session-mode pools and plain TCP proxies")
    expect(up)

    ve = add("verify", "check the database is at the scripts' head(s); no changes")
    ve.add_argument("--to", dest="target", metavar="REV", help="expected revision (default heads)")
    ve.add_argument("--allow-ahead", action="store_true", default=None,
                    help="pass when the database is at a revision newer than these scripts")
    expect(ve)

    wa = add("wait", "block until verify passes (for an app pod's initContainer)")
    wa.add_argument("--to", dest="target", metavar="REV", help="expected revision (default heads)")
    wa.add_argument("--timeout", metavar="S", help="give up after this long (default 600)")
    wa.add_argument("--interval", metavar="S", help="seconds between polls (default 2)")
    wa.add_argument("--allow-ahead", action="store_true", default=None,
                    help="start when the database is newer than these scripts (rollback)")
    expect(wa)

    add("status", "current revision, heads, pending revisions, who holds the lock")

    doc = add("doctor", "explain why the schema is not there: each check with what to do")
    doc.add_argument("--redis-url", metavar="URL",
                     help="Redis to inspect for Dify's db_upgrade_lock (or Dify's REDIS_* env)")
    expect(doc)
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
                    "(pip install 'migrategate[inject]').")
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
    inj.add_argument("--debug", action="store_true", help="show tracebacks")


def _run_inject(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .inject import InjectOptions, decode, inject, parse_env
    from .log import Writer

    try:
        options = InjectOptions(
            workloads=args.workloads, code_configmap=args.code_configmap, preset=args.preset,
            timeout=args.timeout, interval=args.interval, allow_ahead=args.allow_ahead,
            env=parse_env(args.env), python=args.python, mount_path=args.mount_path,
            python_path=args.python_path)
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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage error (2) or --help/--version (0)
        code = exc.code if isinstance(exc.code, int) else 2
        if code and _wants_json(argv, env):
            _usage_report(_Parser.last_error)
        return code
    if args.command == "inject":
        return _run_inject(args)
    flags: Dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}

    from .log import Writer
    from .signals import NOTHING_CHANGED, SignalGuard

    # Every database command ends the same way on SIGINT/SIGTERM — 130/143, the one JSON
    # document, the termination message — wherever the signal lands (connecting, reading
    # the scripts, resolving settings). upgrade and wait add their own guard inside for
    # what they must cancel; this one covers the rest.
    guard = SignalGuard(hint="re-run to continue" if args.command == "upgrade"
                        else NOTHING_CHANGED)
    guard.raising = False  # only recorded until _run's try is entered
    with guard:
        return _run(args, flags, env, Writer(), guard)


def _run(args: argparse.Namespace, flags: Dict[str, Any], env: Optional[Mapping[str, str]],
         writer: Any, guard: Any) -> int:
    result = None
    settings = None
    try:
        try:
            guard.raising = True
            guard.check()  # a signal that came while the guard was being installed
            settings = _settings(args, flags, env, writer)
            result = _dispatch(args.command, settings, writer, env, args.debug)
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

    from .report import render_human, render_json, write_termination_message

    json_out = bool(settings.json) if settings is not None else bool(flags.get("json"))
    if json_out:
        render_json(result, writer)
    elif code == 0:
        render_human(result, writer)
    elif result.checks:
        from .report import render_checks

        render_checks(result, writer)
    termination = settings.termination_log if settings is not None else flags.get("termination_log")
    write_termination_message(result, termination)
    return code


def _settings(args: argparse.Namespace, flags: Dict[str, Any],
              env: Optional[Mapping[str, str]], writer: Any) -> Any:
    from .errors import ConfigError
    from .settings import register_secrets, resolve

    try:
        settings = resolve(flags, env)
    except ConfigError as exc:
        from .redact import register_secret

        for secret in exc.secrets:  # e.g. each part of a refused URL's password
            register_secret(secret)
        if args.command != "doctor":
            raise
        from .doctor import doctor

        doctor(None, writer, config_error=exc)  # reports the config check, raises
        raise  # pragma: no cover - doctor raised
    register_secrets(settings)
    return settings


def _wants_json(argv: Optional[List[str]], env: Optional[Mapping[str, str]]) -> bool:
    import os

    words = sys.argv[1:] if argv is None else argv
    value = (os.environ if env is None else env).get("MIGRATEGATE_JSON", "")
    return "--json" in words or value.strip().lower() in ("1", "true", "yes", "on")


def _usage_report(message: str) -> None:
    """stdout with --json is one JSON document in every outcome, usage errors included."""
    from .log import Writer
    from .report import Result, render_json

    render_json(Result("usage", outcome="usage-error", exit_code=2,
                       message=f"usage error: {message}"), Writer())


def _dispatch(command: str, settings: Any, writer: Any,
              env: Optional[Mapping[str, str]] = None, debug: bool = False) -> Any:
    from . import commands

    if command == "doctor":
        from .doctor import doctor

        return doctor(settings, writer, env=env)
    if command == "upgrade":
        return commands.upgrade(settings, writer, debug=debug)
    return getattr(commands, command)(settings, writer)


def _traceback(writer: Any) -> None:
    import traceback

    for line in _redacted_lines(traceback.format_exc()):
        writer.error(line)


def _redacted_lines(text: str) -> List[str]:
    """Redacted whole, then split: a secret containing a newline is masked as one."""
    from .redact import redact

    return redact(text).rstrip().splitlines()


def main(argv: Optional[List[str]] = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
