"""The WSGI fast path for /verify answers exactly as the Flask views behind it do."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from apikeys.dashboard import operations
from apikeys.storage import tables
from apikeys.verification.extension import get_state
from apikeys.verification.http import VerifyMiddleware
from tests.servers import Gunicorn
from tests.servers import call
from tests.servers import service_env
from tests.servers import token_for


@pytest.fixture
def keys(app):
    """Keys of every kind a verification can meet, by name."""
    state = get_state(app)
    made = {
        "live": operations.create_key(state, "acme", None, "k", "live", scopes=["read", "write"], meta={"a": "é"}),
        "test": operations.create_key(state, "café 100%", None, "k", "test"),
        "off": operations.create_key(state, "acme", None, "k", "live"),
        "old": operations.create_key(state, "acme", None, "k", "live", expires_at=tables.utcnow() - timedelta(days=1)),
    }
    operations.toggle_key(state, "acme", None, made["off"]["id"])
    return {name: key["full_key"] for name, key in made.items()}


NOT_VERIFY = ["/verifyx", "/verify-admin", "/verify.json"]


def _cases(keys):
    live = keys["live"]
    yield "GET", "/verify", {"X-Api-Key": live}
    yield "HEAD", "/verify", {"X-Api-Key": live}
    yield "PROPFIND", "/verify", {"X-Api-Key": live}
    yield "OPTIONS", "/verify", {"X-Api-Key": live}
    yield "GET", "/verify", {}
    yield "HEAD", "/verify", {}
    yield "GET", "/verify", {"X-Api-Key": "nope"}
    yield "GET", "/verify", {"X-Api-Key": live[:-1] + ("A" if live[-1] != "A" else "B")}
    yield "GET", "/verify", {"X-Api-Key": keys["test"]}
    yield "GET", "/verify", {"X-Api-Key": keys["off"]}
    yield "GET", "/verify", {"X-Api-Key": keys["old"]}
    yield "GET", "/verify?environment=test", {"X-Api-Key": live}
    yield "GET", "/verify?environment=live&environment=test", {"X-Api-Key": live}
    yield "GET", "/verify?environment=prod", {"X-Api-Key": live}
    yield "GET", "/verify?environment=%FF", {"X-Api-Key": live}
    yield "GET", "/verify?scope=read&scope=admin", {"X-Api-Key": live}
    yield "GET", "/verify?scope=read", {"X-Api-Key": live, "X-Api-Key-Required-Scopes": "write"}
    yield "GET", "/verify", {"X-Api-Key": live, "X-Api-Key-Required-Scopes": "read delete"}
    yield "POST", "/verify/", {"X-Api-Key": live}
    yield "GET", "/verify/orders/1?environment=prod&scope=admin", {"X-Api-Key": live}
    yield "GET", "/verify//a//b", {"X-Api-Key": keys["off"]}
    yield "GET", "/verify/caf%C3%A9/%0A", {"X-Api-Key": "nope"}
    yield "DELETE", "/verify/x", {"X-Api-Key": live, "X-Api-Key-Required-Scopes": "admin"}
    yield "GET", "//verify", {"X-Api-Key": live}
    yield "GET", "/verify/x", {"X-Api-Key": keys["test"]}
    # Empty query values are read, not dropped: an empty environment or scope must not be no requirement at all.
    yield "GET", "/verify?environment=", {"X-Api-Key": live}
    yield "GET", "/verify?scope=", {"X-Api-Key": live}
    yield "GET", "/verify?scope=read&scope=", {"X-Api-Key": live}
    # The key in Authorization: Bearer, alone or beside X-Api-Key; a JWT there; another scheme.
    yield "GET", "/verify", {"Authorization": f"Bearer {live}"}
    yield "GET", "/verify/x?scope=admin", {"Authorization": f"bearer {live}"}
    yield "GET", "/verify", {"Authorization": f"Bearer {keys['off']}"}
    yield "GET", "/verify", {"Authorization": "Bearer nope"}
    yield "GET", "/verify", {"X-Api-Key": live, "Authorization": f"Bearer {live}"}
    yield "GET", "/verify", {"X-Api-Key": live, "Authorization": f"Bearer {keys['test']}"}
    yield "GET", "/verify", {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"}
    yield "GET", "/verify", {"X-Api-Key": live, "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"}
    yield "GET", "/verify", {"Authorization": "Basic YWxpY2U6c2VjcmV0"}
    # Paths that only begin like /verify are not /verify: the Flask app's 404, with or without a key.
    for path in NOT_VERIFY:
        yield "GET", path, {"X-Api-Key": live}
        yield "GET", path, {}


@pytest.mark.parametrize("log_verified", [False, True])
def test_answers_match_the_flask_views(app, keys, caplog, log_verified):
    """Status, headers, body and log line: the same from the fast path as from the views."""
    app.config["APIKEYS_LOG_VERIFIED"] = log_verified
    assert isinstance(app.wsgi_app, VerifyMiddleware)
    fast = VerifyMiddleware(app, app.wsgi_app.wsgi_app)
    flask_only = app.wsgi_app.wsgi_app
    client = app.test_client()
    caplog.set_level(logging.INFO, logger="apikeys.requests")
    for method, url, headers in _cases(keys):
        answers = []
        for wsgi_app in (fast, flask_only):
            app.wsgi_app = wsgi_app
            caplog.clear()
            response = client.open(url, method=method, headers=headers)
            # Every field of each log line (those the JSON format writes too), the duration aside.
            lines = [
                (r.method, r.path, r.status, r.tenant, r.key_id, re.sub(r" [0-9.]+ms ", " ", r.getMessage()))
                for r in caplog.records
            ]
            answers.append((response.status, list(response.headers.items()), response.get_data(), lines))
        assert answers[0] == answers[1], (method, url)
        if answers[1][0].startswith("200"):
            assert len(answers[1][3]) == log_verified  # a success is logged only when asked


@pytest.mark.parametrize("path", NOT_VERIFY)
@pytest.mark.parametrize("with_key", [True, False])
def test_a_path_that_only_begins_with_verify_is_not_found(app, keys, path, with_key):
    """The fast path takes /verify and /verify/..., not every path that starts with those letters."""
    headers = {"X-Api-Key": keys["live"]} if with_key else {}
    response = app.test_client().get(path, headers=headers)
    assert response.status_code == 404
    assert "X-Api-Key-Id" not in response.headers


# On SQLite alone: the table is dropped, and the PostgreSQL database is shared by the whole run.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("middleware", [True, False])
def test_a_fault_is_answered_once(app, keys, caplog, middleware):
    """An error other than a refusal (here the keys table gone) is one 500 envelope and one logged traceback,
    after one verification: the middleware never hands the request on to verify it again."""
    state = get_state(app)
    lookups = []
    real_lookup = state.lookup
    state.lookup = lambda public_key: lookups.append(public_key) or real_lookup(public_key)
    if not middleware:
        app.wsgi_app = app.wsgi_app.wsgi_app
    with state.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE api_keys"))
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as served: TESTING would raise it in the test instead
    response = app.test_client().get("/verify", headers={"X-Api-Key": keys["live"]})
    assert response.status_code == 500
    assert response.json == {
        "statusCode": 500,
        "error": "Internal Server Error",
        "message": "An unexpected error occurred.",
    }
    assert len(lookups) == 1
    assert [r.name for r in caplog.records if r.exc_info] == [app.logger.name]


@pytest.mark.slow
def test_empty_query_values_are_refused_by_the_real_server(tmp_path, jwt_secret):
    """Under gunicorn (the fast path answering), ?environment= and ?scope= are a 400, never no requirement."""
    env = service_env(f"sqlite:///{tmp_path / 'apikeys.sqlite3'}", jwt_secret, tmp_path / "instance")
    with Gunicorn(tmp_path, env, workers=1) as server:
        token = token_for(jwt_secret, "acme")
        body = {"name": "k", "environment": "live", "scopes": ["read"]}
        status, created = call(server.url, "POST", "/dashboard/api-keys", token=token, body=body)
        assert status == 201, created
        full_key = created["data"]["fullKey"]
        assert call(server.url, "GET", "/verify?environment=live&scope=read", api_key=full_key)[0] == 200
        answers = {
            query: call(server.url, "GET", f"/verify?{query}", api_key=full_key)[0]
            for query in ("environment=", "scope=", "scope=read&scope=")
        }
    assert answers == {"environment=": 400, "scope=": 400, "scope=read&scope=": 400}
