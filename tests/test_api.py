"""The dashboard API: every route's happy path, paging, tenant isolation and bad input."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from apikeys.storage import tables
from apikeys.verification import extension

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


POLICY = ["expiresAt", "scopes", "meta", "rateLimit", "quota"]  # the key policy's fields, after every reference field


def rows(app):
    with extension.get_engine(app).connect() as conn:
        return conn.execute(sa.select(tables.api_keys)).all()


def test_create_answers_the_documented_shape(client, auth):
    response = client.post(
        "/dashboard/api-keys", json={"name": "Production Backend", "environment": "live"}, headers=auth()
    )
    assert response.status_code == 201
    body = response.json
    assert list(body) == ["statusCode", "data"]
    assert body["statusCode"] == 201
    data = body["data"]
    # The reference's fields in its order, then the key policy's additive ones.
    assert (
        list(data) == ["id", "name", "environment", "publicKey", "secretKey", "fullKey", "createdAt", "active"] + POLICY
    )
    assert data["name"] == "Production Backend"
    assert data["environment"] == "live"
    assert data["active"] is True
    assert re.fullmatch(r"key_[0-9A-Za-z]{16}", data["id"])
    assert re.fullmatch(r"pk_live_[0-9A-Za-z]{16}", data["publicKey"])
    assert re.fullmatch(r"sk_live_[0-9A-Za-z]{38}", data["secretKey"])
    assert data["fullKey"] == data["publicKey"] + "." + data["secretKey"]
    assert TIMESTAMP.fullmatch(data["createdAt"])


def test_create_stores_only_a_bcrypt_hash_of_the_secret(app, make_key):
    key = make_key()
    (row,) = rows(app)
    assert row.public_key == key["publicKey"]
    assert row.secret_hash.startswith("$2b$04$")
    for value in row:
        assert key["secretKey"] not in str(value)


def test_create_trims_the_name(client, auth):
    response = client.post("/dashboard/api-keys", json={"name": "  CI  ", "environment": "test"}, headers=auth())
    assert response.status_code == 201
    assert response.json["data"]["name"] == "CI"
    assert response.json["data"]["publicKey"].startswith("pk_test_")


def test_list_answers_the_documented_shape(client, auth, make_key):
    key = make_key()
    response = client.get("/dashboard/api-keys?page=1&limit=20", headers=auth())
    assert response.status_code == 200
    assert list(response.json) == ["statusCode", "data"]
    data = response.json["data"]
    assert list(data) == ["items", "total", "page", "limit"]
    assert (data["total"], data["page"], data["limit"]) == (1, 1, 20)
    (item,) = data["items"]
    assert list(item) == ["id", "name", "environment", "publicKey", "active", "createdAt", "lastUsedAt"] + POLICY
    assert item["id"] == key["id"]
    assert item["lastUsedAt"] is None
    assert "secretKey" not in response.get_data(as_text=True)
    assert key["secretKey"] not in response.get_data(as_text=True)


def test_list_pages_newest_first(client, auth, make_key):
    created = [make_key(name=f"key {i}")["id"] for i in range(5)]
    seen = []
    for page in (1, 2, 3):
        data = client.get(f"/dashboard/api-keys?page={page}&limit=2", headers=auth()).json["data"]
        assert data["total"] == 5
        seen += [item["id"] for item in data["items"]]
    assert seen == list(reversed(created))
    past_end = client.get("/dashboard/api-keys?page=4&limit=2", headers=auth()).json["data"]
    assert past_end["items"] == [] and past_end["total"] == 5


def test_list_defaults(client, auth):
    data = client.get("/dashboard/api-keys", headers=auth()).json["data"]
    assert (data["page"], data["limit"], data["total"], data["items"]) == (1, 20, 0, [])


def test_list_ties_break_by_id(app, client, auth, make_key):
    ids = [make_key()["id"] for _ in range(4)]
    with extension.get_engine(app).begin() as conn:  # same created_at for all
        conn.execute(sa.update(tables.api_keys).values(created_at=tables.utcnow()))
    first = [i["id"] for i in client.get("/dashboard/api-keys?limit=2", headers=auth()).json["data"]["items"]]
    second = [i["id"] for i in client.get("/dashboard/api-keys?page=2&limit=2", headers=auth()).json["data"]["items"]]
    assert first + second == sorted(ids, reverse=True)


@pytest.mark.parametrize(
    "query, field",
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=1000001", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page=", "page"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("limit=99999999999999999999999", "limit"),
    ],
)
def test_list_refuses_bad_paging(client, auth, query, field):
    response = client.get(f"/dashboard/api-keys?{query}", headers=auth())
    assert response.status_code == 400
    assert response.json["statusCode"] == 400
    assert response.json["error"] == "Bad Request"
    assert field in response.json["errors"]


def test_list_accepts_the_largest_page(client, auth):
    response = client.get("/dashboard/api-keys?page=1000000&limit=100", headers=auth())
    assert response.status_code == 200
    assert response.json["data"]["items"] == []


def test_get_answers_the_documented_shape(client, auth, make_key):
    key = make_key()
    response = client.get(f"/dashboard/api-keys/{key['id']}", headers=auth())
    assert response.status_code == 200
    data = response.json["data"]
    assert list(data) == ["id", "name", "environment", "publicKey", "active", "createdAt", "lastUsedAt"] + POLICY
    assert data["publicKey"] == key["publicKey"]
    assert data["createdAt"] == key["createdAt"]
    assert key["secretKey"] not in response.get_data(as_text=True)


def test_last_used_at_is_set_by_verification(client, auth, make_key):
    key = make_key()
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
    data = client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).json["data"]
    assert TIMESTAMP.fullmatch(data["lastUsedAt"])
    assert data["lastUsedAt"] >= data["createdAt"]


def test_regenerate_keeps_id_and_public_key_and_kills_the_old_secret(client, auth, make_key):
    key = make_key()
    response = client.post(f"/dashboard/api-keys/{key['id']}/regenerate", headers=auth())
    assert response.status_code == 200
    data = response.json["data"]
    assert list(data) == ["id", "publicKey", "secretKey", "fullKey"]
    assert data["id"] == key["id"]
    assert data["publicKey"] == key["publicKey"]
    assert data["secretKey"] != key["secretKey"]
    assert data["fullKey"] == data["publicKey"] + "." + data["secretKey"]
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 401
    assert client.get("/verify", headers={"X-Api-Key": data["fullKey"]}).status_code == 200


def test_regenerate_after_the_old_secret_was_cached(client, auth, make_key):
    key = make_key()
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
    client.post(f"/dashboard/api-keys/{key['id']}/regenerate", headers=auth())
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 401


def test_toggle_disables_then_enables(client, auth, make_key):
    key = make_key()
    first = client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    assert first.status_code == 200
    assert first.json == {
        "statusCode": 200,
        "data": {"id": key["id"], "active": False, "message": "API key has been disabled."},
    }
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 403
    second = client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    assert second.json["data"] == {"id": key["id"], "active": True, "message": "API key has been enabled."}
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
    assert client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).json["data"]["active"] is True


def test_delete_is_permanent(app, client, auth, make_key):
    key = make_key()
    response = client.delete(f"/dashboard/api-keys/{key['id']}", headers=auth())
    assert response.status_code == 200
    assert response.json == {"statusCode": 200, "message": "API key deleted successfully."}
    assert rows(app) == []
    assert client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).status_code == 404
    assert client.delete(f"/dashboard/api-keys/{key['id']}", headers=auth()).status_code == 404
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 401


ROUTES = [
    ("get", "/dashboard/api-keys/{id}"),
    ("post", "/dashboard/api-keys/{id}/regenerate"),
    ("post", "/dashboard/api-keys/{id}/toggle"),
    ("delete", "/dashboard/api-keys/{id}"),
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_another_tenants_key_is_a_404_like_a_missing_one(app, client, auth, make_key, method, path):
    key = make_key(tenant="acme")
    before = rows(app)
    other = getattr(client, method)(path.format(id=key["id"]), headers=auth("globex"))
    missing = getattr(client, method)(path.format(id="key_doesnotexist0000"), headers=auth("globex"))
    assert other.status_code == missing.status_code == 404
    assert other.json == missing.json
    assert other.json["code"] == "API_KEY_NOT_FOUND"
    assert rows(app) == before  # nothing changed for acme


def test_another_tenant_lists_none_of_the_keys(client, auth, make_key):
    make_key(tenant="acme")
    data = client.get("/dashboard/api-keys", headers=auth("globex")).json["data"]
    assert data["items"] == [] and data["total"] == 0


BAD_BODIES = [
    ({}, ["name", "environment"]),
    ({"name": "x"}, ["environment"]),
    ({"environment": "live"}, ["name"]),
    ({"name": "x", "environment": "prod"}, ["environment"]),
    ({"name": "x", "environment": "LIVE"}, ["environment"]),
    ({"name": "", "environment": "live"}, ["name"]),
    ({"name": "   ", "environment": "live"}, ["name"]),
    ({"name": "x" * 101, "environment": "live"}, ["name"]),
    ({"name": 5, "environment": "live"}, ["name"]),
    ({"name": None, "environment": "live"}, ["name"]),
    ({"name": ["x"], "environment": "live"}, ["name"]),
    ({"name": "x", "environment": 1}, ["environment"]),
    ({"name": "x", "environment": "live", "active": False}, ["active"]),
    ({"name": "a\x00b", "environment": "live"}, ["name"]),
    ({"name": "a\nb", "environment": "live"}, ["name"]),
    ({"name": "\ud800", "environment": "live"}, ["name"]),
]


@pytest.mark.parametrize("body, fields", BAD_BODIES)
def test_create_refuses_bad_bodies(app, client, auth, body, fields):
    response = client.post("/dashboard/api-keys", json=body, headers=auth())
    assert response.status_code == 400
    assert response.json["statusCode"] == 400
    assert sorted(response.json["errors"]) == sorted(fields)
    for field in fields:
        assert field in response.json["message"]
    assert rows(app) == []


@pytest.mark.parametrize(
    "data, content_type",
    [
        (b"{bad json", "application/json"),
        (b"", "application/json"),
        (b"[]", "application/json"),
        (b'"name"', "application/json"),
        (b"null", "application/json"),
        (b"42", "application/json"),
        (b'{"name": "x", "environment": "live"', "application/json"),
        (b"\xff\xfe\x00", "application/json"),
    ],
)
def test_create_refuses_what_is_not_a_json_object(app, client, auth, data, content_type):
    response = client.post("/dashboard/api-keys", data=data, headers={**auth(), "Content-Type": content_type})
    assert response.status_code == 400
    assert response.json["statusCode"] == 400
    assert response.json["errors"]
    assert rows(app) == []


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"name": "x", "environment": "live"}', None),  # plain `curl -d`
        (b'{"name": "x", "environment": "live"}', "text/plain"),
        (b"name=x&environment=live", "application/x-www-form-urlencoded"),
    ],
)
def test_a_body_without_the_json_content_type_is_a_415_that_says_so(app, client, auth, data, content_type):
    headers = {**auth(), **({"Content-Type": content_type} if content_type else {})}
    response = client.post("/dashboard/api-keys", data=data, headers=headers)
    assert response.status_code == 415
    assert response.json["message"] == "Send the body as JSON, with Content-Type: application/json."
    assert rows(app) == []


def test_create_accepts_unicode_names(client, auth):
    name = "Zürich 東京 🔑 ﷽"
    response = client.post("/dashboard/api-keys", json={"name": name, "environment": "live"}, headers=auth())
    assert response.status_code == 201
    key_id = response.json["data"]["id"]
    assert client.get(f"/dashboard/api-keys/{key_id}", headers=auth()).json["data"]["name"] == name


def test_create_refuses_a_body_over_the_limit(app, client, auth):
    body = b'{"name": "' + b"x" * (64 * 1024) + b'", "environment": "live"}'
    response = client.post("/dashboard/api-keys", data=body, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json["statusCode"] == 413
    assert response.json["error"] == "Request Entity Too Large"
    assert rows(app) == []


@pytest.mark.parametrize(
    "method, path", [("put", "/dashboard/api-keys"), ("delete", "/dashboard/api-keys/key_x/toggle")]
)
def test_wrong_method_is_a_405_in_the_envelope(client, auth, method, path):
    response = getattr(client, method)(path, headers=auth())
    assert response.status_code == 405
    assert response.json["statusCode"] == 405
    assert response.json["error"] == "Method Not Allowed"
    assert "Allow" in response.headers


def test_unknown_path_is_a_404_in_the_envelope(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert response.json == {
        "statusCode": 404,
        "error": "Not Found",
        "message": "The requested resource was not found.",
    }


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"statusCode": 200, "data": {"status": "ok"}}


def test_readyz_when_the_database_is_gone(tmp_path, jwt_secret):
    from apikeys import create_app

    path = tmp_path / "db.sqlite3"
    path.mkdir()  # a directory where the database file should be: SQLite cannot open it
    app = create_app(
        {"APIKEYS_DATABASE_URL": f"sqlite:///{path}", "APIKEYS_JWT_SECRET": jwt_secret},
        instance_path=str(tmp_path / "instance"),
    )
    try:
        response = app.test_client().get("/readyz")  # /healthz is liveness: it reads no database
    finally:
        extension.get_engine(app).dispose()
    assert response.status_code == 503
    assert response.json["code"] == "DATABASE_UNAVAILABLE"


@pytest.mark.parametrize("key_id", ["%00", "key_%00", "key_" + "A" * 15 + "%00", "x" * 300, "key_abc", "%F0%9F%94%91"])
def test_impossible_ids_are_a_404_before_the_database(client, auth, key_id):
    for method, path in ROUTES:
        response = getattr(client, method)(path.format(id=key_id), headers=auth())
        assert response.status_code == 404
        assert response.json["code"] == "API_KEY_NOT_FOUND"


def test_an_unauthenticated_request_for_an_impossible_id_is_a_401(client):
    assert client.get("/dashboard/api-keys/%00").status_code == 401


def test_regenerate_that_loses_a_race_is_a_409_and_changes_nothing(app, client, auth, make_key, monkeypatch):
    from apikeys import keys as keys_module
    from apikeys.dashboard import operations

    key = make_key()
    real_hash = keys_module.hash_secret
    winner = {}

    def hash_while_another_request_wins(secret, rounds):
        if not winner:  # the other request rotates the key between our read and our write
            winner["started"] = True
            winner["key"] = operations.regenerate_key(app.extensions["apikeys"], "acme", None, key["id"])
        return real_hash(secret, rounds)

    monkeypatch.setattr(keys_module, "hash_secret", hash_while_another_request_wins)
    response = client.post(f"/dashboard/api-keys/{key['id']}/regenerate", headers=auth())
    assert response.status_code == 409
    assert response.json["code"] == "REGENERATED_CONCURRENTLY"
    assert client.get("/verify", headers={"X-Api-Key": winner["key"]["full_key"]}).status_code == 200
