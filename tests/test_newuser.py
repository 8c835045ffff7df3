"""Issue 11 as a new user meets it: offline docs, the CLI on a fresh instance, settings, messages, CORS, the helper."""

from __future__ import annotations

import contextlib
import html.parser
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import click
import flask
import jwt
import pytest
from click.testing import CliRunner

from apikeys import config
from apikeys import create_app
from apikeys import keys
from apikeys import verify_api_key
from apikeys.cli.main import main
from apikeys.server.serve import bind_address
from apikeys.server.serve import is_loopback
from apikeys.verification import extension
from tests.servers import ROOT
from tests.servers import free_port
from tests.servers import postgres_database
from tests.servers import wait_for

APIKEYS = str(Path(sys.executable).with_name("apikeys"))


def clean_env(instance: Path, **settings: str) -> dict[str, str]:
    """The environment of a new user's shell: no APIKEYS_* but the instance folder and what a test sets."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")}
    env.update(APIKEYS_INSTANCE_PATH=str(instance), COLUMNS="80", **settings)
    env["HOME"] = str(instance.parent)  # gunicorn's control socket, if one starts, is this test's own
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user types it."""
    return subprocess.run([APIKEYS, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]


# --- 1. /docs works offline ----------------------------------------------------------------------------------------


class Assets(html.parser.HTMLParser):
    """Every URL a page makes the browser load: scripts, stylesheets, images, icons."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])


def test_docs_page_loads_everything_from_the_service(client):
    page = client.get("/docs")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    parser = Assets()
    parser.feed(text)
    assert parser.urls, "the page references no script or stylesheet"
    kinds = set()
    for url in parser.urls:
        parts = urllib.parse.urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url} is loaded from elsewhere"
        with client.get(url) as asset:  # a file answer: closed, so no file handle outlives the test
            assert asset.status_code == 200, url
            assert len(asset.get_data()) > 1000, url
            kinds.add(asset.mimetype)
    assert {"text/javascript", "text/css"} <= kinds
    assert "http://" not in text and "https://" not in text
    # The document the page asks for is the service's own.
    assert 'url: "/openapi.json"' in text
    assert client.get("/openapi.json").json["info"]["title"] == "apikeys"


def test_docs_assets_do_not_serve_other_files(client):
    for path in ("/docs/assets/../__init__.py", "/docs/assets/%2e%2e/__init__.py", "/docs/assets/nothing.js"):
        assert client.get(path).status_code == 404, path


@contextlib.contextmanager
def serving(app):
    """The app on a real socket (werkzeug's threaded server), for a browser."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.mark.slow
def test_docs_render_in_a_browser_with_no_network(tmp_path):
    """Chromium renders /docs with every request not made to the service refused, under a non-loopback name."""
    from playwright.sync_api import sync_playwright

    # The page does not touch the database: one backend is enough.
    settings = {"APIKEYS_DATABASE_URL": f"sqlite:///{tmp_path / 'docs.sqlite3'}", "APIKEYS_BCRYPT_ROUNDS": 4}
    app = create_app(settings, instance_path=str(tmp_path / "instance"))
    with serving(app) as port, sync_playwright() as p:
        # A public-looking name: Swagger UI treats localhost specially (its online validator badge, for one).
        origin = f"http://docs.example:{port}"
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--host-resolver-rules=MAP docs.example 127.0.0.1"]
        )
        try:
            page = browser.new_page()
            elsewhere, errors = [], []

            def only_the_service(route):
                if route.request.url.startswith(origin + "/"):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", only_the_service)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(origin + "/docs")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)  # the operations are listed
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/dashboard/api-keys" in path for path in paths)
            assert page.inner_text(".swagger-ui .info .title").startswith("apikeys")
            page.wait_for_timeout(500)  # late requests (images, validators) would show here
        finally:
            browser.close()
            extension.get_engine(app).dispose()
    assert elsewhere == []
    assert errors == []


# --- 2. Every CLI command works on a fresh instance ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(request, tmp_path):
    """A new user's environment: an instance folder that does not exist yet, and an empty database."""
    instance = tmp_path / "instance"
    if request.param == "sqlite":
        yield clean_env(instance)  # the default: a SQLite file in the instance folder
        return
    with postgres_database("apikeys_newuser") as url:
        yield clean_env(instance, APIKEYS_DATABASE_URL=url)


def _import_file(tmp_path: Path) -> tuple[Path, str]:
    full_key = f"{keys.new_public_key('live')}.{keys.new_secret('live')}"
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([{"tenant": "acme", "name": "Imported", "environment": "live", "fullKey": full_key}]))
    return path, full_key


