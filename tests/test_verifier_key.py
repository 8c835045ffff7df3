"""The verifier key across hosts: only the service makes or records one, digests are written only under the key the
database records, a host that has not followed an adoption keeps answering (never 500) but fails /readyz, and a
worker that boots with such a key refuses to serve."""

from __future__ import annotations

import os
import signal

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import g

from apikeys import ApiKeys
from apikeys import create_app
from apikeys import keys
from apikeys import require_api_key
from apikeys import verify_api_key
from apikeys.storage import fingerprints
from apikeys.storage import tables
from apikeys.verification import extension
from apikeys.verification import state as verify_module
from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import service_env
from tests.servers import token_for

OLD_KEY = "old-verifier-key-" + "o" * 40
NEW_KEY = "new-verifier-key-" + "n" * 40


@pytest.fixture(autouse=True)
def reread_the_recorded_key_at_once(monkeypatch):
    """Hosts re-read the recorded key every RECORDED_KEY_TTL_SECONDS; these tests follow each step at once."""
    monkeypatch.setattr(verify_module, "RECORDED_KEY_TTL_SECONDS", 0)


def service(config, tmp_path, name, **settings):
    return create_app({**config, **settings}, instance_path=str(tmp_path / name))


def consumer(database_url, tmp_path, verifier_key=None) -> Flask:
    """Another team's service that only verifies keys, with ``ApiKeys(app)`` and the decorator."""
    app = Flask("consumer", instance_path=str(tmp_path / "consumer-instance"))
    app.config["APIKEYS_DATABASE_URL"] = database_url
    if verifier_key:
        app.config["APIKEYS_VERIFIER_KEY"] = verifier_key
    ApiKeys(app)

    @app.get("/orders")
    @require_api_key
    def orders():
        return {"key": g.api_key.id}

    return app


def digest_of(app, key_id) -> str | None:
    with extension.get_engine(app).connect() as conn:
        return conn.execute(
            sa.select(tables.api_keys.c.secret_digest).where(tables.api_keys.c.id == key_id)
        ).scalar_one()


def create(app, tenant="acme") -> dict:
    from apikeys.tokens import issue_token

    headers = {"Authorization": "Bearer " + issue_token(app.config, tenant, 60)}
    response = app.test_client().post("/dashboard/api-keys", json={"name": "k", "environment": "live"}, headers=headers)
    assert response.status_code == 201, response.json
    return response.json["data"]


def verified_id(app, full_key) -> str:
    with app.app_context():
        return verify_api_key(full_key).id


# An app that only verifies: never makes a key, never records one


