"""After the soak: rows against what clients saw acknowledged, every believed key verified, the logs read."""

from __future__ import annotations

import http.client
import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field

import sqlalchemy as sa

from apikeys.storage import tables
from bench.servers import call
from bench.soak_client import Client
from bench.soak_client import Key
from bench.soak_client import redact

FINAL_VERIFY_THREADS = 8
ACCESS_LINE = re.compile(r'"[A-Z]+ \S* HTTP/[\d.]+" (\d{3}) ')
APP_LINE = re.compile(r" (\d{3}) [\d.]+ms tenant=")
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): ?(.*)$", re.MULTILINE)
SECRET_IN_LOG = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{38}")
JWT_IN_LOG = re.compile(r"eyJ[A-Za-z0-9_-]+")
WORKER_PROBLEMS = ("WORKER TIMEOUT", "[ERROR]", "[CRITICAL]")


@dataclass
class TenantRows:
    tenant: str
    acknowledged: int  # creates answered 201 minus deletes answered 200
    api_total: int | None
    db_rows: int


@dataclass
class RowCheck:
    tenants: list[TenantRows] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    verified: int = 0
    verified_of: int = 0
    deleted_verified: int = 0
    uncertain: int = 0  # keys or creates whose outcome an error left unknown (already counted as errors)


def _status(port: int, path: str, **credentials: str) -> tuple[int, dict]:
    """GET ``path``; return (status, JSON body), or (0, {}) when no answer came."""
    try:
        status, body = call(f"http://127.0.0.1:{port}", "GET", path, **credentials)
    except (OSError, ValueError, http.client.HTTPException) as error:
        return 0, {"error": type(error).__name__}
    return status, body or {}


def check_rows(port: int, database_url: str, clients: list[Client], tokens: dict[str, str], limit: int, seed: int):
    """Compare the database and the API's totals with what the clients saw acknowledged; verify believed keys."""
    result = RowCheck()
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(tables.api_keys.c.id, tables.api_keys.c.tenant_id, tables.api_keys.c.active)
            ).all()
    finally:
        engine.dispose()
    in_db = {row.id: row for row in rows}
    believed: dict[str, tuple[str, Key]] = {}
    uncertain: set[str] = set()
    for client in clients:
        believed.update((key.id, (client.tenant, key)) for key in client.keys)
        uncertain |= client.uncertain
        result.uncertain += len(client.uncertain) + client.uncertain_creates

    for tenant, token in tokens.items():
        mine = [c for c in clients if c.tenant == tenant]
        acknowledged = sum(c.acknowledged["create"] - c.acknowledged["delete"] for c in mine)
        status, body = _status(port, "/dashboard/api-keys?page=1&limit=1", token=token)
        api_total = (body.get("data") or {}).get("total") if status == 200 else None
        db_rows = sum(1 for row in rows if row.tenant_id == tenant)
        result.tenants.append(TenantRows(tenant, acknowledged, api_total, db_rows))
        if api_total is None:
            result.problems.append(f"{tenant}: the final list answered {status}")
        elif not acknowledged == api_total == db_rows:
            result.problems.append(f"{tenant}: acknowledged {acknowledged}, API total {api_total}, DB rows {db_rows}")

    lost = sorted(set(believed) - set(in_db))
    extra = sorted(set(in_db) - set(believed) - uncertain)
    if lost:
        result.problems.append(f"{len(lost)} acknowledged keys are missing from the database, e.g. {lost[:3]}")
    if extra:
        result.problems.append(f"{len(extra)} rows no client believes in (deleted or never acknowledged): {extra[:3]}")
    wrong_owner = [i for i, (tenant, _) in believed.items() if i in in_db and in_db[i].tenant_id != tenant]
    if wrong_owner:
        result.problems.append(f"{len(wrong_owner)} keys belong to another tenant in the database: {wrong_owner[:3]}")
    flipped = [i for i, (_, key) in believed.items() if i in in_db and bool(in_db[i].active) != key.active]
    if flipped:
        result.problems.append(f"{len(flipped)} keys have another active flag than acknowledged: {flipped[:3]}")

    rng = random.Random(seed)
    keys = [key for _, key in believed.values()]
    sample = keys if len(keys) <= limit else rng.sample(keys, limit)
    deleted = [key for client in clients for key in client.deleted if key.id not in in_db]
    deleted = deleted if len(deleted) <= limit // 4 else rng.sample(deleted, limit // 4)
    checks = [(key, 200 if key.active else 403) for key in sample] + [(key, 401) for key in deleted]

    def verify(check: tuple[Key, int]) -> str | None:
        key, expected = check
        status, body = _status(port, "/verify", api_key=key.full_key)
        if status != expected:
            return f"final verify of {key.id}: expected {expected}, got {status or 'no answer'} {body.get('code', '')}"
        return None

    with ThreadPoolExecutor(FINAL_VERIFY_THREADS) as pool:
        failures = [failure for failure in pool.map(verify, checks) if failure]
    result.verified, result.verified_of, result.deleted_verified = len(sample), len(keys), len(deleted)
    if failures:
        result.problems.append(f"{len(failures)} of {len(checks)} final verifications failed, e.g. {failures[:3]}")
    return result


@dataclass
class LogScan:
    access_lines: int = 0
    app_lines: int = 0
    tracebacks: int = 0
    server_errors: int = 0  # 5xx in the access log
    locked: int = 0  # "database is locked"
    worker_problems: int = 0  # worker timeouts, [ERROR] and [CRITICAL] lines of gunicorn
    secrets: int = 0
    jwts: int = 0
    leaked_issued: int = 0  # tokens or the JWT secret we issued, found verbatim
    exceptions: Counter = field(default_factory=Counter)
    problem_lines: list[str] = field(default_factory=list)  # the first few worker timeouts, [ERROR] lines

    @property
    def errors(self) -> int:
        return (
            self.tracebacks + self.server_errors + self.worker_problems + self.secrets + self.jwts + self.leaked_issued
        )


def scan_logs(text: str, issued: list[str]) -> LogScan:
    """Count tracebacks, 5xx answers, lock errors, worker trouble and anything secret in gunicorn's logs."""
    scan = LogScan()
    access = ACCESS_LINE.findall(text)
    scan.access_lines = len(access)
    scan.server_errors = sum(1 for status in access if status.startswith("5"))
    scan.app_lines = len(APP_LINE.findall(text))
    scan.tracebacks = text.count("Traceback")
    scan.locked = text.count("database is locked")
    problems = [line for line in text.splitlines() if any(mark in line for mark in WORKER_PROBLEMS)]
    scan.worker_problems = len(problems)
    scan.problem_lines = [redact(line)[:200] for line in problems[:3]]
    scan.secrets = len(SECRET_IN_LOG.findall(text))
    scan.jwts = len(JWT_IN_LOG.findall(text))
    scan.leaked_issued = sum(1 for value in issued if value in text)
    for name, message in EXCEPTION_LINE.findall(text):
        scan.exceptions[f"{name}: {redact(message)[:100]}"] += 1
    return scan
