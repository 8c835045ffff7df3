"""One-line errors: a port in use, a usage error, a key not found, a downgrade; and the seed message's plural."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from apikeys import keys
from apikeys.cli.main import main
from apikeys.storage import migrate
from apikeys.verification import extension
from tests.servers import Gunicorn
from tests.servers import inherited_env

APIKEYS = Path(sys.executable).with_name("apikeys")


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_serve_on_a_port_in_use_says_so_once_and_at_once(tmp_path, family, host):
    env = {
        **inherited_env(),
        "HOME": str(tmp_path),  # gunicorn's control socket, were it to start
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
        "APIKEYS_DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.sqlite3'}",
    }
    with socket.socket(family, socket.SOCK_STREAM) as taken:
        taken.bind((host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [APIKEYS, "serve", "--host", host, "--port", str(port)], env=env, capture_output=True, text=True, timeout=60
        )
        took = time.monotonic() - started
    assert result.returncode == 1
    assert (result.stdout + result.stderr).splitlines() == [
        f"apikeys cannot start: port {port} on {host} is in use (another apikeys? `PORT={port + 1} make run`)"
    ]
    assert took < 5  # gunicorn alone retries for 5 s or more


@pytest.mark.slow
def test_a_seeded_start_says_1_key_not_1_keys(database_url, tmp_path):
    full_key = f"{keys.new_public_key('test')}.{keys.new_secret('test')}"
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps([{"tenant": "dev", "name": "Seeded", "environment": "test", "fullKey": full_key}]))
    env = {
        "APIKEYS_DATABASE_URL": database_url,
        "APIKEYS_JWT_SECRET": secrets.token_urlsafe(32),
        "APIKEYS_BCRYPT_ROUNDS": "4",
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
        "APIKEYS_SEED": str(seed),
    }
    with Gunicorn(tmp_path, env, workers=1) as server:
        pass
    logs = server.logs()
    assert f"Seeded 1 key from {seed} (0 already there)." in logs
    assert "1 keys" not in logs


@pytest.mark.parametrize("command", ["toggle", "regenerate", "delete"])
def test_a_key_not_found_names_the_key_and_tenant_on_the_command_line_only(runner, client, auth, make_key, command):
    key = make_key(tenant="acme")
    result = runner.invoke(args=["keys", command, "--tenant", "globex", key["id"]])
    assert result.exit_code == 1
    assert result.output == f"Error: No API key {key['id']} for tenant globex.\n"
    # The HTTP answer keeps the reference API's message.
    response = client.post(f"/dashboard/api-keys/{key['id']}/toggle", headers=auth("globex"))
    assert (response.status_code, response.json["message"]) == (404, "API key not found.")


def test_a_key_not_found_escapes_a_key_id_that_would_move_the_terminal(runner):
    result = runner.invoke(args=["keys", "delete", "--tenant", "acme", "key_\x1b[2J"])
    assert result.exit_code == 1
    assert result.output == "Error: No API key key_\\u001b[2J for tenant acme.\n"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["keys", "create", "--tenant", "acme", "--name", "x", "--environment", "prod"],
            "Error: Invalid value for '--environment': 'prod' is not one of 'live', 'test'.",
        ),
        (["keys", "create", "--bogus"], "Error: No such option '--bogus'."),
        (["keys", "toggle", "--tenant", "acme"], "Error: Missing argument 'KEY_ID'."),
        (["nosuch"], "Error: No such command 'nosuch'."),
        (["serve", "--workers", "0"], "Error: Invalid value for '--workers': 0 is not in the range x>=1."),
    ],
    ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else "",
)
def test_usage_errors_are_one_line_with_exit_code_2(args, line):
    result = CliRunner().invoke(main, args, prog_name="apikeys")
    assert result.exit_code == 2
    assert result.output.splitlines() == [line]


def test_db_upgrade_to_an_older_revision_refuses_in_one_line(app, runner):
    head = migrate.current_revision(extension.get_engine(app))
    assert head != "0001"
    result = runner.invoke(args=["db", "upgrade", "0001"])
    assert result.exit_code == 1
    assert result.output == f"Error: The database is at {head}, newer than 0001: apikeys does not downgrade.\n"
    assert migrate.current_revision(extension.get_engine(app)) == head


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--expires-at", "2000-01-01T00:00:00Z"], "Error: --expires-at: Must be in the future."),
        (["--scope", "ok", "--scope", "bad scope"], "Error: --scope #2: Must be 1 to 64 of A-Z a-z 0-9 _ . : * -."),
        (["--meta", "[1]"], "Error: --meta: Not a valid mapping type."),
    ],
)
def test_keys_create_names_the_option_not_the_api_field(tmp_path, options, message):
    """The command line's user typed --expires-at, not expiresAt: the one line names what they typed."""
    env = {**inherited_env(), "HOME": str(tmp_path), "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance")}
    command = [str(Path(sys.executable).parent / "apikeys"), "keys", "create", "--tenant", "acme", "--name", "k"]
    result = subprocess.run(
        [*command, "--environment", "live", *options], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "WARNING" not in line]
    assert lines == [message]
