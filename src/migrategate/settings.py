"""Resolve settings from flags, environment, presets and defaults — in that order.

Every option can come from a flag or from ``MIGRATEGATE_<NAME>``, so a Helm
chart can configure everything through env and Secrets. We remember where each
value came from (``Settings.sources``) because "which setting won?" is the
first question when a deployment misbehaves, and ``doctor`` prints it.

``OPTIONS`` is the one option table: type, default, bounds, databases, environment
names, commands and help of each option. The CLI's flags are generated from it, every
value is parsed and bounds-checked by it whatever its source (flag, environment,
library keyword), and tests hold the library's signatures, the README and the chart's
values.schema.json to it.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from .errors import ConfigError
from .redact import register_secret
from .urls import MYSQL, build_url, url_secrets

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import URL

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


#: the database commands (``inject`` is a post-renderer without database settings)
DB_COMMANDS: Tuple[str, ...] = ("upgrade", "verify", "wait", "status", "doctor", "plan",
                                 "history", "repair")
UPGRADE = ("upgrade",)
#: upgrade's options that say how its statements run: plan tells whether they bound them
RUNS = ("upgrade", "plan")
GATES = ("upgrade", "verify", "wait")  # the commands that compare the database with a target
PG = ("postgresql",)
#: the commands that read (verify, wait, status, doctor) or write (upgrade) the history
HISTORY = ("upgrade", "verify", "wait", "status", "doctor")


@dataclass(frozen=True)
class Option:
    """One option, everywhere: flag, environment, library keyword, bounds, docs.

    ``cli.build_parser`` generates the flags from this table, ``resolve`` parses and
    bounds-checks every value with it (whatever its source), ``__init__``'s keyword
    signatures and the README's options table are tested against it, and so are the
    chart's ``values.schema.json`` bounds (tests/unit/test_option_table.py).
    """

    name: str
    kind: str  # "str" | "seconds" | "count" (whole number) | "bool" | "list"
    default: Any = None
    env: Tuple[str, ...] = ()
    #: "" = ``--<name>``; None = no flag (environment and library only)
    flag: Optional[str] = ""
    metavar: Optional[str] = None
    help: Optional[str] = None
    #: per-command help where a command reads it differently: ((command, help), ...)
    helps: Tuple[Tuple[str, str], ...] = ()
    #: the commands that take it (as a flag, and as a library keyword)
    commands: Tuple[str, ...] = DB_COMMANDS
    #: inclusive bounds of "seconds" and "count" values, whatever their source
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    #: said after a value out of bounds: why the bound is there
    why: str = ""
    #: the databases it means something on (empty: all), and how to name them
    dialects: Tuple[str, ...] = ()
    dialect_label: str = ""
    #: the help section: "database", "output", or "" (the command's own options)
    group: str = ""
    #: flags of one mutually exclusive group share this key
    mutex: str = ""
    #: False: the CLI's alone (how it prints); the library returns a Result instead
    library: bool = True
    #: the default as documented, when it is computed at run time (``default`` is None)
    shown_default: str = ""
    #: the values a "str" option takes (empty: any)
    choices: Tuple[str, ...] = ()

    @property
    def envs(self) -> Tuple[str, ...]:
        return self.env or ("MIGRATEGATE_" + self.name.upper(),)

    @property
    def flag_name(self) -> str:
        if self.flag is None:
            return "(env only)"
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def unit(self) -> str:
        return " s" if self.kind == "seconds" or self.metavar == "S" else ""

    @property
    def default_text(self) -> str:
        """The default as --help and the README say it."""
        if self.shown_default:
            return self.shown_default
        if self.default is None or self.default == ():
            return "none"
        if self.kind == "bool":
            return "on" if self.default else "off"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def help_for(self, command: str) -> Optional[str]:
        return dict(self.helps).get(command, self.help)

    def check_bounds(self, value: Any, raw: Any, source: str) -> None:
        lo, hi = self.minimum, self.maximum
        if (lo is None or value >= lo) and (hi is None or value <= hi):
            return
        if lo is not None and hi is not None:
            wanted = f"from {_num(lo)} to {_num(hi)}{self.unit}"
        elif lo is not None:
            wanted = f"at least {_num(lo)}{self.unit}"
        else:
            wanted = f"at most {_num(hi)}{self.unit}"
        raise ConfigError(f"{source} must be {wanted}, got {raw!r}", self.why or None)


def _num(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_MS = ("PostgreSQL counts it in milliseconds and reads 0 as 'no {} timeout'; leave it "
       "unset for no timeout")
#: PostgreSQL's *_timeout settings are int milliseconds: INT_MAX ms
_PG_MAX = 2147483.0

OPTIONS: Dict[str, Option] = {
    o.name: o
    for o in (
        # --- database and migrations (every database command) --------------------------
        Option("database_url", "str", env=("MIGRATEGATE_DATABASE_URL", "DATABASE_URL"),
               metavar="URL", group="database",
               help="SQLAlchemy URL; else MIGRATEGATE_DATABASE_URL, else DATABASE_URL. "
                    "The password may be left out and given by --password-file"),
        Option("password_file", "str", env=("MIGRATEGATE_DATABASE_PASSWORD_FILE",
                                            "MIGRATEGATE_PASSWORD_FILE"),
               metavar="PATH", group="database",
               help="file holding the password (a mounted Secret); or env "
                    "MIGRATEGATE_DATABASE_PASSWORD"),
        Option("password", "str", env=("MIGRATEGATE_DATABASE_PASSWORD",), flag=None),
        Option("migrations", "str", metavar="DIR", group="database", mutex="source",
               shown_default="./migrations",  # or ./alembic: location.py
               help="Alembic script directory (with env.py)"),
        Option("config", "str", metavar="INI", group="database", mutex="source",
               help="alembic.ini to read script_location from"),
        Option("preset", "str", metavar="NAME", group="database",
               help="application preset: dify"),
        Option("app_root", "str", metavar="DIR", group="database",
               help="the app's source root, put on sys.path so revisions can import models"),
        Option("flask_app", "str", metavar="MODULE:FACTORY", group="database",
               help="use the real Flask app instead of a minimal one (Flask-Migrate dirs)"),
        Option("connect_timeout", "seconds", 60.0, minimum=0, metavar="S", group="database",
               help="keep retrying an unreachable database this long (default 60)"),
        Option("version_table", "str", "alembic_version", metavar="NAME", group="database",
               help="default alembic_version"),
        Option("version_table_schema", "str", metavar="SCHEMA", group="database"),
        Option("lock_name", "str", "migrategate", metavar="NAME", group="database",
               help="default migrategate"),
        Option("history_table", "str", "migrategate_history", metavar="NAME",
               commands=HISTORY + ("history", "repair"),
               help="migrategate's own history table, in the version table's schema "
                    "(default migrategate_history)"),
        Option("no_history", "bool", False, commands=HISTORY,
               help="upgrade writes no history rows (and creates no history table); verify, "
                    "wait, status and doctor skip the checksum and history checks"),
        Option("history_reader", "str", metavar="ROLE", commands=("upgrade",),
               help="grant SELECT on the history table (and the journal) to this role "
                    "(PostgreSQL) or account (MySQL/MariaDB: user or user@host), e.g. the "
                    "app's, so it can read what ran"),
        Option("no_resume", "bool", False, commands=("upgrade",),
               help="MySQL/MariaDB: run a revision whose earlier attempt was killed or "
                    "interrupted from its first statement, instead of resuming it after the "
                    "statements that attempt committed (journal: docs/history.md)"),
        Option("strict_checksums", "bool", False, commands=("verify", "wait"),
               help="exit 7 when the file of an applied revision differs from what was "
                    "applied (the history's checksum); default: a warning"),
        Option("application_name", "str", metavar="NAME", group="database",
               shown_default="migrategate:HOST:PID",
               help="how this runner shows up in the database (default migrategate:HOST:PID)"),
        # --- output (decided before anything else: see output_settings) ------------------
        Option("json", "bool", False, group="output", library=False,
               help="print one JSON report on stdout (progress stays on stderr)"),
        Option("log_format", "str", "text", metavar="FORMAT", group="output", library=False,
               choices=("text", "json"),
               help="progress and error lines on stderr: text (a timestamp, then the line) "
                    "or json (one object a line: time, level, message; the same redaction) "
                    "for log pipelines; default text"),
        Option("k8s_event", "bool", False, group="output", library=False,
               help="post a Kubernetes Event with the outcome (in a pod whose ServiceAccount "
                    "may create events; a failure is a warning)"),
        Option("termination_log", "str", metavar="PATH", group="output", library=False,
               shown_default="/dev/termination-log when writable",
               help="write the one-line outcome here (default /dev/termination-log if "
                    "writable); empty to disable"),
        # --- the commands' own -----------------------------------------------------------
        Option("target", "str", env=("MIGRATEGATE_TARGET", "MIGRATEGATE_TO"), flag="--to",
               metavar="REV", commands=GATES + ("plan",), shown_default="heads",
               help="expected revision (default heads)",
               helps=(("upgrade", "target revision (default: the single head; 'heads' for "
                                  "all)"),)),
        Option("lock_timeout", "seconds", 300.0, minimum=0, metavar="S",
               commands=UPGRADE + ("repair",),
               help="wait this long for the lock (default 300)"),
        Option("yes", "bool", False, commands=("repair",), library=True,
               help="do what repair shows (without it: show it and change nothing)"),
        Option("pg_lock_timeout", "seconds", minimum=0.001, maximum=_PG_MAX,
               why=_MS.format("lock"), dialects=PG, dialect_label="PostgreSQL",
               metavar="S", commands=RUNS,
               help="PostgreSQL lock_timeout for migration statements: fail fast instead "
                    "of queueing app traffic behind a blocked ALTER"),
        Option("mysql_lock_wait_timeout", "count", minimum=1, maximum=31536000,
               why="MySQL's lock_wait_timeout is whole seconds from 1 to 31536000",
               dialects=MYSQL, dialect_label="MySQL/MariaDB", metavar="S", commands=RUNS,
               help="MySQL/MariaDB lock_wait_timeout (whole seconds) for migration "
                    "statements: a DDL statement waiting for a metadata lock fails after "
                    "S seconds instead of queueing app traffic behind it"),
        Option("lock_retries", "count", 0, minimum=0, maximum=1000,
               dialects=PG + MYSQL, dialect_label="PostgreSQL and MySQL/MariaDB",
               metavar="N", commands=RUNS,
               help="when a revision's statement hits its lock timeout, retry the "
                    "revision up to N times (jittered pauses; PostgreSQL's timeout "
                    "doubling up to 4x; default 0). PostgreSQL: the attempt is rolled back whole. "
                    "MySQL/MariaDB: only a DDL statement before which the revision "
                    "changed nothing"),
        Option("statement_timeout", "seconds", minimum=0.001, maximum=_PG_MAX,
               why=_MS.format("statement"), dialects=PG, dialect_label="PostgreSQL",
               metavar="S", commands=RUNS,
               help="PostgreSQL statement_timeout for migration statements (a backstop; "
                    "not applied inside autocommit blocks)"),
        Option("heartbeat", "seconds", 30.0, minimum=0, metavar="S", commands=UPGRADE,
               help="log a 'still running' line every S seconds while a revision runs "
                    "(default 30; 0 disables)"),
        Option("single_transaction", "bool", False, commands=UPGRADE,
               help="all pending revisions in one transaction (Alembic's default) instead "
                    "of one per revision; faster on long chains of small revisions, but "
                    "progress lines appear only at the end and a failure undoes them all"),
        Option("timeout", "seconds", 600.0, minimum=0,
               env=("MIGRATEGATE_WAIT_TIMEOUT", "MIGRATEGATE_TIMEOUT"),
               metavar="S", commands=("wait",), help="give up after this long (default 600)"),
        Option("interval", "seconds", 2.0, minimum=0.1,
               why="a poll costs the database a transaction; 1-2 s is plenty",
               env=("MIGRATEGATE_WAIT_INTERVAL", "MIGRATEGATE_INTERVAL"),
               metavar="S", commands=("wait",), help="seconds between polls (default 2)"),
        Option("allow_ahead", "bool", False, commands=GATES,
               help="pass when the database is at a revision newer than these scripts",
               helps=(("upgrade", "exit 0 without migrating when the database is at a "
                                  "revision newer than these scripts (a rollback to an older "
                                  "image)"),
                      ("wait", "start when the database is newer than these scripts "
                               "(rollback)"))),
        Option("allow_proxy", "bool", False, commands=UPGRADE,
               help="PostgreSQL: go ahead when a proxy sits between migrategate and the "
                    "server (default: refuse, since a transaction-pooling proxy such as "
                    "PgBouncer pool_mode=transaction breaks the session lock); only for "
                    "session-mode pools and plain TCP proxies"),
        Option("refuse", "str", metavar="POLICY", commands=UPGRADE,
               help="before taking the lock, refuse (exit 2, nothing applied) a deploy whose "
                    "plan has findings at this level or of these rules: 'risky', 'warning' "
                    "or rule names, comma-separated (see 'migrategate plan')"),
        Option("show_plan", "bool", False, commands=UPGRADE,
               help="log the deploy plan (what 'migrategate plan' shows) before taking the "
                    "lock, so the Job's log says what is about to happen"),
        Option("rehearse_on", "str", metavar="URL", commands=("plan",),
               help="PostgreSQL: run the pending revisions on this scratch database (empty, "
                    "never the target) inside one transaction that is always rolled back, "
                    "and plan from the statements and locks they really took; for "
                    "revisions that read the database (pass the URL by "
                    "MIGRATEGATE_REHEARSE_ON: a flag shows in ps)"),
        Option("markdown", "bool", False, commands=("plan",), library=False,
               help="print the plan as Markdown (a pull-request comment, a CI job summary)"),
        Option("redis_url", "str", env=("MIGRATEGATE_REDIS_URL",), metavar="URL",
               commands=("doctor",),
               help="Redis to inspect for Dify's db_upgrade_lock (or Dify's REDIS_* env)"),
        Option("expect_tables", "list", (), env=("MIGRATEGATE_EXPECT_TABLES",),
               flag="--expect-table", metavar="T", commands=GATES + ("doctor",),
               help="a table that must exist afterwards (repeatable; schema.table allowed; "
                    'quote a part that holds a dot: "my.schema"."a.b")'),
    )
}


#: each database's own lock timeout for migration statements (the option table says which)
LOCK_TIMEOUT_OPTIONS = ("pg_lock_timeout", "mysql_lock_wait_timeout")


@dataclass
class Settings:
    """Everything a command needs, resolved and validated. ``url`` holds the password."""

    url: Optional["URL"] = None
    migrations: Optional[str] = None
    config: Optional[str] = None
    preset: Optional[str] = None
    app_root: Optional[str] = None
    flask_app: Optional[str] = None
    connect_timeout: float = 60.0
    lock_timeout: float = 300.0
    lock_name: str = "migrategate"
    pg_lock_timeout: Optional[float] = None
    mysql_lock_wait_timeout: Optional[int] = None
    target: Optional[str] = None
    expect_tables: Tuple[str, ...] = ()
    version_table: str = "alembic_version"
    version_table_schema: Optional[str] = None
    allow_ahead: bool = False
    timeout: float = 600.0
    interval: float = 2.0
    application_name: str = ""
    termination_log: Optional[str] = None
    redis_url: Optional[str] = None
    json: bool = False
    log_format: str = "text"
    k8s_event: bool = False
    single_transaction: bool = False
    heartbeat: float = 30.0
    allow_proxy: bool = False
    lock_retries: int = 0
    statement_timeout: Optional[float] = None
    refuse: Optional[str] = None
    yes: bool = False
    show_plan: bool = False
    rehearse_on: Optional[str] = None
    markdown: bool = False
    history_table: str = "migrategate_history"
    no_history: bool = False
    strict_checksums: bool = False
    history_reader: Optional[str] = None
    no_resume: bool = False
    sources: Dict[str, str] = field(default_factory=dict)
    #: every spelling-source of a password met while resolving; see register_secrets()
    secrets: Tuple[str, ...] = ()
    #: not an option: the runner found a proxy between it and PostgreSQL (the server's
    #: port is not the one dialled); the migration session's settings are then SET on
    #: env.py's connection and checked, not sent as libpq options (see connect.py)
    behind_proxy: bool = False
    #: not an option: ``repair --yes`` resumes a revision whose attempt *failed* too
    #: (upgrade resumes only attempts that did not end on their own)
    resume_failed: bool = False

    @property
    def masked_url(self) -> str:
        from .urls import mask_url

        return mask_url(self.url) if self.url is not None else "(none)"

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name() if self.url is not None else ""

    @property
    def first_lock_timeout(self) -> Optional[float]:
        """Migration statements' lock timeout (a retry's first attempt): the one given for
        this database, or 1 s when --lock-retries is on and none was given."""
        given = next((getattr(self, name) for name in LOCK_TIMEOUT_OPTIONS
                      if self.dialect in OPTIONS[name].dialects), None)
        return float(given) if given is not None else (1.0 if self.lock_retries else None)


def settings_to_dict(settings: Settings) -> Dict[str, Any]:
    """For the migration process (sent over a pipe, never argv: ``ps`` would show it)."""
    import dataclasses

    d = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    d["url"] = settings.url.render_as_string(hide_password=False) if settings.url else None
    d["expect_tables"] = list(settings.expect_tables)
    d["secrets"] = list(settings.secrets)
    return d


def settings_from_dict(d: Mapping[str, Any]) -> Settings:
    from sqlalchemy.engine import make_url

    values = dict(d)
    url = values.pop("url")
    values["expect_tables"] = tuple(values["expect_tables"])
    values["secrets"] = tuple(values.get("secrets", ()))
    return Settings(url=make_url(url) if url else None, **values)


def _parse(opt: Option, raw: Any, source: str) -> Any:
    """One value of ``opt`` from any source (flag, environment, library, preset): parsed and
    bounds-checked the same way, so a value means the same wherever it comes from."""
    if opt.kind == "str":
        if raw is not None and opt.choices and str(raw) not in opt.choices:
            raise ConfigError(f"{source} must be one of {', '.join(opt.choices)}, got {raw!r}")
        return None if raw is None else str(raw)
    if opt.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
        raise ConfigError(f"{source} must be true or false, got {raw!r}",
                          "use one of: true, false, 1, 0, yes, no")
    if opt.kind == "seconds":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{source} must be a number of seconds, got {raw!r}",
                              "for example 60 or 2.5") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{source} must be a finite number of seconds, got {raw!r}")
        opt.check_bounds(value, raw, source)
        return value
    if opt.kind == "count":
        text = str(raw).strip()
        if isinstance(raw, bool) or not re.fullmatch(r"[-+]?[0-9]+", text):
            raise ConfigError(f"{source} must be a whole number, got {raw!r}")
        value = int(text)
        opt.check_bounds(value, raw, source)
        return value
    if opt.kind == "list":
        if isinstance(raw, (list, tuple)):
            items = [str(x) for x in raw]
        else:
            items = str(raw).split(",")
        return tuple(x.strip() for x in items if x.strip())
    raise AssertionError(opt.kind)  # pragma: no cover


def _given(opt: Option, flags: Mapping[str, Any],
           env: Mapping[str, str]) -> Optional[Tuple[Any, str]]:
    """``opt``'s value and where it came from, when a flag or the environment gives it."""
    raw = flags.get(opt.name)
    if raw is not None and raw != [] and not (opt.kind == "bool" and raw is False):
        return _parse(opt, raw, opt.flag_name), f"flag {opt.flag_name}"
    for var in opt.envs:
        if var in env:
            return _parse(opt, env[var], f"env {var}"), f"env {var}"
    return None


