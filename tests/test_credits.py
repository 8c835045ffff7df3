"""Adding credits to a key's quota (POST /dashboard/api-keys/{id}/credits, apikeys keys add-credits), both databases."""

from __future__ import annotations

import json
import threading

import pytest

from apikeys.limits import MAX_CREDITS


@pytest.fixture
def add(client, auth):
    def call(key_id: str, body, tenant: str = "acme"):
        return client.post(f"/dashboard/api-keys/{key_id}/credits", json=body, headers=auth(tenant))

    return call


@pytest.fixture
def audited(client, auth):
    def entries(tenant: str = "acme") -> list[tuple[str, str]]:
        items = client.get("/dashboard/audit-log?limit=100", headers=auth(tenant)).json["data"]["items"]
        return [(item["action"], item["keyId"]) for item in items]

    return entries


def remaining(client, auth, key_id: str, tenant: str = "acme"):
    return client.get(f"/dashboard/api-keys/{key_id}", headers=auth(tenant)).json["data"]["quota"]["remaining"]


def test_credits_are_added_to_what_is_left_and_audited(client, auth, make_key, add, audited):
    key = make_key(quota={"remaining": 5})
    answer = add(key["id"], {"add": 10})
    assert answer.status_code == 200
    assert answer.json["data"]["id"] == key["id"]
    assert answer.json["data"]["quota"] == {"remaining": 15, "refillAmount": None, "refillInterval": None}
    assert remaining(client, auth, key["id"]) == 15
    assert audited()[0] == ("key.updated", key["id"])
    assert "secretKey" not in answer.json["data"] and "fullKey" not in answer.json["data"]


def test_a_due_refill_comes_first_and_is_not_applied_again(clock, client, auth, make_key, add):
    clock.set(2026, 12, 5, 23, 0)
    key = make_key(quota={"remaining": 2, "refillAmount": 100, "refillInterval": "daily"})
    clock.set(2026, 12, 6, 9, 0)  # a new UTC day: the refill to 100 is due
    assert add(key["id"], {"add": 5}).json["data"]["quota"]["remaining"] == 105
    full = key["fullKey"]
    assert client.get("/verify", headers={"X-Api-Key": full}).headers["X-Api-Key-Quota-Remaining"] == "104"


def test_a_key_without_a_quota_is_a_409_that_changes_nothing(client, auth, make_key, add, audited):
    key = make_key()
    before = audited()
    answer = add(key["id"], {"add": 10})
    assert answer.status_code == 409
    assert answer.json["code"] == "NO_QUOTA" and answer.json["statusCode"] == 409
    assert client.get(f"/dashboard/api-keys/{key['id']}", headers=auth()).json["data"]["quota"] is None
    assert audited() == before


def test_a_balance_over_the_bound_is_a_400_that_changes_nothing(client, auth, make_key, add, audited):
    key = make_key(quota={"remaining": MAX_CREDITS - 10})
    before = audited()
    assert add(key["id"], {"add": 10}).status_code == 200  # up to the bound exactly
    answer = add(key["id"], {"add": 1})
    assert answer.status_code == 400
    assert list(answer.json["errors"]) == ["add"]
    assert remaining(client, auth, key["id"]) == MAX_CREDITS
    assert len(audited()) == len(before) + 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"add": 0},
        {"add": -1},
        {"add": MAX_CREDITS + 1},
        {"add": 1.5},
        {"add": "5"},
        {"add": None},
        {"add": True},
        {"add": [5]},
        {"add": {"add": 5}},
        {"add": 5, "remaining": 9},
        [5],
        "five",
    ],
)
def test_bad_bodies_are_a_400_that_changes_nothing(client, auth, make_key, add, audited, body):
    key = make_key(quota={"remaining": 5})
    before = audited()
    answer = add(key["id"], body)
    assert answer.status_code == 400, answer.json
    assert answer.json["statusCode"] == 400 and answer.json["message"]
    assert remaining(client, auth, key["id"]) == 5
    assert audited() == before


