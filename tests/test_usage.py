"""Usage per key, in process on both databases: what is counted, under which result and hour, and reading it back."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from apikeys import create_app
from apikeys import keys
from apikeys.storage import tables
from apikeys.tokens import issue_token
from apikeys.usage.reading import RESULT_NAMES
from apikeys.verification import extension

ZERO = dict.fromkeys(RESULT_NAMES, 0)


@pytest.fixture
def create(make_key):
    """Create a key with a policy (rateLimit, quota, scopes, ...); return the create answer's data."""
    return make_key


@pytest.fixture
def flush(app):
    return extension.get_state(app).usage.flush


def verify(client, full_key: str, query: str = "", **headers):
    return client.get("/verify" + query, headers={"X-Api-Key": full_key, **headers})


def wrong_secret(key: dict) -> str:
    """The key's public key with another secret of a valid checksum: a real key, attacked or misconfigured."""
    return f"{key['publicKey']}.{keys.new_secret(key['environment'])}"


def usage(client, auth, key_id: str, query: str = "", tenant: str = "acme"):
    return client.get(f"/dashboard/api-keys/{key_id}/usage{query}", headers=auth(tenant))


def test_every_result_is_counted_once_under_its_key(client, auth, create, flush, wait_until_fresh_window):
    wait_until_fresh_window()
    key = create(scopes=["orders:read"], rateLimit={"limit": 4, "periodSeconds": 3600})
    quota_key = create(quota={"remaining": 1})
    expired = create()
    disabled = create()
    for _ in range(3):
        assert verify(client, key["fullKey"]).status_code == 200
    for _ in range(2):
        assert verify(client, wrong_secret(key)).status_code == 401
    assert verify(client, key["fullKey"], "?environment=test").status_code == 403
    assert verify(client, key["fullKey"], **{"X-Api-Key-Required-Scopes": "admin"}).status_code == 403
    assert verify(client, key["fullKey"]).status_code == 200
    assert verify(client, key["fullKey"]).json["code"] == "RATE_LIMITED"
    assert verify(client, quota_key["fullKey"]).status_code == 200
    assert verify(client, quota_key["fullKey"]).json["code"] == "USAGE_EXCEEDED"
    client.post(f"/dashboard/api-keys/{disabled['id']}/toggle", headers=auth())
    assert verify(client, disabled["fullKey"]).json["code"] == "API_KEY_DISABLED"
    engine = extension.get_engine(client.application)
    with engine.begin() as conn:  # expired a moment ago
        past = tables.utcnow() - timedelta(seconds=1)
        conn.execute(sa.update(tables.api_keys).where(tables.api_keys.c.id == expired["id"]).values(expires_at=past))
    assert verify(client, expired["fullKey"]).json["code"] == "API_KEY_EXPIRED"
    # Not a key's: unknown public keys (tenant-less), malformed keys and missing keys.
    verify(client, wrong_secret({"publicKey": keys.new_public_key("live"), "environment": "live"}))
    verify(client, "pk_live_nonsense.sk_live_nonsense")
    client.get("/verify")
    flush()

    totals = usage(client, auth, key["id"]).json["data"]["totals"]
    assert totals == ZERO | {
        "valid": 4,
        "invalidSecret": 2,
        "wrongEnvironment": 1,
        "insufficientScope": 1,
        "rateLimited": 1,
    }
    assert usage(client, auth, quota_key["id"]).json["data"]["totals"] == ZERO | {"valid": 1, "usageExceeded": 1}
    assert usage(client, auth, disabled["id"]).json["data"]["totals"] == ZERO | {"disabled": 1}
    assert usage(client, auth, expired["id"]).json["data"]["totals"] == ZERO | {"expired": 1}
    with engine.connect() as conn:
        unknown = conn.execute(sa.select(tables.usage_buckets).where(tables.usage_buckets.c.key_id == "")).one()
    assert (unknown.tenant_id, unknown.unknown_key, unknown.valid) == ("", 1, 0)


