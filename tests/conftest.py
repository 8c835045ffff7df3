"""Fixtures: an app on a real database (SQLite file, and PostgreSQL where reachable), clients, tokens, keys."""

from __future__ import annotations

import secrets
from datetime import UTC
from datetime import datetime

import pytest
import sqlalchemy as sa

from apikeys import create_app
from apikeys.storage import migrate
from apikeys.storage import tables
from apikeys.tokens import issue_token
from apikeys.verification import extension
from tests.servers import TEST_VERIFIER_KEY
from tests.servers import postgres_database

pytest_plugins = ["tests.logscan"]

BACKENDS = ["sqlite", "postgresql"]
VERIFIER_KEY = TEST_VERIFIER_KEY  # one per run: every app and server on a database shares it


@pytest.fixture(autouse=True)
def _usage_counting_ends_with_its_test():
    """Apps a test made and left behind stop counting with it: a thread left writing every 5 s would add counts to
    another test's database (or fail on one that is gone) while that test runs."""
    from apikeys.usage import counting

    before = set(counting._COUNTERS)
    yield
    for counter in set(counting._COUNTERS) - before:
        counter.discard()


@pytest.fixture(scope="session", autouse=True)
def _unwritten_usage_is_dropped_at_the_end():
    """Apps a test made and left behind: their databases are gone by the end, so their counts are dropped."""
    yield
    import gc
    import warnings

    from apikeys.usage import counting

    for counter in list(counting._COUNTERS):
        counter.discard()
        counter.engine.dispose()  # its app's connections, which a test that left the app did not close
    with warnings.catch_warnings():
        # What is still open now belongs to apps left behind: collected here, not reported after the session.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL database of this run's own, migrated, dropped at the end."""
    with postgres_database("apikeys_test") as url:
        engine = sa.create_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, migrated database: a SQLite file, or an emptied PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"
        engine = sa.create_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        return url
    url = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in (tables.api_keys, tables.audit_log, tables.settings, tables.usage_buckets):
            conn.execute(table.delete())
    engine.dispose()
    return url


@pytest.fixture
def clock(monkeypatch):
    """A settable clock for verification, quotas and usage (not for tokens, nor the rate-limit windows)."""

    class Clock:
        now = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)

        def set(self, *parts) -> None:
            self.now = datetime(*parts, tzinfo=UTC)

    clock = Clock()
    for target in ("apikeys.storage.tables.utcnow", "apikeys.dashboard.operations.utcnow"):
        monkeypatch.setattr(target, lambda: clock.now)
    return clock


@pytest.fixture
def jwt_secret():
    from tests import logscan  # registered as a plugin below; imported here so pytest can rewrite it

    secret = secrets.token_urlsafe(64)
    logscan.signing_secrets.add(secret)
    return secret


@pytest.fixture
def config(database_url, jwt_secret):
    """The test configuration; tests may change it before asking for ``app``."""
    return {
        "TESTING": True,
        "APIKEYS_DATABASE_URL": database_url,
        "APIKEYS_JWT_SECRET": jwt_secret,
        "APIKEYS_BCRYPT_ROUNDS": 4,
        "APIKEYS_VERIFIER_KEY": VERIFIER_KEY,
        # Usage counts are written when a test asks (get_state(app).usage.flush()) or the app is done: never by
        # a thread during a later test on the same database.
        "APIKEYS_USAGE_FLUSH_SECONDS": 3600,
    }


@pytest.fixture
def app(config, tmp_path):
    app = create_app(config, instance_path=str(tmp_path / "instance"))
    yield app
    state = extension.get_state(app)
    if state.usage is not None:
        state.usage.stop()
    state.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def token(app):
    """Make a token for a tenant: token("acme") or token("acme", exp=...)."""

    def make(tenant: str = "acme", ttl: int = 600, **claims) -> str:
        return issue_token(app.config, tenant, ttl, **claims)

    return make


@pytest.fixture
def auth(token):
    """Make Authorization headers for a tenant."""

    def make(tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {token(tenant)}"}

    return make


@pytest.fixture
def make_key(client, auth):
    """Create a key through the API and return the create answer's data."""

    def make(tenant: str = "acme", name: str = "test key", environment: str = "live", **policy) -> dict:
        body = {"name": name, "environment": environment, **policy}  # policy: scopes, rateLimit, quota, ...
        response = client.post("/dashboard/api-keys", json=body, headers=auth(tenant))
        assert response.status_code == 201, response.json
        return response.json["data"]

    return make
