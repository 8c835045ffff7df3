"""The API-key format: generate, parse and checksum keys; hash and check secrets.

A full key is ``pk_{env}_{publicId}.sk_{env}_{random}{checksum}``. The public
part names the row. Of the secret part (``sk_...``) two things are kept, never
the secret: a bcrypt hash (the hash of record) and a keyed digest, HMAC-SHA256
under the verifier key, which is what verification compares. The checksum is
the CRC32 of ``sk_{env}_{random}`` in six base62 digits, as GitHub tokens do,
so a mistyped or made-up secret is refused without a lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass

import bcrypt

ENVIRONMENTS = ("live", "test")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 16  # key_ and public ids: 16 base62 digits, about 95 bits
SECRET_LENGTH = 32  # about 190 bits of randomness
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits

# Anchored, ASCII-only: what a secret scanner can use, and what we accept.
FULL_KEY_PATTERN = re.compile(
    rf"(pk_(live|test)_[0-9A-Za-z]{{{ID_LENGTH}}})\.(sk_(live|test)_[0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH}}})",
    re.ASCII,
)
KEY_ID_PATTERN = re.compile(rf"key_[0-9A-Za-z]{{{ID_LENGTH}}}", re.ASCII)
# The longest string that can be a key: anything longer is refused unread.
MAX_FULL_KEY_LENGTH = len("pk_live_.sk_live_") + ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """The parts of a well-formed full key."""

    environment: str
    public_key: str
    secret: str


def random_base62(length: int) -> str:
    """Return ``length`` base62 digits from the system's CSPRNG."""
    return "".join(secrets.choice(BASE62) for _ in range(length))


# Every pair of base62 digits, in order: a checksum is three of them (every verification computes one).
_PAIRS = [high + low for high in BASE62 for low in BASE62]


def checksum(text: str) -> str:
    """Return the CRC32 of ``text`` as six base62 digits."""
    high, rest = divmod(zlib.crc32(text.encode("ascii")), 62**4)
    middle, low = divmod(rest, 62**2)
    return _PAIRS[high] + _PAIRS[middle] + _PAIRS[low]


def new_key_id() -> str:
    """Return a new row id, ``key_`` and 16 base62 digits."""
    return "key_" + random_base62(ID_LENGTH)


def new_public_key(environment: str) -> str:
    """Return a new public key for ``environment``."""
    return f"pk_{environment}_{random_base62(ID_LENGTH)}"


def new_secret(environment: str) -> str:
    """Return a new secret for ``environment``, checksum included."""
    body = f"sk_{environment}_{random_base62(SECRET_LENGTH)}"
    return body + checksum(body)


def parse_full_key(full_key: str) -> ParsedKey | None:
    """Split a presented key into its parts, or return None if it is not one of ours."""
    if len(full_key) > MAX_FULL_KEY_LENGTH:
        return None
    match = FULL_KEY_PATTERN.fullmatch(full_key)
    if match is None:
        return None
    public_key, environment, secret, secret_environment = match.groups()
    if environment != secret_environment:
        return None
    body, check = secret[:-CHECKSUM_LENGTH], secret[-CHECKSUM_LENGTH:]
    if not secrets.compare_digest(checksum(body), check):
        return None
    return ParsedKey(environment=environment, public_key=public_key, secret=secret)


def hash_secret(secret: str, rounds: int) -> str:
    """Return the bcrypt hash of a secret (the ``sk_...`` part only: bcrypt reads 72 bytes)."""
    return bcrypt.hashpw(secret.encode("ascii"), bcrypt.gensalt(rounds)).decode("ascii")


def check_secret(secret: str, secret_hash: str) -> bool:
    """Tell whether ``secret`` matches a bcrypt hash, in constant time."""
    return bcrypt.checkpw(secret.encode("ascii"), secret_hash.encode("ascii"))


FINGERPRINT_MESSAGE = b"apikeys verifier key fingerprint"
TAG_LENGTH = 8  # hex digits of the fingerprint that prefix each digest


class Verifier:
    """The verifier key (the "pepper"): it writes and checks the digests verification compares."""

    __slots__ = ("_key", "fingerprint", "tag")

    def __init__(self, secret: str):
        self._key = secret.encode("utf-8")
        # What names this key in the database without revealing it; its start tags every digest.
        self.fingerprint = hmac.new(self._key, FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()
        self.tag = self.fingerprint[:TAG_LENGTH] + ":"

    def digest(self, secret: str) -> str:
        """Return the stored digest of a secret: this key's tag, then HMAC-SHA256 of the secret in hex."""
        return self.tag + hmac.new(self._key, secret.encode("ascii"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"<Verifier {self.tag[:-1]}>"
