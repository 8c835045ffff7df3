"""Verifying a presented API key, with no Flask in it: the check order, written once as a sequence of steps.

Verification reads the key's row once and compares a keyed digest of the
presented secret with the stored one: the same microseconds for a right or a
wrong secret, on a cold worker or a warm one, and nothing kept between
requests, so a change made anywhere is seen by the next verification
everywhere. Each step below either passes or raises one refusal; a new check
is one more function in STEPS, as the key's rate limit and quota are (metering.check_limits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from apikeys import errors
from apikeys import keys
from apikeys import scopes as scopes_module
from apikeys.storage import queries
from apikeys.storage import tables
from apikeys.storage.lookup import KeyRow
from apikeys.verification import secrets
from apikeys.verification.metering import Usage
from apikeys.verification.metering import check_limits


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """The identity a valid API key carries."""

    id: str
    tenant_id: str
    environment: str
    name: str
    public_key: str
    scopes: tuple[str, ...] = ()
    meta: dict | None = None
    expires_at: datetime | None = None
    usage: Usage | None = None  # what this verification left of the key's rate limit and quota, if it has them


@dataclass(slots=True)
class Attempt:
    """One verification as it goes: what was presented and asked for, and the key's row once found."""

    state: object
    presented: keys.ParsedKey
    environment: str | None
    required: tuple[str, ...]
    now: datetime
    cost: int = 1
    row: KeyRow | None = None
    usage: Usage | None = None


def find_row(attempt: Attempt) -> None:
    """The key's row, read once: an unknown public key is refused like a wrong secret."""
    attempt.row = attempt.state.lookup(attempt.presented.public_key)
    if attempt.row is None:
        raise errors.InvalidApiKey()


def check_secret(attempt: Attempt) -> None:
    """The presented secret is the key's, or its previous one within the grace period after a rotation."""
    state, row, secret = attempt.state, attempt.row, attempt.presented.secret
    if secrets.matches(state, row, secret, row.secret_digest, row.secret_hash):
        return
    in_grace = row.previous_expires_at is not None and row.previous_expires_at > attempt.now
    if in_grace and secrets.matches(
        state, row, secret, row.previous_secret_digest, row.previous_secret_hash, previous=True
    ):
        return
    raise errors.InvalidApiKey()


def check_active(attempt: Attempt) -> None:
    """The key is enabled."""
    if not attempt.row.active:
        raise errors.ApiKeyDisabled()


def check_expiry(attempt: Attempt) -> None:
    """The key has not expired: it is refused from the very instant of its expiry."""
    if attempt.row.expires_at is not None and attempt.row.expires_at <= attempt.now:
        raise errors.ApiKeyExpired()


def check_environment(attempt: Attempt) -> None:
    """The key belongs to the environment asked for, if one was."""
    if attempt.environment is not None and attempt.row.environment != attempt.environment:
        raise errors.WrongEnvironment()


def check_scopes(attempt: Attempt) -> None:
    """The key grants every scope asked for."""
    if attempt.required:
        missing = scopes_module.missing(attempt.row.scopes, attempt.required)
        if missing:
            raise errors.InsufficientScope(f"The API key does not grant the required scopes: {' '.join(missing)}.")


def record_use(attempt: Attempt) -> None:
    """Note when the key was last used, at most once per APIKEYS_LAST_USED_INTERVAL."""
    state, row, now = attempt.state, attempt.row, attempt.now
    # Decided from the row already read, so a hot key costs no write at all; the statement's own
    # condition settles races between workers.
    if row.last_used_at is None or row.last_used_at < now - state.last_used_interval:
        with state.engine.begin() as conn:
            queries.record_use(conn, row.id, now, state.last_used_interval)


# The order matters: nothing about a key is told (disabled, expired, its scopes) to whoever lacks its secret.
# Limits come last: only a request every other check admits uses up the key's rate limit or credits.
STEPS = (
    find_row,
    check_secret,
    check_active,
    check_expiry,
    check_environment,
    check_scopes,
    check_limits,
    record_use,
)


def verify_key(state, full_key: str | None, environment: str | None = None, scopes=(), cost: int = 1) -> VerifiedKey:
    """Check a presented full key and return who it belongs to; raise VerificationError.

    ``cost``: what the request takes from the key's quota (0 to 1,000; 0 only checks).
    """
    if not full_key:
        raise errors.MissingApiKey()
    # Surrounding blanks are dropped, as werkzeug drops them from a header.
    presented = keys.parse_full_key(full_key.strip(" \t"))
    if presented is None:
        raise errors.InvalidApiKey()
    attempt = Attempt(state, presented, environment, tuple(scopes or ()), tables.utcnow(), cost)
    usage = state.usage
    try:
        for step in STEPS:
            step(attempt)
    except errors.VerificationError as refusal:
        if usage is not None:
            usage.count_refusal(attempt.row, refusal.label, attempt.now)
        raise
    row = attempt.row
    if usage is not None:
        usage.count(row.id, row.tenant_id, "valid", attempt.now)
    return VerifiedKey(
        row.id,
        row.tenant_id,
        row.environment,
        row.name,
        row.public_key,
        tuple(row.scopes),
        row.meta,
        row.expires_at,
        attempt.usage,
    )