def _verifies(env: dict[str, str], full_key: str) -> bool:
    """Tell whether the service on this instance and database accepts ``full_key`` at /verify."""
    settings = {"APIKEYS_DATABASE_URL": env.get("APIKEYS_DATABASE_URL", ""), "APIKEYS_BCRYPT_ROUNDS": 4}
    app = create_app(settings, instance_path=env["APIKEYS_INSTANCE_PATH"])
    try:
        return app.test_client().get("/verify", headers={"X-Api-Key": full_key}).status_code == 200
    finally:
        extension.get_engine(app).dispose()


@pytest.mark.slow  # a process per command, migrations included
def test_keys_create_first_on_a_fresh_instance(fresh):
    result = run(["keys", "create", "--tenant", "acme", "--name", "First", "--environment", "live"], fresh)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    created = json.loads(result.stdout)
    assert created["name"] == "First"
    assert _verifies(fresh, created["fullKey"])


@pytest.mark.slow  # a process per command, migrations included
@pytest.mark.parametrize("command", [["keys", "list", "--tenant", "acme"], ["audit", "--tenant", "acme"]])
def test_listing_first_on_a_fresh_instance(fresh, command):
    result = run(command, fresh)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert json.loads(result.stdout) == []


@pytest.mark.slow  # a process per command, migrations included
@pytest.mark.parametrize(
    ("command", "code", "output"),
    [
        (
            ["keys", "toggle", "--tenant", "acme", "key_aaaaaaaaaaaaaaaa"],
            1,
            "Error: No API key key_aaaaaaaaaaaaaaaa for tenant acme.",
        ),
        (
            ["keys", "regenerate", "--tenant", "acme", "key_aaaaaaaaaaaaaaaa"],
            1,
            "Error: No API key key_aaaaaaaaaaaaaaaa for tenant acme.",
        ),
        (
            ["keys", "delete", "--tenant", "acme", "key_aaaaaaaaaaaaaaaa"],
            1,
            "Error: No API key key_aaaaaaaaaaaaaaaa for tenant acme.",
        ),
        (["db", "upgrade"], 0, "Database is at head."),
        (["token", "--tenant", "acme"], 0, "eyJ"),
    ],
    ids=lambda value: " ".join(value[:2]) if isinstance(value, list) else None,
)
def test_other_commands_first_on_a_fresh_instance(fresh, command, code, output):
    result = run(command, fresh)
    assert result.returncode == code, result.stderr
    assert_no_traceback(result)
    said = result.stdout if code == 0 else result.stderr
    assert said.splitlines()[-1].startswith(output)


@pytest.mark.slow  # a process per command, migrations included
def test_keys_import_first_on_a_fresh_instance(fresh, tmp_path):
    path, full_key = _import_file(tmp_path)
    result = run(["keys", "import", str(path)], fresh)
    assert result.returncode == 0, result.stderr
    assert_no_traceback(result)
    assert result.stdout == "Imported 1 key; 0 keys already there.\n"
    again = run(["keys", "import", str(path)], fresh)
    assert again.stdout == "Imported 0 keys; 1 key already there.\n"
    assert _verifies(fresh, full_key)


@pytest.mark.slow  # a process per command, migrations included
def test_init_db_says_what_it_did_and_where(fresh):
    instance = Path(fresh["APIKEYS_INSTANCE_PATH"])
    first = run(["init-db"], fresh)
    assert first.returncode == 0, first.stderr
    assert_no_traceback(first)
    if "APIKEYS_DATABASE_URL" in fresh:
        where = fresh["APIKEYS_DATABASE_URL"]
    else:
        where = f"sqlite:///{instance / 'apikeys.sqlite3'}"
        assert (instance / "apikeys.sqlite3").is_file()
    assert first.stdout.startswith(f"Created the database at {where} (schema ")
    second = run(["init-db"], fresh)
    assert second.returncode == 0
    assert second.stdout.startswith(f"The database at {where} is up to date (schema ")


# --- 4. Bad configuration stops the start with one line naming the variable ----------------------------------------

