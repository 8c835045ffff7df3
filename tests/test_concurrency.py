"""Concurrency against the real service: gunicorn -w 4, many client threads, SQLite and PostgreSQL.

Every test runs on a fresh, migrated database. The access log carries each
worker's pid, so the tests can tell that *every* worker saw a change, not just
the one that happened to make it.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from apikeys.storage.tables import api_keys
from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import service_env
from tests.servers import token_for

pytestmark = pytest.mark.slow

WORKERS = 4
CLIENTS = 32
TENANT = "acme"
# The pid of the worker that answered, the path and the status: what these tests read from the access log.
ACCESS_LOG_FORMAT = "pid=%(p)s %(m)s %(U)s %(s)s"
ACCESS_LINE = re.compile(r"^pid=<(\d+)> (\S+) (\S+) (\d{3})$", re.MULTILINE)


def backend(database_url: str) -> str:
    return sa.make_url(database_url).get_backend_name()


def figures(label: str, database_url: str, sent: int, acknowledged: int, lost: int, **extra) -> None:
    """Print the figures the closing note collects (run pytest with -s)."""
    more = "".join(f" {name}={value}" for name, value in extra.items())
    print(f"\nFIGURES {label} [{backend(database_url)}]: sent={sent} acknowledged={acknowledged} lost={lost}{more}")


def access_lines(server: Gunicorn, path: str, expected: int) -> list[tuple[int, int]]:
    """Return (pid, status) of each access-log line for ``path``, once all ``expected`` are written.

    gunicorn writes the line after the answer has gone out, so the client can be a little ahead of the log.
    """
    deadline = time.monotonic() + 10
    while True:
        text = server.access_log.read_text() if server.access_log.exists() else ""
        lines = [(int(pid), int(status)) for pid, _, p, status in ACCESS_LINE.findall(text) if p == path]
        if len(lines) >= expected or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def assert_clean_logs(server: Gunicorn) -> None:
    """No answer of 500 or more, no lock error, no traceback, anywhere in gunicorn's logs."""
    logs = server.logs()
    assert "database is locked" not in logs
    assert "Traceback" not in logs
    text = server.access_log.read_text() if server.access_log.exists() else ""
    server_errors = [line for line in ACCESS_LINE.findall(text) if int(line[3]) >= 500]
    assert server_errors == []


@pytest.fixture
def jwt(jwt_secret):
    return token_for(jwt_secret, TENANT)


@pytest.fixture
def service(database_url, jwt_secret, tmp_path):
    """gunicorn -w 4 on the test's database."""
    env = service_env(
        database_url,
        jwt_secret,
        tmp_path / "instance",
        GUNICORN_CMD_ARGS=f"--access-logformat '{ACCESS_LOG_FORMAT}'",
    )
    server = Gunicorn(tmp_path, env, workers=WORKERS).start()
    yield server
    server.stop()


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=CLIENTS) as executor:
        yield executor


def create(server: Gunicorn, jwt: str, name: str = "concurrent") -> tuple[int, dict | None]:
    return call(server.url, "POST", "/dashboard/api-keys", token=jwt, body={"name": name, "environment": "live"})


def test_concurrent_creates_all_land(service, jwt, pool, database_url):
    """200 creates at once: every one answers 201 and every one is in the list afterwards."""
    started = time.perf_counter()
    results = list(pool.map(lambda n: create(service, jwt, f"key {n}"), range(200)))
    elapsed = time.perf_counter() - started
    statuses = Counter(status for status, _ in results)
    created = {body["data"]["id"] for status, body in results if status == 201}

    listed = []
    page = 1
    while True:
        status, body = call(service.url, "GET", f"/dashboard/api-keys?limit=100&page={page}", token=jwt)
        assert status == 200
        listed += [item["id"] for item in body["data"]["items"]]
        if len(body["data"]["items"]) < 100:
            break
        page += 1
    figures(
        "creates",
        database_url,
        sent=len(results),
        acknowledged=len(created),
        lost=len(created - set(listed)),
        statuses=dict(statuses),
        per_second=round(len(results) / elapsed),
    )
    assert statuses == {201: 200}
    assert len(listed) == len(set(listed)) == body["data"]["total"] == 200
    assert set(listed) == created
    assert_clean_logs(service)


def test_concurrent_toggles_are_counted(service, jwt, pool, database_url):
    """50 toggles at once from active: 25 disable, 25 enable, and the key ends active."""
    status, body = create(service, jwt)
    assert status == 201
    key_id = body["data"]["id"]

    results = list(
        pool.map(lambda _: call(service.url, "POST", f"/dashboard/api-keys/{key_id}/toggle", token=jwt), range(50))
    )
    statuses = Counter(status for status, _ in results)
    messages = Counter(body["data"]["message"] for status, body in results if status == 200)
    status, body = call(service.url, "GET", f"/dashboard/api-keys/{key_id}", token=jwt)
    figures(
        "toggles",
        database_url,
        sent=len(results),
        acknowledged=statuses[200],
        lost=0 if body["data"]["active"] is True else 1,
        messages=dict(messages),
    )
    assert statuses == {200: 50}
    assert messages == {"API key has been disabled.": 25, "API key has been enabled.": 25}
    assert body["data"]["active"] is True
    assert_clean_logs(service)


