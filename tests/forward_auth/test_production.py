"""The shipped production deployment (examples/nginx/production.conf) holds against slow clients: a real nginx
with that file in front of apikeys under gunicorn keeps answering while slow connections hang on; the same
attack straight at gunicorn answers nobody."""

from __future__ import annotations

import secrets
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from dataclasses import field

import pytest
import sqlalchemy as sa

from apikeys import db
from tests.forward_auth.support import EXAMPLES
from tests.forward_auth.support import Key
from tests.forward_auth.support import Nginx
from tests.forward_auth.support import Proxy
from tests.forward_auth.support import Service
from tests.forward_auth.support import assert_identity
from tests.forward_auth.support import assert_refused
from tests.forward_auth.support import render
from tests.forward_auth.support import send
from tests.servers import Gunicorn
from tests.servers import free_port
from tests.servers import service_env

pytestmark = pytest.mark.slow

PRODUCTION_EXAMPLE = EXAMPLES / "nginx" / "production.conf"
KEYS_HOST = "keys.example.com"
API_HOST = "api.example.com"
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


def make_service(directory, workers: int) -> tuple[Gunicorn, str]:
    """apikeys under gunicorn with ``workers`` sync workers on a SQLite file of its own."""
    directory.mkdir()
    url = f"sqlite:///{directory / 'apikeys.sqlite3'}"
    engine = sa.create_engine(url)
    db.upgrade(engine)
    engine.dispose()
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(url, jwt_secret, directory / "instance")
    return Gunicorn(directory, env, workers=workers), jwt_secret


@dataclass
class Production:
    """The running stack: nginx with the shipped file, apikeys under gunicorn behind it, and a key it issued."""

    url: str
    gunicorn: Gunicorn
    key: Key


@pytest.fixture(scope="module")
def production(nginx_program, application, workdir):
    """examples/nginx/production.conf run by a real nginx, in front of apikeys (2 sync workers) and ``application``."""
    gunicorn, jwt_secret = make_service(workdir / "production-apikeys", workers=2)
    with gunicorn:
        key = Service(gunicorn.url, jwt_secret).create_key("acme")
        port = free_port()
        site = render(
            PRODUCTION_EXAMPLE,
            {
                "server 127.0.0.1:8000;": f"server 127.0.0.1:{gunicorn.port};",
                "server 127.0.0.1:9000;": f"server 127.0.0.1:{application.server_address[1]};",
            },
        )
        nginx = Nginx(nginx_program, workdir / "production-nginx", render_listen(site, port), port)
        try:
            nginx.start()
            yield Production(nginx.url, gunicorn, key)
        finally:
            nginx.stop()


@pytest.mark.parametrize(
    ("path", "status"),
    [("/healthz", 200), ("/openapi.json", 200), ("/docs", 200), ("/dashboard/api-keys", 401), ("/verify", 404)],
)
def test_the_keys_server_passes_apikeys_own_paths_only(production, path, status):
    answer = send(production.url, "GET", path, {"Host": KEYS_HOST, "X-Api-Key": production.key.full_key})

    assert answer.status == status  # /verify is asked internally by the API server, never from outside


def test_the_keys_server_refuses_a_body_over_64_kib_before_apikeys_reads_it(production):
    body = b"{" + b" " * (64 * 1024) + b"}"
    answer = send(production.url, "POST", "/dashboard/api-keys", {"Host": KEYS_HOST}, body)

    assert answer.status == 413
    assert b"nginx" in answer.body  # nginx's own page: the request never reached a worker


def test_the_api_server_checks_every_request_with_apikeys(production, application):
    proxy = Proxy(production.url, application)
    answer, seen = proxy.request("POST", "/orders", {"Host": API_HOST, "X-Api-Key": production.key.full_key}, b"{}")
    assert answer.status == 200
    assert_identity(seen[0], production.key)

    answer, seen = proxy.request("GET", "/orders", {"Host": API_HOST, "X-Tenant-Id": "acme"})
    assert_refused(answer, seen, 401)


def test_the_production_stack_answers_everyone_while_slow_clients_hang_on(production):
    stop = threading.Event()
    sent, answered, held, attackers = 0, 0, [], slow_clients(production.url, stop, host=KEYS_HOST)
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
    access = production.gunicorn.access_log.read_text()

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
    # after its 10 s is opened again at once), and the slow bodies were held for the whole run.
    assert sorted(held)[len(held) // 10] >= SLOW_HEADERS + SLOW_BODIES - 2
    assert min(a.longest for a in attackers[SLOW_HEADERS:]) >= 20
    # ... and gunicorn never saw one of them (only the test's own create): nginx holds a request until it is whole.
    assert access.count('"POST /dashboard/api-keys ') == 1


def render_listen(site: str, port: int) -> str:
    """Both servers of the example listen on the test's port, told apart by name as in production."""
    placeholder = "listen 8080;"
    assert site.count(placeholder) == 2, f"{PRODUCTION_EXAMPLE.name} must hold {placeholder!r} twice"
    return site.replace(placeholder, f"listen 127.0.0.1:{port};")


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
