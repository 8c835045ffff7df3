"""Marshmallow schemas: what the API reads and what it answers, field for field as documented."""

from __future__ import annotations

import unicodedata

import marshmallow as ma
from marshmallow import fields
from marshmallow import validate

from apikeys.keys import ENVIRONMENTS

MAX_PAGE = 1_000_000
MAX_LIMIT = 100


class Timestamp(fields.DateTime):
    """An ISO-8601 UTC time with milliseconds and Z, as in 2025-06-01T12:00:00.000Z."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


# The rule of Name below, for the OpenAPI document: surrounding ASCII white space
# is trimmed; what is left is not empty and holds no control characters. Spelled
# with explicit escapes so that every regex dialect (Python, ECMA, Rust) agrees.
SPACE = " \t\n\r\x0b\x0c"
_SPACE = "[ \\t\\n\\r\\x0b\\x0c]"
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
NAME_PATTERN = f"^{_SPACE}*[^ {_CONTROL}](?:[^{_CONTROL}]*[^ {_CONTROL}])?{_SPACE}*$"
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


class RegeneratedKeySchema(ma.Schema):
    id = fields.String(required=True)
    publicKey = fields.String(required=True, attribute="public_key")
    secretKey = fields.String(required=True, attribute="secret_key", metadata={"description": "Shown once."})
    fullKey = fields.String(required=True, attribute="full_key", metadata={"description": "Shown once."})


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
