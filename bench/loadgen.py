"""Load generators: wrk when it is on PATH, else a bundled one (threads, http.client, a latency histogram).

Both answer a ``LoadResult`` for a fixed-duration run of one request with
fixed headers. Header values (API keys, tokens) reach wrk through its
environment and a Lua script, never its command line, and are never printed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_report.lua"
REQUEST_TIMEOUT = 10.0
MAX_REQUESTS_PER_THREAD = 2_000_000  # a bound, far above what a 10 s run reaches


class Histogram:
    """Latencies in microseconds, log-linear buckets with 64 steps per power of two (error under 1.6 %)."""

    SUB_BITS = 6

    def __init__(self):
        self.counts: Counter[int] = Counter()
        self.total = 0

    def record(self, microseconds: int) -> None:
        """Count one latency."""
        value = max(1, int(microseconds))
        shift = max(0, value.bit_length() - self.SUB_BITS - 1)
        self.counts[(shift, value >> shift)] += 1
        self.total += 1

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts to this one."""
        self.counts.update(other.counts)
        self.total += other.total

    def percentile(self, percent: float) -> float:
        """Return the latency, in microseconds, at ``percent`` (0-100); 0 when empty."""
        if not self.total:
            return 0.0
        rank = max(1, round(self.total * percent / 100))
        seen = 0
        for (shift, mantissa), count in sorted(self.counts.items(), key=lambda item: item[0][1] << item[0][0]):
            seen += count
            if seen >= rank:
                return ((mantissa << shift) + ((1 << shift) - 1) / 2) if shift else float(mantissa)
        return 0.0


@dataclass
class LoadResult:
    """What a fixed-duration run measured."""

    generator: str
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu_s: float | None = None  # CPU the server's processes used during the run, when measured

    @property
    def cpu_ms_per_request(self) -> float | None:
        """Server CPU milliseconds per request: unlike req/s, barely moved by other load on the machine."""
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s * 1000 / self.requests

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0


def wrk_available() -> bool:
    """Tell whether wrk is on PATH."""
    return shutil.which("wrk") is not None


def wrk_version() -> str:
    """Return wrk's version line, or "not installed"."""
    if not wrk_available():
        return "not installed"
    completed = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10, check=False)
    return (completed.stdout or completed.stderr).splitlines()[0].split(" Copyright")[0].strip()


def run_wrk(url: str, headers: dict[str, str], duration: float, connections: int, threads: int) -> LoadResult:
    """Run wrk against ``url`` for ``duration`` seconds and parse the JSON line the Lua script writes."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the benchmark only targets 127.0.0.1")
    env = dict(os.environ)
    for index, (name, value) in enumerate(headers.items(), start=1):
        env[f"BENCH_HEADER_{index}_NAME"] = name
        env[f"BENCH_HEADER_{index}_VALUE"] = value
    command = [
        "wrk",
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration))}s",
        f"--timeout={int(REQUEST_TIMEOUT)}s",
        f"--script={WRK_SCRIPT}",
        url,
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=duration + 60, check=False, start_new_session=True
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()[-500:]}")
    report = json.loads(lines[-1].removeprefix("BENCH_JSON "))
    errors = report["connect_errors"] + report["read_errors"] + report["write_errors"] + report["timeouts"]
    return LoadResult(
        generator="wrk",
        requests=report["requests"],
        duration_s=report["duration_us"] / 1e6,
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        non_2xx=report["status_errors"],
        socket_errors=errors,
    )


def request_once(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> tuple[int, bytes, float]:
    """Send one GET on ``conn`` and return status, body and latency in seconds."""
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    return response.status, body, time.perf_counter() - started


def _python_worker(port, path, headers, deadline, histogram, statuses, errors, lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    local_histogram = Histogram()
    local_statuses: Counter[int] = Counter()
    local_errors = 0
    try:
        for _ in range(MAX_REQUESTS_PER_THREAD):
            if time.monotonic() >= deadline:
                break
            try:
                status, _, latency = request_once(conn, path, headers)
            except (OSError, http.client.HTTPException):
                local_errors += 1
                conn.close()  # http.client reconnects on the next request
                continue
            local_histogram.record(latency * 1e6)
            local_statuses[status] += 1
    finally:
        conn.close()
        with lock:
            histogram.merge(local_histogram)
            statuses.update(local_statuses)
            errors.append(local_errors)


def run_python(port: int, path: str, headers: dict[str, str], duration: float, connections: int) -> LoadResult:
    """Drive ``path`` from ``connections`` keep-alive threads for ``duration`` seconds."""
    histogram = Histogram()
    statuses: Counter[int] = Counter()
    errors: list[int] = []
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + duration
    args = (port, path, headers, deadline, histogram, statuses, errors, lock)
    threads = [threading.Thread(target=_python_worker, args=args, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + REQUEST_TIMEOUT + 5)
    elapsed = time.monotonic() - started
    return LoadResult(
        generator="python",
        requests=histogram.total,
        duration_s=elapsed,
        p50_ms=histogram.percentile(50) / 1000,
        p99_ms=histogram.percentile(99) / 1000,
        non_2xx=sum(count for status, count in statuses.items() if not 200 <= status < 300),
        socket_errors=sum(errors),
        statuses=dict(statuses),
    )


class LoadGenerator:
    """One generator for every run of a benchmark, so the apikeys and plain figures compare."""

    def __init__(self, name: str, connections: int, threads: int):
        if name == "auto":
            name = "wrk" if wrk_available() else "python"
        if name == "wrk" and not wrk_available():
            raise RuntimeError("--generator wrk, but wrk is not on PATH (apt-get install wrk)")
        self.name = name
        self.connections = connections
        self.threads = threads

    def measure(self, server, path: str, headers: dict[str, str], duration: float) -> LoadResult:
        """Drive ``server`` at ``path`` and also record the CPU its processes used meanwhile."""
        before = server.cpu_seconds()
        result = self.run(server.port, path, headers, duration)
        result.server_cpu_s = server.cpu_seconds() - before
        return result

    def run(self, port: int, path: str, headers: dict[str, str], duration: float) -> LoadResult:
        """Drive http://127.0.0.1:port/path for ``duration`` seconds."""
        if self.name == "wrk":
            url = f"http://127.0.0.1:{port}{path}"
            return run_wrk(url, headers, duration, self.connections, min(self.threads, self.connections))
        return run_python(port, path, headers, duration, self.connections)

    def describe(self) -> str:
        """Say which generator and how many connections."""
        if self.name == "wrk":
            return f"{wrk_version()}, {self.threads} threads, {self.connections} connections"
        return f"bundled Python generator (bench/loadgen.py), {self.connections} threads, keep-alive http.client"
