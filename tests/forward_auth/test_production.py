"""The shipped production deployment (examples/nginx/production.conf) holds against slow clients: a real nginx
with that file in front of apikeys under gunicorn keeps answering while slow connections hang on; the same
attack straight at gunicorn answers nobody."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from dataclasses import field

import pytest

from tests.forward_auth.production import API_HOST
from tests.forward_auth.production import KEYS_HOST
from tests.forward_auth.production import make_service
from tests.forward_auth.production import running_production
from tests.forward_auth.support import IDENTITY_HEADERS
from tests.forward_auth.support import PROXY_HEADERS
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.support import forged_headers
from tests.forward_auth.support import header_values
from tests.forward_auth.support import send

pytestmark = pytest.mark.slow

SLOW_HEADERS = 15
SLOW_BODIES = 5
HOLD_SECONDS = 21
BYTE_EVERY = 2.0  # seconds between two bytes of a slow client


@dataclass
class SlowClient:
    """One attacker: keeps a connection open by sending one byte every few seconds, and reconnects when dropped."""

    address: tuple[str, int]
    start: bytes
    stop: threading.Event
    connections: int = 0
    dropped: int = 0  # connections the server closed
    open: bool = False
    longest: float = 0.0
    _thread: threading.Thread | None = field(default=None, repr=False)

    def run(self) -> None:
        while not self.stop.is_set():
            opened = time.monotonic()
            try:
                with socket.create_connection(self.address, timeout=5) as sock:
                    self.connections += 1
                    self.open = True
                    sock.sendall(self.start)
                    while not self.stop.wait(BYTE_EVERY):
                        sock.sendall(b"a")
                        readable, _, _ = select.select([sock], [], [], 0)
                        if readable:  # an answer (a 408) or the end: the server is done with this connection
                            self.dropped += 1
                            break
            except OSError:
                self.dropped += 1
            finally:
                self.open = False
                self.longest = max(self.longest, time.monotonic() - opened)

    def __enter__(self) -> SlowClient:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self._thread.join(timeout=10)


def slow_clients(url: str, stop: threading.Event, *, host: str) -> list[SlowClient]:
    """15 clients that never finish their headers, and 5 that never finish a body to POST /dashboard/api-keys."""
    parts = urllib.parse.urlsplit(url)
    address = (parts.hostname, parts.port)
    headers = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode()
    body = (
        f"POST /dashboard/api-keys HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Content-Length: 4000\r\n\r\n{"
    ).encode()
    return [SlowClient(address, headers, stop) for _ in range(SLOW_HEADERS)] + [
        SlowClient(address, body, stop) for _ in range(SLOW_BODIES)
    ]


@pytest.fixture(scope="module")
def production(nginx_program, application, workdir):
    """examples/nginx/production.conf run by a real nginx, in front of apikeys (2 sync workers) and ``application``."""
    with running_production(nginx_program, application, workdir / "production") as stack:
        yield stack


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/favicon.ico", 200),
        ("/console", 200),
        ("/openapi.json", 200),
        ("/docs", 200),
        ("/dashboard/api-keys", 401),
        ("/verify", 404),
        ("/metrics", 404),
    ],
)
def test_the_keys_server_passes_apikeys_own_paths_only(production, path, status):
    answer = send(production.url, "GET", path, {"Host": KEYS_HOST, "X-Api-Key": production.key.full_key})

    assert answer.status == status  # /verify is asked internally by the API server, never from outside


def largest_create() -> bytes:
    """The biggest body a create can legitimately have: every field at its limit, written as json.dumps does."""
    name = "\U0001f511" * 100  # 100 characters, each a 12-byte escape
    scopes = [f"{i:02d}:" + "s" * 61 for i in range(50)]  # 50 scopes of 64 characters
    # 4,096 bytes of meta as apikeys measures it (compact UTF-8), each "é" written as a 6-byte escape.
    meta = {"note": "\u00e9" * ((4096 - len('{"note":""}')) // 2)}
    assert len(json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()) <= 4096
    return json.dumps({"name": name, "environment": "live", "scopes": scopes, "meta": meta}).encode()


def test_the_keys_server_takes_the_largest_create_and_refuses_more_than_32_kib(production):
    body = largest_create()
    headers = {"Host": KEYS_HOST, "Content-Type": "application/json", **production.service.bearer("acme")}
    assert 16 * 1024 < len(body) < 32 * 1024
    answer = send(production.url, "POST", "/dashboard/api-keys", headers, body)
    assert answer.status == 201
    assert len(answer.json()["data"]["scopes"]) == 50

    too_big = b"{" + b" " * (32 * 1024) + b"}"
    answer = send(production.url, "POST", "/dashboard/api-keys", headers, too_big)
    assert answer.status == 413
    assert b"nginx" in answer.body  # nginx's own page: the request never reached a worker


def test_the_api_server_checks_every_request_with_apikeys(production, application):
    proxy = Proxy(production.url, application)
    answer, seen = proxy.request("POST", "/orders", {"Host": API_HOST, "X-Api-Key": production.key.full_key}, b"{}")
    assert answer.status == 200
    assert_identity(seen[0], production.key)

    answer, seen = proxy.request("GET", "/orders", {"Host": API_HOST, "X-Tenant-Id": "acme"})
    assert_refused(answer, seen, 401)


@pytest.mark.parametrize("forged", [IDENTITY_HEADERS, IDENTITY_HEADERS + PROXY_HEADERS], ids=["identity", "all"])
def test_the_api_server_overwrites_every_identity_header_a_client_forges(production, application, forged):
    proxy = Proxy(production.url, application)
    mark = production.recorder.mark()

    headers = [("Host", API_HOST), *forged_headers(forged), ("X-Api-Key", production.key.full_key)]
    answer, seen = proxy.request("GET", "/orders/42", headers)

    assert answer.status == 200
    (received,) = seen
    assert production.key.scopes == ("orders:read",)
    assert_identity(received, production.key)  # X-Api-Key-Scopes: orders:read, never the client's admin:* *
    (verified,) = production.recorder.since(mark)
    for name in ("X-Api-Key-Required-Scopes", "X-Api-Key-Cost"):
        assert header_values(verified, name) == []  # the client's never reach /verify


def test_the_production_stack_answers_everyone_while_slow_clients_hang_on(production):
    stop = threading.Event()
    sent, answered, held, attackers = 0, 0, [], slow_clients(production.url, stop, host=KEYS_HOST)
    creates_before = production.gunicorn.access_log.read_text().count('"POST /dashboard/api-keys ')
    try:
        for attacker in attackers:
            attacker.__enter__()
        time.sleep(1)  # every attacker connected
        started = time.monotonic()
        while time.monotonic() - started < HOLD_SECONDS:
            held.append(sum(a.open for a in attackers))
            for path, headers in (
                ("/healthz", {"Host": KEYS_HOST}),
                ("/orders/42", {"Host": API_HOST, "X-Api-Key": production.key.full_key}),
            ):
                sent += 1
                try:
                    answered += send(production.url, "GET", path, headers).status == 200
                except OSError:
                    pass
            time.sleep(0.25)
        duration = time.monotonic() - started
    finally:
        stop.set()
        for attacker in attackers:
            attacker.__exit__()
    creates = production.gunicorn.access_log.read_text().count('"POST /dashboard/api-keys ') - creates_before

    print(
        f"slow clients through nginx: {answered}/{sent} answered in {duration:.1f} s; attack connections open "
        f"{min(held)}-{max(held)} of {len(attackers)}; opened {sum(a.connections for a in attackers)}, "
        f"dropped by nginx {sum(a.dropped for a in attackers)}; "
        f"shortest-held slow body {min(a.longest for a in attackers[SLOW_HEADERS:]):.1f} s"
    )
    assert duration >= 20
    assert sent >= 40
    assert answered == sent
    # The attack was real: all 20 connections were open nearly all the time (a header connection nginx drops
    # after its 5 s is opened again at once), and the slow bodies were held for the whole run.
    assert sorted(held)[len(held) // 10] >= SLOW_HEADERS + SLOW_BODIES - 2
    assert min(a.longest for a in attackers[SLOW_HEADERS:]) >= 20
    # ... and gunicorn never saw one of them: nginx holds a request until it is whole.
    assert creates == 0


def test_the_same_attack_straight_at_gunicorn_answers_nobody(workdir):
    """Why the deployment above has nginx in front: two sync workers, each held by one slow client."""
    gunicorn, _ = make_service(workdir / "exposed-apikeys", workers=2)
    stop = threading.Event()
    sent, answered = 0, 0
    with gunicorn:
        attackers = slow_clients(gunicorn.url, stop, host="127.0.0.1")
        try:
            for attacker in attackers:
                attacker.__enter__()
            time.sleep(1)
            started = time.monotonic()
            while time.monotonic() - started < 6:
                sent += 1
                try:
                    parts = urllib.parse.urlsplit(gunicorn.url)
                    with socket.create_connection((parts.hostname, parts.port), timeout=2) as sock:
                        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        answered += sock.recv(100).startswith(b"HTTP/1.1 200")
                except OSError:
                    pass
        finally:
            # Closed before gunicorn stops, so its workers see the end of their requests and exit at once.
            for attacker in attackers:
                attacker.__exit__()
    print(f"slow clients straight at gunicorn: {answered}/{sent} answered")
    assert sent >= 2
    assert answered == 0
