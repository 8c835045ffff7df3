"""The real thing: the service under gunicorn, over HTTP, and what it writes to its logs."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import time
import urllib.parse

import pytest
import sqlalchemy as sa

from apikeys import keys
from apikeys.storage import migrate
from apikeys.storage import tables
from tests.logscan import RAW_CONTROL
from tests.servers import Gunicorn
from tests.servers import service_env
from tests.servers import token_for

pytestmark = pytest.mark.slow


class Http:
    """A tiny HTTP client that keeps nothing secret in its own output."""

    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict, dict]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
            data = json.loads(raw) if raw else {}
            return response.status, dict(response.getheaders()), data
        finally:
            conn.close()


@pytest.fixture(params=["text", "json"])
def server(request, tmp_path, database_url):
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(database_url, jwt_secret, tmp_path / "instance", APIKEYS_LOG_FORMAT=request.param)
    with Gunicorn(tmp_path, env, workers=2) as running:
        running.jwt_secret = jwt_secret
        running.log_format = request.param
        yield running


def test_whole_flow_over_http_leaves_no_secret_in_any_log(server, database_url):
    client = Http(server.url)
    token = token_for(server.jwt_secret, "acme")
    bearer = {"Authorization": f"Bearer {token}"}
    issued = [token, server.jwt_secret]

    status, _, created = client.request(
        "POST", "/dashboard/api-keys", {"name": "Gunicorn", "environment": "live"}, bearer
    )
    assert status == 201
    key = created["data"]
    issued += [key["secretKey"], key["fullKey"]]

    status, _, listed = client.request("GET", "/dashboard/api-keys?page=1&limit=20", headers=bearer)
    assert status == 200 and listed["data"]["total"] == 1

    status, headers, verified = client.request("GET", "/verify/some/path?x=1", headers={"X-Api-Key": key["fullKey"]})
    assert status == 200
    assert headers["X-Tenant-Id"] == "acme"
    assert verified["data"]["id"] == key["id"]

    # An X-Api-Key of 8 KiB reaches the app and gets a proper 401, not a server error.
    status, headers, refused = client.request("GET", "/verify", headers={"X-Api-Key": "k" * 8192})
    assert status == 401
    assert refused["code"] == "INVALID_API_KEY"
    assert headers["WWW-Authenticate"] == 'ApiKey realm="apikeys"'

    # A token in the query string (a client's mistake) must not be logged either.
    status, _, _ = client.request("GET", f"/dashboard/api-keys?access_token={token}", headers=bearer)
    assert status == 200

    status, _, _ = client.request("POST", f"/dashboard/api-keys/{key['id']}/toggle", headers=bearer)
    assert status == 200
    assert client.request("GET", "/verify", headers={"X-Api-Key": key["fullKey"]})[0] == 403

    status, _, regenerated = client.request("POST", f"/dashboard/api-keys/{key['id']}/regenerate", headers=bearer)
    assert status == 200
    issued += [regenerated["data"]["secretKey"], regenerated["data"]["fullKey"]]

    wrong = f"{key['publicKey']}.{key['secretKey']}"  # the old secret
    assert client.request("GET", "/verify", headers={"X-Api-Key": wrong})[0] == 401

    status, _, deleted = client.request("DELETE", f"/dashboard/api-keys/{key['id']}", headers=bearer)
    assert status == 200 and deleted["message"] == "API key deleted successfully."

    server.stop()
    logs = server.logs()
    assert "/dashboard/api-keys" in logs  # the scan below read real request logs
    assert "tenant=acme" in logs or '"tenant": "acme"' in logs
    leaked = [number for number, secret in enumerate(issued) if secret in logs]
    assert leaked == []  # indexes only: the values themselves must not reach the test output either
    assert "eyJ" not in logs
    assert "sk_live_" not in logs
    if server.log_format == "json":
        request_lines = [json.loads(line) for line in logs.splitlines() if '"logger": "apikeys.requests"' in line]
        assert {"method", "path", "status", "duration_ms", "tenant", "key_id"} <= set(request_lines[0])
        verifications = [line for line in request_lines if line["path"].startswith("/verify")]
        # Refusals are logged; a successful verification is not, unless APIKEYS_LOG_VERIFIED asks for it.
        assert sorted(line["status"] for line in verifications) == [401, 401, 403]


def test_gunicorn_app_from_the_repo_root_creates_the_database(tmp_path):
    """`gunicorn app:app` with the project's gunicorn.conf.py needs no init-db first."""
    env = {
        "APIKEYS_JWT_SECRET": secrets.token_urlsafe(64),
        "APIKEYS_INSTANCE_PATH": str(tmp_path / "instance"),
    }
    with Gunicorn(tmp_path, env, workers=1) as running:
        status, _, body = Http(running.url).request("GET", "/healthz")
        assert status == 200 and body["data"]["status"] == "ok"
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'instance' / 'apikeys.sqlite3'}")
    try:
        assert "api_keys" in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert tables.api_keys.name == "api_keys"


