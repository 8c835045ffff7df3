"""Importing keys known in advance (`apikeys keys import`, seed files): all of a file or none of it."""

from __future__ import annotations

import json
from collections import Counter

import marshmallow as ma
import sqlalchemy as sa

from apikeys import keys
from apikeys import limits as key_limits
from apikeys import tenants
from apikeys.dashboard import limits
from apikeys.envelope import one_line
from apikeys.errors import KeyImportError
from apikeys.schemas import CreateKeySchema
from apikeys.storage import queries
from apikeys.storage.tables import utcnow
from apikeys.verification import secrets

CLI_ACTOR = "cli"


def read_import_file(text: str, source: str) -> list[dict]:
    """Read an import file's JSON list of {tenant, name, environment, fullKey, ...}; raise KeyImportError."""
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
        policy = {name: entry[name] for name in ("expiresAt", "scopes", "meta", "rateLimit", "quota") if name in entry}
        try:
            fields = CreateKeySchema().load({"name": entry["name"], "environment": entry["environment"], **policy})
        except ma.ValidationError as error:
            raise KeyImportError(f"Entry {number}: {one_line(error.messages)}") from None
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
        existing = queries.find_by_public_keys(conn, [entry["parsed"].public_key for entry in entries])
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
            # The rule verification follows: the digest, or bcrypt once for a row without a usable one.
            same_secret = secrets.matches(state, known, parsed.secret, known.secret_digest, known.secret_hash)
        if not same_tenant:
            raise KeyImportError(f"Entry {number}: {parsed.public_key} already belongs to another tenant.")
        if not same_secret:
            raise KeyImportError(f"Entry {number}: {parsed.public_key} already exists with a different secret.")
        unchanged += 1
    added = Counter(entry["tenant"] for entry in rows)
    limits.check_room(state, added, named=True)
    hashed = []
    with limits.place_in_line(state):  # kept throughout, so that a flood of requests cannot starve it
        for entry in rows:
            with limits.hashing_slot(state):  # a key at a time: the dashboard's changes go on between them
                hashed.append((entry, keys.hash_secret(entry["parsed"].secret, state.bcrypt_rounds)))
    now = utcnow()
    try:
        _insert_imported(state, hashed, actor, now)
    except sa.exc.IntegrityError:
        raise KeyImportError("Another import stored some of these keys at the same moment; run it again.") from None
    return len(hashed), unchanged


def _insert_imported(state, hashed: list, actor: str | None, now) -> None:
    with state.engine.begin() as conn:  # one transaction: a bad entry anywhere leaves the database as it was
        limits.lock_tenants(conn, list({entry["tenant"] for entry, _ in hashed}))
        for entry, secret_hash in hashed:
            key_id = keys.new_key_id()
            queries.insert_key(
                conn,
                id=key_id,
                tenant_id=entry["tenant"],
                name=entry["name"],
                environment=entry["environment"],
                public_key=entry["parsed"].public_key,
                secret_hash=secret_hash,
                secret_digest=state.new_digest(entry["parsed"].secret),
                created_at=now,
                expires_at=entry["expires_at"],
                scopes=entry["scopes"],
                meta=entry["meta"],
                **key_limits.columns({"rate_limit": entry.get("rate_limit"), "quota": entry.get("quota")}, now),
            )
            queries.add_audit_entry(conn, entry["tenant"], "key.imported", key_id, actor, now)
        limits.check_counts(state, conn, Counter(entry["tenant"] for entry, _ in hashed), named=True, inserted=True)
