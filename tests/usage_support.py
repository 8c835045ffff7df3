"""Helpers for the usage tests through real gunicorn (issue 20): keys, a verification mix, worker pids, reading counts.

Nothing here prints or logs a key: ``Key`` hides its full key from repr, and a
verification's answer is kept as its status and code only.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa

from apikeys import keys
from apikeys.storage import tables
from tests.limits_support import start_server
from tests.servers import Gunicorn
from tests.servers import call

# The API's result names, in the order the contract lists them; and the table's column for each.
RESULTS = (
    "valid",
    "invalidSecret",
    "disabled",
    "expired",
    "wrongEnvironment",
    "insufficientScope",
    "rateLimited",
    "usageExceeded",
)
COLUMNS = {
    "valid": "valid",
    "invalidSecret": "invalid_secret",
    "disabled": "disabled",
    "expired": "expired",
    "wrongEnvironment": "wrong_environment",
    "insufficientScope": "insufficient_scope",
    "rateLimited": "rate_limited",
    "usageExceeded": "usage_exceeded",
}
# What /verify answers for each kind of presentation the tests send: (status, code). "unknown" is a
# well-formed key whose public key no row has; "missing" and "malformed" never reach a row and are not counted.
ANSWERS = {
    "valid": (200, None),
    "invalidSecret": (401, "INVALID_API_KEY"),
    "disabled": (403, "API_KEY_DISABLED"),
    "wrongEnvironment": (403, "WRONG_ENVIRONMENT"),
    "insufficientScope": (403, "INSUFFICIENT_SCOPE"),
    "unknown": (401, "INVALID_API_KEY"),
    "missing": (401, "MISSING_API_KEY"),
    "malformed": (401, "INVALID_API_KEY"),
}


@dataclass(frozen=True)
class Key:
    """A key made through the dashboard API; its full key stays out of repr."""

    id: str
    public_key: str
    environment: str
    full_key: str = field(repr=False)

    def wrong_secret(self) -> str:
        """This key's public key with another secret of its environment: a valid checksum, the wrong secret."""
        return f"{self.public_key}.{keys.new_secret(self.environment)}"


class Request(NamedTuple):
    """One /verify to send: which result it should be counted under, and what to send."""

    result: str
    key_id: str | None
    full_key: str | None = None
    query: str = ""
    required_scopes: str | None = None


def unknown_key() -> str:
    """A well-formed live key whose public key no row has."""
    return f"{keys.new_public_key('live')}.{keys.new_secret('live')}"


def malformed_key() -> str:
    """A key-shaped string whose checksum is wrong: refused before any database read."""
    secret = keys.new_secret("live")
    last = "A" if secret[-1] != "A" else "B"
    return f"{keys.new_public_key('live')}.{secret[:-1]}{last}"


def server(tmp_path: Path, name: str, database: str, jwt_secret: str, workers: int, **settings: str) -> Gunicorn:
    """Start gunicorn -w ``workers`` in a folder of its own (HOME, instance folder, logs) under ``tmp_path``."""
    return start_server(tmp_path, name, database, jwt_secret, workers, **settings)


def create_key(host: Gunicorn, token: str, *, name: str, scopes: list[str] | None = None) -> Key:
    """Create a live key through the dashboard API and return it."""
    body = {"name": name, "environment": "live", "scopes": scopes or []}
    status, answer = call(host.url, "POST", "/dashboard/api-keys", token=token, body=body)
    assert status == 201, (status, answer and answer.get("errors"), answer and answer.get("message"))
    data = answer["data"]
    return Key(data["id"], data["publicKey"], data["environment"], data["fullKey"])


def disable(host: Gunicorn, token: str, key: Key) -> None:
    status, answer = call(host.url, "POST", f"/dashboard/api-keys/{key.id}/toggle", token=token)
    assert status == 200, status
    assert answer["data"]["active"] is False


def verify(host: Gunicorn, request: Request) -> tuple[int, str | None]:
    """Send one /verify on a connection of its own and return (status, X-Api-Key-Error)."""
    headers = {"Connection": "close"}
    if request.full_key is not None:
        headers["X-Api-Key"] = request.full_key
    if request.required_scopes is not None:
        headers["X-Api-Key-Required-Scopes"] = request.required_scopes
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=30)
    try:
        conn.request("GET", "/verify" + request.query, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.headers.get("X-Api-Key-Error")
    finally:
        conn.close()


def worker_pids(host: Gunicorn) -> list[int]:
    """The pids of the gunicorn master's children (its workers), read from /proc."""
    master = host.process.pid
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            # pid (comm) state ppid ...: the command name may hold spaces and parentheses, so split after the last ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(entry))
    return sorted(children)


def wait_for_workers(host: Gunicorn, count: int, timeout: float = 30) -> list[int]:
    """Wait until the master has ``count`` children and return their pids."""
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(host)
        if len(pids) == count or time.monotonic() > deadline:
            assert len(pids) == count, pids
            return pids
        time.sleep(0.05)


def read(host: Gunicorn, token: str, path: str) -> dict:
    """GET a dashboard usage answer and return its ``data``."""
    status, answer = call(host.url, "GET", path, token=token)
    assert status == 200, (status, answer)
    assert answer["statusCode"] == 200
    return answer["data"]


def assert_totals_add_up(data: dict) -> None:
    """The answer's totals are the sum of its buckets, which carry exactly the eight result names."""
    sums = Counter()
    for bucket in data["buckets"]:
        assert set(bucket) == {"start", *RESULTS}, sorted(bucket)
        sums.update({name: bucket[name] for name in RESULTS})
    assert data["totals"] == {name: sums[name] for name in RESULTS}


def totals(**counts: int) -> dict[str, int]:
    """The eight results' totals: these counts, every other one zero."""
    assert set(counts) <= set(RESULTS), counts
    return {name: counts.get(name, 0) for name in RESULTS}


def stored_rows(database: str) -> list[dict]:
    """Every row of the usage table, as dicts."""
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(tables.usage_buckets))]
    finally:
        engine.dispose()


def stored_sum(database: str) -> int:
    """The sum of every count in the usage table."""
    columns = [column for column in tables.usage_buckets.c if column.name in tables.USAGE_RESULTS]
    return sum(sum(row[column.name] for column in columns) for row in stored_rows(database))
