"""Verifying a presented API key: the Flask extension and its per-app state, the helper and the decorator.

Verification reads the key's row once and compares a keyed digest of the
presented secret with the stored one (HMAC-SHA256 under the verifier key):
the same microseconds for a right or a wrong secret, on a cold worker or a
warm one, and nothing kept between requests, so a change made anywhere is
seen by the next verification everywhere. Only a row without a digest under
a verifier key this host knows (written before digests existed, or under a
key adopted elsewhere) takes bcrypt: one check at a time per key, a few at a
time per host; once it matches, its digest is written under the database's
recorded verifier key and bcrypt is never needed for it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hmac
import logging
import os
import time
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

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-Api-Key"
VERIFIER_KEY_FILE = "verifier-key"
# bcrypt checks that may run at once on one host (every worker of every app sharing an instance folder).
# Two, so that one connection repeating one key's public id can never take the only turn: a key's
# checks also take turns among themselves, so an attacker delays no key but the one it attacks.
BCRYPT_SLOTS = 2
# How long a check waits for one of those slots before it answers 503 (a bcrypt takes ~0.25 s).
BCRYPT_WAIT_SECONDS = 1.0
# Keys' own turns: a lock file per bucket of keys, bucketed by a keyed hash nobody outside can aim at.
KEY_LOCK_BUCKETS = 1024
# How often a worker re-reads which verifier key the database's digests are written under.
RECORDED_KEY_TTL_SECONDS = 30.0


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
        self.verifier = keys.Verifier(_configured_verifier_key(app))
        self.engine = db.create_engine(app)
        previous = [keys.Verifier(old) for old in config["APIKEYS_VERIFIER_KEY_PREVIOUS"]]
        # Every key a digest may be written under, by the tag that starts the digest.
        self.verifiers = {verifier.tag: verifier for verifier in [*previous, self.verifier]}
        self.fingerprints = {verifier.fingerprint for verifier in self.verifiers.values()}
        self.lookup = KeyLookup(self.engine)
        self.bcrypt_rounds = config["APIKEYS_BCRYPT_ROUNDS"]
        self.last_used_interval = timedelta(seconds=config["APIKEYS_LAST_USED_INTERVAL"])
        # In the private instance folder: a name in /tmp can be listed, and the file pre-created, by any local user.
        self.lock_folder = os.path.join(app.instance_path, "locks")
        self._recorded: keys.Verifier | None = None
        self._recorded_read_at = float("-inf")
        self._warned_unknown = False
        self.metrics = None  # set by apikeys.metrics when the service counts verifications

    def verifier_of(self, digest: str | None) -> keys.Verifier | None:
        """Return the verifier key a stored digest was written under, if this host knows it."""
        return None if digest is None else self.verifiers.get(digest[: keys.TAG_LENGTH + 1])

    def recorded_verifier(self) -> keys.Verifier | None:
        """Return the verifier key the database's digests are written under, if this host knows it (None if not).

        Read again every RECORDED_KEY_TTL_SECONDS, so that a host that has the new key
        (as its own or as a previous one) follows an adoption made elsewhere.
        """
        now = time.monotonic()
        if now - self._recorded_read_at >= RECORDED_KEY_TTL_SECONDS:
            fingerprint = db.recorded_fingerprint(self.engine)
            if fingerprint is None:  # a database no service has prepared yet: the first to do so records its key
                self._recorded = self.verifier
            else:
                self._recorded = next((v for v in self.verifiers.values() if v.fingerprint == fingerprint), None)
            self._recorded_read_at = now
            if fingerprint is not None and self._recorded is None and not self._warned_unknown:
                self._warned_unknown = True
                log.warning(db.MISMATCH_MESSAGE)
        return self._recorded


def new_digest(state: State, secret: str) -> str | None:
    """Return the digest a new secret is stored with: under the database's verifier key (None if this host lacks it)."""
    recorded = state.recorded_verifier()
    return None if recorded is None else recorded.digest(secret)


