"""Per-key rate limits and quotas, in process on both databases: policy, verification, refills, failures."""

from __future__ import annotations

import logging
import math
import socket
import time

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import g

from apikeys import ApiKeys
from apikeys import require_api_key
from apikeys import verify_api_key
from apikeys.errors import RateLimited
from apikeys.errors import UsageExceeded
from apikeys.ratelimit import embedded
from apikeys.verification import extension

RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture
def create(make_key):
    """Create a key with a policy (rateLimit, quota, scopes, ...); return the create answer's data."""
    return make_key


@pytest.fixture
def verify(client):
    def call(key: dict, cost: str | None = None, query: str = "", **headers):
        sent = {"X-Api-Key": key["fullKey"], **headers}
        if cost is not None:
            sent["X-Api-Key-Cost"] = cost
        return client.get("/verify" + query, headers=sent)

    return call


@pytest.fixture
def wait_for_room():
    """Start a test at least ``seconds`` before the current window of ``period`` ends, so it stays in one window."""

    def wait(period: int, seconds: float = 5.0) -> None:
        left = period - time.time() % period
        if left < seconds:
            time.sleep(left + 0.05)

    return wait


def key_data(client, auth, key_id: str, tenant: str = "acme") -> dict:
    response = client.get(f"/dashboard/api-keys/{key_id}", headers=auth(tenant))
    assert response.status_code == 200, response.json
    return response.json["data"]


# --- Policy: create, read, change, remove ------------------------------------------


def test_a_key_has_no_limits_unless_given(create):
    data = create()
    assert data["rateLimit"] is None and data["quota"] is None


def test_limits_are_created_shown_and_audited(client, auth, create):
    data = create(
        rateLimit={"limit": 50, "periodSeconds": 5},
        quota={"remaining": 7, "refillAmount": 9, "refillInterval": "daily"},
    )
    assert data["rateLimit"] == {"limit": 50, "periodSeconds": 5}
    assert data["quota"] == {"remaining": 7, "refillAmount": 9, "refillInterval": "daily"}
    shown = key_data(client, auth, data["id"])
    assert shown["rateLimit"] == data["rateLimit"] and shown["quota"] == data["quota"]
    listed = client.get("/dashboard/api-keys", headers=auth()).json["data"]["items"]
    assert [(item["rateLimit"], item["quota"]) for item in listed] == [(data["rateLimit"], data["quota"])]

    changed = client.patch(
        f"/dashboard/api-keys/{data['id']}", json={"rateLimit": {"limit": 1, "periodSeconds": 86400}}, headers=auth()
    )
    assert changed.status_code == 200
    assert changed.json["data"]["rateLimit"] == {"limit": 1, "periodSeconds": 86400}
    assert changed.json["data"]["quota"] == data["quota"]  # untouched
    removed = client.patch(f"/dashboard/api-keys/{data['id']}", json={"rateLimit": None, "quota": None}, headers=auth())
    assert removed.json["data"]["rateLimit"] is None and removed.json["data"]["quota"] is None
    actions = [entry["action"] for entry in client.get("/dashboard/audit-log", headers=auth()).json["data"]["items"]]
    assert actions == ["key.updated", "key.updated", "key.created"]


def test_removing_a_limit_lifts_it(client, auth, create, verify, wait_for_room):
    wait_for_room(60)
    key = create(rateLimit={"limit": 1, "periodSeconds": 60}, quota={"remaining": 0})
    assert verify(key, cost="0").status_code == 200  # cost 0 looks and counts nothing
    assert verify(key).json["code"] == "USAGE_EXCEEDED"
    client.patch(f"/dashboard/api-keys/{key['id']}", json={"quota": None}, headers=auth())
    assert verify(key).status_code == 200
    assert verify(key).json["code"] == "RATE_LIMITED"
    client.patch(f"/dashboard/api-keys/{key['id']}", json={"rateLimit": None}, headers=auth())
    answer = verify(key)
    assert answer.status_code == 200
    assert not any(name in answer.headers for name in RATE_HEADERS)
    assert "rateLimit" not in answer.json["data"] and "quota" not in answer.json["data"]


