"""Bearer tokens: every kind of bad token is a 401, the tenant comes from one claim, secrets are kept safe."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time
from types import SimpleNamespace

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from apikeys import create_app
from apikeys import tokens
from apikeys.config import ConfigError
from apikeys.verification import extension


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict) -> str:
    """A token with alg "none" and no signature."""
    return b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode()) + "."


def claims(tenant="acme", **extra) -> dict:
    return {"tenantId": tenant, "exp": int(time.time()) + 600, **extra}


def status_for(client, token: str | None, header: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": header if header is not None else f"Bearer {token}"}
    response = client.get("/dashboard/api-keys", headers=headers)
    return response.status_code, response.json


@pytest.fixture
def rsa_keys():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public_pem.decode()


def test_a_valid_token_is_accepted(client, token):
    assert status_for(client, token("acme"))[0] == 200


BAD_HEADERS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Token abc",
    "Bearer not-a-jwt",
    "Bearer a.b.c",
    "Bearer " + "x" * 5000,
    "Bearer eyJ.eyJ.",
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_missing_or_malformed_authorization_is_a_401(client, header):
    response = client.get("/dashboard/api-keys", headers={} if header is None else {"Authorization": header})
    assert response.status_code == 401
    assert response.json["statusCode"] == 401
    assert response.json["code"] == "INVALID_TOKEN"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token(client, jwt_secret):
    token = jwt.encode(claims(exp=int(time.time()) - 10), jwt_secret, algorithm="HS256")
    assert status_for(client, token)[0] == 401


def test_token_without_exp(client, jwt_secret):
    token = jwt.encode({"tenantId": "acme"}, jwt_secret, algorithm="HS256")
    assert status_for(client, token)[0] == 401


# Leeway 30 s, a max lifetime of an hour: the leeway's 15 s past it pass, 35 s past it do not.
# No table is read: SQLite is enough.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("beyond", "accepted"), [(0, True), (15, True), (30, True), (35, False)])
def test_the_max_lifetime_forgives_the_leeway_and_no_more(config, tmp_path, jwt_secret, monkeypatch, beyond, accepted):
    config.update({"APIKEYS_JWT_LEEWAY": 30, "APIKEYS_JWT_MAX_LIFETIME": 3600})
    app = create_app(config, instance_path=str(tmp_path / "i"))
    try:
        now = int(time.time())
        monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: float(now)))  # the check's clock, held
        token = jwt.encode(claims(iat=now, exp=now + 3600 + beyond), jwt_secret, algorithm="HS256")
        status, body = status_for(app.test_client(), token)
        if accepted:
            assert status == 200, body
        else:
            assert status == 401
            assert body["message"] == "The bearer token lives too long: it may expire at most 3600 s from now."
    finally:
        extension.get_engine(app).dispose()


def test_token_signed_with_another_secret(client):
    token = jwt.encode(claims(), "another-secret-of-sufficient-length-000", algorithm="HS256")
    assert status_for(client, token)[0] == 401


def test_alg_none_is_refused(client):
    assert status_for(client, unsigned(claims()))[0] == 401


def test_hs512_under_an_hs256_config_is_refused(client, jwt_secret):
    token = jwt.encode(claims(), jwt_secret, algorithm="HS512")
    assert status_for(client, token)[0] == 401


def test_tampered_payload_is_refused(client, token):
    header, _, signature = token("acme").split(".")
    forged = header + "." + b64(json.dumps(claims("globex")).encode()) + "." + signature
    assert status_for(client, forged)[0] == 401


@pytest.mark.parametrize(
    "payload",
    [
        {"exp": int(time.time()) + 600},
        {"tenant": "acme", "exp": int(time.time()) + 600},  # no fallback to other claims
        {"sub": "acme", "exp": int(time.time()) + 600},
        {"tenantId": "", "exp": int(time.time()) + 600},
        {"tenantId": 42, "exp": int(time.time()) + 600},
        {"tenantId": ["acme"], "exp": int(time.time()) + 600},
        {"tenantId": None, "exp": int(time.time()) + 600},
        {"tenantId": "x" * 256, "exp": int(time.time()) + 600},
    ],
)
def test_token_without_a_string_tenant_is_refused(client, jwt_secret, payload):
    token = jwt.encode(payload, jwt_secret, algorithm="HS256")
    status, body = status_for(client, token)
    assert status == 401
    assert body["code"] == "INVALID_TOKEN"


def test_tenant_claim_name_is_configurable(config, tmp_path, jwt_secret):
    config["APIKEYS_JWT_TENANT_CLAIM"] = "org"
    app = create_app(config, instance_path=str(tmp_path / "i"))
    try:
        client = app.test_client()
        good = jwt.encode({"org": "acme", "exp": int(time.time()) + 60}, jwt_secret, algorithm="HS256")
        default_claim = jwt.encode(claims(), jwt_secret, algorithm="HS256")
        assert status_for(client, good)[0] == 200
        assert status_for(client, default_claim)[0] == 401
    finally:
        extension.get_engine(app).dispose()


def test_audience_and_issuer_when_configured(config, tmp_path, jwt_secret):
    config.update({"APIKEYS_JWT_AUDIENCE": "apikeys", "APIKEYS_JWT_ISSUER": "https://auth.example"})
    app = create_app(config, instance_path=str(tmp_path / "i"))
    try:
        client = app.test_client()
        assert status_for(client, tokens.issue_token(app.config, "acme", 60))[0] == 200
        for payload in (
            claims(),
            claims(aud="other", iss="https://auth.example"),
            claims(aud="apikeys", iss="https://evil.example"),
            claims(aud="apikeys"),
        ):
            assert status_for(client, jwt.encode(payload, jwt_secret, algorithm="HS256"))[0] == 401
    finally:
        extension.get_engine(app).dispose()


@pytest.fixture
def rs256_app(config, tmp_path, rsa_keys):
    config.update({"APIKEYS_JWT_ALGORITHMS": ["RS256"], "APIKEYS_JWT_PUBLIC_KEY": rsa_keys[1]})
    app = create_app(config, instance_path=str(tmp_path / "i"))
    yield app
    extension.get_engine(app).dispose()


def test_rs256_token_with_the_configured_public_key(rs256_app, rsa_keys):
    token = jwt.encode(claims(), rsa_keys[0], algorithm="RS256")
    assert status_for(rs256_app.test_client(), token)[0] == 200


def test_key_confusion_is_refused(rs256_app, rsa_keys):
    # The classic attack: sign HS256 with the public key as the HMAC secret.
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    import hashlib
    import hmac

    signature = hmac.new(rsa_keys[1].encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}.{b64(signature)}"
    assert status_for(rs256_app.test_client(), forged)[0] == 401


def test_rs256_config_refuses_hs256_even_with_the_shared_secret(rs256_app, jwt_secret):
    token = jwt.encode(claims(), jwt_secret, algorithm="HS256")
    assert status_for(rs256_app.test_client(), token)[0] == 401


def test_es256(config, tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config.update({"APIKEYS_JWT_ALGORITHMS": ["ES256"], "APIKEYS_JWT_PUBLIC_KEY": public_pem.decode()})
    app = create_app(config, instance_path=str(tmp_path / "i"))
    try:
        client = app.test_client()
        assert status_for(client, jwt.encode(claims(), private, algorithm="ES256"))[0] == 200
        other = ec.generate_private_key(ec.SECP256R1())
        assert status_for(client, jwt.encode(claims(), other, algorithm="ES256"))[0] == 401
    finally:
        extension.get_engine(app).dispose()


def test_a_secret_is_generated_once_with_mode_0600(tmp_path, caplog, database_url):
    instance = tmp_path / "instance"
    config = {"APIKEYS_DATABASE_URL": database_url}
    with caplog.at_level(logging.WARNING, logger="apikeys"):
        first = create_app(config, instance_path=str(instance))
    second = create_app(config, instance_path=str(instance))
    try:
        path = instance / tokens.SECRET_FILE
        secret = path.read_text().strip()
        assert len(secret) >= 32
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert first.config["APIKEYS_JWT_SECRET"] == second.config["APIKEYS_JWT_SECRET"] == secret
        assert "Generated a JWT signing secret" in caplog.text
        assert secret not in caplog.text
        assert [p.name for p in instance.iterdir() if p.name.startswith(".jwt-secret")] == []
    finally:
        extension.get_engine(first).dispose()
        extension.get_engine(second).dispose()


def test_no_default_secret_is_built_in(tmp_path, database_url):
    apps = [create_app({"APIKEYS_DATABASE_URL": database_url}, instance_path=str(tmp_path / n)) for n in "ab"]
    try:
        assert apps[0].config["APIKEYS_JWT_SECRET"] != apps[1].config["APIKEYS_JWT_SECRET"]
    finally:
        for app in apps:
            extension.get_engine(app).dispose()


def test_issue_token_needs_an_hmac_algorithm(rs256_app):
    with pytest.raises(RuntimeError):
        tokens.issue_token(rs256_app.config, "acme", 60)


def test_a_token_for_an_allowed_algorithm_with_the_wrong_key_type_is_a_401(config, tmp_path, rsa_keys):
    config.update({"APIKEYS_JWT_ALGORITHMS": ["RS256", "ES256"], "APIKEYS_JWT_PUBLIC_KEY": rsa_keys[1]})
    app = create_app(config, instance_path=str(tmp_path / "i"))
    try:
        token = jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
        status, body = status_for(app.test_client(), token)
        assert status == 401
        assert body["code"] == "INVALID_TOKEN"
    finally:
        extension.get_engine(app).dispose()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"APIKEYS_JWT_ALGORITHMS": ["none"]}, "APIKEYS_JWT_ALGORITHMS"),
        ({"APIKEYS_JWT_ALGORITHMS": ["HS257"]}, "APIKEYS_JWT_ALGORITHMS"),
        ({"APIKEYS_JWT_ALGORITHMS": []}, "APIKEYS_JWT_ALGORITHMS"),
        ({"APIKEYS_JWT_ALGORITHMS": ["RS256"]}, "APIKEYS_JWT_PUBLIC_KEY"),
        ({"APIKEYS_JWT_SECRET": "short-and-guessable"}, "APIKEYS_JWT_SECRET must be at least 32"),
    ],
)
def test_unusable_jwt_settings_stop_the_start(config, tmp_path, settings, message):
    config.update(settings)
    with pytest.raises(ConfigError, match=message):
        create_app(config, instance_path=str(tmp_path / "i"))


@pytest.mark.parametrize("tenant", ["acme\x00", "ac\nme", "\ud800"])
def test_tenant_with_control_characters_is_refused(client, jwt_secret, tenant):
    token = jwt.encode(claims(tenant), jwt_secret, algorithm="HS256")
    assert status_for(client, token)[0] == 401


def test_a_short_secret_file_is_refused(tmp_path, database_url):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / tokens.SECRET_FILE).write_text("short\n")
    with pytest.raises(RuntimeError, match="no usable secret"):
        create_app({"APIKEYS_DATABASE_URL": database_url}, instance_path=str(instance))
