"""`apikeys keys import` and `apikeys keys generate`: keys known in advance, and the dev server's --seed."""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikeys import keys
from apikeys.storage import tables
from apikeys.verification import extension
from tests.servers import Gunicorn


def new_full_key(environment: str = "test") -> str:
    """Return a well-formed full key, as `apikeys keys generate` prints it."""
    return f"{keys.new_public_key(environment)}.{keys.new_secret(environment)}"


def corrupt_checksum(full_key: str) -> str:
    """Return the key with the last checksum digit changed: same format, wrong checksum."""
    last = full_key[-1]
    return full_key[:-1] + ("A" if last != "A" else "B")


def entry(full_key: str, tenant: str = "acme", name: str = "Local backend", environment: str = "test") -> dict:
    """Return one entry of an import file."""
    return {"tenant": tenant, "name": name, "environment": environment, "fullKey": full_key}


def write_file(tmp_path: Path, content, name: str = "keys.json") -> Path:
    """Write an import file: JSON for a value, as is for a string."""
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def stored_rows(app) -> list[dict]:
    """Return every row of api_keys, as the database holds it."""
    with extension.get_engine(app).connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(tables.api_keys).order_by(tables.api_keys.c.id)).mappings()]


def import_keys(runner, path: Path):
    """Run `apikeys keys import FILE`."""
    return runner.invoke(args=["keys", "import", str(path)])


def secret_of(full_key: str) -> str:
    """Return the secret part of a full key."""
    return full_key.partition(".")[2]


def test_import_stores_only_the_hash(app, runner, tmp_path):
    full_key = new_full_key()
    result = import_keys(runner, write_file(tmp_path, [entry(full_key)]))
    assert result.exit_code == 0
    assert "Imported 1 key; 0 keys already there." in result.output
    leaked_in_output = secret_of(full_key) in result.output
    assert not leaked_in_output
    [row] = stored_rows(app)
    assert (row["tenant_id"], row["name"], row["environment"], row["active"]) == ("acme", "Local backend", "test", True)
    assert row["public_key"] == full_key.partition(".")[0]
    # The secret is nowhere in the row, in no column; what is there is a bcrypt hash that matches it.
    leaked_in_row = [column for column, value in row.items() if secret_of(full_key) in str(value)]
    assert leaked_in_row == []
    assert row["secret_hash"].startswith("$2b$04$")
    matches = keys.check_secret(secret_of(full_key), row["secret_hash"])
    assert matches


def test_import_twice_changes_nothing_and_the_key_verifies(app, runner, client, tmp_path):
    full_key = new_full_key("live")
    path = write_file(tmp_path, [entry(full_key, tenant="globex", name="Billing", environment="live")])
    assert import_keys(runner, path).exit_code == 0
    before = stored_rows(app)

    again = import_keys(runner, path)
    assert again.exit_code == 0
    assert "Imported 0 keys; 1 key already there." in again.output
    assert stored_rows(app) == before

    response = client.get("/verify", headers={"X-Api-Key": full_key})
    assert response.status_code == 200
    assert response.json["data"]["id"] == before[0]["id"]
    assert response.json["data"]["tenantId"] == "globex"
    assert response.json["data"]["environment"] == "live"


def test_import_refuses_a_public_key_of_another_tenant(app, runner, tmp_path):
    full_key = new_full_key()
    assert import_keys(runner, write_file(tmp_path, [entry(full_key, tenant="acme")], "acme.json")).exit_code == 0
    before = stored_rows(app)

    # A new key first, then the taken one: the whole file is refused, the new key included.
    taken = write_file(tmp_path, [entry(new_full_key(), tenant="globex"), entry(full_key, tenant="globex")])
    result = import_keys(runner, taken)
    assert result.exit_code != 0
    assert "Entry 2" in result.output
    assert "belongs to another tenant" in result.output
    assert stored_rows(app) == before


def test_import_refuses_a_known_public_key_with_another_secret(app, runner, tmp_path):
    full_key = new_full_key()
    assert import_keys(runner, write_file(tmp_path, [entry(full_key)], "first.json")).exit_code == 0
    before = stored_rows(app)
    other_secret = full_key.partition(".")[0] + "." + keys.new_secret("test")
    result = import_keys(runner, write_file(tmp_path, [entry(other_secret)], "second.json"))
    assert result.exit_code != 0
    assert "different secret" in result.output
    assert stored_rows(app) == before