BAD_POLICIES = [
    ({"rateLimit": {"limit": 0, "periodSeconds": 5}}, "rateLimit.limit"),
    ({"rateLimit": {"limit": 1_000_001, "periodSeconds": 5}}, "rateLimit.limit"),
    ({"rateLimit": {"limit": 10, "periodSeconds": 0}}, "rateLimit.periodSeconds"),
    ({"rateLimit": {"limit": 10, "periodSeconds": 86_401}}, "rateLimit.periodSeconds"),
    ({"rateLimit": {"limit": 10}}, "rateLimit.periodSeconds"),
    ({"rateLimit": {"limit": 1.5, "periodSeconds": 5}}, "rateLimit.limit"),
    ({"rateLimit": {"limit": "10", "periodSeconds": 5}}, "rateLimit.limit"),
    ({"rateLimit": {"limit": 10, "periodSeconds": 5, "burst": 3}}, "rateLimit.burst"),
    ({"rateLimit": [10, 5]}, "rateLimit"),
    ({"rateLimit": "10/5"}, "rateLimit"),
    ({"quota": {"remaining": -1}}, "quota.remaining"),
    ({"quota": {"remaining": 10**12 + 1}}, "quota.remaining"),
    ({"quota": {"remaining": 10**400}}, "quota.remaining"),
    ({"quota": {}}, "quota.remaining"),
    ({"quota": {"remaining": 5, "refillAmount": 0, "refillInterval": "daily"}}, "quota.refillAmount"),
    ({"quota": {"remaining": 5, "refillAmount": 10**12 + 1, "refillInterval": "daily"}}, "quota.refillAmount"),
    ({"quota": {"remaining": 5, "refillAmount": 5, "refillInterval": "weekly"}}, "quota.refillInterval"),
    ({"quota": {"remaining": 5, "refillAmount": 5}}, "quota.refillInterval"),
    ({"quota": {"remaining": 5, "refillInterval": "daily"}}, "quota.refillInterval"),
    ({"quota": {"remaining": 5, "refillAmount": 5, "refillInterval": "Daily\u0000"}}, "quota.refillInterval"),
    ({"quota": 5}, "quota"),
]


@pytest.mark.parametrize(("policy", "field"), BAD_POLICIES)
def test_a_bad_limit_is_a_400_that_writes_nothing(client, auth, create, policy, field):
    key = create(rateLimit={"limit": 3, "periodSeconds": 60})
    created = client.post("/dashboard/api-keys", json={"name": "n", "environment": "live", **policy}, headers=auth())
    assert created.status_code == 400, created.json
    assert field in created.json["errors"], created.json
    changed = client.patch(f"/dashboard/api-keys/{key['id']}", json=policy, headers=auth())
    assert changed.status_code == 400 and field in changed.json["errors"]
    assert client.get("/dashboard/api-keys", headers=auth()).json["data"]["total"] == 1
    assert key_data(client, auth, key["id"])["rateLimit"] == {"limit": 3, "periodSeconds": 60}
    actions = [entry["action"] for entry in client.get("/dashboard/audit-log", headers=auth()).json["data"]["items"]]
    assert actions == ["key.created"]


def test_bounds_themselves_are_accepted(create):
    low = create(rateLimit={"limit": 1, "periodSeconds": 1}, quota={"remaining": 0})
    high = create(
        rateLimit={"limit": 1_000_000, "periodSeconds": 86_400},
        quota={"remaining": 10**12, "refillAmount": 10**12, "refillInterval": "monthly"},
    )
    assert low["quota"]["remaining"] == 0 and high["quota"]["remaining"] == 10**12


