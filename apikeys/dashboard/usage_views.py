"""The usage endpoints: how often a key (or a tenant's keys) was verified, with what result, per hour or day."""

from __future__ import annotations

from flask import g
from flask.views import MethodView

from apikeys import usage_schemas
from apikeys.dashboard.views import blp
from apikeys.dashboard.views import dashboard
from apikeys.schemas import envelope
from apikeys.usage import reading
from apikeys.verification.extension import get_state

KeyUsageEnvelopeSchema = envelope("KeyUsageEnvelopeSchema", 200, usage_schemas.KeyUsageSchema)
TenantUsageEnvelopeSchema = envelope("TenantUsageEnvelopeSchema", 200, usage_schemas.TenantUsageSchema)
WHAT_IS_COUNTED = (
    "Every verification that reached the key's row, once, by result, in hourly buckets (UTC; a day's buckets add up "
    "its hours). Each worker writes its counts every APIKEYS_USAGE_FLUSH_SECONDS (5 s): the last seconds may not "
    f"show yet, and a worker killed with SIGKILL loses at most that much. Buckets run from since (floored to the "
    f"granularity) to until, oldest first, empty ones included; at most {reading.MAX_BUCKETS:,} (a 400 beyond)."
)


@blp.route("/dashboard/api-keys/<string:key_id>/usage")
class ApiKeyUsage(MethodView):
    @dashboard(
        "getApiKeyUsage",
        200,
        KeyUsageEnvelopeSchema,
        arguments=usage_schemas.UsageArgsSchema,
        location="query",
        alt=(401, 404),
        doc={"description": WHAT_IS_COUNTED + " A deleted key's history stays readable by its id."},
    )
    def get(self, args, key_id):
        """Get how often a key was verified, with what result, per hour or day."""
        return {"data": reading.key_usage(get_state(), g.tenant, key_id, **args)}


@blp.route("/dashboard/usage")
class TenantUsage(MethodView):
    @dashboard(
        "getUsage",
        200,
        TenantUsageEnvelopeSchema,
        arguments=usage_schemas.TenantUsageArgsSchema,
        location="query",
        doc={"description": WHAT_IS_COUNTED + " topKeys: the keys with the most verifications in the range."},
    )
    def get(self, args):
        """Get the tenant's verifications per hour or day, and its top keys."""
        return {"data": reading.tenant_usage(get_state(), g.tenant, **args)}
