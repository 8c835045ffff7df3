"""Rate limits and quotas as a key carries them: its columns from the API's objects, the objects from its row.

A quota with a refill is set back to its refill amount at the start of each UTC
day or month after it was last set or refilled; nothing runs on a schedule: the
next verification applies it (apikeys.storage.quotas), and whatever shows a key
shows the credits it has now.
"""

from __future__ import annotations

import math
from datetime import datetime
from datetime import timedelta

INTERVALS = ("daily", "monthly")
MAX_RATE_LIMIT = 1_000_000
MAX_PERIOD_SECONDS = 86_400
MAX_CREDITS = 10**12
MAX_COST = 1000

RATE_LIMIT_COLUMNS = ("rate_limit", "rate_limit_period")
QUOTA_COLUMNS = ("quota_remaining", "quota_refill_amount", "quota_refill_interval", "quota_refilled_at")


def columns(policy: dict, now: datetime) -> dict:
    """Return the column values for the ``rate_limit`` and ``quota`` a policy sets (absent: left as they are)."""
    values = {}
    if "rate_limit" in policy:
        rate_limit = policy["rate_limit"]
        values["rate_limit"] = rate_limit and rate_limit["limit"]
        values["rate_limit_period"] = rate_limit and rate_limit["period_seconds"]
    if "quota" in policy:
        quota = policy["quota"] or {}
        values["quota_remaining"] = quota.get("remaining")
        values["quota_refill_amount"] = quota.get("refill_amount")
        values["quota_refill_interval"] = quota.get("refill_interval")
        # Set now: the next refill is at the start of the next day or month, not at the next verification.
        values["quota_refilled_at"] = now if quota else None
    return values


def period_start(interval: str, now: datetime) -> datetime:
    """Return the start of the UTC day or month ``now`` is in."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if interval == "daily" else day.replace(day=1)


def next_refill(interval: str, now: datetime) -> datetime:
    """Return the start of the next UTC day or month."""
    start = period_start(interval, now)
    if interval == "daily":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def refill_due(row, now: datetime) -> bool:
    """Tell whether a key's quota is set back to its refill amount at ``now``."""
    interval = row.quota_refill_interval
    if interval is None or row.quota_refill_amount is None:
        return False
    return row.quota_refilled_at is None or row.quota_refilled_at < period_start(interval, now)


def credits_left(row, now: datetime) -> int | None:
    """Return the credits a key has at ``now`` (a due refill applied), or None for no quota."""
    if row.quota_remaining is None:
        return None
    return row.quota_refill_amount if refill_due(row, now) else row.quota_remaining


def present(row, now: datetime) -> dict:
    """Return a key's ``rate_limit`` and ``quota`` as the API shows them (None where it has none)."""
    rate_limit = None
    if row.rate_limit is not None:
        rate_limit = {"limit": row.rate_limit, "period_seconds": row.rate_limit_period}
    quota = None
    if row.quota_remaining is not None:
        quota = {
            "remaining": credits_left(row, now),
            "refill_amount": row.quota_refill_amount,
            "refill_interval": row.quota_refill_interval,
        }
    return {"rate_limit": rate_limit, "quota": quota}


def seconds_until(moment: datetime, now: datetime) -> int:
    """Return whole seconds from ``now`` until ``moment``, rounded up, at least 1 (a Retry-After)."""
    return max(1, math.ceil((moment - now).total_seconds()))
