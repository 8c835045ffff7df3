"""Marshmallow schemas: what the API reads and what it answers, field for field as documented."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields
from marshmallow import validate

from apikeys.keys import ENVIRONMENTS
from apikeys.limit_schemas import AddCreditsSchema  # noqa: F401 (apikeys.schemas.AddCreditsSchema)
from apikeys.limit_schemas import LimitsShown
from apikeys.limit_schemas import QuotaStateSchema
from apikeys.limit_schemas import RateLimitStateSchema
from apikeys.limit_schemas import quota_field
from apikeys.limit_schemas import rate_limit_field
from apikeys.schema_fields import MAX_NAME_LENGTH
from apikeys.schema_fields import NAME_PATTERN
from apikeys.schema_fields import FutureTimestamp
from apikeys.schema_fields import Meta
from apikeys.schema_fields import Name
from apikeys.schema_fields import Scopes
from apikeys.schema_fields import Timestamp

MAX_PAGE = 1_000_000
MAX_LIMIT = 100
MAX_GRACE_PERIOD = 7 * 24 * 3600


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
    rateLimit = rate_limit_field(load_default=None, metadata={"description": "null (the default): no rate limit."})
    quota = quota_field(load_default=None, metadata={"description": "null (the default): unlimited."})


class UpdateKeySchema(ma.Schema):
    name = Name(metadata={"minLength": 1, "maxLength": MAX_NAME_LENGTH, "pattern": NAME_PATTERN})
    expiresAt = FutureTimestamp(attribute="expires_at", allow_none=True, metadata={"description": "null: never."})
    scopes = Scopes()
    meta = Meta()
    rateLimit = rate_limit_field(metadata={"description": "null: no rate limit."})
    quota = quota_field(metadata={"description": "Replaces the quota (its remaining credits too); null: unlimited."})

    @ma.validates_schema
    def not_empty(self, data, **kwargs):
        if not data:
            raise ma.ValidationError("Give at least one of name, expiresAt, scopes, meta, rateLimit, quota.")


class RegenerateSchema(ma.Schema):
    gracePeriodSeconds = fields.Integer(
        attribute="grace_period",
        strict=True,  # 1.5 or "60" in a JSON body is a mistake, not a number to round
        validate=validate.Range(min=0, max=MAX_GRACE_PERIOD),
        metadata={"description": "Keep the previous secret verifying for this long."},
    )


class PageArgsSchema(ma.Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_PAGE))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_LIMIT))


class KeySchema(LimitsShown):
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
    rateLimit = rate_limit_field(required=True)
    quota = quota_field(required=True)


class CreatedKeySchema(LimitsShown):
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
    rateLimit = rate_limit_field(required=True)
    quota = quota_field(required=True)


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
    rateLimit = fields.Nested(
        RateLimitStateSchema,
        metadata={"description": "Only for a key with a rate limit: its window after this request."},
    )
    quota = fields.Nested(QuotaStateSchema, metadata={"description": "Only for a key with a quota."})


class AuditEntrySchema(ma.Schema):
    id = fields.Integer(required=True)
    action = fields.String(required=True, metadata={"example": "key.created"})
    keyId = fields.String(required=True, attribute="key_id")
    actor = fields.String(required=True, allow_none=True, metadata={"description": "The token's sub claim."})
    createdAt = Timestamp(required=True, attribute="created_at")


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


def page_of(name: str, item: type[ma.Schema]) -> type[ma.Schema]:
    """Return the schema of one page of items: {"items": [...], "total", "page", "limit"}."""
    page_fields = {"items": fields.List(fields.Nested(item), required=True)}
    page_fields |= {field: fields.Integer(required=True) for field in ("total", "page", "limit")}
    return type(name, (ma.Schema,), page_fields)


KeyPageSchema = page_of("KeyPageSchema", KeySchema)
AuditPageSchema = page_of("AuditPageSchema", AuditEntrySchema)
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
