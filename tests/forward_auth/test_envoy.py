"""Envoy's HTTP ext_authz: what it sends to /verify (the original method and path below the prefix), against the
service. Envoy cannot be installed from the package registries here; test_configs.py checks the shipped file."""

from __future__ import annotations

import pytest

from tests.forward_auth.support import ENVOY_PATH_PREFIX
from tests.forward_auth.support import WWW_AUTHENTICATE
from tests.forward_auth.support import assert_verified
from tests.forward_auth.support import send

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