@pytest.fixture
def wait_until_fresh_window():
    """Keep a test's verifications inside one hour (and one rate-limit window of an hour)."""

    def wait() -> None:
        left = 3600 - time.time() % 3600
        if left < 20:
            time.sleep(left + 0.1)

    return wait


def test_buckets_cross_an_hour_and_a_day_correctly(client, auth, create, flush, clock):
    clock.set(2026, 12, 6, 22, 30)
    key = create()
    moments = [(2026, 12, 6, 22, 59, 59), (2026, 12, 6, 23, 0, 0), (2026, 12, 6, 23, 59, 59), (2026, 12, 7, 0, 0, 0)]
    for number, moment in enumerate(moments, start=1):
        clock.set(*moment)
        for _ in range(number):  # 1, 2, 3 and 4 verifications at these four moments
            verify(client, key["fullKey"])
    flush()
    clock.set(2026, 12, 7, 1, 30)
    hourly = usage(client, auth, key["id"], "?since=2026-12-06T22:10:00Z").json["data"]
    assert hourly["since"] == "2026-12-06T22:00:00.000Z" and hourly["granularity"] == "hour"
    assert [(bucket["start"], bucket["valid"]) for bucket in hourly["buckets"]] == [
        ("2026-12-06T22:00:00.000Z", 1),
        ("2026-12-06T23:00:00.000Z", 5),
        ("2026-12-07T00:00:00.000Z", 4),
        ("2026-12-07T01:00:00.000Z", 0),  # empty buckets are there too
    ]
    daily = usage(client, auth, key["id"], "?since=2026-12-05T12:00:00Z&granularity=day").json["data"]
    assert daily["since"] == "2026-12-05T00:00:00.000Z"
    assert [(bucket["start"], bucket["valid"]) for bucket in daily["buckets"]] == [
        ("2026-12-05T00:00:00.000Z", 0),
        ("2026-12-06T00:00:00.000Z", 6),
        ("2026-12-07T00:00:00.000Z", 4),
    ]
    assert daily["totals"]["valid"] == 10
    # until excludes its own instant: a bucket starts before until or is not there.
    bounded = usage(client, auth, key["id"], "?since=2026-12-06T23:00:00Z&until=2026-12-07T00:00:00Z").json["data"]
    assert [bucket["valid"] for bucket in bounded["buckets"]] == [5]


def test_the_default_range_is_the_last_24_hours(client, auth, create, clock):
    clock.set(2026, 12, 6, 10, 20)
    key = create()
    data = usage(client, auth, key["id"]).json["data"]
    assert data["since"] == "2026-12-05T10:00:00.000Z" and data["until"] == "2026-12-06T10:20:00.000Z"
    assert len(data["buckets"]) == 25 and data["buckets"][-1]["start"] == "2026-12-06T10:00:00.000Z"
    assert all(bucket == {"start": bucket["start"], **ZERO} for bucket in data["buckets"])


BAD_QUERIES = [
    ("?granularity=week", "granularity"),
    ("?granularity=", "granularity"),
    ("?since=yesterday", "since"),
    ("?since=2026-12-06T10:00:00", "since"),  # no zone
    ("?until=2026-13-01T00:00:00Z", "until"),
    ("?since=9999-12-31T23:59:59-23:59", "since"),  # the year 10000 in UTC
    ("?since=2026-12-07T00:00:00Z&until=2026-12-06T00:00:00Z", "since"),
    ("?since=2026-12-06T00:00:00Z&until=2026-12-06T00:00:00Z", "since"),
    ("?since=2026-09-01T00:00:00Z&until=2026-12-06T00:00:00Z", "since"),  # 2,328 hourly buckets
    ("?since=2020-01-01T00:00:00Z&until=2026-12-06T00:00:00Z&granularity=day", "since"),
    ("?since=" + "9" * 5000, "since"),
    ("?since=2026-12-06T00:00:00%00Z", "since"),
    ("?since=2026-12-06T00:00:00Z%1B", "since"),  # ESC
    ("?until=2026-12-06T00:00:00Z%0A", "until"),  # a newline
    ("?granularity=h%C3%B6ur", "granularity"),
    ("?granularity=" + "[" * 10_000, "granularity"),
]


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
def test_a_bad_range_is_a_400(client, auth, create, query, field):
    key = create()
    for path in (f"/dashboard/api-keys/{key['id']}/usage", "/dashboard/usage"):
        response = client.get(path + query, headers=auth())
        assert response.status_code == 400, response.json
        assert field in response.json["errors"]