SLOW = pytest.mark.slow  # a process each; the first case runs in every test run
BAD_SETTINGS = [
    ("APIKEYS_BCRYPT_ROUNDS", "abc"),
    pytest.param("APIKEYS_BCRYPT_ROUNDS", "3", marks=SLOW),
    pytest.param("APIKEYS_BCRYPT_ROUNDS", "40", marks=SLOW),
    pytest.param("APIKEYS_LOG_FORMAT", "xml", marks=SLOW),
    pytest.param("APIKEYS_DB_POOL_PRE_PING", "maybe", marks=SLOW),
    pytest.param("APIKEYS_CORS_ORIGINS", "*", marks=SLOW),
    pytest.param("APIKEYS_DATABASE_URL", "not a url", marks=SLOW),
    pytest.param("APIKEYS_DATABASE_URL", "postgresql+nosuchdriver://u:hunter2@127.0.0.1/x", marks=SLOW),
    # A dialect SQLAlchemy knows, with a driver that is not installed.
    pytest.param("APIKEYS_DATABASE_URL", "postgresql+psycopg2://u:hunter2@127.0.0.1/x", marks=SLOW),
]


@pytest.mark.parametrize("command", [["keys", "list", "--tenant", "acme"], ["serve"]], ids=["keys list", "serve"])
@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_bad_setting_is_one_line_naming_the_variable(tmp_path, command, name, value):
    instance = tmp_path / "instance"
    result = run(command, clean_env(instance, **{name: value}))
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"Error: {name}")
    assert "hunter2" not in result.stderr  # a URL's password is never repeated
    assert not instance.exists()  # nothing was created before the setting was checked


@pytest.mark.parametrize("command", [["keys", "list", "--tenant", "acme"], ["serve"]], ids=["keys list", "serve"])
def test_a_broken_instance_config_py_is_one_line(tmp_path, command):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o700)
    (instance / "config.py").write_text("APIKEYS_BCRYPT_ROUNDS = (\n")
    result = run(command, clean_env(instance))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: {instance / 'config.py'}, line 1 cannot be loaded: SyntaxError: '(' was never closed"
    ]


def test_an_instance_folder_that_cannot_be_made_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run(["keys", "list", "--tenant", "acme"], clean_env(blocker / "instance"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"Error: Not a directory: {blocker / 'instance'}"]


def test_a_boolean_setting_in_the_usual_spelling_is_accepted(tmp_path):
    result = run(
        ["keys", "list", "--tenant", "acme"], clean_env(tmp_path / "instance", APIKEYS_DB_POOL_PRE_PING="true")
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), (" yes ", True), ("on", True), ("1", True)]
    + [("false", False), ("OFF", False), ("0", False), ("no", False)],
)
def test_boolean_settings_accept_the_usual_spellings(value, expected):
    settings = flask.Config(".")
    settings["APIKEYS_DB_POOL_PRE_PING"] = value
    config.check(settings)
    assert settings["APIKEYS_DB_POOL_PRE_PING"] is expected


@pytest.mark.slow
@pytest.mark.parametrize(("name", "value"), [("APIKEYS_BCRYPT_ROUNDS", "abc"), ("APIKEYS_LOG_FORMAT", "xml")])
def test_gunicorn_itself_stops_on_a_bad_setting_in_one_line(tmp_path, name, value):
    """`gunicorn -c python:apikeys.server.gunicorn_conf` (no `apikeys serve` in front): its on_starting hook refuses."""
    env = clean_env(tmp_path / "instance", **{name: value}, PORT=str(free_port()))
    command = [sys.executable, "-m", "gunicorn", "-c", "python:apikeys.server.gunicorn_conf", "apikeys:create_app()"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert_no_traceback(result)
    # gunicorn's own "[...] [INFO] Starting gunicorn" line comes first; ours is one line.
    ours = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert len(ours) == 1, result.stderr
    assert ours[0].startswith(f"apikeys cannot start: {name}=")


# --- 3. serve honours HOST, PORT and WEB_CONCURRENCY ---------------------------------------------------------------


@pytest.fixture
def exec_calls(monkeypatch):
    """What `apikeys serve` would exec: (argv, environment), without replacing the test process."""
    calls = []

    class Exec(Exception):
        pass

    def fake_execve(path, argv, environ):
        calls.append((argv, environ))
        raise Exec

    monkeypatch.setattr(os, "execve", fake_execve)
    return calls


@pytest.mark.parametrize(
    ("environ", "args", "expected"),
    [
        ({}, [], ("127.0.0.1", "8000", None)),
        ({"HOST": "127.0.0.2", "PORT": "9123", "WEB_CONCURRENCY": "3"}, [], ("127.0.0.2", "9123", "3")),
        ({"HOST": "127.0.0.2", "PORT": "9123", "WEB_CONCURRENCY": "3"}, ["--port", "9999", "--workers", "2"], None),
    ],
)
def test_serve_takes_host_port_and_workers_from_the_environment_unless_options_say(
    monkeypatch, tmp_path, exec_calls, environ, args, expected
):
    for name in ("HOST", "PORT", "WEB_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APIKEYS_INSTANCE_PATH", str(tmp_path / "instance"))
    result = CliRunner().invoke(main, ["serve", *args], env=environ)
    assert len(exec_calls) == 1, result.output
    argv, passed = exec_calls[0]
    expected = expected or ("127.0.0.2", "9999", "2")
    assert argv[-5:] == [
        "-c",
        "python:apikeys.server.gunicorn_conf",
        "--bind",
        f"{expected[0]}:{expected[1]}",
        "apikeys:create_app()",
    ]
    assert (passed["HOST"], passed["PORT"], passed.get("WEB_CONCURRENCY")) == expected
    assert "Warning" not in result.output


def test_serve_warns_when_it_binds_beyond_this_machine(monkeypatch, tmp_path, exec_calls):
    monkeypatch.setenv("APIKEYS_INSTANCE_PATH", str(tmp_path / "instance"))
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])  # noqa: S104 (never bound: no exec)
    assert len(exec_calls) == 1
    assert "Warning: serving on 0.0.0.0 directly" in result.output
    assert "proxy" in result.output


