"""The audit log: who changed which key, written with the change itself, for the caller's tenant only."""

from __future__ import annotations

import contextlib
import json

import pytest
import sqlalchemy as sa

from apikeys.storage import tables
from apikeys.verification import extension


@pytest.fixture
def as_actor(token):
    """Authorization headers for a tenant, with a ``sub`` claim."""

    def make(tenant: str = "acme", sub: str | None = "alice@example.com") -> dict[str, str]:
        claims = {"sub": sub} if sub is not None else {}
        return {"Authorization": f"Bearer {token(tenant, **claims)}"}

    return make


def audit(client, headers, **query) -> dict:
    response = client.get("/dashboard/audit-log", query_string=query, headers=headers)
    assert response.status_code == 200, response.json
    assert response.headers["Cache-Control"] == "no-store"
    return response.json["data"]


def rows(app) -> list[dict]:
    with extension.get_engine(app).connect() as conn:
        return [
            dict(row) for row in conn.execute(sa.select(tables.audit_log).order_by(tables.audit_log.c.id)).mappings()
        ]


def test_every_change_is_recorded_newest_first_with_its_actor(client, as_actor):
    headers = as_actor()
    key = client.post("/dashboard/api-keys", json={"name": "k", "environment": "live"}, headers=headers).json["data"]
    path = f"/dashboard/api-keys/{key['id']}"
    client.patch(path, json={"name": "renamed"}, headers=headers)
    client.post(path + "/regenerate", headers=headers)
    client.post(path + "/toggle", headers=headers)
    client.post(path + "/toggle", headers=as_actor(sub=None))
    client.delete(path, headers=headers)
    page = audit(client, headers)
    assert page["total"] == 6
    assert (page["page"], page["limit"]) == (1, 20)
    assert [(item["action"], item["actor"]) for item in page["items"]] == [
        ("key.deleted", "alice@example.com"),
        ("key.enabled", None),
        ("key.disabled", "alice@example.com"),
        ("key.regenerated", "alice@example.com"),
        ("key.updated", "alice@example.com"),
        ("key.created", "alice@example.com"),
    ]
    item = page["items"][0]
    assert list(item) == ["id", "action", "keyId", "actor", "createdAt"]
    assert {entry["keyId"] for entry in page["items"]} == {key["id"]}
    ids = [entry["id"] for entry in page["items"]]
    assert ids == sorted(ids, reverse=True)


def test_changes_in_the_same_millisecond_keep_their_order(app, client, as_actor, make_key):
    key = make_key()
    with extension.get_engine(app).begin() as conn:  # the same timestamp for all: only the id orders them
        conn.execute(sa.update(tables.audit_log).values(created_at=tables.utcnow()))
    for _ in range(5):
        client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=as_actor())
    with extension.get_engine(app).begin() as conn:
        conn.execute(sa.update(tables.audit_log).values(created_at=tables.utcnow()))
    actions = [item["action"] for item in audit(client, as_actor())["items"]]
    assert actions == ["key.disabled", "key.enabled", "key.disabled", "key.enabled", "key.disabled", "key.created"]


def test_the_log_is_the_callers_tenant_only(client, as_actor, make_key):
    make_key(tenant="acme")
    make_key(tenant="globex")
    assert [item["action"] for item in audit(client, as_actor("globex"))["items"]] == ["key.created"]
    assert audit(client, as_actor("initech"))["items"] == []


def test_refused_requests_write_nothing(app, client, as_actor, make_key):
    key = make_key()
    before = rows(app)
    client.post("/dashboard/api-keys", json={"name": "", "environment": "live"}, headers=as_actor())
    client.post("/dashboard/api-keys", json={"name": "x", "environment": "live"})  # no token
    client.delete(f"/dashboard/api-keys/{key['id']}", headers=as_actor("globex"))  # another tenant
    client.patch(f"/dashboard/api-keys/{key['id']}", json={}, headers=as_actor())
    client.post("/dashboard/api-keys/key_0000000000000000/toggle", headers=as_actor())
    assert rows(app) == before


def test_a_change_and_its_entry_exist_together_or_not_at_all(app, client, as_actor):
    with extension.get_engine(app).begin() as conn:  # the audit insert will fail: the key must not be written either
        conn.execute(sa.text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    try:
        with pytest.raises(sa.exc.SQLAlchemyError):  # the test client re-raises what would be a 500
            client.post("/dashboard/api-keys", json={"name": "k", "environment": "live"}, headers=as_actor())
        with extension.get_engine(app).connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tables.api_keys)).scalar_one() == 0
    finally:
        with extension.get_engine(app).begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_log_away RENAME TO audit_log"))


