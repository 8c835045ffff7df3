"""Usage per key: verifications by result, per hour.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RESULTS = (
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


def upgrade() -> None:
    op.create_table(
        "usage_buckets",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("bucket_start", sa.DateTime, primary_key=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        *(sa.Column(result, sa.BigInteger, nullable=False, server_default="0") for result in RESULTS),
    )
    op.create_index("ix_usage_buckets_tenant_start", "usage_buckets", ["tenant_id", "bucket_start"])
    op.create_index("ix_usage_buckets_start", "usage_buckets", ["bucket_start"])


def downgrade() -> None:
    op.drop_index("ix_usage_buckets_start", table_name="usage_buckets")
    op.drop_index("ix_usage_buckets_tenant_start", table_name="usage_buckets")
    op.drop_table("usage_buckets")