def bad_files() -> list[tuple[str, object, str]]:
    """Return (id, file content, expected message): each file has one good entry and one bad."""
    good = entry(new_full_key())
    test_key = new_full_key("test")
    mixed = keys.new_public_key("test") + "." + keys.new_secret("live")  # both halves well-formed, envs differ
    return [
        ("invalid JSON", "[{", "not valid JSON"),
        ("not a list", good, "must hold a JSON list"),
        ("entry not an object", [good, test_key], "Entry 2: must be an object"),
        ("missing fullKey", [good, {k: v for k, v in entry(test_key).items() if k != "fullKey"}], "fullKey"),
        ("fullKey not a string", [good, {**entry(test_key), "fullKey": 42}], "fullKey"),
        ("unknown environment", [good, entry(test_key, environment="prod")], "environment"),
        ("empty name", [good, entry(test_key, name="  ")], "name"),
        ("name too long", [good, entry(test_key, name="n" * 101)], "name"),
        ("empty tenant", [good, entry(test_key, tenant="")], "tenant"),
        ("tenant too long", [good, entry(test_key, tenant="t" * 256)], "tenant"),
        ("not a key", [good, entry("not-a-key")], "format or checksum"),
        ("no separator", [good, entry(test_key.replace(".", ""))], "format or checksum"),
        ("corrupted checksum", [good, entry(corrupt_checksum(test_key))], "format or checksum"),
        ("environments of the halves differ", [good, entry(mixed)], "format or checksum"),
        ("live key declared test", [good, entry(new_full_key("live"), environment="test")], "is a live key"),
        ("same key twice, other tenant", [good, {**good, "tenant": "globex"}], "belongs to another tenant"),
    ]


BAD_FILES = bad_files()


@pytest.mark.parametrize(("content", "message"), [f[1:] for f in BAD_FILES], ids=[f[0] for f in BAD_FILES])
def test_a_bad_entry_anywhere_writes_nothing(app, runner, tmp_path, content, message):
    result = import_keys(runner, write_file(tmp_path, content))
    assert result.exit_code != 0
    assert message in result.output
    # One transaction: the good entry before the bad one is not stored either.
    assert stored_rows(app) == []
    # Error messages name entries and fields, never secrets.
    file_secrets = re.findall(r"sk_(?:live|test)_[0-9A-Za-z]+", json.dumps(content))
    leaked = any(secret in result.output for secret in file_secrets)
    assert not leaked


@pytest.mark.parametrize("environment", ["test", "live"])
def test_generate_prints_a_valid_key_and_stores_nothing(app, runner, environment):
    result = runner.invoke(args=["keys", "generate", "--environment", environment])
    assert result.exit_code == 0
    printed = result.output.strip()
    parsed = keys.parse_full_key(printed)
    is_valid = parsed is not None
    assert is_valid
    assert parsed.environment == environment
    assert stored_rows(app) == []
    again = runner.invoke(args=["keys", "generate", "--environment", environment]).output.strip()
    is_fresh = again != printed
    assert is_fresh


def test_generate_then_import_round_trip(app, runner, client, tmp_path):
    full_key = runner.invoke(args=["keys", "generate", "--environment", "test"]).output.strip()
    assert import_keys(runner, write_file(tmp_path, [entry(full_key, tenant="dev")])).exit_code == 0
    response = client.get("/verify", query_string={"environment": "test"}, headers={"X-Api-Key": full_key})
    assert response.status_code == 200
    assert response.json["data"]["tenantId"] == "dev"


@pytest.mark.slow
def test_gunicorn_seeds_keys_at_start(database_url, tmp_path):
    full_key = new_full_key()
    seed = write_file(tmp_path, [entry(full_key, tenant="dev", name="Seeded")], "seed.json")
    env = {
        "APIKEYS_DATABASE_URL": database_url,
        "APIKEYS_JWT_SECRET": secrets.token_urlsafe(32),
        "APIKEYS_BCRYPT_ROUNDS": "4",
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
        "APIKEYS_SEED": str(seed),
    }
    with Gunicorn(tmp_path, env, workers=1) as server:
        request = urllib.request.Request(server.url + "/verify", headers={"X-Api-Key": full_key})
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, json.load(response)
    assert status == 200
    assert (body["data"]["tenantId"], body["data"]["name"]) == ("dev", "Seeded")
    logs = server.logs()
    assert "Seeded 1 key from" in logs
    leaked = secret_of(full_key) in logs
    assert not leaked
