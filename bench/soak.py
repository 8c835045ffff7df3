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
import secrets
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

import sqlalchemy as sa

from bench import report
from bench.servers import POSTGRES_URL
from bench.servers import Gunicorn
from bench.servers import PostgresUnreachable
from bench.servers import new_postgres_database
from bench.servers import service_env
from bench.servers import token_for
from bench.soak_checks import LogScan
from bench.soak_checks import RowCheck
from bench.soak_checks import check_rows
from bench.soak_checks import scan_logs
from bench.soak_client import OPERATIONS
from bench.soak_client import REQUEST_TIMEOUT
from bench.soak_client import WEIGHTS
from bench.soak_client import Client
from bench.soak_client import ErrorLog
from bench.soak_client import OperationStats
from bench.soak_client import redact

STARTED = time.monotonic()


def log(message: str) -> None:
    """Say what the soak is doing, on stderr."""
    print(f"[soak {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", help="comma-separated: sqlite,postgresql (default both; PostgreSQL if up)")
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
    if set(args.databases) - {"sqlite", "postgresql"}:
        parser.error("--databases takes sqlite, postgresql or both")
    if not 1 <= args.connections <= 1024 or args.duration <= 0 or args.tenants < 1:
        parser.error("--connections must be 1-1024, --duration positive and --tenants at least 1")
    args.tenants = min(args.tenants, args.connections)
    args.seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    return args


@dataclass
class Result:
    """Everything one database's soak measured and checked."""

    database: str
    log_dir: Path
    version: str = ""
    elapsed: float = 0.0
    client_cpu: float = 0.0  # CPU seconds of the load generator itself (it shares the machine with gunicorn)
    stats: dict[str, OperationStats] = field(default_factory=dict)
    verify_expected: dict[int, int] = field(default_factory=dict)
    errors: ErrorLog = field(default_factory=ErrorLog)
    rows: RowCheck | None = None
    logs: LogScan | None = None
    unfinished: int = 0  # client threads still running after the bound

    @property
    def error_count(self) -> int:
        """Every error: answers, row check, log scan, unfinished clients (an unchecked part counts as one)."""
        rows = len(self.rows.problems) if self.rows else 1
        return self.errors.count + rows + (self.logs.errors if self.logs else 1) + self.unfinished


