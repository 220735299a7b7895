"""Dify: its DB_* environment, its image layout, its key tables, its Redis lock.

Dify's api builds its SQLAlchemy URL in ``api/configs/middleware/__init__.py``
(``DatabaseConfig.SQLALCHEMY_DATABASE_URI``)::

    {scheme}://{quote_plus(DB_USERNAME)}:{quote_plus(DB_PASSWORD)}@{DB_HOST}:{DB_PORT}/{DB_DATABASE}[?q]
    scheme = "postgresql" if DB_TYPE == "postgresql" else "mysql+pymysql"
    q      = (DB_EXTRAS + "&client_encoding=" + DB_CHARSET if DB_CHARSET else DB_EXTRAS).strip("&")

and, on PostgreSQL only, passes ``options`` (from ``DB_EXTRAS``) plus ``-c timezone=``
``DB_SESSION_TIMEZONE_OVERRIDE`` (default UTC) as ``connect_args``. We build the same string
and parse it the same way, so a migration that connects means the api connects with the same
settings. Where Dify's URL cannot work (``DB_CHARSET`` on MySQL reaches PyMySQL as an unknown
``client_encoding`` argument; a space in the password is encoded as ``+`` and decoded as ``+``)
we refuse with exit 2 instead of connecting where the api will not.

The migrations run in a minimal Flask context (see flaskapp.py): no Redis, no storage, no
Celery.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qsl, quote_plus

from ..errors import ConfigError

NAME = "dify"
APP_ROOT = "/app/api"
MIGRATIONS = "/app/api/migrations"
#: Tables a working Dify cannot do without (models/account.py, models/model.py, models/dataset.py).
KEY_TABLES = ("alembic_version", "accounts", "tenants", "tenant_account_joins", "apps",
              "app_model_configs", "datasets")
#: The key ``flask upgrade-db`` takes with SET NX; while it exists, Dify skips migrating.
REDIS_LOCK_KEY = "db_upgrade_lock"

#: DB_TYPE values Dify accepts (a pydantic Literal: exact, case-sensitive).
DB_TYPES = ("postgresql", "mysql", "oceanbase", "seekdb")
#: DB_TYPE values Dify accepts that migrategate refuses until it is tested on them: their
#: MySQL-compatible GET_LOCK (the migration lock) and DDL semantics are unverified, and no
#: such server can be run here
UNTESTED_DB_TYPES = ("oceanbase", "seekdb")


def _scheme(env: Mapping[str, str]) -> str:
    """Dify >= 1.10 computes the scheme from DB_TYPE (default postgresql) and ignores
    SQLALCHEMY_DATABASE_URI_SCHEME; older Dify read that variable and had no DB_TYPE."""
    db_type = env.get("DB_TYPE", "")
    if db_type:
        if db_type not in DB_TYPES:
            raise ConfigError(f"DB_TYPE={db_type!r} is not one Dify accepts (its api would "
                              "refuse to start)",
                              f"use exactly one of: {', '.join(DB_TYPES)}")
        if db_type in UNTESTED_DB_TYPES:
            raise ConfigError(
                f"DB_TYPE={db_type}: migrategate is not tested on {db_type} yet (its "
                "MySQL-compatible GET_LOCK, which the migration lock needs, and its DDL "
                "behaviour are unverified), so it refuses rather than claim a verified "
                "migration", "run Dify's own migration for this database for now")
        return "postgresql" if db_type == "postgresql" else "mysql+pymysql"
    legacy = env.get("SQLALCHEMY_DATABASE_URI_SCHEME", "")
    if legacy and not legacy.startswith("postgresql"):
        raise ConfigError(
            f"DB_TYPE is not set and SQLALCHEMY_DATABASE_URI_SCHEME={legacy}: Dify 1.10 and "
            "later ignore that variable and use PostgreSQL (DB_TYPE's default), Dify before "
            "1.10 uses it; which one runs here can't be told from the environment",
            "set DB_TYPE (mysql or postgresql) to what the api uses; Dify before 1.10 ignores "
            "it, so it is safe to add")
    return "postgresql"


def _check_present(env: Mapping[str, str], password_elsewhere: bool, mysql: bool) -> None:
    """Unset variables are named all at once. DB_PASSWORD may be set to "" (Dify's own
    default, for trust/peer authentication or a sidecar proxy); the others may not be empty."""
    missing = [n for n in ("DB_HOST", "DB_USERNAME", "DB_DATABASE") if not env.get(n)]
    if not password_elsewhere and "DB_PASSWORD" not in env:
        missing.append("DB_PASSWORD")
    if mysql and not env.get("DB_PORT"):
        missing.append("DB_PORT")  # Dify's default, 5432, is PostgreSQL's port
    if missing:
        raise ConfigError(
            f"--preset dify needs {', '.join(missing)} (not set or empty)",
            "set them as the Dify api Deployment does (DB_PASSWORD from its Secret; "
            "DB_PASSWORD=\"\" is accepted for password-less logins), or give --database-url",
        )


def _check_dify_can_use(env: Mapping[str, str], mysql: bool) -> None:
    """Refuse settings with which Dify's own URL fails: the api would not connect."""
    if mysql and env.get("DB_CHARSET"):
        raise ConfigError(
            f"DB_CHARSET={env['DB_CHARSET']!r} with DB_TYPE={env.get('DB_TYPE', 'mysql')}: "
            "Dify appends it as client_encoding=..., which PyMySQL rejects, so the api "
            "cannot connect with these settings",
            "unset DB_CHARSET and put the charset in DB_EXTRAS (e.g. DB_EXTRAS=charset=utf8mb4)")
    for name in ("DB_USERNAME", "DB_PASSWORD"):
        if " " in env.get(name, ""):
            raise ConfigError(
                f"{name} contains a space: Dify encodes it as '+' and SQLAlchemy decodes "
                "'+' as '+', so the api would log in with a different value and fail",
                f"choose a {name.split('_')[1].lower()} without spaces")
    port = (env.get("DB_PORT") or "5432").strip()  # pydantic's int: surrounding space is fine
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"DB_PORT={env.get('DB_PORT')!r} is not a port number (Dify's "
                          "pydantic setting refuses it, so its api would not start)")


