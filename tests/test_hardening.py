"""Issue 10 as an attacker would try it: input before authentication, tenants, file modes, CLI tenants, small points."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa

from apikeys import tenants
from apikeys.storage import tables
from apikeys.verification import extension
from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import token_for

APIKEYS = str(Path(sys.executable).with_name("apikeys"))
NESTED = "[" * 5000
ECHOED = "attackerChosenFieldName"


def api_key_count(app) -> int:
    with extension.get_engine(app).connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(tables.api_keys)).scalar_one()


# --- 5. Input is read only after authentication ---------------------------------------------------------------

JSON = {"Content-Type": "application/json"}
UNAUTHENTICATED = [
    ("POST", "/dashboard/api-keys", {ECHOED: 1, "name": "", "environment": "prod"}, JSON),
    ("POST", "/dashboard/api-keys", NESTED, JSON),
    ("POST", "/dashboard/api-keys", "{" + '"a":{' * 5000, JSON),
    ("POST", "/dashboard/api-keys", "not json at all", JSON),
    ("POST", "/dashboard/api-keys", "x" * (2 * 1024 * 1024), JSON),  # over APIKEYS_MAX_BODY_BYTES
    ("POST", "/dashboard/api-keys", "name=x", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("GET", f"/dashboard/api-keys?page=0&limit=100000&{ECHOED}=1", None, {}),
    ("GET", "/dashboard/audit-log?page=-1", None, {}),
    ("PATCH", "/dashboard/api-keys/key_aaaaaaaaaaaaaaaa", {ECHOED: 1, "name": 5}, JSON),
    ("PATCH", "/dashboard/api-keys/key_aaaaaaaaaaaaaaaa", NESTED, JSON),
    ("POST", "/dashboard/api-keys/key_aaaaaaaaaaaaaaaa/regenerate", {"gracePeriodSeconds": -5, ECHOED: 1}, JSON),
    ("POST", "/dashboard/api-keys/key_aaaaaaaaaaaaaaaa/regenerate", NESTED, JSON),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), UNAUTHENTICATED)
def test_without_a_valid_token_no_input_is_read(app, client, method, path, body, headers):
    data = body if isinstance(body, str) or body is None else json.dumps(body)
    for authorization in (None, "Bearer not.a.jwt", "Basic YWRtaW46YWRtaW4=", "Bearer "):
        sent = {**headers, "Authorization": authorization} if authorization else headers
        response = client.open(path, method=method, data=data, headers=sent)
        assert response.status_code == 401, (authorization, response.get_data(as_text=True)[:300])
        assert response.json["code"] == "INVALID_TOKEN"
        assert "errors" not in response.json
        assert ECHOED not in response.get_data(as_text=True)
    assert api_key_count(app) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/dashboard/api-keys"),
        ("PATCH", "/dashboard/api-keys/{id}"),
        ("POST", "/dashboard/api-keys/{id}/regenerate"),
    ],
)
@pytest.mark.parametrize("body", [NESTED, '{"a":' * 5000, "[" * 60_000])
def test_deeply_nested_json_with_a_token_is_a_400_envelope(client, auth, make_key, method, path, body):
    key = make_key()
    response = client.open(
        path.format(id=key["id"]), method=method, data=body, headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json["statusCode"] == 400
    assert response.json["error"] == "Bad Request"
    assert response.json["errors"] == {"body": ["The body is nested too deeply."]}


# --- 4. Tenants: one grammar, identity headers plain ASCII that decode back to the tenant ----------------------

VALID_TENANTS = ["acme", "租户", "café", "cafÃ©", "100%", "100%25", "a b", "x" * 255, "🔑" * 255, "%C3%A9"]
INVALID_TENANTS = {
    "line separator": "acme\u2028evil",
    "right-to-left override": "\u202eacme",
    "leading space": " acme",
    "trailing space": "acme ",
    "256 characters": "x" * 256,
    "empty": "",
    "newline": "acme\nevil",
    "escape": "acme\x1b[31m",
    "zero-width space": "ac\u200bme",
    "lone surrogate": "acme\ud800",
}


def test_every_valid_tenant_verifies_with_an_ascii_header_that_decodes_back(client, auth, make_key):
    headers = {}
    for tenant in VALID_TENANTS:
        key = make_key(tenant=tenant)
        response = client.get("/verify", headers={"X-Api-Key": key["fullKey"]})
        assert response.status_code == 200, (tenant, response.json)
        assert response.json["data"]["tenantId"] == tenant
        header = response.headers["X-Tenant-Id"]
        assert header.isascii() and header.isprintable() and header.strip() == header, header
        assert urllib.parse.unquote(header, errors="strict") == tenant
        headers[tenant] = header
        listed = client.get("/dashboard/api-keys", headers=auth(tenant)).json["data"]["items"]
        assert [item["id"] for item in listed] == [key["id"]]
    # No two tenants share a header: an upstream cannot mistake one for another (café / cafÃ©, 100% / 100%25).
    assert len(set(headers.values())) == len(VALID_TENANTS)


def test_a_token_with_an_invalid_tenant_is_a_401_naming_the_rule(app, client, token):
    for what, tenant in INVALID_TENANTS.items():
        headers = {"Authorization": f"Bearer {token(tenant)}"}
        response = client.get("/dashboard/api-keys", headers=headers)
        assert response.status_code == 401, what
        assert response.json["message"] == f"The bearer token's tenantId claim is not a valid tenant: {tenants.RULE}."
        response = client.post("/dashboard/api-keys", json={"name": "x", "environment": "live"}, headers=headers)
        assert response.status_code == 401, what
    assert api_key_count(app) == 0


def test_a_tenant_claim_that_is_not_a_string_is_a_401(client, token):
    for tenant in (5, None, ["acme"], {"id": "acme"}, True):
        headers = {"Authorization": f"Bearer {token('acme', tenantId=tenant)}"}
        response = client.get("/dashboard/api-keys", headers=headers)
        assert response.status_code == 401, tenant
        assert "tenantId" in response.json["message"]


def test_an_import_with_an_invalid_tenant_writes_nothing(app, runner, tmp_path):
    full_key = runner.invoke(args=["keys", "generate", "--environment", "live"]).output.strip()
    path = tmp_path / "keys.json"
    for tenant in INVALID_TENANTS.values():
        good = {"tenant": "acme", "name": "x", "environment": "live", "fullKey": full_key}
        path.write_text(json.dumps([good, {**good, "tenant": tenant}]), encoding="utf-8")
        result = runner.invoke(args=["keys", "import", str(path)])
        assert result.exit_code == 1
        assert result.output == f"Error: Entry 2: tenant must be {tenants.RULE}.\n"
    assert api_key_count(app) == 0


# --- 7. The CLI refuses the tenants the API refuses -------------------------------------------------------------

CLI_TENANTS = {"empty": "", "newline": "acme\nevil", "escape": "acme\x1b[2J", "300 characters": "t" * 300}


def _error_lines(stderr: str) -> list[str]:
    # click's usage preamble ("Usage: ...", "Try '... --help'") may come first; the error itself is one line.
    return [line for line in stderr.splitlines() if line and not line.startswith(("Usage:", "Try "))]


TENANT_COMMANDS = [
    ["keys", "create", "--name", "x", "--environment", "live"],
    ["keys", "list"],
    ["keys", "toggle", "key_aaaaaaaaaaaaaaaa"],
    ["keys", "regenerate", "key_aaaaaaaaaaaaaaaa"],
    ["keys", "delete", "key_aaaaaaaaaaaaaaaa"],
    ["audit"],
    ["token"],
]


@pytest.mark.parametrize("tenant", CLI_TENANTS.values(), ids=CLI_TENANTS.keys())
def test_cli_refuses_a_bad_tenant_in_one_line_and_writes_nothing(app, runner, tenant):
    for command in TENANT_COMMANDS:
        result = runner.invoke(args=[*command, "--tenant", tenant])
        assert result.exit_code == 2, command
        assert _error_lines(result.output) == [f"Error: Invalid value for '--tenant': must be {tenants.RULE}."]
        assert "\x1b" not in result.output and "evil" not in result.output
    assert api_key_count(app) == 0


@pytest.mark.parametrize("sub", CLI_TENANTS.values(), ids=CLI_TENANTS.keys())
def test_cli_issues_no_token_whose_sub_the_api_refuses(runner, sub):
    result = runner.invoke(args=["token", "--tenant", "acme", "--sub", sub])
    assert result.exit_code == 2
    assert _error_lines(result.output) == [f"Error: Invalid value for '--sub': must be {tenants.RULE}."]
    assert "eyJ" not in result.output


def test_cli_json_output_cannot_rearrange_the_terminal(runner, make_key):
    name = "\u202eyek\u200b\u2028\U000e0001 tail"  # bidi override, zero-width space, line separator, tag
    make_key(name=name)
    result = runner.invoke(args=["keys", "list", "--tenant", "acme"])
    assert result.exit_code == 0
    assert all(char.isprintable() or char == "\n" for char in result.output)
    assert json.loads(result.output)[0]["name"] == name
    assert "\\u202e" in result.output


@pytest.mark.parametrize("tenant", [CLI_TENANTS["escape"], CLI_TENANTS["300 characters"]], ids=["escape", "300"])
def test_console_script_refuses_a_bad_tenant_before_touching_the_instance(tmp_path, tenant):
    instance = tmp_path / "instance"
    env = {name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")}
    env["APIKEYS_INSTANCE_PATH"] = str(instance)
    result = subprocess.run(
        [APIKEYS, "keys", "create", "--tenant", tenant, "--name", "x", "--environment", "live"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert _error_lines(result.stderr) == [f"Error: Invalid value for '--tenant': must be {tenants.RULE}."]
    assert not instance.exists()


# --- 8. Smaller points -----------------------------------------------------------------------------------------


def test_answers_that_carry_a_secret_are_never_stored(client, auth, make_key):
    created = client.post("/dashboard/api-keys", json={"name": "k", "environment": "live"}, headers=auth())
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    key_id = created.json["data"]["id"]
    regenerated = client.post(f"/dashboard/api-keys/{key_id}/regenerate", headers=auth())
    assert regenerated.status_code == 200
    assert "secretKey" in regenerated.json["data"]
    assert regenerated.headers["Cache-Control"] == "no-store"
    # A refusal on the same routes is not cached either (a shared cache must never replay a dashboard answer).
    assert client.post("/dashboard/api-keys", json={}).headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("path", ["/verify", "/verify/x", "/verify/a/b?c=d", "/verify/"])
def test_verify_answers_any_method(client, make_key, path):
    key = make_key()
    for method in ("PROPFIND", "MKCOL", "PURGE", "LOCK", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        valid = client.open(path, method=method, headers={"X-Api-Key": key["fullKey"]})
        assert valid.status_code == 200, method
        if method != "HEAD":
            assert valid.json["data"]["id"] == key["id"]
        assert valid.headers["X-Api-Key-Id"] == key["id"]
        assert client.open(path, method=method).status_code == 401, method
        assert client.open(path, method=method, headers={"X-Api-Key": key["fullKey"] + "x"}).status_code == 401


def _signed(config, **claims) -> dict[str, str]:
    token = jwt.encode(claims, config["APIKEYS_JWT_SECRET"], algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def test_token_lifetime_and_clock_skew(app, client):
    config, now = app.config, int(time.time())
    ten_years = _signed(config, tenantId="acme", iat=now, exp=now + 10 * 365 * 24 * 3600)
    response = client.get("/dashboard/api-keys", headers=ten_years)
    assert response.status_code == 401
    assert "lives too long" in response.json["message"]
    # A clock a few seconds ahead of ours is normal: iat and nbf 5 s in the future are forgiven.
    assert (
        client.get("/dashboard/api-keys", headers=_signed(config, tenantId="acme", iat=now + 5, exp=now + 60))
    ).status_code == 200
    assert (
        client.get("/dashboard/api-keys", headers=_signed(config, tenantId="acme", nbf=now + 5, exp=now + 60))
    ).status_code == 200
    # But not far beyond the leeway, and an expired token stays expired: no leeway for exp.
    ahead = client.get("/dashboard/api-keys", headers=_signed(config, tenantId="acme", iat=now + 120, exp=now + 600))
    assert ahead.status_code == 401
    expired = client.get("/dashboard/api-keys", headers=_signed(config, tenantId="acme", iat=now - 60, exp=now - 1))
    assert expired.status_code == 401
    assert expired.json["message"] == "The bearer token has expired."


def test_max_lifetime_is_a_setting(config, tmp_path):
    from apikeys import create_app

    config["APIKEYS_JWT_MAX_LIFETIME"] = 0  # no limit
    app = create_app(config, instance_path=str(tmp_path / "unlimited"))
    try:
        now = int(time.time())
        headers = _signed(app.config, tenantId="acme", iat=now, exp=now + 10 * 365 * 24 * 3600)
        assert app.test_client().get("/dashboard/api-keys", headers=headers).status_code == 200
    finally:
        extension.get_engine(app).dispose()


def test_an_existing_database_file_others_can_read_is_reported(config, tmp_path, caplog):
    from apikeys import create_app

    path = tmp_path / "old.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    config["APIKEYS_DATABASE_URL"] = f"sqlite:///{path}"
    app = create_app(config, instance_path=str(tmp_path / "instance"))
    extension.get_engine(app).dispose()
    assert f"{path} can be read by other users; make it mode 0600" in caplog.text


# --- 6. Private files, for a real gunicorn start under umask 022 --------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_gunicorn_under_umask_022_keeps_every_file_private(tmp_path):
    from tests import logscan

    instance = tmp_path / "deep" / "instance"
    env = {name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")}
    # Everything by default: a SQLite file in the instance folder, the JWT secret and verifier key generated there.
    env |= {"APIKEYS_INSTANCE_PATH": str(instance), "APIKEYS_BCRYPT_ROUNDS": "4"}
    env["HOME"] = str(tmp_path)  # a control socket of its own
    server = Gunicorn(tmp_path, {}, workers=2)
    server.env = env
    previous = os.umask(0o022)
    try:
        server.start()
    finally:
        os.umask(previous)
    try:
        jwt_secret = (instance / "jwt-secret").read_text().strip()
        logscan.signing_secrets.add(jwt_secret)
        token = token_for(jwt_secret, "租户")
        status, created = call(
            server.url, "POST", "/dashboard/api-keys", token=token, body={"name": "k", "environment": "live"}
        )
        assert status == 201
        status, verified = call(server.url, "PROPFIND", "/verify/any/path", api_key=created["data"]["fullKey"])
        assert status == 200
        assert verified["data"]["tenantId"] == "租户"
        files = {path.name: _mode(path) for path in instance.iterdir()}
        assert _mode(instance) == 0o700
        for name in ("apikeys.sqlite3", "apikeys.sqlite3-wal", "apikeys.sqlite3-shm", "jwt-secret", "verifier-key"):
            assert files.get(name) == 0o600, (name, {n: oct(m) for n, m in files.items()})
        assert all(mode & 0o077 == 0 for mode in files.values()), {n: oct(m) for n, m in files.items()}
    finally:
        server.stop()
    assert _mode(instance / "apikeys.sqlite3") == 0o600


@pytest.mark.slow
def test_over_a_real_socket_identity_headers_are_ascii_and_input_waits_for_authentication(tmp_path):
    """Over a real socket: X-Tenant-Id's bytes are ASCII and decode back to each tenant; no token, no body read."""
    import http.client

    instance = tmp_path / "instance"
    jwt_secret = secrets.token_urlsafe(64)
    env = {name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")}
    env |= {"APIKEYS_INSTANCE_PATH": str(instance), "APIKEYS_JWT_SECRET": jwt_secret, "APIKEYS_BCRYPT_ROUNDS": "4"}
    env["HOME"] = str(tmp_path)
    server = Gunicorn(tmp_path, {}, workers=1)
    server.env = env
    with server:
        seen = set()
        for tenant in ("租户", "café", "cafÃ©", "100%"):
            status, created = call(
                server.url,
                "POST",
                "/dashboard/api-keys",
                token=token_for(jwt_secret, tenant),
                body={"name": "k", "environment": "live"},
            )
            assert status == 201
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                conn.request("GET", "/verify", headers={"X-Api-Key": created["data"]["fullKey"]})
                response = conn.getresponse()
                response.read()
                # http.client decodes header bytes as Latin-1: anything outside ASCII would show here.
                raw = response.getheader("X-Tenant-Id")
            finally:
                conn.close()
            assert response.status == 200
            assert raw.isascii()
            assert urllib.parse.unquote(raw) == tenant
            seen.add(raw)
        assert len(seen) == 4
        # Input before authentication, over the wire: an unread 2 MB body, and deep nesting with a token.
        token = token_for(jwt_secret, "acme")
        for body, headers, expected in [
            (b"x" * (2 * 1024 * 1024), {}, 401),
            (NESTED.encode(), {}, 401),
            (NESTED.encode(), {"Authorization": f"Bearer {token}"}, 400),
        ]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            try:
                conn.request(
                    "POST", "/dashboard/api-keys", body=body, headers={"Content-Type": "application/json", **headers}
                )
                response = conn.getresponse()
                answer = json.loads(response.read())
            finally:
                conn.close()
            assert (response.status, answer["statusCode"]) == (expected, expected)
    assert "Traceback" not in server.logs()
    assert "RecursionError" not in server.logs()
