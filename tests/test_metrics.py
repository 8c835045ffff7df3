"""/metrics: every /verify answer counted once by result, a latency histogram, no tenant or key labels."""

from __future__ import annotations

import re
import urllib.request

import pytest

from apikeys import create_app
from apikeys import db
from apikeys import keys
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
        db.get_engine(off).dispose()


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
