"""Query functions on usage_buckets. Each takes a Connection; the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from apikeys.storage.tables import USAGE_RESULTS
from apikeys.storage.tables import api_keys
from apikeys.storage.tables import usage_buckets

_c = usage_buckets.c
_SUMS = [sa.func.sum(_c[result]).label(result) for result in USAGE_RESULTS]


def add_counts(conn: sa.Connection, rows: list[dict]) -> None:
    """Add counts to their buckets (key_id, bucket_start, tenant_id and one number per result), made as needed."""
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(usage_buckets)
    statement = insert.on_conflict_do_update(
        index_elements=[_c.key_id, _c.bucket_start],
        set_={result: _c[result] + insert.excluded[result] for result in USAGE_RESULTS},
    )
    conn.execute(statement, rows)


def key_buckets(conn: sa.Connection, tenant_id: str, key_id: str, since: datetime, until: datetime) -> list[sa.Row]:
    """Return a key's hourly buckets from ``since`` to before ``until``, oldest first."""
    query = (
        sa.select(_c.bucket_start, *(_c[result] for result in USAGE_RESULTS))
        .where(_c.key_id == key_id, _c.tenant_id == tenant_id, _c.bucket_start >= since, _c.bucket_start < until)
        .order_by(_c.bucket_start)
    )
    return list(conn.execute(query))


def tenant_buckets(conn: sa.Connection, tenant_id: str, since: datetime, until: datetime) -> list[sa.Row]:
    """Return a tenant's hourly totals over all its keys from ``since`` to before ``until``, oldest first."""
    query = (
        sa.select(_c.bucket_start, *_SUMS)
        .where(_c.tenant_id == tenant_id, _c.bucket_start >= since, _c.bucket_start < until)
        .group_by(_c.bucket_start)
        .order_by(_c.bucket_start)
    )
    return list(conn.execute(query))


def top_keys(conn: sa.Connection, tenant_id: str, since: datetime, until: datetime, top: int) -> list[sa.Row]:
    """Return the tenant's ``top`` keys by verifications in the range (name None for a deleted key), most first."""
    total = sum((sa.func.sum(_c[result]) for result in USAGE_RESULTS), sa.literal(0)).label("total")
    per_key = (
        sa.select(_c.key_id, total, *_SUMS)
        .where(_c.tenant_id == tenant_id, _c.bucket_start >= since, _c.bucket_start < until)
        .group_by(_c.key_id)
        .subquery()
    )
    query = (
        sa.select(per_key, api_keys.c.name)
        .select_from(per_key.outerjoin(api_keys, api_keys.c.id == per_key.c.key_id))
        .order_by(per_key.c.total.desc(), per_key.c.key_id)
        .limit(top)
    )
    return list(conn.execute(query))


def unknown_buckets(conn: sa.Connection, since: datetime, until: datetime) -> list[sa.Row]:
    """Return the hourly counts of presented keys whose public key is unknown (the tenant-less row), oldest first."""
    query = (
        sa.select(_c.bucket_start, _c.unknown_key)
        .where(_c.key_id == "", _c.tenant_id == "", _c.bucket_start >= since, _c.bucket_start < until)
        .order_by(_c.bucket_start)
    )
    return list(conn.execute(query))


def has_history(conn: sa.Connection, tenant_id: str, key_id: str) -> bool:
    """Tell whether a tenant has counts for a key id (a deleted key's history is kept until retention removes it)."""
    query = sa.select(_c.key_id).where(_c.key_id == key_id, _c.tenant_id == tenant_id).limit(1)
    return conn.execute(query).first() is not None


def delete_before(conn: sa.Connection, cutoff: datetime, batch: int) -> int:
    """Delete at most ``batch`` buckets older than ``cutoff``; return how many went."""
    oldest = sa.select(_c.key_id, _c.bucket_start).where(_c.bucket_start < cutoff).limit(batch)
    statement = sa.delete(usage_buckets).where(sa.tuple_(_c.key_id, _c.bucket_start).in_(oldest))
    return conn.execute(statement).rowcount