def test_concurrent_regenerates_leave_one_secret(service, jwt, pool, database_url):
    """20 regenerates at once: each answers 200 or 409, and exactly one of the secrets handed out works."""
    status, body = create(service, jwt)
    assert status == 201
    key_id = body["data"]["id"]
    original = body["data"]["fullKey"]

    results = list(
        pool.map(lambda _: call(service.url, "POST", f"/dashboard/api-keys/{key_id}/regenerate", token=jwt), range(20))
    )
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {200, 409} and statuses[200] >= 1, dict(statuses)
    assert {body["code"] for status, body in results if status == 409} <= {"REGENERATED_CONCURRENTLY"}
    full_keys = [body["data"]["fullKey"] for status, body in results if status == 200] + [original]
    answered = statuses[200]
    assert len(set(full_keys)) == answered + 1

    verified = list(pool.map(lambda k: call(service.url, "GET", "/verify", api_key=k), full_keys))
    codes = Counter(status for status, _ in verified)
    figures(
        "regenerates",
        database_url,
        sent=20,
        acknowledged=answered,
        conflicts=statuses[409],
        lost=0,
        verify_statuses=dict(codes),
    )
    # The original and every secret but the last one written are refused.
    assert codes == {200: 1, 401: answered}
    assert verified[-1][0] == 401
    assert {body["code"] for status, body in verified if status == 401} == {"INVALID_API_KEY"}

    assert_clean_logs(service)


def verify_on_every_worker(server: Gunicorn, pool, full_key: str, phase: str, expected: int) -> Counter:
    """Verify ``full_key`` 40 at a time until every worker has answered at least once; all must be ``expected``.

    Each phase has its own path below /verify, so its lines in the access log are its own.
    """
    path = f"/verify/{phase}"
    sent = 0
    for _ in range(10):
        results = list(pool.map(lambda _: call(server.url, "GET", path, api_key=full_key), range(40)))
        sent += len(results)
        statuses = Counter(status for status, _ in results)
        assert statuses == {expected: 40}, f"{phase}: {dict(statuses)}"
        lines = access_lines(server, path, sent)
        pids = {pid for pid, _ in lines}
        if len(pids) >= WORKERS:
            break
    assert len(pids) == WORKERS, f"{phase}: only {len(pids)} workers answered {sent} requests"
    assert {status for _, status in lines} == {expected}
    return Counter(pid for pid, _ in lines)


def test_changes_reach_every_worker_at_once(service, jwt, pool, database_url):
    """With the verified-secret cache warm on all 4 workers, toggle, regenerate and delete take effect everywhere."""
    status, body = create(service, jwt)
    assert status == 201
    key_id = body["data"]["id"]
    full_key = body["data"]["fullKey"]
    base = f"/dashboard/api-keys/{key_id}"
    sent = 0

    warm = verify_on_every_worker(service, pool, full_key, "warm", 200)
    sent += sum(warm.values())

    status, body = call(service.url, "POST", f"{base}/toggle", token=jwt)
    assert (status, body["data"]["active"]) == (200, False)
    sent += sum(verify_on_every_worker(service, pool, full_key, "disabled", 403).values())

    status, body = call(service.url, "POST", f"{base}/toggle", token=jwt)
    assert (status, body["data"]["active"]) == (200, True)
    sent += sum(verify_on_every_worker(service, pool, full_key, "enabled", 200).values())

    status, body = call(service.url, "POST", f"{base}/regenerate", token=jwt)
    assert status == 200
    new_key = body["data"]["fullKey"]
    old_refusals = verify_on_every_worker(service, pool, full_key, "old-secret", 401)
    sent += sum(old_refusals.values())
    sent += sum(verify_on_every_worker(service, pool, new_key, "new-secret", 200).values())

    status, _ = call(service.url, "DELETE", base, token=jwt)
    assert status == 200
    sent += sum(verify_on_every_worker(service, pool, new_key, "deleted", 401).values())

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            remaining = conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one()
    finally:
        engine.dispose()
    figures(
        "every-worker",
        database_url,
        sent=sent,
        acknowledged=sent,
        lost=0,
        warm_per_worker=sorted(warm.values()),
        old_secret_refusals=sum(old_refusals.values()),
    )
    assert remaining == 0
    assert_clean_logs(service)