def test_another_tenants_key_limits_cannot_be_read_or_changed(client, auth, create):
    key = create("acme", quota={"remaining": 5})
    response = client.patch(
        f"/dashboard/api-keys/{key['id']}", json={"quota": {"remaining": 10**9}}, headers=auth("evil")
    )
    assert response.status_code == 404
    assert client.get(f"/dashboard/api-keys/{key['id']}", headers=auth("evil")).status_code == 404
    assert key_data(client, auth, key["id"])["quota"]["remaining"] == 5


# --- Verification: the rate limit -------------------------------------------------


def test_over_the_rate_limit_is_a_429_with_consistent_headers(verify, create, wait_for_room):
    wait_for_room(60)
    key = create(rateLimit={"limit": 3, "periodSeconds": 60})
    remaining = []
    for _ in range(3):
        answer = verify(key)
        assert answer.status_code == 200
        assert answer.headers["RateLimit-Limit"] == "3"
        reset = int(answer.headers["RateLimit-Reset"])
        assert 1 <= reset <= 60
        data = answer.json["data"]["rateLimit"]
        assert data == {"limit": 3, "remaining": int(answer.headers["RateLimit-Remaining"]), "reset": reset}
        remaining.append(data["remaining"])
    assert remaining == [2, 1, 0]
    refused = verify(key)
    assert refused.status_code == 429
    assert refused.json["code"] == "RATE_LIMITED" and refused.json["error"] == "Too Many Requests"
    assert refused.headers["RateLimit-Remaining"] == "0" and refused.headers["RateLimit-Limit"] == "3"
    # Retry-After and RateLimit-Reset agree, and point at the end of the epoch-aligned window.
    assert refused.headers["Retry-After"] == refused.headers["RateLimit-Reset"]
    assert abs(int(refused.headers["Retry-After"]) - math.ceil(60 - time.time() % 60)) <= 1
    assert refused.headers["X-Api-Key-Error"] == "RATE_LIMITED"


def test_the_window_starts_again_on_the_epoch(verify, create):
    key = create(rateLimit={"limit": 1, "periodSeconds": 2})
    time.sleep(2 - time.time() % 2 + 0.02)  # at the start of a two-second window: the pair below fits in it
    assert verify(key).status_code == 200
    assert verify(key).status_code == 429
    time.sleep(2 - time.time() % 2 + 0.02)
    assert verify(key).status_code == 200


def test_a_refused_request_counts_nothing(verify, create, wait_for_room, client):
    wait_for_room(60)
    key = create(rateLimit={"limit": 1, "periodSeconds": 60}, quota={"remaining": 5}, scopes=["read"])
    for _ in range(4):  # refused by a later-ordered check: scope, environment, a wrong secret
        assert verify(key, **{"X-Api-Key-Required-Scopes": "write"}).status_code == 403
        assert verify(key, query="?environment=test").status_code == 403
        wrong = dict(key, fullKey=key["fullKey"][:-1] + ("A" if key["fullKey"][-1] != "A" else "B"))
        assert verify(wrong).status_code == 401
    answer = verify(key)
    assert answer.status_code == 200
    assert answer.headers["RateLimit-Remaining"] == "0"
    assert answer.headers["X-Api-Key-Quota-Remaining"] == "4"


def test_cost_zero_looks_but_counts_nothing(verify, create, wait_for_room):
    wait_for_room(60)
    key = create(rateLimit={"limit": 1, "periodSeconds": 60}, quota={"remaining": 2})
    for _ in range(3):
        answer = verify(key, cost="0")
        assert answer.status_code == 200
        assert answer.headers["RateLimit-Remaining"] == "1" and answer.headers["X-Api-Key-Quota-Remaining"] == "2"
    assert verify(key).status_code == 200
    refused = verify(key, cost="0")  # the window is full: even a look is refused
    assert refused.status_code == 429 and refused.json["code"] == "RATE_LIMITED"


# --- Verification: the quota -----------------------------------------------------


