"""Required scopes on /verify: each one checked on its own and against the scope grammar, whether it came in one
header line, several (which the server joins with commas), or ``scope`` parameters; the fast path and the Flask
views alike."""

from __future__ import annotations

import http.client
import urllib.parse

import pytest

from apikeys import scopes
from apikeys.dashboard import operations
from apikeys.verification.extension import get_state
from apikeys.verification.http import VerifyMiddleware
from tests.servers import Gunicorn
from tests.servers import service_env

HEADER = "X-Api-Key-Required-Scopes"


@pytest.fixture
def orders_key(app) -> str:
    return operations.create_key(get_state(app), "acme", None, "orders", "live", scopes=["orders:*"])["full_key"]


@pytest.fixture(params=["fast path", "flask views"])
def client(request, app):
    """A test client of the service as served (the fast path answers /verify), or of the Flask views alone."""
    assert isinstance(app.wsgi_app, VerifyMiddleware)
    if request.param == "flask views":
        app.wsgi_app = app.wsgi_app.wsgi_app
    return app.test_client()


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("orders:read", 200),
        ("orders:read orders:write", 200),
        ("orders:read, orders:write", 200),
        ("orders:read,,orders:write", 200),
        # What gunicorn makes of two header lines "orders:" and "admin:users": never one scope "orders:,admin:users".
        ("orders:,admin:users", 403),
        ("orders:read,admin", 403),
        ("orders:read\tadmin", 403),
        ("", 200),  # no header value: the route requires no scope
    ],
)
def test_header_scopes_are_split_on_commas_and_blanks(client, orders_key, header, status):
    response = client.get("/verify", headers={"X-Api-Key": orders_key, HEADER: header})
    assert response.status_code == status, response.json
    if status == 403:
        assert response.json["code"] == "INSUFFICIENT_SCOPE"


@pytest.mark.parametrize(
    "query",
    [
        "scope=",  # asks for a scope and names none: never read as asking for nothing
        "scope=orders:read&scope=",
        "scope=%20",
        "scope=orders:read%00",
        "scope=orders%3Aread%0A",
        "scope=caf%C3%A9",
        "scope=" + "a" * 65,
        "scope=orders:read;admin",
    ],
)
def test_a_scope_parameter_outside_the_grammar_is_a_400(client, orders_key, query):
    response = client.get(f"/verify?{query}", headers={"X-Api-Key": orders_key})
    assert response.status_code == 400, response.json
    assert set(response.json) == {"statusCode", "error", "message", "errors"}
    assert list(response.json["errors"]) == ["scope"]


@pytest.mark.parametrize("header", ["orders:read;admin", "café", "x" * 65, "orders:read admin/users"])
def test_a_header_scope_outside_the_grammar_is_a_400(client, orders_key, header):
    response = client.get("/verify", headers={"X-Api-Key": orders_key, HEADER: header.encode().decode("latin1")})
    assert response.status_code == 400, response.json
    assert list(response.json["errors"]) == [HEADER]


@pytest.mark.parametrize(("query", "status"), [("scope=orders:a%20admin", 403), ("scope=orders:a,orders:b", 200)])
def test_a_scope_parameter_may_name_several(client, orders_key, query, status):
    assert client.get(f"/verify?{query}", headers={"X-Api-Key": orders_key}).status_code == status


def test_the_forwarded_path_reads_the_header_alike(client, orders_key):
    headers = {"X-Api-Key": orders_key, HEADER: "orders:,admin:users"}
    assert client.get("/verify/admin/users", headers=headers).status_code == 403
    headers[HEADER] = "orders:read;"
    assert client.get("/verify/admin/users", headers=headers).status_code == 400


def test_parse_required():
    assert scopes.parse_required(" a:b,c  d,\t") == ["a:b", "c", "d"]
    with pytest.raises(ValueError):
        scopes.parse_required("a:b\nc")
    assert scopes.parse_required("") == []
    with pytest.raises(ValueError, match="Not a scope"):
        scopes.parse_required("a:b,c;d")


@pytest.mark.slow
def test_repeated_header_lines_through_gunicorn_require_every_scope(tmp_path, database_url, jwt_secret):
    """The finding: gunicorn joins repeated header lines with a comma, and the joined string was read as one
    scope that ``orders:*`` granted."""
    env = service_env(database_url, jwt_secret, tmp_path / "instance")
    with Gunicorn(tmp_path, env, workers=1) as server:
        from apikeys import create_app
        from apikeys.verification import extension

        app = create_app(
            {
                "APIKEYS_DATABASE_URL": database_url,
                "APIKEYS_VERIFIER_KEY": env["APIKEYS_VERIFIER_KEY"],
                "APIKEYS_JWT_SECRET": jwt_secret,
            },
            instance_path=str(tmp_path / "maker"),
        )
        try:
            full_key = operations.create_key(get_state(app), "acme", None, "k", "live", scopes=["orders:*"])["full_key"]
        finally:
            extension.get_engine(app).dispose()
        url = urllib.parse.urlsplit(server.url)

        def status_of(path, header_lines):
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
            try:
                conn.putrequest("GET", path)
                conn.putheader("X-Api-Key", full_key)
                for value in header_lines:
                    conn.putheader(HEADER, value)
                conn.endheaders()
                response = conn.getresponse()
                response.read()
                return response.status
            finally:
                conn.close()

        assert status_of("/verify", ["orders:read"]) == 200
        assert status_of("/verify", ["orders:", "admin:users"]) == 403
        assert status_of("/verify/admin", ["orders:", "admin:users"]) == 403
        assert status_of("/verify?scope=orders:a%20admin", []) == 403
        assert status_of("/verify?scope=", []) == 400


HOSTILE = ["", "[" * 10000, "\x1b[2J", "café", ",,,", "orders:read " * 2000, "e" * 9000]


@pytest.mark.parametrize("value", HOSTILE, ids=["empty", "10k-brackets", "esc", "non-ascii", "commas", "long", "9k"])
def test_hostile_header_values_are_a_4xx_envelope_never_a_5xx(client, orders_key, value):
    """What a client may put in the headers /verify reads: every answer is a 4xx envelope or a grant, never a fault."""
    wire = value.encode().decode("latin1")  # as the bytes arrive over HTTP
    scopes = client.get("/verify", headers={"X-Api-Key": orders_key, HEADER: wire})
    bearer = client.get("/verify", headers={"Authorization": "Bearer " + wire})
    assert scopes.status_code in (200, 400, 403)
    assert bearer.status_code == 401 and bearer.json["code"] in ("MISSING_API_KEY", "INVALID_API_KEY")
    for response in (scopes, bearer):
        assert response.mimetype == "application/json"
        assert "sk_" not in response.get_data(as_text=True)
