"""A key sent as `Authorization: Bearer <full key>` through every shipped proxy file, and /verify's own refusal
through nginx (both files): its status, message and code, not a fixed text."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.forward_auth.production import API_HOST
from tests.forward_auth.production import render_site
from tests.forward_auth.support import Nginx
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.support import header_values
from tests.forward_auth.support import send
from tests.forward_auth.test_envoy import envoy  # noqa: F401 (fixtures, run here too)
from tests.forward_auth.test_nginx import nginx  # noqa: F401
from tests.forward_auth.test_traefik import traefik  # noqa: F401
from tests.servers import free_port

pytestmark = pytest.mark.slow

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"
# The one line of production.conf's /verify subrequest that the scoped variant changes, to reach INSUFFICIENT_SCOPE.
NO_SCOPES = (
    'proxy_set_header X-Api-Key-Required-Scopes "";\n        proxy_set_header X-Api-Key-Cost "";\n        proxy_connect'
)


class HostProxy(Proxy):
    """production.conf's API server: one port for two servers, told apart by Host."""

    def request(self, method, path="/orders/42?x=1", headers=(), body=None):
        pairs = list(headers.items() if isinstance(headers, dict) else headers)
        return super().request(method, path, [("Host", API_HOST), *pairs], body)


def start_production(nginx_program, verify_recorder, application, directory, scopes: str = ""):
    """production.conf as shipped (or asking /verify for ``scopes``) in front of the shared apikeys."""
    port = free_port()
    site = render_site(urllib.parse.urlsplit(verify_recorder.url).port, application.server_address[1], port)
    if scopes:
        assert site.count(NO_SCOPES) == 1
        site = site.replace(NO_SCOPES, NO_SCOPES.replace('""', f'"{scopes}"', 1))
    server = Nginx(nginx_program, directory, site, port)
    server.start()
    return server, HostProxy(server.url, application)


@pytest.fixture(scope="module")
def production(nginx_program, verify_recorder, application, workdir):
    server, proxy = start_production(nginx_program, verify_recorder, application, workdir / "bearer-production")
    try:
        yield proxy
    finally:
        server.stop()


@pytest.fixture(scope="module")
def production_scoped(nginx_program, verify_recorder, application, workdir):
    directory = workdir / "bearer-production-scoped"
    server, proxy = start_production(nginx_program, verify_recorder, application, directory, "admin:users")
    try:
        yield proxy
    finally:
        server.stop()


PROXIES = ["nginx", "production", "traefik", "envoy"]


@pytest.mark.parametrize("proxy_name", PROXIES)
def test_a_bearer_key_reaches_the_application_as_its_identity_without_authorization(request, service, proxy_name):
    proxy = request.getfixturevalue(proxy_name)
    key = service.create_key("acme", scopes=["orders:read"])

    answer, seen = proxy.request("GET", "/orders/42?x=1", {"Authorization": f"Bearer {key.full_key}"})

    assert answer.status == 200
    (received,) = seen
    assert_identity(received, key)
    assert header_values(received, "Authorization") == []  # the key, in either header, never reaches the application


@pytest.mark.parametrize("proxy_name", PROXIES)
def test_two_different_keys_are_refused_through_every_proxy(request, service, proxy_name):
    proxy = request.getfixturevalue(proxy_name)
    first, second = service.create_key("acme"), service.create_key("acme")

    headers = {"X-Api-Key": first.full_key, "Authorization": f"Bearer {second.full_key}"}
    answer, seen = proxy.request("GET", "/orders/42", headers)

    assert_refused(answer, seen, 401)
    assert answer.json()["code"] == "AMBIGUOUS_API_KEY"


def verify_directly(service, path: str, headers: dict) -> tuple[int, dict]:
    """What /verify itself answers to these headers."""
    answer = send(service.url, "GET", path, headers)
    return answer.status, answer.json()


@pytest.mark.parametrize("proxy_name", ["nginx", "production_scoped"])
def test_nginx_answers_verify_s_own_refusal(request, service, proxy_name):
    """INSUFFICIENT_SCOPE, API_KEY_DISABLED, INVALID_API_KEY (and the Bearer refusals): each with /verify's own
    status, message and code through nginx, where auth_request drops /verify's body."""
    proxy = request.getfixturevalue(proxy_name)
    plain, disabled = service.create_key("acme"), service.create_key("acme")
    assert service.toggle(disabled) is False
    # apikeys.conf asks for admin:users on /admin/..., the scoped production.conf on every path.
    scoped_path = "/admin/users" if proxy_name == "nginx" else "/orders/42"
    cases = {
        "INSUFFICIENT_SCOPE": (scoped_path, {"X-Api-Key": plain.full_key}),
        "API_KEY_DISABLED": ("/orders/42", {"X-Api-Key": disabled.full_key}),
        "INVALID_API_KEY": ("/orders/42", {"X-Api-Key": plain.with_wrong_secret()}),
        "NOT_AN_API_KEY": ("/orders/42", {"Authorization": f"Bearer {JWT}"}),
        "MISSING_API_KEY": ("/orders/42", {}),
        "AMBIGUOUS_API_KEY": (
            "/orders/42",
            {"X-Api-Key": plain.full_key, "Authorization": f"Bearer {disabled.full_key}"},
        ),
    }
    for code, (path, headers) in cases.items():
        expected = verify_directly(service, "/verify", {**headers, "X-Api-Key-Required-Scopes": "admin:users"})
        assert expected[1]["code"] == code
        answer, seen = proxy.request("GET", path, headers)
        assert_refused(answer, seen, expected[0])
        assert (answer.status, answer.json()) == expected, code


@pytest.mark.parametrize("proxy_name", PROXIES)
@pytest.mark.parametrize("authorization", ["Basic YWxpY2U6c2VjcmV0", f"Bearer {JWT}"], ids=["basic", "jwt"])
def test_the_application_s_own_authorization_passes_nginx_only(request, service, proxy_name, authorization):
    """Beside an X-Api-Key, Basic or a JWT is the application's own: the nginx files pass it on; Traefik and Envoy,
    which cannot tell a Bearer key from it, remove Authorization altogether (as their files say)."""
    proxy = request.getfixturevalue(proxy_name)
    key = service.create_key("acme")

    answer, seen = proxy.request("GET", "/orders/42", {"X-Api-Key": key.full_key, "Authorization": authorization})

    assert answer.status == 200
    (received,) = seen
    assert_identity(received, key)
    passed = proxy_name in ("nginx", "production")
    assert header_values(received, "Authorization") == (["<redacted>"] if passed else [])
