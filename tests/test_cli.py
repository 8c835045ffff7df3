"""The command line: init-db, token, and key management."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jwt
import pytest

from apikeys import keys
from apikeys import tokens
from tests.servers import ROOT
from tests.servers import inherited_env


def invoke(runner, *args):
    result = runner.invoke(args=list(args))
    return result


def test_token_prints_only_a_jwt_the_api_accepts(app, runner, client):
    result = invoke(runner, "token", "--tenant", "acme", "--ttl", "120")
    assert result.exit_code == 0
    token = result.output.strip()
    assert "\n" not in token
    claims = jwt.decode(token, app.config["APIKEYS_JWT_SECRET"], algorithms=["HS256"])
    assert claims["tenantId"] == "acme"
    assert claims["exp"] - claims["iat"] == 120
    assert client.get("/dashboard/api-keys", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_token_refuses_a_bad_ttl(runner):
    result = invoke(runner, "token", "--tenant", "acme", "--ttl", "0")
    assert result.exit_code != 0


def test_keys_create_list_toggle_regenerate_delete(app, runner, client):
    created = invoke(runner, "keys", "create", "--tenant", "acme", "--name", " CLI key ", "--environment", "test")
    assert created.exit_code == 0, created.output
    key = json.loads(created.output)
    assert key["name"] == "CLI key"
    assert keys.parse_full_key(key["fullKey"]).environment == "test"
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200

    listed = json.loads(invoke(runner, "keys", "list", "--tenant", "acme").output)
    assert [k["id"] for k in listed] == [key["id"]]
    assert "secretKey" not in listed[0]
    assert json.loads(invoke(runner, "keys", "list", "--tenant", "globex").output) == []

    toggled = invoke(runner, "keys", "toggle", "--tenant", "acme", key["id"])
    assert json.loads(toggled.output) == {"id": key["id"], "active": False}
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 403
    invoke(runner, "keys", "toggle", "--tenant", "acme", key["id"])

    regenerated = json.loads(invoke(runner, "keys", "regenerate", "--tenant", "acme", key["id"]).output)
    assert regenerated["publicKey"] == key["publicKey"]
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 401
    assert client.get("/verify", headers={"X-Api-Key": regenerated["fullKey"]}).status_code == 200

    deleted = invoke(runner, "keys", "delete", "--tenant", "acme", key["id"])
    assert deleted.exit_code == 0
    assert client.get("/verify", headers={"X-Api-Key": regenerated["fullKey"]}).status_code == 401


@pytest.mark.parametrize("command", ["toggle", "regenerate", "delete"])
def test_keys_commands_on_another_tenants_key_fail(runner, make_key, command):
    key = make_key(tenant="acme")
    result = invoke(runner, "keys", command, "--tenant", "globex", key["id"])
    assert result.exit_code != 0
    assert result.output == f"Error: No API key {key['id']} for tenant globex.\n"


@pytest.mark.parametrize(
    "args",
    [
        ["--name", "x", "--environment", "prod"],
        ["--name", "   ", "--environment", "live"],
        ["--name", "x" * 101, "--environment", "live"],
        ["--environment", "live"],
    ],
)
def test_keys_create_refuses_bad_input(runner, args):
    result = invoke(runner, "keys", "create", "--tenant", "acme", *args)
    assert result.exit_code == 2
    assert json.loads(invoke(runner, "keys", "list", "--tenant", "acme").output) == []


def test_init_db_is_idempotent(runner):
    for _ in range(2):
        result = invoke(runner, "init-db")
        assert result.exit_code == 0
        assert result.output.startswith("The database at sqlite:///") or "postgresql" in result.output
        assert "is up to date (schema 0004)" in result.output


def test_console_script_and_flask_cli_reach_the_same_commands(tmp_path):
    env = {
        **inherited_env(),
        "APIKEYS_INSTANCE_PATH": str(tmp_path),
        "APIKEYS_JWT_SECRET": "s" * 64,
        "APIKEYS_BCRYPT_ROUNDS": "4",
    }
    bin_dir = os.path.dirname(sys.executable)
    apikeys = subprocess.run(
        [os.path.join(bin_dir, "apikeys"), "token", "--tenant", "acme"], env=env, capture_output=True, text=True
    )
    flask = subprocess.run(
        [os.path.join(bin_dir, "flask"), "--app", "app", "token", "--tenant", "acme"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    for result in (apikeys, flask):
        assert result.returncode == 0, result.stderr
        config = {
            "APIKEYS_JWT_SECRET": "s" * 64,
            "APIKEYS_JWT_ALGORITHMS": ["HS256"],
            "APIKEYS_JWT_AUDIENCE": "",
            "APIKEYS_JWT_ISSUER": "",
            "APIKEYS_JWT_LEEWAY": 0,
            "APIKEYS_JWT_MAX_LIFETIME": 0,
        }
        assert tokens.decode_token(result.stdout.strip(), config)["tenantId"] == "acme"
    init = subprocess.run([os.path.join(bin_dir, "apikeys"), "init-db"], env=env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    assert (tmp_path / "apikeys.sqlite3").exists()


def test_db_upgrade_reaches_the_newest_migration(app, runner):
    import sqlalchemy as sa

    from apikeys.verification import extension

    result = invoke(runner, "db", "upgrade")
    assert result.exit_code == 0, result.output
    with extension.get_engine(app).connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0004"