@pytest.mark.parametrize(
    ("host", "bind"),
    [
        ("127.0.0.1", "127.0.0.1:8000"),
        ("localhost", "localhost:8000"),
        ("::1", "[::1]:8000"),
        ("[::1]", "[::1]:8000"),
        ("unix:/run/apikeys/apikeys.sock", "unix:/run/apikeys/apikeys.sock"),
    ],
)
def test_bind_address_for_gunicorn(host, bind):
    assert bind_address(host, 8000) == bind


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True)]
    + [
        ("unix:/run/apikeys.sock", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
    ],
)
def test_which_binds_are_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_serve_refuses_zero_workers(tmp_path):
    result = run(["serve", "--workers", "0"], clean_env(tmp_path / "instance"))
    assert result.returncode == 2
    assert_no_traceback(result)
    assert result.stderr.splitlines()[-1] == "Error: Invalid value for '--workers': 0 is not in the range x>=1."
    assert not (tmp_path / "instance").exists()


@pytest.mark.parametrize(
    ("args", "environ", "option"),
    [
        ([], {"WEB_CONCURRENCY": "0"}, "--workers"),
        ([], {"PORT": "http"}, "--port"),
        (["--port", "70000"], {}, "--port"),
        ([], {"PORT": "0"}, "--port"),
    ],
)
def test_serve_refuses_impossible_numbers(monkeypatch, tmp_path, exec_calls, args, environ, option):
    monkeypatch.setenv("APIKEYS_INSTANCE_PATH", str(tmp_path / "instance"))
    result = CliRunner().invoke(main, ["serve", *args], env=environ)
    assert result.exit_code == 2
    assert exec_calls == []
    assert result.output.splitlines()[-1].startswith(f"Error: Invalid value for '{option}'")