@dataclass(frozen=True)
class Output:
    """How a CLI run reports: one JSON document or text, and the termination log."""

    json: bool = False
    termination_log: Optional[str] = None
    log_format: str = "text"
    k8s_event: bool = False


def output_settings(flags: Mapping[str, Any], env: Optional[Mapping[str, str]] = None) -> Output:
    """The output, decided before anything else can fail, from flag or environment exactly
    as :func:`resolve` decides it, and used for every outcome (a configuration error
    included). Never raises: a malformed ``MIGRATEGATE_JSON`` means text here, and
    :func:`resolve` then reports it."""
    env = os.environ if env is None else env
    values: Dict[str, Any] = {}
    for name in ("json", "termination_log", "log_format", "k8s_event"):
        try:
            given = _given(OPTIONS[name], flags, env)
        except ConfigError:
            given = None
        values[name] = given[0] if given else OPTIONS[name].default
    return Output(json=bool(values["json"]), termination_log=values["termination_log"],
                  log_format=values["log_format"], k8s_event=bool(values["k8s_event"]))


def resolve(flags: Mapping[str, Any], env: Optional[Mapping[str, str]] = None) -> Settings:
    """Flags (``None`` = not given) beat ``MIGRATEGATE_*`` env, which beats presets and defaults."""
    env = os.environ if env is None else env
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for name, opt in OPTIONS.items():
        found = _given(opt, flags, env)
        if found is not None:
            values[name], sources[name] = found

    preset = values.get("preset")
    if preset:
        from .presets import load_preset

        given = dict(values)  # what flags/env set, with values (e.g. app_root)
        for name, (value, source) in load_preset(preset).defaults(env, given).items():
            if name not in values:
                values[name] = value
                sources[name] = source

    for name, opt in OPTIONS.items():
        if name not in values:
            values[name] = opt.default
            if opt.default not in (None, (), False):
                sources[name] = "default"

    secrets = url_secrets(values["redis_url"]) if values.get("redis_url") else []
    secrets += url_secrets(values["database_url"]) if values["database_url"] else []
    secrets += url_secrets(values["rehearse_on"]) if values.get("rehearse_on") else []
    url = None
    try:
        password = _password(values, sources)
        secrets += [password] if password else []
        if values["database_url"]:
            url = build_url(values["database_url"], password, sources.get("database_url", ""))
            secrets += [str(url.password)] if url.password else []
        elif password is not None:
            raise ConfigError("a database password was given but no database URL",
                              "set --database-url or MIGRATEGATE_DATABASE_URL")
    except ConfigError as exc:
        exc.secrets = tuple(dict.fromkeys(secrets))  # for the caller to register all the same
        raise
    values.pop("database_url")
    values.pop("password_file")
    values.pop("password")

    if values["migrations"] and values["config"]:
        raise ConfigError(
            "both --migrations and --config are set "
            f"({sources['migrations']}, {sources['config']})",
            "give one: a script directory with env.py, or an alembic.ini",
        )
    if not values["application_name"]:
        values["application_name"] = default_application_name()
    return Settings(url=url, sources=sources, secrets=tuple(dict.fromkeys(secrets)), **values)


