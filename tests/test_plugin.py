"""The pytest plugin, tested as pytest plugins are: from throwaway projects, with pytester."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import apikeys.testing

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
PYTEST_CONFIG = '[tool.pytest.ini_options]\nfilterwarnings = ["error"]\n'
# A throwaway project installs apikeys and pytest only: keep the other plugins of this
# virtualenv (schemathesis, hypothesis, ...) out of its runs, and pytest's cache out of its folder.
ONLY_APIKEYS = ["-p", "no:cacheprovider"] + [
    arg
    for entry_point in importlib.metadata.entry_points(group="pytest11")
    if entry_point.name != "apikeys"
    for arg in ("-p", f"no:{entry_point.name}")
]

# The README example ("Use it in your tests"): docs/testing.md holds this file verbatim,
# and test_readme_example_is_the_tested_one keeps the two the same.
SERVICE_TESTS = '''\
import json
import urllib.error
import urllib.request

import pytest
from flask import Flask
from flask import g

from apikeys import ApiKeys
from apikeys import require_api_key
from apikeys.tokens import issue_token
from apikeys.verification.extension import get_engine


def create_service(settings):
    """A small Flask service whose /orders need an API key."""
    app = Flask(__name__)
    app.config.update(settings)  # APIKEYS_DATABASE_URL, APIKEYS_VERIFIER_KEY, APIKEYS_USAGE
    ApiKeys(app)

    @app.get("/orders")
    @require_api_key()
    def orders():
        return {"tenant": g.api_key.tenant_id, "orders": []}

    return app


@pytest.fixture
def service(apikeys_server):
    app = create_service(apikeys_server.settings)
    yield app
    get_engine(app).dispose()


def verify(server, full_key):
    """Ask the apikeys server about a key, as a reverse proxy would; return (status, body)."""
    request = urllib.request.Request(server.url + "/verify", headers={"X-Api-Key": full_key})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def test_server_verifies_a_key(apikeys_server, apikeys_key):
    status, body = verify(apikeys_server, apikeys_key["fullKey"])
    assert status == 200
    assert body["data"]["id"] == apikeys_key["id"]
    assert body["data"]["tenantId"] == "test-tenant"


def test_server_refuses_a_wrong_secret(apikeys_server):
    key = apikeys_server.create_key("acme", name="billing", environment="live")
    other = apikeys_server.create_key("acme", name="other", environment="live")
    status, body = verify(apikeys_server, key["publicKey"] + "." + other["secretKey"])
    assert status == 401
    assert body["code"] == "INVALID_API_KEY"


def test_service_requires_a_key(service, apikeys_key):
    client = service.test_client()
    response = client.get("/orders", headers={"X-Api-Key": apikeys_key["fullKey"]})
    assert response.status_code == 200
    assert response.json["tenant"] == "test-tenant"
    response = client.get("/orders")
    assert response.status_code == 401
    assert response.json["code"] == "MISSING_API_KEY"


def test_dashboard_in_process(apikeys_app, apikeys_client):
    token = issue_token(apikeys_app.config, "acme", 600)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"name": "CI", "environment": "test"}
    created = apikeys_client.post("/dashboard/api-keys", json=body, headers=headers)
    assert created.status_code == 201
    listed = apikeys_client.get("/dashboard/api-keys", headers=headers)
    assert [item["id"] for item in listed.json["data"]["items"]] == [created.json["data"]["id"]]
    verified = apikeys_client.get("/verify", headers={"X-Api-Key": created.json["data"]["fullKey"]})
    assert verified.json["data"]["tenantId"] == "acme"
'''


def foreign_project(pytester: pytest.Pytester, **files: str) -> None:
    """Lay out a project that only installs apikeys: a pytest config with warnings as errors, and tests."""
    pytester.makefile(".toml", pyproject=PYTEST_CONFIG)
    pytester.makepyfile(**files)


def test_a_foreign_suite_uses_the_fixtures(pytester):
    foreign_project(pytester, test_service=SERVICE_TESTS)
    started = time.perf_counter()
    result = pytester.runpytest_subprocess(*ONLY_APIKEYS)
    elapsed = time.perf_counter() - started
    result.assert_outcomes(passed=4)
    assert not [line for line in result.errlines if "WARNING" in line], result.errlines  # none at exit either
    print(f"foreign suite of four tests: {elapsed:.2f} s wall time, pytest start-up included")


def test_readme_example_is_the_tested_one():
    # The docs are merged into README.md; whichever holds the section must show the tested file.
    documents = [path for path in (ROOT / "docs" / "testing.md", ROOT / "README.md") if path.exists()]
    blocks = [block for path in documents for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S)]
    assert SERVICE_TESTS in blocks


def plugin_fixtures(pytester: pytest.Pytester) -> set[str]:
    """Return the names of the fixtures that ``pytest --fixtures`` says apikeys.testing defines."""
    result = pytester.runpytest_subprocess("--fixtures", "-v", *ONLY_APIKEYS)
    assert result.ret == 0
    return {line.split()[0] for line in result.outlines if "apikeys/testing.py:" in line}


def test_fixtures_are_prefixed_and_opt_in(pytester):
    foreign_project(
        pytester,
        test_nothing="""
            import json

            def test_nothing(request):
                with open(request.config.rootpath / "fixturenames.json", "w") as file:
                    json.dump(sorted(request.fixturenames), file)
        """,
    )
    names = plugin_fixtures(pytester)
    assert names == {"apikeys_server", "apikeys_key", "apikeys_app", "apikeys_client"}

    # A test that asks for nothing gets the same fixtures with the plugin as without it: nothing is autouse.
    used = {}
    for args in ((), ("-p", "no:apikeys")):
        result = pytester.runpytest_subprocess(*ONLY_APIKEYS, *args)
        result.assert_outcomes(passed=1)
        used[args] = json.loads((pytester.path / "fixturenames.json").read_text())
    assert used[()] == used[("-p", "no:apikeys")]
    assert not any(name.startswith("apikeys") for name in used[()])
    # Nor does the plugin implement any hook: it only offers fixtures.
    assert [name for name in vars(apikeys.testing) if name.startswith("pytest_")] == []


def test_server_stops_at_session_end_when_a_test_fails(pytester):
    foreign_project(
        pytester,
        conftest="""
            import json
            import socket
            import threading
            from pathlib import Path

            def pytest_sessionfinish(session):
                # Session fixtures are torn down before this hook: the server must be gone by now.
                server = json.loads((session.config.rootpath / "server.json").read_text())
                try:
                    socket.create_connection(("127.0.0.1", server["port"]), timeout=2).close()
                    refused = False
                except ConnectionRefusedError:
                    refused = True
                after = {
                    "refused": refused,
                    "database_exists": Path(server["database"]).exists(),
                    "server_threads": [t.name for t in threading.enumerate() if t.name.startswith("apikeys")],
                }
                (session.config.rootpath / "after.json").write_text(json.dumps(after))
        """,
        test_fails="""
            import json
            from pathlib import Path
            from urllib.parse import urlsplit

            def test_records_the_server(apikeys_server, request):
                server = {
                    "port": urlsplit(apikeys_server.url).port,
                    "database": apikeys_server.database_url.removeprefix("sqlite:///"),
                }
                (request.config.rootpath / "server.json").write_text(json.dumps(server))
                assert Path(server["database"]).exists()

            def test_fails_on_purpose(apikeys_server, apikeys_key):
                assert apikeys_key["environment"] == "live"
        """,
    )
    result = pytester.runpytest_subprocess(*ONLY_APIKEYS)
    result.assert_outcomes(passed=1, failed=1)
    # Checked inside the finished session, not after it: once the process is gone, its port is closed anyway.
    after = json.loads((pytester.path / "after.json").read_text())
    assert after == {"refused": True, "database_exists": False, "server_threads": []}


def test_the_fixtures_apps_stop_counting_usage_with_them(pytester):
    # Each fixture's app counts the keys it verifies (a thread writes the counts every few seconds). Its database is
    # deleted when the fixture ends: the counting must end first, not write to a deleted file now and at exit.
    foreign_project(
        pytester,
        conftest="""
            import json
            import threading

            def usage_threads():
                return [thread.name for thread in threading.enumerate() if thread.name == "apikeys-usage"]

            def pytest_sessionfinish(session):
                (session.config.rootpath / "after.json").write_text(json.dumps(usage_threads()))
        """,
        test_usage="""
            import urllib.request

            from apikeys.tokens import issue_token
            from conftest import usage_threads

            def test_the_server_counts(apikeys_server, apikeys_key):
                request = urllib.request.Request(apikeys_server.url + "/verify")
                request.add_header("X-Api-Key", apikeys_key["fullKey"])
                with urllib.request.urlopen(request) as response:
                    assert response.status == 200
                assert len(usage_threads()) == 1

            def test_the_app_counts(apikeys_app, apikeys_client):
                headers = {"Authorization": "Bearer " + issue_token(apikeys_app.config, "acme", 600)}
                body = {"name": "CI", "environment": "test"}
                created = apikeys_client.post("/dashboard/api-keys", json=body, headers=headers).json
                verified = apikeys_client.get("/verify", headers={"X-Api-Key": created["data"]["fullKey"]})
                assert verified.status_code == 200
                assert len(usage_threads()) == 2

            def test_the_apps_counting_ended_with_it():
                assert len(usage_threads()) == 1  # the session's server's, still serving
        """,
    )
    result = pytester.runpytest_subprocess(*ONLY_APIKEYS)
    result.assert_outcomes(passed=3)
    assert json.loads((pytester.path / "after.json").read_text()) == []
    assert "Usage counts" not in "\n".join(result.outlines + result.errlines)


def test_importing_the_plugin_is_cheap():
    code = "import json, sys, apikeys.testing; print(json.dumps(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    modules = set(json.loads(output))
    heavy = {"flask", "sqlalchemy", "werkzeug", "alembic", "bcrypt", "jwt", "marshmallow", "flask_smorest"}
    assert heavy & modules == set()
    assert {name for name in modules if name.startswith("apikeys")} == {"apikeys", "apikeys.testing"}