def test_at_most_2000_buckets(client, auth, create):
    key = create()
    ok = usage(client, auth, key["id"], "?since=2026-01-01T00:00:00Z&until=2026-03-25T08:00:00Z")
    assert ok.status_code == 200 and len(ok.json["data"]["buckets"]) == 2000
    over = usage(client, auth, key["id"], "?since=2026-01-01T00:00:00Z&until=2026-03-25T08:00:01Z")
    assert over.status_code == 400
    far = usage(client, auth, key["id"], "?since=9994-07-15T00:00:00Z&until=9999-12-31T23:59:59Z&granularity=day")
    assert far.status_code == 200 and far.json["data"]["buckets"][-1]["start"] == "9999-12-31T00:00:00.000Z"


def test_a_tenant_sees_only_its_own_keys_usage(client, auth, create, flush):
    mine, theirs = create("acme"), create("other")
    for _ in range(3):
        verify(client, theirs["fullKey"])
    verify(client, mine["fullKey"])
    flush()
    assert usage(client, auth, theirs["id"], tenant="acme").status_code == 404
    assert usage(client, auth, theirs["id"], tenant="acme").json["code"] == "API_KEY_NOT_FOUND"
    overview = client.get("/dashboard/usage", headers=auth("acme")).json["data"]
    assert overview["totals"]["valid"] == 1
    assert [key["id"] for key in overview["topKeys"]] == [mine["id"]]
    assert usage(client, auth, "key_nonexistent00000").status_code == 404


def test_a_deleted_keys_history_stays_readable(client, auth, create, flush):
    key = create()
    verify(client, key["fullKey"])
    flush()
    client.delete(f"/dashboard/api-keys/{key['id']}", headers=auth())
    verify(client, key["fullKey"])  # after the delete: an unknown key, not this one's
    flush()
    assert usage(client, auth, key["id"]).json["data"]["totals"] == ZERO | {"valid": 1}
    assert usage(client, auth, key["id"], tenant="other").status_code == 404
    top = client.get("/dashboard/usage", headers=auth()).json["data"]["topKeys"]
    assert top == [{"id": key["id"], "name": None, "totals": ZERO | {"valid": 1}}]


def test_top_keys_are_ranked_by_verifications(client, auth, create, flush):
    made = [create(name=f"key {number}") for number in range(4)]
    for number, key in enumerate(made):
        for _ in range(number):
            verify(client, key["fullKey"])
        verify(client, wrong_secret(key))  # every result counts toward the ranking
    flush()
    top = client.get("/dashboard/usage?top=3", headers=auth()).json["data"]["topKeys"]
    assert [(key["name"], sum(key["totals"].values())) for key in top] == [("key 3", 4), ("key 2", 3), ("key 1", 2)]
    assert client.get("/dashboard/usage?top=1001", headers=auth()).status_code == 400
    assert client.get("/dashboard/usage?top=0", headers=auth()).status_code == 400


def test_counts_add_up_over_flushes_and_apps(app, config, tmp_path, client, auth, create, flush):
    key = create()
    other = create_app(config, instance_path=str(tmp_path / "second"))  # a second worker on the same database
    try:
        second = other.test_client()
        for _ in range(3):
            verify(client, key["fullKey"])
            verify(second, key["fullKey"])
        flush()
        verify(client, key["fullKey"])
        flush()
        extension.get_state(other).usage.stop()  # as a graceful stop writes it
    finally:
        extension.get_engine(other).dispose()
    assert usage(client, auth, key["id"]).json["data"]["totals"]["valid"] == 7