def test_a_quota_is_spent_by_cost_and_never_below_zero(verify, create, client, auth):
    key = create(quota={"remaining": 8})
    answer = verify(key, cost="5")
    assert answer.status_code == 200 and answer.headers["X-Api-Key-Quota-Remaining"] == "3"
    assert answer.json["data"]["quota"] == {"remaining": 3}
    assert "RateLimit-Limit" not in answer.headers and "rateLimit" not in answer.json["data"]
    refused = verify(key, cost="5")  # 5 with 3 left: refused, and the 3 stay
    assert refused.status_code == 429 and refused.json["code"] == "USAGE_EXCEEDED"
    assert refused.headers["X-Api-Key-Quota-Remaining"] == "3"
    assert "Retry-After" not in refused.headers  # no refill: only a PATCH tops it up
    assert key_data(client, auth, key["id"])["quota"]["remaining"] == 3
    assert verify(key, query="?cost=3").status_code == 200
    assert verify(key, cost="0").headers["X-Api-Key-Quota-Remaining"] == "0"
    assert verify(key).status_code == 429
    assert key_data(client, auth, key["id"])["quota"]["remaining"] == 0
    client.patch(f"/dashboard/api-keys/{key['id']}", json={"quota": {"remaining": 1}}, headers=auth())
    assert verify(key).status_code == 200


def test_a_quota_refusal_gives_back_its_rate_limit_count(verify, create, wait_for_room):
    wait_for_room(60)
    key = create(rateLimit={"limit": 2, "periodSeconds": 60}, quota={"remaining": 1})
    assert verify(key).headers["RateLimit-Remaining"] == "1"
    for _ in range(3):
        refused = verify(key)
        assert refused.json["code"] == "USAGE_EXCEEDED"
        assert refused.headers["RateLimit-Remaining"] == "1"  # the refused request was not counted
    assert verify(key, cost="0").status_code == 200


COSTS = ["-1", "1001", "1.5", "abc", "", " ", "1, 5", "0x10", "1e3", "١", "99999999999999999999", "\x1b", "1\x1b"]


@pytest.mark.parametrize("cost", COSTS)
def test_a_bad_cost_is_a_400(verify, create, cost):
    key = create(quota={"remaining": 5})
    header = verify(key, cost=cost)
    if cost.strip() == "":  # an empty header is no header: nginx's way of removing one
        assert header.status_code == 200
    else:
        assert header.status_code == 400 and "X-Api-Key-Cost" in header.json["errors"]
    query = verify(key, query="?cost=" + cost.replace(" ", "%20"))
    assert query.status_code == 400 and "cost" in query.json["errors"]


def test_cost_bounds_are_accepted(verify, create):
    key = create(quota={"remaining": 1000})
    assert verify(key, cost="1000").headers["X-Api-Key-Quota-Remaining"] == "0"
    assert verify(key, cost="0").status_code == 200


def test_the_header_is_the_cost_a_query_parameter_does_not_lower_it(verify, create):
    key = create(quota={"remaining": 5})
    assert verify(key, cost="5", query="?cost=0").headers["X-Api-Key-Quota-Remaining"] == "0"


def test_a_forwarded_path_reads_no_cost_from_the_clients_query(client, create):
    key = create(quota={"remaining": 5})
    answer = client.get("/verify/orders?cost=0", headers={"X-Api-Key": key["fullKey"]})
    assert answer.headers["X-Api-Key-Quota-Remaining"] == "4"


# --- Refills, with a settable clock ----------------------------------------------


