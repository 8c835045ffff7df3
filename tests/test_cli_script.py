"""The command line a script needs: keys get / update / enable / disable, --database-url, db current / history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner

from apikeys.cli.main import main
from apikeys.dashboard import operations
from apikeys.storage import migrate
from apikeys.verification.extension import get_state
from tests.conftest import VERIFIER_KEY
from tests.servers import inherited_env

APIKEYS = os.path.join(os.path.dirname(sys.executable), "apikeys")
MISSING = "key_aaaaaaaaaaaaaaaa"


def invoke(runner, *args):
    return runner.invoke(args=list(args))


def audit_count(runner, tenant: str = "acme") -> int:
    return len(json.loads(invoke(runner, "audit", "--tenant", tenant, "--limit", "1000").output))


def get(runner, key_id: str, tenant: str = "acme") -> dict:
    result = invoke(runner, "keys", "get", "--tenant", tenant, key_id)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def run(args: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    """Run the installed `apikeys` as a script would, with a fresh instance folder and ``env``."""
    environment = {
        **inherited_env(),
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
        "APIKEYS_BCRYPT_ROUNDS": "4",
        "APIKEYS_VERIFIER_KEY": VERIFIER_KEY,
        **env,
    }
    return subprocess.run([APIKEYS, *args], env=environment, capture_output=True, text=True, timeout=60)


# --- keys get -------------------------------------------------------------------------------------------------------


def test_keys_get_prints_the_key_without_its_secret(runner, make_key):
    key = make_key(tenant="acme", name="Billing")
    shown = get(runner, key["id"])
    assert shown["id"] == key["id"]
    assert shown["name"] == "Billing"
    assert shown["publicKey"] == key["publicKey"]
    assert shown["active"] is True
    assert "secretKey" not in shown and "fullKey" not in shown


@pytest.mark.parametrize(
    "command",
    [["get"], ["update", "--name", "x"], ["enable"], ["disable"]],
    ids=lambda command: command[0],
)
@pytest.mark.parametrize("whose", ["another tenant's", "unknown"])
def test_keys_commands_refuse_a_key_the_tenant_does_not_have_in_one_line(runner, make_key, command, whose):
    key = make_key(tenant="acme")
    tenant, key_id = ("globex", key["id"]) if whose == "another tenant's" else ("acme", MISSING)
    before = audit_count(runner, tenant)
    result = invoke(runner, "keys", command[0], "--tenant", tenant, *command[1:], key_id)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output
    assert get(runner, key["id"])["name"] == "test key" and get(runner, key["id"])["active"] is True
    assert audit_count(runner, tenant) == before


# --- keys enable / disable ------------------------------------------------------------------------------------------


def test_enable_and_disable_are_idempotent_and_audit_only_a_change(runner, client, make_key):
    key = make_key(tenant="acme")
    entries = audit_count(runner)  # key.created

    enabled = invoke(runner, "keys", "enable", "--tenant", "acme", key["id"])
    assert enabled.exit_code == 0, enabled.output
    assert json.loads(enabled.output) == {"id": key["id"], "active": True, "changed": False}
    assert audit_count(runner) == entries

    for changed in (True, False):
        disabled = invoke(runner, "keys", "disable", "--tenant", "acme", key["id"])
        assert disabled.exit_code == 0, disabled.output
        assert json.loads(disabled.output) == {"id": key["id"], "active": False, "changed": changed}
        assert audit_count(runner) == entries + 1
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 403

    for changed in (True, False):
        enabled = invoke(runner, "keys", "enable", "--tenant", "acme", key["id"])
        assert json.loads(enabled.output) == {"id": key["id"], "active": True, "changed": changed}
        assert audit_count(runner) == entries + 2
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200

    actions = [entry["action"] for entry in json.loads(invoke(runner, "audit", "--tenant", "acme").output)]
    assert actions == ["key.enabled", "key.disabled", "key.created"]


def test_disable_ends_a_previous_secrets_grace_period_as_toggle_does(runner, client, make_key):
    key = make_key(tenant="acme")
    regenerated = invoke(runner, "keys", "regenerate", "--tenant", "acme", key["id"], "--grace-period", "3600")
    assert regenerated.exit_code == 0, regenerated.output
    invoke(runner, "keys", "disable", "--tenant", "acme", key["id"])
    invoke(runner, "keys", "enable", "--tenant", "acme", key["id"])
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 401
    fresh = json.loads(regenerated.output)["fullKey"]
    assert client.get("/verify", headers={"X-Api-Key": fresh}).status_code == 200


# --- keys update ----------------------------------------------------------------------------------------------------


def test_keys_update_changes_what_is_given_and_keeps_the_rest(runner, make_key):
    key = make_key(tenant="acme", name="Old")
    entries = audit_count(runner)
    args = ["--name", " New ", "--scope", "orders:read", "--scope", "orders:*", "--expires-at", "2099-01-01T00:00:00Z"]
    result = invoke(runner, "keys", "update", "--tenant", "acme", key["id"], *args, "--meta", '{"team": "billing"}')
    assert result.exit_code == 0, result.output
    updated = json.loads(result.output)
    assert updated["name"] == "New"
    assert updated["scopes"] == ["orders:read", "orders:*"]
    assert updated["expiresAt"].startswith("2099-01-01T00:00:00")
    assert updated["meta"] == {"team": "billing"}
    assert get(runner, key["id"]) == updated
    assert audit_count(runner) == entries + 1

    cleared = invoke(runner, "keys", "update", "--tenant", "acme", key["id"], "--no-scopes", "--no-expiry")
    assert cleared.exit_code == 0, cleared.output
    after = json.loads(cleared.output)
    assert (after["scopes"], after["expiresAt"]) == ([], None)
    assert (after["name"], after["meta"]) == ("New", {"team": "billing"})  # not given: unchanged


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--expires-at", "2020-01-01T00:00:00Z"], "Error: --expires-at: Must be in the future."),
        (["--expires-at", "tomorrow"], "Error: --expires-at: Must be an ISO-8601 time"),
        (["--expires-at", "2099-01-01T00:00:00"], "Error: --expires-at: Must say its time zone"),
        (["--scope", "ok", "--scope", "bad scope"], "Error: --scope #2: Must be 1 to 64 of"),
        (["--name", "   "], "Error: --name: Must not be blank."),
        (["--name", "x" * 101], "Error: --name: Must be at most 100 characters."),
        (["--meta", "[1]"], "Error: --meta: Not a valid mapping type."),
        (["--meta", "{"], "Error: Invalid value for --meta: must be a JSON object."),
        ([], "Error: Give at least one of --name, --scope, --no-scopes, --expires-at, --no-expiry, --meta."),
        (["--scope", "a", "--no-scopes"], "Error: --scope and --no-scopes cannot go together."),
        (["--expires-at", "2099-01-01T00:00:00Z", "--no-expiry"], "Error: --expires-at and --no-expiry cannot go"),
    ],
)
def test_keys_update_refuses_bad_values_naming_the_option(runner, make_key, args, said):
    key = make_key(tenant="acme")
    before, entries = get(runner, key["id"]), audit_count(runner)
    result = invoke(runner, "keys", "update", "--tenant", "acme", key["id"], *args)
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith(said), result.output
    assert "Traceback" not in result.output
    assert get(runner, key["id"]) == before
    assert audit_count(runner) == entries


# --- --database-url -------------------------------------------------------------------------------------------------


@pytest.mark.slow  # a process per command
@pytest.mark.parametrize("where", ["before the command", "after it"])
def test_database_url_option_beats_the_environment(tmp_path, database_url, where):
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"

    def with_option(*args):
        if where == "before the command":
            return run(["--database-url", database_url, *args], tmp_path, APIKEYS_DATABASE_URL=elsewhere)
        return run([*args, "--database-url", database_url], tmp_path, APIKEYS_DATABASE_URL=elsewhere)

    created = with_option("keys", "create", "--tenant", "acme", "--name", "Here", "--environment", "test")
    assert created.returncode == 0, created.stderr
    key_id = json.loads(created.stdout)["id"]
    listed = with_option("keys", "list", "--tenant", "acme")
    assert [key["id"] for key in json.loads(listed.stdout)] == [key_id]
    disabled = with_option("keys", "disable", "--tenant", "acme", key_id)
    assert json.loads(disabled.stdout) == {"id": key_id, "active": False, "changed": True}

    in_environment = run(["keys", "list", "--tenant", "acme"], tmp_path, APIKEYS_DATABASE_URL=elsewhere)
    assert in_environment.returncode == 0, in_environment.stderr
    assert json.loads(in_environment.stdout) == []


def test_database_url_option_lasts_one_run(monkeypatch):
    monkeypatch.setenv("APIKEYS_DATABASE_URL", "sqlite:///from-the-environment.sqlite3")
    result = CliRunner().invoke(main, ["--database-url", "sqlite:///other.sqlite3", "db", "history"])
    assert result.exit_code == 0, result.output
    assert os.environ["APIKEYS_DATABASE_URL"] == "sqlite:///from-the-environment.sqlite3"


def test_database_url_option_is_refused_where_the_settings_are_read_already(runner):
    """Under `flask --app app` (and its test runner) the app exists before the option: say so, never ignore it."""
    result = invoke(runner, "keys", "list", "--tenant", "acme", "--database-url", "sqlite:///other.sqlite3")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: --database-url is an option of `apikeys`; under `flask`, set APIKEYS_DATABASE_URL."
    )


@pytest.mark.slow  # a process
def test_a_bad_database_url_option_is_one_line_naming_the_option_not_the_url(tmp_path):
    result = run(["--database-url", "nosuchdb://user:hunter2@host/db", "db", "current"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("Error: Invalid value for --database-url: must be empty or")
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


# --- db current / history -------------------------------------------------------------------------------------------


@pytest.mark.slow  # a process per command
def test_db_current_says_no_schema_then_the_revision(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    before = run(["--database-url", url, "db", "current"], tmp_path)
    assert (before.returncode, before.stdout) == (0, "no schema\n"), before.stderr
    assert run(["--database-url", url, "db", "upgrade", "0001"], tmp_path).returncode == 0
    assert run(["--database-url", url, "db", "current"], tmp_path).stdout == "0001\n"
    assert run(["--database-url", url, "init-db"], tmp_path).returncode == 0
    newest = migrate.history()[0][0]
    assert run(["--database-url", url, "db", "current"], tmp_path).stdout == f"{newest} (head)\n"


def test_db_current_on_a_migrated_database(runner):
    result = invoke(runner, "db", "current")
    assert result.exit_code == 0, result.output
    assert result.output == "0004 (head)\n"


def test_db_history_lists_every_revision_newest_first(runner):
    result = invoke(runner, "db", "history")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["0004", "0003", "0002", "0001"]
    assert lines[-1] == "0001 The first schema: the api_keys table."


def test_concurrent_disables_change_the_key_once_and_audit_it_once(app, runner, make_key):
    key = make_key(tenant="acme")
    entries = audit_count(runner)
    with app.app_context():
        state = get_state()
    with ThreadPoolExecutor(max_workers=6) as pool:
        changed = list(pool.map(lambda _: operations.set_active(state, "acme", "cli", key["id"], False), range(12)))
    assert changed.count(True) == 1
    assert audit_count(runner) == entries + 1
    assert get(runner, key["id"])["active"] is False
