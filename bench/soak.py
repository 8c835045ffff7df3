"""`make soak`: a bounded mixed workload against gunicorn -w 4 on SQLite and PostgreSQL, checked to the last row.

64 client connections (threads) create, list, verify, toggle, regenerate and delete
their own keys for 60 s; every answer is checked against what that client knows,
and at the end the rows in the database against what the clients saw acknowledged.
Prints markdown on stdout (progress on stderr); ``--write docs/soak.md`` also
replaces the generated part of that file. Exits non-zero on any error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import soak_report
import sqlalchemy as sa
from soak_checks import LogScan
from soak_checks import RowCheck
from soak_checks import check_rows
from soak_checks import scan_logs
from soak_client import OPERATIONS
from soak_client import REQUEST_TIMEOUT
from soak_client import Client
from soak_client import ErrorLog
from soak_client import OperationStats
from soak_client import redact

from apikeys import db
from apikeys.tokens import issue_token

# The repository root, for tests.servers: the soak runs the same gunicorn helper as the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import Gunicorn
from tests.servers import PostgresUnreachable
from tests.servers import new_postgres_database

POSTGRES_URL = os.environ.get("APIKEYS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
JWT_CONFIG = {
    "APIKEYS_JWT_ALGORITHMS": ["HS256"],
    "APIKEYS_JWT_TENANT_CLAIM": "tenantId",
    "APIKEYS_JWT_AUDIENCE": "",
    "APIKEYS_JWT_ISSUER": "",
}
PROGRESS_EVERY = 10.0
STARTED = time.monotonic()


def log(message: str) -> None:
    """Say what the soak is doing, on stderr."""
    print(f"[soak {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--databases", help="comma-separated: sqlite,postgresql (default: both; PostgreSQL if reachable)"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per database (default 60)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent client connections (default 64)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--tenants", type=int, default=8, help="tenants the clients are spread over (default 8)")
    parser.add_argument("--bcrypt-rounds", type=int, default=4, help="APIKEYS_BCRYPT_ROUNDS (default 4)")
    parser.add_argument("--final-verify", type=int, default=2000, help="believed keys verified at the end, at most")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the clients (default: random)")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="server to create the soak database on")
    parser.add_argument("--write", type=Path, help="also write the report into this markdown file (docs/soak.md)")
    parser.add_argument("--keep-logs", action="store_true", help="keep gunicorn's logs even when all is well")
    args = parser.parse_args(argv)
    args.explicit = args.databases is not None
    args.databases = [name.strip() for name in (args.databases or "sqlite,postgresql").split(",") if name.strip()]
    unknown = set(args.databases) - {"sqlite", "postgresql"}
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")
    if not 1 <= args.connections <= 1024 or args.duration <= 0 or args.tenants < 1:
        parser.error("--connections must be 1-1024, --duration positive and --tenants at least 1")
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    return args


class Unreachable(Exception):
    """The PostgreSQL server does not answer."""


@contextlib.contextmanager
def sqlite_database():
    """A fresh, migrated SQLite file in a temporary directory, removed afterwards."""
    directory = tempfile.mkdtemp(prefix="apikeys-soak-db-")
    try:
        url = f"sqlite:///{directory}/soak.sqlite3"
        engine = sa.create_engine(url)
        db.upgrade(engine)
        engine.dispose()
        yield url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def postgres_database(base_url: str):
    """A fresh, migrated PostgreSQL database of this run's own, dropped afterwards (WITH (FORCE))."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(new_postgres_database(base_url, "apikeys_soak"))
        except PostgresUnreachable as error:
            raise Unreachable(str(error)) from None
        engine = sa.create_engine(url)
        try:
            db.upgrade(engine)
        finally:
            engine.dispose()
        yield url


@dataclass
class Result:
    """Everything one database's soak measured and checked."""

    database: str
    version: str
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds the load generator itself used (it shares the machine with gunicorn)
    stats: dict[str, OperationStats] = field(default_factory=dict)
    verify_expected: dict[int, int] = field(default_factory=dict)
    errors: ErrorLog = field(default_factory=ErrorLog)
    rows: RowCheck | None = None
    logs: LogScan | None = None
    log_dir: str = ""
    unfinished: int = 0  # client threads still running after the bound

    @property
    def error_count(self) -> int:
        rows = len(self.rows.problems) if self.rows else 1
        return self.errors.count + rows + (self.logs.errors if self.logs else 1) + self.unfinished


