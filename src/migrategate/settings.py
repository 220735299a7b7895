"""Resolve settings from flags, environment, presets and defaults — in that order.

Every option can come from a flag or from ``MIGRATEGATE_<NAME>``, so a Helm
chart can configure everything through env and Secrets. We remember where each
value came from (``Settings.sources``) because "which setting won?" is the
first question when a deployment misbehaves, and ``doctor`` prints it.
"""

from __future__ import annotations

import os
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


@dataclass(frozen=True)
class Option:
    name: str
    kind: str  # "str" | "seconds" | "count" | "bool" | "list"
    default: Any = None
    env: Tuple[str, ...] = ()
    flag: str = ""

    @property
    def envs(self) -> Tuple[str, ...]:
        return self.env or ("MIGRATEGATE_" + self.name.upper(),)

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


OPTIONS: Dict[str, Option] = {
    o.name: o
    for o in (
        Option("database_url", "str", env=("MIGRATEGATE_DATABASE_URL", "DATABASE_URL")),
        Option("password_file", "str", env=("MIGRATEGATE_DATABASE_PASSWORD_FILE",
                                            "MIGRATEGATE_PASSWORD_FILE")),
        Option("password", "str", env=("MIGRATEGATE_DATABASE_PASSWORD",), flag="(env only)"),
        Option("migrations", "str"),
        Option("config", "str"),
        Option("preset", "str"),
        Option("app_root", "str"),
        Option("flask_app", "str"),
        Option("connect_timeout", "seconds", 60.0),
        Option("lock_timeout", "seconds", 300.0),
        Option("lock_name", "str", "migrategate"),
        Option("pg_lock_timeout", "seconds"),
        Option("mysql_lock_wait_timeout", "count"),
        Option("target", "str", env=("MIGRATEGATE_TARGET", "MIGRATEGATE_TO"), flag="--to"),
        Option("expect_tables", "list", (), env=("MIGRATEGATE_EXPECT_TABLES",),
               flag="--expect-table"),
        Option("version_table", "str", "alembic_version"),
        Option("version_table_schema", "str"),
        Option("allow_ahead", "bool", False),
        Option("timeout", "seconds", 600.0,
               env=("MIGRATEGATE_WAIT_TIMEOUT", "MIGRATEGATE_TIMEOUT")),
        Option("interval", "seconds", 2.0, env=("MIGRATEGATE_WAIT_INTERVAL",
                                                "MIGRATEGATE_INTERVAL")),
        Option("application_name", "str"),
        Option("termination_log", "str"),
        Option("redis_url", "str", env=("MIGRATEGATE_REDIS_URL",)),
        Option("json", "bool", False),
        Option("single_transaction", "bool", False),
        Option("heartbeat", "seconds", 30.0),
        Option("allow_proxy", "bool", False),
        Option("lock_retries", "count", 0),
        Option("statement_timeout", "seconds"),
    )
}


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
    single_transaction: bool = False
    heartbeat: float = 30.0
    allow_proxy: bool = False
    lock_retries: int = 0
    statement_timeout: Optional[float] = None
    sources: Dict[str, str] = field(default_factory=dict)
    #: every spelling-source of a password met while resolving; see register_secrets()
    secrets: Tuple[str, ...] = ()
    #: not an option: the runner found a proxy between it and PostgreSQL (the server's
    #: port is not the one dialled); the migration session's settings are then SET on
    #: env.py's connection and checked, not sent as libpq options (see connect.py)
    behind_proxy: bool = False

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
        given = (self.mysql_lock_wait_timeout if self.dialect in MYSQL
                 else self.pg_lock_timeout)
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
    if opt.kind == "str":
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
        if not (value >= 0) or value == float("inf"):
            raise ConfigError(f"{source} must be a finite number of seconds >= 0, got {raw!r}")
        return value
    if opt.kind == "count":
        text = str(raw).strip()
        if not text.isdigit() or int(text) > 1000:
            raise ConfigError(f"{source} must be a whole number from 0 to 1000, got {raw!r}")
        return int(text)
    if opt.kind == "list":
        if isinstance(raw, (list, tuple)):
            items = [str(x) for x in raw]
        else:
            items = str(raw).split(",")
        return tuple(x.strip() for x in items if x.strip())
    raise AssertionError(opt.kind)  # pragma: no cover


def resolve(flags: Mapping[str, Any], env: Optional[Mapping[str, str]] = None) -> Settings:
    """Flags (``None`` = not given) beat ``MIGRATEGATE_*`` env, which beats presets and defaults."""
    env = os.environ if env is None else env
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    for name, opt in OPTIONS.items():
        raw = flags.get(name)
        if raw is not None and raw != [] and not (opt.kind == "bool" and raw is False):
            values[name] = _parse(opt, raw, opt.flag_name)
            sources[name] = f"flag {opt.flag_name}"
            continue
        for var in opt.envs:
            if var in env:
                values[name] = _parse(opt, env[var], f"env {var}")
                sources[name] = f"env {var}"
                break

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
    if values["interval"] < 0.1:
        raise ConfigError(f"{sources.get('interval', '--interval')} must be at least 0.1 s, "
                          f"got {values['interval']:g}",
                          "a poll costs the database a transaction; 1-2 s is plenty")
    if values["statement_timeout"] == 0:
        raise ConfigError(f"{sources.get('statement_timeout')} is 0, which PostgreSQL reads as "
                          "'no statement timeout'", "leave it unset, or give seconds")
    if values["pg_lock_timeout"] == 0:
        raise ConfigError(f"{sources.get('pg_lock_timeout')} is 0, which PostgreSQL reads as "
                          "'no lock timeout'", "leave it unset for no timeout, or give seconds")
    if values["mysql_lock_wait_timeout"] == 0:
        raise ConfigError(f"{sources.get('mysql_lock_wait_timeout')} is 0; MySQL's "
                          "lock_wait_timeout is at least 1 s", "give whole seconds, 1 or more")
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


__all__: List[str] = ["Settings", "resolve", "register_secrets", "build_url", "OPTIONS"]
