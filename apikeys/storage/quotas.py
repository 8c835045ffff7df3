"""Taking credits from a key's quota, and adding them: one atomic statement each, on every database."""

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


def _credits_after(now: datetime, change):
    """SQL: the credits a key has at ``now`` (a due refill applied) plus ``change``, and when it was refilled."""
    due = _refill_due(now)
    available = sa.case((due, _c.quota_refill_amount), else_=_c.quota_remaining)
    # Typed, so that it is stored as naive UTC like every timestamp (apikeys.storage.tables.UTCDateTime).
    refilled_at = sa.case((due, sa.literal(now, UTCDateTime())), else_=_c.quota_refilled_at)
    return available, {"quota_remaining": available + change, "quota_refilled_at": refilled_at}


def take_credits(conn: sa.Connection, key_id: str, cost: int, now: datetime) -> tuple[bool, int | None]:
    """Take ``cost`` credits from a key's quota if it has them; return (taken, credits left now; None: no quota).

    One UPDATE decides and writes: concurrent verifications on any number of
    workers and hosts never take more credits than there are, and a due refill
    is applied in the same statement. A key whose quota was removed meanwhile
    passes (its row updates to nothing new).
    """
    available, values = _credits_after(now, -cost)
    statement = (
        sa.update(api_keys)
        .where(_c.id == key_id, sa.or_(_c.quota_remaining.is_(None), available >= cost))
        .values(values)
        .returning(_c.quota_remaining)
    )
    row = conn.execute(statement).one_or_none()
    if row is not None:
        return True, row.quota_remaining
    # Refused: another verification took the credits between the caller's read and this statement.
    columns = [api_keys.c[name] for name in limits.QUOTA_COLUMNS]
    current = conn.execute(sa.select(*columns).where(_c.id == key_id)).one_or_none()
    return False, None if current is None else limits.credits_left(current, now)


def add_credits(conn: sa.Connection, tenant_id: str, key_id: str, amount: int, now: datetime) -> int | None:
    """Add ``amount`` credits to a tenant's key with a quota, up to MAX_CREDITS; return the credits now, or None.

    One UPDATE, like take_credits: credits taken by verifications meanwhile are
    never given back (as a PATCH of ``remaining`` computed from an earlier read
    would), and a due refill is applied first. None: no such key, no quota, or
    the sum would pass MAX_CREDITS; nothing changed.
    """
    available, values = _credits_after(now, amount)
    statement = (
        sa.update(api_keys)
        .where(
            _c.id == key_id,
            _c.tenant_id == tenant_id,
            _c.quota_remaining.is_not(None),
            available <= limits.MAX_CREDITS - amount,
        )
        .values(values)
        .returning(_c.quota_remaining)
    )
    row = conn.execute(statement).one_or_none()
    return None if row is None else row.quota_remaining