def run_load(clients: list[Client], duration: float) -> tuple[float, float, int]:
    """Run every client in its own thread until the deadline; return (seconds, client CPU seconds, unfinished)."""
    started, cpu_started = time.monotonic(), time.process_time()
    threads = [threading.Thread(target=c.run, args=(started + duration,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    hard_stop = started + duration + REQUEST_TIMEOUT + 10  # a request in flight at the deadline may take its timeout
    next_report = started + 10
    while any(t.is_alive() for t in threads) and time.monotonic() < hard_stop:
        time.sleep(0.2)
        if time.monotonic() >= next_report:
            next_report += 10
            done = sum(len(s.latencies) for c in clients for s in c.stats.values())
            log(f"  {time.monotonic() - started:5.1f}s: {done} requests, {clients[0].errors.count} errors")
    unfinished = sum(1 for t in threads if t.is_alive())
    return time.monotonic() - started, time.process_time() - cpu_started, unfinished


@contextlib.contextmanager
def database(name: str, args: argparse.Namespace, directory: Path):
    """Yield the URL and server version of a new, empty database; gunicorn's start-up migrates it."""
    if name == "sqlite":
        yield f"sqlite:///{directory / 'soak.sqlite3'}", f"SQLite {sqlite3.sqlite_version}"
        return
    with new_postgres_database(args.postgres_url, "apikeys_soak") as url:
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                version = conn.execute(sa.text("SHOW server_version")).scalar_one().split()[0]
        finally:
            engine.dispose()
        yield url, f"PostgreSQL {version}"


def soak(result: Result, url: str, args: argparse.Namespace) -> None:
    """Start gunicorn on ``url``, run the load, check the rows, stop gunicorn and read its logs into ``result``."""
    jwt_secret = secrets.token_urlsafe(64)
    env = service_env(url, jwt_secret, result.log_dir / "instance", APIKEYS_BCRYPT_ROUNDS=str(args.bcrypt_rounds))
    env["APIKEYS_LOG_FORMAT"] = "text"
    ttl = int(args.duration + 3 * REQUEST_TIMEOUT + 600)
    tokens = {f"soak-t{n}": token_for(jwt_secret, f"soak-t{n}", ttl) for n in range(args.tenants)}
    tenants = list(tokens)  # client n works for tenant n % tenants
    server = Gunicorn(result.log_dir, env, workers=args.workers)
    try:
        server.start()
        log(f"{result.database}: gunicorn -w {args.workers} on {server.url}, {args.connections} connections")
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
        log(f"{result.database}: load done in {result.elapsed:.1f} s; checking rows and verifying believed keys")
        result.rows = check_rows(server.port, url, clients, tokens, args.final_verify, args.seed)
    finally:
        server.stop()
        result.logs = scan_logs(server.logs(), [*tokens.values(), jwt_secret])


def operations_table(result: Result) -> str:
    """One row per operation and one for all: requests, rate, p50/p99, answers, errors."""

    def row(name: str, stats: OperationStats) -> list[str]:
        answers = ", ".join(f"{status or 'none'}×{count}" for status, count in sorted(stats.statuses.items()))
        p50, p99 = (f"{report.percentile(stats.latencies, p) * 1000:.1f}" for p in (50, 99))
        rate = f"{len(stats.latencies) / result.elapsed:.1f}"
        return [name, str(len(stats.latencies)), rate, p50, p99, answers, str(stats.errors)]

    total = OperationStats()
    for stats in result.stats.values():
        total.merge(stats)
    rows = [row(operation, stats) for operation, stats in result.stats.items()] + [row("**all**", total)]
    return report.table(["operation", "requests", "requests/s", "p50 ms", "p99 ms", "answers", "errors"], rows)


def section(result: Result) -> str:
    """The report of one database."""
    lines = [f"### {result.version or result.database}", ""]
    if result.stats:
        expected = result.verify_expected
        lines += [
            operations_table(result),
            "",
            f"{result.elapsed:.1f} s of load; the clients used {result.client_cpu:.1f} s of CPU. Verifications"
            f" expected 200 (active, current secret) ×{expected.get(200, 0)}, 403 (disabled) ×{expected.get(403, 0)},"
            f" 401 (deleted) ×{expected.get(401, 0)}.",
            "",
        ]
    else:
        lines += ["The soak did not run to the end: see the errors below.", ""]
    if check := result.rows:
        tenants = [[t.tenant, str(t.acknowledged), str(t.api_total), str(t.db_rows)] for t in check.tenants]
        header = ["tenant", "acknowledged (201 creates − 200 deletes)", "API list `total`", "rows in the database"]
        scope = "all" if check.verified == check.verified_of else "a random sample"
        lines += [
            report.table(header, tenants),
            "",
            "- Row check: every acknowledged key is in the database with its tenant and last acknowledged active flag,"
            f" no other row is, and the API's totals agree: {'yes' if not check.problems else '**no**'}.",
            f"- Verified after the load: {check.verified} of {check.verified_of} keys the clients hold ({scope}) with"
            f" their current secret (200 or 403), and {check.deleted_verified} deleted keys (401).",
        ]
    if scan := result.logs:
        lines += [
            f"- gunicorn logs: {scan.access_lines} access lines, {scan.app_lines} request-log lines;"
            f" {scan.tracebacks} tracebacks, {scan.server_errors} 5xx answers, {scan.locked} “database is locked”,"
            f" {scan.worker_problems} worker timeouts or [ERROR] lines.",
            f"- Secrets in the logs: {scan.secrets} `sk_live_`/`sk_test_` secrets, {scan.jwts} `eyJ` (JWT-looking)"
            f" strings, {scan.leaked_issued} of the issued tokens or the signing secret.",
        ]
    lines.append(f"- **Errors: {result.error_count}** (answers {result.errors.count}, unfinished {result.unfinished}).")
    lines += [f"  - {error}" for error in result.errors.first]
    lines += [f"  - {problem}" for problem in (result.rows.problems if result.rows else ["rows not checked"])]
    if result.logs:
        lines += [f"  - log: {line}" for line in result.logs.problem_lines]
        lines += [f"  - {count}× {line}" for line, count in result.logs.exceptions.most_common(5)]
    return "\n".join(lines)


def render(results: list[Result], notes: list[str], total: int, machine: dict[str, str], args) -> str:
    """Return the whole report."""
    mix = ", ".join(f"{operation} {weight}%" for operation, weight in WEIGHTS.items())
    lines = [
        f"Run of {machine['Date (UTC)']} UTC: {report.command('bench.soak', sys.argv[1:], 'soak', 'SOAK_ARGS')}.",
        "",
        f"gunicorn -w {args.workers} (sync workers) on 127.0.0.1; {args.connections} client connections (threads,"
        f" one request at a time each) for {args.duration:g} s per database, spread over {args.tenants} tenants;"
        f" `APIKEYS_BCRYPT_ROUNDS={args.bcrypt_rounds}` (production default 12), so that the mix is not all bcrypt;"
        f" mix {mix}; seed {args.seed}. Latencies are client-side, queueing for a worker included.",
        "",
        *[f"- {note}" for note in notes],
        *[section(result) + "\n" for result in results],
        f"**Total errors: {total}.**",
        "",
        report.table(["Machine", ""], [[key, value] for key, value in machine.items()]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Soak each database in turn, print the report, write it when asked; non-zero on any error."""
    args = parse_args(argv)
    machine = report.machine()
    results: list[Result] = []
    notes: list[str] = []
    failed = 0  # problems outside the results: a database asked for and not soaked
    for name in args.databases:
        result = Result(name, Path(tempfile.mkdtemp(prefix=f"apikeys-soak-{name}-")))
        try:
            with database(name, args, result.log_dir) as (url, result.version):
                results.append(result)
                soak(result, url, args)
        except PostgresUnreachable as error:
            note = f"{error}: PostgreSQL not soaked."
            failed += args.explicit
        except Exception as error:  # report it, clean up, go on with the next database
            note = f"The soak on {name} stopped: {type(error).__name__}: {redact(str(error))[:300]}"
            failed += 1
        else:
            continue
        log(note)
        notes.append(note)
        if result not in results:
            shutil.rmtree(result.log_dir, ignore_errors=True)
    machine["Load average at end"] = report.load_average()
    failed += sum(result.error_count for result in results)
    text = render(results, notes, failed, machine, args)
    print(text)
    if args.write:
        report.write_doc(args.write, text, "soak", "Soak")
        log(f"wrote {args.write}")
    for result in results:
        if result.error_count or args.keep_logs:
            log(f"{result.database}: gunicorn logs kept in {result.log_dir}")
        else:
            shutil.rmtree(result.log_dir, ignore_errors=True)
    log(f"FAILED: {failed} errors, see above" if failed or not results else "no errors")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
