"""A key in `Authorization: Bearer`, as Stripe and OpenAI clients send it: on /verify and in require_api_key."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask import g

from apikeys import ApiKeys
from apikeys import keys
from apikeys import require_api_key
from apikeys.verification import extension

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


def test_verify_accepts_a_full_key_in_authorization_bearer(client, make_key):
    """Bearer alone (any letter case of the scheme, blanks around) verifies as X-Api-Key does."""
    key = make_key()
    for value in (f"Bearer {key['fullKey']}", f"bearer  {key['fullKey']} ", f"BEARER {key['fullKey']}"):
        response = client.get("/verify", headers={"Authorization": value})
        assert response.status_code == 200, value
        assert response.headers["X-Api-Key-Id"] == key["id"]
        assert response.json["data"]["tenantId"] == "acme"
    # The same key in both headers is one key.
    response = client.get("/verify", headers={"X-Api-Key": key["fullKey"], "Authorization": f"Bearer {key['fullKey']}"})
    assert (response.status_code, response.headers["X-Api-Key-Id"]) == (200, key["id"])


def ambiguous_count(metrics_text: str) -> float:
    """The count of AMBIGUOUS_API_KEY answers in a /metrics text (0 before the label exists)."""
    found = re.search(r'^apikeys_verifications_total\{result="ambiguous"\} (\S+)$', metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


def test_verify_refuses_two_different_keys_as_ambiguous(client, make_key):
    """Whichever is valid: neither header wins, the request is refused with its own code and metrics label."""
    first, second = make_key(), make_key()
    before = client.get("/metrics").get_data(as_text=True)
    for x_api_key, bearer in ((first["fullKey"], second["fullKey"]), (first["fullKey"], "not-a-key")):
        response = client.get("/verify", headers={"X-Api-Key": x_api_key, "Authorization": f"Bearer {bearer}"})
        assert response.status_code == 401
        assert response.json["code"] == "AMBIGUOUS_API_KEY"
        assert response.headers["WWW-Authenticate"] == 'ApiKey realm="apikeys"'
        assert response.headers["X-Api-Key-Error"] == "AMBIGUOUS_API_KEY"
    after = client.get("/metrics").get_data(as_text=True)
    assert ambiguous_count(after) - ambiguous_count(before) == 2


def test_verify_answers_a_jwt_in_bearer_naming_what_it_expected(client, auth, make_key):
    """The dashboard's own token sent to /verify by mistake: a 401 that says what /verify reads.

    Beside an X-Api-Key it is the application's own token, not a second key: the key decides.
    """
    for headers in (auth(), {"Authorization": f"Bearer {JWT}"}):
        response = client.get("/verify", headers=headers)
        assert response.status_code == 401
        assert response.json["code"] == "NOT_AN_API_KEY"
        assert "X-Api-Key or Authorization: Bearer pk_" in response.json["message"]
    key = make_key()
    response = client.get("/verify", headers={"X-Api-Key": key["fullKey"], "Authorization": f"Bearer {JWT}"})
    assert response.status_code == 200


@pytest.mark.parametrize("credential", ["not-a-key", "pk_live_x.sk_live_y", "a.b"])
def test_verify_refuses_a_bearer_that_is_not_a_key_as_invalid(client, make_key, credential):
    response = client.get("/verify", headers={"Authorization": f"Bearer {credential}"})
    assert (response.status_code, response.json["code"]) == (401, "INVALID_API_KEY")


def test_verify_refuses_a_wrong_secret_in_bearer(client, make_key):
    key = make_key()
    wrong = f"{key['publicKey']}.{keys.new_secret('live')}"
    response = client.get("/verify", headers={"Authorization": f"Bearer {wrong}"})
    assert (response.status_code, response.json["code"]) == (401, "INVALID_API_KEY")


@pytest.mark.parametrize("value", ["Basic YWxpY2U6c2VjcmV0", "Api-Key {key}", "{key}", "Bearer", "Bearer "])
def test_verify_reads_only_the_bearer_scheme(client, make_key, value):
    """Basic, a bare value or an empty Bearer is not an API key: answered as if absent, where Bearer is read."""
    key = make_key()
    assert client.get("/verify", headers={"Authorization": f"Bearer {key['fullKey']}"}).status_code == 200
    presented = value.format(key=key["fullKey"])
    response = client.get("/verify", headers={"Authorization": presented})
    assert (response.status_code, response.json["code"]) == (401, "MISSING_API_KEY")
    response = client.get("/verify", headers={"Authorization": presented, "X-Api-Key": key["fullKey"]})
    assert response.status_code == 200


def test_verify_refusals_carry_their_code_in_a_header(client, make_key):
    """X-Api-Key-Error and -Message: what nginx's auth_request can read of a refusal (it drops the body)."""
    key = make_key()
    assert "X-Api-Key-Error" not in client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).headers
    for path, headers, code in (
        ("/verify", {}, "MISSING_API_KEY"),
        ("/verify", {"X-Api-Key": "nope"}, "INVALID_API_KEY"),
        ("/verify?scope=admin", {"X-Api-Key": key["fullKey"]}, "INSUFFICIENT_SCOPE"),
        (
            "/verify/orders",
            {"Authorization": f"Bearer {key['fullKey']}", "X-Api-Key-Required-Scopes": "x"},
            "INSUFFICIENT_SCOPE",
        ),
    ):
        response = client.get(path, headers=headers)
        assert response.json["code"] == code
        assert response.headers.get_all("X-Api-Key-Error") == [code]
        # The message as the body's JSON writes it, between its quotes: a proxy can put it back as it is.
        message = response.get_data(as_text=True).split('"message":"', 1)[1].split('","code"', 1)[0]
        assert response.headers.get_all("X-Api-Key-Error-Message") == [message]


@pytest.fixture
def protected(database_url, config):
    """A separate Flask service on the apikeys database, with a view behind require_api_key."""
    service = Flask("protected")
    service.config["APIKEYS_DATABASE_URL"] = database_url
    service.config["APIKEYS_VERIFIER_KEY"] = config["APIKEYS_VERIFIER_KEY"]
    ApiKeys(service)

    @service.get("/orders")
    @require_api_key
    def orders():
        return {"key": g.api_key.id}

    yield service
    extension.get_engine(service).dispose()


def test_decorator_reads_the_key_from_authorization_bearer(protected, make_key):
    key, other = make_key(), make_key()
    client = protected.test_client()
    response = client.get("/orders", headers={"Authorization": f"Bearer {key['fullKey']}"})
    assert (response.status_code, response.json) == (200, {"key": key["id"]})
    response = client.get("/orders", headers={"X-Api-Key": key["fullKey"], "Authorization": f"Bearer {key['fullKey']}"})
    assert (response.status_code, response.json) == (200, {"key": key["id"]})
    response = client.get(
        "/orders", headers={"X-Api-Key": key["fullKey"], "Authorization": f"Bearer {other['fullKey']}"}
    )
    assert (response.status_code, response.json["code"]) == (401, "AMBIGUOUS_API_KEY")
    response = client.get("/orders", headers={"Authorization": f"Bearer {JWT}"})
    assert (response.status_code, response.json["code"]) == (401, "NOT_AN_API_KEY")
    response = client.get("/orders", headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert (response.status_code, response.json["code"]) == (401, "MISSING_API_KEY")
