"""What bench.run's phases share: the progress log, wrk runs with the CPU they cost the server, keys made by the API."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.servers import Gunicorn
from bench.servers import call

HERE = Path(__file__).resolve().parent
STARTED = time.monotonic()


def apikeys_server(home: Path, env: dict, args) -> Gunicorn:
    """An apikeys server as `apikeys serve` runs it: the package's own gunicorn settings, the app factory."""
    return Gunicorn(
        home,
        env,
        workers=args.workers,
        app="apikeys:create_app()",
        config="python:apikeys.server.gunicorn_conf",
        access_log=False,
    )


def log(message: str) -> None:
    """Say what the benchmark is doing, on stderr."""
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def server_cpu_seconds(pid: int) -> float:
    """Return the CPU seconds (user + system) that process group ``pid`` (master and workers) has used."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(server: Gunicorn, path: str, seconds: float, args, keys: list[str] = (), tmp: Path | None = None) -> dict:
    """Run wrk against ``server`` (X-Api-Key values round-robin from ``keys``); return req/s, latency, errors."""
    env = dict(os.environ)
    if keys:
        keys_file = tmp / f"keys-{secrets.token_hex(4)}.txt"
        keys_file.touch(mode=0o600)
        keys_file.write_text("\n".join(keys) + "\n")
        env["BENCH_KEYS_FILE"] = str(keys_file)
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    command += ["-s", str(HERE / "wrk_report.lua"), server.url + path]
    cpu = server_cpu_seconds(server.process.pid)
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    cpu = server_cpu_seconds(server.process.pid) - cpu
    run = json.loads(next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))[len("BENCH_JSON ") :])
    run["rps"] = run["requests"] / (run["duration_us"] / 1e6)
    run["cpu_ms"] = 1000 * cpu / run["requests"] if run["requests"] else 0.0
    return run


def create_keys(base: str, token: str, count: int, **fields) -> list[dict]:
    """Create ``count`` keys through POST /dashboard/api-keys, four at a time, with ``fields`` (rateLimit, quota)."""

    def create(number: int) -> dict:
        for _ in range(60):
            body = {"name": f"bench {number}", "environment": "test", **fields}
            status, answer = call(base, "POST", "/dashboard/api-keys", token=token, body=body)
            if status != 503:
                break
            time.sleep(1)  # the host's hashing slots were taken (Retry-After: 1)
        if status != 201:
            raise RuntimeError(f"creating a key answered {status}")
        return answer["data"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(create, range(count)))
