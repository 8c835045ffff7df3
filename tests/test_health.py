"""/healthz says the process serves, whatever the database does; /readyz says whether the host should get traffic."""

from __future__ import annotations

import importlib.metadata

import pytest

from apikeys import create_app
from apikeys.verification import extension

OLD_KEY = "old-verifier-key-" + "o" * 40
NEW_KEY = "new-verifier-key-" + "n" * 40


@pytest.fixture
def app_without_database(tmp_path, jwt_secret):
    """The service with a database SQLite cannot open: a directory where the file should be."""
    path = tmp_path / "db.sqlite3"
    path.mkdir()
    app = create_app(
        {"APIKEYS_DATABASE_URL": f"sqlite:///{path}", "APIKEYS_JWT_SECRET": jwt_secret},
        instance_path=str(tmp_path / "instance"),
    )
    yield app
    extension.get_engine(app).dispose()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_a_ready_host_answers_both_without_a_token(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.json == {"statusCode": 200, "data": {"status": "ok"}}


def test_healthz_answers_200_while_the_database_is_gone(app_without_database):
    response = app_without_database.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"statusCode": 200, "data": {"status": "ok"}}


def test_readyz_is_503_while_the_database_is_gone(app_without_database):
    response = app_without_database.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["code"] == "DATABASE_UNAVAILABLE"


def test_readyz_is_503_on_a_host_whose_verifier_key_the_database_no_longer_records(config, tmp_path):
    old = create_app({**config, "APIKEYS_VERIFIER_KEY": OLD_KEY}, instance_path=str(tmp_path / "old"))
    new = create_app({**config, "APIKEYS_VERIFIER_KEY": NEW_KEY}, instance_path=str(tmp_path / "new"))
    try:
        extension.prepare(old)
        assert new.test_cli_runner().invoke(args=["verifier-key", "adopt", "--yes"]).exit_code == 0
        ready = old.test_client().get("/readyz")
        assert ready.status_code == 503
        assert ready.json["code"] == "VERIFIER_KEY_MISMATCH"
        assert old.test_client().get("/healthz").status_code == 200  # the process still serves: no restart
        assert new.test_client().get("/readyz").status_code == 200
    finally:
        extension.get_engine(old).dispose()
        extension.get_engine(new).dispose()


def test_both_are_documented_without_security_and_only_readyz_can_fail(client):
    paths = client.get("/openapi.json").json["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/readyz"]["get"]["security"] == []
    assert "503" not in paths["/healthz"]["get"]["responses"]
    assert "503" in paths["/readyz"]["get"]["responses"]


def test_openapi_version_is_the_package_version(client):
    info = client.get("/openapi.json").json["info"]
    assert info["version"] == importlib.metadata.version("apikeys") == "0.1.0"


def test_favicon_is_a_small_svg(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert response.data.startswith(b"<svg ") and response.data.endswith(b"</svg>")
    assert len(response.data) < 1024
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