@pytest.mark.parametrize(
    "raw",
    ['{"add": ' + "1" * 5000 + "}", "[" * 10_000 + "]" * 10_000, '{"add": 5', "\x1b[31m", '{"add": "٥"}'],
    ids=["5000 digits", "nested 10000 deep", "cut short", "control characters", "non-ASCII digit"],
)
def test_hostile_raw_bodies_are_a_400_that_changes_nothing(client, auth, make_key, audited, raw):
    key = make_key(quota={"remaining": 5})
    before = audited()
    headers = {**auth(), "Content-Type": "application/json"}
    answer = client.post(f"/dashboard/api-keys/{key['id']}/credits", data=raw.encode(), headers=headers)
    assert answer.status_code == 400, answer.json
    assert remaining(client, auth, key["id"]) == 5
    assert audited() == before


def test_another_tenants_key_is_not_found_and_unchanged(client, auth, make_key, add, audited):
    theirs = make_key(tenant="other", quota={"remaining": 5})
    answer = add(theirs["id"], {"add": 10})
    assert answer.status_code == 404 and answer.json["code"] == "API_KEY_NOT_FOUND"
    assert add("key_doesNotExist00", {"add": 10}).status_code == 404
    assert remaining(client, auth, theirs["id"], tenant="other") == 5
    assert audited("other") == [("key.created", theirs["id"])]


def test_a_token_is_needed_before_the_body_is_read(client, make_key):
    key = make_key(quota={"remaining": 5})
    answer = client.post(f"/dashboard/api-keys/{key['id']}/credits", json={"add": "nonsense"})
    assert answer.status_code == 401


def test_credits_added_while_verifications_spend_them_add_up_exactly(app, client, auth, make_key):
    """4 threads verify (cost 1) while 2 add credits: every credit is either left or spent once, none given back."""
    key = make_key(quota={"remaining": 300})
    accepted, refused, problems = [], [], []

    def verifier() -> None:
        own = app.test_client()
        for _ in range(150):
            status = own.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code
            (accepted if status == 200 else refused).append(status)

    def adder() -> None:
        own = app.test_client()
        headers = auth()
        for _ in range(10):
            answer = own.post(f"/dashboard/api-keys/{key['id']}/credits", json={"add": 10}, headers=headers)
            if answer.status_code != 200:
                problems.append(answer.json)

    threads = [threading.Thread(target=verifier) for _ in range(4)] + [threading.Thread(target=adder) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert problems == []
    assert set(refused) <= {429}
    left = remaining(client, auth, key["id"])
    assert left >= 0
    assert len(accepted) + left == 300 + 2 * 10 * 10  # what was there, plus what was added
    assert len(accepted) + len(refused) == 600


def test_the_command_adds_credits_and_prints_the_key(runner, client, auth, make_key):
    key = make_key(quota={"remaining": 5})
    result = runner.invoke(args=["keys", "add-credits", "--tenant", "acme", key["id"], "--amount", "1000"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["id"] == key["id"] and printed["quota"]["remaining"] == 1005
    assert remaining(client, auth, key["id"]) == 1005


@pytest.mark.parametrize(
    ("options", "exit_code", "says"),
    [
        (["--amount", "0"], 2, "--amount"),
        (["--amount", "five"], 2, "--amount"),
        ([], 2, "--amount"),
        (["--amount", str(MAX_CREDITS)], 1, "over 1,000,000,000,000"),
    ],
)
def test_the_command_refuses_in_one_line_and_changes_nothing(runner, client, auth, make_key, options, exit_code, says):
    key = make_key(quota={"remaining": 5})
    result = runner.invoke(args=["keys", "add-credits", "--tenant", "acme", key["id"], *options])
    assert result.exit_code == exit_code
    assert says in result.output
    assert remaining(client, auth, key["id"]) == 5


def test_the_command_names_a_key_without_a_quota_or_of_another_tenant(runner, make_key):
    plain, theirs = make_key(), make_key(tenant="other", quota={"remaining": 5})
    for key_id, says in ((plain["id"], "no quota"), (theirs["id"], "No API key")):
        result = runner.invoke(args=["keys", "add-credits", "--tenant", "acme", key_id, "--amount", "5"])
        assert result.exit_code == 1
        assert says in result.output and len(result.output.strip().splitlines()) == 1
