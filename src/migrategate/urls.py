"""Database URLs: parse them, attach the password, pick an installed driver, mask them.

Separate from option resolution (``settings.py``): this is about what a URL
means to SQLAlchemy and which DBAPI driver the image really has. The secrets a
URL carries are returned by :func:`url_secrets` for the caller to register —
nothing here registers anything as a side effect.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, List, Optional

from .errors import ConfigError
from .redact import MASK

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import URL

#: SQLAlchemy backend names of the MySQL family
MYSQL = ("mysql", "mariadb")


def mask_url(url: "URL") -> str:
    return url.render_as_string(hide_password=True)


#: SQLAlchemy's reading (``make_url``): the user name runs to the first ':' or '/', the
#: password from there to the next '@' — so an unquoted '@' in a password ends it early
_URL_PASSWORD = re.compile(r"^[^:/]+://[^:/]*:([^@]*)@")


def build_url(raw: str, password: Optional[str] = None, source: str = "") -> "URL":
    """Parse, attach the password, and pick a driver that is actually installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    where = f" ({source})" if source else ""
    raw = raw.strip()
    if "\x00" in raw:
        raise ConfigError(f"the database URL{where} contains a NUL byte",
                          "no URL, user name or password can hold one; check how the URL "
                          "is built")
    _refuse_unquoted_at(raw, where)
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"the database URL{where} is malformed",
            "expected dialect[+driver]://user[:password]@host[:port]/database, "
            "e.g. postgresql://app@db:5432/app",
        ) from None
    parts = (url.username, url.password, url.host, url.database, *url.query.keys(),
             *(v for vs in url.query.values() for v in ((vs,) if isinstance(vs, str) else vs)))
    if any("\x00" in str(p) for p in parts if p):
        raise ConfigError(f"the database URL{where} contains an encoded NUL byte (%00)",
                          "no user name, password or database name can hold one; check how "
                          "the URL is built")
    if password is not None and "\x00" in password:
        raise ConfigError("the database password contains a NUL byte, which no database "
                          "accepts", "check the Secret's value")
    if url.password:
        if password is not None:
            raise ConfigError(
                f"the database URL{where} already contains a password, and a password "
                "file or MIGRATEGATE_DATABASE_PASSWORD is set too",
                "keep one source of the password",
            )
    if password is not None:
        url = url.set(password=password)
    url = _with_installed_driver(url, where)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise ConfigError(
                "an in-memory SQLite database cannot be migrated: each connection gets "
                "its own empty database",
                "use a file, e.g. sqlite:///app.db",
            )
    return url


def _refuse_unquoted_at(raw: str, where: str) -> None:
    """``postgresql://u:p@ss@host/db``: SQLAlchemy (and libpq, and the app reading the same
    URL) take the password to end at the first '@' and the rest of it for the host, so
    every message would show part of the password as the host, and the app would not
    connect either. Refused, naming no part of it; :func:`url_secrets` registers them all.
    """
    m = _URL_PASSWORD.match(raw)
    if m and "@" in raw[m.end():]:
        raise ConfigError(
            f"the database URL{where} has an '@' after the one that ends its password, so "
            "the password would be cut there and the rest read as the host",
            "write each '@' of the password (or of the database name) as %40, e.g. with "
            "urllib.parse.quote(password, safe=''); or leave the password out of the URL "
            "and give it by --password-file or MIGRATEGATE_DATABASE_PASSWORD")


_DRIVER_PREFERENCE = {
    # What app images actually ship first (Dify uses psycopg2), then the rest.
    "postgresql": (("psycopg2", "psycopg2"), ("psycopg", "psycopg"), ("pg8000", "pg8000"),
                   ("asyncpg", None)),
    "mysql": (("pymysql", "pymysql"), ("MySQLdb", "mysqldb"),
              ("mysql.connector", "mysqlconnector")),
    "mariadb": (("pymysql", "pymysql"), ("MySQLdb", "mysqldb"), ("mariadb", "mariadbconnector")),
}


def _with_installed_driver(url: "URL", where: str) -> "URL":
    from sqlalchemy.exc import NoSuchModuleError

    backend = url.get_backend_name()
    if backend == "postgres":  # Heroku-style scheme that SQLAlchemy rejects
        url = url.set(drivername="postgresql" + url.drivername[len("postgres"):])
        backend = "postgresql"
    if backend in _DRIVER_PREFERENCE and "+" not in url.drivername:
        for module, driver in _DRIVER_PREFERENCE[backend]:
            if driver and _installed(module):
                url = url.set(drivername=f"{backend}+{driver}")
                break
        else:
            wanted = ", ".join(m for m, d in _DRIVER_PREFERENCE[backend] if d)
            raise ConfigError(
                f"no {backend} driver is installed in this Python",
                f"install one of: {wanted} (e.g. pip install 'migrategate[postgres]')",
            )
    try:
        dialect_cls = url.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"the database URL{where} names an unknown database or driver "
            f"{url.drivername!r}",
            "use postgresql://, mysql://, mariadb:// or sqlite:///",
        ) from None
    loader = getattr(dialect_cls, "import_dbapi", None) or dialect_cls.dbapi
    try:
        loader()  # type: ignore[operator,misc]
    except ImportError as exc:
        raise ConfigError(
            f"the driver for {url.drivername!r} is not installed ({exc})",
            "install it in this image, or drop '+driver' from the URL to use one that is",
        ) from None
    return url


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def mask_redis_url(url: str) -> str:
    """redis://user:***@host:port/db — never the password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def url_secrets(raw: str) -> List[str]:
    """The password in a URL as typed and URL-decoded (even if the URL is malformed), and
    with an unquoted '@' each reading of it and each part between '@'s."""
    from urllib.parse import unquote, urlsplit

    found = []
    m = _URL_PASSWORD.match(raw)
    if m:
        found += [m.group(1), unquote(m.group(1))]
        rest = raw[m.end():]
        if "@" in rest:  # an unquoted '@' (refused): the password runs to the last '@'
            whole = raw[m.start(1):m.end() + rest.rindex("@")]
            for part in [whole, *whole.split("@")]:
                found += [part, unquote(part)]
    try:
        password = urlsplit(raw).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    return [s for s in dict.fromkeys(found) if s]
