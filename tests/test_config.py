"""Configuration: defaults, instance config.py, then APIKEYS_* environment; a test mapping replaces both."""

from __future__ import annotations

import pytest

from apikeys import config
from apikeys import create_app
from apikeys import db
from apikeys.tokens import issue_token


def test_environment_values_take_the_type_of_their_default():
    settings = config.from_environment(
        {
            "APIKEYS_BCRYPT_ROUNDS": "10",
            "APIKEYS_JWT_ALGORITHMS": "RS256, ES256",
            "APIKEYS_JWT_SECRET": "12345",
            "APIKEYS_UNKNOWN": "ignored",
            "OTHER": "ignored",
        }
    )
    assert settings == {
        "APIKEYS_BCRYPT_ROUNDS": 10,
        "APIKEYS_JWT_ALGORITHMS": ["RS256", "ES256"],
        "APIKEYS_JWT_SECRET": "12345",
    }


def test_a_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="APIKEYS_BCRYPT_ROUNDS"):
        config.from_environment({"APIKEYS_BCRYPT_ROUNDS": "many"})


def test_order_defaults_instance_file_environment(tmp_path, monkeypatch):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(
        "APIKEYS_BCRYPT_ROUNDS = 5\nAPIKEYS_CACHE_SIZE = 7\nAPIKEYS_JWT_SECRET = 'from-file-' + 'x' * 60\n"
    )
    monkeypatch.setenv("APIKEYS_CACHE_SIZE", "9")
    monkeypatch.setenv("APIKEYS_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    app = create_app(instance_path=str(instance))
    try:
        assert app.config["APIKEYS_BCRYPT_ROUNDS"] == 5  # the file over the default
        assert app.config["APIKEYS_CACHE_SIZE"] == 9  # the environment over the file
        assert app.config["APIKEYS_LAST_USED_INTERVAL"] == 60  # the default
        assert app.config["APIKEYS_JWT_SECRET"].startswith("from-file-")
        assert app.extensions["apikeys"].cache.size == 9
        assert str(db.get_engine(app).url).endswith("env.sqlite3")
    finally:
        db.get_engine(app).dispose()


def test_a_test_mapping_replaces_file_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("APIKEYS_CACHE_SIZE", "9")
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64}, instance_path=str(tmp_path / "instance"))
    try:
        assert app.config["APIKEYS_CACHE_SIZE"] == 10_000
    finally:
        db.get_engine(app).dispose()


def test_default_database_is_a_sqlite_file_in_the_instance_folder(tmp_path):
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64}, instance_path=str(tmp_path / "instance"))
    try:
        assert db.database_url(app) == f"sqlite:///{tmp_path / 'instance' / 'apikeys.sqlite3'}"
    finally:
        db.get_engine(app).dispose()


def test_relative_sqlite_path_lives_in_the_instance_folder(tmp_path):
    app = create_app(
        {"APIKEYS_JWT_SECRET": "t" * 64, "APIKEYS_DATABASE_URL": "sqlite:///keys.db"},
        instance_path=str(tmp_path / "instance"),
    )
    try:
        assert db.get_engine(app).url.database == str(tmp_path / "instance" / "keys.db")
    finally:
        db.get_engine(app).dispose()


def test_sqlite_pragmas_are_set_on_connect(tmp_path):
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64}, instance_path=str(tmp_path / "instance"))
    try:
        with db.get_engine(app).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    finally:
        db.get_engine(app).dispose()


def test_body_limit_is_configurable(config, tmp_path, auth):
    config["APIKEYS_MAX_BODY_BYTES"] = 100
    app = create_app(config, instance_path=str(tmp_path / "i"))
    try:
        body = '{"name": "' + "x" * 100 + '", "environment": "live"}'
        response = app.test_client().post(
            "/dashboard/api-keys", data=body, headers={**auth(), "Content-Type": "application/json"}
        )
        assert response.status_code == 413
    finally:
        db.get_engine(app).dispose()


def test_db_init_twice_on_one_app_explains_the_fix(app):
    with pytest.raises(RuntimeError, match="once"):
        db.init_app(app)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_works(tmp_path, url):
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64, "APIKEYS_DATABASE_URL": url}, instance_path=str(tmp_path / "i"))
    try:
        db.upgrade(db.get_engine(app))
        client = app.test_client()
        token = {"Authorization": "Bearer " + issue_token(app.config, "acme", 60)}
        created = client.post("/dashboard/api-keys", json={"name": "mem", "environment": "test"}, headers=token)
        assert created.status_code == 201
        assert client.get("/verify", headers={"X-Api-Key": created.json["data"]["fullKey"]}).status_code == 200
    finally:
        db.get_engine(app).dispose()
