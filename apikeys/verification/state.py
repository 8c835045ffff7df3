"""What one app's verification needs, made once at start: the engine, the verifier keys and the compiled lookup."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta

from apikeys import instance
from apikeys import keys
from apikeys.ratelimit.limiter import RateLimiter
from apikeys.storage import engine as engine_module
from apikeys.storage import fingerprints
from apikeys.storage.lookup import KeyLookup
from apikeys.usage.counting import UsageCounter

log = logging.getLogger(__name__)

VERIFIER_KEY_FILE = "verifier-key"
# How often a worker re-reads which verifier key the database's digests are written under.
RECORDED_KEY_TTL_SECONDS = 30.0


class State:
    """One app's verification: engine, lookup, verifier keys and settings (no Flask: the app's config and folder)."""

    def __init__(self, config, instance_path: str):
        self.verifier = keys.Verifier(configured_verifier_key(config, instance_path))
        self.engine = engine_module.create_engine(config, instance_path)
        previous = [keys.Verifier(old) for old in config["APIKEYS_VERIFIER_KEY_PREVIOUS"]]
        # Every key a digest may be written under, by the tag that starts the digest.
        self.verifiers = {verifier.tag: verifier for verifier in [*previous, self.verifier]}
        self.fingerprints = {verifier.fingerprint for verifier in self.verifiers.values()}
        self.lookup = KeyLookup(self.engine)
        self.bcrypt_rounds = config["APIKEYS_BCRYPT_ROUNDS"]
        self.last_used_interval = timedelta(seconds=config["APIKEYS_LAST_USED_INTERVAL"])
        self.instance_path = instance_path
        # In the private instance folder: a name in /tmp can be listed, and the file pre-created, by any local user.
        self.lock_folder = os.path.join(instance_path, "locks")
        self._recorded: keys.Verifier | None = None
        self._recorded_read_at = float("-inf")
        self._warned_unknown = False
        self.metrics = None  # set by apikeys.metrics when the service counts verifications
        self.limits = None  # set by apikeys.dashboard.limits where the app changes keys
        self.rate_limiter = RateLimiter(self, config, instance_path)
        self.usage = None
        if config["APIKEYS_USAGE"]:
            self.usage = UsageCounter(
                self.engine, config["APIKEYS_USAGE_FLUSH_SECONDS"], config["APIKEYS_USAGE_RETENTION_DAYS"]
            )

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
            fingerprint = fingerprints.recorded_fingerprint(self.engine)
            if fingerprint is None:  # a database no service has prepared yet: the first to do so records its key
                self._recorded = self.verifier
            else:
                self._recorded = next((v for v in self.verifiers.values() if v.fingerprint == fingerprint), None)
            self._recorded_read_at = now
            if fingerprint is not None and self._recorded is None and not self._warned_unknown:
                self._warned_unknown = True
                log.warning(fingerprints.MISMATCH_MESSAGE)
        return self._recorded

    def new_digest(self, secret: str) -> str | None:
        """Return a new secret's digest: under the database's verifier key (None if this host lacks that key)."""
        recorded = self.recorded_verifier()
        return None if recorded is None else recorded.digest(secret)


def configured_verifier_key(config, instance_path: str) -> str:
    """Return the verifier key from the settings or the instance folder; never make one (see ensure_verifier_key)."""
    if config["APIKEYS_VERIFIER_KEY"]:
        return config["APIKEYS_VERIFIER_KEY"]
    path = os.path.join(instance_path, VERIFIER_KEY_FILE)
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
