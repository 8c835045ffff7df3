"""Rows without a usable digest take bcrypt in turns: one check at a time per key, a few per host, lock files kept
in the private instance folder. Whoever knows only a public key can delay that key, and no other."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from apikeys import VerificationError
from apikeys import keys
from apikeys import verify_api_key
from apikeys.storage import tables
from apikeys.verification import extension
from apikeys.verification import secrets as verify_module
from apikeys.verification.secrets import key_bucket
from apikeys.verification.state import State
from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import service_env
from tests.servers import token_for


def forget_digest(app, key) -> None:
    with extension.get_engine(app).begin() as conn:
        conn.execute(sa.update(tables.api_keys).where(tables.api_keys.c.id == key["id"]).values(secret_digest=None))


def wrong_secret_for(key: dict) -> str:
    return f"{key['publicKey']}.{keys.new_secret(key['environment'])}"


def verify(app, full_key):
    with app.app_context():
        return verify_api_key(full_key)


def key_apart(app, make_key, *others) -> dict:
    """Make a key that shares no turn with ``others`` (keys whose keyed buckets meet do: 1 in KEY_LOCK_BUCKETS)."""
    state = app.extensions["apikeys"]
    taken = {key_bucket(state, other["publicKey"]) for other in others}
    while True:
        key = make_key(name="apart")
        if key_bucket(state, key["publicKey"]) not in taken:
            return key


@pytest.fixture
def held_bcrypt(monkeypatch):
    """Make bcrypt checks of the secrets in ``held`` block until ``release`` is set; ``inside`` counts them."""
    held: set[str] = set()
    inside = threading.Semaphore(0)
    release = threading.Event()
    real = keys.check_secret

    def check(secret, secret_hash):
        if secret in held:
            inside.release()
            release.wait(10)
        return real(secret, secret_hash)

    monkeypatch.setattr(keys, "check_secret", check)
    yield held, inside, release
    release.set()


def attack(app, key, held, inside, pool):
    """Start one attacker's wrong-secret check of ``key`` and wait until it holds bcrypt."""
    wrong = wrong_secret_for(key)
    held.add(wrong.split(".")[1])
    future = pool.submit(lambda: pytest.raises(VerificationError, verify, app, wrong).value.code)
    assert inside.acquire(timeout=10)
    return future


def test_an_attack_on_one_key_does_not_delay_another(app, make_key, held_bcrypt):
    held, inside, release = held_bcrypt
    attacked = make_key(name="attacked")
    other = key_apart(app, make_key, attacked)
    forget_digest(app, attacked)
    forget_digest(app, other)
    with ThreadPoolExecutor(1) as pool:
        attacker = attack(app, attacked, held, inside, pool)
        # While the attacker's bcrypt runs, another key's holder is checked at once: no 503.
        assert verify(app, other["fullKey"]).id == other["id"]
        release.set()
        assert attacker.result(10) == "INVALID_API_KEY"
    assert verify(app, attacked["fullKey"]).id == attacked["id"]


def test_a_keys_checks_queue_one_deep_so_its_holder_waits_for_one_check_at_most(app, make_key, held_bcrypt):
    held, inside, release = held_bcrypt
    attacked = make_key(name="attacked")
    forget_digest(app, attacked)
    with ThreadPoolExecutor(2) as pool:
        attacker = attack(app, attacked, held, inside, pool)
        # The holder queues behind the check in progress, and is checked as soon as it ends...
        holder = pool.submit(verify, app, attacked["fullKey"])
        time.sleep(0.1)
        # ...while the attacker's next try, finding someone queued, is refused at once: it cannot get ahead.
        with pytest.raises(VerificationError) as busy:
            verify(app, wrong_secret_for(attacked))
        assert (busy.value.code, busy.value.retry_after) == ("VERIFICATION_BUSY", 1)
        release.set()
        assert holder.result(10).id == attacked["id"]
        assert attacker.result(10) == "INVALID_API_KEY"


def test_the_host_runs_at_most_its_slots_and_a_check_waits_briefly_for_one(app, make_key, held_bcrypt, monkeypatch):
    held, inside, release = held_bcrypt
    monkeypatch.setattr(verify_module, "BCRYPT_WAIT_SECONDS", 0.3)
    attacked = [make_key(name=f"attacked {n}") for n in range(verify_module.BCRYPT_SLOTS)]
    waiting = key_apart(app, make_key, *attacked)
    for key in [*attacked, waiting]:
        forget_digest(app, key)
    with ThreadPoolExecutor(len(attacked)) as pool:
        attackers = [attack(app, key, held, inside, pool) for key in attacked]
        started = time.monotonic()
        with pytest.raises(VerificationError) as busy:
            verify(app, waiting["fullKey"])  # every slot is taken: it waits, then gives up
        assert busy.value.code == "VERIFICATION_BUSY"
        assert time.monotonic() - started >= 0.3
        # A slot freed during the wait is taken.
        monkeypatch.setattr(verify_module, "BCRYPT_WAIT_SECONDS", 5)
        threading.Timer(0.2, release.set).start()
        assert verify(app, waiting["fullKey"]).id == waiting["id"]
        assert [attacker.result(10) for attacker in attackers] == ["INVALID_API_KEY"] * len(attacked)


