"""The rules settings are read by: each brings a raw value to its type, or refuses it, and describes what it accepts."""

from __future__ import annotations

import re
from dataclasses import dataclass


class Refused(ValueError):
    """A rule's refusal that says more than the rule's description (never the value itself)."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Text:
    """Any string; ``secret`` values are never repeated in a message."""

    secret: bool = False
    required: bool = False
    shortest: int = 0  # of a value that is set: empty may still mean "generate one"

    def read(self, value):
        if not isinstance(value, str) or (self.required and not value.strip()):
            raise ValueError
        if value and len(value) < self.shortest:
            raise Refused(too_short(self.shortest))
        return value

    def describe(self) -> str:
        return "a non-empty string" if self.required else "a string"


@dataclass(frozen=True)
class Integer:
    low: int
    high: int

    def read(self, value):
        if isinstance(value, str):
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not self.low <= value <= self.high:
            raise ValueError
        return value

    def describe(self) -> str:
        return f"a whole number from {self.low} to {self.high}"


@dataclass(frozen=True)
class Boolean:
    def read(self, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError

    def describe(self) -> str:
        return "one of 1, true, yes, on, 0, false, no, off"


@dataclass(frozen=True)
class Choice:
    values: tuple[str, ...]
    case: str = "lower"  # how a value is normalized before it is compared

    def read(self, value):
        if not isinstance(value, str):
            raise ValueError
        value = getattr(value.strip(), self.case)()
        if value not in self.values:
            raise ValueError
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(self.values)


@dataclass(frozen=True)
class Items:
    """A comma-separated list (or a list), each item matching ``pattern``."""

    pattern: str = r".+"
    what: str = "names"
    secret: bool = False
    shortest: int = 0

    def read(self, value):
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, str) and re.fullmatch(self.pattern, item) for item in value
        ):
            raise ValueError
        if any(len(item) < self.shortest for item in value):
            raise Refused(too_short(self.shortest, "one of its keys"))
        return list(value)

    def describe(self) -> str:
        return f"a comma-separated list of {self.what}"


@dataclass(frozen=True)
class DatabaseUrl:
    """Empty (the SQLite file in the instance folder), or a URL SQLAlchemy can parse, of a dialect it knows."""

    secret = True  # a URL may carry a password: never repeated in a message

    def read(self, value):
        if not isinstance(value, str):
            raise ValueError
        if not value.strip():
            return ""
        import sqlalchemy as sa

        try:
            dialect = sa.make_url(postgresql_driver(value.strip())).get_dialect()
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError):
            raise ValueError from None
        try:
            dialect.import_dbapi()  # what create_engine would fail on, with a traceback, later
        except ImportError as error:
            raise Refused(f"its driver is not installed (no module {error.name}); see README.md") from None
        return postgresql_driver(value.strip())

    def describe(self) -> str:
        return "empty or a database URL such as postgresql+psycopg://user@host/db or sqlite:///apikeys.sqlite3"


@dataclass(frozen=True)
class RedisUrl:
    """Empty, or a Redis URL redis-py reads (redis://, rediss://, unix://); redis-py must be installed for one."""

    secret = True  # a URL may carry a password

    def read(self, value):
        if not isinstance(value, str):
            raise ValueError
        value = value.strip()
        if not value:
            return ""
        if not re.match(r"(rediss?|unix)://", value):
            raise ValueError
        try:
            from redis.connection import parse_url
        except ImportError:
            raise Refused("redis-py is not installed: pip install 'apikeys[redis]'") from None
        try:
            parts = parse_url(value)
        except ValueError:  # never repeated: the URL may hold a password
            raise Refused("redis-py cannot read it as a Redis URL") from None
        if not 0 < parts.get("port", 6379) < 65536:
            raise Refused("its port is not one from 1 to 65535") from None
        return value

    def describe(self) -> str:
        return "empty or a Redis URL such as redis://127.0.0.1:6379/0"


def too_short(shortest: int, what: str = "it") -> str:
    return (
        f"{what} has under {shortest} characters (use 48 or more random ones: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
    )


def postgresql_driver(url: str) -> str:
    """Return a PostgreSQL URL without a driver (``postgres://`` as Heroku, Render and Fly give it) with psycopg 3's."""
    # SQLAlchemy dropped the postgres:// alias, and would pick psycopg2 (not installed) for a bare postgresql://.
    return re.sub(r"\Apostgres(ql)?://", "postgresql+psycopg://", url)
