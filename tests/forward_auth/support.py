"""What the forward-auth tests share: HTTP without secrets in the output, the running apikeys and the keys made
through it, the checks of what an application received, and a real nginx with every path in a test folder."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.parse
import uuid
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from apikeys import config as config_module
from apikeys import keys
from apikeys.storage import tables
from apikeys.tokens import issue_token
from tests.servers import ROOT
from tests.servers import wait_for

if TYPE_CHECKING:  # the application module imports this one
    from tests.forward_auth.upstreams import Application

EXAMPLES = ROOT / "examples"
NGINX_EXAMPLE = EXAMPLES / "nginx" / "apikeys.conf"
# What runs apikeys.conf (or production.conf) as a whole nginx: the tests use it as shipped.
NGINX_WRAPPER = EXAMPLES / "nginx" / "nginx.conf"
TRAEFIK_EXAMPLE = EXAMPLES / "traefik" / "dynamic.yml"
TRAEFIK_STATIC_EXAMPLE = EXAMPLES / "traefik" / "traefik.yml"  # the entry point dynamic.yml's routers use
ENVOY_EXAMPLE = EXAMPLES / "envoy" / "envoy.yaml"

IDENTITY_HEADERS = ("X-Tenant-Id", "X-Api-Key-Id", "X-Api-Key-Environment", "X-Api-Key-Scopes")
# The headers only a proxy may send /verify: the scopes a route requires, and (a later feature) what a request costs.
PROXY_HEADERS = ("X-Api-Key-Required-Scopes", "X-Api-Key-Cost")
# What /verify says the key has left: response headers; nginx and Envoy also remove a client's from the request.
LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-Api-Key-Quota-Remaining")
# What a forging client sends for each: values no real key has, so any of them arriving is plain to see.
FORGED_VALUES = {
    "X-Tenant-Id": "globex",
    "X-Api-Key-Id": "key_forged00000000",
    "X-Api-Key-Environment": "test",
    "X-Api-Key-Scopes": "admin:* *",
    "X-Api-Key-Required-Scopes": "forged:scope",
    "X-Api-Key-Cost": "0",
}
WWW_AUTHENTICATE = 'ApiKey realm="apikeys"'
# What the Traefik middleware's address and Envoy's path_prefix point at; the example tests check the files agree.
TRAEFIK_VERIFY_PATH = "/verify"
ENVOY_PATH_PREFIX = "/verify"
SECRET_PATTERN = re.compile(rb"sk_(?:live|test)_[0-9A-Za-z]*")
# Every request through a proxy carries this header, so the test can find what the application received.
TAG = "X-Test-Request"
# The characters besides `_` that a header name may hold (RFC 9110 tokens) and that PHP, like CGI-style servers,
# reads as `-`: a client's x.api.key.scopes would reach such an application as X-Api-Key-Scopes.
LOOKALIKE_JOINTS = ".~+!|%*'^`#$&"


def required(variable: str) -> bool:
    """Whether a missing program fails the run (``variable=1``, or in CI) instead of skipping its tests."""
    return os.environ.get(variable) == "1" or os.environ.get("CI") == "true"


def find_program(name: str) -> str | None:
    """The path of an installed program, looking where apt and pip put them too."""
    # /usr/sbin is not on every user's PATH; a pip-installed binary sits beside the venv's python.
    path = os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", str(Path(sys.executable).parent)]
    )
    return shutil.which(name, path=path)


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


@dataclass(frozen=True)
class Key:
    """A key made through the API; the secret stays out of the repr."""

    id: str
    tenant: str
    environment: str
    public_key: str
    full_key: str = field(repr=False)
    scopes: tuple[str, ...] = ()

    def with_wrong_secret(self) -> str:
        """A well-formed key for the same public id with another secret (checksum and all)."""
        return f"{self.public_key}.{keys.new_secret(self.environment)}"


class Service:
    """The running apikeys, and the dashboard calls the tests need."""

    def __init__(self, url: str, jwt_secret: str, database_url: str = ""):
        self.url = url
        self.database_url = database_url
        self._jwt_config = {**config_module.DEFAULTS, "APIKEYS_JWT_SECRET": jwt_secret}

    def bearer(self, tenant: str) -> dict[str, str]:
        """An Authorization header with a dashboard token for ``tenant``."""
        return {"Authorization": f"Bearer {issue_token(self._jwt_config, tenant, 600)}"}

    def create_key(self, tenant: str = "acme", environment: str = "live", scopes=()) -> Key:
        body = json.dumps({"name": "forward auth", "environment": environment, "scopes": list(scopes)}).encode()
        headers = {**self.bearer(tenant), "Content-Type": "application/json"}
        answer = send(self.url, "POST", "/dashboard/api-keys", headers, body)
        if answer.status != 201:
            pytest.fail(f"creating a key answered {answer.status}")
        data = answer.json()["data"]
        return Key(data["id"], tenant, data["environment"], data["publicKey"], data["fullKey"], tuple(data["scopes"]))

    def presented_key(self, key: Key, presented: str) -> str | None:
        """The key as a refusal test presents it: "missing", "wrong secret", "disabled" or "deleted"."""
        if presented == "disabled":
            self.toggle(key)
        if presented == "deleted":
            self.delete(key)
        if presented == "missing":
            return None
        return key.with_wrong_secret() if presented == "wrong secret" else key.full_key

    def forget_digest(self, key: Key) -> None:
        """Make the key's row look written before digests: its next checks take bcrypt, with the try limit."""
        engine = sa.create_engine(self.database_url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.update(tables.api_keys).where(tables.api_keys.c.id == key.id).values(secret_digest=None)
                )
        finally:
            engine.dispose()

    def toggle(self, key: Key) -> bool:
        answer = send(self.url, "POST", f"/dashboard/api-keys/{key.id}/toggle", self.bearer(key.tenant))
        assert answer.status == 200
        return answer.json()["data"]["active"]

    def delete(self, key: Key) -> None:
        answer = send(self.url, "DELETE", f"/dashboard/api-keys/{key.id}", self.bearer(key.tenant))
        assert answer.status == 200


