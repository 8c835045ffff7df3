"""In-process figures: cached verify_api_key against a bare SELECT, and the size sweep on SQLite."""

from __future__ import annotations

import base64
import contextlib
import cProfile
import io
import math
import os
import pstats
import secrets
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from apikeys import create_app
from apikeys import db
from apikeys import keys
from apikeys import manage
from apikeys.tokens import issue_token
from apikeys.verify import verify_api_key

ROUNDS = 12
FILLER_ROUNDS = 4
TENANT = "bench-sweep"
PAGE_LIMIT = 20
BULK_CHUNK = 50_000


def make_app(directory: Path):
    """Return an apikeys app on a fresh, migrated SQLite file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    app = create_app(
        {
            "APIKEYS_DATABASE_URL": f"sqlite:///{directory / 'apikeys.sqlite3'}",
            "APIKEYS_JWT_SECRET": secrets.token_urlsafe(48),
            "APIKEYS_BCRYPT_ROUNDS": ROUNDS,
        },
        instance_path=str(directory),
    )
    db.upgrade(db.get_engine(app))
    return app


def create_real_key(app, tenant: str = TENANT) -> dict:
    """Create one key the way the API does (bcrypt at the configured rounds)."""
    with db.get_engine(app).begin() as conn:
        return manage.create_key(conn, tenant, "bench key", "test", app.config["APIKEYS_BCRYPT_ROUNDS"])


def time_calls(call, count: int, warmup: int, budget_s: float = 60.0) -> list[int]:
    """Call ``call`` ``warmup`` times, then time up to ``count`` calls (nanoseconds each), within a time budget."""
    for _ in range(warmup):
        call()
    samples = []
    deadline = time.monotonic() + budget_s
    for _ in range(count):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
        if time.monotonic() > deadline:
            break
    return samples


def percentile(samples: list[int | float], percent: float) -> float:
    """Return the nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(len(ordered) * percent / 100) - 1)]