def test_a_daily_quota_refills_at_midnight_utc(clock, create, verify, client, auth):
    clock.set(2026, 12, 6, 10, 0)
    key = create(quota={"remaining": 2, "refillAmount": 5, "refillInterval": "daily"})
    assert verify(key, cost="2").headers["X-Api-Key-Quota-Remaining"] == "0"
    refused = verify(key)
    assert refused.json["code"] == "USAGE_EXCEEDED"
    assert refused.headers["Retry-After"] == str(14 * 3600)  # until 2026-12-07T00:00:00Z
    clock.set(2026, 12, 6, 23, 59, 59)
    assert verify(key).status_code == 429
    assert key_data(client, auth, key["id"])["quota"]["remaining"] == 0
    clock.set(2026, 12, 7, 0, 0, 0)
    assert key_data(client, auth, key["id"])["quota"]["remaining"] == 5  # shown before anything verifies
    assert verify(key).headers["X-Api-Key-Quota-Remaining"] == "4"
    clock.set(2026, 12, 7, 23, 0)
    assert verify(key).headers["X-Api-Key-Quota-Remaining"] == "3"  # one refill a day, not one per read
    clock.set(2026, 12, 9, 8, 0)  # a day without verifications: still one refill, to the amount
    assert verify(key).headers["X-Api-Key-Quota-Remaining"] == "4"


def test_a_monthly_quota_refills_on_the_first_of_the_month(clock, create, verify, client, auth):
    clock.set(2026, 1, 31, 23, 59, 59)
    key = create(quota={"remaining": 0, "refillAmount": 10, "refillInterval": "monthly"})
    refused = verify(key)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    clock.set(2026, 2, 1, 0, 0, 0)
    assert verify(key, cost="3").headers["X-Api-Key-Quota-Remaining"] == "7"
    clock.set(2026, 2, 28, 23, 59)
    assert verify(key).headers["X-Api-Key-Quota-Remaining"] == "6"
    clock.set(2026, 12, 31, 12, 0)
    assert verify(key).headers["X-Api-Key-Quota-Remaining"] == "9"
    assert verify(key, cost="9").status_code == 200
    refused = verify(key)
    assert refused.headers["Retry-After"] == str(12 * 3600)  # until 2027-01-01T00:00:00Z
    clock.set(2027, 1, 1, 0, 0, 0)
    assert key_data(client, auth, key["id"])["quota"]["remaining"] == 10


def test_setting_a_quota_starts_its_period_then(clock, create, verify, client, auth):
    clock.set(2026, 12, 6, 23, 0)
    key = create(quota={"remaining": 1, "refillAmount": 100, "refillInterval": "daily"})
    clock.set(2026, 12, 7, 0, 30)
    assert key_data(client, auth, key["id"])["quota"]["remaining"] == 100
    client.patch(
        f"/dashboard/api-keys/{key['id']}",
        json={"quota": {"remaining": 3, "refillAmount": 100, "refillInterval": "daily"}},
        headers=auth(),
    )
    assert verify(key).headers["X-Api-Key-Quota-Remaining"] == "2"  # the PATCH's 3, not a refill


# --- The helper and the decorator ----------------------------------------------


@pytest.fixture
def verifying_app(app, config, tmp_path):
    """Another app that only verifies, on the service's database."""
    other = Flask("verifier", instance_path=str(tmp_path / "other"))
    other.config.update({name: config[name] for name in ("APIKEYS_DATABASE_URL", "APIKEYS_VERIFIER_KEY")})
    ApiKeys(other)

    @other.get("/orders")
    @require_api_key(cost=2)
    def orders():
        return {"key": g.api_key.id}

    yield other
    extension.get_engine(other).dispose()


def test_the_decorator_takes_its_cost_and_answers_the_headers(verifying_app, create, wait_for_room):
    wait_for_room(60)
    key = create(rateLimit={"limit": 5, "periodSeconds": 60}, quota={"remaining": 3})
    client = verifying_app.test_client()
    answer = client.get("/orders", headers={"X-Api-Key": key["fullKey"]})
    assert answer.status_code == 200
    assert answer.headers["X-Api-Key-Quota-Remaining"] == "1" and answer.headers["RateLimit-Remaining"] == "4"
    refused = client.get("/orders", headers={"X-Api-Key": key["fullKey"]})
    assert refused.status_code == 429 and refused.json["code"] == "USAGE_EXCEEDED"
    assert refused.headers["X-Api-Key-Quota-Remaining"] == "1" and refused.headers["RateLimit-Remaining"] == "4"


