"""HTTP phases against a running apikeys server: creating keys, uncached first verifications, the flood."""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field

from loadgen import REQUEST_TIMEOUT
from loadgen import request_once

from apikeys import keys
from apikeys.verify import API_KEY_HEADER

ENVIRONMENT = "test"
CACHE_HIT_S = 0.15  # a bcrypt-12 check alone takes about 0.25 s; a cache hit a few ms


@dataclass(frozen=True)
class Answer:
    """One response: its status, its error code (if any), how long it took."""

    status: int
    code: str | None
    seconds: float


def _answer(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> Answer:
    try:
        status, body, seconds = request_once(conn, path, headers)
    except (OSError, http.client.HTTPException) as error:
        conn.close()
        return Answer(0, type(error).__name__, 0.0)
    code = None
    if status >= 300:
        try:
            code = json.loads(body).get("code")
        except (ValueError, AttributeError):
            code = None
    return Answer(status, code, seconds)


def run_distinct(port: int, path: str, header_sets: list[dict[str, str]], concurrency: int, budget_s: float):
    """Send one request per header set from ``concurrency`` threads; return answers and wall seconds.

    Stops handing out work when ``budget_s`` is spent; requests already sent finish.
    """
    answers: list[Answer] = []
    lock = threading.Lock()
    position = iter(range(len(header_sets)))
    deadline = time.monotonic() + budget_s

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            while time.monotonic() < deadline:
                with lock:
                    index = next(position, None)
                if index is None:
                    return
                answer = _answer(conn, path, header_sets[index])
                with lock:
                    answers.append(answer)
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=budget_s + REQUEST_TIMEOUT + 5)
    return answers, time.monotonic() - started


def create_keys(port: int, token: str, count: int, concurrency: int = 8) -> list[dict]:
    """Create ``count`` keys through POST /dashboard/api-keys; return id, public_key, secret_key and full_key."""
    created: list[dict] = []
    lock = threading.Lock()
    remaining = iter(range(count))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    index = next(remaining, None)
                if index is None:
                    return
                body = json.dumps({"name": f"bench key {index}", "environment": ENVIRONMENT})
                conn.request("POST", "/dashboard/api-keys", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status != 201:
                    raise RuntimeError(f"creating a key answered {response.status}")
                data = json.loads(payload)["data"]
                key = {"id": data["id"], "public_key": data["publicKey"], "secret_key": data["secretKey"]}
                key["full_key"] = data["fullKey"]
                with lock:
                    created.append(key)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    if len(created) != count:
        raise RuntimeError(f"created {len(created)} of {count} keys; see the server log")
    return created


def latency_summary(answers: list[Answer], seconds: float) -> dict:
    """Return requests/s, p50 and p99 (ms) and the statuses of a list of answers."""
    latencies = sorted(answer.seconds for answer in answers if answer.status)
    if not latencies:
        return {"requests": 0, "rps": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "statuses": {}}
    p99 = latencies[max(0, -(-len(latencies) * 99 // 100) - 1)]
    return {
        "requests": len(answers),
        "rps": len(answers) / seconds if seconds else 0.0,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": p99 * 1000,
        "statuses": dict(Counter(answer.status for answer in answers)),
    }


def uncached(port: int, created: list[dict], concurrency: int, budget_s: float) -> dict:
    """Verify each key once (no worker has seen it) and summarise: bcrypt at full rounds every time."""
    header_sets = [{API_KEY_HEADER: key["full_key"]} for key in created]
    answers, seconds = run_distinct(port, "/verify", header_sets, concurrency, budget_s)
    return latency_summary(answers, seconds) | {"keys": len(created), "concurrency": concurrency}


@dataclass
class FloodResult:
    """What a wrong-secret flood did, and what the key's holder saw meanwhile."""

    warmup: str
    attempts: int
    seconds: float
    codes: Counter = field(default_factory=Counter)
    holder: Counter = field(default_factory=Counter)
    holder_max_ms: float = 0.0
    summary: dict = field(default_factory=dict)


def wrong_keys(public_key: str, real_secret: str, count: int) -> list[str]:
    """Return ``count`` distinct, well-formed keys for ``public_key`` with valid checksums and wrong secrets."""
    found: set[str] = set()
    for _ in range(count * 2):
        secret = keys.new_secret(ENVIRONMENT)
        if secret != real_secret:
            found.add(f"{public_key}.{secret}")
        if len(found) == count:
            break
    if len(found) != count or any(keys.parse_full_key(key) is None for key in found):
        raise RuntimeError("could not make distinct well-formed wrong keys")
    return sorted(found)


def warm_holder(port: int, full_key: str, everywhere: bool) -> str:
    """Verify the holder's key once, or until a batch of concurrent probes all hit the cache."""
    headers = {API_KEY_HEADER: full_key}
    if not everywhere:
        answers, _ = run_distinct(port, "/verify", [headers], 1, 30)
        if [answer.status for answer in answers] != [200]:
            raise RuntimeError("the holder's key was refused before the flood")
        return "verified once"
    for attempt in range(1, 6):
        # Eight requests in flight at once keep every one of the 4 sync workers busy, so each gets one.
        answers, _ = run_distinct(port, "/verify", [headers] * 8, 8, 30)
        if any(answer.status != 200 for answer in answers):
            raise RuntimeError("the holder's key was refused before the flood")
        if max(answer.seconds for answer in answers) < CACHE_HIT_S:
            return f"warmed in every worker ({attempt} batch(es) of 8 concurrent; last batch all cache hits)"
    return "warmed with 5 batches of 8 concurrent (some probes still slow)"


def flood(port: int, victim: dict, attempts: int, concurrency: int, everywhere: bool, interval_s: float = 0.05):
    """Send ``attempts`` wrong secrets for one key from ``concurrency`` threads while its holder keeps verifying."""
    wrong = wrong_keys(victim["public_key"], victim["secret_key"], attempts)
    warmup = warm_holder(port, victim["full_key"], everywhere)
    done = threading.Event()
    result = FloodResult(warmup=warmup, attempts=attempts, seconds=0.0)
    holder_headers = {API_KEY_HEADER: victim["full_key"]}

    def holder():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            for _ in range(int(120 / interval_s)):  # bounded even if the flood hangs
                tick = time.monotonic()
                answer = _answer(conn, "/verify", holder_headers)
                result.holder[(answer.status, answer.code)] += 1
                result.holder_max_ms = max(result.holder_max_ms, answer.seconds * 1000)
                if done.is_set():
                    return
                time.sleep(max(0.0, interval_s - (time.monotonic() - tick)))
        finally:
            conn.close()

    holder_thread = threading.Thread(target=holder, daemon=True)
    holder_thread.start()
    try:
        answers, result.seconds = run_distinct(
            port, "/verify", [{API_KEY_HEADER: key} for key in wrong], concurrency, budget_s=90
        )
    finally:
        done.set()
        holder_thread.join(timeout=REQUEST_TIMEOUT + 5)
    result.codes = Counter((answer.status, answer.code) for answer in answers)
    result.summary = latency_summary(answers, result.seconds)
    return result
