"""Key operations the HTTP API and the command line both perform, each with its audit entry.

One convention for all of them: an operation takes the app's state, does its
bcrypt work before it checks out a connection, then makes its change and the
audit entry in one transaction, so the two exist together or not at all.
"""

from __future__ import annotations

import hmac
import json
from datetime import timedelta

import marshmallow as ma
import sqlalchemy as sa

from apikeys import db
from apikeys import keys
from apikeys import store
from apikeys import tenants
from apikeys.errors import KeyChanged
from apikeys.errors import KeyImportError
from apikeys.errors import KeyNotFound
from apikeys.errors import one_line

CLI_ACTOR = "cli"


def _new_secret(state, environment: str) -> tuple[str, dict]:
    """Return a new secret and the columns that store it: its bcrypt hash and its digest."""
    secret = keys.new_secret(environment)
    return secret, {
        "secret_hash": keys.hash_secret(secret, state.bcrypt_rounds),
        "secret_digest": state.verifier.digest(secret),
    }


def create_key(state, tenant: str, actor: str | None, name: str, environment: str, **policy) -> dict:
    """Create a key (``policy``: expires_at, scopes, meta) and return it with its secret, shown this once."""
    secret, stored = _new_secret(state, environment)
    now = db.utcnow()
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
    }
    with state.engine.begin() as conn:
        store.insert_key(conn, **row, **stored)
        store.add_audit_entry(conn, tenant, "key.created", row["id"], actor, now)
    return {**row, "secret_key": secret, "full_key": f"{row['public_key']}.{secret}", "active": True}


def get_key(state, tenant: str, key_id: str):
    """Return a tenant's key; raise KeyNotFound."""
    with state.engine.connect() as conn:
        row = store.get_key(conn, tenant, key_id)
    if row is None:
        raise KeyNotFound()
    return row


def update_key(state, tenant: str, actor: str | None, key_id: str, changes: dict):
    """Change a key's name, expiry, scopes or metadata and return it; raise KeyNotFound."""
    with state.engine.begin() as conn:
        if not store.update_key(conn, tenant, key_id, changes):
            raise KeyNotFound()
        store.add_audit_entry(conn, tenant, "key.updated", key_id, actor, db.utcnow())
        return store.get_key(conn, tenant, key_id)


def regenerate_key(state, tenant: str, actor: str | None, key_id: str, grace_period: int | None = None) -> dict:
    """Give a key a new secret; with a grace period the old one works that long too. Raise KeyNotFound/KeyChanged."""
    with state.engine.connect() as conn:
        current = store.get_secret(conn, tenant, key_id)
    if current is None:
        raise KeyNotFound()
    secret, stored = _new_secret(state, current.environment)
    now = db.utcnow()
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
        if not store.replace_secret(conn, tenant, key_id, current.secret_hash, **stored, **previous):
            raise KeyNotFound() if store.get_key(conn, tenant, key_id) is None else KeyChanged()
        store.add_audit_entry(conn, tenant, "key.regenerated", key_id, actor, now)
    answer = {"id": key_id, "public_key": current.public_key, "secret_key": secret}
    answer["full_key"] = f"{current.public_key}.{secret}"
    if grace_period is not None:
        answer["previous_expires_at"] = previous["previous_expires_at"] or now
    return answer


def toggle_key(state, tenant: str, actor: str | None, key_id: str) -> bool:
    """Disable an active key (ending a grace period too) or enable a disabled one; return the new flag."""
    with state.engine.begin() as conn:
        active = store.toggle_key(conn, tenant, key_id)
        if active is None:
            raise KeyNotFound()
        store.add_audit_entry(conn, tenant, "key.enabled" if active else "key.disabled", key_id, actor, db.utcnow())
    return active


def delete_key(state, tenant: str, actor: str | None, key_id: str) -> None:
    """Delete a key for good; raise KeyNotFound."""
    with state.engine.begin() as conn:
        if not store.delete_key(conn, tenant, key_id):
            raise KeyNotFound()
        store.add_audit_entry(conn, tenant, "key.deleted", key_id, actor, db.utcnow())


