"""The schema: the tables, and timestamps stored as naive UTC on every database."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

import sqlalchemy as sa

metadata = sa.MetaData()


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored as naive UTC on every database, read back as aware UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=UTC)


api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("environment", sa.String(8), nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),  # bcrypt: the hash of record
    sa.Column("secret_digest", sa.String(80), nullable=True),  # "tag:HMAC-SHA256", what verification compares
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("scopes", sa.JSON, nullable=False, default=list, server_default=sa.text("'[]'")),
    sa.Column("meta", sa.JSON, nullable=False, default=dict, server_default=sa.text("'{}'")),
    # The secret a grace-period rotation replaced, valid until previous_expires_at.
    sa.Column("previous_secret_hash", sa.String(64), nullable=True),
    sa.Column("previous_secret_digest", sa.String(80), nullable=True),
    sa.Column("previous_expires_at", UTCDateTime, nullable=True),
    # Rate limit: at most rate_limit verifications per window of rate_limit_period seconds (both null: none).
    sa.Column("rate_limit", sa.Integer, nullable=True),
    sa.Column("rate_limit_period", sa.Integer, nullable=True),
    # Quota: credits left (null: unlimited), set back to the refill amount at the start of each UTC day or month
    # after quota_refilled_at (the refill is applied by the next verification; no scheduler).
    sa.Column("quota_remaining", sa.BigInteger, nullable=True),
    sa.Column("quota_refill_amount", sa.BigInteger, nullable=True),
    sa.Column("quota_refill_interval", sa.String(8), nullable=True),
    sa.Column("quota_refilled_at", UTCDateTime, nullable=True),
    sa.CheckConstraint("environment IN ('live', 'test')", name="ck_api_keys_environment"),
    sa.CheckConstraint("quota_remaining >= 0", name="ck_api_keys_quota_remaining"),
    sa.UniqueConstraint("public_key", name="uq_api_keys_public_key"),
    sa.Index("ix_api_keys_tenant_created", "tenant_id", "created_at", "id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    # The id orders entries exactly, even two in the same millisecond.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_audit_log_tenant_id", "tenant_id", "id"),
)

# What a key's verifications answered, counted per hour (UTC) and written by each worker every few seconds
# (apikeys.usage). Presented keys whose public key is unknown count in the tenant-less row (key_id and tenant_id "").
USAGE_RESULTS = (
    "valid",
    "invalid_secret",
    "disabled",
    "expired",
    "wrong_environment",
    "insufficient_scope",
    "rate_limited",
    "usage_exceeded",
    "unknown_key",
)
usage_buckets = sa.Table(
    "usage_buckets",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("bucket_start", UTCDateTime, primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    *(sa.Column(result, sa.BigInteger, nullable=False, default=0, server_default="0") for result in USAGE_RESULTS),
    sa.Index("ix_usage_buckets_tenant_start", "tenant_id", "bucket_start"),
    sa.Index("ix_usage_buckets_start", "bucket_start"),
)

# Facts about the database itself, such as the fingerprint of the verifier key its digests are written under.
settings = sa.Table(
    "apikeys_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)