@contextlib.contextmanager
def audit_log_away(app):
    """Make every audit insert fail (the table is renamed) for the block's length."""
    with extension.get_engine(app).begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    try:
        yield
    finally:
        with extension.get_engine(app).begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_log_away RENAME TO audit_log"))


def everything(app) -> tuple[list[dict], list[dict]]:
    """Every key row, hashes and digests included, and every audit entry."""
    with extension.get_engine(app).connect() as conn:
        keys = [dict(row) for row in conn.execute(sa.select(tables.api_keys).order_by(tables.api_keys.c.id)).mappings()]
    return keys, rows(app)


CHANGES = {
    "regenerate": ("POST", "/regenerate", None),
    "regenerate with a grace period": ("POST", "/regenerate", {"gracePeriodSeconds": 600}),
    "update": ("PATCH", "", {"name": "renamed", "scopes": ["read"], "meta": {"a": 1}}),
    "toggle": ("POST", "/toggle", None),
    "delete": ("DELETE", "", None),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_each_change_and_its_entry_exist_together_or_not_at_all(app, client, as_actor, make_key, change):
    """Regenerate, update, toggle, delete: when the audit entry cannot be written, the key is left as it was."""
    method, suffix, body = CHANGES[change]
    key = make_key()
    make_key(name="a bystander")
    before = everything(app)
    with audit_log_away(app), pytest.raises(sa.exc.SQLAlchemyError):  # the test client re-raises a 500's cause
        client.open(f"/dashboard/api-keys/{key['id']}{suffix}", method=method, json=body, headers=as_actor())
    assert everything(app) == before
    # And with the table back, the same change is made, with its entry.
    response = client.open(f"/dashboard/api-keys/{key['id']}{suffix}", method=method, json=body, headers=as_actor())
    assert response.status_code in (200, 204), response.json
    assert len(rows(app)) == len(before[1]) + 1


def test_an_import_and_its_entries_exist_together_or_not_at_all(app, runner, tmp_path):
    from apikeys import keys

    entries = [
        {
            "tenant": "acme",
            "name": f"n{n}",
            "environment": "test",
            "fullKey": f"{keys.new_public_key('test')}.{keys.new_secret('test')}",
        }
        for n in range(2)
    ]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(entries))
    with audit_log_away(app):
        result = runner.invoke(args=["keys", "import", str(path)])
    assert result.exit_code != 0
    assert everything(app) == ([], [])
    assert runner.invoke(args=["keys", "import", str(path)]).exit_code == 0
    assert [row["action"] for row in rows(app)] == ["key.imported", "key.imported"]


def test_nothing_secret_is_in_the_log(app, client, as_actor):
    created = client.post("/dashboard/api-keys", json={"name": "k", "environment": "live"}, headers=as_actor())
    key = created.json["data"]
    rotated = client.post(f"/dashboard/api-keys/{key['id']}/regenerate", headers=as_actor()).json["data"]
    text = json.dumps(rows(app), default=str) + json.dumps(audit(client, as_actor()))
    for secret in (key["secretKey"], rotated["secretKey"], as_actor()["Authorization"].split()[1]):
        assert secret not in text


def test_pages(client, as_actor, make_key):
    for _ in range(5):
        make_key()
    first = audit(client, as_actor(), page=1, limit=2)
    third = audit(client, as_actor(), page=3, limit=2)
    assert (first["total"], len(first["items"]), len(third["items"])) == (5, 2, 1)
    assert first["items"][0]["id"] > third["items"][0]["id"]
    assert client.get("/dashboard/audit-log?limit=0", headers=as_actor()).status_code == 400
    assert client.get("/dashboard/audit-log?limit=0").status_code == 401  # the token is checked first


def test_the_cli_records_its_own_actor_and_reads_the_log(runner, client, as_actor, make_key):
    key = make_key()
    assert runner.invoke(args=["keys", "toggle", "--tenant", "acme", key["id"]]).exit_code == 0
    result = runner.invoke(args=["audit", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)
    assert [(entry["action"], entry["actor"]) for entry in entries] == [("key.disabled", "cli"), ("key.created", None)]
    assert audit(client, as_actor())["items"][0]["actor"] == "cli"


def test_imports_are_recorded(app, runner, tmp_path, client, as_actor):
    from apikeys import keys

    full_key = f"{keys.new_public_key('test')}.{keys.new_secret('test')}"
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{"tenant": "acme", "name": "n", "environment": "test", "fullKey": full_key}]))
    assert runner.invoke(args=["keys", "import", str(path)]).exit_code == 0
    assert [(item["action"], item["actor"]) for item in audit(client, as_actor())["items"]] == [("key.imported", "cli")]
