"""The field types the schemas share: timestamps, display names, scopes and metadata, with their rules."""

from __future__ import annotations

import json
import math
import unicodedata
from datetime import UTC
from datetime import datetime

import marshmallow as ma
from marshmallow import fields
from marshmallow import validate

from apikeys import scopes

MAX_META_BYTES = 4096
MAX_META_DEPTH = 32
META_RULE = f"At most {MAX_META_BYTES // 1024} KiB as JSON and {MAX_META_DEPTH} levels deep; finite numbers only."
SCOPE_RULE = "Must be 1 to 64 of A-Z a-z 0-9 _ . : * -."


class Timestamp(fields.DateTime):
    """An ISO-8601 UTC time with milliseconds and Z, as in 2025-06-01T12:00:00.000Z."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        # The year with four digits (strftime's %Y has no leading zeros before the year 1000).
        return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


class ZonedTimestamp(Timestamp):
    """A time with a zone (Z or an offset), within the years 1 to 9999 in UTC; read as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        # Printable ASCII only: Python's parser lets some other characters through (a NUL before the zone).
        if not isinstance(value, str) or len(value) > 40 or not (value.isascii() and value.isprintable()):
            raise ma.ValidationError("Must be an ISO-8601 time such as 2026-12-31T00:00:00.000Z.")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ma.ValidationError("Must be an ISO-8601 time such as 2026-12-31T00:00:00.000Z.") from None
        if moment.tzinfo is None:
            raise ma.ValidationError("Must say its time zone: end it with Z for UTC.")
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:59:59-23:59 is in the year 10000 in UTC
            raise ma.ValidationError("Must lie within the years 1 to 9999 in UTC.") from None
        return moment


class FutureTimestamp(ZonedTimestamp):
    """A time with a zone (Z or an offset), in the future; read as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        moment = super()._deserialize(value, attr, data, **kwargs)
        if moment <= datetime.now(UTC):
            raise ma.ValidationError("Must be in the future.")
        return moment


class Scopes(fields.List):
    """At most 50 scopes, each 1 to 64 of A-Z a-z 0-9 _ . : * -; repeated ones are kept once."""

    def __init__(self, **kwargs):
        super().__init__(
            fields.String(validate=validate.Regexp(f"^{scopes.PATTERN}$", error=SCOPE_RULE)),
            validate=validate.Length(max=scopes.MAX_SCOPES),
            metadata={"maxItems": scopes.MAX_SCOPES, "example": ["orders:read", "orders:*"]},
            **kwargs,
        )

    def _deserialize(self, value, attr, data, **kwargs):
        return list(dict.fromkeys(super()._deserialize(value, attr, data, **kwargs)))


class Meta(fields.Dict):
    """A JSON object of at most 4 KiB and 32 levels, holding only what standard JSON can say."""

    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(), metadata={"description": META_RULE}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        meta = super()._deserialize(value, attr, data, **kwargs)
        check_json_values(meta)
        # Safe now: no value is nested too deeply, too long to print or outside standard JSON.
        size = len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
        if size > MAX_META_BYTES:
            raise ma.ValidationError(f"Must be at most {MAX_META_BYTES} bytes as JSON.")
        return meta


NOT_FINITE = "Must hold only finite numbers: NaN and Infinity are not JSON, and 1e400 is beyond a double."
# An integer of more digits than this cannot fit in MAX_META_BYTES; 3.33 bits a digit, so checked without printing.
_MAX_INTEGER_BITS = math.ceil(MAX_META_BYTES * math.log2(10))


def check_json_values(meta: dict) -> None:
    """Refuse what a database or a strict JSON parser would choke on; raise ValidationError saying what.

    Python's json module reads NaN, Infinity and -Infinity (none of them JSON, and
    PostgreSQL refuses them) and turns 1e400 into infinity; it nests as deep as the
    interpreter's stack allows. The walk is a loop, not a recursion, so that no
    depth can break it.
    """
    pending = [(meta, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_META_DEPTH:
                raise ma.ValidationError(f"Must be nested at most {MAX_META_DEPTH} levels deep, counting meta itself.")
            if isinstance(value, dict):
                if not all(isinstance(key, str) for key in value):
                    raise ma.ValidationError("Must have only strings as keys.")
                _check_text(*value)
                value = value.values()
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_text(value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ma.ValidationError(NOT_FINITE)
        elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INTEGER_BITS:
            raise ma.ValidationError(f"Must be at most {MAX_META_BYTES} bytes as JSON.")
        elif not isinstance(value, int | float | bool) and value is not None:
            raise ma.ValidationError("Must hold only JSON values: objects, arrays, strings, numbers, booleans, null.")


def _check_text(*texts: str) -> None:
    # A lone surrogate (\ud800 in JSON) is no Unicode character: UTF-8 and PostgreSQL cannot hold it.
    if not all(text.isascii() for text in texts):
        try:
            "".join(texts).encode()
        except UnicodeEncodeError:
            raise ma.ValidationError("Must not contain lone surrogates (\\ud800 to \\udfff).") from None


# The rule of Name below, for the OpenAPI document: surrounding ASCII white space
# is trimmed; what is left is not empty and holds no control characters. Spelled
# with explicit escapes so that every regex dialect (Python, ECMA, Rust) agrees.
SPACE = " \t\n\r\x0b\x0c"
SPACE_CLASS = "[ \\t\\n\\r\\x0b\\x0c]"
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
NAME_PATTERN = f"^{SPACE_CLASS}*[^ {_CONTROL}](?:[^{_CONTROL}]*[^ {_CONTROL}])?{SPACE_CLASS}*$"
MAX_NAME_LENGTH = 100


class Name(fields.String):
    """A display name: at most 100 characters, trimmed, not blank, no control characters."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > MAX_NAME_LENGTH:
            raise ma.ValidationError(f"Must be at most {MAX_NAME_LENGTH} characters.")
        text = text.strip(SPACE)
        if not text:
            raise ma.ValidationError("Must not be blank.")
        # Cc: control characters (NUL included); Cs: lone surrogates, which no database can store.
        if any(unicodedata.category(char) in ("Cc", "Cs") for char in text):
            raise ma.ValidationError("Must not contain control characters.")
        return text
