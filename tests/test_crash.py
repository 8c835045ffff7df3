"""A crash under load: kill -9 gunicorn while it creates keys; no acknowledged key may be lost."""

from __future__ import annotations

import http.client
import sqlite3
import threading
import time
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
WRITERS = 8
LOAD_SECONDS = 1.5


def count_rows(database_url: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one()
    finally:
        engine.dispose()


def test_acknowledged_creates_survive_kill_9(database_url, jwt_secret, tmp_path):
    """Every key whose 201 reached the client is there, and verifies, after kill -9 and a restart."""
    env = service_env(database_url, jwt_secret, str(tmp_path / "instance"))
    token = token_for(jwt_secret, "crash")
    acknowledged: dict[str, str] = {}  # key id -> full key
    lock = threading.Lock()
    stop = threading.Event()
    sent = refused = 0

    def write(server: Gunicorn, writer: int) -> None:
        nonlocal sent, refused
        number = 0
        while not stop.is_set():
            number += 1
            with lock:
                sent += 1
            try:
                status, body = call(
                    server.url,
                    "POST",
                    "/dashboard/api-keys",
                    token=token,
                    body={"name": f"writer {writer} key {number}", "environment": "live"},
                )
            except (OSError, http.client.HTTPException):
                return  # the server is gone: this request may or may not have been committed
            with lock:
                if status == 201:
                    acknowledged[body["data"]["id"]] = body["data"]["fullKey"]
                else:
                    refused += 1

    server = Gunicorn(tmp_path, env, workers=WORKERS).start()
    try:
        with ThreadPoolExecutor(max_workers=WRITERS) as writers:
            futures = [writers.submit(write, server, n) for n in range(WRITERS)]
            time.sleep(LOAD_SECONDS)
            server.kill()
            stop.set()
            for future in futures:
                future.result()
    finally:
        server.stop()
    crashed_logs = server.logs()

    if sa.make_url(database_url).get_backend_name() == "sqlite":
        # Read straight after the crash: SQLite recovers the WAL on open.
        database = sqlite3.connect(sa.make_url(database_url).database)
        try:
            assert database.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            database.close()
    rows = count_rows(database_url)

    restarted = Gunicorn(tmp_path, env, workers=WORKERS).start()
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            found = list(
                pool.map(
                    lambda key_id: call(restarted.url, "GET", f"/dashboard/api-keys/{key_id}", token=token)[0],
                    acknowledged,
                )
            )
            verified = list(
                pool.map(
                    lambda full_key: call(restarted.url, "GET", "/verify", api_key=full_key), acknowledged.values()
                )
            )
    finally:
        restarted.stop()
    missing = sum(status != 200 for status in found)
    print(
        f"\nFIGURES crash [{sa.make_url(database_url).get_backend_name()}]: sent={sent} "
        f"acknowledged={len(acknowledged)} lost={missing} refused={refused} "
        f"acknowledged_per_second={round(len(acknowledged) / LOAD_SECONDS)} "
        f"unacknowledged={sent - len(acknowledged) - refused} committed_unacknowledged={rows - len(acknowledged)}"
    )
    assert len(acknowledged) > 0, "no create was acknowledged before the kill"
    assert refused == 0
    assert "database is locked" not in crashed_logs
    assert found == [200] * len(acknowledged)
    assert [status for status, _ in verified] == [200] * len(acknowledged)
    assert [body["data"]["id"] for _, body in verified] == list(acknowledged)
    # A create whose answer was cut off by the kill may or may not have committed; none can be counted twice.
    assert len(acknowledged) <= rows <= sent - refused
    assert "database is locked" not in restarted.logs()