# --- What reaches gunicorn's logs from hostile requests ---------------------------------------------------

ACCESS_LINE = re.compile(r'127\.0\.0\.1 - - \[[^\]]+\] "')
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ apikeys[.\w]*: ")
# A whole log line an attacker would like to see in a log, after a line break of their choosing.
FORGED = "2026-01-01 00:00:00,000 INFO apikeys.requests: GET /FORGED 200 1.0ms tenant=acme key=-"


def raw_request(url: str, data: bytes) -> bytes:
    """Send these bytes as they are, and return the status line of the answer."""
    parsed = urllib.parse.urlsplit(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def log_lines(path) -> list[str]:
    """A log file's lines, split at "\\n" only, so that any other line break shows up inside a line."""
    with open(path, encoding="utf-8", errors="replace", newline="") as file:
        return file.read().split("\n")[:-1]


@pytest.fixture(scope="module", params=["text", "json"])
def hostile(request, tmp_path_factory):
    """apikeys under gunicorn (one worker) for the hostile requests, with the log format of the param."""
    tmp_path = tmp_path_factory.mktemp(f"hostile-{request.param}")
    url = f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(url, jwt_secret, tmp_path / "instance", APIKEYS_LOG_FORMAT=request.param)
    with Gunicorn(tmp_path, env, workers=1) as running:
        running.jwt_secret = jwt_secret
        running.log_format = request.param
        yield running


def full_key() -> bytes:
    """A full key of the right shape (what the log scan looks for); it needs no row to be a secret."""
    return f"{keys.new_public_key('live')}.{keys.new_secret('live')}".encode()


# What gunicorn refuses before the app sees anything, each carrying a key or a token, and the error class that
# names it in the log instead.
REFUSED = {
    "header line without a colon": (
        lambda k, t: b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Api-Key " + k + b"\r\n\r\n",
        "InvalidHeader",
    ),
    "raw 0xFF byte in the query": (
        lambda k, t: b"GET /verify?access_token=" + t + b"\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        "InvalidRequestLine",
    ),
    "NUL byte in the query": (
        lambda k, t: b"GET /verify?access_token=" + t + b"\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        "InvalidRequestLine",
    ),
    "invalid method": (
        lambda k, t: b"GET?access_token=" + t + b" /verify HTTP/1.1\r\nHost: x\r\n\r\n",
        "InvalidRequestMethod",
    ),
    "oversized request line": (
        lambda k, t: b"GET /verify?access_token=" + t + b"&pad=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "LimitRequestLine",
    ),
    "invalid HTTP version": (
        lambda k, t: b"GET /verify?access_token=" + t + b" HTTP/9.9\r\nHost: x\r\n\r\n",
        "InvalidHTTPVersion",
    ),
    "control character in a header value": (
        lambda k, t: b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Api-Key: " + k + b"\x7f\r\n\r\n",
        "InvalidHeader",
    ),
    "control character in a header name": (
        lambda k, t: b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Api-Key\x01: " + k + b"\r\n\r\n",
        "InvalidHeaderName",
    ),
    "obsolete line folding": (
        lambda k, t: b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Api-Key: a\r\n " + k + b"\r\n\r\n",
        "ObsoleteFolding",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_refused_request_is_logged_without_what_it_carried(hostile, case):
    build, error_class = REFUSED[case]
    key, token = full_key(), token_for(hostile.jwt_secret, "acme").encode()
    before = len(log_lines(hostile.error_log))

    status = raw_request(hostile.url, build(key, token))

    assert status.split(b" ", 2)[1] in (b"400", b"414")
    logs = hostile.logs()
    carried = {"full key": key.decode(), "secret": key.split(b".")[1].decode(), "token": token.decode(), "JWT": "eyJ"}
    assert [name for name, value in carried.items() if value in logs] == []  # names only: never print a secret
    # gunicorn wrote its warning before it answered; it names the error and the address, nothing else.
    added = log_lines(hostile.error_log)[before:]
    assert (
        [line for line in added if "Invalid request" in line]
        == [
            line
            for line in added
            if line.endswith(f"Invalid request from ip=127.0.0.1: {error_class} (request not logged)")
        ]
        != []
    )


# Well-formed requests that try to write lines of their own through what gunicorn and the app log.
FORGING_PATHS = [
    "/verify/%0A" + urllib.parse.quote(FORGED),
    "/verify/%0D" + urllib.parse.quote(FORGED),
    "/dashboard/api-keys/x%0A" + urllib.parse.quote(FORGED),
    "/verify/%1B[31mFORGED%1B[0m",
    "/verify/FORGED%E2%80%A8" + urllib.parse.quote(FORGED),
    "/verify/FORGED%E2%80%AEdesrever",
    "/verify/FORGED%C2%85" + urllib.parse.quote(FORGED),
]


def test_no_request_writes_a_line_of_its_own(hostile):
    for path in FORGING_PATHS:
        assert raw_request(hostile.url, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()).startswith(b"HTTP/1.1 ")
    # A header value gunicorn accepts, with U+0085 (NEL, a line break to Python) in UTF-8.
    user_agent = b"FORGED\xc2\x85" + FORGED.encode()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: " + user_agent + b"\r\n\r\n"
    assert raw_request(hostile.url, request).startswith(b"HTTP/1.1 200 ")
    tenant = "FORGED\u2028" + FORGED + "\u202eemca"
    token = token_for(hostile.jwt_secret, tenant)
    request = f"GET /dashboard/api-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    tenant_accepted = raw_request(hostile.url, request).startswith(b"HTTP/1.1 200 ")
    hostile.stop()  # every line written

    access = log_lines(hostile.access_log)
    app = [line for line in log_lines(hostile.stdout_log) if "FORGED" in line]
    # One line per request, each whole: no forged line, no line break of any kind inside one.
    assert len([line for line in access if "FORGED" in line]) == len(FORGING_PATHS) + 1
    assert len(app) == len(FORGING_PATHS) + tenant_accepted
    for line in access:
        assert RAW_CONTROL.search(line) is None
        assert ACCESS_LINE.match(line), "a line gunicorn did not write as a whole"
    for line in app:
        assert RAW_CONTROL.search(line) is None
        assert json.loads(line) if hostile.log_format == "json" else TEXT_LINE.match(line)
    # The escapes are there instead. gunicorn decodes the path as latin-1 (PEP 3333), so U+2028 reaches its
    # access log as the bytes "\xe2\x80\xa8", of which "\x80" is a C1 control; the app decodes UTF-8.
    for escaped in ("\\x0a", "\\x0d", "\\x1b[31m", "\\x80", "\\x85"):
        assert escaped in "\n".join(access)
    if hostile.log_format == "text":
        expected = ["\\x0a", "\\x0d", "\\x1b[31m", "\\u2028", "\\u202e", "\\x85"]
        if tenant_accepted:
            expected.append("tenant=FORGED\\u2028")
        for escaped in expected:
            assert escaped in "\n".join(app)


def crashing_app(environ, start_response):
    """A WSGI application that fails outside any framework, so gunicorn itself logs the request it was serving."""
    raise RuntimeError("the application failed")


def test_an_application_error_is_logged_without_the_query_string(tmp_path):
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(f"sqlite:///{tmp_path / 'apikeys.sqlite3'}", jwt_secret, tmp_path / "instance")
    token = token_for(jwt_secret, "acme")
    with Gunicorn(tmp_path, env, workers=1, app="tests.test_gunicorn:crashing_app") as running:
        status = raw_request(running.url, f"GET /orders%0A42?access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status.startswith(b"HTTP/1.1 500 ")
    logs = running.logs()
    assert [name for name, value in {"token": token, "query": "access_token"}.items() if value in logs] == []
    assert "Error handling request GET /orders%0A42\n" in logs  # the raw path, as the client sent it
    assert "RuntimeError: the application failed" in logs  # the traceback is still there


@pytest.mark.parametrize("asked", [False, True])
def test_control_socket_only_where_the_operator_asks(tmp_path, asked):
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir()
    env = service_env(f"sqlite:///{tmp_path / 'apikeys.sqlite3'}", secrets.token_urlsafe(64), tmp_path / "instance")
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    if asked:
        env["GUNICORN_CONTROL_SOCKET"] = str(tmp_path / "apikeys.ctl")
    defaults = [runtime / "gunicorn.ctl", home / ".gunicorn" / "gunicorn.ctl"]
    with Gunicorn(tmp_path, env, workers=1) as running:
        deadline = time.monotonic() + 3  # the master opens its socket in a thread after it is ready
        while time.monotonic() < deadline and not (tmp_path / "apikeys.ctl").exists():
            time.sleep(0.05)
        assert [p for p in defaults if p.exists()] == []  # one per user, shared with every other gunicorn: never
        assert (tmp_path / "apikeys.ctl").is_socket() is asked
    assert ("Control socket listening" in running.logs()) is asked
