"""The shipped nginx example (examples/nginx/apikeys.conf) run by a real nginx in front of apikeys under gunicorn."""

from __future__ import annotations

import urllib.parse

import pytest

from apikeys import keys
from tests.forward_auth.support import NGINX_EXAMPLE
from tests.forward_auth.support import Key
from tests.forward_auth.support import Nginx
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.support import forged_headers
from tests.forward_auth.support import header_values
from tests.forward_auth.support import render
from tests.servers import free_port

pytestmark = pytest.mark.slow


def nginx_site(apikeys_port: int, application_port: int, listen_port: int) -> str:
    """The shipped example with its three placeholder addresses replaced."""
    return render(
        NGINX_EXAMPLE,
        {
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{apikeys_port};",
            "server 127.0.0.1:3000;": f"server 127.0.0.1:{application_port};",
            "listen 8080;": f"listen 127.0.0.1:{listen_port};",
        },
    )


@pytest.fixture(scope="module")
def nginx(request, nginx_program, verify_recorder, application, workdir):
    """The shipped nginx example in front of ``application``, asking the running apikeys (through the recorder)."""
    port = free_port()
    site = nginx_site(urllib.parse.urlsplit(verify_recorder.url).port, application.server_address[1], port)
    # A folder per module that runs this fixture (tests/forward_auth/test_bearer.py does too).
    server = Nginx(nginx_program, workdir / "nginx" / request.module.__name__, site, port)
    try:
        server.start()
        yield Proxy(server.url, application)
    finally:
        server.stop()


def test_nginx_lets_a_valid_key_through_with_its_identity(nginx, service):
    key = service.create_key("acme")

    answer, seen = nginx.request("GET", "/orders/42?x=1", {"X-Api-Key": key.full_key})

    assert answer.status == 200
    assert len(seen) == 1
    assert seen[0]["method"] == "GET"
    assert seen[0]["path"] == "/orders/42?x=1"
    assert_identity(seen[0], key)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_nginx_verifies_every_method_the_same(nginx, service, method):
    key = service.create_key("acme")
    body = b'{"quantity": 3}' if method in ("POST", "PUT", "PATCH") else None

    answer, seen = nginx.request(method, "/orders/42", {"X-Api-Key": key.full_key}, body)
    assert answer.status == 200
    assert [r["method"] for r in seen] == [method]
    assert_identity(seen[0], key)
    # The subrequest leaves the body alone: the application still gets all of it.
    assert seen[0]["body"] == (body or b"").decode()

    answer, seen = nginx.request(method, "/orders/42", {}, body)
    assert_refused(answer, seen, 401, body=method != "HEAD")


@pytest.mark.parametrize("scopes", [["orders:read", "orders:write"], []])
@pytest.mark.parametrize("path", ["/orders/42?x=1", "/admin/users"])
def test_nginx_overwrites_every_identity_header_a_client_forges(nginx, service, verify_recorder, scopes, path):
    key = service.create_key("acme", scopes=[*scopes, "admin:users"] if path == "/admin/users" else scopes)
    mark = verify_recorder.mark()

    answer, seen = nginx.request("GET", path, [*forged_headers(), ("X-Api-Key", key.full_key)])

    assert answer.status == 200
    (received,) = seen
    assert_identity(received, key)  # the true values, scopes included, once each; no X-Api-Key-Cost, no required
    (verified,) = verify_recorder.since(mark)
    assert header_values(verified, "X-Api-Key-Cost") == []
    assert header_values(verified, "X-Api-Key-Required-Scopes") == (["admin:users"] if path != "/orders/42?x=1" else [])


def test_nginx_refuses_a_forged_identity_without_a_key(nginx):
    answer, seen = nginx.request("GET", headers={"X-Tenant-Id": "acme", "X-Api-Key-Id": "key_0000000000000000"})

    assert_refused(answer, seen, 401)


@pytest.mark.parametrize("presented", ["missing", "empty", "malformed", "unknown public key", "wrong secret"])
def test_nginx_refuses_a_bad_key_with_401(nginx, service, presented):
    key = service.create_key("acme")
    stranger = Key("key_x", "acme", "live", keys.new_public_key("live"), "")
    headers = {
        "missing": {},
        "empty": {"X-Api-Key": ""},
        "malformed": {"X-Api-Key": "not-a-key"},
        "unknown public key": {"X-Api-Key": stranger.with_wrong_secret()},
        "wrong secret": {"X-Api-Key": key.with_wrong_secret()},
    }[presented]

    answer, seen = nginx.request("GET", headers=headers)

    assert_refused(answer, seen, 401)


