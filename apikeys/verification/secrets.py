"""Whether a presented secret is a key's: by its keyed digest, or once by bcrypt for a row without a usable one.

A row without a digest under a key this host knows (written before digests
existed, or under a key adopted elsewhere) takes bcrypt in turns: one check at a
time per key, queued one deep, and BCRYPT_SLOTS per host. No count of tries per key: a count would
let anyone who knows a public key lock its holder out. Once bcrypt matches, the
digest is written under the database's recorded verifier key, and bcrypt is
never needed for that secret again.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import time

from apikeys import errors
from apikeys import instance
from apikeys import keys
from apikeys import turns
from apikeys.storage import queries

log = logging.getLogger(__name__)

# bcrypt checks that may run at once on one host (every worker of every app sharing an instance folder).
# Two, so that one connection repeating one key's public id can never take the only slot.
BCRYPT_SLOTS = 2
# How long a check waits for one of those slots, and for its key's turn, before it answers 503
# (a bcrypt takes ~0.25 s; a waiting check holds a worker, so not long).
BCRYPT_WAIT_SECONDS = 0.5
# Keys' own turns: lock files per bucket of keys, bucketed by a keyed hash nobody outside can aim at, and
# made only for the buckets used (so many buckets cost nothing).
KEY_LOCK_BUCKETS = 65536


def matches(state, row, secret: str, digest: str | None, secret_hash: str | None, *, previous: bool = False) -> bool:
    """Tell whether ``secret`` is the one ``row`` stores as (``digest``, ``secret_hash``); bring its digest up to date.

    ``previous``: the row's grace-period secret, stored in its previous_* columns.
    """
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
    with bcrypt_turn(state, row.public_key):
        if not keys.check_secret(secret, secret_hash):
            return False
    recorded = state.recorded_verifier()
    if recorded is not None:
        _write_digest(state, row, secret, secret_hash, recorded, previous)
    return True


def _write_digest(state, row, secret: str, secret_hash: str, verifier: keys.Verifier, previous: bool) -> None:
    with state.engine.begin() as conn:
        # Only under the key the database records, checked in the same statement: a host that has not seen
        # an adoption yet never writes digests back under the key it replaced.
        queries.write_digest(
            conn, row.id, secret_hash, verifier.digest(secret), previous=previous, fingerprint=verifier.fingerprint
        )


@contextlib.contextmanager
def bcrypt_turn(state, public_key: str):
    """Hold this key's turn and one of the host's bcrypt slots, or raise VerificationBusy.

    A key's checks queue one deep: the one waiting holds the key's place, so that
    the next (an attacker's next wrong secret, say) cannot get ahead of it. Whoever
    repeats a key's public id with wrong secrets delays its holder by one bcrypt at
    most, and other keys not at all.
    """
    try:
        instance.make_private_folder(state.lock_folder)
        bucket = key_bucket(state, public_key)
        place = turns.acquire([_lock(state, f"bcrypt-place-{bucket}")], time.monotonic(), errors.VerificationBusy)
    except OSError as error:  # a read-only instance folder, say: say so, in the envelope
        log.error("Cannot make the lock files of bcrypt checks in %s: %s", state.lock_folder, error)
        raise errors.VerificationBusy("This key needs a one-time check that this host cannot run now.") from None
    try:
        deadline = time.monotonic() + BCRYPT_WAIT_SECONDS
        own = turns.acquire([_lock(state, f"bcrypt-key-{bucket}")], deadline, errors.VerificationBusy)
    finally:
        turns.release(place)  # the next check of this key may wait now
    try:
        slots = [_lock(state, f"bcrypt-slot-{slot}") for slot in range(BCRYPT_SLOTS)]
        with turns.hold_one(slots, time.monotonic() + BCRYPT_WAIT_SECONDS, errors.VerificationBusy):
            yield
    finally:
        turns.release(own)


def _lock(state, name: str) -> str:
    return os.path.join(state.lock_folder, name + ".lock")


def key_bucket(state, public_key: str) -> int:
    """Return the bucket whose lock file gives a key its turns (keyed: nobody outside can pick a neighbour)."""
    return int(state.verifier.digest(public_key)[-8:], 16) % KEY_LOCK_BUCKETS
