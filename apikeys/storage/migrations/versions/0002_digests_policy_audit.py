"""Keyed digests for fast verification, key policy (expiry, scopes, metadata, grace rotation), the audit log.

The failed-attempt counter goes: verification no longer counts tries per key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite adds columns in place, and recreates the table only where it must.
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("secret_digest", sa.String(80), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime, nullable=True))
        batch.add_column(sa.Column("scopes", sa.JSON, nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("meta", sa.JSON, nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("previous_secret_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("previous_secret_digest", sa.String(80), nullable=True))
        batch.add_column(sa.Column("previous_expires_at", sa.DateTime, nullable=True))
        batch.drop_column("failed_attempts")
        batch.drop_column("failed_window_start")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_audit_log_tenant_id", "audit_log", ["tenant_id", "id"])
    op.create_table(
        "apikeys_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("apikeys_settings")
    op.drop_index("ix_audit_log_tenant_id", table_name="audit_log")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("failed_window_start", sa.DateTime, nullable=True))
        for column in (
            "previous_expires_at",
            "previous_secret_digest",
            "previous_secret_hash",
            "meta",
            "scopes",
            "expires_at",
            "secret_digest",
        ):
            batch.drop_column(column)
