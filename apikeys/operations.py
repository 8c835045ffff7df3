"""Key operations the HTTP API and the command line both perform, each with its audit entry.

One convention for all of them: an operation takes the app's state, does its
bcrypt work before it checks out a connection, then makes its change and the
audit entry in one transaction, so the two exist together or not at all.

Two limits keep one tenant from taking what others need: bcrypt for key changes
takes turns host-wide (``APIKEYS_HASHING_CONCURRENCY`` at once, shared by every
worker through lock files in the instance folder), and a tenant holds at most
``APIKEYS_MAX_KEYS_PER_TENANT`` keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import marshmallow as ma
import sqlalchemy as sa
from flask import has_request_context

from apikeys import db
from apikeys import instance
from apikeys import keys
from apikeys import store
from apikeys import tenants
from apikeys.errors import ApiKeysError
from apikeys.errors import KeyChanged
from apikeys.errors import KeyImportError
from apikeys.errors import KeyNotFound
from apikeys.errors import one_line
from apikeys.verify import new_digest

CLI_ACTOR = "cli"
# A request that finds every hashing slot taken waits this long for one, so that a change that meets another
# never sees a 503. A worker that waits serves nobody else meanwhile (gunicorn's workers are sync), so with
# slow hashes only one request may wait; beyond, a 503 at once.
HASHING_WAIT_SECONDS = 2.0
# Below these rounds a hash takes a few milliseconds (this is for tests and development): whoever waits is
# served within milliseconds, so every request may wait.
LINE_LIMIT_ROUNDS = 10
POLL_SECONDS = 0.01
# The first half of PostgreSQL's two-part advisory lock keys: ours, the tenant's hash is the second half.
TENANT_LOCK_CLASS = 0x61706B73  # "apks"


class HashingBusy(ApiKeysError):
    status, code = 503, "HASHING_BUSY"
    message = "Too many keys are being created or rotated on this server right now; nothing changed. Retry in a second."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class KeyLimitReached(ApiKeysError):
    status, code = 409, "KEY_LIMIT_REACHED"

    def __init__(self, limit: int, tenant: str | None = None):
        if tenant is None:  # the caller's own tenant
            message = f"This tenant has reached its limit of {limit} API keys: delete one it no longer uses first."
        else:  # an import, which may name several tenants
            message = f"Tenant {tenant!r} would have more than {limit} API keys, the limit; nothing was imported."
        super().__init__(message)


class HashingTurns:
    """This host's turns at bcrypt for key changes: lock files that every worker and command of the app share.

    A turn is a place in line, then a slot. Deadlines are ``time.monotonic()`` values; None waits as long as it takes.
    """

    def __init__(self, folder: str, concurrency: int, line_limited: bool):
        self.slots = [os.path.join(folder, f"hashing-slot-{number}.lock") for number in range(concurrency)]
        # A place in line for each slot and one more: those hashing hold one, and so does the one waiting.
        self.places = [os.path.join(folder, f"hashing-place-{number}.lock") for number in range(concurrency + 1)]
        self.line_limited = line_limited
        self._held = threading.local()  # a thread hashes one secret at a time: what it holds, it may use again

    def place(self, deadline: float | None):
        """Hold a place in line; with a limited line, a request (``deadline`` not None) gets one at once or never."""
        if deadline is not None and self.line_limited:
            deadline = time.monotonic()
        return self._hold("place", self.places, deadline)

    def slot(self, deadline: float | None):
        """Hold a hashing slot, waiting until ``deadline`` at most."""
        return self._hold("slot", self.slots, deadline)

    @contextlib.contextmanager
    def _hold(self, kind: str, paths: list[str], deadline: float | None):
        if getattr(self._held, kind, False):
            yield
            return
        with _hold_one(paths, deadline):
            setattr(self._held, kind, True)
            try:
                yield
            finally:
                setattr(self._held, kind, False)


@contextlib.contextmanager
def _hold_one(paths: list[str], deadline: float | None):
    """Hold one of these lock files, or raise HashingBusy at ``deadline``."""
    # A descriptor of our own per file and call: flock belongs to the open file, so threads never share a lock.
    descriptors = [os.open(path, os.O_RDWR | os.O_CREAT, 0o600) for path in paths]
    try:
        while not any(map(_try_lock, descriptors)):
            if deadline is not None and time.monotonic() >= deadline:
                raise HashingBusy()
            time.sleep(POLL_SECONDS)
        yield
    finally:
        for descriptor in descriptors:
            os.close(descriptor)  # releases the lock held


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@dataclass(frozen=True)
class Limits:
    """The dashboard's limits: the host's hashing turns (None: unbounded) and keys per tenant (0: unlimited)."""

    turns: HashingTurns | None = None
    max_keys: int = 0


def _limits(state) -> Limits:
    # An app that only verifies (ApiKeys(app) without create_app) has none: it changes no keys.
    return getattr(state, "limits", None) or Limits()


def _deadline() -> float | None:
    # Waiting ties up a server worker only in a request; a command's operator would rather wait than retry.
    return time.monotonic() + HASHING_WAIT_SECONDS if has_request_context() else None


@contextlib.contextmanager
def _place_in_line(state, deadline: float | None):
    turns = _limits(state).turns
    with contextlib.nullcontext() if turns is None else turns.place(deadline):
        yield


@contextlib.contextmanager
def _hashing_slot(state, deadline: float | None):
    turns = _limits(state).turns
    with contextlib.nullcontext() if turns is None else turns.slot(deadline):
        yield


@contextlib.contextmanager
def _hashing_turn(state):
    """Hold a turn at bcrypt: a place in line, then a slot; a request waits briefly, anything else its turn."""
    deadline = _deadline()
    with _place_in_line(state, deadline), _hashing_slot(state, deadline):
        yield


def _new_secret(state, environment: str) -> tuple[str, dict]:
    """Return a new secret and the columns that store it: its bcrypt hash and its digest."""
    secret = keys.new_secret(environment)
    with _hashing_turn(state):
        secret_hash = keys.hash_secret(secret, state.bcrypt_rounds)
    return secret, {"secret_hash": secret_hash, "secret_digest": new_digest(state, secret)}


def _check_room(state, added: Counter, *, named: bool) -> None:
    """Refuse, before any bcrypt, keys that would take a tenant over its limit (the insert checks again)."""
    if _limits(state).max_keys:
        with state.engine.connect() as conn:
            _check_counts(state, conn, added, named=named, inserted=False)


def _lock_tenants(conn: sa.Connection, tenant_ids: list[str]) -> None:
    """On PostgreSQL, take each tenant's transaction lock, in one order, so that counts and inserts take turns.

    SQLite needs none: the insert, which comes before the count, holds the
    database's one write lock until the transaction ends.
    """
    if conn.dialect.name == "postgresql":
        for tenant in sorted(tenant_ids):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(TENANT_LOCK_CLASS, sa.func.hashtext(tenant))))


def _check_counts(state, conn: sa.Connection, added: Counter, *, named: bool, inserted: bool) -> None:
    """Raise KeyLimitReached if ``added`` keys (``inserted`` already, or still to come) take a tenant over its limit."""
    limit = _limits(state).max_keys
    for tenant, count in added.items():
        if limit and store.count_keys(conn, tenant) + (0 if inserted else count) > limit:
            raise KeyLimitReached(limit, tenant if named else None)


def create_key(state, tenant: str, actor: str | None, name: str, environment: str, **policy) -> dict:
    """Create a key (``policy``: expires_at, scopes, meta) and return it with its secret, shown this once."""
    _check_room(state, Counter({tenant: 1}), named=False)
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
        _lock_tenants(conn, [tenant])
        store.insert_key(conn, **row, **stored)
        # Counted after the insert, in its transaction (see _lock_tenants): two creates cannot both take the last place.
        _check_counts(state, conn, Counter({tenant: 1}), named=False, inserted=True)
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
            if verifier is not None:
                same_secret = hmac.compare_digest(known.secret_digest, verifier.digest(parsed.secret))
            else:
                with _hashing_turn(state):
                    same_secret = keys.check_secret(parsed.secret, known.secret_hash)
        if not same_tenant:
            raise KeyImportError(f"Entry {number}: {parsed.public_key} already belongs to another tenant.")
        if not same_secret:
            raise KeyImportError(f"Entry {number}: {parsed.public_key} already exists with a different secret.")
        unchanged += 1
    added = Counter(entry["tenant"] for entry in rows)
    _check_room(state, added, named=True)
    hashed = []
    with _place_in_line(state, _deadline()):  # kept throughout, so that a flood of requests cannot starve it
        for entry in rows:
            with _hashing_slot(state, _deadline()):  # a key at a time: the dashboard's changes go on between them
                hashed.append((entry, keys.hash_secret(entry["parsed"].secret, state.bcrypt_rounds)))
    now = db.utcnow()
    try:
        _insert_imported(state, hashed, actor, now)
    except sa.exc.IntegrityError:
        raise KeyImportError("Another import stored some of these keys at the same moment; run it again.") from None
    return len(hashed), unchanged


def _insert_imported(state, hashed: list, actor: str | None, now) -> None:
    with state.engine.begin() as conn:  # one transaction: a bad entry anywhere leaves the database as it was
        _lock_tenants(conn, list({entry["tenant"] for entry, _ in hashed}))
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
                secret_digest=new_digest(state, entry["parsed"].secret),
                created_at=now,
                expires_at=entry["expires_at"],
                scopes=entry["scopes"],
                meta=entry["meta"],
            )
            store.add_audit_entry(conn, entry["tenant"], "key.imported", key_id, actor, now)
        _check_counts(state, conn, Counter(entry["tenant"] for entry, _ in hashed), named=True, inserted=True)


def init_app(app) -> None:
    """Set up the dashboard's limits: the host's hashing turns in the instance folder, and keys per tenant."""
    from apikeys.verify import get_state

    config = app.config
    # In the private instance folder, named after nothing secret: never in /tmp, where any local user
    # could list them, or make them first.
    if not os.path.isdir(app.instance_path):  # create_app has made it (and warned if others can enter it)
        instance.make_private_folder(app.instance_path)
    # 0: half the cores, so that key changes leave the other half to verification.
    concurrency = config["APIKEYS_HASHING_CONCURRENCY"] or max(1, (os.cpu_count() or 1) // 2)
    turns = HashingTurns(app.instance_path, concurrency, config["APIKEYS_BCRYPT_ROUNDS"] >= LINE_LIMIT_ROUNDS)
    get_state(app).limits = Limits(turns, config["APIKEYS_MAX_KEYS_PER_TENANT"])
