"""Verifying a presented API key: the Flask extension and its per-app state, the helper and the decorator.

Verification reads the key's row once and compares a keyed digest of the
presented secret with the stored one (HMAC-SHA256 under the verifier key):
the same microseconds for a right or a wrong secret, on a cold worker or a
warm one, and nothing kept between requests, so a change made anywhere is
seen by the next verification everywhere. Only a row without a digest under
this verifier key (written before digests existed, or under another key)
takes bcrypt, once: a limited number of tries per window, after which its
digest is written and bcrypt is never needed for it again.
"""

from __future__ import annotations

import functools
import hmac
import math
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta

from flask import current_app
from flask import g
from flask import has_app_context
from flask import request

from apikeys import config as config_module
from apikeys import db
from apikeys import errors
from apikeys import instance
from apikeys import keys
from apikeys import scopes as scopes_module
from apikeys import store
from apikeys.errors import VerificationError
from apikeys.lookup import KeyLookup
from apikeys.lookup import KeyRow

API_KEY_HEADER = "X-Api-Key"
VERIFIER_KEY_FILE = "verifier-key"


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


class State:
    """What one app's apikeys needs: the engine, the verifier key and the compiled lookup."""

    def __init__(self, app):
        config = app.config
        self.engine = db.create_engine(app)
        secret = config["APIKEYS_VERIFIER_KEY"] or instance.load_or_create_secret(
            app.instance_path, VERIFIER_KEY_FILE, "verifier key"
        )
        self.verifier = keys.Verifier(secret)
        self.lookup = KeyLookup(self.engine)
        self.bcrypt_rounds = config["APIKEYS_BCRYPT_ROUNDS"]
        self.last_used_interval = timedelta(seconds=config["APIKEYS_LAST_USED_INTERVAL"])
        self.attempts_limit = config["APIKEYS_FAILED_ATTEMPTS_LIMIT"]
        self.attempts_window = timedelta(seconds=config["APIKEYS_FAILED_ATTEMPTS_WINDOW"])
        self.verifier_checked = False
        self.metrics = None  # set by apikeys.metrics when the service counts verifications


def get_state(app=None) -> State:
    """Return the apikeys state of ``app`` (the current app by default)."""
    if app is None:
        if not has_app_context():
            raise RuntimeError(
                "apikeys needs an application context: call it inside a request, or in `with app.app_context():`."
            )
        app = current_app
    try:
        return app.extensions["apikeys"]
    except KeyError:
        raise RuntimeError("apikeys is not set up on this app: call ApiKeys(app) or ApiKeys().init_app(app).") from None


class ApiKeys:
    """The Flask extension that verifies API keys against the apikeys database."""

    def __init__(self, app=None):
        if app is not None:
            self.init_app(app)

    def init_app(self, app) -> None:
        """Check the app's apikeys settings and set up its engine, verifier key and error envelope."""
        if "apikeys" in app.extensions:
            raise RuntimeError("ApiKeys is already set up on this app; call init_app once.")
        config_module.check(app.config)
        app.extensions["apikeys"] = State(app)
        app.register_error_handler(errors.ApiKeysError, errors.handle_error)

    def verify(self, full_key: str | None, environment: str | None = None, scopes=None) -> VerifiedKey:
        """Check a presented full key with the current app; raise VerificationError."""
        return verify_key(get_state(), full_key, environment, scopes)


def verify_key(state: State, full_key: str | None, environment=None, scopes=None) -> VerifiedKey:
    """Check a presented full key and return who it belongs to; raise VerificationError."""
    if not full_key:
        raise errors.MissingApiKey()
    # Surrounding blanks are dropped, as werkzeug drops them from a header.
    parsed = keys.parse_full_key(full_key.strip(" \t"))
    if parsed is None:
        raise errors.InvalidApiKey()
    if not state.verifier_checked:
        db.check_verifier_key(state.engine, state.verifier.fingerprint)
        state.verifier_checked = True
    row = state.lookup(parsed.public_key)
    if row is None:
        raise errors.InvalidApiKey()
    now = db.utcnow()
    _check_secret(state, row, parsed.secret, now)
    if not row.active:
        raise errors.ApiKeyDisabled()
    if row.expires_at is not None and row.expires_at <= now:
        raise errors.ApiKeyExpired()
    if environment is not None and row.environment != environment:
        raise errors.WrongEnvironment()
    if scopes:
        missing = scopes_module.missing(row.scopes, scopes)
        if missing:
            raise errors.InsufficientScope(f"The API key does not grant the required scopes: {' '.join(missing)}.")
    # Decide from the row we already have, so a hot key costs no write at all;
    # the statement's own condition settles races between workers.
    if row.last_used_at is None or row.last_used_at < now - state.last_used_interval:
        with state.engine.begin() as conn:
            store.record_use(conn, row.id, now, state.last_used_interval)
    return VerifiedKey(
        row.id, row.tenant_id, row.environment, row.name, row.public_key, tuple(row.scopes), row.meta, row.expires_at
    )


def _check_secret(state: State, row: KeyRow, secret: str, now: datetime) -> None:
    verifier = state.verifier
    digest = verifier.digest(secret)
    if verifier.owns(row.secret_digest):
        if hmac.compare_digest(row.secret_digest, digest):
            return
    elif _bcrypt_check(state, row, secret, row.secret_hash, digest, now, previous=False):
        return
    if row.previous_expires_at is None or row.previous_expires_at <= now:
        raise errors.InvalidApiKey()
    if verifier.owns(row.previous_secret_digest):
        if hmac.compare_digest(row.previous_secret_digest, digest):
            return
    elif _bcrypt_check(state, row, secret, row.previous_secret_hash, digest, now, previous=True):
        return
    raise errors.InvalidApiKey()


def _bcrypt_check(state: State, row: KeyRow, secret: str, secret_hash, digest: str, now, *, previous: bool) -> bool:
    """The way in for a row without a digest under this verifier key: bcrypt, a limited number of times per window."""
    if secret_hash is None:
        return False
    limit = state.attempts_limit
    if limit > 0:
        # Reserve the try before running bcrypt, so concurrent tries cannot overshoot the limit.
        with state.engine.begin() as conn:
            reserved = store.reserve_bcrypt_check(conn, row.id, now, state.attempts_window, limit)
        if not reserved:
            started = row.failed_window_start or now
            remaining = (started + state.attempts_window - now).total_seconds()
            raise errors.TooManyFailedAttempts(retry_after=max(1, math.ceil(remaining)))
    if not keys.check_secret(secret, secret_hash):
        return False
    with state.engine.begin() as conn:
        store.write_digest(conn, row.id, secret_hash, digest, previous=previous)
    return True


def verify_api_key(full_key: str | None, environment: str | None = None, scopes=None) -> VerifiedKey:
    """Verify a full key with the current app's ApiKeys; raise VerificationError."""
    return verify_key(get_state(), full_key, environment, scopes)


def require_api_key(environment=None, *, scopes=None):
    """Decorate a view so that it runs only for a valid X-Api-Key (granting ``scopes``); the key is on ``g.api_key``."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            g.api_key = verify_api_key(request.headers.get(API_KEY_HEADER), environment, scopes)
            return view(*args, **kwargs)

        return wrapper

    if callable(environment):  # used bare: @require_api_key
        view, environment = environment, None
        return decorator(view)
    return decorator


__all__ = ["ApiKeys", "VerificationError", "VerifiedKey", "get_state", "require_api_key", "verify_api_key"]
