"""Dify: its DB_* environment, its image layout, its key tables, its Redis lock.

Dify builds its SQLAlchemy URL from ``DB_TYPE``, ``DB_HOST``, ``DB_PORT``,
``DB_USERNAME``, ``DB_PASSWORD``, ``DB_DATABASE``, ``DB_CHARSET`` and
``DB_EXTRAS``, and on PostgreSQL sets the session time zone from
``DB_SESSION_TIMEZONE_OVERRIDE`` (api/configs/middleware). We read the same variables so the
migration Job can reuse the api Deployment's env and Secrets unchanged. The
migrations run in a minimal Flask context (see flaskapp.py): no Redis, no
storage, no Celery.
"""

from __future__ import annotations

from typing import AbstractSet, Any, Dict, Mapping, Optional, Tuple
from urllib.parse import parse_qsl

from ..errors import ConfigError

NAME = "dify"
APP_ROOT = "/app/api"
MIGRATIONS = "/app/api/migrations"
#: Tables a working Dify cannot do without (models/account.py, models/model.py, models/dataset.py).
KEY_TABLES = ("alembic_version", "accounts", "tenants", "tenant_account_joins", "apps",
              "app_model_configs", "datasets")
#: The key ``flask upgrade-db`` takes with SET NX; while it exists, Dify skips migrating.
REDIS_LOCK_KEY = "db_upgrade_lock"

_MYSQL_TYPES = ("mysql", "oceanbase", "seekdb")


def _backend(env: Mapping[str, str]) -> str:
    db_type = (env.get("DB_TYPE") or "").strip().lower()
    if db_type:
        if db_type == "postgresql" or db_type == "postgres":
            return "postgresql"
        if db_type in _MYSQL_TYPES:
            return "mysql"
        raise ConfigError(f"DB_TYPE={db_type!r} is not one Dify supports",
                          "use postgresql, mysql, oceanbase or seekdb")
    scheme = (env.get("SQLALCHEMY_DATABASE_URI_SCHEME") or "postgresql").lower()
    return "mysql" if scheme.startswith("mysql") else "postgresql"


def database_url(env: Mapping[str, str], password_elsewhere: bool = False) -> str:
    """Dify's URL, rendered with its password (callers mask it); every missing var named."""
    from sqlalchemy.engine import URL

    backend = _backend(env)
    required = ["DB_HOST", "DB_USERNAME", "DB_DATABASE"]
    if not password_elsewhere:
        required.append("DB_PASSWORD")
    if backend == "mysql":
        required.append("DB_PORT")  # Dify's default (5432) is PostgreSQL's port
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise ConfigError(
            f"--preset dify needs {', '.join(missing)} (not set)",
            "set them as the Dify api Deployment does (DB_PASSWORD from its Secret), or give "
            "--database-url",
        )
    port_text = env.get("DB_PORT") or "5432"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"DB_PORT={port_text!r} is not a port number") from None
    query: Dict[str, str] = dict(parse_qsl(env.get("DB_EXTRAS") or "", keep_blank_values=True))
    charset = env.get("DB_CHARSET")
    if charset:
        query["client_encoding" if backend == "postgresql" else "charset"] = charset
    if backend == "postgresql":
        # Dify pins the session time zone (DB_SESSION_TIMEZONE_OVERRIDE, default UTC) through
        # libpq options; migrations that write timestamps must see the same zone.
        zone = env.get("DB_SESSION_TIMEZONE_OVERRIDE", "UTC").strip()
        if zone:
            options = query.get("options", "").strip()
            query["options"] = f"{options} -c timezone={zone}".strip()
    url = URL.create(
        backend,
        username=env["DB_USERNAME"],
        password=None if password_elsewhere else env.get("DB_PASSWORD"),
        host=env["DB_HOST"],
        port=port,
        database=env["DB_DATABASE"],
        query=query,
    )
    return url.render_as_string(hide_password=False)


def redis_url(env: Mapping[str, str]) -> Optional[str]:
    """Dify's Redis (REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD, REDIS_DB,
    REDIS_USE_SSL), or None when Dify's Redis isn't configured here."""
    from urllib.parse import quote

    host = env.get("REDIS_HOST")
    if not host:
        return None
    scheme = "rediss" if (env.get("REDIS_USE_SSL") or "").lower() in ("1", "true", "yes") \
        else "redis"
    auth = ""
    if env.get("REDIS_PASSWORD"):
        user = quote(env.get("REDIS_USERNAME") or "", safe="")
        auth = f"{user}:{quote(env['REDIS_PASSWORD'], safe='')}@"
    return f"{scheme}://{auth}{host}:{env.get('REDIS_PORT') or 6379}/{env.get('REDIS_DB') or 0}"


def defaults(env: Mapping[str, str], given: AbstractSet[str] = frozenset()) \
        -> Dict[str, Tuple[Any, str]]:
    out: Dict[str, Tuple[Any, str]] = {
        "migrations": (MIGRATIONS, "preset dify"),
        "app_root": (APP_ROOT, "preset dify"),
        "expect_tables": (KEY_TABLES, "preset dify"),
    }
    if "database_url" not in given:
        password_elsewhere = bool({"password", "password_file"} & set(given))
        out["database_url"] = (database_url(env, password_elsewhere),
                               "preset dify (DB_* env)")
    if "redis_url" not in given:
        url = redis_url(env)
        if url:
            out["redis_url"] = (url, "preset dify (REDIS_* env)")
    if "config" in given:
        out.pop("migrations")
    return out
