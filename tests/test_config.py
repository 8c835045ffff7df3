"""Configuration: defaults, instance config.py, then APIKEYS_* environment; a test mapping replaces both."""

from __future__ import annotations

import os
import stat

import pytest

from apikeys import config
from apikeys import create_app
from apikeys.storage import engine as engine_module
from apikeys.storage import migrate
from apikeys.storage import tables
from apikeys.tokens import issue_token
from apikeys.verification import extension


def checked(**settings) -> dict:
    """Return a Flask-like config after the defaults and the rules are applied to ``settings``."""
    values = dict(settings)
    config.check(values)
    return values


def test_environment_strings_take_their_settings_type():
    values = checked(
        APIKEYS_BCRYPT_ROUNDS="10",
        APIKEYS_JWT_ALGORITHMS="RS256, ES256",
        APIKEYS_JWT_SECRET="12345",
        APIKEYS_LOG_LEVEL="debug",
        APIKEYS_LOG_FORMAT=" JSON ",
    )
    assert values["APIKEYS_BCRYPT_ROUNDS"] == 10
    assert values["APIKEYS_JWT_ALGORITHMS"] == ["RS256", "ES256"]
    assert values["APIKEYS_JWT_SECRET"] == "12345"
    assert (values["APIKEYS_LOG_LEVEL"], values["APIKEYS_LOG_FORMAT"]) == ("DEBUG", "json")
    assert values["MAX_CONTENT_LENGTH"] == 64 * 1024


@pytest.mark.parametrize("spelling", ["1", "true", "TRUE", "yes", "on", " On "])
def test_booleans_accept_the_usual_true_spellings(spelling):
    assert checked(APIKEYS_DB_POOL_PRE_PING=spelling, APIKEYS_METRICS=spelling)["APIKEYS_METRICS"] is True


@pytest.mark.parametrize("spelling", ["0", "false", "False", "no", "off", ""])
def test_booleans_accept_the_usual_false_spellings(spelling):
    assert checked(APIKEYS_DB_POOL_PRE_PING=spelling)["APIKEYS_DB_POOL_PRE_PING"] is False


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("APIKEYS_BCRYPT_ROUNDS", "abc", "a whole number from 4 to 31"),
        ("APIKEYS_BCRYPT_ROUNDS", "3", "a whole number from 4 to 31"),
        ("APIKEYS_BCRYPT_ROUNDS", "40", "a whole number from 4 to 31"),
        ("APIKEYS_BCRYPT_ROUNDS", True, "a whole number from 4 to 31"),
        ("APIKEYS_LOG_FORMAT", "xml", "one of text, json"),
        ("APIKEYS_LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("APIKEYS_DB_POOL_PRE_PING", "maybe", "one of 1, true, yes, on, 0, false, no, off"),
        ("APIKEYS_JWT_LEEWAY", "-1", "a whole number from 0 to 600"),
        ("APIKEYS_MAX_BODY_BYTES", "10", "a whole number from 1024"),
        ("APIKEYS_JWT_TENANT_CLAIM", " ", "a non-empty string"),
        ("APIKEYS_CORS_ORIGINS", "https://ok.example, *", "exact origins"),
        ("APIKEYS_CORS_ORIGINS", "https://admin.example.com/path", "exact origins"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_it_accepts(name, value, rule):
    with pytest.raises(config.ConfigError) as raised:
        checked(**{name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}={value!r} is not valid: it must be ")
    assert rule in message
    assert "\n" not in message


def test_a_huge_bad_value_is_shown_cut_short():
    with pytest.raises(config.ConfigError) as raised:
        checked(APIKEYS_RATE_LIMIT_TIMEOUT_MS="[" * 10_000 + "]" * 10_000)
    message = str(raised.value)
    assert message.startswith("APIKEYS_RATE_LIMIT_TIMEOUT_MS='[[[[") and "[[[...]]]" in message
    assert len(message) < 200 and "\n" not in message


def test_a_bad_secret_setting_is_named_without_its_value():
    with pytest.raises(config.ConfigError) as raised:
        checked(APIKEYS_VERIFIER_KEY=12345)
    assert str(raised.value) == "APIKEYS_VERIFIER_KEY is not valid: it must be a string."


def test_a_bad_environment_value_stops_create_app(tmp_path, monkeypatch):
    monkeypatch.setenv("APIKEYS_BCRYPT_ROUNDS", "40")
    with pytest.raises(config.ConfigError, match="APIKEYS_BCRYPT_ROUNDS='40'"):
        create_app(instance_path=str(tmp_path / "instance"))


def test_order_defaults_instance_file_environment(tmp_path, monkeypatch):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(
        "APIKEYS_BCRYPT_ROUNDS = 5\nAPIKEYS_LAST_USED_INTERVAL = 7\nAPIKEYS_JWT_SECRET = 'from-file-' + 'x' * 60\n"
    )
    monkeypatch.setenv("APIKEYS_LAST_USED_INTERVAL", "9")
    monkeypatch.setenv("APIKEYS_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    app = create_app(instance_path=str(instance))
    try:
        assert app.config["APIKEYS_BCRYPT_ROUNDS"] == 5  # the file over the default
        assert app.config["APIKEYS_LAST_USED_INTERVAL"] == 9  # the environment over the file
        assert app.config["APIKEYS_SQLITE_BUSY_TIMEOUT"] == 10_000  # the default
        assert app.config["APIKEYS_JWT_SECRET"].startswith("from-file-")
        assert app.extensions["apikeys"].last_used_interval.total_seconds() == 9
        assert str(extension.get_engine(app).url).endswith("env.sqlite3")
    finally:
        extension.get_engine(app).dispose()


def test_a_test_mapping_replaces_file_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("APIKEYS_LAST_USED_INTERVAL", "9")
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64}, instance_path=str(tmp_path / "instance"))
    try:
        assert app.config["APIKEYS_LAST_USED_INTERVAL"] == 60
    finally:
        extension.get_engine(app).dispose()


def test_the_instance_folder_is_instance_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("APIKEYS_INSTANCE_PATH", raising=False)
    assert config.instance_path() == str(tmp_path / "instance")
    monkeypatch.setenv("APIKEYS_INSTANCE_PATH", "elsewhere")
    assert config.instance_path() == str(tmp_path / "elsewhere")
    assert config.instance_path("given") == str(tmp_path / "given")


def test_instance_folder_and_database_files_are_private_whatever_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        app = create_app({"APIKEYS_JWT_SECRET": "t" * 64}, instance_path=str(tmp_path / "instance"))
        try:
            extension.prepare(app)
            with extension.get_engine(app).begin() as conn:  # a write, so SQLite makes its -wal and -shm files
                conn.execute(tables.settings.insert().values(name="probe", value="x"))
                modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "instance").iterdir()}
        finally:
            extension.get_engine(app).dispose()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "instance").stat().st_mode) == 0o700
    assert modes["apikeys.sqlite3"] == 0o600
    assert modes["apikeys.sqlite3-wal"] == 0o600
    assert modes["apikeys.sqlite3-shm"] == 0o600
    assert modes["verifier-key"] == 0o600


