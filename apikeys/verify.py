"""Verifying a presented API key: the helper, the Flask extension and the decorator."""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from flask import g
from flask import request

from apikeys import config as config_module
from apikeys import db
from apikeys import keys
from apikeys import store
from apikeys.errors import error_response

API_KEY_HEADER = "X-Api-Key"
WWW_AUTHENTICATE = 'ApiKey realm="apikeys"'


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """The identity a valid API key carries."""

    id: str
    tenant_id: str
    environment: str
    name: str
    public_key: str


class VerificationError(Exception):
    """A presented key was refused; ``code`` says why and ``status`` is the HTTP answer."""

    status = 401
    code = "INVALID_API_KEY"
    message = "The API key is not valid."

    def __init__(self, message: str | None = None, *, retry_after: int | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """Return the headers an HTTP answer to this error carries."""
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = WWW_AUTHENTICATE
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class MissingApiKey(VerificationError):
    code = "MISSING_API_KEY"
    message = "An API key is required in the X-Api-Key header."


class InvalidApiKey(VerificationError):
    code = "INVALID_API_KEY"
    message = "The API key is not valid."


class TooManyFailedAttempts(VerificationError):
    # 401, not 429: reverse proxies turn an auth answer other than 401/403 into a 500.
    code = "TOO_MANY_FAILED_ATTEMPTS"
    message = "Too many failed attempts for this API key; try again later."


class ApiKeyDisabled(VerificationError):
    status = 403
    code = "API_KEY_DISABLED"
    message = "The API key is disabled."


class WrongEnvironment(VerificationError):
    status = 403
    code = "WRONG_ENVIRONMENT"
    message = "The API key belongs to another environment."


class VerifiedSecrets:
    """A bounded LRU of secrets that passed bcrypt, safe by construction.

    Entries are keyed by (key id, stored bcrypt hash), so a regenerated key
    misses at once, and hold only an HMAC of the secret under a key that lives
    and dies with this process. Rows are still read on every verification, so
    toggle and delete need no invalidation either.
    """

    def __init__(self, size: int):
        self.size = size
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _digest(self, secret: str) -> bytes:
        return hmac.new(self._key, secret.encode("ascii"), hashlib.sha256).digest()

    def matches(self, key_id: str, secret_hash: str, secret: str) -> bool:
        """Tell whether ``secret`` already passed bcrypt against this very hash."""
        with self._lock:
            digest = self._entries.get((key_id, secret_hash))
            if digest is None:
                return False
            self._entries.move_to_end((key_id, secret_hash))
        return hmac.compare_digest(digest, self._digest(secret))

    def remember(self, key_id: str, secret_hash: str, secret: str) -> None:
        """Remember that ``secret`` passed bcrypt against this hash."""
        if self.size <= 0:
            return
        digest = self._digest(secret)
        with self._lock:
            self._entries[(key_id, secret_hash)] = digest
            self._entries.move_to_end((key_id, secret_hash))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class ApiKeys:
    """The Flask extension that verifies API keys against the apikeys database."""

    def __init__(self, app=None):
        self.cache: VerifiedSecrets | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app) -> None:
        """Set up verification on ``app``, and its database unless it already has one."""
        if "apikeys" in app.extensions:
            raise RuntimeError("ApiKeys is already set up on this app; call init_app once.")
        for name, default in config_module.DEFAULTS.items():
            app.config.setdefault(name, default)
        if "apikeys.db" not in app.extensions:
            db.init_app(app)
        self.cache = VerifiedSecrets(app.config["APIKEYS_CACHE_SIZE"])
        app.extensions["apikeys"] = self
        app.register_error_handler(VerificationError, handle_verification_error)

    def verify(self, full_key: str | None, environment: str | None = None, *, app=None) -> VerifiedKey:
        """Check a presented full key and return who it belongs to; raise VerificationError."""
        app = app or current_app._get_current_object()  # one proxy lookup on the hot path
        if not full_key:
            raise MissingApiKey()
        parsed = keys.parse_full_key(full_key)
        if parsed is None:
            raise InvalidApiKey()
        config = app.config
        now = db.utcnow()
        row = self._lookup(app)(parsed.public_key)
        if row is None:
            raise InvalidApiKey()
        if not self.cache.matches(row.id, row.secret_hash, parsed.secret):
            self._check_secret(app, row, parsed.secret, now)
        if not row.active:
            raise ApiKeyDisabled()
        if environment is not None and row.environment != environment:
            raise WrongEnvironment()
        interval = timedelta(seconds=config["APIKEYS_LAST_USED_INTERVAL"])
        # Decide from the row we already have, so a hot key costs no write at
        # all; the statement's own condition settles races between workers.
        if row.last_used_at is None or row.last_used_at < now - interval:
            with db.get_engine(app).begin() as conn:
                store.record_use(conn, row.id, now, interval)
        return VerifiedKey(
            id=row.id,
            tenant_id=row.tenant_id,
            environment=row.environment,
            name=row.name,
            public_key=row.public_key,
        )

    @staticmethod
    def _lookup(app) -> store.KeyLookup:
        lookup = app.extensions.get("apikeys.lookup")
        if lookup is None:
            lookup = app.extensions["apikeys.lookup"] = store.KeyLookup(db.get_engine(app))
        return lookup

    def _check_secret(self, app, row, secret: str, now) -> None:
        config = app.config
        window = timedelta(seconds=config["APIKEYS_FAILED_ATTEMPTS_WINDOW"])
        limit = config["APIKEYS_FAILED_ATTEMPTS_LIMIT"]
        window_open = row.failed_window_start is not None and row.failed_window_start > now - window
        if limit > 0 and window_open and row.failed_attempts >= limit:
            # Under a wrong-secret flood, refuse without running bcrypt at all.
            remaining = (row.failed_window_start + window - now).total_seconds()
            raise TooManyFailedAttempts(retry_after=max(1, math.ceil(remaining)))
        if not keys.check_secret(secret, row.secret_hash):
            with db.get_engine(app).begin() as conn:
                store.record_failure(conn, row.id, now, window)
            raise InvalidApiKey()
        self.cache.remember(row.id, row.secret_hash, secret)


def handle_verification_error(error: VerificationError):
    """Answer a refused key with the error envelope."""
    return error_response(error.status, error.message, code=error.code, headers=error.headers())


def verify_api_key(full_key: str | None, environment: str | None = None) -> VerifiedKey:
    """Verify a full key with the current app's ApiKeys; raise VerificationError."""
    try:
        extension = current_app.extensions["apikeys"]
    except KeyError:
        raise RuntimeError("ApiKeys is not set up on this app: call ApiKeys(app) first.") from None
    return extension.verify(full_key, environment)


def require_api_key(environment: str | None = None):
    """Decorate a view so that it runs only for a valid X-Api-Key; the key is on ``g.api_key``."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            g.api_key = verify_api_key(request.headers.get(API_KEY_HEADER), environment)
            return view(*args, **kwargs)

        return wrapper

    if callable(environment):  # used bare: @require_api_key
        view, environment = environment, None
        return decorator(view)
    return decorator
