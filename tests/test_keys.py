"""The key format: generation, parsing, checksum and hashing."""

from __future__ import annotations

import re

import pytest

from apikeys import keys

SCANNER_REGEX = re.compile(r"\bpk_(?:live|test)_[0-9A-Za-z]{16}\.sk_(?:live|test)_[0-9A-Za-z]{38}\b")


def full_key(environment: str = "live") -> str:
    return f"{keys.new_public_key(environment)}.{keys.new_secret(environment)}"


@pytest.mark.parametrize("environment", keys.ENVIRONMENTS)
def test_new_key_has_documented_shape(environment):
    key = full_key(environment)
    public, secret = key.split(".")
    assert re.fullmatch(rf"pk_{environment}_[0-9A-Za-z]{{16}}", public)
    assert re.fullmatch(rf"sk_{environment}_[0-9A-Za-z]{{38}}", secret)
    assert SCANNER_REGEX.fullmatch(key)
    assert len(key) == keys.MAX_FULL_KEY_LENGTH


def test_new_key_id_is_base62():
    assert re.fullmatch(r"key_[0-9A-Za-z]{16}", keys.new_key_id())


def test_secrets_are_random():
    assert len({keys.new_secret("live") for _ in range(200)}) == 200


def test_parse_returns_parts():
    key = full_key("test")
    parsed = keys.parse_full_key(key)
    assert parsed == keys.ParsedKey("test", key.split(".")[0], key.split(".")[1])


def _corrupt_last(key: str) -> str:
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


def _swap_body_char(key: str) -> str:
    index = key.index(".sk_live_") + 10
    char = key[index]
    return key[:index] + ("x" if char != "x" else "y") + key[index + 1 :]


@pytest.mark.parametrize(
    "mangle",
    [
        _corrupt_last,  # checksum digit
        _swap_body_char,  # random part: checksum no longer matches
        lambda k: k.replace("sk_live_", "sk_test_"),  # environments differ
        lambda k: k.replace("pk_live_", "pk_test_").replace("sk_live_", "sk_test_"),  # checksum covers the env
        lambda k: k.replace(".", ":"),
        lambda k: k + "x",
        lambda k: k[:-1],
        lambda k: k.split(".")[0],
        lambda k: k.split(".")[1],
        lambda k: " " + k,
        lambda k: k + "\n",
        lambda k: k.replace("pk_", "PK_"),
        lambda k: k[:20] + "é" + k[21:],
        lambda k: k[:20] + "\u0663" + k[21:],  # a non-ASCII digit that \d would match
        lambda k: "",
        lambda k: "." * 71,
        lambda k: k * 100,
    ],
)
def test_parse_refuses_malformed_keys(mangle):
    assert keys.parse_full_key(mangle(full_key("live"))) is None


def test_checksum_is_six_base62_digits():
    for text in ("", "sk_live_x", "a" * 100):
        assert re.fullmatch(r"[0-9A-Za-z]{6}", keys.checksum(text))


def test_hash_and_check():
    secret = keys.new_secret("live")
    hashed = keys.hash_secret(secret, rounds=4)
    assert secret not in hashed
    assert hashed.startswith("$2b$04$")
    assert keys.check_secret(secret, hashed)
    assert not keys.check_secret(keys.new_secret("live"), hashed)


# Known answers, computed once and written down: every issued key carries this checksum, so a change
# to the algorithm (a reversed digit order, another CRC) would invalidate them all and must fail here.
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", "000000"),
        ("sk_live_", "2pFfUd"),
        ("hello world", "0F5VY5"),
        ("sk_live_0123456789abcdefghijABCDEFGHIJKL", "2rQEm4"),
        ("sk_test_zyxwvutsrqponmlkjihgfedcbaZYXWVU", "4cFW2C"),
        ("sk_live_00000000000000000000000000000000", "2UYg5A"),
        ("sk_test_9999999999999999999999999999999z", "3a9WwO"),
    ],
)
def test_checksum_known_answers(body, expected):
    assert keys.checksum(body) == expected


def test_a_key_issued_today_still_parses():
    issued = "pk_live_AbCdEfGh12345678.sk_live_0123456789abcdefghijABCDEFGHIJKL2rQEm4"
    assert keys.parse_full_key(issued) == keys.ParsedKey(
        "live", "pk_live_AbCdEfGh12345678", "sk_live_0123456789abcdefghijABCDEFGHIJKL2rQEm4"
    )
    assert keys.parse_full_key(issued[:-1] + "5") is None  # one checksum digit off
