"""Real servers for the benchmarks and the tests: gunicorn running apikeys (or any WSGI app) on a free port.

Nothing here knows pytest: the tests wrap it in tests/servers.py (skips, the run-wide log scan).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa

from apikeys.tokens import issue_token

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("APIKEYS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Every host of one database shares the verifier key; one per process, never a developer's own.
TEST_VERIFIER_KEY = secrets.token_urlsafe(32)


def inherited_env() -> dict[str, str]:
    """This process's environment without any APIKEYS_* variable, as the base of a subprocess's environment.

    A developer's own APIKEYS_DATABASE_URL (or any other setting) must never reach
    a server or command a test starts: it would migrate or serve whatever it names.
    """
    return {name: value for name, value in os.environ.items() if not name.startswith("APIKEYS_")}


class PostgresUnreachable(RuntimeError):
    """No PostgreSQL server answers at the URL given."""


@contextlib.contextmanager
def new_postgres_database(base_url: str, prefix: str):
    """Yield the URL of a new, empty PostgreSQL database on ``base_url``'s server, dropped (WITH FORCE) afterwards."""
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        where = sa.make_url(base_url).render_as_string(hide_password=True)
        raise PostgresUnreachable(f"PostgreSQL is not reachable at {where} ({type(error.orig).__name__})") from None
    try:
        yield sa.make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def service_env(database_url: str, jwt_secret: str, instance: Path | str, **settings: str) -> dict[str, str]:
    """The environment of an apikeys test server: its database, secrets and instance folder, bcrypt rounds 4."""
    return {
        "APIKEYS_DATABASE_URL": database_url,
        "APIKEYS_JWT_SECRET": jwt_secret,
        "APIKEYS_VERIFIER_KEY": TEST_VERIFIER_KEY,
        "APIKEYS_BCRYPT_ROUNDS": "4",
        "APIKEYS_INSTANCE_PATH": str(instance),
        **settings,
    }


def token_for(jwt_secret: str, tenant: str, ttl: int = 600) -> str:
    """Sign a dashboard token as a server started with ``service_env`` expects it."""
    config = {
        "APIKEYS_JWT_ALGORITHMS": ["HS256"],
        "APIKEYS_JWT_SECRET": jwt_secret,
        "APIKEYS_JWT_TENANT_CLAIM": "tenantId",
        "APIKEYS_JWT_AUDIENCE": "",
        "APIKEYS_JWT_ISSUER": "",
    }
    return issue_token(config, tenant, ttl)


def call(
    base: str, method: str, path: str, *, token: str | None = None, api_key: str | None = None, body=None
) -> tuple[int, dict | None]:
    """Send one request on a connection of its own and return (status, JSON body)."""
    url = urllib.parse.urlsplit(base)
    headers = {"Connection": "close"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if api_key is not None:
        headers["X-Api-Key"] = api_key
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        status = response.status
    finally:
        conn.close()
    return status, (json.loads(payload) if payload else None)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers at all (any status), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            urllib.request.urlopen(url, timeout=2).close()  # noqa: S310 (our own http:// URL)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class Gunicorn:
    """gunicorn in its own process group, with its error and access logs in files.

    By default it runs the project's gunicorn.conf.py with an access log, as a deployment
    would; ``config=None, access_log=False`` and a ``cwd`` without a gunicorn.conf.py
    give gunicorn's own defaults (the benchmark's baseline).
    """

    def __init__(
        self,
        tmp_path: Path,
        env: dict[str, str],
        *,
        workers: int = 4,
        app: str = "app:app",
        config: str | None = str(ROOT / "gunicorn.conf.py"),
        access_log: bool = True,
        cwd: Path = ROOT,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.error_log = tmp_path / f"gunicorn-{self.port}-error.log"
        self.access_log = tmp_path / f"gunicorn-{self.port}-access.log" if access_log else None
        self.stdout_log = tmp_path / f"gunicorn-{self.port}-stdout.log"
        # HOME of its own: gunicorn's control socket lives under $HOME/.gunicorn, one per server.
        self.env = {**inherited_env(), "HOME": str(tmp_path), **env}
        self.workers = workers
        self.app = app
        self.config = config
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    def log_files(self) -> list[Path]:
        """The files gunicorn and the app write to: error log, access log (if any) and stdout."""
        return [path for path in (self.error_log, self.access_log, self.stdout_log) if path is not None]

    def start(self, ready_path: str = "/healthz") -> Gunicorn:
        """Start gunicorn and wait until it answers."""
        command = [sys.executable, "-m", "gunicorn", *(["-c", self.config] if self.config else [])]
        command += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
        command += ["--error-logfile", str(self.error_log)]
        command += ["--access-logfile", str(self.access_log)] if self.access_log else []
        with open(self.stdout_log, "ab") as out:
            self.process = subprocess.Popen(
                [*command, self.app],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(self.url + ready_path, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the whole process group, master and workers."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def kill(self) -> None:
        """kill -9 the whole process group, as a crash would."""
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        """Return everything gunicorn and the app wrote: error log, access log and stdout."""
        return "".join(path.read_text(errors="replace") for path in self.log_files() if path.exists())

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
