"""Key operations that both the HTTP API and the command line perform."""

from __future__ import annotations

import sqlalchemy as sa

from apikeys import db
from apikeys import keys
from apikeys import store


def create_key(conn: sa.Connection, tenant: str, name: str, environment: str, rounds: int) -> dict:
    """Create a key and return it with its secret: the only time the secret exists outside the client."""
    secret = keys.new_secret(environment)
    row = {
        "id": keys.new_key_id(),
        "tenant_id": tenant,
        "name": name,
        "environment": environment,
        "public_key": keys.new_public_key(environment),
        # On SQLite nothing is locked until the INSERT, so hashing here blocks no writer.
        "secret_hash": keys.hash_secret(secret, rounds),
        "created_at": db.utcnow(),
    }
    store.insert_key(conn, **row)
    del row["secret_hash"]
    return {**row, "secret_key": secret, "full_key": f"{row['public_key']}.{secret}", "active": True}


def regenerate_key(conn: sa.Connection, tenant: str, key_id: str, rounds: int) -> dict | None:
    """Give a key a new secret and return it, or None if the tenant has no such key."""
    row = store.get_key(conn, tenant, key_id)
    if row is None:
        return None
    secret = keys.new_secret(row.environment)
    if not store.set_secret_hash(conn, tenant, key_id, keys.hash_secret(secret, rounds)):
        return None  # deleted while we hashed
    return {"id": row.id, "public_key": row.public_key, "secret_key": secret, "full_key": f"{row.public_key}.{secret}"}


class KeyImportError(ValueError):
    """An entry of an import file that cannot be imported."""


def import_key(conn: sa.Connection, tenant: str, name: str, environment: str, full_key: str, rounds: int) -> bool:
    """Store a key known in advance; return False if it is already there, unchanged."""
    parsed = keys.parse_full_key(full_key)
    if parsed is None:
        raise KeyImportError("fullKey is not a well-formed apikeys key (format or checksum).")
    if parsed.environment != environment:
        raise KeyImportError(f"fullKey is a {parsed.environment} key, but environment is {environment}.")
    existing = store.find_by_public_key(conn, parsed.public_key)
    if existing is not None:
        if existing.tenant_id != tenant:
            raise KeyImportError(f"{parsed.public_key} already belongs to another tenant.")
        if not keys.check_secret(parsed.secret, existing.secret_hash):
            raise KeyImportError(f"{parsed.public_key} already exists with a different secret.")
        return False
    store.insert_key(
        conn,
        id=keys.new_key_id(),
        tenant_id=tenant,
        name=name,
        environment=environment,
        public_key=parsed.public_key,
        secret_hash=keys.hash_secret(parsed.secret, rounds),
        created_at=db.utcnow(),
    )
    return True
