"""The dashboard's limits (issue 17, finding 6): keys per tenant, and the host's turns at bcrypt for key changes.

The in-process tests hold the hashing lock files themselves, as another worker
of the host would. The gunicorn tests run real workers with real bcrypt: one
shows the cap holds across workers, one measures another tenant's /verify
during a create flood (its figures are printed; run pytest with -s).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import math
import os
import stat
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikeys import keys
from apikeys.storage import tables
from apikeys.verification import extension
from tests.servers import ROOT
from tests.servers import Gunicorn
from tests.servers import empty_database
from tests.servers import service_env
from tests.servers import token_for

LIMIT = 3
SLOT = "hashing-slot-0.lock"  # with APIKEYS_HASHING_CONCURRENCY=1: the host's one slot...
PLACES = ("hashing-place-0.lock", "hashing-place-1.lock")  # ...and its places in line: one hashing, one waiting


@pytest.fixture
def config(config):
    """One hashing slot and a limit of 3 keys per tenant."""
    return {**config, "APIKEYS_MAX_KEYS_PER_TENANT": LIMIT, "APIKEYS_HASHING_CONCURRENCY": 1}


def create(client, auth, tenant: str = "acme", name: str = "k"):
    return client.post("/dashboard/api-keys", json={"name": name, "environment": "live"}, headers=auth(tenant))


def stored(app, tenant: str = "acme") -> tuple[int, int]:
    """Return (keys, audit entries) the database holds for a tenant."""
    with extension.get_engine(app).connect() as conn:
        count_keys = (
            sa.select(sa.func.count()).select_from(tables.api_keys).where(tables.api_keys.c.tenant_id == tenant)
        )
        count_entries = (
            sa.select(sa.func.count()).select_from(tables.audit_log).where(tables.audit_log.c.tenant_id == tenant)
        )
        return conn.execute(count_keys).scalar_one(), conn.execute(count_entries).scalar_one()


def assert_envelope(response, status: int, code: str) -> None:
    assert response.status_code == status, response.json
    assert response.json["statusCode"] == status
    assert response.json["code"] == code
    assert response.json["message"]


@contextlib.contextmanager
def holding(app, *names: str):
    """Hold these lock files of the app's instance folder, as another worker hashing (or waiting) would."""
    folder = Path(app.instance_path)
    descriptors = [os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o600) for name in names]
    try:
        for descriptor in descriptors:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def in_thread(function) -> tuple[threading.Thread, dict]:
    """Start ``function`` in a thread; its result lands in the returned dict under "result"."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(result=function()))
    thread.start()
    return thread, answer


# The per-tenant limit


def test_a_create_beyond_the_tenant_limit_is_a_409_that_writes_nothing(app, client, auth):
    made = [create(client, auth) for _ in range(LIMIT)]
    assert [response.status_code for response in made] == [201] * LIMIT
    client.post(f"/dashboard/api-keys/{made[0].json['data']['id']}/toggle", headers=auth())  # disabled keys count

    refused = create(client, auth)
    assert_envelope(refused, 409, "KEY_LIMIT_REACHED")
    assert f"limit of {LIMIT} API keys" in refused.json["message"]
    assert stored(app) == (LIMIT, LIMIT + 1)  # no row, no audit entry (the + 1 is the toggle's)
    assert create(client, auth, "globex").status_code == 201  # other tenants have their own limit

    client.delete(f"/dashboard/api-keys/{made[1].json['data']['id']}", headers=auth())
    assert create(client, auth).status_code == 201  # deleted keys do not count


def slow_key_counts(conn, cursor, statement, parameters, context, executemany):
    if statement.lstrip().upper().startswith("SELECT COUNT(*)") and "FROM API_KEYS" in statement.upper():
        time.sleep(0.05)


def test_concurrent_creates_for_the_last_place_take_it_once(config, request):
    config["APIKEYS_HASHING_CONCURRENCY"] = 16  # not the subject here: every create gets its turn at once
    app, auth = request.getfixturevalue("app"), request.getfixturevalue("auth")
    for number in range(LIMIT - 1):
        assert create(app.test_client(), auth, name=f"k{number}").status_code == 201
    # Every count of keys takes 50 ms longer, so that the contenders' counts and inserts overlap every time: a
    # count that does not take turns with the inserts (under a lock, or after the insert) lets several in.
    sa.event.listen(extension.get_engine(app), "after_cursor_execute", slow_key_counts)
    contenders = 8
    barrier = threading.Barrier(contenders)
    statuses = Counter()

    def contend():
        client = app.test_client()
        headers = auth()
        barrier.wait()
        response = client.post("/dashboard/api-keys", json={"name": "last", "environment": "live"}, headers=headers)
        statuses[response.status_code] += 1

    threads = [threading.Thread(target=contend) for _ in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == {201: 1, 409: contenders - 1}
    assert stored(app) == (LIMIT, LIMIT)


def import_file(tmp_path: Path, tenants: list[str]) -> Path:
    entries = [
        {"tenant": tenant, "name": "imported", "environment": "test", "fullKey": f"{public}.{secret}"}
        for tenant in tenants
        for public, secret in [(keys.new_public_key("test"), keys.new_secret("test"))]
    ]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(entries))
    return path


def test_an_import_beyond_the_tenant_limit_is_refused_and_writes_nothing(app, client, auth, runner, tmp_path):
    assert create(client, auth).status_code == 201
    result = runner.invoke(args=["keys", "import", str(import_file(tmp_path, ["globex", "acme", "acme", "acme"]))])
    assert result.exit_code == 1
    assert f"Tenant 'acme' would have more than {LIMIT} API keys" in result.output
    assert "Traceback" not in result.output
    assert stored(app, "acme") == (1, 1)
    assert stored(app, "globex") == (0, 0)  # all or nothing: the other tenant's entry is not stored either

    result = runner.invoke(args=["keys", "import", str(import_file(tmp_path, ["globex", "acme", "acme"]))])
    assert result.exit_code == 0, result.output  # up to the limit is fine
    assert stored(app, "acme") == (LIMIT, LIMIT)


# Turns at bcrypt


def test_a_create_that_finds_the_hosts_slot_taken_waits_for_it(app, client, auth):
    with holding(app, SLOT):
        thread, answer = in_thread(lambda: create(app.test_client(), auth))
        thread.join(0.5)
        waiting = thread.is_alive()
        written_meanwhile = stored(app)
    thread.join(30)
    assert waiting  # no answer while another worker hashed
    assert written_meanwhile == (0, 0)
    assert answer["result"].status_code == 201  # and then its turn: an ordinary create never sees a 503


def test_a_create_that_gets_no_turn_in_time_is_a_503_that_writes_nothing(app, client, auth):
    with holding(app, SLOT):  # held longer than a request waits
        refused = create(client, auth)
    assert_envelope(refused, 503, "HASHING_BUSY")
    assert refused.headers["Retry-After"] == "1"
    assert stored(app) == (0, 0)


def test_a_regenerate_that_finds_the_line_full_is_a_503_that_changes_nothing(config, request):
    config["APIKEYS_BCRYPT_ROUNDS"] = 10  # hashes slow enough that the line is limited
    app, client, auth, make_key = (request.getfixturevalue(name) for name in ("app", "client", "auth", "make_key"))
    key = make_key()
    with holding(app, SLOT, *PLACES):  # one worker hashing, one waiting: the line is full
        path = f"/dashboard/api-keys/{key['id']}/regenerate"
        thread, answer = in_thread(lambda: app.test_client().post(path, headers=auth()))
        thread.join(1.0)  # then the line empties: a request that had waited would get its turn now
    thread.join(30)
    refused = answer["result"]
    assert_envelope(refused, 503, "HASHING_BUSY")  # refused without waiting
    assert refused.headers["Retry-After"] == "1"
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200  # the old secret stays
    assert stored(app) == (1, 1)  # only the create's audit entry


def test_with_cheap_hashes_a_create_that_finds_the_line_full_waits_too(app, auth):
    with holding(app, SLOT, *PLACES):  # bcrypt 4: every waiter is served within milliseconds, so all may wait
        thread, answer = in_thread(lambda: create(app.test_client(), auth))
        thread.join(0.5)
        waiting = thread.is_alive()
    thread.join(30)
    assert waiting
    assert answer["result"].status_code == 201


def test_an_import_waits_for_its_turns_however_long(app, runner, tmp_path):
    path = import_file(tmp_path, ["acme", "acme"])
    with holding(app, SLOT):
        thread, answer = in_thread(lambda: runner.invoke(args=["keys", "import", str(path)]))
        thread.join(3)  # longer than a request would wait
        waiting = thread.is_alive()
    thread.join(30)
    assert waiting
    assert answer["result"].exit_code == 0, answer["result"].output
    assert stored(app) == (2, 2)


def test_the_hashing_lock_files_are_private_files_of_the_instance_folder(app, client, auth):
    assert create(client, auth).status_code == 201
    folder = Path(app.instance_path)
    names = {path.name for path in folder.glob("hashing-*")}
    assert names == {SLOT, *PLACES}  # fixed names: nothing derived from a secret or the database URL
    assert {stat.S_IMODE((folder / name).stat().st_mode) for name in names} == {0o600}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


# Real gunicorn workers

TENANT = "acme"
ACCESS_LOG_FORMAT = "pid=%(p)s %(m)s %(U)s %(s)s"
GUNICORN_ARGS = f"--no-control-socket --access-logformat '{ACCESS_LOG_FORMAT}'"


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database(request, tmp_path):
    """A new, empty database of this test's own; the server creates the schema when it starts."""
    with empty_database(request.param, tmp_path, "apikeys_limits") as url:
        yield url


