"""Verification: the helper, the decorator, /verify, the keyed digest, and bcrypt for rows without one."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import g

from apikeys import ApiKeys
from apikeys import VerificationError
from apikeys import VerifiedKey
from apikeys import create_app
from apikeys import keys
from apikeys import require_api_key
from apikeys import tokens
from apikeys import verify_api_key
from apikeys.storage import fingerprints
from apikeys.storage import tables
from apikeys.verification import extension
from tests.conftest import VERIFIER_KEY


@pytest.fixture
def bcrypt_calls(monkeypatch):
    """Count bcrypt checks (the real ones still run)."""
    calls = []
    real = keys.check_secret

    def counting(secret, secret_hash):
        calls.append(1)
        return real(secret, secret_hash)

    monkeypatch.setattr(keys, "check_secret", counting)
    return calls


def wrong_secret_for(key: dict) -> str:
    """A well-formed key with a valid checksum and the right public key, but not the right secret."""
    return f"{key['publicKey']}.{keys.new_secret(key['environment'])}"


def verify(app, full_key, environment=None):
    with app.app_context():
        return verify_api_key(full_key, environment)


def code_of(app, full_key, environment=None) -> str:
    with pytest.raises(VerificationError) as raised:
        verify(app, full_key, environment)
    return raised.value.code


def set_row(app, key_id, **values):
    with extension.get_engine(app).begin() as conn:
        conn.execute(sa.update(tables.api_keys).where(tables.api_keys.c.id == key_id).values(**values))


def get_row(app, key_id):
    with extension.get_engine(app).connect() as conn:
        return conn.execute(sa.select(tables.api_keys).where(tables.api_keys.c.id == key_id)).one()


# The helper


def test_verify_returns_an_immutable_identity(app, make_key):
    key = make_key(tenant="acme", name="Backend", environment="test")
    verified = verify(app, key["fullKey"])
    assert verified == VerifiedKey(
        id=key["id"], tenant_id="acme", environment="test", name="Backend", public_key=key["publicKey"], meta={}
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        verified.tenant_id = "globex"


@pytest.mark.parametrize("presented", [None, ""])
def test_missing_key(app, presented):
    assert code_of(app, presented) == "MISSING_API_KEY"


def test_malformed_unknown_and_wrong_keys_are_invalid(app, make_key, bcrypt_calls):
    key = make_key()
    unknown = f"{keys.new_public_key('live')}.{keys.new_secret('live')}"
    assert code_of(app, "garbage") == "INVALID_API_KEY"
    assert code_of(app, key["fullKey"][:-1] + ("A" if key["fullKey"][-1] != "A" else "B")) == "INVALID_API_KEY"
    assert code_of(app, unknown) == "INVALID_API_KEY"
    assert code_of(app, wrong_secret_for(key)) == "INVALID_API_KEY"
    assert bcrypt_calls == []  # the wrong secret too: its digest is compared, bcrypt never runs


def test_disabled_key(app, make_key):
    key = make_key()
    set_row(app, key["id"], active=False)
    assert code_of(app, key["fullKey"]) == "API_KEY_DISABLED"


def test_disabled_key_with_a_wrong_secret_is_invalid_not_disabled(app, make_key):
    key = make_key()
    set_row(app, key["id"], active=False)
    assert code_of(app, wrong_secret_for(key)) == "INVALID_API_KEY"


def test_wrong_environment(app, make_key):
    key = make_key(environment="test")
    assert verify(app, key["fullKey"], "test").environment == "test"
    assert code_of(app, key["fullKey"], "live") == "WRONG_ENVIRONMENT"


def test_wrong_environment_with_a_wrong_secret_is_invalid(app, make_key):
    key = make_key(environment="test")
    assert code_of(app, wrong_secret_for(key), "live") == "INVALID_API_KEY"


def test_verify_needs_the_extension():
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="ApiKeys"):
        verify_api_key("x")


def test_extension_refuses_a_second_init(app):
    with pytest.raises(RuntimeError, match="once"):
        ApiKeys(app)


# The digest: every verification compares a keyed digest, none runs bcrypt


def test_no_verification_of_a_key_with_a_digest_runs_bcrypt(app, make_key, bcrypt_calls):
    key = make_key()
    for _ in range(5):
        verify(app, key["fullKey"])
        assert code_of(app, wrong_secret_for(key)) == "INVALID_API_KEY"
    assert bcrypt_calls == []


def test_the_row_holds_a_digest_and_a_bcrypt_hash_never_the_secret(app, make_key):
    key = make_key()
    row = get_row(app, key["id"])
    verifier = app.extensions["apikeys"].verifier
    assert row.secret_digest == verifier.digest(key["secretKey"])
    assert row.secret_digest.startswith(verifier.tag)
    assert keys.check_secret(key["secretKey"], row.secret_hash)
    assert not any(key["secretKey"] in str(value) for value in row)


def test_a_new_app_on_the_database_verifies_at_once_without_bcrypt(config, tmp_path, make_key, bcrypt_calls):
    """A cold worker (a restart, a deploy, another host) is as fast as a warm one: nothing is kept per process."""
    key = make_key()
    cold = create_app(config, instance_path=str(tmp_path / "cold"))
    try:
        assert verify(cold, key["fullKey"]).id == key["id"]
    finally:
        extension.get_engine(cold).dispose()
    assert bcrypt_calls == []


def test_wrong_secrets_never_lock_out_the_holder(app, make_key, bcrypt_calls):
    key = make_key()
    for _ in range(60):
        assert code_of(app, wrong_secret_for(key)) == "INVALID_API_KEY"
    assert verify(app, key["fullKey"]).id == key["id"]
    assert bcrypt_calls == []


def test_toggle_and_delete_are_seen_at_once(app, client, auth, make_key):
    key = make_key()
    verify(app, key["fullKey"])
    client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    assert code_of(app, key["fullKey"]) == "API_KEY_DISABLED"
    client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    assert verify(app, key["fullKey"]).id == key["id"]
    client.delete(f"/dashboard/api-keys/{key['id']}", headers=auth())
    assert code_of(app, key["fullKey"]) == "INVALID_API_KEY"


def test_change_made_by_another_instance_is_seen_at_once(app, config, tmp_path, make_key):
    """Two apps on one database stand for two workers (or hosts): no invalidation message is needed."""
    other = create_app(config, instance_path=str(tmp_path / "other"))
    try:
        key = make_key()
        verify(app, key["fullKey"])
        verify(other, key["fullKey"])
        token = {"Authorization": "Bearer " + tokens.issue_token(other.config, "acme", 60)}
        regenerated = other.test_client().post(f"/dashboard/api-keys/{key['id']}/regenerate", headers=token).json
        assert code_of(app, key["fullKey"]) == "INVALID_API_KEY"
        assert verify(app, regenerated["data"]["fullKey"]).id == key["id"]
    finally:
        extension.get_engine(other).dispose()


# The verifier key


def test_a_host_with_another_verifier_key_refuses_to_start(app, config, tmp_path):
    extension.prepare(app)
    other = create_app({**config, "APIKEYS_VERIFIER_KEY": "another-" + "k" * 40}, instance_path=str(tmp_path / "o"))
    try:
        with pytest.raises(fingerprints.VerifierKeyMismatch, match="APIKEYS_VERIFIER_KEY"):
            extension.prepare(other)
    finally:
        extension.get_engine(other).dispose()


def test_the_fingerprint_does_not_reveal_the_key(app):
    extension.prepare(app)
    recorded = fingerprints.recorded_fingerprint(extension.get_engine(app))
    assert recorded == app.extensions["apikeys"].verifier.fingerprint
    assert app.config["APIKEYS_VERIFIER_KEY"] not in recorded


def test_adopting_a_new_verifier_key_sends_every_key_through_bcrypt_once(app, config, tmp_path, make_key, bcrypt_calls):
    key = make_key()
    extension.prepare(app)
    rotated = create_app({**config, "APIKEYS_VERIFIER_KEY": "rotated-" + "r" * 40}, instance_path=str(tmp_path / "r"))
    try:
        result = rotated.test_cli_runner().invoke(args=["verifier-key", "adopt", "--yes"])
        assert result.exit_code == 0, result.output
        extension.prepare(rotated)  # the new key is the database's now
        for _ in range(3):
            assert verify(rotated, key["fullKey"]).id == key["id"]
        assert len(bcrypt_calls) == 1
        assert get_row(rotated, key["id"]).secret_digest == rotated.extensions["apikeys"].verifier.digest(
            key["secretKey"]
        )
    finally:
        extension.get_engine(rotated).dispose()


# Rows without a usable digest (written before digests, or under another verifier key): bcrypt, once


def forget_digest(app, key):
    set_row(app, key["id"], secret_digest=None)


def test_a_row_without_a_digest_takes_bcrypt_once_then_the_fast_path(app, make_key, bcrypt_calls):
    key = make_key()
    forget_digest(app, key)
    for _ in range(3):
        assert verify(app, key["fullKey"]).id == key["id"]
    assert len(bcrypt_calls) == 1
    assert get_row(app, key["id"]).secret_digest == app.extensions["apikeys"].verifier.digest(key["secretKey"])


def test_a_digest_under_another_verifier_key_is_not_compared(app, make_key, bcrypt_calls):
    key = make_key()
    set_row(app, key["id"], secret_digest="0badc0de:" + "0" * 64)
    assert verify(app, key["fullKey"]).id == key["id"]
    assert len(bcrypt_calls) == 1


def test_wrong_secrets_against_a_row_without_a_digest_never_lock_its_holder_out(app, make_key, bcrypt_calls):
    key = make_key()
    forget_digest(app, key)
    for _ in range(30):
        assert code_of(app, wrong_secret_for(key)) == "INVALID_API_KEY"
    assert len(bcrypt_calls) == 30  # each wrong secret costs bcrypt, one at a time per host
    assert verify(app, key["fullKey"]).id == key["id"]  # and the holder gets through at once
    assert verify(app, key["fullKey"]).id == key["id"]
    assert len(bcrypt_calls) == 31  # then the digest is written: bcrypt never again for this key


def test_one_bcrypt_at_a_time_per_key_and_a_busy_turn_answers_503(app, make_key, monkeypatch):
    key = make_key()
    forget_digest(app, key)
    inside, release = threading.Event(), threading.Event()
    real = keys.check_secret

    def slow_check(secret, secret_hash):
        inside.set()
        release.wait(10)
        return real(secret, secret_hash)

    monkeypatch.setattr(keys, "check_secret", slow_check)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(code_of, app, wrong_secret_for(key))
        assert inside.wait(10)
        with pytest.raises(VerificationError) as raised, app.app_context():
            verify_api_key(key["fullKey"])  # the holder, while an attacker's bcrypt runs
        release.set()
        assert first.result(10) == "INVALID_API_KEY"
    assert (raised.value.code, raised.value.status, raised.value.retry_after) == ("VERIFICATION_BUSY", 503, 1)
    assert verify(app, key["fullKey"]).id == key["id"]  # the slot is free again: no lasting effect


def test_a_digest_under_a_previous_verifier_key_is_checked_with_it_then_rewritten(
    app, config, tmp_path, make_key, bcrypt_calls
):
    key = make_key()
    extension.prepare(app)
    rotated_config = {
        **config,
        "APIKEYS_VERIFIER_KEY": "rotated-" + "r" * 40,
        "APIKEYS_VERIFIER_KEY_PREVIOUS": config["APIKEYS_VERIFIER_KEY"],
    }
    rotated = create_app(rotated_config, instance_path=str(tmp_path / "rotated"))
    try:
        assert rotated.test_cli_runner().invoke(args=["verifier-key", "adopt", "--yes"]).exit_code == 0
        extension.prepare(rotated)
        for _ in range(20):  # wrong secrets: compared under the previous key, no bcrypt, no count
            assert code_of(rotated, wrong_secret_for(key)) == "INVALID_API_KEY"
        assert verify(rotated, key["fullKey"]).id == key["id"]
        new_digest = rotated.extensions["apikeys"].verifier.digest(key["secretKey"])
        assert get_row(rotated, key["id"]).secret_digest == new_digest
        assert verify(rotated, key["fullKey"]).id == key["id"]
    finally:
        extension.get_engine(rotated).dispose()
    assert bcrypt_calls == []


def test_a_grace_secrets_digest_under_a_previous_verifier_key_is_rewritten_in_its_own_column(
    app, config, tmp_path, client, auth, make_key, bcrypt_calls, monkeypatch
):
    """After a grace rotation, then a verifier-key adoption, the old secret's digest moves to the new key in place."""
    key = make_key()
    extension.prepare(app)
    rotation = client.post(
        f"/dashboard/api-keys/{key['id']}/regenerate", json={"gracePeriodSeconds": 3600}, headers=auth()
    )
    assert rotation.status_code == 200, rotation.json
    new = rotation.json["data"]
    rotated_config = {
        **config,
        "APIKEYS_VERIFIER_KEY": "rotated-" + "r" * 40,
        "APIKEYS_VERIFIER_KEY_PREVIOUS": config["APIKEYS_VERIFIER_KEY"],
    }
    rotated = create_app(rotated_config, instance_path=str(tmp_path / "rotated"))
    try:
        assert rotated.test_cli_runner().invoke(args=["verifier-key", "adopt", "--yes"]).exit_code == 0
        extension.prepare(rotated)
        before = get_row(rotated, key["id"])
        verifier = rotated.extensions["apikeys"].verifier
        assert before.previous_secret_digest != verifier.digest(key["secretKey"])  # still under the old key
        assert verify(rotated, key["fullKey"]).id == key["id"]  # the old secret, within its grace period
        after = get_row(rotated, key["id"])
        assert after.previous_secret_digest == verifier.digest(key["secretKey"])
        assert after.secret_digest == before.secret_digest  # the current secret's column is not touched
        assert (after.secret_hash, after.previous_secret_hash) == (before.secret_hash, before.previous_secret_hash)
        assert verify(rotated, key["fullKey"]).id == key["id"]  # and it keeps verifying, now under the new key
        assert verify(rotated, new["fullKey"]).id == key["id"]
        # Until the grace period ends, to the microsecond; the new secret goes on.
        ends = after.previous_expires_at
        monkeypatch.setattr(tables, "utcnow", lambda: ends - timedelta(microseconds=1))
        assert verify(rotated, key["fullKey"]).id == key["id"]
        monkeypatch.setattr(tables, "utcnow", lambda: ends)
        assert code_of(rotated, key["fullKey"]) == "INVALID_API_KEY"
        assert verify(rotated, new["fullKey"]).id == key["id"]
    finally:
        extension.get_engine(rotated).dispose()
    assert bcrypt_calls == []  # both secrets were checked by their digests: no bcrypt at all


