"""The schemas of a key's rate limit and quota: what the API reads, what it shows, what /verify adds."""

from __future__ import annotations

from types import SimpleNamespace

import marshmallow as ma
from marshmallow import fields
from marshmallow import validate

from apikeys import limits
from apikeys.storage import tables


def _count(high: int, low: int = 0, **options) -> fields.Integer:
    """A whole number in JSON (strict: 1.5 or "60" is a mistake, not a number to round) from low to high."""
    return fields.Integer(strict=True, validate=validate.Range(min=low, max=high), **options)


class RateLimitSchema(ma.Schema):
    """At most ``limit`` verifications per window of ``periodSeconds`` (windows aligned to the Unix epoch)."""

    limit = _count(limits.MAX_RATE_LIMIT, 1, required=True, metadata={"example": 100})
    periodSeconds = _count(limits.MAX_PERIOD_SECONDS, 1, required=True, attribute="period_seconds")


class QuotaSchema(ma.Schema):
    """Credits a key's verifications take (each its cost); set back to refillAmount each UTC day or month."""

    remaining = _count(limits.MAX_CREDITS, required=True, metadata={"description": "Credits left now."})
    refillAmount = _count(limits.MAX_CREDITS, 1, allow_none=True, load_default=None, attribute="refill_amount")
    refillInterval = fields.String(
        allow_none=True, load_default=None, attribute="refill_interval", validate=validate.OneOf(limits.INTERVALS)
    )

    @ma.validates_schema
    def refill_whole(self, data, **kwargs):
        if (data.get("refill_amount") is None) != (data.get("refill_interval") is None):
            raise ma.ValidationError("Give both refillAmount and refillInterval, or neither.", "refillInterval")


class AddCreditsSchema(ma.Schema):
    """Credits to add to a key's quota, in one step with the verifications taking them."""

    add = _count(limits.MAX_CREDITS, 1, required=True, metadata={"example": 1000})


def rate_limit_field(**options) -> fields.Nested:
    return fields.Nested(RateLimitSchema, allow_none=True, attribute="rate_limit", **options)


def quota_field(**options) -> fields.Nested:
    return fields.Nested(QuotaSchema, allow_none=True, attribute="quota", **options)


class LimitsShown(ma.Schema):
    """A key as the API shows it: its rate limit and quota objects made from its columns, a due refill applied."""

    @ma.pre_dump
    def limits_of(self, key, **kwargs):
        values = dict(key._mapping) if hasattr(key, "_mapping") else dict(key)
        return values | limits.present(SimpleNamespace(**values), tables.utcnow())


class RateLimitStateSchema(ma.Schema):
    limit = fields.Integer(required=True)
    remaining = fields.Integer(required=True, metadata={"description": "Verifications the window still admits."})
    reset = fields.Integer(required=True, metadata={"description": "Seconds until the window ends."})


class QuotaStateSchema(ma.Schema):
    remaining = fields.Integer(required=True, metadata={"description": "Credits left after this request."})
