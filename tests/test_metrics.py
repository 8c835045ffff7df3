"""/metrics: every /verify answer counted once by result, a latency histogram, no tenant or key labels."""

from __future__ import annotations

import re
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from apikeys import VerificationError
from apikeys import create_app
from apikeys import keys
from apikeys import metrics
from apikeys.storage import tables
from apikeys.verification import extension
from apikeys.verification.core import verify_key
from apikeys.verification.extension import get_state
from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import service_env
from tests.servers import token_for


def samples(text: str) -> dict[str, float]:
    """Return the samples of a Prometheus text answer, ``name{labels}`` to value."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def verifications(text: str, result: str) -> float:
    return samples(text).get(f'apikeys_verifications_total{{result="{result}"}}', 0.0)


def test_each_verify_answer_counts_once_under_its_result(app, client, auth, make_key):
    key = make_key()
    before = client.get("/metrics").get_data(as_text=True)
    client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
    client.get("/verify/any/path", headers={"X-Api-Key": key["fullKey"]})
    client.get("/verify", headers={"X-Api-Key": f"{key['publicKey']}.{keys.new_secret('live')}"})
    client.get("/verify")
    client.get("/verify?environment=test", headers={"X-Api-Key": key["fullKey"]})
    client.get("/verify?scope=admin", headers={"X-Api-Key": key["fullKey"]})
    client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth())
    client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    after = response.get_data(as_text=True)
    expected = {"valid": 2, "invalid": 1, "missing": 1, "wrong_environment": 1, "insufficient_scope": 1, "disabled": 1}
    for result, count in expected.items():
        assert verifications(after, result) - verifications(before, result) == count, result
    duration = samples(after)["apikeys_verification_duration_seconds_count"]
    assert duration - samples(before).get("apikeys_verification_duration_seconds_count", 0) == 7
    assert 'apikeys_verification_duration_seconds_bucket{le="0.005"}' in after


def set_row(app, key_id, **values):
    with extension.get_engine(app).begin() as conn:
        conn.execute(sa.update(tables.api_keys).where(tables.api_keys.c.id == key_id).values(**values))


def test_every_result_counts_once_under_its_own_label(app, client, auth, make_key, monkeypatch):
    """One /verify answer of each result, expired and busy included: each label moves by one, no other moves."""
    key = make_key()
    disabled, expired, digestless = make_key(), make_key(), make_key()
    client.post(f"/dashboard/api-keys/{disabled['id']}/toggle", headers=auth())
    set_row(app, expired["id"], expires_at=tables.utcnow() - timedelta(seconds=1))
    # Busy as tests/test_verify.py makes it: a row without a digest takes the host's one bcrypt slot,
    # and a wrong secret for it holds that slot (bcrypt slowed here) while the holder presents the right one.
    set_row(app, digestless["id"], secret_digest=None)
    inside, release = threading.Event(), threading.Event()
    real = keys.check_secret

    def slow_check(secret, secret_hash):
        inside.set()
        release.wait(10)
        return real(secret, secret_hash)

    def attack():
        with pytest.raises(VerificationError):
            verify_key(get_state(app), f"{digestless['publicKey']}.{keys.new_secret('live')}")

    before = client.get("/metrics").get_data(as_text=True)
    answers = {
        "valid": client.get("/verify", headers={"X-Api-Key": key["fullKey"]}),
        "missing": client.get("/verify"),
        "invalid": client.get("/verify", headers={"X-Api-Key": f"{key['publicKey']}.{keys.new_secret('live')}"}),
        "disabled": client.get("/verify", headers={"X-Api-Key": disabled["fullKey"]}),
        "expired": client.get("/verify", headers={"X-Api-Key": expired["fullKey"]}),
        "wrong_environment": client.get("/verify?environment=test", headers={"X-Api-Key": key["fullKey"]}),
        "insufficient_scope": client.get("/verify?scope=admin", headers={"X-Api-Key": key["fullKey"]}),
        "not_an_api_key": client.get("/verify", headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}),
        "ambiguous": client.get(
            "/verify", headers={"X-Api-Key": key["fullKey"], "Authorization": f"Bearer {disabled['fullKey']}"}
        ),
    }
    monkeypatch.setattr(keys, "check_secret", slow_check)
    with ThreadPoolExecutor(1) as pool:
        attacker = pool.submit(attack)  # verify_key itself: not a /verify answer, so not counted
        assert inside.wait(10)
        answers["busy"] = client.get("/verify", headers={"X-Api-Key": digestless["fullKey"]})
        release.set()
        attacker.result(10)
    after = client.get("/metrics").get_data(as_text=True)
    codes = {label: (response.status_code, (response.json or {}).get("code")) for label, response in answers.items()}
    assert codes == {
        "valid": (200, None),
        "missing": (401, "MISSING_API_KEY"),
        "invalid": (401, "INVALID_API_KEY"),
        "disabled": (403, "API_KEY_DISABLED"),
        "expired": (403, "API_KEY_EXPIRED"),
        "wrong_environment": (403, "WRONG_ENVIRONMENT"),
        "insufficient_scope": (403, "INSUFFICIENT_SCOPE"),
        "not_an_api_key": (401, "NOT_AN_API_KEY"),
        "ambiguous": (401, "AMBIGUOUS_API_KEY"),
        "busy": (503, "VERIFICATION_BUSY"),
    }
    # Every result exercised here, but the limits' (tests/test_limits.py counts those, each in its own setting).
    limit_results = {"RATE_LIMITED", "USAGE_EXCEEDED", "RATE_LIMIT_UNAVAILABLE"}
    assert set(metrics.RESULTS) - limit_results == {code or "VALID" for _, code in codes.values()}
    moved = {label: verifications(after, label) - verifications(before, label) for label in answers}
    assert moved == dict.fromkeys(answers, 1)
    total = samples(after)["apikeys_verification_duration_seconds_count"]
    assert total - samples(before).get("apikeys_verification_duration_seconds_count", 0) == len(answers)


def test_no_label_carries_a_tenant_or_a_key(client, make_key):
    key = make_key(tenant="secret-tenant")
    client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
    text = client.get("/metrics").get_data(as_text=True)
    ours = "\n".join(line for line in text.splitlines() if line.startswith("apikeys_"))
    labels = set(re.findall(r"\{([^}]*)\}", ours))
    assert {label.split("=")[0] for group in labels for label in group.split(",") if label} <= {"result", "le"}
    for private in ("secret-tenant", key["id"], key["publicKey"]):
        assert private not in text


def test_metrics_can_be_turned_off(config, tmp_path):
    off = create_app({**config, "APIKEYS_METRICS": "off"}, instance_path=str(tmp_path / "off"))
    try:
        assert off.test_client().get("/metrics").status_code == 404
    finally:
        extension.get_engine(off).dispose()


@pytest.mark.slow
def test_counts_add_up_across_gunicorn_workers(tmp_path, jwt_secret):
    database = tmp_path / "apikeys.sqlite3"
    env = service_env(f"sqlite:///{database}", jwt_secret, tmp_path / "instance")
    with Gunicorn(tmp_path, env, workers=4) as server:
        token = token_for(jwt_secret, "acme")
        status, body = call(
            server.url, "POST", "/dashboard/api-keys", token=token, body={"name": "k", "environment": "live"}
        )
        assert status == 201
        # Each call on a connection of its own: gunicorn hands them to whichever worker is free.
        assert {call(server.url, "GET", "/verify", api_key=body["data"]["fullKey"])[0] for _ in range(40)} == {200}
        assert {call(server.url, "GET", "/verify")[0] for _ in range(10)} == {401}
        with urllib.request.urlopen(server.url + "/metrics") as response:
            text = response.read().decode()
    assert verifications(text, "valid") == 40
    assert verifications(text, "missing") == 10
    assert samples(text)["apikeys_verification_duration_seconds_count"] == 50
