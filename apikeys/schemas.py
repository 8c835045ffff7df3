"""Marshmallow schemas: what the API reads and what it answers, field for field as documented."""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC
from datetime import datetime

import marshmallow as ma
from marshmallow import fields
from marshmallow import validate

from apikeys import scopes
from apikeys.keys import ENVIRONMENTS

MAX_PAGE = 1_000_000
MAX_LIMIT = 100
MAX_META_BYTES = 4096
MAX_GRACE_PERIOD = 7 * 24 * 3600
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


class CreateKeySchema(ma.Schema):
    name = Name(
        required=True,
        metadata={
            "minLength": 1,
            "maxLength": MAX_NAME_LENGTH,
            "pattern": NAME_PATTERN,
            "description": "Trimmed of surrounding white space.",
            "example": "Production Backend",
        },
    )
    environment = fields.String(required=True, validate=validate.OneOf(ENVIRONMENTS), metadata={"example": "live"})
    expiresAt = FutureTimestamp(attribute="expires_at", allow_none=True, load_default=None)
    scopes = Scopes(load_default=list)
    meta = Meta(load_default=dict)


class UpdateKeySchema(ma.Schema):
    name = Name(metadata={"minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": NAME_PATTERN})
    expiresAt = FutureTimestamp(attribute="expires_at", allow_none=True, metadata={"description": "null: never."})
    scopes = Scopes()
    meta = Meta()

    @ma.validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Give at least one of name, expiresAt, scopes, meta.")


class RegenerateSchema(ma.Schema):
    gracePeriodSeconds = fields.Integer(
        attribute="grace_period",
        validate=validate.Range(min=0, max=MAX_GRACE_PERIOD),
        metadata={"description": "Keep the previous secret verifying for this long."},
    )


class PageArgsSchema(ma.Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_LIMIT))


class KeySchema(ma.Schema):
    id = fields.String(required=True, metadata={"example": "key_3xV9q2LmZ8aB1cD4"})
    name = fields.String(required=True)
    environment = fields.String(required=True, validate=validate.OneOf(ENVIRONMENTS))
    publicKey = fields.String(required=True, attribute="public_key")
    active = fields.Boolean(required=True)
    createdAt = Timestamp(required=True, attribute="created_at")
    lastUsedAt = Timestamp(required=True, allow_none=True, attribute="last_used_at")
    expiresAt = Timestamp(required=True, allow_none=True, attribute="expires_at")
    scopes = fields.List(fields.String(), required=True)
    meta = fields.Dict(required=True)


class CreatedKeySchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    environment = fields.String(required=True, validate=validate.OneOf(ENVIRONMENTS))
    publicKey = fields.String(required=True, attribute="public_key")
    secretKey = fields.String(required=True, attribute="secret_key", metadata={"description": "Shown once."})
    fullKey = fields.String(
        required=True, attribute="full_key", metadata={"description": "Shown once; send it as X-Api-Key."}
    )
    createdAt = Timestamp(required=True, attribute="created_at")
    active = fields.Boolean(required=True)
    expiresAt = Timestamp(required=True, allow_none=True, attribute="expires_at")
    scopes = fields.List(fields.String(), required=True)
    meta = fields.Dict(required=True)


class RegeneratedKeySchema(ma.Schema):
    id = fields.String(required=True)
    publicKey = fields.String(required=True, attribute="public_key")
    secretKey = fields.String(required=True, attribute="secret_key", metadata={"description": "Shown once."})
    fullKey = fields.String(required=True, attribute="full_key", metadata={"description": "Shown once."})
    previousSecretExpiresAt = Timestamp(
        attribute="previous_expires_at", metadata={"description": "With a grace period: when the old secret stops."}
    )


class ToggledKeySchema(ma.Schema):
    id = fields.String(required=True)
    active = fields.Boolean(required=True)
    message = fields.String(required=True, metadata={"example": "API key has been disabled."})


class KeyPageSchema(ma.Schema):
    items = fields.List(fields.Nested(KeySchema), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)


class VerifiedKeySchema(ma.Schema):
    valid = fields.Boolean(required=True, dump_default=True, validate=validate.OneOf([True]))
    id = fields.String(required=True)
    tenantId = fields.String(required=True, attribute="tenant_id")
    environment = fields.String(required=True)
    name = fields.String(required=True)
    publicKey = fields.String(required=True, attribute="public_key")
    scopes = fields.List(fields.String(), required=True)
    meta = fields.Dict(required=True)
    expiresAt = Timestamp(required=True, allow_none=True, attribute="expires_at")


class AuditEntrySchema(ma.Schema):
    id = fields.Integer(required=True)
    action = fields.String(required=True, metadata={"example": "key.created"})
    keyId = fields.String(required=True, attribute="key_id")
    actor = fields.String(required=True, allow_none=True, metadata={"description": "The token's sub claim."})
    createdAt = Timestamp(required=True, attribute="created_at")


class AuditPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AuditEntrySchema), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)
    limit = fields.Integer(required=True)


class HealthSchema(ma.Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


def status_code(status: int) -> fields.Integer:
    """Return the statusCode field of an answer that always has ``status``."""
    return fields.Integer(required=True, dump_default=status, validate=validate.OneOf([status]))


def envelope(name: str, status: int, data: type[ma.Schema]) -> type[ma.Schema]:
    """Return the schema of a success answer: {"statusCode": status, "data": ...}."""
    return type(
        name,
        (ma.Schema,),
        {"statusCode": status_code(status), "data": fields.Nested(data, required=True)},
    )


CreatedKeyEnvelopeSchema = envelope("CreatedKeyEnvelopeSchema", 201, CreatedKeySchema)
KeyEnvelopeSchema = envelope("KeyEnvelopeSchema", 200, KeySchema)
KeyPageEnvelopeSchema = envelope("KeyPageEnvelopeSchema", 200, KeyPageSchema)
RegeneratedKeyEnvelopeSchema = envelope("RegeneratedKeyEnvelopeSchema", 200, RegeneratedKeySchema)
ToggledKeyEnvelopeSchema = envelope("ToggledKeyEnvelopeSchema", 200, ToggledKeySchema)
VerifiedKeyEnvelopeSchema = envelope("VerifiedKeyEnvelopeSchema", 200, VerifiedKeySchema)
HealthEnvelopeSchema = envelope("HealthEnvelopeSchema", 200, HealthSchema)
AuditPageEnvelopeSchema = envelope("AuditPageEnvelopeSchema", 200, AuditPageSchema)


class DeletedSchema(ma.Schema):
    statusCode = status_code(200)
    message = fields.String(
        required=True,
        dump_default="API key deleted successfully.",
        validate=validate.OneOf(["API key deleted successfully."]),
    )


class ErrorSchema(ma.Schema):
    """The one error envelope."""

    statusCode = fields.Integer(required=True, metadata={"example": 400})
    error = fields.String(required=True, metadata={"example": "Bad Request"})
    message = fields.String(required=True, metadata={"example": "The request is not valid: name."})
    code = fields.String(
        metadata={"description": "A machine-readable reason, where one helps.", "example": "INVALID_API_KEY"}
    )
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Field name to messages, for invalid input."},
    )
