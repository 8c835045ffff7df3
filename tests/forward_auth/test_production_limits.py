"""examples/nginx/production.conf caps what one client address can hold: many slow bodies to POST
/dashboard/api-keys from one address, more than nginx has connections for, leave everyone else answered."""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

import pytest

from tests.forward_auth.production import API_HOST
from tests.forward_auth.production import KEYS_HOST
from tests.forward_auth.production import running_production

pytestmark = pytest.mark.slow

# The test's nginx has worker_connections 128 (tests/forward_auth/support.py): more attackers than that.
ATTACKERS = 150
HOLD_SECONDS = 12
BYTE_EVERY = 1.0  # well inside client_body_timeout: no timeout ever ends these requests
# All test traffic is on loopback: the attacker comes from 127.0.0.2 (any 127/8 address works on Linux), so that a
# per-address limit that stopped it would not stop the normal client on 127.0.0.1 too.
ATTACKER_ADDRESS = "127.0.0.2"


@dataclass
class SlowBody:
    """One attacker connection: a create whose 4,000-byte body comes a byte a second; reopened when nginx drops it."""

    address: tuple[str, int]
    stop: threading.Event
    connections: int = 0
    longest: float = 0.0

    def run(self) -> None:
        start = (
            f"POST /dashboard/api-keys HTTP/1.1\r\nHost: {KEYS_HOST}\r\nContent-Type: application/json\r\n"
            "Content-Length: 4000\r\n\r\n{"
        ).encode()
        while not self.stop.is_set():
            opened = time.monotonic()
            try:
                with socket.create_connection(self.address, timeout=5, source_address=(ATTACKER_ADDRESS, 0)) as sock:
                    self.connections += 1
                    sock.sendall(start)
                    while not self.stop.wait(BYTE_EVERY):
                        if select.select([sock], [], [], 0)[0]:  # closed by nginx (or answered): done with this one
                            break
                        sock.sendall(b" ")
            except OSError:
                pass
            self.longest = max(self.longest, time.monotonic() - opened)
            self.stop.wait(0.2)  # then straight back


def answered(url: str, path: str, headers: dict[str, str]) -> bool:
    """Whether a normal client on 127.0.0.1 gets a 200 within 3 s."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=3)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="module")
def production(nginx_program, application, workdir):
    with running_production(nginx_program, application, workdir / "production-limits") as stack:
        yield stack


def test_one_address_with_many_slow_bodies_cannot_stop_the_others(production):
    parts = urllib.parse.urlsplit(production.url)
    stop = threading.Event()
    attackers = [SlowBody((parts.hostname, parts.port), stop) for _ in range(ATTACKERS)]
    threads = [threading.Thread(target=a.run, daemon=True) for a in attackers]
    probes = [
        ("/healthz", {"Host": KEYS_HOST}),
        ("/orders/42", {"Host": API_HOST, "X-Api-Key": production.key.full_key}),
    ]
    sent = ok = 0
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.5)  # every attacker has connected at least once
        started = time.monotonic()
        while time.monotonic() - started < HOLD_SECONDS:
            for path, headers in probes:
                sent += 1
                ok += answered(production.url, path, headers)
            time.sleep(0.25)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    held = sorted((a.longest for a in attackers), reverse=True)

    print(
        f"{ATTACKERS} slow bodies from {ATTACKER_ADDRESS}: {ok}/{sent} normal requests answered; "
        f"{sum(a.connections for a in attackers)} attack connections opened, "
        f"{sum(t >= HOLD_SECONDS for t in held)} held for the whole run"
    )
    # The attack was real: nginx kept 16 slow bodies (the per-address limit) waiting for the whole run ...
    assert held[15] >= HOLD_SECONDS
    # ... and every connection past them was tried again and again.
    assert sum(a.connections for a in attackers) > 2 * ATTACKERS
    assert sent >= 40
    assert ok == sent