def _configured_verifier_key(app) -> str:
    """Return the verifier key from the settings or the instance folder; never make one (see ensure_verifier_key)."""
    configured = app.config["APIKEYS_VERIFIER_KEY"]
    if configured:
        return configured
    path = os.path.join(app.instance_path, VERIFIER_KEY_FILE)
    try:
        return instance.read_secret(path)
    except FileNotFoundError:
        raise RuntimeError(
            f"No verifier key: set APIKEYS_VERIFIER_KEY to the apikeys service's key, or put it in {path} "
            "(the service keeps it in its own instance/verifier-key, or in its APIKEYS_VERIFIER_KEY)."
        ) from None


def ensure_verifier_key(app) -> None:
    """Give the apikeys service its verifier key: the configured one, or the one in (first made in) its instance folder.

    Only the service makes one. An app that only verifies (``ApiKeys(app)``) must be
    given the service's: a key of its own would match no digest in the database.
    """
    if not app.config["APIKEYS_VERIFIER_KEY"]:
        app.config["APIKEYS_VERIFIER_KEY"] = instance.load_or_create_secret(
            app.instance_path, VERIFIER_KEY_FILE, "verifier key"
        )


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
            recorded = state.recorded_verifier()
            if recorded is not None and verifier is not recorded:  # bring it to the database's verifier key
                _write_digest(state, row, secret, secret_hash, recorded, previous)
            return True
    if secret_hash is None:
        return False
    # Written before digests existed, or under a verifier key this host does not know: bcrypt, this once.
    # No count per key (a count would let anyone who knows the public key lock its holder out), but turns:
    # one check at a time per key and BCRYPT_SLOTS per host, so a flood of wrong secrets for one key delays
    # that key alone and cannot take every core.
    with bcrypt_turn(state, row.public_key):
        if not keys.check_secret(secret, secret_hash):
            return False
    recorded = state.recorded_verifier()
    if recorded is not None:
        _write_digest(state, row, secret, secret_hash, recorded, previous)
    return True


def _write_digest(state, row: KeyRow, secret: str, secret_hash: str, verifier: keys.Verifier, previous: bool) -> None:
    with state.engine.begin() as conn:
        # Only under the key the database records, checked in the same statement: a host that has not seen
        # an adoption yet never writes digests back under the key it replaced.
        store.write_digest(
            conn, row.id, secret_hash, verifier.digest(secret), previous=previous, fingerprint=verifier.fingerprint
        )


@contextlib.contextmanager
def bcrypt_turn(state: State, public_key: str):
    """Hold this key's turn and one of the host's bcrypt slots, or raise VerificationBusy."""
    instance.make_private_folder(state.lock_folder)
    with contextlib.ExitStack() as stack:
        if not _try_lock(stack, os.path.join(state.lock_folder, f"bcrypt-key-{key_bucket(state, public_key)}.lock")):
            raise errors.VerificationBusy()  # this key is being checked: only its own checks wait
        slots = [os.path.join(state.lock_folder, f"bcrypt-slot-{slot}.lock") for slot in range(BCRYPT_SLOTS)]
        deadline = time.monotonic() + BCRYPT_WAIT_SECONDS
        while not any(_try_lock(stack, slot) for slot in slots):
            if time.monotonic() >= deadline:
                raise errors.VerificationBusy()
            time.sleep(0.01)
        yield


def key_bucket(state: State, public_key: str) -> int:
    """Return the bucket whose lock file gives a key its turns (keyed: nobody outside can pick a neighbour)."""
    return int(state.verifier.digest(public_key)[-8:], 16) % KEY_LOCK_BUCKETS


def _try_lock(stack: contextlib.ExitStack, path: str) -> bool:
    """Take an exclusive lock on ``path`` unless another holds it; the stack releases it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return False
    stack.callback(os.close, descriptor)  # closing releases the lock
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
