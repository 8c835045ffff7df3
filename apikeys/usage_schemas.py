"""The schemas of usage: what GET .../usage reads from its query string and what it answers."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields
from marshmallow import validate

from apikeys.schema_fields import Timestamp
from apikeys.schema_fields import ZonedTimestamp
from apikeys.usage.reading import GRANULARITIES
from apikeys.usage.reading import MAX_TOP
from apikeys.usage.reading import RESULT_NAMES

TIME = "ISO-8601 with a zone, such as 2026-12-06T00:00:00Z (in a URL, write + in an offset as %2B)."


class UsageArgsSchema(ma.Schema):
    since = ZonedTimestamp(metadata={"description": f"Default: 24 hours before until. {TIME}"})
    until = ZonedTimestamp(metadata={"description": f"Default: now. {TIME}"})
    granularity = fields.String(load_default="hour", validate=validate.OneOf(GRANULARITIES))


class TenantUsageArgsSchema(UsageArgsSchema):
    top = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_TOP))


def _counts() -> dict:
    """Each result's count, by its API name: valid, invalidSecret, disabled, ..."""
    return {name: fields.Integer(required=True) for name in RESULT_NAMES}


CountsSchema = type("CountsSchema", (ma.Schema,), _counts())
BucketSchema = type("BucketSchema", (ma.Schema,), {"start": Timestamp(required=True), **_counts()})


class UsageSchema(ma.Schema):
    granularity = fields.String(required=True, validate=validate.OneOf(GRANULARITIES))
    since = Timestamp(required=True, metadata={"description": "The first bucket's start."})
    until = Timestamp(required=True)
    buckets = fields.List(fields.Nested(BucketSchema), required=True, metadata={"description": "Oldest first."})
    totals = fields.Nested(CountsSchema, required=True)


class KeyUsageSchema(UsageSchema):
    keyId = fields.String(required=True, attribute="key_id")

    class Meta:
        fields = ("keyId", "granularity", "since", "until", "buckets", "totals")  # the key first


class TopKeySchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True, allow_none=True, metadata={"description": "null: a deleted key."})
    totals = fields.Nested(CountsSchema, required=True)


class TenantUsageSchema(UsageSchema):
    topKeys = fields.List(fields.Nested(TopKeySchema), required=True, attribute="top_keys")
