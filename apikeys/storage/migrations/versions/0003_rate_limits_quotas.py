"""Per-key rate limits and usage quotas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("rate_limit", sa.Integer),
    ("rate_limit_period", sa.Integer),
    ("quota_remaining", sa.BigInteger),
    ("quota_refill_amount", sa.BigInteger),
    ("quota_refill_interval", sa.String(8)),
    ("quota_refilled_at", sa.DateTime),
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        # Credits are never below zero, whatever a statement does: the database itself refuses it.
        batch.create_check_constraint("ck_api_keys_quota_remaining", "quota_remaining >= 0")


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("ck_api_keys_quota_remaining", type_="check")
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