def register_secrets(settings: Settings) -> None:
    """The explicit step after :func:`resolve`: from now on no output shows these."""
    for secret in settings.secrets:
        register_secret(secret)


def _password(values: Dict[str, Any], sources: Dict[str, str]) -> Optional[str]:
    path = values.get("password_file")
    password = values.get("password")
    if path and password is not None:
        raise ConfigError(
            f"the password is given twice ({sources['password_file']} and {sources['password']})",
            "keep one of them",
        )
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                password = fh.read()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the password file {path} ({sources['password_file']}): "
                f"{exc.strerror or exc}",
                "check the Secret is mounted there and readable by this user",
            ) from None
        # Secrets written with `echo` end in a newline that is not part of the password.
        password = password.rstrip("\r\n")
        if not password:
            raise ConfigError(f"the password file {path} is empty",
                              "check the Secret's key holds the password")
    if password is not None and "\x00" in password:
        given = (f"the password file {path}" if path
                 else f"the password ({sources.get('password', 'given')})")
        raise ConfigError(f"{given} contains a NUL byte, which no database accepts in a "
                          "password", "check the Secret's value (binary data, or a stray "
                          "\\0 from printf?)")
    return password


def default_application_name() -> str:
    """Who is migrating, as the database sees it: pod name (hostname) and pid."""
    name = f"migrategate:{socket.gethostname()}:{os.getpid()}"
    return name[:63]  # PostgreSQL truncates at NAMEDATALEN-1


__all__: List[str] = ["Settings", "resolve", "register_secrets", "build_url", "OPTIONS",
                      "Option", "Output", "output_settings"]