def verify_versus_select(directory: Path, calls: int, profile: bool = False) -> dict:
    """Time cached verify_api_key and a bare SELECT of the same row through the same engine."""
    app = make_app(directory)
    engine = db.get_engine(app)
    try:
        key = create_real_key(app)
        full_key = key["full_key"]
        query = sa.select(db.api_keys).where(db.api_keys.c.public_key == key["public_key"])

        def select_row():
            with engine.connect() as conn:
                return conn.execute(query).one_or_none()

        with app.app_context():
            verify_api_key(full_key)  # the one bcrypt; every later call is a cache hit
            verify = time_calls(lambda: verify_api_key(full_key), calls, warmup=500)
            select = time_calls(select_row, calls, warmup=500)
            if profile:
                _print_profile("cached verify_api_key", lambda: verify_api_key(full_key), calls)
        if profile:
            client = app.test_client()
            headers = {"X-Api-Key": full_key}
            with open(directory / "requests.log", "w") as log, contextlib.redirect_stderr(log):
                profiler = _profile(lambda: client.get("/verify", headers=headers), calls // 5)
            _print_stats("GET /verify through the Flask test client", profiler)
    finally:
        engine.dispose()
    return {
        "calls": len(verify),
        "verify_p50_us": statistics.median(verify) / 1000,
        "verify_p99_us": percentile(verify, 99) / 1000,
        "select_p50_us": statistics.median(select) / 1000,
        "select_p99_us": percentile(select, 99) / 1000,
    }


def _profile(call, calls: int) -> cProfile.Profile:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    return profiler


def _print_stats(title: str, profiler: cProfile.Profile) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    print(f"===== cProfile: {title} =====\n{out.getvalue()}", file=sys.stderr)


def _print_profile(title: str, call, calls: int) -> None:
    """Print where ``call`` spends its time (cProfile, top functions) to stderr."""
    _print_stats(title, _profile(call, calls))


def _random_ids(count: int) -> list[str]:
    """Return ``count`` random 16-character base62 strings, quickly (base64 of urandom, '+/' folded in)."""
    raw = base64.b64encode(os.urandom(12 * count)).translate(bytes.maketrans(b"+/", b"Zz")).decode("ascii")
    return [raw[i : i + 16] for i in range(0, 16 * count, 16)]


def bulk_fill(app, count: int) -> float:
    """Insert ``count`` filler keys into one tenant in one transaction; return the seconds it took."""
    if count <= 0:
        return 0.0
    started = time.perf_counter()
    filler_hash = keys.hash_secret(keys.new_secret("test"), FILLER_ROUNDS)  # one hash for every filler row
    oldest = db.utcnow().replace(tzinfo=None) - timedelta(seconds=count + 10)
    statement = (
        "INSERT INTO api_keys (id, tenant_id, name, environment, public_key, secret_hash, active, created_at,"
        " last_used_at, failed_attempts, failed_window_start) VALUES (?, ?, ?, 'test', ?, ?, 1, ?, NULL, 0, NULL)"
    )
    raw = db.get_engine(app).raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA cache_size=-262144")  # 256 MiB for the build; the app's connections keep theirs
        for start in range(0, count, BULK_CHUNK):
            size = min(BULK_CHUNK, count - start)
            ids = _random_ids(size)
            publics = _random_ids(size)
            rows = (
                (
                    f"key_{ids[i]}",
                    TENANT,
                    f"filler {start + i}",
                    f"pk_test_{publics[i]}",
                    filler_hash,
                    # What SQLAlchemy's SQLite DateTime stores, so bulk rows read back like API-made ones.
                    (oldest + timedelta(seconds=start + i)).isoformat(" ", "microseconds"),
                )
                for i in range(size)
            )
            cursor.executemany(statement, rows)
        raw.commit()
        cursor.execute("PRAGMA cache_size=-2000")  # SQLite's default again, before the pool hands it out
        cursor.close()
    finally:
        raw.close()
    return time.perf_counter() - started


def _time_page(client, headers: dict[str, str], page: int, count: int, budget_s: float) -> float:
    """Return the median milliseconds of GET /dashboard/api-keys?page=..., checking every answer."""
    samples = []
    deadline = time.monotonic() + budget_s
    for _ in range(count):
        started = time.perf_counter_ns()
        response = client.get(f"/dashboard/api-keys?page={page}&limit={PAGE_LIMIT}", headers=headers)
        samples.append(time.perf_counter_ns() - started)
        if response.status_code != 200 or not response.get_json()["data"]["items"]:
            raise RuntimeError(f"list page {page} answered {response.status_code} or no items")
        if time.monotonic() > deadline:
            break
    return statistics.median(samples) / 1e6


def sweep_one(directory: Path, size: int, verify_calls: int, page_repeats: int) -> dict:
    """Build ``size`` keys in one tenant, then time cached verify and list pages 1 and last."""
    app = make_app(directory)
    engine = db.get_engine(app)
    try:
        build_s = bulk_fill(app, size - 1)
        key = create_real_key(app)  # the newest key: first on page 1
        with app.app_context():
            verify_api_key(key["full_key"])
            verify = time_calls(lambda: verify_api_key(key["full_key"]), verify_calls, warmup=300)
        token = issue_token(app.config, TENANT, 3600)
        headers = {"Authorization": f"Bearer {token}"}
        last_page = math.ceil(size / PAGE_LIMIT)
        client = app.test_client()
        # The request log goes to stderr, as in production; keep it, but off the terminal.
        with open(directory / "requests.log", "w") as log, contextlib.redirect_stderr(log):
            first = _time_page(client, headers, 1, page_repeats, budget_s=20)
            deep = _time_page(client, headers, last_page, max(3, page_repeats // 4), budget_s=30)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(sa.func.count()).select_from(db.api_keys)).scalar_one()
    finally:
        engine.dispose()
    if rows != size:
        raise RuntimeError(f"sweep built {rows} rows, wanted {size}")
    return {
        "size": size,
        "build_s": build_s,
        "verify_p50_us": statistics.median(verify) / 1000,
        "verify_p99_us": percentile(verify, 99) / 1000,
        "page1_ms": first,
        "last_page": last_page,
        "last_page_ms": deep,
        "db_mb": (directory / "apikeys.sqlite3").stat().st_size / 2**20,
    }