def test_nginx_refuses_a_disabled_key_with_403_until_it_is_enabled(nginx, service):
    key = service.create_key("acme")
    answer, _ = nginx.request("GET", headers={"X-Api-Key": key.full_key})
    assert answer.status == 200  # verified once, so the secret is in apikeys' cache

    assert service.toggle(key) is False
    answer, seen = nginx.request("POST", headers={"X-Api-Key": key.full_key}, body=b"{}")
    assert_refused(answer, seen, 403)

    assert service.toggle(key) is True
    answer, seen = nginx.request("GET", headers={"X-Api-Key": key.full_key})
    assert answer.status == 200
    assert_identity(seen[0], key)


def test_nginx_refuses_a_deleted_key_with_401(nginx, service):
    key = service.create_key("acme")
    answer, _ = nginx.request("GET", headers={"X-Api-Key": key.full_key})
    assert answer.status == 200

    service.delete(key)
    answer, seen = nginx.request("GET", headers={"X-Api-Key": key.full_key})

    assert_refused(answer, seen, 401)


def test_nginx_wrong_secrets_never_lock_out_a_key_without_a_digest(nginx, service):
    key = service.create_key("acme")
    service.forget_digest(key)  # as written before digests: each check takes bcrypt, and none is counted
    for _ in range(12):
        answer, seen = nginx.request("GET", headers={"X-Api-Key": key.with_wrong_secret()})
        assert_refused(answer, seen, 401)
        assert answer.headers.get("Retry-After") is None

    answer, seen = nginx.request("GET", headers={"X-Api-Key": key.full_key})
    assert answer.status == 200
    assert_identity(seen[0], key)


def test_nginx_keeps_the_verify_location_internal(nginx, service):
    key = service.create_key("acme")

    answer, seen = nginx.request("GET", "/_apikeys_verify", {"X-Api-Key": key.full_key})

    assert answer.status == 404
    assert seen == []
    assert answer.headers.get("X-Tenant-Id") is None


def test_nginx_fails_closed_when_apikeys_does_not_answer(nginx_program, application, workdir):
    port = free_port()
    site = nginx_site(free_port(), application.server_address[1], port)  # nothing listens on that apikeys port
    server = Nginx(nginx_program, workdir / "nginx-without-apikeys", site, port)
    try:
        server.start()
        proxy = Proxy(server.url, application)
        answer, seen = proxy.request("GET", headers={"X-Api-Key": "pk_live_0000000000000000.sk_live_0"})
    finally:
        server.stop()

    assert answer.status == 500
    assert seen == []


@pytest.mark.parametrize(
    "path",
    [
        "/admin/users",
        "/admin/",
        "/admin",
        "//admin/users",
        "/%61dmin/users",
        "/x/../admin/users",
        # Servers that ignore case (Express) or drop ;parameters (Tomcat) read all these as /admin/users.
        "/ADMIN/users",
        "/Admin/users",
        "/aDmIn",
        "/admin;/users",
        "/admin;x=1/users",
        "/ADMIN;jsessionid=0/users",
        "/admin%3B/users",
        "/admin%2Fusers",
        "/;x/admin/users",
        "/.;/admin/users",
        "/%2e;/admin/users",
        "/x/..;/admin/users",
        "/x/..%3B/admin/users",
    ],
)
def test_nginx_example_requires_a_scope_on_the_admin_route(nginx, service, path):
    plain = service.create_key("acme", scopes=["orders:read"])
    admin = service.create_key("acme", scopes=["admin:*"])

    answer, seen = nginx.request("GET", path, {"X-Api-Key": plain.full_key})
    assert_refused(answer, seen, 403)

    answer, seen = nginx.request("GET", path, {"X-Api-Key": admin.full_key})
    assert answer.status == 200
    assert_identity(seen[0], admin)


@pytest.mark.parametrize("path", ["/administrators", "/x/admin/users", "/orders;x=1/admin", "/admin-tools"])
def test_nginx_example_routes_without_a_scope_take_any_valid_key(nginx, service, path):
    plain = service.create_key("acme")
    answer, seen = nginx.request("GET", path, {"X-Api-Key": plain.full_key})
    assert answer.status == 200
    assert_identity(seen[0], plain)


@pytest.mark.parametrize("forged", ["", "orders:read", "*"])
def test_nginx_example_a_client_cannot_lower_the_scopes_a_route_requires(nginx, service, verify_recorder, forged):
    key = service.create_key("acme", scopes=["orders:read"])
    mark = verify_recorder.mark()

    forged_twice = [("X-Api-Key-Required-Scopes", forged), ("x-api-key-required-scopes", forged)]
    headers = [*forged_twice, ("X-Api-Key", key.full_key)]
    answer, seen = nginx.request("GET", "/admin/users", headers)

    assert_refused(answer, seen, 403)
    (verified,) = verify_recorder.since(mark)
    assert header_values(verified, "X-Api-Key-Required-Scopes") == ["admin:users"]
