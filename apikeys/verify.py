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

import contextlib
import fcntl
import functools
import hashlib
import hmac
import os
import tempfile
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
        previous = [keys.Verifier(old) for old in config["APIKEYS_VERIFIER_KEY_PREVIOUS"]]
        # Every key a digest may be written under, by the tag that starts the digest.
        self.verifiers = {verifier.tag: verifier for verifier in [*previous, self.verifier]}
        self.lookup = KeyLookup(self.engine)
        self.bcrypt_rounds = config["APIKEYS_BCRYPT_ROUNDS"]
        self.last_used_interval = timedelta(seconds=config["APIKEYS_LAST_USED_INTERVAL"])
        # One per database and host: every worker (and app) on this host that checks this database's keys.
        name = hashlib.sha256(self.engine.url.render_as_string(hide_password=False).encode()).hexdigest()[:16]
        self.bcrypt_lock_path = os.path.join(tempfile.gettempdir(), f"apikeys-bcrypt-{name}.lock")
        self.verifier_checked = False
        self.metrics = None  # set by apikeys.metrics when the service counts verifications

    def verifier_of(self, digest: str | None) -> keys.Verifier | None:
        """Return the verifier key a stored digest was written under, if this host knows it."""
        return None if digest is None else self.verifiers.get(digest[: keys.TAG_LENGTH + 1])


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
    if _matches(state, row, secret, row.secret_digest, row.secret_hash, previous=False):
        return
    in_grace = row.previous_expires_at is not None and row.previous_expires_at > now
    if in_grace and _matches(state, row, secret, row.previous_secret_digest, row.previous_secret_hash, previous=True):
        return
    raise errors.InvalidApiKey()


def _matches(state: State, row: KeyRow, secret: str, digest, secret_hash, *, previous: bool) -> bool:
    """Tell whether ``secret`` is one stored secret: by its digest, or, for a row without a usable one, by bcrypt."""
    if digest is not None:
        verifier = state.verifier_of(digest)
        if verifier is not None:
            if not hmac.compare_digest(digest, verifier.digest(secret)):
                return False  # whoever presents a wrong secret costs one HMAC, and changes nothing
            if verifier is not state.verifier:  # written under a previous verifier key: bring it to the current one
                _write_digest(state, row, secret, secret_hash, previous)
            return True
    if secret_hash is None:
        return False
    # Written before digests existed, or under a verifier key this host does not know: bcrypt, this once.
    # No count per key (a count would let anyone who knows the public key lock its holder out), but one
    # bcrypt at a time per host, so that a flood of wrong secrets cannot take more than one core.
    with bcrypt_slot(state.bcrypt_lock_path):
        if not keys.check_secret(secret, secret_hash):
            return False
    _write_digest(state, row, secret, secret_hash, previous)
    return True


def _write_digest(state: State, row: KeyRow, secret: str, secret_hash: str, previous: bool) -> None:
    with state.engine.begin() as conn:
        store.write_digest(conn, row.id, secret_hash, state.verifier.digest(secret), previous=previous)


@contextlib.contextmanager
def bcrypt_slot(path: str):
    """Hold this host's one bcrypt slot (a lock file shared by every worker), or raise VerificationBusy."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise errors.VerificationBusy() from None
        yield
    finally:
        os.close(descriptor)  # releases the lock


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