def test_a_grace_secret_under_an_unknown_verifier_key_takes_bcrypt_once_then_has_its_own_digest(
    app, client, auth, make_key, bcrypt_calls
):
    """The bcrypt fallback for the old secret writes its digest in the previous column, never the current one."""
    key = make_key()
    rotation = client.post(
        f"/dashboard/api-keys/{key['id']}/regenerate", json={"gracePeriodSeconds": 3600}, headers=auth()
    )
    new = rotation.json["data"]
    set_row(app, key["id"], previous_secret_digest="0badc0de:" + "0" * 64)  # a key no host knows any more
    before = get_row(app, key["id"])
    for _ in range(3):
        assert verify(app, key["fullKey"]).id == key["id"]
    assert len(bcrypt_calls) == 1
    after = get_row(app, key["id"])
    assert after.previous_secret_digest == app.extensions["apikeys"].verifier.digest(key["secretKey"])
    assert after.secret_digest == before.secret_digest
    assert verify(app, new["fullKey"]).id == key["id"]
    assert len(bcrypt_calls) == 1


def test_regenerate_writes_a_digest(app, client, auth, make_key, bcrypt_calls):
    key = make_key()
    forget_digest(app, key)
    new = client.post(f"/dashboard/api-keys/{key['id']}/regenerate", headers=auth()).json["data"]
    assert verify(app, new["fullKey"]).id == key["id"]
    assert bcrypt_calls == []


