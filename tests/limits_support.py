"""Helpers for the rate-limit and quota tests through real gunicorn: servers, a redis-server of the test's own, calls.

Nothing here prints or logs a key: answers keep the status, headers and body, and
``Key`` hides its secret from repr (pytest shows locals when an assertion fails).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import NamedTuple

import redis

from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import free_port
from tests.servers import service_env

TENANT = "acme"
# No control socket (as test_dashboard_limits): two servers of one test never meet under one $HOME anyway.
GUNICORN_ARGS = "--no-control-socket"


class Answer(NamedTuple):
    """One /verify answer and when the client sent the request and read the answer (time.time(), this host's clock)."""

    status: int
    headers: http.client.HTTPMessage
    body: dict | None
    sent: float
    received: float

    def header_int(self, name: str) -> int | None:
        value = self.headers.get(name)
        return None if value is None else int(value)


@dataclass(frozen=True)
class Key:
    """A key made through the dashboard API; its full key stays out of repr."""

    id: str
    full_key: str = field(repr=False)


def start_server(
    tmp_path: Path, name: str, database_url: str, jwt_secret: str, workers: int, **settings: str
) -> Gunicorn:
    """Start gunicorn -w ``workers`` with a folder of its own under ``tmp_path``: its HOME, instance folder and logs."""
    home = tmp_path / name
    home.mkdir()
    env = service_env(
        database_url,
        jwt_secret,
        home / "instance",
        APIKEYS_LOG_FORMAT="json",  # the tests count the WARNING lines by level
        GUNICORN_CMD_ARGS=GUNICORN_ARGS,
        **settings,
    )
    return Gunicorn(home, env, workers=workers).start()


def create_key(server: Gunicorn, token: str, *, rate_limit: dict | None = None, quota: dict | None = None) -> Key:
    """Create a live key with this policy (the dashboard API's camelCase shape) and return it."""
    body = {"name": "limited", "environment": "live", "rateLimit": rate_limit, "quota": quota}
    status, answer = call(server.url, "POST", "/dashboard/api-keys", token=token, body=body)
    assert status == 201, (status, answer and answer.get("errors"), answer and answer.get("message"))
    data = answer["data"]
    assert data["rateLimit"] == rate_limit
    if quota is not None:
        assert data["quota"]["remaining"] == quota["remaining"]
    return Key(data["id"], data["fullKey"])


def get_key(server: Gunicorn, token: str, key: Key) -> dict:
    status, answer = call(server.url, "GET", f"/dashboard/api-keys/{key.id}", token=token)
    assert status == 200, status
    return answer["data"]


def verify(server: Gunicorn, key: Key | None, *, cost: int | None = None, query: str = "") -> Answer:
    """GET /verify on a connection of its own (gunicorn's sync workers close it anyway)."""
    headers = {"Connection": "close"}
    if key is not None:
        headers["X-Api-Key"] = key.full_key
    if cost is not None:
        headers["X-Api-Key-Cost"] = str(cost)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    sent = time.time()
    try:
        conn.request("GET", "/verify" + query, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        received = time.time()
        return Answer(response.status, response.headers, json.loads(payload) if payload else None, sent, received)
    finally:
        conn.close()


def metric_total(server: Gunicorn, name: str, **labels: str) -> float:
    """Return the sum of /metrics samples called ``name`` whose labels include ``labels``."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        text = response.read().decode()
        status = response.status
    finally:
        conn.close()
    assert status == 200, status
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(label) == value for label, value in labels.items()):
            total += float(match.group(3))
    return total


def app_log_records(server: Gunicorn) -> list[dict]:
    """The app's JSON log records (APIKEYS_LOG_FORMAT=json writes them to stderr, which the helper keeps in a file)."""
    records = []
    for line in server.logs().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def next_window_start(period: int) -> int:
    """Return the next multiple of ``period`` seconds since the epoch: where the next fixed window starts."""
    return (math.floor(time.time() / period) + 1) * period


def server_window_end(answer: Answer, period: int) -> int:
    """Return the end of the fixed window the server counted ``answer`` in, from its RateLimit-Reset header.

    The server decided at some moment t in [sent, received] (same host, same clock), and
    RateLimit-Reset = ceil(end - t), so end lies in (sent + reset - 1, received + reset].
    End is a multiple of ``period``; while the interval is shorter than ``period`` (an
    answer within about period - 1 seconds) exactly one multiple fits. Server and client
    may read the clock a few milliseconds apart, hence the small margin either side.
    """
    reset = answer.header_int("RateLimit-Reset")
    assert reset is not None and 1 <= reset <= period, reset
    margin = 0.05
    low, high = answer.sent + reset - 1 - margin, answer.received + reset + margin
    ends = [
        end for end in range(math.floor(low / period) * period, math.ceil(high) + period, period) if low < end <= high
    ]
    assert len(ends) == 1, (answer.sent, answer.received, reset, ends)
    return ends[0]


class RedisServer:
    """A redis-server of the test's own on a free port: no snapshot, no append-only file; stopped by its pid."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.folder.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.folder), "--logfile", str(self.log)]
        self.process = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return self
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.log}")
            time.sleep(0.05)

    def client(self):
        """A redis-py client of the test's own: one connection, closed with ``with``."""
        return redis.Redis(port=self.port, socket_timeout=5, single_connection_client=True)

    def kill(self) -> None:
        """kill -9 this redis-server (the process the test started, by its pid), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def command_counts(client) -> dict[str, int]:
    """Return redis' count of calls per command (INFO commandstats), without the INFO calls the test makes itself."""
    stats = client.info("commandstats")
    return {name: entry["calls"] for name, entry in stats.items() if name != "cmdstat_info"}