def run_load(clients: list[Client], duration: float) -> tuple[float, float, int]:
    """Run every client in its own thread until the deadline; return (seconds, client CPU seconds, unfinished)."""
    started = time.monotonic()
    cpu_started = time.process_time()
    deadline = started + duration
    finished: list[float] = []

    def target(client: Client) -> None:
        try:
            client.run(deadline)
        finally:
            finished.append(time.monotonic())

    threads = [threading.Thread(target=target, args=(c,), name=f"soak-{c.number}", daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    hard_stop = deadline + REQUEST_TIMEOUT + 10  # one request in flight at the deadline may take its full timeout
    next_report = started + PROGRESS_EVERY
    while any(t.is_alive() for t in threads) and time.monotonic() < hard_stop:
        time.sleep(0.2)
        if time.monotonic() >= next_report:
            next_report += PROGRESS_EVERY
            done = sum(len(s.latencies) for c in clients for s in c.stats.values())
            errors = clients[0].errors.count
            log(f"  {time.monotonic() - started:5.1f}s: {done} requests, {errors} errors")
    unfinished = sum(1 for t in threads if t.is_alive())
    elapsed = (max(finished) if finished else time.monotonic()) - started
    return elapsed, time.process_time() - cpu_started, unfinished


def soak(result: Result, url: str, args: argparse.Namespace) -> None:
    """Start gunicorn on ``url``, run the load, check the rows, stop gunicorn and read its logs into ``result``."""
    database = result.database
    jwt_secret = secrets.token_urlsafe(64)
    env = {
        "APIKEYS_DATABASE_URL": url,
        "APIKEYS_JWT_SECRET": jwt_secret,
        "APIKEYS_BCRYPT_ROUNDS": str(args.bcrypt_rounds),
        "APIKEYS_INSTANCE_PATH": str(Path(result.log_dir) / "instance"),
        "APIKEYS_LOG_FORMAT": "text",
        "APIKEYS_DEV": "",  # never print a token in the log
    }
    config = {**JWT_CONFIG, "APIKEYS_JWT_SECRET": jwt_secret}
    ttl = int(args.duration + 3 * REQUEST_TIMEOUT + 600)
    tenant_count = min(args.tenants, args.connections)
    tokens = {f"soak-t{n}": issue_token(config, f"soak-t{n}", ttl) for n in range(tenant_count)}
    tenants = list(tokens)  # client n works for tenant n % tenants
    server = Gunicorn(Path(result.log_dir), env, workers=args.workers)
    try:
        server.start()
        log(f"{database}: gunicorn -w {args.workers} on {server.url}, {args.connections} connections")
        clients = []
        for n in range(args.connections):
            tenant = tenants[n % len(tenants)]
            clients.append(Client(n, server.port, tenant, tokens[tenant], result.errors, args.seed + n))
        result.elapsed, result.client_cpu, result.unfinished = run_load(clients, args.duration)
        for operation in OPERATIONS:
            result.stats[operation] = OperationStats()
            for client in clients:
                result.stats[operation].merge(client.stats[operation])
        for client in clients:
            for status, count in client.verify_expected.items():
                result.verify_expected[status] = result.verify_expected.get(status, 0) + count
        log(f"{database}: load done in {result.elapsed:.1f} s; checking rows and verifying believed keys")
        result.rows = check_rows(server.port, url, clients, tokens, args.final_verify, args.seed)
    finally:
        server.stop()
        result.logs = scan_logs(server.logs(), [*tokens.values(), jwt_secret])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = soak_report.machine()
    results: list[Result] = []
    notes: list[str] = []
    failed = 0  # problems outside the results: a database asked for and not soaked
    for database in args.databases:
        try:
            with sqlite_database() if database == "sqlite" else postgres_database(args.postgres_url) as url:
                version = soak_report.sqlite_version() if database == "sqlite" else soak_report.postgres_version(url)
                result = Result(database, version, log_dir=tempfile.mkdtemp(prefix=f"apikeys-soak-{database}-"))
                results.append(result)
                soak(result, url, args)
        except Unreachable as error:
            note = f"{error}: PostgreSQL not soaked."
            log(note)
            notes.append(note)
            failed += args.explicit
        except Exception as error:  # report it, clean up, go on with the next database
            note = f"The soak on {database} stopped: {type(error).__name__}: {redact(str(error))[:300]}"
            log(note)
            notes.append(note)
            failed += 1
    text = soak_report.render(results, notes, failed, machine, args)
    print(text)
    if args.write:
        soak_report.write(args.write, text)
        log(f"wrote {args.write}")
    for result in results:
        if result.error_count or args.keep_logs:
            log(f"{result.database}: gunicorn logs kept in {result.log_dir}")
        else:
            shutil.rmtree(result.log_dir, ignore_errors=True)
    failed += sum(r.error_count for r in results)
    log(f"FAILED: {failed} errors, see above" if failed or not results else "no errors")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