# /verify over HTTP


def test_verify_endpoint_answers_identity_and_headers(client, make_key):
    key = make_key(tenant="acme", name="Backend", environment="live")
    response = client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
    assert response.status_code == 200
    assert response.json == {
        "statusCode": 200,
        "data": {
            "valid": True,
            "id": key["id"],
            "tenantId": "acme",
            "environment": "live",
            "name": "Backend",
            "publicKey": key["publicKey"],
            "scopes": [],
            "meta": {},
            "expiresAt": None,
        },
    }
    assert response.headers["X-Api-Key-Id"] == key["id"]
    assert response.headers["X-Tenant-Id"] == "acme"
    assert response.headers["X-Api-Key-Environment"] == "live"
    assert response.headers["X-Api-Key-Scopes"] == ""
    assert key["secretKey"] not in response.get_data(as_text=True)


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options", "head"])
@pytest.mark.parametrize("path", ["/verify", "/verify/orders/42", "/verify/a/b/c.json"])
def test_verify_endpoint_takes_any_method_and_sub_path(client, make_key, method, path):
    key = make_key()
    good = getattr(client, method)(path, headers={"X-Api-Key": key["fullKey"]})
    bad = getattr(client, method)(path)
    assert good.status_code == 200
    assert good.headers["X-Api-Key-Id"] == key["id"]
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"] == 'ApiKey realm="apikeys"'


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "pk_live_x.sk_live_y",
        "Bearer pk_live_abc",
        "x" * 8192,
        "pk_live_" + "A" * 8000,
        "\xff\xfe",
        "é" * 100,
        " " * 10,
        "..........",
    ],
)
def test_verify_endpoint_refuses_malformed_keys_with_401(client, header):
    response = client.get("/verify", headers={"X-Api-Key": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'ApiKey realm="apikeys"'
    assert response.json["statusCode"] == 401
    assert response.json["code"] in {"MISSING_API_KEY", "INVALID_API_KEY"}


def test_verify_endpoint_disabled_is_403_without_www_authenticate(client, auth, make_key):
    key = make_key()
    client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    response = client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
    assert response.status_code == 403
    assert response.json["code"] == "API_KEY_DISABLED"
    assert "WWW-Authenticate" not in response.headers
    assert "X-Tenant-Id" not in response.headers


def test_verify_endpoint_environment_parameter(client, make_key):
    key = make_key(environment="test")
    assert client.get("/verify?environment=test", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
    wrong = client.get("/verify?environment=live", headers={"X-Api-Key": key["fullKey"]})
    assert wrong.status_code == 403
    assert wrong.json["code"] == "WRONG_ENVIRONMENT"
    bad = client.get("/verify?environment=prod", headers={"X-Api-Key": key["fullKey"]})
    assert bad.status_code == 400
    assert "environment" in bad.json["errors"]


def test_a_key_is_expired_from_the_exact_instant_of_its_expiry(app, client, make_key, monkeypatch):
    """With the clock the verifier reads held still: valid one microsecond before expiresAt, expired at it."""
    key = make_key()
    set_row(app, key["id"], expires_at=tables.utcnow().replace(microsecond=654321) + timedelta(days=1))
    expires_at = get_row(app, key["id"]).expires_at  # as the database gives it back
    monkeypatch.setattr(tables, "utcnow", lambda: expires_at - timedelta(microseconds=1))
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
    monkeypatch.setattr(tables, "utcnow", lambda: expires_at)
    response = client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
    assert (response.status_code, response.json.get("code")) == (403, "API_KEY_EXPIRED")
    assert code_of(app, key["fullKey"]) == "API_KEY_EXPIRED"


# The decorator in another Flask app


@pytest.fixture
def protected(database_url, config):
    """A separate Flask service that shares the apikeys database (and verifier key) and protects its views."""
    service = Flask("protected")
    service.config["APIKEYS_DATABASE_URL"] = database_url
    service.config["APIKEYS_VERIFIER_KEY"] = config["APIKEYS_VERIFIER_KEY"]
    ApiKeys(service)

    @service.get("/orders")
    @require_api_key()
    def orders():
        return {"tenant": g.api_key.tenant_id, "key": g.api_key.id}

    @service.get("/live-only")
    @require_api_key(environment="live")
    def live_only():
        return {"ok": True}

    @service.get("/bare")
    @require_api_key
    def bare():
        return {"env": g.api_key.environment}

    yield service
    extension.get_engine(service).dispose()


def test_decorator_lets_a_valid_key_through(protected, make_key):
    key = make_key(tenant="acme", environment="test")
    client = protected.test_client()
    response = client.get("/orders", headers={"X-Api-Key": key["fullKey"]})
    assert response.status_code == 200
    assert response.json == {"tenant": "acme", "key": key["id"]}
    assert client.get("/bare", headers={"X-Api-Key": key["fullKey"]}).json == {"env": "test"}


def test_decorator_refuses_in_the_envelope(protected, make_key):
    key = make_key(environment="test")
    client = protected.test_client()
    missing = client.get("/orders")
    assert missing.status_code == 401
    assert missing.json == {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": "An API key is required, in the X-Api-Key header or as Authorization: Bearer.",
        "code": "MISSING_API_KEY",
    }
    assert missing.headers["WWW-Authenticate"] == 'ApiKey realm="apikeys"'
    wrong_env = client.get("/live-only", headers={"X-Api-Key": key["fullKey"]})
    assert wrong_env.status_code == 403
    assert wrong_env.json["code"] == "WRONG_ENVIRONMENT"


def test_extension_with_init_app(database_url, config, make_key):
    service = Flask("factory")
    service.config["APIKEYS_DATABASE_URL"] = database_url
    service.config["APIKEYS_VERIFIER_KEY"] = config["APIKEYS_VERIFIER_KEY"]
    apikeys_extension = ApiKeys()
    apikeys_extension.init_app(service)
    try:
        key = make_key()
        with service.app_context():
            assert verify_api_key(key["fullKey"]).id == key["id"]
        assert service.extensions["apikeys"].engine is extension.get_engine(service)  # the state lives on the app
    finally:
        extension.get_engine(service).dispose()


@pytest.mark.parametrize("path", ["/verify/", "/verify//x", "/verify/a//b/", "/verify/%2F"])
def test_verify_endpoint_takes_any_path_a_proxy_forwards(client, make_key, path):
    key = make_key()
    assert client.get(path, headers={"X-Api-Key": key["fullKey"]}).status_code == 200
    assert client.get(path).status_code == 401


def test_query_below_verify_is_the_clients_and_is_ignored(client, make_key):
    key = make_key(environment="test")
    for query in ("environment=live", "environment=staging", "page=0"):
        response = client.get(f"/verify/orders?{query}", headers={"X-Api-Key": key["fullKey"]})
        assert response.status_code == 200


def test_verify_answer_matches_its_documented_schema(client, make_key):
    from apikeys.schemas import VerifiedKeyEnvelopeSchema

    key = make_key()
    response = client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
    assert VerifiedKeyEnvelopeSchema().validate(response.json) == {}
    assert list(response.json["data"]) == [
        *["valid", "id", "tenantId", "environment", "name", "publicKey"],
        *["scopes", "meta", "expiresAt"],
    ]


def test_last_used_at_is_stored_in_utc_whatever_the_session_time_zone(postgres_url):
    """On PostgreSQL, a timestamp bound without its column's type would be shifted to the session's zone."""
    from apikeys.storage import queries

    url = sa.make_url(postgres_url).update_query_dict({"options": "-c timezone=Asia/Tokyo"})
    engine = sa.create_engine(url)
    try:
        now = tables.utcnow().replace(microsecond=0)
        with engine.begin() as conn:
            conn.execute(
                tables.api_keys.insert().values(
                    id="key_timezone000000"[:20],
                    tenant_id="tz",
                    name="tz",
                    environment="live",
                    public_key="pk_live_timezone00000000"[:24],
                    secret_hash="x",
                    active=True,
                    created_at=now,
                )
            )
            queries.record_use(conn, "key_timezone000000"[:20], now, timedelta(seconds=60))
            stored = conn.execute(
                sa.select(tables.api_keys.c.last_used_at).where(tables.api_keys.c.tenant_id == "tz")
            ).scalar_one()
            conn.execute(tables.api_keys.delete().where(tables.api_keys.c.tenant_id == "tz"))
        assert stored == now
    finally:
        engine.dispose()


def test_verification_survives_postgresql_dropping_its_connections(postgres_url, tmp_path, jwt_secret):
    """The lookup runs on a raw pooled connection: the pool's pre-ping must still replace dead ones."""
    app = create_app(
        {
            "APIKEYS_DATABASE_URL": postgres_url,
            "APIKEYS_JWT_SECRET": jwt_secret,
            "APIKEYS_BCRYPT_ROUNDS": 4,
            "APIKEYS_VERIFIER_KEY": VERIFIER_KEY,
        },
        instance_path=str(tmp_path / "instance"),
    )
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        headers = {"Authorization": "Bearer " + tokens.issue_token(app.config, "pg-restart", 60)}
        client = app.test_client()
        key = client.post("/dashboard/api-keys", json={"name": "k", "environment": "live"}, headers=headers).json
        assert verify(app, key["data"]["fullKey"]).tenant_id == "pg-restart"
        with admin.connect() as conn:  # what a server restart or failover does to the pool's connections
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert verify(app, key["data"]["fullKey"]).tenant_id == "pg-restart"
        assert client.get("/dashboard/api-keys", headers=headers).status_code == 200
    finally:
        admin.dispose()
        extension.get_engine(app).dispose()
