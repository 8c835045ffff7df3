"""bench.run's limits phase: /verify for a key with a rate limit (embedded store, then Redis) and one with a quota.

In every round, right after the unlimited key, wrk runs once with each of three
keys: one limited to 1,000,000 a day (never refused in a run) on the apikeys
server, which counts in its embedded store; another on a second apikeys server
with the same settings and database but APIKEYS_RATE_LIMIT_URL set to a
redis-server this phase starts; and one with 10^12 credits, whose every
verification is one UPDATE of its row. Issue 19's goals compare them with the
unlimited key of the same rounds.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import redis

from bench import report
from bench.load import apikeys_server
from bench.load import create_keys
from bench.load import log
from bench.load import server_cpu_seconds
from bench.load import wrk
from bench.servers import Gunicorn
from bench.servers import call
from bench.servers import free_port

RATE_LIMIT = {"limit": 1_000_000, "periodSeconds": 86_400}
QUOTA = {"remaining": 10**12}
GOALS = {"embedded": 0.7, "redis": 0.6}  # issue 19: req/s of the limited key ÷ the unlimited key's
LABELS = {
    "embedded": "rate limit, embedded store",
    "redis": "rate limit, Redis",
    "quota": "quota (an UPDATE per request)",
}


@contextlib.contextmanager
def redis_server(tmp: Path):
    """Yield (URL, pid) of a redis-server of this run on a free port, with no persistence; stop it afterwards."""
    folder = tmp / "redis"
    folder.mkdir()
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(folder / "redis.log", "ab") as out:
        process = subprocess.Popen(
            [*command, "--dir", str(folder)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with redis.Redis(port=port, socket_timeout=1) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start (see {folder / 'redis.log'})") from None
                    time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


class LimitedKeys:
    """The three limited keys, the servers they are verified on, and what wrk sent with each."""

    def __init__(self, stack: contextlib.ExitStack, tmp: Path, env: dict, args, service: Gunicorn, token: str):
        self.args, self.tmp = args, tmp
        url, self.redis_pid = stack.enter_context(redis_server(tmp))
        home = tmp / "redis-host"  # its own HOME (gunicorn's control socket) and instance folder
        home.mkdir()
        settings = {**env, "APIKEYS_INSTANCE_PATH": str(tmp / "apikeys-redis"), "APIKEYS_RATE_LIMIT_URL": url}
        second = apikeys_server(home, settings, args)
        stack.enter_context(second)
        embedded, on_redis = create_keys(service.url, token, 2, rateLimit=RATE_LIMIT)
        (quota,) = create_keys(service.url, token, 1, quota=QUOTA)
        self.targets = {
            "embedded": (service, embedded["fullKey"]),
            "redis": (second, on_redis["fullKey"]),
            "quota": (service, quota["fullKey"]),
        }
        self.sent = dict.fromkeys(self.targets, 0)
        log(f"limited keys ready; the Redis host on {second.url}, redis-server at {url}")

    def run(self, name: str, seconds: float) -> dict:
        """One wrk run with one limited key; Redis's own CPU per request too (0 for the other keys)."""
        server, key = self.targets[name]
        redis_cpu = server_cpu_seconds(self.redis_pid)
        run = wrk(server, "/verify", seconds, self.args, [key], self.tmp)
        redis_cpu = server_cpu_seconds(self.redis_pid) - redis_cpu if name == "redis" else 0.0
        run["redis_cpu_ms"] = 1000 * redis_cpu / run["requests"] if run["requests"] else 0.0
        self.sent[name] += run["requests"]
        return run

    def warm_up(self) -> None:
        """2 s with each key."""
        for name in self.targets:
            self.run(name, 2)

    def measure_round(self, results: dict) -> None:
        """One measured run with each key, in a fixed order, into ``results["limits"]``."""
        for name in self.targets:
            results.setdefault("limits", {}).setdefault(name, []).append(self.run(name, self.args.duration))

    def counted(self) -> dict[str, dict[str, int]]:
        """Ask each key once more what its store has counted (limit or credits minus what remains), next to wrk's."""
        found = {}
        for name, (server, key) in self.targets.items():
            status, body = call(server.url, "GET", "/verify", api_key=key)
            if status != 200:
                raise RuntimeError(f"the {LABELS[name]} key answered {status} after the runs")
            data = body["data"]
            if name == "quota":
                used = QUOTA["remaining"] - data["quota"]["remaining"]
            else:  # no rateLimit in the answer: the store failed and the key was served without its limit
                used = RATE_LIMIT["limit"] - data["rateLimit"]["remaining"] if data.get("rateLimit") else 0
            found[name] = {"sent": self.sent[name], "counted": used, "store_errors": store_errors(server)}
        return found