def start_server(tmp_path: Path, database_url: str, jwt_secret: str, workers: int, **settings: str) -> Gunicorn:
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    env = service_env(
        database_url,
        jwt_secret,
        tmp_path / "instance",
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        GUNICORN_CMD_ARGS=GUNICORN_ARGS,
        **settings,
    )
    return Gunicorn(tmp_path, env, workers=workers).start()


def request(server: Gunicorn, method: str, path: str, *, token=None, api_key=None, body=None):
    """Send one request on a connection of its own; return (status, headers, JSON body)."""
    headers = {"Connection": "close"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if api_key is not None:
        headers["X-Api-Key"] = api_key
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        return response.status, dict(response.headers), (json.loads(payload) if payload else None)
    finally:
        conn.close()


def answering_pids(server: Gunicorn, path: str, expected: int) -> list[int]:
    deadline = time.monotonic() + 10
    while True:
        lines = server.access_log.read_text().splitlines() if server.access_log.exists() else []
        pids = [int(line.split()[0][len("pid=<") : -1]) for line in lines if line.split()[2:3] == [path]]
        if len(pids) >= expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


@pytest.mark.slow
def test_the_hashing_cap_holds_across_workers(server_database, jwt_secret, tmp_path):
    """gunicorn -w 2, one slot, bcrypt 16 (seconds each): of two creates at once, one is 201, the other 503."""
    server = start_server(
        tmp_path, server_database, jwt_secret, 2, APIKEYS_HASHING_CONCURRENCY="1", APIKEYS_BCRYPT_ROUNDS="16"
    )
    try:
        tenants = ["first", "second"]
        barrier = threading.Barrier(len(tenants))
        answers = {}

        def create_for(tenant):
            token = token_for(jwt_secret, tenant)
            barrier.wait()
            answers[tenant] = request(
                server, "POST", "/dashboard/api-keys", token=token, body={"name": "k", "environment": "live"}
            )

        threads = [threading.Thread(target=create_for, args=(tenant,)) for tenant in tenants]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(status for status, _, _ in answers.values()) == [201, 503]
        (refused_tenant,) = [tenant for tenant, (status, _, _) in answers.items() if status == 503]
        _, headers, body = answers[refused_tenant]
        assert (body["statusCode"], body["code"], headers["Retry-After"]) == (503, "HASHING_BUSY", "1")
        assert len(set(answering_pids(server, "/dashboard/api-keys", 2))) == 2  # two workers, one turn between them
        listed = request(server, "GET", "/dashboard/api-keys", token=token_for(jwt_secret, refused_tenant))
        assert listed[2]["data"]["total"] == 0  # nothing written for the refused create
    finally:
        server.kill()


# Creates keys from its own process (its threads do not compete with the measuring thread for the GIL) until
# stdin closes, then prints the statuses it got as JSON. Reads the token from stdin: never on a command line.
FLOODER = """
import http.client, json, sys, threading, time

host, port, connections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
token = sys.stdin.readline().strip()
statuses, lock, stopping = {}, threading.Lock(), threading.Event()
body = json.dumps({"name": "flood", "environment": "live"})
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}

def flood():
    while not stopping.is_set():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            conn.request("POST", "/dashboard/api-keys", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = str(response.status)
        except OSError as error:
            status = type(error).__name__
        finally:
            conn.close()
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

threads = [threading.Thread(target=flood) for _ in range(connections)]
started = time.monotonic()
for thread in threads:
    thread.start()
print("ready", flush=True)
sys.stdin.read()
stopping.set()
for thread in threads:
    thread.join()
print(json.dumps({"statuses": statuses, "seconds": time.monotonic() - started}), flush=True)
"""

FLOOD_CONNECTIONS = 4
HOLDER_REQUESTS = 40
HOLDER_INTERVAL = 0.15
# The issue asks for a p90 under 25 ms; without the cap it was 334 ms. Asserted with room for a loaded 2-core
# CI machine, still far below what the flood does without the cap (the figures are printed).
P90_BOUND = 0.100


def p90(values: list[float]) -> float:
    """The nearest-rank 90th percentile."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


@pytest.mark.slow
def test_another_tenants_verification_stays_fast_during_a_create_flood(server_database, jwt_secret, tmp_path):
    """gunicorn -w 4 (2 cores), bcrypt 12, the default cap: 4 connections create keys; another tenant's p90 < 100 ms."""
    # The gunicorn -w 4 on 2 cores; on a larger host, as many more workers as the default cap has more slots.
    workers = 4 + max(1, (os.cpu_count() or 1) // 2) - 1
    server = start_server(tmp_path, server_database, jwt_secret, workers, APIKEYS_BCRYPT_ROUNDS="12")
    try:
        status, _, created = request(
            server,
            "POST",
            "/dashboard/api-keys",
            token=token_for(jwt_secret, "holder"),
            body={"name": "holder", "environment": "live"},
        )
        assert status == 201
        full_key = created["data"]["fullKey"]

        def timed_verify() -> tuple[int, float]:
            started = time.perf_counter()
            answer = request(server, "GET", "/verify", api_key=full_key)[0]
            return answer, time.perf_counter() - started

        idle = [timed_verify() for _ in range(10)]
        command = [sys.executable, "-c", FLOODER, "127.0.0.1", str(server.port), str(FLOOD_CONNECTIONS)]
        with subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as flood:
            try:
                flood.stdin.write(token_for(jwt_secret, "flooder", 3600) + "\n")
                flood.stdin.flush()
                assert flood.stdout.readline().strip() == "ready"
                flood_started = time.monotonic()
                during = []
                for number in range(HOLDER_REQUESTS):
                    # On a schedule, so a slow answer does not stretch the measurement; after a second of flood.
                    time.sleep(max(0.0, flood_started + 1.0 + number * HOLDER_INTERVAL - time.monotonic()))
                    during.append(timed_verify())
                flood_outlasted_holder = flood.poll() is None
                flood.stdin.close()
                report = json.loads(flood.stdout.readline())
                assert flood.wait(timeout=60) == 0
            finally:
                if flood.poll() is None:
                    flood.kill()
    finally:
        server.kill()

    latencies = [seconds for _, seconds in during]
    backend = sa.make_url(server_database).get_backend_name()
    shown = {
        "flood_statuses": report["statuses"],
        "flood_seconds": round(report["seconds"], 1),
        "holder_idle_p50_ms": round(1000 * statistics.median(seconds for _, seconds in idle), 1),
        "holder_p50_ms": round(1000 * statistics.median(latencies), 1),
        "holder_p90_ms": round(1000 * p90(latencies), 1),
        "holder_max_ms": round(1000 * max(latencies), 1),
    }
    print(f"\nFIGURES create-flood [{backend}]: " + " ".join(f"{name}={value}" for name, value in shown.items()))
    assert flood_outlasted_holder
    assert int(report["statuses"].get("201", 0)) >= 2  # the flood hashed (a loaded machine hashes slowly)...
    assert set(report["statuses"]) <= {"201", "503"}  # ...and was refused only with a 503
    assert Counter(status for status, _ in during) == {200: HOLDER_REQUESTS}
    assert p90(latencies) < P90_BOUND
