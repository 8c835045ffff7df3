"""Configuration: every setting with its default and rule, read once at start and checked there.

The order is fixed: defaults, then the instance folder's ``config.py``, then
``APIKEYS_*`` environment variables, then a test mapping (which replaces the
middle two). A value that breaks its rule stops the start with one line.
"""

from __future__ import annotations

import logging
import os
import reprlib

from apikeys.instance import MIN_SECRET_LENGTH
from apikeys.setting_rules import Boolean
from apikeys.setting_rules import Choice
from apikeys.setting_rules import DatabaseUrl
from apikeys.setting_rules import Integer
from apikeys.setting_rules import Items
from apikeys.setting_rules import RedisUrl
from apikeys.setting_rules import Refused
from apikeys.setting_rules import Text

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A setting has a value its rule refuses; the message names the setting and what it accepts."""


ORIGIN = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
DAY = 24 * 3600

_SHORT = reprlib.Repr()
_SHORT.maxstring = 60  # characters of a bad value an error shows (its start and end)

# Every setting of ours: (default, rule). Documented in README.md's configuration table.
SETTINGS: dict[str, tuple[object, object]] = {
    "APIKEYS_DATABASE_URL": ("", DatabaseUrl()),  # empty: a SQLite file in the instance folder
    "APIKEYS_JWT_SECRET": ("", Text(secret=True)),  # empty: generated once into the instance folder
    "APIKEYS_JWT_ALGORITHMS": (["HS256"], Items(r"[A-Za-z0-9]+", "JWT algorithm names")),
    "APIKEYS_JWT_PUBLIC_KEY": ("", Text()),  # PEM, for RS256 / ES256 / EdDSA
    "APIKEYS_JWT_AUDIENCE": ("", Text()),
    "APIKEYS_JWT_ISSUER": ("", Text()),
    "APIKEYS_JWT_TENANT_CLAIM": ("tenantId", Text(required=True)),
    "APIKEYS_JWT_LEEWAY": (30, Integer(0, 600)),  # seconds a clock may be ahead: nbf and iat in the future
    "APIKEYS_JWT_MAX_LIFETIME": (DAY, Integer(0, 366 * DAY)),  # a token may not expire later than this; 0: no limit
    # empty: generated once into the instance folder. As long as a key file must be (instance.read_secret).
    "APIKEYS_VERIFIER_KEY": ("", Text(secret=True, shortest=MIN_SECRET_LENGTH)),
    # keys digests may still be under
    "APIKEYS_VERIFIER_KEY_PREVIOUS": ([], Items(what="keys", secret=True, shortest=MIN_SECRET_LENGTH)),
    "APIKEYS_BCRYPT_ROUNDS": (12, Integer(4, 31)),
    # bcrypt hashes at once for key changes, per instance folder (every worker of a service); 0: half the cores
    "APIKEYS_HASHING_CONCURRENCY": (0, Integer(0, 1024)),
    "APIKEYS_MAX_KEYS_PER_TENANT": (1000, Integer(0, 1_000_000)),  # 0: no limit
    "APIKEYS_MAX_BODY_BYTES": (64 * 1024, Integer(1024, 16 * 1024 * 1024)),
    "APIKEYS_LAST_USED_INTERVAL": (60, Integer(0, DAY)),
    "APIKEYS_SQLITE_BUSY_TIMEOUT": (10_000, Integer(0, 600_000)),  # milliseconds
    "APIKEYS_DB_POOL_SIZE": (5, Integer(1, 1000)),
    "APIKEYS_DB_MAX_OVERFLOW": (10, Integer(0, 1000)),
    "APIKEYS_DB_POOL_TIMEOUT": (30, Integer(1, 3600)),
    "APIKEYS_DB_POOL_RECYCLE": (1800, Integer(-1, 7 * DAY)),
    "APIKEYS_DB_POOL_PRE_PING": (True, Boolean()),  # PostgreSQL: test each connection before use
    "APIKEYS_LOG_LEVEL": ("INFO", Choice(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), case="upper")),
    "APIKEYS_LOG_FORMAT": ("text", Choice(("text", "json"))),
    "APIKEYS_LOG_VERIFIED": (False, Boolean()),  # a request log line for every *successful* /verify too
    "APIKEYS_METRICS": (True, Boolean()),
    # empty: rate-limit counters in a SQLite file of the instance folder (this host's workers); redis://: every host's
    "APIKEYS_RATE_LIMIT_URL": ("", RedisUrl()),
    "APIKEYS_RATE_LIMIT_TIMEOUT_MS": (50, Integer(1, 10_000)),  # Redis slower than this has failed (ON_ERROR decides)
    "APIKEYS_RATE_LIMIT_ON_ERROR": ("open", Choice(("open", "closed"))),  # the counter store fails: serve, or 503
    "APIKEYS_USAGE": (True, Boolean()),  # count verifications per key and hour (GET .../usage)
    "APIKEYS_USAGE_FLUSH_SECONDS": (5, Integer(1, 3600)),  # how often each worker writes its counts
    "APIKEYS_USAGE_RETENTION_DAYS": (90, Integer(1, 36500)),
    "APIKEYS_CORS_ORIGINS": ([], Items(ORIGIN, "exact origins such as https://admin.example.com")),
}
DEFAULTS = {name: default for name, (default, _) in SETTINGS.items()}


def instance_path(path: str | None = None) -> str:
    """Return the instance folder: ``path``, else APIKEYS_INSTANCE_PATH, else ./instance, made absolute."""
    return os.path.abspath(path or os.environ.get("APIKEYS_INSTANCE_PATH") or "instance")


def check(config) -> None:
    """Apply the defaults to a Flask config and bring every setting to its type; raise ConfigError."""
    for name, (default, rule) in SETTINGS.items():
        value = config.setdefault(name, default)
        try:
            config[name] = rule.read(value)
        except Refused as error:
            raise ConfigError(f"{name} is not usable: {error}.") from None
        except (TypeError, ValueError):
            # A value is shown cut to its two ends: an error is one line, whatever was pasted into the setting.
            shown = "" if getattr(rule, "secret", False) else f"={_SHORT.repr(value)}"
            raise ConfigError(f"{name}{shown} is not valid: it must be {rule.describe()}.") from None
    config["MAX_CONTENT_LENGTH"] = config["APIKEYS_MAX_BODY_BYTES"]


def load(settings, test_config: dict | None = None) -> None:
    """Fill a Flask Config in order (defaults, instance config.py, environment, or a test mapping), then check it."""
    if test_config is None:
        try:
            settings.from_pyfile("config.py", silent=True)
        except Exception as error:  # the file is Python: whatever it raises stops the start, in one line
            where = os.path.join(settings.root_path, "config.py")
            line = getattr(error, "lineno", None)
            detail = getattr(error, "msg", None) or str(error)
            where += f", line {line}" if line else ""
            raise ConfigError(f"{where} cannot be loaded: {type(error).__name__}: {detail}") from None
        settings.update({name: value for name, value in os.environ.items() if name in SETTINGS})
    else:
        settings.update(test_config)
    check(settings)


def init_app(app, test_config: dict | None = None) -> None:
    """Load and check the app's configuration."""
    load(app.config, test_config)
