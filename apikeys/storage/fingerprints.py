"""The verifier key's fingerprint in the database: which key its digests are written under."""

from __future__ import annotations

import sqlalchemy as sa

from apikeys.storage.tables import settings


class VerifierKeyMismatch(RuntimeError):
    """This host's verifier keys do not include the one the database's digests are written under."""


FINGERPRINT = "verifier_key_fingerprint"
MISMATCH_MESSAGE = (
    "This host's verifier keys (APIKEYS_VERIFIER_KEY, APIKEYS_VERIFIER_KEY_PREVIOUS) do not include the key this "
    "database's digests are written under: give every host the database's key, as APIKEYS_VERIFIER_KEY or, during "
    "a change of key, in APIKEYS_VERIFIER_KEY_PREVIOUS (docs/security.md)."
)


def recorded_fingerprint(engine: sa.Engine) -> str | None:
    """Return the fingerprint of the verifier key the database's digests are written under, if one is recorded."""
    with engine.connect() as conn:
        return conn.execute(sa.select(settings.c.value).where(settings.c.name == FINGERPRINT)).scalar()


def check_verifier_key(engine: sa.Engine, fingerprint: str, known=()) -> bool:
    """Record ``fingerprint`` if the database has none; raise VerifierKeyMismatch unless the recorded one is this
    key or one of ``known`` (the host's previous keys). Tell whether it recorded."""
    recorded = recorded_fingerprint(engine)
    if recorded is None:
        try:
            with engine.begin() as conn:
                conn.execute(sa.insert(settings).values(name=FINGERPRINT, value=fingerprint))
            return True
        except sa.exc.IntegrityError:  # another host recorded one at the same moment
            recorded = recorded_fingerprint(engine)
    if recorded != fingerprint and recorded not in known:
        raise VerifierKeyMismatch(MISMATCH_MESSAGE)
    return False


def check_recorded_verifier_key(engine: sa.Engine, known) -> None:
    """Raise VerifierKeyMismatch if the database records a verifier key that is not one of ``known``; record nothing."""
    recorded = recorded_fingerprint(engine)
    if recorded is not None and recorded not in known:
        raise VerifierKeyMismatch(MISMATCH_MESSAGE)


def adopt_verifier_key(engine: sa.Engine, fingerprint: str) -> None:
    """Make ``fingerprint`` the database's verifier key; every key then takes the bcrypt path once."""
    with engine.begin() as conn:
        conn.execute(sa.delete(settings).where(settings.c.name == FINGERPRINT))
        conn.execute(sa.insert(settings).values(name=FINGERPRINT, value=fingerprint))
