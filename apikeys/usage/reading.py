"""Reading usage back: a key's or a tenant's buckets over a range, empty ones included, and its top keys."""

from __future__ import annotations

import math
from datetime import datetime
from datetime import timedelta

from apikeys import errors
from apikeys.storage import queries as key_queries
from apikeys.storage import tables
from apikeys.storage import usage as queries
from apikeys.storage.tables import USAGE_RESULTS

GRANULARITIES = ("hour", "day")
STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_BUCKETS = 2000
MAX_TOP = 1000
DEFAULT_RANGE = timedelta(hours=24)
# The results a key's buckets show, by their API names (the tenant-less unknown_key is not a key's).
RESULTS = USAGE_RESULTS[:-1]
RESULT_NAMES = [result.split("_")[0] + "".join(part.title() for part in result.split("_")[1:]) for result in RESULTS]


def _floor(moment: datetime, granularity: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def time_range(since: datetime | None, until: datetime | None, granularity: str) -> tuple[datetime, datetime, int]:
    """Return the first bucket's start, the end, and how many buckets; raise ApiKeysError for a range out of bounds."""
    until = until or tables.utcnow()
    if since is None:
        try:
            since = until - DEFAULT_RANGE
        except OverflowError:  # until within the first day of the year 1
            raise errors.ApiKeysError(errors={"until": ["Must leave 24 hours after the year 1 began."]}) from None
    if since >= until:
        raise errors.ApiKeysError(errors={"since": ["Must be before until."]})
    since = _floor(since, granularity)
    count = math.ceil((until - since) / STEPS[granularity])
    if count > MAX_BUCKETS:
        raise errors.ApiKeysError(
            errors={"since": [f"The range holds {count:,} buckets (by the {granularity}); at most {MAX_BUCKETS:,}."]}
        )
    return since, until, count


def _counts(row=None) -> dict:
    """Return each result's count by its API name: a row's, or all zeros."""
    pairs = zip(RESULT_NAMES, RESULTS, strict=True)
    return {name: 0 if row is None else int(getattr(row, result) or 0) for name, result in pairs}


def _buckets(rows, since: datetime, count: int, granularity: str) -> tuple[list[dict], dict]:
    """Spread hourly rows over the answer's buckets (all of them, empty ones too); return them and their totals."""
    step = STEPS[granularity]
    buckets = [{"start": since + number * step, **_counts()} for number in range(count)]
    totals = _counts()
    for row in rows:
        counts = _counts(row)
        bucket = buckets[(row.bucket_start - since) // step]
        for name, number in counts.items():
            bucket[name] += number
            totals[name] += number
    return buckets, totals


def key_usage(state, tenant: str, key_id: str, since=None, until=None, granularity: str = "hour") -> dict:
    """Return a key's usage over a range; raise KeyNotFound (another tenant's key too) or ApiKeysError."""
    since, until, count = time_range(since, until, granularity)
    with state.engine.connect() as conn:
        rows = queries.key_buckets(conn, tenant, key_id, since, until)
        # A bucket of the tenant's under this id proves the key is (or was) theirs; only an empty range asks.
        if (
            not rows
            and key_queries.get_key(conn, tenant, key_id) is None
            and not queries.has_history(conn, tenant, key_id)
        ):
            raise errors.KeyNotFound()
    buckets, totals = _buckets(rows, since, count, granularity)
    return {"key_id": key_id, "granularity": granularity, "since": since, "until": until, "buckets": buckets} | {
        "totals": totals
    }


def tenant_usage(state, tenant: str, since=None, until=None, granularity: str = "hour", top: int = 10) -> dict:
    """Return a tenant's usage over a range (every key's added up) and its ``top`` keys by verifications."""
    since, until, count = time_range(since, until, granularity)
    with state.engine.connect() as conn:
        rows = queries.tenant_buckets(conn, tenant, since, until)
        leaders = queries.top_keys(conn, tenant, since, until, top)
    buckets, totals = _buckets(rows, since, count, granularity)
    top_keys = [{"id": row.key_id, "name": row.name, "totals": _counts(row)} for row in leaders]
    return {"granularity": granularity, "since": since, "until": until, "buckets": buckets, "totals": totals} | {
        "top_keys": top_keys
    }


def unknown_usage(state, since=None, until=None, granularity: str = "hour") -> dict:
    """Return the tenant-less count of presented keys whose public key is unknown, per bucket (``unknownKey``)."""
    since, until, count = time_range(since, until, granularity)
    with state.engine.connect() as conn:
        rows = queries.unknown_buckets(conn, since, until)
    step = STEPS[granularity]
    buckets = [{"start": since + number * step, "unknownKey": 0} for number in range(count)]
    for row in rows:
        buckets[(row.bucket_start - since) // step]["unknownKey"] += int(row.unknown_key or 0)
    totals = {"unknownKey": sum(bucket["unknownKey"] for bucket in buckets)}
    return {"granularity": granularity, "since": since, "until": until, "buckets": buckets, "totals": totals}