def dify_url_string(env: Mapping[str, str], password_elsewhere: bool = False) -> str:
    """The exact string Dify's api builds (with the password: never print it)."""
    scheme = _scheme(env)
    mysql = scheme.startswith("mysql")
    _check_present(env, password_elsewhere, mysql)
    _check_dify_can_use(env, mysql)
    charset, extras = env.get("DB_CHARSET", ""), env.get("DB_EXTRAS", "")
    query = (f"{extras}&client_encoding={charset}" if charset else extras).strip("&")
    auth = quote_plus(env["DB_USERNAME"])
    if not password_elsewhere:
        auth += ":" + quote_plus(env["DB_PASSWORD"])
    port = int((env.get("DB_PORT") or "5432").strip())  # Dify formats the parsed int
    return (f"{scheme}://{auth}@{env['DB_HOST']}:{port}/"
            f"{env['DB_DATABASE']}" + (f"?{query}" if query else ""))


def connect_options(env: Mapping[str, str]) -> Optional[str]:
    """Dify's PostgreSQL ``connect_args["options"]``: DB_EXTRAS' options plus the session
    time zone (DB_SESSION_TIMEZONE_OVERRIDE, default UTC; empty turns it off)."""
    options = dict(parse_qsl(env.get("DB_EXTRAS", ""))).get("options", "").strip()
    zone = env.get("DB_SESSION_TIMEZONE_OVERRIDE", "UTC").strip()
    if zone:
        options = f"{options} -c timezone={zone}".strip()
    return options or None


