"""What the dashboard and the command line do to keys, each change with its audit entry.

One convention for all of them: an operation takes the app's state, does its
bcrypt work before it checks out a connection, then makes its change and the
audit entry in one transaction, so the two exist together or not at all.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from apikeys import keys
from apikeys import limits as key_limits
from apikeys.dashboard import limits
from apikeys.errors import ApiKeysError
from apikeys.errors import KeyChanged
from apikeys.errors import KeyNotFound
from apikeys.errors import NoQuota
from apikeys.storage import queries
from apikeys.storage import quotas
from apikeys.storage.tables import utcnow

CLI_ACTOR = "cli"


def _new_secret(state, environment: str) -> tuple[str, dict]:
    """Return a new secret and the columns that store it: its bcrypt hash and its digest."""
    secret = keys.new_secret(environment)
    with limits.hashing_turn(state):
        secret_hash = keys.hash_secret(secret, state.bcrypt_rounds)
    return secret, {"secret_hash": secret_hash, "secret_digest": state.new_digest(secret)}


def create_key(state, tenant: str, actor: str | None, name: str, environment: str, **policy) -> dict:
    """Create a key (``policy``: expires_at, scopes, meta, rate_limit, quota); return it with its secret, shown once."""
    limits.check_room(state, Counter({tenant: 1}), named=False)
    secret, stored = _new_secret(state, environment)
    now = utcnow()
    row = {
        "id": keys.new_key_id(),
        "tenant_id": tenant,
        "name": name,
        "environment": environment,
        "public_key": keys.new_public_key(environment),
        "created_at": now,
        "expires_at": policy.get("expires_at"),
        "scopes": list(policy.get("scopes") or []),
        "meta": dict(policy.get("meta") or {}),
        **key_limits.columns({"rate_limit": policy.get("rate_limit"), "quota": policy.get("quota")}, now),
    }
    with state.engine.begin() as conn:
        limits.lock_tenants(conn, [tenant])
        queries.insert_key(conn, **row, **stored)
        # Counted after the insert, in its transaction (see _lock_tenants): two creates cannot both take the last place.
        limits.check_counts(state, conn, Counter({tenant: 1}), named=False, inserted=True)
        queries.add_audit_entry(conn, tenant, "key.created", row["id"], actor, now)
    return {**row, "secret_key": secret, "full_key": f"{row['public_key']}.{secret}", "active": True}


def get_key(state, tenant: str, key_id: str):
    """Return a tenant's key; raise KeyNotFound."""
    with state.engine.connect() as conn:
        row = queries.get_key(conn, tenant, key_id)
    if row is None:
        raise KeyNotFound()
    return row


def update_key(state, tenant: str, actor: str | None, key_id: str, changes: dict):
    """Change a key's name, expiry, scopes, metadata, rate limit or quota and return it; raise KeyNotFound."""
    now = utcnow()
    values = {name: value for name, value in changes.items() if name not in ("rate_limit", "quota")}
    values |= key_limits.columns(changes, now)
    with state.engine.begin() as conn:
        if not queries.update_key(conn, tenant, key_id, values):
            raise KeyNotFound()
        queries.add_audit_entry(conn, tenant, "key.updated", key_id, actor, now)
        return queries.get_key(conn, tenant, key_id)


def add_credits(state, tenant: str, actor: str | None, key_id: str, amount: int):
    """Add credits to a key's quota in one statement (never undoing what verifications took) and return the key."""
    now = utcnow()
    with state.engine.begin() as conn:
        if quotas.add_credits(conn, tenant, key_id, amount, now) is None:
            key = queries.get_key(conn, tenant, key_id)
            if key is None:
                raise KeyNotFound()
            if key.quota_remaining is None:
                raise NoQuota()
            too_many = f"Would take the key's credits over {key_limits.MAX_CREDITS:,}."
            message = f"Adding {amount:,} credits would take the key's credits over {key_limits.MAX_CREDITS:,}."
            raise ApiKeysError(message, errors={"add": [too_many]})
        queries.add_audit_entry(conn, tenant, "key.updated", key_id, actor, now)
        return queries.get_key(conn, tenant, key_id)


def regenerate_key(state, tenant: str, actor: str | None, key_id: str, grace_period: int | None = None) -> dict:
    """Give a key a new secret; with a grace period the old one works that long too. Raise KeyNotFound/KeyChanged."""
    with state.engine.connect() as conn:
        current = queries.get_secret(conn, tenant, key_id)
    if current is None:
        raise KeyNotFound()
    secret, stored = _new_secret(state, current.environment)
    now = utcnow()
    previous = {"previous_secret_hash": None, "previous_secret_digest": None, "previous_expires_at": None}
    if grace_period:
        previous = {
            "previous_secret_hash": current.secret_hash,
            # Under a verifier key no host knows any more, verification falls back to the bcrypt hash.
            "previous_secret_digest": current.secret_digest,
            "previous_expires_at": now + timedelta(seconds=grace_period),
        }
    # The UPDATE applies only if the hash read above is still there, so every
    # secret handed out was valid when it was.
    with state.engine.begin() as conn:
        if not queries.replace_secret(conn, tenant, key_id, current.secret_hash, **stored, **previous):
            raise KeyNotFound() if queries.get_key(conn, tenant, key_id) is None else KeyChanged()
        queries.add_audit_entry(conn, tenant, "key.regenerated", key_id, actor, now)
    answer = {"id": key_id, "public_key": current.public_key, "secret_key": secret}
    answer["full_key"] = f"{current.public_key}.{secret}"
    if grace_period is not None:
        answer["previous_expires_at"] = previous["previous_expires_at"] or now
    return answer


def toggle_key(state, tenant: str, actor: str | None, key_id: str) -> bool:
    """Disable an active key (ending a grace period too) or enable a disabled one; return the new flag."""
    with state.engine.begin() as conn:
        active = queries.toggle_key(conn, tenant, key_id)
        if active is None:
            raise KeyNotFound()
        queries.add_audit_entry(conn, tenant, "key.enabled" if active else "key.disabled", key_id, actor, utcnow())
    return active


def set_active(state, tenant: str, actor: str | None, key_id: str, active: bool) -> bool:
    """Enable or disable a key; tell whether it changed (only a change is audited). Raise KeyNotFound."""
    with state.engine.begin() as conn:
        # One conditional UPDATE: two concurrent calls cannot both see a change, so one audit entry at most.
        if queries.set_active(conn, tenant, key_id, active):
            queries.add_audit_entry(conn, tenant, "key.enabled" if active else "key.disabled", key_id, actor, utcnow())
            return True
        if queries.get_key(conn, tenant, key_id) is None:
            raise KeyNotFound()
    return False


def delete_key(state, tenant: str, actor: str | None, key_id: str) -> None:
    """Delete a key for good; raise KeyNotFound."""
    with state.engine.begin() as conn:
        if not queries.delete_key(conn, tenant, key_id):
            raise KeyNotFound()
        queries.add_audit_entry(conn, tenant, "key.deleted", key_id, actor, utcnow())