def test_the_helper_takes_its_cost(verifying_app, create):
    key = create(quota={"remaining": 3})
    with verifying_app.app_context():
        verified = verify_api_key(key["fullKey"], cost=3)
        assert verified.usage.credits == 0
        with pytest.raises(UsageExceeded):
            verify_api_key(key["fullKey"])
        assert verify_api_key(key["fullKey"], cost=0).usage.credits == 0
        for bad in (-1, 1001, 1.0, "1", True, None):
            with pytest.raises(ValueError):
                verify_api_key(key["fullKey"], cost=bad)
    with pytest.raises(ValueError):
        require_api_key(cost=1001)


def test_the_helper_refuses_over_the_rate_limit(verifying_app, create, wait_for_room):
    wait_for_room(60)
    key = create(rateLimit={"limit": 1, "periodSeconds": 60})
    with verifying_app.app_context():
        assert verify_api_key(key["fullKey"]).usage.rate_limit()["remaining"] == 0
        with pytest.raises(RateLimited) as refused:
            verify_api_key(key["fullKey"])
    assert refused.value.headers()["RateLimit-Remaining"] == "0"


# --- What an unlimited key costs, and what a failing store does --------------------


def test_a_key_without_limits_touches_no_store_and_writes_nothing(app, create, verify):
    key = create()
    statements = []
    engine = extension.get_engine(app)
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    app.config["APIKEYS_LAST_USED_INTERVAL"] = 3600
    verify(key)  # the first sets lastUsedAt
    statements.clear()
    for _ in range(50):
        assert verify(key).status_code == 200
    assert statements == []  # the lookup runs on its own connection; nothing else ran
    assert extension.get_state(app).rate_limiter._store is None
    assert not _exists(app, embedded.FILE)


def _exists(app, name: str) -> bool:
    import os

    return os.path.exists(os.path.join(app.instance_path, name))


def test_the_embedded_store_lives_in_the_instance_folder(app, create, verify):
    key = create(rateLimit={"limit": 5, "periodSeconds": 60})
    assert not _exists(app, embedded.FILE)
    verify(key)
    assert _exists(app, embedded.FILE)


def test_a_count_carried_into_the_next_window_tells_of_that_window(tmp_path, monkeypatch):
    """A worker that read the clock just before a boundary, then waited while another moved the file on: its count
    went into the next window, and its answer's reset is the time to that window's end, at most one period."""
    readings = [1010.01] * 9  # worker A counts at 1010.01, in window 202 (1010 to 1015)
    monkeypatch.setattr(embedded, "time", type("Clock", (), {"time": staticmethod(lambda: readings.pop(0))}))
    first, second = embedded.EmbeddedStore(str(tmp_path)), embedded.EmbeddedStore(str(tmp_path))
    assert first.take("key", 50, 5).count == 1
    readings[:] = [1009.99] + [1010.02] * 9  # B reads 1009.99 (window 201); 1010.02 once it has counted
    window = second.take("key", 50, 5)
    assert (window.allowed, window.count, window.mark) == (True, 2, ("key:5", 202))
    assert 0 < window.reset <= 5
    assert window.reset == pytest.approx(1015 - 1010.02)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("setting", ["open", "closed"])
