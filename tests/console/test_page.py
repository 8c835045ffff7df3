"""The console's page and files as the server sends them: headers, no inline code, not in the OpenAPI document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from apikeys import console
from apikeys import create_app
from apikeys.verification import extension

STATIC = Path(console.__file__).parent / "static" / "console"
TEMPLATE = Path(console.__file__).parent / "templates" / "console" / "index.html"


@pytest.fixture
def database_url(tmp_path):
    """The console's pages never touch the database: one SQLite file is enough."""
    return f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"


@pytest.mark.parametrize("path", ["/console", "/console/"])
def test_page_is_served_with_strict_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert not response.headers.get("Set-Cookie")


@pytest.mark.parametrize(
    ("name", "mimetype"),
    [(path.name, "text/css" if path.suffix == ".css" else "text/javascript") for path in sorted(STATIC.iterdir())],
)
def test_static_files_are_served_with_the_same_headers(client, name, mimetype):
    response = client.get(f"/console/static/{name}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    response.close()


def test_page_links_only_its_own_files(client):
    html = client.get("/console").get_data(as_text=True)
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/console/static/console.js">']
    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', html) == ["/console/static/console.css"]
    assert "http://" not in html and "https://" not in html  # nothing from a CDN: works offline


def test_page_names_the_configured_tenant_claim(app, client):
    app.config["APIKEYS_JWT_TENANT_CLAIM"] = "org<id>"
    html = client.get("/console").get_data(as_text=True)
    assert 'data-tenant-claim="org&lt;id&gt;"' in html


@pytest.mark.parametrize(("environment", "marked"), [(None, False), ("1", True)])
def test_only_a_dev_server_marks_the_page_as_dev(monkeypatch, config, tmp_path, environment, marked):
    # `apikeys serve --dev` sets APIKEYS_DEV for gunicorn; the mark is what lets the console take
    # the link it prints without asking, so no other server may send it.
    if environment is None:
        monkeypatch.delenv("APIKEYS_DEV", raising=False)
    else:
        monkeypatch.setenv("APIKEYS_DEV", environment)
    app = create_app(config, instance_path=str(tmp_path / "instance"))
    try:
        body = re.search(r"<body[^>]*>", app.test_client().get("/console").get_data(as_text=True)).group()
    finally:
        extension.get_engine(app).dispose()
    assert bool(re.search(r"\sdata-dev\b", body)) is marked


def test_template_has_no_inline_script_or_style():
    html = TEMPLATE.read_text()
    # Under script-src 'self' and style-src 'self' inline code would be refused anyway;
    # keep it out so the page never depends on a weakened policy.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)


@pytest.mark.parametrize("name", [path.name for path in sorted(STATIC.glob("*.js"))])
def test_scripts_build_the_dom_without_html_strings(name):
    script = (STATIC / name).read_text()
    code = re.sub(r"^\s*//.*$", "", script, flags=re.MULTILINE)  # comments may name what is avoided
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert unsafe not in code
    for storage in ("localStorage", "document.cookie"):
        assert storage not in code
    # Imports stay on this origin: relative paths only.
    assert all(re.fullmatch(r"\./[a-z]+\.js", target) for target in re.findall(r'from "([^"]+)"', code))


def test_console_is_not_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json["paths"]
    assert not [path for path in paths if path.startswith("/console")]


def test_unknown_console_file_is_a_404_in_the_envelope(client):
    response = client.get("/console/static/nope.js")
    assert response.status_code == 404
    assert response.json["statusCode"] == 404
