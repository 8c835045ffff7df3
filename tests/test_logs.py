"""The request log (apikeys/logs.py): one line per request, whatever the request held."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
import sqlalchemy as sa

from apikeys.logs import escape
from apikeys.storage import migrate
from tests.logscan import RAW_CONTROL

# The start of every line the text formatter writes.
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ apikeys[.\w]*: ")
# A whole log line an attacker would like to see in the log, after a line break of their choosing.
FORGED = "2026-01-01 00:00:00,000 INFO apikeys.requests: GET /FORGED 200 1.0ms tenant=acme key=-"


@pytest.fixture
def database_url(tmp_path):
    """SQLite only: what is logged does not depend on the database."""
    url = f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["text", "json"])
def log_format(request, config):
    config["APIKEYS_LOG_FORMAT"] = request.param
    return request.param


def request_line(output: str, log_format: str):
    """The one request-log line in ``output``: a single line, nothing raw in it, and whole (a prefix, or JSON)."""
    assert output.endswith("\n")
    line = output[:-1]
    assert RAW_CONTROL.search(line) is None  # no line break of any kind, no escape sequence, no bidi control
    assert line.splitlines() == [line]
    if log_format == "json":
        return json.loads(line)
    assert TEXT_LINE.match(line), "a line the app did not write as a whole"
    return line


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("/verify/orders/42", "/verify/orders/42"),
        ("café 租户 ", "café 租户 "),  # printable, any script, spaces: as they are
        ("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("\u202eevil\u202c \u2066x\u2069 \u200f", "\\u202eevil\\u202c \\u2066x\\u2069 \\u200f"),
        ("\ufeff\U000e0001", "\\ufeff\\U000e0001"),
        ("a\\x0ab", "a\\\\x0ab"),  # a backslash is escaped too, so this cannot pass for an escaped LF
    ],
)
def test_escape(value, escaped):
    assert escape(value) == escaped
    assert RAW_CONTROL.search(escape(value)) is None


@pytest.mark.parametrize(
    "path",
    [
        "/verify/%0A" + FORGED.replace(" ", "%20"),
        "/verify/%0D" + FORGED.replace(" ", "%20"),
        "/verify/%1B[31mred%1B[0m",
        "/verify/%E2%80%A8FORGED%E2%80%A9",
        "/verify/%E2%80%AEevil%E2%80%AC",
        "/dashboard/api-keys/%0A" + FORGED.replace(" ", "%20"),
    ],
)
def test_request_log_escapes_the_path(log_format, client, capsys, path):
    capsys.readouterr()
    client.get(path)

    line = request_line(capsys.readouterr().err, log_format)
    decoded = urllib.parse.unquote(path)
    if log_format == "text":
        assert line.split(": ", 1)[1].startswith(f"GET {escape(decoded)} ")
    else:
        assert line["path"] == decoded  # the field holds the real path: the escaping is JSON's


def test_request_log_escapes_the_tenant(log_format, client, capsys, token):
    tenant = "acme\u2028" + FORGED + "\u202eemca"
    capsys.readouterr()
    answer = client.get("/dashboard/api-keys", headers={"Authorization": f"Bearer {token(tenant)}"})

    line = request_line(capsys.readouterr().err, log_format)
    if answer.status_code == 200:  # the tenant was let in, so the log names it
        if log_format == "text":
            assert f"tenant={escape(tenant)} " in line
        else:
            assert line["tenant"] == tenant


@pytest.mark.parametrize("method", ["GE\nT", "PURGE\x1b[31m", "GET\u2028" + FORGED])
def test_request_log_escapes_the_method(log_format, client, capsys, method):
    capsys.readouterr()
    client.open("/healthz", method=method)

    line = request_line(capsys.readouterr().err, log_format)
    if log_format == "text":
        assert line.split(": ", 1)[1].startswith(escape(method.upper()) + " /healthz ")
    else:
        assert line["method"] == method.upper()


@pytest.mark.parametrize("log_verified", [False, True])
def test_successful_verifications_are_logged_only_when_asked(config, tmp_path, make_key, caplog, log_verified):
    """The proxy in front logs every request: a line per successful /verify is opt-in, refusals always have one."""
    from apikeys import create_app
    from apikeys.verification import extension

    key = make_key()
    app = create_app({**config, "APIKEYS_LOG_VERIFIED": log_verified}, instance_path=str(tmp_path / "logged"))
    try:
        client = app.test_client()
        with caplog.at_level("INFO", logger="apikeys.requests"):
            caplog.clear()  # the key's creation has its own line
            assert client.get("/verify", headers={"X-Api-Key": key["fullKey"]}).status_code == 200
            assert client.get("/verify").status_code == 401
    finally:
        extension.get_engine(app).dispose()
    lines = [record.getMessage() for record in caplog.records if record.name == "apikeys.requests"]
    assert [line.split()[:3] for line in lines] == ([["GET", "/verify", "200"]] if log_verified else []) + [
        ["GET", "/verify", "401"]
    ]
