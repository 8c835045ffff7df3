"""Input no valid request holds: non-standard or huge numbers, deep nesting, far-off times, odd token claims.

Each is refused with a 4xx in the envelope and leaves nothing behind, on both databases. Last,
/metrics' media type, read by a strict parser.
"""

from __future__ import annotations

import email.message
import http.client
import json
import secrets
import time
import urllib.parse

import jwt
import pytest
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST

from apikeys import keys
from apikeys.storage import tables
from apikeys.verification import extension
from tests.servers import Gunicorn
from tests.servers import service_env
from tests.servers import token_for

# The messages, spelled out: the tests pin what a client reads.
DEPTH_RULE = "Must be nested at most 32 levels deep, counting meta itself."
NOT_FINITE = "Must hold only finite numbers: NaN and Infinity are not JSON, and 1e400 is beyond a double."
YEAR_RULE = "Must lie within the years 1 to 9999 in UTC."
# Python's json reads all of these; none is standard JSON, and 1e400 becomes infinity.
NON_STANDARD = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "[1, NaN]", '{"deeper": Infinity}']
# Far-off times that are valid ISO-8601 but outside datetime's range once read as UTC.
OUT_OF_RANGE_TIMES = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01"]


def strict_json(text: str):
    """Parse ``text`` as standard JSON only: NaN, Infinity and -Infinity are errors."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def nested(depth: int) -> str:
    """Return a meta object as JSON text, ``depth`` levels deep counting the object itself."""
    return '{"a": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def everything(engine: sa.Engine) -> tuple[list[dict], list[dict]]:
    """Return every key row and every audit entry the database holds."""
    with engine.connect() as conn:
        key_rows = [
            dict(row) for row in conn.execute(sa.select(tables.api_keys).order_by(tables.api_keys.c.id)).mappings()
        ]
        entries = [
            dict(row) for row in conn.execute(sa.select(tables.audit_log).order_by(tables.audit_log.c.id)).mappings()
        ]
    return key_rows, entries


@pytest.fixture
def stored(app):
    """Return what the app's database holds: (key rows, audit entries)."""
    return lambda: everything(extension.get_engine(app))


@pytest.fixture
def send(client, auth):
    """Send a raw JSON text as the body of a dashboard request; return the response."""

    def send(method: str, path: str, text: str):
        return client.open(path, method=method, data=text, content_type="application/json", headers=auth())

    return send