def test_default_database_is_a_sqlite_file_in_the_instance_folder(tmp_path):
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64}, instance_path=str(tmp_path / "instance"))
    try:
        assert (
            engine_module.database_url(app.config, app.instance_path)
            == f"sqlite:///{tmp_path / 'instance' / 'apikeys.sqlite3'}"
        )
    finally:
        extension.get_engine(app).dispose()


def test_relative_sqlite_path_lives_in_the_instance_folder(tmp_path):
    app = create_app(
        {"APIKEYS_JWT_SECRET": "t" * 64, "APIKEYS_DATABASE_URL": "sqlite:///keys.db"},
        instance_path=str(tmp_path / "instance"),
    )
    try:
        assert extension.get_engine(app).url.database == str(tmp_path / "instance" / "keys.db")
    finally:
        extension.get_engine(app).dispose()


def test_sqlite_pragmas_are_set_on_connect(tmp_path):
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64}, instance_path=str(tmp_path / "instance"))
    try:
        with extension.get_engine(app).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    finally:
        extension.get_engine(app).dispose()


def test_body_limit_is_configurable(config, tmp_path, auth):
    config["APIKEYS_MAX_BODY_BYTES"] = 1024
    app = create_app(config, instance_path=str(tmp_path / "i"))
    try:
        body = '{"name": "' + "x" * 1024 + '", "environment": "live"}'
        response = app.test_client().post(
            "/dashboard/api-keys", data=body, headers={**auth(), "Content-Type": "application/json"}
        )
        assert response.status_code == 413
    finally:
        extension.get_engine(app).dispose()


def test_extension_init_twice_on_one_app_explains_the_fix(app):
    from apikeys import ApiKeys

    with pytest.raises(RuntimeError, match="once"):
        ApiKeys(app)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_works(tmp_path, url):
    app = create_app({"APIKEYS_JWT_SECRET": "t" * 64, "APIKEYS_DATABASE_URL": url}, instance_path=str(tmp_path / "i"))
    try:
        migrate.upgrade(extension.get_engine(app))
        client = app.test_client()
        token = {"Authorization": "Bearer " + issue_token(app.config, "acme", 60)}
        created = client.post("/dashboard/api-keys", json={"name": "mem", "environment": "test"}, headers=token)
        assert created.status_code == 201
        assert client.get("/verify", headers={"X-Api-Key": created.json["data"]["fullKey"]}).status_code == 200
    finally:
        extension.get_engine(app).dispose()
