"""Key policy: expiry, scopes, metadata, update, and rotation with a grace period."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import sqlalchemy as sa

from apikeys import VerificationError
from apikeys import keys
from apikeys import scopes
from apikeys import verify_api_key
from apikeys.storage import tables
from apikeys.verification import extension


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def future(**delta) -> str:
    return iso(datetime.now(UTC) + timedelta(**delta))


def set_row(app, key_id, **values):
    with extension.get_engine(app).begin() as conn:
        conn.execute(sa.update(tables.api_keys).where(tables.api_keys.c.id == key_id).values(**values))


def count_rows(app) -> int:
    with extension.get_engine(app).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(tables.api_keys)).scalar_one()


@pytest.fixture
def create(client, auth):
    """POST a create body; return the response."""

    def post(body: dict, tenant: str = "acme"):
        return client.post("/dashboard/api-keys", json=body, headers=auth(tenant))

    return post


def verify_status(client, full_key: str, *required: str, header: str | None = None) -> tuple[int, dict]:
    query = "&".join(f"scope={scope}" for scope in required)
    headers = {"X-Api-Key": full_key}
    if header is not None:
        headers["X-Api-Key-Required-Scopes"] = header
    response = client.get("/verify" + (f"?{query}" if query else ""), headers=headers)
    return response.status_code, response.json


# Create


def test_create_with_expiry_scopes_and_meta(client, create, auth):
    expires = future(days=30)
    response = create(
        {
            "name": "Scoped",
            "environment": "live",
            "expiresAt": expires,
            "scopes": ["orders:read", "orders:*", "orders:read"],
            "meta": {"team": "billing", "limits": {"rpm": 100}, "tags": ["a", "b"]},
        }
    )
    assert response.status_code == 201, response.json
    data = response.json["data"]
    assert data["expiresAt"] == expires
    assert data["scopes"] == ["orders:read", "orders:*"]  # a repeated scope is kept once
    assert data["meta"] == {"team": "billing", "limits": {"rpm": 100}, "tags": ["a", "b"]}
    got = client.get(f"/dashboard/api-keys/{data['id']}", headers=auth()).json["data"]
    assert (got["expiresAt"], got["scopes"], got["meta"]) == (expires, data["scopes"], data["meta"])
    listed = client.get("/dashboard/api-keys", headers=auth()).json["data"]["items"][0]
    assert (listed["expiresAt"], listed["scopes"], listed["meta"]) == (expires, data["scopes"], data["meta"])


def test_create_without_policy_fields_behaves_as_before(create):
    data = create({"name": "Plain", "environment": "test"}).json["data"]
    assert (data["expiresAt"], data["scopes"], data["meta"]) == (None, [], {})


def test_expires_at_accepts_an_offset_and_answers_in_utc(create):
    moment = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    with_offset = moment.astimezone(tz=UTC).replace(tzinfo=None).isoformat() + "+00:00"
    data = create({"name": "k", "environment": "live", "expiresAt": with_offset}).json["data"]
    assert data["expiresAt"] == iso(moment)


BAD_POLICIES = [
    ({"expiresAt": "2020-01-01T00:00:00.000Z"}, "expiresAt"),
    ({"expiresAt": "2099-01-01T00:00:00"}, "expiresAt"),  # no zone
    ({"expiresAt": "tomorrow"}, "expiresAt"),
    ({"expiresAt": 1893456000}, "expiresAt"),
    ({"expiresAt": "9" * 5000}, "expiresAt"),
    ({"scopes": "orders:read"}, "scopes"),
    ({"scopes": [""]}, "scopes"),
    ({"scopes": ["has space"]}, "scopes"),
    ({"scopes": ["x" * 65]}, "scopes"),
    ({"scopes": ["ünïcode"]}, "scopes"),
    ({"scopes": ["new\nline"]}, "scopes"),
    ({"scopes": [f"s{i}" for i in range(51)]}, "scopes"),
    ({"scopes": [1]}, "scopes"),
    ({"meta": []}, "meta"),
    ({"meta": "x"}, "meta"),
    ({"meta": {"big": "x" * 4100}}, "meta"),
]


@pytest.mark.parametrize(("policy", "field"), BAD_POLICIES)
def test_invalid_policy_is_a_400_that_writes_nothing(app, create, policy, field):
    response = create({"name": "k", "environment": "live", **policy})
    assert response.status_code == 400, response.json
    assert response.json["statusCode"] == 400
    assert list(response.json["errors"]) == [field]
    assert count_rows(app) == 0


def test_deeply_nested_meta_is_a_400_that_writes_nothing(app, client, auth):
    body = '{"name": "k", "environment": "live", "meta": {"deep": ' + "[" * 5000 + "]" * 5000 + "}}"
    response = client.post("/dashboard/api-keys", data=body, content_type="application/json", headers=auth())
    assert response.status_code == 400
    assert response.json["errors"] == {"body": ["The body is nested too deeply."]}
    assert count_rows(app) == 0


def test_meta_of_exactly_4_kib_is_accepted(create):
    meta = {"k": ""}
    meta["k"] = "x" * (4096 - len('{"k":""}'))
    assert create({"name": "k", "environment": "live", "meta": meta}).status_code == 201


# Update


def test_update_changes_only_what_it_is_given(client, auth, make_key):
    key = make_key()
    response = client.patch(
        f"/dashboard/api-keys/{key['id']}", json={"scopes": ["a:*"], "meta": {"x": 1}}, headers=auth()
    )
    assert response.status_code == 200
    assert list(response.json) == ["statusCode", "data"]
    data = response.json["data"]
    assert data == client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).json["data"]
    assert (data["name"], data["scopes"], data["meta"], data["expiresAt"]) == ("test key", ["a:*"], {"x": 1}, None)
    expires = future(hours=1)
    renamed = client.patch(
        f"/dashboard/api-keys/{key['id']}", json={"name": "  New name ", "expiresAt": expires}, headers=auth()
    ).json["data"]
    assert (renamed["name"], renamed["expiresAt"], renamed["scopes"]) == ("New name", expires, ["a:*"])
    cleared = client.patch(f"/dashboard/api-keys/{key['id']}", json={"expiresAt": None}, headers=auth()).json["data"]
    assert cleared["expiresAt"] is None


@pytest.mark.parametrize(
    "body",
    [{}, {"unknown": 1}, {"name": "ok", "secretHash": "x"}, {"name": ""}, {"environment": "test"}, {"scopes": None}],
)
def test_update_refuses_an_empty_body_or_unknown_fields(client, auth, make_key, body):
    key = make_key()
    response = client.patch(f"/dashboard/api-keys/{key['id']}", json=body, headers=auth())
    assert response.status_code == 400, response.json
    after = client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).json["data"]
    assert (after["name"], after["environment"], after["scopes"]) == ("test key", "live", [])


def test_update_of_another_tenants_key_is_a_404(client, auth, make_key):
    key = make_key(tenant="acme")
    response = client.patch(f"/dashboard/api-keys/{key['id']}", json={"name": "mine"}, headers=auth("globex"))
    assert response.status_code == 404
    assert response.json["code"] == "API_KEY_NOT_FOUND"
    assert client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).json["data"]["name"] == "test key"


def test_update_needs_a_token_before_reading_the_body(client, make_key):
    key = make_key()
    response = client.patch(f"/dashboard/api-keys/{key['id']}", data="[" * 5000, content_type="application/json")
    assert response.status_code == 401


# Expiry at verification


def test_an_expired_key_is_a_403(app, client, make_key):
    key = make_key()
    set_row(app, key["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    status, body = verify_status(client, key["fullKey"])
    assert (status, body["code"]) == (403, "API_KEY_EXPIRED")
    assert body["message"] == "The API key has expired."


def test_an_expired_key_with_a_wrong_secret_is_invalid_not_expired(app, client, make_key):
    key = make_key()
    set_row(app, key["id"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    wrong = f"{key['publicKey']}.{keys.new_secret('live')}"
    assert verify_status(client, wrong)[1]["code"] == "INVALID_API_KEY"


def test_a_key_before_its_expiry_verifies_with_its_policy(client, create):
    expires = future(minutes=5)
    data = create({"name": "k", "environment": "live", "expiresAt": expires, "scopes": ["a"], "meta": {"m": 1}}).json[
        "data"
    ]
    response = client.get("/verify", headers={"X-Api-Key": data["fullKey"]})
    assert response.status_code == 200
    assert response.json["data"]["expiresAt"] == expires
    assert response.json["data"]["meta"] == {"m": 1}
    assert response.headers["X-Api-Key-Scopes"] == "a"


# Scopes at verification


@pytest.mark.parametrize(
    ("granted", "required", "ok"),
    [
        (["orders:read"], ["orders:read"], True),
        (["orders:read"], ["orders:write"], False),
        (["orders:*"], ["orders:write", "orders:read"], True),
        (["orders:*"], ["ordersx:read"], False),
        (["orders:*"], ["orders"], False),
        (["*"], ["anything:at:all"], True),
        ([], ["a"], False),
        (["a", "b"], ["a", "b"], True),
        (["a"], ["a", "b"], False),
        (["a*"], ["ab"], False),  # only a whole "*" or a trailing ":*" is a wildcard
    ],
)
def test_scope_grants(granted, required, ok):
    assert (scopes.missing(granted, required) == []) is ok


def test_required_scopes_from_the_query_and_the_header(client, create):
    data = create({"name": "k", "environment": "live", "scopes": ["orders:*", "users:read"]}).json["data"]
    full_key = data["fullKey"]
    assert verify_status(client, full_key, "orders:write")[0] == 200
    assert verify_status(client, full_key, "orders:write", "users:read")[0] == 200
    status, body = verify_status(client, full_key, "users:write")
    assert (status, body["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert "users:write" in body["message"]
    assert verify_status(client, full_key, header="orders:read users:read")[0] == 200
    assert verify_status(client, full_key, header="orders:read users:write")[0] == 403
    # Below /verify the query is the client's: only the header counts there.
    sub = client.get("/verify/api/users?scope=admin", headers={"X-Api-Key": full_key})
    assert sub.status_code == 200
    sub = client.get("/verify/api/users", headers={"X-Api-Key": full_key, "X-Api-Key-Required-Scopes": "admin"})
    assert (sub.status_code, sub.json["code"]) == (403, "INSUFFICIENT_SCOPE")


def test_scopes_are_checked_after_the_secret(client, create):
    data = create({"name": "k", "environment": "live", "scopes": []}).json["data"]
    wrong = f"{data['publicKey']}.{keys.new_secret('live')}"
    assert verify_status(client, wrong, "x")[1]["code"] == "INVALID_API_KEY"


def test_python_helper_and_decorator_take_scopes(app, create):
    data = create({"name": "k", "environment": "live", "scopes": ["orders:*"], "meta": {"plan": "pro"}}).json["data"]
    with app.app_context():
        verified = verify_api_key(data["fullKey"], scopes=["orders:read"])
        assert (verified.scopes, verified.meta, verified.expires_at) == (("orders:*",), {"plan": "pro"}, None)
        with pytest.raises(VerificationError) as raised:
            verify_api_key(data["fullKey"], "live", scopes=["users:read"])
    assert (raised.value.code, raised.value.status) == ("INSUFFICIENT_SCOPE", 403)


# Rotation with a grace period


def regenerate(client, auth, key_id, body=None):
    kwargs = {"json": body} if body is not None else {}
    return client.post(f"/dashboard/api-keys/{key_id}/regenerate", headers=auth(), **kwargs)


def test_regenerate_without_a_body_ends_the_old_secret_at_once(client, auth, make_key):
    key = make_key()
    response = regenerate(client, auth, key["id"])
    assert list(response.json["data"]) == ["id", "publicKey", "secretKey", "fullKey"]
    assert verify_status(client, key["fullKey"])[0] == 401
    assert verify_status(client, response.json["data"]["fullKey"])[0] == 200


def test_grace_period_keeps_the_old_secret_until_it_ends(app, client, auth, make_key):
    key = make_key()
    before = datetime.now(UTC)
    response = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 3600})
    assert response.status_code == 200
    data = response.json["data"]
    ends = datetime.fromisoformat(data["previousSecretExpiresAt"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=3599) <= ends <= datetime.now(UTC) + timedelta(seconds=3600)
    assert verify_status(client, key["fullKey"])[0] == 200  # the old secret, within the grace period
    assert verify_status(client, data["fullKey"])[0] == 200
    set_row(app, key["id"], previous_expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert verify_status(client, key["fullKey"])[0] == 401  # the grace period is over
    assert verify_status(client, data["fullKey"])[0] == 200


def test_a_second_grace_rotation_replaces_the_first(client, auth, make_key):
    key = make_key()
    second = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 600}).json["data"]
    third = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 600}).json["data"]
    assert verify_status(client, key["fullKey"])[0] == 401  # at most one previous secret
    assert verify_status(client, second["fullKey"])[0] == 200
    assert verify_status(client, third["fullKey"])[0] == 200


def test_a_plain_rotation_after_a_grace_rotation_ends_both_old_secrets(client, auth, make_key):
    key = make_key()
    second = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 600}).json["data"]
    third = regenerate(client, auth, key["id"]).json["data"]
    assert [verify_status(client, k)[0] for k in (key["fullKey"], second["fullKey"], third["fullKey"])] == [
        401,
        401,
        200,
    ]


def test_disabling_ends_both_secrets_and_enabling_brings_back_only_the_new(client, auth, make_key):
    key = make_key()
    new = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 600}).json["data"]
    client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    assert verify_status(client, key["fullKey"])[1]["code"] in ("API_KEY_DISABLED", "INVALID_API_KEY")
    assert verify_status(client, new["fullKey"])[1]["code"] == "API_KEY_DISABLED"
    client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    assert verify_status(client, key["fullKey"])[0] == 401
    assert verify_status(client, new["fullKey"])[0] == 200


def test_deleting_ends_both_secrets(client, auth, make_key):
    key = make_key()
    new = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 600}).json["data"]
    client.delete(f"/dashboard/api-keys/{key['id']}", headers=auth())
    assert verify_status(client, key["fullKey"])[0] == 401
    assert verify_status(client, new["fullKey"])[0] == 401


def test_grace_period_zero_answers_its_end_and_keeps_nothing(client, auth, make_key):
    key = make_key()
    data = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 0}).json["data"]
    assert "previousSecretExpiresAt" in data
    assert verify_status(client, key["fullKey"])[0] == 401


@pytest.mark.parametrize("body", [{"gracePeriodSeconds": -1}, {"gracePeriodSeconds": 604801}, {"grace": 5}, []])
def test_bad_grace_periods_are_400_and_change_nothing(client, auth, make_key, body):
    key = make_key()
    assert regenerate(client, auth, key["id"], body).status_code == 400
    assert verify_status(client, key["fullKey"])[0] == 200


def test_grace_rotation_of_a_row_without_a_digest_checks_the_old_secret_with_bcrypt(app, client, auth, make_key):
    key = make_key()
    set_row(app, key["id"], secret_digest=None)  # written before digests existed
    new = regenerate(client, auth, key["id"], {"gracePeriodSeconds": 600}).json["data"]
    assert verify_status(client, key["fullKey"])[0] == 200
    assert verify_status(client, new["fullKey"])[0] == 200
    with extension.get_engine(app).connect() as conn:
        row = conn.execute(sa.select(tables.api_keys).where(tables.api_keys.c.id == key["id"])).one()
    assert row.previous_secret_digest == app.extensions["apikeys"].verifier.digest(key["secretKey"])
