"""Flask-Migrate directories without booting the application.

A Flask-Migrate ``env.py`` reads ``current_app.extensions["migrate"]`` (its
``db.engine`` and ``configure_args``). The app's own factory would also
connect Redis, object storage, Celery… — exactly what a migration Job must not
depend on. So by default we build a minimal Flask app with Flask-SQLAlchemy
and Flask-Migrate registered on our URL, and push its app context while
env.py runs. ``--flask-app module:factory`` uses the real app instead.

Flask, Flask-SQLAlchemy and Flask-Migrate are an optional extra
(``migrategate[flask]``), imported only here.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ConfigError
from .settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from alembic.config import Config

_NEEDS_FLASK = re.compile(r"\bcurrent_app\b")


def needs_flask(script_location: str) -> bool:
    """True when env.py reads Flask's ``current_app`` (a Flask-Migrate directory)."""
    try:
        with open(os.path.join(script_location, "env.py"), encoding="utf-8") as fh:
            return bool(_NEEDS_FLASK.search(fh.read()))
    except OSError:
        return False


def _imports() -> Any:
    try:
        import flask
        import flask_migrate
        import flask_sqlalchemy
    except ImportError as exc:
        raise ConfigError(
            f"this migrations directory is a Flask-Migrate one (env.py uses current_app), "
            f"but {exc.name} is not installed",
            "install migrategate[flask] (Flask, Flask-SQLAlchemy, Flask-Migrate) — the app "
            "image usually has them already",
        ) from None
    return flask, flask_sqlalchemy, flask_migrate


def minimal_app(settings: Settings, directory: str) -> Any:
    """Flask + Flask-SQLAlchemy + Flask-Migrate on our URL, and nothing else of the app."""
    flask, flask_sqlalchemy, flask_migrate = _imports()
    from sqlalchemy.pool import NullPool

    from .connect import engine_options

    assert settings.url is not None
    app = flask.Flask("migrategate")
    app.config["SQLALCHEMY_DATABASE_URI"] = settings.url.render_as_string(hide_password=False)
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        "poolclass": NullPool,
        "connect_args": engine_options(settings, control=False),
    }
    db = flask_sqlalchemy.SQLAlchemy()
    db.init_app(app)
    flask_migrate.Migrate(app, db, directory=directory, transaction_per_migration=True)
    return app


def real_app(spec: str) -> Any:
    """``module:factory`` (called with no arguments) or ``module:app``."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ConfigError(f"--flask-app {spec!r} is not module:factory",
                          "for example --flask-app app_factory:create_app")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import the Flask app module {module_name!r}: {exc}",
                          "check --app-root and that the app's dependencies are installed",
                          ) from None
    target = getattr(module, attr or "create_app", None) or getattr(module, "app", None)
    if target is None:
        raise ConfigError(f"{module_name} has no {attr or 'create_app'}")
    app = target() if callable(target) and not hasattr(target, "app_context") else target
    if "migrate" not in getattr(app, "extensions", {}):
        raise ConfigError(f"the app from {spec} has no Flask-Migrate extension registered",
                          "call Migrate(app, db) in the factory, or drop --flask-app")
    return app


@contextlib.contextmanager
def flask_context(settings: Settings, config: "Config") -> Iterator[None]:
    directory = str(config.get_main_option("script_location"))
    if settings.flask_app:
        app = real_app(settings.flask_app)
    elif needs_flask(directory):
        app = minimal_app(settings, directory)
    else:
        yield
        return
    with app.app_context():
        yield
