"""The pytest plugin: a real apikeys server, keys and an in-process app for other projects' tests.

Installing apikeys registers this module (a ``pytest11`` entry point). It defines
fixtures only, every one named ``apikeys_*``, none autouse; Flask, SQLAlchemy and
the rest of apikeys are imported only when a test asks for a fixture.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask import Flask
    from flask.testing import FlaskClient

__all__ = ["ApikeysServer", "apikeys_app", "apikeys_client", "apikeys_key", "apikeys_server"]

TEST_TENANT = "test-tenant"
TOKEN_TTL = 3600  # seconds
POLL_INTERVAL = 0.05  # seconds: how fast the server thread notices shutdown()

log = logging.getLogger(__name__)


def throwaway_config(database_url: str) -> dict:
    """Return the configuration of a throwaway apikeys app: fast bcrypt, a random JWT secret and verifier key."""
    return {
        "TESTING": True,
        "APIKEYS_DATABASE_URL": database_url,
        "APIKEYS_JWT_SECRET": secrets.token_urlsafe(64),  # long enough for HS512 too
        "APIKEYS_VERIFIER_KEY": secrets.token_urlsafe(32),
        "APIKEYS_BCRYPT_ROUNDS": 4,  # bcrypt's minimum: a key costs about a millisecond
        "APIKEYS_METRICS": False,
    }


def create_test_app(directory: Path) -> Flask:
    """Create an apikeys app on a fresh, migrated SQLite file in ``directory``."""
    from apikeys import create_app
    from apikeys.verification import extension

    database_url = f"sqlite:///{directory / 'apikeys.sqlite3'}"
    app = create_app(throwaway_config(database_url), instance_path=str(directory / "instance"))
    try:
        extension.prepare(app)
    except BaseException:
        close_test_app(app)
        raise
    return app


def close_test_app(app: Flask) -> None:
    """Drop the app's unwritten usage counts (its throwaway database goes with it) and close its connections."""
    from apikeys.verification import extension

    state = extension.get_state(app)
    if state.usage is not None:
        state.usage.discard()  # else its thread writes to a deleted file every few seconds, and once more at exit
    extension.get_engine(app).dispose()


def _quiet_handler():
    """Return a werkzeug request handler that leaves the access log to apikeys' own request log."""
    from werkzeug.serving import WSGIRequestHandler

    class QuietRequestHandler(WSGIRequestHandler):
        """apikeys logs every request itself; werkzeug's errors go to our logger, not a new handler."""

        def log_request(self, code="-", size="-") -> None:
            """Log nothing: apikeys.requests already has a line for every request."""

        def log(self, type: str, message: str, *args) -> None:  # noqa: A002 (werkzeug's signature)
            """Log to apikeys.testing, so werkzeug adds no handler of its own."""
            getattr(log, type, log.info)(message.rstrip(), *args)

    return QuietRequestHandler


class ApikeysServer:
    """The apikeys service on 127.0.0.1 and a free port, in a thread, on its own SQLite file."""

    def __init__(self, directory: Path):
        """Prepare a server whose files live in ``directory``; start() runs it."""
        self.directory = Path(directory)
        self.app: Flask | None = None
        self.url = ""
        self.database_url = ""
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> ApikeysServer:
        """Migrate the database, bind a free port and serve in a daemon thread."""
        from werkzeug.serving import make_server

        from apikeys.storage import engine as engine_module

        self.app = create_test_app(self.directory)
        self.database_url = engine_module.database_url(self.app.config, self.app.instance_path)
        try:
            self._server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=_quiet_handler())
            self.url = f"http://127.0.0.1:{self._server.server_port}"
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": POLL_INTERVAL},
                name=f"apikeys-server-{self._server.server_port}",
                daemon=True,
            )
            self._thread.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def shutdown(self) -> None:
        """Stop serving, close the socket and the database connections; safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()  # serve_forever closes the listening socket on its way out
            self._thread.join()
            self._thread = None
        elif self._server is not None:
            self._server.server_close()
        self._server = None
        if self.app is not None:
            close_test_app(self.app)

    @property
    def settings(self) -> dict[str, str]:
        """The settings a service that verifies this server's keys itself (``ApiKeys(app)``) needs."""
        config = self.app.config
        return {
            "APIKEYS_DATABASE_URL": self.database_url,
            "APIKEYS_VERIFIER_KEY": config["APIKEYS_VERIFIER_KEY"],
            # The service would count its verifications in this throwaway database every few seconds, and once
            # more at its exit, when the database is gone: a warning at the end of every run, for counts no one reads.
            "APIKEYS_USAGE": "off",
        }

    def token(self, tenant: str, **claims) -> str:
        """Return a JWT for ``tenant`` that this server accepts; ``claims`` add or override claims."""
        from apikeys.tokens import issue_token

        return issue_token(self.app.config, tenant, TOKEN_TTL, **claims)

    def create_key(self, tenant: str, name: str = "test key", environment: str = "test", **policy) -> dict:
        """Create a key over HTTP and return the create answer's ``data`` (``fullKey`` included).

        ``policy`` takes the create body's optional fields: ``expiresAt``, ``scopes``, ``meta``.
        """
        import urllib.error
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 (our own http:// URL)
            self.url + "/dashboard/api-keys",
            data=json.dumps({"name": name, "environment": environment, **policy}).encode(),
            headers={"Authorization": f"Bearer {self.token(tenant)}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.load(response)["data"]
        except urllib.error.HTTPError as error:
            with error:
                body = error.read().decode(errors="replace")  # the error envelope: never a secret
            raise RuntimeError(f"apikeys_server refused to create a key: {error.code} {body}") from None

    def __enter__(self) -> ApikeysServer:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc_info) -> None:
        """Shut the server down, whatever happened."""
        self.shutdown()

    def __repr__(self) -> str:
        """Show the URL, never a secret."""
        return f"<ApikeysServer {self.url or 'not started'}>"


@pytest.fixture(scope="session")
def apikeys_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApikeysServer]:
    """A real apikeys HTTP server for the session: ``url``, ``database_url``, ``token()``, ``create_key()``."""
    directory = tmp_path_factory.mktemp("apikeys-server")
    try:
        with ApikeysServer(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def apikeys_key(apikeys_server: ApikeysServer) -> dict:
    """A fresh test key on ``apikeys_server`` for tenant ``test-tenant``: the create answer's ``data``."""
    return apikeys_server.create_key(TEST_TENANT)


@pytest.fixture
def apikeys_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """A fresh in-process apikeys app on its own temporary SQLite database."""
    directory = tmp_path_factory.mktemp("apikeys-app")
    app = create_test_app(directory)
    try:
        yield app
    finally:
        close_test_app(app)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def apikeys_client(apikeys_app: Flask) -> FlaskClient:
    """The Flask test client of ``apikeys_app``."""
    return apikeys_app.test_client()
