"""Query functions on api_keys and audit_log. Each takes a Connection; the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta

import sqlalchemy as sa

from apikeys.storage.fingerprints import FINGERPRINT
from apikeys.storage.tables import api_keys
from apikeys.storage.tables import audit_log
from apikeys.storage.tables import settings

# The columns a dashboard response shows: never a hash or a digest.
PUBLIC_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.environment,
    api_keys.c.public_key,
    api_keys.c.active,
    api_keys.c.created_at,
    api_keys.c.last_used_at,
    api_keys.c.expires_at,
    api_keys.c.scopes,
    api_keys.c.meta,
    # A key's rate limit and quota, shown as the API's rateLimit and quota objects (apikeys.limits.present).
    api_keys.c.rate_limit,
    api_keys.c.rate_limit_period,
    api_keys.c.quota_remaining,
    api_keys.c.quota_refill_amount,
    api_keys.c.quota_refill_interval,
    api_keys.c.quota_refilled_at,
)


def _owned(tenant_id: str, key_id: str):
    return sa.and_(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)


def insert_key(conn: sa.Connection, **values) -> None:
    """Insert one key row."""
    conn.execute(sa.insert(api_keys).values(active=True, **values))


def count_keys(conn: sa.Connection, tenant_id: str) -> int:
    """Return how many keys a tenant has."""
    query = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.tenant_id == tenant_id)
    return conn.execute(query).scalar_one()


def list_keys(conn: sa.Connection, tenant_id: str, limit: int | None, offset: int) -> list[sa.Row]:
    """Return one page of a tenant's keys, newest first, ties broken by id."""
    query = (
        sa.select(*PUBLIC_COLUMNS)
        .where(api_keys.c.tenant_id == tenant_id)
        .order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(conn.execute(query))


def get_key(conn: sa.Connection, tenant_id: str, key_id: str) -> sa.Row | None:
    """Return a tenant's key, or None when the tenant has no key of that id."""
    return conn.execute(sa.select(*PUBLIC_COLUMNS).where(_owned(tenant_id, key_id))).one_or_none()


def find_by_public_keys(conn: sa.Connection, public_keys: list[str]) -> dict[str, sa.Row]:
    """Return the rows (tenant, hash and digest included) of these public keys, by public key."""
    columns = (
        api_keys.c.id,
        api_keys.c.public_key,
        api_keys.c.tenant_id,
        api_keys.c.secret_hash,
        api_keys.c.secret_digest,
    )
    rows = conn.execute(sa.select(*columns).where(api_keys.c.public_key.in_(public_keys)))
    return {row.public_key: row for row in rows}


def get_secret(conn: sa.Connection, tenant_id: str, key_id: str) -> sa.Row | None:
    """Return a tenant's key's public key, environment, secret hash and digest, or None."""
    columns = (api_keys.c.public_key, api_keys.c.environment, api_keys.c.secret_hash, api_keys.c.secret_digest)
    return conn.execute(sa.select(*columns).where(_owned(tenant_id, key_id))).one_or_none()


def replace_secret(conn: sa.Connection, tenant_id: str, key_id: str, expected_hash: str, **values) -> bool:
    """Set a key's new secret (``values``) if its hash is still ``expected_hash``; tell whether it did."""
    statement = (
        sa.update(api_keys).where(_owned(tenant_id, key_id), api_keys.c.secret_hash == expected_hash).values(**values)
    )
    return conn.execute(statement).rowcount == 1


def update_key(conn: sa.Connection, tenant_id: str, key_id: str, values: dict) -> bool:
    """Change a key's name, expiry, scopes, metadata, rate limit or quota; tell whether there was such a key."""
    return conn.execute(sa.update(api_keys).where(_owned(tenant_id, key_id)).values(**values)).rowcount == 1


def toggle_key(conn: sa.Connection, tenant_id: str, key_id: str) -> bool | None:
    """Flip a key's active flag in one statement; return the new flag, or None if there is no such key.

    Disabling also ends a previous secret's grace period: both secrets stop at once.
    """
    disabling = api_keys.c.active
    statement = (
        sa.update(api_keys)
        .where(_owned(tenant_id, key_id))
        .values(
            active=sa.not_(api_keys.c.active),
            previous_secret_hash=sa.case((disabling, None), else_=api_keys.c.previous_secret_hash),
            previous_secret_digest=sa.case((disabling, None), else_=api_keys.c.previous_secret_digest),
            previous_expires_at=sa.case((disabling, None), else_=api_keys.c.previous_expires_at),
        )
        .returning(api_keys.c.active)
    )
    return conn.execute(statement).scalar_one_or_none()


def set_active(conn: sa.Connection, tenant_id: str, key_id: str, active: bool) -> bool:
    """Set a key's active flag unless it has it already, in one statement; tell whether it changed.

    Disabling also ends a previous secret's grace period, as toggle_key does.
    """
    values = {"active": active}
    if not active:
        values.update(previous_secret_hash=None, previous_secret_digest=None, previous_expires_at=None)
    statement = sa.update(api_keys).where(_owned(tenant_id, key_id), api_keys.c.active != active).values(**values)
    return conn.execute(statement).rowcount == 1


def delete_key(conn: sa.Connection, tenant_id: str, key_id: str) -> bool:
    """Delete a key; tell whether there was one."""
    return conn.execute(sa.delete(api_keys).where(_owned(tenant_id, key_id))).rowcount == 1


def record_use(conn: sa.Connection, key_id: str, now: datetime, interval: timedelta) -> None:
    """Set last_used_at to ``now`` unless it was set less than ``interval`` ago."""
    statement = (
        sa.update(api_keys)
        .where(api_keys.c.id == key_id)
        .where(sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - interval))
        .values(last_used_at=now)
    )
    conn.execute(statement)


def write_digest(
    conn: sa.Connection, key_id: str, secret_hash: str, digest: str, *, previous: bool = False, fingerprint: str
) -> None:
    """Store a secret's digest, unless the secret was replaced meanwhile or ``fingerprint`` is no longer recorded."""
    hash_column, digest_column = (
        ("previous_secret_hash", "previous_secret_digest") if previous else ("secret_hash", "secret_digest")
    )
    statement = (
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c[hash_column] == secret_hash)
        .where(
            sa.or_(
                sa.exists().where(settings.c.name == FINGERPRINT, settings.c.value == fingerprint),
                ~sa.exists().where(settings.c.name == FINGERPRINT),
            )
        )
        .values({digest_column: digest})
    )
    conn.execute(statement)


def add_audit_entry(conn: sa.Connection, tenant_id: str, action: str, key_id: str, actor: str | None, now) -> None:
    """Record who did what to which key, in the caller's transaction."""
    conn.execute(
        sa.insert(audit_log).values(tenant_id=tenant_id, action=action, key_id=key_id, actor=actor, created_at=now)
    )


def count_audit_entries(conn: sa.Connection, tenant_id: str) -> int:
    """Return how many audit entries a tenant has."""
    query = sa.select(sa.func.count()).select_from(audit_log).where(audit_log.c.tenant_id == tenant_id)
    return conn.execute(query).scalar_one()


def list_audit_entries(conn: sa.Connection, tenant_id: str, limit: int | None, offset: int) -> list[sa.Row]:
    """Return one page of a tenant's audit log, newest first, in the exact order of the changes."""
    columns = (audit_log.c.id, audit_log.c.action, audit_log.c.key_id, audit_log.c.actor, audit_log.c.created_at)
    query = (
        sa.select(*columns)
        .where(audit_log.c.tenant_id == tenant_id)
        .order_by(audit_log.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(conn.execute(query))
