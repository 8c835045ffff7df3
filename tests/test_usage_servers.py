"""Usage per key through real gunicorn (issue 20): exact counts across workers and hosts, kill -9, retention, off.

Each worker counts in memory and writes its counts every APIKEYS_USAGE_FLUSH_SECONDS and
when it stops gracefully. With an interval of 60 s, longer than any of these runs, only
the stop's write can bring the database to the exact mix: so the exactness test is also
the proof that a graceful stop writes. The counts are read back through the API of a
server started afterwards on the same database, which has counted nothing itself.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
import sqlalchemy as sa

from apikeys.storage import tables
from tests.servers import postgres_database
from tests.servers import token_for
from tests.usage_support import ANSWERS
from tests.usage_support import COLUMNS
from tests.usage_support import RESULTS
from tests.usage_support import Request
from tests.usage_support import assert_totals_add_up
from tests.usage_support import create_key
from tests.usage_support import disable
from tests.usage_support import malformed_key
from tests.usage_support import read
from tests.usage_support import server
from tests.usage_support import stored_rows
from tests.usage_support import stored_sum
from tests.usage_support import totals
from tests.usage_support import unknown_key
from tests.usage_support import verify
from tests.usage_support import wait_for_workers

pytestmark = pytest.mark.slow

CLIENTS = 16
# Keys of a third tenant, a few verifications each: every worker then holds many buckets at the stop, in an order of
# its own, and all of them write at once (the flushes that must not lose each other's counts).
SPREAD_KEYS = 24
SPREAD_EACH = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """An empty database (the first server started on it makes the tables): a SQLite file, or PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"
        return
    with postgres_database("apikeys_usage") as url:
        yield url


@pytest.fixture
def postgres():
    """An empty PostgreSQL database."""
    with postgres_database("apikeys_usage") as url:
        yield url


def stop(*hosts) -> None:
    """Stop gracefully (SIGTERM to master and workers, as systemd does) and check each master exited cleanly."""
    for host in hosts:
        host.stop()
        assert host.process.returncode == 0, host.process.returncode


@contextlib.contextmanager
def reader(tmp_path, name: str, database: str, jwt_secret: str):
    """A short-lived server on ``database`` to read the counts through the API; it verifies nothing itself."""
    host = server(tmp_path, name, database, jwt_secret, 1)
    try:
        yield host
    finally:
        stop(host)


# 1. Exact counts across workers and hosts


def the_mix(a, b, c, e, spread) -> list[Request]:
    """The known mix: per key and result, with requests that reach no key's row (unknown, missing, malformed)."""
    requests = [Request("valid", a.id, a.full_key) for _ in range(100)]
    requests += [Request("invalidSecret", a.id, a.wrong_secret()) for _ in range(40)]
    requests += [Request("wrongEnvironment", a.id, a.full_key, query="?environment=test") for _ in range(20)]
    requests += [Request("valid", b.id, b.full_key) for _ in range(25)]
    requests += [Request("valid", b.id, b.full_key, required_scopes="orders:read") for _ in range(25)]
    requests += [Request("insufficientScope", b.id, b.full_key, required_scopes="orders:write") for _ in range(25)]
    requests += [Request("disabled", c.id, c.full_key) for _ in range(30)]
    requests += [Request("valid", e.id, e.full_key) for _ in range(10)]
    requests += [Request("valid", key.id, key.full_key) for key in spread for _ in range(SPREAD_EACH)]
    requests += [Request("unknown", None, unknown_key()) for _ in range(15)]
    requests += [Request("missing", None) for _ in range(5)]
    requests += [Request("malformed", None, malformed_key()) for _ in range(10)]
    random.shuffle(requests)
    return requests