def store_errors(server: Gunicorn) -> int:
    """Return apikeys_rate_limit_errors_total from ``server``'s /metrics: verifications its store failed for."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as answer:  # noqa: S310 (our own http:// URL)
        text = answer.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("apikeys_rate_limit_errors_total")]
    return round(sum(float(line.split()[-1]) for line in lines))


def _median(runs: list[dict], field: str) -> float:
    return statistics.median(run[field] for run in runs)


def _verdict(name: str, ratio: float) -> str | None:
    """Issue 19's goal for this key and whether ``ratio`` (÷ the unlimited key) meets it; None: no goal."""
    goal = GOALS.get(name)
    return None if goal is None else f"≥ {goal}: " + ("met" if ratio >= goal else "**not met**")


def headline(results: dict) -> str:
    """The Results section's sentence: each limited key ÷ the unlimited key, against issue 19's goals."""
    unlimited = _median(results["verify"], "rps")
    parts = []
    for name, label in LABELS.items():
        ratio = _median(results["limits"][name], "rps") / unlimited
        verdict = _verdict(name, ratio)
        parts.append(f"{label} {ratio:.2f}" + (f" (goal {verdict})" if verdict else ""))
    refused = sum(run["non_2xx"] + run["socket_errors"] for runs in results["limits"].values() for run in runs)
    errors = "" if not refused else f" **{refused:,} non-2xx answers or socket errors: these runs are not valid.**"
    counts = results["limit_counts"]
    failed = sum(c["store_errors"] for c in counts.values())
    if failed or any(c["counted"] < c["sent"] for c in counts.values()):
        errors += f" **Not every request was counted** ({failed:,} store failures served without the limit; below)."
    return f"**Limited keys ÷ the unlimited key (issue 19):** {'; '.join(parts)}.{errors}"


def render(results: dict, args) -> list[str]:
    """The report's section on limited keys: its heading, how it measures, the table and the store's counts."""
    unlimited, ceiling_rps = results["verify"], _median(results["ceiling"], "rps")
    unlimited_rps, unlimited_cpu = _median(unlimited, "rps"), _median(unlimited, "cpu_ms")
    rows = []
    for name, label, runs in [("unlimited", "no limit (the runs above)", unlimited)] + [
        (name, label, results["limits"][name]) for name, label in LABELS.items()
    ]:
        rps = _median(runs, "rps")
        cpu, redis_cpu = _median(runs, "cpu_ms"), statistics.median(run.get("redis_cpu_ms", 0.0) for run in runs)
        per_round = ", ".join(f"{run['rps'] / base['rps']:.2f}" for run, base in zip(runs, unlimited, strict=True))
        rows.append(
            [
                label,
                f"{rps:,.0f}",
                f"{rps / ceiling_rps:.2f}",
                f"{rps / unlimited_rps:.2f}",
                per_round,
                f"{unlimited_cpu / (cpu + redis_cpu):.2f}",
                *(f"{_median(runs, p) / 1000:.2f}" for p in ("p50_us", "p99_us")),
                f"{cpu:.2f}",
                f"{redis_cpu:.3f}" if name == "redis" else "—",
                str(sum(run["non_2xx"] + run["socket_errors"] for run in runs)),
                _verdict(name, rps / unlimited_rps) or "—",
            ]
        )
    header = ["`GET /verify` with a key with", "req/s (median)", "÷ ceiling", "÷ unlimited", "÷ unlimited per round"]
    header += ["÷ unlimited by CPU/req", "p50 ms", "p99 ms", "server CPU ms/req", "Redis CPU ms/req"]
    header += ["non-2xx or socket errors", "issue 19's goal"]
    counts = results["limit_counts"]
    counted = ", ".join(f"{LABELS[name]} {c['counted']:,} for {c['sent']:,}" for name, c in counts.items())
    whole = all(c["counted"] >= c["sent"] for c in counts.values())
    failures = {name: c["store_errors"] for name, c in counts.items() if name != "quota"}
    return [
        "### Rate limits and quotas",
        f"In each round, right after the unlimited key, wrk ran {args.duration:g} s with each of three more keys"
        ' (after a 2 s warm-up each): one with `"rateLimit": {"limit": 1000000, "periodSeconds": 86400}` on the'
        " same server (counted in its embedded store, a SQLite file in its instance folder); another with the same"
        " limit on a second apikeys server with the same settings and database, a HOME and instance folder of its own"
        " and `APIKEYS_RATE_LIMIT_URL` pointing at a `redis-server` the run started on a free port (no persistence);"
        ' and one with `"quota": {"remaining": 1000000000000}`, so that each verification is one UPDATE of its row in'
        " the main SQLite database. The limit is never reached in a run: every answer should be a 200. Ratios are of"
        " medians; *÷ unlimited by CPU/req* is the unlimited key's server CPU per request ÷ this key's (Redis's"
        " included).",
        report.table(header, rows),
        f"After the runs each key was verified once more, and its answer said how many verifications its store"
        f" had counted, next to the requests wrk completed with it (warm-ups included): {counted}; "
        + ("every request was counted." if whole else "**some requests were not counted**.")
        + f" The servers' `apikeys_rate_limit_errors_total` (verifications served without their limit because the"
        f" store failed, `APIKEYS_RATE_LIMIT_ON_ERROR=open`): embedded store {failures['embedded']:,},"
        f" Redis {failures['redis']:,}.",
    ]
