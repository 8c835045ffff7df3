"""A key's rate limit and quota through every shipped proxy file, run for real: the client gets apikeys' 429 with
Retry-After and the RateLimit headers (never nginx's 500), sees what the key has left where the proxy can pass it,
and cannot lower what a request costs."""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest

from apikeys import errors
from tests.forward_auth.production import render_site
from tests.forward_auth.support import Key
from tests.forward_auth.support import Nginx
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.support import header_values
from tests.forward_auth.support import send
from tests.forward_auth.test_bearer import HostProxy
from tests.forward_auth.test_bearer import start_production
from tests.forward_auth.test_envoy import envoy  # noqa: F401 (fixtures, run here too)
from tests.forward_auth.test_nginx import nginx  # noqa: F401
from tests.forward_auth.test_nginx import nginx_site
from tests.forward_auth.test_traefik import traefik  # noqa: F401
from tests.servers import free_port

pytestmark = pytest.mark.slow

PROXIES = ["nginx", "production", "traefik", "envoy"]
# ForwardAuth passes nothing of /verify's 200 to the client (examples/traefik/dynamic.yml says why).
SILENT_ON_SUCCESS = {"traefik"}
# Long enough that the few requests of a test never cross a window: fixed windows, aligned to the Unix epoch.
PERIOD = 3600
# Every way a client could try to make its requests free: the header (in any case) and the query parameter.
FREE = [("X-Api-Key-Cost", "0"), ("x-api-key-cost", "0")]


@pytest.fixture(scope="module")
def production(nginx_program, verify_recorder, application, workdir):
    """production.conf as shipped in front of the shared apikeys."""
    server, proxy = start_production(nginx_program, verify_recorder, application, workdir / "limits-production")
    try:
        yield proxy
    finally:
        server.stop()


def create_key(service, **policy) -> Key:
    """A key with this ``rateLimit`` and ``quota`` (camelCase, as the API takes them)."""
    body = json.dumps({"name": "limited", "environment": "live", **policy}).encode()
    headers = {**service.bearer("acme"), "Content-Type": "application/json"}
    answer = send(service.url, "POST", "/dashboard/api-keys", headers, body)
    assert answer.status == 201, answer
    data = answer.json()["data"]
    assert data["rateLimit"] == policy.get("rateLimit")
    assert (data["quota"] or {}).get("remaining") == (policy.get("quota") or {}).get("remaining")
    return Key(data["id"], "acme", data["environment"], data["publicKey"], data["fullKey"])


def seconds_left_in_a_fresh_window() -> float:
    """Wait, if the current window ends within 5 s, for the next one; return the seconds left in the window."""
    left = PERIOD - time.time() % PERIOD
    if left < 5:
        time.sleep(left + 0.1)
        left = PERIOD - time.time() % PERIOD
    return left


def assert_rate_limit_headers(answer, remaining: int, left: float) -> None:
    assert answer.headers.get_all("RateLimit-Limit") == ["2"]
    assert answer.headers.get_all("RateLimit-Remaining") == [str(remaining)]
    (reset,) = answer.headers.get_all("RateLimit-Reset")
    assert 1 <= int(reset) <= math.ceil(left)


def assert_too_many_requests(answer, seen, error: type[errors.VerificationError]) -> None:
    """apikeys' own 429 envelope, whichever proxy rebuilt or passed it, and nothing reached the application."""
    assert_refused(answer, seen, 429)
    assert answer.json() == {
        "statusCode": 429,
        "error": "Too Many Requests",
        "message": error.message,
        "code": error.code,
    }


@pytest.mark.parametrize("proxy_name", PROXIES)
def test_a_key_over_its_rate_limit_gets_429_with_retry_after_not_500(request, service, proxy_name):
    proxy = request.getfixturevalue(proxy_name)
    key = create_key(service, rateLimit={"limit": 2, "periodSeconds": PERIOD})
    left = seconds_left_in_a_fresh_window()

    for remaining in (1, 0):
        answer, seen = proxy.request("GET", "/orders/42", {"X-Api-Key": key.full_key})
        assert answer.status == 200
        (received,) = seen
        assert_identity(received, key)
        if proxy_name in SILENT_ON_SUCCESS:
            assert answer.headers.get("RateLimit-Limit") is None
        else:
            assert_rate_limit_headers(answer, remaining, left)

    answer, seen = proxy.request("GET", "/orders/42", {"X-Api-Key": key.full_key})

    assert_too_many_requests(answer, seen, errors.RateLimited)
    assert_rate_limit_headers(answer, 0, left)
    (retry_after,) = answer.headers.get_all("Retry-After")
    assert 1 <= int(retry_after) <= math.ceil(left)
    assert abs(int(retry_after) - int(answer.headers["RateLimit-Reset"])) <= 1