def test_a_verify_only_app_without_the_key_stops_at_start_and_says_where_it_lives(database_url, tmp_path):
    with pytest.raises(RuntimeError) as raised:
        consumer(database_url, tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert "APIKEYS_VERIFIER_KEY" in message and "instance/verifier-key" in message
    folder = tmp_path / "consumer-instance"
    assert not (folder / "verifier-key").exists()  # it made none of its own


def test_a_verify_only_app_reads_the_key_from_its_instance_folder(app, make_key, database_url, tmp_path):
    key = make_key()
    folder = tmp_path / "consumer-instance"
    folder.mkdir(mode=0o700)
    (folder / "verifier-key").write_text(app.config["APIKEYS_VERIFIER_KEY"] + "\n")
    (folder / "verifier-key").chmod(0o600)
    other = consumer(database_url, tmp_path)
    try:
        response = other.test_client().get("/orders", headers={"X-Api-Key": key["fullKey"]})
        assert (response.status_code, response.json) == (200, {"key": key["id"]})
    finally:
        extension.get_engine(other).dispose()


def test_a_verify_only_app_never_records_its_fingerprint(database_url, tmp_path, config):
    """The finding: on a fresh database, one made-up key sent to such an app recorded its key, and the service
    itself then refused to start."""
    other = consumer(database_url, tmp_path, verifier_key="consumers-own-" + "c" * 40)
    the_service = service(config, tmp_path, "service")
    try:
        made_up = f"{keys.new_public_key('live')}.{keys.new_secret('live')}"
        response = other.test_client().get("/orders", headers={"X-Api-Key": made_up})
        assert response.status_code == 401
        assert response.json["code"] == "INVALID_API_KEY"
        assert fingerprints.recorded_fingerprint(extension.get_engine(other)) is None
        extension.prepare(the_service)  # the service starts, and records its own key
        assert (
            fingerprints.recorded_fingerprint(extension.get_engine(other))
            == the_service.extensions["apikeys"].verifier.fingerprint
        )
    finally:
        extension.get_engine(other).dispose()
        extension.get_engine(the_service).dispose()


def test_a_verify_only_app_with_another_key_answers_in_the_envelope_and_writes_nothing(
    app, make_key, database_url, tmp_path
):
    extension.prepare(app)
    key = make_key()
    recorded_digest = digest_of(app, key["id"])
    other = consumer(database_url, tmp_path, verifier_key="consumers-own-" + "c" * 40)
    try:
        client = other.test_client()
        valid = client.get("/orders", headers={"X-Api-Key": key["fullKey"]})
        assert valid.status_code == 200 and valid.json == {"key": key["id"]}  # checked with bcrypt, correctly
        refused = client.get("/orders", headers={"X-Api-Key": f"{key['publicKey']}.{keys.new_secret('live')}"})
        assert refused.status_code == 401 and refused.mimetype == "application/json"
        assert refused.json["code"] == "INVALID_API_KEY"
        assert digest_of(app, key["id"]) == recorded_digest  # never rewritten under a key the database does not use
    finally:
        extension.get_engine(other).dispose()


# Changing the verifier key, host by host


def test_a_change_of_key_in_the_documented_order_never_fails_a_host(config, tmp_path, monkeypatch):
    old = service(config, tmp_path, "old", APIKEYS_VERIFIER_KEY=OLD_KEY)
    new = service(config, tmp_path, "new", APIKEYS_VERIFIER_KEY=NEW_KEY, APIKEYS_VERIFIER_KEY_PREVIOUS=OLD_KEY)
    old_verifier, new_verifier = keys.Verifier(OLD_KEY), keys.Verifier(NEW_KEY)
    bcrypt_calls = []
    real = keys.check_secret
    monkeypatch.setattr(keys, "check_secret", lambda *args: bcrypt_calls.append(1) or real(*args))
    try:
        extension.prepare(old)
        first = create(old)
        # 1. A host gets the new key, with the old one as previous: it starts (the recorded key is one it has)
        #    and keeps writing digests under the recorded one, which every host still reads.
        extension.prepare(new)
        second = create(new)
        assert digest_of(new, second["id"]).startswith(old_verifier.tag)
        assert verified_id(new, first["fullKey"]) == first["id"]
        assert digest_of(new, first["id"]).startswith(old_verifier.tag)
        assert verified_id(old, second["fullKey"]) == second["id"]
        assert bcrypt_calls == []
        assert new.test_client().get("/readyz").status_code == 200
        # 2. Adopt the new key: hosts that have it rewrite digests to it as keys are used.
        assert new.test_cli_runner().invoke(args=["verifier-key", "adopt", "--yes"]).exit_code == 0
        assert verified_id(new, first["fullKey"]) == first["id"]
        assert digest_of(new, first["id"]).startswith(new_verifier.tag)
        # A host still on the old key alone answers correctly (bcrypt, never a 500), writes nothing back under
        # the key the database no longer records, and tells its load balancer through /readyz.
        assert verified_id(old, first["fullKey"]) == first["id"]
        assert digest_of(old, first["id"]).startswith(new_verifier.tag)
        health = old.test_client().get("/readyz")
        assert health.status_code == 503
        assert health.json["code"] == "VERIFIER_KEY_MISMATCH"
        assert new.test_client().get("/readyz").status_code == 200
        with pytest.raises(fingerprints.VerifierKeyMismatch):
            extension.prepare(old)  # and it cannot start again with that key
    finally:
        extension.get_engine(old).dispose()
        extension.get_engine(new).dispose()


@pytest.mark.slow
def test_a_worker_that_boots_after_an_adoption_elsewhere_stops_its_host(tmp_path, database_url, jwt_secret, config):
    env = service_env(database_url, jwt_secret, tmp_path / "instance", APIKEYS_VERIFIER_KEY=OLD_KEY)
    server = Gunicorn(tmp_path, env, workers=2)
    with server:
        token = token_for(jwt_secret, "acme")
        status, created = call(
            server.url, "POST", "/dashboard/api-keys", token=token, body={"name": "k", "environment": "live"}
        )
        assert status == 201
        full_key = created["data"]["fullKey"]
        # Another host adopts a new key.
        adopter = service(config, tmp_path, "adopter", APIKEYS_VERIFIER_KEY=NEW_KEY)
        try:
            assert adopter.test_cli_runner().invoke(args=["verifier-key", "adopt", "--yes"]).exit_code == 0
            assert verified_id(adopter, full_key) == created["data"]["id"]  # its digest is now under the new key
        finally:
            extension.get_engine(adopter).dispose()
        # The running workers still answer every verification correctly, none with a 500.
        statuses = [call(server.url, "GET", "/verify", api_key=full_key)[0] for _ in range(12)]
        assert set(statuses) <= {200, 503}, statuses  # 503: a bcrypt turn was busy, with Retry-After
        assert 200 in statuses
        assert call(server.url, "GET", "/readyz")[0] == 503
        # A worker that boots now (after a crash, say) refuses, and the master stops rather than serve.
        workers = [pid for pid in children(server.process.pid)]
        assert workers
        os.kill(workers[0], signal.SIGKILL)
        assert server.process.wait(timeout=60) == 3
    assert "apikeys cannot start:" in server.logs()
    assert "APIKEYS_VERIFIER_KEY_PREVIOUS" in server.logs()


def children(pid: int) -> list[int]:
    """The pids of a process's children, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found