def read_import_file(text: str, source: str) -> list[dict]:
    """Read an import file's JSON list of {tenant, name, environment, fullKey}; raise KeyImportError."""
    from apikeys.schemas import CreateKeySchema

    try:
        entries = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise KeyImportError(f"{source} is not valid JSON: {error}") from None
    if not isinstance(entries, list):
        raise KeyImportError(f"{source} must hold a JSON list of keys.")
    loaded = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise KeyImportError(f"Entry {number}: must be an object.")
        required = ("tenant", "name", "environment", "fullKey")
        missing = [field for field in required if not isinstance(entry.get(field), str)]
        if missing:
            raise KeyImportError(f"Entry {number}: needs string fields {', '.join(missing)}.")
        if not tenants.is_valid(entry["tenant"]):
            raise KeyImportError(f"Entry {number}: tenant must be {tenants.RULE}.")
        policy = {name: entry[name] for name in ("expiresAt", "scopes", "meta") if name in entry}
        try:
            fields = CreateKeySchema().load({"name": entry["name"], "environment": entry["environment"], **policy})
        except ma.ValidationError as error:
            problems = one_line(error.messages)
            raise KeyImportError(f"Entry {number}: {problems}") from None
        parsed = keys.parse_full_key(entry["fullKey"])
        if parsed is None:
            raise KeyImportError(f"Entry {number}: fullKey is not a well-formed apikeys key (format or checksum).")
        if parsed.environment != fields["environment"]:
            raise KeyImportError(f"Entry {number}: fullKey is a {parsed.environment} key, but environment is not.")
        loaded.append({"number": number, "tenant": entry["tenant"], "parsed": parsed, **fields})
    return loaded


def import_keys(state, entries: list[dict], actor: str | None = CLI_ACTOR) -> tuple[int, int]:
    """Store keys known in advance, all or none; return (created, already there). Raise KeyImportError."""
    with state.engine.connect() as conn:
        existing = store.find_by_public_keys(conn, [entry["parsed"].public_key for entry in entries])
    rows, unchanged, seen = [], 0, {}
    for entry in entries:
        parsed, tenant, number = entry["parsed"], entry["tenant"], entry["number"]
        known = seen.get(parsed.public_key) or existing.get(parsed.public_key)
        seen.setdefault(parsed.public_key, entry)
        if known is None:
            rows.append(entry)
            continue
        if isinstance(known, dict):  # listed before in this file
            same_tenant, same_secret = known["tenant"] == tenant, known["parsed"].secret == parsed.secret
        else:
            same_tenant = known.tenant_id == tenant
            verifier = state.verifier_of(known.secret_digest)
            same_secret = (
                hmac.compare_digest(known.secret_digest, verifier.digest(parsed.secret))
                if verifier is not None
                else keys.check_secret(parsed.secret, known.secret_hash)
            )
        if not same_tenant:
            raise KeyImportError(f"Entry {number}: {parsed.public_key} already belongs to another tenant.")
        if not same_secret:
            raise KeyImportError(f"Entry {number}: {parsed.public_key} already exists with a different secret.")
        unchanged += 1
    hashed = [(entry, keys.hash_secret(entry["parsed"].secret, state.bcrypt_rounds)) for entry in rows]
    now = db.utcnow()
    try:
        _insert_imported(state, hashed, actor, now)
    except sa.exc.IntegrityError:
        raise KeyImportError("Another import stored some of these keys at the same moment; run it again.") from None
    return len(hashed), unchanged


def _insert_imported(state, hashed: list, actor: str | None, now) -> None:
    with state.engine.begin() as conn:  # one transaction: a bad entry anywhere leaves the database as it was
        for entry, secret_hash in hashed:
            key_id = keys.new_key_id()
            store.insert_key(
                conn,
                id=key_id,
                tenant_id=entry["tenant"],
                name=entry["name"],
                environment=entry["environment"],
                public_key=entry["parsed"].public_key,
                secret_hash=secret_hash,
                secret_digest=state.verifier.digest(entry["parsed"].secret),
                created_at=now,
                expires_at=entry["expires_at"],
                scopes=entry["scopes"],
                meta=entry["meta"],
            )
            store.add_audit_entry(conn, entry["tenant"], "key.imported", key_id, actor, now)