def test_counts_add_up_exactly_across_workers_and_hosts_after_a_graceful_stop(database, tmp_path, jwt_secret):
    """A known mix over 4 workers (PostgreSQL: two hosts of 4 workers each) from 16 clients, a graceful stop: the
    API's per-key and per-tenant totals equal the mix exactly, topKeys ranks the keys (ties by id), each tenant sees
    its own keys only, unknown keys count apart, missing and malformed keys nowhere."""
    acme, globex, initech = (token_for(jwt_secret, tenant) for tenant in ("acme", "globex", "initech"))
    names = ["host-a", "host-b"] if database.startswith("postgresql") else ["host"]
    with contextlib.ExitStack() as stack:
        hosts = []
        for name in names:  # one after the other: the first makes the tables
            host = server(tmp_path, name, database, jwt_secret, 4, APIKEYS_USAGE_FLUSH_SECONDS="60")
            stack.callback(host.stop)
            hosts.append(host)
        a = create_key(hosts[0], acme, name="a", scopes=["orders:read"])
        b = create_key(hosts[-1], acme, name="b", scopes=["orders:read"])
        c = create_key(hosts[0], acme, name="c")
        disable(hosts[-1], acme, c)
        e = create_key(hosts[0], globex, name="e")
        spread = [create_key(hosts[n % len(hosts)], initech, name=f"s{n}") for n in range(SPREAD_KEYS)]
        requests = the_mix(a, b, c, e, spread)
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            answers = list(pool.map(lambda n: verify(hosts[n % len(hosts)], requests[n]), range(len(requests))))
        for request, answer in zip(requests, answers, strict=True):
            assert answer == ANSWERS[request.result], (request.result, answer)
        # Nothing written yet (or not all of it): whatever makes the totals exact below is the stop's write.
        before = stored_sum(database)
        stop(*hosts)
        logs = "".join(host.logs() for host in hosts)
    sent = Counter((request.key_id, request.result) for request in requests)
    counted = sum(count for (key_id, _), count in sent.items() if key_id is not None)
    print(f"\nFIGURES usage exact [{', '.join(names)}]: {counted} counted by key, written before the stop: {before}")
    assert before < counted + sent[(None, "unknown")], before

    with reader(tmp_path, "reader", database, jwt_secret) as host:
        expected = {
            key.id: totals(**{result: count for (key_id, result), count in sent.items() if key_id == key.id})
            for key in (a, b, c, e)
        }
        assert expected[a.id] == totals(valid=100, invalidSecret=40, wrongEnvironment=20)
        assert expected[b.id] == totals(valid=50, insufficientScope=25)
        assert expected[c.id] == totals(disabled=30)
        for key, token in ((a, acme), (b, acme), (c, acme), (e, globex)):
            data = read(host, token, f"/dashboard/api-keys/{key.id}/usage")
            assert (data["keyId"], data["granularity"]) == (key.id, "hour")
            assert_totals_add_up(data)
            assert data["totals"] == expected[key.id], key
        tenant = read(host, acme, "/dashboard/usage")
        assert_totals_add_up(tenant)
        assert tenant["totals"] == {name: sum(expected[key.id][name] for key in (a, b, c)) for name in RESULTS}
        assert [(entry["id"], entry["name"], entry["totals"]) for entry in tenant["topKeys"]] == [
            (a.id, "a", expected[a.id]),  # 160 verifications
            (b.id, "b", expected[b.id]),  # 75
            (c.id, "c", expected[c.id]),  # 30
        ]
        other = read(host, globex, "/dashboard/usage")
        assert other["totals"] == expected[e.id]
        assert [entry["id"] for entry in other["topKeys"]] == [e.id]
        third = read(host, initech, "/dashboard/usage?top=100")
        assert third["totals"] == totals(valid=SPREAD_KEYS * SPREAD_EACH)
        assert {entry["id"]: entry["totals"] for entry in third["topKeys"]} == {
            key.id: totals(valid=SPREAD_EACH) for key in spread
        }
        assert [entry["id"] for entry in third["topKeys"]] == sorted(key.id for key in spread)  # ties: by id

    # Unknown public keys count in the tenant-less row only; missing and malformed keys nowhere.
    rows = stored_rows(database)
    unknown = [row for row in rows if row["key_id"] == ""]
    assert {row["tenant_id"] for row in unknown} == {""}
    assert sum(row["unknown_key"] for row in unknown) == sent[(None, "unknown")] == 15
    assert sum(row[column] for row in unknown for column in COLUMNS.values()) == 0
    assert sum(row["unknown_key"] for row in rows if row["key_id"] != "") == 0
    assert stored_sum(database) == counted + 15
    assert "Traceback" not in logs