def normalized(name: str) -> str:
    """A header name as PHP and CGI-style servers read it: X_Tenant_Id, x.tenant.id and X~Tenant|Id are X-Tenant-Id."""
    return re.sub(r"[^0-9a-z]", "-", name.lower())


def header_values(received: dict, name: str) -> list[str]:
    """Every value the application got for ``name`` under any spelling that such a server reads as ``name``."""
    wanted = normalized(name)
    return [v for n, v in received["headers"] if normalized(n) == wanted]


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


def underscore_spellings(name: str) -> list[str]:
    """The spellings of ``name`` with some or all dashes as underscores: X_Tenant-Id, X-Tenant_Id, X_Tenant_Id."""
    parts = name.split("-")
    spellings = []
    for joints in itertools.product("-_", repeat=len(parts) - 1):
        if "_" in joints:
            spellings.append(parts[0] + "".join(joint + part for joint, part in zip(joints, parts[1:])))
    return spellings


def lookalike_spellings(name: str) -> list[str]:
    """``name`` with its dashes replaced by other characters a header name may hold: X.Tenant.Id, x~tenant~id, ..."""
    # Each of the six gets four of the characters, and the six together all of them: all of them for each would
    # take a request past Envoy's default limit of 100 headers. Half in lower case, as with the dashed names.
    start = 4 * list(FORGED_VALUES).index(name)
    joints = [LOOKALIKE_JOINTS[(start + i) % len(LOOKALIKE_JOINTS)] for i in range(4)]
    return [(name if i % 2 else name.lower()).replace("-", joint) for i, joint in enumerate(joints)]


def forged_headers(names=tuple(FORGED_VALUES)) -> list[tuple[str, str]]:
    """These headers (all six by default) with forged values, spelled as is, in lower case, with any of their
    dashes as underscores, which CGI, uWSGI and Rack servers read as the dashed name, and with their dashes as
    other characters, which PHP and other CGI-style servers read as dashes too."""
    return [
        (spelling, FORGED_VALUES[name])
        for name in names
        for spelling in (name, name.lower(), *underscore_spellings(name), *lookalike_spellings(name))
    ]


def assert_identity(received: dict, key: Key) -> None:
    """The application got the key's identity, once each, and never the key nor a header meant for /verify."""
    assert header_values(received, "X-Tenant-Id") == [key.tenant]
    assert header_values(received, "X-Api-Key-Id") == [key.id]
    assert header_values(received, "X-Api-Key-Environment") == [key.environment]
    # A key with scopes: exactly its scopes. Without: the header removed (or empty), never a client's.
    expected = [[" ".join(key.scopes)]] if key.scopes else [[], [""]]
    assert header_values(received, "X-Api-Key-Scopes") in expected
    for name in PROXY_HEADERS:
        assert header_values(received, name) == []
    assert "x-api-key" not in [normalized(n) for n, _ in received["headers"]]


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
        # The shipped wrapper as it is, beside the site it includes; every path it names is under the prefix, d.
        (d / "apikeys.conf").write_text(self.site)
        # Fewer connections than shipped: test_production_limits.py sends more attackers than this.
        (d / "nginx.conf").write_text(render(NGINX_WRAPPER, {"worker_connections 512;": "worker_connections 128;"}))
        command = [self.program, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", "stderr"]
        if os.geteuid() == 0:
            # As root, nginx's workers would run as nobody and could not use these paths.
            command += ["-g", "user root;"]
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
        return "".join(p.read_text(errors="replace") for p in (self.directory / "stderr.log",) if p.exists())


def render(example: Path, replacements: dict[str, str], *, count: int = 1) -> str:
    """A shipped example with its placeholders replaced; each must appear ``count`` times, so none is missed."""
    return render_text(example.read_text(), example.name, replacements, count=count)


def render_text(text: str, name: str, replacements: dict[str, str], *, count: int = 1) -> str:
    """``text`` with its placeholders replaced; each must appear ``count`` times."""
    for placeholder, real in replacements.items():
        assert text.count(placeholder) == count, f"{name} must hold {placeholder!r} {count} time(s)"
        text = text.replace(placeholder, real)
    return text
