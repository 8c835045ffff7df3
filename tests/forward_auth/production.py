"""examples/nginx/production.conf run for real: nginx with the shipped file in front of apikeys under gunicorn (through
the /verify recorder) and the echo application, on one port, both servers told apart by Host."""

from __future__ import annotations

import contextlib
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from apikeys.storage import migrate
from tests.forward_auth.support import EXAMPLES
from tests.forward_auth.support import Key
from tests.forward_auth.support import Nginx
from tests.forward_auth.support import Service
from tests.forward_auth.support import render
from tests.forward_auth.upstreams import Application
from tests.forward_auth.upstreams import VerifyRecorder
from tests.servers import Gunicorn
from tests.servers import free_port
from tests.servers import service_env

PRODUCTION_EXAMPLE = EXAMPLES / "nginx" / "production.conf"
KEYS_HOST = "keys.example.com"
API_HOST = "api.example.com"


def make_service(directory: Path, workers: int) -> tuple[Gunicorn, str]:
    """apikeys under gunicorn with ``workers`` sync workers on a SQLite file of its own."""
    directory.mkdir(parents=True)
    url = f"sqlite:///{directory / 'apikeys.sqlite3'}"
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(url, jwt_secret, directory / "instance")
    return Gunicorn(directory, env, workers=workers), jwt_secret


@dataclass
class Production:
    """The running stack: nginx with the shipped file, apikeys behind it, a key it issued (with a scope)."""

    url: str
    gunicorn: Gunicorn
    service: Service
    recorder: VerifyRecorder
    key: Key


def render_site(apikeys_port: int, application_port: int, listen_port: int) -> str:
    """The shipped file with its two upstream addresses and both listen lines replaced."""
    site = render(
        PRODUCTION_EXAMPLE,
        {
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{apikeys_port};",
            "server 127.0.0.1:3000;": f"server 127.0.0.1:{application_port};",
        },
    )
    placeholder = "listen 8080;"
    assert site.count(placeholder) == 2, f"{PRODUCTION_EXAMPLE.name} must hold {placeholder!r} twice"
    return site.replace(placeholder, f"listen 127.0.0.1:{listen_port};")


@contextlib.contextmanager
def running_production(nginx_program: str, application: Application, directory: Path):
    """Yield the production stack (apikeys with 2 sync workers), stopped afterwards."""
    gunicorn, jwt_secret = make_service(directory / "apikeys", workers=2)
    with gunicorn, VerifyRecorder(gunicorn.url) as recorder:
        service = Service(gunicorn.url, jwt_secret)
        key = service.create_key("acme", scopes=["orders:read"])
        port = free_port()
        site = render_site(urllib.parse.urlsplit(recorder.url).port, application.server_address[1], port)
        nginx = Nginx(nginx_program, directory / "nginx", site, port)
        try:
            nginx.start()
            yield Production(nginx.url, gunicorn, service, recorder, key)
        finally:
            nginx.stop()
