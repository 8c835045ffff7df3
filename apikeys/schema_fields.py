"""The field types the schemas share: timestamps, display names, scopes and metadata, with their rules."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC
from datetime import datetime

import marshmallow as ma
from marshmallow import fields
from marshmallow import validate

from apikeys import scopes

MAX_META_BYTES = 4096
SCOPE_RULE = "Must be 1 to 64 of A-Z a-z 0-9 _ . : * -."


class Timestamp(fields.DateTime):
    """An ISO-8601 UTC time with milliseconds and Z, as in 2025-06-01T12:00:00.000Z."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class FutureTimestamp(Timestamp):
    """A time with a zone (Z or an offset), in the future; read as UTC."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or len(value) > 40:
            raise ma.ValidationError("Must be an ISO-8601 time such as 2026-12-31T00:00:00.000Z.")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ma.ValidationError("Must be an ISO-8601 time such as 2026-12-31T00:00:00.000Z.") from None
        if moment.tzinfo is None:
            raise ma.ValidationError("Must say its time zone: end it with Z for UTC.")
        moment = moment.astimezone(UTC)
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
    """A JSON object of at most 4 KiB, serialized."""

    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(), metadata={"description": "At most 4 KiB as JSON."}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        meta = super()._deserialize(value, attr, data, **kwargs)
        try:
            size = len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode())
        except (RecursionError, ValueError):
            raise ma.ValidationError("Must be a JSON object that is not nested this deeply.") from None
        if size > MAX_META_BYTES:
            raise ma.ValidationError(f"Must be at most {MAX_META_BYTES} bytes as JSON.")
        return meta


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
