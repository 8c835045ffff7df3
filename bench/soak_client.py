"""The soak's clients: each owns its keys, so it knows exactly what every answer must be."""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field

OPERATIONS = ("create", "list", "verify", "toggle", "regenerate", "delete")
WEIGHTS = {"verify": 50, "list": 15, "create": 10, "toggle": 10, "regenerate": 8, "delete": 7}
REQUEST_TIMEOUT = 30.0
MAX_RECORDED_ERRORS = 10
DELETED_REMEMBERED = 32  # per client: deleted keys kept to check that they now answer 401
DELETED_VERIFY_SHARE = 0.1  # of verifications, when the client has deleted keys to present

# Anything that looks like a secret or a token never reaches our output, even in an error excerpt.
SECRET_PATTERN = re.compile(r"(sk_(live|test)_[0-9A-Za-z]{38}|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*|pk_\w+\.sk_\w+)")


def redact(text: str) -> str:
    """Replace anything secret-looking in ``text``."""
    return SECRET_PATTERN.sub("[redacted]", text)


@dataclass
class Key:
    """What a client believes about one of its keys."""

    id: str
    full_key: str
    active: bool = True


@dataclass
class OperationStats:
    """Latencies (seconds), statuses and errors of one operation."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0

    def merge(self, other: OperationStats) -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.errors += other.errors


class ErrorLog:
    """Counts every error and keeps the first few, with nothing secret in them."""

    def __init__(self, limit: int = MAX_RECORDED_ERRORS):
        self.limit = limit
        self.first: list[str] = []
        self.count = 0
        self._lock = threading.Lock()

    def add(self, operation: str, method: str, path: str, status: int, detail: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.first) < self.limit:
                excerpt = redact(" ".join(detail.split()))[:200]
                self.first.append(f"{operation}: {method} {path} -> {status or 'no answer'}: {excerpt}")


class Client:
    """One connection's worth of load: a loop of weighted operations on the client's own keys."""

    def __init__(self, number: int, port: int, tenant: str, token: str, errors: ErrorLog, seed: int):
        self.number = number
        self.port = port
        self.tenant = tenant
        self.bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.errors = errors
        self.rng = random.Random(seed)
        self.keys: list[Key] = []
        self.deleted: list[Key] = []
        self.uncertain: set[str] = set()  # keys whose state an unanswered or failed write left unknown
        self.uncertain_creates = 0
        self.acknowledged = Counter()  # "create" (201) and "delete" (200)
        self.stats = {operation: OperationStats() for operation in OPERATIONS}
        self.verify_expected = Counter()  # 200 / 403 / 401, what the verifications expected
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        self._names = 0

    # -- HTTP ---------------------------------------------------------------------------------------------------

    def request(self, operation: str, method: str, path: str, headers: dict, body: dict | None = None):
        """Send one request; return (status, headers, parsed JSON or None); status 0 when no answer came."""
        payload = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.conn.close()  # the next request opens a fresh connection
            self.stats[operation].latencies.append(time.perf_counter() - started)
            self.stats[operation].statuses[0] += 1
            self.fail(operation, method, path, 0, type(error).__name__)
            return 0, {}, None
        self.stats[operation].latencies.append(time.perf_counter() - started)
        self.stats[operation].statuses[response.status] += 1
        if response.will_close:  # gunicorn's sync workers close after every answer
            self.conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = {"unparsed": raw[:200].decode(errors="replace")}
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def fail(self, operation: str, method: str, path: str, status: int, detail) -> None:
        self.stats[operation].errors += 1
        self.errors.add(operation, method, path, status, detail if isinstance(detail, str) else json.dumps(detail))

    def close(self) -> None:
        self.conn.close()

    # -- the loop -----------------------------------------------------------------------------------------------

    def run(self, deadline: float, max_requests: int = 10_000_000) -> None:
        """Run operations until the deadline (or ``max_requests``), then close the connection."""
        operations = list(WEIGHTS)
        weights = list(WEIGHTS.values())
        try:
            for _ in range(max_requests):
                if time.monotonic() >= deadline:
                    break
                operation = self.rng.choices(operations, weights)[0]
                if operation not in ("create", "list") and not self.keys:
                    operation = "create"  # nothing of our own to act on yet
                getattr(self, f"do_{operation}")()
        finally:
            self.close()

    def pick(self) -> tuple[int, Key]:
        index = self.rng.randrange(len(self.keys))
        return index, self.keys[index]

    def forget(self, index: int) -> Key:
        """Remove a key from the live list (swap with the last, pop)."""
        self.keys[index], self.keys[-1] = self.keys[-1], self.keys[index]
        return self.keys.pop()

    def mark_uncertain(self, index: int) -> None:
        self.uncertain.add(self.forget(index).id)

    # -- operations ---------------------------------------------------------------------------------------------

    def do_create(self) -> None:
        self._names += 1
        environment = "live" if self._names % 2 else "test"
        body = {"name": f"soak c{self.number} n{self._names}", "environment": environment}
        path = "/dashboard/api-keys"
        status, _, data = self.request("create", "POST", path, self.bearer, body)
        if status == 201:
            key = (data or {}).get("data") or {}
            if not key.get("id") or not str(key.get("fullKey", "")).startswith(f"pk_{environment}_"):
                self.fail("create", "POST", path, status, "the answer has no id or no fullKey of the environment")
                self.uncertain_creates += 1
                return
            self.acknowledged["create"] += 1
            self.keys.append(Key(key["id"], key["fullKey"]))
            return
        if status == 0 or status >= 500:
            self.uncertain_creates += 1
        if status != 0:
            self.fail("create", "POST", path, status, data)

    def do_list(self) -> None:
        path = "/dashboard/api-keys?page=1&limit=20"
        status, _, data = self.request("list", "GET", path, self.bearer)
        if status == 0:
            return
        page = (data or {}).get("data") or {}
        if status != 200:
            self.fail("list", "GET", path, status, data)
        elif SECRET_PATTERN.search(json.dumps(data)):
            self.fail("list", "GET", path, status, "the list shows a secret")
        elif not isinstance(page.get("total"), int) or page["total"] < len(self.keys):
            # Our own keys all exist while we wait for this answer; other clients may only add to them.
            self.fail("list", "GET", path, status, f"total {page.get('total')} < this client's {len(self.keys)} keys")
        elif len(page.get("items", [])) > 20:
            self.fail("list", "GET", path, status, "more items than the limit")

    def do_verify(self) -> None:
        if self.deleted and self.rng.random() < DELETED_VERIFY_SHARE:
            key, expected = self.rng.choice(self.deleted), 401
        else:
            key = self.pick()[1]
            expected = 200 if key.active else 403
        self.verify_expected[expected] += 1
        status, headers, data = self.request("verify", "GET", "/verify", {"X-Api-Key": key.full_key})
        if status == 0:
            return
        if status != expected:
            self.fail("verify", "GET", "/verify", status, f"expected {expected} for {key.id}: {json.dumps(data)}")
        elif expected == 200 and (headers.get("x-api-key-id") != key.id or headers.get("x-tenant-id") != self.tenant):
            self.fail("verify", "GET", "/verify", status, f"200 names another key or tenant than {key.id}")

    def do_toggle(self) -> None:
        index, key = self.pick()
        path = f"/dashboard/api-keys/{key.id}/toggle"
        status, _, data = self.request("toggle", "POST", path, self.bearer)
        active = ((data or {}).get("data") or {}).get("active")
        if status == 200 and active is (not key.active):
            key.active = active
            return
        self.mark_uncertain(index)
        if status != 0:
            self.fail("toggle", "POST", path, status, f"expected active={not key.active}: {json.dumps(data)}")

    def do_regenerate(self) -> None:
        index, key = self.pick()
        path = f"/dashboard/api-keys/{key.id}/regenerate"
        status, _, data = self.request("regenerate", "POST", path, self.bearer)
        answer = (data or {}).get("data") or {}
        if status == 200 and answer.get("id") == key.id and answer.get("fullKey"):
            key.full_key = answer["fullKey"]
            return
        self.mark_uncertain(index)
        if status != 0:
            self.fail("regenerate", "POST", path, status, data)

    def do_delete(self) -> None:
        index, key = self.pick()
        path = f"/dashboard/api-keys/{key.id}"
        status, _, data = self.request("delete", "DELETE", path, self.bearer)
        if status == 200:
            self.acknowledged["delete"] += 1
            self.deleted.append(self.forget(index))
            del self.deleted[:-DELETED_REMEMBERED]
            return
        self.mark_uncertain(index)
        if status != 0:
            self.fail("delete", "DELETE", path, status, data)