def test_lock_files_live_in_the_private_instance_folder_named_without_secrets(app, make_key, config):
    before = set(os.listdir(tempfile.gettempdir()))
    key = make_key()
    forget_digest(app, key)
    assert verify(app, key["fullKey"]).id == key["id"]
    created = {name for name in set(os.listdir(tempfile.gettempdir())) - before if "apikeys" in name}
    assert created == set()
    folder = os.path.join(app.instance_path, "locks")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    names = sorted(os.listdir(folder))
    assert names and all(name.startswith(("bcrypt-slot-", "bcrypt-key-", "bcrypt-place-")) for name in names)
    for name in names:
        assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o600
        # Nothing derived from the database URL (which may hold a password) or from a key.
        assert name.split("-")[-1].removesuffix(".lock").isdigit()


@pytest.mark.slow
def test_through_gunicorn_one_attackers_connection_never_refuses_other_holders(tmp_path, database_url, jwt_secret):
    """The finding: one connection repeating a known public key with wrong secrets made every other holder of a
    row without a digest get 503. Now each holder is answered on its first try."""
    env = service_env(database_url, jwt_secret, tmp_path / "instance", APIKEYS_BCRYPT_ROUNDS="12")
    with Gunicorn(tmp_path, env, workers=3) as server:
        token = token_for(jwt_secret, "acme")
        made = []
        for name in ["attacked", "holder 1", "holder 2", "holder 3", "holder 4"]:
            body = {"name": name, "environment": "live"}
            status, answer = call(server.url, "POST", "/dashboard/api-keys", token=token, body=body)
            assert status == 201, answer
            made.append(answer["data"])
        engine = sa.create_engine(database_url)
        try:
            with engine.begin() as conn:  # rows as written before digests existed
                conn.execute(sa.update(tables.api_keys).values(secret_digest=None))
        finally:
            engine.dispose()
        attacked = made[0]
        # Keys share a turn only when their keyed buckets meet (1 in KEY_LOCK_BUCKETS): leave such a holder out.
        state = State.__new__(State)
        state.verifier = keys.Verifier(env["APIKEYS_VERIFIER_KEY"])
        holders = [
            key for key in made[1:] if key_bucket(state, key["publicKey"]) != key_bucket(state, attacked["publicKey"])
        ]
        stop = threading.Event()
        attempts = []

        def attacker():
            while not stop.is_set():
                status, _ = call(server.url, "GET", "/verify", api_key=wrong_secret_for(attacked))
                attempts.append(status)

        thread = threading.Thread(target=attacker)
        thread.start()
        try:
            time.sleep(0.5)  # the attacker is hammering
            answers = []
            for holder in holders:
                status, _ = call(server.url, "GET", "/verify", api_key=holder["fullKey"])
                answers.append(status)
                time.sleep(0.1)
            # The attacked key's own holder is delayed, never locked out: through within a few tries
            # (each 503 says Retry-After: 1).
            tries = []
            while len(tries) < 5 and 200 not in tries:
                tries.append(call(server.url, "GET", "/verify", api_key=attacked["fullKey"])[0])
                if tries[-1] == 503:
                    time.sleep(1)
        finally:
            stop.set()
            thread.join(30)
        assert answers == [200] * len(holders)
        assert tries[-1] == 200, tries
        assert set(tries) <= {200, 503}
        assert attempts and set(attempts) <= {401, 503}


def test_a_verify_only_app_that_cannot_make_its_lock_files_answers_in_the_envelope(
    app, make_key, database_url, tmp_path
):
    """An app that only verifies may run where its instance folder cannot be made (a read-only image, say)."""
    from flask import Flask

    from apikeys import ApiKeys
    from apikeys import require_api_key
    from apikeys.verification.extension import get_engine

    key = make_key()
    forget_digest(app, key)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    service = Flask("consumer", instance_path=str(blocker / "instance"))
    service.config.update(APIKEYS_DATABASE_URL=database_url, APIKEYS_VERIFIER_KEY=app.config["APIKEYS_VERIFIER_KEY"])
    ApiKeys(service)
    service.get("/orders")(require_api_key(lambda: {"ok": True}))
    try:
        response = service.test_client().get("/orders", headers={"X-Api-Key": key["fullKey"]})
    finally:
        get_engine(service).dispose()
    assert response.status_code == 503
    assert response.mimetype == "application/json"
    assert response.json["code"] == "VERIFICATION_BUSY"
    assert response.headers["Retry-After"] == "1"