@pytest.mark.slow
def test_serve_binds_where_host_and_port_say(tmp_path):
    port = free_port()
    env = clean_env(tmp_path / "instance", HOST="127.0.0.2", PORT=str(port), WEB_CONCURRENCY="1")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [APIKEYS, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    try:
        wait_for(f"http://127.0.0.2:{port}/healthz", process=process)
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", port))  # HOST was honoured: nothing on the default address
        output = log.read_text()
        assert f"apikeys is serving on http://127.0.0.2:{port}" in output
        assert output.count("Booting worker") == 1  # WEB_CONCURRENCY=1
        assert "Warning" not in output
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("where", ["ipv6", "unix"])
def test_serve_binds_ipv6_loopback_and_a_unix_socket(tmp_path, where):
    import http.client

    socket_path = tmp_path / "apikeys.sock"
    port = free_port()
    host = "::1" if where == "ipv6" else f"unix:{socket_path}"
    env = clean_env(tmp_path / "instance", WEB_CONCURRENCY="1")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [APIKEYS, "serve", "--host", host, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if where == "ipv6":
                    conn = http.client.HTTPConnection("::1", port, timeout=5)
                else:
                    conn = http.client.HTTPConnection("localhost", timeout=5)
                    conn.sock = socket.socket(socket.AF_UNIX)
                    conn.sock.connect(str(socket_path))
                conn.request("GET", "/healthz")
                status = conn.getresponse().status
                conn.close()
                break
            except OSError:
                conn.close()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert status == 200
        assert "Warning" not in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


# --- 8. A CLI that fits its users ----------------------------------------------------------------------------------


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_every_option_of_every_command_has_help():
    ctx = click.Context(main)
    for path, command in _commands(main):
        assert command.help, path
        for param in command.get_params(ctx):
            if isinstance(param, click.Option):
                assert param.help, f"apikeys {' '.join(path)} {param.opts[0]} has no help"


def test_help_shows_only_this_programs_options(tmp_path):
    top = run(["--help"], clean_env(tmp_path / "instance"))
    assert top.returncode == 0
    for foreign in ("--app", "--debug", "--env-file", "FLASK_"):
        assert foreign not in top.stdout
    assert "--version" in top.stdout
    assert not (tmp_path / "instance").exists()


def test_help_cuts_no_description_in_80_columns():
    for path, command in [((), main), *_commands(main)]:
        if isinstance(command, click.Group):
            shown = CliRunner().invoke(main, [*path, "--help"], terminal_width=80).output
            listed = shown.partition("Commands:")[2]
            assert listed and "..." not in listed, f"apikeys {' '.join(path)} --help cuts a description:\n{listed}"


def test_version(tmp_path):
    result = run(["--version"], clean_env(tmp_path / "instance"))
    assert result.returncode == 0
    assert result.stdout == f"apikeys {importlib.metadata.version('apikeys')}\n"
    assert not (tmp_path / "instance").exists()


# --- 7. Messages that say what is wrong ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/dashboard/api-keys"),
        ("PATCH", "/dashboard/api-keys/{id}"),
        ("POST", "/dashboard/api-keys/{id}/regenerate"),
    ],
)
def test_json_without_its_content_type_is_a_415_saying_what_to_send(client, auth, make_key, content_type, method, path):
    key = make_key()
    headers = {**auth()} | ({"Content-Type": content_type} if content_type else {})
    body = json.dumps({"name": "curl -d", "environment": "live"})
    response = client.open(path.format(id=key["id"]), method=method, data=body, headers=headers)
    assert response.status_code == 415
    assert response.json["statusCode"] == 415
    assert response.json["message"] == "Send the body as JSON, with Content-Type: application/json."


