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


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
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

    parser = argparse.ArgumentParser(
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
    return parser


def run(argv: Optional[List[str]] = None, env: Optional[Mapping[str, str]] = None) -> int:
    """Run one command; returns the exit code (never raises except for argparse's exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    flags: Dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("command", "debug")}

    from .log import Writer

    writer = Writer()
    result = None
    settings = None
    try:
        from .errors import ConfigError
        from .settings import resolve

        try:
            settings = resolve(flags, env)
        except ConfigError as exc:
            if args.command != "doctor":
                raise
            from .doctor import doctor

            doctor(None, writer, config_error=exc)  # reports the config check, raises
        result = _dispatch(args.command, settings, writer, env)
        code = 0
    except MigrategateError as exc:
        from .report import Result

        result = getattr(exc, "result", None) or Result(
            args.command, outcome=exc.outcome, exit_code=exc.exit_code, message=exc.one_line())
        writer.error(exc.one_line())
        if args.debug:
            _traceback(writer)
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


def _dispatch(command: str, settings: Any, writer: Any,
              env: Optional[Mapping[str, str]] = None) -> Any:
    from . import commands

    if command == "doctor":
        from .doctor import doctor

        return doctor(settings, writer, env=env)
    return getattr(commands, command)(settings, writer)


def _traceback(writer: Any) -> None:
    import traceback

    for line in traceback.format_exc().rstrip().splitlines():
        writer.error(line)


def main(argv: Optional[List[str]] = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
