"""The real thing: the service under gunicorn, over HTTP, and what it writes to its logs."""

from __future__ import annotations

import http.client
import json
import secrets
import urllib.parse

import pytest
import sqlalchemy as sa

from apikeys import db
from tests.servers import Gunicorn
from tests.servers import service_env
from tests.servers import token_for

pytestmark = pytest.mark.slow


class Http:
    """A tiny HTTP client that keeps nothing secret in its own output."""

    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict, dict]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
            data = json.loads(raw) if raw else {}
            return response.status, dict(response.getheaders()), data
        finally:
            conn.close()


@pytest.fixture(params=["text", "json"])
def server(request, tmp_path, database_url):
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(database_url, jwt_secret, tmp_path / "instance", APIKEYS_LOG_FORMAT=request.param)
    with Gunicorn(tmp_path, env, workers=2) as running:
        running.jwt_secret = jwt_secret
        running.log_format = request.param
        yield running


def test_whole_flow_over_http_leaves_no_secret_in_any_log(server, database_url):
    client = Http(server.url)
    token = token_for(server.jwt_secret, "acme")
    bearer = {"Authorization": f"Bearer {token}"}
    issued = [token, server.jwt_secret]

    status, _, created = client.request(
        "POST", "/dashboard/api-keys", {"name": "Gunicorn", "environment": "live"}, bearer
    )
    assert status == 201
    key = created["data"]
    issued += [key["secretKey"], key["fullKey"]]

    status, _, listed = client.request("GET", "/dashboard/api-keys?page=1&limit=20", headers=bearer)
    assert status == 200 and listed["data"]["total"] == 1

    status, headers, verified = client.request("GET", "/verify/some/path?x=1", headers={"X-Api-Key": key["fullKey"]})
    assert status == 200
    assert headers["X-Tenant-Id"] == "acme"
    assert verified["data"]["id"] == key["id"]

    # An X-Api-Key of 8 KiB reaches the app and gets a proper 401, not a server error.
    status, headers, refused = client.request("GET", "/verify", headers={"X-Api-Key": "k" * 8192})
    assert status == 401
    assert refused["code"] == "INVALID_API_KEY"
    assert headers["WWW-Authenticate"] == 'ApiKey realm="apikeys"'

    # A token in the query string (a client's mistake) must not be logged either.
    status, _, _ = client.request("GET", f"/dashboard/api-keys?access_token={token}", headers=bearer)
    assert status == 200

    status, _, _ = client.request("POST", f"/dashboard/api-keys/{key['id']}/toggle", headers=bearer)
    assert status == 200
    assert client.request("GET", "/verify", headers={"X-Api-Key": key["fullKey"]})[0] == 403

    status, _, regenerated = client.request("POST", f"/dashboard/api-keys/{key['id']}/regenerate", headers=bearer)
    assert status == 200
    issued += [regenerated["data"]["secretKey"], regenerated["data"]["fullKey"]]

    wrong = f"{key['publicKey']}.{key['secretKey']}"  # the old secret
    assert client.request("GET", "/verify", headers={"X-Api-Key": wrong})[0] == 401

    status, _, deleted = client.request("DELETE", f"/dashboard/api-keys/{key['id']}", headers=bearer)
    assert status == 200 and deleted["message"] == "API key deleted successfully."

    server.stop()
    logs = server.logs()
    assert "/dashboard/api-keys" in logs  # the scan below read real request logs
    assert "tenant=acme" in logs or '"tenant": "acme"' in logs
    leaked = [number for number, secret in enumerate(issued) if secret in logs]
    assert leaked == []  # indexes only: the values themselves must not reach the test output either
    assert "eyJ" not in logs
    assert "sk_live_" not in logs
    if server.log_format == "json":
        request_lines = [json.loads(line) for line in logs.splitlines() if '"logger": "apikeys.requests"' in line]
        assert {"method", "path", "status", "duration_ms", "tenant", "key_id"} <= set(request_lines[0])
        assert any(line["key_id"] == key["id"] and line["status"] == 200 for line in request_lines)


def test_gunicorn_app_from_the_repo_root_creates_the_database(tmp_path):
    """`gunicorn app:app` with the project's gunicorn.conf.py needs no init-db first."""
    env = {
        "APIKEYS_JWT_SECRET": secrets.token_urlsafe(64),
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    with Gunicorn(tmp_path, env, workers=1) as running:
        status, _, body = Http(running.url).request("GET", "/healthz")
        assert status == 200 and body["data"]["status"] == "ok"
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'instance' / 'apikeys.sqlite3'}")
    try:
        assert "api_keys" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert db.api_keys.name == "api_keys"
