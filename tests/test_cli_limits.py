"""Rate limits and quotas from the command line (keys create / update / get / list), import files and seed files."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from apikeys import keys
from tests.conftest import VERIFIER_KEY
from tests.servers import Gunicorn
from tests.servers import free_port
from tests.servers import inherited_env

APIKEYS = Path(sys.executable).with_name("apikeys")
TRILLION = 10**12
HOURLY = {"limit": 100, "periodSeconds": 3600}
DAILY_QUOTA = {"remaining": 1000, "refillAmount": 500, "refillInterval": "daily"}


def invoke(runner, *args):
    return runner.invoke(args=list(args))


def create(runner, *options, tenant: str = "acme"):
    return invoke(runner, "keys", "create", "--tenant", tenant, "--name", "Limited", "--environment", "live", *options)


def update(runner, key_id: str, *options):
    return invoke(runner, "keys", "update", "--tenant", "acme", key_id, *options)


def get(runner, key_id: str) -> dict:
    result = invoke(runner, "keys", "get", "--tenant", "acme", key_id)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def listed(runner) -> list[dict]:
    result = invoke(runner, "keys", "list", "--tenant", "acme")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def audit_actions(runner) -> list[str]:
    result = invoke(runner, "audit", "--tenant", "acme", "--limit", "1000")
    return [entry["action"] for entry in json.loads(result.output)]


def new_full_key(environment: str = "test") -> str:
    return f"{keys.new_public_key(environment)}.{keys.new_secret(environment)}"


def entry(full_key: str, **limits) -> dict:
    return {"tenant": "acme", "name": "Imported", "environment": "test", "fullKey": full_key, **limits}


def write_file(tmp_path: Path, content: list, name: str = "keys.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def one_line_error(result) -> str:
    """The one line a refused command printed (a command that prints more fails the test)."""
    assert result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    return result.output.rstrip("\n")


# --- keys create ----------------------------------------------------------------------------------------------------


def test_create_with_limits_prints_them_and_get_and_list_read_them_back(runner):
    result = create(runner, "--rate-limit", "100/3600", "--quota", "1000", "--quota-refill", "500/daily")
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert (created["rateLimit"], created["quota"]) == (HOURLY, DAILY_QUOTA)
    shown = get(runner, created["id"])
    assert (shown["rateLimit"], shown["quota"]) == (HOURLY, DAILY_QUOTA)
    assert [(key["rateLimit"], key["quota"]) for key in listed(runner)] == [(HOURLY, DAILY_QUOTA)]
    assert audit_actions(runner) == ["key.created"]


def test_create_without_limits_has_none(runner):
    created = json.loads(create(runner).output)
    assert (created["rateLimit"], created["quota"]) == (None, None)
    assert (get(runner, created["id"])["rateLimit"], get(runner, created["id"])["quota"]) == (None, None)


@pytest.mark.parametrize(
    ("options", "rate_limit", "quota"),
    [
        (["--rate-limit", "100/60"], {"limit": 100, "periodSeconds": 60}, None),
        (["--rate-limit", "100/60s"], {"limit": 100, "periodSeconds": 60}, None),
        (["--rate-limit", "100/1m"], {"limit": 100, "periodSeconds": 60}, None),
        (["--rate-limit", "5000/2h"], {"limit": 5000, "periodSeconds": 7200}, None),
        (["--rate-limit", "1000000/1d"], {"limit": 1_000_000, "periodSeconds": 86_400}, None),
        (["--rate-limit", "1/86400"], {"limit": 1, "periodSeconds": 86_400}, None),
        (["--quota", "0"], None, {"remaining": 0, "refillAmount": None, "refillInterval": None}),
        (["--quota", str(TRILLION)], None, {"remaining": TRILLION, "refillAmount": None, "refillInterval": None}),
        (
            ["--quota", "7", "--quota-refill", f"{TRILLION}/monthly"],
            None,
            {"remaining": 7, "refillAmount": TRILLION, "refillInterval": "monthly"},
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_create_accepts_every_spelling_and_the_edges_of_each_bound(runner, options, rate_limit, quota):
    result = create(runner, *options)
    assert result.exit_code == 0, result.output
    shown = get(runner, json.loads(result.output)["id"])
    assert (shown["rateLimit"], shown["quota"]) == (rate_limit, quota)


BAD_LIMITS = [
    (["--rate-limit", "0/60"], "Error: --rate-limit (limit): "),
    (["--rate-limit", "1000001/60"], "Error: --rate-limit (limit): "),
    (["--rate-limit", "-5/60"], "Error: --rate-limit (limit): "),
    (["--rate-limit", "100/0"], "Error: --rate-limit (period): "),
    (["--rate-limit", "100/86401"], "Error: --rate-limit (period): "),
    (["--rate-limit", "100/2d"], "Error: --rate-limit (period): "),
    (["--rate-limit", "9" * 31 + "/60"], "Error: Invalid value for '--rate-limit': must be LIMIT/PERIOD"),
    (["--rate-limit", "100/"], "Error: Invalid value for '--rate-limit': must be LIMIT/PERIOD"),
    (["--rate-limit", "100"], "Error: Invalid value for '--rate-limit': must be LIMIT/PERIOD"),
    (["--rate-limit", "/60"], "Error: Invalid value for '--rate-limit': must be LIMIT/PERIOD"),
    (["--rate-limit", "1.5/60"], "Error: Invalid value for '--rate-limit': must be LIMIT/PERIOD"),
    (["--rate-limit", "100/1w"], "Error: Invalid value for '--rate-limit': must be LIMIT/PERIOD"),
    (["--rate-limit", "\u0661\u0660\u0660/60"], "Error: Invalid value for '--rate-limit': must be LIMIT/PERIOD"),
    (["--quota", "-1"], "Error: --quota: "),
    (["--quota", str(TRILLION + 1)], "Error: --quota: "),
    (["--quota", "lots"], "Error: Invalid value for '--quota': must be a whole number"),
    (["--quota", "10", "--quota-refill", "1000/weekly"], "Error: --quota-refill (interval): "),
    (["--quota", "10", "--quota-refill", "0/daily"], "Error: --quota-refill (amount): "),
    (["--quota", "10", "--quota-refill", f"{TRILLION + 1}/daily"], "Error: --quota-refill (amount): "),
    (["--quota", "10", "--quota-refill", "1000"], "Error: Invalid value for '--quota-refill': must be AMOUNT/INTERVAL"),
    (["--quota", "10", "--quota-refill", "/daily"], "Error: Invalid value for '--quota-refill': must be AMOUNT/INTERV"),
    (["--quota-refill", "1000/daily"], "Error: --quota-refill needs --quota, the credits the key starts with."),
]


@pytest.mark.parametrize(
    ("options", "said"), BAD_LIMITS, ids=lambda value: " ".join(value) if isinstance(value, list) else ""
)
def test_create_refuses_every_bound_in_one_line_naming_the_option_and_writes_nothing(runner, options, said):
    result = create(runner, *options)
    assert result.exit_code == 2
    assert one_line_error(result).startswith(said), result.output
    assert listed(runner) == []
    assert audit_actions(runner) == []


def test_create_names_every_bad_option_in_its_one_line(runner):
    result = create(runner, "--expires-at", "2000-01-01T00:00:00Z", "--rate-limit", "0/60", "--quota", "-1")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert line.startswith("Error: --expires-at: Must be in the future.; --rate-limit (limit): ")
    assert "; --quota: " in line
    assert listed(runner) == []


# --- keys update ----------------------------------------------------------------------------------------------------


def test_update_sets_replaces_and_removes_limits_each_change_audited(runner):
    key_id = json.loads(create(runner, "--scope", "orders:read").output)["id"]

    result = update(runner, key_id, "--rate-limit", "10/1s", "--quota", "50", "--quota-refill", "50/monthly")
    assert result.exit_code == 0, result.output
    quota = {"remaining": 50, "refillAmount": 50, "refillInterval": "monthly"}
    assert (json.loads(result.output)["rateLimit"], json.loads(result.output)["quota"]) == (
        {"limit": 10, "periodSeconds": 1},
        quota,
    )
    assert get(runner, key_id)["scopes"] == ["orders:read"]  # not given: unchanged

    # --quota alone replaces the whole quota, as PATCH does: no refill any more.
    assert update(runner, key_id, "--quota", "7").exit_code == 0
    assert get(runner, key_id)["quota"] == {"remaining": 7, "refillAmount": None, "refillInterval": None}
    assert get(runner, key_id)["rateLimit"] == {"limit": 10, "periodSeconds": 1}

    assert update(runner, key_id, "--no-rate-limit").exit_code == 0
    assert (get(runner, key_id)["rateLimit"], get(runner, key_id)["quota"]["remaining"]) == (None, 7)
    assert update(runner, key_id, "--no-quota", "--name", "Unlimited").exit_code == 0
    shown = get(runner, key_id)
    assert (shown["rateLimit"], shown["quota"], shown["name"]) == (None, None, "Unlimited")
    assert audit_actions(runner) == ["key.updated"] * 4 + ["key.created"]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        *BAD_LIMITS,
        (["--rate-limit", "10/60", "--no-rate-limit"], "Error: --rate-limit and --no-rate-limit cannot go together."),
        (["--quota", "5", "--no-quota"], "Error: --quota and --no-quota cannot go together."),
        (["--quota-refill", "5/daily", "--no-quota"], "Error: --quota-refill and --no-quota cannot go together."),
        (["--name", "   ", "--rate-limit", "0/60"], "Error: --name: Must not be blank.; --rate-limit (limit): "),
        ([], "Error: Give at least one of --name, "),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_update_refuses_bad_limits_in_one_line_and_changes_nothing(runner, options, said):
    key_id = json.loads(
        create(runner, "--rate-limit", "100/3600", "--quota", "1000", "--quota-refill", "500/daily").output
    )["id"]
    before = get(runner, key_id)
    result = update(runner, key_id, *options)
    assert result.exit_code == 2
    assert one_line_error(result).startswith(said), result.output
    assert get(runner, key_id) == before
    assert audit_actions(runner) == ["key.created"]


def test_update_of_another_tenants_key_changes_nothing(runner):
    key_id = json.loads(create(runner, tenant="globex").output)["id"]
    result = update(runner, key_id, "--rate-limit", "1/60")
    assert result.exit_code == 1
    assert one_line_error(result) == f"Error: No API key {key_id} for tenant acme."


# --- import and seed files ------------------------------------------------------------------------------------------


def test_import_stores_rate_limit_and_quota_and_verification_applies_them(runner, client, tmp_path):
    limited, plain = new_full_key(), new_full_key()
    content = [
        entry(limited, rateLimit={"limit": 5, "periodSeconds": 60}, quota={"remaining": 10}),
        entry(plain, rateLimit=None, quota=None),
    ]
    result = invoke(runner, "keys", "import", str(write_file(tmp_path, content)))
    assert result.exit_code == 0, result.output
    by_public_key = {key["publicKey"]: key for key in listed(runner)}
    stored = by_public_key[limited.partition(".")[0]]
    assert stored["rateLimit"] == {"limit": 5, "periodSeconds": 60}
    assert stored["quota"] == {"remaining": 10, "refillAmount": None, "refillInterval": None}
    assert (by_public_key[plain.partition(".")[0]]["rateLimit"], by_public_key[plain.partition(".")[0]]["quota"]) == (
        None,
        None,
    )

    response = client.get("/verify", headers={"X-Api-Key": limited})
    assert response.status_code == 200
    assert (response.headers["RateLimit-Limit"], response.headers["X-Api-Key-Quota-Remaining"]) == ("5", "9")
    # Importing the file again leaves the stored key as it is: its credits are not handed back.
    again = invoke(runner, "keys", "import", str(write_file(tmp_path, content)))
    assert "Imported 0 keys; 2 keys already there." in again.output
    assert get(runner, stored["id"])["quota"]["remaining"] == 9


@pytest.mark.parametrize(
    ("limits", "said"),
    [
        ({"rateLimit": {"limit": 0, "periodSeconds": 60}}, "Entry 2: rateLimit.limit: "),
        ({"rateLimit": {"limit": 5, "periodSeconds": 86_401}}, "Entry 2: rateLimit.periodSeconds: "),
        ({"rateLimit": {"limit": 5}}, "Entry 2: rateLimit.periodSeconds: "),
        ({"rateLimit": "100/60"}, "Entry 2: rateLimit"),
        ({"quota": {"remaining": -1}}, "Entry 2: quota.remaining: "),
        ({"quota": {"remaining": 5, "refillAmount": 5, "refillInterval": "weekly"}}, "Entry 2: quota.refillInterval: "),
        ({"quota": {"remaining": 5, "refillAmount": 5}}, "Entry 2: quota"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else "",
)
def test_an_import_with_a_bad_limit_imports_nothing(runner, tmp_path, limits, said):
    content = [entry(new_full_key()), entry(new_full_key(), **limits)]
    result = invoke(runner, "keys", "import", str(write_file(tmp_path, content)))
    assert result.exit_code == 1
    assert one_line_error(result).startswith(f"Error: {said}"), result.output
    assert listed(runner) == []
    assert audit_actions(runner) == []


def seed_env(database_url: str, tmp_path: Path, seed: Path) -> dict[str, str]:
    return {
        "APIKEYS_DATABASE_URL": database_url,
        "APIKEYS_JWT_SECRET": secrets.token_urlsafe(32),
        "APIKEYS_BCRYPT_ROUNDS": "4",
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
        "APIKEYS_VERIFIER_KEY": VERIFIER_KEY,
        "APIKEYS_SEED": str(seed),
    }


@pytest.mark.slow  # a real gunicorn
def test_a_seed_file_gives_its_keys_their_limits(database_url, tmp_path):
    full_key = new_full_key()
    limits = {"rateLimit": {"limit": 2, "periodSeconds": 86_400}, "quota": {"remaining": 100}}
    seed = write_file(tmp_path, [entry(full_key, **limits)], "seed.json")
    answers = []
    with Gunicorn(tmp_path, seed_env(database_url, tmp_path, seed), workers=1) as server:
        for _ in range(3):
            request = urllib.request.Request(server.url + "/verify", headers={"X-Api-Key": full_key})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answers.append((response.status, response.headers["X-Api-Key-Quota-Remaining"]))
            except urllib.error.HTTPError as error:
                answers.append((error.code, json.load(error)["code"]))
                error.close()
    assert answers == [(200, "99"), (200, "98"), (429, "RATE_LIMITED")]
    assert "Seeded 1 key from" in server.logs()


@pytest.mark.slow  # a process that stops before any worker starts
def test_serve_with_a_seed_file_with_a_bad_limit_stops_in_one_line_and_stores_nothing(database_url, tmp_path, runner):
    seed = write_file(tmp_path, [entry(new_full_key(), rateLimit={"limit": 1_000_001, "periodSeconds": 60})])
    env = {**inherited_env(), "HOME": str(tmp_path), **seed_env(database_url, tmp_path, seed)}
    env.pop("APIKEYS_SEED")
    command = [str(APIKEYS), "serve", "--port", str(free_port()), "--workers", "1", "--seed", str(seed)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    said = result.stdout + result.stderr  # gunicorn's own start line comes first
    assert said.splitlines()[-1].startswith("apikeys cannot start: Entry 1: rateLimit.limit: "), said
    assert said.count("apikeys cannot start") == 1 and "Traceback" not in said
    assert listed(runner) == []