def test_token_messages_name_the_check_and_never_the_token(app, client):
    config, now = app.config, int(time.time())
    secret = config["APIKEYS_JWT_SECRET"]
    cases = {
        "The bearer token has expired.": jwt.encode({"tenantId": "acme", "exp": now - 10}, secret, "HS256"),
        "The bearer token's signature does not match.": jwt.encode(
            {"tenantId": "acme", "exp": now + 60}, "another secret of enough length for HS256!", "HS256"
        ),
        "The bearer token has no exp claim.": jwt.encode({"tenantId": "acme"}, secret, "HS256"),
        "The bearer token has no tenantId claim naming the tenant.": jwt.encode({"exp": now + 60}, secret, "HS256"),
        "The bearer token's exp claim must be a number (seconds since 1970).": jwt.encode(
            {"tenantId": "acme", "exp": "tomorrow"}, secret, "HS256"
        ),
        "The bearer token's sub claim must be a string.": jwt.encode(
            {"tenantId": "acme", "exp": now + 60, "sub": 42}, secret, "HS256"
        ),
        "The bearer token is not a well-formed JWT.": "abc.def.ghi",
        "The bearer token's algorithm is not allowed.": jwt.encode({"tenantId": "acme", "exp": now + 60}, None, "none"),
    }
    for message, token in cases.items():
        response = client.get("/dashboard/api-keys", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.json["message"] == message
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="apikeys"'
        text = response.get_data(as_text=True)
        assert all(part not in text for part in token.split(".") if part)
        assert secret not in text


# --- 9. CORS, opt-in -----------------------------------------------------------------------------------------------

ADMIN = "https://admin.example.com"
PREFLIGHT = {
    "Origin": ADMIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def _cors_headers(response) -> dict[str, str]:
    return {name: value for name, value in response.headers if name.lower().startswith("access-control-")}


def test_cors_is_off_by_default(client, auth):
    assert _cors_headers(client.options("/dashboard/api-keys", headers=PREFLIGHT)) == {}
    response = client.get("/dashboard/api-keys", headers={**auth(), "Origin": ADMIN})
    assert response.status_code == 200
    assert _cors_headers(response) == {}


@pytest.fixture
def cors_client(config, tmp_path):
    config["APIKEYS_CORS_ORIGINS"] = f"{ADMIN}, https://other.example.com:8443"  # as the environment gives it
    app = create_app(config, instance_path=str(tmp_path / "cors"))
    yield app.test_client()
    extension.get_engine(app).dispose()


def test_cors_preflight_and_request_for_a_configured_origin(cors_client, token):
    preflight = cors_client.options("/dashboard/api-keys", headers=PREFLIGHT)
    assert preflight.status_code == 204
    allowed = _cors_headers(preflight)
    assert allowed["Access-Control-Allow-Origin"] == ADMIN
    assert "POST" in allowed["Access-Control-Allow-Methods"]
    requested = {name.strip().lower() for name in PREFLIGHT["Access-Control-Request-Headers"].split(",")}
    assert requested <= {name.strip().lower() for name in allowed["Access-Control-Allow-Headers"].split(",")}
    assert "Origin" in preflight.headers["Vary"]
    # The real request: the browser lets the page read the answer, refusals included.
    headers = {"Authorization": f"Bearer {token()}", "Origin": ADMIN}
    created = cors_client.post(
        "/dashboard/api-keys", json={"name": "from the browser", "environment": "live"}, headers=headers
    )
    assert created.status_code == 201
    assert created.headers["Access-Control-Allow-Origin"] == ADMIN
    refused = cors_client.get("/dashboard/api-keys", headers={"Origin": ADMIN})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == ADMIN
    assert "WWW-Authenticate" in refused.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "https://admin.example.com.evil.net", "http://admin.example.com", "null"]
)
def test_cors_gives_an_unknown_origin_nothing(cors_client, token, origin):
    preflight = cors_client.options("/dashboard/api-keys", headers={**PREFLIGHT, "Origin": origin})
    assert _cors_headers(preflight) == {}
    response = cors_client.get("/dashboard/api-keys", headers={"Authorization": f"Bearer {token()}", "Origin": origin})
    assert response.status_code == 200
    assert _cors_headers(response) == {}


def test_keys_create_names_a_bad_scope(runner):
    result = runner.invoke(
        args=["keys", "create", "--tenant", "acme", "--name", "x", "--environment", "live", "--scope", "bad scope"]
    )
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].startswith("Error: --scope #1: Must be 1 to 64 of")  # the option typed


@pytest.mark.parametrize("path", ["/verify", "/verify/orders/1"])
def test_cors_never_answers_for_verify(cors_client, config, path):
    """A proxy takes any 2xx from /verify as "allowed": a preflight-shaped OPTIONS without a key stays a 401."""
    response = cors_client.options(path, headers={**PREFLIGHT, "Access-Control-Request-Method": "GET"})
    assert response.status_code == 401
    assert _cors_headers(response) == {}


# --- 10. The helper ------------------------------------------------------------------------------------------------


def test_verify_api_key_outside_an_app_context_says_what_to_do():
    with pytest.raises(RuntimeError, match=r"application context.*app\.app_context\(\)"):
        verify_api_key("pk_live_x.sk_live_y")


@pytest.mark.parametrize("padding", [(" ", ""), ("", " "), ("  ", "\t"), ("\t", "  ")], ids=repr)
def test_surrounding_blanks_of_a_key_are_dropped_by_the_helper_like_by_verify(app, client, make_key, padding):
    key = make_key()
    presented = padding[0] + key["fullKey"] + padding[1]
    over_http = client.get("/verify", headers={"X-Api-Key": presented})
    assert over_http.status_code == 200
    with app.app_context():
        verified = verify_api_key(presented)
    assert verified.id == over_http.json["data"]["id"] == key["id"]


def test_import_names_the_bad_scope(app, runner, tmp_path):
    full_key = f"{keys.new_public_key('live')}.{keys.new_secret('live')}"
    entry = {"tenant": "acme", "name": "x", "environment": "live", "fullKey": full_key, "scopes": ["bad scope"]}
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([entry]))
    result = runner.invoke(args=["keys", "import", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: Entry 1: scopes[0]: Must be 1 to 64 of")
