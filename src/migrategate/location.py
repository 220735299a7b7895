"""Where the migrations are: the ini file, ``script_location`` and the version directories.

Found without importing Alembic for the common layouts (a migrations directory
with ``env.py`` and ``versions/``, or an ``alembic.ini`` naming one), so the
read-only commands stay cheap. Anything Alembic resolves itself
(``version_locations``, ``recursive_version_locations``, ``sourceless``,
``package:path`` locations) is asked of Alembic's ``ScriptDirectory``, through
its public attributes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional

from .errors import ConfigError
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config
    from alembic.script import ScriptDirectory


@dataclass
class Location:
    """Where the migrations are, found without importing Alembic."""

    directory: str  # the script location (a directory, or an Alembic "package:path")
    ini: Optional[str]  # the config file Alembic should read, if any
    versions: Optional[List[str]]  # version dirs to read statically; None: ask Alembic


_ALEMBIC_RESOLVES = ("version_locations", "sourceless", "recursive_version_locations")


def locate(settings: Settings) -> Location:
    if settings.config:
        if not os.path.isfile(settings.config):
            raise ConfigError(f"alembic config {settings.config} does not exist",
                              "pass --config PATH/alembic.ini or --migrations DIR")
        ini: Optional[str] = settings.config
        options = _ini_options(settings.config)
        location = (options or {}).get("script_location")
        if options is not None and not location:
            raise ConfigError(f"{settings.config} has no script_location",
                              "add 'script_location = migrations' under [alembic]")
        directory = location or ""
        if location and ":" not in location and not os.path.isabs(location) \
                and not os.path.isdir(location):
            # Alembic resolves relative locations against the cwd; accept ini-relative too.
            beside = os.path.join(os.path.dirname(os.path.abspath(settings.config)), location)
            if os.path.isdir(beside):
                directory = beside
    else:
        directory = settings.migrations or _default_migrations_dir()
        # Flask-Migrate keeps alembic.ini inside the migrations directory.
        candidate = os.path.join(directory, "alembic.ini")
        ini = candidate if os.path.isfile(candidate) else None
        options = _ini_options(ini) if ini else {}
    package_resource = ":" in directory and not os.path.isdir(directory)
    if directory and not package_resource:
        if not os.path.isdir(directory):
            raise ConfigError(f"migrations directory {directory} does not exist",
                              "pass --migrations DIR (the folder with env.py and versions/)")
        if not os.path.isfile(os.path.join(directory, "env.py")):
            raise ConfigError(f"{directory} has no env.py, so it is not an Alembic "
                              "migrations directory",
                              "point --migrations at the folder that holds env.py")
    versions: Optional[List[str]] = None
    if options is not None and directory and not package_resource \
            and not any(options.get(k) for k in _ALEMBIC_RESOLVES):
        versions = [os.path.join(directory, "versions")]
    return Location(directory, ini, versions)


def _ini_options(path: str) -> Optional[Dict[str, str]]:
    """The [alembic] section as Alembic would read it, or None if it can't be read simply."""
    import configparser

    parser = configparser.ConfigParser(
        defaults={"here": os.path.dirname(os.path.abspath(path))})
    try:
        parser.read(path, encoding="utf-8")
        if not parser.has_section("alembic"):
            return {}
        return {k: v for k, v in parser.items("alembic") if k != "here"}
    except (configparser.Error, UnicodeDecodeError):
        return None


def _default_migrations_dir() -> str:
    for candidate in ("migrations", "alembic"):
        if os.path.isfile(os.path.join(candidate, "env.py")):
            return candidate
    raise ConfigError("no migrations given and none found in the current directory",
                      "pass --migrations DIR or --config alembic.ini")


def make_config(settings: Settings, with_url: bool = True,
                location: Optional[Location] = None) -> "Config":
    """An Alembic Config for the migrations directory or ini file, with our URL set."""
    from alembic.config import Config

    loc = location or locate(settings)
    config = Config(loc.ini) if loc.ini else Config()
    if loc.directory:
        config.set_main_option("script_location", loc.directory)
    if with_url and settings.url is not None:
        # configparser interpolates '%': a password with '%' must be doubled.
        url = settings.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["migrategate"] = True
    return config


def script_directory(config: "Config") -> "ScriptDirectory":
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise ConfigError(f"cannot open the migrations: {exc}") from None


def version_dirs(script: "ScriptDirectory") -> List[str]:
    """The directories Alembic reads revision files from, in Alembic's order.

    ``version_locations`` entries may be ``package:path`` resources; Alembic's
    own helper turns them into file names. Without them: ``<script dir>/versions``.
    """
    from alembic.util import coerce_resource_to_filename

    locations = script.version_locations or [os.path.join(script.dir, "versions")]
    out: List[str] = []
    for location in locations:
        path = os.path.abspath(str(coerce_resource_to_filename(str(location))))
        if os.path.isdir(path):
            out.append(path)
    return out