def database_url(env: Mapping[str, str], password_elsewhere: bool = False) -> str:
    """Dify's URL, rendered with its password (callers mask it); every missing var named.

    Dify's string, parsed by SQLAlchemy as Dify's engine parses it, with PostgreSQL's
    ``options`` set to what Dify passes in ``connect_args`` (which overrides the URL's)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = dify_url_string(env, password_elsewhere)
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(
            "the URL Dify builds from DB_HOST, DB_PORT and DB_DATABASE is malformed, so the "
            "api cannot connect either (DB_HOST goes in as is: an IPv6 address needs [...])",
            "fix those variables") from None
    if url.get_backend_name() == "postgresql":
        options = connect_options(env)
        query = {k: v for k, v in url.query.items() if k != "options"}
        if options:
            query["options"] = options
        url = url.set(query=query)
    return url.render_as_string(hide_password=False)


_NOTHING: Mapping[str, Any] = {}
_TRUE = ("1", "true", "yes", "on", "t", "y")


def redis_url(env: Mapping[str, str]) -> Optional[str]:
    """Dify's Redis (REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD, REDIS_DB,
    REDIS_USE_SSL), or None when Dify's Redis isn't configured here."""
    from urllib.parse import quote

    host = env.get("REDIS_HOST")
    if not host:
        return None
    scheme = "rediss" if (env.get("REDIS_USE_SSL") or "").lower() in _TRUE else "redis"
    auth = ""
    if env.get("REDIS_PASSWORD"):  # Dify sends `REDIS_PASSWORD or None`: "" means no AUTH
        user = quote(env.get("REDIS_USERNAME") or "", safe="")
        auth = f"{user}:{quote(env['REDIS_PASSWORD'], safe='')}@"
    return f"{scheme}://{auth}{host}:{env.get('REDIS_PORT') or 6379}/{env.get('REDIS_DB') or 0}"


def redis_lock_key(env: Mapping[str, str]) -> str:
    """The physical key: Dify prefixes every Redis name with ``REDIS_KEY_PREFIX.strip() + ":"``
    when the prefix is not empty (api/extensions/redis_names.py)."""
    prefix = (env.get("REDIS_KEY_PREFIX") or "").strip()
    return f"{prefix}:{REDIS_LOCK_KEY}" if prefix else REDIS_LOCK_KEY


def redis_topology(env: Mapping[str, str]) -> Optional[str]:
    """"sentinel" or "cluster" when Dify's Redis is one (REDIS_USE_SENTINEL, REDIS_USE_CLUSTERS):
    doctor does not follow those, and says so."""
    if (env.get("REDIS_USE_SENTINEL") or "").strip().lower() in _TRUE:
        return "sentinel"
    if (env.get("REDIS_USE_CLUSTERS") or "").strip().lower() in _TRUE:
        return "cluster"
    return None


def read_dotenv(path: str) -> Dict[str, str]:
    """``KEY=VALUE`` lines of a .env file as pydantic-settings (python-dotenv) reads them:
    comments, ``export``, single or double quotes; {} when there is no such file."""
    out: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[key] = value
    return out


def _settings_env(env: Mapping[str, str], app_root: str) -> Dict[str, str]:
    """What Dify's api reads: the environment, then ``<app root>/.env`` (its pydantic
    settings read .env from the working directory, which is the app root in its image).
    Settings from a remote source (Apollo, Nacos) can't be read here: refused, by name."""
    merged = {**read_dotenv(os.path.join(app_root, ".env")), **env}
    remote = merged.get("REMOTE_SETTINGS_SOURCE_NAME", "").strip()
    if remote and not merged.get("DB_HOST"):
        raise ConfigError(
            f"Dify reads its settings from {remote} (REMOTE_SETTINGS_SOURCE_NAME), which "
            "migrategate cannot read, and DB_HOST is not in the environment",
            "pass the DB_* variables (or --database-url) to the migration Job as well")
    return merged


def defaults(env: Mapping[str, str], given: Mapping[str, Any] = _NOTHING) \
        -> Dict[str, Tuple[Any, str]]:
    """Defaults under flags and MIGRATEGATE_* env. ``--app-root DIR`` (or
    MIGRATEGATE_APP_ROOT) moves the migrations default to DIR/migrations, as in Dify's tree."""
    app_root = str(given.get("app_root") or APP_ROOT)
    dotenv = os.path.join(app_root, ".env")
    from_file = {k for k in read_dotenv(dotenv) if k not in env}
    env = _settings_env(env, app_root)
    out: Dict[str, Tuple[Any, str]] = {
        "migrations": (MIGRATIONS, "preset dify"),
        "app_root": (APP_ROOT, "preset dify"),
        "expect_tables": (KEY_TABLES, "preset dify"),
    }
    if "database_url" not in given:
        password_elsewhere = bool({"password", "password_file"} & set(given))
        source = "preset dify (DB_* env)"
        if any(k.startswith("DB_") for k in from_file):
            source = f"preset dify (DB_* env and {dotenv})"
        out["database_url"] = (database_url(env, password_elsewhere), source)
    if "redis_url" not in given and not redis_topology(env):
        url = redis_url(env)
        if url:
            out["redis_url"] = (url, "preset dify (REDIS_* env)")
    if "config" in given:
        out.pop("migrations")
    elif given.get("app_root"):
        out["migrations"] = (os.path.join(str(given["app_root"]), "migrations"),
                             "preset dify (app root + /migrations)")
    return out


__all__: List[str] = ["database_url", "dify_url_string", "connect_options", "redis_url",
                      "redis_lock_key", "redis_topology", "defaults"]
