"""`apikeys verifier-key show`, and the length every configured verifier key must have."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
from click.testing import CliRunner

from apikeys import config
from apikeys import create_app
from apikeys import keys
from apikeys.cli.main import main
from apikeys.verification.extension import ApiKeys
from tests.conftest import VERIFIER_KEY
from tests.servers import inherited_env

APIKEYS = os.path.join(os.path.dirname(sys.executable), "apikeys")
GIVEN_KEY = "given-verifier-key-" + "g" * 40


def show(instance, *args, **env):
    """Run `apikeys verifier-key show` as the console script does, on the instance folder ``instance``."""
    environment = {"APIKEYS_INSTANCE_PATH": str(instance), "APIKEYS_VERIFIER_KEY": None, **env}
    return CliRunner().invoke(main, ["verifier-key", "show", *args], env=environment)


@pytest.fixture
def started(tmp_path):
    """An instance folder the service has started in once: its generated key is in instance/verifier-key."""
    env = {**inherited_env(), "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"), "APIKEYS_JWT_SECRET": "s" * 64}
    result = subprocess.run([APIKEYS, "init-db"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return tmp_path / "instance", (tmp_path / "instance" / "verifier-key").read_text().strip()


def test_show_on_a_fresh_instance_says_there_is_none_and_makes_none(tmp_path):
    result = show(tmp_path / "instance")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: There is no verifier key: APIKEYS_VERIFIER_KEY is empty and {tmp_path / 'instance' / 'verifier-key'} "
        "does not exist; the service makes one when it first starts (`apikeys init-db`), in the instance folder it "
        "is started with."
    ]
    assert not (tmp_path / "instance").exists()


def test_show_fingerprint_prints_only_the_tag_of_the_generated_key(started):
    instance, key = started
    result = show(instance, "--fingerprint")
    assert result.exit_code == 0, result.output
    assert result.stdout == keys.Verifier(key).tag[:-1] + "\n"
    assert key not in result.output


def test_show_refuses_to_print_the_key_to_a_pipe_unless_asked(started):
    instance, key = started
    refused = show(instance)
    assert refused.exit_code == 1
    assert key not in refused.output
    assert refused.stderr == (
        "Error: Not printing the verifier key to a pipe or a file: add --yes to do so on purpose, "
        "or --fingerprint for its tag alone.\n"
    )
    asked = show(instance, "--yes")
    assert asked.exit_code == 0, asked.output
    assert asked.stdout == key + "\n"  # nothing else on stdout: a script can pipe it to a secret store
    tag = keys.Verifier(key).tag[:-1]
    assert asked.stderr == f"Verifier key {tag}, from {instance / 'verifier-key'}.\n"


def test_show_prints_the_key_to_a_terminal_without_yes(started):
    instance, key = started
    leader, follower = pty.openpty()
    env = {**inherited_env(), "APIKEYS_INSTANCE_PATH": str(instance)}
    try:
        process = subprocess.run(
            [APIKEYS, "verifier-key", "show"], env=env, stdout=follower, stderr=subprocess.PIPE, timeout=60
        )
        os.close(follower)
        follower = None
        printed = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is closed and drained
                break
            if not chunk:
                break
            printed += chunk
    finally:
        if follower is not None:
            os.close(follower)
        os.close(leader)
    assert process.returncode == 0, process.stderr
    assert printed.decode().splitlines() == [key]


def test_show_prints_the_configured_key_and_says_where_it_came_from(tmp_path):
    result = show(tmp_path / "instance", "--yes", APIKEYS_VERIFIER_KEY=GIVEN_KEY)
    assert result.exit_code == 0, result.output
    assert result.stdout == GIVEN_KEY + "\n"
    assert result.stderr == f"Verifier key {keys.Verifier(GIVEN_KEY).tag[:-1]}, from APIKEYS_VERIFIER_KEY.\n"
    assert not (tmp_path / "instance").exists()


def test_show_fingerprint_through_flask_cli_names_the_apps_key(runner):
    result = runner.invoke(args=["verifier-key", "show", "--fingerprint"])
    assert result.exit_code == 0, result.output
    assert result.stdout == keys.Verifier(VERIFIER_KEY).tag[:-1] + "\n"


@pytest.mark.parametrize(
    ("name", "value", "long_enough", "what"),
    [
        ("APIKEYS_VERIFIER_KEY", "short", "k" * 32, "it"),
        ("APIKEYS_VERIFIER_KEY", "k" * 31, "k" * 32, "it"),
        ("APIKEYS_VERIFIER_KEY_PREVIOUS", f"{'o' * 40},short", f"{'o' * 40},{'s' * 32}", "one of its keys"),
    ],
)
def test_a_verifier_key_under_32_characters_stops_the_start(tmp_path, name, value, long_enough, what):
    settings = {"APIKEYS_VERIFIER_KEY": GIVEN_KEY, "APIKEYS_JWT_SECRET": "s" * 64}
    with pytest.raises(config.ConfigError) as raised:
        create_app({**settings, name: value}, instance_path=str(tmp_path / "instance"))
    message = str(raised.value)
    assert message.startswith(f"{name} is not usable: {what} has under 32 characters")
    assert "short" not in message and "k" * 31 not in message  # never the value itself
    config.check({**settings, name: long_enough})  # 32 characters are enough, as for a key file


def test_a_service_that_verifies_refuses_a_short_key_too():
    from flask import Flask

    consumer = Flask("consumer")
    consumer.config.update(APIKEYS_DATABASE_URL="sqlite://", APIKEYS_VERIFIER_KEY="short")
    with pytest.raises(config.ConfigError, match="APIKEYS_VERIFIER_KEY is not usable"):
        ApiKeys(consumer)


def test_init_db_with_a_short_verifier_key_says_so_in_one_line(tmp_path):
    env = {
        **inherited_env(),
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
        "APIKEYS_JWT_SECRET": "s" * 64,
        "APIKEYS_VERIFIER_KEY": "short",
    }
    result = subprocess.run([APIKEYS, "init-db"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: APIKEYS_VERIFIER_KEY is not usable: it has under 32 characters (use 48 or more random ones: "
        "python3 -c 'import secrets; print(secrets.token_urlsafe(48))')."
    ]