def test_a_failing_store_is_open_or_closed_as_set(config, tmp_path, setting, caplog):
    from apikeys import create_app
    from apikeys.tokens import issue_token

    config |= {
        "APIKEYS_RATE_LIMIT_URL": f"redis://127.0.0.1:{_closed_port()}/0",
        "APIKEYS_RATE_LIMIT_ON_ERROR": setting,
    }
    app = create_app(config, instance_path=str(tmp_path / "failing"))
    try:
        client = app.test_client()
        auth = {"Authorization": "Bearer " + issue_token(app.config, "acme", 600)}
        body = {"name": "n", "environment": "live", "rateLimit": {"limit": 1, "periodSeconds": 60}}
        key = client.post("/dashboard/api-keys", json=body, headers=auth).json["data"]
        errors_before = _value(client.get("/metrics").get_data(as_text=True), "apikeys_rate_limit_errors_total ")
        with caplog.at_level(logging.WARNING, logger="apikeys.ratelimit"):
            answers = [client.get("/verify", headers={"X-Api-Key": key["fullKey"]}) for _ in range(5)]
        if setting == "open":
            assert [answer.status_code for answer in answers] == [200] * 5  # authenticated, the limit not enforced
            assert "RateLimit-Limit" not in answers[0].headers
        else:
            assert [answer.status_code for answer in answers] == [503] * 5
            assert answers[0].json["code"] == "RATE_LIMIT_UNAVAILABLE" and answers[0].headers["Retry-After"] == "1"
        warnings = [record for record in caplog.records if record.name == "apikeys.ratelimit"]
        assert len(warnings) == 1  # at most once a minute
        assert "redis" in warnings[0].getMessage().lower()
        metrics = client.get("/metrics").get_data(as_text=True)
        assert _value(metrics, "apikeys_rate_limit_errors_total ") == errors_before + 5
        result = "valid" if setting == "open" else "rate_limit_unavailable"
        assert f'apikeys_verifications_total{{result="{result}"}}' in metrics
    finally:
        extension.get_engine(app).dispose()


def test_refusals_are_counted_by_result(client, create, verify, wait_for_room):
    wait_for_room(60)
    before = client.get("/metrics").get_data(as_text=True)
    key = create(rateLimit={"limit": 1, "periodSeconds": 60}, quota={"remaining": 0})
    verify(key)  # usage_exceeded: the rate-limit count is given back
    create_ok = create(rateLimit={"limit": 1, "periodSeconds": 60})
    verify(create_ok)
    verify(create_ok)  # rate_limited
    after = client.get("/metrics").get_data(as_text=True)
    for result in ("usage_exceeded", "rate_limited"):
        assert _count(after, result) == _count(before, result) + 1


def _count(metrics: str, result: str) -> float:
    return _value(metrics, f'apikeys_verifications_total{{result="{result}"}} ')


def _value(metrics: str, start: str) -> float:
    found = [row for row in metrics.splitlines() if row.startswith(start)]
    return float(found[0].split()[-1]) if found else 0.0


# --- Store failures the setting decides, whatever they are -------------------------


@pytest.mark.parametrize("url", ["redis://127.0.0.1:99999/0", "redis://:password@host:x/0", "http://127.0.0.1:6379"])
def test_a_redis_url_redis_py_cannot_read_stops_the_start_in_one_line(config, tmp_path, url):
    from apikeys import create_app
    from apikeys.config import ConfigError

    with pytest.raises(ConfigError) as refused:
        create_app(config | {"APIKEYS_RATE_LIMIT_URL": url}, instance_path=str(tmp_path / "bad"))
    message = str(refused.value)
    assert message.startswith("APIKEYS_RATE_LIMIT_URL") and "password" not in message and "\n" not in message


@pytest.mark.parametrize("setting", ["open", "closed"])
def test_an_embedded_store_that_cannot_be_opened_is_never_a_500(app, create, verify, setting):
    import os

    app.config["APIKEYS_RATE_LIMIT_ON_ERROR"] = setting
    extension.get_state(app).rate_limiter.closed = setting == "closed"
    os.makedirs(os.path.join(app.instance_path, embedded.FILE))  # a folder where the file should be
    key = create(rateLimit={"limit": 1, "periodSeconds": 60})
    answers = [verify(key).status_code for _ in range(3)]
    assert answers == ([200] * 3 if setting == "open" else [503] * 3)


