"""Fixtures of the forward-auth tests: one apikeys under gunicorn, one protected application, and nginx."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from apikeys.storage import migrate
from tests.forward_auth.support import Service
from tests.forward_auth.support import find_program
from tests.forward_auth.support import required
from tests.forward_auth.upstreams import Application
from tests.forward_auth.upstreams import VerifyRecorder
from tests.servers import Gunicorn
from tests.servers import service_env


@pytest.fixture(scope="package")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("forward-auth")


@pytest.fixture(scope="package")
def service(workdir):
    """apikeys under gunicorn (2 workers) on a SQLite file of its own, shared by the package's tests."""
    url = f"sqlite:///{workdir / 'apikeys.sqlite3'}"
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(url, jwt_secret, workdir / "instance")
    gunicorn = Gunicorn(workdir, env, workers=2)
    try:
        gunicorn.start()
        yield Service(gunicorn.url, jwt_secret, url)
    finally:
        gunicorn.stop()


@pytest.fixture(scope="package")
def application():
    """The protected application: an HTTP server on a free port that echoes and remembers every request."""
    server = Application()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="package")
def nginx_program() -> str:
    """The nginx binary; without one the nginx tests skip, or fail in CI."""
    program = find_program("nginx")
    if program is None:
        message = "nginx is not installed: apt-get install nginx (the nginx forward-auth tests run a real one)"
        if required("APIKEYS_REQUIRE_NGINX"):
            pytest.fail(message)
        pytest.skip(message)
    return program


@pytest.fixture(scope="package")
def verify_recorder(service):
    """What the proxies call instead of apikeys: it passes each request on and remembers the headers /verify got."""
    with VerifyRecorder(service.url) as recorder:
        yield recorder