def test_counts_a_failed_write_could_not_store_are_kept_for_the_next(app, client, auth, create, caplog):
    key = create()
    for _ in range(2):
        verify(client, key["fullKey"])
    counter = extension.get_state(app).usage
    working = counter.engine
    counter.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # nothing listens there
    try:
        assert counter.flush() == 0
    finally:
        counter.engine.dispose()
        counter.engine = working
    assert any("kept for the next try" in record.getMessage() for record in caplog.records)
    verify(client, key["fullKey"])
    assert counter.flush() == 1
    assert usage(client, auth, key["id"]).json["data"]["totals"]["valid"] == 3


def test_retention_removes_only_old_buckets(app, client, auth, create, flush):
    key = create()
    verify(client, key["fullKey"])
    flush()
    now = tables.utcnow()
    engine = extension.get_engine(app)
    old = [now.replace(minute=0, second=0, microsecond=0) - timedelta(days=days, hours=1) for days in (90, 91, 400)]
    with engine.begin() as conn:
        for start in old:
            conn.execute(
                sa.insert(tables.usage_buckets).values(key_id=key["id"], tenant_id="acme", bucket_start=start, valid=5)
            )
    counter = extension.get_state(app).usage
    assert counter.remove_old() == 3
    with engine.connect() as conn:
        starts = conn.execute(sa.select(tables.usage_buckets.c.bucket_start)).scalars().all()
    assert starts == [now.replace(minute=0, second=0, microsecond=0)]
    assert counter.remove_old() == 0


def test_usage_off_counts_nothing(config, tmp_path):
    config |= {"APIKEYS_USAGE": "off"}
    app = create_app(config, instance_path=str(tmp_path / "off"))
    try:
        client = app.test_client()
        token = {"Authorization": "Bearer " + issue_token(app.config, "acme", 600)}
        key = client.post("/dashboard/api-keys", json={"name": "n", "environment": "live"}, headers=token).json["data"]
        assert verify(client, key["fullKey"]).status_code == 200
        assert extension.get_state(app).usage is None
        with extension.get_engine(app).connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(tables.usage_buckets)).scalar_one() == 0
        # Reading still answers: all zeros.
        answer = client.get(f"/dashboard/api-keys/{key['id']}/usage", headers=token).json["data"]
        assert answer["totals"] == ZERO
    finally:
        extension.get_engine(app).dispose()


def test_the_decorator_and_helper_count_too(app, config, tmp_path, client, auth, create, flush):
    from flask import Flask

    from apikeys import ApiKeys
    from apikeys import require_api_key
    from apikeys import verify_api_key

    key = create()
    other = Flask("service", instance_path=str(tmp_path / "service"))
    other.config.update({name: config[name] for name in ("APIKEYS_DATABASE_URL", "APIKEYS_VERIFIER_KEY")})
    ApiKeys(other)

    @other.get("/orders")
    @require_api_key
    def orders():
        return {}

    try:
        assert other.test_client().get("/orders", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
        assert other.test_client().get("/orders", headers={"X-Api-Key": wrong_secret(key)}).status_code == 401
        with other.app_context():
            verify_api_key(key["fullKey"])
        extension.get_state(other).usage.stop()
    finally:
        extension.get_engine(other).dispose()
    assert usage(client, auth, key["id"]).json["data"]["totals"] == ZERO | {"valid": 2, "invalidSecret": 1}


@pytest.mark.parametrize("until", ["0001-01-01T00:00:00Z", "0001-01-01T23:59:00%2B23:59"])
def test_an_until_at_the_start_of_time_is_a_400(client, auth, create, until):
    key = create()
    for path in (f"/dashboard/api-keys/{key['id']}/usage", "/dashboard/usage"):
        response = client.get(f"{path}?until={until}", headers=auth())
        assert response.status_code == 400 and "until" in response.json["errors"]


def test_times_before_the_year_1000_keep_four_digits(client, auth, create):
    key = create()
    data = usage(client, auth, key["id"], "?until=0601-03-05T09:53:12%2B15:23").json["data"]
    assert data["since"] == "0601-03-03T18:00:00.000Z" and data["until"] == "0601-03-04T18:30:12.000Z"
    assert data["buckets"][0]["start"] == "0601-03-03T18:00:00.000Z"