def assert_refused(response, status: int, errors: dict | None = None) -> None:
    """The answer is the error envelope with ``status`` (and these field errors), in standard JSON."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    body = strict_json(response.get_data(as_text=True))
    assert body["statusCode"] == status
    if errors is not None:
        assert body["errors"] == errors


# Finding 9: NaN, Infinity and 1e400 in meta.


@pytest.mark.parametrize("number", NON_STANDARD)
def test_non_standard_numbers_in_meta_are_a_400_that_writes_nothing(send, stored, number):
    response = send("POST", "/dashboard/api-keys", f'{{"name": "k", "environment": "live", "meta": {{"n": {number}}}}}')
    assert_refused(response, 400, {"meta": [NOT_FINITE]})
    assert stored() == ([], [])


@pytest.mark.parametrize("number", NON_STANDARD)
def test_non_standard_numbers_in_an_update_change_nothing(client, auth, send, stored, make_key, number):
    key = make_key()
    before = stored()
    response = send("PATCH", f"/dashboard/api-keys/{key['id']}", f'{{"meta": {{"n": {number}}}}}')
    assert_refused(response, 400, {"meta": [NOT_FINITE]})
    assert stored() == before
    answer = client.get(f"/dashboard/api-keys/{key['id']}", headers=auth())
    assert strict_json(answer.get_data(as_text=True))["data"]["meta"] == {}


def import_file(tmp_path, policy: str) -> str:
    """Write an import file of one key whose entry ends with ``policy`` (raw JSON text); return its path."""
    full_key = f"{keys.new_public_key('test')}.{keys.new_secret('test')}"
    entry = f'{{"tenant": "acme", "name": "k", "environment": "test", "fullKey": "{full_key}", {policy}}}'
    path = tmp_path / "keys.json"
    path.write_text(f"[{entry}]", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("number", NON_STANDARD)
def test_an_import_with_non_standard_numbers_writes_nothing(runner, stored, tmp_path, number):
    # `apikeys serve --seed` and APIKEYS_SEED read their file with the same function as the import.
    result = runner.invoke(args=["keys", "import", import_file(tmp_path, f'"meta": {{"n": {number}}}')])
    assert result.exit_code != 0
    assert f"Entry 1: meta: {NOT_FINITE}" in result.output
    assert stored() == ([], [])


@pytest.mark.parametrize("number", NON_STANDARD)
def test_the_cli_refuses_non_standard_numbers_in_meta(runner, stored, number):
    args = ["keys", "create", "--tenant", "acme", "--name", "k", "--environment", "live"]
    result = runner.invoke(args=[*args, "--meta", f'{{"n": {number}}}'])
    assert result.exit_code == 2
    assert NOT_FINITE in result.output
    assert stored() == ([], [])


# Finding 10: far-off times, huge integers, deep nesting, time claims that are not numbers.


@pytest.mark.parametrize("moment", OUT_OF_RANGE_TIMES)
def test_an_expiry_outside_the_years_1_to_9999_in_utc_is_a_400(client, send, stored, make_key, moment):
    response = send("POST", "/dashboard/api-keys", f'{{"name": "k", "environment": "live", "expiresAt": "{moment}"}}')
    assert_refused(response, 400, {"expiresAt": [YEAR_RULE]})
    assert stored() == ([], [])
    key = make_key()
    before = stored()
    assert_refused(send("PATCH", f"/dashboard/api-keys/{key['id']}", f'{{"expiresAt": "{moment}"}}'), 400)
    assert stored() == before
    # The last moment that is in range stays accepted, and the key verifies.
    latest = send("PATCH", f"/dashboard/api-keys/{key['id']}", '{"expiresAt": "9999-12-31T23:59:59Z"}')
    assert latest.status_code == 200, latest.json
    assert latest.json["data"]["expiresAt"] == "9999-12-31T23:59:59.000Z"
    assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200


@pytest.mark.parametrize("moment", OUT_OF_RANGE_TIMES)
def test_an_import_with_an_expiry_outside_the_years_1_to_9999_writes_nothing(runner, stored, tmp_path, moment):
    result = runner.invoke(args=["keys", "import", import_file(tmp_path, f'"expiresAt": "{moment}"')])
    assert result.exit_code != 0
    assert f"Entry 1: expiresAt: {YEAR_RULE}" in result.output
    assert stored() == ([], [])


def test_meta_nested_32_levels_is_accepted_and_33_is_a_400(send, stored):
    accepted = send("POST", "/dashboard/api-keys", f'{{"name": "k", "environment": "live", "meta": {nested(32)}}}')
    assert accepted.status_code == 201, accepted.json
    before = stored()
    refused = send("POST", "/dashboard/api-keys", f'{{"name": "k", "environment": "live", "meta": {nested(33)}}}')
    assert_refused(refused, 400, {"meta": [DEPTH_RULE]})
    assert stored() == before


def test_an_update_nesting_meta_33_levels_changes_nothing(send, stored, make_key):
    key = make_key()
    before = stored()
    assert_refused(
        send("PATCH", f"/dashboard/api-keys/{key['id']}", f'{{"meta": {nested(33)}}}'), 400, {"meta": [DEPTH_RULE]}
    )
    assert stored() == before


def test_an_integer_too_long_for_python_to_read_is_a_400(send, stored, make_key):
    # Python refuses to read an integer of more than 4,300 digits (a ValueError, not a JSONDecodeError).
    digits = "9" * 4301
    response = send("POST", "/dashboard/api-keys", f'{{"name": "k", "environment": "live", "meta": {{"n": {digits}}}}}')
    assert_refused(response, 400)
    assert list(response.json["errors"]) == ["body"]
    assert stored() == ([], [])
    key = make_key()
    before = stored()
    assert_refused(send("PATCH", f"/dashboard/api-keys/{key['id']}", f'{{"meta": {{"n": {digits}}}}}'), 400)
    assert stored() == before


@pytest.mark.parametrize("text", ['"\\ud800"', '"a\\udfffb"', '{"\\udc00": 1}'])
def test_lone_surrogates_in_meta_are_a_400_that_says_so(send, stored, text):
    response = send("POST", "/dashboard/api-keys", f'{{"name": "k", "environment": "live", "meta": {{"s": {text}}}}}')
    assert_refused(response, 400, {"meta": ["Must not contain lone surrogates (\\ud800 to \\udfff)."]})
    assert stored() == ([], [])


def now() -> int:
    return int(time.time())


# pyjwt checks only that int(value) works, so each of these passes its checks (a string exp was a 500).
TIME_CLAIMS = [
    ("exp", lambda: {"exp": str(now() + 600)}),
    ("iat", lambda: {"iat": str(now())}),
    ("iat", lambda: {"iat": False}),
    ("nbf", lambda: {"nbf": str(now())}),
    ("nbf", lambda: {"nbf": True}),
]


@pytest.mark.parametrize(("claim", "claims"), TIME_CLAIMS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(TIME_CLAIMS)])
def test_a_signed_token_whose_time_claim_is_not_a_number_is_a_401(client, token, claim, claims):
    response = client.get("/dashboard/api-keys", headers={"Authorization": f"Bearer {token('acme', **claims())}"})
    assert_refused(response, 401)
    assert response.json["code"] == "INVALID_TOKEN"
    assert response.json["message"] == f"The bearer token's {claim} claim must be a number (seconds since 1970)."
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="apikeys"'


# Finding 14: /metrics' media type.


def media_type(header: str) -> tuple[str, list[tuple[str, str]]]:
    """Parse a Content-Type strictly: its type and its parameters in order, repeats kept (RFC 9110 section 8.3.1)."""
    message = email.message.EmailMessage()
    message["Content-Type"] = header
    assert message["Content-Type"].defects == (), message["Content-Type"].defects  # e.g. a duplicate parameter
    kind, *parameters = [part.strip() for part in header.split(";")]
    pairs = [parameter.partition("=") for parameter in parameters]
    assert all(sep == "=" and name and value for name, sep, value in pairs), header
    return kind.lower(), [(name.strip().lower(), value.strip().strip('"')) for name, _, value in pairs]


def assert_prometheus_media_type(header: str) -> None:
    """The header is prometheus-client's own CONTENT_TYPE_LATEST, with no parameter given twice."""
    kind, parameters = media_type(header)
    names = [name for name, _ in parameters]
    assert len(names) == len(set(names)), f"a parameter repeats: {header}"
    assert (kind, parameters) == media_type(CONTENT_TYPE_LATEST)
    assert header == CONTENT_TYPE_LATEST


