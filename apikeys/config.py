"""Configuration defaults, and how they are read: defaults, instance config.py, APIKEYS_* environment."""

from __future__ import annotations

import os

# Every setting of ours, with its default. The type of the default says how an
# environment variable of the same name is read.
DEFAULTS: dict[str, object] = {
    "APIKEYS_DATABASE_URL": "",  # empty: a SQLite file in the instance folder
    "APIKEYS_JWT_SECRET": "",  # empty: generated once, kept in the instance folder
    "APIKEYS_JWT_ALGORITHMS": ["HS256"],
    "APIKEYS_JWT_PUBLIC_KEY": "",  # PEM, for RS256 / ES256 / EdDSA
    "APIKEYS_JWT_AUDIENCE": "",
    "APIKEYS_JWT_ISSUER": "",
    "APIKEYS_JWT_TENANT_CLAIM": "tenantId",
    "APIKEYS_JWT_LEEWAY": 0,
    "APIKEYS_BCRYPT_ROUNDS": 12,
    "APIKEYS_MAX_BODY_BYTES": 64 * 1024,
    "APIKEYS_CACHE_SIZE": 10_000,
    "APIKEYS_LAST_USED_INTERVAL": 60,
    "APIKEYS_FAILED_ATTEMPTS_LIMIT": 10,
    "APIKEYS_FAILED_ATTEMPTS_WINDOW": 60,
    "APIKEYS_SQLITE_BUSY_TIMEOUT": 10_000,  # milliseconds
    "APIKEYS_DB_POOL_SIZE": 5,
    "APIKEYS_DB_MAX_OVERFLOW": 10,
    "APIKEYS_DB_POOL_TIMEOUT": 30,
    "APIKEYS_DB_POOL_RECYCLE": 1800,
    "APIKEYS_DB_POOL_PRE_PING": 1,  # PostgreSQL: test each connection before use (one round trip)
    "APIKEYS_LOG_LEVEL": "INFO",
    "APIKEYS_LOG_FORMAT": "text",  # or "json"
}

_TRUE = {"1", "true", "yes", "on"}


def _parse(value: str, default: object) -> object:
    """Read an environment string as the type of its default."""
    if isinstance(default, bool):
        return value.strip().lower() in _TRUE
    if isinstance(default, int):
        return int(value)
    if isinstance(default, list):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def from_environment(environ: os._Environ | dict[str, str] = os.environ) -> dict[str, object]:
    """Return the settings that ``APIKEYS_*`` environment variables set."""
    settings = {}
    for name, default in DEFAULTS.items():
        if name in environ:
            try:
                settings[name] = _parse(environ[name], default)
            except ValueError:
                raise ValueError(f"{name} must be a {type(default).__name__}, got {environ[name]!r}") from None
    return settings


def init_app(app, test_config: dict | None = None) -> None:
    """Load configuration in order: defaults, instance config.py, environment, then a test mapping."""
    for name, default in DEFAULTS.items():
        app.config.setdefault(name, default)
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.update(from_environment())
    else:
        app.config.update(test_config)
    algorithms = app.config["APIKEYS_JWT_ALGORITHMS"]
    if isinstance(algorithms, str):  # a config.py may give "HS256, RS256"
        app.config["APIKEYS_JWT_ALGORITHMS"] = _parse(algorithms, [])
    app.config["MAX_CONTENT_LENGTH"] = app.config["APIKEYS_MAX_BODY_BYTES"]
