"""Real servers for tests: bench/servers.py's helpers, plus PostgreSQL skips and the run-wide log scan.

The helpers live in bench/servers.py so that the benchmarks import nothing from tests/;
every name is re-exported here, so tests keep importing them from ``tests.servers``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from bench import servers
from bench.servers import POSTGRES_URL
from bench.servers import ROOT
from bench.servers import TEST_VERIFIER_KEY
from bench.servers import PostgresUnreachable
from bench.servers import call
from bench.servers import free_port
from bench.servers import inherited_env
from bench.servers import new_postgres_database
from bench.servers import service_env
from bench.servers import token_for
from bench.servers import wait_for

__all__ = [
    "POSTGRES_URL",
    "REQUIRE_POSTGRES",
    "ROOT",
    "TEST_VERIFIER_KEY",
    "Gunicorn",
    "PostgresUnreachable",
    "call",
    "empty_database",
    "free_port",
    "inherited_env",
    "new_postgres_database",
    "postgres_database",
    "service_env",
    "token_for",
    "wait_for",
]

REQUIRE_POSTGRES = os.environ.get("APIKEYS_REQUIRE_POSTGRES") == "1"


class Gunicorn(servers.Gunicorn):
    """bench/servers.py's gunicorn, whose logs and signing secrets the run-wide log scan (tests/logscan.py) reads."""

    def __init__(self, tmp_path: Path, env: dict[str, str], **options):
        super().__init__(tmp_path, env, **options)
        from tests import logscan  # a pytest plugin: imported late so that pytest can rewrite it first

        logscan.server_logs.extend(self.log_files())
        for name in ("APIKEYS_JWT_SECRET", "APIKEYS_VERIFIER_KEY"):
            if env.get(name):
                logscan.signing_secrets.add(env[name])


@contextlib.contextmanager
def empty_database(backend: str, tmp_path: Path, prefix: str):
    """Yield the URL of a new database without any table: a SQLite file in ``tmp_path``, or a PostgreSQL one."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'apikeys.sqlite3'}"
        return
    with postgres_database(prefix) as url:
        yield url


@contextlib.contextmanager
def postgres_database(prefix: str):
    """Yield the URL of a new, empty PostgreSQL database for a test, dropped afterwards.

    Without a reachable server the calling test is skipped with one line saying how
    to enable it, or fails when APIKEYS_REQUIRE_POSTGRES=1 (as in CI).
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(new_postgres_database(POSTGRES_URL, prefix))
        except PostgresUnreachable as error:
            message = f"{error}; start it or set APIKEYS_TEST_POSTGRES_URL to run the PostgreSQL cases"
            if REQUIRE_POSTGRES:
                pytest.fail(message)
            pytest.skip(message)
        yield url