def test_metrics_answers_prometheus_clients_own_media_type(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert_prometheus_media_type(response.headers["Content-Type"])


# Through the real server, where the stack is deeper and the workers share metrics.


def raw_request(url: str, method: str, path: str, headers: dict, body: str | None = None):
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        conn.request(method, path, body=body.encode() if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        conn.close()


@pytest.mark.slow
def test_the_server_answers_each_in_the_envelope_and_writes_nothing(tmp_path, database_url):
    jwt_secret = secrets.token_urlsafe(64)
    dashboard = {"Authorization": f"Bearer {token_for(jwt_secret, 'acme')}", "Content-Type": "application/json"}
    claims = {"tenantId": "acme", "iat": now(), "exp": str(now() + 600)}
    string_exp = {"Authorization": f"Bearer {jwt.encode(claims, jwt_secret, algorithm='HS256')}"}
    engine = sa.create_engine(database_url)
    env = service_env(database_url, jwt_secret, tmp_path / "instance")
    try:
        with Gunicorn(tmp_path, env, workers=1) as server:
            create = '{"name": "k", "environment": "live"}'
            status, _, created = raw_request(server.url, "POST", "/dashboard/api-keys", dashboard, create)
            assert status == 201
            key_path = f"/dashboard/api-keys/{json.loads(created)['data']['id']}"
            before = everything(engine)
            answers = []
            for field in [
                '"meta": {"n": NaN}',
                '"meta": {"n": 1e400}',
                '"expiresAt": "9999-12-31T23:59:59-23:59"',
                '"meta": {"n": ' + "9" * 4301 + "}",
                '"meta": ' + nested(950),
            ]:
                for method, path, body in [
                    ("POST", "/dashboard/api-keys", '{"name": "k", "environment": "live", ' + field + "}"),
                    ("PATCH", key_path, "{" + field + "}"),
                ]:
                    status, _, text = raw_request(server.url, method, path, dashboard, body)
                    answers.append((method, field[:40], status, strict_json(text)["statusCode"]))
            status, _, text = raw_request(server.url, "GET", "/dashboard/api-keys", string_exp)
            answers.append(("GET", "exp as a string", status, strict_json(text)["statusCode"]))
            status, headers, _ = raw_request(server.url, "GET", "/metrics", {})
            assert status == 200
            assert_prometheus_media_type(headers["Content-Type"])
            assert everything(engine) == before
    finally:
        engine.dispose()
    expected = [(method, what, 401 if method == "GET" else 400) for method, what, _, _ in answers]
    assert [(method, what, status) for method, what, status, _ in answers] == expected
    assert all(status == in_body for _, _, status, in_body in answers)
    assert "Traceback" not in server.logs()
