"""The soak's markdown: the machine, the command, a table per database, the row check and the log scan."""

from __future__ import annotations

import os
import platform
import shlex
import sqlite3
import sys
from datetime import UTC
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from report import cpu_model  # one description of the machine for both reports
from report import version
from soak_client import WEIGHTS
from soak_client import percentile

BEGIN = "<!-- soak:begin (written by bench/soak.py --write; edit outside these markers) -->"
END = "<!-- soak:end -->"


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine() -> dict:
    """Describe the machine and the software the soak runs on, before it starts."""

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "gunicorn": version("gunicorn"),
        "sqlalchemy": version("sqlalchemy"),
        "load": load_average(),
    }


def sqlite_version() -> str:
    return f"SQLite {sqlite3.sqlite_version}"


def postgres_version(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return f"PostgreSQL {conn.execute(sa.text('SHOW server_version')).scalar_one().split()[0]}"
    finally:
        engine.dispose()


def command(argv: list[str]) -> str:
    """The command that produced the report, as the person typed it."""
    direct = shlex.join([".venv/bin/python", "bench/soak.py", *argv])
    if os.environ.get("MAKELEVEL"):
        return f'`make soak SOAK_ARGS="{shlex.join(argv)}"` (runs `{direct}`)'
    return f"`{direct}`"


def table(header: list[str], rows: list[list[str]], left: tuple[str, ...] = ()) -> str:
    align = ["---" if i == 0 or name in left else "--:" for i, name in enumerate(header)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def answers(statuses) -> str:
    return ", ".join(f"{status or 'none'}×{count}" for status, count in sorted(statuses.items()))


def operations_table(result) -> str:
    rows, everything, total_errors = [], [], 0
    for operation, stats in result.stats.items():
        everything += stats.latencies
        total_errors += stats.errors
        rows.append(
            [
                operation,
                str(len(stats.latencies)),
                f"{len(stats.latencies) / result.elapsed:.1f}",
                f"{percentile(stats.latencies, 0.50) * 1000:.1f}",
                f"{percentile(stats.latencies, 0.99) * 1000:.1f}",
                answers(stats.statuses),
                str(stats.errors),
            ]
        )
    rows.append(
        [
            "**all**",
            f"**{len(everything)}**",
            f"**{len(everything) / result.elapsed:.1f}**",
            f"{percentile(everything, 0.50) * 1000:.1f}",
            f"{percentile(everything, 0.99) * 1000:.1f}",
            "",
            f"**{total_errors}**",
        ]
    )
    header = ["operation", "requests", "requests/s", "p50 ms", "p99 ms", "answers", "errors"]
    return table(header, rows, left=("answers",))


def rows_table(check) -> str:
    rows = [[t.tenant, str(t.acknowledged), str(t.api_total), str(t.db_rows)] for t in check.tenants]
    rows.append(
        [
            "**all**",
            str(sum(t.acknowledged for t in check.tenants)),
            str(sum(t.api_total or 0 for t in check.tenants)),
            str(sum(t.db_rows for t in check.tenants)),
        ]
    )
    return table(
        ["tenant", "acknowledged (201 creates − 200 deletes)", "API list `total`", "rows in the database"], rows
    )


def section(result) -> str:
    parts = [f"### {result.version}", ""]
    if not result.stats:
        return "\n".join(parts + ["The soak did not run to the end: see the errors below.", errors_part(result)])
    expected = result.verify_expected
    parts += [
        operations_table(result),
        "",
        f"{result.elapsed:.1f} s of load; the clients used {result.client_cpu:.1f} s of CPU. "
        f"Verifications expected 200 (active, current secret) ×{expected.get(200, 0)}, "
        f"403 (disabled) ×{expected.get(403, 0)}, 401 (deleted) ×{expected.get(401, 0)}.",
        "",
    ]
    check = result.rows
    if check is not None:
        scope = "all" if check.verified == check.verified_of else "a random sample"
        parts += [
            "Rows at the end:",
            "",
            rows_table(check),
            "",
            f"- Row check: every acknowledged key is in the database with its tenant and last acknowledged active "
            f"flag, no other row is, and the API's totals agree: {'yes' if not check.problems else '**no**'}.",
            f"- Verified after the load: {check.verified} of {check.verified_of} keys the clients hold ({scope}) with "
            f"their current secret (200 or 403), and {check.deleted_verified} deleted keys (401).",
        ]
    scan = result.logs
    if scan is not None:
        parts += [
            f"- gunicorn logs: {scan.access_lines} access lines, {scan.app_lines} request-log lines; "
            f"{scan.tracebacks} tracebacks, {scan.server_errors} 5xx answers, {scan.locked} “database is locked”, "
            f"{scan.worker_problems} worker timeouts or [ERROR] lines.",
            f"- Secrets in the logs: {scan.secrets} `sk_live_`/`sk_test_` secrets, {scan.jwts} `eyJ` (JWT-looking) "
            f"strings, {scan.leaked_issued} of the issued tokens or the signing secret.",
        ]
    return "\n".join(parts + [errors_part(result)])


def errors_part(result) -> str:
    client = result.errors.count
    rows = len(result.rows.problems) if result.rows else "not checked"
    logs = result.logs.errors if result.logs else "not scanned"
    lines = [f"- **Errors: {result.error_count}** (answers {client}, row check {rows}, logs {logs}"]
    lines[0] += f", client threads unfinished {result.unfinished})." if result.unfinished else ")."
    lines += [f"  - {error}" for error in result.errors.first]
    if result.rows:
        lines += [f"  - {problem}" for problem in result.rows.problems]
    if result.logs:
        lines += [f"  - log: {line}" for line in result.logs.problem_lines]
    if result.logs and result.logs.exceptions:
        lines.append("  - exceptions in the logs: ")
        lines += [f"    - {count}× {line}" for line, count in result.logs.exceptions.most_common(5)]
    return "\n".join(lines)


def render(results, notes: list[str], not_soaked: int, machine: dict, args) -> str:
    """Return the whole report."""
    mix = ", ".join(f"{operation} {weight}%" for operation, weight in WEIGHTS.items())
    load = machine["load"]
    tenants = min(args.tenants, args.connections)
    busy = load is not None and load[0] >= 0.5 * (machine["cores"] or 1)
    load_text = "unknown" if load is None else " / ".join(f"{value:.2f}" for value in load)
    lines = [
        f"Run {machine['date']} on {machine['cpu']}, {machine['cores']} cores, {machine['os']}; Python "
        f"{machine['python']}, gunicorn {machine['gunicorn']}, SQLAlchemy {machine['sqlalchemy']}.",
        f"Load average (1/5/15 min) before the soak: {load_text}"
        + (
            " — the machine was busy with other work, so these figures are lower bounds for this hardware."
            if busy
            else "."
        ),
        "",
        f"Command: {command(sys.argv[1:])}",
        "",
        f"gunicorn -w {args.workers} (sync workers) on 127.0.0.1; {args.connections} client connections (threads, "
        f"one request at a time each) for {args.duration:g} s per database, spread over {tenants} tenants; "
        f"`APIKEYS_BCRYPT_ROUNDS={args.bcrypt_rounds}` (production default 12), so that the mix is not all bcrypt; "
        f"mix {mix}; seed {args.seed}. Latencies are client-side, queueing for a worker included.",
        "",
    ]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    for result in results:
        lines += [section(result), ""]
    total = not_soaked + sum(result.error_count for result in results)
    lines.append(f"**Total errors: {total}.**")
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Replace the generated part of ``path`` (between the markers), or create the file."""
    block = f"{BEGIN}\n{text}\n{END}"
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = f"# Soak\n\n{BEGIN}\n{END}\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        updated = head + block + tail
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(updated, encoding="utf-8")