@pytest.mark.parametrize("proxy_name", PROXIES)
def test_a_key_out_of_credits_gets_429_usage_exceeded(request, service, proxy_name):
    proxy = request.getfixturevalue(proxy_name)
    key = create_key(service, quota={"remaining": 1, "refillAmount": None, "refillInterval": None})

    answer, seen = proxy.request("GET", "/orders/42", {"X-Api-Key": key.full_key})
    assert answer.status == 200
    assert_identity(seen[0], key)
    expected = [] if proxy_name in SILENT_ON_SUCCESS else ["0"]
    assert answer.headers.get_all("X-Api-Key-Quota-Remaining", []) == expected

    answer, seen = proxy.request("GET", "/orders/42", {"X-Api-Key": key.full_key})

    assert_too_many_requests(answer, seen, errors.UsageExceeded)
    assert answer.headers.get_all("X-Api-Key-Quota-Remaining") == ["0"]
    assert answer.headers.get("Retry-After") is None  # no refill: no time at which retrying helps
    assert answer.headers.get("RateLimit-Limit") is None  # the key has no rate limit


@pytest.mark.parametrize("proxy_name", PROXIES)
def test_a_client_cannot_make_its_requests_free(request, service, verify_recorder, proxy_name):
    """A cost of 0 would count toward neither the rate limit nor the quota: sent by the client, it never reaches
    /verify, in the header or in the query string, and the third request within the limit of 2 is refused."""
    proxy = request.getfixturevalue(proxy_name)
    key = create_key(service, rateLimit={"limit": 2, "periodSeconds": PERIOD})
    seconds_left_in_a_fresh_window()
    mark = verify_recorder.mark()

    statuses = []
    for _ in range(3):
        answer, _ = proxy.request("GET", "/orders/42?cost=0", [*FREE, ("X-Api-Key", key.full_key)])
        statuses.append(answer.status)

    assert statuses == [200, 200, 429]
    assert answer.json()["code"] == "RATE_LIMITED"
    # (Envoy passes the client's query string on below /verify/, where apikeys reads none of it.)
    verified = verify_recorder.since(mark)
    assert len(verified) == 3
    for received in verified:
        assert header_values(received, "X-Api-Key-Cost") == []


class UnavailableVerify(BaseHTTPRequestHandler):
    """/verify's 503 as apikeys sends it (VERIFICATION_BUSY, RATE_LIMIT_UNAVAILABLE): a status apikeys answers
    only in moments a test cannot hold on to, so this server stands in for it."""

    def do_GET(self):
        error = errors.RateLimitUnavailable()
        body = json.dumps({"statusCode": 503, "message": error.message, "code": error.code}).encode()
        self.send_response(503)
        for name, value in error.headers().items():
            self.send_header(name, value)
        self.send_header("X-Api-Key-Error", error.code)
        self.send_header("X-Api-Key-Error-Message", error.message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("example", ["apikeys.conf", "production.conf"])
def test_nginx_passes_verify_s_503_on_instead_of_a_500(nginx_program, application, workdir, example):
    unavailable = ThreadingHTTPServer(("127.0.0.1", 0), UnavailableVerify)
    thread = threading.Thread(target=unavailable.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = free_port()
    render = nginx_site if example == "apikeys.conf" else render_site
    site = render(unavailable.server_address[1], application.server_address[1], port)
    server = Nginx(nginx_program, workdir / "nginx-unavailable" / example, site, port)
    try:
        server.start()
        proxy = (Proxy if example == "apikeys.conf" else HostProxy)(server.url, application)
        answer, seen = proxy.request("GET", headers={"X-Api-Key": "pk_live_0000000000000000.sk_live_0"})
    finally:
        server.stop()
        unavailable.shutdown()
        unavailable.server_close()
        thread.join(timeout=5)

    assert_refused(answer, seen, 503)
    assert answer.json() == {
        "statusCode": 503,
        "error": "Service Unavailable",
        "message": errors.RateLimitUnavailable.message,
        "code": "RATE_LIMIT_UNAVAILABLE",
    }
    assert answer.headers.get_all("Retry-After") == ["1"]