# 2. kill -9 of a worker

FLUSH = 2  # seconds
RUN = 6.0  # seconds of load, the kill in the middle


def test_kill_9_of_a_worker_loses_at_most_one_interval_and_doubles_nothing(postgres, tmp_path, jwt_secret):
    """Steady verifications for 6 s with a 2 s interval, one worker killed with SIGKILL at 3 s: afterwards no result
    is counted more often than it was sent, and what is missing is at most what was answered in the 2 s (+1 s
    margin) before the kill, the most the killed worker can have held since its last write."""
    token = token_for(jwt_secret, "acme")
    host = server(tmp_path, "host", postgres, jwt_secret, 4, APIKEYS_USAGE_FLUSH_SECONDS=str(FLUSH))
    try:
        key = create_key(host, token, name="steady")
        before_kill = wait_for_workers(host, 4)
        outcomes: list[tuple] = []  # (result, sent, received, (status, code) or None)
        lock = threading.Lock()
        stop_at = time.monotonic() + RUN

        def client(number: int) -> None:
            mine = []
            while time.monotonic() < stop_at:
                result = "invalidSecret" if len(mine) % 5 == number % 5 else "valid"
                full_key = key.wrong_secret() if result == "invalidSecret" else key.full_key
                sent = time.monotonic()
                try:
                    answer = verify(host, Request(result, key.id, full_key))
                except (OSError, http.client.HTTPException):  # the killed worker's connection (a reset, or an
                    # answer cut short: IncompleteRead): no answer, maybe counted
                    answer = None
                mine.append((result, sent, time.monotonic(), answer))
            with lock:
                outcomes.extend(mine)

        threads = [threading.Thread(target=client, args=(number,)) for number in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(RUN / 2)
        victim = before_kill[len(before_kill) // 2]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        for thread in threads:
            thread.join(60)
        after_kill = wait_for_workers(host, 4)  # the master replaced the killed worker
        assert victim not in after_kill
        stop(host)
        logs = host.logs()
    finally:
        host.stop()

    with reader(tmp_path, "reader", postgres, jwt_secret) as reading:
        data = read(reading, token, f"/dashboard/api-keys/{key.id}/usage")
    assert_totals_add_up(data)
    counted = data["totals"]

    answered = Counter(result for result, _, _, answer in outcomes if answer is not None)
    unanswered = Counter(result for result, _, _, answer in outcomes if answer is None)
    for result, _, _, answer in outcomes:
        assert answer in (None, ANSWERS[result]), (result, answer)
    window = [answer for _, _, received, answer in outcomes if killed_at - FLUSH - 1 <= received <= killed_at]
    lost = answered.total() + unanswered.total() - counted["valid"] - counted["invalidSecret"]
    print(
        f"\nFIGURES usage kill -9: answered={dict(answered)} unanswered={dict(unanswered)} counted="
        f"{ {name: n for name, n in counted.items() if n} } lost={lost} answered in the {FLUSH + 1} s before the kill"
        f"={len(window)}"
    )
    assert counted == totals(valid=counted["valid"], invalidSecret=counted["invalidSecret"])
    for result in ("valid", "invalidSecret"):  # nothing doubled
        assert counted[result] <= answered[result] + unanswered[result], result
    assert 0 <= lost <= len(window) + unanswered.total()
    assert answered.total() > 0 and counted["valid"] > 0
    assert "Traceback" not in logs


# 3. Retention


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def bucket(key_id: str, tenant_id: str, start: datetime, **counts: int) -> dict:
    """A usage row as the test writes it directly: every count zero but ``counts``."""
    return {"key_id": key_id, "tenant_id": tenant_id, "bucket_start": start} | {
        result: counts.get(result, 0) for result in tables.USAGE_RESULTS
    }


def test_retention_removes_only_buckets_older_than_the_retention(database, tmp_path, jwt_secret):
    """With APIKEYS_USAGE_RETENTION_DAYS=1, a worker's retention pass (its first, one flush interval after it first
    counts) deletes 2,502 buckets older than a day in batches, and leaves the last 23 hours' buckets as they were."""
    token = token_for(jwt_secret, "acme")
    settings = {"APIKEYS_USAGE_FLUSH_SECONDS": "1", "APIKEYS_USAGE_RETENTION_DAYS": "1"}
    host = server(tmp_path, "host", database, jwt_secret, 1, **settings)
    try:
        key = create_key(host, token, name="kept")
        now = hour_floor(datetime.now(UTC))
        recent = [bucket(key.id, "acme", now - timedelta(hours=hours), valid=7) for hours in (1, 12, 22)]
        recent.append(bucket("", "", now - timedelta(hours=3), unknown_key=4))
        old = [  # more than one batch
            bucket(f"key_old{number:012d}", "acme", now - timedelta(days=2 + number % 30)) for number in range(2500)
        ]
        old.append(bucket(key.id, "acme", now - timedelta(hours=26), valid=5))
        old.append(bucket("", "", now - timedelta(days=400), unknown_key=9))
        engine = sa.create_engine(database)
        try:
            with engine.begin() as conn:
                conn.execute(sa.insert(tables.usage_buckets), recent)
                conn.execute(sa.insert(tables.usage_buckets), old)
        finally:
            engine.dispose()
        assert len(stored_rows(database)) == len(recent) + len(old)

        # The worker's first count starts its thread; the retention pass follows its first write.
        assert verify(host, Request("valid", key.id, key.full_key)) == ANSWERS["valid"]
        deadline = time.monotonic() + 15
        while len(stored_rows(database)) > len(recent) + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = stored_rows(database)
        stop(host)
        logs = host.logs()
    finally:
        host.stop()

    kept = {(row["key_id"], row["bucket_start"]): row for row in rows}
    current = datetime.fromtimestamp(int(time.time()) // 3600 * 3600, UTC)
    # This run's own verification, in its hour's bucket (a new one: nothing was inserted for the current hour).
    assert {place for place in kept if place[1] >= now} <= {(key.id, now), (key.id, current)}
    assert sum(row["valid"] for place, row in kept.items() if place[1] >= now) == 1
    others = {place: row for place, row in kept.items() if place[1] < now}
    assert sorted(others, key=str) == sorted(((row["key_id"], row["bucket_start"]) for row in recent), key=str)
    for row in recent:
        stored = others[(row["key_id"], row["bucket_start"])]
        assert (stored["tenant_id"], stored["valid"], stored["unknown_key"]) == (
            row["tenant_id"],
            row["valid"],
            row["unknown_key"],
        )
    assert "Traceback" not in logs


# 4. APIKEYS_USAGE=off


def test_usage_off_writes_nothing(tmp_path, jwt_secret):
    """APIKEYS_USAGE=off: after valid, wrong-secret, wrong-environment and unknown-key verifications on 2 workers,
    past two flush intervals and a graceful stop, the usage table is empty and the API answers zeros."""
    database = f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"
    token = token_for(jwt_secret, "acme")
    settings = {"APIKEYS_USAGE": "off", "APIKEYS_USAGE_FLUSH_SECONDS": "1"}
    host = server(tmp_path, "host", database, jwt_secret, 2, **settings)
    try:
        key = create_key(host, token, name="quiet")
        requests = [Request("valid", key.id, key.full_key)] * 20
        requests += [Request("invalidSecret", key.id, key.wrong_secret()) for _ in range(5)]
        requests += [Request("wrongEnvironment", key.id, key.full_key, query="?environment=test")] * 5
        requests += [Request("unknown", None, unknown_key()) for _ in range(5)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda request: verify(host, request), requests))
        assert answers == [ANSWERS[request.result] for request in requests]
        time.sleep(2.5)  # two flush intervals, were counting on
        data = read(host, token, f"/dashboard/api-keys/{key.id}/usage")
        assert data["totals"] == totals()  # the endpoints answer zeros
        stop(host)
        logs = host.logs()
    finally:
        host.stop()
    assert stored_rows(database) == []
    assert "Traceback" not in logs
