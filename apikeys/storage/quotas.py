"""Taking credits from a key's quota: one atomic statement, on every database."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from apikeys import limits
from apikeys.storage.tables import UTCDateTime
from apikeys.storage.tables import api_keys

_c = api_keys.c


def _refill_due(now: datetime):
    """SQL: the row's quota is due its refill at ``now`` (the same rule as apikeys.limits.refill_due)."""
    due_after = {interval: limits.period_start(interval, now) for interval in limits.INTERVALS}
    return sa.and_(
        _c.quota_refill_amount.is_not(None),
        sa.or_(
            _c.quota_refilled_at.is_(None),
            *(
                sa.and_(_c.quota_refill_interval == interval, _c.quota_refilled_at < start)
                for interval, start in due_after.items()
            ),
        ),
    )


def take_credits(conn: sa.Connection, key_id: str, cost: int, now: datetime) -> tuple[bool, int | None]:
    """Take ``cost`` credits from a key's quota if it has them; return (taken, credits left now; None: no quota).

    One UPDATE decides and writes: concurrent verifications on any number of
    workers and hosts never take more credits than there are, and a due refill
    is applied in the same statement. A key whose quota was removed meanwhile
    passes (its row updates to nothing new).
    """
    due = _refill_due(now)
    available = sa.case((due, _c.quota_refill_amount), else_=_c.quota_remaining)
    statement = (
        sa.update(api_keys)
        .where(_c.id == key_id, sa.or_(_c.quota_remaining.is_(None), available >= cost))
        .values(
            quota_remaining=available - cost,
            # Typed, so that it is stored as naive UTC like every timestamp (apikeys.storage.tables.UTCDateTime).
            quota_refilled_at=sa.case((due, sa.literal(now, UTCDateTime())), else_=_c.quota_refilled_at),
        )
        .returning(_c.quota_remaining)
    )
    row = conn.execute(statement).one_or_none()
    if row is not None:
        return True, row.quota_remaining
    # Refused: another verification took the credits between the caller's read and this statement.
    columns = [api_keys.c[name] for name in limits.QUOTA_COLUMNS]
    current = conn.execute(sa.select(*columns).where(_c.id == key_id)).one_or_none()
    return False, None if current is None else limits.credits_left(current, now)