@pytest.mark.parametrize("timeout_ms", [None, 200], ids=["default 50 ms", "200 ms"])
def test_a_hung_redis_costs_its_timeout_a_few_times_then_once_a_second(config, tmp_path, create, timeout_ms):
    """A redis-server that stops answering (SIGSTOP): three timeouts, then no wait until a second passed."""
    import signal
    import subprocess

    import redis

    from apikeys import create_app
    from apikeys.ratelimit.limiter import SLOW_IN_A_ROW

    port = _closed_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    app = None
    try:
        client = redis.Redis(port=port, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        settings = {"APIKEYS_RATE_LIMIT_URL": f"redis://127.0.0.1:{port}/0"}
        if timeout_ms is not None:
            settings["APIKEYS_RATE_LIMIT_TIMEOUT_MS"] = timeout_ms
        app = create_app(config | settings, instance_path=str(tmp_path / "r"))
        timeout = (timeout_ms or 50) / 1000
        key = create(rateLimit={"limit": 100, "periodSeconds": 60})
        verifier = app.test_client()
        assert verifier.get("/verify", headers={"X-Api-Key": key["fullKey"]}).headers["RateLimit-Limit"] == "100"
        store = extension.get_state(app).rate_limiter.store
        asked = []
        take = store.take
        store.take = lambda *args: asked.append(args) or take(*args)
        server.send_signal(signal.SIGSTOP)
        took = []
        for _ in range(SLOW_IN_A_ROW + 5):
            started = time.perf_counter()
            answer = verifier.get("/verify", headers={"X-Api-Key": key["fullKey"]})
            took.append(time.perf_counter() - started)
            assert answer.status_code == 200 and "RateLimit-Limit" not in answer.headers  # open: served, unlimited
        assert all(timeout * 0.9 <= seconds < timeout + 0.45 for seconds in took[:SLOW_IN_A_ROW])  # its timeout each
        assert len(asked) == SLOW_IN_A_ROW  # then the store is left alone (the rest is within the second)
        server.send_signal(signal.SIGCONT)
        time.sleep(1.05)
        assert verifier.get("/verify", headers={"X-Api-Key": key["fullKey"]}).headers["RateLimit-Limit"] == "100"
    finally:
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(10)
        if app is not None:
            extension.get_engine(app).dispose()


def test_a_malformed_query_cost_is_a_400_even_beside_a_header(verify, create):
    key = create(quota={"remaining": 5})
    answer = verify(key, cost="1", query="?cost=1001")
    assert answer.status_code == 400 and "cost" in answer.json["errors"]


def test_no_retry_after_when_the_refill_cannot_pay_the_cost(clock, create, verify):
    key = create(quota={"remaining": 0, "refillAmount": 3, "refillInterval": "daily"})
    assert "Retry-After" not in verify(key, cost="5").headers  # a refill of 3 never pays 5
    assert verify(key, cost="3").headers["Retry-After"] == str(14 * 3600)


def test_limits_nested_10000_deep_are_a_400_that_writes_nothing(client, auth, create):
    key = create(quota={"remaining": 5})
    deep = "[" * 10_000 + "]" * 10_000
    for method, path in (("post", "/dashboard/api-keys"), ("patch", f"/dashboard/api-keys/{key['id']}")):
        body = f'{{"name": "n", "environment": "live", "rateLimit": {deep}, "quota": {{"remaining": {deep}}}}}'
        answer = getattr(client, method)(path, data=body, content_type="application/json", headers=auth())
        assert answer.status_code == 400, answer.json
    assert client.get("/dashboard/api-keys", headers=auth()).json["data"]["total"] == 1
    assert client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).json["data"]["quota"]["remaining"] == 5


def test_a_cost_with_a_newline_in_the_query_is_a_400(verify, create):
    key = create(quota={"remaining": 5})
    answer = verify(key, query="?cost=1%0A")
    assert answer.status_code == 400 and "cost" in answer.json["errors"]
